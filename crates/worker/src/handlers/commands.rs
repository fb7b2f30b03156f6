//! Slash commands: `/profile`, `/badges`, `/check`, `/link-wallet` and
//! `/wallets`.
//!
//! Every reply is ephemeral and goes through the interaction callback, which
//! Discord accepts only within 3 seconds of the interaction. Commands that
//! only read the database answer directly (type 4); `/check` reads the chain,
//! so it acknowledges first with a deferred reply (type 5) and then edits the
//! original response with the outcome.
//!
//! No transaction is open across a Discord call: a pooled connection held
//! for up to the callback's 2.5 s is how a flood of commands in one server,
//! or a slow Discord, would starve every community. Each interaction goes
//! in three steps:
//!
//! 1. One short tenant transaction claims the envelope id in
//!    `processed_events`, runs the command (its effect: a linked wallet, a
//!    nonce, a one-time link), stores the reply it will send in
//!    `interaction_replies`, and commits. An interaction whose window
//!    closes before the commit is rolled back instead: unanswerable, it
//!    changes nothing.
//! 2. The reply goes to Discord with nothing open; re-checks the effect
//!    calls for are requested.
//! 3. Once Discord took the reply (or says it already has one: 40060
//!    counts as answered), a second short transaction forgets it.
//!
//! Exactly once: a redelivery finds the claim. With a stored reply (the
//! worker died, or Discord failed or timed out, between steps 1 and 3) it
//! sends that same reply again, without running the command again; without
//! one the interaction was answered and it does nothing. A redelivery past
//! Discord's window only forgets the stored reply and requests its
//! re-checks. A reply Discord refuses for good is forgotten and the message
//! dead-lettered; the effect stands, as the member asked for it.
//!
//! The interaction token lets anyone answer the interaction: it appears in
//! no log line, no error message and no row here (a redelivered envelope
//! carries it).

use std::{future::IntoFuture, time::Duration};

use chrono::Utc;
use serde_json::json;
use store::{
    repo::{PendingReply, Profile, ReplyBody},
    StoreError, TenantId, TenantTx, WalletAddress,
};
use twilight_http::error::ErrorType;
use twilight_model::{
    channel::message::{AllowedMentions, MessageFlags},
    http::interaction::{InteractionResponse, InteractionResponseData, InteractionResponseType},
    id::Id,
};
use wire::{
    check::CheckPriority,
    payload::{CommandOption, InteractionCreate, InteractionKind},
    Envelope, GuildId, UserId,
};

use domain::{
    role_sync::CheckReport,
    wallets::{self, LinkError},
};

use super::{eligibility, guild_of, membership::community_of, user_of, Handlers};
use crate::command_limits::Limited;
use crate::discord::ToTwilight;
use crate::{
    slash_commands::{BADGES, CHECK, LINK_WALLET, PROFILE, WALLETS},
    Delivery, HandlerError,
};

/// How long one callback may take. Discord's whole window is 3 s; past this
/// the outcome is unknown, so the message is retried (and a retry that finds
/// the interaction answered treats it as done).
const CALLBACK_TIMEOUT: Duration = Duration::from_millis(2500);

/// Discord's limit is 2000 characters; stay clear of it.
const MAX_CONTENT: usize = 1900;

/// Discord takes an interaction's first answer within 3 s of it; one that
/// waited longer (a backlog, a redelivery) cannot be answered.
const RESPONSE_WINDOW_MS: i64 = 3_000;

/// An effect commits only if this much of the window is left to send its
/// reply in: one committed later would most likely never be answered.
const SEND_MARGIN_MS: i64 = 250;

/// Discord's JSON error codes this module reacts to.
const ALREADY_ACKNOWLEDGED: u64 = 40060;

/// How old `envelope` is, in ms.
fn age_ms(envelope: &Envelope) -> i64 {
    Utc::now().timestamp_millis() - envelope.occurred_at
}

