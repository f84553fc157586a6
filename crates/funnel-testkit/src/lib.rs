//! Test support shared by the crates' tests and the end-to-end suite: a real, pinned
//! `nats-server` and a fresh PostgreSQL database per test, so tests run in parallel and in any order.

mod nats;
mod pg_server;
mod postgres;

pub use nats::{NatsServer, TestNats, nats_server_binary, test_nats, unique_prefix};
pub use pg_server::PostgresServer;
pub use postgres::{TestDb, test_database};

use std::future::Future;
use std::time::{Duration, Instant};

/// Waits until `check` returns `Some`, polling with a short back-off, and panics with `what`
/// when `deadline` passes first. Tests wait on conditions this way, never on fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
