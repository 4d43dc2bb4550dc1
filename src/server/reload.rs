//! Reloading the configuration while serving.
//!
//! A reload re-reads the config file and validates it; if anything is wrong
//! (the config, a certificate, a new address that cannot be bound) nothing
//! changes and the error is logged. Otherwise:
//!
//! - routes, upstream clusters and request timeouts switch for every request
//!   that starts from then on; requests in flight finish on the config they
//!   started with. Clusters whose definition is unchanged keep their pools.
//! - connection settings (client timeouts, header and stream limits) apply
//!   to connections accepted from then on.
//! - listeners whose address is unchanged keep their socket and take their
//!   new limit (counting the connections already open) and certificates;
//!   new ones bind; removed ones stop accepting and drain their connections
//!   (WebSocket tunnels on them run until one side closes them). A listener
//!   moved to an address that overlaps its old one (`0.0.0.0:8080` to
//!   `127.0.0.1:8080`) cannot bind while the old one listens, unless
//!   `server.reuse_port` is on: that reload fails and says so.
//!
//! One thing a failed reload may leave behind: metric labels for the new
//! config's routes and clusters, at zero, if it failed after they were made.
//!
//! A few settings are only read at start-up (`admin`, `access_log`,
//! `server.reuse_port`); a reload that changes them says so and keeps the
//! running values.

use std::sync::Arc;

use super::connection::Shared;
use super::listener::Listeners;
use super::BindError;
use crate::config::{self, Config, ConfigError};
use crate::metrics::RouteSlotsFull;

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The config file's contents changed (with `--watch-config`).
    FileChanged,
    /// A caller of the library (tests, embedders).
    Requested,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file changed",
            Trigger::Requested => "requested",
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new listener could not bind.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The new routes need more metrics slots than are left.
    #[error(transparent)]
    Metrics(#[from] RouteSlotsFull),
    /// The thread reading the file failed.
    #[error("reading the config failed: {0}")]
    Read(#[from] tokio::task::JoinError),
}

/// Reloads from `current.source`; on success returns the config now running.
/// Either outcome is logged and counted.
pub(super) async fn reload(
    current: &Arc<Config>,
    trigger: Trigger,
    listeners: &mut Listeners,
    shared: &Shared,
) -> Result<Arc<Config>, ReloadError> {
    match apply(current, trigger, listeners, shared).await {
        Ok(config) => {
            shared.metrics.config_reload(true);
            Ok(config)
        }
        Err(err) => {
            shared.metrics.config_reload(false);
            tracing::error!(
                trigger = trigger.name(),
                path = %current.source.display(),
                cause = %err,
                "config reload failed; still serving the previous config"
            );
            Err(err)
        }
    }
}

async fn apply(
    current: &Arc<Config>,
    trigger: Trigger,
    listeners: &mut Listeners,
    shared: &Shared,
) -> Result<Arc<Config>, ReloadError> {
    // Reading certificates and parsing is file I/O: off the worker threads,
    // so that requests in flight are not held up by it.
    let path = current.source.clone();
    let mut config = tokio::task::spawn_blocking(move || config::load(&path)).await??;
    let unchanged = keep_start_up_settings(current, &mut config);
    if !unchanged.is_empty() {
        tracing::warn!(
            keys = %unchanged.join(","),
            "these settings are read only at start-up; restart tailcut to change them"
        );
    }

    // Everything that can fail comes first: then nothing has changed yet.
    let plan = listeners.plan(&config.listeners, config.server.reuse_port)?;
    let clusters = shared.proxy.reload(&config)?;
    shared.settings.store(Arc::new(super::settings(&config)));
    let changed = listeners.apply(plan);

    tracing::info!(
        trigger = trigger.name(),
        listeners = %super::describe_listeners(&listeners.local_addrs()),
        listeners_added = %changed.added.join(","),
        listeners_removed = %changed.removed.join(","),
        routes = %super::describe_routes(&config),
        clusters_kept = %clusters.kept.join(","),
        clusters_new = %clusters.built.join(","),
        "config reloaded"
    );
    Ok(Arc::new(config))
}

/// Puts `current`'s values back into `new` for the settings that only
/// start-up reads, and names those that differed.
fn keep_start_up_settings(current: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut differed = Vec::new();
    if new.admin.address != current.admin.address {
        differed.push("admin.address");
    }
    if new.admin.window != current.admin.window {
        differed.push("admin.window");
    }
    let log = (
        &new.access_log.enabled,
        &new.access_log.path,
        &new.access_log.buffer_lines,
    );
    if log
        != (
            &current.access_log.enabled,
            &current.access_log.path,
            &current.access_log.buffer_lines,
        )
    {
        differed.push("access_log");
    }
    if new.server.reuse_port != current.server.reuse_port {
        differed.push("server.reuse_port");
    }
    new.admin = current.admin.clone();
    new.access_log = current.access_log.clone();
    new.server.reuse_port = current.server.reuse_port;
    differed
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(extra: &str) -> Config {
        let text = format!(
            "{extra}\n[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\n[upstreams.u]\nbackends = [\"127.0.0.1:9\"]\n"
        );
        config::parse(Path::new("t.toml"), &text).expect("valid config")
    }

    #[test]
    fn start_up_settings_keep_their_running_values_and_are_named() {
        let current = parse("[admin]\naddress = \"127.0.0.1:9901\"\n");
        let mut new = parse(
            "[admin]\naddress = \"127.0.0.1:9902\"\nwindow = \"10s\"\n[access_log]\nenabled = true\n\
             [server]\nreuse_port = true\ndrain_timeout = \"5s\"\n",
        );
        let differed = keep_start_up_settings(&current, &mut new);
        assert_eq!(
            differed,
            ["admin.address", "admin.window", "access_log", "server.reuse_port"]
        );
        assert_eq!(new.admin.address, current.admin.address);
        assert_eq!(new.admin.window, current.admin.window);
        assert!(!new.access_log.enabled);
        assert!(!new.server.reuse_port);
        // Everything else is the new file's.
        assert_eq!(new.server.drain_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn an_unchanged_file_names_nothing() {
        let current = parse("");
        let mut new = parse("");
        assert!(keep_start_up_settings(&current, &mut new).is_empty());
    }
}
