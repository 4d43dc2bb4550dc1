//! A tailcut process started from the real binary, with its config in a
//! temporary directory and its JSON log lines collected.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tailcut"))
}

/// A running tailcut; killed when dropped.
pub struct Tailcut {
    child: Child,
    /// The address of its (first) listener.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    _dir: tempfile::TempDir,
}

impl Tailcut {
    /// Starts tailcut with `config` and waits until it logs that it is serving.
    pub fn start(config: &str) -> Tailcut {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tailcut.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(binary())
            .args([
                "run",
                "--log-format",
                "json",
                "--log-level",
                "info",
                "--workers",
                "2",
                "--config",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tailcut");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("tailcut (not JSON): {line}");
                    continue;
                };
                if value["message"] == "tailcut started" {
                    let _ = started_tx.send(value["listeners"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().expect("log lock").push(value);
            }
        });
        let listeners = match started_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(listeners) => listeners,
            Err(_) => {
                let _ = child.kill();
                panic!("tailcut did not start; status {:?}", child.wait());
            }
        };
        // "name=127.0.0.1:PORT,..." -> the first address.
        let addr = listeners
            .split(',')
            .next()
            .and_then(|l| l.split_once('='))
            .and_then(|(_, a)| a.parse().ok())
            .unwrap_or_else(|| panic!("no listener address in {listeners:?}"));
        Tailcut {
            child,
            addr,
            logs,
            _dir: dir,
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Log lines so far, parsed.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits up to 5 s for a log line satisfying `pred`.
    pub fn wait_for_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(line) = self.logs().into_iter().find(&pred) {
                return Some(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Tailcut {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
