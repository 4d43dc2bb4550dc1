//! A proxy process under test, started from its real binary: tailcut, or its
//! Go equivalent in `loadtest/goproxy`. Both take the same command line and
//! config and write the same JSON log lines, so one handle drives either.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The message of tailcut's log line for a reload that was applied.
pub const RELOADED: &str = "config reloaded";
/// The message of tailcut's log line for a reload that changed nothing.
pub const RELOAD_FAILED: &str = "config reload failed; still serving the previous config";

/// Which proxy a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The `tailcut` binary of this package.
    Tailcut,
    /// The Go reverse proxy in `loadtest/goproxy`, built with `go build`.
    Go,
}

impl Kind {
    /// The name the proxy puts in `Via` headers and in its start-up log line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tailcut => "tailcut",
            Kind::Go => "goproxy",
        }
    }

    /// The binary to run; the Go proxy is built on first use.
    pub fn binary(self) -> PathBuf {
        match self {
            Kind::Tailcut => PathBuf::from(env!("CARGO_BIN_EXE_tailcut")),
            Kind::Go => go_binary().to_path_buf(),
        }
    }
}

/// The Go proxy's source folder.
pub fn go_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/goproxy")
}

/// Builds the Go proxy once per test run into Cargo's scratch folder.
fn go_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("goproxy");
        let status = Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(go_source())
            .status();
        match status {
            Ok(status) if status.success() => out,
            Ok(status) => panic!("`go build` of loadtest/goproxy failed ({status}); its errors are above"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                panic!("Go is not installed: the conformance suite needs `go` (1.24 or newer) on PATH to build loadtest/goproxy")
            }
            Err(err) => panic!("cannot run `go build`: {err}"),
        }
    })
}

/// A running proxy; killed when dropped.
pub struct Proxy {
    /// Which proxy this is.
    pub kind: Kind,
    child: Child,
    /// The address of its (first) listener.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the `kind` proxy with `config` and waits until it logs that it is serving.
    pub fn start(kind: Kind, config: &str) -> Proxy {
        Proxy::start_with(kind, config, &[])
    }

    /// [`Proxy::start`] with `args` added to the command line.
    pub fn start_with(kind: Kind, config: &str, args: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(kind.binary())
            .args(["run", "--log-format", "json", "--log-level", "info", "--workers", "2"])
            .args(args)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", kind.name()));
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let sink = logs.clone();
        let started_message = format!("{} started", kind.name());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("proxy (not JSON): {line}");
                    continue;
                };
                if value["message"] == started_message.as_str() {
                    let listeners = value["listeners"].as_str().unwrap_or_default().to_owned();
                    let admin = value["admin"].as_str().unwrap_or_default().to_owned();
                    let _ = started_tx.send((listeners, admin));
                }
                sink.lock().expect("log lock").push(value);
            }
        });
        let (listeners, admin) = match started_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(started) => started,
            Err(_) => {
                let _ = child.kill();
                panic!("{} did not start; status {:?}", kind.name(), child.wait());
            }
        };
        // "name=127.0.0.1:PORT,..." -> the first address.
        let addr = listeners
            .split(',')
            .next()
            .and_then(|l| l.split_once('='))
            .and_then(|(_, a)| a.parse().ok())
            .unwrap_or_else(|| panic!("no listener address in {listeners:?}"));
        Proxy {
            kind,
            child,
            addr,
            admin: admin.parse().ok(),
            logs,
            _dir: dir,
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `Via` entry this proxy adds for a hop of `version` ("1.1", "2").
    pub fn via(&self, version: &str) -> String {
        format!("{version} {}", self.kind.name())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// The config file the proxy was started with.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("proxy.toml")
    }

    /// Replaces the config file with `config`, the way editors and
    /// Kubernetes do: written beside it, then renamed over it.
    pub fn rewrite_config(&self, config: &str) {
        let next = self._dir.path().join("proxy.toml.next");
        std::fs::write(&next, config).expect("write config");
        std::fs::rename(&next, self.config_path()).expect("rename config");
    }

    /// Sends SIGHUP and returns the log line that reports the outcome:
    /// [`RELOADED`] or [`RELOAD_FAILED`].
    pub fn reload(&self) -> serde_json::Value {
        let before = self.reload_outcomes().len();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
        self.next_reload_outcome(before)
    }

    /// Reload outcomes logged so far.
    pub fn reload_outcomes(&self) -> Vec<serde_json::Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"] == RELOADED || l["message"] == RELOAD_FAILED)
            .collect()
    }

    /// Waits up to 10 s for a reload outcome after the first `before`.
    pub fn next_reload_outcome(&self, before: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = self.reload_outcomes().into_iter().nth(before) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no reload outcome logged; logs: {:?}", self.logs());
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

    /// A figure from `/proc/PID/status` in bytes, such as `VmRSS` or `VmHWM` (peak RSS).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix(" kB")?.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
