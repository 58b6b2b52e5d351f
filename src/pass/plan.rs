//! The plan stage's read-back half: a series' plan from the state
//! ([`crate::state::plan`]) turned into a repair where VictoriaMetrics does
//! not hold what it acknowledged (SPEC §4, guarantee 6).

use super::{Exporter, Outcome, PassError};
use crate::model::Series;
use crate::state::{Plan, SeriesState};
use crate::verify::{self, Expected, Observation, Repair};

impl Exporter {
    /// Compares what VictoriaMetrics holds of a series with what it should
    /// hold before this pass's writes, and turns the plan into a repair
    /// where they differ: samples missing only are sent again, anything else
    /// rewrites the series. A series that differs but was written too
    /// recently to be visible yet is left for a later pass; those the pass
    /// rewrites anyway are not compared.
    pub(super) async fn repair(
        &self,
        series: &Series,
        old: Option<&SeriesState>,
        plan: Plan,
        obs: &Observation,
        outcome: &mut Outcome,
    ) -> Result<Plan, PassError> {
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
        let verdict = verify::compare(
            Expected::of(held(), series.scale, obs.at_ms),
            obs.series.get(&series.key),
        );
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
        let held: Vec<_> = held()
            .filter(|s| verify::covered(s.ts, obs.at_ms))
            .copied()
            .collect();
        let stored = if verdict.needs_samples() {
            self.sink
                .stored_samples(&series.selector, obs.at_ms)
                .await?
        } else {
            Vec::new()
        };
        let Some(diagnosis) = verify::diagnose_verdict(verdict, &held, series.scale, &stored)
        else {
            return Ok(plan);
        };
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
        Ok(match diagnosis.repair() {
            Repair::Resend(missing) => plan.resending(missing),
            Repair::Rewrite => Plan::Rewrite,
        })
    }
}
