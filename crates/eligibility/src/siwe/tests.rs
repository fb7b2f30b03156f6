use std::time::Duration;

use alloy_primitives::{address, eip191_hash_message};
use chrono::{DateTime, TimeDelta, Utc};
use k256::ecdsa::SigningKey;

use super::verify::recover_personal_sign;
use super::*;

/// The EIP's three examples (implicit scheme; explicit port; explicit
/// scheme), which differ only in their first line.
const EIP_BODY: &str = "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json";

fn eip_example(origin: &str) -> String {
    format!("{origin} wants you to sign in with your Ethereum account:\n{EIP_BODY}")
}

/// Every optional field present; lines numbered as in the parse errors.
const FULL: &str = "https://example.com wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Expiration Time: 2021-09-30T16:35:24.000Z
Not Before: 2021-09-30T16:25:24+00:00
Request ID: req-1:%20a@b
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json";

fn at(rfc3339: &str) -> DateTime<Utc> {
    rfc3986::parse_date_time(rfc3339).expect("test timestamp")
}

/// `FULL` with line `n` (1-based) replaced by `with`, or removed.
fn full_with(n: usize, with: Option<&str>) -> String {
    let mut lines: Vec<&str> = FULL.split('\n').collect();
    match with {
        Some(line) => lines[n - 1] = line,
        None => {
            lines.remove(n - 1);
        }
    }
    lines.join("\n")
}

fn parse_err(text: &str) -> ParseError {
    SiweMessage::parse(text).expect_err(text)
}

#[test]
fn the_eip_examples_parse_and_round_trip() {
    for (origin, scheme, domain) in [
        ("example.com", None, "example.com"),
        ("example.com:3388", None, "example.com:3388"),
        ("https://example.com", Some("https"), "example.com"),
    ] {
        let text = eip_example(origin);
        let message = SiweMessage::parse(&text).unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(message.scheme.as_deref(), scheme);
        assert_eq!(message.domain, domain);
        assert_eq!(
            message.address,
            address!("C02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2")
        );
        assert_eq!(
            message.statement.as_deref(),
            Some("I accept the ExampleOrg Terms of Service: https://example.com/tos")
        );
        assert_eq!(message.uri, "https://example.com/login");
        assert_eq!(message.chain_id, 1);
        assert_eq!(message.nonce, "32891756");
        assert_eq!(message.issued_at.at(), at("2021-09-30T16:25:24Z"));
        assert_eq!(message.expiration_time, None);
        assert_eq!(message.resources.len(), 2);
        assert_eq!(message.to_string(), text);
        assert_eq!(message.validate(), Ok(()));
    }
}

#[test]
fn every_optional_field_parses_and_is_written_back_as_given() {
    let message: SiweMessage = FULL.parse().expect("valid");
    assert_eq!(
        message.expiration_time.as_ref().map(Timestamp::as_str),
        Some("2021-09-30T16:35:24.000Z")
    );
    assert_eq!(
        message.not_before.as_ref().map(Timestamp::at),
        Some(at("2021-09-30T16:25:24Z"))
    );
    assert_eq!(message.request_id.as_deref(), Some("req-1:%20a@b"));
    assert_eq!(message.to_string(), FULL);
}

#[test]
fn absent_and_empty_statements_are_told_apart() {
    let none = FULL.replace(
        "\nI accept the ExampleOrg Terms of Service: https://example.com/tos\n",
        "\n",
    );
    let empty = FULL.replace(
        "\nI accept the ExampleOrg Terms of Service: https://example.com/tos\n",
        "\n\n",
    );
    let parsed_none = SiweMessage::parse(&none).expect("no statement");
    assert_eq!(parsed_none.statement, None);
    assert_eq!(parsed_none.to_string(), none);
    let parsed_empty = SiweMessage::parse(&empty).expect("empty statement");
    assert_eq!(parsed_empty.statement.as_deref(), Some(""));
    assert_eq!(parsed_empty.to_string(), empty);
}

