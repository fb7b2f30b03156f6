//! Discord's REST API, for role changes and interaction replies.
//!
//! twilight-http keeps every request within Discord's rate limits (it queues
//! per route bucket and honours the global limit). On top of that, role
//! changes go through two lanes: interactive work (a member's own `/check`,
//! a new join) is always taken before bulk re-checks, so a community-wide
//! re-check cannot make a waiting member wait behind thousands of others.

use std::sync::Arc;

pub use domain::role_sync::RoleChange;
use domain::role_sync::{RoleChangeError, RoleWriter};
use tokio::sync::{mpsc, oneshot, Semaphore};
use twilight_http::Client;
use twilight_model::id::{marker, Id};
use wire::check::CheckPriority;
use wire::{ApplicationId, GuildId, InteractionId, RoleId, UserId};

use crate::role_budget::RoleBudgets;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscordError {
    #[error("invalid Discord setting {setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
    #[error("Discord refused {what}: {reason}")]
    Request { what: String, reason: String },
    /// Discord answered 429 despite the pacing (another process spent the
    /// bucket, or a global limit).
    #[error("Discord rate-limited {what}: {reason}")]
    RateLimited { what: String, reason: String },
    /// The member left the guild before the change went out (Discord's
    /// "Unknown Member"): nothing to change, and nothing to retry.
    #[error("user {user} is no longer a member of guild {guild}")]
    MemberGone { guild: GuildId, user: UserId },
    #[error("the Discord request queue is closed (shutting down)")]
    Closed,
}

type Job = (RoleChange, oneshot::Sender<Result<(), DiscordError>>);

/// A REST client with prioritised role changes. Cheap to clone.
#[derive(Clone)]
pub struct Discord {
    http: Arc<Client>,
    interactive: mpsc::Sender<Job>,
    bulk: mpsc::Sender<Job>,
}

impl Discord {
    /// `api_url` overrides Discord's API host (the simulator's, in tests
    /// and the demo); production leaves it unset. At most `in_flight` role
    /// changes are sent at once.
    pub fn new(token: &str, api_url: Option<&str>, in_flight: usize) -> Result<Self, DiscordError> {
        if token.trim().is_empty() {
            return Err(DiscordError::Config {
                setting: "DISCORD_TOKEN",
                reason: "is empty".into(),
            });
        }
        let mut builder = Client::builder().token(token.to_owned());
        if let Some(url) = api_url {
            let (use_http, host) = if let Some(host) = url.strip_prefix("http://") {
                (true, host)
            } else if let Some(host) = url.strip_prefix("https://") {
                (false, host)
            } else {
                return Err(DiscordError::Config {
                    setting: "DISCORD_API_URL",
                    reason: format!("{url:?} must start with http:// or https://"),
                });
            };
            builder = builder.proxy(host.trim_end_matches('/').to_owned(), use_http);
        }
        let http = Arc::new(builder.build());
        let budgets = Arc::new(RoleBudgets::default());
        let (interactive, interactive_rx) = mpsc::channel(1024);
        let (bulk, bulk_rx) = mpsc::channel(1024);
        tokio::spawn(dispatch(
            http.clone(),
            budgets,
            interactive_rx,
            bulk_rx,
            in_flight.max(1),
        ));
        Ok(Discord {
            http,
            interactive,
            bulk,
        })
    }

    /// The underlying client, for interaction replies (which have their own
    /// deadline and bypass the role lanes).
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// Replaces the application's global slash commands with
    /// [`definitions`](crate::slash_commands::definitions) (Discord's bulk
    /// overwrite: idempotent, ids kept for unchanged names). Returns the
    /// names Discord now lists.
    pub async fn register_commands(
        &self,
        application_id: ApplicationId,
    ) -> Result<Vec<String>, DiscordError> {
        let application_id = application_id.to_twilight();
        let commands = crate::slash_commands::definitions();
        let refused = |reason: String| DiscordError::Request {
            what: "registering the slash commands".into(),
            reason,
        };
        let registered = self
            .http
            .interaction(application_id)
            .set_global_commands(&commands)
            .await
            .map_err(|e| refused(e.to_string()))?
            .models()
            .await
            .map_err(|e| refused(e.to_string()))?;
        Ok(registered.into_iter().map(|c| c.name).collect())
    }

    /// Adds or removes a role, waiting in the lane of `priority`.
    pub async fn change_role(
        &self,
        change: RoleChange,
        priority: CheckPriority,
    ) -> Result<(), DiscordError> {
        let (tx, rx) = oneshot::channel();
        let lane = match priority {
            CheckPriority::Interactive => &self.interactive,
            CheckPriority::Bulk => &self.bulk,
        };
        lane.send((change, tx))
            .await
            .map_err(|_| DiscordError::Closed)?;
        rx.await.map_err(|_| DiscordError::Closed)?
    }
}

