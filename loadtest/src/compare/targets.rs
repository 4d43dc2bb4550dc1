//! Starting what is compared: tailcut and the Go proxy from generated
//! configs, and Debian's nginx and HAProxy as reference columns doing the
//! same job; each pinned to the proxies' CPUs and timed to its first
//! served request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::procs::{self, CpuPlan, Running};
use super::{setup, CompareError};

/// Connections each proxy accepts: the idle-connection phase's 10,000 and
/// the load's on top.
const MAX_CONNECTIONS: usize = 10_500;

/// A proxy under comparison, running.
pub struct Proxy {
    /// `tailcut`, `goproxy`, `nginx` or `haproxy`.
    pub name: &'static str,
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

/// Starts a proxy in front of `backend` and times it to its first served request.
pub fn start_proxy(
    name: &'static str,
    binary: &Path,
    backend: SocketAddr,
    threads: &str,
    out: &Path,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let port = procs::free_port().map_err(setup("free port"))?;
    let admin = procs::free_port().map_err(setup("free port"))?;
    // Room for the idle-connection phase's connections on top of the limit's default.
    let config = format!(
        "[[listeners]]\nname = \"compare\"\naddress = \"127.0.0.1:{port}\"\nmax_connections = {MAX_CONNECTIONS}\n\n\
         [[routes]]\nname = \"all\"\n\
         upstream = \"backend\"\n\n[upstreams.backend]\nbackends = [\"{backend}\"]\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n"
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
    let (env, stderr): (&[(&str, &str)], _) = if name == "goproxy" {
        (&[("GODEBUG", "gctrace=1")], Some(out.join("goproxy.stderr")))
    } else {
        (&[], None)
    };
    launch(name, binary, &args, port, plan, env, stderr)
}

/// Starts `binary args` on the proxies' CPUs and waits for its first
/// request served on `port`, timing the start-up.
fn launch(
    name: &'static str,
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
        name,
        binary: binary.to_path_buf(),
        process,
        addr,
        started,
        startup: started.elapsed(),
        stderr,
    })
}

/// A reference proxy from Debian's packages.
#[derive(Debug, Clone, Copy)]
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
/// connections to the backend, X-Forwarded-For/-Proto/-Host, Via, one
/// worker thread per proxy thread, no access log.
pub fn start_reference(
    reference: Reference,
    binary: &Path,
    backend: SocketAddr,
    threads: usize,
    out: &Path,
    plan: &CpuPlan,
) -> Result<Proxy, CompareError> {
    let port = procs::free_port().map_err(setup("free port"))?;
    let name = reference.name();
    let config_path = out.join(format!("{name}.conf"));
    let (config, args) = match reference {
        Reference::Nginx => (
            format!(
                "daemon off; master_process off; worker_processes {threads}; pid {pid}; error_log stderr error;\n\
                 worker_rlimit_nofile 20000;\n\
                 events {{ worker_connections {MAX_CONNECTIONS}; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 10000000;\n\
                 upstream backend {{ server {backend}; keepalive 64; }}\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                 proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
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
                format!("  server b1 {backend}"),
                String::new(),
            ]
            .join("\n"),
            vec!["-f".to_owned(), config_path.display().to_string(), "-db".to_owned()],
        ),
    };
    std::fs::write(&config_path, config).map_err(|source| CompareError::Write {
        path: config_path.clone(),
        source,
    })?;
    launch(name, binary, &args, port, plan, &[], None)
}

/// Whether one GET through `addr` gets a 200.
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
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}
