//! Black-box tests of tailcut: real upstream servers on `127.0.0.1:0`, the
//! real `tailcut` binary (or, where a test must look inside the process, the
//! library's server in-process), and real HTTP and WebSocket clients.

// Counts heap use of the in-process proxy's threads (see `streaming.rs`).
#[global_allocator]
static ALLOCATOR: alloc_counter::CountingAllocator = alloc_counter::CountingAllocator;

mod cli;
mod errors;
mod forwarding;
mod headers;
mod pooling;
mod shutdown;
mod streaming;
mod support;
mod websocket;
