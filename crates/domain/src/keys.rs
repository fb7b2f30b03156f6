//! Admin API keys: one community each, scoped, shown once, stored hashed.
//!
//! A key reads `ghk_<prefix>_<secret>`: twelve hex digits of public prefix
//! (printed in listings and logs, so a leaked key can be found and revoked
//! without anyone handling its secret) and 256 random bits. Only the SHA-256
//! of the whole key is stored. Because the secret is random rather than
//! chosen by a person, a fast hash is the right one: there is no dictionary
//! to guess from, so a slow password hash would only slow down every
//! request.
//!
//! Authentication is a database lookup on every request, with no cache in
//! between: a revoked or expired key is refused by every API process from
//! its next request on.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::json;
use settings::Secret;
use sha2::{Digest, Sha256};
use store::repo::{ApiKey, NewApiKey};
use store::{ApiKeyId, Store, StoreError};

use crate::{Actor, AuditAction, CommunityRef};

/// What a key may do. Every key may read (`read` is implied by the others
/// for the resources they write).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    RulesWrite,
    BadgesWrite,
    MembersWrite,
    WebhooksWrite,
}

impl Scope {
    pub const ALL: &'static [Scope] = &[
        Scope::Read,
        Scope::RulesWrite,
        Scope::BadgesWrite,
        Scope::MembersWrite,
        Scope::WebhooksWrite,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::RulesWrite => "rules:write",
            Scope::BadgesWrite => "badges:write",
            Scope::MembersWrite => "members:write",
            Scope::WebhooksWrite => "webhooks:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .iter()
            .copied()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| KeyError::UnknownScope(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "unknown scope {0:?}: expected one of read, rules:write, badges:write, members:write, webhooks:write"
    )]
    UnknownScope(String),
    #[error("a key needs at least one scope")]
    NoScopes,
    #[error("the key's name must be 1 to 100 characters")]
    BadName,
    #[error("the expiry {0} is in the past")]
    ExpiryInPast(DateTime<Utc>),
    #[error("no API key {0} in this community")]
    NotFound(ApiKeyId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key to create.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just created: the only time its secret exists outside its holder.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: Secret,
}

/// A request's key, once [`authenticate`] accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIdentity {
    pub key: ApiKeyId,
    pub community: CommunityRef,
    pub scopes: BTreeSet<Scope>,
}

impl KeyIdentity {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Who this key is in the audit log.
    pub fn actor(&self) -> Actor {
        Actor::Admin(Some(format!("api_key:{}", self.key)))
    }
}

const KEY_PREFIX: &str = "ghk_";

/// Creates a key for the community and audits it.
pub async fn create(
    store: &Store,
    community: CommunityRef,
    actor: &Actor,
    new: &NewKey,
) -> Result<CreatedKey, KeyError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyError::BadName);
    }
    if new.scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    if let Some(at) = new.expires_at.filter(|at| *at <= Utc::now()) {
        return Err(KeyError::ExpiryInPast(at));
    }
    let prefix = hex::encode(rand::random::<[u8; 6]>());
    let secret = format!(
        "{KEY_PREFIX}{prefix}_{}",
        hex::encode(rand::random::<[u8; 32]>())
    );
    let created_by = match actor {
        Actor::Admin(Some(who)) => Some(who.clone()),
        Actor::Member(user) => Some(user.to_string()),
        Actor::Admin(None) | Actor::System => None,
    };
    let tx = store.begin(community.tenant).await?;
    let key = tx
        .api_keys()
        .create(&NewApiKey {
            name: name.to_owned(),
            prefix,
            secret_hash: hash(&secret),
            scopes: new.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_by,
            expires_at: new.expires_at,
        })
        .await?;
    let entry = actor
        .entry(AuditAction::ApiKeyCreated)
        .target("api_key", key.id.to_string())
        .metadata(json!({ "name": key.name, "prefix": key.prefix, "scopes": key.scopes }));
    tx.audit().append(&entry).await?;
    tx.commit().await?;
    Ok(CreatedKey {
        key,
        secret: Secret::new(secret),
    })
}

/// Every key of the community, revoked ones included.
pub async fn list(store: &Store, community: CommunityRef) -> Result<Vec<ApiKey>, KeyError> {
    let tx = store.begin(community.tenant).await?;
    let keys = tx.api_keys().list().await?;
    tx.commit().await?;
    Ok(keys)
}

/// Revokes a key: refused from its next request on, by every API process.
pub async fn revoke(
    store: &Store,
    community: CommunityRef,
    actor: &Actor,
    id: ApiKeyId,
) -> Result<ApiKey, KeyError> {
    let tx = store.begin(community.tenant).await?;
    let key = tx
        .api_keys()
        .revoke(id)
        .await?
        .ok_or(KeyError::NotFound(id))?;
    let entry = actor
        .entry(AuditAction::ApiKeyRevoked)
        .target("api_key", key.id.to_string())
        .metadata(json!({ "name": key.name, "prefix": key.prefix }));
    tx.audit().append(&entry).await?;
    tx.commit().await?;
    Ok(key)
}

/// The identity behind a presented key, or `None` for anything that is not
/// a live key (malformed, unknown, revoked, expired: the caller answers all
/// of them the same way).
pub async fn authenticate(store: &Store, presented: &str) -> Result<Option<KeyIdentity>, KeyError> {
    let Some(prefix) = public_prefix(presented) else {
        return Ok(None);
    };
    let Some(found) = store
        .directory()
        .authenticate_api_key(prefix, &hash(presented))
        .await?
    else {
        return Ok(None);
    };
    // The database's CHECK allows only known scopes; one this binary does
    // not know (written by a newer version) grants nothing.
    let scopes = found
        .scopes
        .iter()
        .filter_map(|s| s.parse::<Scope>().ok())
        .collect();
    Ok(Some(KeyIdentity {
        key: found.key,
        community: CommunityRef {
            tenant: found.tenant,
            guild: found.guild,
        },
        scopes,
    }))
}

/// The public prefix of a well-formed key, without looking anything up.
pub fn public_prefix(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex_of(prefix, 12) && hex_of(secret, 64)).then_some(prefix)
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_have_a_prefix() {
        let good = format!("ghk_0123456789ab_{}", "f".repeat(64));
        assert_eq!(public_prefix(&good), Some("0123456789ab"));
        for bad in [
            "",
            "ghk_",
            &format!("ghk_0123456789AB_{}", "f".repeat(64)),
            &format!("ghk_0123456789a_{}", "f".repeat(64)),
            &format!("ghk_0123456789ab_{}", "f".repeat(63)),
            &format!("xyz_0123456789ab_{}", "f".repeat(64)),
            &format!("ghk_0123456789ab{}", "f".repeat(65)),
        ] {
            assert_eq!(public_prefix(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_named() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), *scope);
        }
        let err = "rules:admin".parse::<Scope>().unwrap_err();
        assert!(err.to_string().contains("\"rules:admin\""), "{err}");
    }
}
