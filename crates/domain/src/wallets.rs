//! Linking wallets to a member with Sign-In with Ethereum (EIP-4361).
//!
//! `/link-wallet` answers with a one-time link to the wallet-link page
//! ([`issue_link_page`]): valid for minutes, bound to the community and the
//! member, used once. The page (or, as a fallback, the member pasting in
//! Discord) asks for a message naming a wallet ([`request_link`]); the
//! message is a SIWE message whose domain and URI are this deployment's
//! public address, so a phishing site cannot collect a signature that
//! Gatehouse would accept (wallets show the domain, and it is checked). The
//! signed message comes back to [`complete_link`], which checks the fields
//! (domain, URI, nonce, expiry) and the signature: EIP-191 recovery, or
//! EIP-1271 `isValidSignature` when the address is a contract wallet.
//!
//! A member may hold several wallets ([`MAX_WALLETS_PER_MEMBER`]). A wallet
//! linked to another member moves to whoever proves it last (a reclaim,
//! audited on both sides): the signature is the proof of ownership, and an
//! old link may be a sold or compromised wallet. Both members must then be
//! re-checked; role sync gives no grace period for what a wallet that is no
//! longer theirs earned (see `role_sync::decision`).
//!
//! Every refusal stores nothing.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use eligibility::siwe::{self, Expected, Mismatch, SiweMessage, UriMatch, VerifyError};
use eligibility::Evaluator;
use serde_json::json;
use sha2::{Digest, Sha256};
use store::repo::{Linked, MemberWallet, Profile, WalletProof};
use store::{Store, StoreError, TenantTx, WalletAddress};
use wire::{GuildId, UserId};

use crate::{Actor, AuditAction, CommunityRef};

/// How long a link page stays open after `/link-wallet`.
pub const LINK_PAGE_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a message may be signed for.
pub const MESSAGE_TTL: Duration = Duration::from_secs(10 * 60);
/// Wallets one member may link: enough for hot, cold and a hardware
/// wallet or two; each is a chain read per rule at every check.
pub const MAX_WALLETS_PER_MEMBER: usize = 10;
/// The chain a message names when the wallet does not say (Ethereum).
pub const DEFAULT_CHAIN_ID: u64 = 1;

/// Where this deployment's wallet-link page is served: the public address
/// (`PUBLIC_URL`), which is what SIWE messages name as domain and URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    scheme: String,
    authority: String,
    /// Scheme, authority and path prefix, without a trailing slash.
    base: String,
}

/// Why a public address is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("{url:?} is not a URL: {reason}")]
    NotUrl { url: String, reason: String },
    #[error("{url:?} must use http or https, not {scheme}")]
    Scheme { url: String, scheme: String },
    #[error("{url:?} must not have a query, a fragment or user info: it is the base that links are made from")]
    Extra { url: String },
}

impl Site {
    /// Parses the public base address, e.g. `https://gatehouse.example` or
    /// `https://example.org/gatehouse`.
    pub fn parse(url: &str) -> Result<Site, SiteError> {
        let parsed = url::Url::parse(url).map_err(|e| SiteError::NotUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let scheme = parsed.scheme().to_owned();
        if scheme != "http" && scheme != "https" {
            return Err(SiteError::Scheme {
                url: url.to_owned(),
                scheme,
            });
        }
        if parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(SiteError::Extra {
                url: url.to_owned(),
            });
        }
        let host = parsed.host_str().ok_or_else(|| SiteError::NotUrl {
            url: url.to_owned(),
            reason: "it has no host".to_owned(),
        })?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = parsed.path().trim_end_matches('/');
        Ok(Site {
            base: format!("{scheme}://{authority}{path}"),
            scheme,
            authority,
        })
    }

    /// The SIWE `domain`: host and port.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The SIWE `URI`: the link page's address.
    pub fn link_uri(&self) -> String {
        format!("{}/link", self.base)
    }

    /// The page a `/link-wallet` token opens.
    pub fn page_url(&self, token: &str) -> String {
        format!("{}/link/{token}", self.base)
    }

    fn expected<'a>(&'a self, uri: &'a str, nonce: &'a str, now: DateTime<Utc>) -> Expected<'a> {
        Expected {
            scheme: &self.scheme,
            domain: &self.authority,
            uri: UriMatch::Exact(uri),
            nonce,
            chain_id: None,
            now,
            clock_skew: siwe::DEFAULT_CLOCK_SKEW,
        }
    }
}

/// A link page opened by `/link-wallet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPage {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The SHA-256 a page token is stored as.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Issues a one-time link page for `user`.
pub async fn issue_link_page(
    tx: &TenantTx,
    site: &Site,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<LinkPage, StoreError> {
    // 256 random bits: the token is the page's only credential.
    let token = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = now + ttl(LINK_PAGE_TTL);
    tx.link_tokens()
        .issue(user, &token_hash(&token), expires_at, now)
        .await?;
    Ok(LinkPage {
        url: site.page_url(&token),
        expires_at,
    })
}

fn ttl(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::minutes(10))
}

