//! The read-back half of a pass: what VictoriaMetrics shows of a family,
//! compared series by series with what it should hold, and the plan that
//! repairs a difference (SPEC §4, guarantee 6).

use super::{ExportError, Exporter, Outcome};
use crate::model::{Contract, Family, Sample, Series};
use crate::state::{Plan, SeriesState};
use std::collections::HashMap;

use crate::verify::{self, Copies, Expected, Observation, Verdict};

impl Exporter {
    /// How many of the series a pass wrote VictoriaMetrics does not show as
    /// written yet (`None`: it refuses read-backs).
    pub async fn unmatched(
        &self,
        family: Family,
        expect: &[(String, Expected)],
        at_ms: i64,
    ) -> Result<Option<usize>, ExportError> {
        let labels: Vec<(String, String)> = self
            .config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match verify::observe(&self.sink, family, &labels, at_ms).await {
            Ok(obs) => {
                let copies = Copies::judge(
                    expect
                        .iter()
                        .map(|(key, e)| (e.count, obs.series.get(key).map_or(0, |o| o.count))),
                );
                note_copies(family, copies);
                Ok(Some(
                    expect
                        .iter()
                        .filter(|(key, e)| {
                            !copies.accepts(verify::compare(*e, obs.series.get(key)))
                        })
                        .count(),
                ))
            }
            Err(e) if e.is_retryable() => Err(e.into()),
            Err(_) => Ok(None),
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
        match verify::observe(
            &self.sink,
            family,
            &contract.extra_labels,
            contract.cutoff_ms,
        )
        .await
        {
            Ok(mut o) => {
                o.copies = Copies::judge(
                    known
                        .iter()
                        .filter(|(_, s)| !s.pending && !s.rejected)
                        .filter_map(|(selector, s)| {
                            let seen = o.series.get(&verify::key_of_selector(selector)?)?;
                            let held: i64 = s.chunks.values().map(|c| i64::from(c.samples)).sum();
                            Some((held.max(0) as u64, seen.count))
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

    /// Compares what VictoriaMetrics holds of a series with what it should
    /// hold before this pass's writes, and turns the plan into a repair
    /// where they differ: samples missing only are sent again, anything else
    /// rewrites the series. A series that differs but was written too
    /// recently to be visible yet is left for a later pass; those the pass
    /// rewrites anyway are not compared.
    pub(super) async fn check_read_back(
        &self,
        series: &Series,
        old: Option<&SeriesState>,
        plan: Plan,
        obs: &Observation,
        outcome: &mut Outcome,
    ) -> Result<Plan, ExportError> {
        let Some(old) = old.filter(|o| !o.pending && !o.rejected) else {
            return Ok(plan);
        };
        if plan == Plan::Rewrite {
            return Ok(plan);
        }
        let tz = self.config.timezone;
        // What VictoriaMetrics should hold already: copied out only when it
        // differs (the common case costs no allocation per series).
        let held = || series.samples.iter().filter(|s| !plan.sends(s, tz));
        let verdict = verify::compare(Expected::of(held(), obs.at_ms), obs.series.get(&series.key));
        let accepted = obs.copies.accepts(verdict);
        if !accepted && old.age < self.config.verify_delay {
            // A sample on its way is not a lost one: compared again later.
            outcome.unverified += 1;
            return Ok(plan);
        }
        outcome.verified += 1;
        if accepted {
            return Ok(plan);
        }
        let held: Vec<Sample> = held()
            .filter(|s| verify::covered(s.ts, obs.at_ms))
            .copied()
            .collect();
        let diagnosis = match verdict {
            Verdict::Same => return Ok(plan),
            // Written twice where other series are held once: rewritten.
            Verdict::Doubled => verify::Diagnosis {
                missing: Vec::new(),
                extra: held.len() as u64,
            },
            Verdict::Absent => verify::Diagnosis {
                missing: held.iter().map(|s| s.ts).collect(),
                extra: 0,
            },
            Verdict::Fewer | Verdict::Differs => {
                let stored =
                    verify::stored_samples(&self.sink, &series.selector, obs.at_ms).await?;
                verify::diagnose(&held, &stored)
            }
        };
        if diagnosis.missing.is_empty() && diagnosis.extra == 0 {
            return Ok(plan);
        }
        outcome.repaired += 1;
        outcome.samples_missing += diagnosis.missing.len() as u64;
        outcome.samples_extra += diagnosis.extra;
        tracing::warn!(
            series = %series.head,
            ?verdict,
            missing = diagnosis.missing.len(),
            extra = diagnosis.extra,
            "read-back: VictoriaMetrics does not hold what it acknowledged; repairing"
        );
        Ok(if diagnosis.only_missing() {
            plan.resending(diagnosis.missing.into_iter().collect())
        } else {
            Plan::Rewrite
        })
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
