//! `gatehouse dead-letters …`: an operator's view of the messages workers
//! gave up on (the DEAD_LETTER stream): list them, show one, put them back
//! on the subject they came from, or delete them.
//!
//! Reading, replaying and deleting are `bus::DeadLetters`; decoding and
//! redacting a payload are `wire::message`; the audit rule around a replay
//! is `domain::dead_letters`. This is the command line and the display.

use std::process::ExitCode;

use anyhow::Context;
use async_nats::jetstream;
use bus::{DeadLetter, DeadLetters, Process};
use chrono::{DateTime, SecondsFormat, Utc};
use domain::dead_letters::{replay_audited, ReplayError, ReplayRecord};
use domain::{community, Actor, LookupError};
use store::TenantId;
use tokio::sync::watch;
use uuid::Uuid;
use wire::message::{redact_json, redact_text, Message, REDACTED};
use wire::GuildId;

use crate::db_args::DbArgs;
use crate::nats_args::NatsArgs;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, oldest first, without consuming or changing them:
    /// sequence, when stored, original subject, guild, deliveries, reason
    /// and the start of the payload (secrets redacted). Runs as the NATS
    /// admin user.
    List(ListArgs),
    /// Show one dead letter: every header and the payload pretty-printed,
    /// with secrets (the interaction token) redacted.
    Show(ShowArgs),
    /// Put dead letters back on the subject they came from, payload and
    /// message id unchanged (the workers' exactly-once claim still holds),
    /// audit each in its community's log, then delete the dead letter.
    /// Needs the NATS admin user and the database (DATABASE_URL).
    Replay(ReplayArgs),
    /// Delete dead letters for good (asks for --yes). Nothing is replayed
    /// or audited; each deletion is logged.
    Drop(DropArgs),
}

/// Which dead letters, for `list` and for `--all-matching`. Every filter
/// given must match.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// Only those from this original subject, as the contract names it
    /// (no namespace; NATS wildcards allowed), e.g. events.member.join,
    /// events.> or eligibility.check.
    #[arg(long, value_name = "SUBJECT")]
    pub subject: Option<String>,

    /// Only those whose reason contains this text (ignoring case).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Only messages about this Discord guild (events, interactions and
    /// eligibility checks; webhook deliveries name a --community instead).
    #[arg(long, value_name = "GUILD_ID")]
    pub guild: Option<GuildId>,

    /// Only webhook deliveries of this community (its UUID, as in the
    /// delivery's payload).
    #[arg(long, value_name = "UUID")]
    pub community: Option<Uuid>,

    /// Only those stored at or after this time: RFC 3339
    /// (2026-01-02T15:04:05Z) or a duration ago (30m, 1h, 2d).
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<DateTime<Utc>>,

    /// Only those stored before this time: RFC 3339 or a duration ago.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<DateTime<Utc>>,
}

impl Filters {
    fn any(&self) -> bool {
        self.subject.is_some()
            || self.reason.is_some()
            || self.guild.is_some()
            || self.community.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    fn matches(&self, letter: &Shown) -> bool {
        let stored = letter.stored_at();
        let reason_ok = self.reason.as_deref().is_none_or(|wanted| {
            letter
                .reason
                .as_deref()
                .is_some_and(|r| r.to_lowercase().contains(&wanted.to_lowercase()))
        });
        let message = letter.message.as_ref();
        reason_ok
            && self
                .guild
                .is_none_or(|g| message.and_then(Message::guild_id) == Some(g))
            && self
                .community
                .is_none_or(|c| message.and_then(Message::community) == Some(c))
            && self.since.is_none_or(|since| stored >= since)
            && self.until.is_none_or(|until| stored < until)
    }
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filters: Filters,

    /// Show at most N, the oldest first; a last line says how many more
    /// match.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,

    /// One JSON array on stdout instead of the table (payloads redacted).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The dead letter's sequence number (the first column of `list`).
    #[arg(value_name = "SEQ")]
    pub sequence: u64,

    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Dead letters named one by one, or chosen by filters.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["sequences", "all_matching"])))]
pub struct Selection {
    /// The dead letters' sequence numbers (the first column of `list`).
    #[arg(value_name = "SEQ")]
    pub sequences: Vec<u64>,

