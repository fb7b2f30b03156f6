//! The pieces of RFC 3986 (URI syntax) and RFC 3339 (timestamps) that
//! EIP-4361 builds on, as syntax checks. Each returns why a value does not
//! conform, so a refused message says what to fix.
//!
//! These check syntax only: nothing is normalised, because EIP-4361 messages
//! are compared and signed as text.

use chrono::{DateTime, Utc};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_gen_delim(b: u8) -> bool {
    matches!(b, b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@')
}

/// `reserved / unreserved`: what an EIP-4361 statement may hold besides
/// spaces.
pub(crate) fn is_statement_char(b: u8) -> bool {
    b == b' ' || is_unreserved(b) || is_sub_delim(b) || is_gen_delim(b)
}

/// Describes a byte for an error message without echoing control
/// characters into logs verbatim.
pub(crate) fn describe_char(s: &str, at: usize) -> String {
    match s[at..].chars().next() {
        Some(c) if c.is_ascii_graphic() => format!("{c:?} at offset {at}"),
        Some(c) => format!("{:?} (U+{:04X}) at offset {at}", c, u32::from(c)),
        None => format!("end at offset {at}"),
    }
}

/// Checks `s` is made only of `allowed` characters and well-formed
/// percent-encodings (`"%" HEXDIG HEXDIG`).
fn check_chars(s: &str, what: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!(
                    "{what}: '%' at offset {i} is not followed by two hex digits"
                ));
            }
            i += 3;
        } else if allowed(b) {
            i += 1;
        } else {
            return Err(format!("{what}: {} is not allowed", describe_char(s, i)));
        }
    }
    Ok(())
}

fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@')
}

/// `*pchar` (percent-encodings included): an EIP-4361 request id.
pub(crate) fn check_pchars(s: &str, what: &str) -> Result<(), String> {
    check_chars(s, what, is_pchar)
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
pub(crate) fn check_scheme(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() => {}
        Some(_) => return Err(format!("scheme {s:?} must start with a letter")),
        None => return Err("the scheme is empty".to_string()),
    }
    if bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
        Ok(())
    } else {
        Err(format!(
            "scheme {s:?} may hold only letters, digits, '+', '-' and '.'"
        ))
    }
}

/// `authority = [ userinfo "@" ] host [ ":" port ]`.
pub(crate) fn check_authority(s: &str) -> Result<(), String> {
    // Neither host nor port may hold '@', so the first one ends the userinfo.
    let host_port = match s.split_once('@') {
        Some((userinfo, rest)) => {
            check_chars(userinfo, "userinfo", |b| {
                is_unreserved(b) || is_sub_delim(b) || b == b':'
            })?;
            rest
        }
        None => s,
    };
    let (host, port) = if let Some(literal) = host_port.strip_prefix('[') {
        let Some((inside, after)) = literal.split_once(']') else {
            return Err(format!("host {host_port:?}: '[' without a closing ']'"));
        };
        check_ip_literal(inside)?;
        match after {
            "" => (inside, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (inside, Some(port)),
                None => {
                    return Err(format!(
                        "after the IP literal [{inside}] expected ':' and a port or the end, found {after:?}"
                    ))
                }
            },
        }
    } else {
        // A reg-name holds no ':', so the first one starts the port.
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if !host_port.starts_with('[') {
        // IPv4 addresses are reg-names syntactically, so one check serves both.
        check_chars(host, "host", |b| is_unreserved(b) || is_sub_delim(b))?;
    }
    if let Some(port) = port {
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("port {port:?} must be digits only"));
        }
    }
    Ok(())
}

/// `IP-literal = "[" ( IPv6address / IPvFuture ) "]"`, without the brackets.
fn check_ip_literal(inside: &str) -> Result<(), String> {
    if let Some(future) = inside.strip_prefix(['v', 'V']) {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let valid = future.split_once('.').is_some_and(|(version, rest)| {
            !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_hexdigit())
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| is_unreserved(b) || is_sub_delim(b) || b == b':')
        });
        return if valid {
            Ok(())
        } else {
            Err(format!("[{inside}] is not a valid IPvFuture literal"))
        };
    }
    // RFC 3986's IPv6address grammar is the textual form std parses; zone
    // ids ("%eth0") are not part of it, and std refuses them too.
    inside
        .parse::<std::net::Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| format!("[{inside}] is not an IPv6 address"))
}

