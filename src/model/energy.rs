//! `myelectricaldata_consumption_wh` and `myelectricaldata_production_wh`:
//! daily, detailed (load curve) and monthly series of one PDL, and the load
//! curve as power, `myelectricaldata_{consumption,production}_power_w`.
//!
//! A detailed row's `value` is the average power in W over its interval
//! (Enedis's load curve), not an energy: its energy is `value` × the
//! interval's length in minutes / 60, the length read from `raw_data`.

use std::collections::BTreeMap;

use std::borrow::Cow;

use chrono::NaiveDate;

use super::{is_pdl, Contract, Family, Report, Sample, Series};
use crate::model::calendar::{
    day_millis, detailed_start, local_millis, month_millis, parse_interval_start, TrueStart,
};

/// Readings above this many Wh (or W on detailed rows) are taken for
/// corrupt rows: it is more than a large industrial site draws in a day.
pub const MAX_WH: i64 = 100_000_000;

/// The interval length of a detailed row whose `raw_data` names none.
pub const DEFAULT_INTERVAL_MINUTES: u32 = 30;

/// One row of `consumption_data` or `production_data`, as read: borrowed
/// from the database's answer, so that the million rows of a backfill cost
/// no allocation each.
#[derive(Debug, Clone)]
pub struct EnergyRow<'r> {
    /// The row's `id`, to name it in warnings.
    pub id: &'r str,
    /// `usage_point_id`.
    pub pdl: &'r str,
    /// Local date; `None` when PostgreSQL holds one chrono cannot (infinity, year 10000 and after).
    pub date: Option<NaiveDate>,
    /// `granularity` as text: `daily` or `detailed`.
    pub granularity: &'r str,
    /// `HH:MM` on detailed rows.
    pub interval_start: Option<&'r str>,
    /// Wh.
    pub value: i64,
    /// `raw_data`'s `quality` when it is a string (empty counts as absent).
    pub quality: Option<Cow<'r, str>>,
    /// `updated_at` in Unix microseconds, which decides between two daily
    /// rows of one date (read for rows without `interval_start` only;
    /// `None` when infinite).
    pub updated_at: Option<i64>,
    /// The interval's length as `raw_data` names it (`p`, else
    /// `interval_length`), an ISO 8601 duration; `None` when it names none.
    pub interval: Option<&'r str>,
    /// `raw_data.is_placeholder` is `true`: the row stands in for a day not
    /// fetched yet and is no reading.
    pub placeholder: bool,
}

/// The length in minutes of an ISO 8601 duration of hours and minutes, as
/// Enedis writes interval lengths (`PT30M`, `PT10M`, `PT1H`, `PT1H30M`):
/// `None` for anything else, or a length of zero or over a day.
pub fn interval_minutes(text: &str) -> Option<u32> {
    let mut rest = text.trim().strip_prefix("PT")?;
    if rest.is_empty() {
        return None;
    }
    let mut minutes: u32 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 4 {
            return None;
        }
        let n: u32 = rest[..digits].parse().ok()?;
        let unit = rest.as_bytes().get(digits).copied()?;
        let (factor, order) = match unit {
            b'H' => (60, 0),
            b'M' => (1, 1),
            b'S' if n == 0 => (0, 2),
            _ => return None,
        };
        if last_unit.is_some_and(|l| l >= order) {
            return None;
        }
        last_unit = Some(order);
        minutes = minutes.checked_add(n.checked_mul(factor)?)?;
        rest = &rest[digits + 1..];
    }
    (1..=1440).contains(&minutes).then_some(minutes)
}

/// The energy in thousandths of a Wh of `watts` held for `minutes`, rounded
/// to the nearest thousandth (exact but on 10-minute meters: see [`Sample`]).
pub fn interval_energy_milli(watts: i64, minutes: u32) -> i64 {
    // W × min / 60 Wh = W × min × 50 / 3 mWh; round half up.
    let n = watts.saturating_mul(i64::from(minutes)).saturating_mul(50);
    (n.saturating_mul(2).saturating_add(3)).div_euclid(6)
}

