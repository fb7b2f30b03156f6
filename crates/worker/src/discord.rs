//! Discord's REST API, for role changes and interaction replies.
//!
//! Interaction replies and command registration go through twilight-http.
//! Role changes, the bulk of the traffic, go through
//! [`role_changes`](crate::role_changes): per-guild queues taken in turn
//! (a member's own change before any bulk re-check), Discord's per-guild
//! windows and global limit shared with every other worker process, and a
//! breaker that stops them all well before Discord's invalid-request ban.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use domain::role_sync::RoleChange;
use domain::role_sync::{RoleChangeError, RoleWriter};
use tokio::sync::{mpsc, oneshot};
use twilight_http::Client;
use twilight_model::id::{marker, Id};
use wire::check::CheckPriority;
use wire::{ApplicationId, GuildId, InteractionId, RoleId, UserId};

use crate::role_changes::{self, Budget, Job, RoleRequests};
pub use crate::role_changes::{RoleChangeLimits, Sharing};

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscordError {
    #[error("invalid Discord setting {setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
    #[error("Discord refused {what}: {reason}")]
    Request { what: String, reason: String },
    /// Discord answered 429 despite the pacing (another bot instance, or
    /// limits that changed), also after waiting once.
    #[error("Discord rate-limited {what}: {reason}")]
    RateLimited { what: String, reason: String },
    /// The member left the guild before the change went out (Discord's
    /// "Unknown Member"): nothing to change, and nothing to retry.
    #[error("user {user} is no longer a member of guild {guild}")]
    MemberGone { guild: GuildId, user: UserId },
    /// Too many invalid requests lately (across all workers): nothing is
    /// sent until they are older than the window. Retry later.
    #[error("not sent: Discord answered too many requests with 401, 403 or 429 lately (the invalid-request breaker is open for about {retry_after:?} more); retry later")]
    BreakerOpen { retry_after: Duration },
    #[error("the Discord request queue is closed (shutting down)")]
    Closed,
}

/// A REST client with fair, shared-budget role changes. Cheap to clone;
/// clones share the queues.
#[derive(Clone)]
pub struct Discord {
    http: Arc<Client>,
    jobs: mpsc::Sender<Vec<Job>>,
    budget: Arc<Budget>,
    /// Role changes asked for and not answered yet.
    backlog: Arc<AtomicUsize>,
}

impl Discord {
    /// `api_url` overrides Discord's API host (the simulator's, in tests
    /// and the demo); production leaves it unset. `sharing` says how the
    /// budget is shared with other worker processes.
    pub fn new(
        token: &str,
        api_url: Option<&str>,
        limits: RoleChangeLimits,
        sharing: Sharing,
    ) -> Result<Self, DiscordError> {
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
        let requests =
            RoleRequests::new(token, api_url).map_err(|reason| DiscordError::Config {
                setting: "DISCORD_API_URL",
                reason,
            })?;
        let in_flight = limits.in_flight.max(1);
        let budget = Arc::new(Budget::new(limits, sharing));
        let (jobs, incoming) = mpsc::channel(1024);
        tokio::spawn(role_changes::dispatch(
            Arc::new(requests),
            budget.clone(),
            incoming,
            in_flight,
        ));
        Ok(Discord {
            http,
            jobs,
            budget,
            backlog: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The underlying client, for interaction replies (which have their own
    /// deadline and bypass the role queues).
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

    /// Adds or removes a role, queued in its guild with `priority`.
    pub async fn change_role(
        &self,
        change: RoleChange,
        priority: CheckPriority,
    ) -> Result<(), DiscordError> {
        self.change_roles(vec![(change, priority)])
            .await
            .pop()
            .unwrap_or(Err(DiscordError::Closed))
    }

    /// Queues several changes at once (each in its guild's queue, in
    /// order) and returns their results in the same order.
    pub async fn change_roles(
        &self,
        changes: Vec<(RoleChange, CheckPriority)>,
    ) -> Vec<Result<(), DiscordError>> {
        let _waiting = Backlog::enter(&self.backlog, changes.len());
        let (jobs, replies): (Vec<Job>, Vec<_>) = changes
            .into_iter()
            .map(|(change, priority)| {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    change,
                    priority,
                    reply,
                    limited: 0,
                };
                (job, answer)
            })
            .unzip();
        if self.jobs.send(jobs).await.is_err() {
            return replies.iter().map(|_| Err(DiscordError::Closed)).collect();
        }
        let mut results = Vec::with_capacity(replies.len());
        for answer in replies {
            results.push(answer.await.unwrap_or(Err(DiscordError::Closed)));
        }
        results
    }

    /// Role changes asked for through this client (and its clones) and not
    /// answered yet.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// How long role changes stay refused, if the invalid-request breaker
    /// is open (as this process last saw it).
    pub fn breaker_open_for(&self) -> Option<Duration> {
        self.budget
            .breaker_open_until()
            .map(|until| until.saturating_duration_since(tokio::time::Instant::now()))
    }
}

/// Changes counted in [`Discord::backlog`] while their caller waits (also
/// when its future is dropped).
struct Backlog<'a> {
    count: &'a AtomicUsize,
    n: usize,
}

impl<'a> Backlog<'a> {
    fn enter(count: &'a AtomicUsize, n: usize) -> Self {
        count.fetch_add(n, Ordering::Relaxed);
        Backlog { count, n }
    }
}

impl Drop for Backlog<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(self.n, Ordering::Relaxed);
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