#[test]
fn a_built_message_validates_and_parses_back_to_itself() {
    let message = SiweMessage {
        scheme: None,
        domain: "gatehouse.example:8443".into(),
        address: address!("d8dA6BF26964aF9D7eEd9e03E53415D37aA96045"),
        statement: Some("Link this wallet to your Discord account.".into()),
        uri: "https://gatehouse.example:8443/link".into(),
        chain_id: 8453,
        nonce: "a1B2c3D4e5F6".into(),
        issued_at: Timestamp::from(at("2024-05-01T12:00:00.250Z")),
        expiration_time: Some(Timestamp::from(at("2024-05-01T12:10:00Z"))),
        not_before: None,
        request_id: None,
        resources: vec![],
    };
    assert_eq!(message.validate(), Ok(()));
    let text = message.to_string();
    assert!(
        text.contains("\nIssued At: 2024-05-01T12:00:00.250Z\n"),
        "{text}"
    );
    assert!(text.starts_with("gatehouse.example:8443 wants you to sign in with your Ethereum account:\n0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045\n\n"), "{text}");
    assert_eq!(SiweMessage::parse(&text), Ok(message));
}

#[test]
fn validate_names_the_line_a_bad_field_would_land_on() {
    let mut message = SiweMessage::parse(FULL).expect("valid");
    message.nonce = "short".into();
    let err = message.validate().expect_err("short nonce");
    assert_eq!((err.line, err.field), (9, Field::Nonce));

    let mut message = SiweMessage::parse(FULL).expect("valid");
    message.statement = Some("two\nlines".into());
    let err = message.validate().expect_err("line break");
    assert_eq!((err.line, err.field), (4, Field::Statement));

    let mut message = SiweMessage::parse(FULL).expect("valid");
    message.resources[1] = "not a uri".into();
    let err = message.validate().expect_err("bad resource");
    assert_eq!((err.line, err.field), (16, Field::Resource(1)));

    let mut message = SiweMessage::parse(FULL).expect("valid");
    let year_10000 = DateTime::from_timestamp(253_402_300_800, 0).expect("in chrono's range");
    message.expiration_time = Some(Timestamp::from(year_10000));
    let err = message.validate().expect_err("not writable in RFC 3339");
    assert_eq!((err.line, err.field), (11, Field::ExpirationTime));

    let mut message = SiweMessage::parse(FULL).expect("valid");
    message.request_id = Some("a b".into());
    let err = message.validate().expect_err("space in request id");
    assert_eq!((err.line, err.field), (13, Field::RequestId));
}

