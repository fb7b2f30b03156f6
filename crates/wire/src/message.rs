//! Any message of the contract, read by the subject it travels on, and the
//! contract's secrets kept out of what people see.
//!
//! Each stream carries one shape: envelopes on `events.>` and `commands.>`,
//! [`EligibilityCheck`]s on `eligibility.>`, [`WebhookDelivery`] references
//! on `webhooks.>`. A tool that holds a message it did not consume itself
//! (a dead letter, a stream dump) decodes it with [`Message::decode`] and
//! shows it with [`redact_json`] / [`redact_text`] applied.

use serde_json::Value;
use uuid::Uuid;

use crate::check::EligibilityCheck;
use crate::subjects::{self, StreamSpec};
use crate::webhook::WebhookDelivery;
use crate::{Envelope, GuildId, WireError};

/// One message of the contract.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A gateway event or interaction.
    Event(Envelope),
    /// An eligibility check request.
    Check(EligibilityCheck),
    /// A webhook delivery to attempt.
    WebhookDelivery(WebhookDelivery),
}

/// Why a payload could not be read as the message its subject carries.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("{0:?} is not a subject of the contract")]
    UnknownSubject(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Message {
    /// Decodes `payload` as the message `subject` (as the contract names it,
    /// without a namespace) carries.
    pub fn decode(subject: &str, payload: &[u8]) -> Result<Message, MessageError> {
        let stream = subjects::stream_for(subject)
            .ok_or_else(|| MessageError::UnknownSubject(subject.to_owned()))?;
        let is = |spec: StreamSpec| stream == spec;
        if is(subjects::EVENTS) || is(subjects::COMMANDS) {
            Ok(Message::Event(Envelope::from_json(payload)?))
        } else if is(subjects::ELIGIBILITY) {
            Ok(Message::Check(EligibilityCheck::from_json(payload)?))
        } else if is(subjects::WEBHOOKS) {
            Ok(Message::WebhookDelivery(WebhookDelivery::from_json(
                payload,
            )?))
        } else {
            Err(MessageError::UnknownSubject(subject.to_owned()))
        }
    }

    /// What it is: the envelope's `type`, or the subject of the others.
    pub fn kind(&self) -> &str {
        match self {
            Message::Event(envelope) => envelope.payload.kind(),
            Message::Check(_) => subjects::ELIGIBILITY_CHECK,
            Message::WebhookDelivery(_) => subjects::WEBHOOK_DELIVER,
        }
    }

    /// The Discord guild it is about, when it names one.
    pub fn guild_id(&self) -> Option<GuildId> {
        match self {
            Message::Event(envelope) => envelope.guild_id,
            Message::Check(check) => Some(check.guild_id),
            Message::WebhookDelivery(_) => None,
        }
    }

    /// The community (tenant) it names directly, without a guild: only
    /// webhook deliveries do.
    pub fn community(&self) -> Option<Uuid> {
        match self {
            Message::WebhookDelivery(delivery) => Some(delivery.community),
            Message::Event(_) | Message::Check(_) => None,
        }
    }

    /// The id its publisher deduplicates it by (the `Nats-Msg-Id` it was
    /// first published with).
    pub fn id(&self) -> String {
        match self {
            Message::Event(envelope) => envelope.id.as_str().to_owned(),
            Message::Check(check) => check.id.clone(),
            Message::WebhookDelivery(delivery) => delivery.msg_id(),
        }
    }
}

/// What a secret's value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether a JSON field of this name holds a secret. The contract's one
/// secret today is the interaction `token` (it answers the interaction for
/// 15 minutes); the rest of the list fails closed for fields a newer writer
/// may add.
fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "token"
        || name.ends_with("_token")
        || name.contains("secret")
        || name.contains("password")
}

/// Replaces every secret field's value in `value` (at any depth) with
/// [`REDACTED`], and returns the string values it removed, so a caller can
/// mask them where else they appear (an error message that quoted a URL).
pub fn redact_json(value: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    redact_into(value, &mut removed);
    removed
}

fn redact_into(value: &mut Value, removed: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if is_secret_field(name) {
                    if let Value::String(secret) = field {
                        if !secret.is_empty() {
                            removed.push(std::mem::take(secret));
                        }
                    }
                    if !field.is_null() {
                        *field = Value::String(REDACTED.to_owned());
                    }
                } else {
                    redact_into(field, removed);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_into(item, removed);
            }
        }
        _ => {}
    }
}

