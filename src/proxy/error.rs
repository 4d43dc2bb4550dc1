//! Every way a request can fail, and the one place each becomes an HTTP status.
//!
//! Each error says whose fault it was ([`Fault`]): the client (4xx, logged at
//! debug so an abusive client cannot flood the log), the upstream (5xx, logged
//! at warn), or tailcut itself.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, VIA};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::headers::VIA_VALUE;

/// Whose fault a failed request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something tailcut will not forward.
    Downstream,
    /// A backend failed or was too slow.
    Upstream,
    /// tailcut is out of capacity.
    Internal,
}

/// What an upstream timeout was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connection (and TLS handshake, for a TLS upstream).
    Connect,
    /// The response head, once the request was sent.
    ResponseHeaders,
}

impl Phase {
    fn describe(self, after: Duration) -> String {
        match self {
            Phase::Connect => format!("connect timed out after {after:?}"),
            Phase::ResponseHeaders => format!("no response within {after:?}"),
        }
    }
}

/// A request tailcut could not forward.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request's host and path.
    #[error("no route matches host {host:?} path {path:?}")]
    NoRoute {
        /// The request's host, if it had one.
        host: Option<String>,
        /// The request's path.
        path: String,
    },
    /// The request is malformed in a way hyper's parser lets through.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The backend refused, reset or closed the connection before a response.
    #[error("upstream {upstream} ({backend}): {cause}")]
    UpstreamFailed {
        /// The cluster name.
        upstream: String,
        /// The backend address.
        backend: String,
        /// What went wrong, from the client library.
        cause: String,
    },
    /// Connecting to the backend, or waiting for its response headers, took too long.
    #[error("upstream {upstream} ({backend}): {}", phase.describe(*after))]
    UpstreamTimeout {
        /// The cluster name.
        upstream: String,
        /// The backend address.
        backend: String,
        /// What was being waited for.
        phase: Phase,
        /// The timeout that expired.
        after: Duration,
    },
    /// The client's request body broke its own framing (a malformed chunk,
    /// a body cut short) while it was being forwarded.
    #[error("request body from the client: {cause}")]
    ClientBody {
        /// What hyper's parser said.
        cause: String,
    },
    /// The request uses a transfer coding tailcut does not forward.
    #[error("transfer coding not implemented: {0}")]
    NotImplemented(&'static str),
    /// The request body is larger than the route allows.
    #[error("request body over the route's limit of {limit} bytes")]
    PayloadTooLarge {
        /// The route's `max_body_bytes`.
        limit: u64,
    },
    /// The listener is at its connection limit.
    #[error("listener {listener} is at its limit of {limit} connections")]
    Overloaded {
        /// The listener's name.
        listener: String,
        /// Its connection limit.
        limit: usize,
    },
}

impl ProxyError {
    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) | ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::ClientBody { .. }
            | ProxyError::NotImplemented(_)
            | ProxyError::PayloadTooLarge { .. } => Fault::Downstream,
            ProxyError::UpstreamFailed { .. } | ProxyError::UpstreamTimeout { .. } => Fault::Upstream,
            ProxyError::Overloaded { .. } => Fault::Internal,
        }
    }

    /// Logs the error with its cause and turns it into the client's response:
    /// the status, a one-line text body, and for 503 a `Retry-After`.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        match self.fault() {
            Fault::Downstream => tracing::debug!(status = status.as_u16(), cause = %self, "request rejected"),
            Fault::Upstream | Fault::Internal => {
                tracing::warn!(status = status.as_u16(), cause = %self, "request failed")
            }
        }
        let text = match status {
            StatusCode::NOT_FOUND => "no route\n",
            StatusCode::BAD_REQUEST => "bad request\n",
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large\n",
            StatusCode::NOT_IMPLEMENTED => "transfer coding not implemented\n",
            StatusCode::BAD_GATEWAY => "bad gateway: upstream failed\n",
            StatusCode::GATEWAY_TIMEOUT => "gateway timeout: upstream too slow\n",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded: retry later\n",
            _ => "error\n",
        };
        let mut response = Response::new(ProxyBody::full(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(VIA, HeaderValue::from_static(VIA_VALUE));
        match &self {
            ProxyError::Overloaded { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            // The rest of the request (or its body) was not read: the
            // connection cannot carry another request.
            ProxyError::BadRequest(_)
            | ProxyError::ClientBody { .. }
            | ProxyError::NotImplemented(_)
            | ProxyError::PayloadTooLarge { .. } => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_asks_the_client_to_retry_and_closes() {
        let response = ProxyError::Overloaded {
            listener: "main".into(),
            limit: 1,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert_eq!(response.headers()[CONNECTION], "close");
    }

    #[test]
    fn timeouts_are_504_and_failures_502() {
        let timeout = ProxyError::UpstreamTimeout {
            upstream: "u".into(),
            backend: "b".into(),
            phase: Phase::ResponseHeaders,
            after: Duration::from_secs(1),
        };
        let failed = ProxyError::UpstreamFailed {
            upstream: "u".into(),
            backend: "b".into(),
            cause: "reset".into(),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(failed.fault(), Fault::Upstream);
    }

    #[test]
    fn a_timeout_says_what_it_waited_for() {
        let timeout = |phase| ProxyError::UpstreamTimeout {
            upstream: "u".into(),
            backend: "127.0.0.1:9".into(),
            phase,
            after: Duration::from_secs(1),
        };
        assert_eq!(
            timeout(Phase::Connect).to_string(),
            "upstream u (127.0.0.1:9): connect timed out after 1s"
        );
        assert_eq!(
            timeout(Phase::ResponseHeaders).to_string(),
            "upstream u (127.0.0.1:9): no response within 1s"
        );
    }

    #[test]
    fn a_broken_request_body_is_the_clients_fault() {
        let error = ProxyError::ClientBody {
            cause: "invalid chunk size".into(),
        };
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.fault(), Fault::Downstream);
        assert_eq!(error.into_response().headers()[CONNECTION], "close");
        assert_eq!(
            ProxyError::NotImplemented("identity").status(),
            StatusCode::NOT_IMPLEMENTED
        );
    }
}
