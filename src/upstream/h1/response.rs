//! Reading a response: its head with `httparse`, then its body as framed by
//! RFC 9112 section 6.3, split off the read buffer without copying.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Response, StatusCode, Version};
use http_body::{Frame, SizeHint};

use super::H1Error;
use crate::headers::{tokens, KEEP_ALIVE};

/// Most header fields in a response head or in trailers (hyper's limit too).
const MAX_HEADERS: usize = 100;

/// Longest chunk-size line accepted (the size and any chunk extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// A response head read off the connection.
pub(super) enum Head {
    /// A 1xx response other than 101: skipped, the final one follows.
    Informational,
    Final {
        response: Response<()>,
        body: ResponseBody,
        /// The backend allows another exchange on the connection.
        keep_alive: bool,
    },
}

/// Where one header field lies in a response head: name, then value.
type Span = [usize; 4];

/// What parsing one response head needs besides the bytes, kept on the
/// connection so that no head pays for it again.
#[derive(Default)]
pub(super) struct Scratch {
    /// An emptied header map (the request's) to parse the response head
    /// into: its storage is reused, not allocated anew, as hyper's client
    /// does.
    pub(super) headers: Option<HeaderMap>,
    /// Field positions, between parsing and cutting the values out.
    spans: Vec<Span>,
    /// The names of the last head's fields, in order, each with its
    /// spelling. A backend tends to send the same fields, spelled the same
    /// way, in the same order: each name is first compared with the one in
    /// its place last time, and reused when the bytes are equal. That is a
    /// `memcmp` of a few bytes, where `HeaderName::from_bytes` lowercases
    /// the name and looks it up among the standard ones (and copies it into
    /// an allocation when it is not one).
    names: Vec<(Box<[u8]>, HeaderName)>,
}

