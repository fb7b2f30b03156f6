//! Discord's OAuth2, as the dashboard uses it: the authorize address, the
//! code and refresh-token exchanges, and who the person is and where they
//! may administer. Tokens never appear in a log line or an error message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wire::{GuildId, UserId};

use super::{DashboardError, DashboardSettings};

/// Administrator: every permission.
pub const ADMINISTRATOR: u64 = 0x8;
/// Manage Server.
pub const MANAGE_GUILD: u64 = 0x20;

const SCOPES: &str = "identify guilds";
/// Discord's largest page of `/users/@me/guilds`.
const GUILD_PAGE: usize = 200;
/// More pages than anyone is in (Discord caps membership at 200, or 500
/// with Nitro): bounds the loop against an answer that never ends.
const MAX_GUILD_PAGES: usize = 5;

pub(crate) struct OAuthClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: settings::Secret,
    redirect_uri: String,
}

/// The person's Discord tokens. Sealed before they are stored.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct DiscordUser {
    pub id: UserId,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum OAuthError {
    /// Discord refused the code or token (expired, revoked, used): the
    /// person has to log in again.
    #[error("Discord refused the grant ({0})")]
    Refused(String),
    /// Discord could not be asked (network, timeout, 5xx, 429).
    #[error("Discord could not be reached: {0}")]
    Unreachable(String),
    /// Discord answered something this client does not understand.
    #[error("Discord's answer was not understood: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
}

#[derive(Deserialize)]
struct UserResponse {
    id: String,
    username: String,
    global_name: Option<String>,
}

#[derive(Deserialize)]
struct GuildResponse {
    id: String,
    #[serde(default)]
    owner: bool,
    /// A decimal string; Discord's permission bits outgrow 53 bits.
    #[serde(default)]
    permissions: Option<String>,
}

/// Whether Discord's report for one guild lets the person administer it.
pub(crate) fn may_administer(owner: bool, permissions: Option<&str>) -> bool {
    let bits = permissions
        .and_then(|p| p.trim().parse::<u128>().ok())
        .unwrap_or(0);
    owner || bits & u128::from(ADMINISTRATOR | MANAGE_GUILD) != 0
}

fn unreachable(e: &reqwest::Error) -> OAuthError {
    // Only the kind of failure: reqwest's message would carry the URL, and
    // an error here is shown to the person as well as logged.
    OAuthError::Unreachable(if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    })
}

impl OAuthClient {
    pub(crate) fn new(settings: &DashboardSettings) -> Result<Self, DashboardError> {
        let http = reqwest::Client::builder()
            .timeout(settings.discord_timeout)
            .connect_timeout(settings.discord_timeout.min(Duration::from_secs(5)))
            // Nothing here should redirect; following one could send the
            // client secret somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gatehouse-dashboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DashboardError::Client(e.to_string()))?;
        Ok(OAuthClient {
            http,
            base: settings
                .discord_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            redirect_uri: settings.public("/login/callback"),
        })
    }

    /// Where the browser goes to approve the login.
    pub(crate) fn authorize_url(&self, state: &str, challenge: &str) -> String {
        // The base was validated as a URL at start.
        let Ok(mut url) = url::Url::parse(&format!("{}/oauth2/authorize", self.base)) else {
            return format!("{}/oauth2/authorize", self.base);
        };
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", SCOPES)
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        url.into()
    }

    pub(crate) async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
    ) -> Result<Tokens, OAuthError> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    pub(crate) async fn refresh(&self, refresh_token: &str) -> Result<Tokens, OAuthError> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Tokens, OAuthError> {
        let response = self
            .http
            .post(format!("{}/api/v10/oauth2/token", self.base))
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(form)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(OAuthError::Unreachable(format!(
                "token endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            let error = response
                .json::<ErrorResponse>()
                .await
                .ok()
                .and_then(|e| e.error)
                .unwrap_or_else(|| status.to_string());
            return Err(OAuthError::Refused(error));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|_| OAuthError::Malformed("token response".to_owned()))?;
        let lifetime = body.expires_in.unwrap_or(3600).clamp(60, 60 * 24 * 3600);
        Ok(Tokens {
            access_token: body.access_token,
            refresh_token: body.refresh_token,
            expires_at: Utc::now() + chrono::Duration::seconds(lifetime),
        })
    }

    async fn get(&self, path: &str, access: &str) -> Result<reqwest::Response, OAuthError> {
        let response = self
            .http
            .get(format!("{}/api/v10{path}", self.base))
            .bearer_auth(access)
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => Ok(response),
            401 | 403 => Err(OAuthError::Refused(status.to_string())),
            _ => Err(OAuthError::Unreachable(format!("{path} answered {status}"))),
        }
    }

    pub(crate) async fn me(&self, access: &str) -> Result<DiscordUser, OAuthError> {
        let user: UserResponse = self
            .get("/users/@me", access)
            .await?
            .json()
            .await
            .map_err(|_| OAuthError::Malformed("/users/@me".to_owned()))?;
        let id = user
            .id
            .parse::<UserId>()
            .map_err(|_| OAuthError::Malformed("/users/@me id".to_owned()))?;
        Ok(DiscordUser {
            id,
            name: user
                .global_name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(user.username)
                .chars()
                .take(100)
                .collect(),
        })
    }

    /// The guilds where Discord says the person holds Administrator or
    /// Manage Server, or which they own.
    pub(crate) async fn admin_guilds(&self, access: &str) -> Result<Vec<GuildId>, OAuthError> {
        let mut admin = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_GUILD_PAGES {
            let path = match &after {
                Some(a) => format!("/users/@me/guilds?limit={GUILD_PAGE}&after={a}"),
                None => format!("/users/@me/guilds?limit={GUILD_PAGE}"),
            };
            let page: Vec<GuildResponse> = self
                .get(&path, access)
                .await?
                .json()
                .await
                .map_err(|_| OAuthError::Malformed("/users/@me/guilds".to_owned()))?;
            let full = page.len() >= GUILD_PAGE;
            after = page.last().map(|g| g.id.clone());
            for guild in page {
                if may_administer(guild.owner, guild.permissions.as_deref()) {
                    if let Ok(id) = guild.id.parse::<GuildId>() {
                        admin.push(id);
                    }
                }
            }
            if !full || after.is_none() {
                break;
            }
        }
        admin.sort_unstable();
        admin.dedup();
        Ok(admin)
    }
}

#[cfg(test)]
mod tests {
    use super::may_administer;

    #[test]
    fn administrator_manage_server_or_owner() {
        assert!(may_administer(false, Some("8")));
        assert!(may_administer(false, Some("32")));
        assert!(may_administer(false, Some("2147483647")));
        assert!(may_administer(true, Some("0")));
        assert!(!may_administer(false, Some("16")));
        assert!(!may_administer(false, Some("0")));
        assert!(!may_administer(false, None));
        assert!(!may_administer(false, Some("lots")));
        // Bits above 64 do not hide the ones that matter.
        assert!(may_administer(false, Some("36893488147419103240")));
    }
}
