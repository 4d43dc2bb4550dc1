//! The processes of a comparison: where each runs (the CPU plan), starting
//! them pinned, and what `/proc` says about them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which CPUs the proxies get and which the generator and backend get.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuPlan {
    /// CPU list for every proxy (`taskset -c` syntax).
    pub proxies: String,
    /// CPU list for the generator and the backend.
    pub load: String,
    /// True when proxies and load share CPUs (too few CPUs to separate them).
    pub shared: bool,
    /// True when `taskset` was found; without it nothing is pinned.
    pub pinned: bool,
}

impl CpuPlan {
    /// Proxies on the first `proxy_threads` CPUs, everything else on the rest.
    pub fn new(cpus: usize, proxy_threads: usize) -> CpuPlan {
        let pinned = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if cpus > proxy_threads {
            CpuPlan {
                proxies: format!("0-{}", proxy_threads - 1),
                load: format!("{}-{}", proxy_threads, cpus - 1),
                shared: false,
                pinned,
            }
        } else {
            let all = format!("0-{}", cpus.saturating_sub(1));
            CpuPlan {
                proxies: all.clone(),
                load: all,
                shared: true,
                pinned,
            }
        }
    }

    /// The plan in words, with its warnings.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "CPU plan: proxies on CPU {}, generator and backend on CPU {}",
            self.proxies, self.load
        );
        if self.shared {
            text.push_str("\nwarning: proxies share CPUs with the generator and backend; figures mix their costs");
        }
        if !self.pinned {
            text.push_str("\nwarning: taskset not found (util-linux); nothing is pinned");
        }
        text
    }
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
}

impl Running {
    /// Starts `program args` on `cpus`, with `env` added and stderr into
    /// the file `stderr` (discarded if none). Pinned before exec, so tokio
    /// and Go size themselves from the pinned affinity mask.
    pub fn start(
        program: &Path,
        args: &[String],
        cpus: &str,
        plan: &CpuPlan,
        env: &[(&str, &str)],
        stderr: Option<&Path>,
    ) -> std::io::Result<Running> {
        let mut command = if plan.pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", cpus]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(match stderr {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            });
        Ok(Running {
            child: command.spawn()?,
        })
    }

    /// Its process id (taskset execs the program, so the pid is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (free when asked; the caller binds it soon),
/// never one this process handed out before: a port handed out and left
/// unbound on purpose (a refusing backend's) must not come back as a
/// proxy's, whose answers would then be counted as that backend's.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Keep the listeners until a new port is found, so that the kernel
    // cannot offer the same one twice in this loop.
    let mut held = Vec::new();
    for _ in 0..64 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
        held.push(listener);
    }
    Err(std::io::Error::other("no port that was not handed out already"))
}

/// Waits until `addr` accepts connections; false after `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Pins this process (and the threads it starts later) to `cpus`.
pub fn pin_self(cpus: &str, plan: &CpuPlan) {
    if plan.pinned {
        let _ = Command::new("taskset")
            .args(["-cp", cpus, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// What `/proc` says about a process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProcSample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far, KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time so far, seconds.
    pub cpu_s: f64,
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`; zeros if the process is gone.
pub fn sample(pid: u32) -> ProcSample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces), 1-based from
    // field 3: utime is field 14 and stime field 15, in clock ticks.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ProcSample {
        rss_kib: field("VmRSS"),
        peak_rss_kib: field("VmHWM"),
        cpu_s: ticks as f64 / clock_ticks_per_second(),
    }
}

/// `getconf CLK_TCK`, read once (100 on every Linux this runs on, but asked).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_get_their_own_cpus_when_there_are_enough() {
        let plan = CpuPlan::new(2, 1);
        assert_eq!(
            (plan.proxies.as_str(), plan.load.as_str(), plan.shared),
            ("0-0", "1-1", false)
        );
        let plan = CpuPlan::new(1, 1);
        assert!(plan.shared);
        assert!(plan.describe().contains("warning: proxies share CPUs"));
    }

    #[test]
    fn this_process_has_a_resident_size_and_cpu_time() {
        let mut busy = 0u64;
        for i in 0..2_000_000u64 {
            busy = busy.wrapping_add(i * i);
        }
        assert!(busy > 0);
        let me = sample(std::process::id());
        assert!(me.rss_kib > 0 && me.peak_rss_kib >= me.rss_kib, "{me:?}");
        assert!(me.cpu_s >= 0.0);
        assert_eq!(sample(u32::MAX).rss_kib, 0);
    }
}
