//! The upstream side: everything between a request ready for a backend and
//! that backend's response, in the order a request meets it:
//!
//! - [`cluster`]: an upstream's backends, each with its pool and its load,
//!   and the balancer (from [`crate::balance`]) that picks one;
//! - [`exchange`]: one request on one connection: sending it, the
//!   response-header timeout, the response body, and the outcome and its
//!   timing reported to the backend's load;
//! - [`pool`]: idle keep-alive connections and spare buffers, checked out
//!   and in;
//! - [`connect`]: TCP and TLS connections, within the connect timeout;
//! - [`dns`]: backends given by name, resolved to addresses;
//! - [`h1`]: the HTTP/1.1 codec, generic over the connection;
//! - [`upload`]: the client's request body on its way up, with the route's
//!   size limit;
//! - [`budget`]: how many extra attempts (retries, hedges) a cluster takes;
//! - [`error`]: why an exchange failed, typed;
//! - [`health`]: active health checks, off the request path;
//! - [`metrics`]: each backend's state, read when `/metrics` is scraped.

pub mod budget;
pub mod cluster;
pub mod connect;
pub mod dns;
pub mod error;
pub mod exchange;
pub mod h1;
pub(crate) mod health;
pub mod metrics;
pub mod pool;
pub mod upload;

pub use cluster::{Backend, Cluster, Picked};
pub use error::UpstreamError;
pub use exchange::Exchange;