impl Scratch {
    /// The name of field `index`, spelled `raw` in the head.
    fn name(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, H1Error> {
        if let Some((spelled, name)) = self.names.get(index) {
            if **spelled == *raw {
                return Ok(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| H1Error::InvalidResponse("header name"))?;
        let known = (raw.into(), name.clone());
        match self.names.get_mut(index) {
            Some(place) => *place = known,
            None => self.names.push(known),
        }
        Ok(name)
    }
}

/// Parses a response head at the start of `read`, taking it out of the
/// buffer; `None` while it is incomplete. Header values are slices of the
/// head's bytes, not copies.
pub(super) fn parse_head(
    read: &mut BytesMut,
    head_request: bool,
    max_head: usize,
    scratch: &mut Scratch,
) -> Result<Option<Head>, H1Error> {
    // Uninitialised, unlike `[EMPTY_HEADER; N]`, which would write all
    // 3 KiB of slots for every head where a handful are used.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let length =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, read, &mut fields) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if read.len() > max_head => {
                return Err(H1Error::InvalidResponse("head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::InvalidResponse("too many header fields")),
            Err(_) => return Err(H1Error::InvalidResponse("malformed head")),
        };
    let code = parsed.code.unwrap_or_default();
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each name and value lies in the buffer, so they can be cut from
    // the head once it is frozen into `Bytes`.
    let base = read.as_ptr() as usize;
    scratch.spans.clear();
    scratch.spans.extend(parsed.headers.iter().map(|field| {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        [name, name + field.name.len(), value, value + field.value.len()]
    }));
    let head = read.split_to(length).freeze();

    if (100..200).contains(&code) && code != 101 {
        return Ok(Some(Head::Informational));
    }
    if code == 101 {
        return Err(H1Error::InvalidResponse("101 to a request that asked for no upgrade"));
    }
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::InvalidResponse("status code"))?;
    let mut headers = scratch.headers.take().unwrap_or_default();
    // Room for what the proxy adds (Via) without growing again.
    headers.reserve(scratch.spans.len() + 1);
    // The fields that frame the response or describe this connection are
    // read as they go by. Those that concern only this hop (RFC 9110 section
    // 7.6.1) stay out of the map: Transfer-Encoding and Keep-Alive always,
    // Connection when it names no other field (which the response's header
    // hygiene must then remove).
    let (mut close, mut keep_alive_token, mut has_content_length) = (false, false, false);
    // The length its `Content-Length` fields state, if they agree (RFC 9112
    // section 6.3 item 5), and whether the one field states it as one plain
    // number (else the field is replaced by one that does).
    let (mut length, mut length_valid, mut length_canonical) = (None, true, true);
    // Whether the last transfer coding is chunked; `None` without any.
    let mut chunked_last = None;
    for index in 0..scratch.spans.len() {
        let [name_start, name_end, value_start, value_end] = scratch.spans[index];
        let name = scratch.name(index, &head[name_start..name_end])?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| H1Error::InvalidResponse("header value"))?;
        if name == CONNECTION {
            let mut names_others = false;
            for token in tokens(&value) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive_token = true;
                } else {
                    names_others = true;
                }
            }
            if !names_others {
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            // Not text, it would read as no coding at all: the body would be
            // framed otherwise than the backend framed it.
            if value.to_str().is_err() {
                return Err(H1Error::InvalidResponse("Transfer-Encoding"));
            }
            for token in tokens(&value) {
                chunked_last = Some(token.eq_ignore_ascii_case("chunked"));
            }
            continue;
        } else if name == KEEP_ALIVE {
            continue;
        } else if name == CONTENT_LENGTH {
            let bytes = value.as_bytes();
            let leading_zero = bytes.len() > 1 && bytes[0] == b'0';
            length_canonical = !(has_content_length || leading_zero || bytes.contains(&b','));
            has_content_length = true;
            length_valid &= fold_content_length(value.as_bytes(), &mut length);
        }
        headers.append(name, value);
    }
    let length = length.filter(|_| length_valid);

    let mut keep_alive = if version == Version::HTTP_11 {
        !close
    } else {
        keep_alive_token
    };
    let no_content = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if has_content_length {
        match length {
            // 204 and 304 have no body whatever they declare; HTTP/2 clients
            // check a Content-Length against the body and would fail.
            _ if no_content => {
                headers.remove(CONTENT_LENGTH);
            }
            // A list of equal values, or several fields: one value goes on.
            Some(length) if !length_canonical => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            }
            Some(_) => {}
            // Even where it frames nothing (the answer to HEAD), a
            // Content-Length that is not one number is not relayed.
            None if chunked_last.is_none() || head_request => {
                return Err(H1Error::InvalidResponse("Content-Length"));
            }
            // Transfer-Encoding wins; the field is removed below.
            None => {}
        }
    }
    let body = if head_request || no_content {
        ResponseBody::Length(0)
    } else if let Some(chunked_last) = chunked_last {
        // Section 6.1: with both, Transfer-Encoding wins, the Content-Length
        // must not be passed on, and the connection must close after this
        // response; from an HTTP/1.0 backend, the framing is suspect.
        if headers.remove(CONTENT_LENGTH).is_some() || version == Version::HTTP_10 {
            keep_alive = false;
        }
        if chunked_last {
            ResponseBody::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            ResponseBody::UntilClose
        }
    } else if let Some(length) = length {
        ResponseBody::Length(length)
    } else {
        keep_alive = false;
        ResponseBody::UntilClose
    };

    // The response keeps the default version, HTTP/1.1: the backend's
    // version describes its own hop, and the client's server speaks its
    // own (RFC 9110 section 6.2). An HTTP/1.0 status line passed on would
    // make an HTTP/1.1 client close the connection after every response.
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Some(Head::Final {
        response,
        body,
        keep_alive,
    }))
}

/// The one length every `Content-Length` field line states, each a
/// comma-separated list of decimal numbers; `None` if any item is not one, or
/// two differ (RFC 9112 section 6.3 item 5: such a message is invalid).
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        if !fold_content_length(value.as_bytes(), &mut length) {
            return None;
        }
    }
    length
}

/// Folds one `Content-Length` field value into `length`, the length the
/// values before it stated; false if an item is not a decimal number (or
/// overflows) or differs from the others.
fn fold_content_length(value: &[u8], length: &mut Option<u64>) -> bool {
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() {
            return false;
        }
        let mut number: u64 = 0;
        for &digit in item {
            if !digit.is_ascii_digit() {
                return false;
            }
            match number
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            {
                Some(n) => number = n,
                None => return false,
            }
        }
        match *length {
            Some(seen) if seen != number => return false,
            _ => *length = Some(number),
        }
    }
    true
}

/// What remains of a response body.
pub(super) enum ResponseBody {
    /// This many bytes.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunk),
    /// Everything until the backend closes the connection.
    UntilClose,
    /// Read to its end.
    Done,
}

