use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};
use uuid::Uuid;

use super::audit::EntryColumns;
use super::{col, id_col, ids_col, AuditEntry};
use wire::{RoleId, UserId};

use crate::ids::{db_id, db_id_array_text, db_ids};
use crate::tenant::Param;
use crate::{ProfileId, StoreError, TenantId, TenantTx, WalletAddress};

/// A member of a community as Gatehouse knows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub id: ProfileId,
    pub community_id: TenantId,
    pub discord_user_id: UserId,
    /// The member's linked wallets, in the order they were linked.
    pub wallets: Vec<WalletAddress>,
    pub tier: String,
    pub current_rank: Option<i32>,
    pub score: i64,
    /// The Discord roles the member held at the last event seen.
    pub role_ids: Vec<RoleId>,
    pub joined_at: Option<DateTime<Utc>>,
    pub left_at: Option<DateTime<Utc>>,
    /// Stream sequence of the last membership event applied.
    pub last_event_seq: i64,
    /// When the periodic eligibility re-check is next due; `None`: now.
    pub next_check_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Profile {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let wallets: Vec<&str> = col(row, "wallets")?;
        Ok(Profile {
            id: col(row, "id")?,
            community_id: TenantId::from(col::<Uuid>(row, "community_id")?),
            discord_user_id: id_col(row, "discord_user_id")?,
            wallets: wallets
                .into_iter()
                .map(WalletAddress::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Corrupt {
                    what: "wallet address",
                    reason: e.to_string(),
                })?,
            tier: col(row, "tier")?,
            current_rank: col(row, "current_rank")?,
            score: col(row, "score")?,
            role_ids: ids_col(row, "role_ids")?,
            joined_at: col(row, "joined_at")?,
            left_at: col(row, "left_at")?,
            last_event_seq: col(row, "last_event_seq")?,
            next_check_at: col(row, "next_check_at")?,
            created_at: col(row, "created_at")?,
            updated_at: col(row, "updated_at")?,
        })
    }
}

/// Every query names the profile `p`: the wallets come from a subquery on
/// it (a member has few, and they are read with the profile everywhere
/// eligibility is decided). The `member_profile` type that the profile
/// functions of migrations 0019 and 0020 return has these columns, in this
/// order (a test compares them).
pub const COLUMNS: &str = "id, community_id, discord_user_id, tier, current_rank, \
     score, role_ids, joined_at, left_at, last_event_seq, next_check_at, created_at, updated_at, \
     (SELECT coalesce(array_agg(w.address ORDER BY w.linked_at, w.address), '{}') \
        FROM member_wallets w WHERE w.community_id = p.community_id AND w.profile_id = p.id) AS wallets";

/// Which members [`Profiles::search`] returns. `None` filters match all.
#[derive(Clone, Debug, Default)]
pub struct MemberFilter {
    /// Only members with a larger Discord user id (the previous page's last).
    pub after: Option<UserId>,
    pub has_wallet: Option<bool>,
    pub holds_role: Option<RoleId>,
    /// Members whose last decided outcome for this rule is "not eligible".
    pub failing_rule: Option<crate::RuleId>,
    /// `Some(true)`: still in the server; `Some(false)`: left.
    pub present: Option<bool>,
    pub limit: i64,
}

/// A score that [`Profiles::set_scores`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreChange {
    pub user: UserId,
    pub old: i64,
    pub new: i64,
}

/// A member seen joining or updating in Discord.
#[derive(Clone, Debug)]
pub struct MemberUpsert {
    pub discord_user_id: UserId,
    pub role_ids: Vec<RoleId>,
    pub joined_at: DateTime<Utc>,
}

/// A membership event from the stream, applied only if it is newer than
/// the last one applied to the profile (see migration 0004).
#[derive(Clone, Debug)]
pub struct MemberEvent {
    pub discord_user_id: UserId,
    /// The stream sequence of the event: its position in Discord's order.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub change: MemberChange,
}

/// What a membership event left its member's profile as (see
/// [`Profiles::apply_member_events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedEvent {
    pub profile_id: ProfileId,
    /// The member's roles once the event was applied.
    pub role_ids: Vec<RoleId>,
}

/// When a member's next eligibility check is due, once the check that
/// holds them has committed (see [`Profiles::finish_checks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextCheck {
    pub profile_id: ProfileId,
    /// `next_check_at` as the check read it when it leased the member.
    pub seen: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// Members' profiles read and locked for applying their events (see
/// [`Profiles::lock_for_events`]).
#[derive(Debug)]
pub struct LockedMembers {
    folds: BTreeMap<UserId, Fold>,
}

