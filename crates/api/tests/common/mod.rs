//! An `api` server on a throwaway database (through PgBouncer) and a NATS
//! namespace of its own, with helpers to arrange communities and keys.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api::{ApiSettings, AppState};
use domain::keys::{self, NewKey, Scope};
use domain::{Actor, CommunityRef};
use store::repo::MemberUpsert;
use store::{Store, WalletAddress};
use testkit::db::TestDb;
use testkit::nats::NatsScope;
use tokio::task::JoinHandle;
use wire::{GuildId, RoleId, UserId};

pub struct Api {
    pub db: TestDb,
    pub store: Store,
    pub nats: NatsScope,
    pub url: String,
    pub http: reqwest::Client,
    pub evaluator: Arc<eligibility::Evaluator>,
    server: JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Api {
    pub async fn start(label: &str) -> Api {
        Self::start_with(
            label,
            ApiSettings::default(),
            eligibility::EligibilityConfig::default(),
        )
        .await
    }

    pub async fn start_with(
        label: &str,
        settings: ApiSettings,
        chains: eligibility::EligibilityConfig,
    ) -> Api {
        Self::start_dressed(label, settings, chains, |state, _| state).await
    }

    /// Like [`Api::start_with`], letting `dress` add to the state once the
    /// server's address (its second argument) is known: the dashboard's
    /// public URL names it.
    pub async fn start_dressed(
        label: &str,
        settings: ApiSettings,
        chains: eligibility::EligibilityConfig,
        dress: impl FnOnce(AppState, &str) -> AppState,
    ) -> Api {
        let db = TestDb::create(label).await;
        let store = db.store(8).await;
        let nats = NatsScope::new(&db.env.nats).await;
        // Re-check requests need the ELIGIBILITY stream to be acknowledged.
        bus::ensure_streams(&nats.js, &bus::Topology::new(nats.ns.clone()))
            .await
            .expect("streams");
        let client = db.env.nats.connect(bus::Process::Api).await;
        let evaluator = Arc::new(eligibility::Evaluator::new(&chains).expect("evaluator"));
        let state = AppState::new(
            store.clone(),
            client,
            nats.ns.clone(),
            evaluator.clone(),
            settings,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let server = serve_on(listener, dress(state, &url));
        Api {
            db,
            store,
            nats,
            url,
            http: reqwest::Client::new(),
            evaluator,
            server,
        }
    }

    /// A second server on the same database and NATS: another `api` process.
    pub async fn another_process(&self) -> (String, JoinHandle<()>) {
        let client = self.db.env.nats.connect(bus::Process::Api).await;
        let state = AppState::new(
            self.store.clone(),
            client,
            self.nats.ns.clone(),
            self.evaluator.clone(),
            ApiSettings::default(),
        );
        serve(state).await
    }

    pub async fn community(&self, guild: u64) -> CommunityRef {
        let guild = GuildId::new(guild).expect("a guild id");
        let tenant = self
            .store
            .directory()
            .provision_guild(guild, &format!("guild {guild}"))
            .await
            .expect("provisioning");
        CommunityRef { tenant, guild }
    }

    pub async fn key(&self, community: CommunityRef, scopes: &[Scope]) -> String {
        let created = keys::create(
            &self.store,
            community,
            &Actor::Admin(Some("test".into())),
            &NewKey {
                name: "test".into(),
                scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
                expires_at: None,
            },
        )
        .await
        .expect("a key");
        created.secret.expose().to_owned()
    }

    pub async fn all_scopes(&self, community: CommunityRef) -> String {
        self.key(community, Scope::ALL).await
    }

    /// A present member, optionally with a wallet and roles.
    pub async fn member(
        &self,
        community: CommunityRef,
        user: u64,
        wallet: Option<&str>,
        roles: &[RoleId],
    ) -> UserId {
        let user = UserId::new(user).expect("a user id");
        let tx = self.store.begin(community.tenant).await.expect("tx");
        tx.profiles()
            .upsert_member(&MemberUpsert {
                discord_user_id: user,
                role_ids: roles.to_vec(),
                joined_at: chrono::Utc::now(),
            })
            .await
            .expect("a member");
        if let Some(wallet) = wallet {
            tx.profiles()
                .link_wallet(user, &WalletAddress::parse(wallet).expect("a wallet"))
                .await
                .expect("a wallet link");
        }
        tx.commit().await.expect("commit");
        user
    }

    pub fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    pub fn send(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    /// Every audit row of the database, as superuser (across communities).
    pub async fn audit_rows(&self) -> i64 {
        self.db.count("SELECT count(*) FROM audit_logs").await
    }
}

/// Serves `state` on a free loopback port until the handle is aborted.
async fn serve(state: AppState) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    (url, serve_on(listener, state))
}

fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        api::serve(listener, state, std::future::pending())
            .await
            .expect("the api server");
    })
}

/// The JSON body of a response, with its status.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

pub fn role(n: u64) -> RoleId {
    RoleId::new(n).expect("a role id")
}

pub const TOKEN: &str = "0x1111111111111111111111111111111111111111";

pub fn wallet(n: u8) -> String {
    format!("0x{}", format!("{n:02x}").repeat(20))
}

pub const WITHIN: Duration = Duration::from_secs(10);
