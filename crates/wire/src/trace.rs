//! W3C trace context (`traceparent`) for an event, derived from its
//! envelope id wherever it is needed.
//!
//! The trace id is the envelope id itself (a UUID is 16 bytes, as a trace id
//! is): every process that touches an event, and every redelivery or replay
//! of it, lands in the same trace without any state to keep, and a log line
//! with the envelope id finds the trace and back. The parent span id is the
//! id's last 8 bytes: the gateway's publish, as the worker sees it. Since
//! the id travels as `Nats-Msg-Id` anyway, the gateway sends no
//! `traceparent` header; a worker derives it from the id, and honours one
//! that another publisher does send.

/// The header's name, as W3C writes it.
pub const HEADER: &str = "traceparent";

/// `00-<trace id>-<parent id>-01` (sampled) for an envelope id, or `None`
/// if the id is not a UUID (only the gateway's ids are; then no trace).
pub fn traceparent(envelope_id: &str) -> Option<String> {
    let uuid = uuid::Uuid::try_parse(envelope_id).ok()?;
    // On the gateway's publish path: encoded on the stack, one allocation.
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let hex: &str = uuid.simple().encode_lower(&mut buf);
    let parent = &hex[16..];
    // All-zero ids are invalid in W3C trace context.
    if uuid.is_nil() || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(format!("00-{hex}-{parent}-01"))
}

/// The trace id of a `traceparent` value, if it is well-formed (version
/// 00, lowercase hex, not all zero).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let well_formed = parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    well_formed.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_id_is_its_own_trace_id() {
        let id = "bf601820-0c32-5e24-9923-7392b7cc0af4";
        let header = traceparent(id).expect("a UUID");
        assert_eq!(
            header,
            "00-bf6018200c325e2499237392b7cc0af4-99237392b7cc0af4-01"
        );
        assert_eq!(trace_id(&header), Some("bf6018200c325e2499237392b7cc0af4"));
    }

    #[test]
    fn malformed_trace_context_is_ignored() {
        assert_eq!(traceparent("not-a-uuid"), None);
        assert_eq!(traceparent("00000000-0000-0000-0000-000000000000"), None);
        for bad in [
            "",
            "01-bf6018200c325e2499237392b7cc0af4-99237392b7cc0af4-01",
            "00-BF6018200C325E2499237392B7CC0AF4-99237392b7cc0af4-01",
            "00-00000000000000000000000000000000-99237392b7cc0af4-01",
            "00-bf6018200c325e2499237392b7cc0af4-0000000000000000-01",
            "00-bf6018200c325e2499237392b7cc0af4-99237392b7cc0af4-01-extra",
            "00-bf6018200c32-99237392b7cc0af4-01",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
    }
}