#[test]
fn every_malformed_line_is_refused_precisely() {
    type Check = fn(&Problem) -> bool;
    let invalid: Check = |p| matches!(p, Problem::Invalid(_));
    let cases: Vec<(&str, String, usize, Field, Check)> = vec![
        (
            "header without its colon",
            full_with(
                1,
                Some("example.com wants you to sign in with your Ethereum account"),
            ),
            1,
            Field::Header,
            invalid,
        ),
        (
            "scheme starting with a digit",
            full_with(
                1,
                Some("1https://example.com wants you to sign in with your Ethereum account:"),
            ),
            1,
            Field::Scheme,
            invalid,
        ),
        (
            "domain with a space",
            full_with(
                1,
                Some("exa mple.com wants you to sign in with your Ethereum account:"),
            ),
            1,
            Field::Domain,
            invalid,
        ),
        (
            "empty domain",
            full_with(1, Some(" wants you to sign in with your Ethereum account:")),
            1,
            Field::Domain,
            invalid,
        ),
        (
            "address not checksummed",
            full_with(2, Some("0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2")),
            2,
            Field::Address,
            |p| matches!(p, Problem::Invalid(w) if w.contains("EIP-55") && w.contains("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2")),
        ),
        (
            "address too short",
            full_with(2, Some("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756C")),
            2,
            Field::Address,
            |p| matches!(p, Problem::Invalid(w) if w.contains("40 hex digits")),
        ),
        (
            "text where the empty line after the address goes",
            full_with(3, Some("hello")),
            3,
            Field::Layout,
            |p| matches!(p, Problem::ExpectedBlank(_)),
        ),
        (
            "statement with a quote",
            full_with(4, Some("I accept \"the terms\"")),
            4,
            Field::Statement,
            |p| matches!(p, Problem::Invalid(w) if w.contains("'\"'")),
        ),
        (
            "statement running onto a second line",
            full_with(5, Some("and more")),
            5,
            Field::Layout,
            |p| matches!(p, Problem::ExpectedBlank(_)),
        ),
        (
            "URI line misspelt",
            full_with(6, Some("Uri: https://example.com/login")),
            6,
            Field::Uri,
            |p| *p == Problem::ExpectedPrefix("URI: "),
        ),
        (
            "relative URI",
            full_with(6, Some("URI: example.com/login")),
            6,
            Field::Uri,
            invalid,
        ),
        (
            "version 2",
            full_with(7, Some("Version: 2")),
            7,
            Field::Version,
            invalid,
        ),
        (
            "version line missing",
            full_with(7, None),
            7,
            Field::Version,
            |p| *p == Problem::ExpectedPrefix("Version: "),
        ),
        (
            "chain id in words",
            full_with(8, Some("Chain ID: one")),
            8,
            Field::ChainId,
            invalid,
        ),
        (
            "chain id with a leading zero",
            full_with(8, Some("Chain ID: 01")),
            8,
            Field::ChainId,
            |p| matches!(p, Problem::Invalid(w) if w.contains("leading zero")),
        ),
        (
            "chain id beyond u64",
            full_with(8, Some("Chain ID: 18446744073709551616")),
            8,
            Field::ChainId,
            |p| matches!(p, Problem::Invalid(w) if w.contains("too large")),
        ),
        (
            "nonce of 7 characters",
            full_with(9, Some("Nonce: 1234567")),
            9,
            Field::Nonce,
            |p| matches!(p, Problem::Invalid(w) if w.contains("at least 8")),
        ),
        (
            "nonce with punctuation",
            full_with(9, Some("Nonce: 1234-5678")),
            9,
            Field::Nonce,
            |p| matches!(p, Problem::Invalid(w) if w.contains("'-'")),
        ),
        (
            "issued-at with a space for the T",
            full_with(10, Some("Issued At: 2021-09-30 16:25:24Z")),
            10,
            Field::IssuedAt,
            invalid,
        ),
        (
            "expiration without an offset",
            full_with(11, Some("Expiration Time: 2021-09-30T16:35:24")),
            11,
            Field::ExpirationTime,
            invalid,
        ),
        (
            "expiration without the space after its colon",
            full_with(11, Some("Expiration Time:2021-09-30T16:35:24Z")),
            11,
            Field::ExpirationTime,
            |p| *p == Problem::ExpectedPrefix("Expiration Time: "),
        ),
        (
            "not-before on the 31st of September",
            full_with(12, Some("Not Before: 2021-09-31T16:25:24Z")),
            12,
            Field::NotBefore,
            invalid,
        ),
        (
            "request id with a space",
            full_with(13, Some("Request ID: a b")),
            13,
            Field::RequestId,
            invalid,
        ),
        (
            "resources line with a value",
            full_with(14, Some("Resources: two")),
            14,
            Field::Resources,
            invalid,
        ),
        (
            "resource that is not a URI",
            full_with(15, Some("- not a uri")),
            15,
            Field::Resource(0),
            invalid,
        ),
        (
            "resources line listing nothing",
            FULL.split('\n').take(14).collect::<Vec<_>>().join("\n"),
            14,
            Field::Resources,
            |p| matches!(p, Problem::Invalid(w) if w.contains("no resources")),
        ),
        (
            "an unknown line",
            full_with(13, Some("Colour: blue")),
            13,
            Field::Layout,
            |p| matches!(p, Problem::Unexpected(w) if w.contains("Colour") && w.contains("\"Request ID\"")),
        ),
        (
            "expiration after not-before",
            full_with(12, Some("Expiration Time: 2021-09-30T16:35:24Z")).replacen(
                "Expiration Time: 2021-09-30T16:35:24.000Z",
                "Not Before: 2021-09-30T16:25:24Z",
                1,
            ),
            12,
            Field::Layout,
            |p| matches!(p, Problem::Unexpected(w) if w.contains("out of order") && w.contains("\"Not Before\"")),
        ),
        (
            "expiration twice",
            full_with(12, Some("Expiration Time: 2021-09-30T16:35:24Z")),
            12,
            Field::Layout,
            |p| matches!(p, Problem::Unexpected(w) if w.contains("twice")),
        ),
        (
            "a trailing line feed",
            format!("{FULL}\n"),
            17,
            Field::Layout,
            |p| matches!(p, Problem::Unexpected(w) if w.contains("without a line break")),
        ),
        (
            "CRLF line endings",
            FULL.replace('\n', "\r\n"),
            1,
            Field::Header,
            |p| *p == Problem::CarriageReturn,
        ),
        (
            "cut off after the chain id",
            FULL.split('\n').take(8).collect::<Vec<_>>().join("\n"),
            9,
            Field::Nonce,
            |p| *p == Problem::Missing,
        ),
        (
            "the earlier draft's single empty line without a statement",
            FULL.replace(
                "\nI accept the ExampleOrg Terms of Service: https://example.com/tos\n\n",
                "\n",
            ),
            4,
            Field::Layout,
            |p| matches!(p, Problem::ExpectedBlank(hint) if hint.contains("two empty lines")),
        ),
        ("an empty text", String::new(), 1, Field::Header, invalid),
    ];
    for (name, text, line, field, check) in cases {
        let err = parse_err(&text);
        assert_eq!((err.line, err.field), (line, field), "{name}: {err}");
        assert!(check(&err.problem), "{name}: {err}");
    }
}

