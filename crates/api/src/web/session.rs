//! Who is at the keyboard: the session cookie, its row, and what Discord
//! last said the person may administer (re-read when older than the
//! configured period; a lost permission takes effect on that re-read).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::{header, request::Parts, HeaderMap, Method};
use chrono::Utc;
use domain::{Actor, CommunityRef};
use store::WebSession;
use wire::{GuildId, UserId};

use super::discord::{OAuthClient, OAuthError, Tokens};
use super::error::WebError;
use super::{crypto, Dashboard, DashboardSettings};
use crate::state::AppState;

const SESSION_COOKIE: &str = "gatehouse_session";
const LOGIN_COOKIE: &str = "gatehouse_login";

/// `__Host-` pins a Secure cookie to this host and path `/`: a sibling
/// subdomain cannot plant or shadow it. Browsers refuse it without Secure,
/// so plain-http (local) deployments use the bare name.
fn cookie_name(settings: &DashboardSettings, base: &str) -> String {
    if settings.secure() {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn set_cookie(settings: &DashboardSettings, name: &str, value: &str, max_age: u64) -> String {
    let secure = if settings.secure() { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// The session id the browser presented, if any.
pub(crate) fn cookie_value(headers: &HeaderMap, settings: &DashboardSettings) -> Option<String> {
    read_cookie(headers, &cookie_name(settings, SESSION_COOKIE))
}

pub(crate) fn session_cookie(settings: &DashboardSettings, id: &str) -> String {
    set_cookie(
        settings,
        &cookie_name(settings, SESSION_COOKIE),
        id,
        settings.session_lifetime.as_secs(),
    )
}

pub(crate) fn clear_session_cookie(settings: &DashboardSettings) -> String {
    set_cookie(settings, &cookie_name(settings, SESSION_COOKIE), "", 0)
}

pub(crate) fn login_cookie(settings: &DashboardSettings, value: &str, max_age: u64) -> String {
    set_cookie(
        settings,
        &cookie_name(settings, LOGIN_COOKIE),
        value,
        max_age,
    )
}

pub(crate) fn login_cookie_value(
    headers: &HeaderMap,
    settings: &DashboardSettings,
) -> Option<String> {
    read_cookie(headers, &cookie_name(settings, LOGIN_COOKIE))
}

/// What sealed tokens are bound to: their session's row.
pub(crate) fn token_context(id_hash: &[u8; 32]) -> Vec<u8> {
    let mut context = b"tokens:".to_vec();
    context.extend_from_slice(id_hash);
    context
}

pub(crate) fn seal_tokens(
    dashboard: &Dashboard,
    id_hash: &[u8; 32],
    tokens: &Tokens,
) -> Result<Vec<u8>, WebError> {
    let plain = serde_json::to_vec(tokens).map_err(|e| WebError::internal(&e))?;
    dashboard
        .keys
        .seal(&token_context(id_hash), &plain)
        .map_err(|e| WebError::internal(&e))
}

/// A signed-in person.
pub(crate) struct Admin {
    pub user: UserId,
    pub name: String,
    /// Guilds where Discord says they may administer (the bot may or may
    /// not be there).
    pub guilds: Vec<GuildId>,
    pub csrf: String,
    /// `false` when the due re-read could not reach Discord: pages still
    /// show, with the permissions last confirmed; writes are refused.
    pub permissions_current: bool,
}

impl Admin {
    pub(crate) fn actor(&self) -> Actor {
        Actor::discord_admin(self.user)
    }

    /// Writes need permissions Discord confirmed within the period.
    pub(crate) fn require_current(&self) -> Result<(), WebError> {
        if self.permissions_current {
            Ok(())
        } else {
            Err(WebError::Unavailable(
                "Discord could not be reached to confirm you still manage this server, so changes are paused. Nothing was changed; try again in a minute."
                    .to_owned(),
            ))
        }
    }

    /// The communities this person may administer now.
    pub(crate) async fn communities(
        &self,
        state: &AppState,
    ) -> Result<Vec<store::ActiveCommunity>, WebError> {
        Ok(state
            .store()
            .web_sessions()
            .active_communities(&self.guilds)
            .await?)
    }
}

enum Reread {
    Current(Vec<GuildId>),
    Unreachable,
    Ended,
}

/// How a re-read ends when Discord does not answer with the guilds.
fn ending(e: &OAuthError) -> Reread {
    match e {
        OAuthError::Refused(_) => Reread::Ended,
        other => {
            tracing::warn!(error = %other, "dashboard permission re-read failed; writes paused for this session");
            Reread::Unreachable
        }
    }
}

/// New tokens from the refresh token, or how the re-read ends.
async fn refresh(discord: &OAuthClient, tokens: &Tokens) -> Result<Tokens, Reread> {
    let Some(refresh_token) = &tokens.refresh_token else {
        return Err(Reread::Ended);
    };
    discord.refresh(refresh_token).await.map_err(|e| ending(&e))
}

async fn reread(
    dashboard: &Dashboard,
    state: &AppState,
    id_hash: &[u8; 32],
    session: &WebSession,
) -> Result<Reread, WebError> {
    let Some(plain) = dashboard
        .keys
        .open(&token_context(id_hash), &session.sealed_tokens)
    else {
        // Sealed under another secret (it was rotated): log in again.
        return Ok(Reread::Ended);
    };
    let Ok(mut tokens) = serde_json::from_slice::<Tokens>(&plain) else {
        return Ok(Reread::Ended);
    };
    let discord = &dashboard.discord;
    let mut refreshed = false;
    if tokens.expires_at <= Utc::now() + chrono::Duration::seconds(60)
        && tokens.refresh_token.is_some()
    {
        tokens = match refresh(discord, &tokens).await {
            Ok(t) => t,
            Err(end) => return Ok(end),
        };
        refreshed = true;
    }
    let guilds = match discord.admin_guilds(&tokens.access_token).await {
        Ok(g) => g,
        // Revoked or expired early: one refresh, one more try.
        Err(OAuthError::Refused(_)) if !refreshed => {
            tokens = match refresh(discord, &tokens).await {
                Ok(t) => t,
                Err(end) => return Ok(end),
            };
            match discord.admin_guilds(&tokens.access_token).await {
                Ok(g) => g,
                Err(e) => return Ok(ending(&e)),
            }
        }
        Err(e) => return Ok(ending(&e)),
    };
    let sealed = seal_tokens(dashboard, id_hash, &tokens)?;
    state
        .store()
        .web_sessions()
        .set_permissions(id_hash, &sealed, &guilds)
        .await?;
    Ok(Reread::Current(guilds))
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let dashboard = state.dashboard().ok_or(WebError::NotFound)?;
        let settings = &dashboard.settings;
        let id = cookie_value(&parts.headers, settings).ok_or(WebError::LoginRequired)?;
        let id_hash = crypto::session_hash(&id);
        let sessions = state.store().web_sessions();
        let session = sessions
            .get(&id_hash, settings.session_idle)
            .await?
            .ok_or(WebError::LoginRequired)?;
        let age = Utc::now().signed_duration_since(session.permissions_checked_at);
        let due = age.to_std().unwrap_or_default() >= settings.permission_refresh;
        let (guilds, permissions_current) = if due {
            match reread(&dashboard, state, &id_hash, &session).await? {
                Reread::Current(guilds) => (guilds, true),
                Reread::Unreachable => (session.admin_guilds.clone(), false),
                Reread::Ended => {
                    // Refresh tokens rotate: a concurrent request of the same
                    // session may have refreshed first, spending ours.
                    let current = sessions.get(&id_hash, settings.session_idle).await?;
                    match current {
                        Some(c) if c.sealed_tokens != session.sealed_tokens => {
                            (c.admin_guilds, true)
                        }
                        _ => {
                            sessions.delete(&id_hash).await?;
                            tracing::info!(user = %session.user, "dashboard session ended: Discord no longer accepts its grant");
                            return Err(WebError::LoginRequired);
                        }
                    }
                }
            }
        } else {
            (session.admin_guilds.clone(), true)
        };
        Ok(Admin {
            user: session.user,
            name: session.username,
            guilds,
            csrf: dashboard.keys.csrf_token(&id),
            permissions_current,
        })
    }
}

/// A signed-in person acting on one community they may administer: the
/// `{guild}` of the path, checked against Discord's answer and the
/// communities the bot serves. Anything else is 404, like a community that
/// does not exist. Writes also need current permissions.
pub(crate) struct Managed {
    pub admin: Admin,
    pub community: CommunityRef,
    pub name: String,
    params: HashMap<String, String>,
}

impl Managed {
    /// A path parameter of the route (`rule`, `user`, …).
    pub(crate) fn param(&self, name: &str) -> Result<&str, WebError> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or(WebError::NotFound)
    }

    pub(crate) fn base(&self) -> String {
        format!("/dashboard/{}", self.community.guild)
    }

    pub(crate) fn actor(&self) -> Actor {
        self.admin.actor()
    }
}

impl FromRequestParts<AppState> for Managed {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let admin = Admin::from_request_parts(parts, state).await?;
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| WebError::NotFound)?;
        let params: HashMap<String, String> = raw
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let guild = params
            .get("guild")
            .and_then(|g| g.parse::<GuildId>().ok())
            .ok_or(WebError::NotFound)?;
        if !admin.guilds.contains(&guild) {
            return Err(WebError::NotFound);
        }
        let found = state
            .store()
            .web_sessions()
            .active_communities(&[guild])
            .await?
            .into_iter()
            .next()
            .ok_or(WebError::NotFound)?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            admin.require_current()?;
        }
        Ok(Managed {
            admin,
            community: CommunityRef {
                tenant: found.tenant,
                guild: found.guild,
            },
            name: found.name,
            params,
        })
    }
}
