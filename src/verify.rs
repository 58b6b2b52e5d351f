//! Read-back: what VictoriaMetrics holds, compared with what it should hold.
//!
//! VictoriaMetrics answers 204 to lines it then drops (a volume replaced, a
//! series deleted by hand, v1.150's occasional loss of samples written just
//! after a `delete_series`), so an acknowledgement proves nothing. A pass
//! therefore reads each family back, cheaply: two instant queries per
//! family, `count_over_time` and `sum_over_time` over the whole history,
//! computed by VictoriaMetrics, one answer line per series. A series whose
//! count and sum differ from what it should hold is then read back sample by
//! sample (`/api/v1/export`, that one series) to tell what to repair:
//! samples missing only are sent again, anything else (duplicates, samples
//! of another value or timestamp) rewrites the series.
//!
//! What the count and sum cannot tell: two samples whose values were
//! swapped, or changes that cancel out in the sum at an equal count. The
//! exporter never writes such a change (it writes whole series or appends
//! new samples), and a loss or a duplicate always moves the count.

use std::collections::{HashMap, HashSet};

use crate::model::render::series_key;
use crate::model::{Sample, Scale};

/// The earliest instant a read-back covers (Unix ms, excluded): the day
/// after the Unix epoch. VictoriaMetrics 1.79 answers nothing to a window
/// that reaches back before the epoch, and stores no sample before it.
pub const READ_BACK_FROM_MS: i64 = 86_400_000;

/// What VictoriaMetrics reports of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Samples stored, duplicates included.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The time of the last sample (Unix ms), where the family's read-back
    /// asks for it ([`crate::model::family::Spec::read_back_last`]).
    pub last: Option<i64>,
    /// A selector matching this series alone, to delete or export it.
    pub selector: String,
}

/// A family read back at one instant: its series by [`series_key`].
#[derive(Debug, Clone)]
pub struct Observation {
    /// The instant the queries were evaluated at (Unix ms): samples after it
    /// are not counted, nor those at or before [`READ_BACK_FROM_MS`].
    pub at_ms: i64,
    /// The exporter's series found, by key.
    pub series: HashMap<String, Observed>,
    /// How many copies of each sample the family shows, once judged.
    pub copies: Copies,
}

/// The [`series_key`] of a series from the selector the exporter wrote it
/// under (`{__name__="m",a="x",b=""}`: labels matched as empty are absent).
pub fn key_of_selector(selector: &str) -> Option<String> {
    let (name, labels) = parse_selector(selector)?;
    Some(series_key(
        &name,
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// The metric name and the labels of a selector the exporter wrote, those
/// matched as empty left out.
pub fn parse_selector(selector: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut rest = selector.strip_prefix('{')?.strip_suffix('}')?;
    let mut name = None;
    let mut labels: Vec<(String, String)> = Vec::new();
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
        if k == "__name__" {
            name = Some(value);
        } else if !value.is_empty() {
            labels.push((k.to_string(), value));
        }
    }
    Some((name?, labels))
}

/// What a series should hold as seen at an instant: the samples up to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expected {
    /// Samples.
    pub count: u64,
    /// Their sum, in units of `scale`.
    pub sum: i128,
    /// The series' decimals.
    pub scale: Scale,
    /// The time of its last sample (Unix ms), when known: compared where
    /// the read-back also gives it, so that a series of one sample that
    /// moved (`myelectricaldata_pdl_info`) is not taken as held when
    /// VictoriaMetrics still shows it where it was.
    pub last: Option<i64>,
}

impl Expected {
    /// The samples among `samples` a read-back at `at_ms` covers.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, scale: Scale, at_ms: i64) -> Self {
        let mut e = Expected {
            scale,
            ..Expected::default()
        };
        for s in samples.into_iter().filter(|s| covered(s.ts, at_ms)) {
            e.count += 1;
            e.sum += i128::from(s.value);
            e.last = e.last.max(Some(s.ts));
        }
        e
    }
}

