//! What asks the server to stop or to reload: signals, and changes of the
//! config file.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::Trigger;

/// How long the config file's folder must be quiet before its contents are
/// compared: editors and Kubernetes replace a file in several steps.
const SETTLE: Duration = Duration::from_millis(200);

/// The longest a change waits for the folder to settle, so that a file
/// written without pause cannot hold a change back for ever.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(cause = %err, "cannot listen for SIGTERM; only SIGINT stops tailcut");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}

/// Asks for a reload on `reloads` at every SIGHUP. The handler is installed
/// before this returns (SIGHUP's default action would end the process);
/// must be called within the runtime.
pub fn reload_signal(reloads: mpsc::Sender<Trigger>) -> io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(signal = "SIGHUP", "reload requested");
            // Full: a reload is already waiting, and it will read the newest file.
            let _ = reloads.try_send(Trigger::Signal);
        }
    });
    Ok(())
}

/// Watches the config file; dropping it stops the watch.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Asks for a reload on `reloads` whenever the contents of the file at
/// `path` change. The file's folder is watched, not the file: an editor
/// saving by rename, or Kubernetes swapping a ConfigMap's `..data` link,
/// replaces the file rather than writing to it. A change to the file (or to
/// a `..`-named entry, as Kubernetes makes) is followed, once the folder
/// settles, by a comparison of the file's bytes with those last seen; only a
/// difference asks for a reload. Reads of the file, the watcher's own
/// included, are not changes. Must be called within the runtime.
pub fn watch_config(path: &Path, reloads: mpsc::Sender<Trigger>) -> Result<ConfigWatcher, notify::Error> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Err(_) => true,
            Ok(event) => {
                !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| {
                        let file = p.file_name();
                        file == name.as_deref() || file.is_some_and(|f| f.to_string_lossy().starts_with(".."))
                    })
            }
        };
        if relevant {
            // The receiver is gone only when the server is.
            let _ = events_tx.send(event);
        }
    })?;
    watcher.watch(&folder, RecursiveMode::NonRecursive)?;

    let path = path.to_path_buf();
    let mut last_seen = std::fs::read(&path).ok();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Err(err) = event {
                tracing::warn!(cause = %err, "watching the config file failed");
                continue;
            }
            // Wait for the changes to settle, taking in what else arrives,
            // but no longer than SETTLE_AT_MOST.
            let give_up = tokio::time::Instant::now() + SETTLE_AT_MOST;
            loop {
                let quiet = (tokio::time::Instant::now() + SETTLE).min(give_up);
                match tokio::time::timeout_at(quiet, events.recv()).await {
                    Ok(Some(_)) if tokio::time::Instant::now() < give_up => continue,
                    Ok(None) => return,
                    Ok(Some(_)) | Err(_) => break,
                }
            }
            // A small file, read a few times a minute at most: reading it
            // here does not hold the worker for long.
            let contents = std::fs::read(&path).ok();
            if contents.is_some() && contents != last_seen {
                last_seen = contents;
                tracing::info!(path = %path.display(), "config file changed; reload requested");
                let _ = reloads.try_send(Trigger::FileChanged);
            }
        }
    });
    Ok(ConfigWatcher { _watcher: watcher })
}
