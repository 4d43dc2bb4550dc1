//! Property tests of the HTTP/1.1 codec.
//!
//! Responses: generated messages (framed right, framed wrong, then possibly
//! corrupted by one byte) are fed to the parser in arbitrary pieces. The
//! parser must never panic, and whatever it accepts it must frame exactly as
//! a reference does: `httparse` for the head, then the message-body rules of
//! RFC 9112 section 6.3 and the chunked coding of section 7.1, written out
//! here independently of the parser (with tailcut's stated policies: a
//! Content-Length that is not one number fails even where it frames nothing,
//! except on 204 and 304; a single LF ends a chunk line, as section 2.2
//! allows a recipient).
//!
//! Requests: encoded heads parse back, with `httparse`, to the same method,
//! target and fields, CRLF-framed, with at most one framing field.

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use proptest::prelude::*;

use super::request::EncodedRequest;
use super::response::{parse_head, Head, ResponseBody, Scratch, Step};
use crate::headers::{rewrite_request, AddedFields, ClientSide};

/// What a response came to: status and body, or a rejection.
type Framed = Result<(u16, Vec<u8>), String>;

/// Feeds `bytes` to the parser in `pieces`, then closes, as the connection
/// does; the final response's status and body.
fn parse_in_pieces(bytes: &[u8], pieces: &[usize], head_request: bool) -> Framed {
    let mut scratch = Scratch::default();
    let mut read = BytesMut::new();
    let mut fed = 0;
    let mut next_piece = pieces.iter().cycle();
    let mut feed = |read: &mut BytesMut| -> bool {
        if fed == bytes.len() {
            return false;
        }
        let n = next_piece.next().copied().unwrap_or(1).clamp(1, bytes.len() - fed);
        read.extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
        true
    };
    // The head: informational ones skipped, as `Conn::poll_head` does.
    let (status, mut body) = 'head: loop {
        while !read.is_empty() {
            match parse_head(&mut read, head_request, 64 * 1024, &mut scratch).map_err(|e| e.to_string())? {
                None => break,
                Some(Head::Informational) => continue,
                Some(Head::Final { response, body, .. }) => break 'head (response.status().as_u16(), body),
            }
        }
        if !feed(&mut read) {
            return Err("closed before a head".into());
        }
    };
    let mut data = Vec::new();
    loop {
        match body.decode(&mut read).map_err(|e| e.to_string())? {
            Step::Frame(frame) => {
                if let Ok(bytes) = frame.into_data() {
                    data.extend_from_slice(&bytes);
                }
            }
            Step::End => return Ok((status, data)),
            Step::More => {
                if !feed(&mut read) {
                    return if matches!(body, ResponseBody::UntilClose) {
                        Ok((status, data))
                    } else {
                        Err("closed early".into())
                    };
                }
            }
        }
    }
}

/// The reference: RFC 9112's framing rules applied to the whole message.
fn reference(bytes: &[u8], head_request: bool) -> Framed {
    let mut at = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 100];
        let mut response = httparse::Response::new(&mut fields);
        let length = match response.parse(&bytes[at..]) {
            Ok(httparse::Status::Complete(length)) => length,
            _ => return Err("head".into()),
        };
        let code = response.code.unwrap_or_default();
        let start = at + length;
        if (100..200).contains(&code) && code != 101 {
            at = start;
            continue;
        }
        if code == 101 {
            return Err("101".into());
        }
        let named = |name: &str| {
            response
                .headers
                .iter()
                .filter(|field| field.name.eq_ignore_ascii_case(name))
                .map(|field| String::from_utf8_lossy(field.value).into_owned())
                .collect::<Vec<_>>()
        };
        if named("transfer-encoding")
            .iter()
            .any(|v| v.contains('\u{fffd}') || !v.is_ascii())
        {
            return Err("Transfer-Encoding".into());
        }
        let codings: Vec<String> = named("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .filter(|t| !t.is_empty())
            .collect();
        let lengths = named("content-length");
        // Section 8.6: one or more fields, each a list; all items the same
        // number of decimal digits that fits.
        let length = {
            let items: Vec<&str> = lengths.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
            let numbers: Option<Vec<u64>> = items
                .iter()
                .map(|i| {
                    (!i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| i.parse::<u64>().ok())
                        .flatten()
                })
                .collect();
            numbers
                .filter(|n| n.windows(2).all(|w| w[0] == w[1]))
                .and_then(|n| n.first().copied())
        };
        let no_content = code == 204 || code == 304;
        if !lengths.is_empty() && length.is_none() && !no_content && (codings.is_empty() || head_request) {
            return Err("Content-Length".into());
        }
        let rest = &bytes[start..];
        if head_request || no_content {
            return Ok((code, Vec::new()));
        }
        if let Some(last) = codings.last() {
            if last == "chunked" {
                return dechunk(rest).map(|body| (code, body));
            }
            return Ok((code, rest.to_vec()));
        }
        return match length {
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| "length".to_string())?;
                rest.get(..n)
                    .map(|b| (code, b.to_vec()))
                    .ok_or_else(|| "closed early".into())
            }
            None => Ok((code, rest.to_vec())),
        };
    }
}

