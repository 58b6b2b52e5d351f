//! Batching: lines gathered into POSTs of `VICTORIAMETRICS_BATCH_SIZE`
//! lines, sent in order, retried with capped exponential backoff.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::contract::render::write_line;
use crate::contract::Sample;
use crate::sink::{Sink, SinkError};

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// VictoriaMetrics refused it for good (or shutdown interrupted the retries).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Shutdown was requested while waiting to retry.
    #[error("stopped while retrying a batch")]
    Cancelled,
}

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

/// Sends lines in batches, in order; tells which lines were acknowledged and
/// which series went through a retry that may have duplicated samples.
pub struct Batcher<'a> {
    sink: &'a Sink,
    cancel: &'a CancellationToken,
    size: usize,
    max_backoff: Duration,
    buf: Vec<u8>,
    lines: usize,
    ids: Vec<i64>,
    pushed: u64,
    acked: u64,
    tainted: HashSet<i64>,
    rejected: HashMap<i64, String>,
    /// Batches delivered.
    pub batches_sent: u64,
    /// Retries made.
    pub retries: u64,
    attempt_limit: Option<u32>,
}

impl<'a> Batcher<'a> {
    /// A batcher of `size` lines per POST.
    pub fn new(
        sink: &'a Sink,
        cancel: &'a CancellationToken,
        size: usize,
        max_backoff: Duration,
    ) -> Self {
        Self {
            sink,
            cancel,
            size,
            max_backoff,
            buf: Vec::with_capacity(size * 96),
            lines: 0,
            ids: Vec::new(),
            pushed: 0,
            acked: 0,
            tainted: HashSet::new(),
            rejected: HashMap::new(),
            batches_sent: 0,
            retries: 0,
            attempt_limit: None,
        }
    }

    /// Gives up on a batch after this many failed attempts (`once`); the
    /// daemon retries for as long as it runs.
    pub fn with_attempt_limit(mut self, limit: Option<u32>) -> Self {
        self.attempt_limit = limit;
        self
    }

    /// Lines pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Lines acknowledged by VictoriaMetrics so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Series of which VictoriaMetrics rejected lines.
    pub fn rejected_series(&self) -> u64 {
        self.rejected.len() as u64
    }

    /// VictoriaMetrics' answer if it rejected a batch holding lines of this series.
    pub fn rejection(&self, id: i64) -> Option<&String> {
        self.rejected.get(&id)
    }

    /// Whether a line of this series went through an ambiguous failure.
    pub fn is_tainted(&self, id: i64) -> bool {
        self.tainted.contains(&id)
    }

    /// Adds the lines of series `id`; sends each batch as it fills.
    pub async fn push(
        &mut self,
        id: i64,
        head: &str,
        samples: impl IntoIterator<Item = Sample>,
    ) -> Result<(), BatchError> {
        for s in samples {
            if self.ids.last() != Some(&id) {
                self.ids.push(id);
            }
            write_line(&mut self.buf, head, s.value, s.ts);
            self.lines += 1;
            self.pushed += 1;
            if self.lines >= self.size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Sends what is buffered.
    pub async fn flush(&mut self) -> Result<(), BatchError> {
        if self.lines == 0 {
            return Ok(());
        }
        let body = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.size * 96),
        ));
        let mut attempt = 0u32;
        loop {
            match self.sink.import(body.clone()).await {
                Ok(()) => break,
                Err(e)
                    if e.is_retryable() && self.attempt_limit.is_none_or(|l| attempt + 1 < l) =>
                {
                    if e.may_have_landed() {
                        // Part of the batch may be stored: a resend could
                        // duplicate samples, so these series get rewritten.
                        self.tainted.extend(self.ids.iter().copied());
                    }
                    let delay = backoff(attempt, self.max_backoff);
                    tracing::warn!(error = %e, retry_in = ?delay, attempt = attempt + 1, "batch not delivered; retrying");
                    self.retries += 1;
                    crate::telemetry::global().retry();
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(BatchError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) if e.is_rejection() => {
                    // Refused for good: retrying the same lines cannot help.
                    // The series are recorded as rejected and the pass goes on.
                    tracing::warn!(error = %e, series = self.ids.len(), "VictoriaMetrics rejected a batch; its series are skipped until their rows change");
                    let answer = e.to_string();
                    for id in &self.ids {
                        self.rejected.insert(*id, answer.clone());
                    }
                    // Counted as a batch, not as samples sent.
                    crate::telemetry::global().batch_sent(0);
                    self.finish_batch();
                    return Ok(());
                }
                Err(e) => {
                    if e.may_have_landed() {
                        self.tainted.extend(self.ids.iter().copied());
                    }
                    if e.is_auth() {
                        tracing::error!(error = %e, "VictoriaMetrics refused the credentials (VICTORIAMETRICS_USERNAME/VICTORIAMETRICS_PASSWORD)");
                    }
                    if e.is_wrong_endpoint() {
                        tracing::error!(error = %e, "no import endpoint there: VICTORIAMETRICS_URL is the base /api/v1/import/prometheus is appended to (http://host:8428, or vminsert's http://host:8480/insert/<tenant>/prometheus)");
                    }
                    return Err(e.into());
                }
            }
        }
        crate::telemetry::global().batch_sent(self.lines as u64);
        self.finish_batch();
        Ok(())
    }

    fn finish_batch(&mut self) {
        self.batches_sent += 1;
        self.acked += self.lines as u64;
        self.lines = 0;
        self.ids.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, cap);
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << attempt.min(16))
                .min(cap);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(0, cap) <= Duration::from_millis(500));
    }
}
