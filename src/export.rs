//! One export pass over a family: read, compare, delete, send, acknowledge.
//!
//! A pass has three phases:
//!
//! 1. **Plan.** Every series is computed from the rows and its per-day
//!    summaries compared with the state's ([`state::plan`]): unchanged (no
//!    cost), new days only (append them), or anything else (rewrite: delete
//!    the series in VictoriaMetrics and send it whole, as VictoriaMetrics
//!    cannot overwrite a sample). Series no row produces any more are stale.
//! 2. **Delete.** The touched series are marked pending in PostgreSQL, then
//!    the rewritten and stale ones are deleted in VictoriaMetrics, all before
//!    anything is written, so that a delete never removes this pass's lines.
//! 3. **Send.** The touched series are read again and their lines posted in
//!    batches; a series' pending mark is cleared once all its lines are
//!    acknowledged. A crash or a failed batch leaves it pending, and the next
//!    pass rewrites it: the mirror is exact again after any interruption.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::batch::{backoff, BatchError, Batcher};
use crate::config::Config;
use crate::contract::{Contract, Family, Report, Series};
use crate::progress::{Display, Progress};
use crate::series::SeriesReader;
use crate::sink::{Sink, SinkError};
use crate::source::{Source, SourceError};
use crate::state::{self, chunks_of, Done, Plan, SeriesState, State};

/// How long VictoriaMetrics may take to make a newly written series visible
/// to `delete_series` (measured on 1.79: up to about a second). A delete
/// issued sooner after the series' last write can miss it and leave
/// duplicates, so deletes wait until this long after the last write.
pub const DELETE_SETTLE: Duration = Duration::from_secs(3);

/// Why a pass did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// PostgreSQL failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// VictoriaMetrics failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Shutdown interrupted the pass.
    #[error("stopped before the pass completed")]
    Cancelled,
    /// Series are still pending after repeated passes.
    #[error(
        "{0} series could not be written completely; run again when VictoriaMetrics is healthy"
    )]
    LeftPending(u64),
    /// The self-monitoring listener could not start.
    #[error(transparent)]
    Listen(#[from] crate::listener::ListenError),
    /// The export lock's connection dropped during the pass.
    #[error("lost the export lock during the pass; another exporter may have taken over")]
    LostLock,
    /// Another exporter holds the export lock on this database.
    #[error("another exporter is exporting this database (it holds the export lock); stop it or let it do the work")]
    Locked,
}

impl From<BatchError> for ExportError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Sink(e) => ExportError::Sink(e),
            BatchError::Cancelled => ExportError::Cancelled,
        }
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Lines sent.
    pub lines: u64,
    /// Batches sent.
    pub batches: u64,
    /// Series appended to.
    pub appended: u64,
    /// Series deleted and rewritten.
    pub rewritten: u64,
    /// Series deleted because nothing produces them any more.
    pub deleted: u64,
    /// Rows skipped as malformed.
    pub skipped: u64,
    /// Earliest sample held back as too far ahead.
    pub next_held_back: Option<i64>,
    /// Series whose lines VictoriaMetrics rejected for good (a 4xx).
    pub rejected: u64,
    /// Series left pending (a batch failed after VictoriaMetrics may have
    /// stored part of it, or rows changed during the pass): the next pass
    /// must run soon to rewrite them.
    pub left_pending: u64,
}

impl Outcome {
    /// Adds another pass's counts to these.
    pub fn add(&mut self, o: &Outcome) {
        self.lines += o.lines;
        self.batches += o.batches;
        self.appended += o.appended;
        self.rewritten += o.rewritten;
        self.deleted += o.deleted;
        self.skipped += o.skipped;
        self.left_pending += o.left_pending;
        self.rejected += o.rejected;
    }
}

/// Reads the source and keeps VictoriaMetrics equal to it.
pub struct Exporter {
    source: Source,
    state: State,
    sink: Sink,
    config: Config,
    cancel: CancellationToken,
    /// Since when a pending series may have been written by another
    /// process (one that died before this one started, or a replica whose
    /// lock this one took over).
    others_until: Mutex<Instant>,
    last_import: Mutex<Option<Instant>>,
    attempt_limit: Option<u32>,
    lock_pid: Mutex<Option<i32>>,
    display: Display,
}

/// How many acknowledged series to gather before recording them.
const COMMIT_EVERY: usize = 64;