/// Section 7.1: `size [ws] [; ext] CRLF data CRLF` ... `0 CRLF trailers CRLF`.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest.iter().position(|&b| b == b'\n').ok_or("closed early")?;
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let after = line[digits..].trim_ascii_start();
        if digits == 0 || digits > 16 || !(after.is_empty() || after.starts_with(b";")) {
            return Err("chunk size".into());
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).map_err(|e| e.to_string())?, 16)
            .map_err(|e| e.to_string())?;
        rest = &rest[end + 1..];
        if size == 0 {
            // Trailers: complete up to their empty line.
            if rest.starts_with(b"\r\n") {
                return Ok(body);
            }
            let mut fields = [httparse::EMPTY_HEADER; 100];
            return match httparse::parse_headers(rest, &mut fields) {
                Ok(httparse::Status::Complete(_)) => Ok(body),
                Ok(httparse::Status::Partial) => Err("closed early".into()),
                Err(_) => Err("trailers".into()),
            };
        }
        let size = usize::try_from(size).map_err(|e| e.to_string())?;
        let data = rest.get(..size).ok_or("closed early")?;
        body.extend_from_slice(data);
        rest = &rest[size..];
        rest = match rest {
            [b'\r', b'\n', tail @ ..] | [b'\n', tail @ ..] => tail,
            [] | [b'\r'] => return Err("closed early".into()),
            _ => return Err("chunk data not followed by CRLF".into()),
        };
    }
}

/// One framing field, right or wrong for the body it goes with.
fn framing_field(body_len: usize) -> impl Strategy<Value = Option<String>> {
    let n = body_len.to_string();
    prop_oneof![
        Just(None),
        Just(Some(format!("Content-Length: {n}"))),
        Just(Some(format!("Content-Length: {n}, {n}"))),
        Just(Some(format!("Content-Length: {n}\r\nContent-Length: {n}"))),
        Just(Some(format!("Content-Length: {}", body_len + 1))),
        Just(Some(format!("Content-Length: {n}, 1{n}"))),
        Just(Some(format!("Content-Length: +{n}"))),
        Just(Some("Content-Length: 0x10".to_owned())),
        Just(Some("Content-Length: -1".to_owned())),
        Just(Some("Content-Length: 18446744073709551616".to_owned())),
        Just(Some("Content-Length: ".to_owned())),
        Just(Some("Transfer-Encoding: chunked".to_owned())),
        Just(Some("Transfer-Encoding: gzip, chunked".to_owned())),
        Just(Some("Transfer-Encoding: chunked, gzip".to_owned())),
        Just(Some(format!("Transfer-Encoding: chunked\r\nContent-Length: {n}"))),
    ]
}

/// `data` chunked in pieces of `sizes`, with optional trailers.
fn chunked(data: &[u8], sizes: &[usize], trailers: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(if trailers {
        b"0\r\nx-sum: 1\r\n\r\n"
    } else {
        b"0\r\n\r\n"
    });
    out
}

