//! Header hygiene for a forwarding proxy, as RFC 9110 section 7.6 asks.
//!
//! Hop-by-hop headers describe one connection and must not cross the proxy;
//! `X-Forwarded-*` and `Via` tell the backend and the client that it did.
//! Pure functions over `HeaderMap`, no I/O and no routing; the fields tailcut
//! adds to a request come back as [`Added`], for the client that sends it.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, COOKIE, EXPECT, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::uri::Authority;
use http::Version;

/// The `Via` entry tailcut adds to responses (RFC 9110 section 7.6.3).
pub const VIA_VALUE: &str = "1.1 tailcut";

/// `X-Forwarded-For`: the chain of client addresses.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that are hop-by-hop whether or not `Connection` names them.
/// `Trailer` is not among them: it is end-to-end (RFC 9110 section 6.6.2) and
/// hyper only sends the trailer fields it declares.
const FIXED_HOP_BY_HOP: [&HeaderName; 8] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &PROXY_AUTHENTICATE,
    &PROXY_AUTHORIZATION,
    &TE,
    &TRANSFER_ENCODING,
    &UPGRADE,
];

/// Which of the names the rewrites act on a map holds: bit `i` for
/// `FIXED_HOP_BY_HOP[i]`, then `Expect`, `X-Forwarded-For`, `Host`, and
/// `X-Forwarded-Host` or `X-Forwarded-Proto`, and `Cookie`. Found in one
/// pass over the names present (a typical request has few), where asking
/// the map for each of ten names would hash every one of them.
#[derive(Clone, Copy)]
struct Present(u16);

const CONNECTION_BIT: u16 = 1 << 0;
const TE_BIT: u16 = 1 << 5;
const EXPECT_BIT: u16 = 1 << 8;
const FORWARDED_FOR_BIT: u16 = 1 << 9;
const HOST_BIT: u16 = 1 << 10;
const FORWARDED_OTHER_BIT: u16 = 1 << 11;
const COOKIE_BIT: u16 = 1 << 12;

impl Present {
    fn scan(headers: &HeaderMap) -> Self {
        let mut bits = 0;
        for name in headers.keys() {
            // `as_str` of a standard name is a static string: the match
            // compares lengths first, then a few bytes.
            bits |= match name.as_str() {
                "connection" => CONNECTION_BIT,
                "keep-alive" => 1 << 1,
                "proxy-connection" => 1 << 2,
                "proxy-authenticate" => 1 << 3,
                "proxy-authorization" => 1 << 4,
                "te" => TE_BIT,
                "transfer-encoding" => 1 << 6,
                "upgrade" => 1 << 7,
                "expect" => EXPECT_BIT,
                "x-forwarded-for" => FORWARDED_FOR_BIT,
                "host" => HOST_BIT,
                "x-forwarded-host" | "x-forwarded-proto" => FORWARDED_OTHER_BIT,
                "cookie" => COOKIE_BIT,
                _ => 0,
            };
        }
        Present(bits)
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// The comma-separated tokens of one field value; none if it is not ASCII.
pub(crate) fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Calls `f` with each comma-separated token of every value of `name`.
fn for_each_token(headers: &HeaderMap, name: &HeaderName, mut f: impl FnMut(&str)) {
    headers.get_all(name).iter().flat_map(tokens).for_each(&mut f);
}

pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    let mut found = false;
    for_each_token(headers, name, |t| found |= t.eq_ignore_ascii_case(token));
    found
}

/// Removes every hop-by-hop header: those `Connection` names, then the fixed list.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_present(headers, Present::scan(headers));
}

fn strip_present(headers: &mut HeaderMap, present: Present) {
    if present.has(CONNECTION_BIT) {
        // `Connection` itself goes with the fixed list below; first, whatever
        // it names. Its values are cloned (a reference-count bump each) so
        // the map can be changed while they are read; removing by `&str`
        // needs no allocation.
        let mut values = headers.get_all(CONNECTION).iter();
        match (values.next().cloned(), values.next().is_some()) {
            (None, _) => {}
            (Some(only), false) => remove_named(headers, &only),
            (Some(_), true) => {
                let all: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
                for value in &all {
                    remove_named(headers, value);
                }
            }
        }
    }
    for (bit, name) in FIXED_HOP_BY_HOP.iter().enumerate() {
        if present.has(1 << bit) {
            headers.remove(*name);
        }
    }
}