/// `URI = scheme ":" hier-part [ "?" query ] [ "#" fragment ]`.
pub(crate) fn check_uri(s: &str) -> Result<(), String> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(format!("{s:?} is not an absolute URI (no scheme)"));
    };
    check_scheme(scheme)?;
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (hier, query) = match rest.split_once('?') {
        Some((hier, query)) => (hier, Some(query)),
        None => (rest, None),
    };
    let path = match hier.strip_prefix("//") {
        Some(authority_path) => {
            let end = authority_path.find('/').unwrap_or(authority_path.len());
            check_authority(&authority_path[..end])?;
            &authority_path[end..]
        }
        // path-absolute / path-rootless / path-empty: none of them may start
        // with "//", which the branch above has taken.
        None => hier,
    };
    check_chars(path, "path", |b| is_pchar(b) || b == b'/')?;
    if let Some(query) = query {
        check_chars(query, "query", |b| is_pchar(b) || matches!(b, b'/' | b'?'))?;
    }
    if let Some(fragment) = fragment {
        check_chars(fragment, "fragment", |b| {
            is_pchar(b) || matches!(b, b'/' | b'?')
        })?;
    }
    Ok(())
}

/// An RFC 3339 `date-time`, as an instant.
///
/// chrono's parser is the arbiter of ranges (month 13, hour 24, offsets),
/// but it also takes a space for the "T", which RFC 3339's grammar does not.
pub(crate) fn parse_date_time(s: &str) -> Result<DateTime<Utc>, String> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(format!(
            "{s:?} is not an RFC 3339 date-time (expected e.g. 2021-09-30T16:25:24Z)"
        ));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 date-time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "example.com",
            "example.com:3388",
            "localhost:",
            "user:pass@example.com:80",
            "127.0.0.1",
            "[::1]:8080",
            "[2001:db8::7]",
            "[v1.fe80::a+en1]",
            "ex%41mple.com",
            "",
        ] {
            assert_eq!(check_authority(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("example.com/path", "'/'"),
            ("example.com:80a", "port"),
            ("a@b@c", "'@'"),
            ("[::1", "closing"),
            ("[::g]", "IPv6"),
            ("[::1]x", "after the IP literal"),
            ("exa mple.com", "' '"),
            ("ex%4", "two hex digits"),
            ("[v.x]", "IPvFuture"),
        ] {
            let err = check_authority(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn uris() {
        for ok in [
            "https://example.com/login",
            "https://example.com",
            "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
            "urn:isbn:0451450523",
            "mailto:a@example.com",
            "https://example.com/a?b=c&d=%20#frag/?",
            "did:key:z6Mkf",
            "x:",
        ] {
            assert_eq!(check_uri(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("example.com/login", "no scheme"),
            ("/login", "no scheme"),
            ("1https://example.com", "start with a letter"),
            ("https://exa mple.com/", "' '"),
            ("https://example.com/a b", "path"),
            ("https://example.com/?q=<x>", "query"),
            ("https://example.com/#a#b", "fragment"),
            ("https://example.com:x/", "port"),
        ] {
            let err = check_uri(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn date_times() {
        let at = parse_date_time("2021-09-30T16:25:24Z").expect("valid");
        assert_eq!(at.timestamp(), 1_633_019_124);
        let offset = parse_date_time("2021-09-30T18:25:24.5+02:00").expect("valid");
        assert_eq!(offset.timestamp(), 1_633_019_124);
        assert_eq!(offset.timestamp_subsec_millis(), 500);
        for bad in [
            "2021-09-30 16:25:24Z",
            "2021-09-30T16:25:24",
            "2021-13-30T16:25:24Z",
            "2021-09-30T16:25Z",
            "yesterday",
            "",
        ] {
            assert!(parse_date_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statement_chars_exclude_line_breaks_and_non_ascii() {
        assert!("I accept the Terms: https://example.com/tos!"
            .bytes()
            .all(is_statement_char));
        for b in [b'\n', b'\r', b'"', b'%', b'<', 0xc3] {
            assert!(!is_statement_char(b), "{b:#x}");
        }
    }
}
