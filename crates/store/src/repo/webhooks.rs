//! A community's webhooks and their delivery log.
//!
//! The audit log is the outbox (see `migrations/0010_webhooks.sql` for why
//! the cursor is a transaction id and not a row id): [`Webhooks::enqueue`]
//! turns the audit rows a webhook has not seen yet into pending deliveries,
//! and the worker records each attempt with [`Webhooks::record_attempt`].
//! What an event *is* — which audit actions a webhook hears — is the domain
//! layer's vocabulary, handed in as (action, event) pairs.

use chrono::{DateTime, Utc};
use settings::Secret;
use tokio_postgres::{types::Type, Row};
use uuid::Uuid;
use wire::GuildId;

use super::{col, db_enum, id_col, AuditRecord};
use crate::{StoreError, TenantId, TenantTx, WebhookId};

/// A registered endpoint, as anyone may read it: the signing secret is not
/// part of it (see [`DeliveryJob`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub id: WebhookId,
    pub community_id: TenantId,
    pub url: String,
    /// Event names, as the domain layer spells them.
    pub events: Vec<String>,
    pub description: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl Webhook {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Webhook {
            id: col(row, "id")?,
            community_id: TenantId::from(col::<Uuid>(row, "community_id")?),
            url: col(row, "url")?,
            events: col(row, "events")?,
            description: col(row, "description")?,
            active: col(row, "active")?,
            created_at: col(row, "created_at")?,
        })
    }
}

/// Never `secret`: reads return what may be shown.
const COLUMNS: &str = "id, community_id, url, events, description, active, created_at";

/// A webhook to store. The domain layer validates it and makes the secret.
#[derive(Clone, Debug)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub secret: Secret,
    pub description: String,
}

db_enum!(
    /// Where a delivery stands: `pending` (not yet accepted by the
    /// endpoint, attempts remain), `delivered` (it answered 2xx) or
    /// `failed` (attempts exhausted or a final refusal; the message went to
    /// the dead letters).
    DeliveryState {
        Pending = "pending",
        Delivered = "delivered",
        Failed = "failed",
    }
);

/// One event for one webhook, with the outcome of its attempts so far.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDelivery {
    /// Orders the log (newest first) and pages it.
    pub id: i64,
    pub webhook_id: WebhookId,
    /// The event's id for receivers and the `Gatehouse-Delivery` header:
    /// the same on every attempt.
    pub public_id: Uuid,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: i32,
    /// The endpoint's last HTTP status, if it answered at all.
    pub last_status: Option<i32>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
}

impl WebhookDelivery {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(WebhookDelivery {
            id: col(row, "id")?,
            webhook_id: col(row, "webhook_id")?,
            public_id: col(row, "public_id")?,
            event_type: col(row, "event_type")?,
            state: col::<&str>(row, "state")?.parse()?,
            attempts: col(row, "attempts")?,
            last_status: col(row, "last_status")?,
            last_error: col(row, "last_error")?,
            created_at: col(row, "created_at")?,
            last_attempt_at: col(row, "last_attempt_at")?,
            finished_at: col(row, "finished_at")?,
        })
    }
}

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.public_id, d.event_type, d.state, \
     d.attempts, d.last_status, d.last_error, d.created_at, d.last_attempt_at, d.finished_at";

/// An active webhook's position in the audit log, locked for this
/// transaction (see [`Webhooks::lock_cursors`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCursor {
    pub webhook_id: WebhookId,
    pub events: Vec<String>,
    /// A transaction id (`xid8`) as text: it only ever travels back into SQL.
    scanned_tx_id: String,
    scanned_audit_id: i64,
}

/// The cursors of a community's active webhooks and how far the log may be
/// read: every transaction below `horizon` has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchScan {
    pub cursors: Vec<WebhookCursor>,
    horizon: String,
}

/// What one [`Webhooks::enqueue`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Audit rows this webhook hears, read past its cursor.
    pub matched: u64,
    /// New deliveries (a row already delivered to this webhook adds none).
    pub created: u64,
    /// True when the page was full and more rows may follow.
    pub more: bool,
}

