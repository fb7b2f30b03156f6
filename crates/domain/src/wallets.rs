//! Linking a wallet to a member: a message to sign, then the proof.
//!
//! The message names the community, the member and a fresh nonce, so a
//! signature made for one link is worth nothing for another. A proof is
//! accepted only for the member's pending request, before it expires, when
//! the signature recovers to the claimed address and no other member of the
//! community holds that wallet. A refusal stores nothing; a link is audited
//! as done by the member.

use std::{str::FromStr, time::Duration};

use alloy_primitives::Signature;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use store::{repo::Profile, StoreError, TenantTx, WalletAddress};
use wire::{GuildId, UserId};

use crate::{Actor, AuditAction};

/// How long a link message may be signed for.
pub const LINK_NONCE_TTL: Duration = Duration::from_secs(10 * 60);

/// A message for the member to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRequest {
    pub message: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a proof was not accepted. Each is the member's to fix; nothing was
/// stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("that address is not valid: {0}")]
    InvalidAddress(String),
    #[error("there is no pending link request")]
    NoPendingRequest,
    #[error("the message to sign has expired")]
    Expired,
    #[error("that signature is not valid: {0}")]
    InvalidSignature(String),
    #[error("that signature was not made by {0} over the message given")]
    WrongSigner(WalletAddress),
    #[error("{0} is already linked to another member of this community")]
    TakenByAnotherMember(WalletAddress),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Another request or member got there between our reads and the
    /// write; a retry sees the new state and answers clearly.
    #[error("{0}")]
    Raced(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The text a member signs to link a wallet.
pub fn link_message(
    guild: GuildId,
    user: UserId,
    nonce: &str,
    expires_at: DateTime<Utc>,
) -> String {
    format!(
        "Gatehouse wallet link\nServer: {guild}\nDiscord user: {user}\nNonce: {nonce}\nExpires: {}",
        expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Issues a fresh message for `user` to sign, replacing any pending one.
pub async fn request_link(
    tx: &TenantTx,
    guild: GuildId,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<LinkRequest, StoreError> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let expires_at = now
        + chrono::Duration::from_std(LINK_NONCE_TTL)
            .unwrap_or_else(|_| chrono::Duration::minutes(10));
    let message = link_message(guild, user, &nonce, expires_at);
    // Abandoned requests go here rather than in a sweeper: the table stays
    // as small as the requests still open.
    tx.wallet_nonces().prune_expired(now).await?;
    tx.wallet_nonces()
        .issue(user, &nonce, &message, expires_at)
        .await?;
    Ok(LinkRequest {
        message,
        expires_at,
    })
}

/// Verifies `signature` by `address` over `profile`'s pending message and
/// links the wallet. `method` and `context` go into the audit row (how it
/// was proved, and e.g. the event that carried it).
pub async fn complete_link(
    tx: &TenantTx,
    profile: &Profile,
    address: &str,
    signature: &str,
    method: &str,
    context: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Profile, LinkError> {
    let user = profile.discord_user_id;
    let address =
        WalletAddress::parse(address).map_err(|e| Refusal::InvalidAddress(e.to_string()))?;
    let pending = tx
        .wallet_nonces()
        .pending(user)
        .await?
        .ok_or(Refusal::NoPendingRequest)?;
    if pending.is_expired(now) {
        return Err(Refusal::Expired.into());
    }
    let signer = recover_signer(&pending.message, signature).map_err(Refusal::InvalidSignature)?;
    if signer != address {
        return Err(Refusal::WrongSigner(address).into());
    }
    if let Some(owner) = tx.profiles().find_by_wallet(&address).await? {
        if owner.discord_user_id != user {
            return Err(Refusal::TakenByAnotherMember(address).into());
        }
    }
    if !tx.wallet_nonces().consume(user, &pending.nonce).await? {
        return Err(LinkError::Raced(
            "the wallet-link nonce changed while linking",
        ));
    }
    let linked = match tx.profiles().link_wallet(user, &address).await {
        Ok(p) => p,
        // Another member linked it after our check: this transaction is
        // aborted now; the retry sees the owner and refuses clearly.
        Err(StoreError::Conflict { .. }) => {
            return Err(LinkError::Raced(
                "the wallet was linked by another member concurrently",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let mut metadata = json!({
        "discord_user_id": user.to_string(),
        "wallet": address.as_str(),
        "previous": profile.wallet_address.as_ref().map(|w| w.as_str().to_owned()),
        "method": method,
    });
    if let (Some(fields), serde_json::Value::Object(extra)) = (metadata.as_object_mut(), context) {
        fields.extend(extra);
    }
    let entry = Actor::Member(user)
        .entry(AuditAction::WalletLinked)
        .target("profile", linked.id.to_string())
        .metadata(metadata);
    tx.audit().append(&entry).await?;
    Ok(linked)
}

/// ecrecover of an EIP-191 `personal_sign` signature (65 bytes hex, with or
/// without `0x`; v as 0/1 or 27/28) over `message`.
pub fn recover_signer(message: &str, signature: &str) -> Result<WalletAddress, String> {
    let signature =
        Signature::from_str(signature).map_err(|e| format!("expected 65 bytes of hex ({e})"))?;
    let signer = signature
        .recover_address_from_msg(message.as_bytes())
        .map_err(|e| format!("no signer can be recovered ({e})"))?;
    WalletAddress::parse(&signer.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_message_names_server_user_nonce_and_expiry() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let m = link_message(
            GuildId::new(41).unwrap(),
            UserId::new(77).unwrap(),
            "00ff",
            at,
        );
        assert_eq!(
            m,
            "Gatehouse wallet link\nServer: 41\nDiscord user: 77\nNonce: 00ff\nExpires: 2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn malformed_signatures_are_refused_with_a_reason() {
        assert!(recover_signer("hi", "0x1234").is_err());
        assert!(recover_signer("hi", "not hex").is_err());
        // Well-formed but r = s = 0: nothing to recover.
        let zero = format!("0x{}1b", "00".repeat(64));
        assert!(recover_signer("hi", &zero).is_err());
    }
}
