//! The dashboard's settings for `gatehouse api`. The dashboard is served
//! when its OAuth2 settings are given; without any of them the API serves
//! `/v1` alone, as before. Some but not all of them is a mistake, reported
//! with every other problem.

use std::time::Duration;

use settings::{Problems, Secret};

use crate::config::Labels;

#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// The dashboard's public base address, e.g. https://gatehouse.example.
    /// Register `<PUBLIC_URL>/login/callback` as the OAuth2 redirect URI of
    /// the Discord application. https makes the session cookie Secure.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The Discord application's client id (OAuth2).
    #[arg(long, env = "DISCORD_CLIENT_ID")]
    pub discord_client_id: Option<String>,

    /// The Discord application's client secret (OAuth2).
    #[arg(long, env = "DISCORD_CLIENT_SECRET", hide_env_values = true)]
    pub discord_client_secret: Option<Secret>,

    /// Discord's base address for OAuth2 and the user routes; the demo and
    /// tests point it at the simulator.
    #[arg(long, env = "DISCORD_OAUTH_URL", default_value = api::DISCORD_URL)]
    pub discord_oauth_url: String,

    /// At least 32 bytes of secret (e.g. `openssl rand -hex 32`): seals the
    /// stored Discord tokens and derives CSRF tokens. Changing it logs
    /// everyone out.
    #[arg(long, env = "WEB_SESSION_SECRET", hide_env_values = true)]
    pub web_session_secret: Option<Secret>,

    /// A dashboard session unused this long ends.
    #[arg(long, env = "WEB_SESSION_IDLE", default_value = "2h")]
    pub web_session_idle: String,

    /// A dashboard session ends this long after login, used or not.
    #[arg(long, env = "WEB_SESSION_LIFETIME", default_value = "12h")]
    pub web_session_lifetime: String,

    /// How often a signed-in admin's Discord permissions are re-read; a lost
    /// permission takes effect at the next re-read.
    #[arg(long, env = "WEB_PERMISSION_REFRESH", default_value = "5m")]
    pub web_permission_refresh: String,
}

fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl DashboardArgs {
    /// `Some` when the dashboard is configured; `None` when it is off. Every
    /// problem goes to `p`.
    pub fn validate(&self, p: &mut Problems) -> Option<api::DashboardSettings> {
        let l = Labels::of::<Self>();
        let public = given(self.public_url.as_deref());
        let client_id = given(self.discord_client_id.as_deref());
        let client_secret = self.discord_client_secret.clone().filter(|s| !s.is_blank());
        let session_secret = self.web_session_secret.clone().filter(|s| !s.is_blank());
        let required = [
            ("public_url", public.is_some()),
            ("discord_client_id", client_id.is_some()),
            ("discord_client_secret", client_secret.is_some()),
            ("web_session_secret", session_secret.is_some()),
        ];
        // PUBLIC_URL alone serves the wallet-link page (see api_cmd); the
        // dashboard is on when any of its own settings is given.
        if required.iter().skip(1).all(|(_, set)| !set) {
            return None;
        }
        for (field, set) in required {
            if !set {
                p.push(
                    l.get(field),
                    "missing: the dashboard needs PUBLIC_URL, DISCORD_CLIENT_ID, DISCORD_CLIENT_SECRET and WEB_SESSION_SECRET together (or none of the last three, to serve /v1 and the wallet-link page alone)",
                );
            }
        }
        let before = p.len();
        let public_url = public.and_then(|u| {
            p.check(
                &l.get("public_url"),
                url::Url::parse(u).map_err(|e| format!("{u:?} is not an address ({e})")),
            )
        });
        let discord_url = p.check(
            &l.get("discord_oauth_url"),
            url::Url::parse(self.discord_oauth_url.trim())
                .map_err(|e| format!("{:?} is not an address ({e})", self.discord_oauth_url)),
        );
        let idle = p.duration(&l.get("web_session_idle"), &self.web_session_idle);
        let lifetime = p.duration(&l.get("web_session_lifetime"), &self.web_session_lifetime);
        let refresh = p.duration(
            &l.get("web_permission_refresh"),
            &self.web_permission_refresh,
        );
        let (
            Some(public_url),
            Some(client_id),
            Some(client_secret),
            Some(session_secret),
            Some(discord_url),
            Some(session_idle),
            Some(session_lifetime),
            Some(permission_refresh),
        ) = (
            public_url,
            client_id,
            client_secret,
            session_secret,
            discord_url,
            idle,
            lifetime,
            refresh,
        )
        else {
            return None;
        };
        let settings = api::DashboardSettings {
            public_url,
            client_id: client_id.to_owned(),
            client_secret,
            discord_url,
            session_secret,
            session_idle,
            session_lifetime,
            permission_refresh,
            discord_timeout: Duration::from_secs(10),
        };
        for (field, problem) in settings.problems() {
            let field = match field {
                "client_id" => "discord_client_id",
                "client_secret" => "discord_client_secret",
                "discord_url" => "discord_oauth_url",
                "session_ttl" => "web_session_idle",
                "permission_refresh" => "web_permission_refresh",
                "session_secret" => "web_session_secret",
                other => other,
            };
            p.push(l.get(field), problem);
        }
        (p.len() == before).then_some(settings)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        dashboard: DashboardArgs,
    }

    fn validate(args: &[&str]) -> (Option<api::DashboardSettings>, Vec<String>) {
        let cli = Cli::try_parse_from(std::iter::once("gatehouse").chain(args.iter().copied()))
            .expect("arguments parse");
        let mut p = Problems::new();
        let settings = cli.dashboard.validate(&mut p);
        let problems = match p.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        };
        (settings, problems)
    }

    #[test]
    fn off_without_any_oauth_setting() {
        let (settings, problems) = validate(&[]);
        assert!(settings.is_none());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (settings, problems) = validate(&[
            "--public-url",
            "https://dash.example",
            "--web-session-secret",
            "too short",
            "--web-permission-refresh",
            "soon",
        ]);
        assert!(settings.is_none());
        let text = problems.join("\n");
        for expected in [
            "DISCORD_CLIENT_ID (--discord-client-id)",
            "DISCORD_CLIENT_SECRET (--discord-client-secret)",
            "WEB_PERMISSION_REFRESH (--web-permission-refresh)",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(
            !text.contains("too short"),
            "a secret is never echoed: {text}"
        );
    }

    #[test]
    fn a_short_session_secret_is_refused() {
        let (settings, problems) = validate(&[
            "--public-url",
            "https://dash.example",
            "--discord-client-id",
            "1100000000000000001",
            "--discord-client-secret",
            "s3cret",
            "--web-session-secret",
            "short",
        ]);
        assert!(settings.is_none());
        assert!(
            problems
                .iter()
                .any(|p| p.contains("WEB_SESSION_SECRET") && p.contains("32 bytes")),
            "{problems:?}"
        );
    }

    #[test]
    fn complete_settings_enable_the_dashboard() {
        let (settings, problems) = validate(&[
            "--public-url",
            "https://dash.example",
            "--discord-client-id",
            "1100000000000000001",
            "--discord-client-secret",
            "s3cret",
            "--web-session-secret",
            "0123456789abcdef0123456789abcdef",
            "--web-permission-refresh",
            "1m",
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let settings = settings.expect("the dashboard is on");
        assert!(settings.secure());
        assert_eq!(settings.permission_refresh, Duration::from_secs(60));
        assert_eq!(settings.discord_url.as_str(), "https://discord.com/");
        assert_eq!(
            settings.public("/login/callback"),
            "https://dash.example/login/callback"
        );
    }
}
