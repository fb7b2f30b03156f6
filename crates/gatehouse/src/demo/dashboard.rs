//! The demo's dashboard: with `--keep-running` the demo's API also serves
//! the admin dashboard, logging in through the simulator's OAuth2, with two
//! simulated people to log in as — an admin (Manage Server on every demo
//! server) and a member without it — and, with `--ready-file`, writes the
//! addresses a browser test needs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use discord_sim::{permissions, OAuthUser};
use rand::RngCore;
use serde::Serialize;
use settings::Secret;
use wire::UserId;

use super::scenario::{self, World};

/// The simulated admin's Discord user id.
pub const ADMIN: u64 = 1_100_000_000_000_000_900;
/// A simulated member without Manage Server.
pub const NON_ADMIN: u64 = 1_100_000_000_000_000_901;

/// Dashboard settings pointed at the demo's simulator, served at `api_url`.
pub fn settings(world: &World, api_url: &str) -> anyhow::Result<api::DashboardSettings> {
    let sim = world.sim.config();
    // A fresh secret per run: sessions end with the demo.
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    Ok(api::DashboardSettings {
        public_url: api_url.parse().context("the demo API's address")?,
        client_id: sim.application_id.to_string(),
        client_secret: Secret::new(sim.oauth2.client_secret.clone()),
        discord_url: world
            .sim
            .api_url()
            .parse()
            .context("the simulator's address")?,
        session_secret: Secret::new(
            secret
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ),
        session_idle: api::DashboardSettings::DEFAULT_IDLE,
        session_lifetime: api::DashboardSettings::DEFAULT_LIFETIME,
        permission_refresh: Duration::from_secs(60),
        discord_timeout: Duration::from_secs(5),
    })
}

/// What a browser test needs to drive the running demo.
#[derive(Debug, Serialize)]
pub struct Ready {
    pub dashboard_url: String,
    pub api_url: String,
    /// The simulator's REST base; its control API is under `/_sim`.
    pub sim_url: String,
    pub admin_user_id: String,
    pub non_admin_user_id: String,
    pub communities: Vec<ReadyCommunity>,
    /// A token rule the demo's chain can decide: members with a balance of
    /// at least `min_balance` qualify.
    pub token: ReadyToken,
    /// The public address `/link-wallet` links point under.
    pub public_url: String,
    /// A member who can link a funded wallet, for the wallet-link page.
    pub wallet_link: ReadyWalletLink,
}

/// A present member with no wallet and no token role, a test key whose
/// address holds enough of the demo token for the holder role, and a
/// second such member for the refusals.
#[derive(Debug, Serialize)]
pub struct ReadyWalletLink {
    pub guild_id: String,
    pub user_id: String,
    /// The role the funded wallet earns (the holder rule's).
    pub role_id: String,
    /// A throwaway test key, never a real one.
    pub private_key: String,
    pub address: String,
    pub chain_id: u64,
    pub other: ReadyMember,
}

#[derive(Debug, Serialize)]
pub struct ReadyMember {
    pub guild_id: String,
    pub user_id: String,
}

/// The demo's funded test wallet key (a throwaway: 0x11 repeated).
const LINK_KEY: [u8; 32] = [0x11; 32];

/// Funds the test wallet and picks two members of the first server who
/// hold no token role (so the link visibly earns one).
fn wallet_link(world: &World) -> anyhow::Result<ReadyWalletLink> {
    let control = world.sim.control();
    let guild = *world.guilds.first().context("the demo has no server")?;
    let info = control.guild(guild)?;
    let holder = *info
        .role_ids
        .get(1)
        .context("the demo server's holder role")?;
    let whale = info.role_ids.get(2).copied();
    let candidates: Vec<UserId> = control
        .members(guild)?
        .into_iter()
        .filter(|m| m.user_id.get() != ADMIN && m.user_id.get() != NON_ADMIN)
        .filter(|m| !m.roles.contains(&holder) && whale.is_none_or(|w| !m.roles.contains(&w)))
        .map(|m| m.user_id)
        .collect();
    let (Some(user), Some(other)) = (candidates.first(), candidates.get(1)) else {
        anyhow::bail!("the demo's first server has fewer than two members without a token role");
    };
    let key = k256::ecdsa::SigningKey::from_slice(&LINK_KEY).context("the demo's test key")?;
    let address = eligibility::Address::from_public_key(key.verifying_key());
    world.fund(address, scenario::HOLDER_MIN);
    Ok(ReadyWalletLink {
        guild_id: guild.to_string(),
        user_id: user.to_string(),
        role_id: holder.to_string(),
        private_key: format!("0x{}", "11".repeat(32)),
        address: address.to_string(),
        chain_id: world.chain.chain_id(),
        other: ReadyMember {
            guild_id: guild.to_string(),
            user_id: other.to_string(),
        },
    })
}

#[derive(Debug, Serialize)]
pub struct ReadyCommunity {
    pub guild_id: String,
    pub name: String,
    /// A role of the server no rule grants yet.
    pub free_role_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReadyToken {
    pub chain: &'static str,
    pub contract: &'static str,
    pub min_balance: String,
}

/// Registers the two simulated people (after the scenario, so that they are
/// not counted in its summary) and describes the running demo.
pub fn register_people(world: &World, api_url: &str) -> anyhow::Result<Ready> {
    let control = world.sim.control();
    let admin = UserId::new(ADMIN).context("the admin's id")?;
    let member = UserId::new(NON_ADMIN).context("the member's id")?;
    control.add_oauth_user(OAuthUser {
        global_name: Some("Demo Admin".into()),
        ..OAuthUser::new(admin, "demo-admin")
    });
    control.add_oauth_user(OAuthUser {
        global_name: Some("Demo Member".into()),
        ..OAuthUser::new(member, "demo-member")
    });
    let mut communities = Vec::new();
    for guild in &world.guilds {
        control.set_member_permissions(*guild, admin, permissions::MANAGE_GUILD)?;
        control.set_member_permissions(*guild, member, 0)?;
        let info = control.guild(*guild)?;
        communities.push(ReadyCommunity {
            guild_id: guild.to_string(),
            name: info.name,
            // role_ids[0] is @everyone; 1 and 2 are the scenario's.
            free_role_id: info.role_ids.get(3).map(ToString::to_string),
        });
    }
    Ok(Ready {
        dashboard_url: format!("{api_url}/dashboard"),
        api_url: api_url.to_owned(),
        sim_url: world.sim.api_url(),
        admin_user_id: admin.to_string(),
        non_admin_user_id: member.to_string(),
        communities,
        token: ReadyToken {
            chain: "demo",
            contract: scenario::CONTRACT,
            min_balance: "1".to_owned(),
        },
        public_url: api_url.to_owned(),
        wallet_link: wallet_link(world)?,
    })
}

impl Ready {
    /// How to log in, for the person at the terminal.
    pub fn instructions(&self) -> String {
        format!(
            "dashboard: {}/login\n  log in with Discord, then in the simulator's chooser pick \"demo-admin\" ({}) to manage the demo servers,\n  or \"demo-member\" ({}) to see what someone without Manage Server sees\nwallet links: /link-wallet answers with links under {}/link/ (the test wallet {} holds the demo token)",
            self.api_url, self.admin_user_id, self.non_admin_user_id, self.public_url, self.wallet_link.address
        )
    }

    /// Writes the file atomically (a reader never sees half of it).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let partial = path.with_extension("json.tmp");
        std::fs::write(&partial, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
    }
}
