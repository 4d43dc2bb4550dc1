//! What is compared ([`Target`]), and starting it: tailcut and the Go proxy
//! from generated configs, and Debian's nginx and HAProxy as reference
//! columns doing the same job; each pinned to the proxies' CPUs and timed to
//! its first served request. With several backends (a balancing scenario)
//! each balances as its users would have it: tailcut once per policy, the Go
//! proxy round-robin (`httputil` has nothing else), nginx `least_conn` with
//! `max_fails`, HAProxy `leastconn` with health checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::procs::{self, CpuPlan, Running};
use super::scenario::{Scenario, TailFeature};
use super::{setup, CompareError};

/// Connections each proxy accepts: the idle-connection phase's 10,000 and
/// the load's on top.
const MAX_CONNECTIONS: usize = 10_500;

/// A column of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// tailcut with a balancing policy (`PeakEwma`, its default, in the
    /// single-backend comparison).
    Tailcut(Policy),
    /// tailcut with its default balancing and a tail-control feature on.
    TailcutWith(TailFeature),
    /// The Go proxy (`loadtest/goproxy`).
    GoProxy,
    /// nginx or HAProxy.
    Reference(Reference),
    /// The backend alone, without a proxy.
    Direct,
}

/// tailcut's balancing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// P2C over latency estimate x (in flight + 1): the default.
    PeakEwma,
    /// P2C over requests in flight.
    LeastRequest,
    /// Each backend in turn.
    RoundRobin,
}

impl Policy {
    /// Every policy, the default first.
    pub const ALL: [Policy; 3] = [Policy::PeakEwma, Policy::LeastRequest, Policy::RoundRobin];

    /// As the config's `balance` key spells it.
    pub fn key(self) -> &'static str {
        match self {
            Policy::PeakEwma => "peak_ewma",
            Policy::LeastRequest => "least_request",
            Policy::RoundRobin => "round_robin",
        }
    }
}

impl Target {
    /// Its name in results, file names and tables: `tailcut` for the
    /// default policy, `tailcut-POLICY` for the others.
    pub fn name(self) -> &'static str {
        match self {
            Target::Tailcut(Policy::PeakEwma) => "tailcut",
            Target::Tailcut(Policy::LeastRequest) => "tailcut-least_request",
            Target::Tailcut(Policy::RoundRobin) => "tailcut-round_robin",
            Target::TailcutWith(TailFeature::Hedging) => "tailcut-hedging",
            Target::TailcutWith(TailFeature::Retries) => "tailcut-retries",
            Target::TailcutWith(TailFeature::Overload) => "tailcut-limit",
            Target::GoProxy => "goproxy",
            Target::Reference(reference) => reference.name(),
            Target::Direct => "direct",
        }
    }

    /// How it balances over several backends, in words.
    pub fn balancing(self) -> &'static str {
        match self {
            Target::Tailcut(Policy::PeakEwma) => "peak-EWMA P2C (default), outlier ejection",
            Target::Tailcut(Policy::LeastRequest) => "least-request P2C, outlier ejection",
            Target::Tailcut(Policy::RoundRobin) => "round-robin, outlier ejection",
            Target::TailcutWith(TailFeature::Hedging) => {
                "peak-EWMA P2C, outlier ejection, [routes.hedge] defaults (auto delay: p95 of first attempts, 2-500 ms; at most 10% hedged; budget 20% + 10/s)"
            }
            Target::TailcutWith(TailFeature::Retries) => {
                "peak-EWMA P2C, outlier ejection, [routes.retry] defaults (one retry on another backend; budget 20% + 10/s)"
            }
            Target::TailcutWith(TailFeature::Overload) => {
                "[upstreams.NAME.concurrency] defaults: gradient limit, CoDel queue (5 ms / 100 ms, at most 100), adaptive LIFO, 503 + Retry-After"
            }
            Target::GoProxy => "round-robin (httputil.ReverseProxy has no other)",
            Target::Reference(Reference::Nginx) => {
                "least_conn, max_fails=3 fail_timeout=30s, proxy_next_upstream on errors, timeouts, 502-504"
            }
            Target::Reference(Reference::Haproxy) => {
                "leastconn, health checks every 1s, observe layer7 (mark down after 5 errors)"
            }
            Target::Direct => "one fast backend, no proxy",
        }
    }

    /// [`Target::balancing`], and what it does about failures when the
    /// scenario shows `tail` (nginx and HAProxy retry once on another
    /// backend, as tailcut's default retry policy does; neither hedges).
    pub fn describe(self, tail: Option<TailFeature>) -> String {
        let balancing = self.balancing();
        match (self, tail) {
            (Target::Reference(Reference::Nginx), Some(TailFeature::Retries)) => {
                format!("{balancing}, proxy_next_upstream_tries 2 (one retry)")
            }
            (Target::Reference(Reference::Haproxy), Some(TailFeature::Retries)) => format!(
                "{balancing}, retries 1, retry-on conn-failure empty-response response-timeout 502 503 504, option redispatch 1"
            ),
            (Target::Reference(_), Some(TailFeature::Hedging)) => format!("{balancing}; no hedging"),
            (Target::Reference(Reference::Nginx), Some(TailFeature::Overload)) => format!(
                "{balancing}; max_conns = the backend's capacity: a request over it is answered 502 at once (nginx has no queue)"
            ),
            (Target::Reference(Reference::Haproxy), Some(TailFeature::Overload)) => format!(
                "{balancing}; maxconn = the backend's capacity, the rest in HAProxy's queue for at most timeout queue 10ms (then 503)"
            ),
            (Target::Direct, Some(TailFeature::Overload)) => "the backend alone: no proxy, its own queue".to_owned(),
            (Target::Tailcut(_) | Target::GoProxy, Some(TailFeature::Overload)) => {
                format!("{balancing}; no limit: every request is forwarded")
            }
            _ => balancing.to_owned(),
        }
    }
}

