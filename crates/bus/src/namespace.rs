//! Prefixing subjects and stream names, so that several deployments (or
//! parallel test runs) can share one NATS server without seeing each other's
//! messages.

use wire::subjects::StreamSpec;

/// Where one deployment's subjects and streams live. Production uses the
/// root namespace (the names in [`wire::subjects`] as they are); a prefix
/// `t1` turns `events.member.join` into `t1.events.member.join` and stream
/// `EVENTS` into `t1_EVENTS`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Namespace {
    prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NATS namespace {0:?}: use 1-32 characters from A-Z, a-z, 0-9, '_' and '-', and not a subject's first token (events, commands, eligibility, webhooks, dead)")]
pub struct NamespaceError(String);

impl Namespace {
    /// The production namespace: no prefix.
    pub fn root() -> Self {
        Namespace { prefix: None }
    }

    /// A prefixed namespace. The prefix becomes a subject token and part of
    /// stream names, so it is limited to characters valid in both. It may
    /// not be the first token of a contract subject (`events`, `dead`, …):
    /// `dead.events.member.join` must mean a root dead letter, never an
    /// event of namespace `dead`, or NATS permissions written for every
    /// namespace could not tell them apart.
    pub fn prefixed(prefix: &str) -> Result<Self, NamespaceError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !crate::authorization::contract_first_tokens().contains(&prefix);
        if valid {
            Ok(Namespace {
                prefix: Some(prefix.to_owned()),
            })
        } else {
            Err(NamespaceError(prefix.chars().take(40).collect()))
        }
    }

    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The subject as published in this namespace.
    pub fn subject(&self, subject: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}.{subject}"),
            None => subject.to_owned(),
        }
    }

    /// The subject as the contract names it, if `subject` is in this namespace.
    pub fn strip<'a>(&self, subject: &'a str) -> Option<&'a str> {
        match &self.prefix {
            Some(p) => subject.strip_prefix(p.as_str())?.strip_prefix('.'),
            None => Some(subject),
        }
    }

    pub fn stream_name(&self, spec: &StreamSpec) -> String {
        self.name(spec.name)
    }

    pub fn stream_subjects(&self, spec: &StreamSpec) -> Vec<String> {
        spec.subjects.iter().map(|s| self.subject(s)).collect()
    }

    /// Any other JetStream name (consumer, key-value bucket) in this namespace.
    pub fn name(&self, name: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}_{name}"),
            None => name.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::subjects::{EVENTS, MEMBER_JOIN};

    #[test]
    fn the_root_namespace_changes_nothing() {
        let ns = Namespace::root();
        assert_eq!(ns.subject(MEMBER_JOIN), MEMBER_JOIN);
        assert_eq!(ns.stream_name(&EVENTS), "EVENTS");
        assert_eq!(ns.strip(MEMBER_JOIN), Some(MEMBER_JOIN));
    }

    #[test]
    fn a_prefix_applies_to_subjects_streams_and_names() {
        let ns = Namespace::prefixed("t42").unwrap();
        assert_eq!(ns.subject(MEMBER_JOIN), "t42.events.member.join");
        assert_eq!(ns.stream_subjects(&EVENTS), vec!["t42.events.>"]);
        assert_eq!(ns.stream_name(&EVENTS), "t42_EVENTS");
        assert_eq!(ns.name("gateway_sessions"), "t42_gateway_sessions");
        assert_eq!(ns.strip("t42.events.member.join"), Some(MEMBER_JOIN));
        assert_eq!(ns.strip("t4.events.member.join"), None);
    }

    #[test]
    fn prefixes_that_would_break_subjects_are_refused() {
        for bad in [
            "",
            "a.b",
            "a b",
            "*",
            ">",
            &"x".repeat(33),
            "events",
            "dead",
        ] {
            assert!(Namespace::prefixed(bad).is_err(), "{bad:?}");
        }
    }
}