/// The quality from the JSON text of `raw_data -> 'quality'`: a string's
/// content, or `None` for anything else (a number, an object, null).
pub fn quality_from_json(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// A load-curve interval as the contract accepted it: where it really
/// starts (SPEC §2), its length and its average power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Its true start: instant, local date and local minute.
    pub start: TrueStart,
    /// The interval's length in minutes (1 to 1440).
    pub minutes: u16,
    /// Its average power in W (0 to [`MAX_WH`]).
    pub watts: i64,
}

impl Interval {
    /// W × minutes: what a sum of energies adds before it is divided by 60
    /// and rounded once.
    pub fn watt_minutes(&self) -> i64 {
        self.watts * i64::from(self.minutes)
    }
}

/// The energy in thousandths of a Wh of `watt_minutes` (W × minutes),
/// rounded half up to the nearest thousandth: a sum of intervals is rounded
/// once, not interval by interval.
pub fn watt_minutes_milli(watt_minutes: i64) -> i64 {
    interval_energy_milli(watt_minutes, 1)
}

/// A daily row kept for its date.
#[derive(Debug)]
struct Daily {
    quality: Option<String>,
    value: i64,
    updated_at: Option<i64>,
    id: String,
}

impl Family {
    /// The metric name of an energy family.
    pub fn energy_metric(self) -> &'static str {
        match self {
            Family::Production => super::metric::PRODUCTION_WH,
            _ => super::metric::CONSUMPTION_WH,
        }
    }

    /// The metric name of an energy family's load curve as power.
    pub fn power_metric(self) -> &'static str {
        match self {
            Family::Production => super::metric::PRODUCTION_POWER_W,
            _ => super::metric::CONSUMPTION_POWER_W,
        }
    }
}

/// The load-curve samples of one quality.
#[derive(Debug, Default)]
struct Curve {
    /// Energy of each interval (Wh).
    energy: Vec<Sample>,
    /// Average power of each interval (W).
    power: Vec<Sample>,
}

/// Collects the rows of one PDL, then yields its series.
#[derive(Debug)]
pub struct PdlEnergy {
    family: Family,
    pdl: String,
    /// The daily rows by date (the latest `updated_at` wins).
    daily: BTreeMap<NaiveDate, Daily>,
    /// Detailed samples by quality (a handful of qualities at most).
    detailed: Vec<(Option<String>, Curve)>,
}

impl PdlEnergy {
    /// Starts collecting the rows of `pdl`.
    pub fn new(family: Family, pdl: &str) -> Self {
        Self {
            family,
            pdl: pdl.to_string(),
            daily: BTreeMap::new(),
            detailed: Vec::new(),
        }
    }

    /// The PDL being collected.
    pub fn pdl(&self) -> &str {
        &self.pdl
    }