/// Handles one `interaction.create`.
pub(super) async fn interaction(
    handlers: &Handlers,
    envelope: &Envelope,
    interaction: &InteractionCreate,
    delivery: &Delivery,
) -> Result<(), HandlerError> {
    let Some(sync) = &handlers.role_sync else {
        return Err(HandlerError::Permanent(format!(
            "interaction {} cannot be answered: no Discord REST client (role sync is not \
             configured; set DISCORD_TOKEN)",
            interaction.interaction_id
        )));
    };
    if interaction.kind != InteractionKind::ApplicationCommand {
        return Err(HandlerError::Permanent(format!(
            "interaction {} is a {:?}; only slash commands are handled",
            interaction.interaction_id, interaction.kind
        )));
    }
    let age_ms = age_ms(envelope);
    if age_ms > RESPONSE_WINDOW_MS {
        // Dropped before any database or Discord work: an answer would be
        // refused, and a flood of stale ones must not cost every community
        // connections and rate budget.
        metrics::counter!("worker_interactions_expired_total").increment(1);
        tracing::info!(age_ms, interaction = %interaction.interaction_id, "interaction past Discord's response window; dropped unanswered");
        if delivery.attempt > 1 {
            // Only our own failures redeliver, so this costs one short
            // transaction per failure, never per command of a flood.
            forget_unsendable(handlers, envelope).await;
        }
        return Ok(());
    }
    let guild = guild_of(envelope)?;
    let user = user_of(envelope)?;
    let reply = Reply::new(sync.discord().http(), interaction)?;
    let command = interaction.command_name.as_deref().unwrap_or_default();
    let admitted = if delivery.attempt == 1 {
        // Limits come before any database work: a flood over them costs
        // the flooder one reply each, and no community a connection. (A
        // redelivery goes through the claim instead: its first delivery
        // may have been admitted and committed a reply to send again.)
        if let Err(limited) = handlers.commands.admit(guild, user, command == CHECK) {
            metrics::counter!("worker_commands_limited_total", "command" => command_label(command))
                .increment(1);
            if !handlers.commands.tell(guild, user) {
                // Told once this period already; a flood's further
                // commands cost nothing more.
                metrics::counter!("worker_commands_limited_unanswered_total").increment(1);
                return Ok(());
            }
            return answer_limited(&reply, limited).await;
        }
        Admission::Admitted
    } else {
        Admission::Unchecked
    };
    let tenant = community_of(&handlers.store, guild).await?;

    let Some(pending) = commit_reply(
        handlers,
        envelope,
        tenant,
        guild,
        user,
        interaction,
        admitted,
    )
    .await?
    else {
        return Ok(());
    };
    let sent = match &pending.body {
        ReplyBody::Message(text) => reply.send(Answer::Message(text)).await,
        // The chain may be slow: acknowledge now, answer by editing.
        ReplyBody::Deferred => reply.send(Answer::Deferred).await,
    };
    // The effect is committed whatever Discord said, so its re-checks are
    // due either way.
    request_rechecks(handlers, envelope, &pending).await;
    settle(handlers, envelope, tenant, &reply, sent).await?;

    if pending.body == ReplyBody::Deferred {
        let text = match check_now(sync, tenant, guild, user).await {
            Ok(report) => check_text(handlers, tenant, user, &report).await,
            Err(e) => {
                tracing::warn!(%guild, %user, error = %e, "/check failed");
                "I could not check your roles just now; nothing was changed. Try /check again \
                 in a few minutes."
                    .to_owned()
            }
        };
        if let Err(e) = reply.edit(&text).await {
            // The claim is committed: a retry would not reply either.
            tracing::warn!(%guild, %user, error = %e, "could not edit the /check reply");
        }
    }
    Ok(())
}

