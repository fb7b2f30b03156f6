//! The operator's side of the DEAD_LETTER stream: reading dead letters
//! without consuming them, putting one back on the subject it came from,
//! and removing one.
//!
//! Reading is JetStream's message get (`STREAM.MSG.GET`, by sequence or
//! "the next one at or after this sequence on this subject"), never a
//! consumer: nothing is created on the server, no durable consumer moves,
//! and a listing that is interrupted leaves nothing behind. It costs a
//! request per dead letter, which suits a stream that should stay small.
//!
//! Like the rest of this crate, none of this looks inside a message: the
//! payload is bytes, moved unchanged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use wire::subjects::{self, dead_letter_subject, headers, original_of_dead_letter};

use crate::{BusError, Namespace};

/// One dead letter, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its sequence in the DEAD_LETTER stream: how an operator names it.
    pub sequence: u64,
    /// When JetStream stored it (when the worker gave up).
    pub stored_at: SystemTime,
    /// Its own subject, as stored (`<namespace>.dead.<original>`).
    pub subject: String,
    /// The subject it came from as the contract names it (no namespace),
    /// read from [`DeadLetter::subject`]; `None` when that is not a
    /// dead-letter subject of this namespace.
    pub original: Option<String>,
    /// The `Gatehouse-Original-Subject` header: the subject as consumed,
    /// namespace included.
    pub recorded_original: Option<String>,
    /// The `Gatehouse-Deliveries` header, when it is a number.
    pub deliveries: Option<i64>,
    /// The `Gatehouse-Reason` header.
    pub reason: Option<String>,
    /// Every header, in name order (for showing them all).
    pub headers: Vec<(String, String)>,
    /// The original message's bytes, unchanged.
    pub payload: Bytes,
}

impl DeadLetter {
    fn from_stored(ns: &Namespace, message: jetstream::message::StreamMessage) -> DeadLetter {
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let mut all: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |value| (name.to_string(), value.as_str().to_owned()))
            })
            .collect();
        all.sort();
        let subject = message.subject.to_string();
        let original = ns
            .strip(&subject)
            .and_then(original_of_dead_letter)
            .map(str::to_owned);
        DeadLetter {
            sequence: message.sequence,
            stored_at: system_time(message.time.unix_timestamp_nanos()),
            original,
            recorded_original: header(headers::DEAD_LETTER_ORIGINAL_SUBJECT),
            deliveries: header(headers::DEAD_LETTER_DELIVERIES).and_then(|d| d.parse().ok()),
            reason: header(headers::DEAD_LETTER_REASON),
            headers: all,
            subject,
            payload: message.payload,
        }
    }

    /// The `Nats-Msg-Id` a replay of this dead letter is published with.
    ///
    /// Not the original message's id: the original was published with it
    /// (the envelope id, the check id), so a replay within the original
    /// stream's duplicate window would be acknowledged as a duplicate and
    /// silently dropped. Derived from this dead letter instead, so that
    /// replaying the same dead letter twice (a replay whose dead letter
    /// could not be removed afterwards, run again) is stored once within
    /// the window, while the same message dead-lettered again after a
    /// replay is a new dead letter with a new id and can be replayed again.
    /// The stored time rides along with the sequence because a re-created
    /// DEAD_LETTER stream starts its sequences at 1 again.
    ///
    /// The message's own id stays in its payload, unchanged: the worker's
    /// `processed_events` claim on it is what keeps a replay of something
    /// that had in fact taken effect from taking effect twice, whatever
    /// this id is.
    pub fn replay_msg_id(&self) -> String {
        let stored_ns = self
            .stored_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("dead-letter-replay-{}-{stored_ns}", self.sequence)
    }

    /// Where a replay publishes: the original subject in `ns`, the
    /// namespace the dead letter is in. Refused when the dead letter does
    /// not say where it came from consistently, or came from a subject no
    /// stream but DEAD_LETTER captures (a replay must never feed the dead
    /// letters back to themselves).
    pub fn replay_subject(&self, ns: &Namespace) -> Result<String, BusError> {
        let refuse = |problem: String| BusError::DeadLetter {
            sequence: self.sequence,
            problem,
        };
        let original = self.original.as_deref().ok_or_else(|| {
            refuse(format!(
                "its subject {:?} is not a dead-letter subject of this namespace",
                self.subject
            ))
        })?;
        let target = ns.subject(original);
        if let Some(recorded) = &self.recorded_original {
            if *recorded != target {
                return Err(refuse(format!(
                    "its subject says it came from {target:?} but its {} header says {recorded:?}; \
                     not replaying a dead letter that disagrees with itself",
                    headers::DEAD_LETTER_ORIGINAL_SUBJECT
                )));
            }
        }
        match subjects::stream_for(original) {
            Some(stream) if stream != subjects::DEAD_LETTER => Ok(target),
            _ => Err(refuse(format!(
                "{original:?} is not a subject any stream but DEAD_LETTER stores"
            ))),
        }
    }
}

