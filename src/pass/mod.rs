//! One pass over a family, read top-down: **read** the rows into series, one
//! PDL's group at a time; **plan** each series against the state and what
//! VictoriaMetrics shows; **write** what changed; **confirm** by reading back.
//!
//! - Read: [`SeriesReader`] streams the family's rows into series.
//! - Plan (`plan`): every series' per-day summaries are compared with the
//!   state's ([`state::plan`]): unchanged (no cost), new days only (append
//!   them), or anything else (rewrite: VictoriaMetrics cannot overwrite a
//!   sample). What VictoriaMetrics holds, read back before any write
//!   (`confirm`), turns the plan into a repair where it differs.
//! - Write ([`write`]): the crash-safety protocol. Changed series are marked
//!   pending, rewritten ones deleted before any of their lines is sent,
//!   lines posted in batches, a series' mark cleared once all its lines are
//!   acknowledged. A crash or a failed batch leaves it pending, and the next
//!   pass rewrites it.
//! - Confirm (`confirm`): series no row produces any more are deleted;
//!   what the pass wrote is left to read back once VictoriaMetrics shows it
//!   ([`Unconfirmed`]), which the daemon and `once` both follow up.
//!
//! The pass records its own counters and logs one line.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::config::Config;
use crate::model::Series;
use crate::model::{Family, Report};
use crate::progress::{Display, Progress};
use crate::series::SeriesReader;
use crate::source::Source;
use crate::state::{self, chunks_of, Plan, SeriesState, Settled, State};
use crate::verify::{self, Observation};
use crate::vm::retry::Retry;
use crate::vm::Sink;

mod confirm;
mod outcome;
mod plan;
mod unread;
mod write;

pub use confirm::{read_back_wait, Shown, Unconfirmed};
pub use outcome::{Outcome, PassError};
pub use write::DELETE_SETTLE;

use unread::Unread;
use write::Writer;

/// Series whose recorded buckets are read from the state at once.
const CHUNKS_READ_AHEAD: usize = 32;

/// Reads the source and keeps VictoriaMetrics equal to it, one pass at a
/// time. Used from one task: its timing notes are plain cells.
pub struct Exporter {
    source: Source,
    state: State,
    sink: Sink,
    config: Config,
    retry: Retry,
    display: Display,
    /// Until when a pending series may have been written by another process
    /// (one that died before this one started, or a replica whose lock this
    /// one took over).
    others_until: Cell<Instant>,
    /// When this process last posted lines.
    last_import: Cell<Option<Instant>>,
    /// The backend holding the export lock, checked before each write.
    lock_pid: Cell<Option<i32>>,
}

impl Exporter {
    /// An exporter over these endpoints, retrying as `retry` says.
    pub fn new(source: Source, sink: Sink, config: Config, retry: Retry) -> Self {
        let state = State::new(source.pool().clone());
        Self {
            source,
            state,
            sink,
            config,
            retry,
            display: Display::Logs,
            others_until: Cell::new(Instant::now()),
            last_import: Cell::new(None),
            lock_pid: Cell::new(None),
        }
    }

    /// Shows the progress of long sends this way.
    pub fn with_progress(mut self, display: Display) -> Self {
        self.display = display;
        self
    }

    /// Records that this process now holds the export lock through backend
    /// `pid`, and that another process may have been writing until now.
    pub fn took_over(&self, pid: i32) {
        self.others_until.set(Instant::now());
        self.lock_pid.set(Some(pid));
    }

    /// The import endpoint, for logs.
    pub fn sink_url(&self) -> &url::Url {
        self.sink.import_url()
    }