/// Whether a read-back at `at_ms` covers a sample at `ts`.
pub fn covered(ts: i64, at_ms: i64) -> bool {
    ts > READ_BACK_FROM_MS && ts <= at_ms
}

/// How a series read back compares with what it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Count and sum agree.
    Same,
    /// VictoriaMetrics holds none of its samples.
    Absent,
    /// Fewer samples than it should: some may only be missing.
    Fewer,
    /// As many samples or more, but not the same: duplicates, other values.
    Differs,
    /// Exactly twice its samples, twice its sum: what a replicated cluster
    /// whose vmselect does not deduplicate shows of every series.
    Doubled,
}

/// Compares a series' expected content with what was read back.
pub fn compare(expected: Expected, observed: Option<&Observed>) -> Verdict {
    let Some(o) = observed.filter(|o| o.count > 0) else {
        return if expected.count == 0 {
            Verdict::Same
        } else {
            Verdict::Absent
        };
    };
    // VictoriaMetrics sums in floating point: allow well under one unit
    // of the last decimal.
    let want = expected.scale.to_f64(expected.sum);
    let unit = expected.scale.to_f64(1);
    let same_sum = (o.sum - want).abs() <= 0.4 * unit + want.abs() * 1e-12;
    let doubled_sum = (o.sum - 2.0 * want).abs() <= 0.8 * unit + want.abs() * 2e-12;
    let same_last = match (expected.last, o.last) {
        (Some(want), Some(got)) => want == got,
        _ => true,
    };
    if o.count == expected.count && same_sum && same_last {
        Verdict::Same
    } else if expected.count > 0 && o.count == 2 * expected.count && doubled_sum {
        Verdict::Doubled
    } else if o.count < expected.count {
        Verdict::Fewer
    } else {
        Verdict::Differs
    }
}

/// How many copies of each sample a family's read-back shows, judged over
/// its series: a replicated cluster (`-replicationFactor` 2 on vminsert)
/// whose vmselect does not deduplicate shows every sample twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// No series tells: none read back, or none held once or twice.
    Unknown,
    /// Some series holds its samples once: whatever holds them twice was
    /// written twice, and is repaired.
    One,
    /// No series holds its samples once and some hold them exactly twice:
    /// replication without deduplication, which no rewrite can mend.
    Two,
}

impl Copies {
    /// Judges from each series' expected and observed sample counts
    /// (series expected empty or not read back tell nothing).
    pub fn judge(counts: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let (mut once, mut twice) = (0u64, 0u64);
        for (expected, observed) in counts {
            if expected == 0 || observed == 0 {
                continue;
            }
            if observed == expected {
                once += 1;
            } else if observed == 2 * expected {
                twice += 1;
            }
        }
        if once > 0 {
            Copies::One
        } else if twice > 0 {
            Copies::Two
        } else {
            Copies::Unknown
        }
    }

    /// Whether a series with this verdict holds what it should, under this
    /// judgement: a doubled series is as good as the same one on a cluster
    /// that shows every sample twice.
    pub fn accepts(self, verdict: Verdict) -> bool {
        verdict == Verdict::Same || (self == Copies::Two && verdict == Verdict::Doubled)
    }
}

/// What a series read back sample by sample lacks or has too much of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Timestamps of expected samples VictoriaMetrics does not hold.
    pub missing: Vec<i64>,
    /// Samples it holds that it should not: duplicates at one timestamp,
    /// timestamps not expected, other values.
    pub extra: u64,
}

impl Diagnosis {
    /// Whether sending the missing samples again repairs the series.
    pub fn only_missing(&self) -> bool {
        self.extra == 0
    }

    /// The repair: the missing samples sent again when nothing else is
    /// wrong, else the series rewritten.
    pub fn repair(self) -> Repair {
        if self.only_missing() {
            Repair::Resend(self.missing.into_iter().collect())
        } else {
            Repair::Rewrite
        }
    }
}

/// How to repair a series that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Send the samples at these timestamps again.
    Resend(HashSet<i64>),
    /// Delete the series and write it whole.
    Rewrite,
}