impl Exporter {
    /// An exporter over these endpoints.
    pub fn new(source: Source, sink: Sink, config: Config, cancel: CancellationToken) -> Self {
        let state = State::new(source.pool().clone());
        Self {
            source,
            state,
            sink,
            config,
            cancel,
            others_until: Mutex::new(Instant::now()),
            last_import: Mutex::new(None),
            attempt_limit: None,
            lock_pid: Mutex::new(None),
            display: Display::Logs,
        }
    }

    /// Gives up on a batch after `limit` failed attempts instead of retrying
    /// for as long as the process runs (for `once`).
    pub fn with_attempt_limit(mut self, limit: u32) -> Self {
        self.attempt_limit = Some(limit);
        self
    }

    /// Shows the progress of long sends this way.
    pub fn with_progress(mut self, display: Display) -> Self {
        self.display = display;
        self
    }

    /// Records that this process now holds the export lock through backend
    /// `pid`, and that another process may have been writing until now.
    pub fn took_over(&self, pid: i32) {
        if let Ok(mut t) = self.others_until.lock() {
            *t = Instant::now();
        }
        if let Ok(mut p) = self.lock_pid.lock() {
            *p = Some(pid);
        }
    }

    /// Fails when the export lock this process took was lost.
    async fn ensure_lock(&self) -> Result<(), ExportError> {
        let pid = self.lock_pid.lock().ok().and_then(|p| *p);
        match pid {
            Some(pid) if !self.source.holds_export_lock(pid).await? => Err(ExportError::LostLock),
            _ => Ok(()),
        }
    }

    /// The import endpoint, for logs.
    pub fn sink_url(&self) -> &url::Url {
        self.sink.import_url()
    }

    /// The source, for change detection.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// When `VICTORIAMETRICS_LABELS` changed since the state was written,
    /// the old series' selectors may match the new series: delete them all
    /// first, and rewrite everything.
    pub async fn prepare(&self) -> Result<(), ExportError> {
        let labels = serde_json::to_string(&self.config.labels).unwrap_or_default();
        let recorded = self.state.meta("labels").await?;
        if recorded.as_deref() == Some(labels.as_str()) {
            return Ok(());
        }
        let mut old: Vec<(String, SeriesState)> = Vec::new();
        for family in Family::ALL {
            old.extend(self.state.load(family).await?);
        }
        if !old.is_empty() {
            tracing::info!(
                series = old.len(),
                "VICTORIAMETRICS_LABELS changed: deleting the series written with the old labels"
            );
        }
        for (_, s) in &old {
            self.state.mark_pending_id(s.id).await?;
        }
        self.settle(old.iter().map(|(_, s)| s)).await?;
        self.ensure_lock().await?;
        for (selector, s) in &old {
            self.delete(selector).await?;
            self.state.forget(s.id).await?;
        }
        self.state.set_meta("labels", &labels).await?;
        Ok(())
    }