/// [`redact_json`] for text that is not valid JSON (a truncated or mangled
/// payload): wherever a secret field's name is followed by `:` and a
/// string, the string is masked up to its closing quote, or to the end when
/// the text stops inside it. Each `"name":` is found on its own rather than
/// by pairing every quote of the text, so one stray quote cannot hide a
/// secret behind it. Returns the text and the values it removed.
pub fn redact_text(text: &str) -> (String, Vec<String>) {
    let bytes = text.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(text.len());
    let mut removed = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let colon = skip_space(i + 1);
        let name = text[..i].rfind('"').map(|start| &text[start + 1..i]);
        let opening = skip_space(colon + 1);
        let names_a_secret = bytes.get(colon) == Some(&b':')
            && name.is_some_and(is_secret_field)
            && bytes.get(opening) == Some(&b'"');
        if !names_a_secret {
            i += 1;
            continue;
        }
        let start = opening + 1;
        let end = closing_quote(&text[start..]).map_or(text.len(), |e| start + e);
        if end > start {
            removed.push(text[start..end].to_owned());
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
        i = end + 1;
    }
    out.push_str(&text[copied..]);
    (out, removed)
}

/// The byte index of the first unescaped `"` in a JSON string's inside.
fn closing_quote(inside: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in inside.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERACTION: &str = r#"{"id":"e1","type":"interaction.create","version":1,"shard_id":0,
        "occurred_at":5,"guild_id":"42","user_id":"7","channel_id":"9",
        "data":{"interaction_id":"11","token":"aW50ZXJhY3Rpb24tc2VjcmV0","application_id":"12",
                "kind":"application_command","command_name":"check"}}"#;

    #[test]
    fn messages_decode_by_their_subject() {
        let event = Message::decode(subjects::INTERACTION, INTERACTION.as_bytes()).unwrap();
        assert_eq!(event.kind(), "interaction.create");
        assert_eq!(event.guild_id(), GuildId::new(42));
        assert_eq!(event.id(), "e1");
        let check = br#"{"id":"c1","guild_id":"5","reason":"rule.changed","requested_at":0}"#;
        let check = Message::decode(subjects::ELIGIBILITY_CHECK, check).unwrap();
        assert_eq!(
            (check.kind(), check.guild_id()),
            ("eligibility.check", GuildId::new(5))
        );
        let hook = br#"{"community":"00000000-0000-0000-0000-000000000007","delivery":3}"#;
        let hook = Message::decode(subjects::WEBHOOK_DELIVER, hook).unwrap();
        assert_eq!(hook.community(), Some(Uuid::from_u128(7)));
        assert_eq!(
            (hook.guild_id(), hook.id()),
            (None, "webhook-delivery-3".into())
        );
        assert!(matches!(
            Message::decode("dead.events.member.join", b"{}"),
            Err(MessageError::UnknownSubject(_))
        ));
        assert!(matches!(
            Message::decode(subjects::MEMBER_JOIN, b"not json"),
            Err(MessageError::Wire(_))
        ));
    }

    #[test]
    fn the_interaction_token_never_survives_redaction() {
        let mut value: Value = serde_json::from_str(INTERACTION).unwrap();
        let removed = redact_json(&mut value);
        assert_eq!(removed, ["aW50ZXJhY3Rpb24tc2VjcmV0"]);
        assert_eq!(value["data"]["token"], REDACTED);
        assert_eq!(value["data"]["interaction_id"], "11");
        assert!(!value.to_string().contains("aW50ZXJhY3Rpb24tc2VjcmV0"));
    }

    #[test]
    fn text_that_is_not_json_is_redacted_too() {
        let truncated = &INTERACTION[..INTERACTION.find("application_id").unwrap()];
        let (shown, removed) = redact_text(truncated);
        assert!(!shown.contains("aW50ZXJhY3Rpb24tc2VjcmV0"), "{shown}");
        assert!(shown.contains(r#""token":"[redacted]""#), "{shown}");
        assert_eq!(removed, ["aW50ZXJhY3Rpb24tc2VjcmV0"]);

        let cut_inside = r#"{"x":1,"data":{"token": "abc\"def"#;
        let (shown, removed) = redact_text(cut_inside);
        assert_eq!(shown, r#"{"x":1,"data":{"token": "[redacted]"#);
        assert_eq!(removed, [r#"abc\"def"#]);

        let (shown, removed) = redact_text(r#"{"name":"token","value":"v"} "#);
        assert_eq!(shown, r#"{"name":"token","value":"v"} "#);
        assert!(removed.is_empty());
    }
}