#[test]
fn parse_errors_read_well() {
    let err = parse_err(&full_with(9, Some("Nonce: 1234567")));
    assert_eq!(
        err.to_string(),
        "line 9 (Nonce): \"1234567\" is 7 characters; a nonce has at least 8"
    );
}

fn expected(now: DateTime<Utc>) -> Expected<'static> {
    Expected {
        scheme: "https",
        domain: "example.com",
        uri: UriMatch::Exact("https://example.com/login"),
        nonce: "32891756",
        chain_id: Some(1),
        now,
        clock_skew: DEFAULT_CLOCK_SKEW,
    }
}

/// `FULL` is valid from 16:25:24 until 16:35:24.
fn full() -> SiweMessage {
    SiweMessage::parse(FULL).expect("valid")
}

fn in_window() -> DateTime<Utc> {
    at("2021-09-30T16:30:00Z")
}

#[test]
fn expect_accepts_the_message_asked_for() {
    assert_eq!(full().expect(&expected(in_window())), Ok(()));
    let upper = Expected {
        domain: "EXAMPLE.com",
        scheme: "HTTPS",
        chain_id: None,
        ..expected(in_window())
    };
    assert_eq!(full().expect(&upper), Ok(()));
}

#[test]
fn expect_names_the_field_that_differs() {
    let now = in_window();
    let phishing = Expected {
        domain: "gatehouse.example",
        ..expected(now)
    };
    assert!(matches!(
        full().expect(&phishing),
        Err(Mismatch::Domain { found, .. }) if found == "example.com"
    ));
    let plain_http = Expected {
        scheme: "http",
        ..expected(now)
    };
    assert!(matches!(
        full().expect(&plain_http),
        Err(Mismatch::Scheme { found, .. }) if found == "https"
    ));
    let other_uri = Expected {
        uri: UriMatch::Exact("https://example.com/link"),
        ..expected(now)
    };
    assert!(matches!(
        full().expect(&other_uri),
        Err(Mismatch::Uri { found, .. }) if found == "https://example.com/login"
    ));
    let stale_nonce = Expected {
        nonce: "99999999",
        ..expected(now)
    };
    assert_eq!(
        full().expect(&stale_nonce),
        Err(Mismatch::Nonce {
            found: "32891756".into()
        })
    );
    let polygon = Expected {
        chain_id: Some(137),
        ..expected(now)
    };
    assert_eq!(
        full().expect(&polygon),
        Err(Mismatch::ChainId {
            expected: 137,
            found: 1
        })
    );
}

#[test]
fn a_message_without_scheme_means_https() {
    let message = SiweMessage::parse(&eip_example("example.com")).expect("valid");
    let http = Expected {
        scheme: "http",
        ..expected(at("2021-09-30T16:30:00Z"))
    };
    assert!(matches!(
        message.expect(&http),
        Err(Mismatch::Scheme { .. })
    ));
}