    /// Every dead letter the filters match (all of them without filters),
    /// instead of sequence numbers. Dead letters stored while this runs
    /// are left for the next run.
    #[arg(long, conflicts_with = "sequences")]
    pub all_matching: bool,

    #[command(flatten)]
    pub filters: Filters,

    /// With --all-matching: at most N, the oldest first (what `list
    /// --limit N` shows).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Who replays, for the audit log and the log line.
    #[arg(long, value_name = "NAME", default_value = "operator")]
    pub by: String,

    #[command(flatten)]
    pub nats: NatsArgs,

    // Every replay into a community is audited in its log: the runtime
    // database is required (not for --dry-run).
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, clap::Args)]
pub struct DropArgs {
    #[command(flatten)]
    pub selection: Selection,

    /// Really delete: a dropped message is gone for good.
    #[arg(long)]
    pub yes: bool,

    /// Who drops them, for the log line.
    #[arg(long, value_name = "NAME", default_value = "operator")]
    pub by: String,

    #[command(flatten)]
    pub nats: NatsArgs,
}

pub async fn run(command: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeadLettersCommand::List(args) => list(args).await,
        DeadLettersCommand::Show(args) => show(args).await,
        DeadLettersCommand::Replay(args) => replay(args).await,
        DeadLettersCommand::Drop(args) => drop_letters(args).await,
    }
}

/// `--since`/`--until`: an RFC 3339 time, or a duration before now.
fn parse_when(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = settings::parse_duration(text)
        .map_err(|e| format!("{e}, or an RFC 3339 time like 2026-01-02T15:04:05Z"))?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| format!("{text:?} reaches too far into the past"))
}

/// The DEAD_LETTER stream, reached as the admin user, with what the server
/// refused on this connection.
struct Session {
    letters: DeadLetters,
    refused: watch::Receiver<Option<String>>,
    /// The NATS user, for log lines and refusals.
    user: Option<String>,
}

impl Session {
    async fn open(nats: &NatsArgs) -> anyhow::Result<Session> {
        let settings = nats.settings()?;
        let ns = nats.namespace()?;
        // A user without the admin's rights is not refused at login but
        // request by request, and the refusal arrives as a server error
        // while the request waits for a reply that never comes: listen for
        // it, so the command says why at once instead of timing out.
        let (tx, refused) = watch::channel(None);
        let options = settings
            .options(Process::Admin)
            .event_callback(move |event| {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = &event
                {
                    if text.contains("Permissions Violation") {
                        tx.send_replace(Some(text.clone()));
                    }
                }
                async {}
            });
        let client = settings
            .connect_with(options)
            .await
            .context("is NATS running with JetStream? `scripts/stack up` starts one")?;
        let user = nats.login.nats_user.clone();
        let js = jetstream::new(client);
        let letters = guarded(&refused, user.as_deref(), DeadLetters::open(&js, &ns)).await?;
        Ok(Session {
            letters,
            refused,
            user,
        })
    }

    /// `work`, or the server's refusal if one arrives first.
    async fn guard<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, bus::BusError>>,
    ) -> anyhow::Result<T> {
        guarded(&self.refused, self.user.as_deref(), work).await
    }
}

async fn guarded<T>(
    refused: &watch::Receiver<Option<String>>,
    user: Option<&str>,
    work: impl std::future::Future<Output = Result<T, bus::BusError>>,
) -> anyhow::Result<T> {
    let mut refused = refused.clone();
    tokio::select! {
        done = work => done.map_err(anyhow::Error::new),
        Ok(text) = refused.wait_for(Option::is_some) => Err(refusal(text.as_deref(), user)),
    }
}

fn refusal(server_said: Option<&str>, user: Option<&str>) -> anyhow::Error {
    anyhow::anyhow!(
        "NATS refused user {}: {}; the dead-letter verbs need the admin user \
         (with the local stack: NATS_USER=${} NATS_PASSWORD=${})",
        user.unwrap_or("(none)"),
        server_said.unwrap_or("permissions violation").trim(),
        Process::Admin.user_variable(),
        Process::Admin.password_variable(),
    )
}

