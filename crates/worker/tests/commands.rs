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
use discord_sim::{InteractionInfo, NewInteraction, Simulator};
use eligibility::{fake_chain::FakeChain, U256};
use k256::ecdsa::SigningKey;
use serde_json::{json, Value};
use store::{
    repo::{BadgeEvaluator, NewBadge},
    TenantId,
};
use wire::{
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

/// A guild with three members who have joined, a token rule gating a role
/// (balance ≥ 10) and a worker answering through the simulator.
async fn world(label: &str) -> World {
    let g = common::GatedGuild::start(label, CONTRACT, 3, Duration::ZERO).await;
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
            chrono::Utc::now().timestamp_millis(),
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

    /// The link request is committed just after its reply reaches Discord;
    /// wait for it, so the next command cannot overtake it.
    async fn link_request(&self, user: UserId) -> String {
        let reply = self.reply(user, "link-wallet", &[]).await;
        let query =
            format!("SELECT count(*) FROM wallet_link_nonces WHERE discord_user_id = {user}");
        assert_eq!(
            self.h.wait_for_count(&query, 1).await,
            1,
            "no link request stored"
        );
        message_to_sign(&reply)
    }

    async fn wallet_of(&self, user: UserId) -> Option<String> {
        self.h
            .db
            .admin()
            .await
            .query_one(
                "SELECT wallet_address FROM profiles WHERE discord_user_id = $1",
                &[&(user.get() as i64)],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn link_in_store(&self, user: UserId, wallet: &str) {
        testkit::fixtures::link_wallet(&self.h.store, self.tenant, user, wallet).await;
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
        profile.contains(&format!("Wallet: `{wallet}`")),
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
async fn link_wallet_with_a_valid_signature_links_audits_and_checks_roles() {
    let w = world("cmd_link").await;
    let user = w.members[0];
    let key = key(0x42);
    let address = address_of(&key);
    // The wallet holds enough: linking should bring the role without /check.
    w.chain.set_erc20_balance(
        CONTRACT.parse().unwrap(),
        address.parse().unwrap(),
        U256::from(100u64),
    );

    let message = w.link_request(user).await;
    assert!(
        message.contains(&format!("Discord user: {user}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("Server: {}", w.guild)),
        "{message}"
    );
    let signature = personal_sign(&key, &message);
    let done = w
        .reply(
            user,
            "link-wallet",
            &[("address", &address), ("signature", &signature)],
        )
        .await;
    assert!(done.contains("Linked"), "{done}");
    assert_eq!(w.wallet_of(user).await, Some(address.to_lowercase()));
    assert_eq!(
        w.h.count("SELECT count(*) FROM wallet_link_nonces").await,
        0,
        "the nonce was not consumed"
    );
    assert_eq!(
        w.h.count("SELECT count(*) FROM audit_logs WHERE action = 'wallet.linked' AND actor_type = 'user'")
            .await,
        1
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !w.roles_of(user).contains(&w.gated) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "linking did not trigger an eligibility check"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The nonce is spent: the same signature again is refused.
    let again = w
        .reply(
            user,
            "link-wallet",
            &[("address", &address), ("signature", &signature)],
        )
        .await;
    assert!(again.contains("no pending link request"), "{again}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_wallet_refuses_a_bad_signature_and_stores_nothing() {
    let w = world("cmd_link_bad").await;
    let user = w.members[0];
    let (owner, impostor) = (key(0x01), key(0x02));
    let address = address_of(&owner);
    let message = w.link_request(user).await;

    // Signed by another key.
    let wrong = personal_sign(&impostor, &message);
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("address", &address), ("signature", &wrong)],
        )
        .await;
    assert!(refused.contains("was not made by"), "{refused}");
    assert!(refused.contains("Nothing was linked"), "{refused}");
    // Signed by the right key over a different message.
    let other_message = personal_sign(&owner, &format!("{message}!"));
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("address", &address), ("signature", &other_message)],
        )
        .await;
    assert!(refused.contains("was not made by"), "{refused}");
    // Not a signature at all.
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("address", &address), ("signature", "0x1234")],
        )
        .await;
    assert!(refused.contains("signature is not valid"), "{refused}");
    // A malformed address.
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[("address", "0xnope"), ("signature", &wrong)],
        )
        .await;
    assert!(refused.contains("address is not valid"), "{refused}");

    assert_eq!(w.wallet_of(user).await, None);
    assert_eq!(
        w.h.count("SELECT count(*) FROM audit_logs WHERE action = 'wallet.linked'")
            .await,
        0
    );
    // The request stays open: the right signature still works after.
    assert_eq!(
        w.h.count("SELECT count(*) FROM wallet_link_nonces").await,
        1
    );
    let good = personal_sign(&owner, &message);
    let done = w
        .reply(
            user,
            "link-wallet",
            &[("address", &address), ("signature", &good)],
        )
        .await;
    assert!(done.contains("Linked"), "{done}");
    assert_eq!(w.wallet_of(user).await, Some(address.to_lowercase()));
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_wallet_refuses_an_expired_nonce() {
    let w = world("cmd_link_expired").await;
    let user = w.members[0];
    let key = key(0x07);
    let message = w.link_request(user).await;
    w.h.db
        .admin()
        .await
        .batch_execute("UPDATE wallet_link_nonces SET expires_at = now() - interval '1 second'")
        .await
        .unwrap();
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[
                ("address", &address_of(&key)),
                ("signature", &personal_sign(&key, &message)),
            ],
        )
        .await;
    assert!(refused.contains("expired"), "{refused}");
    assert_eq!(w.wallet_of(user).await, None);
    assert_eq!(
        w.h.count("SELECT count(*) FROM audit_logs WHERE action = 'wallet.linked'")
            .await,
        0
    );
    // Asking again (here: another member) clears expired requests.
    let fresh = w.reply(w.members[1], "link-wallet", &[]).await;
    assert!(fresh.contains("```"), "{fresh}");
    let open: Vec<i64> =
        w.h.db
            .column("SELECT discord_user_id FROM wallet_link_nonces")
            .await;
    assert_eq!(open, vec![w.members[1].get() as i64]);
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_wallet_refuses_a_wallet_another_member_holds() {
    let w = world("cmd_link_taken").await;
    let key = key(0x09);
    let address = address_of(&key);
    w.link_in_store(w.members[1], &address).await;
    let user = w.members[0];
    let message = w.link_request(user).await;
    let refused = w
        .reply(
            user,
            "link-wallet",
            &[
                ("address", &address),
                ("signature", &personal_sign(&key, &message)),
            ],
        )
        .await;
    assert!(
        refused.contains("already linked to another member"),
        "{refused}"
    );
    assert_eq!(w.wallet_of(user).await, None);
    assert_eq!(
        w.wallet_of(w.members[1]).await,
        Some(address.to_lowercase())
    );
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
