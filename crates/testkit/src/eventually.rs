//! Awaiting a condition instead of sleeping for a guessed while.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is polled: often enough that a test waits little
/// longer than the effect takes, rarely enough not to load a 2-core machine.
const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it holds; panics after `within`, naming `what` was
/// awaited (the condition as a reader of the failure should see it).
pub async fn eventually<F, Fut>(what: &str, within: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !holds_within(within, check).await {
        panic!("timed out after {within:?} waiting for {what}");
    }
}

/// Polls `check` until it holds or `within` passes; says whether it held.
/// For the rare test where not holding is also an answer.
pub async fn holds_within<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