/// Why a link page cannot be used. Said to the member as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageRefusal {
    #[error("this link is not valid: run /link-wallet in Discord for a new one")]
    Unknown,
    #[error("this link has expired: run /link-wallet in Discord for a new one")]
    Expired,
    #[error("this link was already used: run /link-wallet in Discord for a new one")]
    Used,
    #[error("you are not a member of this server any more")]
    NotAMember,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Refused(#[from] PageRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A link page's token, resolved: whose page it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageHolder {
    pub community: CommunityRef,
    pub user: UserId,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// Resolves a page token. An expired one is refused; a used one is
/// returned with `used_at` set (the page may still show its outcome), and
/// [`complete_link`] refuses it.
pub async fn open_link_page(
    store: &Store,
    token: &str,
    now: DateTime<Utc>,
) -> Result<PageHolder, PageError> {
    let found = store
        .directory()
        .resolve_wallet_link_token(&token_hash(token))
        .await?
        .ok_or(PageRefusal::Unknown)?;
    if found.expires_at <= now {
        return Err(PageRefusal::Expired.into());
    }
    Ok(PageHolder {
        community: CommunityRef {
            tenant: found.tenant,
            guild: found.guild,
        },
        user: found.user,
        expires_at: found.expires_at,
        used_at: found.used_at,
    })
}

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
    #[error("there is no pending link request: ask for a new message to sign")]
    NoPendingRequest,
    #[error("the message to sign has expired: ask for a new one")]
    Expired,
    #[error("that is not the message Gatehouse asked you to sign: {0}")]
    NotSiwe(String),
    #[error("{0}")]
    Mismatch(Mismatch),
    #[error("the message was changed after Gatehouse issued it: sign it exactly as given")]
    Altered,
    #[error("{0}")]
    InvalidSignature(String),
    #[error("you already have {MAX_WALLETS_PER_MEMBER} wallets linked: unlink one first")]
    TooManyWallets,
    #[error(transparent)]
    Page(#[from] PageRefusal),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The signature could not be checked (a contract wallet's chain is
    /// unreachable or not configured): not the member's fault, not a "no".
    #[error("the signature could not be checked right now: {0}")]
    Unverifiable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The SIWE message that asks `address` to link to `user` in `guild`.
#[allow(clippy::too_many_arguments)] // each is one field of the message
pub fn link_message(
    site: &Site,
    guild: GuildId,
    user: UserId,
    address: alloy_primitives::Address,
    chain_id: u64,
    nonce: &str,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<SiweMessage, siwe::ParseError> {
    // Whole seconds: the message is read by a person in their wallet.
    let at = |t: DateTime<Utc>| siwe::Timestamp::from(t.trunc_subsecs(0));
    let message = SiweMessage {
        scheme: (!site.is_https()).then(|| site.scheme.clone()),
        domain: site.authority.clone(),
        address,
        statement: Some(format!(
            "Link this wallet to Discord user {user} in server {guild} on Gatehouse."
        )),
        uri: site.link_uri(),
        chain_id,
        nonce: nonce.to_owned(),
        issued_at: at(issued_at),
        expiration_time: Some(at(expires_at)),
        not_before: None,
        request_id: None,
        resources: Vec::new(),
    };
    message.validate()?;
    Ok(message)
}

/// Issues a fresh message for `user` to sign with `address`, replacing any
/// pending one (only the message shown last can be used).
pub async fn request_link(
    tx: &TenantTx,
    site: &Site,
    guild: GuildId,
    user: UserId,
    address: &str,
    chain_id: Option<u64>,
    now: DateTime<Utc>,
) -> Result<LinkRequest, LinkError> {
    let wallet =
        WalletAddress::parse(address).map_err(|e| Refusal::InvalidAddress(e.to_string()))?;
    let parsed: alloy_primitives::Address = wallet
        .as_str()
        .parse()
        .map_err(|e| Refusal::InvalidAddress(format!("{e}")))?;
    // SIWE nonces are letters and digits; 128 random bits.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let expires_at = now + ttl(MESSAGE_TTL);
    let message = link_message(
        site,
        guild,
        user,
        parsed,
        chain_id.unwrap_or(DEFAULT_CHAIN_ID),
        &nonce,
        now,
        expires_at,
    )
    .map_err(|e| Refusal::NotSiwe(e.to_string()))?
    .to_string();
    // Abandoned requests go here rather than in a sweeper: the table stays
    // as small as the requests still open.
    tx.wallet_nonces().prune_expired(now).await?;
    tx.wallet_nonces()
        .issue(user, &wallet, &nonce, &message, expires_at)
        .await?;
    Ok(LinkRequest {
        message,
        expires_at,
    })
}

/// How a proof reached us, for the audit trail.
#[derive(Clone, Debug)]
pub enum Via {
    /// The wallet-link page, opened with this token (used up on success).
    Page { token_hash: [u8; 32] },
    /// Pasted in Discord; `context` names e.g. the interaction's event.
    Discord { context: serde_json::Value },
}

/// A wallet that was linked.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkOutcome {
    /// The member, re-read with the new wallet.
    pub profile: Profile,
    pub wallet: WalletAddress,
    pub proof: WalletProof,
    /// The member it was taken from, who must be re-checked too.
    pub reclaimed_from: Option<UserId>,
    /// It was already this member's (the proof was refreshed).
    pub already_linked: bool,
}

/// Verifies `signature` over the member's pending message and links the
/// wallet. `message` is the text the wallet signed when the caller has it
/// (the page sends it back); it must be exactly the issued one, and when it
/// is not, the first field that differs is named (a message for another
/// site is the phishing case).
#[allow(clippy::too_many_arguments)]
pub async fn complete_link(
    tx: &TenantTx,
    chains: &Evaluator,
    site: &Site,
    profile: &Profile,
    message: Option<&str>,
    signature: &str,
    via: Via,
    now: DateTime<Utc>,
) -> Result<LinkOutcome, LinkError> {
    let user = profile.discord_user_id;
    if let Via::Page { token_hash } = &via {
        let token = tx
            .link_tokens()
            .get_for_update(token_hash)
            .await?
            .ok_or(Refusal::Page(PageRefusal::Unknown))?;
        if token.discord_user_id != user {
            return Err(Refusal::Page(PageRefusal::Unknown).into());
        }
        if token.used_at.is_some() {
            return Err(Refusal::Page(PageRefusal::Used).into());
        }
        if token.expires_at <= now {
            return Err(Refusal::Page(PageRefusal::Expired).into());
        }
    }
    let pending = tx
        .wallet_nonces()
        .pending(user)
        .await?
        .ok_or(Refusal::NoPendingRequest)?;
    if pending.is_expired(now) {
        return Err(Refusal::Expired.into());
    }
    let uri = site.link_uri();
    let expected = site.expected(&uri, &pending.nonce, now);
    let text = message.unwrap_or(&pending.message);
    let verified = match siwe::verify(text, signature, &expected, chains).await {
        Ok(v) => v,
        Err(VerifyError::Parse(e)) => return Err(Refusal::NotSiwe(e.to_string()).into()),
        Err(VerifyError::Mismatch(m)) => return Err(Refusal::Mismatch(m).into()),
        Err(VerifyError::Signature(e)) if e.is_invalid() => {
            return Err(Refusal::InvalidSignature(e.to_string()).into())
        }
        // Not a key's signature, and no chain here could say whether a
        // contract wallet accepts it: the member can do nothing but use
        // another wallet or chain, so it is a refusal, not "try again".
        Err(VerifyError::Signature(siwe::SignatureError::ChainNotConfigured {
            chain_id,
            address,
        })) => {
            return Err(Refusal::InvalidSignature(format!(
                "the signature was not made by {address}'s key, and contract wallets on chain {chain_id} cannot be checked here"
            ))
            .into())
        }
        Err(VerifyError::Signature(e)) => return Err(LinkError::Unverifiable(e.to_string())),
    };
    // The fields matched; anything else that differs (statement, times,
    // address) was not what we issued.
    if text != pending.message {
        return Err(Refusal::Altered.into());
    }
    let wallet = pending.address.clone();
    let proof = match verified.proof {
        siwe::Proof::Eoa => WalletProof::Eoa,
        siwe::Proof::Erc1271 => WalletProof::Erc1271,
    };
    let already_linked = profile.wallets.contains(&wallet);
    if !already_linked && profile.wallets.len() >= MAX_WALLETS_PER_MEMBER {
        return Err(Refusal::TooManyWallets.into());
    }
    if !tx.wallet_nonces().consume(user, &pending.nonce).await? {
        // Replaced by a newer request between our read and now: that one
        // is the member's current intent.
        return Err(Refusal::NoPendingRequest.into());
    }
    let linked = tx.member_wallets().link(profile.id, &wallet, proof).await?;
    let reclaimed_from = match &linked {
        Linked::MovedFrom { user: from, .. } => Some(*from),
        Linked::New | Linked::Again => None,
    };
    let (method, context) = match &via {
        Via::Page { token_hash } => {
            tx.link_tokens().mark_used(token_hash, now).await?;
            ("siwe:page", serde_json::Value::Null)
        }
        Via::Discord { context } => ("siwe:discord", context.clone()),
    };
    if let Some(from) = reclaimed_from {
        let entry = Actor::Member(user)
            .entry(AuditAction::WalletUnlinked)
            .target("member", from.to_string())
            .metadata(json!({
                "discord_user_id": from.to_string(),
                "wallet": wallet.as_str(),
                "reason": "reclaimed",
                "by": user.to_string(),
            }));
        tx.audit().append(&entry).await?;
    }
    let mut metadata = json!({
        "discord_user_id": user.to_string(),
        "wallet": wallet.as_str(),
        "proof": proof.as_str(),
        "method": method,
        "chain_id": verified.message.chain_id,
        "reclaimed_from": reclaimed_from.map(|u| u.to_string()),
    });
    if let (Some(fields), serde_json::Value::Object(extra)) = (metadata.as_object_mut(), context) {
        fields.extend(extra);
    }
    let entry = Actor::Member(user)
        .entry(AuditAction::WalletLinked)
        .target("profile", profile.id.to_string())
        .metadata(metadata);
    tx.audit().append(&entry).await?;
    let profile = tx
        .profiles()
        .find_by_discord_user(user)
        .await?
        .ok_or(StoreError::NotFound {
            context: "re-reading the member after linking a wallet",
        })?;
    Ok(LinkOutcome {
        profile,
        wallet,
        proof,
        reclaimed_from,
        already_linked: matches!(linked, Linked::Again),
    })
}

/// The member's wallets, in the order they were linked.
pub async fn list(tx: &TenantTx, profile: &Profile) -> Result<Vec<MemberWallet>, StoreError> {
    tx.member_wallets().of(profile.id).await
}

/// Unlinks one of the member's wallets. `Ok(false)` if it was not theirs.
/// The caller re-checks the member: what the wallet earned goes with it.
pub async fn unlink(
    tx: &TenantTx,
    actor: &Actor,
    profile: &Profile,
    address: &str,
) -> Result<bool, LinkError> {
    let wallet =
        WalletAddress::parse(address).map_err(|e| Refusal::InvalidAddress(e.to_string()))?;
    if !tx.member_wallets().unlink(profile.id, &wallet).await? {
        return Ok(false);
    }
    let entry = actor
        .entry(AuditAction::WalletUnlinked)
        .target("profile", profile.id.to_string())
        .metadata(json!({
            "discord_user_id": profile.discord_user_id.to_string(),
            "wallet": wallet.as_str(),
            "reason": "unlinked",
        }));
    tx.audit().append(&entry).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(url: &str) -> Site {
        Site::parse(url).expect("a valid public address")
    }

    #[test]
    fn the_public_address_gives_the_domain_and_uri_of_messages() {
        let s = site("https://Gate.example:8443/base/");
        assert_eq!(s.authority(), "gate.example:8443");
        assert_eq!(s.link_uri(), "https://gate.example:8443/base/link");
        assert_eq!(s.page_url("ab"), "https://gate.example:8443/base/link/ab");
        assert!(s.is_https());
        let s = site("http://127.0.0.1:8080");
        assert_eq!(s.authority(), "127.0.0.1:8080");
        assert_eq!(s.link_uri(), "http://127.0.0.1:8080/link");
    }

    #[test]
    fn unusable_public_addresses_are_refused_with_a_reason() {
        assert!(matches!(
            Site::parse("gate.example"),
            Err(SiteError::NotUrl { .. })
        ));
        assert!(matches!(
            Site::parse("ftp://gate.example"),
            Err(SiteError::Scheme { .. })
        ));
        assert!(matches!(
            Site::parse("https://gate.example/?a=1"),
            Err(SiteError::Extra { .. })
        ));
        assert!(matches!(
            Site::parse("https://u:p@gate.example"),
            Err(SiteError::Extra { .. })
        ));
    }

    #[test]
    fn the_link_message_is_a_siwe_message_for_this_site_that_parses_back() {
        let s = site("http://127.0.0.1:8080");
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time");
        let address: alloy_primitives::Address = "0x00000000000000000000000000000000000000aa"
            .parse()
            .expect("an address");
        let m = link_message(
            &s,
            GuildId::new(41).expect("id"),
            UserId::new(77).expect("id"),
            address,
            1,
            "0123456789abcdef",
            at,
            at + chrono::Duration::minutes(10),
        )
        .expect("a valid message");
        let text = m.to_string();
        assert!(text.starts_with(
            "http://127.0.0.1:8080 wants you to sign in with your Ethereum account:\n"
        ));
        assert!(text.contains("Link this wallet to Discord user 77 in server 41 on Gatehouse."));
        assert!(text.contains("\nURI: http://127.0.0.1:8080/link\n"));
        assert!(text.contains("\nNonce: 0123456789abcdef\n"));
        assert!(text.contains("\nExpiration Time: 2023-11-14T22:23:20Z"));
        assert_eq!(SiweMessage::parse(&text).expect("parses"), m);
    }
}