impl RoleWriter for Discord {
    async fn change_role(
        &self,
        change: RoleChange,
        priority: CheckPriority,
    ) -> Result<(), RoleChangeError> {
        Discord::change_role(self, change, priority)
            .await
            .map_err(|e| match e {
                DiscordError::MemberGone { guild, user } => {
                    RoleChangeError::MemberGone { guild, user }
                }
                e @ DiscordError::RateLimited { .. } => RoleChangeError::RateLimited(e.to_string()),
                other => RoleChangeError::Failed(other.to_string()),
            })
    }
}

async fn dispatch(
    http: Arc<Client>,
    budgets: Arc<RoleBudgets>,
    mut interactive: mpsc::Receiver<Job>,
    mut bulk: mpsc::Receiver<Job>,
    in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(in_flight));
    loop {
        // Wait for capacity first, so the choice of lane is made at the
        // moment a request can actually go out.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (job, priority) = tokio::select! {
            biased;
            Some(job) = interactive.recv() => (job, CheckPriority::Interactive),
            Some(job) = bulk.recv() => (job, CheckPriority::Bulk),
            else => return,
        };
        let (http, budgets) = (http.clone(), budgets.clone());
        tokio::spawn(async move {
            let (change, reply) = job;
            budgets.take(change.guild_id, priority).await;
            let _ = reply.send(send(&http, &budgets, &change).await);
            drop(permit);
        });
    }
}

async fn send(
    http: &Client,
    budgets: &RoleBudgets,
    change: &RoleChange,
) -> Result<(), DiscordError> {
    use twilight_http::request::AuditLogReason;
    let (guild, user, role) = (
        change.guild_id.to_twilight(),
        change.user_id.to_twilight(),
        change.role_id.to_twilight(),
    );
    let what = format!(
        "{} role {} for user {} in guild {}",
        if change.add { "adding" } else { "removing" },
        change.role_id,
        change.user_id,
        change.guild_id
    );
    let result = if change.add {
        http.add_guild_member_role(guild, user, role)
            .reason(&change.reason)
            .await
    } else {
        http.remove_guild_member_role(guild, user, role)
            .reason(&change.reason)
            .await
    };
    let result = result.map(|response| budgets.observe(change.guild_id, response.headers()));
    metrics::counter!("worker_role_changes_total", "op" => if change.add { "add" } else { "remove" }, "ok" => if result.is_ok() { "true" } else { "false" }).increment(1);
    result.map_err(|e| {
        if api_error_code(&e) == Some(UNKNOWN_MEMBER) {
            DiscordError::MemberGone {
                guild: change.guild_id,
                user: change.user_id,
            }
        } else if is_rate_limited(&e) {
            DiscordError::RateLimited {
                what,
                reason: e.to_string(),
            }
        } else {
            DiscordError::Request {
                what,
                reason: e.to_string(),
            }
        }
    })
}

/// Whether Discord answered 429 Too Many Requests.
fn is_rate_limited(error: &twilight_http::Error) -> bool {
    matches!(
        error.kind(),
        twilight_http::error::ErrorType::Response { status, .. } if status.get() == 429
    )
}

/// Discord's JSON error code for "Unknown Member".
const UNKNOWN_MEMBER: u64 = 10007;

/// Discord's JSON error code of a refused request, when it sent one.
pub(crate) fn api_error_code(error: &twilight_http::Error) -> Option<u64> {
    use twilight_http::{api_error::ApiError, error::ErrorType};
    match error.kind() {
        ErrorType::Response {
            error: ApiError::General(g),
            ..
        } => Some(g.code),
        _ => None,
    }
}

/// A wire id → Twilight's id of the same kind. A trait rather than one
/// generic function so that a guild id cannot become a user id on the way.
pub(crate) trait ToTwilight {
    type Twilight;
    fn to_twilight(self) -> Self::Twilight;
}

macro_rules! to_twilight {
    ($($wire:ty => $twilight:ident),* $(,)?) => {$(
        impl ToTwilight for $wire {
            type Twilight = Id<marker::$twilight>;
            fn to_twilight(self) -> Id<marker::$twilight> {
                Id::from(self.into_nonzero())
            }
        }
    )*};
}

to_twilight! {
    GuildId => GuildMarker,
    UserId => UserMarker,
    RoleId => RoleMarker,
    ApplicationId => ApplicationMarker,
    InteractionId => InteractionMarker,
}
