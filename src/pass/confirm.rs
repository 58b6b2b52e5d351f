//! The confirm stage: what VictoriaMetrics shows of a family, read before a
//! pass writes (each series is planned against it), the series it holds
//! that no row produces any more (deleted), and the follow-up of what a pass
//! wrote until VictoriaMetrics shows it ([`Unconfirmed`]), which the daemon
//! and `once` share.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Exporter, Outcome, PassError};
use crate::model::{Contract, Family};
use crate::state::SeriesState;
use crate::verify::{self, Copies, Expected, Observation};

/// What a pass wrote, to read back once VictoriaMetrics shows it.
#[derive(Debug, Clone, Default)]
pub struct Unconfirmed {
    /// What each written series should hold, by series key.
    pub expect: Vec<(String, Expected)>,
    /// The instant to read them back at (Unix ms).
    pub at_ms: i64,
}

/// How long VictoriaMetrics may take to show what a pass wrote before a
/// pass compares its series one by one and repairs: `delay`
/// (`VICTORIAMETRICS_VERIFY_DELAY`) and a margin, so that the last series
/// written is old enough, doubled after each of `repairs` consecutive
/// passes that had to repair.
pub fn read_back_wait(delay: Duration, repairs: u32) -> Duration {
    (delay + Duration::from_millis(500)).saturating_mul(1 << repairs.min(8))
}

/// What a follow-up read-back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// VictoriaMetrics holds every series as written.
    All,
    /// It does not show this many of them yet.
    Not(usize),
    /// It does not answer read-backs.
    NoReadBack,
}

impl Outcome {
    /// What this pass wrote, to follow up.
    pub fn unconfirmed(&self) -> Unconfirmed {
        Unconfirmed {
            expect: self.expect.clone(),
            at_ms: self.expect_at,
        }
    }
}

impl Exporter {
    /// Reads back what a pass wrote: how much of it VictoriaMetrics shows.
    pub async fn confirm(&self, family: Family, u: &Unconfirmed) -> Result<Shown, PassError> {
        let extra: Vec<(String, String)> = self
            .config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self
            .sink
            .observe(family, &extra, u.at_ms, u.expect.len())
            .await
        {
            Ok(obs) => {
                let copies = Copies::judge(
                    u.expect
                        .iter()
                        .map(|(key, e)| (e.count, obs.series.get(key).map_or(0, |o| o.count))),
                );
                note_copies(family, copies);
                let unmatched = u
                    .expect
                    .iter()
                    .filter(|(key, e)| !copies.accepts(verify::compare(*e, obs.series.get(key))))
                    .count();
                Ok(if unmatched == 0 {
                    Shown::All
                } else {
                    Shown::Not(unmatched)
                })
            }
            Err(e) if e.is_retryable() => Err(e.into()),
            Err(_) => Ok(Shown::NoReadBack),
        }
    }

    /// Reads the family back from VictoriaMetrics, as of the latest sample
    /// the pass may write. `None` when it does not answer: writing may still
    /// work (a cluster's vmselect down, a proxy that passes imports only),
    /// so the pass exports unverified, says so, and a later pass reads back.
    /// How many copies of each sample it shows is judged against what the
    /// state says each series holds (`known`).
    pub(super) async fn observe(
        &self,
        family: Family,
        contract: &Contract,
        known: &HashMap<String, SeriesState>,
    ) -> Option<Observation> {
        let observed = self
            .sink
            .observe(
                family,
                &contract.extra_labels,
                contract.cutoff_ms,
                known.len(),
            )
            .await;
        match observed {
            Ok(mut o) => {
                o.copies = Copies::judge(
                    known
                        .iter()
                        .filter(|(_, s)| !s.pending && !s.rejected)
                        .filter_map(|(selector, s)| {
                            let seen = o.series.get(&verify::key_of_selector(selector)?)?;
                            Some((s.samples(), seen.count))
                        }),
                );
                note_copies(family, o.copies);
                Some(o)
            }
            Err(e) => {
                tracing::warn!(family = family.as_str(), error = %e, "cannot read VictoriaMetrics back: exporting unverified, reading back later");
                None
            }
        }
    }

    /// Deletes the series no row produces any more (`known` to the state but
    /// not `seen` by this pass), and those of the exporter's that
    /// VictoriaMetrics holds but neither the rows nor the state know: left
    /// by an older volume restored, or by a state cleared by hand.
    pub(super) async fn delete_unproduced(
        &self,
        family: Family,
        known: &HashMap<String, SeriesState>,
        seen: &HashSet<String>,
        observed: Option<&Observation>,
        outcome: &mut Outcome,
    ) -> Result<(), PassError> {
        let stale: Vec<(&str, &SeriesState)> = known
            .iter()
            .filter(|(sel, _)| !seen.contains(*sel))
            .map(|(sel, s)| (sel.as_str(), s))
            .collect();
        if let Some(obs) = observed {
            let keys: HashSet<String> = known
                .keys()
                .chain(seen)
                .filter_map(|sel| verify::key_of_selector(sel))
                .collect();
            let unknown: Vec<&verify::Observed> = obs
                .series
                .iter()
                .filter(|(key, _)| !keys.contains(*key))
                .map(|(_, o)| o)
                .collect();
            if !unknown.is_empty() {
                tracing::warn!(
                    family = family.as_str(),
                    series = unknown.len(),
                    "read-back: VictoriaMetrics holds series no row produces; deleting them"
                );
                outcome.samples_extra += unknown.iter().map(|o| o.count).sum::<u64>();
                outcome.repaired += unknown.len() as u64;
                let selectors: Vec<&str> = unknown.iter().map(|o| o.selector.as_str()).collect();
                self.delete(&selectors).await?;
                outcome.deleted += unknown.len() as u64;
            }
        }
        if !stale.is_empty() {
            self.delete_recorded(stale.iter().copied()).await?;
            outcome.deleted += stale.len() as u64;
        }
        Ok(())
    }
}

/// Records what a read-back showed of replication, and says once, when a
/// replicated cluster starts showing every sample twice, what to set.
fn note_copies(family: Family, copies: Copies) {
    let starts = match copies {
        Copies::Unknown => false,
        Copies::One => crate::telemetry::global().doubled(false),
        Copies::Two => crate::telemetry::global().doubled(true),
    };
    if starts {
        tracing::warn!(
            family = family.as_str(),
            "VictoriaMetrics shows every sample twice: a replicated cluster (vminsert -replicationFactor=2 or more) \
             whose vmselect does not deduplicate. Set -dedup.minScrapeInterval=1ms on vmselect; until then the \
             exporter counts each sample twice and rewrites nothing for it"
        );
    }
}
