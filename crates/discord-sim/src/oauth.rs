//! Discord's OAuth2 authorization-code flow (with PKCE) for the simulated
//! application: the people who can log in, and the codes and tokens handed
//! out. The HTTP side is in `http::oauth_api`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wire::UserId;

use crate::config::OAuth2Config;

/// Discord permission bits, as `/users/@me/guilds` reports them.
pub mod permissions {
    pub const ADMINISTRATOR: u64 = 1 << 3;
    pub const MANAGE_GUILD: u64 = 1 << 5;
    /// Every bit up to `USE_EXTERNAL_APPS` (1 << 50): what a guild's owner
    /// is reported to hold.
    pub const ALL: u64 = (1 << 51) - 1;
}

/// Scopes the simulated application may be granted; any other is refused
/// with `invalid_scope`.
pub const SUPPORTED_SCOPES: [&str; 5] = [
    "identify",
    "email",
    "guilds",
    "guilds.members.read",
    "connections",
];

/// A person who can log in at `/oauth2/authorize`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthUser {
    pub user_id: UserId,
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
}

impl OAuthUser {
    pub fn new(user_id: UserId, username: impl Into<String>) -> Self {
        Self {
            user_id,
            username: username.into(),
            global_name: None,
        }
    }
}

/// What the person at the authorize page does, when the request itself
/// does not say (`login_as`, `deny`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Login {
    As(UserId),
    Deny,
}

/// Who authorized the application, and for what.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Grant {
    pub user_id: UserId,
    pub scopes: Vec<String>,
}

impl Grant {
    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug)]
struct Code {
    grant: Grant,
    redirect_uri: String,
    challenge: Option<String>,
    expires_at: Instant,
    /// The access token this code was exchanged for: kept so that a second
    /// use can revoke it (RFC 6749 §4.1.2).
    issued: Option<String>,
}

#[derive(Debug)]
struct Access {
    grant: Grant,
    expires_at: Instant,
}

#[derive(Debug)]
struct Refresh {
    grant: Grant,
    access_token: String,
}

/// A successful token response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Tokens {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub scope: String,
}

/// Why the token endpoint refused; the `Display` form is the
/// `error_description`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("Invalid client")]
    InvalidClient,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("Unsupported grant type")]
    UnsupportedGrantType,
}

impl TokenError {
    /// The RFC 6749 error code Discord answers with.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::InvalidClient => "invalid_client",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
        }
    }
}

const INVALID_CODE: &str = "Invalid \"code\" in request.";

#[derive(Debug, Default)]
pub(crate) struct OAuth {
    pub users: BTreeMap<UserId, OAuthUser>,
    pub logins: VecDeque<Login>,
    codes: HashMap<String, Code>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
}

impl OAuth {
    pub(crate) fn issue_code(
        &mut self,
        grant: Grant,
        redirect_uri: &str,
        challenge: Option<String>,
        ttl: Duration,
    ) -> String {
        let now = Instant::now();
        // Expired codes can only be refused; forgetting them refuses them too.
        self.codes.retain(|_, c| c.expires_at > now);
        let code = random_token();
        self.codes.insert(
            code.clone(),
            Code {
                grant,
                redirect_uri: redirect_uri.to_owned(),
                challenge,
                expires_at: now + ttl,
                issued: None,
            },
        );
        code
    }

    /// `grant_type=authorization_code`. Any attempt that reaches the code
    /// uses it up, so a wrong verifier cannot be followed by guesses.
    pub(crate) fn redeem_code(
        &mut self,
        code: Option<&str>,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        config: &OAuth2Config,
    ) -> Result<Tokens, TokenError> {
        let code = code.ok_or(TokenError::InvalidRequest("Missing \"code\" in request."))?;
        let record = self
            .codes
            .remove(code)
            .ok_or(TokenError::InvalidGrant(INVALID_CODE))?;
        if let Some(access_token) = &record.issued {
            self.revoke_access(access_token);
            return Err(TokenError::InvalidGrant(INVALID_CODE));
        }
        if record.expires_at <= Instant::now() {
            return Err(TokenError::InvalidGrant(INVALID_CODE));
        }
        if redirect_uri != Some(record.redirect_uri.as_str()) {
            return Err(TokenError::InvalidGrant(
                "Invalid \"redirect_uri\" in request.",
            ));
        }
        if let Some(challenge) = &record.challenge {
            let verifier = verifier.ok_or(TokenError::InvalidRequest(
                "Missing \"code_verifier\" in request.",
            ))?;
            if !pkce_string(verifier) || s256(verifier) != *challenge {
                return Err(TokenError::InvalidGrant(
                    "Invalid \"code_verifier\" in request.",
                ));
            }
        }
        let tokens = self.issue_tokens(record.grant.clone(), config);
        // Remembered until it would have expired, to catch a replay.
        self.codes.insert(
            code.to_owned(),
            Code {
                issued: Some(tokens.access_token.clone()),
                ..record
            },
        );
        Ok(tokens)
    }

