//! Writing a request: its head, then its body framed by `Content-Length` or
//! chunked (RFC 9112 sections 6 and 7.1).

use std::io::Write;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, CONTENT_LENGTH, HOST};
use http::{request, Method};
use http_body::Body;

use super::{H1Error, Outgoing};
use crate::headers::{allowed_in_trailers, AddedFields};
use crate::upstream::upload::UploadBody;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes, as the client declared them.
    Length(u64),
    /// `Transfer-Encoding: chunked`, added by the proxy: the length is not
    /// known (a chunked or HTTP/2 client body without `Content-Length`).
    Chunked,
}

/// A request head encoded for a backend, with what sending it needs to know.
///
/// Encoded as soon as the proxy has the request, before a connection is
/// taken: the client's head refers to hyper's read buffer, and letting go of
/// it early lets hyper read the next request into the same memory.
#[derive(Debug)]
pub struct EncodedRequest {
    pub(super) head: Vec<u8>,
    pub(super) framing: Framing,
    /// A HEAD request, whose response has no body.
    pub(super) head_request: bool,
    /// Without a body and idempotent: may be sent again on another
    /// connection if the first failed before any response (RFC 9110
    /// section 9.2.2).
    pub resendable: bool,
}

impl EncodedRequest {
    /// Encodes `head` (origin-form URI, headers rewritten) with the fields
    /// tailcut adds into `buffer` (an empty one, to reuse its memory);
    /// `has_body` says whether a body follows.
    pub fn new(
        head: &request::Parts,
        added: impl AddedFields,
        has_body: bool,
        mut buffer: Vec<u8>,
    ) -> Result<Self, H1Error> {
        let framing = framing(&head.headers, has_body)?;
        // Room for the whole head, so that the buffer grows at most once.
        let fields: usize = head
            .headers
            .iter()
            .map(|(name, value)| {
                // `X-Forwarded-Host` repeats `Host`.
                let repeated = if name == HOST { value.len() } else { 0 };
                name.as_str().len() + value.len() + 4 + repeated
            })
            .sum();
        buffer.clear();
        buffer.reserve(head.uri.path_and_query().map_or(1, |p| p.as_str().len()) + fields + 192);
        encode_head(&mut buffer, head, added, framing);
        Ok(EncodedRequest {
            head: buffer,
            framing,
            head_request: head.method == Method::HEAD,
            resendable: !has_body && is_idempotent(&head.method),
        })
    }
}

/// Methods whose request may be sent twice with the effect of once
/// (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The framing for a request whose headers are `headers` (hop-by-hop ones
/// already removed, so no `Transfer-Encoding`).
fn framing(headers: &HeaderMap, has_body: bool) -> Result<Framing, H1Error> {
    if !headers.contains_key(CONTENT_LENGTH) {
        return Ok(if has_body { Framing::Chunked } else { Framing::Empty });
    }
    // The server side validated it; this only reads it back.
    let length =
        super::response::content_length(headers).ok_or(H1Error::InvalidRequest("Content-Length is not a number"))?;
    if length > 0 && !has_body {
        return Err(H1Error::InvalidRequest("Content-Length without a body"));
    }
    Ok(Framing::Length(length))
}

