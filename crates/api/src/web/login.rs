//! Signing in with Discord (authorization code, `state`, PKCE S256) and out.
//!
//! `state` and the PKCE verifier travel in a short-lived cookie sealed with
//! the session secret, so any `api` process can finish a login another
//! began, and a callback that did not start in this browser is refused.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::discord::OAuthError;
use super::error::WebError;
use super::pages::layout;
use super::session::{self, Admin};
use super::{crypto, Dashboard};
use crate::state::AppState;

/// How long a login may take at Discord.
const LOGIN_WINDOW_SECS: i64 = 600;
const LOGIN_CONTEXT: &[u8] = b"login";

#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    verifier: String,
    expires_at: i64,
}

fn dashboard(state: &AppState) -> Result<std::sync::Arc<Dashboard>, WebError> {
    state.dashboard().ok_or(WebError::NotFound)
}

pub(crate) async fn root(admin: Result<Admin, WebError>) -> Redirect {
    match admin {
        Ok(_) => Redirect::to("/dashboard"),
        Err(_) => Redirect::to("/login"),
    }
}

pub(crate) async fn page(admin: Result<Admin, WebError>) -> Response {
    if admin.is_ok() {
        return Redirect::to("/dashboard").into_response();
    }
    layout::login_page(None).into_response()
}

/// Starts a login: a fresh `state` and PKCE verifier, sealed into the login
/// cookie, and a redirect to Discord.
pub(crate) async fn start(State(state): State<AppState>) -> Result<Response, WebError> {
    let dashboard = dashboard(&state)?;
    let keys = &dashboard.keys;
    let pending = Pending {
        state: keys.random_token().map_err(|e| WebError::internal(&e))?,
        verifier: keys.random_token().map_err(|e| WebError::internal(&e))?,
        expires_at: Utc::now().timestamp() + LOGIN_WINDOW_SECS,
    };
    let plain = serde_json::to_vec(&pending).map_err(|e| WebError::internal(&e))?;
    let sealed = keys
        .seal(LOGIN_CONTEXT, &plain)
        .map_err(|e| WebError::internal(&e))?;
    let cookie = session::login_cookie(
        &dashboard.settings,
        &URL_SAFE_NO_PAD.encode(sealed),
        LOGIN_WINDOW_SECS.unsigned_abs(),
    );
    let target = dashboard
        .discord
        .authorize_url(&pending.state, &crypto::pkce_challenge(&pending.verifier));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&target)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn refused(dashboard: &Dashboard, message: &str) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        [(
            header::SET_COOKIE,
            session::login_cookie(&dashboard.settings, "", 0),
        )],
        layout::login_page(Some(message)),
    )
        .into_response()
}

/// Discord sends the browser back here with a code (or an error).
pub(crate) async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Result<Response, WebError> {
    let dashboard = dashboard(&state)?;
    let pending = session::login_cookie_value(&headers, &dashboard.settings)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|sealed| dashboard.keys.open(LOGIN_CONTEXT, &sealed))
        .and_then(|plain| serde_json::from_slice::<Pending>(&plain).ok())
        .filter(|p| p.expires_at > Utc::now().timestamp());
    let Some(pending) = pending else {
        tracing::info!("dashboard login refused: no login in progress in this browser");
        return Ok(refused(
            &dashboard,
            "This login did not start here or took too long. Please log in again.",
        ));
    };
    let state_ok = query
        .state
        .as_deref()
        .is_some_and(|s| crypto::same(s, &pending.state));
    if !state_ok {
        tracing::warn!("dashboard login refused: state missing or wrong");
        return Ok(refused(
            &dashboard,
            "This login could not be verified (its state did not match). Please log in again.",
        ));
    }
    if let Some(error) = &query.error {
        let message = if error == "access_denied" {
            "You cancelled the login at Discord."
        } else {
            "Discord did not approve the login. Please try again."
        };
        return Ok(refused(&dashboard, message));
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(refused(
            &dashboard,
            "Discord sent no code. Please log in again.",
        ));
    };
    let discord = &dashboard.discord;
    let outcome = async {
        let tokens = discord.exchange_code(code, &pending.verifier).await?;
        let user = discord.me(&tokens.access_token).await?;
        let guilds = discord.admin_guilds(&tokens.access_token).await?;
        Ok::<_, OAuthError>((tokens, user, guilds))
    }
    .await;
    let (tokens, user, guilds) = match outcome {
        Ok(found) => found,
        Err(OAuthError::Refused(reason)) => {
            tracing::warn!(%reason, "dashboard login: Discord refused the code");
            return Ok(refused(
                &dashboard,
                "Discord did not accept this login (the code was used or expired). Please log in again.",
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "dashboard login: Discord unreachable");
            return Err(WebError::Unavailable(
                "Discord could not be reached to finish the login. Please try again in a minute."
                    .to_owned(),
            ));
        }
    };
    let sessions = state.store().web_sessions();
    // A new id at every login, whatever the browser had before.
    if let Some(old) = session::cookie_value(&headers, &dashboard.settings) {
        sessions.delete(&crypto::session_hash(&old)).await?;
    }
    let id = dashboard
        .keys
        .random_token()
        .map_err(|e| WebError::internal(&e))?;
    let id_hash = crypto::session_hash(&id);
    let sealed = session::seal_tokens(&dashboard, &id_hash, &tokens)?;
    sessions
        .create(&store::NewWebSession {
            id_hash: &id_hash,
            user: user.id,
            username: &user.name,
            sealed_tokens: &sealed,
            admin_guilds: &guilds,
            lifetime: dashboard.settings.session_lifetime,
        })
        .await?;
    tracing::info!(user = %user.id, guilds = guilds.len(), "dashboard login");
    let mut response = Redirect::to("/dashboard").into_response();
    let h = response.headers_mut();
    for cookie in [
        session::session_cookie(&dashboard.settings, &id),
        session::login_cookie(&dashboard.settings, "", 0),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

/// Ends the session: its row is deleted, so the id is worthless at once,
/// in every `api` process.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let dashboard = dashboard(&state)?;
    if let Some(id) = session::cookie_value(&headers, &dashboard.settings) {
        state
            .store()
            .web_sessions()
            .delete(&crypto::session_hash(&id))
            .await?;
    }
    Ok((
        [(
            header::SET_COOKIE,
            session::clear_session_cookie(&dashboard.settings),
        )],
        Redirect::to("/login"),
    )
        .into_response())
}
