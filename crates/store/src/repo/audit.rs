use std::net::IpAddr;

use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};
use uuid::Uuid;

use super::{col, db_enum};
use crate::{StoreError, TenantId, TenantTx};

db_enum!(
    /// Who did it.
    ActorType {
        User = "user",
        System = "system",
        Admin = "admin",
    }
);

/// What happened: the audit log's closed vocabulary. Every writer names an
/// action from this list, so a reader (the dashboard, an export, a test) can
/// rely on the set; the log is a record, never an input to decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// The bot joined the guild for the first time.
    CommunityProvisioned,
    /// The bot was seen in a guild it already served (a reconnect).
    CommunitySeen,
    /// The bot came back to a guild it had left.
    CommunityReactivated,
    /// The bot was removed from the guild.
    CommunityDeactivated,
    MemberJoined,
    MemberUpdated,
    MemberLeft,
    WalletLinked,
    /// Unlinked by the member, or moved to another member who proved it.
    WalletUnlinked,
    RoleGranted,
    RoleRemoved,
    RuleCreated,
    RuleEnabled,
    RuleDisabled,
    RuleDeleted,
    BadgeDefined,
    BadgeAwarded,
    RuleUpdated,
    BadgeRevoked,
    ScoreChanged,
    RecheckRequested,
    CommunitySettingsChanged,
    ApiKeyCreated,
    ApiKeyRevoked,
    /// A load-test visit (`gatehouse bench db`).
    BenchVisit,
    WebhookRegistered,
    WebhookDeleted,
    /// The community's member list was synced from Discord in full.
    MembersSynced,
    /// The operator put a dead letter back on the subject it came from
    /// (`gatehouse dead-letters replay`).
    DeadLetterReplayed,
}

impl AuditAction {
    pub const ALL: &'static [AuditAction] = &[
        AuditAction::CommunityProvisioned,
        AuditAction::CommunitySeen,
        AuditAction::CommunityReactivated,
        AuditAction::CommunityDeactivated,
        AuditAction::MemberJoined,
        AuditAction::MemberUpdated,
        AuditAction::MemberLeft,
        AuditAction::WalletLinked,
        AuditAction::WalletUnlinked,
        AuditAction::RoleGranted,
        AuditAction::RoleRemoved,
        AuditAction::RuleCreated,
        AuditAction::RuleEnabled,
        AuditAction::RuleDisabled,
        AuditAction::RuleDeleted,
        AuditAction::BadgeDefined,
        AuditAction::BadgeAwarded,
        AuditAction::RuleUpdated,
        AuditAction::BadgeRevoked,
        AuditAction::ScoreChanged,
        AuditAction::RecheckRequested,
        AuditAction::CommunitySettingsChanged,
        AuditAction::ApiKeyCreated,
        AuditAction::ApiKeyRevoked,
        AuditAction::BenchVisit,
        AuditAction::WebhookRegistered,
        AuditAction::WebhookDeleted,
        AuditAction::MembersSynced,
        AuditAction::DeadLetterReplayed,
    ];

    /// The text stored in `audit_logs.action`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::CommunityProvisioned => "community.provisioned",
            AuditAction::CommunitySeen => "community.seen",
            AuditAction::CommunityReactivated => "community.reactivated",
            AuditAction::CommunityDeactivated => "community.deactivated",
            AuditAction::MemberJoined => "member.joined",
            AuditAction::MemberUpdated => "member.updated",
            AuditAction::MemberLeft => "member.left",
            AuditAction::WalletLinked => "wallet.linked",
            AuditAction::WalletUnlinked => "wallet.unlinked",
            AuditAction::RoleGranted => "role.granted",
            AuditAction::RoleRemoved => "role.removed",
            AuditAction::RuleCreated => "rule.created",
            AuditAction::RuleEnabled => "rule.enabled",
            AuditAction::RuleDisabled => "rule.disabled",
            AuditAction::RuleDeleted => "rule.deleted",
            AuditAction::BadgeDefined => "badge.defined",
            AuditAction::BadgeAwarded => "badge.awarded",
            AuditAction::RuleUpdated => "rule.updated",
            AuditAction::BadgeRevoked => "badge.revoked",
            AuditAction::ScoreChanged => "score.changed",
            AuditAction::RecheckRequested => "member.recheck_requested",
            AuditAction::CommunitySettingsChanged => "community.settings_changed",
            AuditAction::ApiKeyCreated => "api_key.created",
            AuditAction::ApiKeyRevoked => "api_key.revoked",
            AuditAction::BenchVisit => "bench.visit",
            AuditAction::WebhookRegistered => "webhook.registered",
            AuditAction::WebhookDeleted => "webhook.deleted",
            AuditAction::MembersSynced => "community.members_synced",
            AuditAction::DeadLetterReplayed => "dead_letter.replayed",
        }
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuditAction {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuditAction::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt {
                what: "audit action",
                reason: format!("unknown value {s:?}"),
            })
    }
}

