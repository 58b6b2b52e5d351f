//! The read stage's first step, for a family read by PDL: the PDLs that
//! need not be read again. PostgreSQL tells which PDLs' rows changed since
//! a pass last read them all ([`crate::state::ReadCheck`]); of the others,
//! a PDL is left unread when the state knows as many of its series as that
//! read gave, none pending, and VictoriaMetrics holds each as recorded (its
//! count and sum). Anything else reads the PDL again, and the plan stage
//! then repairs it as it would have. What an unread PDL's rows skipped or
//! held back is reported from the record of its last read.

use std::collections::{HashMap, HashSet};

use super::{Exporter, Outcome, PassError};
use crate::model::family::{scale_of, Reading};
use crate::model::{Contract, Family, Skips};
use crate::state::SeriesState;
use crate::verify::{self, Expected, Observation};

/// What a pass leaves unread.
#[derive(Debug, Default)]
pub(super) struct Unread {
    /// PDLs not read: their recorded series stand as produced.
    pub pdls: HashSet<String>,
    /// The PDLs to read; `None` for every one.
    pub read: Option<Vec<String>>,
    /// Nothing is read: every recorded series stands (a family read whole
    /// whose inputs did not change).
    pub all: bool,
    /// For a family read whole: the digest of its inputs, to record once
    /// the pass read them all.
    pub whole: Option<String>,
    /// What the PDLs not read skipped and held back when they were last
    /// read, reported again from their records.
    pub recalled: Skips,
    /// How many of those PDLs had anything to report.
    pub recalled_pdls: usize,
}

/// The `vm_export_meta` key, followed by the family's name, of the inputs'
/// digest when a pass last read a family whole.
const WHOLE_READ: &str = "reads_whole.";

/// How one recorded series of an unchanged PDL compares.
enum Standing {
    /// VictoriaMetrics holds it as recorded (or it was refused for good).
    Held,
    /// It differs, but was written too recently to be visible yet.
    Young,
    /// It must be read to be repaired or recorded.
    Read,
}

/// What else than its rows a family's series depend on: when it changes,
/// every PDL is read again.
fn context(contract: &Contract) -> String {
    format!(
        "release {}\nzone {}\nlabels {:?}\noff-peak {:?}\nkva {:?}\nlegacy {}\nprices\n{}",
        env!("CARGO_PKG_VERSION"),
        contract.tz.name(),
        contract.extra_labels,
        contract.offpeak_hours,
        contract.subscribed_kva,
        contract.legacy_label_times,
        contract.prices.text(),
    )
}

impl Exporter {
    /// The PDLs of `family` this pass need not read, and those it reads.
    pub(super) async fn unread(
        &self,
        family: Family,
        contract: &Contract,
        known: &HashMap<String, SeriesState>,
        observed: Option<&Observation>,
        outcome: &mut Outcome,
    ) -> Result<Unread, PassError> {
        match family.reading() {
            Reading::ByPdl => {}
            Reading::Whole => {
                return self
                    .unread_whole(family, contract, known, observed, outcome)
                    .await
            }
            Reading::Always => return Ok(Unread::default()),
        }
        let checks = self.state.stage_reads(family, &context(contract)).await?;
        // The recorded series of each PDL, with how each stands.
        let mut by_pdl: HashMap<String, Vec<Standing>> = HashMap::new();
        for (selector, state) in known {
            let Some((name, labels)) = verify::parse_selector(selector) else {
                continue;
            };
            let Some((_, pdl)) = labels.iter().find(|(k, _)| k == "pdl") else {
                continue;
            };
            let standing = self.standing(&name, selector, state, observed);
            by_pdl.entry(pdl.clone()).or_default().push(standing);
        }
        let mut unread = Unread::default();
        let mut read = Vec::new();
        let (mut verified, mut young) = (0, 0);
        for check in checks {
            let series = by_pdl.remove(&check.pdl).unwrap_or_default();
            // A PDL whose rows skipped some is left unread like any other
            // (reported from its record), until a sample it held back as
            // too far ahead comes within reach.
            let stands = check.unchanged == Some(series.len() as i64)
                && !check.skips.due(contract.cutoff_ms)
                && !series.iter().any(|s| matches!(s, Standing::Read));
            if stands {
                if !check.skips.is_empty() {
                    unread.recalled.add(&check.skips);
                    unread.recalled_pdls += 1;
                }
                if observed.is_some() {
                    young += series
                        .iter()
                        .filter(|s| matches!(s, Standing::Young))
                        .count();
                    verified += series.len();
                }
                unread.pdls.insert(check.pdl);
            } else {
                read.push(check.pdl);
            }
        }
        outcome.verified += (verified - young) as u64;
        outcome.unverified += young as u64;
        if !unread.pdls.is_empty() {
            unread.read = Some(read);
        }
        Ok(unread)
    }

