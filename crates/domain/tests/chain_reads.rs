//! Role sync and the chain: a community over its chain-read budget is
//! deferred (never stripped, never holding up another community), and an
//! interactive check reuses reads younger than the minimum age. Time for
//! the chain reader is a `ManualClock`; what is counted is the fake
//! chain's calls, never how long anything took.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use domain::role_sync::{RoleChange, RoleChangeError, RoleSync, RoleSyncConfig, RoleWriter};
use eligibility::fake_chain::{FakeChain, FakeContract};
use eligibility::{
    ChainConfig, CommunityBudget, EligibilityConfig, Evaluator, ManualClock, MemberFacts, RuleDef,
    RuleSet, U256,
};
use store::repo::MemberUpsert;
use store::{Store, TenantId};
use testkit::TestDb;
use wire::check::CheckPriority;
use wire::{GuildId, RoleId, UserId};

const CONTRACT: &str = "0x00000000000000000000000000000000000c0de1";
const ROLE: u64 = 77;

/// Role changes made, in order: (guild, user, added).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(GuildId, UserId, bool)>>>);

impl Recorder {
    fn take(&self) -> Vec<(GuildId, UserId, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl RoleWriter for Recorder {
    async fn change_role(
        &self,
        change: RoleChange,
        _priority: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        self.0
            .lock()
            .unwrap()
            .push((change.guild_id, change.user_id, change.add));
        Ok(())
    }
}

fn config(check_min_read_age: Duration) -> RoleSyncConfig {
    RoleSyncConfig {
        grace: Duration::ZERO,
        recheck_period: Duration::from_secs(24 * 3600),
        scan_interval: Duration::from_secs(1),
        scan_batch: 100,
        check_min_read_age,
    }
}

fn wallet(n: u64) -> String {
    format!("0x{n:040x}")
}

fn evaluator(chain: &FakeChain, clock: &ManualClock, budget: Option<CommunityBudget>) -> Evaluator {
    let mut testchain = ChainConfig::new(vec![chain.url()]);
    // One call per read, one call per batch: calls are easy to count.
    testchain.multicall_address = None;
    testchain.max_batch_size = 1;
    testchain.community_budget = budget;
    Evaluator::with_clock(
        &EligibilityConfig {
            chains: [("testchain".to_owned(), testchain)].into(),
        },
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// A community gating role 77 on 10 of the token, with members
/// `(user, wallet, holds the role already)`.
async fn community(store: &Store, guild: u64, members: &[(u64, u64, bool)]) -> TenantId {
    let guild = GuildId::new(guild).unwrap();
    let tenant = store
        .directory()
        .provision_guild(guild, "chain reads")
        .await
        .unwrap();
    let tx = store.begin(tenant).await.unwrap();
    for (user, _, holds) in members {
        tx.profiles()
            .upsert_member(&MemberUpsert {
                discord_user_id: UserId::new(*user).unwrap(),
                role_ids: if *holds {
                    vec![RoleId::new(ROLE).unwrap()]
                } else {
                    vec![]
                },
                joined_at: Utc::now(),
            })
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    for (user, w, _) in members {
        testkit::fixtures::link_wallet(store, tenant, UserId::new(*user).unwrap(), &wallet(*w))
            .await;
    }
    testkit::fixtures::gate_role(store, guild, CONTRACT, RoleId::new(ROLE).unwrap(), "10").await;
    tenant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_community_over_its_chain_budget_is_deferred_while_another_is_checked() {
    let db = TestDb::create("domain_chain_budget").await;
    let store = db.store(4).await;
    let chain = FakeChain::start().await.unwrap();
    let token: eligibility::Address = CONTRACT.parse().unwrap();
    chain.deploy(token, FakeContract::Erc20);
    // A: four holders, and a member holding the role who no longer holds
    // the token. B: two holders.
    let a = community(
        &store,
        931,
        &[
            (1, 0xa1, false),
            (2, 0xa2, false),
            (3, 0xa3, false),
            (4, 0xa4, false),
            (5, 0xa5, true),
        ],
    )
    .await;
    let b = community(&store, 932, &[(1, 0xb1, false), (2, 0xb2, false)]).await;
    for w in [0xa1, 0xa2, 0xa3, 0xa4, 0xb1, 0xb2] {
        chain.set_erc20_balance(token, wallet(w).parse().unwrap(), U256::from(100u64));
    }
    let clock = ManualClock::new();
    let evaluator = Arc::new(evaluator(
        &chain,
        &clock,
        Some(CommunityBudget {
            calls_per_second: 1.0,
            burst: 5,
        }),
    ));

    // A spends its whole budget elsewhere first (say, a burst of /checks).
    let elsewhere = RuleSet::new([RuleDef::parse(
        uuid::Uuid::from_u128(1),
        true,
        "token_balance",
        Some("testchain"),
        Some(CONTRACT),
        &serde_json::json!({"min_balance": "1"}),
    )
    .unwrap()]);
    let strangers: Vec<MemberFacts> = (0xd0..0xd5)
        .map(|w| MemberFacts {
            wallets: vec![wallet(w).parse().unwrap()],
            score: 0,
        })
        .collect();
    evaluator
        .evaluate_many(
            *a.as_uuid(),
            &elsewhere,
            &strangers,
            eligibility::Freshness::Cached,
        )
        .await;
    assert_eq!(chain.eth_calls(), 5);

    let roles = Recorder::default();
    let sync = RoleSync::new(
        store.clone(),
        evaluator,
        roles.clone(),
        config(Duration::ZERO),
    );
    let (guild_a, guild_b) = (GuildId::new(931).unwrap(), GuildId::new(932).unwrap());

    // The pass checks B in full; A's members are left undecided, so
    // nothing is granted and, above all, no role is taken from member 5.
    let report = sync.scan_due().await.unwrap();
    assert_eq!(report.deferred, 5, "{report:?}");
    assert_eq!((report.granted, report.removed), (2, 0), "{report:?}");
    assert_eq!(chain.eth_calls(), 7, "only B's two reads were sent");
    let changes = roles.take();
    assert!(
        changes.iter().all(|(g, _, add)| *g == guild_b && *add),
        "{changes:?}"
    );
    // A's members are due again at once, not a whole period on.
    let due_soon = db
        .count(&format!(
            "SELECT count(*) FROM profiles WHERE community_id = '{a}' \
             AND next_check_at <= now() + interval '1 minute'"
        ))
        .await;
    assert_eq!(due_soon, 5);
    let b_later = db
        .count(&format!(
            "SELECT count(*) FROM profiles WHERE community_id = '{b}' \
             AND next_check_at > now() + interval '1 minute'"
        ))
        .await;
    assert_eq!(b_later, 2, "B's members were checked and scheduled");

    // A pass while A's budget is still spent ends (rather than spinning on
    // A's due members) and sends nothing.
    let report = sync.scan_due().await.unwrap();
    assert_eq!((report.deferred, report.granted), (5, 0), "{report:?}");
    assert_eq!(chain.eth_calls(), 7);

    // Five seconds on, A's budget has refilled: its members are decided.
    clock.advance(Duration::from_secs(5));
    let report = sync.scan_due().await.unwrap();
    assert_eq!(report.deferred, 0, "{report:?}");
    assert_eq!((report.granted, report.removed), (4, 1), "{report:?}");
    assert_eq!(chain.eth_calls(), 12);
    let changes = roles.take();
    assert!(
        changes.contains(&(guild_a, UserId::new(5).unwrap(), false)),
        "{changes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_check_reuses_reads_younger_than_the_minimum_age() {
    let db = TestDb::create("domain_check_read_age").await;
    let store = db.store(4).await;
    let chain = FakeChain::start().await.unwrap();
    let token: eligibility::Address = CONTRACT.parse().unwrap();
    chain.deploy(token, FakeContract::Erc20);
    let tenant = community(&store, 941, &[(1, 0xc1, false)]).await;
    chain.set_erc20_balance(token, wallet(0xc1).parse().unwrap(), U256::from(100u64));
    let clock = ManualClock::new();
    let evaluator = Arc::new(evaluator(&chain, &clock, None));
    let roles = Recorder::default();
    let sync = RoleSync::new(
        store.clone(),
        evaluator,
        roles.clone(),
        config(Duration::from_secs(30)),
    );
    let (guild, user) = (GuildId::new(941).unwrap(), UserId::new(1).unwrap());
    let check = || sync.check_member(tenant, guild, user, CheckPriority::Interactive, "/check");

    assert_eq!(check().await.unwrap().granted, 1);
    assert_eq!(chain.eth_calls(), 1);

    // The member sells, and asks again 10 s later: the 10 s old read
    // stands, and no call is made.
    chain.set_erc20_balance(token, wallet(0xc1).parse().unwrap(), U256::ZERO);
    clock.advance(Duration::from_secs(10));
    assert_eq!(check().await.unwrap().removed, 0);
    assert_eq!(
        chain.eth_calls(),
        1,
        "a second /check within 30 s read the chain"
    );

    // At 30 s the read is old enough to be read again.
    clock.advance(Duration::from_secs(20));
    assert_eq!(check().await.unwrap().removed, 1);
    assert_eq!(chain.eth_calls(), 2);
}
