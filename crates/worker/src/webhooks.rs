//! Webhook deliveries: the dispatcher that turns audit rows into
//! deliveries, and the consumer that sends them.
//!
//! The dispatcher runs every `dispatch_interval` in every worker. For each
//! community with an active webhook it records the deliveries its new audit
//! rows call for (the store reads the log by transaction id, so a late
//! commit is never skipped, and a delivery is unique per webhook and audit
//! row, so two dispatchers or a re-run create nothing twice), commits, and
//! only then publishes one `webhooks.deliver` reference per delivery: a
//! message published before the commit could be consumed before the row is
//! visible. A delivery stays "unpublished" until JetStream has stored its
//! message, so a crash between commit and publish is repaired by the next
//! pass (the `Nats-Msg-Id` makes the repeat harmless).
//!
//! The consumer reads the delivery, its webhook and its audit row, signs
//! the body and POSTs it, then records the attempt. 2xx is delivered; 5xx,
//! 408, 429 and no answer are retried after the webhook backoff (a 429's
//! `Retry-After`, when it gives one, wins); any other status is a refusal
//! that retrying will not change, so the delivery fails at once. Attempts
//! are counted in the delivery log, not by JetStream, so the count survives
//! a re-published message; once it reaches `max_attempts` the delivery is
//! marked failed and the reference goes to the dead letters.
//!
//! Nothing here logs a secret, a signature or a full URL (paths carry
//! receivers' tokens): webhooks are named by id, endpoints by origin.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use bus::Namespace;
use domain::webhooks::{self as hooks, UrlPolicy, WebhookEvent};
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT},
    redirect, StatusCode,
};
use store::{
    repo::{AttemptRecord, DeliveryJob, DeliveryState, WebhookDelivery as LoggedDelivery},
    Store, StoreError, TenantId,
};
use tokio_util::sync::CancellationToken;
use wire::webhook::WebhookDelivery;

use crate::{
    config::WebhookConfig, consumer::HandleMessage, Delivery, HandlerError, WorkerConfig,
    WorkerError,
};

/// Audit rows turned into deliveries per webhook and pass; a backlog is
/// worked off over several passes instead of in one long transaction.
const ENQUEUE_PAGE: i64 = 500;
/// Deliveries published per community and pass.
const PUBLISH_BATCH: i64 = 500;
/// Longest `Retry-After` honoured: a receiver cannot park a delivery for
/// longer than the stream keeps it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long a delivery waits when its community already has its share of
/// the consumer's slots.
const FAIR_SHARE_WAIT: Duration = Duration::from_millis(500);

/// What one dispatcher pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchReport {
    pub communities: usize,
    /// Deliveries recorded by this pass.
    pub created: u64,
    /// References JetStream stored (new ones and any left over from an
    /// earlier pass).
    pub published: usize,
}