    /// Adds one row of this PDL, or records why it is skipped; a load-curve
    /// row it accepts is also returned as an [`Interval`], for the tariff
    /// periods.
    pub fn push(
        &mut self,
        contract: &Contract,
        row: EnergyRow<'_>,
        report: &mut Report,
    ) -> Option<Interval> {
        let table = self.family.table();
        if row.placeholder {
            return None;
        }
        if !is_pdl(row.pdl) {
            report.skip(
                table,
                row.id,
                format!("usage_point_id {:?} is not 14 digits", row.pdl),
            );
            return None;
        }
        if !(0..=MAX_WH).contains(&row.value) {
            report.skip(
                table,
                row.id,
                format!(
                    "value {} {} is out of range 0..={MAX_WH}",
                    row.value,
                    if row.granularity == "detailed" {
                        "W"
                    } else {
                        "Wh"
                    }
                ),
            );
            return None;
        }
        let Some(date) = row.date else {
            report.skip(table, row.id, "date is outside years 1 to 9999");
            return None;
        };
        let quality = row.quality.as_deref().filter(|q| !q.is_empty());
        match row.granularity {
            "daily" => {
                let daily = Daily {
                    quality: quality.map(str::to_string),
                    value: row.value,
                    updated_at: row.updated_at,
                    id: row.id.to_string(),
                };
                self.push_daily(date, daily, report);
                None
            }
            "detailed" => {
                let Some(time) = row.interval_start.and_then(parse_interval_start) else {
                    report.skip(
                        table,
                        row.id,
                        format!("interval_start {:?} is not HH:MM", row.interval_start),
                    );
                    return None;
                };
                let minutes = match row.interval {
                    None => DEFAULT_INTERVAL_MINUTES,
                    Some(text) => match interval_minutes(text) {
                        Some(m) => m,
                        None => {
                            report.skip(
                                table,
                                row.id,
                                format!("interval length {text:?} in raw_data is not a duration such as PT30M"),
                            );
                            return None;
                        }
                    },
                };
                let start = detailed_start(contract.tz, date, time, minutes);
                let ts = if contract.legacy_label_times {
                    local_millis(contract.tz, date.and_time(time))
                } else {
                    start.ts
                };
                let slot = match self
                    .detailed
                    .iter()
                    .position(|(q, _)| q.as_deref() == quality)
                {
                    Some(i) => i,
                    None => {
                        self.detailed
                            .push((quality.map(str::to_string), Curve::default()));
                        self.detailed.len() - 1
                    }
                };
                let curve = &mut self.detailed[slot].1;
                let milli = interval_energy_milli(row.value, minutes);
                curve.energy.push(Sample { ts, value: milli });
                curve.power.push(Sample::whole(ts, row.value));
                Some(Interval {
                    start,
                    // At most 1440: checked above.
                    minutes: minutes as u16,
                    watts: row.value,
                })
            }
            other => {
                report.skip(
                    table,
                    row.id,
                    format!("granularity {other:?} is neither daily nor detailed"),
                );
                None
            }
        }
    }

