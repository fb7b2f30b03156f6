use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};

use super::col;
use wire::{RoleId, UserId};

use crate::ids::{db_id, db_id_array_text};
use crate::{StoreError, TenantTx};

/// A member as a chunk of the guild's member list has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedMember {
    pub discord_user_id: UserId,
    pub role_ids: Vec<RoleId>,
    pub joined_at: Option<DateTime<Utc>>,
}

/// One chunk of a sync: which sync (`nonce`), how many chunks it has, and
/// where in the stream it was.
#[derive(Clone, Copy, Debug)]
pub struct ChunkOf<'a> {
    pub nonce: &'a str,
    pub chunk_count: u32,
    pub seq: i64,
}

/// Where a sync stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSync {
    pub nonce: String,
    pub chunk_count: i32,
    pub chunks_received: i32,
    pub members_received: i64,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Members found gone when it completed.
    pub members_left: Option<i64>,
}

impl MemberSync {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(MemberSync {
            nonce: col(row, "nonce")?,
            chunk_count: col(row, "chunk_count")?,
            chunks_received: col(row, "chunks_received")?,
            members_received: col(row, "members_received")?,
            started_at: col(row, "started_at")?,
            completed_at: col(row, "completed_at")?,
            members_left: col(row, "members_left")?,
        })
    }

    /// Every chunk is in.
    pub fn is_complete(&self) -> bool {
        self.chunks_received >= self.chunk_count
    }
}

/// What ingesting a chunk did to its sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// The sync as it stands after the chunk.
    pub sync: MemberSync,
    /// This chunk completed it (true for exactly one chunk of a sync).
    pub completed_now: bool,
}

const COLUMNS: &str = "nonce, chunk_count, chunks_received, members_received, started_at, \
                       completed_at, members_left";

/// Syncs of the community's member list from Discord's member chunks (see
/// migration 0017). The caller claims each chunk's envelope id in the same
/// transaction, so a chunk is ingested and counted once.
pub struct MemberSyncs<'t> {
    tx: &'t TenantTx,
}

impl<'t> MemberSyncs<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        MemberSyncs { tx }
    }

    /// Ingests one chunk: every listed member's profile is created or
    /// brought to the listed state (unless an event later in the stream
    /// already changed it), and the chunk is counted towards its sync.
    /// Returns the sync as it stands after this chunk; when the chunk
    /// completes it, present members whose last event is older than the sync's first
    /// chunk and who were in no chunk are marked as left, and the community
    /// is marked synced.
    pub async fn ingest_chunk(
        &self,
        chunk: ChunkOf<'_>,
        members: &[ListedMember],
    ) -> Result<Ingested, StoreError> {
        let tenant = self.tx.tenant();
        let mut users = Vec::with_capacity(members.len());
        let mut roles = Vec::with_capacity(members.len());
        let mut joined = Vec::with_capacity(members.len());
        for m in members {
            users.push(db_id(m.discord_user_id, "discord_user_id")?);
            roles.push(db_id_array_text(&m.role_ids, "role_ids")?);
            joined.push(m.joined_at);
        }
        self.tx
            .query(
                "ingesting a chunk of the member list",
                "INSERT INTO profiles AS p
                    (community_id, discord_user_id, role_ids, joined_at, left_at, last_event_seq)
                 SELECT $1, m.user_id, m.roles::bigint[], m.joined_at, NULL, $5
                   FROM unnest($2::int8[], $3::text[], $4::timestamptz[])
                        AS m(user_id, roles, joined_at)
                 ON CONFLICT (community_id, discord_user_id) DO UPDATE
                    SET role_ids = excluded.role_ids,
                        joined_at = coalesce(p.joined_at, excluded.joined_at),
                        left_at = NULL,
                        last_event_seq = excluded.last_event_seq
                    WHERE p.last_event_seq < excluded.last_event_seq",
                &[
                    (tenant.as_uuid(), Type::UUID),
                    (&users, Type::INT8_ARRAY),
                    (&roles, Type::TEXT_ARRAY),
                    (&joined, Type::TIMESTAMPTZ_ARRAY),
                    (&chunk.seq, Type::INT8),
                ],
            )
            .await?;
        let count = i64::try_from(members.len()).unwrap_or(i64::MAX);
        let chunk_count = i32::try_from(chunk.chunk_count).unwrap_or(i32::MAX);
        let row = self
            .tx
            .query_one(
                "counting a chunk towards its sync",
                &format!(
                    "INSERT INTO member_syncs AS s
                        (community_id, nonce, chunk_count, chunks_received, members_received, first_seq)
                     VALUES ($1, $2, $3, 1, $4, $5)
                     ON CONFLICT (community_id, nonce) DO UPDATE
                        SET chunks_received = s.chunks_received + 1,
                            members_received = s.members_received + excluded.members_received,
                            first_seq = least(s.first_seq, excluded.first_seq)
                     RETURNING {COLUMNS}, first_seq"
                ),
                &[
                    (tenant.as_uuid(), Type::UUID),
                    (&chunk.nonce, Type::TEXT),
                    (&chunk_count, Type::INT4),
                    (&count, Type::INT8),
                    (&chunk.seq, Type::INT8),
                ],
            )
            .await?;
        let sync = MemberSync::from_row(&row)?;
        if !sync.is_complete() || sync.completed_at.is_some() {
            return Ok(Ingested {
                sync,
                completed_now: false,
            });
        }
        let first_seq: i64 = col(&row, "first_seq")?;
        Ok(Ingested {
            sync: self.complete(&sync.nonce, first_seq).await?,
            completed_now: true,
        })
    }

    async fn complete(&self, nonce: &str, first_seq: i64) -> Result<MemberSync, StoreError> {
        let tenant = self.tx.tenant();
        let row = self
            .tx
            .query_one(
                "completing a member sync",
                &format!(
                    "WITH gone AS (
                        UPDATE profiles SET left_at = now()
                         WHERE community_id = $1 AND left_at IS NULL AND last_event_seq < $3
                        RETURNING 1
                     ), synced AS (
                        UPDATE communities SET members_synced_at = now() WHERE id = $1
                     )
                     UPDATE member_syncs
                        SET completed_at = now(), members_left = (SELECT count(*) FROM gone)
                      WHERE community_id = $1 AND nonce = $2
                     RETURNING {COLUMNS}"
                ),
                &[
                    (tenant.as_uuid(), Type::UUID),
                    (&nonce, Type::TEXT),
                    (&first_seq, Type::INT8),
                ],
            )
            .await?;
        MemberSync::from_row(&row)
    }

    /// The community's latest sync, if it ever had one.
    pub async fn latest(&self) -> Result<Option<MemberSync>, StoreError> {
        self.tx
            .query_opt(
                "reading the latest member sync",
                &format!(
                    "SELECT {COLUMNS} FROM member_syncs WHERE community_id = $1
                      ORDER BY started_at DESC LIMIT 1"
                ),
                &[(self.tx.tenant().as_uuid(), Type::UUID)],
            )
            .await?
            .as_ref()
            .map(MemberSync::from_row)
            .transpose()
    }
}
