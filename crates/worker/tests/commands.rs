//! Slash commands end to end: an interaction created in the simulator is
//! published as the gateway would, the worker answers through the
//! simulator's REST callback, and the test reads the answer back.

mod common;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use alloy_primitives::{eip191_hash_message, Address, Signature};
use common::{guild_join, AsId, Harness};
use discord_sim::{CallbackFault, InteractionInfo, NewInteraction, Simulator};
use domain::wallets::{self, Site};
use eligibility::{fake_chain::FakeChain, U256};
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};
use store::{
    repo::{BadgeEvaluator, NewBadge},
    TenantId,
};
use testkit::eventually;
use wire::{
    check::CheckPriority,
    payload::{CommandOption, InteractionCreate, InteractionKind},
    Envelope, GuildId, InteractionId, Payload, RoleId, UserId,
};

const CONTRACT: &str = "0x00000000000000000000000000000000000c0de2";

static SEQ: AtomicU64 = AtomicU64::new(1000);

struct World {
    sim: Simulator,
    chain: FakeChain,
    h: Harness,
    guild: GuildId,
    members: Vec<UserId>,
    /// A role the gating rule manages (role_ids[0] is @everyone).
    gated: RoleId,
    tenant: TenantId,
}

/// Where the test world's wallet-link pages are served. Nothing listens
/// there: the worker only names it, in links and in messages to sign.
const PUBLIC: &str = "http://127.0.0.1:9";
const PUBLIC_AUTHORITY: &str = "127.0.0.1:9";

/// A guild with three members who have joined, a token rule gating a role
/// (balance ≥ 10) and a worker answering through the simulator, with
/// wallet linking set up at [`PUBLIC`].
async fn world(label: &str) -> World {
    world_with(label, Duration::ZERO, Some(PUBLIC)).await
}

async fn world_with(label: &str, grace: Duration, public: Option<&str>) -> World {
    world_limited(label, grace, public, None).await
}

async fn world_limited(
    label: &str,
    grace: Duration,
    public: Option<&str>,
    commands: Option<worker::CommandLimits>,
) -> World {
    let g = common::GatedGuild::start_with(
        label,
        CONTRACT,
        3,
        common::GuildOptions {
            grace,
            public_site: public.map(|url| Site::parse(url).unwrap()),
            // The chain link messages name: a signature that is not the
            // wallet's key is then asked of a contract wallet there
            // (EIP-1271), and "no contract" is a definite refusal rather
            // than "could not check".
            chain_id: Some(wallets::DEFAULT_CHAIN_ID),
            commands,
        },
    )
    .await;
    // The joins' own checks hold their members for a moment; a test's
    // first check must not find them busy.
    g.h.drained().await;
    World {
        sim: g.sim,
        chain: g.chain,
        h: g.h,
        guild: g.guild,
        members: g.members,
        gated: g.gated,
        tenant: g.tenant,
    }
}