/// Every `interval`, one [`dispatch_once`]. Errors are logged and the next
/// tick tries again: an outage of the database or NATS delays deliveries,
/// it never loses them (the log and the unpublished marks remain).
pub(crate) async fn dispatch_loop(
    store: Store,
    js: jetstream::Context,
    namespace: Namespace,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match dispatch_once(&store, &js, &namespace).await {
            Ok(report) if report.created > 0 || report.published > 0 => {
                tracing::debug!(
                    communities = report.communities,
                    created = report.created,
                    published = report.published,
                    "webhook deliveries dispatched"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhook dispatch failed; retrying next tick"),
        }
    }
}

/// One pass over every community with an active webhook. A community that
/// fails is logged and skipped, so it cannot hold the others back.
pub async fn dispatch_once(
    store: &Store,
    js: &jetstream::Context,
    namespace: &Namespace,
) -> Result<DispatchReport, StoreError> {
    let vocabulary = WebhookEvent::vocabulary();
    let mut report = DispatchReport::default();
    for tenant in store.directory().webhook_communities().await? {
        report.communities += 1;
        match dispatch_community(store, js, namespace, tenant, &vocabulary).await {
            Ok((created, published)) => {
                report.created += created;
                report.published += published;
            }
            Err(e) => {
                tracing::warn!(community = %tenant, error = %e, "webhook dispatch failed for a community; retrying next tick");
            }
        }
    }
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
}

async fn dispatch_community(
    store: &Store,
    js: &jetstream::Context,
    namespace: &Namespace,
    tenant: TenantId,
    vocabulary: &[(&str, &str)],
) -> Result<(u64, usize), DispatchError> {
    let tx = store.begin(tenant).await?;
    let scan = tx.webhooks().lock_cursors().await?;
    let mut created = 0;
    for cursor in &scan.cursors {
        created += tx
            .webhooks()
            .enqueue(&scan, cursor, vocabulary, ENQUEUE_PAGE)
            .await?
            .created;
    }
    let unpublished = tx.webhooks().unpublished(PUBLISH_BATCH).await?;
    tx.commit().await?;

    let mut published = Vec::with_capacity(unpublished.len());
    let mut failure = None;
    for delivery in unpublished {
        let reference = WebhookDelivery {
            community: *tenant.as_uuid(),
            delivery,
        };
        match bus::publish_webhook_delivery(js, namespace, &reference).await {
            Ok(()) => published.push(delivery),
            Err(e) => {
                // NATS is down or full: the rest stay unpublished for the
                // next pass. Mark what did get through.
                failure = Some(e);
                break;
            }
        }
    }
    if !published.is_empty() {
        let tx = store.begin(tenant).await?;
        tx.webhooks().mark_published(&published).await?;
        tx.commit().await?;
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok((created, published.len())),
    }
}

/// The webhook consumer's handler: one delivery attempt per message.
pub(crate) struct WebhookSender {
    store: Store,
    namespace: Namespace,
    http: reqwest::Client,
    config: WebhookConfig,
    /// Deliveries in progress per community, so that one community's slow
    /// endpoint cannot take every slot of the consumer.
    in_flight: Mutex<HashMap<TenantId, usize>>,
    fair_share: usize,
}

impl WebhookSender {
    pub(crate) fn new(
        store: Store,
        namespace: Namespace,
        config: &WorkerConfig,
    ) -> Result<Self, WorkerError> {
        let timeout = config.webhook_timeout();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect would send the signed event somewhere the policy
            // never saw (an internal address, say); the status is recorded
            // instead and the admin fixes the URL.
            .redirect(redirect::Policy::none())
            // A proxy from the environment would resolve the endpoint's name
            // itself, past the resolver below.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(config.webhooks.url_policy)))
            .build()
            .map_err(|e| WorkerError::Task(format!("cannot build the webhook HTTP client: {e}")))?;
        Ok(WebhookSender {
            store,
            namespace,
            http,
            config: config.webhooks.clone(),
            in_flight: Mutex::new(HashMap::new()),
            fair_share: (config.concurrency / 4).max(1),
        })
    }

    async fn handle(&self, subject: &str, payload: &[u8]) -> Result<(), HandlerError> {
        let contract = self.namespace.strip(subject).unwrap_or(subject);
        if contract != wire::subjects::WEBHOOK_DELIVER {
            return Err(HandlerError::Permanent(format!(
                "{contract} is not a webhook delivery"
            )));
        }
        let reference = WebhookDelivery::from_json(payload).map_err(|e| {
            HandlerError::Permanent(format!("undecodable webhook delivery reference: {e}"))
        })?;
        let tenant = TenantId::from(reference.community);
        let Some(_slot) = Slot::take(self, tenant) else {
            return Err(HandlerError::RetryAfter {
                reason: format!("community {tenant} has its share of webhook slots in use"),
                after: FAIR_SHARE_WAIT,
            });
        };
        let job = self
            .load(tenant, reference.delivery)
            .await
            .map_err(|e| self.store_error(e))?;
        let Some(job) = job else {
            // The webhook was deleted, and its log with it.
            tracing::debug!(
                delivery = reference.delivery,
                "webhook delivery no longer exists; dropped"
            );
            return Ok(());
        };
        match job.delivery.state {
            DeliveryState::Delivered => return Ok(()),
            // Marked failed, but its dead letter was not stored (NATS went
            // away in between): try that again, do not send again.
            DeliveryState::Failed => {
                return Err(HandlerError::Permanent(failure_reason(&job.delivery)));
            }
            DeliveryState::Pending => {}
        }
        if !job.webhook_active {
            tracing::debug!(webhook = %job.delivery.webhook_id, "webhook inactive; delivery not sent");
            return Ok(());
        }
        let outcome = match self.config.url_policy.check(&job.url) {
            Ok(url) => self.send(&job, url).await,
            Err(problem) => {
                Attempt::refused(None, format!("the URL is no longer allowed: it {problem}"))
            }
        };
        self.settle(tenant, &job, outcome).await
    }

    async fn load(
        &self,
        tenant: TenantId,
        delivery: i64,
    ) -> Result<Option<DeliveryJob>, StoreError> {
        let tx = self.store.begin(tenant).await?;
        let job = tx.webhooks().delivery_job(delivery).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// A database problem is not the endpoint's fault and costs no attempt:
    /// an outage waits like any retry, a query error is a bug to look at.
    fn store_error(&self, e: StoreError) -> HandlerError {
        match HandlerError::from(e) {
            HandlerError::Transient(reason) => HandlerError::RetryAfter {
                reason,
                after: self.config.backoff_after(1),
            },
            other => other,
        }
    }

    async fn send(&self, job: &DeliveryJob, url: reqwest::Url) -> Attempt {
        let delivery = &job.delivery;
        let body = hooks::event_body(
            delivery.public_id,
            &delivery.event_type,
            job.guild_id,
            &job.audit,
        );
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(e) => return Attempt::refused(None, format!("cannot encode the event: {e}")),
        };
        let signature = hooks::sign(&job.secret, chrono::Utc::now().timestamp(), &body);
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("Gatehouse-Webhooks/1"))
            .header(hooks::EVENT_HEADER, &delivery.event_type)
            .header(hooks::DELIVERY_HEADER, delivery.public_id.to_string())
            .header(hooks::SIGNATURE_HEADER, signature)
            .body(body);
        match request.send().await {
            Ok(response) => Attempt::from_status(response.status(), retry_after(&response)),
            // Without the URL: reqwest's message would quote it.
            Err(e) => Attempt::retry(None, describe(&e.without_url()), None),
        }
    }

    async fn settle(
        &self,
        tenant: TenantId,
        job: &DeliveryJob,
        attempt: Attempt,
    ) -> Result<(), HandlerError> {
        let id = job.delivery.id;
        let tx = self
            .store
            .begin(tenant)
            .await
            .map_err(|e| self.store_error(e))?;
        let settled = tx
            .webhooks()
            .record_attempt(id, &attempt.record, self.config.max_attempts)
            .await
            .map_err(|e| self.store_error(e))?;
        tx.commit().await.map_err(|e| self.store_error(e))?;
        let Some(settled) = settled else {
            // Settled meanwhile by another attempt; nothing more to do.
            return Ok(());
        };
        let outcome = settled.state.as_str();
        metrics::counter!("worker_webhook_attempts_total", "outcome" => outcome).increment(1);
        // Failures at info (an admin's endpoint is down: worth seeing),
        // successes at debug (one per event would drown the log).
        if settled.state == DeliveryState::Delivered {
            tracing::debug!(
                webhook = %job.delivery.webhook_id,
                delivery = %job.delivery.public_id,
                attempt = settled.attempts,
                "webhook delivered"
            );
        } else {
            tracing::info!(
                webhook = %job.delivery.webhook_id,
                delivery = %job.delivery.public_id,
                event = %job.delivery.event_type,
                attempt = settled.attempts,
                status = ?attempt.record.status,
                error = attempt.record.error.as_deref().unwrap_or(""),
                outcome,
                "webhook delivery attempt failed"
            );
        }
        match settled.state {
            DeliveryState::Delivered => Ok(()),
            DeliveryState::Pending => Err(HandlerError::RetryAfter {
                reason: attempt.record.error.clone().unwrap_or_default(),
                after: attempt.retry_after.map_or_else(
                    || {
                        self.config
                            .backoff_after(u32::try_from(settled.attempts).unwrap_or(1))
                    },
                    |after| after.min(MAX_RETRY_AFTER),
                ),
            }),
            DeliveryState::Failed => Err(HandlerError::Permanent(failure_reason(&settled))),
        }
    }
}

