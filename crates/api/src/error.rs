//! The one error shape every endpoint answers with:
//! `{"error": {"code", "message", "fields"}}`.
//!
//! `code` is stable and machine-readable; `message` is for people;
//! `fields` lists every bad field of a request body at once (as the CLI
//! does), each with what is wrong and what is expected. Internal errors are
//! logged with the request id and answered without their details: an
//! admin sees "internal error, request id …", the operator finds the cause
//! in the logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthorized`, `forbidden`, `not_found`, `invalid_request`,
    /// `validation_failed`, `conflict`, `payload_too_large`, `unsupported_media_type`, `rate_limited`,
    /// `timeout`, `unavailable`, `internal`, `gone` (wallet-link pages).
    pub code: &'static str,
    pub message: String,
    /// Every bad field, for `validation_failed`; empty otherwise.
    pub fields: Vec<FieldProblem>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field's path in the request, e.g. `parameters.min_balance`.
    pub field: String,
    pub problem: String,
    /// What would be accepted.
    pub expected: String,
}

impl FieldProblem {
    pub fn new(
        field: impl Into<String>,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        FieldProblem {
            field: field.into(),
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldProblem>,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message people read, and every bad field (the dashboard shows
    /// them on its own pages).
    pub(crate) fn explain(&self) -> (&str, &[FieldProblem]) {
        (&self.message, &self.fields)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: send `Authorization: Bearer ghk_…`",
        )
    }

    pub fn forbidden(scope: domain::keys::Scope) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key lacks the `{scope}` scope"),
        )
    }

    /// Also the answer for another community's resources: the caller cannot
    /// tell "not yours" from "does not exist".
    /// The resource existed and is no more (an expired or used link).
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GONE, "gone", message)
    }

    /// Refused for who the caller is, with the reason in words.
    pub fn refused(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn validation(message: impl Into<String>, fields: Vec<FieldProblem>) -> Self {
        ApiError {
            fields,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        }
    }

    pub fn field(field: &str, problem: impl Into<String>, expected: impl Into<String>) -> Self {
        let problem = FieldProblem::new(field, problem, expected);
        Self::validation(format!("invalid {field}"), vec![problem])
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        ApiError {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry after the number of seconds in Retry-After",
            )
        }
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long and was abandoned; nothing is half-done, retry it",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Logs `source` (with the request's span: its id and route) and
    /// answers without it.
    pub fn internal(source: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %source, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the operator can find it in the logs by this response's x-request-id",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                fields: self.fields,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Conflict { .. } => ApiError::conflict(e.to_string()),
            store::StoreError::Unstorable { .. } => ApiError::invalid(
                "a text value in the request contains a NUL character (\\u0000), which cannot be stored",
            ),
            store::StoreError::PoolTimeout(_) | store::StoreError::ConnectTimeout { .. } => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is busy or unreachable; retry shortly")
            }
            other => ApiError::internal(&other),
        }
    }
}

impl From<domain::RecheckError> for ApiError {
    fn from(e: domain::RecheckError) -> Self {
        tracing::warn!(error = %e, "re-check request failed");
        ApiError::unavailable(format!(
            "the change was saved, but {e}; the periodic re-check will still reach every member"
        ))
    }
}