/// Step 1: claims the envelope and, on a first delivery, runs the command
/// and stores its reply, all in one transaction. Returns the reply to send:
/// this delivery's, or the one an earlier delivery committed but may not
/// have sent; `None` if the interaction needs nothing more.
async fn commit_reply(
    handlers: &Handlers,
    envelope: &Envelope,
    tenant: TenantId,
    guild: GuildId,
    user: UserId,
    interaction: &InteractionCreate,
    admission: Admission,
) -> Result<Option<PendingReply>, HandlerError> {
    let event_id = envelope.id.as_str();
    let command = interaction.command_name.as_deref().unwrap_or_default();
    let tx = handlers.store.begin(tenant).await?;
    if !tx
        .processed_events()
        .claim(event_id, envelope.payload.kind())
        .await?
    {
        let pending = tx.interaction_replies().pending(event_id).await?;
        tx.commit().await?;
        if pending.is_some() {
            metrics::counter!("worker_interaction_replies_resent_total").increment(1);
        }
        return Ok(pending);
    }
    metrics::counter!("worker_commands_total", "command" => command_label(command)).increment(1);
    let limits = match admission {
        Admission::Admitted => Ok(()),
        Admission::Unchecked => handlers.commands.admit(guild, user, command == CHECK),
    };
    let pending = if let Err(limited) = limits {
        metrics::counter!("worker_commands_limited_total", "command" => command_label(command))
            .increment(1);
        PendingReply::only(ReplyBody::Message(limited.text()))
    } else if command == CHECK {
        PendingReply::only(ReplyBody::Deferred)
    } else {
        let (text, effects) = match command {
            PROFILE => (profile_text(&tx, user).await?, Effects::default()),
            BADGES => (badges_text(&tx, user).await?, Effects::default()),
            LINK_WALLET => {
                link_wallet(handlers, &tx, envelope, guild, user, &interaction.options).await?
            }
            WALLETS => wallets_command(&tx, user, &interaction.options).await?,
            other => (
                format!("I do not know the command /{other}."),
                Effects::default(),
            ),
        };
        PendingReply {
            body: ReplyBody::Message(clip(&text)),
            recheck_self: effects.recheck_self,
            recheck_other: effects.recheck_other,
        }
    };
    let age_ms = age_ms(envelope);
    if age_ms > RESPONSE_WINDOW_MS - SEND_MARGIN_MS {
        // Too late to answer: no effect the member would never hear of.
        tx.rollback().await?;
        metrics::counter!("worker_interactions_expired_total").increment(1);
        tracing::info!(age_ms, interaction = %interaction.interaction_id, "interaction's window closed while it ran; rolled back unanswered");
        return Ok(None);
    }
    tx.interaction_replies().record(event_id, &pending).await?;
    tx.commit().await?;
    Ok(Some(pending))
}

/// Whether a command was already let through the limits.
#[derive(Clone, Copy, Debug)]
enum Admission {
    Admitted,
    /// A redelivery that found no claim: its first delivery never got as
    /// far as running it, so it is measured against the limits now.
    Unchecked,
}

/// Answers a command over the limits, with no transaction: nothing is
/// claimed, so a redelivery (after a failed send) is measured again.
async fn answer_limited(reply: &Reply<'_>, limited: Limited) -> Result<(), HandlerError> {
    match reply.send(Answer::Message(&limited.text())).await {
        Ok(()) | Err(ReplyError::AlreadyAnswered) => Ok(()),
        Err(ReplyError::Refused(reason)) => Err(HandlerError::Permanent(format!(
            "Discord refused the over-the-limit reply to interaction {}: {reason}",
            reply.id
        ))),
        Err(ReplyError::Failed(reason)) => Err(HandlerError::Transient(format!(
            "replying to interaction {} (over the command limits) failed: {reason}",
            reply.id
        ))),
    }
}

/// Asks for the re-checks a committed effect calls for. The ids derive
/// from the event, so a redelivery asking again is deduplicated by
/// JetStream.
async fn request_rechecks(handlers: &Handlers, envelope: &Envelope, pending: &PendingReply) {
    if pending.recheck_self {
        // A new wallet may qualify for roles right away; a removed one
        // takes what it earned with it.
        eligibility::request(handlers, envelope, "wallet.changed").await;
    }
    if let Some(other) = pending.recheck_other {
        let id = format!("check:{}:{other}", envelope.id.as_str());
        eligibility::request_for(handlers, envelope, other, id, "wallet.reclaimed").await;
    }
}

