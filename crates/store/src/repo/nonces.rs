use chrono::{DateTime, Utc};
use tokio_postgres::{types::Type, Row};

use super::{col, id_col};
use wire::UserId;

use crate::ids::db_id;
use crate::{StoreError, TenantTx, WalletAddress};

/// A nonce message a member was asked to sign to link a wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletNonce {
    pub discord_user_id: UserId,
    /// The wallet the message asks to prove.
    pub address: WalletAddress,
    /// 32 lowercase hex digits.
    pub nonce: String,
    /// The exact text to sign (EIP-191 `personal_sign`).
    pub message: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl WalletNonce {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(WalletNonce {
            discord_user_id: id_col(row, "discord_user_id")?,
            address: WalletAddress::parse(col(row, "address")?).map_err(|e| {
                StoreError::Corrupt {
                    what: "wallet address",
                    reason: e.to_string(),
                }
            })?,
            nonce: col(row, "nonce")?,
            message: col(row, "message")?,
            expires_at: col(row, "expires_at")?,
            created_at: col(row, "created_at")?,
        })
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

const COLUMNS: &str = "discord_user_id, address, nonce, message, expires_at, created_at";

/// Pending wallet-link nonces, one per member.
pub struct WalletNonces<'t> {
    tx: &'t TenantTx,
}

impl<'t> WalletNonces<'t> {
    pub(crate) fn new(tx: &'t TenantTx) -> Self {
        WalletNonces { tx }
    }

    /// Stores the member's pending nonce, replacing any earlier one (only
    /// the message shown last can be used).
    pub async fn issue(
        &self,
        user: UserId,
        address: &WalletAddress,
        nonce: &str,
        message: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<WalletNonce, StoreError> {
        let sql = format!(
            "INSERT INTO wallet_link_nonces
                (community_id, discord_user_id, nonce, message, expires_at, address)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (community_id, discord_user_id) DO UPDATE
                SET nonce = excluded.nonce, address = excluded.address, message = excluded.message,
                    expires_at = excluded.expires_at, created_at = now()
             RETURNING {COLUMNS}"
        );
        let row = self
            .tx
            .query_one(
                "issuing a wallet-link nonce",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                    (&nonce, Type::TEXT),
                    (&message, Type::TEXT),
                    (&expires_at, Type::TIMESTAMPTZ),
                    (&address.as_str(), Type::TEXT),
                ],
            )
            .await?;
        WalletNonce::from_row(&row)
    }

    /// The member's pending nonce, expired or not (the caller decides, so it
    /// can say which).
    pub async fn pending(&self, user: UserId) -> Result<Option<WalletNonce>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM wallet_link_nonces
             WHERE community_id = $1 AND discord_user_id = $2"
        );
        self.tx
            .query_opt(
                "reading a wallet-link nonce",
                &sql,
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                ],
            )
            .await?
            .as_ref()
            .map(WalletNonce::from_row)
            .transpose()
    }

    /// Uses up the nonce: deletes it if it is still the member's pending
    /// one. Returns false if it was not (replaced or used meanwhile), so a
    /// nonce links at most one wallet.
    pub async fn consume(&self, user: UserId, nonce: &str) -> Result<bool, StoreError> {
        let rows = self
            .tx
            .query(
                "consuming a wallet-link nonce",
                "DELETE FROM wallet_link_nonces
                 WHERE community_id = $1 AND discord_user_id = $2 AND nonce = $3
                 RETURNING 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&db_id(user, "discord_user_id")?, Type::INT8),
                    (&nonce, Type::TEXT),
                ],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Deletes nonces that expired before `now`.
    pub async fn prune_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let rows = self
            .tx
            .query(
                "pruning expired wallet-link nonces",
                "DELETE FROM wallet_link_nonces
                 WHERE community_id = $1 AND expires_at <= $2
                 RETURNING 1",
                &[
                    (self.tx.tenant().as_uuid(), Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Ok(rows.len() as u64)
    }
}
