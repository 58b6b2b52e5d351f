//! The write stage and its crash-safety protocol: changed series marked
//! pending before anything is sent; rewritten ones deleted, once
//! VictoriaMetrics has indexed their last writes ([`DELETE_SETTLE`]),
//! before any of their lines is sent, so that a delete never removes this
//! pass's lines; lines posted in pipelined batches; a series recorded once
//! all its lines are acknowledged, and left pending (rewritten by the next
//! pass) when a batch failed after VictoriaMetrics may have stored part of
//! it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Exporter, Outcome, PassError};
use crate::model::{Family, Series};
use crate::state::{chunks_of, Done, Plan, SeriesState};
use crate::verify::Expected;
use crate::vm::batch::Batcher;

/// How long VictoriaMetrics may take to make a newly written series visible
/// to `delete_series`: a delete issued sooner after the series' last write
/// can miss it and leave duplicates, so deletes wait until this long after
/// the last write. Measured (a new series written, deleted d ms later,
/// counted 10 s after; 5 tries each): 1.79 and a v1.150 single node missed
/// it up to d = 1500 ms and never from 2000 ms; a v1.150 cluster (two
/// vmstorage, replication 2, vminsert buffering) 9 times in 30 at 2000 ms,
/// never from 2500 ms. 5 s keeps a margin over the cluster.
pub const DELETE_SETTLE: Duration = Duration::from_secs(5);

/// How many acknowledged series to gather before recording them.
const COMMIT_EVERY: usize = 64;

/// Selectors per delete request.
const DELETE_CHUNK: usize = 100;

