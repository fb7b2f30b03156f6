//! Who may do what on NATS: one user per kind of process, each allowed the
//! subjects its program uses and nothing else. The permissions are derived
//! from the same names the programs use to create and reach their streams,
//! consumers and buckets ([`Namespace`], [`crate::Topology`],
//! [`crate::DurableConsumer`]), so a renamed stream cannot leave a stale
//! permission behind. [`render`] writes them as a nats-server
//! `authorization` block; `gatehouse nats-config` prints it.
//!
//! What the boundary holds (with a configuration for one namespace, as in
//! production):
//!
//! * only the gateway publishes Discord events and interactions, so no other
//!   credential can forge an event for any server;
//! * only the gateway reads and writes its session bucket, so nobody else
//!   can plant a resume URL (the gateway also refuses a resume URL that is
//!   not Discord's or its configured gateway host);
//! * only the workers read the durable consumers, and only theirs; the api
//!   publishes eligibility checks and nothing else;
//! * no process may delete, purge or update a stream, or delete a consumer
//!   or a message: each may only look up and create what it uses (programs
//!   ensure their own topology at start). Changing or removing a stream is
//!   the admin user's act.
//!
//! Every process receives replies (JetStream acknowledgements, API answers,
//! pulled messages) on an inbox of its own (`_INBOX.<process>.…`), so one
//! process cannot read the replies meant for another; none may publish to
//! an inbox, so none can forge a reply.

use std::fmt::Write as _;

use wire::subjects::{self, StreamSpec};

use crate::{Namespace, DISCORD_BUDGET_BUCKET, SESSIONS_BUCKET};

/// The kinds of process that connect to NATS, each with a user of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    /// Publishes Discord events and interactions; keeps shard sessions.
    Gateway,
    /// Consumes events, interactions, eligibility checks and webhook
    /// deliveries; publishes checks, webhook deliveries and dead letters.
    Worker,
    /// The admin API and the admin command-line verbs: publish eligibility
    /// checks.
    Api,
    /// The operator: everything (changing or deleting streams, tests'
    /// setup, reading dead letters). Never given to a long-running process.
    Admin,
}

impl Process {
    pub const ALL: [Process; 4] = [
        Process::Gateway,
        Process::Worker,
        Process::Api,
        Process::Admin,
    ];

    /// Also the user name in the generated configuration.
    pub fn name(self) -> &'static str {
        match self {
            Process::Gateway => "gateway",
            Process::Worker => "worker",
            Process::Api => "api",
            Process::Admin => "admin",
        }
    }

    /// The environment variable the generated configuration reads this
    /// user's password from (on the NATS server's side).
    pub fn password_variable(self) -> &'static str {
        match self {
            Process::Gateway => "GATEHOUSE_NATS_GATEWAY_PASSWORD",
            Process::Worker => "GATEHOUSE_NATS_WORKER_PASSWORD",
            Process::Api => "GATEHOUSE_NATS_API_PASSWORD",
            Process::Admin => "GATEHOUSE_NATS_ADMIN_PASSWORD",
        }
    }

    /// The variable the local stack (`.stack/env`) names this process's
    /// user in; its password is in [`Process::password_variable`].
    pub fn user_variable(self) -> &'static str {
        match self {
            Process::Gateway => "GATEHOUSE_NATS_GATEWAY_USER",
            Process::Worker => "GATEHOUSE_NATS_WORKER_USER",
            Process::Api => "GATEHOUSE_NATS_API_USER",
            Process::Admin => "GATEHOUSE_NATS_ADMIN_USER",
        }
    }

    /// How the connection introduces itself to the server (its monitoring
    /// pages and logs).
    pub fn client_name(self) -> String {
        format!("gatehouse-{}", self.name())
    }

    /// The prefix of this process's reply subjects. The admin user may
    /// subscribe to every inbox; the others only to their own.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX.{}", self.name())
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which namespaces a configuration serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One deployment: exact subjects, stream, consumer and bucket names.
    /// Production is `Scope::One(Namespace::root())`.
    One(Namespace),
    /// The root namespace and every prefixed one, for a server shared by
    /// many runs (the local stack, tests, the demo). Subjects stay exact up
    /// to the namespace token, but JetStream names carry the prefix inside a
    /// single token (`t1_EVENTS`), which NATS wildcards cannot match in part:
    /// they become `*`. The verbs stay exact (no process may delete, purge or
    /// update), but a process may look up and create any stream name and a
    /// worker may create consumers on any stream; use [`Scope::One`] where
    /// the boundary matters.
    Any,
}