impl Verdict {
    /// Whether telling what to repair needs the series' samples
    /// (`/api/v1/export`): the count and sum tell enough of the others.
    pub fn needs_samples(self) -> bool {
        matches!(self, Verdict::Fewer | Verdict::Differs)
    }
}

/// What a series with this verdict lacks or has too much of, given the
/// samples it should hold (`held`) and, when the verdict
/// [needs them](Verdict::needs_samples), those it holds (`stored`); `None`
/// when nothing is to be repaired.
pub fn diagnose_verdict(
    verdict: Verdict,
    held: &[Sample],
    scale: Scale,
    stored: &[(i64, f64)],
) -> Option<Diagnosis> {
    let d = match verdict {
        Verdict::Same => return None,
        // Written twice where other series are held once: rewritten.
        Verdict::Doubled => Diagnosis {
            missing: Vec::new(),
            extra: held.len() as u64,
        },
        Verdict::Absent => Diagnosis {
            missing: held.iter().map(|s| s.ts).collect(),
            extra: 0,
        },
        Verdict::Fewer | Verdict::Differs => diagnose(held, scale, stored),
    };
    (!d.missing.is_empty() || d.extra > 0).then_some(d)
}

/// Compares the samples a series holds (`stored`, as `/api/v1/export`
/// gives them: timestamp and value) with those it should hold.
pub fn diagnose(expected: &[Sample], scale: Scale, stored: &[(i64, f64)]) -> Diagnosis {
    let mut held: HashMap<i64, Vec<f64>> = HashMap::with_capacity(stored.len());
    for (ts, v) in stored {
        held.entry(*ts).or_default().push(*v);
    }
    let mut d = Diagnosis::default();
    for s in expected {
        match held.remove(&s.ts) {
            None => d.missing.push(s.ts),
            Some(values) => {
                let want = scale.to_f64(s.value.into());
                let unit = scale.to_f64(1);
                let right = values
                    .iter()
                    .filter(|v| (**v - want).abs() <= 0.4 * unit + want.abs() * 1e-12)
                    .count();
                d.extra += (values.len() - right.min(1)) as u64;
            }
        }
    }
    d.extra += held.values().map(|v| v.len() as u64).sum::<u64>();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::render::series_selector;

    fn obs(count: u64, sum: f64) -> Observed {
        Observed {
            count,
            last: None,
            sum,
            selector: String::new(),
        }
    }

    #[test]
    fn a_single_sample_that_moved_differs_where_the_last_time_is_read_back() {
        let expected = Expected {
            count: 1,
            sum: 1000,
            scale: Scale::Milli,
            last: Some(2_000),
        };
        let at = |last| Observed {
            last,
            ..obs(1, 1.0)
        };
        assert_eq!(compare(expected, Some(&at(Some(2_000)))), Verdict::Same);
        assert_eq!(compare(expected, Some(&at(Some(1_000)))), Verdict::Differs);
        // A read-back that does not ask for it judges by count and sum.
        assert_eq!(compare(expected, Some(&at(None))), Verdict::Same);
    }

    #[test]
    fn count_and_sum_tell_missing_duplicated_and_changed_samples_apart() {
        const D: i64 = 1_705_273_200_000;
        let samples = [
            Sample::whole(D, 10),
            Sample {
                ts: D + 1,
                value: 270_500,
            },
            Sample::whole(D + 2, 7),
        ];
        let e = Expected::of(&samples, Scale::Milli, i64::MAX);
        assert_eq!(compare(e, Some(&obs(3, 287.5))), Verdict::Same);
        assert_eq!(compare(e, Some(&obs(2, 280.5))), Verdict::Fewer);
        assert_eq!(compare(e, Some(&obs(4, 297.5))), Verdict::Differs);
        assert_eq!(compare(e, Some(&obs(3, 287.501))), Verdict::Differs);
        assert_eq!(compare(e, None), Verdict::Absent);
        assert_eq!(compare(e, Some(&obs(0, 0.0))), Verdict::Absent);
        assert_eq!(compare(Expected::default(), None), Verdict::Same);
        // Samples after the read-back's instant, or before the day after
        // the epoch, are not expected.
        assert_eq!(Expected::of(&samples, Scale::Milli, D + 1).count, 2);
        assert_eq!(
            Expected::of(&[Sample::whole(5, 1)], Scale::Milli, D).count,
            0
        );
    }

    #[test]
    fn a_series_held_exactly_twice_is_doubled_and_only_a_family_with_none_held_once_is_replicated()
    {
        let samples = [
            Sample::whole(100_000_000, 10),
            Sample::whole(100_000_001, 5),
        ];
        let e = Expected::of(&samples, Scale::Milli, i64::MAX);
        assert_eq!(compare(e, Some(&obs(4, 30.0))), Verdict::Doubled);
        // Twice the count at another sum is a real difference.
        assert_eq!(compare(e, Some(&obs(4, 31.0))), Verdict::Differs);
        assert_eq!(Copies::judge([(2, 4), (3, 6), (5, 0)]), Copies::Two);
        // Doubled beside a series held once: written twice, repaired.
        assert_eq!(Copies::judge([(2, 4), (3, 3)]), Copies::One);
        assert_eq!(Copies::judge([(2, 3), (0, 0)]), Copies::Unknown);
        assert!(Copies::Two.accepts(Verdict::Doubled));
        assert!(!Copies::One.accepts(Verdict::Doubled));
        assert!(!Copies::Unknown.accepts(Verdict::Doubled));
        assert!(Copies::Unknown.accepts(Verdict::Same));
    }

    #[test]
    fn a_diagnosis_lists_missing_samples_and_counts_everything_else_as_extra() {
        let expected = [
            Sample::whole(1, 10),
            Sample::whole(2, 20),
            Sample::whole(3, 30),
        ];
        assert_eq!(
            diagnose(&expected, Scale::Milli, &[(1, 10.0), (3, 30.0)]),
            Diagnosis {
                missing: vec![2],
                extra: 0
            }
        );
        let dup = diagnose(
            &expected,
            Scale::Milli,
            &[(1, 10.0), (1, 10.0), (2, 20.0), (3, 30.0)],
        );
        assert_eq!(dup.extra, 1);
        let other = diagnose(
            &expected,
            Scale::Milli,
            &[(1, 10.0), (2, 21.0), (3, 30.0), (4, 1.0)],
        );
        assert_eq!(other.extra, 2);
        assert!(!other.only_missing());
        assert!(diagnose(&expected, Scale::Milli, &[]).only_missing());
    }

    #[test]
    fn a_selector_gives_back_the_key_of_its_series() {
        let labels = [
            ("pdl", "1"),
            ("type", "daily"),
            ("home", "a\"b\\c\nd,e=\"f"),
        ];
        let selector = series_selector("m", &labels, &["pdl", "type", "quality"]);
        assert_eq!(
            key_of_selector(&selector).as_deref(),
            Some(series_key("m", labels).as_str())
        );
        assert_eq!(key_of_selector("nonsense"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn a_selector_written_reads_back_as_its_name_and_labels(
            name in "[a-z_]{1,20}",
            labels in proptest::collection::btree_map(
                "[a-z_]{1,8}",
                crate::model::arbitrary::text("\\\\\"\n{},=a-z"),
                0..5,
            ),
            own in proptest::collection::vec("[a-z_]{1,8}", 0..4),
        ) {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            let selector = series_selector(&name, &labels, &own);
            let want: Vec<(String, String)> = labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            proptest::prop_assert_eq!(parse_selector(&selector), Some((name, want)), "{}", selector);
        }

        #[test]
        fn any_selector_text_is_read_or_none(
            text in crate::model::arbitrary::text("{}=\"\\\\,_a-z"),
        ) {
            let _ = key_of_selector(&text);
        }
    }
}
