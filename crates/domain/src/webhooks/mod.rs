//! Webhooks: a community's HTTPS endpoints, told what happens in it.
//!
//! The events are read from the audit log, which every effect already
//! writes in its own transaction, so a webhook reports exactly what
//! committed (the store explains how the log is read without skipping a
//! late commit). [`WebhookEvent::from_audit`] is the one mapping from audit
//! actions to events: a new effect becomes deliverable by one line there.
//!
//! This module registers, lists and deletes endpoints, shows their delivery
//! log, and defines what a delivery looks like: its body ([`event_body`])
//! and its signature ([`sign`], [`verify`]). The worker does the sending.
//!
//! The secret is made here, returned once by [`register`] and never again:
//! reads return a [`Webhook`], which has no secret. It is stored in clear
//! because signing needs the key itself.

mod signature;
mod url_policy;

use std::{fmt, str::FromStr};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use settings::Secret;
use store::{
    repo::{AuditRecord, NewWebhook as NewWebhookRow, Webhook as WebhookRow},
    Store, StoreError,
};
use uuid::Uuid;
use wire::GuildId;

pub use signature::{
    sign, verify, SignatureError, DEFAULT_TOLERANCE, DELIVERY_HEADER, EVENT_HEADER,
    SIGNATURE_HEADER,
};
pub use store::repo::{DeliveryState, WebhookDelivery as Delivery};
pub use store::WebhookId;
pub use url_policy::{UrlPolicy, MAX_URL_LEN};

use crate::{community::CommunityRef, Actor, AuditAction};

/// Webhooks one community may register: each event is delivered to each,
/// so this bounds what one audit row costs.
pub const MAX_WEBHOOKS_PER_COMMUNITY: usize = 10;
/// Longest description accepted (the column's limit).
pub const MAX_DESCRIPTION_LEN: usize = 500;
/// Most deliveries one page of the log returns.
pub const MAX_PAGE: u32 = 100;

/// What a webhook can be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEvent {
    RoleGranted,
    RoleRemoved,
    WalletLinked,
    WalletUnlinked,
    MemberJoined,
    MemberLeft,
    /// A rule was created, enabled, disabled or deleted; `data.action` says
    /// which.
    RuleChanged,
}

