//! Test harness: real `cairn-master` and `cairn-agent` processes on loopback,
//! an SDK framework that records its events, and waits with deadlines.
//!
//! Everything a test starts is cleaned up when its guard drops, also when the
//! test fails: processes are killed, and executors and tasks (found by their
//! sandbox paths) are swept up, then the temporary directories removed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod cluster;
pub mod framework;
pub mod http;
pub mod netns;
pub mod process;
pub mod workload;
pub mod zookeeper;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or fails the test with `what` after
/// `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