/// A dead letter made fit to show: decoded where possible, secrets
/// redacted from the payload, the reason and every header.
struct Shown {
    letter: DeadLetter,
    message: Option<Message>,
    /// Why the payload is not the message its subject carries.
    undecodable: Option<String>,
    /// The payload as JSON with secrets redacted, or as redacted text.
    payload: Payload,
    /// The payload's text as stored (its own field order), secrets
    /// redacted: what `list` shows the start of.
    preview: String,
    reason: Option<String>,
    headers: Vec<(String, String)>,
}

enum Payload {
    Json(serde_json::Value),
    Text(String),
}

impl Shown {
    fn new(letter: DeadLetter) -> Shown {
        let (text, mut secrets) = redact_text(&String::from_utf8_lossy(&letter.payload));
        let payload = match serde_json::from_slice::<serde_json::Value>(&letter.payload) {
            Ok(mut value) => {
                secrets.extend(redact_json(&mut value));
                Payload::Json(value)
            }
            Err(_) => Payload::Text(text.clone()),
        };
        // A secret from the payload may be quoted elsewhere: an error
        // message with the URL the token was part of.
        let mask = |text: &str| {
            secrets
                .iter()
                .filter(|s| s.len() >= 8)
                .fold(text.to_owned(), |text, secret| {
                    text.replace(secret.as_str(), REDACTED)
                })
        };
        let (message, undecodable) = match letter.original.as_deref() {
            Some(original) => match Message::decode(original, &letter.payload) {
                Ok(message) => (Some(message), None),
                Err(e) => (None, Some(mask(&e.to_string()))),
            },
            None => (None, Some("not a dead-letter subject".to_owned())),
        };
        Shown {
            preview: mask(&text),
            reason: letter.reason.as_deref().map(mask),
            headers: letter
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), mask(value)))
                .collect(),
            message,
            undecodable,
            payload,
            letter,
        }
    }

    fn stored_at(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.letter.stored_at)
    }

    fn stored(&self) -> String {
        self.stored_at().to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn original(&self) -> &str {
        self.letter
            .original
            .as_deref()
            .unwrap_or(&self.letter.subject)
    }

    /// The guild, or for a webhook delivery the community, or `-`.
    /// Whom the message is about: its guild, or for a webhook delivery
    /// its community.
    fn about(&self) -> Option<(&'static str, String)> {
        let message = self.message.as_ref()?;
        match (message.guild_id(), message.community()) {
            (Some(guild), _) => Some(("guild", guild.to_string())),
            (None, Some(community)) => Some(("community", community.to_string())),
            (None, None) => None,
        }
    }

    /// [`Shown::about`] for the table's guild column.
    fn owner(&self) -> String {
        self.about().map_or_else(|| "-".to_owned(), |(_, id)| id)
    }

    /// [`Shown::about`] for sentences.
    fn owner_named(&self) -> String {
        self.about().map_or_else(
            || "no guild".to_owned(),
            |(what, id)| format!("{what} {id}"),
        )
    }

    fn kind(&self) -> &str {
        self.message.as_ref().map_or("undecodable", Message::kind)
    }

    fn json(&self) -> serde_json::Value {
        let (payload, payload_text) = match &self.payload {
            Payload::Json(value) => (value.clone(), None),
            Payload::Text(text) => (serde_json::Value::Null, Some(text.clone())),
        };
        serde_json::json!({
            "sequence": self.letter.sequence,
            "stored_at": self.stored(),
            "subject": self.letter.subject,
            "original_subject": self.letter.original,
            "kind": self.message.as_ref().map(Message::kind),
            "guild_id": self.message.as_ref().and_then(Message::guild_id).map(|g| g.to_string()),
            "community": self.message.as_ref().and_then(Message::community),
            "message_id": self.message.as_ref().map(Message::id),
            "deliveries": self.letter.deliveries,
            "reason": self.reason,
            "undecodable": self.undecodable,
            "payload": payload,
            "payload_text": payload_text,
        })
    }
}

