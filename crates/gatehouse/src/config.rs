//! How every verb turns its flags and environment into a configuration.
//!
//! clap reads each setting from its flag or its variable (one name per
//! setting, shown in `--help`); values that can be wrong are taken as text
//! and checked by the verb's `validate`, which records every problem in a
//! [`settings::Problems`] and refuses the configuration once, listing them
//! all, each named `VARIABLE (--flag)`. (clap's own parsing would stop at the
//! first bad value and name only the flag.) Secrets are [`settings::Secret`]s
//! from the moment clap reads them, so no `Debug` of an argument struct can
//! show one.

/// Names settings as `VARIABLE (--flag)`, read from the clap definition of
/// `A` so that error messages and `--help` cannot drift apart.
pub struct Labels(clap::Command);

impl Labels {
    pub fn of<A: clap::Args>() -> Self {
        Self(A::augment_args(clap::Command::new("labels")))
    }

    /// The label of the argument whose field is `id`.
    pub fn get(&self, id: &str) -> String {
        let Some(arg) = self.0.get_arguments().find(|a| a.get_id() == id) else {
            return id.to_owned();
        };
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        match (env, arg.get_long()) {
            (Some(env), Some(long)) => settings::label(&env, long),
            (Some(env), None) => env,
            (None, Some(long)) => format!("--{long}"),
            (None, None) => id.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Args)]
    struct Example {
        #[arg(long = "ack-wait", env = "WORKER_ACK_WAIT")]
        ack_wait: String,
        #[arg(long)]
        guild: String,
    }

    #[test]
    fn labels_come_from_the_clap_definition() {
        let labels = Labels::of::<Example>();
        assert_eq!(labels.get("ack_wait"), "WORKER_ACK_WAIT (--ack-wait)");
        assert_eq!(labels.get("guild"), "--guild");
        assert_eq!(labels.get("nope"), "nope");
    }
}
