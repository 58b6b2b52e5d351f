//! The one retry policy: how long to wait before the next try, when to give
//! up, and shutdown interrupting the wait. Batches, deletes and the daemon's
//! start all retry through it.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The delay before retry number `attempt` (0-based): doubling from 500 ms
/// up to `cap`, with full jitter so that replicas do not retry in step.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let exp = Duration::from_millis(500).saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    // Jitter from the clock's low bits is enough to spread retries.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
    ceiling.mul_f64(fraction)
}

/// Shutdown was requested while waiting to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped while waiting to retry")]
pub struct Cancelled;

/// How to retry: capped exponential backoff, without end (the daemon:
/// PostgreSQL is the buffer) or for a number of attempts (`once`), and
/// interrupted by shutdown.
#[derive(Debug, Clone)]
pub struct Retry {
    cap: Duration,
    attempt_limit: Option<u32>,
    cancel: CancellationToken,
}

impl Retry {
    /// Retries without end, waiting at most `cap`, until `cancel`.
    pub fn new(cap: Duration, cancel: CancellationToken) -> Self {
        Self {
            cap,
            attempt_limit: None,
            cancel,
        }
    }

    /// Gives up after `limit` failed attempts, if given.
    pub fn with_attempt_limit(mut self, limit: Option<u32>) -> Self {
        self.attempt_limit = limit;
        self
    }

    /// Whether another try may follow failed attempt number `attempt`
    /// (0-based).
    pub fn allows(&self, attempt: u32) -> bool {
        self.attempt_limit
            .is_none_or(|l| attempt.saturating_add(1) < l)
    }

    /// Waits before retry number `attempt` (0-based), unless shutdown
    /// comes first.
    pub async fn wait(&self, attempt: u32) -> Result<(), Cancelled> {
        self.sleep(backoff(attempt, self.cap)).await
    }

    /// Sleeps `delay`, unless shutdown comes first.
    pub async fn sleep(&self, delay: Duration) -> Result<(), Cancelled> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Whether shutdown was requested.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` says is
    /// final, runs out of attempts, or shutdown interrupts the wait; each
    /// retry is logged as `what` and counted by `on_retry`.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        retryable: impl Fn(&E) -> bool,
        mut on_retry: impl FnMut(),
        mut op: F,
    ) -> Result<T, Stopped<E>>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && self.allows(attempt) => {
                    let delay = backoff(attempt, self.cap);
                    tracing::warn!(error = %e, retry_in = ?delay, attempt = attempt + 1, "{what} failed; retrying");
                    on_retry();
                    attempt = attempt.saturating_add(1);
                    self.sleep(delay).await.map_err(|_| Stopped::Cancelled)?;
                }
                Err(e) => return Err(Stopped::Failed(e)),
            }
        }
    }
}

/// Why [`Retry::run`] stopped without success.
#[derive(Debug)]
pub enum Stopped<E> {
    /// The last attempt's error: final, or the attempts ran out.
    Failed(E),
    /// Shutdown interrupted the wait.
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(4);
        for attempt in 0..20 {
            let d = backoff(attempt, cap);
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << attempt.min(16))
                .min(cap);
            assert!(d <= ceiling && d >= ceiling / 2, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn an_attempt_limit_counts_the_first_try() {
        let r = Retry::new(Duration::from_secs(1), CancellationToken::new());
        assert!(r.allows(1_000_000));
        let r = r.with_attempt_limit(Some(3));
        assert!(r.allows(0) && r.allows(1) && !r.allows(2));
    }

    #[tokio::test]
    async fn a_final_error_stops_at_once_and_a_passing_one_is_retried() {
        let r = Retry::new(Duration::from_millis(1), CancellationToken::new());
        let mut tries = 0;
        let out: Result<u32, Stopped<String>> = r
            .run(
                "test",
                |e: &String| e == "again",
                || {},
                || {
                    tries += 1;
                    let n = tries;
                    async move {
                        match n {
                            1 | 2 => Err("again".to_string()),
                            _ => Ok(n),
                        }
                    }
                },
            )
            .await;
        assert!(matches!(out, Ok(3)));
        let out: Result<(), Stopped<String>> = r
            .run("test", |_| false, || {}, || async { Err("no".to_string()) })
            .await;
        assert!(matches!(out, Err(Stopped::Failed(e)) if e == "no"));
    }

    #[tokio::test]
    async fn shutdown_interrupts_the_wait() {
        let cancel = CancellationToken::new();
        let r = Retry::new(Duration::from_secs(60), cancel.clone());
        cancel.cancel();
        assert_eq!(r.wait(10).await, Err(Cancelled));
    }
}