impl Scope {
    fn describe(&self) -> String {
        match self {
            Scope::One(ns) => match ns.prefix() {
                None => "the root namespace (production)".to_owned(),
                Some(p) => format!("namespace {p:?}"),
            },
            Scope::Any => "the root namespace and any prefixed one (local stack, tests)".to_owned(),
        }
    }

    /// `subject` (from the contract) as it may appear on the wire.
    fn subjects(&self, subject: &str) -> Vec<String> {
        match self {
            Scope::One(ns) => vec![ns.subject(subject)],
            Scope::Any => vec![subject.to_owned(), format!("*.{subject}")],
        }
    }

    /// A JetStream name (stream, consumer, bucket) in this scope.
    fn name(&self, base: &str) -> String {
        match self {
            Scope::One(ns) => ns.name(base),
            Scope::Any => "*".to_owned(),
        }
    }

    fn stream(&self, spec: &StreamSpec) -> String {
        self.name(spec.name)
    }

    /// The stream behind key-value bucket `bucket` (base name).
    fn bucket_stream(&self, bucket: &str) -> String {
        match self {
            Scope::One(ns) => format!("KV_{}", ns.name(bucket)),
            Scope::Any => "*".to_owned(),
        }
    }
}

/// The streams every worker keeps a durable consumer on (the eligibility
/// stream only when it has a Discord token; allowed either way).
pub const WORKER_STREAMS: [StreamSpec; 4] = [
    subjects::EVENTS,
    subjects::COMMANDS,
    subjects::ELIGIBILITY,
    subjects::WEBHOOKS,
];

/// Key-value buckets the gateways keep (base names, before the namespace).
/// **A bucket a gateway opens must be listed here** (shard leases, say), or
/// the generated configuration refuses it.
pub const GATEWAY_BUCKETS: &[&str] = &[SESSIONS_BUCKET];

/// Key-value buckets the workers keep (base names, before the namespace),
/// such as a Discord budget shared by every worker process. **A bucket a
/// worker opens must be listed here**, or the generated configuration
/// refuses it.
pub const WORKER_BUCKETS: &[&str] = &[DISCORD_BUDGET_BUCKET];

/// What the configuration is generated for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub scope: Scope,
    /// The workers' consumer name (`WORKER_CONSUMER`); its durables are
    /// `<name>_events`, `<name>_commands`, … With [`Scope::Any`] any name.
    pub worker_consumer: String,
}

impl Authorization {
    pub fn new(scope: Scope) -> Self {
        Authorization {
            scope,
            worker_consumer: "worker".to_owned(),
        }
    }
}

/// What one user may publish and subscribe to. A subject matching a deny
/// pattern is refused even when an allow pattern matches it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Permissions {
    fn allow(&mut self, subjects: impl IntoIterator<Item = String>) {
        for subject in subjects {
            if !self.publish.contains(&subject) {
                self.publish.push(subject);
            }
        }
    }
}

const JS_API: &str = "$JS.API";

