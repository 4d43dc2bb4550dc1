//! Memory per idle connection: open many keep-alive connections to a
//! proxy, send one request on each so the proxy has fully set it up, hold
//! them all, and read how much the proxy's resident set grew.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::procs;

/// One proxy's idle-connection figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleMemory {
    /// The proxy.
    pub proxy: String,
    /// Connections asked for.
    pub wanted: usize,
    /// Connections open and answered when RSS was read.
    pub opened: usize,
    /// RSS before opening them, KiB.
    pub rss_before_kib: u64,
    /// RSS with all of them open, KiB.
    pub rss_after_kib: u64,
    /// Why fewer than `wanted` were opened, if they were.
    pub error: Option<String>,
}

impl IdleMemory {
    /// RSS growth per open connection, bytes.
    pub fn per_connection_bytes(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.opened as f64)
    }
}

/// Opens `wanted` keep-alive connections to `addr` one after another, each
/// answered once, and reads the RSS of process `pid` with them all open.
/// Stops at the first connection that fails and reports it.
pub fn measure(proxy: &str, pid: u32, addr: SocketAddr, wanted: usize) -> IdleMemory {
    let rss_before_kib = procs::sample(pid).rss_kib;
    let mut open = Vec::with_capacity(wanted);
    let mut error = None;
    for k in 0..wanted {
        match one_request(addr) {
            Ok(stream) => open.push(stream),
            Err(err) => {
                error = Some(format!("connection {}: {err}", k + 1));
                break;
            }
        }
    }
    // Let the proxy finish whatever it does after answering.
    std::thread::sleep(Duration::from_millis(500));
    let rss_after_kib = procs::sample(pid).rss_kib;
    let opened = open.len();
    drop(open);
    // Give the proxy time to close them before the next phase.
    std::thread::sleep(Duration::from_millis(500));
    IdleMemory {
        proxy: proxy.to_owned(),
        wanted,
        opened,
        rss_before_kib,
        rss_after_kib,
        error,
    }
}

/// Connects, sends one keep-alive GET and reads its whole response.
fn one_request(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&stream).write_all(b"GET / HTTP/1.1\r\nHost: compare\r\n\r\n")?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("answered {:?}", line.trim_end())));
    }
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_spread_over_the_connections_opened() {
        let idle = IdleMemory {
            proxy: "p".into(),
            wanted: 1000,
            opened: 500,
            rss_before_kib: 1000,
            rss_after_kib: 6000,
            error: Some("connection 501: refused".into()),
        };
        assert_eq!(idle.per_connection_bytes(), Some(5000.0 * 1024.0 / 500.0));
        let none = IdleMemory { opened: 0, ..idle };
        assert_eq!(none.per_connection_bytes(), None);
    }
}
