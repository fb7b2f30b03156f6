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
    RoleGranted,
    RoleRemoved,
    RuleCreated,
    RuleEnabled,
    RuleDisabled,
    RuleDeleted,
    BadgeDefined,
    BadgeAwarded,
    /// A load-test visit (`gatehouse bench db`).
    BenchVisit,
    WebhookRegistered,
    WebhookDeleted,
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
        AuditAction::RoleGranted,
        AuditAction::RoleRemoved,
        AuditAction::RuleCreated,
        AuditAction::RuleEnabled,
        AuditAction::RuleDisabled,
        AuditAction::RuleDeleted,
        AuditAction::BadgeDefined,
        AuditAction::BadgeAwarded,
        AuditAction::BenchVisit,
        AuditAction::WebhookRegistered,
        AuditAction::WebhookDeleted,
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
            AuditAction::RoleGranted => "role.granted",
            AuditAction::RoleRemoved => "role.removed",
            AuditAction::RuleCreated => "rule.created",
            AuditAction::RuleEnabled => "rule.enabled",
            AuditAction::RuleDisabled => "rule.disabled",
            AuditAction::RuleDeleted => "rule.deleted",
            AuditAction::BadgeDefined => "badge.defined",
            AuditAction::BadgeAwarded => "badge.awarded",
            AuditAction::BenchVisit => "bench.visit",
            AuditAction::WebhookRegistered => "webhook.registered",
            AuditAction::WebhookDeleted => "webhook.deleted",
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

    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
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

const COLUMNS: &str = "id, community_id, actor_type, actor_id, action, target_type, target_id, \
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
        let sql = format!(
            "INSERT INTO audit_logs
                (community_id, actor_type, actor_id, action, target_type, target_id, metadata, ip_address)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING {COLUMNS}"
        );
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
}
