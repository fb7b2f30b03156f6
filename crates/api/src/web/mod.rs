//! The dashboard: community admins sign in with Discord (OAuth2
//! authorization code + PKCE) and manage their communities in the browser.
//!
//! A front end like `/v1`: every write is a `domain` operation in the
//! community's tenant transaction, audited as `discord:<user id>`. What a
//! person may administer is what Discord says (Administrator, Manage Server
//! or owner) intersected with the communities the bot serves; it is re-read
//! from Discord at most every [`DashboardSettings::permission_refresh`].
//! Somebody who may not administer a community gets 404 on its pages, as for
//! one that does not exist.

mod assets;
mod crypto;
mod csrf;
mod discord;
mod error;
pub(crate) mod headers;
mod login;
mod pages;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use settings::Secret;

use crate::state::AppState;

pub use discord::{ADMINISTRATOR, MANAGE_GUILD};

/// Discord's real address; the demo and tests point at the simulator.
pub const DISCORD_URL: &str = "https://discord.com";

/// What the dashboard is configured with. It is served only when these are
/// given (`AppState::with_dashboard`).
#[derive(Clone, Debug)]
pub struct DashboardSettings {
    /// The dashboard's public base address, e.g. `https://gatehouse.example`.
    /// The OAuth2 redirect URI is `<public_url>/login/callback`; cookies are
    /// `Secure` (and `__Host-` prefixed) when it is https.
    pub public_url: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// Discord's base address: `/oauth2/authorize`, `/api/v10/…` below it.
    pub discord_url: url::Url,
    /// At least 32 bytes: seals the stored Discord tokens, derives CSRF
    /// tokens and signs the login cookie.
    pub session_secret: Secret,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after login, used or not.
    pub session_lifetime: Duration,
    /// How often a session's permissions are re-read from Discord.
    pub permission_refresh: Duration,
    /// Timeout of each call to Discord.
    pub discord_timeout: Duration,
}

impl DashboardSettings {
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(2 * 3600);
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 3600);
    pub const DEFAULT_PERMISSION_REFRESH: Duration = Duration::from_secs(5 * 60);

    /// Every problem with these settings, by field name; empty when usable.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if !matches!(self.public_url.scheme(), "http" | "https")
            || self.public_url.host_str().is_none()
        {
            p.push((
                "public_url",
                "must be an http(s) address with a host".to_owned(),
            ));
        }
        if self.public_url.query().is_some() || self.public_url.fragment().is_some() {
            p.push(("public_url", "must not have a query or fragment".to_owned()));
        }
        if !matches!(self.discord_url.scheme(), "http" | "https") {
            p.push(("discord_url", "must be an http(s) address".to_owned()));
        }
        if self.client_id.trim().is_empty() || !self.client_id.bytes().all(|b| b.is_ascii_digit()) {
            p.push((
                "client_id",
                "must be the application's id (digits)".to_owned(),
            ));
        }
        if self.client_secret.is_blank() {
            p.push(("client_secret", "must not be empty".to_owned()));
        }
        if self.session_secret.expose().len() < crypto::MIN_SECRET_LEN {
            p.push((
                "session_secret",
                format!(
                    "must be at least {} bytes (e.g. `openssl rand -hex 32`)",
                    crypto::MIN_SECRET_LEN
                ),
            ));
        }
        if self.session_idle.is_zero() || self.session_lifetime.is_zero() {
            p.push(("session_ttl", "must be longer than zero".to_owned()));
        }
        if self.permission_refresh.is_zero() {
            p.push(("permission_refresh", "must be longer than zero".to_owned()));
        }
        p
    }

    /// Whether the public address is https: cookies are then `Secure`.
    pub fn secure(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// `<public_url>/<path>`, without doubling a slash.
    pub fn public(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.public_url.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }
}

/// The dashboard's runtime: settings, derived keys and the Discord client.
pub(crate) struct Dashboard {
    pub settings: DashboardSettings,
    pub keys: crypto::Keys,
    pub discord: discord::OAuthClient,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("dashboard settings: {}", .0.iter().map(|(f, p)| format!("{f} {p}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(&'static str, String)>),
    #[error("the dashboard's HTTP client: {0}")]
    Client(String),
}

impl Dashboard {
    pub(crate) fn new(settings: DashboardSettings) -> Result<Arc<Self>, DashboardError> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(DashboardError::Invalid(problems));
        }
        let keys = crypto::Keys::derive(settings.session_secret.expose().as_bytes());
        let discord = discord::OAuthClient::new(&settings)?;
        Ok(Arc::new(Dashboard {
            settings,
            keys,
            discord,
        }))
    }
}

/// The dashboard's routes, served beside `/v1` on the same listener.
pub(crate) fn router(state: &AppState) -> Router<AppState> {
    use pages::{audit, badges, communities, keys, members, rules, webhooks};
    let community = Router::new()
        .route("/", get(communities::overview))
        .route("/sync.json", get(communities::sync_json))
        .route("/rules", get(rules::list).post(rules::create))
        .route("/rules/new", get(rules::new_form))
        .route("/rules/preview", post(rules::preview_new))
        .route("/rules/{rule}", get(rules::edit_form).post(rules::update))
        .route("/rules/{rule}/preview", post(rules::preview_update))
        .route("/rules/{rule}/enable", post(rules::enable))
        .route("/rules/{rule}/disable", post(rules::disable))
        .route("/rules/{rule}/delete", post(rules::delete))
        .route("/members", get(members::list))
        .route("/members/{user}", get(members::detail))
        .route("/badges", get(badges::list).post(badges::define))
        .route("/badges/{slug}/grant", post(badges::grant))
        .route("/badges/{slug}/revoke", post(badges::revoke))
        .route("/audit", get(audit::list))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{key}/revoke", post(keys::revoke))
        .route("/webhooks", get(webhooks::list).post(webhooks::register))
        .route("/webhooks/{hook}/delete", post(webhooks::delete))
        .route("/webhooks/{hook}/deliveries", get(webhooks::deliveries))
        // Unknown pages of a community: the dashboard's 404 page, with its
        // headers, not the API's JSON.
        .fallback(|| async { error::WebError::NotFound });
    Router::new()
        .route("/", get(login::root))
        .route("/login", get(login::page))
        .route("/login/start", get(login::start))
        .route("/login/callback", get(login::callback))
        .route("/logout", post(login::logout))
        .route("/dashboard", get(communities::list))
        .nest("/dashboard/{guild}", community)
        .route("/assets/dashboard.css", get(assets::css))
        .route("/assets/dashboard.js", get(assets::js))
        .layer(middleware::from_fn_with_state(state.clone(), csrf::check))
        .layer(middleware::map_response(headers::secure))
}

/// Deletes expired and idle sessions (each is also refused on its own when
/// presented; this keeps the table small).
pub(crate) async fn prune_sessions(state: &AppState) {
    let Some(dashboard) = state.dashboard() else {
        return;
    };
    match state
        .store()
        .web_sessions()
        .prune(dashboard.settings.session_idle)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::debug!(sessions = n, "expired dashboard sessions pruned"),
        Err(e) => tracing::warn!(error = %e, "pruning dashboard sessions failed"),
    }
}