/// At most `max` characters of `text` on one line, `…` when cut.
fn clip(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

fn print_table(letters: &[Shown]) {
    // Guild ids fit in 20 characters; a webhook delivery's community id
    // (a UUID) widens the column rather than being cut.
    let owner_width = letters
        .iter()
        .map(|l| l.owner().len())
        .max()
        .unwrap_or(0)
        .max(20);
    println!(
        "{:>6}  {:<20}  {:<26}  {:<owner_width$}  {:>5}  {:<40}  payload",
        "seq", "stored", "subject", "guild", "tries", "reason"
    );
    for l in letters {
        println!(
            "{:>6}  {:<20}  {:<26}  {:<owner_width$}  {:>5}  {:<40}  {}",
            l.letter.sequence,
            l.stored(),
            clip(l.original(), 26),
            l.owner(),
            l.letter
                .deliveries
                .map_or_else(|| "-".to_owned(), |d| d.to_string()),
            clip(l.reason.as_deref().unwrap_or("-"), 40),
            clip(&l.preview, 60),
        );
    }
}

/// Every dead letter `filters` match, oldest first, up to `limit`; and how
/// many more matched beyond it.
async fn matching(
    session: &Session,
    filters: &Filters,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<Shown>, usize)> {
    let mut scan = session
        .guard(session.letters.scan(filters.subject.as_deref()))
        .await?;
    let mut shown = Vec::new();
    let mut more = 0;
    while let Some(letter) = session.guard(scan.next()).await? {
        let letter = Shown::new(letter);
        if !filters.matches(&letter) {
            continue;
        }
        if limit.is_some_and(|limit| shown.len() >= limit) {
            more += 1;
        } else {
            shown.push(letter);
        }
    }
    Ok((shown, more))
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(&args.nats).await?;
    let (shown, more) = matching(&session, &args.filters, Some(args.limit)).await?;
    if args.json {
        let all: Vec<_> = shown.iter().map(Shown::json).collect();
        println!("{}", serde_json::to_string_pretty(&all)?);
        if more > 0 {
            eprintln!("{more} more match; raise --limit or narrow the filters");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
        println!(
            "no dead letters{} in {}",
            if args.filters.any() { " match" } else { "" },
            session.letters.stream_name()
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&shown);
    if more > 0 {
        println!("… {more} more match; raise --limit or narrow the filters");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(&args.nats).await?;
    let letters_stream = session.letters.stream_name().to_owned();
    let found = session.guard(session.letters.get(args.sequence)).await?;
    let Some(letter) = found else {
        anyhow::bail!(
            "no dead letter {} in {letters_stream}: replayed, dropped or aged out (see `gatehouse dead-letters list`)",
            args.sequence
        );
    };
    let l = Shown::new(letter);
    let ns = session.letters.namespace();
    println!("dead letter {} in {letters_stream}", l.letter.sequence);
    println!("  stored      {}", l.stored());
    println!("  subject     {}", l.letter.subject);
    match l.letter.replay_subject(ns) {
        Ok(target) => println!("  replays to  {target}"),
        Err(e) => println!("  replays to  nowhere: {e}"),
    }
    println!("  kind        {}", l.kind());
    println!("  about       {}", l.owner_named());
    if let Some(m) = &l.message {
        println!("  message id  {}", m.id());
    }
    println!(
        "  deliveries  {}",
        l.letter
            .deliveries
            .map_or_else(|| "-".to_owned(), |d| d.to_string())
    );
    println!("  reason      {}", l.reason.as_deref().unwrap_or("-"));
    println!("headers");
    for (name, value) in &l.headers {
        println!("  {name}: {value}");
    }
    match (&l.payload, &l.undecodable) {
        (Payload::Json(value), None) => {
            println!("payload (secrets redacted)");
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        (Payload::Json(value), Some(why)) => {
            println!("payload (not a message of its subject: {why}; secrets redacted)");
            println!("{}", serde_json::to_string_pretty(value)?);
        }
        (Payload::Text(text), why) => {
            println!(
                "payload (not JSON{}; as text, secrets redacted)",
                why.as_deref().map(|w| format!(": {w}")).unwrap_or_default()
            );
            println!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Selection {
    /// Refuses what clap cannot express, before anything is connected.
    fn validate(&self) -> anyhow::Result<()> {
        if !self.all_matching && (self.filters.any() || self.limit.is_some()) {
            anyhow::bail!(
                "--subject, --reason, --guild, --community, --since, --until and --limit choose \
                 dead letters for --all-matching; with sequence numbers, give only those"
            );
        }
        Ok(())
    }
}

/// The dead letters a `replay` or `drop` acts on, and the sequence numbers
/// asked for that are not there.
async fn select(
    session: &Session,
    selection: &Selection,
) -> anyhow::Result<(Vec<Shown>, Vec<u64>)> {
    if selection.all_matching {
        let (shown, _) = matching(session, &selection.filters, selection.limit).await?;
        return Ok((shown, Vec::new()));
    }
    let mut sequences = selection.sequences.clone();
    sequences.sort_unstable();
    sequences.dedup();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for sequence in sequences {
        match session.guard(session.letters.get(sequence)).await? {
            Some(letter) => found.push(Shown::new(letter)),
            None => missing.push(sequence),
        }
    }
    Ok((found, missing))
}

fn report_missing(missing: &[u64], stream: &str) {
    for sequence in missing {
        eprintln!(
            "no dead letter {sequence} in {stream}: replayed, dropped or aged out already; skipped"
        );
    }
}

/// Where a replay of `letter` is audited: the community the message names,
/// `None` when it names none (an undecodable payload, or a guild the bot
/// has not been provisioned in, such as a failed `guild.join`).
async fn community_of(store: &store::Store, letter: &Shown) -> anyhow::Result<Option<TenantId>> {
    let Some(message) = &letter.message else {
        return Ok(None);
    };
    if let Some(community) = message.community() {
        return Ok(Some(TenantId::from(community)));
    }
    let Some(guild) = message.guild_id() else {
        return Ok(None);
    };
    match community::resolve(store, guild).await {
        Ok(found) => Ok(Some(found.tenant)),
        Err(LookupError::Unknown(_)) => Ok(None),
        Err(LookupError::Store(e)) => Err(crate::db_args::explain(e, "DATABASE_URL")),
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    args.selection.validate()?;
    if args.by.trim().is_empty() {
        anyhow::bail!("--by must name who replays (it goes in the audit log)");
    }
    // Required even when no message names a community: which ones do is
    // only known once each guild is looked up, and a replay that changes a
    // community's data must never go unrecorded for want of a setting.
    let store_config = if args.selection.dry_run {
        None
    } else {
        Some(args.db.store_config(2).context(
            "replay records every replay in its community's audit log, so it needs the database",
        )?)
    };
    let session = Session::open(&args.nats).await?;
    let stream = session.letters.stream_name().to_owned();
    let (letters, missing) = select(&session, &args.selection).await?;
    report_missing(&missing, &stream);
    let ns = session.letters.namespace().clone();
    if args.selection.dry_run {
        if letters.is_empty() {
            println!("nothing to replay");
        } else {
            print_table(&letters);
            for l in &letters {
                match l.letter.replay_subject(&ns) {
                    Ok(target) => println!("would replay {} to {target}", l.letter.sequence),
                    Err(e) => println!("would refuse {}: {e}", l.letter.sequence),
                }
            }
        }
        return Ok(exit(missing.is_empty()));
    }
    let Some(store_config) = store_config else {
        anyhow::bail!("no database settings for a replay that is not a dry run");
    };
    let store = crate::db_args::connect(store_config).await?;
    let actor = Actor::Admin(Some(args.by.clone()));
    let mut all_done = missing.is_empty();
    let mut replayed = 0;
    for l in &letters {
        let sequence = l.letter.sequence;
        let target = match l.letter.replay_subject(&ns) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("not replayed: {e}");
                all_done = false;
                continue;
            }
        };
        let record = ReplayRecord {
            dead_letter: sequence,
            subject: target,
            kind: l.kind().to_owned(),
            message_id: l.message.as_ref().map(Message::id),
            reason: l.reason.clone(),
            deliveries: l.letter.deliveries,
        };
        let community = community_of(&store, l).await?;
        let publish = session.guard(session.letters.replay(&l.letter));
        let (done, audit) = match community {
            Some(tenant) => match replay_audited(&store, tenant, &actor, &record, publish).await {
                Ok((done, entry)) => (done, Some(entry.id)),
                Err(ReplayError::Replay(e)) => {
                    return Err(e.context(format!("dead letter {sequence}: not replayed")))
                }
                Err(other) => {
                    return Err(anyhow::anyhow!("dead letter {sequence}: {other}"));
                }
            },
            None => (publish.await?, None),
        };
        tracing::info!(
            dead_letter = sequence,
            subject = %done.subject,
            stream = %done.stream,
            stream_sequence = done.stream_sequence,
            duplicate = done.duplicate,
            kind = record.kind,
            message_id = record.message_id.as_deref().unwrap_or("-"),
            guild = %l.owner(),
            audit_entry = audit.map_or_else(|| "none".to_owned(), |id| id.to_string()),
            by = %args.by,
            nats_user = session.user.as_deref().unwrap_or("-"),
            "dead letter replayed"
        );
        let kept = || {
            format!(
                "dead letter {sequence} was replayed ({} sequence {}) but could not be deleted; \
                 replaying it again is deduplicated by JetStream within the stream's duplicate \
                 window",
                done.stream, done.stream_sequence
            )
        };
        let removed = session
            .guard(session.letters.delete(sequence))
            .await
            .with_context(kept)?;
        replayed += 1;
        println!(
            "replayed {sequence} ({}, {}) to {} as {} {}{}; {}{}",
            record.kind,
            l.owner_named(),
            done.subject,
            done.stream,
            done.stream_sequence,
            if done.duplicate {
                " (stored by an earlier replay of it: JetStream kept one copy)"
            } else {
                ""
            },
            match (audit, l.message.as_ref().and_then(Message::guild_id)) {
                (Some(id), _) => format!("audit entry {id}"),
                (None, Some(guild)) => format!("not audited: guild {guild} has no community"),
                (None, None) => "not audited: it names no community".to_owned(),
            },
            if removed {
                ""
            } else {
                "; the dead letter was already gone"
            },
        );
    }
    println!("{replayed} of {} replayed", letters.len() + missing.len());
    Ok(exit(all_done))
}

async fn drop_letters(args: DropArgs) -> anyhow::Result<ExitCode> {
    args.selection.validate()?;
    let session = Session::open(&args.nats).await?;
    let stream = session.letters.stream_name().to_owned();
    let (letters, missing) = select(&session, &args.selection).await?;
    report_missing(&missing, &stream);
    if letters.is_empty() {
        println!("nothing to drop");
        return Ok(exit(missing.is_empty()));
    }
    if args.selection.dry_run || !args.yes {
        print_table(&letters);
        if args.selection.dry_run {
            println!("would drop {} dead letter(s)", letters.len());
            return Ok(exit(missing.is_empty()));
        }
        anyhow::bail!(
            "nothing dropped: dropping deletes these {} dead letter(s) for good; add --yes \
             (or replay them instead)",
            letters.len()
        );
    }
    let mut dropped = 0;
    for l in &letters {
        let sequence = l.letter.sequence;
        let removed = session.guard(session.letters.delete(sequence)).await?;
        if removed {
            dropped += 1;
            tracing::info!(
                dead_letter = sequence,
                subject = %l.original(),
                kind = l.kind(),
                guild = %l.owner(),
                by = %args.by,
                nats_user = session.user.as_deref().unwrap_or("-"),
                "dead letter dropped"
            );
        } else {
            eprintln!("dead letter {sequence} was already gone");
        }
    }
    println!("dropped {dropped} of {}", letters.len() + missing.len());
    Ok(exit(missing.is_empty() && dropped == letters.len()))
}

fn exit(all_done: bool) -> ExitCode {
    if all_done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let at = parse_when("2026-01-02T15:04:05Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-01-02T15:04:05+00:00");
        let hour_ago = parse_when("1h").unwrap();
        let expected = Utc::now() - chrono::Duration::hours(1);
        assert!((hour_ago - expected).num_seconds().abs() < 5);
        let e = parse_when("yesterday").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn clipping_keeps_one_bounded_line() {
        assert_eq!(clip("a\nb", 10), "a b");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ééééé", 5), "ééééé");
    }
}