impl WebhookEvent {
    pub const ALL: &'static [WebhookEvent] = &[
        WebhookEvent::RoleGranted,
        WebhookEvent::RoleRemoved,
        WebhookEvent::WalletLinked,
        WebhookEvent::WalletUnlinked,
        WebhookEvent::MemberJoined,
        WebhookEvent::MemberLeft,
        WebhookEvent::RuleChanged,
    ];

    /// The name receivers see (`type` in the body, `Gatehouse-Event`).
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::RoleGranted => "role.granted",
            WebhookEvent::RoleRemoved => "role.removed",
            WebhookEvent::WalletLinked => "wallet.linked",
            WebhookEvent::WalletUnlinked => "wallet.unlinked",
            WebhookEvent::MemberJoined => "member.joined",
            WebhookEvent::MemberLeft => "member.left",
            WebhookEvent::RuleChanged => "rule.changed",
        }
    }

    /// The event an audit action is delivered as, if any: the one place
    /// that decides what webhooks hear.
    pub const fn from_audit(action: AuditAction) -> Option<WebhookEvent> {
        match action {
            AuditAction::RoleGranted => Some(WebhookEvent::RoleGranted),
            AuditAction::RoleRemoved => Some(WebhookEvent::RoleRemoved),
            AuditAction::WalletLinked => Some(WebhookEvent::WalletLinked),
            AuditAction::WalletUnlinked => Some(WebhookEvent::WalletUnlinked),
            AuditAction::MemberJoined => Some(WebhookEvent::MemberJoined),
            AuditAction::MemberLeft => Some(WebhookEvent::MemberLeft),
            AuditAction::RuleCreated
            | AuditAction::RuleEnabled
            | AuditAction::RuleDisabled
            | AuditAction::RuleUpdated
            | AuditAction::RuleDeleted => Some(WebhookEvent::RuleChanged),
            // Listed rather than matched by `_`, so that a new audit action
            // does not compile until someone decides whether webhooks hear it.
            AuditAction::CommunityProvisioned
            | AuditAction::CommunitySeen
            | AuditAction::CommunityReactivated
            | AuditAction::CommunityDeactivated
            | AuditAction::MemberUpdated
            | AuditAction::BadgeDefined
            | AuditAction::BadgeAwarded
            | AuditAction::BenchVisit
            | AuditAction::WebhookRegistered
            | AuditAction::WebhookDeleted
            | AuditAction::MembersSynced
            | AuditAction::BadgeRevoked
            | AuditAction::ScoreChanged
            | AuditAction::RecheckRequested
            | AuditAction::CommunitySettingsChanged
            | AuditAction::ApiKeyCreated
            | AuditAction::ApiKeyRevoked
            | AuditAction::DeadLetterReplayed => None,
        }
    }

    /// Every (audit action, event) pair, as the store's dispatch query
    /// takes them.
    pub fn vocabulary() -> Vec<(&'static str, &'static str)> {
        AuditAction::ALL
            .iter()
            .filter_map(|action| {
                WebhookEvent::from_audit(*action).map(|event| (action.as_str(), event.as_str()))
            })
            .collect()
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event name that is not one of [`WebhookEvent::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}; known events: {known}", known = known_events())]
pub struct UnknownEvent(pub String);

fn known_events() -> String {
    WebhookEvent::ALL
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for WebhookEvent {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookEvent::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEvent(s.to_owned()))
    }
}

/// An endpoint to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub description: String,
}

/// A registered endpoint. It has no secret: that is shown once, by
/// [`register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub description: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl From<WebhookRow> for Webhook {
    fn from(row: WebhookRow) -> Self {
        let events = row
            .events
            .iter()
            .filter_map(|name| match name.parse() {
                Ok(event) => Some(event),
                Err(e) => {
                    // Written by a newer version; this one cannot deliver it.
                    tracing::warn!(webhook = %row.id, error = %e, "stored webhook event unknown to this version; ignored");
                    None
                }
            })
            .collect();
        Webhook {
            id: row.id,
            url: row.url,
            events,
            description: row.description,
            active: row.active,
            created_at: row.created_at,
        }
    }
}

/// A new webhook and its signing secret, which is never shown again.
#[derive(Clone, Debug)]
pub struct Registered {
    pub webhook: Webhook,
    pub secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request is wrong in `field`; nothing was stored.
    #[error("{field} {problem}; nothing was stored")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("no webhook {0} in this community")]
    NotFound(WebhookId),
    #[error("this community already has {limit} webhooks, the most allowed; delete one first")]
    TooMany { limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// Validates and stores an endpoint with a fresh secret, and audits it.
pub async fn register(
    store: &Store,
    community: CommunityRef,
    actor: &Actor,
    new: &NewWebhook,
    policy: &UrlPolicy,
) -> Result<Registered, WebhookError> {
    let url = policy.check(&new.url).map_err(|p| invalid("url", p))?;
    let mut events = new.events.clone();
    events.sort_unstable();
    events.dedup();
    if events.is_empty() {
        return Err(invalid(
            "events",
            format!("must name at least one event ({})", known_events()),
        ));
    }
    let description = new.description.trim();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    let secret = new_secret();
    let tx = store.begin(community.tenant).await?;
    if tx.webhooks().list().await?.len() >= MAX_WEBHOOKS_PER_COMMUNITY {
        return Err(WebhookError::TooMany {
            limit: MAX_WEBHOOKS_PER_COMMUNITY,
        });
    }
    let row = match tx
        .webhooks()
        .create(&NewWebhookRow {
            url: url.to_string(),
            events: events.iter().map(|e| e.as_str().to_owned()).collect(),
            secret: secret.clone(),
            description: description.to_owned(),
        })
        .await
    {
        Ok(row) => row,
        Err(StoreError::Conflict { .. }) => {
            return Err(invalid("url", "is already registered in this community"));
        }
        Err(e) => return Err(e.into()),
    };
    let entry = actor
        .entry(AuditAction::WebhookRegistered)
        .target("webhook", row.id.to_string())
        .metadata(json!({
            "origin": url.origin().ascii_serialization(),
            "events": row.events,
            "description": row.description,
        }));
    tx.audit().append(&entry).await?;
    tx.commit().await?;
    // The origin only: a path or query may carry the receiver's token.
    tracing::info!(webhook = %row.id, origin = %url.origin().ascii_serialization(), "webhook registered");
    Ok(Registered {
        webhook: Webhook::from(row),
        secret,
    })
}

/// The community's webhooks, oldest first.
pub async fn list(store: &Store, community: CommunityRef) -> Result<Vec<Webhook>, WebhookError> {
    let tx = store.begin(community.tenant).await?;
    let rows = tx.webhooks().list().await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(Webhook::from).collect())
}

/// Deletes a webhook and its delivery log; deliveries in flight are
/// dropped. Audited.
pub async fn delete(
    store: &Store,
    community: CommunityRef,
    actor: &Actor,
    id: WebhookId,
) -> Result<Webhook, WebhookError> {
    let tx = store.begin(community.tenant).await?;
    let row = tx
        .webhooks()
        .delete(id)
        .await?
        .ok_or(WebhookError::NotFound(id))?;
    let entry = actor
        .entry(AuditAction::WebhookDeleted)
        .target("webhook", id.to_string())
        .metadata(json!({ "events": row.events }));
    tx.audit().append(&entry).await?;
    tx.commit().await?;
    Ok(Webhook::from(row))
}

/// A webhook's delivery log, newest first: `limit` (1 to [`MAX_PAGE`])
/// deliveries older than delivery `before`, or the newest.
pub async fn deliveries(
    store: &Store,
    community: CommunityRef,
    id: WebhookId,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<Delivery>, WebhookError> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    if before.is_some_and(|b| b <= 0) {
        return Err(invalid("before", "must be a delivery id (positive)"));
    }
    let tx = store.begin(community.tenant).await?;
    if tx.webhooks().get(id).await?.is_none() {
        return Err(WebhookError::NotFound(id));
    }
    let log = tx
        .webhooks()
        .deliveries(id, before, i64::from(limit))
        .await?;
    tx.commit().await?;
    Ok(log)
}

/// 32 random bytes, hex, with a prefix that makes a leaked one easy to
/// recognise (and to search for in a repository).
fn new_secret() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(format!("whsec_{}", hex::encode(bytes)))
}

/// The body of one delivery:
///
/// ```json
/// {"id": "<delivery id, stable across retries>",
///  "type": "member.joined",
///  "occurred_at": "2024-05-01T12:00:00.000Z",
///  "community": {"guild_id": "123"},
///  "data": {"action": "member.joined",
///           "actor": {"type": "system", "id": null},
///           "target": {"type": "profile", "id": "…"},
///           "details": {…what the audit entry recorded…}}}
/// ```
///
/// `data.action` is the audit action (`rule.enabled` for a `rule.changed`);
/// `details` never carries the actor's IP address or Gatehouse's internal
/// event ids.
pub fn event_body(
    delivery: Uuid,
    event: &str,
    guild: GuildId,
    audit: &AuditRecord,
) -> serde_json::Value {
    let mut details = audit.metadata.clone();
    if let Some(fields) = details.as_object_mut() {
        fields.remove("event_id");
    }
    let target = match (&audit.target_type, &audit.target_id) {
        (Some(kind), Some(id)) => json!({ "type": kind, "id": id }),
        _ => serde_json::Value::Null,
    };
    json!({
        "id": delivery,
        "type": event,
        "occurred_at": audit.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "community": { "guild_id": guild.to_string() },
        "data": {
            "action": audit.action,
            "actor": { "type": audit.actor_type.as_str(), "id": audit.actor_id },
            "target": target,
            "details": details,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use store::{repo::ActorType, TenantId};

    use super::*;

    #[test]
    fn event_names_round_trip_and_unknown_ones_list_the_known() {
        for event in WebhookEvent::ALL {
            assert_eq!(event.as_str().parse::<WebhookEvent>(), Ok(*event));
        }
        let e = "member.exploded".parse::<WebhookEvent>().unwrap_err();
        assert!(e.to_string().contains("role.granted"), "{e}");
    }

    #[test]
    fn audit_actions_map_onto_the_issues_events() {
        let vocabulary = WebhookEvent::vocabulary();
        let pairs: HashSet<_> = vocabulary.iter().copied().collect();
        for expected in [
            ("member.joined", "member.joined"),
            ("member.left", "member.left"),
            ("wallet.linked", "wallet.linked"),
            ("role.granted", "role.granted"),
            ("role.removed", "role.removed"),
            ("rule.created", "rule.changed"),
            ("rule.enabled", "rule.changed"),
            ("rule.disabled", "rule.changed"),
            ("rule.deleted", "rule.changed"),
        ] {
            assert!(pairs.contains(&expected), "{expected:?} missing");
        }
        // Bookkeeping is not an event: no webhook hears its own registration.
        for quiet in ["webhook.registered", "member.updated", "bench.visit"] {
            assert!(vocabulary.iter().all(|(a, _)| *a != quiet), "{quiet}");
        }
    }

    #[test]
    fn the_body_carries_the_event_and_the_audit_entry_but_no_ip_or_internal_ids() {
        let audit = AuditRecord {
            id: 7,
            community_id: TenantId::from(Uuid::nil()),
            actor_type: ActorType::User,
            actor_id: Some("42".into()),
            action: "wallet.linked".into(),
            target_type: Some("profile".into()),
            target_id: Some("p-1".into()),
            metadata: json!({"wallet": "0xabc", "event_id": "internal"}),
            ip_address: Some("203.0.113.9".parse().unwrap()),
            created_at: DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let id = Uuid::from_u128(1);
        let guild = GuildId::new(99).unwrap();
        let body = event_body(id, "wallet.linked", guild, &audit);
        assert_eq!(body["id"], id.to_string());
        assert_eq!(body["type"], "wallet.linked");
        assert_eq!(body["occurred_at"], "2024-05-01T12:00:00.500Z");
        assert_eq!(body["community"]["guild_id"], "99");
        assert_eq!(body["data"]["actor"], json!({"type": "user", "id": "42"}));
        assert_eq!(
            body["data"]["target"],
            json!({"type": "profile", "id": "p-1"})
        );
        assert_eq!(body["data"]["details"], json!({"wallet": "0xabc"}));
        let text = body.to_string();
        assert!(
            !text.contains("203.0.113.9") && !text.contains("internal"),
            "{text}"
        );
    }

    #[test]
    fn secrets_are_fresh_and_long() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("whsec_") && a.expose().len() == 70);
    }
}