/// Fields a `Connection` option must never remove: the message's routing
/// and framing. A client sending `Connection: Host` would otherwise have
/// its request routed by a host the backend never sees.
const NEVER_HOP_BY_HOP: [&str; 2] = ["host", "content-length"];

/// Removes each header named in one `Connection` value.
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(text) = connection.to_str() else { return };
    for token in text.split(',').map(str::trim) {
        // `close` and `keep-alive` are the usual tokens and name no header
        // worth a lookup (Keep-Alive goes with the fixed list).
        if token.is_empty() || token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        if NEVER_HOP_BY_HOP.iter().any(|kept| token.eq_ignore_ascii_case(kept)) {
            continue;
        }
        headers.remove(token);
    }
}

/// The protocols an HTTP/1.1 client asks to switch to (`Upgrade`, with
/// `upgrade` among the `Connection` tokens) that `allowed` lists, as the
/// `Upgrade` value to forward; `None` if it asks for none of them. A
/// protocol is compared by name, case-insensitively, with or without its
/// version (`websocket` allows `WebSocket/13`).
pub fn upgrade_protocol(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    if !headers.contains_key(UPGRADE) || !has_token(headers, &CONNECTION, "upgrade") {
        return None;
    }
    let mut offered = Vec::new();
    for_each_token(headers, &UPGRADE, |token| {
        if allowed.iter().any(|name| protocol_is(token, name)) {
            offered.push(token.to_owned());
        }
    });
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offered.join(", ")).ok()
}

/// Whether `token` (`name` or `name/version`) is the protocol `name`.
fn protocol_is(token: &str, name: &str) -> bool {
    let (protocol, _version) = token.split_once('/').unwrap_or((token, ""));
    protocol.eq_ignore_ascii_case(name) || token.eq_ignore_ascii_case(name)
}

/// Whether a backend's `101 Switching Protocols` switches to a protocol the
/// request offered (`offered`, the `Upgrade` value forwarded): a 101 naming
/// anything else, or nothing, must not become a tunnel, or the client's
/// next bytes would reach the backend as a protocol it never asked for.
pub fn upgrade_accepted(response: &HeaderMap, offered: &HeaderValue) -> bool {
    let mut chosen = response.get_all(UPGRADE).iter().flat_map(tokens).peekable();
    if chosen.peek().is_none() {
        return false;
    }
    chosen.all(|token| tokens(offered).any(|asked| same_protocol(token, asked)))
}

/// Whether a 101's `chosen` protocol is the `asked` one: the same name,
/// and the same version if the 101 names one (`websocket` answers an offer
/// of `WebSocket/13`; `h2c` does not answer `websocket`).
fn same_protocol(chosen: &str, asked: &str) -> bool {
    match chosen.split_once('/') {
        Some(_) => chosen.eq_ignore_ascii_case(asked),
        None => asked
            .split_once('/')
            .map_or(asked, |(name, _)| name)
            .eq_ignore_ascii_case(chosen),
    }
}

/// The bytes a host name may hold here: letters, digits, `-`, `.`, `_`
/// and `~` (RFC 3986's unreserved characters). RFC 3986's `reg-name` also
/// allows percent-encoding and sub-delimiters (`,`, `;`, `=`, ...), which no
/// DNS name uses and which a backend may read otherwise (`a,b` as a list in
/// `X-Forwarded-Host`): refused. A table, so that checking the Host of
/// every request costs a load per byte.
const HOST_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