/// Step 3: what Discord's answer to the callback means for the stored reply.
async fn settle(
    handlers: &Handlers,
    envelope: &Envelope,
    tenant: TenantId,
    reply: &Reply<'_>,
    sent: Result<(), ReplyError>,
) -> Result<(), HandlerError> {
    match sent {
        Ok(()) | Err(ReplyError::AlreadyAnswered) => {
            forget(handlers, envelope, tenant).await;
            Ok(())
        }
        Err(ReplyError::Refused(reason)) => {
            // Retrying cannot help; the committed effect stands.
            forget(handlers, envelope, tenant).await;
            Err(HandlerError::Permanent(format!(
                "Discord refused the reply to interaction {}: {reason}; the command's effect \
                 was kept",
                reply.id
            )))
        }
        // Kept: a redelivery within the window sends it again.
        Err(ReplyError::Failed(reason)) => Err(HandlerError::Transient(format!(
            "replying to interaction {} failed: {reason}",
            reply.id
        ))),
    }
}

/// Forgets the stored reply of `envelope`. A failure is only logged: the
/// member has the answer, and a stored reply is pruned after the window
/// anyway (a redelivery meanwhile would get "already acknowledged").
async fn forget(handlers: &Handlers, envelope: &Envelope, tenant: TenantId) {
    let forgotten = async {
        let tx = handlers.store.begin(tenant).await?;
        tx.interaction_replies()
            .forget(envelope.id.as_str())
            .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = forgotten {
        tracing::warn!(event = envelope.id.as_str(), error = %e, "could not forget an answered interaction reply; it is pruned later");
    }
}

/// A redelivery past the window: the reply an earlier delivery stored can
/// never be sent, so it is forgotten (it may hold a one-time link), and the
/// re-checks it called for are requested in case that delivery died before
/// asking. Best effort: the hourly prune catches what this misses.
async fn forget_unsendable(handlers: &Handlers, envelope: &Envelope) {
    let taken = async {
        let Ok(guild) = guild_of(envelope) else {
            return Ok(None);
        };
        let tenant = community_of(&handlers.store, guild).await?;
        let tx = handlers.store.begin(tenant).await?;
        let replies = tx.interaction_replies();
        let pending = replies.pending(envelope.id.as_str()).await?;
        if pending.is_some() {
            replies.forget(envelope.id.as_str()).await?;
        }
        tx.commit().await?;
        Ok::<_, HandlerError>(pending)
    }
    .await;
    match taken {
        Ok(Some(pending)) => request_rechecks(handlers, envelope, &pending).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(event = envelope.id.as_str(), error = %e, "could not forget an unsendable interaction reply; it is pruned later");
        }
    }
}

/// Runs the member's check, waiting out one already in progress (their
/// join's or a linked wallet's): the member asked for a fresh answer.
async fn check_now(
    sync: &crate::RoleSync,
    tenant: store::TenantId,
    guild: GuildId,
    user: UserId,
) -> Result<CheckReport, HandlerError> {
    let mut waited = Duration::ZERO;
    loop {
        let report = sync
            .check_member(tenant, guild, user, CheckPriority::Interactive, "/check")
            .await?;
        if report.busy == 0 || waited >= CHECK_WAIT {
            return Ok(report);
        }
        tokio::time::sleep(CHECK_RETRY).await;
        waited += CHECK_RETRY;
    }
}

/// How long `/check` waits for another check of the same member to finish.
const CHECK_WAIT: Duration = Duration::from_secs(10);
const CHECK_RETRY: Duration = Duration::from_millis(200);

