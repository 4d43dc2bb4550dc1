//! Why an exchange with a backend failed, typed: the proxy maps each kind to
//! one status (`proxy::error`), the cluster counts it, and a retry policy
//! asks [`UpstreamError::retryable`].

use std::time::Duration;

use super::h1::H1Error;
use super::upload::UploadError;

/// Why a request could not be sent to a backend or answered by it.
///
/// (Errors here say their cause in their own text and do not repeat it as a
/// `source`, which log lines would print twice.)
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Opening the TCP connection failed (refused, unreachable).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// Opening the TCP connection (and the TLS session, for a TLS
    /// upstream) took longer than the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake with the backend failed (its certificate did not
    /// verify, among other causes).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// No response head within the response-header timeout, counted from
    /// when the request (and its body) had been sent.
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    /// The exchange on a pooled connection failed before a complete
    /// response head arrived.
    #[error(transparent)]
    Http(#[from] H1Error),
    /// An upgrade exchange, which hyper's client runs, failed before a
    /// complete response head arrived.
    #[error("upgrade exchange")]
    Upgrade(#[source] hyper::Error),
    /// The backend switched to a protocol the client did not offer.
    #[error("101 switching to {answered:?}, which the client did not offer ({offered:?})")]
    UnofferedProtocol {
        /// The backend's `Upgrade`.
        answered: Option<http::HeaderValue>,
        /// The client's.
        offered: http::HeaderValue,
    },
}

impl UpstreamError {
    /// Whether the backend cannot have acted on the request, so that the
    /// same request may go to another backend whatever its method: it never
    /// reached one (connect failures), or the connection was refused, reset
    /// or closed before any response. Timeouts are not: a slow backend may
    /// still be processing the request, and a second copy is safe only for
    /// an idempotent method, which the caller knows and this does not.
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout(_) | UpstreamError::Tls(_) => true,
            UpstreamError::Http(err) => matches!(err, H1Error::Closed | H1Error::Io(_)),
            UpstreamError::Upgrade(err) => err.is_closed() || err.is_incomplete_message(),
            UpstreamError::ResponseTimeout(_) | UpstreamError::UnofferedProtocol { .. } => false,
        }
    }

    /// Whether connecting failed (timeouts included).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout(_) | UpstreamError::Tls(_)
        )
    }

    /// Whether a timeout expired (connect or response headers).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout(_) | UpstreamError::ResponseTimeout(_)
        )
    }

    /// The client's request body failed (it went away, broke its framing or
    /// went over the route's limit): the client's fault, not the backend's.
    pub fn client_body(&self) -> Option<&UploadError> {
        match self {
            UpstreamError::Http(H1Error::Upload(cause)) => Some(cause),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_the_backend_could_act_are_retryable() {
        let refused = UpstreamError::Connect(std::io::Error::from_raw_os_error(111));
        assert!(refused.retryable() && refused.is_connect() && !refused.is_timeout());
        assert!(UpstreamError::ConnectTimeout(Duration::from_secs(1)).retryable());
        let reset = UpstreamError::Http(H1Error::Io(std::io::Error::from_raw_os_error(104)));
        assert!(reset.retryable() && !reset.is_connect());
        assert!(UpstreamError::Http(H1Error::Closed).retryable());

        let slow = UpstreamError::ResponseTimeout(Duration::from_secs(1));
        assert!(!slow.retryable() && slow.is_timeout());
        assert!(!UpstreamError::Http(H1Error::InvalidResponse("bad status line")).retryable());
        let upload = UpstreamError::Http(H1Error::Upload("client went away".into()));
        assert!(!upload.retryable() && upload.client_body().is_some());
    }
}