/// A proxy under comparison, running.
pub struct Proxy {
    /// What it is.
    pub target: Target,
    /// The binary that runs.
    pub binary: PathBuf,
    /// The process.
    pub process: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// When it was started.
    pub started: Instant,
    /// Start to its first served request.
    pub startup: Duration,
    /// Its stderr, when kept (the Go proxy's GC trace).
    pub stderr: Option<PathBuf>,
}

impl Proxy {
    /// Its name in results ([`Target::name`]).
    pub fn name(&self) -> &'static str {
        self.target.name()
    }
}

/// Starts tailcut (with `policy`) or the Go proxy (`policy` none) in front
/// of `backends` and times it to its first served request.
pub fn start_proxy(
    target: Target,
    binary: &Path,
    backends: &[SocketAddr],
    threads: &str,
    out: &Path,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let name = target.name();
    let port = procs::free_port().map_err(setup("free port"))?;
    let admin = procs::free_port().map_err(setup("free port"))?;
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let balance = match target {
        Target::Tailcut(policy) if backends.len() > 1 => format!("balance = \"{}\"\n", policy.key()),
        _ => String::new(),
    };
    let tail = match target {
        Target::TailcutWith(TailFeature::Hedging) => "[routes.hedge]\n",
        Target::TailcutWith(TailFeature::Retries) => "[routes.retry]\n",
        _ => "",
    };
    let limit = match target {
        Target::TailcutWith(TailFeature::Overload) => "[upstreams.backend.concurrency]\nenabled = true\n",
        _ => "",
    };
    // Room for the idle-connection phase's connections on top of the limit's default.
    let config = format!(
        "[[listeners]]\nname = \"compare\"\naddress = \"127.0.0.1:{port}\"\nmax_connections = {MAX_CONNECTIONS}\n\n\
         [[routes]]\nname = \"all\"\n\
         upstream = \"backend\"\n{tail}\n[upstreams.backend]\n{balance}backends = [{}]\n{limit}\n[admin]\naddress = \"127.0.0.1:{admin}\"\n",
        list.join(", ")
    );
    let config_path = out.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).map_err(|source| CompareError::Write {
        path: config_path.clone(),
        source,
    })?;
    let args = [
        "run".to_owned(),
        "--config".to_owned(),
        config_path.display().to_string(),
        "--workers".to_owned(),
        threads.to_owned(),
        "--log-level".to_owned(),
        "warn".to_owned(),
    ];
    // The Go runtime traces every GC cycle on stderr; compare lines the
    // cycles up with each second's latency.
    let (env, stderr): (&[(&str, &str)], _) = if target == Target::GoProxy {
        (&[("GODEBUG", "gctrace=1")], Some(out.join("goproxy.stderr")))
    } else {
        (&[], None)
    };
    launch(target, binary, &args, port, plan, env, stderr)
}

