//! The access log: one JSON line per request, written by a thread of its own.
//!
//! The request path only formats a line and offers it to a bounded channel
//! (`try_send`); it never waits for the disk. When the writer falls behind and
//! the channel is full, the line is dropped and counted in
//! `tailcut_access_log_dropped_total`.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;

use super::Exchange;
use crate::config;

/// The request side of the access log.
#[derive(Debug)]
pub struct AccessLog {
    lines: SyncSender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread for `config`. Opening the file happens on
    /// that thread (a FIFO may block until a reader appears); a file that
    /// cannot be opened is logged, and its lines are then dropped and counted.
    pub fn start(config: &config::AccessLog, dropped: Counter) -> AccessLog {
        let (lines, receiver) = sync_channel::<String>(config.buffer_lines.get());
        let path = config.path.clone();
        let spawned = std::thread::Builder::new()
            .name("tailcut-access-log".into())
            .spawn(move || {
                let mut out: Box<dyn Write> = match open(&path) {
                    Ok(out) => out,
                    Err(err) => {
                        tracing::error!(path = %path.display(), cause = %err, "cannot open the access log");
                        return;
                    }
                };
                while let Ok(first) = receiver.recv() {
                    // Write what is queued, then flush once the queue is
                    // empty: lines appear promptly without a flush per line.
                    let mut written = out.write_all(first.as_bytes());
                    while let (Ok(()), Ok(line)) = (&written, receiver.try_recv()) {
                        written = out.write_all(line.as_bytes());
                    }
                    if let Err(err) = written.and_then(|()| out.flush()) {
                        tracing::error!(path = %path.display(), cause = %err, "access log write failed; stopping it");
                        return;
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(cause = %err, "cannot start the access log writer");
        }
        AccessLog { lines, dropped }
    }

    /// Offers one line for `exchange`; drops and counts it if the writer is behind.
    pub fn write(&self, route: &str, cluster: &str, exchange: &Exchange) {
        let line = line(SystemTime::now(), route, cluster, exchange);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.lines.try_send(line) {
            self.dropped.inc();
        }
    }
}

fn open(path: &Path) -> std::io::Result<Box<dyn Write>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdout()));
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(BufWriter::new(file)))
}

/// One JSON line. Route and cluster names come from the config and are
/// escaped by serde_json; the rest are numbers.
fn line(at: SystemTime, route: &str, cluster: &str, exchange: &Exchange) -> String {
    let value = serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(at).to_string(),
        "route": route,
        "cluster": cluster,
        "status": exchange.status,
        "bytes": exchange.bytes,
        "end": exchange.end.name(),
        "total_us": exchange.total.as_micros() as u64,
        "upstream_us": exchange.upstream.map(|u| u.as_micros() as u64),
        "retries": exchange.marks.retries,
        "hedged": exchange.marks.hedged,
        "hedge_won": exchange.marks.hedge_won,
        "deadline_exceeded": exchange.marks.deadline_exceeded,
    });
    let mut text = value.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::latency::End;

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let exchange = Exchange {
            route: Some(0),
            status: 200,
            end: End::Complete,
            headers: Duration::from_micros(80),
            total: Duration::from_micros(120),
            upstream: Some(Duration::from_micros(100)),
            bytes: 12,
            marks: crate::metrics::Marks {
                retries: 1,
                hedged: true,
                hedge_won: false,
                deadline_exceeded: false,
            },
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let text = line(at, "api \"v1\"", "app", &exchange);
        assert!(text.ends_with('\n') && !text.trim_end().contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["timestamp"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(value["route"], "api \"v1\"");
        assert_eq!(value["status"], 200);
        assert_eq!(value["total_us"], 120);
        assert_eq!(value["upstream_us"], 100);
        assert_eq!(value["end"], "complete");
        assert_eq!(value["retries"], 1);
        assert_eq!(
            (value["hedged"].as_bool(), value["hedge_won"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(value["deadline_exceeded"], false);
    }
}