/// Whether `value` is a valid `Host` (or `:authority`) for a request:
/// `uri-host [ ":" port ]` (RFC 9110 section 7.2), never with user
/// information (which the `http` crate's `Authority` accepts). The host is
/// an IPv6 literal in brackets or a name of `HOST_NAME` bytes with no
/// empty label (`..` would let a backend that builds paths from the host
/// climb out of its folder); the port is 1 to 5 digits. An empty value is
/// valid: HTTP/1.1 allows an empty Host for targets without an authority.
pub fn valid_host(value: &[u8]) -> bool {
    let port = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let ipv6 = literal.contains(&b':') && literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return false;
        }
        &value[end + 1..]
    } else {
        let (host, port) = match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        };
        let labels_ok = !host.starts_with(b".") && !host.windows(2).any(|pair| pair == b"..");
        let name_ok = host.iter().all(|&b| HOST_NAME[usize::from(b)]);
        if !(labels_ok && name_ok) || (host.is_empty() && !port.is_empty()) {
            return false;
        }
        port
    };
    match port {
        [] => true,
        [b':', digits @ ..] => (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Fields that must not arrive as trailers, dropped from both requests' and
/// responses' trailer sections: those that frame, route or authenticate a
/// message, control caching or the connection, or describe the content
/// (RFC 9110 section 6.5.1), and those the proxy itself owns. A backend
/// that merges trailers into the header section would otherwise take a
/// client's `X-Forwarded-For` trailer for the proxy's word; an HTTP/2
/// client receiving `Transfer-Encoding` in trailers resets the stream.
const NOT_IN_TRAILERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authentication-info",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-language",
    "content-location",
    "content-length",
    "content-range",
    "content-type",
    "cookie",
    "expect",
    "forwarded",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
    "www-authenticate",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "age",
    "date",
    "expires",
    "location",
    "retry-after",
    "vary",
    "warning",
];

/// Whether a field named `name` may be passed on in a trailer section.
pub fn allowed_in_trailers(name: &HeaderName) -> bool {
    !NOT_IN_TRAILERS.contains(&name.as_str())
}

/// Removes from `trailers` every field [`allowed_in_trailers`] refuses.
pub fn filter_trailers(trailers: &mut HeaderMap) {
    if trailers.keys().all(allowed_in_trailers) {
        return;
    }
    let refused: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| !allowed_in_trailers(name))
        .cloned()
        .collect();
    for name in refused {
        trailers.remove(name);
    }
}

/// What the proxy knows about the client side of a request.
#[derive(Debug, Clone)]
pub struct ClientSide {
    /// The client's IP address, ready to append to `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
}

/// The fields tailcut adds to a request for the backend: `X-Forwarded-For`,
/// `X-Forwarded-Host`, `X-Forwarded-Proto` and `Via`.
///
/// They stay out of the request's header map. tailcut's HTTP/1.1 client
/// writes them after the client's own fields ([`AddedFields::for_each`]);
/// inserting them would hash and place four entries only for the client to
/// read them straight back out, a sixth of the work a small request costs.
/// A request that hyper's client sends (an upgrade) gets them inserted
/// ([`Added::insert_into`]).
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    client: &'a ClientSide,
    /// The request's version as the client sent it, for `Via`.
    version: Version,
    /// `X-Forwarded-Host` repeats the `Host` field (false: the request
    /// named no host).
    forwarded_host: bool,
    /// The client sent `X-Forwarded-For`: the map holds the chain with the
    /// client's address appended, and nothing is added.
    forwarded_for_in_map: bool,
}

impl Added<'_> {
    /// The same fields, owning their client's side, for a request kept to
    /// be sent again (retried or hedged) after this borrow has ended.
    pub fn to_owned(&self) -> OwnedAdded {
        OwnedAdded {
            client: self.client.clone(),
            version: self.version,
            forwarded_host: self.forwarded_host,
            forwarded_for_in_map: self.forwarded_for_in_map,
        }
    }
}

/// [`Added`], owning its client's side.
#[derive(Debug, Clone)]
pub struct OwnedAdded {
    client: ClientSide,
    version: Version,
    forwarded_host: bool,
    forwarded_for_in_map: bool,
}

impl OwnedAdded {
    /// The fields to add, borrowed from here.
    pub fn added(&self) -> Added<'_> {
        Added {
            client: &self.client,
            version: self.version,
            forwarded_host: self.forwarded_host,
            forwarded_for_in_map: self.forwarded_for_in_map,
        }
    }
}

