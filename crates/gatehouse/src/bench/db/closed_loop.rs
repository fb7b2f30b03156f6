//! Gatehouse at full speed: every client starts its next transaction as
//! soon as the last one commits (no think time), as pgbench does without
//! `-R`. Throughput is then what the client, PgBouncer and the database
//! serve together, and the ratio to pgbench's is the client's cost.

use std::{
    sync::{atomic::AtomicU32, Arc},
    time::Duration,
};

use indicatif::ProgressBar;
use rand::{rngs::SmallRng, SeedableRng};
use store::Store;
use tokio::time::Instant;

use super::{
    super::recorder::Recorder,
    workload::{self, Tenants},
};

/// A run's outcomes and how long it took (to the last transaction's end).
pub struct Measured {
    pub recorder: Arc<Recorder>,
    pub elapsed: Duration,
}

/// Runs `clients` loops for `length`, showing progress on `bar` from `base`
/// (ms).
pub async fn full_speed(
    store: &Store,
    tenants: &Arc<Tenants>,
    clients: u32,
    length: Duration,
    bar: &ProgressBar,
    base: u64,
) -> Measured {
    let recorder = Arc::new(Recorder::new());
    let logged = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (store, tenants, recorder, logged) = (
                store.clone(),
                tenants.clone(),
                recorder.clone(),
                logged.clone(),
            );
            tokio::spawn(async move {
                let mut rng = SmallRng::from_rng(&mut rand::rng());
                while Instant::now() < deadline {
                    let Some((tenant, user)) = tenants.pick(&mut rng) else {
                        return;
                    };
                    let began = Instant::now();
                    let outcome = workload::transaction(&store, tenant, user).await;
                    workload::record(&recorder, &logged, began.elapsed(), outcome);
                }
            })
        })
        .collect();
    super::show_progress(bar, base, started, length, &recorder).await;
    for task in tasks {
        // A client that panicked has stopped counting; the rest finish their
        // transaction in flight.
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    Measured { recorder, elapsed }
}
