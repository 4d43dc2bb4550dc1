//! The conformance suite: what a reverse proxy doing tailcut's job must do,
//! checked against tailcut and against its Go equivalent (`loadtest/goproxy`)
//! by the same test code, so that comparing the two compares equal work.
//!
//! Each test is an `async fn name(kind: Kind)`; `conformance!(name, ...)`
//! turns it into two tests, `name::tailcut` and `name::goproxy`. Run one
//! proxy's half with `cargo test --test it -- ::goproxy`.
//!
//! Where the two proxies differ on purpose, [`ALLOWLIST`] says which test,
//! against which proxy, and why. A listed test still runs there and must
//! still fail: once the difference is gone, the stale entry fails the run.

use std::future::Future;

use crate::support::Kind;

/// Why the Go proxy answers a client's malformed request body with 502.
const GO_BODY_ERROR_IS_502: &str = "ReverseProxy reports any error of the outgoing request as an \
     upstream failure (502), an error reading the client's own malformed chunked body included; \
     net/http's server then answers 400 and closes. Nothing malformed reaches the backend. Stock \
     net/http behaviour; tailcut answers 400 at once.";

/// Intentional differences: (test path suffix, proxy, why).
const ALLOWLIST: &[(&str, Kind, &str)] = &[
    (
        "websocket::sigterm_lets_an_open_tunnel_finish_within_the_drain",
        Kind::Go,
        "http.Server.Shutdown neither waits for nor closes hijacked connections, and a WebSocket \
         tunnel is one, so the process exits with the tunnel open and cuts it. Stock net/http \
         behaviour; tailcut keeps tunnels in its drain.",
    ),
    (
        "forwarding::a_request_with_both_content_length_and_chunked_cannot_smuggle_a_second_request",
        Kind::Go,
        "net/http drops Content-Length when Transfer-Encoding is present and keeps the connection \
     open, so the bytes after the last chunk are read as a second request and forwarded as one. \
     The proxy and the backend agree on the framing, so nothing is hidden from the proxy, but \
     tailcut (like nginx and HAProxy) closes such a connection instead. Stock net/http \
     behaviour, kept so the Go proxy stays the one a Go engineer would write.",
    ),
    (
        "hostile_client::content_length_then_chunked_cannot_smuggle",
        Kind::Go,
        "The same net/http behaviour as for \
         forwarding::a_request_with_both_content_length_and_chunked_cannot_smuggle_a_second_request: \
         the bytes after the last chunk become a second request, forwarded as one.",
    ),
    (
        "hostile_client::a_chunk_size_with_a_letter_is_the_clients_fault",
        Kind::Go,
        GO_BODY_ERROR_IS_502,
    ),
    (
        "hostile_client::a_negative_chunk_size_is_the_clients_fault",
        Kind::Go,
        GO_BODY_ERROR_IS_502,
    ),
    (
        "hostile_client::a_hexadecimal_prefix_on_a_chunk_size_is_the_clients_fault",
        Kind::Go,
        GO_BODY_ERROR_IS_502,
    ),
    (
        "hostile_client::an_overflowing_chunk_size_is_the_clients_fault",
        Kind::Go,
        GO_BODY_ERROR_IS_502,
    ),
    (
        "hostile_client::http_0_9_is_refused",
        Kind::Go,
        "net/http closes a connection whose request line has no version without answering; \
         nothing is forwarded. Stock net/http behaviour; tailcut answers 400.",
    ),
    (
        "hostile_backend::both_content_length_and_chunked_are_framed_chunked_and_not_reused",
        Kind::Go,
        "net/http's Transport frames such a response by its chunked coding, as tailcut does, then \
         returns the connection to its pool. RFC 9112 section 6.1 calls the message a possible \
         response-splitting attempt; tailcut closes the connection instead of trusting the rest \
         of it. Stock net/http behaviour.",
    ),
    (
        "hostile_backend::no_content_responses_reach_http2_clients_without_content_length",
        Kind::Go,
        "ReverseProxy copies a 204's or 304's Content-Length, and net/http's HTTP/2 server sends \
         it; a client that checks it against the (empty) body fails. Stock net/http behaviour.",
    ),
    (
        "hostile_backend::trailers_lose_the_fields_trailers_may_not_carry",
        Kind::Go,
        "ReverseProxy copies every trailer field the backend sends, Transfer-Encoding and \
         Connection among them; the HTTP/2 client then resets the stream (PROTOCOL_ERROR) and \
         loses the whole body. Stock net/http behaviour.",
    ),
];

/// Turns each named `async fn name(kind: Kind)` of the calling module into a
/// module `name` with the tests `tailcut` and `goproxy`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use crate::support::Kind;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tailcut() {
                    crate::conformance::run(module_path!(), Kind::Tailcut, super::$name).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn goproxy() {
                    crate::conformance::run(module_path!(), Kind::Go, super::$name).await;
                }
            }
        )*
    };
}

// Declared after the macro so that they see it.
mod backend_responses;
mod errors;
mod forwarding;
mod headers;
mod hostile_backend;
mod hostile_client;
mod limits;
mod metrics;
mod pooling;
mod shutdown;
mod streaming;
mod tls;
mod websocket;

/// Runs `test` against `kind`, or, if the allowlist names the pair, checks
/// that the documented difference is still there.
pub(crate) async fn run<F, Fut>(test: &str, kind: Kind, body: F)
where
    F: FnOnce(Kind) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let allowed = ALLOWLIST.iter().find(|(name, k, _)| *k == kind && test.ends_with(name));
    let Some((_, _, why)) = allowed else {
        body(kind).await;
        return;
    };
    match tokio::spawn(body(kind)).await {
        Err(failure) if failure.is_panic() => {
            eprintln!("{test} fails against {} as documented: {why}", kind.name());
        }
        Ok(()) => panic!(
            "{test} now passes against {}: remove its entry from the conformance allowlist",
            kind.name()
        ),
        Err(failure) => panic!("{test}: {failure}"),
    }
}
