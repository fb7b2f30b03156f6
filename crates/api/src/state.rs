use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eligibility::Evaluator;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use store::{ApiKeyId, Store};

/// How many keys' worth of requests one peer address may send.
pub(crate) const PEER_FACTOR: NonZeroU32 = match NonZeroU32::new(10) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

use crate::rechecks::BusRechecks;

/// What an `api` process is configured with, beyond its connections.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// A request that takes longer is abandoned and answered 503.
    pub request_timeout: Duration,
    /// Sustained requests per second per key…
    pub rate_per_second: NonZeroU32,
    /// …and how many may come at once above that.
    pub burst: NonZeroU32,
    /// The periodic re-check period the workers use: outcomes older than
    /// this are reported as stale.
    pub recheck_period: Duration,
    /// How many members a preview names per role and direction.
    pub preview_sample: usize,
    /// Lets webhooks point at plain-HTTP loopback addresses (tests, the
    /// demo). Never in production.
    pub webhooks_allow_insecure_loopback: bool,
    /// The public address (`PUBLIC_URL`) the wallet-link page is served
    /// at; `None`: no link page.
    pub public_site: Option<domain::wallets::Site>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            request_timeout: Duration::from_secs(10),
            rate_per_second: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(40).unwrap_or(NonZeroU32::MIN),
            recheck_period: Duration::from_secs(24 * 3600),
            preview_sample: 10,
            webhooks_allow_insecure_loopback: false,
            public_site: None,
        }
    }
}

/// Shared by every request; cheap to clone. Holds no per-community state:
/// any number of `api` processes serve the same communities.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub store: Store,
    pub rechecks: BusRechecks,
    pub nats: async_nats::Client,
    pub evaluator: Arc<Evaluator>,
    pub settings: ApiSettings,
    /// Per key, spent only by requests that proved the key: a key's prefix
    /// is public, so a budget keyed on it could be spent by anyone.
    pub per_key: DefaultKeyedRateLimiter<ApiKeyId>,
    /// Per peer address, spent by every request before its key is looked
    /// up, so a flood of made-up keys costs the database little. Generous
    /// ([`PEER_FACTOR`] times a key's budget): behind a proxy every client
    /// shares the proxy's address.
    pub per_peer: DefaultKeyedRateLimiter<IpAddr>,
    /// Set once, before serving, when the dashboard is configured.
    pub dashboard: OnceLock<Arc<crate::web::Dashboard>>,
}

impl AppState {
    pub fn new(
        store: Store,
        nats: async_nats::Client,
        namespace: bus::Namespace,
        evaluator: Arc<Evaluator>,
        settings: ApiSettings,
    ) -> Self {
        let quota = Quota::per_second(settings.rate_per_second).allow_burst(settings.burst);
        let scaled = |n: NonZeroU32| n.saturating_mul(PEER_FACTOR);
        let peer_quota =
            Quota::per_second(scaled(settings.rate_per_second)).allow_burst(scaled(settings.burst));
        AppState(Arc::new(Inner {
            store,
            rechecks: BusRechecks::new(async_nats::jetstream::new(nats.clone()), namespace),
            nats,
            evaluator,
            settings,
            per_key: RateLimiter::keyed(quota),
            per_peer: RateLimiter::keyed(peer_quota),
            dashboard: OnceLock::new(),
        }))
    }

    /// Also serves the dashboard (Discord login and the admin pages) on the
    /// same listener. Without it only `/v1` and the probes are served.
    pub fn with_dashboard(
        self,
        settings: crate::web::DashboardSettings,
    ) -> Result<Self, crate::web::DashboardError> {
        let dashboard = crate::web::Dashboard::new(settings)?;
        // Set once: a second call keeps the first configuration.
        let _ = self.0.dashboard.set(dashboard);
        Ok(self)
    }

    pub(crate) fn dashboard(&self) -> Option<Arc<crate::web::Dashboard>> {
        self.0.dashboard.get().cloned()
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }
}