impl Authorization {
    /// What `process` may do.
    pub fn permissions(&self, process: Process) -> Permissions {
        let scope = &self.scope;
        let mut p = Permissions {
            subscribe: vec![format!("{}.>", process.inbox_prefix())],
            ..Permissions::default()
        };
        match process {
            Process::Admin => {
                return Permissions {
                    publish: vec![">".into()],
                    publish_deny: Vec::new(),
                    subscribe: vec![">".into()],
                }
            }
            Process::Gateway => {
                p.allow(scope.subjects("events.>"));
                p.allow(scope.subjects(subjects::INTERACTION));
                // Programs ensure their topology at start: look up, create
                // if missing. Never update or delete.
                for spec in subjects::ALL_STREAMS {
                    p.allow(ensure_stream(&scope.stream(&spec)));
                }
                for bucket in GATEWAY_BUCKETS {
                    p.allow(use_bucket(scope, bucket));
                }
            }
            Process::Worker => {
                p.allow(scope.subjects(subjects::ELIGIBILITY_CHECK));
                p.allow(scope.subjects(subjects::WEBHOOK_DELIVER));
                p.allow(scope.subjects(&format!("{}.>", subjects::DEAD_LETTER_PREFIX)));
                for spec in subjects::ALL_STREAMS {
                    p.allow(ensure_stream(&scope.stream(&spec)));
                }
                for spec in WORKER_STREAMS {
                    let stream = scope.stream(&spec);
                    let durable = match scope {
                        Scope::One(ns) => crate::DurableConsumer::durable_name_for(
                            ns,
                            &self.worker_consumer,
                            &spec,
                        ),
                        Scope::Any => "*".to_owned(),
                    };
                    p.allow([
                        format!("{JS_API}.CONSUMER.INFO.{stream}.{durable}"),
                        format!("{JS_API}.CONSUMER.CREATE.{stream}.{durable}"),
                        format!("{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}"),
                        // Acks, NAKs and terms go to the delivered message's
                        // reply subject.
                        format!("$JS.ACK.{stream}.{durable}.>"),
                    ]);
                }
                for bucket in WORKER_BUCKETS {
                    p.allow(use_bucket(scope, bucket));
                }
            }
            Process::Api => {
                p.allow(scope.subjects(subjects::ELIGIBILITY_CHECK));
            }
        }
        if *scope == Scope::Any {
            p.publish_deny = root_denials(&p.publish);
        }
        p
    }
}

/// Looking up and creating one stream.
fn ensure_stream(stream: &str) -> [String; 2] {
    [
        format!("{JS_API}.STREAM.INFO.{stream}"),
        format!("{JS_API}.STREAM.CREATE.{stream}"),
    ]
}

/// Creating, reading and writing one key-value bucket (a put or a delete is
/// a publish on the key's subject).
fn use_bucket(scope: &Scope, bucket: &str) -> Vec<String> {
    let stream = scope.bucket_stream(bucket);
    let mut out = ensure_stream(&stream).to_vec();
    out.extend([
        format!("$KV.{}.>", scope.name(bucket)),
        // A read: direct get where the bucket allows it, else a message get.
        format!("{JS_API}.DIRECT.GET.{stream}"),
        format!("{JS_API}.DIRECT.GET.{stream}.>"),
        format!("{JS_API}.STREAM.MSG.GET.{stream}"),
    ]);
    out
}

/// With [`Scope::Any`], `*.events.>` also matches `dead.events.…`, a root
/// subject: the first token is a namespace or a contract subject. Every
/// contract first token (`events`, `commands`, …) under which a process may
/// publish nothing at the root is denied, so a wildcard meant for prefixed
/// namespaces never reaches a root stream it has no business in. Namespaces
/// cannot be named after those tokens ([`Namespace::prefixed`]).
fn root_denials(allowed: &[String]) -> Vec<String> {
    contract_first_tokens()
        .into_iter()
        .filter(|token| !allowed.iter().any(|a| a.split('.').next() == Some(*token)))
        .map(|token| format!("{token}.>"))
        .collect()
}

/// The first tokens of every contract subject: `events`, `commands`, …
pub(crate) fn contract_first_tokens() -> Vec<&'static str> {
    let mut tokens = Vec::new();
    for spec in subjects::ALL_STREAMS {
        for subject in spec.subjects {
            if let Some(first) = subject.split('.').next() {
                if !tokens.contains(&first) {
                    tokens.push(first);
                }
            }
        }
    }
    tokens
}

