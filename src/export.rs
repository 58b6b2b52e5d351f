//! One export pass over a family: read, compute, compare, send, acknowledge.
//!
//! For each series the source yields, its per-day summaries are compared
//! with the state's ([`state::plan`]): an unchanged series costs nothing, new
//! days are appended, anything else deletes the series in VictoriaMetrics and
//! rewrites it whole (VictoriaMetrics cannot overwrite a sample). A series is
//! marked pending in PostgreSQL before the first byte goes out and cleared
//! only once all its lines are acknowledged, so a crash or failed batch at
//! any point leaves it pending, and the next pass rewrites it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::batch::{BatchError, Batcher};
use crate::config::Config;
use crate::contract::ecowatt::ecowatt_series;
use crate::contract::energy::{EnergyRow, PdlEnergy};
use crate::contract::tempo::tempo_series;
use crate::contract::{is_pdl, Contract, Family, Report, Series};
use crate::sink::{Sink, SinkError};
use crate::source::{Source, SourceError};
use crate::state::{self, chunks_of, Done, Plan, SeriesState, State};

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
    /// Writing rendered lines failed.
    #[error("writing the lines: {0}")]
    Output(#[from] std::io::Error),
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
}

/// Series whose lines are pushed, waiting for their last line's acknowledgement.
struct Unacked {
    last_line: u64,
    done: Done,
}

/// Reads the source and keeps VictoriaMetrics equal to it.
pub struct Exporter {
    source: Source,
    state: State,
    sink: Sink,
    config: Config,
    cancel: CancellationToken,
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

    fn contract(&self) -> Contract {
        Contract::new(
            self.config.timezone,
            &self.config.labels,
            chrono::Utc::now().timestamp_millis(),
        )
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
        let old = self.state.all_series().await?;
        if !old.is_empty() {
            tracing::info!(
                series = old.len(),
                "VICTORIAMETRICS_LABELS changed: deleting the series written with the old labels"
            );
        }
        for (id, selector) in old {
            self.state.mark_pending_id(id).await?;
            self.sink.delete_series(&selector).await?;
            self.state.forget(id).await?;
        }
        self.state.set_meta("labels", &labels).await?;
        Ok(())
    }

    /// One pass over `family`.
    pub async fn export(&self, family: Family) -> Result<Outcome, ExportError> {
        let contract = self.contract();
        let mut known = self.state.load(family).await?;
        let mut report = Report::default();
        let max_backoff = self
            .config
            .poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut batcher = Batcher::new(
            &self.sink,
            &self.cancel,
            self.config.vm.batch_size.get(),
            max_backoff,
        );
        let mut pass = Pass {
            exporter: self,
            family,
            known: &mut known,
            unacked: Vec::new(),
            outcome: Outcome::default(),
        };

        let mut reader = SeriesReader::new(&self.source, family);
        while let Some(group) = reader.next(&contract, &mut report).await? {
            for series in group {
                if self.cancel.is_cancelled() {
                    return Err(ExportError::Cancelled);
                }
                pass.series(&mut batcher, series).await?;
            }
        }
        batcher.flush().await?;
        pass.commit_acked(&batcher, true).await?;
        pass.delete_stale().await?;

        let mut outcome = pass.outcome;
        outcome.lines = batcher.acked();
        outcome.batches = batcher.batches_sent;
        outcome.skipped = report.skipped.len() as u64;
        outcome.next_held_back = report.next_held_back;
        for skip in &report.skipped {
            tracing::warn!(table = skip.table, row = %skip.row, reason = %skip.reason, "row skipped");
        }
        Ok(outcome)
    }
}

/// A stream of energy rows.
type EnergyRows<'s> =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<EnergyRow, SourceError>> + Send + 's>>;

/// Yields a family's series in groups small enough to hold in memory: one
/// PDL's energy series at a time, or all Tempo or EcoWatt series at once.
pub struct SeriesReader<'s> {
    source: &'s Source,
    family: Family,
    rows: Option<EnergyRows<'s>>,
    current: Option<PdlEnergy>,
    done: bool,
}

impl<'s> SeriesReader<'s> {
    /// A reader of `family`'s series.
    pub fn new(source: &'s Source, family: Family) -> Self {
        Self {
            source,
            family,
            rows: None,
            current: None,
            done: false,
        }
    }

