//! The metric contract of SPEC §3: which series exist, their labels, and the
//! samples each holds, computed from the rows of the source tables.
//!
//! Nothing here does I/O: rows go in, [`Series`] come out, ready to compare
//! with what was exported before and to render as Prometheus text lines.

#[cfg(test)]
pub(crate) mod arbitrary;
pub mod calendar;
pub mod costs;
pub mod ecowatt;
pub mod energy;
pub mod family;
pub mod max_power;
pub mod meter;
pub mod offpeak;
pub mod plain_days;
pub mod prices;
pub mod render;
pub mod report;
pub mod tariff;
pub mod tempo;
pub mod zen_flex;

use std::collections::BTreeMap;

use chrono_tz::Tz;

pub use family::{metric, Family, Table, FAMILIES, TABLES};
pub use report::{Report, Skip, Skips};

/// The labels that tell apart series of one metric name: a series'
/// selector pins those it lacks to empty. Frozen: selectors key the state,
/// and a new name here would make every series look new.
pub const OWN_LABELS: [&str; 5] = ["pdl", "type", "color", "quality", "region"];

/// Every label the exporter sets itself; `VICTORIAMETRICS_LABELS` may not use them.
pub const RESERVED_LABELS: [&str; 13] = [
    "pdl",
    "type",
    "color",
    "quality",
    "region",
    "day_type",
    "period",
    "option",
    "part",
    "kva",
    "item",
    "name",
    "production_pdl",
];

/// One sample: Unix milliseconds and a fixed-point value, in the
/// thousandths or millionths its series' [`Scale`] says.
///
/// Values are fixed-point so that they render exactly and sum without float
/// noise: counts, levels, W and VA are whole; the energy of a load-curve
/// interval (W × minutes / 60) has at most two decimals on 15, 30 and
/// 60-minute meters, and is rounded to the nearest thousandth of a Wh on a
/// 10-minute meter, where a decimal cannot be exact (100 W for 10 minutes is
/// 16.666… Wh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sample {
    /// Unix milliseconds.
    pub ts: i64,
    /// The value, in units of its series' [`Scale`].
    pub value: i64,
}

/// How many decimals a series' values carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Thousandths: energy, power, counts and levels.
    #[default]
    Milli,
    /// Millionths: euros, as costs are rounded to 0.000001 €.
    Micro,
}

impl Scale {
    /// Fixed-point units in one.
    pub const fn per_unit(self) -> i64 {
        match self {
            Scale::Milli => 1_000,
            Scale::Micro => 1_000_000,
        }
    }

    /// Decimals written.
    pub const fn decimals(self) -> u32 {
        match self {
            Scale::Milli => 3,
            Scale::Micro => 6,
        }
    }

    /// A fixed-point value (or sum) as the float VictoriaMetrics answers.
    pub fn to_f64(self, value: i128) -> f64 {
        value as f64 / self.per_unit() as f64
    }
}

impl Sample {
    /// A sample of a whole value.
    pub const fn whole(ts: i64, value: i64) -> Self {
        Self {
            ts,
            value: value.saturating_mul(1000),
        }
    }
}

/// One series with every sample it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// `name{labels}`, the start of each of its lines.
    pub head: String,
    /// A PromQL selector matching this series and no other of the exporter's.
    pub selector: String,
    /// Its name and labels in one canonical form (labels sorted by name), as
    /// [`render::series_key`] also makes it from what VictoriaMetrics
    /// answers: read-backs are matched to series by it.
    pub key: String,
    /// Its samples, sorted by timestamp, one per timestamp.
    pub samples: Vec<Sample>,
    /// The decimals of its samples' values.
    pub scale: Scale,
    /// Its `pdl` label, if it has one.
    pub pdl: Option<String>,
}

/// How far ahead of now VictoriaMetrics accepts samples (2 days), less an
/// hour of margin for clocks that disagree.
pub const FUTURE_WINDOW_MS: i64 = 2 * 86_400_000 - 3_600_000;

/// The settings every series is computed with.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Zone of the local dates and times.
    pub tz: Tz,
    /// `VICTORIAMETRICS_LABELS`, sorted by name.
    pub extra_labels: Vec<(String, String)>,
    /// Samples after this instant (Unix ms) are held back.
    pub cutoff_ms: i64,
    /// `VICTORIAMETRICS_OFFPEAK_HOURS`, which overrides every contract's.
    pub offpeak_hours: Option<crate::model::offpeak::OffPeakHours>,
    /// The price grid costs are computed with (empty: no cost, no price).
    pub prices: std::sync::Arc<crate::model::prices::PriceGrid>,
    /// `VICTORIAMETRICS_SUBSCRIBED_KVA`, which overrides every PDL's.
    pub subscribed_kva: Option<u8>,
    /// Stamp load-curve samples at their label read with `fold=0`, as
    /// releases before the daylight-saving fix did. Only the upgrade test
    /// sets it (through [`LEGACY_LABEL_TIMES_VAR`]), to build the mirror an
    /// older release left.
    pub legacy_label_times: bool,
}

