//! Sending one role change to Discord and reading everything its answer
//! says.
//!
//! Role changes do not go through twilight-http: version 0.18 answers a
//! 429 by sending the request again itself (after its own wait, or at once
//! without its rate limiter), so a 429 would never be seen here, could not
//! be counted towards the invalid-request breaker, and its wait would hold
//! a slot. A role change is one small request; this sends it with the same
//! headers twilight would (authorization, user agent, the audit-log reason)
//! and hands back the status, Discord's error code and the rate-limit
//! headers as they are.

use std::time::Duration;

use domain::role_sync::RoleChange;
use reqwest::{header::HeaderMap, Method, StatusCode};

use super::guild_window::{self, Observed};

/// A request with no answer by then has failed (twilight's default too).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Discord's JSON error code for "Unknown Member".
const UNKNOWN_MEMBER: u64 = 10007;

/// Discord shows at most this many characters of an audit-log reason.
const REASON_MAX_CHARS: usize = 512;

pub(crate) struct RoleRequests {
    client: reqwest::Client,
    /// `https://discord.com/api/v10`, or the override's equivalent.
    base: String,
    authorization: String,
}

/// Discord's answer to one role change.
#[derive(Debug)]
pub(crate) enum Answer {
    Done {
        rate: Option<Observed>,
    },
    /// 404 Unknown Member: the member left.
    MemberGone {
        rate: Option<Observed>,
    },
    /// 429.
    Limited {
        rate: Option<Observed>,
        retry_after: Duration,
        /// Discord's global limit, not the route's.
        global: bool,
        /// A limit shared with others on the resource (`X-RateLimit-Scope:
        /// shared`), which Discord does not count as invalid.
        shared: bool,
        status: u16,
    },
    /// Any other refusal (401, 403, 404, 5xx …).
    Refused {
        status: u16,
        rate: Option<Observed>,
        reason: String,
    },
    /// No answer: connection refused, reset, timed out.
    Unreachable(String),
}

impl Answer {
    /// The status, if Discord counts this answer as an invalid request:
    /// 401, 403, and 429 unless of a shared limit.
    pub(crate) fn invalid_status(&self) -> Option<u16> {
        match self {
            Answer::Limited {
                shared: false,
                status,
                ..
            }
            | Answer::Refused {
                status: status @ (401 | 403),
                ..
            } => Some(*status),
            _ => None,
        }
    }
}

impl RoleRequests {
    /// `api_url`: the API's origin (`http(s)://host[:port]`), Discord's if
    /// `None`.
    pub(crate) fn new(token: &str, api_url: Option<&str>) -> Result<Self, String> {
        let origin = api_url
            .unwrap_or("https://discord.com")
            .trim_end_matches('/');
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!(
                "DiscordBot (https://github.com/gatehouse, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(RoleRequests {
            client,
            base: format!("{origin}/api/v10"),
            authorization: format!("Bot {token}"),
        })
    }

    pub(crate) async fn send(&self, change: &RoleChange) -> Answer {
        let url = format!(
            "{}/guilds/{}/members/{}/roles/{}",
            self.base, change.guild_id, change.user_id, change.role_id
        );
        let method = if change.add {
            Method::PUT
        } else {
            Method::DELETE
        };
        let response = self
            .client
            .request(method, url)
            .header("authorization", &self.authorization)
            .header("x-audit-log-reason", audit_reason(&change.reason))
            .send()
            .await;
        let class = match &response {
            Ok(response) => crate::telemetry::status_class(response.status().as_u16()),
            Err(_) => "unreachable",
        };
        // Every role change passes here, once per attempt: the one place
        // that sees each of Discord's answers.
        metrics::counter!(crate::telemetry::DISCORD_RESPONSES, "request" => "role_change", "class" => class)
            .increment(1);
        let response = match response {
            Ok(response) => response,
            Err(e) => return Answer::Unreachable(e.to_string()),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let rate = guild_window::parse(
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        );
        if status.is_success() {
            return Answer::Done { rate };
        }
        // An error body is small JSON; a missing one still leaves the status.
        let body: serde_json::Value = response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return limited(&headers, &body, rate, status.as_u16());
        }
        let code = body.get("code").and_then(serde_json::Value::as_u64);
        if status == StatusCode::NOT_FOUND && code == Some(UNKNOWN_MEMBER) {
            return Answer::MemberGone { rate };
        }
        let message = body
            .get("message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or(""));
        Answer::Refused {
            status: status.as_u16(),
            rate,
            reason: match code {
                Some(code) => format!("{} {message} (code {code})", status.as_u16()),
                None => format!("{} {message}", status.as_u16()),
            },
        }
    }
}

fn limited(
    headers: &HeaderMap,
    body: &serde_json::Value,
    rate: Option<Observed>,
    status: u16,
) -> Answer {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scope = header("x-ratelimit-scope").unwrap_or("user");
    let global = scope.eq_ignore_ascii_case("global")
        || header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || body.get("global").and_then(serde_json::Value::as_bool) == Some(true);
    // The body's figure is the precise one; the header is whole seconds.
    let seconds = body
        .get("retry_after")
        .and_then(serde_json::Value::as_f64)
        .or_else(|| header("retry-after").and_then(|v| v.parse::<f64>().ok()))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0)
        .min(3600.0);
    Answer::Limited {
        rate,
        retry_after: Duration::from_secs_f64(seconds),
        global,
        shared: scope.eq_ignore_ascii_case("shared"),
        status,
    }
}

/// The reason as Discord's `X-Audit-Log-Reason` wants it: at most 512
/// characters, percent-encoded (it is a header, and reasons are UTF-8).
fn audit_reason(reason: &str) -> String {
    let reason: String = reason.chars().take(REASON_MAX_CHARS).collect();
    let mut out = String::with_capacity(reason.len());
    for byte in reason.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_percent_encoded_and_capped() {
        assert_eq!(audit_reason("Rule 7: ok ✓"), "Rule%207%3A%20ok%20%E2%9C%93");
        assert_eq!(audit_reason(&"é".repeat(600)).matches('%').count(), 512 * 2);
    }

    #[test]
    fn a_429_says_which_limit_and_how_long() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-scope", "shared".parse().unwrap());
        headers.insert("retry-after", "2".parse().unwrap());
        let body = serde_json::json!({"retry_after": 1.5, "global": false});
        let Answer::Limited {
            retry_after,
            global,
            shared,
            ..
        } = limited(&headers, &body, None, 429)
        else {
            panic!("a 429 is a limit");
        };
        assert_eq!(retry_after, Duration::from_millis(1_500));
        assert!(!global && shared);
        let shared_limit = limited(&headers, &body, None, 429);
        assert_eq!(
            shared_limit.invalid_status(),
            None,
            "shared 429s are not invalid"
        );
        let mut user = HeaderMap::new();
        user.insert("x-ratelimit-scope", "global".parse().unwrap());
        let global_limit = limited(&user, &serde_json::Value::Null, None, 429);
        assert!(matches!(global_limit, Answer::Limited { global: true, .. }));
        assert_eq!(global_limit.invalid_status(), Some(429));
    }

    #[test]
    fn only_401_and_403_refusals_are_invalid() {
        let refused = |status: u16| Answer::Refused {
            status,
            rate: None,
            reason: String::new(),
        };
        assert_eq!(refused(403).invalid_status(), Some(403));
        assert_eq!(refused(401).invalid_status(), Some(401));
        assert_eq!(refused(404).invalid_status(), None);
        assert_eq!(refused(500).invalid_status(), None);
    }
}
