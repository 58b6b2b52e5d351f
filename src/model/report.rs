//! What a computation produced besides its series: the rows it skipped and
//! the samples it held back, in full ([`Report`]) or summarised for one
//! PDL's record ([`Skips`]), so that a PDL whose rows did not change is
//! reported again without being read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A row the contract could not use: logged once and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The table the row comes from.
    pub table: &'static str,
    /// The row's id, or another way to find it.
    pub row: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What a family's computation produced besides its series.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows skipped as malformed.
    pub skipped: Vec<Skip>,
    /// The earliest timestamp held back as too far in the future, if any.
    pub next_held_back: Option<i64>,
    /// How many samples were held back.
    pub held_back: u64,
}

impl Report {
    /// Records a skipped row.
    pub fn skip(&mut self, table: &'static str, row: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skip {
            table,
            row: row.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn hold_back(&mut self, ts: i64) {
        self.held_back += 1;
        self.next_held_back = Some(self.next_held_back.map_or(ts, |t| t.min(ts)));
    }

    /// Adds what another computation (one PDL's) reported.
    pub fn absorb(&mut self, other: Report) {
        self.skipped.extend(other.skipped);
        self.held_back += other.held_back;
        self.next_held_back = match (self.next_held_back, other.next_held_back) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The summary a PDL's record keeps of this report.
    pub fn skips(&self) -> Skips {
        let mut rows = BTreeMap::new();
        for skip in &self.skipped {
            *rows.entry(skip.table.to_string()).or_insert(0) += 1;
        }
        Skips {
            rows,
            first: self
                .skipped
                .iter()
                .take(Skips::KEPT)
                .map(|s| SkippedRow {
                    table: s.table.to_string(),
                    row: s.row.clone(),
                    reason: s.reason.clone(),
                })
                .collect(),
            held_back: self.held_back,
            next_held_back: self.next_held_back,
        }
    }
}

/// What reading a PDL's rows skipped and held back, as its record keeps it:
/// counts, and the first few rows by name (a meter with thousands of bad
/// rows is not recorded row by row).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skips {
    /// Rows skipped, by table.
    pub rows: BTreeMap<String, u64>,
    /// The first rows skipped, in the order they were met.
    pub first: Vec<SkippedRow>,
    /// Samples held back as dated beyond what VictoriaMetrics accepts.
    pub held_back: u64,
    /// The earliest of them (Unix ms).
    pub next_held_back: Option<i64>,
}

/// One skipped row, named in a [`Skips`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// The table the row comes from.
    pub table: String,
    /// The row's id, or another way to find it.
    pub row: String,
    /// Why it was skipped.
    pub reason: String,
}

impl Skips {
    /// How many skipped rows a record names.
    pub const KEPT: usize = 5;

    /// Nothing skipped, nothing held back.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.held_back == 0
    }

    /// The rows it names, in one line: `table row: why; …`.
    pub fn named(&self) -> String {
        let named: Vec<String> = self
            .first
            .iter()
            .map(|s| format!("{} {}: {}", s.table, s.row, s.reason))
            .collect();
        named.join("; ")
    }

    /// Rows skipped in all.
    pub fn skipped(&self) -> u64 {
        self.rows.values().sum()
    }

    /// Whether a sample held back comes within reach at `cutoff_ms` (a
    /// pass's [`super::Contract::cutoff_ms`]): the PDL must be read again.
    pub fn due(&self, cutoff_ms: i64) -> bool {
        self.next_held_back.is_some_and(|t| t <= cutoff_ms)
    }

    /// Adds another PDL's summary: the counts, and names up to
    /// [`Skips::KEPT`] rows.
    pub fn add(&mut self, other: &Skips) {
        for (table, n) in &other.rows {
            *self.rows.entry(table.clone()).or_insert(0) += n;
        }
        let room = Self::KEPT.saturating_sub(self.first.len());
        self.first.extend(other.first.iter().take(room).cloned());
        self.held_back += other.held_back;
        self.next_held_back = match (self.next_held_back, other.next_held_back) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_of(skips: usize, held: &[i64]) -> Report {
        let mut r = Report::default();
        for i in 0..skips {
            r.skip("consumption_data", format!("row-{i}"), "bad");
        }
        r.skip("(several rows)", "head", "two rows give one timestamp");
        for ts in held {
            r.hold_back(*ts);
        }
        r
    }

    #[test]
    fn a_summary_counts_every_skipped_row_by_table_and_names_the_first_few() {
        let s = report_of(9, &[]).skips();
        assert_eq!(s.skipped(), 10);
        assert_eq!(s.rows["consumption_data"], 9);
        assert_eq!(s.rows["(several rows)"], 1);
        assert_eq!(s.first.len(), Skips::KEPT);
        assert_eq!(s.first[0].row, "row-0");
        assert!(!s.is_empty());
    }

    #[test]
    fn a_summary_survives_its_json_record() {
        let s = report_of(2, &[50, 40]).skips();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Skips>(&text).unwrap(), s);
    }

    #[test]
    fn a_held_back_sample_makes_its_pdl_due_once_within_reach_and_not_before() {
        let s = report_of(0, &[1_000, 2_000]).skips();
        assert_eq!((s.held_back, s.next_held_back), (2, Some(1_000)));
        assert!(!s.due(999));
        assert!(s.due(1_000));
        assert!(!Skips::default().due(i64::MAX));
    }

    #[test]
    fn summaries_add_up_and_keep_the_earliest_held_back_sample() {
        let mut all = report_of(4, &[300]).skips();
        all.add(&report_of(4, &[200]).skips());
        assert_eq!(all.skipped(), 10);
        assert_eq!(all.first.len(), Skips::KEPT);
        assert_eq!((all.held_back, all.next_held_back), (2, Some(200)));
    }

    #[test]
    fn absorbing_a_pdls_report_keeps_its_rows_and_the_earliest_held_back() {
        let mut all = report_of(1, &[500]);
        all.absorb(report_of(2, &[100]));
        assert_eq!(all.skipped.len(), 5);
        assert_eq!((all.held_back, all.next_held_back), (2, Some(100)));
    }
}
