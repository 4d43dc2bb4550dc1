//! Every way a request can fail, and the one place each becomes an HTTP status.
//!
//! Each error says whose fault it was ([`Fault`]): the client (4xx, logged at
//! debug so an abusive client cannot flood the log), the upstream (5xx, logged
//! at warn), or tailcut itself.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, VIA};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::admission::Shed;
use crate::headers::VIA_VALUE;
use crate::upstream::{upload, UpstreamError};

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
    /// The exchange with the backend failed before a response head: it
    /// refused, reset or closed the connection, or was too slow.
    #[error("upstream {upstream} ({backend}): {}", error_chain(&**cause))]
    Upstream {
        /// The cluster name.
        upstream: String,
        /// The backend address.
        backend: std::net::SocketAddr,
        /// What went wrong (boxed: a rare path, kept out of the size of
        /// every request's future).
        cause: Box<UpstreamError>,
    },
    /// The request's own deadline (`grpc-timeout`, `x-request-timeout`)
    /// had passed when it arrived.
    #[error("the request's deadline had passed on arrival")]
    DeadlinePassed,
    /// The cluster has no backend: its names resolved to no address yet.
    #[error("upstream {upstream} has no backend: its names resolved to no address")]
    NoBackend {
        /// The cluster name.
        upstream: String,
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
    /// The cluster's admission control refused the request: over its
    /// concurrency limit with the queue full or overloaded, waited in vain,
    /// or due sooner than its backends can answer.
    #[error("upstream {upstream} refused the request ({}): over its concurrency limit", reason.label())]
    Shed {
        /// The cluster name.
        upstream: String,
        /// Why.
        reason: Shed,
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
            // Timeouts are 504, like nginx; refused, reset or closed is 502.
            ProxyError::Upstream { cause, .. } if cause.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::DeadlinePassed => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded { .. } | ProxyError::NoBackend { .. } | ProxyError::Shed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::ClientBody { .. }
            | ProxyError::NotImplemented(_)
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::DeadlinePassed => Fault::Downstream,
            ProxyError::Upstream { .. } | ProxyError::NoBackend { .. } => Fault::Upstream,
            ProxyError::Overloaded { .. } | ProxyError::Shed { .. } => Fault::Internal,
        }
    }

    /// The one mapping of a failed exchange with backend `backend` of
    /// cluster `upstream`, for pooled requests and upgrades alike. A request
    /// body over the route's limit, or one that broke its own framing, is
    /// the client's fault, not the backend's (whose connection closes with
    /// the failed exchange).
    pub fn from_upstream(upstream: &str, backend: std::net::SocketAddr, cause: UpstreamError) -> Self {
        if let Some(body) = cause.client_body() {
            if let Some(too_large) = body.downcast_ref::<upload::TooLarge>() {
                return ProxyError::PayloadTooLarge { limit: too_large.limit };
            }
            return ProxyError::ClientBody {
                cause: error_chain(body.as_ref()),
            };
        }
        ProxyError::Upstream {
            upstream: upstream.to_owned(),
            backend,
            cause: Box::new(cause),
        }
    }

    /// Logs the error with its cause and turns it into the client's response:
    /// the status, a one-line text body, and for 503 a `Retry-After`.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        match self.fault() {
            // Refusals come by the thousand under overload: at debug, so
            // that the log is not what overloads the proxy next.
            Fault::Internal if matches!(self, ProxyError::Shed { .. }) => {
                tracing::debug!(status = status.as_u16(), cause = %self, "request shed")
            }
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
            StatusCode::GATEWAY_TIMEOUT if matches!(self, ProxyError::DeadlinePassed) => {
                "gateway timeout: the request's deadline had passed\n"
            }
            StatusCode::GATEWAY_TIMEOUT => "gateway timeout: upstream too slow\n",
            StatusCode::SERVICE_UNAVAILABLE if matches!(self, ProxyError::NoBackend { .. }) => {
                "no backend: retry later\n"
            }
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
            ProxyError::NoBackend { .. } | ProxyError::Shed { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
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

/// `outer: inner: innermost`, for log lines.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::h1::H1Error;

    #[test]
    fn a_shed_request_is_asked_to_retry_on_a_connection_kept_open() {
        let response = ProxyError::Shed {
            upstream: "app".into(),
            reason: Shed::Overloaded,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert!(response.headers().get(CONNECTION).is_none());
    }

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

    fn upstream(cause: UpstreamError) -> ProxyError {
        ProxyError::from_upstream("u", "127.0.0.1:9".parse().expect("address"), cause)
    }

    #[test]
    fn timeouts_are_504_and_failures_502() {
        let timeout = upstream(UpstreamError::ResponseTimeout(Duration::from_secs(1)));
        let failed = upstream(UpstreamError::Connect(std::io::Error::from_raw_os_error(111)));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(failed.fault(), Fault::Upstream);
    }

    #[test]
    fn a_timeout_says_what_it_waited_for() {
        assert_eq!(
            upstream(UpstreamError::ConnectTimeout(Duration::from_secs(1))).to_string(),
            "upstream u (127.0.0.1:9): connect timed out after 1s"
        );
        assert_eq!(
            upstream(UpstreamError::ResponseTimeout(Duration::from_secs(1))).to_string(),
            "upstream u (127.0.0.1:9): no response within 1s"
        );
    }

    #[test]
    fn a_failure_names_each_cause_once() {
        let refused = UpstreamError::Connect(std::io::Error::from_raw_os_error(111));
        let text = error_chain(&refused);
        assert!(text.starts_with("connect: "), "{text}");
        assert_eq!(text.matches("os error 111").count(), 1, "{text}");

        let closed = UpstreamError::Http(H1Error::Io(std::io::Error::from_raw_os_error(104)));
        let text = error_chain(&closed);
        assert_eq!(text.matches("os error 104").count(), 1, "{text}");
    }

    #[test]
    fn a_request_body_that_failed_is_the_clients_fault() {
        let too_large = UpstreamError::Http(H1Error::Upload(Box::new(upload::TooLarge { limit: 10 })));
        assert_eq!(upstream(too_large).status(), StatusCode::PAYLOAD_TOO_LARGE);
        let broken = UpstreamError::Http(H1Error::Upload("invalid chunk size".into()));
        assert_eq!(upstream(broken).fault(), Fault::Downstream);
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