#[test]
fn uri_within_stops_at_path_boundaries() {
    let base = UriMatch::Within("https://example.com/login");
    for ok in [
        "https://example.com/login",
        "https://example.com/login/step2",
        "https://example.com/login?s=1",
        "https://example.com/login#x",
    ] {
        assert!(base.matches(ok), "{ok}");
    }
    for bad in [
        "https://example.com/loginx",
        "https://example.com/",
        "https://example.com.evil/login",
    ] {
        assert!(!base.matches(bad), "{bad}");
    }
    let host = UriMatch::Within("https://example.com/");
    assert!(host.matches("https://example.com/anything"));
    assert!(!UriMatch::Within("https://example.com").matches("https://example.com.evil/"));
    assert!(!UriMatch::Exact("https://example.com/login").matches("https://example.com/login?s=1"));
}

#[test]
fn expiry_is_exclusive_and_never_stretched_by_the_skew() {
    let message = full();
    let expiry = at("2021-09-30T16:35:24Z");
    let just_before = expiry - TimeDelta::milliseconds(1);
    assert_eq!(message.expect(&expected(just_before)), Ok(()));
    assert_eq!(
        message.expect(&expected(expiry)),
        Err(Mismatch::Expired { at: expiry })
    );
}

#[test]
fn not_before_and_issued_at_allow_only_the_clock_skew() {
    let mut message = full();
    let not_before = at("2021-09-30T16:30:00Z");
    message.not_before = Some(Timestamp::from(not_before));
    let within_skew = not_before - TimeDelta::seconds(59);
    assert_eq!(message.expect(&expected(within_skew)), Ok(()));
    let too_early = not_before - TimeDelta::seconds(61);
    assert_eq!(
        message.expect(&expected(too_early)),
        Err(Mismatch::NotYetValid { from: not_before })
    );

    let mut message = full();
    message.not_before = None;
    let issued = at("2021-09-30T16:25:24Z");
    let clock_behind = issued - TimeDelta::seconds(30);
    assert_eq!(message.expect(&expected(clock_behind)), Ok(()));
    let far_behind = Expected {
        clock_skew: Duration::from_secs(5),
        ..expected(clock_behind)
    };
    assert_eq!(
        message.expect(&far_behind),
        Err(Mismatch::IssuedInFuture { at: issued })
    );
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid secp256k1 scalar")
}

fn address_of(key: &SigningKey) -> Address {
    Address::from_public_key(key.verifying_key())
}

/// What `personal_sign` returns: r ‖ s ‖ v with v = 27 or 28.
fn personal_sign(key: &SigningKey, message: &str) -> Vec<u8> {
    let (signature, recovery) = key
        .sign_prehash_recoverable(eip191_hash_message(message).as_slice())
        .expect("signing works");
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + recovery.to_byte());
    bytes
}

#[test]
fn personal_sign_recovers_its_signer_and_only_over_the_same_text() {
    let alice = key(1);
    let mut message = full();
    message.address = address_of(&alice);
    let text = message.to_string();
    let signature = personal_sign(&alice, &text);
    assert_eq!(
        recover_personal_sign(&text, &signature),
        Some(address_of(&alice))
    );
    assert_eq!(
        message.eip191_hash(),
        eip191_hash_message(&text),
        "EIP-1271 is asked about the same hash an EOA signs"
    );

    // v as 0/1 is how some hardware wallets answer.
    let mut raw_v = signature.clone();
    raw_v[64] -= 27;
    assert_eq!(
        recover_personal_sign(&text, &raw_v),
        Some(address_of(&alice))
    );

    let tampered = text.replace("Nonce: 32891756", "Nonce: 32891757");
    assert_ne!(
        recover_personal_sign(&tampered, &signature),
        Some(address_of(&alice))
    );
    let bob = personal_sign(&key(2), &text);
    assert_eq!(
        recover_personal_sign(&text, &bob),
        Some(address_of(&key(2)))
    );

    assert_eq!(recover_personal_sign(&text, &signature[..64]), None);
    let mut eip155_v = signature.clone();
    eip155_v[64] = 37;
    assert_eq!(recover_personal_sign(&text, &eip155_v), None);
}