    /// A family read whole (Tempo: its calendar and the PDLs it gives
    /// series to are its inputs). Unchanged since a pass last read them, and
    /// every recorded series held as recorded, nothing is read.
    async fn unread_whole(
        &self,
        family: Family,
        contract: &Contract,
        known: &HashMap<String, SeriesState>,
        observed: Option<&Observation>,
        outcome: &mut Outcome,
    ) -> Result<Unread, PassError> {
        let pdls = self.source.consumption_pdls().await?;
        let digest = self
            .state
            .whole_digest(
                family,
                &format!("{}\npdls {}", context(contract), pdls.join(",")),
            )
            .await?;
        let recorded = self
            .state
            .meta(&format!("{WHOLE_READ}{}", family.as_str()))
            .await?;
        let mut unread = Unread {
            whole: Some(digest.clone()),
            ..Unread::default()
        };
        // With the number of series that read gave: a state that lost some
        // of them (cleared by hand) reads the family again.
        if recorded != Some(format!("{digest} {}", known.len())) || known.is_empty() {
            return Ok(unread);
        }
        let mut young = 0;
        for (selector, state) in known {
            let name = verify::parse_selector(selector).map(|(n, _)| n);
            match self.standing(name.as_deref().unwrap_or(""), selector, state, observed) {
                Standing::Held => {}
                Standing::Young => young += 1,
                Standing::Read => return Ok(unread),
            }
        }
        if observed.is_some() {
            outcome.verified += (known.len() - young) as u64;
            outcome.unverified += young as u64;
        }
        unread.all = true;
        Ok(unread)
    }

    /// Records that a pass read a family whole, when it did, and how many
    /// series it gave.
    pub(super) async fn record_whole(
        &self,
        family: Family,
        unread: &Unread,
        series: usize,
    ) -> Result<(), PassError> {
        if let (Some(digest), false) = (&unread.whole, unread.all) {
            self.state
                .set_meta(
                    &format!("{WHOLE_READ}{}", family.as_str()),
                    &format!("{digest} {series}"),
                )
                .await?;
        }
        Ok(())
    }

    /// How a recorded series compares with what VictoriaMetrics shows.
    fn standing(
        &self,
        name: &str,
        selector: &str,
        state: &SeriesState,
        observed: Option<&Observation>,
    ) -> Standing {
        let Some(total) = state.total.filter(|_| !state.pending) else {
            return Standing::Read;
        };
        let (Some(obs), false) = (observed, state.rejected) else {
            return Standing::Held;
        };
        let expected = Expected {
            count: state.held,
            sum: total,
            scale: scale_of(name),
            last: None,
        };
        let seen = verify::key_of_selector(selector).and_then(|k| obs.series.get(&k));
        if obs.copies.accepts(verify::compare(expected, seen)) {
            Standing::Held
        } else if state.age < self.config.verify_delay {
            Standing::Young
        } else {
            Standing::Read
        }
    }
}
