//! The mirror audited for `check`: every series computed from PostgreSQL
//! and compared with what VictoriaMetrics holds, as a pass's read-back
//! does, but nothing written or repaired.

use crate::config::Config;
use crate::model::{Family, Report};
use crate::series::SeriesReader;
use crate::source::{Source, SourceError};
use crate::state::State;
use crate::verify::{self, Copies, Expected};
use crate::vm::{Sink, SinkError};

/// Why an audit could not complete.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// PostgreSQL failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// VictoriaMetrics did not answer the read-back.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What an audit found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Series compared.
    pub series: u64,
    /// Samples they should hold.
    pub samples: u64,
    /// Series that differ from what they should hold.
    pub differing: u64,
    /// Series that differ but were written too recently to be visible, or
    /// are being written by an exporter right now: not counted as differing.
    pub recent: u64,
    /// Series shown with every sample twice by a replicated cluster that
    /// does not deduplicate: not counted as differing, reported apart.
    pub doubled: u64,
}

/// Compares every series of every family with VictoriaMetrics.
pub async fn audit(config: &Config, source: &Source, sink: &Sink) -> Result<Audit, AuditError> {
    let contract = config.contract(chrono::Utc::now().timestamp_millis());
    let state = State::new(source.pool().clone());
    // A database the exporter never ran on has no state: nothing was written.
    let exported = state.exists().await?;
    let mut audit = Audit::default();
    for family in Family::ALL {
        let known = if exported {
            state.load(family).await?
        } else {
            Default::default()
        };
        let obs = sink
            .observe(
                family,
                &contract.extra_labels,
                contract.cutoff_ms,
                known.len(),
            )
            .await?;
        let mut report = Report::default();
        let mut reader = SeriesReader::new(source, family);
        // Judged over the whole family before any series is: (expected,
        // verdict, recently written).
        let mut compared = Vec::new();
        while let Some(group) = reader.next(&contract, &mut report).await? {
            for series in group.series {
                let expected = Expected::of(&series.samples, series.scale, obs.at_ms);
                let seen = obs.series.get(&series.key);
                let recent = known
                    .get(&series.selector)
                    .is_some_and(|s| s.pending || s.age < config.verify_delay);
                compared.push((
                    expected,
                    seen.map_or(0, |o| o.count),
                    verify::compare(expected, seen),
                    recent,
                ));
            }
        }
        let copies = Copies::judge(compared.iter().map(|(e, seen, _, _)| (e.count, *seen)));
        for (expected, _, verdict, recent) in compared {
            let same = copies.accepts(verdict);
            if !same && recent {
                audit.recent += 1;
                continue;
            }
            audit.series += 1;
            audit.samples += expected.count;
            if !same {
                audit.differing += 1;
            } else if verdict != verify::Verdict::Same {
                audit.doubled += 1;
            }
        }
    }
    Ok(audit)
}