/// Serializes the request line and headers into `out`: the client's fields
/// as rewritten, then those tailcut adds. The target is the URI as the proxy
/// rewrote it (origin form).
fn encode_head(out: &mut Vec<u8>, head: &request::Parts, added: impl AddedFields, framing: Framing) {
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &HeaderName, value: &[u8]| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    // `Host` is picked up on the way: `X-Forwarded-Host` repeats it. The
    // client's `Content-Length` (which may be a list of equal values, or
    // several fields) is replaced by the one number it states.
    let mut host = None;
    for (name, value) in &head.headers {
        if name == HOST {
            host = Some(value);
        } else if name == CONTENT_LENGTH {
            continue;
        }
        field(name, value.as_bytes());
    }
    added.for_each(host, field);
    match framing {
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(length) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Framing::Empty => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// The request body on its way to the backend.
pub(super) struct BodyWriter {
    body: UploadBody,
    /// For `Framing::Length`: the bytes still to come.
    remaining: u64,
    chunked: bool,
}

impl BodyWriter {
    pub(super) fn new(body: UploadBody, framing: Framing) -> Self {
        BodyWriter {
            body,
            remaining: match framing {
                Framing::Length(length) => length,
                Framing::Empty | Framing::Chunked => 0,
            },
            chunked: framing == Framing::Chunked,
        }
    }

    /// Queues the body's next frame in `out`, framed; `Ok(true)` once the
    /// body's end has been queued.
    pub(super) fn poll_encode(&mut self, cx: &mut Context<'_>, out: &mut Outgoing) -> Poll<Result<bool, H1Error>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx)).transpose();
        let frame = frame.map_err(H1Error::Upload)?;
        Poll::Ready(match frame {
            None => self.end(out, None),
            Some(frame) => match frame.into_data() {
                Ok(data) => self.data(out, data),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => self.end(out, Some(&trailers)),
                    // A frame kind http-body may add later: nothing to send.
                    Err(_) => Ok(false),
                },
            },
        })
    }

    fn data(&mut self, out: &mut Outgoing, data: Bytes) -> Result<bool, H1Error> {
        if data.is_empty() {
            return Ok(false);
        }
        let size = data.len() as u64;
        out.clear();
        if self.chunked {
            // Writing to a Vec cannot fail.
            let _ = write!(out.encoded, "{size:x}\r\n");
            out.suffix = b"\r\n";
        } else {
            self.remaining = self
                .remaining
                .checked_sub(size)
                .ok_or(H1Error::InvalidRequest("body longer than its Content-Length"))?;
        }
        out.data = data;
        // A Content-Length body is complete with its last byte: waiting for
        // the client's body to also report its end could let a quick answer
        // arrive first and cost the connection its place in the pool.
        Ok(!self.chunked && self.remaining == 0)
    }

    /// The body ended, with trailers or without. Trailers go only into a
    /// chunked body; a `Content-Length` body has nowhere to put them. Fields
    /// not allowed in trailers, or owned by the proxy, are left out.
    fn end(&mut self, out: &mut Outgoing, trailers: Option<&HeaderMap>) -> Result<bool, H1Error> {
        if !self.chunked {
            if self.remaining > 0 {
                return Err(H1Error::InvalidRequest("body shorter than its Content-Length"));
            }
            return Ok(true);
        }
        encode_last_chunk(out.begin(), trailers);
        Ok(true)
    }
}

/// The last chunk of a chunked body, its trailers and the empty line.
fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    let allowed = trailers
        .into_iter()
        .flatten()
        .filter(|(name, _)| allowed_in_trailers(name));
    for (name, value) in allowed {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Version};

    use super::*;
    use crate::headers::{rewrite_request, ClientSide};

    fn head(method: &str, target: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::builder().method(method).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn client() -> ClientSide {
        ClientSide {
            ip: HeaderValue::from_static("10.0.0.9"),
            proto: "http",
        }
    }

    /// `parts` rewritten for the backend and encoded.
    fn encode(parts: &mut request::Parts, framing: Framing) -> String {
        let client = client();
        let added = rewrite_request(&mut parts.headers, Version::HTTP_11, None, &client, None);
        let mut out = Vec::new();
        encode_head(&mut out, parts, added, framing);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn encodes_the_request_line_the_fields_in_order_then_the_added_ones() {
        let mut parts = head("GET", "/a?b=1", &[("host", "example"), ("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(
            encode(&mut parts, Framing::Empty),
            "GET /a?b=1 HTTP/1.1\r\nhost: example\r\nx-forwarded-for: 10.0.0.1, 10.0.0.9\r\n\
             x-forwarded-host: example\r\nx-forwarded-proto: http\r\nvia: 1.1 tailcut\r\n\r\n"
        );
    }

    #[test]
    fn writes_the_fields_hypers_client_would_be_given() {
        let fields = [
            ("Host", "example"),
            ("Accept", "*/*"),
            ("Via", "1.0 edge"),
            ("X-Forwarded-Proto", "https"),
        ];
        let mut written = head("GET", "/", &fields);
        let text = encode(&mut written, Framing::Empty);
        let mut lines: Vec<&str> = text.lines().skip(1).filter(|line| !line.is_empty()).collect();

        let client = client();
        let mut inserted = head("GET", "/", &fields);
        rewrite_request(&mut inserted.headers, Version::HTTP_11, None, &client, None)
            .insert_into(&mut inserted.headers);
        let mut expected: Vec<String> = inserted
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().expect("ascii")))
            .collect();
        lines.sort_unstable();
        expected.sort_unstable();
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_body_without_length_goes_chunked() {
        let mut parts = head("POST", "/", &[("host", "h")]);
        assert_eq!(framing(&parts.headers, true).expect("framing"), Framing::Chunked);
        assert!(
            encode(&mut parts, Framing::Chunked).ends_with("via: 1.1 tailcut\r\ntransfer-encoding: chunked\r\n\r\n")
        );
    }

    #[test]
    fn request_trailers_lose_what_trailers_may_not_carry() {
        let mut trailers = HeaderMap::new();
        for (name, value) in [
            ("content-length", "50"),
            ("host", "evil"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-checksum", "42"),
        ] {
            trailers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let mut out = Vec::new();
        encode_last_chunk(&mut out, Some(&trailers));
        assert_eq!(String::from_utf8_lossy(&out), "0\r\nx-checksum: 42\r\n\r\n");
    }

    #[test]
    fn the_declared_length_goes_on_as_one_number() {
        let mut parts = head(
            "PUT",
            "/",
            &[("host", "h"), ("content-length", "5, 5"), ("content-length", "5")],
        );
        let text = encode(&mut parts, Framing::Length(5));
        let lengths: Vec<&str> = text.lines().filter(|l| l.starts_with("content-length")).collect();
        assert_eq!(lengths, ["content-length: 5"]);
    }

    #[test]
    fn a_declared_length_is_kept() {
        let parts = head("PUT", "/", &[("content-length", "12")]);
        assert_eq!(framing(&parts.headers, true).expect("framing"), Framing::Length(12));
        let repeated = head("PUT", "/", &[("content-length", "12, 12")]);
        assert_eq!(framing(&repeated.headers, true).expect("framing"), Framing::Length(12));
        assert_eq!(framing(&HeaderMap::new(), false).expect("framing"), Framing::Empty);
        assert!(framing(&parts.headers, false).is_err());
    }
}
