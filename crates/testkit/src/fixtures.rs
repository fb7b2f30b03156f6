//! Community data that several test crates arrange the same way, written
//! through the store's own API (so through RLS, as production writes it).

use store::{
    repo::{NewRule, RuleType},
    Store, TenantId, WalletAddress,
};
use wire::{GuildId, RoleId, UserId};

/// The community `guild` was provisioned as; panics if it was not.
pub async fn tenant_of(store: &Store, guild: GuildId) -> TenantId {
    store
        .directory()
        .resolve_guild(guild)
        .await
        .unwrap_or_else(|e| panic!("resolving guild {guild}: {e}"))
        .unwrap_or_else(|| panic!("guild {guild} was not provisioned"))
}

/// Gates `role` in `guild`'s community on an ERC-20 balance of at least
/// `min_balance` of `contract` on chain `testchain`; returns the community.
pub async fn gate_role(
    store: &Store,
    guild: GuildId,
    contract: &str,
    role: RoleId,
    min_balance: &str,
) -> TenantId {
    let tenant = tenant_of(store, guild).await;
    let tx = store.begin(tenant).await.expect("a tenant transaction");
    tx.rules()
        .create(&NewRule {
            chain: Some("testchain".into()),
            contract_address: Some(WalletAddress::parse(contract).expect("a contract address")),
            rule_type: RuleType::TokenBalance,
            parameters: serde_json::json!({ "min_balance": min_balance }),
            role_discord_id: role,
            tier_mapping: None,
            priority: 0,
            enabled: true,
        })
        .await
        .unwrap_or_else(|e| panic!("creating the rule for role {role}: {e}"));
    tx.commit().await.expect("commit");
    tenant
}

/// Links `wallet` to `user` in `tenant` directly in the store, as if the
/// member had proved it.
pub async fn link_wallet(store: &Store, tenant: TenantId, user: UserId, wallet: &str) {
    let tx = store.begin(tenant).await.expect("a tenant transaction");
    tx.profiles()
        .link_wallet(
            user,
            &WalletAddress::parse(wallet).expect("a wallet address"),
        )
        .await
        .unwrap_or_else(|e| panic!("linking {wallet} to {user}: {e}"));
    tx.commit().await.expect("commit");
}
