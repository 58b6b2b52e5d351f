//! One export pass over a family: read, compare, delete, send, acknowledge.
//!
//! A pass reads the family's rows once, one PDL's series at a time (all
//! Tempo or EcoWatt series at once), and for each group:
//!
//! 1. **Compare.** Every series is computed from the rows and its per-day
//!    summaries compared with the state's ([`state::plan`]): unchanged (no
//!    cost), new days only (append them), or anything else (rewrite: delete
//!    the series in VictoriaMetrics and send it whole, as VictoriaMetrics
//!    cannot overwrite a sample).
//! 2. **Delete.** The changed series are marked pending in PostgreSQL, then
//!    the rewritten ones are deleted in VictoriaMetrics, before any of their
//!    lines is sent, so that a delete never removes this pass's lines.
//! 3. **Send.** Their lines are posted in batches; a series' pending mark
//!    is cleared once all its lines are acknowledged. A crash or a failed
//!    batch leaves it pending, and the next pass rewrites it: the mirror is
//!    exact again after any interruption.
//!
//! Series no row produces any more (stale) are deleted at the end.
//!
//! Before its writes, a pass reads the family back from VictoriaMetrics and
//! compares it series by series (`read_back`); what a pass reports, or why
//! it did not complete, is in `outcome`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::batch::{backoff, Batcher};
use crate::config::Config;
use crate::model::{Family, Report, Series};
use crate::progress::{Display, Progress};
use crate::series::SeriesReader;
use crate::sink::Sink;
use crate::source::Source;
use crate::state::{self, chunks_of, Done, Plan, SeriesState, State};
use crate::verify::{self, Expected};

mod outcome;
mod read_back;

pub use outcome::{ExportError, Outcome};

