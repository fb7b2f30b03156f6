//! Headers on every dashboard response: a strict Content-Security-Policy
//! (scripts and styles only from this origin, no inline script, no
//! framing), no MIME sniffing, no referrer (dashboard URLs name
//! communities and members), and no caching of per-person pages. The
//! wallet-link page uses the same headers with a policy of its own.

use axum::http::{header, HeaderValue};
use axum::response::Response;

pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) async fn secure(response: Response) -> Response {
    with_policy(response, CSP)
}

/// The same headers with Content-Security-Policy `csp`.
pub(crate) fn with_policy(mut response: Response, csp: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