    /// `grant_type=refresh_token`: the old refresh and access tokens stop
    /// working.
    pub(crate) fn refresh(
        &mut self,
        refresh_token: Option<&str>,
        config: &OAuth2Config,
    ) -> Result<Tokens, TokenError> {
        let refresh_token = refresh_token.ok_or(TokenError::InvalidRequest(
            "Missing \"refresh_token\" in request.",
        ))?;
        let old = self
            .refresh
            .remove(refresh_token)
            .ok_or(TokenError::InvalidGrant(
                "Invalid \"refresh_token\" in request.",
            ))?;
        self.access.remove(&old.access_token);
        Ok(self.issue_tokens(old.grant, config))
    }

    fn issue_tokens(&mut self, grant: Grant, config: &OAuth2Config) -> Tokens {
        let now = Instant::now();
        self.access.retain(|_, a| a.expires_at > now);
        let access_token = random_token();
        let refresh_token = random_token();
        let scope = grant.scopes.join(" ");
        self.access.insert(
            access_token.clone(),
            Access {
                grant: grant.clone(),
                expires_at: now + Duration::from_secs(config.access_token_ttl_secs),
            },
        );
        self.refresh.insert(
            refresh_token.clone(),
            Refresh {
                grant,
                access_token: access_token.clone(),
            },
        );
        Tokens {
            access_token,
            token_type: "Bearer",
            expires_in: config.access_token_ttl_secs,
            refresh_token,
            scope,
        }
    }

    fn revoke_access(&mut self, access_token: &str) {
        self.access.remove(access_token);
        self.refresh.retain(|_, r| r.access_token != access_token);
    }

    /// The grant behind a live access token.
    pub(crate) fn access(&self, access_token: &str) -> Option<&Grant> {
        self.access
            .get(access_token)
            .filter(|a| a.expires_at > Instant::now())
            .map(|a| &a.grant)
    }

    /// Makes every outstanding code expired; returns how many there were.
    pub(crate) fn expire_codes(&mut self) -> usize {
        let now = Instant::now();
        let live = self.codes.values_mut().filter(|c| c.expires_at > now);
        live.map(|c| c.expires_at = now).count()
    }

    /// Makes every access token expired (refresh tokens still work).
    pub(crate) fn expire_access_tokens(&mut self) -> usize {
        let now = Instant::now();
        let live = self.access.values_mut().filter(|a| a.expires_at > now);
        live.map(|a| a.expires_at = now).count()
    }
}

/// 128 random bits, hex: unguessable, and safe in URLs and headers.
fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// PKCE's S256: base64url (no padding) of the verifier's SHA-256.
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A code verifier or challenge as RFC 7636 allows: 43 to 128 unreserved
/// characters.
pub(crate) fn pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The requested scopes, space separated, deduplicated in order; an error
/// description when there are none or one is unknown.
pub(crate) fn parse_scopes(raw: Option<&str>) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in raw.unwrap_or_default().split_whitespace() {
        if !SUPPORTED_SCOPES.contains(&scope) {
            return Err(format!("Invalid scope: {scope}"));
        }
        if !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err("No scope requested".into());
    }
    Ok(scopes)
}

/// Whether `uri` may be redirected to: exactly one of the registered URIs,
/// or with none registered, plain HTTP to 127.0.0.1 or localhost.
pub(crate) fn redirect_allowed(config: &OAuth2Config, uri: &str) -> bool {
    if !config.redirect_uris.is_empty() {
        return config.redirect_uris.iter().any(|r| r == uri);
    }
    let Ok(url) = url::Url::parse(uri) else {
        return false;
    };
    url.scheme() == "http"
        && matches!(url.host_str(), Some("127.0.0.1" | "localhost"))
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn pkce_strings_need_43_to_128_unreserved_characters() {
        assert!(pkce_string(&"a".repeat(43)));
        assert!(pkce_string(&"-._~9Z".repeat(20)));
        assert!(!pkce_string(&"a".repeat(42)));
        assert!(!pkce_string(&"a".repeat(129)));
        assert!(!pkce_string(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn scopes_are_checked_and_deduplicated() {
        assert_eq!(
            parse_scopes(Some("identify guilds identify")),
            Ok(vec!["identify".to_owned(), "guilds".to_owned()])
        );
        assert!(parse_scopes(Some("identify bot")).is_err());
        assert!(parse_scopes(Some("  ")).is_err());
        assert!(parse_scopes(None).is_err());
    }

    #[test]
    fn loopback_redirects_are_accepted_when_none_are_registered() {
        let open = OAuth2Config::default();
        assert!(redirect_allowed(&open, "http://127.0.0.1:8080/callback"));
        assert!(redirect_allowed(&open, "http://localhost:3000/auth?x=1"));
        assert!(!redirect_allowed(&open, "https://127.0.0.1:8080/callback"));
        assert!(!redirect_allowed(&open, "http://example.com/callback"));
        assert!(!redirect_allowed(&open, "http://127.0.0.1.example.com/"));
        assert!(!redirect_allowed(&open, "http://user@127.0.0.1:1/"));
        assert!(!redirect_allowed(&open, "not a url"));

        let registered = OAuth2Config {
            redirect_uris: vec!["https://dash.example/cb".into()],
            ..OAuth2Config::default()
        };
        assert!(redirect_allowed(&registered, "https://dash.example/cb"));
        assert!(!redirect_allowed(&registered, "https://dash.example/cb/"));
        assert!(!redirect_allowed(&registered, "http://127.0.0.1:8080/cb"));
    }
}
