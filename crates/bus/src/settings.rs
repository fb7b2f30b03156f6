//! Stream limits as operators write them (a TOML file, the environment,
//! flags), turned into a [`Topology`]. Every process parses them with this
//! one function, so the same settings give the same streams everywhere.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{BusError, Placement, Retention, Storage, StreamLimits, Topology};

/// What [`StreamSettings::every`] is called in errors: `STREAM_STORAGE`,
/// `STREAM_MAX_AGE` (its placement is `NATS_PLACEMENT_*`).
const EVERY: &str = "stream";

/// Raw limits of one stream; unset values keep the definition's default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamLimitSettings {
    /// `file` or `memory`.
    pub storage: Option<String>,
    /// `limits`, `interest` or `workqueue`.
    pub retention: Option<String>,
    /// e.g. `7d`; `0` keeps messages until another limit removes them.
    pub max_age: Option<String>,
    /// -1 for unlimited.
    pub max_bytes: Option<i64>,
    /// -1 for unlimited.
    pub max_messages: Option<i64>,
    /// JetStream's `Nats-Msg-Id` dedupe window, e.g. `2m`.
    pub duplicate_window: Option<String>,
    pub replicas: Option<usize>,
    /// The cluster (of a super-cluster) whose servers keep the stream; empty
    /// for any.
    pub placement_cluster: Option<String>,
    /// Server tags that every server keeping the stream must carry,
    /// comma-separated (`"ssd,az1"`; a file may also give a list); empty for
    /// none.
    #[serde(deserialize_with = "tag_list")]
    pub placement_tags: Option<String>,
}

/// `placement_tags` as a file may write it: `"ssd,az1"` or `["ssd", "az1"]`.
fn tag_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        One(String),
        Many(Vec<String>),
    }
    match Tags::deserialize(d) {
        Ok(Tags::One(tags)) => Ok(Some(tags)),
        Ok(Tags::Many(tags)) if tags.iter().any(|t| t.contains(',')) => {
            Err(D::Error::custom("a server tag cannot contain a comma"))
        }
        Ok(Tags::Many(tags)) => Ok(Some(tags.join(","))),
        Err(_) => Err(D::Error::custom(
            "use a string (\"ssd,az1\") or a list of strings ([\"ssd\", \"az1\"])",
        )),
    }
}

/// Raw limits of every stream (`[streams.events]`, … in a file).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// Limits for all streams at once (`STREAM_STORAGE`, `STREAM_MAX_AGE`,
    /// `NATS_REPLICAS`, `NATS_PLACEMENT_CLUSTER`, `NATS_PLACEMENT_TAGS`);
    /// each stream's own settings win over them. The key-value buckets,
    /// which have no settings of their own, take its replicas and placement.
    #[serde(skip)]
    pub every: StreamLimitSettings,
    pub events: StreamLimitSettings,
    pub commands: StreamLimitSettings,
    pub eligibility: StreamLimitSettings,
    pub webhooks: StreamLimitSettings,
    pub dead_letter: StreamLimitSettings,
}

fn pick<T>(base: &mut Option<T>, top: Option<T>) {
    if top.is_some() {
        *base = top;
    }
}

impl StreamLimitSettings {
    /// `top`'s values win where set.
    pub fn overlay(mut self, top: StreamLimitSettings) -> Self {
        pick(&mut self.storage, top.storage);
        pick(&mut self.retention, top.retention);
        pick(&mut self.max_age, top.max_age);
        pick(&mut self.max_bytes, top.max_bytes);
        pick(&mut self.max_messages, top.max_messages);
        pick(&mut self.duplicate_window, top.duplicate_window);
        pick(&mut self.replicas, top.replicas);
        pick(&mut self.placement_cluster, top.placement_cluster);
        pick(&mut self.placement_tags, top.placement_tags);
        self
    }

    /// The limits of stream `which` (`events`, …): these settings over
    /// `defaults`, checked as a whole. Errors name the setting:
    /// `EVENTS_MAX_AGE`, or `streams.events.retention` for those only a file
    /// can set.
    pub fn limits(&self, which: &str, defaults: &StreamLimits) -> Result<StreamLimits, BusError> {
        let limits = self.parse(which, defaults)?;
        // Name the setting an operator writes, not the stream.
        limits.validate(which).map_err(|e| {
            let problem = match e {
                BusError::Stream { problem, .. } => problem,
                other => other.to_string(),
            };
            let setting = match problem.split(' ').next() {
                Some(field @ ("replicas" | "placement_cluster" | "placement_tags")) => {
                    format!("streams.{which}.{field}")
                }
                _ => format!("streams.{which}.duplicate_window"),
            };
            BusError::setting(setting, problem)
        })?;
        Ok(limits)
    }