/// The environment variable that sets [`Contract::legacy_label_times`]: a
/// test hook, not a setting.
pub const LEGACY_LABEL_TIMES_VAR: &str = "MYELECTRICALDATA_EXPORTER_TEST_LEGACY_DST";

impl Contract {
    /// A contract for the given zone and labels, holding back what lies
    /// beyond VictoriaMetrics' future window from `now_ms`.
    pub fn new(tz: Tz, extra_labels: &BTreeMap<String, String>, now_ms: i64) -> Self {
        Self {
            tz,
            extra_labels: extra_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cutoff_ms: now_ms.saturating_add(FUTURE_WINDOW_MS),
            offpeak_hours: None,
            prices: Default::default(),
            subscribed_kva: None,
            legacy_label_times: false,
        }
    }

    /// Builds a series from its own labels and samples: adds the extra
    /// labels, holds back future samples, sorts, and keeps one sample per
    /// timestamp (the last given, with a warning for the others). `None`
    /// when nothing is left to export.
    pub fn series(
        &self,
        name: &str,
        own: &[(&str, &str)],
        samples: Vec<Sample>,
        report: &mut Report,
    ) -> Option<Series> {
        self.series_in(name, own, &[], Scale::Milli, samples, report)
    }

    /// As [`Contract::series`], for values in `scale` and a metric with
    /// labels of its own (`pins`) that some of its series lack: the
    /// selector matches those as empty too.
    pub fn series_in(
        &self,
        name: &str,
        own: &[(&str, &str)],
        pins: &[&str],
        scale: Scale,
        mut samples: Vec<Sample>,
        report: &mut Report,
    ) -> Option<Series> {
        let cutoff = self.cutoff_ms;
        samples.retain(|s| {
            if s.ts > cutoff {
                report.hold_back(s.ts);
                false
            } else {
                true
            }
        });
        // Stable sort, then keep the last of each run of equal timestamps.
        samples.sort_by_key(|s| s.ts);
        let mut labels: Vec<(&str, &str)> = own.to_vec();
        labels.extend(
            self.extra_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let head = render::series_head(name, &labels);
        let mut deduped: Vec<Sample> = Vec::with_capacity(samples.len());
        for s in samples {
            match deduped.last_mut() {
                Some(last) if last.ts == s.ts => {
                    report.skip(
                        "(several rows)",
                        head.clone(),
                        format!("two rows give timestamp {}; the later row wins", s.ts),
                    );
                    *last = s;
                }
                _ => deduped.push(s),
            }
        }
        if deduped.is_empty() {
            return None;
        }
        let pinned: Vec<&str> = OWN_LABELS.iter().chain(pins).copied().collect();
        let selector = render::series_selector(name, &labels, &pinned);
        let key = render::series_key(name, labels.iter().copied());
        let pdl = own
            .iter()
            .find(|(k, _)| *k == "pdl")
            .map(|(_, v)| v.to_string());
        Some(Series {
            head,
            selector,
            key,
            samples: deduped,
            scale,
            pdl,
        })
    }
}

/// A PDL is 14 digits.
pub fn is_pdl(s: &str) -> bool {
    s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        Contract::new(
            chrono_tz::Europe::Paris,
            &BTreeMap::from([("home".into(), "a\"b".into())]),
            1_000_000,
        )
    }

    #[test]
    fn a_series_carries_the_extra_labels_after_its_own() {
        let mut r = Report::default();
        let s = contract()
            .series("m", &[("pdl", "1")], vec![Sample::whole(1, 2)], &mut r)
            .unwrap();
        assert_eq!(s.head, r#"m{pdl="1",home="a\"b"}"#);
        assert!(s.selector.contains(r#"home="a\"b""#));
        assert!(s.selector.contains(r#"quality="""#));
    }

    #[test]
    fn samples_beyond_the_future_window_are_held_back() {
        let c = contract();
        let mut r = Report::default();
        let far = c.cutoff_ms + 1;
        let s = c
            .series(
                "m",
                &[],
                vec![Sample::whole(far, 1), Sample::whole(5, 1)],
                &mut r,
            )
            .unwrap();
        assert_eq!(s.samples, vec![Sample::whole(5, 1)]);
        assert_eq!(r.next_held_back, Some(far));
        assert!(c
            .series("m", &[], vec![Sample::whole(far, 1)], &mut r)
            .is_none());
    }

    #[test]
    fn two_samples_at_one_timestamp_leave_the_later_one() {
        let mut r = Report::default();
        let s = contract()
            .series(
                "m",
                &[],
                vec![
                    Sample::whole(2, 1),
                    Sample::whole(1, 9),
                    Sample::whole(2, 3),
                ],
                &mut r,
            )
            .unwrap();
        assert_eq!(s.samples, vec![Sample::whole(1, 9), Sample::whole(2, 3)]);
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn a_pdl_is_exactly_fourteen_digits() {
        assert!(is_pdl("12345678901234"));
        assert!(!is_pdl("1234567890123"));
        assert!(!is_pdl("1234567890123a"));
        assert!(!is_pdl("12345678901234 "));
    }
}
