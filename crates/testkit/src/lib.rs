//! One test harness for the workspace, on the services `scripts/stack up`
//! runs (or starts itself, for a private NATS):
//!
//! - [`db`]: throwaway, migrated databases ([`TestDb`]);
//! - [`nats`]: a private nats-server per test, a namespace of the test's own
//!   on the shared one (deleted with the value), and reading a stream back;
//!   both with a NATS user per process, as in production ([`nats::NatsAccess`]);
//! - [`nats_cluster`]: a clustered JetStream on loopback whose nodes a test
//!   kills and restarts, with waits for the cluster and its replicas to be
//!   whole again;
//! - [`pgbouncer`]: a private PgBouncer (the deployed configuration) that a
//!   test kills and restarts, in front of the stack's PostgreSQL or a
//!   private one;
//! - [`postgres`]: a private PostgreSQL cluster, bootstrapped as the stack's,
//!   that a test stops and restarts;
//! - [`mod@eventually`]: awaiting a condition, failing with what was awaited;
//! - [`drained`]: waiting until the durable consumers have nothing pending,
//!   so a test that proves "no second effect" looks only after every copy
//!   was handled, instead of sleeping and hoping;
//! - [`fixtures`]: community data several crates arrange alike (rules,
//!   wallets), written through the store;
//! - [`sim`]: the simulator set up for fast tests, and checking that what it
//!   sent reached a stream exactly once;
//! - [`http`]: plain HTTP/1.1 requests, below any client's retries.
//!
//! A dev-dependency only: nothing here belongs in a production build.

pub mod cli;
pub mod cut;
pub mod db;
pub mod drained;
pub mod eventually;
pub mod fixtures;
pub mod http;
pub mod nats;
pub mod nats_cluster;
pub mod pgbouncer;
pub mod postgres;
mod service_user;
pub mod sim;

pub use db::{connect, workspace_root, StackEnv, TestDb};
pub use drained::drained;
pub use eventually::eventually;

/// Runs `work` to completion on a private runtime on its own thread: `Drop`
/// cannot await, and may run inside or outside a tokio runtime.
pub(crate) fn block_on_aside(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let handle = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(work);
    });
    let _ = handle.join();
}
