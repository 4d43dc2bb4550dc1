//! A request's own deadline, from `grpc-timeout` (gRPC's grammar: 1 to 8
//! digits and a unit, H M S m u n) or `x-request-timeout` (a duration such
//! as `250ms` or `2s`), capped by the configuration's `timeouts.request`.
//! The backend is told the time that remains, in the same field; a request
//! whose deadline has already passed is answered 504 without being sent.
//!
//! Both fields come from the client and are checked before use: a value
//! outside its grammar is a 400, and a deadline is never further away than
//! [`LONGEST`].

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::ProxyError;

/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `x-request-timeout`.
pub static X_REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// The furthest a client's deadline is taken to be (a year, as the longest
/// duration the configuration takes).
pub const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// The request's time limit: the client's deadline and the configured
/// limit, whichever is shorter (`None` without either); whether the client
/// sent one (the backend is then told the time that remains).
pub fn limit(headers: &HeaderMap, configured: Option<Duration>) -> Result<(Option<Duration>, bool), ProxyError> {
    // One pass over the names present (a typical request has few and
    // neither of these): asking the map for each would hash both names for
    // every request, which measured 2% of tailcut's instructions per GET.
    let carried = headers
        .keys()
        .any(|name| matches!(name.as_str(), "grpc-timeout" | "x-request-timeout"));
    if !carried {
        return Ok((configured, false));
    }
    let client = match (headers.get(&GRPC_TIMEOUT), headers.get(&X_REQUEST_TIMEOUT)) {
        (None, None) => return Ok((configured, false)),
        (Some(value), _) => grpc_timeout(value.as_bytes()).ok_or(ProxyError::BadRequest(
            "grpc-timeout is not 1-8 digits and a unit (H, M, S, m, u, n)",
        ))?,
        (None, Some(value)) => request_timeout(value.as_bytes()).ok_or(ProxyError::BadRequest(
            "x-request-timeout is not a duration such as 250ms or 2s",
        ))?,
    };
    let client = client.min(LONGEST);
    Ok((
        Some(configured.map_or(client, |configured| configured.min(client))),
        true,
    ))
}

/// Replaces the deadline fields the request carries with `remaining`.
pub fn forward(headers: &mut HeaderMap, remaining: Duration) {
    if headers.contains_key(&GRPC_TIMEOUT) {
        headers.insert(GRPC_TIMEOUT.clone(), format_grpc_timeout(remaining));
    }
    if headers.contains_key(&X_REQUEST_TIMEOUT) {
        let millis = remaining.as_millis();
        // Digits and a unit always form a valid header value.
        if let Ok(value) = HeaderValue::from_str(&format!("{millis}ms")) {
            headers.insert(X_REQUEST_TIMEOUT.clone(), value);
        }
    }
}

/// `grpc-timeout`'s value: 1 to 8 ASCII digits, then one unit.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: fits in a u64 with room to multiply by 3600.
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `x-request-timeout`'s value: a duration as the configuration writes them
/// (`250ms`, `2s`, `1m 30s`), at most 32 bytes.
fn request_timeout(value: &[u8]) -> Option<Duration> {
    if value.len() > 32 {
        return None;
    }
    humantime::parse_duration(std::str::from_utf8(value).ok()?).ok()
}

/// `remaining` in `grpc-timeout`'s grammar: the finest unit whose count
/// fits in 8 digits.
fn format_grpc_timeout(remaining: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = remaining.as_nanos();
    let text = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
    ]
    .iter()
    .find(|(per, _)| nanos / per <= MAX)
    .map_or_else(
        || format!("{}H", (nanos / 3_600_000_000_000).min(MAX)),
        |(per, unit)| format!("{}{unit}", nanos / per),
    );
    // Digits and a unit always form a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("0n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_takes_its_grammar_and_nothing_else() {
        assert_eq!(grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(grpc_timeout(b"0S"), Some(Duration::ZERO));
        for bad in [
            &b""[..],
            b"m",
            b"100",
            b"100x",
            b"123456789m",
            b"-1S",
            b"1.5S",
            b" 1S",
            b"1 S",
            b"\xff1S",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_request_timeout_is_a_short_duration() {
        assert_eq!(request_timeout(b"250ms"), Some(Duration::from_millis(250)));
        assert_eq!(request_timeout(b"2s"), Some(Duration::from_secs(2)));
        assert_eq!(request_timeout(b"soon"), None);
        assert_eq!(request_timeout(&[b'1'; 40]), None);
    }

    #[test]
    fn the_shorter_limit_wins() {
        let mut headers = HeaderMap::new();
        let second = Some(Duration::from_secs(1));
        assert_eq!(limit(&headers, second).ok(), Some((second, false)));
        headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static("100m"));
        assert_eq!(
            limit(&headers, second).ok(),
            Some((Some(Duration::from_millis(100)), true))
        );
        assert_eq!(
            limit(&headers, Some(Duration::from_millis(10))).ok(),
            Some((Some(Duration::from_millis(10)), true))
        );
        headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static("99999999H"));
        assert_eq!(limit(&headers, None).ok(), Some((Some(LONGEST), true)), "capped");
        headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static("soon"));
        assert!(limit(&headers, None).is_err());
    }

    #[test]
    fn the_time_remaining_is_written_in_each_fields_grammar() {
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(200)), "200000m");
        assert_eq!(format_grpc_timeout(Duration::from_secs(3 * 86_400)), "259200S");
        assert_eq!(format_grpc_timeout(LONGEST), "31536000S");
        for remaining in [Duration::from_nanos(7), Duration::from_millis(1234), LONGEST] {
            let text = format_grpc_timeout(remaining);
            let back = grpc_timeout(text.as_bytes()).expect("parses back");
            assert!(
                back <= remaining && remaining - back < Duration::from_secs(60),
                "{text:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_TIMEOUT.clone(), HeaderValue::from_static("2s"));
        forward(&mut headers, Duration::from_millis(1500));
        assert_eq!(headers[&X_REQUEST_TIMEOUT], "1500ms");
        assert!(
            !headers.contains_key(&GRPC_TIMEOUT),
            "only the fields the request carried"
        );
    }
}