/// A low-cardinality metrics label.
fn command_label(command: &str) -> &'static str {
    match command {
        PROFILE => PROFILE,
        BADGES => BADGES,
        CHECK => CHECK,
        LINK_WALLET => LINK_WALLET,
        _ => "other",
    }
}

enum Answer<'a> {
    Message(&'a str),
    Deferred,
}

/// Answers one interaction. Holds the token; never prints it.
struct Reply<'a> {
    http: &'a twilight_http::Client,
    id: Id<twilight_model::id::marker::InteractionMarker>,
    application: Id<twilight_model::id::marker::ApplicationMarker>,
    token: &'a str,
}

#[derive(Debug)]
enum ReplyError {
    /// Discord has an answer already (an earlier delivery sent it).
    AlreadyAnswered,
    /// Retrying cannot help: the interaction expired or the reply is wrong.
    Refused(String),
    /// Network, timeout, 5xx, 429: worth another try.
    Failed(String),
}

impl<'a> Reply<'a> {
    fn new(
        http: &'a twilight_http::Client,
        interaction: &'a InteractionCreate,
    ) -> Result<Self, HandlerError> {
        let id = interaction.interaction_id.to_twilight();
        let application = interaction.application_id.to_twilight();
        if interaction.token.is_empty() {
            return Err(HandlerError::Permanent(format!(
                "interaction {} without a token",
                interaction.interaction_id
            )));
        }
        Ok(Reply {
            http,
            id,
            application,
            token: &interaction.token,
        })
    }

    /// Sends the callback. Never call it with a transaction open: it may
    /// take up to [`CALLBACK_TIMEOUT`].
    async fn send(&self, answer: Answer<'_>) -> Result<(), ReplyError> {
        let (kind, content) = match answer {
            Answer::Message(text) => (
                InteractionResponseType::ChannelMessageWithSource,
                Some(text.to_owned()),
            ),
            Answer::Deferred => (
                InteractionResponseType::DeferredChannelMessageWithSource,
                None,
            ),
        };
        let response = InteractionResponse {
            kind,
            data: Some(InteractionResponseData {
                content,
                flags: Some(MessageFlags::EPHEMERAL),
                // Mentions in replies are for display; never ping anyone.
                allowed_mentions: Some(AllowedMentions::default()),
                ..InteractionResponseData::default()
            }),
        };
        let sent = tokio::time::timeout(
            CALLBACK_TIMEOUT,
            self.http
                .interaction(self.application)
                .create_response(self.id, self.token, &response)
                .into_future(),
        )
        .await;
        let outcome = match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(ReplyError::Failed(format!(
                "no answer from Discord within {CALLBACK_TIMEOUT:?}"
            ))),
        };
        metrics::counter!("worker_interaction_callbacks_total", "outcome" => match &outcome {
            Ok(()) => "ok",
            Err(ReplyError::AlreadyAnswered) => "already_answered",
            Err(ReplyError::Refused(_)) => "refused",
            Err(ReplyError::Failed(_)) => "failed",
        })
        .increment(1);
        outcome
    }

    /// Replaces the deferred reply with `text`.
    async fn edit(&self, text: &str) -> Result<(), String> {
        let text = clip(text);
        let no_mentions = AllowedMentions::default();
        let edited = tokio::time::timeout(
            Duration::from_secs(10),
            self.http
                .interaction(self.application)
                .update_response(self.token)
                .allowed_mentions(Some(&no_mentions))
                .content(Some(&text))
                .into_future(),
        )
        .await;
        match edited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(match classify(&e) {
                ReplyError::AlreadyAnswered => "already answered".into(),
                ReplyError::Refused(r) | ReplyError::Failed(r) => r,
            }),
            Err(_) => Err("no answer from Discord within 10s".into()),
        }
    }
}

