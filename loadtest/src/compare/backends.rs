//! The backends every target forwards to: `tailcut-load backend` processes,
//! one for the single-backend comparison, several for a balancing scenario
//! whose first backend may misbehave (slow, failing, or refusing: an
//! address nothing listens on). Between trials they are asked how many
//! requests each served, and a faulty backend with a window has its epoch
//! restarted as each trial starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::procs::{self, CpuPlan, Running};
use super::scenario::{FaultMode, Scenario};
use super::{setup, CompareError};
use crate::backend::{EPOCH_PATH, SERVED_PATH};

/// The backends, running.
pub struct Backends {
    /// Every backend's address, the faulty one first.
    pub addrs: Vec<SocketAddr>,
    /// The backend `direct` trials go to: a well-behaved one.
    pub direct: SocketAddr,
    /// Restart the faulty backend's epoch as each trial starts.
    window: bool,
    _processes: Vec<Running>,
}

impl Backends {
    /// Starts the scenario's backends with `me` (this program) on the load
    /// generator's CPUs, and waits until each listens.
    pub fn start(scenario: &Scenario, me: &Path, plan: &CpuPlan) -> Result<Backends, CompareError> {
        let faulty = scenario.backends.faulty.as_ref();
        let size = scenario.backend.size.to_string();
        let mut addrs = Vec::new();
        let mut processes = Vec::new();
        for index in 0..scenario.backends.count {
            let port = procs::free_port().map_err(setup("free port"))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            addrs.push(addr);
            let mut args = vec![
                "backend".to_owned(),
                "--listen".to_owned(),
                addr.to_string(),
                "--size".to_owned(),
                size.clone(),
                "--delay".to_owned(),
                scenario.backend.delay.clone(),
                "--status".to_owned(),
                scenario.backend.status.to_string(),
            ];
            if let Some(capacity) = scenario.backend.capacity {
                args.extend(["--capacity".to_owned(), capacity.to_string()]);
            }
            if let Some(faulty) = faulty.filter(|_| index == 0) {
                match faulty.mode {
                    // Its port was free and stays free: connections are refused.
                    FaultMode::Refusing => continue,
                    FaultMode::Slow => args[6] = faulty.delay.clone(),
                    FaultMode::Failing => args[8] = faulty.status.to_string(),
                }
                args.extend(["--share".to_owned(), faulty.share.to_string()]);
                if let Some(window) = &faulty.window {
                    args.extend(["--window".to_owned(), window.clone()]);
                }
            }
            processes.push(
                Running::start(me, &args, &plan.load, plan, &[], None).map_err(setup("start tailcut-load backend"))?,
            );
            if !procs::wait_for_port(addr, Duration::from_secs(10)) {
                return Err(CompareError::Setup(format!("backend did not listen on {addr}")));
            }
        }
        let direct = if faulty.is_some() { addrs[1] } else { addrs[0] };
        Ok(Backends {
            addrs,
            direct,
            window: faulty.is_some_and(|f| f.window.is_some()),
            _processes: processes,
        })
    }

    /// Whether there are several (a balancing scenario).
    pub fn several(&self) -> bool {
        self.addrs.len() > 1
    }

    /// Requests each backend has served so far (0 for one that does not
    /// answer), in the order of `addrs`.
    pub fn served(&self) -> Vec<u64> {
        self.addrs
            .iter()
            .map(|&addr| {
                control(addr, SERVED_PATH)
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Called just before a trial: the faulty backend's window restarts
    /// when the trial's schedule does.
    pub fn trial_starts(&self) {
        if self.window {
            let lead = crate::run::SCHEDULE_LEAD.as_millis();
            let _ = control(self.addrs[0], &format!("{EPOCH_PATH}?after={lead}ms"));
        }
    }
}

/// GETs `path` from the backend at `addr` on a connection of its own; the
/// response body, if it answered 200.
fn control(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}
