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

/// One thing that happened, to be appended to the tenant's audit log.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub actor_type: ActorType,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub metadata: serde_json::Value,
    pub ip_address: Option<IpAddr>,
}

impl AuditEntry {
    /// An entry by the system itself with empty metadata.
    pub fn system(action: impl Into<String>) -> Self {
        AuditEntry {
            actor_type: ActorType::System,
            actor_id: None,
            action: action.into(),
            target_type: None,
            target_id: None,
            metadata: serde_json::json!({}),
            ip_address: None,
        }
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
                    (&entry.action, Type::TEXT),
                    (&entry.target_type, Type::TEXT),
                    (&entry.target_id, Type::TEXT),
                    (&entry.metadata, Type::JSONB),
                    (&entry.ip_address, Type::INET),
                ],
            )
            .await?;
        AuditRecord::from_row(&row)
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
