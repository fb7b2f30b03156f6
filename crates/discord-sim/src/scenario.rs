//! Scenarios: a reproducible run described in a JSON or TOML file.
//!
//! ```toml
//! [sim]
//! shard_count = 2
//!
//! [guilds]
//! count = 100
//! members_per_guild = 50
//!
//! [[steps]]
//! action = "wait_for_shards"
//! count = 2
//!
//! [[steps]]
//! action = "traffic"
//! events = 10000
//! rate_per_second = 2000.0
//!
//! [[steps]]
//! action = "fault"
//! shard_id = 1
//! fault = { kind = "reconnect" }
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wire::GuildId;

use crate::control::{GuildsSpec, SimControl};
use crate::faults::Fault;
use crate::traffic::{TrafficReport, TrafficSpec};
use crate::world::{NewInteraction, NewMember};
use crate::{SimConfig, SimError};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Simulator settings, for a caller that starts the simulator from the scenario.
    pub sim: Option<SimConfig>,
    /// Guilds created before the steps run.
    pub guilds: Option<GuildsSpec>,
    pub steps: Vec<Step>,
}

/// One step. Guilds are named by their index in creation order, so a
/// scenario does not depend on generated ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Sleep {
        ms: u64,
    },
    WaitForShards {
        count: usize,
        #[serde(default = "default_wait_ms")]
        timeout_ms: u64,
    },
    Traffic(TrafficSpec),
    Fault {
        shard_id: u32,
        fault: Fault,
    },
    MemberJoin {
        guild: usize,
        #[serde(default)]
        username: Option<String>,
    },
    /// Removes the guild's first member.
    MemberLeave {
        guild: usize,
    },
    Interaction {
        guild: usize,
        command_name: String,
        #[serde(default)]
        options: Vec<serde_json::Value>,
    },
    GuildLeave {
        guild: usize,
    },
    GuildOutage {
        guild: usize,
    },
    GuildRestore {
        guild: usize,
    },
    /// Waits until every connected session has been sent everything.
    WaitDelivered {
        #[serde(default = "default_wait_ms")]
        timeout_ms: u64,
    },
}

fn default_wait_ms() -> u64 {
    30_000
}

/// What a scenario run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub guild_ids: Vec<GuildId>,
    pub steps_run: usize,
    pub traffic: Vec<TrafficReport>,
}

impl Scenario {
    /// Reads a scenario; `.toml` files are TOML, anything else JSON.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ScenarioRead {
            path: shown.clone(),
            source,
        })?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let parsed = if is_toml {
            toml::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|message| SimError::ScenarioParse {
            path: shown,
            message,
        })
    }
}

fn guild_at(guild_ids: &[GuildId], index: usize) -> Result<GuildId, SimError> {
    guild_ids
        .get(index)
        .copied()
        .ok_or_else(|| SimError::ScenarioParse {
            path: "<steps>".into(),
            message: format!("guild index {index} but only {} guilds", guild_ids.len()),
        })
}

impl SimControl {
    /// Creates the scenario's guilds and runs its steps in order.
    pub async fn run_scenario(&self, scenario: &Scenario) -> Result<ScenarioReport, SimError> {
        let mut report = ScenarioReport::default();
        if let Some(spec) = &scenario.guilds {
            report.guild_ids = self.create_guilds(spec);
        }
        let ids = report.guild_ids.clone();
        for step in &scenario.steps {
            match step {
                Step::Sleep { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
                Step::WaitForShards { count, timeout_ms } => {
                    self.wait_for_shards(*count, Duration::from_millis(*timeout_ms))
                        .await?;
                }
                Step::Traffic(spec) => {
                    let run = self.start_traffic(spec.clone());
                    report.traffic.push(run.wait().await);
                }
                Step::Fault { shard_id, fault } => {
                    self.fault(*shard_id, fault.clone());
                }
                Step::MemberJoin { guild, username } => {
                    let member = NewMember {
                        username: username.clone(),
                        ..NewMember::default()
                    };
                    self.add_member(guild_at(&ids, *guild)?, member)?;
                }
                Step::MemberLeave { guild } => {
                    let guild_id = guild_at(&ids, *guild)?;
                    if let Some(first) = self.members(guild_id)?.first() {
                        self.remove_member(guild_id, first.user_id)?;
                    }
                }
                Step::Interaction {
                    guild,
                    command_name,
                    options,
                } => {
                    let guild_id = guild_at(&ids, *guild)?;
                    let Some(user) = self.members(guild_id)?.first().map(|m| m.user_id) else {
                        continue;
                    };
                    self.create_interaction(NewInteraction {
                        guild_id,
                        user_id: user,
                        command_name: command_name.clone(),
                        options: options.clone(),
                        locale: None,
                    })?;
                }
                Step::GuildLeave { guild } => self.remove_guild(guild_at(&ids, *guild)?)?,
                Step::GuildOutage { guild } => self.guild_outage(guild_at(&ids, *guild)?)?,
                Step::GuildRestore { guild } => self.restore_guild(guild_at(&ids, *guild)?)?,
                Step::WaitDelivered { timeout_ms } => {
                    self.wait_until_delivered(Duration::from_millis(*timeout_ms))
                        .await?;
                }
            }
            report.steps_run += 1;
        }
        Ok(report)
    }
}