impl World {
    /// Creates the interaction in the simulator and publishes it as the
    /// gateway would. Returns the envelope (for redelivery) and the id.
    async fn invoke(
        &self,
        user: UserId,
        command: &str,
        options: &[(&str, &str)],
    ) -> (Envelope, InteractionId) {
        self.invoke_at(
            user,
            command,
            options,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
    }

    /// As [`World::invoke`], as if the gateway had received it at
    /// `received_ms` (Unix ms).
    async fn invoke_at(
        &self,
        user: UserId,
        command: &str,
        options: &[(&str, &str)],
        received_ms: i64,
    ) -> (Envelope, InteractionId) {
        let sim_options: Vec<Value> = options
            .iter()
            .map(|(name, value)| json!({"name": name, "type": 3, "value": value}))
            .collect();
        let created = self
            .sim
            .control()
            .create_interaction(NewInteraction {
                guild_id: self.guild,
                user_id: user,
                command_name: command.into(),
                options: sim_options,
                locale: None,
            })
            .unwrap();
        let envelope = Envelope::for_dispatch(
            0,
            "s",
            SEQ.fetch_add(1, Ordering::Relaxed),
            received_ms,
            Payload::InteractionCreate(InteractionCreate {
                interaction_id: created.id,
                token: created.token,
                application_id: self.sim.config().application_id,
                kind: InteractionKind::ApplicationCommand,
                command_id: None,
                command_name: Some(command.into()),
                options: options
                    .iter()
                    .map(|(name, value)| CommandOption {
                        name: (*name).into(),
                        value: json!(value),
                        options: Vec::new(),
                    })
                    .collect(),
                locale: Some("en-US".into()),
                guild_locale: None,
            }),
        )
        .with_guild(self.guild)
        .with_user(user);
        self.h.publish(&envelope).await;
        (envelope, created.id)
    }

    /// Waits until the interaction has `n` responses.
    async fn answered(&self, id: InteractionId, n: usize) -> InteractionInfo {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let info = self.sim.control().interaction(id).unwrap();
            if info.responses.len() >= n {
                return info;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "interaction {id} has {} of {n} responses: {:?}; dead letters: {:?}",
                    info.responses.len(),
                    info.responses,
                    self.h.dead_letters().await
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Invokes a command answered directly and returns the reply text,
    /// checking it is an ephemeral message callback.
    async fn reply(&self, user: UserId, command: &str, options: &[(&str, &str)]) -> String {
        let (_, id) = self.invoke(user, command, options).await;
        let info = self.answered(id, 1).await;
        let callback = &info.responses[0];
        assert_eq!(callback.action, "callback");
        assert_eq!(callback.callback_type, Some(4), "{:?}", callback.body);
        assert_eq!(callback.body["data"]["flags"], json!(64), "not ephemeral");
        callback.body["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn link_in_store(&self, user: UserId, wallet: &str) {
        testkit::fixtures::link_wallet(&self.h.store, self.tenant, user, wallet).await;
    }

    /// `/link-wallet address:` for `key`'s wallet: returns the reply and the
    /// message in it, once the request is stored (it is committed just after
    /// the reply reaches Discord; the next command must not overtake it).
    async fn request_message(&self, user: UserId, key: &SigningKey) -> (String, String) {
        let reply = self
            .reply(user, "link-wallet", &[("address", &address_of(key))])
            .await;
        let message = message_to_sign(&reply);
        let nonce = field(&message, "Nonce");
        let query = format!(
            "SELECT count(*) FROM wallet_link_nonces WHERE discord_user_id = {user} AND nonce = '{nonce}'"
        );
        assert_eq!(
            self.h.wait_for_count(&query, 1).await,
            1,
            "no link request stored for {reply}"
        );
        (reply, message)
    }

    /// Proves `key`'s wallet for `user` the paste way and waits until it is
    /// linked. Returns the reply.
    async fn prove(&self, user: UserId, key: &SigningKey) -> String {
        let (_, message) = self.request_message(user, key).await;
        let done = self
            .reply(
                user,
                "link-wallet",
                &[("signature", &personal_sign(key, &message))],
            )
            .await;
        assert!(done.contains("Linked"), "{done}");
        let query = format!(
            "SELECT count(*) FROM member_wallets w JOIN profiles p ON p.id = w.profile_id
             WHERE p.discord_user_id = {user} AND w.address = '{}'",
            address_of(key).to_lowercase()
        );
        assert_eq!(self.h.wait_for_count(&query, 1).await, 1, "{done}");
        done
    }

    /// `user`'s wallets as (address, proof), in the order they were linked.
    async fn wallets_of(&self, user: UserId) -> Vec<(String, String)> {
        self.h
            .db
            .admin()
            .await
            .query(
                "SELECT w.address, w.proof FROM member_wallets w
                   JOIN profiles p ON p.community_id = w.community_id AND p.id = w.profile_id
                  WHERE p.discord_user_id = $1 ORDER BY w.linked_at, w.address",
                &[&(user.get() as i64)],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Audit rows of `action`: (actor id, target id, metadata), oldest first.
    async fn audit(&self, action: &str) -> Vec<(Option<String>, Option<String>, Value)> {
        self.h
            .db
            .admin()
            .await
            .query(
                "SELECT actor_id, target_id, metadata::text FROM audit_logs
                  WHERE action = $1 ORDER BY id",
                &[&action],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let metadata: String = r.get(2);
                (r.get(0), r.get(1), serde_json::from_str(&metadata).unwrap())
            })
            .collect()
    }

    /// Everything a wallet link could have stored, as text, once every
    /// published message has been handled: compared before and after a
    /// refusal, it shows the refusal stored nothing.
    async fn link_state(&self) -> Vec<String> {
        self.h.drained().await;
        self.h
            .db
            .column(
                "SELECT 'wallet ' || w::text FROM member_wallets w
                 UNION ALL SELECT 'nonce ' || n::text FROM wallet_link_nonces n
                 UNION ALL SELECT 'token ' || t::text FROM wallet_link_tokens t
                 UNION ALL SELECT 'audit ' || a.action || ' ' || a.metadata::text
                   FROM audit_logs a WHERE a.action LIKE 'wallet.%'
                 ORDER BY 1",
            )
            .await
    }

    /// Waits until at least `n` interactive checks of `user` for `reason`
    /// were requested.
    async fn check_requested(&self, user: UserId, reason: &str, n: usize) {
        eventually(
            &format!("{n} interactive {reason} check(s) of {user}"),
            common::WAIT,
            || async {
                let asked = self.h.checks_requested().await;
                asked
                    .iter()
                    .filter(|c| {
                        c.user_id == Some(user)
                            && c.reason == reason
                            && c.priority == CheckPriority::Interactive
                    })
                    .count()
                    >= n
            },
        )
        .await;
    }

    /// Waits until `user` holds the gated role (`held`) or does not.
    async fn gated_role(&self, user: UserId, held: bool, what: &str) {
        eventually(what, common::WAIT, || async {
            self.roles_of(user).contains(&self.gated) == held
        })
        .await;
    }

    fn set_balance(&self, key: &SigningKey, balance: u64) {
        self.chain.set_erc20_balance(
            CONTRACT.parse().unwrap(),
            address_of(key).parse().unwrap(),
            U256::from(balance),
        );
    }

    /// Sessions of the test database inside a transaction but idle: what a
    /// transaction held across a Discord call looks like.
    async fn open_transactions(&self) -> i64 {
        self.h
            .count(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            )
            .await
    }

    /// Replies committed but not yet known to have reached Discord.
    async fn pending_replies(&self) -> i64 {
        self.h
            .count("SELECT count(*) FROM interaction_replies")
            .await
    }

    fn roles_of(&self, user: UserId) -> Vec<RoleId> {
        self.sim.control().member(self.guild, user).unwrap().roles
    }

    async fn finish(mut self) {
        self.h.stop_worker().await;
        self.sim.shutdown().await;
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn address_of(key: &SigningKey) -> String {
    Address::from_private_key(key).to_string()
}

/// What a wallet's personal_sign produces: 65 bytes (r, s, v) as hex.
fn personal_sign(key: &SigningKey, message: &str) -> String {
    let hash = eip191_hash_message(message);
    let (sig, recid) = key.sign_prehash_recoverable(hash.as_slice()).unwrap();
    let sig = Signature::from((sig, recid));
    format!("0x{}", hex_encode(&sig.as_bytes()))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The message inside the reply's code block.
fn message_to_sign(reply: &str) -> String {
    let start = reply.find("```\n").expect("a code block") + 4;
    let end = reply[start..].find("\n```").expect("a closed code block") + start;
    reply[start..end].to_owned()
}

/// A SIWE message's `Name: value` line.
fn field<'m>(message: &'m str, name: &str) -> &'m str {
    let prefix = format!("\n{name}: ");
    let start = message
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {name} in {message}"))
        + prefix.len();
    message[start..].lines().next().unwrap_or_default()
}

/// The token of the link-page URL in a `/link-wallet` reply.
fn page_token(reply: &str) -> &str {
    let prefix = format!("{PUBLIC}/link/");
    let start = reply
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link under {PUBLIC} in {reply}"))
        + prefix.len();
    reply[start..]
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_and_badges_answer_through_the_callback() {
    let w = world("cmd_profile").await;
    let user = w.members[0];
    let wallet = "0x1111111111111111111111111111111111111111";
    w.link_in_store(user, wallet).await;
    let tx = w.h.store.begin(w.tenant).await.unwrap();
    for (slug, name) in [("helper", "Helper"), ("legend", "Legend")] {
        domain::badges::define(
            &tx,
            &domain::Actor::System,
            &NewBadge {
                slug: slug.into(),
                name: name.into(),
                description: format!("{name} of the server"),
                evaluator: BadgeEvaluator::ManualGrant,
                criteria: json!({}),
            },
        )
        .await
        .unwrap();
    }
    domain::badges::grant(&tx, "helper", user, "admin", "answered questions")
        .await
        .unwrap();
    // The member holds the gated role (as role sync would record it).
    tx.profiles().set_roles(user, &[w.gated]).await.unwrap();
    tx.commit().await.unwrap();

    let profile = w.reply(user, "profile", &[]).await;
    assert!(
        profile.contains(&format!("Wallets: `{wallet}`")),
        "{profile}"
    );
    assert!(profile.contains("Tier: member"), "{profile}");
    assert!(
        profile.contains(&format!("Roles from rules: <@&{}>", w.gated)),
        "{profile}"
    );
    assert!(profile.contains("Badges: Helper"), "{profile}");

    let badges = w.reply(user, "badges", &[]).await;
    assert!(badges.contains("(1 of 2)"), "{badges}");
    assert!(badges.contains("Helper — answered questions"), "{badges}");
    assert!(badges.contains("Not yet earned"), "{badges}");
    assert!(badges.contains("Legend — Legend of the server"), "{badges}");

    // Another member: nothing linked, nothing earned.
    let other = w.reply(w.members[1], "profile", &[]).await;
    assert!(other.contains("none linked"), "{other}");
    assert!(other.contains("Roles from rules: none"), "{other}");
    assert!(other.contains("Badges: none yet"), "{other}");

    let unknown = w.reply(user, "dance", &[]).await;
    assert!(
        unknown.contains("I do not know the command /dance"),
        "{unknown}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_interaction_is_answered_once() {
    let w = world("cmd_redelivery").await;
    let (envelope, id) = w.invoke(w.members[0], "profile", &[]).await;
    w.answered(id, 1).await;
    for copy in 0..3 {
        w.h.publish_with_msg_id(&envelope, &format!("copy-{copy}"))
            .await;
    }
    w.h.drained().await;
    let info = w.sim.control().interaction(id).unwrap();
    assert_eq!(info.responses.len(), 1, "{:?}", info.responses);
    assert!(w.h.dead_letters().await.is_empty());

    // A copy whose claim was lost (as if the worker died after replying
    // but before committing): Discord says "already acknowledged", which
    // counts as answered, so it commits quietly instead of failing.
    w.h.db
        .admin()
        .await
        .execute(
            "DELETE FROM processed_events WHERE event_id = $1",
            &[&envelope.id.as_str()],
        )
        .await
        .unwrap();
    w.h.publish_with_msg_id(&envelope, "after-crash").await;
    assert_eq!(
        w.h.wait_for_count(
            &format!(
                "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
                envelope.id.as_str()
            ),
            1
        )
        .await,
        1
    );
    assert_eq!(w.sim.control().interaction(id).unwrap().responses.len(), 1);
    assert!(w.h.dead_letters().await.is_empty());
    w.h.drained().await;
    assert_eq!(
        w.pending_replies().await,
        0,
        "an answered reply is still pending"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transaction_is_open_while_discord_is_slow_to_take_a_reply() {
    // Every command holding a pooled connection across Discord's answer is
    // how a flood of commands (or a slow Discord) starves every community.
    let w = world("cmd_slow_discord").await;
    let user = w.members[0];
    let wallet = key(0x31);
    w.sim.control().fault_callbacks(CallbackFault::Hold, 1);
    let (envelope, id) = w
        .invoke(user, "link-wallet", &[("address", &address_of(&wallet))])
        .await;
    w.sim
        .control()
        .wait_for_held_callbacks(1, common::WAIT)
        .await
        .unwrap();
    // Read while Discord holds the reply (the worker waits up to 2.5 s).
    let open = w.open_transactions().await;
    let claimed =
        w.h.count(&format!(
            "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
            envelope.id.as_str()
        ))
        .await;
    let requested =
        w.h.count(&format!(
            "SELECT count(*) FROM wallet_link_nonces WHERE discord_user_id = {user}"
        ))
        .await;
    w.sim.control().release_callbacks();
    assert_eq!(
        open, 0,
        "a transaction was open while Discord held the reply"
    );
    assert_eq!(claimed, 1, "the claim was not committed before the reply");
    assert_eq!(
        requested, 1,
        "the effect was not committed before the reply"
    );

    // Released, the reply is the one committed.
    let info = w.answered(id, 1).await;
    let shown = message_to_sign(info.responses[0].body["data"]["content"].as_str().unwrap());
    w.h.drained().await;
    let stored: Vec<String> =
        w.h.db
            .column(&format!(
                "SELECT message FROM wallet_link_nonces WHERE discord_user_id = {user}"
            ))
            .await;
    assert_eq!(stored, [shown]);
    assert_eq!(w.sim.control().interaction(id).unwrap().responses.len(), 1);
    assert_eq!(w.pending_replies().await, 0);

    // /check's deferred acknowledgement likewise.
    w.sim.control().fault_callbacks(CallbackFault::Hold, 1);
    let (_, id) = w.invoke(user, "check", &[]).await;
    w.sim
        .control()
        .wait_for_held_callbacks(1, common::WAIT)
        .await
        .unwrap();
    let open = w.open_transactions().await;
    w.sim.control().release_callbacks();
    assert_eq!(
        open, 0,
        "a transaction was open while Discord held /check's acknowledgement"
    );
    let info = w.answered(id, 2).await;
    assert_eq!(info.responses[0].callback_type, Some(5));
    assert_eq!(info.responses[1].action, "edit_original");
    assert!(w.h.dead_letters().await.is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_sent_within_discords_window_is_forgotten() {
    // A stored reply may hold a one-time link: it must not outlive the
    // only moment it could be sent.
    let mut w = world("cmd_reply_expired").await;
    // The retry comes back after Discord's window has closed.
    w.h.stop_worker().await;
    w.h.config.backoff = vec![Duration::from_secs(4)];
    w.h.start_worker();
    let user = w.members[0];
    w.sim.control().fault_callbacks(CallbackFault::Fail, 1);
    let (envelope, id) = w.invoke(user, "link-wallet", &[]).await;
    // The link and its reply commit together; the reply goes once the
    // late redelivery finds it unsendable.
    assert_eq!(
        w.h.wait_for_count("SELECT count(*) FROM wallet_link_tokens", 1)
            .await,
        1
    );
    assert_eq!(
        w.h.wait_for_count(
            &format!(
                "SELECT count(*) FROM processed_events WHERE event_id = '{}'
                    AND NOT EXISTS (SELECT 1 FROM interaction_replies)",
                envelope.id.as_str()
            ),
            1
        )
        .await,
        1,
        "the unsendable reply was kept"
    );
    w.h.drained().await;
    assert!(
        w.sim
            .control()
            .interaction(id)
            .unwrap()
            .responses
            .is_empty(),
        "answered past the window"
    );
    // The member asked for the link; it stays (and expires by itself).
    assert_eq!(
        w.h.count("SELECT count(*) FROM wallet_link_tokens").await,
        1
    );
    assert!(w.h.dead_letters().await.is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_after_the_commit_is_answered_once_with_what_was_committed() {
    // Discord takes the reply but the worker never hears (its process dies,
    // the connection drops): the redelivery must neither apply the command
    // again nor answer with something else than what the member saw.
    let w = world("cmd_lost_reply").await;
    let user = w.members[0];
    let wallet = key(0x33);
    w.set_balance(&wallet, 100);

    w.sim
        .control()
        .fault_callbacks(CallbackFault::TakeThenFail, 1);
    let (_, id) = w
        .invoke(user, "link-wallet", &[("address", &address_of(&wallet))])
        .await;
    w.answered(id, 1).await;
    // The failed attempt is retried; once that is handled too…
    w.h.drained().await;
    let info = w.sim.control().interaction(id).unwrap();
    assert_eq!(info.responses.len(), 1, "{:?}", info.responses);
    let shown = info.responses[0].body["data"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = message_to_sign(&shown);
    // …the request stored is the one the member was shown, and only it.
    let stored: Vec<String> =
        w.h.db
            .column(&format!(
                "SELECT nonce FROM wallet_link_nonces WHERE discord_user_id = {user}"
            ))
            .await;
    assert_eq!(
        stored,
        [field(&message, "Nonce")],
        "the member was shown a request that is not the stored one"
    );

    // The link itself, with its reply lost the same way: applied once.
    w.sim
        .control()
        .fault_callbacks(CallbackFault::TakeThenFail, 1);
    let (_, id) = w
        .invoke(
            user,
            "link-wallet",
            &[("signature", &personal_sign(&wallet, &message))],
        )
        .await;
    w.answered(id, 1).await;
    w.h.drained().await;
    let info = w.sim.control().interaction(id).unwrap();
    assert_eq!(info.responses.len(), 1, "{:?}", info.responses);
    let done = info.responses[0].body["data"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(done.contains("Linked"), "{done}");
    assert_eq!(w.audit("wallet.linked").await.len(), 1);
    w.check_requested(user, "wallet.changed", 1).await;
    w.gated_role(user, true, "the role from the linked wallet")
        .await;

    // Discord never got the first reply: the redelivery sends the one
    // committed (its one-time link is the one whose hash is stored).
    w.sim.control().fault_callbacks(CallbackFault::Fail, 1);
    let (_, id) = w.invoke(user, "link-wallet", &[]).await;
    w.answered(id, 1).await;
    w.h.drained().await;
    let info = w.sim.control().interaction(id).unwrap();
    assert_eq!(info.responses.len(), 1, "{:?}", info.responses);
    let shown = info.responses[0].body["data"]["content"]
        .as_str()
        .unwrap_or_default();
    let stored: Vec<String> =
        w.h.db
            .column(&format!(
                "SELECT encode(token_hash, 'hex') FROM wallet_link_tokens
                  WHERE discord_user_id = {user}"
            ))
            .await;
    assert_eq!(
        stored,
        [hex_encode(&wallets::token_hash(page_token(shown)))]
    );

    assert_eq!(w.pending_replies().await, 0);
    assert!(w.h.dead_letters().await.is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_defers_then_grants_the_role_after_a_balance_change() {
    let w = world("cmd_check").await;
    let user = w.members[0];
    let wallet = "0x2222222222222222222222222222222222222222";
    w.link_in_store(user, wallet).await;
    let contract = CONTRACT.parse().unwrap();

    // Balance 0: nothing to grant.
    let (_, id) = w.invoke(user, "check", &[]).await;
    let info = w.answered(id, 2).await;
    assert_eq!(info.responses[0].action, "callback");
    assert_eq!(info.responses[0].callback_type, Some(5), "not deferred");
    assert_eq!(info.responses[0].body["data"]["flags"], json!(64));
    assert_eq!(info.responses[1].action, "edit_original");
    let text = info.responses[1].body["content"].as_str().unwrap();
    assert!(text.contains("up to date"), "{text}");
    assert!(!w.roles_of(user).contains(&w.gated));

    w.chain
        .set_erc20_balance(contract, wallet.parse().unwrap(), U256::from(50u64));
    let (_, id) = w.invoke(user, "check", &[]).await;
    let info = w.answered(id, 2).await;
    let text = info.responses[1].body["content"].as_str().unwrap();
    assert!(text.contains("1 role(s) granted"), "{text}");
    assert!(text.contains(&format!("<@&{}>", w.gated)), "{text}");
    assert!(w.roles_of(user).contains(&w.gated));
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_wallet_without_options_answers_with_a_one_time_page_link() {
    let w = world("cmd_link_page").await;
    let user = w.members[0];
    let reply = w.reply(user, "link-wallet", &[]).await;
    let token = page_token(&reply).to_owned();
    // 256 random bits, as hex.
    assert_eq!(token.len(), 64, "{reply}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{reply}");
    assert!(reply.contains("/link-wallet address:"), "{reply}");
    assert_eq!(
        w.h.wait_for_count("SELECT count(*) FROM wallet_link_tokens", 1)
            .await,
        1
    );
    let stored: Vec<String> =
        w.h.db
            .column(&format!(
                "SELECT encode(token_hash, 'hex') FROM wallet_link_tokens
                 WHERE discord_user_id = {user} AND expires_at > now() AND used_at IS NULL"
            ))
            .await;
    assert_eq!(stored, [hex_encode(&wallets::token_hash(&token))]);
    // Only its hash: the token is nowhere in the row, as text or as bytes.
    assert_eq!(
        w.h.count(&format!(
            "SELECT count(*) FROM wallet_link_tokens t WHERE t::text ILIKE '%{token}%'"
        ))
        .await,
        0
    );
    // Nor in the reply stored to send it, once it was sent.
    w.h.drained().await;
    assert_eq!(
        w.pending_replies().await,
        0,
        "the one-time link outlived its reply"
    );
    // And nothing else: no message to sign, no wallet, no audit.
    let state = w.link_state().await;
    assert!(
        state.len() == 1 && state[0].starts_with("token "),
        "{state:?}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_signatures_link_several_wallets_whose_holdings_add_up() {
    let w = world("cmd_link_paste").await;
    let user = w.members[0];
    let (first, second) = (key(0x42), key(0x43));
    // 6 + 6 meets the rule's 10; neither wallet does alone.
    w.set_balance(&first, 6);
    w.set_balance(&second, 6);

    let (reply, message) = w.request_message(user, &first).await;
    assert!(reply.contains(&address_of(&first)), "{reply}");
    assert!(
        message.starts_with(&format!(
            "{PUBLIC} wants you to sign in with your Ethereum account:\n{}\n",
            address_of(&first)
        )),
        "{message}"
    );
    assert_eq!(field(&message, "URI"), format!("{PUBLIC}/link"));
    assert!(
        message.contains(&format!("Discord user {user} in server {}", w.guild)),
        "{message}"
    );
    let query = format!(
        "SELECT nonce || ' ' || message FROM wallet_link_nonces
         WHERE discord_user_id = {user}"
    );
    let stored: Vec<String> = w.h.db.column(&query).await;
    assert_eq!(
        stored,
        [format!("{} {message}", field(&message, "Nonce"))],
        "the message shown is not the one stored"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        field(&message, "Expiration Time").parse().unwrap();
    assert!(expires > chrono::Utc::now(), "{message}");

    let done = w
        .reply(
            user,
            "link-wallet",
            &[("signature", &personal_sign(&first, &message))],
        )
        .await;
    let lower = address_of(&first).to_lowercase();
    assert!(done.contains(&format!("Linked `{lower}`")), "{done}");
    assert!(done.contains("(1 wallet now)"), "{done}");
    w.check_requested(user, "wallet.changed", 1).await;
    assert_eq!(
        w.wallets_of(user).await,
        [(lower.clone(), "eoa".to_owned())]
    );
    assert_eq!(
        w.h.count("SELECT count(*) FROM wallet_link_nonces").await,
        0,
        "the nonce was not consumed"
    );
    let linked = w.audit("wallet.linked").await;
    assert_eq!(linked.len(), 1, "{linked:?}");
    let (actor, _, metadata) = &linked[0];
    assert_eq!(actor.as_deref(), Some(user.to_string().as_str()));
    assert_eq!(metadata["wallet"], json!(lower));
    assert_eq!(metadata["proof"], json!("eoa"));
    assert_eq!(metadata["method"], json!("siwe:discord"));
    assert_eq!(metadata["reclaimed_from"], Value::Null);
    // The check the link asked for ran, and 6 is not enough.
    w.h.drained().await;
    assert!(!w.roles_of(user).contains(&w.gated), "6 < 10, yet a role");

    // The nonce is spent: the same signature again is refused.
    let again = w
        .reply(
            user,
            "link-wallet",
            &[("signature", &personal_sign(&first, &message))],
        )
        .await;
    assert!(again.contains("no pending link request"), "{again}");

    // A second wallet, with `address:` naming it alongside the signature.
    let (_, message) = w.request_message(user, &second).await;
    let done = w
        .reply(
            user,
            "link-wallet",
            &[
                ("address", &address_of(&second)),
                ("signature", &personal_sign(&second, &message)),
            ],
        )
        .await;
    assert!(done.contains("(2 wallets now)"), "{done}");
    w.gated_role(user, true, "the role from two wallets' holdings")
        .await;
    let second_lower = address_of(&second).to_lowercase();
    assert_eq!(
        w.wallets_of(user).await,
        [
            (lower.clone(), "eoa".to_owned()),
            (second_lower.clone(), "eoa".to_owned())
        ]
    );
    assert_eq!(w.audit("wallet.linked").await.len(), 2);
    let profile = w.reply(user, "profile", &[]).await;
    assert!(
        profile.contains(&format!("Wallets: `{lower}`, `{second_lower}`")),
        "{profile}"
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_proofs_store_nothing() {
    let w = world("cmd_link_refused").await;
    let user = w.members[0];
    let (owner, impostor) = (key(0x01), key(0x02));
    let address = address_of(&owner);
    let (_, message) = w.request_message(user, &owner).await;
    let before = w.link_state().await;
    assert_eq!(before.len(), 1, "only the pending message: {before:?}");

    // Signed by another key.
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("signature", &personal_sign(&impostor, &message))],
        )
        .await;
    assert!(
        refused.contains(&format!(
            "is not {}'s: it was made by {}",
            address,
            address_of(&impostor)
        )),
        "{refused}"
    );
    assert!(refused.contains("Nothing was linked"), "{refused}");
    assert_eq!(w.link_state().await, before);

    // The right key, over the same message made for another site (what a
    // phishing page would collect): the pending message is what is
    // verified, so the signature is not over it.
    let foreign = message.replace(PUBLIC_AUTHORITY, "gatehouse.evil.example");
    assert!(
        foreign.starts_with("http://gatehouse.evil.example wants you"),
        "{foreign}"
    );
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("signature", &personal_sign(&owner, &foreign))],
        )
        .await;
    assert!(refused.contains("Nothing was linked"), "{refused}");
    assert!(!refused.contains("Linked `"), "{refused}");
    assert_eq!(w.link_state().await, before);

    // Not a signature at all.
    let refused = w
        .reply(user, "link-wallet", &[("signature", "0x1234")])
        .await;
    assert!(refused.contains("not a 65-byte signature"), "{refused}");
    assert_eq!(w.link_state().await, before);

    // `address:` that is not the pending message's wallet, even with a
    // signature that would verify.
    let other = address_of(&impostor);
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[
                ("address", &other),
                ("signature", &personal_sign(&owner, &message)),
            ],
        )
        .await;
    assert!(
        refused.contains(&format!(
            "pending message is for {}, not {other}",
            address.to_lowercase()
        )),
        "{refused}"
    );
    assert!(refused.contains("Nothing was linked"), "{refused}");
    assert_eq!(w.link_state().await, before);

    // Expired: the right signature, too late.
    w.h.db
        .admin()
        .await
        .batch_execute("UPDATE wallet_link_nonces SET expires_at = now() - interval '1 second'")
        .await
        .unwrap();
    let expired = w.link_state().await;
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("signature", &personal_sign(&owner, &message))],
        )
        .await;
    assert!(refused.contains("has expired"), "{refused}");
    assert!(refused.contains("Nothing was linked"), "{refused}");
    assert_eq!(w.link_state().await, expired);
    assert!(w.audit("wallet.linked").await.is_empty());

    // A request (here: another member's) clears expired ones.
    w.request_message(w.members[1], &impostor).await;
    let open: Vec<i64> =
        w.h.db
            .column("SELECT discord_user_id FROM wallet_link_nonces")
            .await;
    assert_eq!(open, vec![w.members[1].get() as i64]);
    // None of that spoiled the member's standing: a fresh proof works.
    w.prove(user, &owner).await;
    assert_eq!(
        w.wallets_of(user).await,
        [(address.to_lowercase(), "eoa".to_owned())]
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_proof_reclaims_a_wallet_and_its_old_holder_loses_the_role_at_once() {
    // A grace period far longer than the test: only the wallet moving can
    // explain the old holder losing the role.
    let w = world_with("cmd_link_reclaim", Duration::from_secs(3600), Some(PUBLIC)).await;
    let (old, new) = (w.members[0], w.members[1]);
    let wallet = key(0x09);
    let address = address_of(&wallet).to_lowercase();
    w.set_balance(&wallet, 100);
    w.prove(old, &wallet).await;
    w.gated_role(old, true, "the first holder's role").await;

    let done = w.prove(new, &wallet).await;
    assert!(
        done.contains("linked to another member, who no longer has it"),
        "{done}"
    );
    assert_eq!(
        w.wallets_of(new).await,
        [(address.clone(), "eoa".to_owned())]
    );
    assert!(w.wallets_of(old).await.is_empty());
    let unlinked = w.audit("wallet.unlinked").await;
    assert_eq!(unlinked.len(), 1, "{unlinked:?}");
    let (actor, target, metadata) = &unlinked[0];
    assert_eq!(actor.as_deref(), Some(new.to_string().as_str()));
    assert_eq!(target.as_deref(), Some(old.to_string().as_str()));
    assert_eq!(metadata["reason"], json!("reclaimed"));
    assert_eq!(metadata["wallet"], json!(address));
    assert_eq!(metadata["discord_user_id"], json!(old.to_string()));
    let linked = w.audit("wallet.linked").await;
    assert_eq!(linked.len(), 2, "{linked:?}");
    assert_eq!(linked[1].2["reclaimed_from"], json!(old.to_string()));
    assert_eq!(linked[1].2["discord_user_id"], json!(new.to_string()));

    w.check_requested(old, "wallet.reclaimed", 1).await;
    w.check_requested(new, "wallet.changed", 1).await;
    w.gated_role(new, true, "the new holder's role").await;
    w.gated_role(old, false, "the old holder losing the role with no grace")
        .await;
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_lists_and_unlinks_and_the_role_goes_at_the_next_check() {
    let w = world_with("cmd_wallets", Duration::from_secs(3600), Some(PUBLIC)).await;
    let (user, other) = (w.members[0], w.members[1]);
    let (rich, empty) = (key(0x21), key(0x22));
    w.set_balance(&rich, 100);

    let none = w.reply(user, "wallets", &[]).await;
    assert!(none.contains("no wallet linked"), "{none}");
    w.prove(user, &rich).await;
    w.prove(user, &empty).await;
    w.gated_role(user, true, "the role from the linked wallet")
        .await;
    let listed = w.reply(user, "wallets", &[]).await;
    let (rich_lower, empty_lower) = (
        address_of(&rich).to_lowercase(),
        address_of(&empty).to_lowercase(),
    );
    let first = listed.find(&format!("`{rich_lower}`"));
    let second = listed.find(&format!("`{empty_lower}`"));
    assert!(
        first.is_some() && second.is_some() && first < second,
        "not both, in linking order: {listed}"
    );

    // Another member cannot unlink it.
    let before = w.link_state().await;
    let refused = w
        .reply(other, "wallets", &[("unlink", &address_of(&rich))])
        .await;
    assert!(refused.contains("is not one of your wallets"), "{refused}");
    assert!(refused.contains("Nothing was changed"), "{refused}");
    assert_eq!(w.link_state().await, before);
    assert!(w.roles_of(user).contains(&w.gated));

    let done = w
        .reply(user, "wallets", &[("unlink", &address_of(&rich))])
        .await;
    assert!(done.contains("Unlinked"), "{done}");
    w.gated_role(user, false, "the role going with the unlinked wallet")
        .await;
    assert_eq!(
        w.wallets_of(user).await,
        [(empty_lower.clone(), "eoa".to_owned())]
    );
    let unlinked = w.audit("wallet.unlinked").await;
    assert_eq!(unlinked.len(), 1, "{unlinked:?}");
    assert_eq!(unlinked[0].0.as_deref(), Some(user.to_string().as_str()));
    assert_eq!(unlinked[0].2["reason"], json!("unlinked"));
    assert_eq!(unlinked[0].2["wallet"], json!(rich_lower));
    // Two for the links, one for the unlink.
    w.check_requested(user, "wallet.changed", 3).await;
    let listed = w.reply(user, "wallets", &[]).await;
    assert!(!listed.contains(&rich_lower), "{listed}");
    assert!(listed.contains(&empty_lower), "{listed}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_address_link_wallet_says_linking_is_not_set_up() {
    let w = world_with("cmd_link_off", Duration::ZERO, None).await;
    let user = w.members[0];
    let before = w.link_state().await;
    assert!(before.is_empty(), "{before:?}");
    let asked = [
        vec![],
        vec![("address", address_of(&key(0x05)))],
        vec![("signature", personal_sign(&key(0x05), "anything"))],
    ];
    for options in asked {
        let options: Vec<(&str, &str)> = options.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = w.reply(user, "link-wallet", &options).await;
        assert!(
            reply.contains("Wallet linking is not set up") && reply.contains("PUBLIC_URL"),
            "{options:?}: {reply}"
        );
    }
    assert_eq!(w.link_state().await, before);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_discord_rest_interactions_are_dead_lettered_with_the_reason() {
    let mut h = Harness::new("cmd_no_rest").await;
    h.start_worker();
    h.publish(&guild_join(4242, "s", 1)).await;
    let secret = "very-secret-interaction-token";
    let envelope = Envelope::for_dispatch(
        0,
        "s",
        2,
        0,
        Payload::InteractionCreate(InteractionCreate {
            interaction_id: 99u64.id(),
            token: secret.into(),
            application_id: 98u64.id(),
            kind: InteractionKind::ApplicationCommand,
            command_id: None,
            command_name: Some("profile".into()),
            options: Vec::new(),
            locale: None,
            guild_locale: None,
        }),
    )
    .with_guild(4242u64.id())
    .with_user(7u64.id());
    h.publish(&envelope).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let dead = h.dead_letters().await;
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, h.nats.ns.subject("dead.commands.interaction"));
    assert!(
        dead[0].1.contains("no Discord REST client"),
        "{}",
        dead[0].1
    );
    assert!(
        !dead[0].1.contains(secret),
        "the token leaked into the reason"
    );
    h.stop_worker().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interaction_past_discords_window_is_dropped_without_work() {
    // Discord takes an answer only within 3 s; one that waited longer in a
    // backlog would cost a transaction and a refused call for nothing.
    let w = world("cmd_stale").await;
    let user = w.members[0];
    let stale_at = chrono::Utc::now().timestamp_millis() - 10_000;
    let (envelope, id) = w.invoke_at(user, "profile", &[], stale_at).await;
    // A fresh one after it, so that once it is answered the stale one has
    // been handled too (one consumer, in order).
    let (_, fresh) = w.invoke(user, "badges", &[]).await;
    w.answered(fresh, 1).await;
    w.h.drained().await;
    assert!(
        w.sim
            .control()
            .interaction(id)
            .unwrap()
            .responses
            .is_empty(),
        "a stale interaction was answered"
    );
    assert_eq!(
        w.h.count(&format!(
            "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
            envelope.id.as_str()
        ))
        .await,
        0,
        "a stale interaction took a transaction"
    );
    assert!(w.h.dead_letters().await.is_empty());
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_a_members_limit_are_answered_politely_once_and_a_second_check_too() {
    let w = world_limited(
        "cmd_limits",
        Duration::ZERO,
        Some(PUBLIC),
        Some(worker::CommandLimits {
            member_burst: std::num::NonZeroU32::new(2).unwrap(),
            member_period: Duration::from_secs(60),
            check_cooldown: Duration::from_secs(60),
            ..worker::CommandLimits::default()
        }),
    )
    .await;
    let (flooder, other) = (w.members[0], w.members[1]);
    assert!(w
        .reply(flooder, "profile", &[])
        .await
        .contains("Your profile"));
    assert!(!w.reply(flooder, "badges", &[]).await.is_empty());
    let (envelope, id) = w.invoke(flooder, "profile", &[]).await;
    let refused = w.answered(id, 1).await.responses[0].body["data"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(refused.contains("faster than I can answer"), "{refused}");
    // Told once: more commands in the same period are dropped unanswered,
    // so a flood costs no reply per command.
    let (_, unanswered) = w.invoke(flooder, "profile", &[]).await;
    w.h.drained().await;
    let info = w.sim.control().interaction(unanswered).unwrap();
    assert!(
        info.responses.is_empty(),
        "a second refusal in the period was answered: {:?}",
        info.responses
    );
    // Refused before any database work: a flood of commands over the
    // limit costs the flooder's replies, not every community's connections.
    assert_eq!(
        w.h.count(&format!(
            "SELECT count(*) FROM processed_events WHERE event_id = '{}'",
            envelope.id.as_str()
        ))
        .await,
        0,
        "a command over the limit took a transaction"
    );
    // Another member of the same server is not held up.
    assert!(w
        .reply(other, "profile", &[])
        .await
        .contains("Your profile"));

    // /check: the first reads the chain (deferred, then edited); a second
    // within the cooldown is answered at once, reading nothing.
    let checker = w.members[2];
    let (_, id) = w.invoke(checker, "check", &[]).await;
    assert_eq!(w.answered(id, 2).await.responses[0].callback_type, Some(5));
    let again = w.reply(checker, "check", &[]).await;
    assert!(again.contains("checked moments ago"), "{again}");
    assert!(w.h.dead_letters().await.is_empty());
    w.finish().await;
}
