//! The wallet-link page: `/link/{token}`, opened from `/link-wallet`.
//!
//! The member's browser wallet (EIP-1193: `eth_requestAccounts`,
//! `personal_sign`) signs the Sign-In with Ethereum message the server
//! issues for the page; the server checks it and links the wallet
//! (`domain::link_page`). The token in the address is the page's only
//! credential: no cookie, so no cross-site request can act with it.
//!
//! Served only when the public address (`PUBLIC_URL`) is configured: every
//! message names it, and the page must be reached there for wallets to show
//! the member the right site.

mod page;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use domain::link_page::{self, PageView};
use domain::wallets::{LinkError, PageError, PageRefusal, Refusal};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Scripts and styles from this origin only, no inline code, no frames, and
/// requests only back to this origin: the page handles a signature.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The page's routes; mounted at the root when a public address is set.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/link/{token}", get(show))
        .route("/link/{token}/message", post(message))
        .route("/link/{token}/proof", post(proof))
        .route("/link/{token}/status", get(status))
        .route("/link/{token}/unlink", post(unlink))
        .route("/link-assets/link.js", get(script))
        .route("/link-assets/link.css", get(style))
        .layer(axum::middleware::map_response(protect))
}

/// The dashboard's headers on every response of the page: the token is in
/// the address, so it must not leak through a referrer or a cache.
async fn protect(response: Response) -> Response {
    crate::web::headers::with_policy(response, CSP)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/link.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/link.css"),
    )
}

fn site(state: &AppState) -> Result<&domain::wallets::Site, ApiError> {
    state
        .0
        .settings
        .public_site
        .as_ref()
        .ok_or_else(|| ApiError::not_found("wallet linking is not configured"))
}

/// The page itself, or a page that says why the link cannot be used.
async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let Ok(site) = site(&state) else {
        return page::html(
            StatusCode::NOT_FOUND,
            page::refused("wallet linking is not configured"),
        );
    };
    match link_page::view(state.store(), &token, Utc::now()).await {
        Ok(view) => page::html(StatusCode::OK, page::link(&view, site.authority())),
        Err(PageError::Refused(why)) => {
            page::html(page_status(&why), page::refused(&why.to_string()))
        }
        Err(PageError::Store(e)) => {
            tracing::error!(error = %e, "could not show a wallet-link page");
            page::html(
                StatusCode::SERVICE_UNAVAILABLE,
                page::refused(
                    "Gatehouse could not load this page just now; try again in a minute.",
                ),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    address: String,
    /// What the wallet's `eth_chainId` said, if anything.
    chain_id: Option<u64>,
}

#[derive(Debug, Serialize)]
struct MessageResponse {
    message: String,
    expires_at: DateTime<Utc>,
}

async fn message(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Json(body): Json<MessageRequest>,
) -> Result<axum::Json<MessageResponse>, ApiError> {
    let site = site(&state)?;
    let request = link_page::message(
        state.store(),
        site,
        &token,
        &body.address,
        body.chain_id,
        Utc::now(),
    )
    .await
    .map_err(link_error)?;
    Ok(axum::Json(MessageResponse {
        message: request.message,
        expires_at: request.expires_at,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofRequest {
    /// The exact text the wallet signed.
    message: String,
    /// What `personal_sign` returned.
    signature: String,
}

#[derive(Debug, Serialize)]
struct ProofResponse {
    wallet: String,
    /// `eoa` or `erc1271`.
    proof: &'static str,
    /// The wallet was linked to another member until now.
    reclaimed: bool,
    already_linked: bool,
    wallets: Vec<String>,
}

async fn proof(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Json(body): Json<ProofRequest>,
) -> Result<axum::Json<ProofResponse>, ApiError> {
    let site = site(&state)?;
    let (_, outcome) = link_page::prove(
        state.store(),
        &state.0.evaluator,
        &state.0.rechecks,
        site,
        &token,
        &body.message,
        &body.signature,
        Utc::now(),
    )
    .await
    .map_err(link_error)?;
    tracing::info!(wallet = %outcome.wallet, proof = outcome.proof.as_str(), "wallet linked through the link page");
    Ok(axum::Json(ProofResponse {
        wallet: outcome.wallet.to_string(),
        proof: outcome.proof.as_str(),
        reclaimed: outcome.reclaimed_from.is_some(),
        already_linked: outcome.already_linked,
        wallets: outcome
            .profile
            .wallets
            .iter()
            .map(ToString::to_string)
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
struct StatusResponse {
    /// Every enabled rule has been decided since the link was used.
    checked: bool,
    wallets: Vec<String>,
    roles: Vec<page::RoleLine>,
}

/// What the page polls after a link: whether the re-check ran, and the
/// member's roles from rules.
async fn status(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<axum::Json<StatusResponse>, ApiError> {
    let view: PageView = link_page::view(state.store(), &token, Utc::now())
        .await
        .map_err(|e| match e {
            PageError::Refused(why) => refusal(Refusal::Page(why)),
            PageError::Store(e) => ApiError::internal(&e),
        })?;
    let checked = view.holder.used_at.is_some_and(|at| view.checked_since(at));
    Ok(axum::Json(StatusResponse {
        checked,
        wallets: view
            .profile
            .wallets
            .iter()
            .map(ToString::to_string)
            .collect(),
        roles: page::role_lines(&view),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlinkRequest {
    address: String,
}

#[derive(Debug, Serialize)]
struct UnlinkResponse {
    wallets: Vec<String>,
}

/// Unlinks one of the member's wallets; the roles it earned go at the
/// re-check this asks for.
async fn unlink(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Json(body): Json<UnlinkRequest>,
) -> Result<axum::Json<UnlinkResponse>, ApiError> {
    let left = link_page::unlink(
        state.store(),
        &state.0.rechecks,
        &token,
        &body.address,
        Utc::now(),
    )
    .await
    .map_err(link_error)?
    .ok_or_else(|| ApiError::not_found(format!("{} is not one of your wallets", body.address)))?;
    Ok(axum::Json(UnlinkResponse {
        wallets: left.iter().map(ToString::to_string).collect(),
    }))
}

fn link_error(e: LinkError) -> ApiError {
    match e {
        LinkError::Refused(why) => refusal(why),
        LinkError::Unverifiable(why) => ApiError::unavailable(format!(
            "the signature could not be checked right now ({why}); nothing was linked, try again in a minute"
        )),
        LinkError::Store(e) => ApiError::internal(&e),
    }
}

/// How a link that cannot be used answers, as a page or as JSON.
fn page_status(why: &PageRefusal) -> StatusCode {
    match why {
        PageRefusal::Unknown => StatusCode::NOT_FOUND,
        PageRefusal::Expired | PageRefusal::Used => StatusCode::GONE,
        PageRefusal::NotAMember => StatusCode::FORBIDDEN,
    }
}

fn refusal(why: Refusal) -> ApiError {
    match why {
        Refusal::Page(page) => match page_status(&page) {
            StatusCode::NOT_FOUND => ApiError::not_found(page.to_string()),
            StatusCode::GONE => ApiError::gone(page.to_string()),
            _ => ApiError::refused(page.to_string()),
        },
        other => ApiError::invalid(format!("{other}. Nothing was linked.")),
    }
}
