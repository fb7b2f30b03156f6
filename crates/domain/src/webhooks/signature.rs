//! Signing deliveries, and checking a signature the way a receiver should.
//!
//! Every delivery carries
//!
//! ```text
//! Gatehouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//! ```
//!
//! The key is the webhook's secret exactly as shown at registration (its
//! UTF-8 bytes, `whsec_` prefix included); the message is the timestamp in
//! decimal, a full stop, and the request body byte for byte, before any
//! JSON parsing. The timestamp is signed with the body so that a captured
//! request cannot be replayed later with a fresh `t`: receivers refuse a
//! `t` outside their tolerance ([`DEFAULT_TOLERANCE`]) and drop an event id
//! (`Gatehouse-Delivery`) they have already processed. A receiver accepts
//! any `v1` that matches, so a header may carry several while a secret is
//! rotated; other keys (a future `v2`) are ignored.

use std::time::Duration;

use hmac::{Hmac, Mac};
use settings::Secret;
use sha2::Sha256;

/// The header with the timestamp and the signature(s).
pub const SIGNATURE_HEADER: &str = "Gatehouse-Signature";
/// The header naming the event type (`member.joined`, ...).
pub const EVENT_HEADER: &str = "Gatehouse-Event";
/// The header with the delivery's id: the same on every retry, so a
/// receiver can drop a delivery it has already processed.
pub const DELIVERY_HEADER: &str = "Gatehouse-Delivery";
/// How far a signature's timestamp may be from the receiver's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why [`verify`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature is {age_seconds}s away from now, outside the tolerance of {tolerance_seconds}s (a replay, or a clock off)")]
    OutsideTolerance {
        age_seconds: i64,
        tolerance_seconds: u64,
    },
    #[error("no signature matches the body and the secret")]
    Mismatch,
}

fn mac(secret: &Secret, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (long ones are hashed first), so this
    // cannot fail whatever the secret.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Gatehouse-Signature` value for `body` sent at `timestamp` (unix
/// seconds).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Checks a `Gatehouse-Signature` value against the raw `body`: some `v1`
/// must match (compared in constant time) and `t` must be within
/// `tolerance` of `now` (unix seconds), either side.
pub fn verify(
    secret: &Secret,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("expected key=value pairs"));
        };
        match key {
            "t" if timestamp.is_some() => {
                return Err(SignatureError::Malformed("more than one t"));
            }
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                );
            }
            "v1" => candidates.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no v1"));
    }
    let age = now.saturating_sub(timestamp);
    let tolerance_seconds = tolerance.as_secs();
    if age.unsigned_abs() > tolerance_seconds {
        return Err(SignatureError::OutsideTolerance {
            age_seconds: age,
            tolerance_seconds,
        });
    }
    let expected = mac(secret, timestamp, body);
    let matches = candidates.iter().any(|candidate| {
        hex::decode(candidate).is_ok_and(|tag| expected.clone().verify_slice(&tag).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn secret() -> Secret {
        Secret::new("whsec_0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_signature_verifies_against_its_body_and_secret() {
        let body = br#"{"id":"x","type":"member.joined"}"#;
        let header = sign(&secret(), NOW, body);
        assert_eq!(
            verify(&secret(), &header, body, NOW, DEFAULT_TOLERANCE),
            Ok(())
        );
        // Late, but within the tolerance.
        assert_eq!(
            verify(&secret(), &header, body, NOW + 299, DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_body_a_wrong_secret_or_a_stale_timestamp_is_refused() {
        let body = br#"{"type":"role.granted","data":{"role_id":"1"}}"#;
        let header = sign(&secret(), NOW, body);
        let tampered = br#"{"type":"role.granted","data":{"role_id":"2"}}"#;
        assert_eq!(
            verify(&secret(), &header, tampered, NOW, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        let other = Secret::new("whsec_ffffffffffffffffffffffffffffffff");
        assert_eq!(
            verify(&other, &header, body, NOW, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        for now in [NOW + 301, NOW - 301] {
            assert!(
                matches!(
                    verify(&secret(), &header, body, now, DEFAULT_TOLERANCE),
                    Err(SignatureError::OutsideTolerance { .. })
                ),
                "now = {now}"
            );
        }
        // A replay with a fresh t and the old v1 does not match: t is signed.
        let v1 = header.split_once(",v1=").map(|(_, v)| v).unwrap();
        let replay = format!("t={},v1={v1}", NOW + 600);
        assert_eq!(
            verify(&secret(), &replay, body, NOW + 600, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused_and_any_matching_v1_is_accepted() {
        let body = b"{}";
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,t=2,v1=00", "garbage"] {
            assert!(
                matches!(
                    verify(&secret(), bad, body, 1, DEFAULT_TOLERANCE),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        // During a rotation: one stale v1, one right; unknown keys ignored.
        let good = sign(&secret(), NOW, body);
        let v1 = good.split_once(",v1=").map(|(_, v)| v).unwrap();
        let rotated = format!("t={NOW},v1={},v1={v1},v2=future", "ab".repeat(32));
        assert_eq!(
            verify(&secret(), &rotated, body, NOW, DEFAULT_TOLERANCE),
            Ok(())
        );
        let not_hex = format!("t={NOW},v1=zz");
        assert_eq!(
            verify(&secret(), &not_hex, body, NOW, DEFAULT_TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    /// The documented algorithm, computed from its description alone, gives
    /// the header `sign` writes: the doc is what receivers implement.
    #[test]
    fn the_header_is_the_documented_hmac_of_timestamp_dot_body() {
        let secret = "whsec_documented";
        let body = br#"{"id":"6f1c","type":"member.left"}"#;
        let t = 1_712_345_678_i64;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let expected = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sign(&Secret::new(secret), t, body), expected);
        // And vectors computed outside Rust (Python's hmac module), so a
        // change of algorithm cannot hide behind both sides changing
        // together.
        assert_eq!(
            expected,
            "t=1712345678,v1=025736ffa65e80e2d148f2fe2e5c1758abc30ffcf04773d7c8d02f6ce816f56b"
        );
        assert_eq!(
            sign(&Secret::new("key"), 0, b""),
            "t=0,v1=85841b4efc3cd7776c3c8f9b7cca9e281c550e5d19889d78e9e669c6337f000d"
        );
    }
}
