//! NATS subjects and JetStream streams.
//!
//! Every envelope type maps to exactly one subject; streams capture subjects by
//! their first token, so a new type under `events.` needs no stream change.

/// `events.guild.join`: the bot was added to a guild, or a guild it is in was
/// delivered at identify (Discord does not tell the two apart).
pub const GUILD_JOIN: &str = "events.guild.join";
/// `events.guild.leave`: the bot was removed from a guild.
pub const GUILD_LEAVE: &str = "events.guild.leave";
/// `events.guild.unavailable`: a Discord outage hid a guild; not a leave.
pub const GUILD_UNAVAILABLE: &str = "events.guild.unavailable";
pub const MEMBER_JOIN: &str = "events.member.join";
pub const MEMBER_LEAVE: &str = "events.member.leave";
pub const MEMBER_UPDATE: &str = "events.member.update";
/// `events.member.chunk`: a piece of a guild's member list (first sync).
pub const MEMBER_CHUNK: &str = "events.member.chunk";
/// `commands.interaction`: slash commands and other interactions, in their own
/// stream so that an event storm cannot delay a reply due within 3 seconds.
pub const INTERACTION: &str = "commands.interaction";
/// `eligibility.check`: a request to re-evaluate a member's eligibility.
pub const ELIGIBILITY_CHECK: &str = "eligibility.check";
/// `webhooks.deliver`: one webhook delivery to attempt. The message names
/// the delivery only (community and delivery id); the URL and the secret
/// stay in the database, so nothing read from NATS chooses where a request
/// goes or what signs it.
pub const WEBHOOK_DELIVER: &str = "webhooks.deliver";

/// Prefix of dead-letter subjects; see [`dead_letter_subject`].
pub const DEAD_LETTER_PREFIX: &str = "dead";

/// Where a message goes once a consumer gives up on it: the original subject
/// under `dead.`, e.g. `events.member.join` → `dead.events.member.join`.
///
/// Keeping the original subject as the suffix lets an operator replay a dead
/// letter by stripping one token, and lets the DEAD_LETTER stream filter by
/// origin. The message body is the original bytes, unchanged; the headers in
/// [`headers`] say why it died.
pub fn dead_letter_subject(original: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}.{original}")
}

/// The original subject of a dead letter, or `None` if `subject` is not one.
pub fn original_of_dead_letter(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(DEAD_LETTER_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|rest| !rest.is_empty())
}

/// NATS header names used with the envelope.
pub mod headers {
    /// JetStream's dedupe header; always the envelope id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// On a dead letter: the subject it was first published on.
    pub const DEAD_LETTER_ORIGINAL_SUBJECT: &str = "Gatehouse-Original-Subject";
    /// On a dead letter: how many deliveries were attempted.
    pub const DEAD_LETTER_DELIVERIES: &str = "Gatehouse-Deliveries";
    /// On a dead letter: the last handler error, one line.
    pub const DEAD_LETTER_REASON: &str = "Gatehouse-Reason";
}

/// A JetStream stream the programs create at start (idempotently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
}

pub const EVENTS: StreamSpec = StreamSpec {
    name: "EVENTS",
    subjects: &["events.>"],
};
pub const COMMANDS: StreamSpec = StreamSpec {
    name: "COMMANDS",
    subjects: &["commands.>"],
};
pub const ELIGIBILITY: StreamSpec = StreamSpec {
    name: "ELIGIBILITY",
    subjects: &["eligibility.>"],
};
pub const WEBHOOKS: StreamSpec = StreamSpec {
    name: "WEBHOOKS",
    subjects: &["webhooks.>"],
};
pub const DEAD_LETTER: StreamSpec = StreamSpec {
    name: "DEAD_LETTER",
    subjects: &["dead.>"],
};

/// Every stream, in the order they should be ensured.
pub const ALL_STREAMS: [StreamSpec; 5] = [EVENTS, COMMANDS, ELIGIBILITY, WEBHOOKS, DEAD_LETTER];

/// Does `pattern` (NATS wildcards `*` and a trailing `>`) match `subject`?
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut subject_tokens = subject.split('.');
    loop {
        match (pattern_tokens.next(), subject_tokens.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The stream that captures `subject`, if any.
pub fn stream_for(subject: &str) -> Option<StreamSpec> {
    ALL_STREAMS.into_iter().find(|stream| {
        stream
            .subjects
            .iter()
            .any(|pattern| subject_matches(pattern, subject))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_lands_in_exactly_one_stream() {
        let cases = [
            (GUILD_JOIN, "EVENTS"),
            (GUILD_LEAVE, "EVENTS"),
            (GUILD_UNAVAILABLE, "EVENTS"),
            (MEMBER_JOIN, "EVENTS"),
            (MEMBER_LEAVE, "EVENTS"),
            (MEMBER_UPDATE, "EVENTS"),
            (INTERACTION, "COMMANDS"),
            (ELIGIBILITY_CHECK, "ELIGIBILITY"),
            (WEBHOOK_DELIVER, "WEBHOOKS"),
        ];
        for (subject, stream) in cases {
            let owners: Vec<_> = ALL_STREAMS
                .iter()
                .filter(|s| s.subjects.iter().any(|p| subject_matches(p, subject)))
                .map(|s| s.name)
                .collect();
            assert_eq!(owners, vec![stream], "{subject}");
        }
    }

    #[test]
    fn dead_letters_leave_their_origin_stream() {
        let dead = dead_letter_subject(MEMBER_JOIN);
        assert_eq!(dead, "dead.events.member.join");
        assert_eq!(stream_for(&dead).map(|s| s.name), Some("DEAD_LETTER"));
        assert_eq!(original_of_dead_letter(&dead), Some(MEMBER_JOIN));
        assert_eq!(original_of_dead_letter("deadbeef.x"), None);
        assert_eq!(original_of_dead_letter("dead."), None);
        assert_eq!(original_of_dead_letter(MEMBER_JOIN), None);
    }

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(subject_matches("events.>", "events.member.join"));
        assert!(!subject_matches("events.>", "events"));
        assert!(subject_matches("events.*.join", "events.guild.join"));
        assert!(!subject_matches("events.*", "events.guild.join"));
        assert!(!subject_matches("events.guild", "events.guild.join"));
    }
}
