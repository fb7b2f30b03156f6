//! Every state-changing dashboard request (POST, PUT, PATCH, DELETE) must
//! carry the session's CSRF token, in the `csrf` form field or the
//! `x-csrf-token` header; otherwise 403 and the handler never runs. The
//! token is derived from the session id, which a cross-site page cannot
//! read, and compared in constant time.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::WebError;
use super::session;
use crate::state::AppState;

/// The largest dashboard form; far above any rule or badge definition.
const FORM_LIMIT: usize = 64 * 1024;
pub(crate) const HEADER: &str = "x-csrf-token";
pub(crate) const FIELD: &str = "csrf";

pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let Some(dashboard) = state.dashboard() else {
        return WebError::NotFound.into_response();
    };
    let Some(session_id) = session::cookie_value(request.headers(), &dashboard.settings) else {
        return WebError::csrf().into_response();
    };
    let header = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
        return WebError::BadRequest("the form is larger than the dashboard accepts".to_owned())
            .into_response();
    };
    let presented = header.or_else(|| {
        url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.into_owned())
    });
    match presented {
        Some(token) if dashboard.keys.csrf_ok(&session_id, &token) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => {
            tracing::warn!(method = %parts.method, path = %parts.uri.path(), "dashboard write refused: CSRF token missing or wrong");
            WebError::csrf().into_response()
        }
    }
}