    /// Each value parsed over `defaults`, errors named with `which`'s
    /// prefix; the combination is not checked.
    fn parse(&self, which: &str, defaults: &StreamLimits) -> Result<StreamLimits, BusError> {
        let upper = which.to_ascii_uppercase();
        let storage = match self.storage.as_deref().map(str::trim) {
            None => defaults.storage,
            Some("file") => Storage::File,
            Some("memory") => Storage::Memory,
            Some(v) => {
                return Err(BusError::setting(
                    format!("{upper}_STORAGE"),
                    format!("{v:?} is not a storage type; use `file` or `memory`"),
                ))
            }
        };
        let retention = match self.retention.as_deref().map(str::trim) {
            None => defaults.retention,
            Some("limits") => Retention::Limits,
            Some("interest") => Retention::Interest,
            Some("workqueue") => Retention::WorkQueue,
            Some(v) => {
                return Err(BusError::setting(
                    format!("streams.{which}.retention"),
                    format!(
                        "{v:?} is not a retention policy; use `limits`, `interest` or `workqueue`"
                    ),
                ))
            }
        };
        let max_age = duration(
            self.max_age.as_deref(),
            defaults.max_age,
            format!("{upper}_MAX_AGE"),
        )?;
        let duplicate_window = duration(
            self.duplicate_window.as_deref(),
            defaults.duplicate_window,
            format!("streams.{which}.duplicate_window"),
        )?;
        let limit = |value: Option<i64>, default: i64, setting: String| match value {
            None => Ok(default),
            Some(v) if v == -1 || v > 0 => Ok(v),
            Some(_) => Err(BusError::setting(
                setting,
                "use -1 (unlimited) or a positive number",
            )),
        };
        Ok(StreamLimits {
            storage,
            retention,
            max_age,
            max_bytes: limit(
                self.max_bytes,
                defaults.max_bytes,
                format!("{upper}_MAX_BYTES"),
            )?,
            max_messages: limit(
                self.max_messages,
                defaults.max_messages,
                format!("streams.{which}.max_messages"),
            )?,
            duplicate_window,
            replicas: self.replicas.unwrap_or(defaults.replicas),
            placement: self.placement(which, &defaults.placement)?,
        })
    }