    /// A daily row. Two for one date are possible where the unique
    /// constraint lets NULL `interval_start`s differ: the later `updated_at`
    /// (then the greater `id`) wins, as the later write would have.
    fn push_daily(&mut self, date: NaiveDate, new: Daily, report: &mut Report) {
        let table = self.family.table();
        match self.daily.entry(date) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(new);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let old = o.get();
                let (kept, dropped) = if (new.updated_at, &new.id) > (old.updated_at, &old.id) {
                    let dropped = o.insert(new);
                    (o.get().id.clone(), dropped.id)
                } else {
                    (old.id.clone(), new.id)
                };
                report.skip(
                    table,
                    dropped,
                    format!("another daily row for {date} ({kept}) was written later and wins"),
                );
            }
        }
    }

    /// The PDL's series: daily and detailed per quality, and monthly.
    pub fn finish(self, contract: &Contract, report: &mut Report) -> Vec<Series> {
        let name = self.family.energy_metric();
        let pdl = self.pdl.as_str();
        let mut daily: BTreeMap<Option<String>, Vec<Sample>> = BTreeMap::new();
        let mut monthly: BTreeMap<i64, i64> = BTreeMap::new();
        for (date, Daily { quality, value, .. }) in self.daily {
            daily
                .entry(quality)
                .or_default()
                .push(Sample::whole(day_millis(contract.tz, date), value));
            *monthly.entry(month_millis(contract.tz, date)).or_default() += value;
        }
        let mut out = Vec::new();
        let mut detailed = self.detailed;
        detailed.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut energy, mut power) = (Vec::new(), Vec::new());
        for (quality, curve) in detailed {
            energy.push((quality.clone(), curve.energy));
            power.push((quality, curve.power));
        }
        let power_name = self.family.power_metric();
        let daily: Vec<_> = daily.into_iter().collect();
        // The power series come from the same rows, at the same timestamps,
        // as the detailed energy series: what they drop or hold back was
        // already reported there.
        let mut reported_twice = Report::default();
        for (name, kind, by_quality, twice) in [
            (name, "daily", daily, false),
            (name, "detailed", energy, false),
            (power_name, "detailed", power, true),
        ] {
            for (quality, samples) in by_quality {
                let mut labels = vec![("pdl", pdl), ("type", kind)];
                if let Some(q) = quality.as_deref() {
                    labels.push(("quality", q));
                }
                let report = if twice {
                    &mut reported_twice
                } else {
                    &mut *report
                };
                out.extend(contract.series(name, &labels, samples, report));
            }
        }
        let monthly = monthly
            .into_iter()
            .map(|(ts, value)| Sample::whole(ts, value))
            .collect();
        out.extend(contract.series(name, &[("pdl", pdl), ("type", "monthly")], monthly, report));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn row(
        id: &'static str,
        date: &str,
        granularity: &'static str,
        start: Option<&'static str>,
        value: i64,
        quality: Option<&'static str>,
    ) -> EnergyRow<'static> {
        EnergyRow {
            id,
            pdl: "12345678901234",
            date: Some(date.parse().unwrap()),
            granularity,
            interval_start: start,
            value,
            quality: quality.map(Cow::Borrowed),
            updated_at: Some(0),
            interval: None,
            placeholder: false,
        }
    }

    fn contract() -> Contract {
        Contract::new(
            chrono_tz::Europe::Paris,
            &BTreeMap::new(),
            1_800_000_000_000,
        )
    }

    #[test]
    fn a_load_curve_row_it_accepts_is_handed_on_as_an_interval_and_no_other() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
        let mut detailed = row("a", "2024-01-15", "detailed", Some("13:30"), 541, None);
        detailed.interval = Some("PT15M");
        assert_eq!(
            p.push(&c, detailed, &mut r),
            Some(Interval {
                start: TrueStart {
                    ts: 1_705_321_800_000,
                    date: "2024-01-15".parse().unwrap(),
                    minute: 13 * 60 + 30,
                },
                minutes: 15,
                watts: 541,
            })
        );
        assert_eq!(
            p.push(&c, row("b", "2024-01-15", "daily", None, 9, None), &mut r),
            None
        );
        let mut bad = row("c", "2024-01-15", "detailed", Some("14:00"), 5, None);
        bad.interval = Some("P1D");
        assert_eq!(p.push(&c, bad, &mut r), None);
        let mut placeholder = row("d", "2024-01-15", "detailed", Some("14:30"), 0, None);
        placeholder.placeholder = true;
        assert_eq!(p.push(&c, placeholder, &mut r), None);
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn the_seed_daily_line_is_reproduced() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
        p.push(
            &c,
            row("a", "2024-01-15", "daily", None, 15200, None),
            &mut r,
        );
        let series = p.finish(&c, &mut r);
        let mut buf = Vec::new();
        let daily = &series[0];
        for s in &daily.samples {
            super::super::render::write_line(&mut buf, &daily.head, s.value, daily.scale, s.ts);
        }
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "myelectricaldata_consumption_wh{pdl=\"12345678901234\",type=\"daily\"} 15200 1705273200000\n"
        );
    }

    #[test]
    fn quality_splits_series_and_months_sum_every_daily_row() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Production, "12345678901234");
        p.push(
            &c,
            row("a", "2024-01-30", "daily", None, 10, Some("BRUT")),
            &mut r,
        );
        p.push(
            &c,
            row("b", "2024-01-31", "daily", None, 20, Some("CORRIGE")),
            &mut r,
        );
        p.push(&c, row("c", "2024-02-01", "daily", None, 5, None), &mut r);
        p.push(
            &c,
            row("d", "2024-02-01", "detailed", Some("00:30"), 7, None),
            &mut r,
        );
        let series = p.finish(&c, &mut r);
        let heads: Vec<_> = series.iter().map(|s| s.head.as_str()).collect();
        assert_eq!(
            heads,
            [
                r#"myelectricaldata_production_wh{pdl="12345678901234",type="daily"}"#,
                r#"myelectricaldata_production_wh{pdl="12345678901234",type="daily",quality="BRUT"}"#,
                r#"myelectricaldata_production_wh{pdl="12345678901234",type="daily",quality="CORRIGE"}"#,
                r#"myelectricaldata_production_wh{pdl="12345678901234",type="detailed"}"#,
                r#"myelectricaldata_production_power_w{pdl="12345678901234",type="detailed"}"#,
                r#"myelectricaldata_production_wh{pdl="12345678901234",type="monthly"}"#,
            ]
        );
        let monthly: Vec<i64> = series[5].samples.iter().map(|s| s.value).collect();
        assert_eq!(monthly, [30_000, 5_000]);
        assert!(r.skipped.is_empty());
    }

    #[test]
    fn malformed_rows_are_skipped_and_named() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
        p.push(
            &c,
            row("bad-time", "2024-01-15", "detailed", Some("25:61"), 1, None),
            &mut r,
        );
        p.push(
            &c,
            row("no-time", "2024-01-15", "detailed", None, 1, None),
            &mut r,
        );
        p.push(
            &c,
            row("negative", "2024-01-15", "daily", None, -5, None),
            &mut r,
        );
        p.push(
            &c,
            row("huge", "2024-01-15", "daily", None, MAX_WH + 1, None),
            &mut r,
        );
        let mut short = row("short-pdl", "2024-01-15", "daily", None, 1, None);
        short.pdl = "123";
        p.push(&c, short, &mut r);
        p.push(
            &c,
            row("good", "2024-01-15", "detailed", Some("12:00"), 1, None),
            &mut r,
        );
        let names: Vec<_> = r.skipped.iter().map(|s| s.row.as_str()).collect();
        assert_eq!(
            names,
            ["bad-time", "no-time", "negative", "huge", "short-pdl"]
        );
        assert_eq!(p.finish(&c, &mut r).len(), 2);
    }

    #[test]
    fn of_two_daily_rows_for_one_date_the_later_written_wins() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
        let mut later = row("b-later", "2024-01-15", "daily", None, 2, None);
        later.updated_at = Some(10);
        let earlier = row("a-earlier", "2024-01-15", "daily", None, 1, None);
        p.push(&c, later, &mut r);
        p.push(&c, earlier, &mut r);
        let series = p.finish(&c, &mut r);
        assert_eq!(series[0].samples[0].value, 2000);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].row, "a-earlier");
    }

    #[test]
    fn quality_is_read_from_a_json_string_only() {
        assert_eq!(quality_from_json("\"BRUT\"").as_deref(), Some("BRUT"));
        assert_eq!(quality_from_json(r#""a\"b""#).as_deref(), Some("a\"b"));
        assert_eq!(quality_from_json("\"\"").as_deref(), Some(""));
        assert_eq!(quality_from_json("1"), None);
        assert_eq!(quality_from_json("{\"a\": \"b\"}"), None);
        assert_eq!(quality_from_json("null"), None);
        assert_eq!(quality_from_json("\""), None);
    }

    #[test]
    fn interval_lengths_are_read_from_iso_8601_durations() {
        for (text, minutes) in [
            ("PT10M", Some(10)),
            ("PT15M", Some(15)),
            ("PT30M", Some(30)),
            ("PT1H", Some(60)),
            ("PT60M", Some(60)),
            ("PT1H30M", Some(90)),
            ("PT30M0S", Some(30)),
            (" PT5M ", Some(5)),
            ("PT0M", None),
            ("PT", None),
            ("P1D", None),
            ("PT30", None),
            ("30", None),
            ("PT30M10S", None),
            ("PT30MPT1H", None),
            ("PT1M1H", None),
            ("PT25H", None),
            ("PT-5M", None),
            ("pt30m", None),
            ("", None),
        ] {
            assert_eq!(interval_minutes(text), minutes, "{text:?}");
        }
    }

    #[test]
    fn a_load_curve_row_gives_its_energy_in_wh_and_its_power_in_w() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
        let lengths = [
            ("00:00", Some("PT30M"), 541, 270_500),
            ("00:30", None, 541, 270_500),
            ("01:00", Some("PT10M"), 100, 16_667),
            ("01:10", Some("PT10M"), 300, 50_000),
            ("01:20", Some("PT15M"), 1001, 250_250),
            ("01:35", Some("PT1H"), 777, 777_000),
            ("02:35", Some("PT10M"), 1, 167),
            ("02:45", Some("PT10M"), 0, 0),
        ];
        for (start, length, watts, _) in lengths {
            let mut row = row("x", "2024-01-15", "detailed", Some(start), watts, None);
            row.interval = length;
            p.push(&c, row, &mut r);
        }
        let mut bad = row("bad", "2024-01-15", "detailed", Some("03:00"), 5, None);
        bad.interval = Some("thirty minutes");
        p.push(&c, bad, &mut r);
        let series = p.finish(&c, &mut r);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].row, "bad");
        let wh: Vec<i64> = series[0].samples.iter().map(|s| s.value).collect();
        let want: Vec<i64> = lengths.iter().map(|l| l.3).collect();
        assert_eq!(wh, want);
        assert!(series[1]
            .head
            .starts_with("myelectricaldata_consumption_power_w{"));
        let w: Vec<i64> = series[1].samples.iter().map(|s| s.value / 1000).collect();
        assert_eq!(w, lengths.iter().map(|l| l.2).collect::<Vec<_>>());
        let mut buf = Vec::new();
        crate::model::render::write_line(
            &mut buf,
            &series[0].head,
            series[0].samples[0].value,
            series[0].scale,
            0,
        );
        assert!(String::from_utf8(buf).unwrap().contains("} 270.5 0"));
    }

    #[test]
    fn placeholders_give_no_sample_and_count_in_no_month() {
        let c = contract();
        let mut r = Report::default();
        let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
        let mut hole = row("hole", "2024-01-15", "daily", None, 0, None);
        hole.placeholder = true;
        p.push(&c, hole, &mut r);
        p.push(
            &c,
            row("real", "2024-01-16", "daily", None, 7, None),
            &mut r,
        );
        let mut curve = row("c", "2024-01-16", "detailed", Some("00:00"), 0, None);
        curve.placeholder = true;
        p.push(&c, curve, &mut r);
        let series = p.finish(&c, &mut r);
        assert!(r.skipped.is_empty());
        assert_eq!(series.len(), 2, "daily and monthly only");
        assert_eq!(series[0].samples.len(), 1);
        assert_eq!(series[1].samples[0].value, 7000);
    }

    /// A part of a duration written with up to two leading zeros: its
    /// text, and its value unless it has more than the 4 digits read.
    fn part(n: Option<u32>, zeros: usize, unit: char) -> (String, Option<u32>) {
        match n {
            None => (String::new(), Some(0)),
            Some(n) => {
                let digits = format!("{}{n}", "0".repeat(zeros));
                let value = (digits.len() <= 4).then_some(n);
                (format!("{digits}{unit}"), value)
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn an_hours_and_minutes_duration_reads_as_its_minutes(
            hours in proptest::option::of(0u32..30),
            minutes in proptest::option::of(proptest::prop_oneof![0u32..90, 0u32..3000]),
            seconds in proptest::prelude::any::<bool>(),
            zeros in (0usize..3, 0usize..3),
            pad in proptest::sample::select(vec!["", " ", "\t"]),
        ) {
            let (h, hv) = part(hours, zeros.0, 'H');
            let (m, mv) = part(minutes, zeros.1, 'M');
            let s = if seconds { "0S" } else { "" };
            let text = format!("{pad}PT{h}{m}{s}{pad}");
            let named = hours.is_some() || minutes.is_some() || seconds;
            let want = match (hv, mv) {
                (Some(h), Some(m)) if named => Some(h * 60 + m).filter(|t| (1..=1440).contains(t)),
                _ => None,
            };
            proptest::prop_assert_eq!(interval_minutes(&text), want, "{:?}", text);
        }

        #[test]
        fn any_duration_text_is_a_length_of_one_minute_to_a_day_or_none(
            text in proptest::prop_oneof![
                crate::model::arbitrary::text("PTHMS0-9 .+\\-"),
                crate::model::arbitrary::text("PT").prop_map(|t| format!("PT{t}")),
            ],
        ) {
            if let Some(m) = interval_minutes(&text) {
                proptest::prop_assert!((1..=1440).contains(&m), "{:?}: {}", text, m);
                proptest::prop_assert!(text.trim().starts_with("PT"), "{:?}", text);
            }
        }

        #[test]
        fn quality_is_the_json_string_written_and_nothing_else(
            value in crate::model::arbitrary::json("\"\\\\a-zA-Z \u{e9}"),
            text in crate::model::arbitrary::text("\"\\\\a-z"),
        ) {
            // PostgreSQL writes `raw_data -> 'quality'` as JSON text.
            let written = value.to_string();
            let got = quality_from_json(&written);
            proptest::prop_assert_eq!(got.as_deref(), value.as_str(), "{}", written);
            let _ = quality_from_json(&text);
        }

        #[test]
        fn any_row_is_taken_or_skipped_naming_what_is_wrong(
            pdl in proptest::prop_oneof![proptest::prelude::Just("12345678901234".to_string()), crate::model::arbitrary::text("0-9")],
            granularity in proptest::prop_oneof![
                proptest::sample::select(vec!["daily", "detailed"]).prop_map(String::from),
                crate::model::arbitrary::text("a-z"),
            ],
            start in proptest::option::of(proptest::prop_oneof![
                "[0-2][0-9]:[0-6][0-9]",
                crate::model::arbitrary::text("0-9:"),
            ]),
            interval in proptest::option::of(proptest::prop_oneof![
                "PT([0-9]{1,2}H)?[0-9]{1,4}M",
                crate::model::arbitrary::text("PTHM0-9"),
            ]),
            value in proptest::prop_oneof![0..=MAX_WH, proptest::prelude::any::<i64>()],
            quality in proptest::option::of(crate::model::arbitrary::text("A-Z")),
        ) {
            let mut p = PdlEnergy::new(Family::Consumption, "12345678901234");
            let mut report = Report::default();
            let row = EnergyRow {
                id: "row-1",
                pdl: &pdl,
                date: Some(NaiveDate::from_ymd_opt(2024, 3, 31).unwrap()),
                granularity: &granularity,
                interval_start: start.as_deref(),
                value,
                quality: quality.as_deref().map(Cow::Borrowed),
                updated_at: Some(0),
                interval: interval.as_deref(),
                placeholder: false,
            };
            let taken = p.push(&contract(), row, &mut report);
            if let Some(i) = taken {
                proptest::prop_assert_eq!(granularity.as_str(), "detailed");
                let want = interval.as_deref().map_or(Some(DEFAULT_INTERVAL_MINUTES), interval_minutes);
                proptest::prop_assert_eq!(Some(u32::from(i.minutes)), want);
                proptest::prop_assert_eq!(i.watts, value);
            }
            for skip in &report.skipped {
                proptest::prop_assert_eq!(skip.row.as_str(), "row-1");
                let named = [
                    format!("{pdl:?}"),
                    format!("{granularity:?}"),
                    format!("{start:?}"),
                    format!("{:?}", interval.as_deref().unwrap_or_default()),
                    format!("value {value} "),
                ];
                proptest::prop_assert!(named.iter().any(|n| skip.reason.contains(n.as_str())), "{}", skip.reason);
            }
            proptest::prop_assert!(report.skipped.len() <= 1);
            let _ = p.finish(&contract(), &mut report);
        }
    }
}