/// A response message: head, body encoded one way or another, maybe
/// followed by more bytes, maybe with one byte changed.
fn response() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let status = prop::sample::select(vec![200u16, 201, 204, 206, 301, 304, 404, 500, 599]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    let body = prop::collection::vec(any::<u8>(), 0..48);
    (status, version, body, any::<bool>()).prop_flat_map(|(status, version, body, head_request)| {
        let len = body.len();
        (
            Just((status, version, body, head_request)),
            framing_field(len),
            prop::collection::vec(1usize..9, 1..4),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(prop::collection::vec(any::<u8>(), 1..12)),
            prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        )
            .prop_map(
                move |((status, version, body, head_request), framing, sizes, trailers, interim, after, corrupt)| {
                    let mut bytes = Vec::new();
                    if interim {
                        bytes.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    bytes.extend_from_slice(format!("{version} {status} X\r\nServer: t\r\n").as_bytes());
                    let is_chunked = framing
                        .as_deref()
                        .is_some_and(|f| f.contains("Transfer-Encoding: chunked"));
                    if let Some(field) = framing {
                        bytes.extend_from_slice(field.as_bytes());
                        bytes.extend_from_slice(b"\r\n");
                    }
                    bytes.extend_from_slice(b"\r\n");
                    if is_chunked {
                        bytes.extend_from_slice(&chunked(&body, &sizes, trailers));
                    } else {
                        bytes.extend_from_slice(&body);
                    }
                    bytes.extend(after.into_iter().flatten());
                    if let Some((at, byte)) = corrupt {
                        let at = at.index(bytes.len());
                        bytes[at] = byte;
                    }
                    (bytes, head_request)
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Never a panic; whatever is accepted is framed as the reference frames it.
    #[test]
    fn responses_in_any_pieces_frame_as_the_reference_or_fail(
        (bytes, head_request) in response(),
        pieces in prop::collection::vec(1usize..40, 1..8),
    ) {
        let parsed = parse_in_pieces(&bytes, &pieces, head_request);
        if let Ok(framed) = &parsed {
            let expected = reference(&bytes, head_request);
            prop_assert_eq!(
                Some(framed),
                expected.as_ref().ok(),
                "{:?} (HEAD: {}) was framed differently; the reference says {:?}",
                String::from_utf8_lossy(&bytes),
                head_request,
                expected
            );
        }
    }

    /// Arbitrary bytes, in arbitrary pieces: never a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        pieces in prop::collection::vec(1usize..64, 1..8),
        head_request in any::<bool>(),
    ) {
        let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = parse_in_pieces(&bytes, &pieces, head_request);
        let _ = parse_in_pieces(&prefixed, &pieces, head_request);
    }

    /// An encoded request head parses back to what was encoded.
    #[test]
    fn encoded_request_heads_parse_back_to_the_same_fields(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE"]),
        target in "/[a-zA-Z0-9._~%!$&'()*+,;=:@/-]{0,24}(\\?[a-z0-9=&]{0,12})?",
        fields in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "accept", "x-custom", "cookie", "connection", "keep-alive", "te", "upgrade", "via",
                    "x-forwarded-for", "x-forwarded-host", "content-length", "transfer-encoding", "host",
                ]),
                "[ -~]{0,16}",
            ),
            0..8,
        ),
        has_body in any::<bool>(),
    ) {
        let mut builder = http::Request::builder().method(method).uri(target.as_str());
        let mut hosts = 0;
        for (name, value) in &fields {
            let value = value.trim();
            // The requests that reach the encoder: a length only as a
            // number, one Host at most (the proxy refuses others first).
            if *name == "content-length" && value.parse::<u64>().is_err() {
                continue;
            }
            if *name == "host" {
                hosts += 1;
                if hosts > 1 {
                    continue;
                }
            }
            builder = builder.header(*name, value);
        }
        let Ok(request) = builder.body(()) else { return Ok(()) };
        let (mut parts, ()) = request.into_parts();
        let client = ClientSide { ip: HeaderValue::from_static("10.0.0.9"), proto: "http" };
        let added = rewrite_request(&mut parts.headers, Version::HTTP_11, None, &client, None);
        let Ok(encoded) = EncodedRequest::new(&parts, added, has_body, Vec::new()) else {
            // Refused (a Content-Length without a body, or lengths that differ).
            return Ok(());
        };

        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        let status = parsed.parse(&encoded.head);
        prop_assert!(matches!(status, Ok(httparse::Status::Complete(n)) if n == encoded.head.len()), "{:?}", status);
        prop_assert_eq!(parsed.method, Some(method));
        prop_assert_eq!(parsed.path, Some(target.as_str()));
        for (i, &b) in encoded.head.iter().enumerate() {
            prop_assert!(b != b'\n' || (i > 0 && encoded.head[i - 1] == b'\r'), "bare LF");
            prop_assert!(b != b'\r' || encoded.head.get(i + 1) == Some(&b'\n'), "bare CR");
        }
        // The fields: the rewritten map's (its Content-Length as one
        // number), then those tailcut adds, then the framing.
        let mut expected: Vec<(String, Vec<u8>)> = parts
            .headers
            .iter()
            .filter(|(name, _)| *name != http::header::CONTENT_LENGTH)
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        added.for_each(parts.headers.get(http::header::HOST), |name, value| {
            expected.push((name.to_string(), value.to_vec()));
        });
        let mut map = HeaderMap::new();
        for field in parsed.headers.iter() {
            map.append(
                HeaderName::from_bytes(field.name.as_bytes()).expect("a name it wrote"),
                HeaderValue::from_bytes(field.value).expect("a value it wrote"),
            );
        }
        let framing = map.get_all(http::header::CONTENT_LENGTH).iter().count()
            + map.get_all(http::header::TRANSFER_ENCODING).iter().count();
        prop_assert!(framing <= 1, "{} framing fields", framing);
        let got: Vec<(String, Vec<u8>)> = parsed
            .headers
            .iter()
            .filter(|f| !f.name.eq_ignore_ascii_case("content-length") && !f.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|f| (f.name.to_owned(), f.value.to_vec()))
            .collect();
        prop_assert_eq!(got, expected);
    }
}