/// The fields a proxy adds to a request after the client's own
/// (`X-Forwarded-*`, `Via`), written as the head is encoded so that they
/// are never inserted into the client's map.
pub trait AddedFields {
    /// Calls `field` with each added field, in the order they are written.
    /// `host` is the request's `Host` value, read as the head was encoded.
    fn for_each(&self, host: Option<&HeaderValue>, field: impl FnMut(&HeaderName, &[u8]));
}

impl AddedFields for Added<'_> {
    fn for_each(&self, host: Option<&HeaderValue>, mut f: impl FnMut(&HeaderName, &[u8])) {
        if !self.forwarded_for_in_map {
            f(&X_FORWARDED_FOR, self.client.ip.as_bytes());
        }
        if let Some(host) = host.filter(|_| self.forwarded_host) {
            f(&X_FORWARDED_HOST, host.as_bytes());
        }
        f(&X_FORWARDED_PROTO, self.client.proto.as_bytes());
        f(&VIA, via_for(self.version).as_bytes());
    }
}

impl Added<'_> {
    /// Inserts the added fields into `headers`, the request's rewritten map.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        // A copy, so that the map can change while it is read.
        let host = headers.get(HOST).cloned();
        self.for_each(host.as_ref(), |name, value| {
            // Each value came from a `HeaderValue` or is a static string.
            let Ok(value) = HeaderValue::from_bytes(value) else {
                return;
            };
            if name == VIA {
                headers.append(name, value);
            } else {
                headers.insert(name, value);
            }
        });
    }
}

/// Rewrites a client's request headers for the backend; returns the fields
/// to add to them.
///
/// `authority` is the request URI's authority: HTTP/2 carries the host there
/// instead of in `Host`, and an absolute-form HTTP/1.1 target overrides
/// `Host`. `upgrade` is kept when the request is a protocol upgrade the proxy
/// will tunnel.
pub fn rewrite_request<'a>(
    headers: &mut HeaderMap,
    version: Version,
    authority: Option<&Authority>,
    client: &'a ClientSide,
    upgrade: Option<HeaderValue>,
) -> Added<'a> {
    let present = Present::scan(headers);
    let wants_trailers = present.has(TE_BIT) && has_token(headers, &TE, "trailers");
    strip_present(headers, present);
    // tailcut answers `Expect: 100-continue` itself (hyper sends the 100 when
    // the body is first read), so the backend must not wait to answer it again.
    if present.has(EXPECT_BIT) {
        headers.remove(EXPECT);
    }
    if wants_trailers {
        // TE is hop-by-hop, but the proxy may ask for trailers on its own hop
        // so that the backend sends them and they can be relayed.
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }

    // An HTTP/2 client may split Cookie into one field per cookie (RFC 9113
    // section 8.2.3, which browsers do); an HTTP/1.1 hop gets them as one.
    if version == Version::HTTP_2 && present.has(COOKIE_BIT) {
        join_cookies(headers);
    }
    // RFC 9112 section 3.2.2: when the request target carries an authority
    // (absolute-form, or HTTP/2's :authority), it wins over any Host header.
    let forwarded_host = match authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
        Some(host) => {
            headers.insert(HOST, host);
            true
        }
        None => present.has(HOST_BIT),
    };
    // The client's own claims are replaced, not passed on beside tailcut's.
    if present.has(FORWARDED_OTHER_BIT) {
        headers.remove(&X_FORWARDED_HOST);
        headers.remove(&X_FORWARDED_PROTO);
    }
    let forwarded_for_in_map = present.has(FORWARDED_FOR_BIT);
    if forwarded_for_in_map {
        append_forwarded_for(headers, &client.ip);
    }
    Added {
        client,
        version,
        forwarded_host,
        forwarded_for_in_map,
    }
}