    /// The placement over `default`, field by field; an empty cluster or tag
    /// list means no constraint. Errors name `NATS_PLACEMENT_*` for every
    /// stream, `streams.<which>.placement_*` (a file's) for one.
    fn placement(&self, which: &str, default: &Placement) -> Result<Placement, BusError> {
        let setting = |field: &str| {
            if which == EVERY {
                format!("NATS_{}", field.to_ascii_uppercase())
            } else {
                format!("streams.{which}.{field}")
            }
        };
        let cluster = match self.placement_cluster.as_deref().map(str::trim) {
            None => default.cluster.clone(),
            Some("") => None,
            Some(c) if c.contains(char::is_whitespace) => {
                return Err(BusError::setting(
                    setting("placement_cluster"),
                    format!("{c:?} is not a cluster name: it contains a space"),
                ))
            }
            Some(c) => Some(c.to_owned()),
        };
        let tags = match self.placement_tags.as_deref().map(str::trim) {
            None => default.tags.clone(),
            Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .map(|tag| {
                    if tag.is_empty() {
                        Err(BusError::setting(
                            setting("placement_tags"),
                            format!("{list:?} has an empty tag; separate tags with single commas"),
                        ))
                    } else if tag.contains(char::is_whitespace) {
                        Err(BusError::setting(
                            setting("placement_tags"),
                            format!("{tag:?} is not a server tag: it contains a space"),
                        ))
                    } else {
                        Ok(tag.to_owned())
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Placement { cluster, tags })
    }
}

impl StreamSettings {
    /// `top`'s values win where set.
    pub fn overlay(self, top: StreamSettings) -> Self {
        StreamSettings {
            every: self.every.overlay(top.every),
            events: self.events.overlay(top.events),
            commands: self.commands.overlay(top.commands),
            eligibility: self.eligibility.overlay(top.eligibility),
            webhooks: self.webhooks.overlay(top.webhooks),
            dead_letter: self.dead_letter.overlay(top.dead_letter),
        }
    }

    /// Sets `topology`'s stream limits from these settings over its current
    /// ones.
    pub fn apply(&self, topology: &mut Topology) -> Result<(), BusError> {
        // Checked under their own names (`STREAM_STORAGE`, …) before they
        // are folded into each stream's, where a bad one would be blamed on
        // the stream's setting.
        self.every.parse(EVERY, &topology.events)?;
        let own = |stream: &StreamLimitSettings| self.every.clone().overlay(stream.clone());
        topology.events = own(&self.events).limits("events", &topology.events)?;
        topology.commands = own(&self.commands).limits("commands", &topology.commands)?;
        topology.eligibility =
            own(&self.eligibility).limits("eligibility", &topology.eligibility)?;
        topology.webhooks = own(&self.webhooks).limits("webhooks", &topology.webhooks)?;
        topology.dead_letter =
            own(&self.dead_letter).limits("dead_letter", &topology.dead_letter)?;
        for bucket in [&mut topology.sessions, &mut topology.discord_budget] {
            if let Some(replicas) = self.every.replicas {
                bucket.replicas = replicas;
            }
            bucket.placement = self.every.placement(EVERY, &bucket.placement)?;
        }
        Ok(())
    }
}

fn duration(text: Option<&str>, default: Duration, setting: String) -> Result<Duration, BusError> {
    match text {
        None => Ok(default),
        // The one duration syntax every setting uses (humantime).
        Some(t) => {
            ::settings::parse_duration(t).map_err(|e| BusError::setting(setting, e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Namespace;

    fn apply(settings: StreamSettings) -> Result<Topology, String> {
        let mut topology = Topology::new(Namespace::root());
        settings
            .apply(&mut topology)
            .map_err(|e| e.to_string())
            .map(|()| topology)
    }

    #[test]
    fn unset_settings_keep_the_definition() {
        assert_eq!(
            apply(StreamSettings::default()).unwrap(),
            Topology::new(Namespace::root())
        );
    }

    #[test]
    fn errors_name_the_setting_to_fix() {
        let mut s = StreamSettings::default();
        s.events.storage = Some("disk".into());
        assert!(apply(s).unwrap_err().starts_with("EVENTS_STORAGE:"));
        let mut s = StreamSettings::default();
        s.commands.max_age = Some("10x".into());
        assert!(apply(s).unwrap_err().starts_with("COMMANDS_MAX_AGE:"));
        let mut s = StreamSettings::default();
        s.events.max_age = Some("1m".into());
        s.events.duplicate_window = Some("2m".into());
        let e = apply(s).unwrap_err();
        assert!(
            e.starts_with("streams.events.duplicate_window:") && e.contains("max_age"),
            "{e}"
        );
        let mut s = StreamSettings::default();
        s.dead_letter.replicas = Some(9);
        assert!(apply(s)
            .unwrap_err()
            .starts_with("streams.dead_letter.replicas:"));
        let mut s = StreamSettings::default();
        s.eligibility.max_bytes = Some(0);
        assert!(apply(s).unwrap_err().starts_with("ELIGIBILITY_MAX_BYTES:"));
        let mut s = StreamSettings::default();
        s.webhooks.max_age = Some("forever".into());
        assert!(apply(s).unwrap_err().starts_with("WEBHOOKS_MAX_AGE:"));
    }

    fn placement(cluster: Option<&str>, tags: &[&str]) -> Placement {
        Placement {
            cluster: cluster.map(str::to_owned),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn placement_of_every_stream_reaches_the_buckets_and_a_stream_own_wins() {
        let mut s = StreamSettings::default();
        s.every.placement_cluster = Some("east".into());
        s.every.placement_tags = Some(" ssd , az1".into());
        s.every.replicas = Some(3);
        s.events.placement_tags = Some("fast".into());
        s.dead_letter.placement_cluster = Some("west".into());
        s.webhooks.placement_cluster = Some(String::new());
        s.webhooks.placement_tags = Some(String::new());
        let t = apply(s).unwrap();
        let every = placement(Some("east"), &["ssd", "az1"]);
        assert_eq!(t.events.placement, placement(Some("east"), &["fast"]));
        assert_eq!(t.commands.placement, every);
        assert_eq!(t.eligibility.placement, every);
        assert!(t.webhooks.placement.is_anywhere(), "empty: no constraint");
        assert_eq!(
            t.dead_letter.placement,
            placement(Some("west"), &["ssd", "az1"])
        );
        assert_eq!(t.sessions.placement, every);
        assert_eq!(t.discord_budget.placement, every);
        assert_eq!((t.sessions.replicas, t.discord_budget.replicas), (3, 3));
        let configs = t.stream_configs();
        assert_eq!(
            configs[0].placement,
            Some(async_nats::jetstream::stream::Placement {
                cluster: Some("east".into()),
                tags: vec!["fast".into()],
            })
        );
        assert_eq!(configs[3].placement, None);
        assert_eq!(
            t.sessions_stream_config().placement.and_then(|p| p.cluster),
            Some("east".into())
        );
    }

    #[test]
    fn placement_overlays_like_every_other_setting() {
        let file = StreamSettings {
            events: StreamLimitSettings {
                placement_cluster: Some("east".into()),
                placement_tags: Some("ssd".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let env = StreamSettings {
            events: StreamLimitSettings {
                placement_tags: Some("nvme,az2".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let overlaid = file.overlay(env);
        assert_eq!(overlaid.events.placement_cluster.as_deref(), Some("east"));
        assert_eq!(overlaid.events.placement_tags.as_deref(), Some("nvme,az2"));
        let t = apply(overlaid).unwrap();
        assert_eq!(
            t.events.placement,
            placement(Some("east"), &["nvme", "az2"])
        );
        assert!(t.commands.placement.is_anywhere());
        assert!(
            t.sessions.placement.is_anywhere(),
            "only every stream's reach the buckets"
        );
    }

    #[test]
    fn placement_errors_name_the_setting() {
        let mut s = StreamSettings::default();
        s.every.placement_cluster = Some("east coast".into());
        let e = apply(s).unwrap_err();
        assert!(e.starts_with("NATS_PLACEMENT_CLUSTER:"), "{e}");
        let mut s = StreamSettings::default();
        s.every.placement_tags = Some("ssd,,az1".into());
        let e = apply(s).unwrap_err();
        assert!(
            e.starts_with("NATS_PLACEMENT_TAGS:") && e.contains("empty tag"),
            "{e}"
        );
        let mut s = StreamSettings::default();
        s.commands.placement_tags = Some("ssd,".into());
        let e = apply(s).unwrap_err();
        assert!(e.starts_with("streams.commands.placement_tags:"), "{e}");
        let mut s = StreamSettings::default();
        s.eligibility.placement_tags = Some("fast disk".into());
        let e = apply(s).unwrap_err();
        assert!(e.starts_with("streams.eligibility.placement_tags:"), "{e}");
        let mut s = StreamSettings::default();
        s.dead_letter.placement_cluster = Some("a b".into());
        let e = apply(s).unwrap_err();
        assert!(
            e.starts_with("streams.dead_letter.placement_cluster:"),
            "{e}"
        );
        // Limits set in code are checked too, and named the same way.
        let limits = StreamLimits {
            placement: placement(Some(""), &[]),
            ..StreamLimits::default()
        };
        let e = StreamLimitSettings::default()
            .limits("events", &limits)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("streams.events.placement_cluster:"), "{e}");
    }

    #[test]
    fn a_file_gives_tags_as_a_string_or_a_list() {
        let s: StreamSettings = toml::from_str(
            r#"
            [events]
            placement_cluster = "east"
            placement_tags = "ssd,az1"
            [commands]
            placement_tags = ["ssd", "az2"]
            "#,
        )
        .unwrap();
        let t = apply(s).unwrap();
        assert_eq!(t.events.placement, placement(Some("east"), &["ssd", "az1"]));
        assert_eq!(t.commands.placement, placement(None, &["ssd", "az2"]));
        let e = toml::from_str::<StreamSettings>("[events]\nplacement_tags = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("list of strings"), "{e}");
        let e = toml::from_str::<StreamSettings>("[events]\nplacement_tags = [\"a,b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("comma"), "{e}");
    }

    #[test]
    fn the_top_layer_wins() {
        let file = StreamSettings {
            events: StreamLimitSettings {
                storage: Some("memory".into()),
                max_age: Some("1h".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let env = StreamSettings {
            events: StreamLimitSettings {
                max_age: Some("2h".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let topology = apply(file.overlay(env)).unwrap();
        assert_eq!(topology.events.storage, Storage::Memory);
        assert_eq!(topology.events.max_age, Duration::from_secs(7200));
        assert_eq!(topology.commands, StreamLimits::default());
        assert_eq!(
            ::settings::parse_duration("7d").ok(),
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(
            ::settings::parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
    }
}