/// Starts `binary args` on the proxies' CPUs and waits for its first
/// request served on `port`, timing the start-up.
fn launch(
    target: Target,
    binary: &Path,
    args: &[String],
    port: u16,
    plan: &CpuPlan,
    env: &[(&str, &str)],
    stderr: Option<PathBuf>,
) -> Result<Proxy, CompareError> {
    let started = Instant::now();
    let process = Running::start(binary, args, &plan.proxies, plan, env, stderr.as_deref())
        .map_err(|err| CompareError::Setup(format!("start {}: {err}", binary.display())))?;
    let name = target.name();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = started + Duration::from_secs(20);
    while !served(addr) {
        if Instant::now() > deadline {
            return Err(CompareError::Setup(format!(
                "{name} served nothing on {addr} within 20 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Proxy {
        target,
        binary: binary.to_path_buf(),
        process,
        addr,
        started,
        startup: started.elapsed(),
        stderr,
    })
}

/// A reference proxy from Debian's packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// nginx (`/usr/sbin/nginx`).
    Nginx,
    /// HAProxy (`/usr/sbin/haproxy`).
    Haproxy,
}

impl Reference {
    /// Its program name, also its column's name.
    pub fn name(self) -> &'static str {
        match self {
            Reference::Nginx => "nginx",
            Reference::Haproxy => "haproxy",
        }
    }
}

/// `program` on PATH, or in /usr/sbin and /sbin where Debian puts servers.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Starts nginx or HAProxy doing the proxies' job: pooled keep-alive
/// connections to the backends, X-Forwarded-For/-Proto/-Host, Via, one
/// worker thread per proxy thread, no access log; over several backends,
/// balancing as [`Target::balancing`] says.
pub fn start_reference(
    reference: Reference,
    binary: &Path,
    backends: &[SocketAddr],
    scenario: &Scenario,
    out: &Path,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let (threads, tail) = (scenario.proxy_threads, scenario.tail);
    let capacity = scenario.backend.capacity;
    let port = procs::free_port().map_err(setup("free port"))?;
    let name = reference.name();
    let retries = tail == Some(TailFeature::Retries);
    // Overload: each proxy's own way of not sending a backend more than it
    // can serve at once.
    let capacity = capacity.filter(|_| tail == Some(TailFeature::Overload));
    let config_path = out.join(format!("{name}.conf"));
    let several = backends.len() > 1;
    let nginx_upstream = {
        let servers: String = backends
            .iter()
            .map(|b| match (several, capacity) {
                (true, None) => format!("server {b} max_fails=3 fail_timeout=30s; "),
                (true, Some(n)) => format!("server {b} max_fails=3 fail_timeout=30s max_conns={n}; "),
                (false, None) => format!("server {b}; "),
                (false, Some(n)) => format!("server {b} max_conns={n}; "),
            })
            .collect();
        let policy = if several { "least_conn; " } else { "" };
        format!("upstream backend {{ {policy}{servers}keepalive 64; }}")
    };
    // nginx counts an answer as a failure toward max_fails only when
    // proxy_next_upstream names it, and then also tries the request on
    // the next server: both are its answer to a failing backend.
    let next_upstream = match (several, retries) {
        (true, true) => {
            "proxy_next_upstream error timeout http_502 http_503 http_504;\n      proxy_next_upstream_tries 2;\n      "
        }
        (true, false) => "proxy_next_upstream error timeout http_502 http_503 http_504;\n      ",
        (false, _) => "",
    };
    let haproxy_backend: Vec<String> = if several {
        let mut lines = vec!["  balance leastconn".to_owned(), "  option httpchk GET /".to_owned()];
        if retries {
            lines.extend([
                "  retries 1".to_owned(),
                "  retry-on conn-failure empty-response response-timeout 502 503 504".to_owned(),
                "  option redispatch 1".to_owned(),
            ]);
        }
        let maxconn = capacity.map_or(String::new(), |n| format!(" maxconn {n}"));
        lines.extend(backends.iter().enumerate().map(|(i, b)| {
            format!(
                "  server b{i} {b} check inter 1s fall 3 rise 2 observe layer7 error-limit 5 on-error mark-down{maxconn}"
            )
        }));
        lines
    } else {
        let maxconn = capacity.map_or(String::new(), |n| format!(" maxconn {n}"));
        backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server b{} {b}{maxconn}", i + 1))
            .collect()
    };
    let queue_timeout = if capacity.is_some() { "  timeout queue 10ms" } else { "" };
    let (config, args) = match reference {
        Reference::Nginx => (
            format!(
                "daemon off; master_process off; worker_processes {threads}; pid {pid}; error_log stderr error;\n\
                 worker_rlimit_nofile 20000;\n\
                 events {{ worker_connections {MAX_CONNECTIONS}; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 10000000;\n\
                 {nginx_upstream}\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://backend;\n      {next_upstream}proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                 proxy_set_header X-Forwarded-Proto $scheme;\n      proxy_set_header X-Forwarded-Host $host;\n\
                 add_header Via \"1.1 nginx\";\n    }}\n  }}\n}}\n",
                pid = out.join("nginx.pid").display()
            ),
            vec![
                "-c".to_owned(),
                config_path.display().to_string(),
                "-e".to_owned(),
                "stderr".to_owned(),
            ],
        ),
        Reference::Haproxy => (
            [
                "global".to_owned(),
                format!("  nbthread {threads}"),
                // HAProxy reserves two descriptors per connection and will not
                // start if they exceed the process's limit (20,000 here), so it
                // holds at most 9,900: the idle phase reports how many it held.
                "  maxconn 9900".to_owned(),
                "defaults".to_owned(),
                "  mode http".to_owned(),
                "  timeout connect 1s".to_owned(),
                "  timeout client 60s".to_owned(),
                "  timeout server 30s".to_owned(),
                queue_timeout.to_owned(),
                "  option http-keep-alive".to_owned(),
                "  http-reuse always".to_owned(),
                "frontend compare".to_owned(),
                format!("  bind 127.0.0.1:{port}"),
                "  option forwardfor".to_owned(),
                "  http-request set-header X-Forwarded-Proto http".to_owned(),
                "  http-request set-header X-Forwarded-Host %[req.hdr(host)]".to_owned(),
                "  http-response add-header Via \"1.1 haproxy\"".to_owned(),
                "  default_backend backend".to_owned(),
                "backend backend".to_owned(),
            ]
            .into_iter()
            .chain(haproxy_backend)
            .chain([String::new()])
            .collect::<Vec<_>>()
            .join("\n"),
            vec!["-f".to_owned(), config_path.display().to_string(), "-db".to_owned()],
        ),
    };
    std::fs::write(&config_path, config).map_err(|source| CompareError::Write {
        path: config_path.clone(),
        source,
    })?;
    launch(Target::Reference(reference), binary, &args, port, plan, &[], None)
}

/// Whether one GET through `addr` gets an answer from a backend: any
/// status (in a scenario where every backend fails, a 503 is the answer).
pub fn served(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: compare\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ") && head[9].is_ascii_digit()
}