/// One thing that happened, to be appended to the tenant's audit log.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub actor_type: ActorType,
    pub actor_id: Option<String>,
    pub action: AuditAction,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub metadata: serde_json::Value,
    pub ip_address: Option<IpAddr>,
}

impl AuditEntry {
    /// An entry by the system itself with empty metadata.
    pub fn system(action: AuditAction) -> Self {
        AuditEntry {
            actor_type: ActorType::System,
            actor_id: None,
            action,
            target_type: None,
            target_id: None,
            metadata: serde_json::json!({}),
            ip_address: None,
        }
    }

    /// Done by `actor` (an admin's name, a member's Discord id, an API
    /// key's id) rather than by the system.
    pub fn by(mut self, actor_type: ActorType, actor_id: impl Into<String>) -> Self {
        self.actor_type = actor_type;
        self.actor_id = Some(actor_id.into());
        self
    }

    pub fn target(mut self, kind: impl Into<String>, id: impl Into<String>) -> Self {
        self.target_type = Some(kind.into());
        self.target_id = Some(id.into());
        self
    }

    /// Targets a row of `kind` whose id the statement writing the entry
    /// fills in (see `Profiles::apply_locked_member_events_audited`).
    pub fn target_kind(mut self, kind: impl Into<String>) -> Self {
        self.target_type = Some(kind.into());
        self.target_id = None;
        self
    }

    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Audit entries column by column, as the statements that insert many at
/// once take them (`append_audit_entries`, `apply_member_events_audited`).
pub(super) struct EntryColumns<'a> {
    pub actor_types: Vec<&'a str>,
    pub actor_ids: Vec<Option<&'a str>>,
    pub actions: Vec<&'a str>,
    pub target_types: Vec<Option<&'a str>>,
    pub target_ids: Vec<Option<&'a str>>,
    pub metadata: Vec<&'a serde_json::Value>,
}

impl<'a> EntryColumns<'a> {
    pub(super) fn of(entries: &'a [AuditEntry]) -> Self {
        EntryColumns {
            actor_types: entries.iter().map(|e| e.actor_type.as_str()).collect(),
            actor_ids: entries.iter().map(|e| e.actor_id.as_deref()).collect(),
            actions: entries.iter().map(|e| e.action.as_str()).collect(),
            target_types: entries.iter().map(|e| e.target_type.as_deref()).collect(),
            target_ids: entries.iter().map(|e| e.target_id.as_deref()).collect(),
            metadata: entries.iter().map(|e| &e.metadata).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub community_id: TenantId,
    pub actor_type: ActorType,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub metadata: serde_json::Value,
    pub ip_address: Option<IpAddr>,
    pub created_at: DateTime<Utc>,
}

impl AuditRecord {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(AuditRecord {
            id: col(row, "id")?,
            community_id: TenantId::from(col::<Uuid>(row, "community_id")?),
            actor_type: col::<&str>(row, "actor_type")?.parse()?,
            actor_id: col(row, "actor_id")?,
            action: col(row, "action")?,
            target_type: col(row, "target_type")?,
            target_id: col(row, "target_id")?,
            metadata: col(row, "metadata")?,
            ip_address: col(row, "ip_address")?,
            created_at: col(row, "created_at")?,
        })
    }
}

/// What an audit read returns (public for the same reason as the profiles').
pub const COLUMNS: &str =
    "id, community_id, actor_type, actor_id, action, target_type, target_id, \
                       metadata, ip_address, created_at";

/// The tenant's audit log: append and read, nothing else (the runtime role
/// has no UPDATE or DELETE on it).
pub struct Audit<'t> {
    tx: &'t TenantTx,
}