/// Where a chunked body's decoding stands.
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// What one decoding step gave.
pub(super) enum Step {
    Frame(Frame<Bytes>),
    /// The body has ended.
    End,
    /// More bytes must be read first.
    More,
}

impl ResponseBody {
    pub(super) fn is_end(&self) -> bool {
        matches!(self, ResponseBody::Done | ResponseBody::Length(0))
    }

    pub(super) fn ends_at_close(&self) -> bool {
        matches!(self, ResponseBody::UntilClose)
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Length(length) => SizeHint::with_exact(*length),
            ResponseBody::Done => SizeHint::with_exact(0),
            ResponseBody::Chunked(_) | ResponseBody::UntilClose => SizeHint::default(),
        }
    }

    /// How much to read at once: a small body needs no large buffer.
    pub(super) fn read_hint(&self, small: usize, large: usize) -> usize {
        match self {
            ResponseBody::Length(length) => usize::try_from(*length).unwrap_or(large).clamp(small, large),
            _ => large,
        }
    }

    /// Takes the next frame out of `read`.
    pub(super) fn decode(&mut self, read: &mut BytesMut) -> Result<Step, H1Error> {
        loop {
            match self {
                ResponseBody::Done | ResponseBody::Length(0) => {
                    *self = ResponseBody::Done;
                    return Ok(Step::End);
                }
                _ if read.is_empty() => return Ok(Step::More),
                ResponseBody::Length(remaining) => return Ok(Step::Frame(Frame::data(take(read, remaining)))),
                ResponseBody::UntilClose => return Ok(Step::Frame(Frame::data(read.split().freeze()))),
                ResponseBody::Chunked(chunk) => match chunk {
                    Chunk::Size => {
                        let Some(size) = chunk_size(read)? else {
                            return Ok(Step::More);
                        };
                        *chunk = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Chunk::Data(remaining) => {
                        let data = take(read, remaining);
                        if *remaining == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Step::Frame(Frame::data(data)));
                    }
                    Chunk::DataEnd => {
                        match &read[..] {
                            [b'\r', b'\n', ..] => read.advance(2),
                            [b'\n', ..] => read.advance(1),
                            [b'\r'] => return Ok(Step::More),
                            _ => return Err(H1Error::InvalidResponse("chunk data not followed by CRLF")),
                        }
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let Some(trailers) = trailers(read)? else {
                            return Ok(Step::More);
                        };
                        *self = ResponseBody::Done;
                        return Ok(if trailers.is_empty() {
                            Step::End
                        } else {
                            Step::Frame(Frame::trailers(trailers))
                        });
                    }
                },
            }
        }
    }
}

/// Cuts up to `remaining` bytes off the front of `read`, without copying,
/// and counts them off `remaining`.
fn take(read: &mut BytesMut, remaining: &mut u64) -> Bytes {
    let length = usize::try_from(*remaining).unwrap_or(usize::MAX).min(read.len());
    *remaining -= length as u64;
    read.split_to(length).freeze()
}