/// The nats-server configuration block with one user per [`Process`],
/// each user's password read from the server's environment
/// ([`Process::password_variable`]). Include it from the server's
/// configuration (`include ./gatehouse-authorization.conf`).
pub fn render(authorization: &Authorization) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Gatehouse's NATS users and what each may do, for {}.",
        authorization.scope.describe()
    );
    let _ = writeln!(
        out,
        "# Generated by `gatehouse nats-config{}`; regenerate it rather than edit it.",
        command_flags(authorization)
    );
    out.push_str(
        "#\n\
         # Each password is read from the NATS server's environment when it starts\n\
         # (nats-server refuses to start when one is missing). A value may be a bcrypt\n\
         # hash (`nats server passwd`) instead of the password itself.\n\
         # There is no anonymous user: a connection without credentials is refused.\n",
    );
    out.push_str("authorization {\n  users = [\n");
    for process in Process::ALL {
        let p = authorization.permissions(process);
        let _ = writeln!(out, "    # {}", purpose(process));
        out.push_str("    {\n");
        let _ = writeln!(out, "      user: {}", quote(process.name()));
        let _ = writeln!(out, "      password: ${}", process.password_variable());
        out.push_str("      permissions: {\n        publish: {\n");
        list(&mut out, "allow", &p.publish);
        if !p.publish_deny.is_empty() {
            list(&mut out, "deny", &p.publish_deny);
        }
        out.push_str("        }\n        subscribe: {\n");
        list(&mut out, "allow", &p.subscribe);
        out.push_str("        }\n      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

fn command_flags(authorization: &Authorization) -> String {
    let mut flags = String::new();
    match &authorization.scope {
        Scope::One(ns) => {
            if let Some(p) = ns.prefix() {
                let _ = write!(flags, " --namespace {p}");
            }
        }
        Scope::Any => flags.push_str(" --any-namespace"),
    }
    if authorization.worker_consumer != "worker" && authorization.scope != Scope::Any {
        let _ = write!(
            flags,
            " --worker-consumer {}",
            authorization.worker_consumer
        );
    }
    flags
}

fn purpose(process: Process) -> &'static str {
    match process {
        Process::Gateway => {
            "gateway: publishes Discord events and interactions, keeps shard sessions in its bucket"
        }
        Process::Worker => {
            "worker: reads its durable consumers; publishes eligibility checks, webhook deliveries, dead letters"
        }
        Process::Api => "api (and the admin command-line verbs): publishes eligibility checks",
        Process::Admin => "admin: the operator and test setup; everything. Never a long-running process",
    }
}

fn list(out: &mut String, key: &str, subjects: &[String]) {
    let _ = writeln!(out, "          {key}: [");
    for subject in subjects {
        let _ = writeln!(out, "            {}", quote(subject));
    }
    out.push_str("          ]\n");
}

/// A double-quoted configuration string: a quoted `$…` is a literal, not a
/// variable, and `>` needs no escaping inside quotes.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::subjects::subject_matches;

    fn may_publish(p: &Permissions, subject: &str) -> bool {
        p.publish.iter().any(|a| subject_matches(a, subject))
            && !p.publish_deny.iter().any(|d| subject_matches(d, subject))
    }

    fn root() -> Authorization {
        Authorization::new(Scope::One(Namespace::root()))
    }

    #[test]
    fn only_the_gateway_publishes_events_and_interactions() {
        for auth in [
            root(),
            Authorization::new(Scope::One(Namespace::prefixed("t1").unwrap())),
            Authorization::new(Scope::Any),
        ] {
            let prefix = match &auth.scope {
                Scope::One(ns) => ns.subject(""),
                Scope::Any => "t9.".to_owned(),
            };
            for process in [Process::Worker, Process::Api] {
                let p = auth.permissions(process);
                for subject in [subjects::MEMBER_JOIN, subjects::INTERACTION] {
                    assert!(
                        !may_publish(&p, &format!("{prefix}{subject}")),
                        "{process} {subject}"
                    );
                    assert!(!may_publish(&p, subject), "{process} {subject}");
                }
            }
            let gateway = auth.permissions(Process::Gateway);
            assert!(may_publish(
                &gateway,
                &format!("{prefix}{}", subjects::MEMBER_JOIN)
            ));
            assert!(!may_publish(
                &gateway,
                &format!("{prefix}{}", subjects::ELIGIBILITY_CHECK)
            ));
        }
    }

    #[test]
    fn a_wildcard_for_namespaces_never_reaches_a_root_stream_it_has_no_business_in() {
        let any = Authorization::new(Scope::Any);
        let worker = any.permissions(Process::Worker);
        // `*.dead.>` would otherwise match this root event subject.
        assert!(!may_publish(&worker, "events.dead.member.join"));
        assert!(!may_publish(&worker, "commands.dead.x"));
        assert!(may_publish(&worker, "dead.events.member.join"));
        assert!(may_publish(&worker, "t1.dead.events.member.join"));
        let gateway = any.permissions(Process::Gateway);
        assert!(!may_publish(&gateway, "dead.events.member.join"));
        assert!(!may_publish(&gateway, "eligibility.events.x"));
        assert!(may_publish(&gateway, "events.member.join"));
        assert!(may_publish(&gateway, "t1.events.member.join"));
    }

    #[test]
    fn nobody_but_the_admin_deletes_purges_or_updates() {
        for auth in [root(), Authorization::new(Scope::Any)] {
            for process in [Process::Gateway, Process::Worker, Process::Api] {
                let p = auth.permissions(process);
                for verb in [
                    "$JS.API.STREAM.DELETE.EVENTS",
                    "$JS.API.STREAM.PURGE.EVENTS",
                    "$JS.API.STREAM.UPDATE.EVENTS",
                    "$JS.API.STREAM.MSG.DELETE.EVENTS",
                    "$JS.API.CONSUMER.DELETE.EVENTS.worker_events",
                    "_INBOX.gateway.x",
                ] {
                    assert!(!may_publish(&p, verb), "{process} {verb}");
                }
            }
        }
    }

    #[test]
    fn the_session_bucket_is_the_gateways_alone() {
        let auth = root();
        let bucket = format!("$KV.{SESSIONS_BUCKET}.shard.1.0");
        assert!(may_publish(&auth.permissions(Process::Gateway), &bucket));
        for process in [Process::Worker, Process::Api] {
            let p = auth.permissions(process);
            assert!(!may_publish(&p, &bucket), "{process}");
            assert!(!may_publish(&p, "$JS.API.DIRECT.GET.KV_GATEWAY_SESSIONS"));
        }
    }

    #[test]
    fn only_the_workers_read_their_consumers() {
        let auth = Authorization {
            worker_consumer: "w".into(),
            ..Authorization::new(Scope::One(Namespace::prefixed("t1").unwrap()))
        };
        let worker = auth.permissions(Process::Worker);
        assert!(may_publish(
            &worker,
            "$JS.API.CONSUMER.MSG.NEXT.t1_EVENTS.t1_w_events"
        ));
        assert!(may_publish(
            &worker,
            "$JS.ACK.t1_EVENTS.t1_w_events.1.2.3.4.5"
        ));
        assert!(!may_publish(
            &worker,
            "$JS.API.CONSUMER.MSG.NEXT.t1_EVENTS.other_events"
        ));
        assert!(!may_publish(
            &worker,
            "$JS.API.CONSUMER.CREATE.t1_DEAD_LETTER.t1_w_dead_letter"
        ));
        for process in [Process::Gateway, Process::Api] {
            let p = auth.permissions(process);
            assert!(
                !p.publish
                    .iter()
                    .any(|s| s.contains("CONSUMER") || s.starts_with("$JS.ACK")),
                "{process}: {:?}",
                p.publish
            );
        }
    }

    #[test]
    fn each_process_hears_only_its_own_replies() {
        let auth = Authorization::new(Scope::Any);
        for process in [Process::Gateway, Process::Worker, Process::Api] {
            let p = auth.permissions(process);
            assert_eq!(p.subscribe, [format!("_INBOX.{}.>", process.name())]);
        }
        assert_eq!(auth.permissions(Process::Admin).subscribe, [">"]);
    }

    #[test]
    fn the_rendering_names_every_user_and_reads_passwords_from_the_environment() {
        let text = render(&root());
        for process in Process::ALL {
            assert!(text.contains(&format!("user: \"{}\"", process.name())));
            assert!(text.contains(&format!("password: ${}\n", process.password_variable())));
        }
        assert!(text.contains("\"$JS.API.STREAM.CREATE.EVENTS\""));
        assert!(!text.contains("no_auth_user"));
        assert!(render(&Authorization::new(Scope::Any)).contains("--any-namespace"));
    }
}