impl HandleMessage for WebhookSender {
    async fn handle_message(
        &self,
        subject: &str,
        payload: &[u8],
        _delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        self.handle(subject, payload).await
    }
}

/// The dead letter's reason: which webhook and delivery, never the URL.
fn failure_reason(d: &LoggedDelivery) -> String {
    format!(
        "webhook {} delivery {} ({}) failed after {} attempt(s): {}",
        d.webhook_id,
        d.public_id,
        d.event_type,
        d.attempts,
        d.last_error.as_deref().unwrap_or("see the delivery log"),
    )
}

/// One attempt's outcome as the log stores it, and a receiver's
/// `Retry-After`.
#[derive(Debug, PartialEq, Eq)]
struct Attempt {
    record: AttemptRecord,
    retry_after: Option<Duration>,
}

impl Attempt {
    fn from_status(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
        let code = status.as_u16();
        if status.is_success() {
            return Attempt {
                record: AttemptRecord {
                    status: Some(code),
                    error: None,
                    delivered: true,
                    retryable: false,
                },
                retry_after: None,
            };
        }
        let error = format!("the endpoint answered HTTP {code}");
        let retryable = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS;
        if retryable {
            let honoured = retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS);
            Attempt::retry(Some(code), error, honoured)
        } else {
            Attempt::refused(
                Some(code),
                format!("{error}, which retrying will not change"),
            )
        }
    }

    fn retry(status: Option<u16>, error: String, retry_after: Option<Duration>) -> Attempt {
        Attempt {
            record: AttemptRecord {
                status,
                error: Some(error),
                delivered: false,
                retryable: true,
            },
            retry_after,
        }
    }

    fn refused(status: Option<u16>, error: String) -> Attempt {
        Attempt {
            record: AttemptRecord {
                status,
                error: Some(error),
                delivered: false,
                retryable: false,
            },
            retry_after: None,
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from webhook
/// receivers and not worth a date parser; the backoff applies instead).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A transport error in one line, with its cause (reqwest's own message is
/// often just "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Resolves endpoint names and keeps only the addresses the URL policy
/// allows, so that a public name pointing at an internal address (or
/// re-pointed there after registration) is refused at connection time.
/// Literal addresses never come here; the policy checks those in the URL.
struct PolicyResolver(UrlPolicy);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| policy.allows_ip(addr.ip()))
                .collect();
            if allowed.is_empty() {
                let problem = if found.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!(
                        "{host} resolves only to internal addresses, which webhooks may not call"
                    )
                };
                return Err(problem.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A community's claim on one of the consumer's slots, released on drop.
struct Slot<'a> {
    sender: &'a WebhookSender,
    tenant: TenantId,
}

impl<'a> Slot<'a> {
    fn take(sender: &'a WebhookSender, tenant: TenantId) -> Option<Slot<'a>> {
        let mut map = sender
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let used = map.entry(tenant).or_insert(0);
        if *used >= sender.fair_share {
            return None;
        }
        *used += 1;
        Some(Slot { sender, tenant })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self
            .sender
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(used) = map.get_mut(&self.tenant) {
            *used = used.saturating_sub(1);
            if *used == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_between_delivered_retried_and_refused() {
        let ok = Attempt::from_status(StatusCode::NO_CONTENT, None);
        assert!(ok.record.delivered && ok.record.error.is_none());
        for retried in [500, 502, 503, 408, 429] {
            let a = Attempt::from_status(StatusCode::from_u16(retried).unwrap(), None);
            assert!(a.record.retryable && !a.record.delivered, "{retried}");
            assert_eq!(a.record.status, Some(retried));
        }
        for refused in [400, 401, 404, 410, 301] {
            let a = Attempt::from_status(StatusCode::from_u16(refused).unwrap(), None);
            assert!(!a.record.retryable && !a.record.delivered, "{refused}");
            assert!(a.record.error.unwrap().contains(&refused.to_string()));
        }
    }

    #[tokio::test]
    async fn names_resolving_only_to_internal_addresses_are_refused_at_connection_time() {
        // `localhost` comes from the hosts file: no network needed.
        let name = || "localhost".parse::<Name>().unwrap();
        let strict = PolicyResolver(UrlPolicy::default());
        let Err(e) = strict.resolve(name()).await else {
            panic!("localhost resolved under the strict policy");
        };
        assert!(e.to_string().contains("internal addresses"), "{e}");
        let tests = PolicyResolver(UrlPolicy {
            allow_insecure_loopback: true,
        });
        let Ok(addrs) = tests.resolve(name()).await else {
            panic!("localhost refused although loopback is allowed");
        };
        assert!(addrs.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn retry_after_is_honoured_for_429_only() {
        let wait = Some(Duration::from_secs(7));
        assert_eq!(
            Attempt::from_status(StatusCode::TOO_MANY_REQUESTS, wait).retry_after,
            wait
        );
        assert_eq!(
            Attempt::from_status(StatusCode::SERVICE_UNAVAILABLE, wait).retry_after,
            None
        );
    }
}