/// Rewrites a backend's response headers for the client. `upgrade` is true
/// for a `101 Switching Protocols` the proxy will tunnel.
pub fn rewrite_response(headers: &mut HeaderMap, upgrade: bool) {
    let protocol = if upgrade { headers.get(UPGRADE).cloned() } else { None };
    strip_hop_by_hop(headers);
    if let Some(protocol) = protocol {
        headers.insert(UPGRADE, protocol);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    headers.append(VIA, HeaderValue::from_static(VIA_VALUE));
}

fn via_for(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9 tailcut",
        Version::HTTP_10 => "1.0 tailcut",
        Version::HTTP_2 => "2 tailcut",
        Version::HTTP_3 => "3 tailcut",
        _ => VIA_VALUE,
    }
}

/// Joins several `Cookie` fields into one, separated by `; `.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = Vec::with_capacity(first.len() * 4);
    for (i, value) in headers.get_all(COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    // Joining valid values with `; ` keeps them valid.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// Appends the client to the `X-Forwarded-For` the request has, folding its
/// values (which may span several header lines) into one comma-separated list.
fn append_forwarded_for(headers: &mut HeaderMap, client_ip: &HeaderValue) {
    let mut chain = Vec::with_capacity(64);
    for value in headers.get_all(&X_FORWARDED_FOR) {
        chain.extend_from_slice(value.as_bytes());
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(client_ip.as_bytes());
    match HeaderValue::from_bytes(&chain) {
        Ok(value) => {
            headers.insert(&X_FORWARDED_FOR, value);
        }
        // Unreachable in practice (header bytes stay valid when joined), but a
        // peer controls these bytes, so fall back to the client alone.
        Err(_) => {
            headers.insert(&X_FORWARDED_FOR, client_ip.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientSide {
        ClientSide {
            ip: HeaderValue::from_static("10.0.0.9"),
            proto: "http",
        }
    }

    /// The request's map as hyper's client would send it: rewritten, with
    /// the added fields inserted.
    fn rewrite(h: &mut HeaderMap, version: Version, authority: Option<&Authority>, upgrade: Option<HeaderValue>) {
        let client = client();
        rewrite_request(h, version, authority, &client, upgrade).insert_into(h);
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_headers_named_in_connection() {
        let mut h = map(&[
            ("connection", "X-Secret, keep-alive"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "3");
    }

    #[test]
    fn the_scan_finds_each_name_in_any_case() {
        for (bit, name) in FIXED_HOP_BY_HOP.iter().enumerate() {
            let upper = name.as_str().to_ascii_uppercase();
            assert!(Present::scan(&map(&[(&upper, "x")])).has(1 << bit), "{name}");
        }
        assert!(Present::scan(&map(&[("Expect", "100-continue")])).has(EXPECT_BIT));
        assert!(Present::scan(&map(&[("X-Forwarded-For", "1.1.1.1")])).has(FORWARDED_FOR_BIT));
        assert!(Present::scan(&map(&[("HOST", "a")])).has(HOST_BIT));
        assert!(Present::scan(&map(&[("X-Forwarded-Host", "a")])).has(FORWARDED_OTHER_BIT));
        assert!(Present::scan(&map(&[("X-Forwarded-Proto", "https")])).has(FORWARDED_OTHER_BIT));
        assert_eq!(
            Present::scan(&map(&[("accept", "a"), ("trailer", "x"), ("via", "1.1 a")])).0,
            0
        );
    }

    #[test]
    fn strips_the_fixed_hop_by_hop_list_but_keeps_trailer() {
        let mut h = map(&[
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-checksum"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["trailer"], "x-checksum");
    }

    #[test]
    fn appends_to_x_forwarded_for_across_header_lines() {
        let mut h = map(&[
            ("host", "a.test"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        rewrite(&mut h, Version::HTTP_11, None, None);
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "a.test");
        assert_eq!(h[VIA], "1.1 tailcut");
    }

    #[test]
    fn replaces_the_clients_forwarded_host_and_proto() {
        let mut h = map(&[
            ("host", "a.test"),
            ("x-forwarded-host", "spoofed.test"),
            ("X-Forwarded-Proto", "https"),
        ]);
        rewrite(&mut h, Version::HTTP_11, None, None);
        let hosts: Vec<_> = h.get_all(&X_FORWARDED_HOST).iter().collect();
        assert_eq!(hosts, ["a.test"]);
        let protos: Vec<_> = h.get_all(&X_FORWARDED_PROTO).iter().collect();
        assert_eq!(protos, ["http"]);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
    }

    #[test]
    fn adds_only_what_the_map_lacks() {
        let client = client();
        let mut h = map(&[("host", "a.test"), ("x-forwarded-for", "1.1.1.1")]);
        let added = rewrite_request(&mut h, Version::HTTP_10, None, &client, None);
        let mut fields = Vec::new();
        added.for_each(h.get(HOST), |name, value| {
            fields.push(format!("{name}: {}", String::from_utf8_lossy(value)));
        });
        // The chain the client sent is completed in the map, not added again.
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.0.0.9");
        assert_eq!(
            fields,
            [
                "x-forwarded-host: a.test",
                "x-forwarded-proto: http",
                "via: 1.0 tailcut"
            ]
        );

        // No host named: no X-Forwarded-Host, even once one is set for the backend.
        let mut bare = HeaderMap::new();
        let added = rewrite_request(&mut bare, Version::HTTP_10, None, &client, None);
        let backend_host = HeaderValue::from_static("127.0.0.1:8080");
        let mut names = Vec::new();
        added.for_each(Some(&backend_host), |name, _| names.push(name.clone()));
        assert_eq!(names, [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &VIA]);
    }

    #[test]
    fn http2_authority_becomes_host() {
        let mut h = HeaderMap::new();
        let authority: Authority = "b.test:8080".parse().expect("authority");
        rewrite(&mut h, Version::HTTP_2, Some(&authority), None);
        assert_eq!(h[HOST], "b.test:8080");
        assert_eq!(h[&X_FORWARDED_HOST], "b.test:8080");
        assert_eq!(h[VIA], "2 tailcut");
    }

    #[test]
    fn asks_upstream_for_trailers_only_when_the_client_accepts_them() {
        let mut with = map(&[("host", "a"), ("te", "trailers, deflate")]);
        rewrite(&mut with, Version::HTTP_11, None, None);
        assert_eq!(with[TE], "trailers");
        let mut without = map(&[("host", "a"), ("te", "deflate")]);
        rewrite(&mut without, Version::HTTP_11, None, None);
        assert!(without.get(TE).is_none());
    }

    fn websocket_only() -> Vec<String> {
        vec!["websocket".to_owned()]
    }

    #[test]
    fn keeps_upgrade_only_for_tunnelled_requests() {
        let mut h = map(&[("host", "a"), ("connection", "Upgrade"), ("upgrade", "websocket")]);
        let protocol = upgrade_protocol(&h, &websocket_only());
        assert_eq!(protocol.as_ref().map(|p| p.as_bytes()), Some(&b"websocket"[..]));
        rewrite(&mut h, Version::HTTP_11, None, protocol);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");

        let plain = map(&[("upgrade", "websocket")]);
        assert!(
            upgrade_protocol(&plain, &websocket_only()).is_none(),
            "Upgrade without Connection: upgrade is not an upgrade"
        );
    }

    #[test]
    fn only_the_routes_protocols_are_offered_upstream() {
        let asks = |value: &str| map(&[("connection", "upgrade"), ("upgrade", value)]);
        assert!(upgrade_protocol(&asks("h2c"), &websocket_only()).is_none());
        assert!(upgrade_protocol(&asks("websocket"), &[]).is_none());
        let both = upgrade_protocol(&asks("h2c, WebSocket/13"), &websocket_only()).expect("websocket offered");
        assert_eq!(both, "WebSocket/13");
        let feed = ["x-feed".to_owned()];
        assert_eq!(
            upgrade_protocol(&asks("x-feed, websocket"), &feed).expect("x-feed"),
            "x-feed"
        );
    }

    #[test]
    fn a_101_must_name_a_protocol_the_client_offered() {
        let offered = HeaderValue::from_static("websocket");
        assert!(upgrade_accepted(&map(&[("upgrade", "WebSocket")]), &offered));
        assert!(!upgrade_accepted(&map(&[("upgrade", "h2c")]), &offered));
        assert!(!upgrade_accepted(&map(&[("upgrade", "websocket, h2c")]), &offered));
        assert!(!upgrade_accepted(&HeaderMap::new(), &offered), "a 101 naming nothing");
        let versioned = HeaderValue::from_static("WebSocket/13");
        assert!(upgrade_accepted(&map(&[("upgrade", "websocket")]), &versioned));
        assert!(upgrade_accepted(&map(&[("upgrade", "websocket/13")]), &versioned));
        assert!(!upgrade_accepted(&map(&[("upgrade", "websocket/14")]), &versioned));
    }

    #[test]
    fn connection_cannot_remove_host_or_content_length() {
        let mut h = map(&[
            ("host", "h"),
            ("connection", "Host, content-length, x-a"),
            ("content-length", "5"),
            ("x-a", "1"),
        ]);
        let client = client();
        let added = rewrite_request(&mut h, Version::HTTP_11, None, &client, None);
        assert_eq!(h[HOST], "h");
        assert_eq!(h["content-length"], "5");
        assert!(h.get("x-a").is_none());
        let mut forwarded_host = None;
        added.for_each(h.get(HOST), |name, value| {
            if name == X_FORWARDED_HOST {
                forwarded_host = Some(value.to_vec());
            }
        });
        assert_eq!(forwarded_host.as_deref(), Some(&b"h"[..]));
    }

    #[test]
    fn http2_cookie_fields_reach_http1_as_one() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        rewrite(&mut h, Version::HTTP_2, None, None);
        let cookies: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        rewrite(&mut one, Version::HTTP_2, None, None);
        assert_eq!(one[COOKIE], "a=1");
    }

    #[test]
    fn hosts_are_a_host_and_a_port_and_nothing_else() {
        for valid in [
            "echo",
            "echo:8080",
            "a.example.com",
            "example.com.",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[::ffff:10.0.0.1]:443",
            "xn--bcher-kva.example",
            "under_score",
            "",
        ] {
            assert!(valid_host(valid.as_bytes()), "{valid:?} is valid");
        }
        for invalid in [
            "echo/../x",
            "evil@echo",
            "user:pw@echo",
            "echo:80:80",
            "echo:port",
            "[::1",
            "[::1]x",
            "[]",
            "echo x",
            "echo\\x",
            "echo?x",
            "echo#x",
            "a.example,b.example",
            "a;b",
            "%2e%2e",
            "..",
            "a..b",
            ".a",
            "x:",
            ":80",
            "x:123456",
            "[1.2.3.4]",
            "[v1.x]",
        ] {
            assert!(!valid_host(invalid.as_bytes()), "{invalid:?} is invalid");
        }
    }

    #[test]
    fn trailers_lose_framing_routing_and_the_proxys_own_fields() {
        let mut t = map(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "50"),
            ("host", "evil"),
            ("x-forwarded-for", "1.2.3.4"),
            ("connection", "close"),
            ("keep-alive", "1"),
            ("upgrade", "h2c"),
            ("via", "1.1 x"),
            ("x-checksum", "42"),
            ("grpc-status", "0"),
        ]);
        filter_trailers(&mut t);
        let mut names: Vec<&str> = t.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["grpc-status", "x-checksum"]);
    }

    #[test]
    fn response_loses_hop_by_hop_and_gains_via() {
        let mut h = map(&[
            ("connection", "close, x-a"),
            ("x-a", "1"),
            ("keep-alive", "x"),
            ("via", "1.1 origin"),
        ]);
        rewrite_response(&mut h, false);
        assert!(h.get("x-a").is_none() && h.get(CONNECTION).is_none() && h.get("keep-alive").is_none());
        let via: Vec<_> = h.get_all(VIA).iter().collect();
        assert_eq!(via, ["1.1 origin", "1.1 tailcut"]);
    }

    #[test]
    fn expect_is_answered_by_the_proxy_not_forwarded() {
        let mut h = map(&[("host", "a"), ("expect", "100-continue")]);
        rewrite(&mut h, Version::HTTP_11, None, None);
        assert!(h.get(EXPECT).is_none());
    }
}