/// Writes a pass's changed series, group by group.
pub(super) struct Writer<'a> {
    exporter: &'a Exporter,
    family: Family,
    known: &'a HashMap<String, SeriesState>,
    batcher: Batcher,
    /// Series whose lines are pushed, with the count of lines pushed up to
    /// their last: recorded once that many are acknowledged.
    unacked: Vec<(u64, Done)>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        exporter: &'a Exporter,
        family: Family,
        known: &'a HashMap<String, SeriesState>,
    ) -> Self {
        let batcher = Batcher::new(
            &exporter.sink,
            exporter.retry.clone(),
            exporter.config.vm.batch_size.get(),
        );
        Self {
            exporter,
            family,
            known,
            batcher,
            unacked: Vec::new(),
        }
    }

    /// Lines acknowledged so far.
    pub(super) fn acked(&self) -> u64 {
        self.batcher.acked()
    }

    /// Writes a group's changed series: marks them pending, deletes those
    /// rewritten, then pushes their lines.
    pub(super) async fn write(
        &mut self,
        work: Vec<(Series, Plan)>,
        outcome: &mut Outcome,
    ) -> Result<(), PassError> {
        if work.is_empty() {
            return Ok(());
        }
        let ex = self.exporter;
        let mut ids = Vec::with_capacity(work.len());
        for (series, _) in &work {
            ids.push(ex.state.mark_pending(self.family, &series.selector).await?);
        }
        let rewrites: Vec<&str> = work
            .iter()
            .filter(|(_, p)| *p == Plan::Rewrite)
            .map(|(s, _)| s.selector.as_str())
            .collect();
        ex.settle(rewrites.iter().filter_map(|sel| self.known.get(*sel)))
            .await?;
        ex.delete(&rewrites).await?;
        let _stamp = ImportStamp(&ex.last_import);
        for ((series, plan), id) in work.into_iter().zip(ids) {
            ex.check_cancel()?;
            let done = self.send(&series, plan, id, outcome).await?;
            self.unacked.push((self.batcher.pushed(), done));
            outcome.left_pending += self.commit_acked(false).await?;
        }
        Ok(())
    }

    /// Sends what is left, records every acknowledged series and fills in
    /// the outcome's counts of lines.
    pub(super) async fn finish(mut self, outcome: &mut Outcome) -> Result<(), PassError> {
        {
            let _stamp = ImportStamp(&self.exporter.last_import);
            self.batcher.flush().await?;
        }
        outcome.left_pending += self.commit_acked(true).await?;
        if self.batcher.acked() > 0 {
            self.exporter.sink.reset_query_cache().await;
        }
        outcome.lines = self.batcher.acked();
        outcome.rejected = self.batcher.rejected_series();
        outcome.batches = self.batcher.batches_sent;
        Ok(())
    }

    /// Pushes the lines of one changed series; returns what to record once
    /// they are all acknowledged.
    async fn send(
        &mut self,
        series: &Series,
        plan: Plan,
        id: i64,
        outcome: &mut Outcome,
    ) -> Result<Done, PassError> {
        let tz = self.exporter.config.timezone;
        let chunks = chunks_of(&series.samples, tz);
        outcome.expect.push((
            series.key.clone(),
            Expected::of(&series.samples, series.scale, outcome.expect_at),
        ));
        let (replace, chunks) = match &plan {
            Plan::Append(after) | Plan::Resend { after, .. } => {
                let samples = series.samples.iter().copied().filter(|s| plan.sends(s, tz));
                self.batcher
                    .push(id, &series.head, series.scale, samples)
                    .await?;
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
                self.batcher
                    .push(
                        id,
                        &series.head,
                        series.scale,
                        series.samples.iter().copied(),
                    )
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

    /// Records the series whose lines are all acknowledged (in groups, or
    /// all of them at the end of the pass). A series that went through an
    /// ambiguous retry stays pending, to be rewritten: returns how many did.
    async fn commit_acked(&mut self, all: bool) -> Result<u64, PassError> {
        let acked = self.batcher.acked();
        let ready = self
            .unacked
            .iter()
            .take_while(|(last, _)| *last <= acked)
            .count();
        if ready == 0 || (!all && ready < COMMIT_EVERY) {
            return Ok(0);
        }
        let batcher = &self.batcher;
        let (tainted, mut done): (Vec<Done>, Vec<Done>) = self
            .unacked
            .drain(..ready)
            .map(|(_, d)| d)
            .partition(|d| batcher.is_tainted(d.id));
        for d in &mut done {
            d.rejected = batcher.rejection(d.id).cloned();
        }
        self.exporter.ensure_lock().await?;
        self.exporter.state.commit(&done).await?;
        Ok(tainted.len() as u64)
    }
}

impl Exporter {
    /// When `VICTORIAMETRICS_LABELS` changed since the state was written,
    /// the old series' selectors may match the new series: delete them all
    /// first, and rewrite everything.
    pub async fn prepare(&self) -> Result<(), PassError> {
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
        self.delete_recorded(old.iter().map(|(sel, s)| (sel.as_str(), s)))
            .await?;
        self.state.set_meta("labels", &labels).await?;
        Ok(())
    }

    /// Deletes series the state records and forgets them: marked pending
    /// first, so that a crash in between deletes them again.
    pub(super) async fn delete_recorded<'s>(
        &self,
        series: impl Iterator<Item = (&'s str, &'s SeriesState)> + Clone,
    ) -> Result<(), PassError> {
        for (_, s) in series.clone() {
            self.state.mark_pending_id(s.id).await?;
        }
        self.settle(series.clone().map(|(_, s)| s)).await?;
        let selectors: Vec<&str> = series.clone().map(|(sel, _)| sel).collect();
        self.delete(&selectors).await?;
        for (selector, s) in series {
            self.state.forget(s.id).await?;
            tracing::debug!(series = %selector, "deleted a series");
        }
        Ok(())
    }

    /// Waits until a delete cannot miss recent writes of these series.
    async fn settle<'s>(
        &self,
        deleting: impl Iterator<Item = &'s SeriesState>,
    ) -> Result<(), PassError> {
        let now = Instant::now();
        let mine = self.last_import.get();
        let others = self.others_until.get();
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
            self.retry.sleep(d - now).await?;
        }
        Ok(())
    }

    /// Deletes series, a hundred selectors a request, retrying as batches
    /// do: a delete is idempotent. Checks the lock first.
    pub(super) async fn delete(&self, selectors: &[&str]) -> Result<(), PassError> {
        if selectors.is_empty() {
            return Ok(());
        }
        self.ensure_lock().await?;
        for chunk in selectors.chunks(DELETE_CHUNK) {
            self.check_cancel()?;
            self.retry
                .run(
                    "delete",
                    |e: &crate::vm::SinkError| e.is_retryable(),
                    || crate::telemetry::global().retry(),
                    || self.sink.delete_series(chunk),
                )
                .await
                .map_err(|stop| match stop {
                    crate::vm::retry::Stopped::Failed(e) => PassError::Sink(e),
                    crate::vm::retry::Stopped::Cancelled => PassError::Cancelled,
                })?;
        }
        Ok(())
    }
}

/// Records when this process last posted lines, however sending ends.
struct ImportStamp<'a>(&'a std::cell::Cell<Option<Instant>>);

impl Drop for ImportStamp<'_> {
    fn drop(&mut self) {
        self.0.set(Some(Instant::now()));
    }
}
