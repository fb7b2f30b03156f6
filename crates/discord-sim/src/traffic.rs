//! Generated event streams: member joins, leaves, updates and interactions at
//! a given rate over the simulated guilds, reproducible from a seed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use wire::{GuildId, RoleId};

use crate::lock;
use crate::state::Shared;
use crate::world::{MemberPatch, NewInteraction, NewMember};

/// Relative weights of the generated event kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficMix {
    pub member_join: u32,
    pub member_leave: u32,
    pub member_update: u32,
    pub interaction: u32,
}

impl Default for TrafficMix {
    fn default() -> Self {
        Self {
            member_join: 3,
            member_leave: 1,
            member_update: 5,
            interaction: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficSpec {
    /// How many events to generate.
    pub events: u64,
    /// Events per second; `None` means as fast as the clients read.
    pub rate_per_second: Option<f64>,
    pub mix: TrafficMix,
    pub seed: u64,
    /// Generation pauses while any connected session has more undelivered
    /// dispatches than this, so a storm measures the client, not the
    /// simulator's memory.
    pub max_lag: u64,
    /// Restrict to these guilds; all guilds when empty.
    pub guilds: Vec<GuildId>,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        Self {
            events: 1_000,
            rate_per_second: None,
            mix: TrafficMix::default(),
            seed: 1,
            max_lag: 10_000,
            guilds: Vec::new(),
        }
    }
}

/// Progress of a traffic run, readable while it runs.
#[derive(Debug, Default)]
pub struct TrafficProgress {
    pub requested: AtomicU64,
    pub emitted: AtomicU64,
    pub done: AtomicBool,
}

/// What a finished traffic run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub emitted: u64,
    pub member_join: u64,
    pub member_leave: u64,
    pub member_update: u64,
    pub interaction: u64,
    pub elapsed_ms: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Join,
    Leave,
    Update,
    Interaction,
}

fn pick_kind(mix: &TrafficMix, rng: &mut StdRng) -> Kind {
    let weights = [
        (Kind::Join, mix.member_join),
        (Kind::Leave, mix.member_leave),
        (Kind::Update, mix.member_update),
        (Kind::Interaction, mix.interaction),
    ];
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return Kind::Update;
    }
    let mut roll = rng.random_range(0..total);
    for (kind, weight) in weights {
        if roll < weight {
            return kind;
        }
        roll -= weight;
    }
    Kind::Update
}

/// Emits one event; returns the kind actually emitted (a leave or update in
/// an empty guild becomes a join).
fn emit_one(shared: &Shared, guild_id: GuildId, kind: Kind, rng: &mut StdRng) -> Kind {
    let now = Shared::now_ms();
    let (member, roles) = {
        let world = lock(&shared.world);
        let Ok(guild) = world.guild(guild_id) else {
            return kind;
        };
        let member = match guild.members.len() {
            0 => None,
            n => guild.members.keys().nth(rng.random_range(0..n)).copied(),
        };
        let roles: Vec<RoleId> = guild.roles.iter().skip(1).map(|r| r.id).collect();
        (member, roles)
    };
    let kind = match (kind, member) {
        (Kind::Join, _) | (_, None) => Kind::Join,
        (other, Some(_)) => other,
    };
    let result = match (kind, member) {
        (Kind::Join, _) => shared
            .apply(|w| w.add_member(guild_id, NewMember::default(), now))
            .map(drop),
        (Kind::Leave, Some(user)) => shared.apply(|w| w.remove_member(guild_id, user)),
        (Kind::Update, Some(user)) => {
            let role = (!roles.is_empty()).then(|| roles[rng.random_range(0..roles.len())]);
            let patch = MemberPatch {
                nick: Some(Some(format!("nick-{}", rng.random::<u16>()))),
                roles: Some(role.into_iter().collect()),
                pending: Some(false),
            };
            shared
                .apply(|w| w.update_member(guild_id, user, patch))
                .map(drop)
        }
        (Kind::Interaction, Some(user)) => {
            let spec = NewInteraction {
                guild_id,
                user_id: user,
                command_name: "verify".into(),
                options: vec![
                    json!({"name": "wallet", "type": 3, "value": "0x0000000000000000000000000000000000000001"}),
                ],
                locale: None,
            };
            shared
                .apply(|w| w.create_interaction(spec, shared.config.application_id, now))
                .map(drop)
        }
        (_, None) => Ok(()),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "traffic event skipped");
    }
    kind
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    spec: TrafficSpec,
    progress: Arc<TrafficProgress>,
) -> TrafficReport {
    progress.requested.store(spec.events, Ordering::Relaxed);
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let guilds: Vec<GuildId> = if spec.guilds.is_empty() {
        lock(&shared.world)
            .guilds
            .values()
            .filter(|g| g.bot_present && g.available)
            .map(|g| g.id)
            .collect()
    } else {
        spec.guilds.clone()
    };
    let mut report = TrafficReport::default();
    if guilds.is_empty() {
        progress.done.store(true, Ordering::Relaxed);
        return report;
    }
    let rate = spec.rate_per_second.filter(|r| *r > 0.0);
    while report.emitted < spec.events {
        if *shared.shutdown.borrow() {
            break;
        }
        if spec.max_lag > 0 && shared.sessions.max_lag() > spec.max_lag {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        // Emit everything due by now, then sleep a little: per-event sleeps
        // cannot keep up with tens of thousands of events per second.
        let due = match rate {
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(spec.events),
            None => (report.emitted + 256).min(spec.events),
        };
        while report.emitted < due {
            let guild = guilds[rng.random_range(0..guilds.len())];
            let kind = pick_kind(&spec.mix, &mut rng);
            match emit_one(&shared, guild, kind, &mut rng) {
                Kind::Join => report.member_join += 1,
                Kind::Leave => report.member_leave += 1,
                Kind::Update => report.member_update += 1,
                Kind::Interaction => report.interaction += 1,
            }
            report.emitted += 1;
            progress.emitted.store(report.emitted, Ordering::Relaxed);
        }
        if rate.is_some() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    progress.done.store(true, Ordering::Relaxed);
    report
}