impl<'t> Audit<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Audit { tx }
    }

    pub async fn append(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        // A function, planned once per server connection (migration 0019).
        let sql =
            format!("SELECT {COLUMNS} FROM append_audit_entry($1, $2, $3, $4, $5, $6, $7, $8)");
        let row = self
            .tx
            .query_one(
                "appending to the audit log",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&entry.actor_type.as_str(), Type::TEXT),
                    (&entry.actor_id, Type::TEXT),
                    (&entry.action.as_str(), Type::TEXT),
                    (&entry.target_type, Type::TEXT),
                    (&entry.target_id, Type::TEXT),
                    (&entry.metadata, Type::JSONB),
                    (&entry.ip_address, Type::INET),
                ],
            )
            .await?;
        AuditRecord::from_row(&row)
    }

    /// Appends many entries in one statement (an import, a batch).
    pub async fn append_many(&self, entries: &[AuditEntry]) -> Result<u64, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let EntryColumns {
            actor_types,
            actor_ids,
            actions,
            target_types,
            target_ids,
            metadata,
        } = EntryColumns::of(entries);
        let rows = self
            .tx
            .query(
                "appending to the audit log",
                // A function, planned once per server connection (migration 0019).
                "SELECT * FROM append_audit_entries($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&actor_types, Type::TEXT_ARRAY),
                    (&actor_ids, Type::TEXT_ARRAY),
                    (&actions, Type::TEXT_ARRAY),
                    (&target_types, Type::TEXT_ARRAY),
                    (&target_ids, Type::TEXT_ARRAY),
                    (&metadata, Type::JSONB_ARRAY),
                ],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    /// One entry by id.
    pub async fn get(&self, id: i64) -> Result<Option<AuditRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM audit_logs WHERE community_id = $1 AND id = $2");
        self.tx
            .query_opt(
                "reading an audit entry",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&id, Type::INT8)],
            )
            .await?
            .as_ref()
            .map(AuditRecord::from_row)
            .transpose()
    }

    /// The newest entries first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_logs
             WHERE community_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        self.tx
            .query(
                "reading the audit log",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(AuditRecord::from_row)
            .collect()
    }

    /// A page of the log, newest first: entries older than `filter.before`
    /// (an entry id; keyset paging, so a page never shifts while the log
    /// grows) matching every filter given.
    pub async fn page(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_logs
             WHERE community_id = $1
               AND ($2::int8 IS NULL OR id < $2)
               AND ($3::text IS NULL OR action = $3)
               AND ($4::text IS NULL OR actor_type = $4)
               AND ($5::text IS NULL OR actor_id = $5)
               AND ($6::text IS NULL OR target_id = $6)
               AND ($7::timestamptz IS NULL OR created_at >= $7)
               AND ($8::timestamptz IS NULL OR created_at < $8)
             ORDER BY id DESC LIMIT $9"
        );
        self.tx
            .query(
                "reading a page of the audit log",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&filter.before, Type::INT8),
                    (&filter.action, Type::TEXT),
                    (&filter.actor_type.map(ActorType::as_str), Type::TEXT),
                    (&filter.actor_id, Type::TEXT),
                    (&filter.target_id, Type::TEXT),
                    (&filter.since, Type::TIMESTAMPTZ),
                    (&filter.until, Type::TIMESTAMPTZ),
                    (&filter.limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(AuditRecord::from_row)
            .collect()
    }
}

/// Which audit entries [`Audit::page`] returns. `None` filters match all.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only entries with a smaller id (the previous page's last id).
    pub before: Option<i64>,
    pub action: Option<String>,
    pub actor_type: Option<ActorType>,
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    /// Inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive.
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}
