//! The dashboard's errors, answered as pages (the `/v1` shape is JSON).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;

use super::pages::layout;

#[derive(Debug)]
pub(crate) enum WebError {
    /// No live session: to the login page.
    LoginRequired,
    /// Also what a community the person may not administer answers.
    NotFound,
    Forbidden(String),
    BadRequest(String),
    Unavailable(String),
    /// Any other refusal, with the status `/v1` would answer.
    Refused(StatusCode, String),
    Internal,
}

impl WebError {
    pub(crate) fn internal(source: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %source, "dashboard request failed");
        WebError::Internal
    }

    pub(crate) fn csrf() -> Self {
        WebError::Forbidden(
            "This form has expired or did not come from this dashboard. Go back, reload the page and try again."
                .to_owned(),
        )
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let (message, fields) = e.explain();
        let mut text = message.to_owned();
        for f in fields {
            text.push_str(&format!(
                "; {}: {} (expected {})",
                f.field, f.problem, f.expected
            ));
        }
        match status {
            StatusCode::NOT_FOUND => WebError::NotFound,
            StatusCode::INTERNAL_SERVER_ERROR => WebError::Internal,
            StatusCode::SERVICE_UNAVAILABLE => WebError::Unavailable(text),
            s => WebError::Refused(s, text),
        }
    }
}

impl From<store::StoreError> for WebError {
    fn from(e: store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            WebError::LoginRequired => return Redirect::to("/login").into_response(),
            WebError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or nothing you may administer.".to_owned(),
            ),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            WebError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", m),
            WebError::Refused(s, m) => (s, "Not done", m),
            WebError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "An internal error stopped this request; nothing was half-done. The operator can find it in the logs by this response's x-request-id."
                    .to_owned(),
            ),
        };
        let body = layout::error_page(title, &message);
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        response
    }
}
