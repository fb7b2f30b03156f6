//! Guilds becoming communities, and members becoming profiles.

use chrono::{DateTime, TimeZone, Utc};
use domain::{Actor, AuditAction};
use serde_json::json;
use store::{
    repo::{ChunkOf, ListedMember, MemberChange, MemberEvent, MemberSync},
    Store, TenantId,
};
use wire::{
    payload::{GuildJoin, MembersChunk},
    Envelope, GuildId, Payload, UserId,
};

use super::{guild_of, user_of};
use crate::{Delivery, HandlerError};

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

/// `guild.join`: provision the community (free tier, default theme), or
/// reactivate the one the guild had.
pub(super) async fn guild_join(
    store: &Store,
    envelope: &Envelope,
    join: &GuildJoin,
) -> Result<(), HandlerError> {
    let guild = guild_of(envelope)?;
    let name = if join.name.trim().is_empty() {
        format!("guild {guild}")
    } else {
        join.name.chars().take(100).collect()
    };
    let tenant = match store.directory().resolve_guild(guild).await? {
        Some(tenant) => tenant,
        None => store.directory().provision_guild(guild, &name).await?,
    };
    let tx = store.begin(tenant).await?;
    if !tx
        .processed_events()
        .claim(envelope.id.as_str(), envelope.payload.kind())
        .await?
    {
        return Ok(tx.commit().await?);
    }
    // Whether this is the community's first join is a fact of the
    // database, not of which delivery happened to provision it: two copies
    // of one event may race through `provision_guild`, and the one that
    // claims the event need not be the one that created the row. The claim
    // locks the row, which serialises guild events of this community.
    let first_join = tx.communities().claim_announcement().await?;
    let before = tx.communities().get().await?;
    if !before.active {
        tx.communities().set_active(true).await?;
    }
    let action = if first_join {
        AuditAction::CommunityProvisioned
    } else if before.active {
        AuditAction::CommunitySeen
    } else {
        AuditAction::CommunityReactivated
    };
    tx.audit()
        .append(
            &Actor::System
                .entry(action)
                .target("guild", guild.to_string())
                .metadata(json!({
                    "event_id": envelope.id.as_str(),
                    "name": name,
                    "member_count": join.member_count,
                    "owner_id": join.owner_id.map(|o| o.to_string()),
                })),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `guild.leave`: the bot was removed. Keep the data, mark the community
/// inactive.
pub(super) async fn guild_leave(store: &Store, envelope: &Envelope) -> Result<(), HandlerError> {
    let guild = guild_of(envelope)?;
    let Some(tenant) = store.directory().resolve_guild(guild).await? else {
        // Never provisioned: nothing to deactivate.
        return Ok(());
    };
    let tx = store.begin(tenant).await?;
    if tx
        .processed_events()
        .claim(envelope.id.as_str(), envelope.payload.kind())
        .await?
    {
        tx.communities().set_active(false).await?;
        tx.audit()
            .append(
                &Actor::System
                    .entry(AuditAction::CommunityDeactivated)
                    .target("guild", guild.to_string())
                    .metadata(json!({ "event_id": envelope.id.as_str() })),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `member.join` / `member.update` / `member.leave` of one guild: maintain
/// the profiles, in stream order (see `Profiles::apply_member_event`).
/// Returns, for each event, whether it changed its profile now.
///
/// The events share one tenant transaction: one claim of every envelope id
/// beside the lock of their members' profiles (one round trip), then the
/// profile changes in the order given in one upsert (see
/// `Profiles::apply_member_events`) whose statement also writes their audit
/// entries, with the commit behind it: two round trips in all. A flood of
/// member updates thus costs the database a transaction per batch rather
/// than per event, which is what lets it keep serving everyone else. The
/// effect is the one applying them one by one would have, and one bad event
/// fails them all: the caller then applies them one by one, so the bad one
/// is dead-lettered alone.
pub(super) async fn member_events(
    store: &Store,
    events: &[(&Envelope, Delivery)],
) -> Result<Vec<bool>, HandlerError> {
    let Some((first, _)) = events.first() else {
        return Ok(Vec::new());
    };
    let guild = guild_of(first)?;
    let mut changes = Vec::with_capacity(events.len());
    for (envelope, delivery) in events {
        if guild_of(envelope)? != guild {
            return Err(HandlerError::Permanent(format!(
                "membership events of guilds {guild} and {} in one batch",
                guild_of(envelope)?
            )));
        }
        changes.push(member_change(envelope, delivery)?);
    }
    let tenant = community_of(store, guild).await?;
    let tx = store.begin(tenant).await?;
    let ids: Vec<(&str, &str)> = events
        .iter()
        .map(|(envelope, _)| (envelope.id.as_str(), envelope.payload.kind()))
        .collect();
    let users: Vec<UserId> = changes.iter().map(|(e, _)| e.discord_user_id).collect();
    let (processed, profiles) = (tx.processed_events(), tx.profiles());
    // The claim and the members' lock go out in one round trip: which
    // events are fresh is known only after, but locking a duplicate's
    // member until the commit costs nothing.
    let (mut claimed, locked) =
        tokio::try_join!(processed.claim_many(&ids), profiles.lock_for_events(&users))?;
    // `remove`: a copy of an id later in the batch finds it gone.
    let fresh: Vec<bool> = events
        .iter()
        .map(|(envelope, _)| claimed.remove(envelope.id.as_str()))
        .collect();
    // Which of `events` each event to apply is.
    let positions: Vec<usize> = (0..events.len()).filter(|n| fresh[*n]).collect();
    let to_apply: Vec<MemberEvent> = positions.iter().map(|n| changes[*n].0.clone()).collect();
    // The upsert and its audit entries in one statement, `COMMIT` behind it.
    let outcomes = tx
        .commit_with(async |tx| {
            tx.profiles()
                .apply_locked_member_events_audited(locked, &to_apply, first_due(), |n, roles| {
                    let position = positions[n];
                    let (envelope, _) = events[position];
                    let (event, action) = &changes[position];
                    Actor::System.entry(*action).target_kind("profile").metadata(json!({
                        "event_id": envelope.id.as_str(),
                        "discord_user_id": event.discord_user_id.to_string(),
                        "roles": roles.iter().map(std::string::ToString::to_string).collect::<Vec<_>>(),
                    }))
                })
                .await
        })
        .await?;
    let mut applied = vec![false; events.len()];
    for (position, outcome) in positions.iter().zip(outcomes) {
        applied[*position] = outcome.is_some();
    }
    Ok(applied)
}

/// When a member who joined now is first due for the periodic scan.
fn first_due() -> DateTime<Utc> {
    let wait = chrono::Duration::from_std(domain::role_sync::FIRST_CHECK_WAIT)
        .unwrap_or(chrono::Duration::zero());
    Utc::now() + wait
}

/// `member.chunk`: one piece of the guild's member list, sent by Discord
/// in answer to the gateway's request (a server's first sync, or a sync
/// after a fresh session). One transaction per chunk: the claim, every
/// listed member's profile (set-based, in stream order like any member
/// event), and the chunk counted towards its sync. Returns the sync when
/// this chunk completed it, so that its members can be reconciled.
pub(super) async fn members_chunk(
    store: &Store,
    envelope: &Envelope,
    chunk: &MembersChunk,
    delivery: &Delivery,
) -> Result<Option<MemberSync>, HandlerError> {
    let guild = guild_of(envelope)?;
    // Discord echoes at most 32 bytes; the gateway always sends one.
    let nonce = chunk.nonce.as_deref().unwrap_or("unnamed");
    if nonce.is_empty() || nonce.len() > 32 {
        return Err(HandlerError::Permanent(format!(
            "member chunk of guild {guild} with a nonce of {} bytes (1 to 32 expected)",
            nonce.len()
        )));
    }
    if chunk.chunk_count == 0 || chunk.chunk_index >= chunk.chunk_count {
        return Err(HandlerError::Permanent(format!(
            "member chunk {} of {} of guild {guild}",
            chunk.chunk_index, chunk.chunk_count
        )));
    }
    let members: Vec<ListedMember> = chunk
        .members
        .iter()
        .map(|m| ListedMember {
            discord_user_id: m.user_id,
            role_ids: m.member.roles.clone(),
            joined_at: m.member.joined_at.map(millis),
        })
        .collect();
    let tenant = community_of(store, guild).await?;
    let tx = store.begin(tenant).await?;
    if !tx
        .processed_events()
        .claim(envelope.id.as_str(), envelope.payload.kind())
        .await?
    {
        tx.commit().await?;
        return Ok(None);
    }
    let store::repo::Ingested {
        sync,
        completed_now: completed,
    } = tx
        .member_syncs()
        .ingest_chunk(
            ChunkOf {
                nonce,
                chunk_count: chunk.chunk_count,
                seq: i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX),
            },
            &members,
        )
        .await?;
    if completed {
        tx.audit()
            .append(
                &Actor::System
                    .entry(AuditAction::MembersSynced)
                    .target("guild", guild.to_string())
                    .metadata(json!({
                        "event_id": envelope.id.as_str(),
                        "nonce": nonce,
                        "chunks": sync.chunk_count,
                        "members": sync.members_received,
                        "members_left": sync.members_left,
                    })),
            )
            .await?;
    }
    tx.commit().await?;
    metrics::counter!("worker_members_synced_total").increment(members.len() as u64);
    if completed {
        metrics::counter!("worker_member_syncs_completed_total").increment(1);
        tracing::info!(%guild, members = sync.members_received, left = ?sync.members_left, chunks = sync.chunk_count, "member list synced");
    }
    Ok(completed.then_some(sync))
}

/// What a membership event does to its member's profile, and how the audit
/// log names it.
fn member_change(
    envelope: &Envelope,
    delivery: &Delivery,
) -> Result<(MemberEvent, AuditAction), HandlerError> {
    let user = user_of(envelope)?;
    let (change, at, action) = match &envelope.payload {
        Payload::MemberJoin(join) => (
            MemberChange::Present {
                role_ids: join.roles.clone(),
            },
            millis(join.joined_at.unwrap_or(envelope.occurred_at)),
            AuditAction::MemberJoined,
        ),
        Payload::MemberUpdate(update) => (
            MemberChange::Present {
                role_ids: update.roles.clone(),
            },
            millis(envelope.occurred_at),
            AuditAction::MemberUpdated,
        ),
        Payload::MemberLeave(_) => (
            MemberChange::Left,
            millis(envelope.occurred_at),
            AuditAction::MemberLeft,
        ),
        other => {
            return Err(HandlerError::Permanent(format!(
                "{} is not a membership event",
                other.kind()
            )))
        }
    };
    let event = MemberEvent {
        discord_user_id: user,
        seq: i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX),
        at,
        change,
    };
    Ok((event, action))
}

/// The community of a guild. A member event can overtake its guild's
/// `guild.join` (they travel on different subjects and several workers run
/// at once), so an unknown guild is worth a retry, not a dead letter yet.
pub(super) async fn community_of(store: &Store, guild: GuildId) -> Result<TenantId, HandlerError> {
    store
        .directory()
        .resolve_guild(guild)
        .await?
        .ok_or_else(|| HandlerError::Transient(format!("guild {guild} is not provisioned (yet)")))
}
