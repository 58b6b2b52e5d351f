//! Batching: lines gathered into POSTs of `VICTORIAMETRICS_BATCH_SIZE`
//! lines, a few under way at once, retried with capped exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::retry::Retry;
use super::{Sink, SinkError};
use crate::model::render::write_line;
use crate::model::{Sample, Scale};

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

/// Batches posted at once. VictoriaMetrics answers each in a fraction of a
/// millisecond; waiting for every answer before posting the next left the
/// exporter and VictoriaMetrics each idle half the time. More is not
/// cheaper: at 16 the exporter slept a third less often but used a fifth
/// more CPU for the same export (session 11, `perf stat`, 4 runs each).
pub const IN_FLIGHT: usize = 4;

/// How a posted batch ended.
struct Sent {
    lines: u64,
    ids: Vec<i64>,
    /// `Ok(None)`: acknowledged; `Ok(Some(answer))`: refused for good.
    result: Result<Option<String>, BatchError>,
    /// A failed attempt may have stored part of it.
    ambiguous: bool,
    retries: u64,
}

/// What every batch's retry loop shares.
#[derive(Clone)]
struct Delivery {
    sink: Arc<Sink>,
    retry: Retry,
    /// Held by the batch that is retrying: during an outage one batch
    /// probes VictoriaMetrics with backoff, the others wait behind it.
    retry_gate: Arc<tokio::sync::Mutex<()>>,
}

impl Delivery {
    async fn post(self, body: Bytes, lines: u64, ids: Vec<i64>) -> Sent {
        let mut sent = Sent {
            lines,
            ids,
            result: Ok(None),
            ambiguous: false,
            retries: 0,
        };
        let mut gate = None;
        let mut attempt = 0u32;
        loop {
            let e = match self.sink.import(body.clone()).await {
                Ok(()) => return sent,
                Err(e) => e,
            };
            if e.is_retryable() && self.retry.allows(attempt) {
                if e.may_have_landed() {
                    // Part of the batch may be stored: a resend could
                    // duplicate samples, so these series get rewritten.
                    sent.ambiguous = true;
                }
                if gate.is_none() {
                    match self.retry_gate.clone().try_lock_owned() {
                        Ok(g) => gate = Some(g),
                        Err(_) => {
                            // Another batch was retrying: it has seen the end
                            // of the outage (or given up); try again at once.
                            gate = Some(self.retry_gate.clone().lock_owned().await);
                            sent.retries += 1;
                            crate::telemetry::global().retry();
                            attempt = attempt.saturating_add(1);
                            continue;
                        }
                    }
                }
                tracing::warn!(error = %e, attempt = attempt + 1, "batch not delivered; retrying");
                sent.retries += 1;
                crate::telemetry::global().retry();
                if self.retry.wait(attempt).await.is_err() {
                    sent.result = Err(BatchError::Cancelled);
                    return sent;
                }
                attempt = attempt.saturating_add(1);
                continue;
            }
            if e.is_rejection() {
                // Refused for good: retrying the same lines cannot help.
                // The series are recorded as rejected and the pass goes on.
                tracing::warn!(error = %e, series = sent.ids.len(), "VictoriaMetrics rejected a batch; its series are skipped until their rows change");
                sent.result = Ok(Some(e.to_string()));
                return sent;
            }
            if e.may_have_landed() {
                sent.ambiguous = true;
            }
            if e.is_auth() {
                tracing::error!(error = %e, check = self.sink.auth_variables(), "VictoriaMetrics refused the credentials");
            }
            if e.is_wrong_endpoint() {
                tracing::error!(error = %e, "no import endpoint there: VICTORIAMETRICS_URL is the base /api/v1/import/prometheus is appended to (http://host:8428, or vminsert's http://host:8480/insert/<tenant>/prometheus)");
            }
            sent.result = Err(e.into());
            return sent;
        }
    }
}

/// Sends lines in batches, up to [`IN_FLIGHT`] at a time; tells which lines
/// were acknowledged (in order: a line counts once every batch up to its
/// own is) and which series went through a retry that may have duplicated
/// samples.
pub struct Batcher {
    delivery: Delivery,
    size: usize,
    buf: Vec<u8>,
    lines: usize,
    ids: Vec<i64>,
    pushed: u64,
    acked: u64,
    in_flight: VecDeque<JoinHandle<Sent>>,
    tainted: HashSet<i64>,
    rejected: HashMap<i64, String>,
    /// Batches delivered.
    pub batches_sent: u64,
    /// Retries made.
    pub retries: u64,
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // A pass that ends early leaves its series pending; posts still
        // under way must not outlive it (the next pass deletes them).
        for task in &self.in_flight {
            task.abort();
        }
    }
}

impl Batcher {
    /// A batcher of `size` lines per POST, retrying as `retry` says.
    pub fn new(sink: &Sink, retry: Retry, size: usize) -> Self {
        Self {
            delivery: Delivery {
                sink: Arc::new(sink.clone()),
                retry,
                retry_gate: Arc::new(tokio::sync::Mutex::new(())),
            },
            size,
            buf: Vec::with_capacity(size * 96),
            lines: 0,
            ids: Vec::new(),
            pushed: 0,
            acked: 0,
            in_flight: VecDeque::with_capacity(IN_FLIGHT),
            tainted: HashSet::new(),
            rejected: HashMap::new(),
            batches_sent: 0,
            retries: 0,
        }
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

    /// Adds the lines of series `id`; posts each batch as it fills.
    pub async fn push(
        &mut self,
        id: i64,
        head: &str,
        scale: Scale,
        samples: impl IntoIterator<Item = Sample>,
    ) -> Result<(), BatchError> {
        for s in samples {
            if self.ids.last() != Some(&id) {
                self.ids.push(id);
            }
            write_line(&mut self.buf, head, s.value, scale, s.ts);
            self.lines += 1;
            self.pushed += 1;
            if self.lines >= self.size {
                self.post().await?;
            }
        }
        Ok(())
    }

    /// Posts what is buffered and waits for every batch's answer.
    pub async fn flush(&mut self) -> Result<(), BatchError> {
        if self.lines > 0 {
            self.start_post();
        }
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Posts the buffer, first waiting for the oldest batch when as many
    /// as [`IN_FLIGHT`] are under way.
    async fn post(&mut self) -> Result<(), BatchError> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.settle_oldest().await?;
        }
        self.start_post();
        Ok(())
    }

    fn start_post(&mut self) {
        let body = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.size * 96),
        ));
        let lines = std::mem::take(&mut self.lines) as u64;
        let ids = std::mem::take(&mut self.ids);
        let delivery = self.delivery.clone();
        self.in_flight
            .push_back(tokio::spawn(delivery.post(body, lines, ids)));
    }

    async fn settle_oldest(&mut self) -> Result<(), BatchError> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        // A task ends by itself unless the batcher aborted it (on drop).
        let sent = task.await.map_err(|_| BatchError::Cancelled)?;
        self.retries += sent.retries;
        if sent.ambiguous {
            self.tainted.extend(sent.ids.iter().copied());
        }
        match sent.result? {
            None => crate::telemetry::global().batch_sent(sent.lines),
            Some(answer) => {
                // Counted as a batch, not as samples sent.
                crate::telemetry::global().batch_sent(0);
                for id in &sent.ids {
                    self.rejected.insert(*id, answer.clone());
                }
            }
        }
        self.batches_sent += 1;
        self.acked += sent.lines;
        Ok(())
    }
}
