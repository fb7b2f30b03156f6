//! Which community a front end is acting on.

use store::repo::{Community, SyncStatus};
use store::{Store, StoreError, TenantId};

use crate::{Actor, AuditAction};
use wire::GuildId;

/// A community as front ends address it: the tenant its rows belong to and
/// the Discord guild it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommunityRef {
    pub tenant: TenantId,
    pub guild: GuildId,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no community for guild {0}: has the bot joined it?")]
    Unknown(GuildId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The community serving `guild`.
pub async fn resolve(store: &Store, guild: GuildId) -> Result<CommunityRef, LookupError> {
    let tenant = store
        .directory()
        .resolve_guild(guild)
        .await?
        .ok_or(LookupError::Unknown(guild))?;
    Ok(CommunityRef { tenant, guild })
}

/// A change to what a community's admins may change about it; `None`
/// keeps the current value. Its name follows the Discord server's; its tier
/// and whether it is active are the operator's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SettingsPatch {
    pub theme_id: Option<String>,
    /// Free-form, for the community's own front ends (the dashboard keeps
    /// its preferences here). Must be a JSON object.
    pub settings: Option<serde_json::Value>,
}

/// The largest settings object accepted, serialised.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Every bad field at once, as `(field, problem)`.
    #[error("invalid settings: {}", .0.iter().map(|(f, p)| format!("{f}: {p}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(&'static str, String)>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn get(store: &Store, community: CommunityRef) -> Result<Community, StoreError> {
    let tx = store.begin(community.tenant).await?;
    let row = tx.communities().get().await?;
    tx.commit().await?;
    Ok(row)
}

/// Validates the fields given, applies them in one transaction and audits
/// what changed.
pub async fn update_settings(
    store: &Store,
    community: CommunityRef,
    actor: &Actor,
    patch: &SettingsPatch,
) -> Result<Community, SettingsError> {
    let mut problems = Vec::new();
    let theme_ok = patch.theme_id.as_deref().is_none_or(|theme| {
        let mut chars = theme.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && theme.len() <= 32
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    });
    if !theme_ok {
        problems.push((
            "theme_id",
            "expected 1 to 32 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"
                .to_owned(),
        ));
    }
    let settings = patch.settings.as_ref();
    if settings.is_some_and(|s| !s.is_object()) {
        problems.push(("settings", "expected a JSON object".to_owned()));
    } else if settings.is_some_and(|s| !numbers_are_safe(s)) {
        // PostgreSQL keeps a JSON number exactly, as written; one that no
        // double can hold would be stored but could not be read back (nor
        // by a browser). JavaScript's safe range is what a dashboard reads.
        problems.push((
            "settings",
            format!("numbers must lie within ±{MAX_SAFE_NUMBER}"),
        ));
    } else if settings.is_some_and(|s| s.to_string().len() > MAX_SETTINGS_BYTES) {
        problems.push((
            "settings",
            format!("at most {MAX_SETTINGS_BYTES} bytes when serialised"),
        ));
    }
    if !problems.is_empty() {
        return Err(SettingsError::Invalid(problems));
    }
    let tx = store.begin(community.tenant).await?;
    let before = tx.communities().get().await?;
    let after = tx
        .communities()
        .update_admin_settings(patch.theme_id.as_deref(), settings)
        .await?;
    if before.theme_id != after.theme_id || before.settings != after.settings {
        let entry = actor
            .entry(AuditAction::CommunitySettingsChanged)
            .target("community", community.tenant.to_string())
            .metadata(serde_json::json!({
                "theme_id": { "from": before.theme_id, "to": after.theme_id },
                "settings_changed": before.settings != after.settings,
            }));
        tx.audit().append(&entry).await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// The largest magnitude a settings number may have: 2^53 - 1, the last
/// integer a double (and JavaScript) holds exactly.
pub const MAX_SAFE_NUMBER: f64 = 9_007_199_254_740_991.0;

fn numbers_are_safe(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x.abs() <= MAX_SAFE_NUMBER),
        serde_json::Value::Array(items) => items.iter().all(numbers_are_safe),
        serde_json::Value::Object(fields) => fields.values().all(numbers_are_safe),
        _ => true,
    }
}

/// Where the community's role sync stands.
pub async fn sync_status(store: &Store, community: CommunityRef) -> Result<SyncStatus, StoreError> {
    let tx = store.begin(community.tenant).await?;
    let status = tx.stats().sync_status().await?;
    tx.commit().await?;
    Ok(status)
}
