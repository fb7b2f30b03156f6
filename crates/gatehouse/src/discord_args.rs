//! The bot token, accepted as DISCORD_TOKEN or DISCORD_BOT_TOKEN by every
//! verb that talks to Discord.

use settings::{Problems, Secret};

use crate::config::Labels;

#[derive(Debug, Clone, clap::Args)]
pub struct DiscordTokenArgs {
    /// Bot token (DISCORD_BOT_TOKEN is accepted too). Prefer the environment
    /// over the flag, which other users can see in the process list.
    #[arg(long = "discord-token", env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: Option<Secret>,

    /// The same token under the name many hosting templates use; hidden
    /// from `--help` so that each setting shows once.
    #[arg(
        long = "discord-bot-token",
        env = "DISCORD_BOT_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub discord_bot_token: Option<Secret>,
}

impl DiscordTokenArgs {
    /// The label errors use for the token.
    pub fn label() -> String {
        Labels::of::<Self>().get("discord_token")
    }

    /// DISCORD_TOKEN, else DISCORD_BOT_TOKEN; `None` when neither is set
    /// (blank counts as unset). Both set to different tokens is recorded as
    /// a problem: guessing which one is meant would be a coin toss.
    pub fn token(&self, problems: &mut Problems) -> Option<Secret> {
        let main = self.discord_token.clone().filter(|t| !t.is_blank());
        let alias = self.discord_bot_token.clone().filter(|t| !t.is_blank());
        match (main, alias) {
            (Some(a), Some(b)) if a.expose().trim() != b.expose().trim() => {
                problems.push(
                    Self::label(),
                    "DISCORD_TOKEN and DISCORD_BOT_TOKEN are both set, to different tokens; unset one",
                );
                None
            }
            (Some(t), _) | (None, Some(t)) => Some(Secret::new(t.expose().trim())),
            (None, None) => None,
        }
    }

    /// Like [`token`](Self::token), recording "not set" when there is none.
    pub fn required(&self, problems: &mut Problems) -> Option<Secret> {
        let before = problems.len();
        let token = self.token(problems);
        if token.is_none() && problems.len() == before {
            problems.push(
                Self::label(),
                "not set: set DISCORD_TOKEN (or DISCORD_BOT_TOKEN) to the bot's token",
            );
        }
        token
    }
}

/// Checks a REST base URL override before anything connects, so that a typo
/// is reported with the other settings (the value is shown redacted).
pub fn check_api_url(text: &str) -> Result<(), String> {
    let ok = ["http://", "https://"].iter().any(|p| {
        text.trim()
            .strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not an http(s) URL; use e.g. http://127.0.0.1:8766",
            settings::redact(text)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(main: Option<&str>, alias: Option<&str>) -> DiscordTokenArgs {
        DiscordTokenArgs {
            discord_token: main.map(Secret::new),
            discord_bot_token: alias.map(Secret::new),
        }
    }

    #[test]
    fn either_name_gives_the_token_and_a_conflict_is_refused() {
        let mut p = Problems::new();
        assert_eq!(args(Some("a"), None).token(&mut p), Some(Secret::new("a")));
        assert_eq!(args(None, Some("b")).token(&mut p), Some(Secret::new("b")));
        assert_eq!(
            args(Some(""), Some("b")).token(&mut p),
            Some(Secret::new("b"))
        );
        assert_eq!(
            args(Some("a"), Some("a")).token(&mut p),
            Some(Secret::new("a"))
        );
        assert!(p.is_empty());
        assert_eq!(args(None, None).token(&mut p), None);
        assert!(p.is_empty(), "an unset optional token is no problem");

        assert_eq!(args(Some("a"), Some("b")).token(&mut p), None);
        let e = p.finish().unwrap_err().to_string();
        assert!(e.starts_with("DISCORD_TOKEN (--discord-token): "), "{e}");
        assert!(!e.contains("\"a\"") && !e.contains("\"b\""), "{e}");
    }

    #[test]
    fn api_urls_must_be_http_and_are_shown_redacted() {
        assert!(check_api_url("http://127.0.0.1:8766").is_ok());
        assert!(check_api_url("https://discord.com/").is_ok());
        let e = check_api_url("ftp://u:hunter2@host").unwrap_err();
        assert!(
            e.contains("not an http(s) URL") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn a_required_token_is_named_when_missing() {
        let mut p = Problems::new();
        assert_eq!(args(None, Some(" ")).required(&mut p), None);
        let e = p.finish().unwrap_err().to_string();
        assert!(
            e.contains("DISCORD_TOKEN (--discord-token): not set"),
            "{e}"
        );
    }
}