/// Parses a chunk-size line (hex size, optional extensions, CRLF) and takes
/// it out of `read`; `None` while incomplete.
fn chunk_size(read: &mut BytesMut) -> Result<Option<u64>, H1Error> {
    let Some(end) = read.iter().position(|&b| b == b'\n') else {
        if read.len() > MAX_CHUNK_LINE {
            return Err(H1Error::InvalidResponse("chunk-size line too long"));
        }
        return Ok(None);
    };
    let line = read[..end].strip_suffix(b"\r").unwrap_or(&read[..end]);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // After the size: nothing, or chunk extensions (`;name=value`), which
    // are ignored, optionally after whitespace.
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(H1Error::InvalidResponse("chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| H1Error::InvalidResponse("chunk size"))?;
    let size = u64::from_str_radix(text, 16).map_err(|_| H1Error::InvalidResponse("chunk size"))?;
    read.advance(end + 1);
    Ok(Some(size))
}

/// Parses the trailer section (possibly empty) and the blank line ending a
/// chunked body, taking them out of `read`; `None` while incomplete.
fn trailers(read: &mut BytesMut) -> Result<Option<HeaderMap>, H1Error> {
    // Most chunked bodies end without trailers: no field slots to set up.
    if read.starts_with(b"\r\n") {
        read.advance(2);
        return Ok(Some(HeaderMap::new()));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(read, &mut fields) {
        Ok(httparse::Status::Complete((length, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| H1Error::InvalidResponse("trailer name"))?;
                let value =
                    HeaderValue::from_bytes(field.value).map_err(|_| H1Error::InvalidResponse("trailer value"))?;
                trailers.append(name, value);
            }
            read.advance(length);
            Ok(Some(trailers))
        }
        Ok(httparse::Status::Partial) if read.len() > super::BODY_CHUNK => {
            Err(H1Error::InvalidResponse("trailers too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(H1Error::InvalidResponse("malformed trailers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> (Response<()>, ResponseBody, bool, BytesMut) {
        let mut read = BytesMut::from(text);
        match parse_head(&mut read, head_request, 64 * 1024, &mut Scratch::default()).expect("valid") {
            Some(Head::Final {
                response,
                body,
                keep_alive,
            }) => (response, body, keep_alive, read),
            _ => panic!("no final head in {text:?}"),
        }
    }

    /// Decodes everything in `read`: the data, the trailers, whether it ended.
    fn decode_all(body: &mut ResponseBody, read: &mut BytesMut) -> (Vec<u8>, Option<HeaderMap>, bool) {
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            match body.decode(read).expect("valid body") {
                Step::Frame(frame) => match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Step::End => return (data, trailers, true),
                Step::More => return (data, trailers, false),
            }
        }
    }

    #[test]
    fn a_content_length_body_follows_the_head() {
        let (response, mut body, keep_alive, mut read) =
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", false);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "1");
        assert!(keep_alive);
        assert_eq!(decode_all(&mut body, &mut read), (b"hello".to_vec(), None, true));
    }

    #[test]
    fn names_are_reused_only_where_they_match() {
        let mut scratch = Scratch::default();
        let mut names = |text: &str| {
            let mut read = BytesMut::from(text);
            match parse_head(&mut read, false, 64 * 1024, &mut scratch).expect("valid") {
                Some(Head::Final { response, .. }) => response
                    .headers()
                    .iter()
                    .map(|(name, value)| format!("{name}={}", value.to_str().expect("ascii")))
                    .collect::<Vec<_>>(),
                _ => panic!("no final head"),
            }
        };
        let first = names("HTTP/1.1 200 OK\r\nServer: a\r\nX-Custom: 1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(first, ["server=a", "x-custom=1", "content-length=0"]);
        // Same names in other cases, then other names in the same places.
        let again = names("HTTP/1.1 200 OK\r\nSERVER: b\r\nx-custom: 2\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(again, ["server=b", "x-custom=2", "content-length=0"]);
        let other = names("HTTP/1.1 200 OK\r\nX-Custon: 3\r\nContent-Length: 0\r\nDate: d\r\nVary: v\r\n\r\n");
        assert_eq!(other, ["x-custon=3", "content-length=0", "date=d", "vary=v"]);
    }

    #[test]
    fn content_length_fields_must_agree_and_be_numbers() {
        let (_, body, _, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert!(matches!(body, ResponseBody::Length(5)));
        for lengths in [
            "5, 6",
            "5\r\nContent-Length: 6",
            "",
            "5,",
            "0x5",
            "-1",
            "18446744073709551616",
        ] {
            let mut read = BytesMut::from(format!("HTTP/1.1 200 OK\r\nContent-Length: {lengths}\r\n\r\n").as_str());
            let result = parse_head(&mut read, false, 64 * 1024, &mut Scratch::default());
            assert!(
                matches!(result, Err(H1Error::InvalidResponse("Content-Length"))),
                "{lengths:?}"
            );
        }
    }

    #[test]
    fn fields_about_this_hop_are_read_and_left_out() {
        let (response, body, keep_alive, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
             Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n",
            false,
        );
        assert!(matches!(body, ResponseBody::Chunked(_)) && keep_alive);
        let names: Vec<_> = response.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-a"]);

        // A Connection naming another field stays, for header hygiene to
        // remove both; its `close` still counts.
        let (response, _, keep_alive, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!keep_alive);
        assert_eq!(response.headers()[CONNECTION], "close, X-A");
    }

    #[test]
    fn informational_responses_are_skipped() {
        let mut read = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert!(matches!(
            parse_head(&mut read, false, 1024, &mut Scratch::default()),
            Ok(Some(Head::Informational))
        ));
        assert!(matches!(
            parse_head(&mut read, false, 1024, &mut Scratch::default()),
            Ok(Some(Head::Final { .. }))
        ));
        assert!(read.is_empty());
    }

    #[test]
    fn a_partial_head_waits_and_an_oversized_one_fails() {
        let mut read = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(matches!(
            parse_head(&mut read, false, 1024, &mut Scratch::default()),
            Ok(None)
        ));
        assert!(parse_head(&mut read, false, 8, &mut Scratch::default()).is_err());
    }

    #[test]
    fn chunked_bodies_decode_across_reads_with_trailers() {
        let (_, mut body, keep_alive, mut read) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            false,
        );
        assert!(keep_alive);
        assert_eq!(decode_all(&mut body, &mut read), (b"hel".to_vec(), None, false));
        read.extend_from_slice(b"lo\r\n0\r\nx-sum: 1");
        assert_eq!(decode_all(&mut body, &mut read), (b"lo".to_vec(), None, false));
        read.extend_from_slice(b"23\r\n\r\n");
        let (data, trailers, ended) = decode_all(&mut body, &mut read);
        assert!(data.is_empty() && ended);
        assert_eq!(trailers.expect("trailers")["x-sum"], "123");
        assert!(read.is_empty());
    }

    #[test]
    fn one_canonical_content_length_is_passed_on() {
        for lengths in ["2, 2", "2\r\nContent-Length: 2", "2,2", "002"] {
            let (response, body, _, _) = head(
                &format!("HTTP/1.1 200 OK\r\nContent-Length: {lengths}\r\n\r\nok"),
                false,
            );
            let values: Vec<_> = response.headers().get_all(CONTENT_LENGTH).iter().collect();
            assert_eq!(values, ["2"], "{lengths:?}");
            assert!(matches!(body, ResponseBody::Length(2)));
        }
        // The answer to HEAD: the length of what GET would send, one number.
        let (response, _, _, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", true);
        assert_eq!(response.headers()[CONTENT_LENGTH], "7");
        for bad in ["18446744073709551616", "7, 8", "x"] {
            let mut read = BytesMut::from(format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n").as_str());
            assert!(
                matches!(
                    parse_head(&mut read, true, 1024, &mut Scratch::default()),
                    Err(H1Error::InvalidResponse("Content-Length"))
                ),
                "{bad:?} in the answer to HEAD"
            );
        }
    }

    #[test]
    fn no_content_responses_lose_their_content_length() {
        for status in ["204 No Content", "304 Not Modified"] {
            let (response, body, _, _) = head(&format!("HTTP/1.1 {status}\r\nContent-Length: 8\r\n\r\n"), false);
            assert!(response.headers().get(CONTENT_LENGTH).is_none(), "{status}");
            assert!(body.is_end());
        }
    }

    #[test]
    fn the_backends_version_stays_on_its_hop() {
        let (response, _, keep_alive, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!(response.version(), Version::HTTP_11);
        assert!(!keep_alive, "the HTTP/1.0 backend's own connection still closes");
    }

    #[test]
    fn bodiless_responses_have_no_body_whatever_they_declare() {
        let (_, body, _, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true);
        assert!(body.is_end());
        let (_, body, _, _) = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", false);
        assert!(body.is_end());
    }

    #[test]
    fn framing_that_cannot_be_trusted_closes_or_fails() {
        let (_, body, keep_alive, _) = head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert!(body.ends_at_close() && !keep_alive);
        let (_, body, keep_alive, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert!(matches!(body, ResponseBody::Chunked(_)) && !keep_alive);
        let (_, _, keep_alive, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!keep_alive);
        let (_, _, keep_alive, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!keep_alive);
        for bad in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: +3",
            "Content-Length: 3, 4",
            "Content-Length: 3,",
        ] {
            let mut read = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n").as_str());
            assert!(
                parse_head(&mut read, false, 1024, &mut Scratch::default()).is_err(),
                "{bad}"
            );
        }
        let mut read = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\x80\r\n\r\n"[..]);
        assert!(
            parse_head(&mut read, false, 1024, &mut Scratch::default()).is_err(),
            "a value that is not text"
        );
        let (_, body, _, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false);
        assert!(matches!(body, ResponseBody::Length(3)));
    }

    #[test]
    fn malformed_chunk_sizes_fail() {
        for bad in ["zz\r\n", "12345678901234567\r\n", "\r\n", "+5\r\n", "5 junk\r\n"] {
            let mut body = ResponseBody::Chunked(Chunk::Size);
            assert!(body.decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }
}