/// Everything needed to make one delivery attempt.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery: WebhookDelivery,
    pub url: String,
    /// The signing key. Only the worker's delivery path reads it.
    pub secret: Secret,
    pub webhook_active: bool,
    pub guild_id: GuildId,
    pub audit: AuditRecord,
}

/// How one attempt went, as [`Webhooks::record_attempt`] stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The endpoint accepted it (2xx).
    pub delivered: bool,
    /// A later attempt might succeed (5xx, 408, 429, no answer).
    pub retryable: bool,
}

pub struct Webhooks<'t> {
    tx: &'t TenantTx,
}

impl<'t> Webhooks<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Webhooks { tx }
    }

    /// Registers an endpoint. The same URL twice in one community is a
    /// [`StoreError::Conflict`].
    pub async fn create(&self, new: &NewWebhook) -> Result<Webhook, StoreError> {
        let sql = format!(
            "INSERT INTO webhooks (community_id, url, events, secret, description)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING {COLUMNS}"
        );
        let row = self
            .tx
            .query_one(
                "registering a webhook",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&new.url, Type::TEXT),
                    (&new.events, Type::TEXT_ARRAY),
                    (&new.secret.expose(), Type::TEXT),
                    (&new.description, Type::TEXT),
                ],
            )
            .await?;
        Webhook::from_row(&row)
    }

    /// Every webhook of the community, oldest first.
    pub async fn list(&self) -> Result<Vec<Webhook>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhooks WHERE community_id = $1 ORDER BY created_at, id"
        );
        self.tx
            .query(
                "listing webhooks",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?
            .iter()
            .map(Webhook::from_row)
            .collect()
    }

    pub async fn get(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE community_id = $1 AND id = $2");
        self.tx
            .query_opt(
                "reading a webhook",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&id, Type::UUID)],
            )
            .await?
            .as_ref()
            .map(Webhook::from_row)
            .transpose()
    }

    /// Deletes a webhook and, with it, its delivery log. Deliveries still
    /// in flight find nothing and are dropped.
    pub async fn delete(&self, id: WebhookId) -> Result<Option<Webhook>, StoreError> {
        let sql =
            format!("DELETE FROM webhooks WHERE community_id = $1 AND id = $2 RETURNING {COLUMNS}");
        self.tx
            .query_opt(
                "deleting a webhook",
                &sql,
                &[(self.tx.tenant().as_uuid(), Type::UUID), (&id, Type::UUID)],
            )
            .await?
            .as_ref()
            .map(Webhook::from_row)
            .transpose()
    }

    /// A webhook's deliveries, newest first, those older than `before` (a
    /// delivery id) when given.
    pub async fn deliveries(
        &self,
        webhook: WebhookId,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             WHERE d.community_id = $1 AND d.webhook_id = $2 AND ($3::int8 IS NULL OR d.id < $3)
             ORDER BY d.id DESC LIMIT $4"
        );
        self.tx
            .query(
                "reading a webhook's delivery log",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&webhook, Type::UUID),
                    (&before, Type::INT8),
                    (&limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(WebhookDelivery::from_row)
            .collect()
    }

    /// The active webhooks' cursors, locked until this transaction ends, and
    /// the horizon below which every transaction has finished. A webhook
    /// another dispatcher holds is skipped, not waited for: it is being
    /// served.
    pub async fn lock_cursors(&self) -> Result<DispatchScan, StoreError> {
        // The horizon is read first, in its own statement: the rows read
        // later by `enqueue` come from a newer snapshot, which sees every
        // transaction below it as finished.
        let horizon = self
            .tx
            .query_one(
                "reading the delivery horizon",
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon",
                &[],
            )
            .await?;
        let horizon: String = col(&horizon, "horizon")?;
        let rows = self
            .tx
            .query(
                "locking webhook cursors",
                "SELECT id, events, scanned_tx_id::text AS scanned_tx_id, scanned_audit_id
                   FROM webhooks
                  WHERE community_id = $1 AND active AND scanned_tx_id < $2::xid8
                  ORDER BY id
                  FOR NO KEY UPDATE SKIP LOCKED",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&horizon, Type::TEXT),
                ],
            )
            .await?;
        let cursors = rows
            .iter()
            .map(|row| {
                Ok(WebhookCursor {
                    webhook_id: col(row, "id")?,
                    events: col(row, "events")?,
                    scanned_tx_id: col(row, "scanned_tx_id")?,
                    scanned_audit_id: col(row, "scanned_audit_id")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(DispatchScan { cursors, horizon })
    }

    /// Turns up to `limit` audit rows past `cursor` (and below the scan's
    /// horizon) that the webhook hears into pending deliveries, and moves
    /// the cursor past them. `vocabulary` pairs each audit action with the
    /// event it is delivered as.
    pub async fn enqueue(
        &self,
        scan: &DispatchScan,
        cursor: &WebhookCursor,
        vocabulary: &[(&str, &str)],
        limit: i64,
    ) -> Result<Enqueued, StoreError> {
        let actions: Vec<&str> = vocabulary.iter().map(|(a, _)| *a).collect();
        let events: Vec<&str> = vocabulary.iter().map(|(_, e)| *e).collect();
        let row = self
            .tx
            .query_one(
                "turning audit rows into webhook deliveries",
                "WITH picked AS (
                     SELECT a.id, a.tx_id, m.event
                       FROM audit_logs a
                       JOIN unnest($3::text[], $4::text[]) AS m(action, event) ON m.action = a.action
                      WHERE a.community_id = $1
                        AND (a.tx_id, a.id) > ($5::xid8, $6)
                        AND a.tx_id < $7::xid8
                        AND m.event = ANY($8)
                      ORDER BY a.tx_id, a.id
                      LIMIT $9
                 ), created AS (
                     INSERT INTO webhook_deliveries (community_id, webhook_id, audit_id, event_type)
                     SELECT $1, $2, id, event FROM picked
                     ON CONFLICT (webhook_id, audit_id) DO NOTHING
                     RETURNING 1
                 ), last AS (
                     SELECT tx_id::text AS tx_id, id FROM picked ORDER BY tx_id DESC, id DESC LIMIT 1
                 )
                 SELECT (SELECT count(*) FROM picked) AS matched,
                        (SELECT count(*) FROM created) AS created,
                        (SELECT tx_id FROM last) AS last_tx_id,
                        (SELECT id FROM last) AS last_audit_id",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&cursor.webhook_id, Type::UUID),
                    (&actions, Type::TEXT_ARRAY),
                    (&events, Type::TEXT_ARRAY),
                    (&cursor.scanned_tx_id, Type::TEXT),
                    (&cursor.scanned_audit_id, Type::INT8),
                    (&scan.horizon, Type::TEXT),
                    (&cursor.events, Type::TEXT_ARRAY),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        let matched: i64 = col(&row, "matched")?;
        let created: i64 = col(&row, "created")?;
        let more = matched >= limit;
        // A full page stops at its last row; otherwise everything below the
        // horizon has been read.
        let (next_tx, next_id) = if more {
            let tx_id: Option<String> = col(&row, "last_tx_id")?;
            let id: Option<i64> = col(&row, "last_audit_id")?;
            match (tx_id, id) {
                (Some(tx_id), Some(id)) => (tx_id, id),
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "webhook dispatch",
                        reason: "a full page without a last row".into(),
                    })
                }
            }
        } else {
            (scan.horizon.clone(), 0)
        };
        self.tx
            .query(
                "moving a webhook's cursor",
                // Only forward: a cursor that starts at its registering
                // transaction may be ahead of an older horizon.
                "UPDATE webhooks SET scanned_tx_id = $3::xid8, scanned_audit_id = $4
                  WHERE community_id = $1 AND id = $2
                    AND (scanned_tx_id, scanned_audit_id) < ($3::xid8, $4)",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&cursor.webhook_id, Type::UUID),
                    (&next_tx, Type::TEXT),
                    (&next_id, Type::INT8),
                ],
            )
            .await?;
        Ok(Enqueued {
            matched: u64::try_from(matched).unwrap_or(0),
            created: u64::try_from(created).unwrap_or(0),
            more,
        })
    }

    /// Pending deliveries whose message JetStream has not confirmed
    /// storing yet, oldest first.
    pub async fn unpublished(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        let rows = self
            .tx
            .query(
                "reading unpublished webhook deliveries",
                "SELECT id FROM webhook_deliveries
                  WHERE community_id = $1 AND published_at IS NULL AND state = 'pending'
                  ORDER BY id LIMIT $2",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        rows.iter().map(|row| col(row, "id")).collect()
    }

    /// Records that JetStream stored these deliveries' messages.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let rows = self
            .tx
            .query(
                "marking webhook deliveries published",
                "UPDATE webhook_deliveries SET published_at = now()
                  WHERE community_id = $1 AND id = ANY($2) AND published_at IS NULL
                  RETURNING id",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&ids, Type::INT8_ARRAY),
                ],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    /// The delivery with its webhook's URL and secret, its audit row and
    /// the community's guild; `None` when the webhook (and so the delivery)
    /// was deleted.
    pub async fn delivery_job(&self, delivery: i64) -> Result<Option<DeliveryJob>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS}, d.audit_id, w.url, w.secret, w.active AS webhook_active,
                    c.discord_guild_id
               FROM webhook_deliveries d
               JOIN webhooks w ON w.community_id = d.community_id AND w.id = d.webhook_id
               JOIN communities c ON c.id = d.community_id
              WHERE d.community_id = $1 AND d.id = $2"
        );
        let Some(row) = self
            .tx
            .query_opt(
                "reading a webhook delivery",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&delivery, Type::INT8),
                ],
            )
            .await?
        else {
            return Ok(None);
        };
        let audit_id: i64 = col(&row, "audit_id")?;
        let audit = self
            .tx
            .audit()
            .get(audit_id)
            .await?
            .ok_or(StoreError::NotFound {
                context: "reading a webhook delivery's audit row",
            })?;
        Ok(Some(DeliveryJob {
            delivery: WebhookDelivery::from_row(&row)?,
            url: col(&row, "url")?,
            secret: Secret::new(col::<String>(&row, "secret")?),
            webhook_active: col(&row, "webhook_active")?,
            guild_id: id_col(&row, "discord_guild_id")?,
            audit,
        }))
    }

    /// Counts an attempt and settles the delivery: delivered, pending (a
    /// retryable failure with attempts left under `max_attempts`) or
    /// failed. `None` when it was no longer pending (settled meanwhile by
    /// another attempt, or deleted).
    pub async fn record_attempt(
        &self,
        delivery: i64,
        attempt: &AttemptRecord,
        max_attempts: u32,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        let status = attempt.status.map(i32::from);
        // Bounded like the column; an error text is a one-line summary.
        let error: Option<String> = attempt
            .error
            .as_ref()
            .map(|e| e.chars().take(1000).collect());
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let sql = format!(
            "UPDATE webhook_deliveries d
                SET attempts = d.attempts + 1,
                    last_status = $3,
                    last_error = $4,
                    last_attempt_at = now(),
                    state = CASE
                        WHEN $5 THEN 'delivered'
                        WHEN $6 AND d.attempts + 1 < $7 THEN 'pending'
                        ELSE 'failed' END,
                    finished_at = CASE
                        WHEN $5 OR NOT ($6 AND d.attempts + 1 < $7) THEN now() END
              WHERE d.community_id = $1 AND d.id = $2 AND d.state = 'pending'
              RETURNING {DELIVERY_COLUMNS}"
        );
        self.tx
            .query_opt(
                "recording a webhook delivery attempt",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&delivery, Type::INT8),
                    (&status, Type::INT4),
                    (&error, Type::TEXT),
                    (&attempt.delivered, Type::BOOL),
                    (&attempt.retryable, Type::BOOL),
                    (&max_attempts, Type::INT4),
                ],
            )
            .await?
            .as_ref()
            .map(WebhookDelivery::from_row)
            .transpose()
    }
}
