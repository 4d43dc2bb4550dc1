//! Zero-downtime restart: with `server.reuse_port`, a second process binds
//! the same address while the first still serves; the first is then sent
//! SIGTERM and drains. Clients connecting all along, a new connection per
//! request, see every request answered and no connection refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Kind, Proxy, Upstream};

/// What the clients saw.
#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    refused: AtomicUsize,
    /// Reset, closed without an answer, or anything but a 200.
    failed: AtomicUsize,
}

/// One request on a new connection; `Connection: close` so each request
/// tests the accept path.
async fn one_request(addr: SocketAddr, tally: &Tally) {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(err) => {
            eprintln!("connect: {err}");
            tally.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut response = Vec::new();
    let exchange = async {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: restart\r\nConnection: close\r\n\r\n")
            .await?;
        stream.read_to_end(&mut response).await
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(_)) if response.starts_with(b"HTTP/1.1 200") && response.ends_with(b"hello") => {
            tally.answered.fetch_add(1, Ordering::Relaxed);
        }
        outcome => {
            eprintln!(
                "request failed: {outcome:?}, response {:?}",
                String::from_utf8_lossy(&response)
            );
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// tailcut only: the Go proxy has the same `server.reuse_port`, but
/// `http.Server.Shutdown` closes connections it accepted whose first request
/// it has not read yet, so a run of this test loses a request against it
/// about one time in five (seen 2 of 10 runs), too irregular for the
/// conformance allowlist. See `loadtest/goproxy/README.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tailcut_takes_over_the_port_with_no_request_lost() {
    let kind = Kind::Tailcut;
    let upstream = Upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nreuse_port = true\ndrain_timeout = \"10s\"\n\n\
         [[listeners]]\nname = \"public\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [\"{}\"]\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n",
        upstream.addr
    );
    let mut old = Proxy::start(kind, &config);
    let addr = old.addr;
    assert_eq!(addr.port(), port);

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (tally, stop) = (tally.clone(), stop.clone());
            tokio::spawn(async move {
                // Bounded even if the flag were never set.
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    one_request(addr, &tally).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = Proxy::start(kind, &config);
    assert_eq!(new.addr, addr, "the new process bound the same address");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_switch = tally.answered.load(Ordering::Relaxed);
    old.terminate();
    let status = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(15)));
    assert!(status.is_some_and(|s| s.success()), "old process: {status:?}");
    let at_exit = tally.answered.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task");
    }

    let (answered, refused, failed) = (
        tally.answered.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!("answered {answered} (before the switch {before_switch}, at the old one's exit {at_exit}), refused {refused}, failed {failed}");
    assert_eq!(refused, 0, "connections refused during the switch");
    assert_eq!(failed, 0, "requests lost during the switch");
    assert!(before_switch > 0, "no request answered before the switch");
    assert!(answered > at_exit, "no request answered after the old process left");
    assert!(new.logs().iter().all(|l| l["level"] != "ERROR"), "{:?}", new.logs());
}