/// One member's profile as a batch of events leaves it, worked out in
/// stream order with the rule of [`Profiles::apply_member_event`].
#[derive(Debug, Default)]
struct Fold {
    role_ids: Vec<RoleId>,
    /// The last event applied; `None`: no profile yet.
    seq: Option<i64>,
    /// The first join applied (kept only if the profile has none).
    first_joined: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
    changed: bool,
}

impl Fold {
    /// Applies `event` unless it is older than the last one applied;
    /// returns the roles it leaves.
    fn apply(&mut self, event: &MemberEvent) -> Option<Vec<RoleId>> {
        if self.seq.is_some_and(|seq| seq >= event.seq) {
            return None;
        }
        self.seq = Some(event.seq);
        self.changed = true;
        match &event.change {
            MemberChange::Present { role_ids } => {
                self.role_ids.clone_from(role_ids);
                self.first_joined.get_or_insert(event.at);
                self.left_at = None;
            }
            // A leave keeps the last roles seen.
            MemberChange::Left => self.left_at = Some(event.at),
        }
        Some(self.role_ids.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Joined or updated: present, with these roles.
    Present { role_ids: Vec<RoleId> },
    /// Left (or was removed).
    Left,
}

/// Makes the audit entry of the `n`th event of a batch, which leaves its
/// member with the roles given.
type EntryOf<'f> = dyn Fn(usize, &[RoleId]) -> AuditEntry + Sync + 'f;

pub struct Profiles<'t> {
    tx: &'t TenantTx,
}

impl<'t> Profiles<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        Profiles { tx }
    }

    fn tenant(&self) -> Uuid {
        *self.tx.tenant().as_uuid()
    }

    pub async fn find_by_discord_user(&self, user: UserId) -> Result<Option<Profile>, StoreError> {
        // A function, planned once per server connection (migration 0019).
        self.tx
            .query_opt(
                "reading a profile by Discord user",
                "SELECT * FROM profile_of_member($1, $2)",
                &[
                    (&self.tenant(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                ],
            )
            .await?
            .as_ref()
            .map(Profile::from_row)
            .transpose()
    }

    /// The profiles of these members that exist (a batch of checks).
    pub async fn find_by_discord_users(
        &self,
        users: &[UserId],
    ) -> Result<Vec<Profile>, StoreError> {
        let users = db_ids(users, "discord_user_id")?;
        // A function, planned once per server connection (migration 0020).
        self.tx
            .query(
                "reading profiles by Discord user",
                "SELECT * FROM profiles_of_members($1, $2)",
                &[(&self.tenant(), Type::UUID), (&users, Type::INT8_ARRAY)],
            )
            .await?
            .iter()
            .map(Profile::from_row)
            .collect()
    }

    /// Locks these profiles `FOR KEY SHARE` in id order for the rest of the
    /// transaction, and returns those whose member is still present.
    /// Inserting rows that refer to many members (badge awards) takes those
    /// locks anyway, one by one as the rows go in; taken first, in the
    /// order every multi-row lock here uses, they cannot deadlock with a
    /// transaction releasing check leases or applying membership events.
    /// A member who left since the caller read them is not returned: what
    /// is awarded then goes only to members still there.
    pub async fn share_present(&self, ids: &[ProfileId]) -> Result<HashSet<ProfileId>, StoreError> {
        // `left_at` is read from the locked row, not tested in the `WHERE`
        // (see `lease`).
        let rows = self
            .tx
            .query(
                "locking members' profiles for awards",
                "SELECT id, left_at FROM profiles
                 WHERE community_id = $1 AND id = ANY($2)
                 ORDER BY id FOR KEY SHARE",
                &[(&self.tenant(), Type::UUID), (&ids, Type::UUID_ARRAY)],
            )
            .await?;
        let mut present = HashSet::with_capacity(rows.len());
        for row in &rows {
            if col::<Option<DateTime<Utc>>>(row, "left_at")?.is_none() {
                present.insert(col(row, "id")?);
            }
        }
        Ok(present)
    }

    pub async fn find_by_wallet(
        &self,
        wallet: &WalletAddress,
    ) -> Result<Option<Profile>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM profiles p
             WHERE p.community_id = $1
               AND p.id = (SELECT profile_id FROM member_wallets
                            WHERE community_id = $1 AND address = $2)"
        );
        self.tx
            .query_opt(
                "reading a profile by wallet",
                &sql,
                &[(&self.tenant(), Type::UUID), (&wallet.as_str(), Type::TEXT)],
            )
            .await?
            .as_ref()
            .map(Profile::from_row)
            .transpose()
    }

    /// Records that the member is present with these roles: creates the
    /// profile, or refreshes it (clearing `left_at` on a re-join). The first
    /// join time is kept.
    pub async fn upsert_member(&self, member: &MemberUpsert) -> Result<Profile, StoreError> {
        let roles = db_ids(&member.role_ids, "role_ids")?;
        // A function, planned once per server connection (migration 0019).
        let row = self
            .tx
            .query_one(
                "saving a member profile",
                "SELECT * FROM save_member_profile($1, $2, $3, $4)",
                &[
                    (&self.tenant(), Type::UUID),
                    (
                        &db_id(member.discord_user_id, "discord_user_id")?,
                        Type::INT8,
                    ),
                    (&roles, Type::INT8_ARRAY),
                    (&member.joined_at, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Profile::from_row(&row)
    }

    /// Applies a membership event in stream order: creates or updates the
    /// profile unless a newer event was already applied, in which case it
    /// returns `None` and changes nothing. A leave for a member never seen
    /// creates a profile marked as left, so a late join cannot resurrect them.
    pub async fn apply_member_event(
        &self,
        event: &MemberEvent,
    ) -> Result<Option<Profile>, StoreError> {
        let (roles, left_at, joined_at): (Vec<i64>, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            match &event.change {
                MemberChange::Present { role_ids } => {
                    (db_ids(role_ids, "role_ids")?, None, Some(event.at))
                }
                MemberChange::Left => (Vec::new(), Some(event.at), None),
            };
        let present = matches!(event.change, MemberChange::Present { .. });
        let sql = format!(
            "INSERT INTO profiles AS p
                (community_id, discord_user_id, role_ids, joined_at, left_at, last_event_seq)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (community_id, discord_user_id) DO UPDATE
                SET role_ids = CASE WHEN $7 THEN excluded.role_ids ELSE p.role_ids END,
                    joined_at = coalesce(p.joined_at, excluded.joined_at),
                    left_at = excluded.left_at,
                    last_event_seq = excluded.last_event_seq
                WHERE p.last_event_seq < excluded.last_event_seq
             RETURNING {COLUMNS}"
        );
        self.tx
            .query_opt(
                "applying a membership event",
                &sql,
                &[
                    (&self.tenant(), Type::UUID),
                    (
                        &db_id(event.discord_user_id, "discord_user_id")?,
                        Type::INT8,
                    ),
                    (&roles, Type::INT8_ARRAY),
                    (&joined_at, Type::TIMESTAMPTZ),
                    (&left_at, Type::TIMESTAMPTZ),
                    (&event.seq, Type::INT8),
                    (&present, Type::BOOL),
                ],
            )
            .await?
            .as_ref()
            .map(Profile::from_row)
            .transpose()
    }

    /// Applies membership events of this community in the order given (the
    /// stream's), with the effect [`apply_member_event`] one by one would
    /// have, in two statements whatever their number: the members' profiles
    /// are read and locked (in id order, as [`lock_members`] does), the
    /// events folded here, and every changed profile written by one
    /// set-based upsert. Returns, for each event, what it left the profile
    /// as, or `None` if a newer event had already been applied.
    ///
    /// A profile these events create is first due for the periodic scan at
    /// `first_due`: a joiner's own check is on its way, and a scan that
    /// took them first would only check them twice (and make that check
    /// find them held).
    ///
    /// [`apply_member_event`]: Self::apply_member_event
    /// [`lock_members`]: Self::lock_members
    pub async fn apply_member_events(
        &self,
        events: &[MemberEvent],
        first_due: DateTime<Utc>,
    ) -> Result<Vec<Option<AppliedEvent>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<UserId> = events.iter().map(|e| e.discord_user_id).collect();
        let locked = self.lock_for_events(&users).await?;
        self.apply_locked_member_events(locked, events, first_due)
            .await
    }

    /// The first statement of [`apply_member_events`](Self::apply_member_events)
    /// on its own: these members' profiles read and locked `FOR UPDATE` in
    /// id order, so that it can go out in the round trip of another
    /// statement (a batch's claim of its envelope ids). Apply the events
    /// with [`apply_locked_member_events`](Self::apply_locked_member_events).
    pub async fn lock_for_events(&self, users: &[UserId]) -> Result<LockedMembers, StoreError> {
        let mut ids: Vec<i64> = users
            .iter()
            .map(|u| db_id(*u, "discord_user_id"))
            .collect::<Result<_, _>>()?;
        ids.sort_unstable();
        ids.dedup();
        let stored = self
            .tx
            .query(
                "reading and locking members' profiles",
                // In id order, `FOR UPDATE`; a function, planned once per
                // server connection (migration 0019).
                "SELECT discord_user_id, role_ids, last_event_seq
                   FROM lock_member_profiles($1, $2)",
                &[(&self.tenant(), Type::UUID), (&ids, Type::INT8_ARRAY)],
            )
            .await?;
        // Members without a profile start from none.
        let mut folds: BTreeMap<UserId, Fold> =
            users.iter().map(|u| (*u, Fold::default())).collect();
        for row in &stored {
            folds.insert(
                id_col(row, "discord_user_id")?,
                Fold {
                    role_ids: ids_col(row, "role_ids")?,
                    seq: Some(col(row, "last_event_seq")?),
                    ..Fold::default()
                },
            );
        }
        Ok(LockedMembers { folds })
    }

    /// The rest of [`apply_member_events`](Self::apply_member_events), on
    /// profiles [`lock_for_events`](Self::lock_for_events) read. A member of
    /// `events` it did not read is read and locked here first (out of id
    /// order with the others: callers lock every member of their events).
    pub async fn apply_locked_member_events(
        &self,
        locked: LockedMembers,
        events: &[MemberEvent],
        first_due: DateTime<Utc>,
    ) -> Result<Vec<Option<AppliedEvent>>, StoreError> {
        self.apply_locked(locked, events, first_due, None).await
    }

    /// [`apply_locked_member_events`](Self::apply_locked_member_events),
    /// writing an audit entry for each event applied in the same statement
    /// (migration 0021): `entry(n, roles)` makes the entry of `events[n]`,
    /// which leaves its member with `roles`, and the database points it at
    /// the profile written (an entry's own target id and address are not
    /// written). With every member locked beforehand this is one statement,
    /// which a caller sends with `COMMIT` behind it
    /// ([`TenantTx::commit_with`]): a batch of membership events in two
    /// round trips.
    pub async fn apply_locked_member_events_audited(
        &self,
        locked: LockedMembers,
        events: &[MemberEvent],
        first_due: DateTime<Utc>,
        entry: impl Fn(usize, &[RoleId]) -> AuditEntry + Sync,
    ) -> Result<Vec<Option<AppliedEvent>>, StoreError> {
        self.apply_locked(locked, events, first_due, Some(&entry))
            .await
    }

    async fn apply_locked(
        &self,
        locked: LockedMembers,
        events: &[MemberEvent],
        first_due: DateTime<Utc>,
        entry: Option<&EntryOf<'_>>,
    ) -> Result<Vec<Option<AppliedEvent>>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut folds = locked.folds;
        let unread: Vec<UserId> = events
            .iter()
            .map(|e| e.discord_user_id)
            .filter(|u| !folds.contains_key(u))
            .collect();
        if !unread.is_empty() {
            folds.extend(self.lock_for_events(&unread).await?.folds);
        }
        let mut applied: Vec<Option<Vec<RoleId>>> = Vec::with_capacity(events.len());
        for event in events {
            let fold = folds.entry(event.discord_user_id).or_default();
            applied.push(fold.apply(event));
        }
        let changed: Vec<(&UserId, &Fold)> = folds.iter().filter(|(_, f)| f.changed).collect();
        let mut user_ids = Vec::with_capacity(changed.len());
        let mut roles = Vec::with_capacity(changed.len());
        let mut joined = Vec::with_capacity(changed.len());
        let mut left = Vec::with_capacity(changed.len());
        let mut seqs = Vec::with_capacity(changed.len());
        for (user, fold) in &changed {
            user_ids.push(db_id(**user, "discord_user_id")?);
            roles.push(db_id_array_text(&fold.role_ids, "role_ids")?);
            joined.push(fold.first_joined);
            left.push(fold.left_at);
            seqs.push(fold.seq.unwrap_or(i64::MIN));
        }
        let tenant = self.tenant();
        let upsert: [Param<'_>; 7] = [
            (&tenant, Type::UUID),
            (&user_ids, Type::INT8_ARRAY),
            (&roles, Type::TEXT_ARRAY),
            (&joined, Type::TIMESTAMPTZ_ARRAY),
            (&left, Type::TIMESTAMPTZ_ARRAY),
            (&seqs, Type::INT8_ARRAY),
            (&first_due, Type::TIMESTAMPTZ),
        ];
        // One upsert (a function, planned once per server connection:
        // migration 0019) whose `WHERE` keeps a newer event written by
        // someone else since the read (only possible for a member who had
        // no profile then): that member's events count as not applied, and
        // are not audited.
        let written = match entry {
            None => {
                self.tx
                    .query(
                        "applying membership events",
                        "SELECT id, discord_user_id
                           FROM apply_member_events($1, $2, $3, $4, $5, $6, $7)",
                        &upsert,
                    )
                    .await?
            }
            Some(entry) => {
                let mut users = Vec::new();
                let mut entries = Vec::new();
                for (n, (event, roles)) in events.iter().zip(&applied).enumerate() {
                    if let Some(roles) = roles {
                        users.push(db_id(event.discord_user_id, "discord_user_id")?);
                        entries.push(entry(n, roles));
                    }
                }
                // The entries' own target ids are not sent: the database
                // points each at the profile it wrote.
                let EntryColumns {
                    actor_types,
                    actor_ids,
                    actions,
                    target_types,
                    metadata,
                    ..
                } = EntryColumns::of(&entries);
                let audit: [Param<'_>; 6] = [
                    (&users, Type::INT8_ARRAY),
                    (&actor_types, Type::TEXT_ARRAY),
                    (&actor_ids, Type::TEXT_ARRAY),
                    (&actions, Type::TEXT_ARRAY),
                    (&target_types, Type::TEXT_ARRAY),
                    (&metadata, Type::JSONB_ARRAY),
                ];
                self.tx
                    .query(
                        "applying and auditing membership events",
                        "SELECT id, discord_user_id FROM apply_member_events_audited(
                             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                        &[upsert.as_slice(), audit.as_slice()].concat(),
                    )
                    .await?
            }
        };
        let mut ids: std::collections::HashMap<UserId, ProfileId> =
            std::collections::HashMap::with_capacity(written.len());
        for row in &written {
            ids.insert(id_col(row, "discord_user_id")?, col(row, "id")?);
        }
        Ok(events
            .iter()
            .zip(applied)
            .map(|(event, roles)| {
                let profile_id = *ids.get(&event.discord_user_id)?;
                roles.map(|role_ids| AppliedEvent {
                    profile_id,
                    role_ids,
                })
            })
            .collect())
    }

    /// Marks the member as gone. Returns `None` if we never knew them.
    pub async fn mark_left(
        &self,
        user: UserId,
        at: DateTime<Utc>,
    ) -> Result<Option<Profile>, StoreError> {
        let sql = format!(
            "UPDATE profiles p SET left_at = $3
             WHERE community_id = $1 AND discord_user_id = $2
             RETURNING {COLUMNS}"
        );
        self.tx
            .query_opt(
                "marking a member as left",
                &sql,
                &[
                    (&self.tenant(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                    (&at, Type::TIMESTAMPTZ),
                ],
            )
            .await?
            .as_ref()
            .map(Profile::from_row)
            .transpose()
    }

    /// Adds a wallet the caller has proved (an EOA signature) to the
    /// member, for seeding and tests; the wallet-link flow goes through
    /// [`MemberWallets::link`](crate::repo::MemberWallets::link), which
    /// can also move a wallet. One that another member of the community
    /// holds is refused with [`StoreError::Conflict`].
    pub async fn link_wallet(
        &self,
        user: UserId,
        wallet: &WalletAddress,
    ) -> Result<Profile, StoreError> {
        let Some(profile) = self.find_by_discord_user(user).await? else {
            return Err(StoreError::NotFound {
                context: "linking a wallet to a member not seen yet",
            });
        };
        let rows = self
            .tx
            .query(
                "linking a wallet",
                "INSERT INTO member_wallets (community_id, profile_id, address, proof)
                 VALUES ($1, $2, $3, 'eoa')
                 ON CONFLICT (community_id, address) DO UPDATE SET linked_at = member_wallets.linked_at
                  WHERE member_wallets.profile_id = excluded.profile_id
                 RETURNING 1",
                &[
                    (&self.tenant(), Type::UUID),
                    (&profile.id, Type::UUID),
                    (&wallet.as_str(), Type::TEXT),
                ],
            )
            .await?;
        if rows.is_empty() {
            // The conflict update's WHERE failed: another member holds it.
            return Err(StoreError::Conflict {
                context: "linking a wallet",
                constraint: "member_wallets_pkey".to_owned(),
            });
        }
        self.find_by_discord_user(user)
            .await?
            .ok_or(StoreError::NotFound {
                context: "re-reading a member after linking a wallet",
            })
    }

    /// Sets score, tier and rank together (they are derived together).
    pub async fn set_standing(
        &self,
        user: UserId,
        score: i64,
        tier: &str,
        rank: Option<i32>,
    ) -> Result<Profile, StoreError> {
        let sql = format!(
            "UPDATE profiles p SET score = $3, tier = $4, current_rank = $5
             WHERE community_id = $1 AND discord_user_id = $2
             RETURNING {COLUMNS}"
        );
        let row = self
            .tx
            .query_one(
                "updating a member's standing",
                &sql,
                &[
                    (&self.tenant(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                    (&score, Type::INT8),
                    (&tier, Type::TEXT),
                    (&rank, Type::INT4),
                ],
            )
            .await?;
        Profile::from_row(&row)
    }

    /// Profiles in join order, `limit` at a time after `after` (keyset
    /// pagination on discord_user_id).
    pub async fn list(
        &self,
        after: Option<UserId>,
        limit: i64,
    ) -> Result<Vec<Profile>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM profiles p
             WHERE community_id = $1 AND discord_user_id > $2
             ORDER BY discord_user_id LIMIT $3"
        );
        // 0 sorts before every stored id.
        let after = after.map_or(Ok(0), |a| db_id(a, "discord_user_id"))?;
        self.tx
            .query(
                "listing profiles",
                &sql,
                &[
                    (&self.tenant(), Type::UUID),
                    (&after, Type::INT8),
                    (&limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(Profile::from_row)
            .collect()
    }

    /// A page of members for the admin API, by Discord user id after
    /// `filter.after`, matching every filter given.
    pub async fn search(&self, filter: &MemberFilter) -> Result<Vec<Profile>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM profiles p
             WHERE p.community_id = $1 AND p.discord_user_id > $2
               AND ($3::bool IS NULL OR EXISTS (SELECT 1 FROM member_wallets w
                     WHERE w.community_id = p.community_id AND w.profile_id = p.id) = $3)
               AND ($4::int8 IS NULL OR $4 = ANY (p.role_ids))
               AND ($5::uuid IS NULL OR EXISTS (
                     SELECT 1 FROM role_grants g
                     WHERE g.community_id = p.community_id AND g.profile_id = p.id
                       AND g.rule_id = $5 AND g.eligible = false))
               AND ($6::bool IS NULL OR (p.left_at IS NULL) = $6)
             ORDER BY p.discord_user_id LIMIT $7"
        );
        let after = filter
            .after
            .map_or(Ok(0), |a| db_id(a, "discord_user_id"))?;
        let role = filter
            .holds_role
            .map(|r| db_id(r, "role_ids"))
            .transpose()?;
        self.tx
            .query(
                "searching members",
                &sql,
                &[
                    (&self.tenant(), Type::UUID),
                    (&after, Type::INT8),
                    (&filter.has_wallet, Type::BOOL),
                    (&role, Type::INT8),
                    (&filter.failing_rule, Type::UUID),
                    (&filter.present, Type::BOOL),
                    (&filter.limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(Profile::from_row)
            .collect()
    }

    /// Sets many members' scores in one statement. Returns the members whose
    /// score changed, with the old and new value; members already at the
    /// given score are untouched (so an import re-run writes nothing), and
    /// user ids with no profile are left out.
    pub async fn set_scores(
        &self,
        scores: &[(UserId, i64)],
    ) -> Result<Vec<ScoreChange>, StoreError> {
        let users = scores
            .iter()
            .map(|(u, _)| db_id(*u, "discord_user_id"))
            .collect::<Result<Vec<i64>, _>>()?;
        let values: Vec<i64> = scores.iter().map(|(_, s)| *s).collect();
        let rows = self
            .tx
            .query(
                "setting scores",
                "WITH input AS (
                     SELECT DISTINCT ON (u) u, s FROM unnest($2::int8[], $3::int8[]) AS v(u, s)
                 ),
                 old AS (
                     SELECT p.id, p.score FROM profiles p JOIN input i ON i.u = p.discord_user_id
                     WHERE p.community_id = $1
                     FOR NO KEY UPDATE
                 )
                 UPDATE profiles p SET score = i.s
                   FROM input i, old o
                  WHERE p.community_id = $1 AND p.discord_user_id = i.u AND o.id = p.id
                    AND p.score <> i.s
                 RETURNING p.discord_user_id, o.score AS old_score, p.score AS new_score",
                &[
                    (&self.tenant(), Type::UUID),
                    (&users, Type::INT8_ARRAY),
                    (&values, Type::INT8_ARRAY),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ScoreChange {
                    user: id_col(row, "discord_user_id")?,
                    old: col(row, "old_score")?,
                    new: col(row, "new_score")?,
                })
            })
            .collect()
    }

    /// Which of these users have a profile here.
    pub async fn existing(&self, users: &[UserId]) -> Result<Vec<UserId>, StoreError> {
        let users = users
            .iter()
            .map(|u| db_id(*u, "discord_user_id"))
            .collect::<Result<Vec<i64>, _>>()?;
        let rows = self
            .tx
            .query(
                "finding members",
                "SELECT discord_user_id FROM profiles
                 WHERE community_id = $1 AND discord_user_id = ANY ($2)",
                &[(&self.tenant(), Type::UUID), (&users, Type::INT8_ARRAY)],
            )
            .await?;
        rows.iter().map(|r| id_col(r, "discord_user_id")).collect()
    }

    /// Members present in the community whose re-check is due, locked for
    /// this transaction. `SKIP LOCKED` lets every worker scan at once
    /// without two of them checking the same member. The lock is `NO KEY
    /// UPDATE` because only non-key columns change: a `FOR UPDATE` lock
    /// would also block the foreign-key checks of rows that point at these
    /// members (badge awards, role grants) for the whole batch, and
    /// deadlocked with a join's badge evaluation under load.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Profile>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM profiles p
             WHERE community_id = $1 AND left_at IS NULL
               AND (next_check_at IS NULL OR next_check_at <= $2)
             ORDER BY next_check_at NULLS FIRST
             LIMIT $3
             FOR NO KEY UPDATE SKIP LOCKED"
        );
        self.tx
            .query(
                "claiming members due for a re-check",
                &sql,
                &[
                    (&self.tenant(), Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                    (&limit, Type::INT8),
                ],
            )
            .await?
            .iter()
            .map(Profile::from_row)
            .collect()
    }

    /// Sets when each profile's next re-check is due.
    pub async fn schedule_checks(
        &self,
        schedule: &[(ProfileId, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        let ids: Vec<ProfileId> = schedule.iter().map(|(id, _)| *id).collect();
        let at: Vec<DateTime<Utc>> = schedule.iter().map(|(_, at)| *at).collect();
        self.tx
            .query(
                "scheduling re-checks",
                "UPDATE profiles p SET next_check_at = v.at
                 FROM unnest($2::uuid[], $3::timestamptz[]) AS v(id, at)
                 WHERE p.community_id = $1 AND p.id = v.id",
                &[
                    (&self.tenant(), Type::UUID),
                    (&ids, Type::UUID_ARRAY),
                    (&at, Type::TIMESTAMPTZ_ARRAY),
                ],
            )
            .await?;
        Ok(())
    }

    /// Makes one member due for a re-check now (the time, not NULL: see
    /// [`finish_checks`](Self::finish_checks)).
    pub async fn mark_due(&self, user: UserId) -> Result<(), StoreError> {
        self.tx
            .query(
                "marking a member due for a re-check",
                "UPDATE profiles SET next_check_at = now() WHERE community_id = $1 AND discord_user_id = $2",
                &[(&self.tenant(), Type::UUID), (&db_id(user, "discord_user_id")?, Type::INT8)],
            )
            .await?;
        Ok(())
    }

    /// Makes these members due for a re-check now (one statement for a
    /// batch).
    pub async fn mark_members_due(&self, users: &[UserId]) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        let users = db_ids(users, "discord_user_id")?;
        self.tx
            .query(
                "marking members due for a re-check",
                // Rows locked in id order, as `lock_members` does.
                "WITH due AS (
                    SELECT id AS due_id FROM profiles
                    WHERE community_id = $1 AND discord_user_id = ANY($2)
                    ORDER BY id FOR UPDATE
                 )
                 UPDATE profiles p SET next_check_at = now()
                 FROM due WHERE p.community_id = $1 AND p.id = due.due_id",
                &[(&self.tenant(), Type::UUID), (&users, Type::INT8_ARRAY)],
            )
            .await?;
        Ok(())
    }

    /// Makes every present member due for a re-check now (a rule changed;
    /// the time, not NULL: see [`finish_checks`](Self::finish_checks)).
    pub async fn mark_all_due(&self) -> Result<u64, StoreError> {
        let rows = self
            .tx
            .query(
                "marking members due for a re-check",
                "UPDATE profiles SET next_check_at = now()
                 WHERE community_id = $1 AND left_at IS NULL RETURNING 1",
                &[(&self.tenant(), Type::UUID)],
            )
            .await?;
        Ok(rows.len() as u64)
    }

    /// Replaces the role snapshot (after Gatehouse changed roles itself).
    pub async fn set_roles(&self, user: UserId, roles: &[RoleId]) -> Result<(), StoreError> {
        self.set_roles_many(&[(user, roles)]).await
    }

    /// [`set_roles`](Self::set_roles) for many members in one statement: a
    /// batch of checks that changed the roles of many members writes their
    /// snapshots at once (one statement to plan, not one per member). Each
    /// member may appear once.
    pub async fn set_roles_many(&self, members: &[(UserId, &[RoleId])]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut users = Vec::with_capacity(members.len());
        let mut roles = Vec::with_capacity(members.len());
        for (user, held) in members {
            users.push(db_id(*user, "discord_user_id")?);
            roles.push(db_id_array_text(held, "role_ids")?);
        }
        // A function, planned once per server connection (migration 0020).
        self.tx
            .query(
                "updating members' role snapshots",
                "SELECT set_member_roles($1, $2, $3)",
                &[
                    (&self.tenant(), Type::UUID),
                    (&users, Type::INT8_ARRAY),
                    (&roles, Type::TEXT_ARRAY),
                ],
            )
            .await?;
        Ok(())
    }

    /// Locks the profiles of these members that exist, in id order, for
    /// the rest of the transaction. A transaction that changes many
    /// profiles one statement at a time takes their locks first, in the
    /// order every multi-row statement here uses, so that it cannot
    /// deadlock with another.
    pub async fn lock_members(&self, users: &[UserId]) -> Result<(), StoreError> {
        let users = db_ids(users, "discord_user_id")?;
        self.tx
            .query(
                "locking members' profiles",
                "SELECT 1 FROM profiles
                 WHERE community_id = $1 AND discord_user_id = ANY($2)
                 ORDER BY id FOR UPDATE",
                &[(&self.tenant(), Type::UUID), (&users, Type::INT8_ARRAY)],
            )
            .await?;
        Ok(())
    }

    /// Takes the eligibility-check lease on these profiles for `ttl`.
    /// Returns the profiles leased (re-read, so the caller sees the state as
    /// of the lease); profiles already leased by a live check are left out,
    /// and so are profiles another transaction is changing right now (a
    /// batch of membership events): they are leased at their next turn.
    /// Waiting for those instead would hold rows that batch may want next,
    /// which is how two transactions deadlock. Members who left are not
    /// leased: there is nothing to sync for them.
    ///
    /// Leasing and giving back lock `NO KEY UPDATE`, as [`claim_due`] does
    /// and for its reason: a join's badge evaluation runs beside the join's
    /// check and holds the key-share lock of the rows it may point at; a
    /// `FOR UPDATE` found every such member held.
    ///
    /// [`claim_due`]: Self::claim_due
    pub async fn lease_for_check(
        &self,
        ids: &[ProfileId],
        ttl: std::time::Duration,
    ) -> Result<Vec<Profile>, StoreError> {
        self.lease(
            "SELECT * FROM lease_profiles($1, $2, $3)",
            (&ids, Type::UUID_ARRAY),
            ttl,
            "leasing profiles for an eligibility check",
        )
        .await
    }

    /// [`lease_for_check`](Self::lease_for_check) by Discord user, for the
    /// profiles of these members that exist. A check asked
    /// for by user leases in its first statement instead of reading the
    /// profiles in a transaction of its own first.
    pub async fn lease_members_for_check(
        &self,
        users: &[UserId],
        ttl: std::time::Duration,
    ) -> Result<Vec<Profile>, StoreError> {
        let users = db_ids(users, "discord_user_id")?;
        self.lease(
            "SELECT * FROM lease_member_profiles($1, $2, $3)",
            (&users, Type::INT8_ARRAY),
            ttl,
            "leasing members' profiles for an eligibility check",
        )
        .await
    }

    /// Runs one of the lease functions of migration 0020 (planned once per
    /// server connection). Each is the same statement but for which rows it
    /// wants; whether the member left is read from the locked row, not
    /// tested in its `WHERE`: a `left_at IS NULL` there leads the planner
    /// to the partial due-index and a walk of the whole community's members.
    async fn lease(
        &self,
        call: &'static str,
        wanted: Param<'_>,
        ttl: std::time::Duration,
        what: &'static str,
    ) -> Result<Vec<Profile>, StoreError> {
        let secs = ttl.as_secs_f64();
        self.tx
            .query(
                what,
                call,
                &[(&self.tenant(), Type::UUID), wanted, (&secs, Type::FLOAT8)],
            )
            .await?
            .iter()
            .map(Profile::from_row)
            .collect()
    }

    /// Gives the leases back, scheduling nothing (a check that could not
    /// record its decisions).
    pub async fn release_check_lease(&self, ids: &[ProfileId]) -> Result<(), StoreError> {
        self.finish_checks(ids, &[]).await
    }

    /// Gives the leases back and, in the same statement, schedules the next
    /// check of the members whose check completed — unless they were made
    /// due while held (a rule changed, another check found them busy): their
    /// `next_check_at` then differs from what the check saw, and the check
    /// owed them is left standing rather than put off a period. Marking due
    /// writes the time, not NULL, so that a member due when leased and made
    /// due again meanwhile shows the change.
    pub async fn finish_checks(
        &self,
        leased: &[ProfileId],
        next: &[NextCheck],
    ) -> Result<(), StoreError> {
        let ids: Vec<ProfileId> = next.iter().map(|n| n.profile_id).collect();
        let seen: Vec<Option<DateTime<Utc>>> = next.iter().map(|n| n.seen).collect();
        let at: Vec<DateTime<Utc>> = next.iter().map(|n| n.at).collect();
        // A function, planned once per server connection (migration 0020).
        self.tx
            .query(
                "releasing eligibility-check leases and scheduling the next checks",
                "SELECT finish_member_checks($1, $2, $3, $4, $5)",
                &[
                    (&self.tenant(), Type::UUID),
                    (&leased, Type::UUID_ARRAY),
                    (&ids, Type::UUID_ARRAY),
                    (&seen, Type::TIMESTAMPTZ_ARRAY),
                    (&at, Type::TIMESTAMPTZ_ARRAY),
                ],
            )
            .await?;
        Ok(())
    }
}
