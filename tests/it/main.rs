//! Black-box tests of tailcut: real upstream servers on `127.0.0.1:0`, the
//! real `tailcut` binary (or, where a test must look inside the process, the
//! library's server in-process), and real HTTP and WebSocket clients.
//!
//! - `conformance/`: proxy behaviour, run against tailcut and the Go proxy alike.
//! - `admission.rs`: the adaptive concurrency limit and its queue against a
//!   backend with a real capacity, and refusals of unmeetable deadlines.
//! - `balance.rs`: tailcut's load-aware balancing against a slow backend
//!   (the Go proxy balances round-robin, as httputil users run it).
//! - `cli.rs`, `heap.rs`, `restart.rs`: tailcut's own command line, heap use
//!   and zero-downtime restart.
//! - `goproxy.rs`: the Go proxy's own checks (gofmt, vet, unit tests, config errors).
//! - `h2spec.rs`: the HTTP/2 conformance suite against tailcut's listeners.
//! - `reload.rs`: reloading the config (SIGHUP, `--watch-config`) under load.
//! - `tls.rs`: tailcut's certificate-file errors and certificate rotation by
//!   reload (SNI, ALPN, handshake failures and upstream TLS are in
//!   `conformance/tls.rs`, for both proxies).
//! - `deploy.rs`: the systemd unit, Kubernetes manifests, container config and
//!   Dockerfile under `deploy/`, validated offline.

// Counts heap use of the in-process proxy's threads (see `heap.rs`).
#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

mod admission;
mod balance;
mod cli;
mod conformance;
mod deadline;
mod deploy;
mod dns;
mod goproxy;
mod h2spec;
mod heap;
mod reload;
mod restart;
mod retry;
mod support;
mod tls;
