//! A member's linked wallets (migration 0012), and the one-time links that
//! open the wallet-link page.

use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};

use super::{col, id_col};
use wire::UserId;

use crate::ids::db_id;
use crate::{ProfileId, StoreError, TenantTx, WalletAddress};

/// How a wallet was proved to be the member's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalletProof {
    /// An EIP-191 signature recovered to the address.
    Eoa,
    /// The contract wallet's `isValidSignature` (EIP-1271) accepted it.
    Erc1271,
    /// Linked before Sign-In with Ethereum.
    Legacy,
}

impl WalletProof {
    pub fn as_str(self) -> &'static str {
        match self {
            WalletProof::Eoa => "eoa",
            WalletProof::Erc1271 => "erc1271",
            WalletProof::Legacy => "legacy",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "eoa" => Ok(WalletProof::Eoa),
            "erc1271" => Ok(WalletProof::Erc1271),
            "legacy" => Ok(WalletProof::Legacy),
            other => Err(StoreError::Corrupt {
                what: "wallet proof",
                reason: format!("unknown proof {other:?}"),
            }),
        }
    }
}

/// One linked wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberWallet {
    pub address: WalletAddress,
    pub profile_id: ProfileId,
    pub discord_user_id: UserId,
    pub proof: WalletProof,
    pub linked_at: DateTime<Utc>,
}

impl MemberWallet {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let address: &str = col(row, "address")?;
        Ok(MemberWallet {
            address: WalletAddress::parse(address).map_err(|e| StoreError::Corrupt {
                what: "wallet address",
                reason: e.to_string(),
            })?,
            profile_id: col(row, "profile_id")?,
            discord_user_id: id_col(row, "discord_user_id")?,
            proof: WalletProof::parse(col(row, "proof")?)?,
            linked_at: col(row, "linked_at")?,
        })
    }
}

const COLUMNS: &str = "w.address, w.profile_id, p.discord_user_id, w.proof, w.linked_at";

/// What [`MemberWallets::link`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linked {
    /// Newly linked to the member.
    New,
    /// Already the member's; the proof and time were refreshed.
    Again,
    /// Moved from another member of the community (a reclaim).
    MovedFrom { profile_id: ProfileId, user: UserId },
}

pub struct MemberWallets<'t> {
    tx: &'t TenantTx,
}

impl<'t> MemberWallets<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        MemberWallets { tx }
    }

    /// The member's wallets, in the order they were linked.
    pub async fn of(&self, profile: ProfileId) -> Result<Vec<MemberWallet>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM member_wallets w
               JOIN profiles p ON p.community_id = w.community_id AND p.id = w.profile_id
              WHERE w.community_id = $1 AND w.profile_id = $2
              ORDER BY w.linked_at, w.address"
        );
        self.tx
            .query(
                "reading a member's wallets",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profile, Type::UUID),
                ],
            )
            .await?
            .iter()
            .map(MemberWallet::from_row)
            .collect()
    }

    /// Who holds `address` in this community, locked for this transaction
    /// so a concurrent link or reclaim of the same wallet waits for ours.
    pub async fn holder(
        &self,
        address: &WalletAddress,
    ) -> Result<Option<MemberWallet>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM member_wallets w
               JOIN profiles p ON p.community_id = w.community_id AND p.id = w.profile_id
              WHERE w.community_id = $1 AND w.address = $2
              FOR NO KEY UPDATE OF w"
        );
        self.tx
            .query_opt(
                "finding who holds a wallet",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&address.as_str(), Type::TEXT),
                ],
            )
            .await?
            .as_ref()
            .map(MemberWallet::from_row)
            .transpose()
    }

    /// Links `address` to `profile`, moving it from whoever held it. The
    /// caller has proved the wallet; this only records it and says what
    /// changed.
    pub async fn link(
        &self,
        profile: ProfileId,
        address: &WalletAddress,
        proof: WalletProof,
    ) -> Result<Linked, StoreError> {
        let before = self.holder(address).await?;
        // ON CONFLICT covers a link that raced ours past `holder`: the row
        // lock makes the second one wait, then move it again, which is what
        // the later valid proof asks for.
        self.tx
            .query(
                "linking a wallet",
                "INSERT INTO member_wallets (community_id, profile_id, address, proof)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (community_id, address) DO UPDATE
                    SET profile_id = excluded.profile_id, proof = excluded.proof, linked_at = now()",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profile, Type::UUID),
                    (&address.as_str(), Type::TEXT),
                    (&proof.as_str(), Type::TEXT),
                ],
            )
            .await?;
        Ok(match before {
            None => Linked::New,
            Some(w) if w.profile_id == profile => Linked::Again,
            Some(w) => Linked::MovedFrom {
                profile_id: w.profile_id,
                user: w.discord_user_id,
            },
        })
    }

    /// Unlinks `address` from `profile`. False if it was not theirs.
    pub async fn unlink(
        &self,
        profile: ProfileId,
        address: &WalletAddress,
    ) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "unlinking a wallet",
                "DELETE FROM member_wallets
                 WHERE community_id = $1 AND profile_id = $2 AND address = $3
                 RETURNING 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&profile, Type::UUID),
                    (&address.as_str(), Type::TEXT),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}

/// A wallet-link page's token, as stored (only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkToken {
    pub discord_user_id: UserId,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// One-time wallet-link page tokens.
pub struct LinkTokens<'t> {
    tx: &'t TenantTx,
}

impl<'t> LinkTokens<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        LinkTokens { tx }
    }

    /// Stores a new token for `user`. Expired tokens of the community are
    /// pruned here, so the table stays as small as the links still open.
    pub async fn issue(
        &self,
        user: UserId,
        token_hash: &[u8; 32],
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let hash: &[u8] = token_hash;
        self.tx
            .query(
                "pruning expired wallet-link tokens",
                "DELETE FROM wallet_link_tokens WHERE community_id = $1 AND expires_at <= $2",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        self.tx
            .query(
                "issuing a wallet-link token",
                "INSERT INTO wallet_link_tokens (token_hash, community_id, discord_user_id, expires_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    (&hash, Type::BYTEA),
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                    (&expires_at, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Ok(())
    }

    /// The token, locked for this transaction (two tabs proving at once
    /// take turns, and the second sees it used).
    pub async fn get_for_update(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<LinkToken>, StoreError> {
        let hash: &[u8] = token_hash;
        self.tx
            .query_opt(
                "reading a wallet-link token",
                "SELECT discord_user_id, expires_at, used_at FROM wallet_link_tokens
                 WHERE community_id = $1 AND token_hash = $2 FOR UPDATE",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&hash, Type::BYTEA),
                ],
            )
            .await?
            .map(|row| {
                Ok(LinkToken {
                    discord_user_id: id_col(&row, "discord_user_id")?,
                    expires_at: col(&row, "expires_at")?,
                    used_at: col(&row, "used_at")?,
                })
            })
            .transpose()
    }

    /// Marks the token used.
    pub async fn mark_used(
        &self,
        token_hash: &[u8; 32],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let hash: &[u8] = token_hash;
        self.tx
            .query(
                "using a wallet-link token",
                "UPDATE wallet_link_tokens SET used_at = $3 WHERE community_id = $1 AND token_hash = $2",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&hash, Type::BYTEA),
                    (&at, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Ok(())
    }
}