    /// Waits until a delete cannot miss recent writes of these series.
    async fn settle<'a>(
        &self,
        deleting: impl Iterator<Item = &'a SeriesState>,
    ) -> Result<(), ExportError> {
        let now = Instant::now();
        let mine = self.last_import.lock().map(|t| *t).unwrap_or(None);
        let others = self.others_until.lock().map(|t| *t).unwrap_or(now);
        let mut deadline: Option<Instant> = None;
        let mut later = |d: Instant| deadline = Some(deadline.map_or(d, |old: Instant| old.max(d)));
        for s in deleting {
            if s.pending {
                // Written by a pass that did not complete: this process's
                // last one, a process that died just before this one
                // started, or the replica this one took over from.
                if let Some(t) = mine {
                    later(t + DELETE_SETTLE);
                }
                later(others + DELETE_SETTLE);
            }
            // A recorded series was last written before it was recorded.
            if s.age < DELETE_SETTLE {
                later(now + (DELETE_SETTLE - s.age));
            }
        }
        if let Some(d) = deadline.filter(|d| *d > now) {
            tracing::debug!(wait = ?(d - now), "waiting for VictoriaMetrics to index recent writes before deleting");
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(ExportError::Cancelled),
                _ = tokio::time::sleep_until(d.into()) => {}
            }
        }
        Ok(())
    }

    /// One pass over `family`.
    pub async fn export(&self, family: Family) -> Result<Outcome, ExportError> {
        let outcome = self.pass(family).await?;
        crate::telemetry::global().pass(family, &outcome);
        Ok(outcome)
    }

    async fn pass(&self, family: Family) -> Result<Outcome, ExportError> {
        let contract = Contract::new(
            self.config.timezone,
            &self.config.labels,
            chrono::Utc::now().timestamp_millis(),
        );
        let known = self.state.load(family).await?;
        let mut outcome = Outcome::default();

        // 1. Plan.
        let mut report = Report::default();
        let mut touched: HashMap<String, Plan> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pdls: BTreeSet<String> = BTreeSet::new();
        let mut to_send = 0u64;
        let mut reader = SeriesReader::new(&self.source, family, None);
        while let Some(group) = reader.next(&contract, &mut report).await? {
            for series in group {
                self.check_cancel()?;
                let plan = state::plan(known.get(&series.selector), &series.samples, contract.tz);
                to_send += match &plan {
                    Plan::Unchanged => 0,
                    Plan::Rewrite => series.samples.len() as u64,
                    Plan::Append(_) => series
                        .samples
                        .iter()
                        .filter(|s| plan.sends(s, contract.tz))
                        .count() as u64,
                };
                if plan != Plan::Unchanged {
                    pdls.extend(series.pdl.clone());
                    touched.insert(series.selector.clone(), plan);
                }
                seen.insert(series.selector);
            }
        }
        outcome.skipped = report.skipped.len() as u64;
        outcome.next_held_back = report.next_held_back;
        for skip in &report.skipped {
            tracing::warn!(table = skip.table, row = %skip.row, reason = %skip.reason, "row skipped");
        }
        let stale: Vec<(&String, &SeriesState)> = known
            .iter()
            .filter(|(sel, _)| !seen.contains(*sel))
            .collect();
        if touched.is_empty() && stale.is_empty() {
            return Ok(outcome);
        }

        // 2. Mark pending, then delete what is rewritten or stale.
        let mut ids: HashMap<String, i64> = HashMap::with_capacity(touched.len());
        for selector in touched.keys() {
            ids.insert(
                selector.clone(),
                self.state.mark_pending(family, selector).await?,
            );
        }
        for (_, s) in &stale {
            self.state.mark_pending_id(s.id).await?;
        }
        let rewrites: Vec<&String> = touched
            .iter()
            .filter(|(_, p)| **p == Plan::Rewrite)
            .map(|(s, _)| s)
            .collect();
        self.settle(
            rewrites
                .iter()
                .filter_map(|sel| known.get(*sel))
                .chain(stale.iter().map(|(_, s)| *s)),
        )
        .await?;
        self.ensure_lock().await?;
        for selector in &rewrites {
            self.check_cancel()?;
            self.delete(selector).await?;
        }
        for (selector, s) in &stale {
            self.check_cancel()?;
            self.delete(selector).await?;
            self.state.forget(s.id).await?;
            tracing::debug!(series = %selector, "deleted a series no row produces");
        }
        outcome.deleted = stale.len() as u64;

        // 3. Send.
        let _stamp = ImportStamp(&self.last_import);
        let max_backoff = self
            .config
            .poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut batcher = Batcher::new(
            &self.sink,
            &self.cancel,
            self.config.vm.batch_size.get(),
            max_backoff,
        )
        .with_attempt_limit(self.attempt_limit)
        .with_progress(Progress::new(family, to_send, self.display));
        let mut unacked: Vec<(u64, Done)> = Vec::new();

        let filter = matches!(family, Family::Consumption | Family::Production)
            .then(|| pdls.into_iter().collect());
        let mut reader = SeriesReader::new(&self.source, family, filter);
        let mut again = Report::default();
        while let Some(group) = reader.next(&contract, &mut again).await? {
            for series in group {
                self.check_cancel()?;
                let Some(plan) = touched.remove(&series.selector) else {
                    continue;
                };
                let id = ids[&series.selector];
                match self
                    .send(&series, plan, id, &known, &mut batcher, &mut outcome)
                    .await?
                {
                    Some(done) => unacked.push((batcher.pushed(), done)),
                    None => outcome.left_pending += 1,
                }
                outcome.left_pending += commit_acked(self, &mut unacked, &batcher, false).await?;
            }
        }
        batcher.flush().await?;
        outcome.left_pending += commit_acked(self, &mut unacked, &batcher, true).await?;
        // Touched series whose rows vanished between plan and send.
        outcome.left_pending += touched.len() as u64;
        outcome.lines = batcher.acked();
        outcome.rejected = batcher.rejected_series();
        outcome.batches = batcher.batches_sent;
        Ok(outcome)
    }

    /// Pushes the lines of one touched series; what to record once they are
    /// acknowledged, or `None` to leave the series pending.
    async fn send(
        &self,
        series: &Series,
        plan: Plan,
        id: i64,
        known: &HashMap<String, SeriesState>,
        batcher: &mut Batcher<'_>,
        outcome: &mut Outcome,
    ) -> Result<Option<Done>, ExportError> {
        let tz = self.config.timezone;
        let chunks = chunks_of(&series.samples, tz);
        if plan == Plan::Rewrite {
            tracing::debug!(series = %series.head, samples = series.samples.len(), "rewriting series");
            batcher
                .push(id, &series.head, series.samples.iter().copied())
                .await?;
            outcome.rewritten += 1;
            return Ok(Some(Done {
                id,
                replace: true,
                chunks: chunks.into_iter().collect(),
                rejected: None,
            }));
        }
        // Planned as an append: compare again, as rows may have changed
        // since the plan; a series that now needs a rewrite was not
        // deleted, so it stays pending and the next pass rewrites it.
        let again = state::plan(known.get(&series.selector), &series.samples, tz);
        match &again {
            Plan::Append(after) => {
                let samples: Vec<_> = series
                    .samples
                    .iter()
                    .copied()
                    .filter(|s| again.sends(s, tz))
                    .collect();
                batcher.push(id, &series.head, samples).await?;
                outcome.appended += 1;
                // The touched buckets now hold all their samples.
                let chunks = chunks
                    .into_iter()
                    .filter(|(b, _)| after.contains_key(b))
                    .collect();
                Ok(Some(Done {
                    id,
                    replace: false,
                    chunks,
                    rejected: None,
                }))
            }
            Plan::Unchanged => Ok(Some(Done {
                id,
                replace: false,
                chunks: Vec::new(),
                rejected: None,
            })),
            Plan::Rewrite => Ok(None),
        }
    }

    /// Deletes a series, retrying as batches do: a delete is idempotent.
    async fn delete(&self, selector: &str) -> Result<(), ExportError> {
        let cap = self
            .config
            .poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut attempt = 0u32;
        loop {
            match self.sink.delete_series(selector).await {
                Ok(()) => return Ok(()),
                Err(e)
                    if e.is_retryable() && self.attempt_limit.is_none_or(|l| attempt + 1 < l) =>
                {
                    let delay = backoff(attempt, cap);
                    tracing::warn!(error = %e, retry_in = ?delay, attempt = attempt + 1, "delete not done; retrying");
                    crate::telemetry::global().retry();
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(ExportError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn check_cancel(&self) -> Result<(), ExportError> {
        if self.cancel.is_cancelled() {
            Err(ExportError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Records when this process last posted lines, however the send phase ends.
struct ImportStamp<'a>(&'a Mutex<Option<Instant>>);

impl Drop for ImportStamp<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Some(Instant::now());
        }
    }
}

/// Records the series whose lines are all acknowledged (in groups, or all
/// of them at the end of the pass). A series that went through an ambiguous
/// retry stays pending, to be rewritten: returns how many did.
async fn commit_acked(
    exporter: &Exporter,
    unacked: &mut Vec<(u64, Done)>,
    batcher: &Batcher<'_>,
    all: bool,
) -> Result<u64, ExportError> {
    let acked = batcher.acked();
    let ready = unacked
        .iter()
        .take_while(|(last, _)| *last <= acked)
        .count();
    if ready == 0 || (!all && ready < COMMIT_EVERY) {
        return Ok(0);
    }
    let (tainted, mut done): (Vec<Done>, Vec<Done>) = unacked
        .drain(..ready)
        .map(|(_, d)| d)
        .partition(|d| batcher.is_tainted(d.id));
    for d in &mut done {
        d.rejected = batcher.rejection(d.id).cloned();
    }
    exporter.ensure_lock().await?;
    exporter.state.commit(&done).await?;
    Ok(tainted.len() as u64)
}