    /// The next group of series, or `None` at the end.
    pub async fn next(
        &mut self,
        contract: &Contract,
        report: &mut Report,
    ) -> Result<Option<Vec<Series>>, SourceError> {
        if self.done {
            return Ok(None);
        }
        match self.family {
            Family::Consumption | Family::Production => {
                let family = self.family;
                let source = self.source;
                let rows = self
                    .rows
                    .get_or_insert_with(|| Box::pin(source.energy_rows(family)));
                while let Some(row) = rows.try_next().await? {
                    if self.current.as_ref().is_some_and(|p| p.pdl() != row.pdl) {
                        let finished = self
                            .current
                            .replace(PdlEnergy::new(family, &row.pdl))
                            .expect("checked above");
                        self.current
                            .as_mut()
                            .expect("just set")
                            .push(contract, row, report);
                        return Ok(Some(finished.finish(contract, report)));
                    }
                    self.current
                        .get_or_insert_with(|| PdlEnergy::new(family, &row.pdl))
                        .push(contract, row, report);
                }
                self.done = true;
                Ok(self.current.take().map(|p| p.finish(contract, report)))
            }
            Family::Tempo => {
                self.done = true;
                let rows = self.source.tempo_rows().await?;
                let pdls: Vec<String> = self
                    .source
                    .consumption_pdls()
                    .await?
                    .into_iter()
                    .filter(|p| is_pdl(p))
                    .collect();
                Ok(Some(tempo_series(contract, &rows, &pdls, report)))
            }
            Family::Ecowatt => {
                self.done = true;
                let rows = self.source.ecowatt_rows().await?;
                Ok(Some(ecowatt_series(contract, &rows, report)))
            }
        }
    }
}

/// Writes every line a full export would send (`render`).
pub async fn render_all(
    source: &Source,
    config: &Config,
    out: &mut (impl std::io::Write + Send),
) -> Result<Report, ExportError> {
    let contract = Contract::new(
        config.timezone,
        &config.labels,
        chrono::Utc::now().timestamp_millis(),
    );
    let mut report = Report::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    for family in Family::ALL {
        let mut reader = SeriesReader::new(source, family);
        while let Some(group) = reader.next(&contract, &mut report).await? {
            for series in group {
                for s in &series.samples {
                    crate::contract::render::write_line(&mut buf, &series.head, s.value, s.ts);
                }
                if buf.len() >= 60 * 1024 {
                    out.write_all(&buf)?;
                    buf.clear();
                }
            }
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(report)
}

/// The state of one pass over one family.
struct Pass<'e> {
    exporter: &'e Exporter,
    family: Family,
    known: &'e mut HashMap<String, SeriesState>,
    unacked: Vec<Unacked>,
    outcome: Outcome,
}

impl Pass<'_> {
    async fn series(
        &mut self,
        batcher: &mut Batcher<'_>,
        series: Series,
    ) -> Result<(), ExportError> {
        let chunks = chunks_of(&series.samples);
        let old = self.known.remove(&series.selector);
        let plan = state::plan(old.as_ref(), &chunks);
        let (replace, buckets) = match plan {
            Plan::Unchanged => return Ok(()),
            Plan::Rewrite => (true, None),
            Plan::Append(buckets) => (false, Some(buckets)),
        };
        let ex = self.exporter;
        let id = ex.state.mark_pending(self.family, &series.selector).await?;
        let chunks: Vec<(i32, state::Chunk)> = match &buckets {
            None => {
                ex.sink.delete_series(&series.selector).await?;
                self.outcome.rewritten += 1;
                tracing::debug!(series = %series.head, samples = series.samples.len(), "rewriting series");
                batcher
                    .push(id, &series.head, series.samples.iter().copied())
                    .await?;
                chunks.into_iter().collect()
            }
            Some(buckets) => {
                self.outcome.appended += 1;
                let wanted: BTreeMap<i32, state::Chunk> =
                    buckets.iter().map(|b| (*b, chunks[b])).collect();
                let samples = series
                    .samples
                    .iter()
                    .copied()
                    .filter(|s| wanted.contains_key(&state::bucket_of(s.ts)));
                batcher.push(id, &series.head, samples).await?;
                wanted.into_iter().collect()
            }
        };
        self.unacked.push(Unacked {
            last_line: batcher.pushed(),
            done: Done {
                id,
                replace,
                chunks,
            },
        });
        self.commit_acked(batcher, false).await
    }

    /// Records the series whose lines are all acknowledged (in groups, or
    /// all of them at the end of the pass).
    async fn commit_acked(&mut self, batcher: &Batcher<'_>, all: bool) -> Result<(), ExportError> {
        let acked = batcher.acked();
        let ready = self
            .unacked
            .iter()
            .take_while(|u| u.last_line <= acked)
            .count();
        if ready == 0 || (!all && ready < COMMIT_EVERY) {
            return Ok(());
        }
        // A series that went through an ambiguous retry stays pending, to be rewritten.
        let done: Vec<Done> = self
            .unacked
            .drain(..ready)
            .map(|u| u.done)
            .filter(|d| !batcher.is_tainted(d.id))
            .collect();
        self.exporter.state.commit(&done).await?;
        Ok(())
    }

    /// Deletes the series no row produces any more.
    async fn delete_stale(&mut self) -> Result<(), ExportError> {
        let ex = self.exporter;
        for (selector, old) in self.known.drain() {
            ex.state.mark_pending_id(old.id).await?;
            ex.sink.delete_series(&selector).await?;
            ex.state.forget(old.id).await?;
            self.outcome.deleted += 1;
            tracing::debug!(series = %selector, "deleted series no row produces");
        }
        Ok(())
    }
}