/// How long VictoriaMetrics may take to make a newly written series visible
/// to `delete_series`: a delete issued sooner after the series' last write
/// can miss it and leave duplicates, so deletes wait until this long after
/// the last write. Measured (a new series written, deleted d ms later,
/// counted 10 s after; 5 tries each): 1.79 and a v1.150 single node missed
/// it up to d = 1500 ms and never from 2000 ms; a v1.150 cluster (two
/// vmstorage, replication 2, vminsert buffering) 9 times in 30 at 2000 ms,
/// never from 2500 ms. 5 s keeps a margin over the cluster.
pub const DELETE_SETTLE: Duration = Duration::from_secs(5);

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
        let selectors: Vec<&str> = old.iter().map(|(sel, _)| sel.as_str()).collect();
        self.delete(&selectors).await?;
        for (_, s) in &old {
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
        crate::telemetry::global().pass(&outcome);
        Ok(outcome)
    }

    async fn pass(&self, family: Family) -> Result<Outcome, ExportError> {
        let contract = self.config.contract(chrono::Utc::now().timestamp_millis());
        let known = self.state.load(family).await?;
        let mut outcome = Outcome {
            expect_at: contract.cutoff_ms,
            ..Outcome::default()
        };
        let mut report = Report::default();
        let mut seen: HashSet<String> = HashSet::with_capacity(known.len());
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
        .with_attempt_limit(self.attempt_limit);
        let mut unacked: Vec<(u64, Done)> = Vec::new();
        let mut progress = Progress::new(
            family,
            self.source.estimated_rows(family).await.unwrap_or(0),
            self.display,
        );
        let _stamp = ImportStamp(&self.last_import);

        // What VictoriaMetrics holds now, to compare each series with.
        let observation = self.observe(family, &contract, &known).await;
        outcome.read_back = observation.is_some();
        if observation.is_none() {
            // Counted as not read back, so that a later pass reads back.
            outcome.unverified += 1;
        }
        let mut seen_keys: HashSet<String> = HashSet::new();

        // One PDL's series at a time (all of them for Tempo and EcoWatt):
        // compare, then write what changed while the next group is read.
        let mut reader = SeriesReader::new(&self.source, family);
        while let Some(group) = reader.next(&contract, &mut report).await? {
            let mut work: Vec<(Series, Plan)> = Vec::new();
            for series in group {
                self.check_cancel()?;
                let old = known.get(&series.selector);
                let mut plan = state::plan(old, &series.samples, contract.tz);
                if let Some(obs) = &observation {
                    seen_keys.insert(series.key.clone());
                    plan = self
                        .check_read_back(&series, old, plan, obs, &mut outcome)
                        .await?;
                }
                seen.insert(series.selector.clone());
                if plan != Plan::Unchanged {
                    work.push((series, plan));
                }
            }
            if !work.is_empty() {
                self.write_group(
                    family,
                    work,
                    &known,
                    &mut batcher,
                    &mut unacked,
                    &mut outcome,
                )
                .await?;
            }
            progress.update(reader.rows_read(), batcher.acked());
        }
        batcher.flush().await?;
        progress.update(reader.rows_read(), batcher.acked());
        outcome.left_pending += commit_acked(self, &mut unacked, &batcher, true).await?;
        if batcher.acked() > 0 {
            self.sink.reset_query_cache().await;
        }
        outcome.lines = batcher.acked();
        outcome.rejected = batcher.rejected_series();
        outcome.batches = batcher.batches_sent;
        outcome.skipped = report.skipped.len() as u64;
        outcome.next_held_back = report.next_held_back;
        for skip in &report.skipped {
            crate::telemetry::global().row_skipped(family, skip.table);
            tracing::warn!(table = skip.table, row = %skip.row, reason = %skip.reason, "row skipped");
        }

        // Series no row produces any more.
        let stale: Vec<(&String, &SeriesState)> = known
            .iter()
            .filter(|(sel, _)| !seen.contains(*sel))
            .collect();
        // And series of the exporter's that VictoriaMetrics holds but neither
        // the rows nor the state know: left by an older volume restored, or
        // by a state cleared by hand.
        if let Some(obs) = &observation {
            let stale_keys: HashSet<String> = stale
                .iter()
                .filter_map(|(sel, _)| verify::key_of_selector(sel))
                .collect();
            let unknown: Vec<&str> = obs
                .series
                .iter()
                .filter(|(key, _)| !seen_keys.contains(*key) && !stale_keys.contains(*key))
                .map(|(_, o)| o.selector.as_str())
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(
                    family = family.as_str(),
                    series = unknown.len(),
                    "read-back: VictoriaMetrics holds series no row produces; deleting them"
                );
                outcome.samples_extra += obs
                    .series
                    .values()
                    .filter(|o| unknown.contains(&o.selector.as_str()))
                    .map(|o| o.count)
                    .sum::<u64>();
                outcome.repaired += unknown.len() as u64;
                self.ensure_lock().await?;
                self.delete(&unknown).await?;
                outcome.deleted += unknown.len() as u64;
            }
        }
        if !stale.is_empty() {
            for (_, s) in &stale {
                self.state.mark_pending_id(s.id).await?;
            }
            self.settle(stale.iter().map(|(_, s)| *s)).await?;
            self.ensure_lock().await?;
            let selectors: Vec<&str> = stale.iter().map(|(sel, _)| sel.as_str()).collect();
            self.delete(&selectors).await?;
            for (selector, s) in &stale {
                self.state.forget(s.id).await?;
                tracing::debug!(series = %selector, "deleted a series no row produces");
            }
            outcome.deleted += stale.len() as u64;
        }
        Ok(outcome)
    }

    /// Writes a group's changed series: marks them pending, deletes those
    /// rewritten (before any of their lines is sent, so that a delete never
    /// removes this pass's lines), then pushes their lines.
    async fn write_group(
        &self,
        family: Family,
        work: Vec<(Series, Plan)>,
        known: &HashMap<String, SeriesState>,
        batcher: &mut Batcher,
        unacked: &mut Vec<(u64, Done)>,
        outcome: &mut Outcome,
    ) -> Result<(), ExportError> {
        let mut ids = Vec::with_capacity(work.len());
        for (series, _) in &work {
            ids.push(self.state.mark_pending(family, &series.selector).await?);
        }
        let rewrites: Vec<&str> = work
            .iter()
            .filter(|(_, p)| *p == Plan::Rewrite)
            .map(|(s, _)| s.selector.as_str())
            .collect();
        self.settle(rewrites.iter().filter_map(|sel| known.get(*sel)))
            .await?;
        self.ensure_lock().await?;
        self.delete(&rewrites).await?;
        for ((series, plan), id) in work.into_iter().zip(ids) {
            self.check_cancel()?;
            let done = self.send(&series, plan, id, batcher, outcome).await?;
            unacked.push((batcher.pushed(), done));
            outcome.left_pending += commit_acked(self, unacked, batcher, false).await?;
        }
        Ok(())
    }

    /// Pushes the lines of one changed series; returns what to record once
    /// they are all acknowledged.
    async fn send(
        &self,
        series: &Series,
        plan: Plan,
        id: i64,
        batcher: &mut Batcher,
        outcome: &mut Outcome,
    ) -> Result<Done, ExportError> {
        let tz = self.config.timezone;
        let chunks = chunks_of(&series.samples, tz);
        if plan != Plan::Unchanged {
            outcome.expect.push((
                series.key.clone(),
                Expected::of(&series.samples, outcome.expect_at),
            ));
        }
        let (replace, chunks) = match &plan {
            Plan::Append(after) | Plan::Resend { after, .. } => {
                let samples = series.samples.iter().copied().filter(|s| plan.sends(s, tz));
                batcher.push(id, &series.head, samples).await?;
                outcome.appended += 1;
                // The touched buckets now hold all their samples.
                let chunks = chunks
                    .into_iter()
                    .filter(|(b, _)| after.contains_key(b))
                    .collect();
                (false, chunks)
            }
            Plan::Unchanged => (false, Vec::new()),
            Plan::Rewrite => {
                tracing::debug!(series = %series.head, samples = series.samples.len(), "rewriting series");
                batcher
                    .push(id, &series.head, series.samples.iter().copied())
                    .await?;
                outcome.rewritten += 1;
                (true, chunks.into_iter().collect())
            }
        };
        Ok(Done {
            id,
            replace,
            chunks,
            rejected: None,
        })
    }

    /// Deletes series, a hundred selectors a request, retrying as batches
    /// do: a delete is idempotent.
    async fn delete(&self, selectors: &[&str]) -> Result<(), ExportError> {
        for chunk in selectors.chunks(100) {
            self.check_cancel()?;
            self.delete_chunk(chunk).await?;
        }
        Ok(())
    }

    async fn delete_chunk(&self, selectors: &[&str]) -> Result<(), ExportError> {
        let cap = self
            .config
            .poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut attempt = 0u32;
        loop {
            match self.sink.delete_series(selectors).await {
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
    batcher: &Batcher,
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