fn system_time(unix_nanos: i128) -> SystemTime {
    let nanos = u64::try_from(unix_nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A replay JetStream has stored (or recognised as stored already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The subject it was published on, namespace included.
    pub subject: String,
    /// The stream that stored it and its sequence there.
    pub stream: String,
    pub stream_sequence: u64,
    /// JetStream already had a message with this replay's id within its
    /// duplicate window: an earlier replay of the same dead letter was
    /// stored, and this one added nothing.
    pub duplicate: bool,
}

/// The DEAD_LETTER stream of one namespace.
pub struct DeadLetters {
    js: Context,
    ns: Namespace,
    name: String,
    stream: Stream,
}

impl DeadLetters {
    /// Looks the stream up; an error says when it does not exist.
    pub async fn open(js: &Context, ns: &Namespace) -> Result<DeadLetters, BusError> {
        let name = ns.stream_name(&subjects::DEAD_LETTER);
        let stream = js.get_stream(&name).await.map_err(|e| {
            let missing = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js_error)
                    if js_error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if missing {
                BusError::stream(
                    &name,
                    "does not exist: no gateway or worker has run in this namespace \
                     (check NATS_NAMESPACE)",
                )
            } else {
                BusError::stream(&name, format!("cannot look it up: {e}"))
            }
        })?;
        Ok(DeadLetters {
            js: js.clone(),
            ns: ns.clone(),
            name,
            stream,
        })
    }

    /// The stream's name (with the namespace).
    pub fn stream_name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Dead letter `sequence`; `None` if there is none (replayed, dropped,
    /// aged out, or never written).
    pub async fn get(&self, sequence: u64) -> Result<Option<DeadLetter>, BusError> {
        match self.stream.get_raw_message(sequence).await {
            Ok(message) => Ok(Some(DeadLetter::from_stored(&self.ns, message))),
            Err(e) if is_missing(e.kind()) => Ok(None),
            Err(e) => Err(BusError::stream(
                &self.name,
                format!("reading message {sequence}: {e}"),
            )),
        }
    }

    /// Every dead letter stored now whose original subject matches
    /// `original` (a subject as the contract names it, NATS wildcards
    /// allowed; `None` for all), oldest first. Dead letters stored after
    /// this call are not part of it, so replaying everything a scan yields
    /// ends even when the replays die again.
    pub async fn scan(&self, original: Option<&str>) -> Result<Scan<'_>, BusError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| BusError::stream(&self.name, format!("reading its state: {e}")))?;
        let filter = self
            .ns
            .subject(&dead_letter_subject(original.unwrap_or(">")));
        Ok(Scan {
            letters: self,
            filter,
            next: info.state.first_sequence.max(1),
            last: info.state.last_sequence,
        })
    }

    /// Publishes `letter`'s payload, unchanged, to the subject it came from
    /// (see [`DeadLetter::replay_subject`]) with
    /// [`DeadLetter::replay_msg_id`], and waits until JetStream has stored
    /// it. The dead letter stays; remove it with [`DeadLetters::delete`]
    /// once whatever must accompany the replay (its audit entry) is done.
    pub async fn replay(&self, letter: &DeadLetter) -> Result<Replayed, BusError> {
        let subject = letter.replay_subject(&self.ns)?;
        let mut hdrs = HeaderMap::new();
        hdrs.insert(headers::MSG_ID, letter.replay_msg_id().as_str());
        let ack = self
            .js
            .publish_with_headers(subject.clone(), hdrs, letter.payload.clone())
            .await
            .map_err(|e| BusError::publish(&subject, e))?
            .await
            .map_err(|e| BusError::publish(&subject, format!("not stored: {e}")))?;
        Ok(Replayed {
            subject,
            stream: ack.stream,
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Removes dead letter `sequence`; `false` if it was not there.
    pub async fn delete(&self, sequence: u64) -> Result<bool, BusError> {
        use async_nats::jetstream::stream::DeleteMessageErrorKind;
        match self.stream.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => match e.kind() {
                DeleteMessageErrorKind::JetStream(js_error)
                    if js_error.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
                        || js_error.to_string().contains("no message found") =>
                {
                    Ok(false)
                }
                _ => Err(BusError::stream(
                    &self.name,
                    format!("deleting message {sequence}: {e}"),
                )),
            },
        }
    }
}

fn is_missing(kind: LastRawMessageErrorKind) -> bool {
    match kind {
        LastRawMessageErrorKind::NoMessageFound => true,
        LastRawMessageErrorKind::JetStream(e) => {
            e.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
        }
        LastRawMessageErrorKind::InvalidSubject | LastRawMessageErrorKind::Other => false,
    }
}

/// Dead letters in stream order; see [`DeadLetters::scan`].
pub struct Scan<'a> {
    letters: &'a DeadLetters,
    filter: String,
    next: u64,
    last: u64,
}

impl Scan<'_> {
    /// The next matching dead letter, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, BusError> {
        if self.last == 0 || self.next > self.last {
            return Ok(None);
        }
        let letters = self.letters;
        let found = letters
            .stream
            .raw_message_builder()
            .sequence(self.next)
            .next_by_subject(self.filter.clone())
            .send()
            .await;
        match found {
            Ok(message) if message.sequence <= self.last => {
                self.next = message.sequence + 1;
                Ok(Some(DeadLetter::from_stored(&letters.ns, message)))
            }
            Ok(_) => {
                self.next = self.last + 1;
                Ok(None)
            }
            Err(e) if is_missing(e.kind()) => {
                self.next = self.last + 1;
                Ok(None)
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::InvalidSubject => {
                Err(BusError::DeadLetter {
                    sequence: self.next,
                    problem: format!("{:?} is not a valid subject filter", self.filter),
                })
            }
            Err(e) => Err(BusError::stream(
                &letters.name,
                format!("reading from message {}: {e}", self.next),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(ns: &Namespace, original: &str) -> DeadLetter {
        let subject = ns.subject(&dead_letter_subject(original));
        DeadLetter {
            sequence: 7,
            stored_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            original: ns
                .strip(&subject)
                .and_then(original_of_dead_letter)
                .map(str::to_owned),
            recorded_original: Some(ns.subject(original)),
            deliveries: Some(5),
            reason: None,
            headers: Vec::new(),
            subject,
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn a_replay_goes_back_where_it_came_from_in_its_namespace() {
        let ns = Namespace::prefixed("t1").unwrap();
        let dead = letter(&ns, subjects::MEMBER_JOIN);
        assert_eq!(
            dead.replay_subject(&ns).unwrap(),
            "t1.events.member.join".to_owned()
        );
        let root = letter(&Namespace::root(), subjects::ELIGIBILITY_CHECK);
        assert_eq!(
            root.replay_subject(&Namespace::root()).unwrap(),
            "eligibility.check"
        );
    }

    #[test]
    fn a_dead_letter_that_disagrees_with_itself_or_points_at_the_dead_letters_is_refused() {
        let ns = Namespace::prefixed("t1").unwrap();
        let mut tampered = letter(&ns, subjects::MEMBER_JOIN);
        tampered.recorded_original = Some("t1.commands.interaction".into());
        let e = tampered.replay_subject(&ns).unwrap_err().to_string();
        assert!(
            e.starts_with("dead letter 7:") && e.contains("disagrees"),
            "{e}"
        );

        let nested = letter(&ns, "dead.events.member.join");
        let e = nested.replay_subject(&ns).unwrap_err().to_string();
        assert!(e.contains("DEAD_LETTER"), "{e}");

        let unknown = letter(&ns, "nowhere.at.all");
        assert!(unknown.replay_subject(&ns).is_err());

        let mut foreign = letter(&ns, subjects::MEMBER_JOIN);
        foreign.original = None;
        assert!(foreign.replay_subject(&ns).is_err());
    }

    #[test]
    fn the_replay_id_names_the_dead_letter_not_the_original_message() {
        let ns = Namespace::root();
        let dead = letter(&ns, subjects::MEMBER_JOIN);
        let id = dead.replay_msg_id();
        assert_eq!(id, "dead-letter-replay-7-1700000000000000000");
        assert_eq!(id, dead.clone().replay_msg_id(), "stable across runs");
        let mut again = dead.clone();
        again.sequence = 8;
        assert_ne!(again.replay_msg_id(), id, "dead-lettered again: a new id");
    }
}
