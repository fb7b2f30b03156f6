//! The wallet-link page's operations, whole: what the page shows, the
//! message it asks the wallet to sign, and the proof it sends back.
//!
//! The page's only credential is the token in its address (see
//! [`wallets::issue_link_page`]); there is no cookie, so there is nothing
//! for another site to ride on (no CSRF), and each operation resolves the
//! token first. The member must still be in the server: a link outlives
//! nothing.

use chrono::{DateTime, Utc};
use eligibility::Evaluator;
use store::repo::{MemberWallet, Profile};
use store::{Store, TenantTx};
use wire::check::EligibilityCheck;
use wire::UserId;

use crate::members::RuleStanding;
use crate::recheck::Rechecks;
use crate::wallets::{
    self, LinkError, LinkOutcome, LinkRequest, PageError, PageHolder, PageRefusal, Site, Via,
};
use crate::CommunityRef;

/// What the page shows its member.
#[derive(Clone, Debug, PartialEq)]
pub struct PageView {
    pub holder: PageHolder,
    pub community_name: String,
    pub profile: Profile,
    pub wallets: Vec<MemberWallet>,
    /// Every enabled rule with its last outcome for the member.
    pub rules: Vec<RuleStanding>,
}

impl PageView {
    /// Whether every enabled rule was decided at or after `since` (the
    /// check a link asked for has run).
    pub fn checked_since(&self, since: DateTime<Utc>) -> bool {
        self.rules
            .iter()
            .all(|r| r.grant.as_ref().is_some_and(|g| g.checked_at >= since))
    }
}

async fn member(tx: &TenantTx, holder: &PageHolder) -> Result<Profile, PageError> {
    match tx.profiles().find_by_discord_user(holder.user).await? {
        Some(p) if p.left_at.is_none() => Ok(p),
        _ => Err(PageRefusal::NotAMember.into()),
    }
}

/// What the page at `token` shows. A used link still shows (its outcome),
/// until it expires.
pub async fn view(store: &Store, token: &str, now: DateTime<Utc>) -> Result<PageView, PageError> {
    let holder = wallets::open_link_page(store, token, now).await?;
    let tx = store.begin(holder.community.tenant).await?;
    let profile = member(&tx, &holder).await?;
    let community_name = tx.communities().get().await?.name;
    let wallets = tx.member_wallets().of(profile.id).await?;
    let rules = tx.rules().list_enabled().await?;
    let grants = tx.role_grants().for_profiles(&[profile.id]).await?;
    tx.commit().await?;
    let rules = crate::members::standings(rules, &grants);
    Ok(PageView {
        holder,
        community_name,
        profile,
        wallets,
        rules,
    })
}

/// Issues the SIWE message for `address` (on the wallet's `chain_id`, if
/// it said) for the page at `token`.
pub async fn message(
    store: &Store,
    site: &Site,
    token: &str,
    address: &str,
    chain_id: Option<u64>,
    now: DateTime<Utc>,
) -> Result<LinkRequest, LinkError> {
    let holder = open_unused(store, token, now).await?;
    let tx = store.begin(holder.community.tenant).await?;
    member(&tx, &holder).await.map_err(page_to_link)?;
    let request = wallets::request_link(
        &tx,
        site,
        holder.community.guild,
        holder.user,
        address,
        chain_id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(request)
}

/// Checks the signed message from the page at `token` and links the
/// wallet; then asks the workers to re-check the member (and whoever the
/// wallet was taken from) at once. The link is committed before the
/// re-check is asked for: a lost request is made up by the periodic scan,
/// a lost link would not be.
#[allow(clippy::too_many_arguments)]
pub async fn prove(
    store: &Store,
    chains: &Evaluator,
    rechecks: &impl Rechecks,
    site: &Site,
    token: &str,
    signed_message: &str,
    signature: &str,
    now: DateTime<Utc>,
) -> Result<(CommunityRef, LinkOutcome), LinkError> {
    let holder = open_unused(store, token, now).await?;
    let tx = store.begin(holder.community.tenant).await?;
    let profile = member(&tx, &holder).await.map_err(page_to_link)?;
    let outcome = wallets::complete_link(
        &tx,
        chains,
        site,
        &profile,
        Some(signed_message),
        signature,
        Via::Page {
            token_hash: wallets::token_hash(token),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    let community = holder.community;
    let users = std::iter::once(holder.user).chain(outcome.reclaimed_from);
    for user in users {
        let check = member_check(community, user, token, now);
        if let Err(e) = rechecks.request(&check).await {
            tracing::warn!(%user, error = %e, "could not request a re-check after a wallet link; the periodic scan will do it");
        }
    }
    Ok((community, outcome))
}

/// Unlinks one of the member's wallets from the page at `token` (while it
/// is open, used or not: it is the member's own page), then asks for their
/// re-check: what the wallet earned goes with it. Returns the wallets left,
/// or `None` if that address was not theirs.
pub async fn unlink(
    store: &Store,
    rechecks: &impl Rechecks,
    token: &str,
    address: &str,
    now: DateTime<Utc>,
) -> Result<Option<Vec<store::WalletAddress>>, LinkError> {
    let holder = wallets::open_link_page(store, token, now)
        .await
        .map_err(page_to_link)?;
    let tx = store.begin(holder.community.tenant).await?;
    let profile = member(&tx, &holder).await.map_err(page_to_link)?;
    let actor = crate::Actor::Member(holder.user);
    if !wallets::unlink(&tx, &actor, &profile, address).await? {
        return Ok(None);
    }
    let left = tx.member_wallets().of(profile.id).await?;
    tx.commit().await?;
    let mut check = member_check(holder.community, holder.user, token, now);
    // Its own key: a link and an unlink from one page are two requests.
    check.id = format!("{}:unlink:{}", check.id, now.timestamp_millis());
    if let Err(e) = rechecks.request(&check).await {
        tracing::warn!(user = %holder.user, error = %e, "could not request a re-check after an unlink; the periodic scan will do it");
    }
    Ok(Some(left.into_iter().map(|w| w.address).collect()))
}

fn member_check(
    community: CommunityRef,
    user: UserId,
    token: &str,
    now: DateTime<Utc>,
) -> EligibilityCheck {
    // One per link and member: a retried request within the bus's duplicate
    // window is stored once. The token's hash, not the token.
    let id = format!(
        "link:{}:{user}",
        hex::encode(&wallets::token_hash(token)[..12])
    );
    crate::recheck::member_recheck(
        community.guild,
        user,
        id,
        "wallet.linked",
        now.timestamp_millis(),
    )
}

async fn open_unused(
    store: &Store,
    token: &str,
    now: DateTime<Utc>,
) -> Result<PageHolder, LinkError> {
    let holder = wallets::open_link_page(store, token, now)
        .await
        .map_err(page_to_link)?;
    if holder.used_at.is_some() {
        return Err(wallets::Refusal::Page(PageRefusal::Used).into());
    }
    Ok(holder)
}

fn page_to_link(e: PageError) -> LinkError {
    match e {
        PageError::Refused(r) => LinkError::Refused(wallets::Refusal::Page(r)),
        PageError::Store(e) => LinkError::Store(e),
    }
}