    /// The source, for change detection.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// One pass over `family`: read, plan, write, confirm.
    pub async fn export(&self, family: Family) -> Result<Outcome, PassError> {
        let started = Instant::now();
        let contract = self.config.contract(chrono::Utc::now().timestamp_millis());
        let known = self.state.load(family).await?;
        let mut outcome = Outcome {
            expect_at: contract.cutoff_ms,
            ..Outcome::default()
        };
        let mut report = Report::default();

        // What VictoriaMetrics holds now, to compare each series with.
        let observed = self.observe(family, &contract, &known).await;
        outcome.read_back = observed.is_some();
        if observed.is_none() {
            // Counted as not read back, so that a later pass reads back.
            outcome.unverified += 1;
        }

        // The PDLs whose rows did not change since they were last read, and
        // that VictoriaMetrics holds as recorded, are not read again.
        let unread = self
            .unread(family, &contract, &known, observed.as_ref(), &mut outcome)
            .await?;
        let mut seen: HashSet<String> = known
            .keys()
            .filter(|sel| {
                unread.all
                    || verify::parse_selector(sel).is_some_and(|(_, labels)| {
                        labels
                            .iter()
                            .any(|(k, v)| k == "pdl" && unread.pdls.contains(v))
                    })
            })
            .cloned()
            .collect();
        let mut settled: Vec<Settled> = Vec::new();
        let mut writer = Writer::new(self, family, &known);
        let mut progress = Progress::new(
            family,
            self.source.estimated_rows(family).await.unwrap_or(0),
            self.display,
        );
        let mut reader = SeriesReader::new(&self.source, family).only(unread.read.clone());
        while let Some(group) = match unread.all {
            true => None,
            false => reader.next(&contract, &mut report).await?,
        } {
            for series in &group.series {
                seen.insert(series.selector.clone());
            }
            if let Some((pdl, skips)) = group.settled {
                settled.push(Settled {
                    pdl,
                    series: group.series.len() as i32,
                    skips,
                });
            }
            let work = self
                .plan_group(
                    group.series,
                    &known,
                    observed.as_ref(),
                    contract.tz,
                    &mut outcome,
                )
                .await?;
            writer.write(work, &mut outcome).await?;
            progress.update(reader.rows_read(), writer.acked());
        }
        writer.finish(&mut outcome).await?;
        progress.update(reader.rows_read(), outcome.lines);

        self.delete_unproduced(family, &known, &seen, observed.as_ref(), &mut outcome)
            .await?;
        // The pass completed: what it read of each PDL is recorded, and of
        // a family read whole when no row was skipped or held back.
        self.state.record_reads(family, &settled).await?;
        if report.skipped.is_empty() && report.held_back == 0 {
            self.record_whole(family, &unread, seen.len()).await?;
        }
        outcome.rows_read = reader.rows_read();
        self.note_skipped(family, &report, &unread, &mut outcome);
        crate::telemetry::global().pass(&outcome.counts());
        outcome.log(family, started.elapsed());
        Ok(outcome)
    }

    /// Plans each series of a group against what the state records of it
    /// and, when read back, what VictoriaMetrics shows; keeps the changed
    /// ones. The recorded buckets are read a few series at a time, so that
    /// memory stays that of one PDL's series, however many PDLs and years.
    async fn plan_group(
        &self,
        group: Vec<Series>,
        known: &HashMap<String, SeriesState>,
        observed: Option<&Observation>,
        tz: chrono_tz::Tz,
        outcome: &mut Outcome,
    ) -> Result<Vec<(Series, Plan)>, PassError> {
        let ids: Vec<Option<i64>> = group
            .iter()
            .map(|s| known.get(&s.selector).map(|k| k.id))
            .collect();
        let mut work = Vec::new();
        let mut chunks = HashMap::new();
        let mut totals = Vec::new();
        for (i, series) in group.into_iter().enumerate() {
            if i % CHUNKS_READ_AHEAD == 0 {
                let next: Vec<i64> = ids[i..(i + CHUNKS_READ_AHEAD).min(ids.len())]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                chunks = self.state.load_chunks(&next).await?;
            }
            self.check_cancel()?;
            let old = known.get(&series.selector).map(|k| SeriesState {
                chunks: chunks.remove(&k.id).unwrap_or_default(),
                ..k.clone()
            });
            let plan = state::plan(old.as_ref(), &series.samples, tz);
            let plan = match observed {
                Some(obs) => {
                    self.repair(&series, old.as_ref(), plan, obs, outcome)
                        .await?
                }
                None => plan,
            };
            if plan != Plan::Unchanged {
                work.push((series, plan));
            } else if let Some(old) = old.filter(|o| o.total.is_none()) {
                // Recorded by an older release, without its sums.
                totals.push((old.id, chunks_of(&series.samples, tz).into_iter().collect()));
            }
        }
        self.state.record_totals(&totals).await?;
        Ok(work)
    }

    /// Counts and logs the rows the family's computation skipped, and those
    /// the PDLs left unread skipped when last read; notes the earliest
    /// sample held back, read or recalled.
    fn note_skipped(
        &self,
        family: Family,
        report: &Report,
        unread: &Unread,
        outcome: &mut Outcome,
    ) {
        let telemetry = crate::telemetry::global();
        for skip in &report.skipped {
            telemetry.rows_skipped(family, skip.table, 1);
        }
        let recalled = &unread.recalled;
        for (table, rows) in &recalled.rows {
            telemetry.rows_skipped(family, table, *rows);
        }
        if !recalled.rows.is_empty() {
            tracing::warn!(
                family = family.as_str(),
                rows = recalled.skipped(),
                pdls = unread.recalled_pdls,
                first = %recalled.named(),
                "rows skipped, as when their PDLs were last read (unchanged since, not read again)"
            );
        }
        outcome.skipped = crate::series::warn_skipped(report) + recalled.skipped();
        outcome.next_held_back = [report.next_held_back, recalled.next_held_back]
            .into_iter()
            .flatten()
            .min();
    }

    /// Fails when the export lock this process took was lost.
    async fn ensure_lock(&self) -> Result<(), PassError> {
        match self.lock_pid.get() {
            Some(pid) if !self.source.holds_export_lock(pid).await? => Err(PassError::LostLock),
            _ => Ok(()),
        }
    }

    fn check_cancel(&self) -> Result<(), PassError> {
        if self.retry.is_cancelled() {
            Err(PassError::Cancelled)
        } else {
            Ok(())
        }
    }
}