/// Sorts a twilight-http error by what to do about it. Uses only the status
/// and Discord's error body: neither contains the token (the URL does, and
/// it is never printed).
fn classify(e: &twilight_http::Error) -> ReplyError {
    match e.kind() {
        ErrorType::Response { error, status, .. } => {
            let status = status.get();
            if crate::discord::api_error_code(e) == Some(ALREADY_ACKNOWLEDGED) {
                ReplyError::AlreadyAnswered
            } else if status == 429 || status >= 500 {
                ReplyError::Failed(format!("status {status}: {error}"))
            } else {
                ReplyError::Refused(format!("status {status}: {error}"))
            }
        }
        ErrorType::Validation | ErrorType::Json | ErrorType::BuildingRequest => {
            ReplyError::Refused(e.to_string())
        }
        _ => ReplyError::Failed(e.to_string()),
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_CONTENT {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_CONTENT - 1).collect();
    clipped.push('…');
    clipped
}

const NO_PROFILE: &str = "I have no profile for you in this server yet. It is created when \
                          I see you join; try again in a moment.";

async fn profile_of(tx: &TenantTx, user: UserId) -> Result<Option<Profile>, StoreError> {
    Ok(tx
        .profiles()
        .find_by_discord_user(user)
        .await?
        .filter(|p| p.left_at.is_none()))
}

/// The roles the member holds that a rule manages, as mentions.
async fn managed_roles(tx: &TenantTx, profile: &Profile) -> Result<Vec<String>, StoreError> {
    let rules = tx.rules().list_enabled().await?;
    let mut roles: Vec<String> = rules
        .iter()
        .filter(|r| profile.role_ids.contains(&r.role_discord_id))
        .map(|r| format!("<@&{}>", r.role_discord_id))
        .collect();
    roles.dedup();
    Ok(roles)
}

async fn profile_text(tx: &TenantTx, user: UserId) -> Result<String, HandlerError> {
    let Some(profile) = profile_of(tx, user).await? else {
        return Ok(NO_PROFILE.into());
    };
    let roles = managed_roles(tx, &profile).await?;
    let badges = tx.badges().awards_for(profile.id).await?;
    let wallet = if profile.wallets.is_empty() {
        "none linked (use /link-wallet)".to_owned()
    } else {
        profile
            .wallets
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let roles = if roles.is_empty() {
        "none".to_owned()
    } else {
        roles.join(", ")
    };
    let badges = if badges.is_empty() {
        "none yet".to_owned()
    } else {
        badges
            .iter()
            .map(|a| a.badge.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(format!(
        "**Your profile**\nWallets: {wallet}\nTier: {tier}\nRoles from rules: {roles}\nBadges: {badges}",
        tier = profile.tier,
    ))
}

async fn badges_text(tx: &TenantTx, user: UserId) -> Result<String, HandlerError> {
    let Some(profile) = profile_of(tx, user).await? else {
        return Ok(NO_PROFILE.into());
    };
    let all = tx.badges().list().await?;
    if all.is_empty() {
        return Ok("This server has no badges yet.".into());
    }
    let held = tx.badges().awards_for(profile.id).await?;
    let mut text = format!("**Your badges** ({} of {})\n", held.len(), all.len());
    if held.is_empty() {
        text.push_str("None yet.\n");
    }
    for award in &held {
        text.push_str(&format!(
            "• {} — {} ({})\n",
            award.badge.name,
            award.reason,
            award.awarded_at.format("%Y-%m-%d")
        ));
    }
    let missing: Vec<_> = all
        .iter()
        .filter(|b| !held.iter().any(|a| a.badge.id == b.id))
        .collect();
    if !missing.is_empty() {
        text.push_str("**Not yet earned**\n");
        for badge in missing {
            if badge.description.is_empty() {
                text.push_str(&format!("• {}\n", badge.name));
            } else {
                text.push_str(&format!("• {} — {}\n", badge.name, badge.description));
            }
        }
    }
    Ok(text.trim_end().to_owned())
}

async fn check_text(
    handlers: &Handlers,
    tenant: store::TenantId,
    user: UserId,
    report: &CheckReport,
) -> String {
    if report.busy > 0 {
        return "Another check of your roles is still running; try /check again in a moment."
            .into();
    }
    if report.members == 0 {
        return NO_PROFILE.into();
    }
    let mut text = match (report.granted, report.removed, report.deferred) {
        // The server has spent its share of chain reads for now: saying
        // "up to date" would be a guess.
        (0, 0, d) if d > 0 => "This server has used its share of blockchain reads for the \
                               moment, so I could not check your wallets just now. Nothing was \
                               removed; you will be checked again automatically within a few \
                               minutes."
            .to_owned(),
        (0, 0, _) => "Checked: your roles are up to date.".to_owned(),
        (g, r, _) => format!("Checked: {g} role(s) granted, {r} removed."),
    };
    if report.failed_changes > 0 {
        text.push_str(&format!(
            " {} change(s) could not be made yet; I will retry them.",
            report.failed_changes
        ));
    }
    // Best effort: the outcome above is the answer; the role list is extra.
    let roles = async {
        let tx = handlers.store.begin(tenant).await?;
        let roles = match profile_of(&tx, user).await? {
            Some(p) => managed_roles(&tx, &p).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        Ok::<_, StoreError>(roles)
    }
    .await;
    match roles {
        Ok(roles) if roles.is_empty() => text.push_str("\nRoles from rules: none"),
        Ok(roles) => text.push_str(&format!("\nRoles from rules: {}", roles.join(", "))),
        Err(e) => tracing::warn!(%user, error = %e, "could not list roles for /check"),
    }
    text
}

fn option<'o>(options: &'o [CommandOption], name: &str) -> Option<&'o str> {
    options
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| o.value.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// What a command did besides its reply: members whose roles must be
/// re-checked once the transaction committed (stored with the reply).
#[derive(Default)]
struct Effects {
    recheck_self: bool,
    /// A member a wallet was taken from.
    recheck_other: Option<UserId>,
}

const LINKING_OFF: &str = "Wallet linking is not set up on this server yet (the operator has not \
     set the public address, PUBLIC_URL). Nothing was changed.";

/// `/link-wallet`:
/// - without options: a one-time link to the wallet-link page, where the
///   member's browser wallet signs a Sign-In with Ethereum message;
/// - with `address`: the same message as text, for a wallet without a
///   browser (the fallback: sign it elsewhere, paste the signature);
/// - with `signature` (and optionally `address`): verifies the pasted
///   signature over the pending message and links the wallet.
///
/// Refusals store nothing.
async fn link_wallet(
    handlers: &Handlers,
    tx: &TenantTx,
    envelope: &Envelope,
    guild: GuildId,
    user: UserId,
    options: &[CommandOption],
) -> Result<(String, Effects), HandlerError> {
    let none = Effects::default();
    let Some(profile) = profile_of(tx, user).await? else {
        return Ok((NO_PROFILE.into(), none));
    };
    let Some(site) = &handlers.link_site else {
        return Ok((LINKING_OFF.into(), none));
    };
    let now = Utc::now();
    let (address, signature) = (option(options, "address"), option(options, "signature"));
    let Some(signature) = signature else {
        let Some(address) = address else {
            let page = wallets::issue_link_page(tx, site, user, now).await?;
            return Ok((
                format!(
                    "Open this link to link a wallet with your browser wallet. It is yours alone \
                     and works once, for {} minutes; do not share it:\n{}\n\nNo browser wallet? \
                     Run `/link-wallet address:<your address>` for a message to sign and paste back.",
                    wallets::LINK_PAGE_TTL.as_secs() / 60,
                    page.url
                ),
                none,
            ));
        };
        return match wallets::request_link(tx, site, guild, user, address, None, now).await {
            Ok(request) => Ok((
                format!(
                    "Sign this exact message with {address} (personal_sign), then run \
                     `/link-wallet signature:<the signature>` within {} minutes:\n```\n{}\n```",
                    wallets::MESSAGE_TTL.as_secs() / 60,
                    request.message
                ),
                none,
            )),
            Err(e) => Ok((link_error_text(e)?, none)),
        };
    };
    if let Some(address) = address {
        // The message names the wallet; a different address here means the
        // member signed, or meant, something else.
        let pending = tx.wallet_nonces().pending(user).await?;
        if let Some(pending) = pending {
            if WalletAddress::parse(address).ok().as_ref() != Some(&pending.address) {
                return Ok((
                    format!(
                        "Your pending message is for {}, not {address}: run \
                         `/link-wallet address:{address}` for a message for that wallet. Nothing was linked.",
                        pending.address
                    ),
                    none,
                ));
            }
        }
    }
    let Some(sync) = &handlers.role_sync else {
        return Ok((LINKING_OFF.into(), none));
    };
    let linked = wallets::complete_link(
        tx,
        sync.evaluator(),
        site,
        &profile,
        None,
        signature,
        wallets::Via::Discord {
            context: json!({ "event_id": envelope.id.as_str() }),
        },
        now,
    )
    .await;
    match linked {
        Ok(outcome) => {
            let moved = outcome
                .reclaimed_from
                .map(|_| " It was linked to another member, who no longer has it.")
                .unwrap_or_default();
            Ok((
                format!(
                    "Linked `{}` to your profile ({} wallet{} now).{moved} I am checking your roles now.",
                    outcome.wallet,
                    outcome.profile.wallets.len(),
                    if outcome.profile.wallets.len() == 1 { "" } else { "s" },
                ),
                Effects {
                    recheck_self: true,
                    recheck_other: outcome.reclaimed_from,
                },
            ))
        }
        Err(e) => Ok((link_error_text(e)?, none)),
    }
}

/// A refusal as the member reads it; other errors go up.
fn link_error_text(e: LinkError) -> Result<String, HandlerError> {
    match e {
        LinkError::Refused(why) => Ok(format!(
            "{}. Nothing was linked.",
            sentence(&why.to_string())
        )),
        LinkError::Unverifiable(why) => Ok(format!(
            "{}. Nothing was linked; try again in a few minutes.",
            sentence(&why)
        )),
        LinkError::Store(e) => Err(e.into()),
    }
}

fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `/wallets`: the member's linked wallets; with `unlink`, removes one
/// (and what it earned goes at the next check, with no grace period).
async fn wallets_command(
    tx: &TenantTx,
    user: UserId,
    options: &[CommandOption],
) -> Result<(String, Effects), HandlerError> {
    let Some(profile) = profile_of(tx, user).await? else {
        return Ok((NO_PROFILE.into(), Effects::default()));
    };
    if let Some(address) = option(options, "unlink") {
        return match wallets::unlink(tx, &domain::Actor::Member(user), &profile, address).await {
            Ok(true) => Ok((
                format!("Unlinked `{address}`. I am checking your roles now."),
                Effects {
                    recheck_self: true,
                    recheck_other: None,
                },
            )),
            Ok(false) => Ok((
                format!("`{address}` is not one of your wallets; /wallets lists them. Nothing was changed."),
                Effects::default(),
            )),
            Err(e) => Ok((link_error_text(e)?.replace("linked", "changed"), Effects::default())),
        };
    }
    let linked = wallets::list(tx, &profile).await?;
    if linked.is_empty() {
        return Ok((
            "You have no wallet linked. Run /link-wallet to link one.".into(),
            Effects::default(),
        ));
    }
    let lines: Vec<String> = linked
        .iter()
        .map(|w| {
            format!(
                "- `{}` (linked <t:{}:R>)",
                w.address,
                w.linked_at.timestamp()
            )
        })
        .collect();
    Ok((
        format!(
            "**Your wallets** (holdings count across all of them)\n{}\n\nUnlink one with \
             `/wallets unlink:<address>`; link another with /link-wallet.",
            lines.join("\n")
        ),
        Effects::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_replies_are_clipped_below_discords_limit() {
        let long = "x".repeat(5000);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_CONTENT);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
