//! `myelectricaldata_consumption_wh` and `myelectricaldata_production_wh`:
//! daily, detailed (30-minute) and monthly series of one PDL.

use std::collections::BTreeMap;

use std::borrow::Cow;

use chrono::NaiveDate;

use super::{is_pdl, Contract, Family, Report, Sample, Series};
use crate::calendar::{day_millis, local_millis, month_millis, parse_interval_start};

/// Readings above this many Wh are taken for corrupt rows: it is more than a
/// large industrial site draws in a day.
pub const MAX_WH: i64 = 100_000_000;

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
            Family::Production => "myelectricaldata_production_wh",
            _ => "myelectricaldata_consumption_wh",
        }
    }

    /// The source table of an energy family.
    pub fn energy_table(self) -> &'static str {
        match self {
            Family::Production => "production_data",
            _ => "consumption_data",
        }
    }
}

/// Collects the rows of one PDL, then yields its series.
#[derive(Debug)]
pub struct PdlEnergy {
    family: Family,
    pdl: String,
    /// The daily rows by date (the latest `updated_at` wins).
    daily: BTreeMap<NaiveDate, Daily>,
    /// Detailed samples by quality (a handful of qualities at most).
    detailed: Vec<(Option<String>, Vec<Sample>)>,
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

    /// Adds one row of this PDL, or records why it is skipped.
    pub fn push(&mut self, contract: &Contract, row: EnergyRow<'_>, report: &mut Report) {
        let table = self.family.energy_table();
        if !is_pdl(row.pdl) {
            report.skip(
                table,
                row.id,
                format!("usage_point_id {:?} is not 14 digits", row.pdl),
            );
            return;
        }
        if !(0..=MAX_WH).contains(&row.value) {
            report.skip(
                table,
                row.id,
                format!("value {} Wh is out of range 0..={MAX_WH}", row.value),
            );
            return;
        }
        let Some(date) = row.date else {
            report.skip(table, row.id, "date is outside years 1 to 9999");
            return;
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
            }
            "detailed" => {
                let Some(time) = row.interval_start.and_then(parse_interval_start) else {
                    report.skip(
                        table,
                        row.id,
                        format!("interval_start {:?} is not HH:MM", row.interval_start),
                    );
                    return;
                };
                let ts = local_millis(contract.tz, date.and_time(time));
                let slot = match self
                    .detailed
                    .iter()
                    .position(|(q, _)| q.as_deref() == quality)
                {
                    Some(i) => i,
                    None => {
                        self.detailed
                            .push((quality.map(str::to_string), Vec::new()));
                        self.detailed.len() - 1
                    }
                };
                self.detailed[slot].1.push(Sample {
                    ts,
                    value: row.value,
                });
            }
            other => report.skip(
                table,
                row.id,
                format!("granularity {other:?} is neither daily nor detailed"),
            ),
        }
    }

    /// A daily row. Two for one date are possible where the unique
    /// constraint lets NULL `interval_start`s differ: the later `updated_at`
    /// (then the greater `id`) wins, as the later write would have.
    fn push_daily(&mut self, date: NaiveDate, new: Daily, report: &mut Report) {
        let table = self.family.energy_table();
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
            daily.entry(quality).or_default().push(Sample {
                ts: day_millis(contract.tz, date),
                value,
            });
            *monthly.entry(month_millis(contract.tz, date)).or_default() += value;
        }
        let mut out = Vec::new();
        let mut detailed = self.detailed;
        detailed.sort_by(|a, b| a.0.cmp(&b.0));
        let daily: Vec<_> = daily.into_iter().collect();
        for (kind, by_quality) in [("daily", daily), ("detailed", detailed)] {
            for (quality, samples) in by_quality {
                let mut labels = vec![("pdl", pdl), ("type", kind)];
                if let Some(q) = quality.as_deref() {
                    labels.push(("quality", q));
                }
                out.extend(contract.series(name, &labels, samples, report));
            }
        }
        let monthly = monthly
            .into_iter()
            .map(|(ts, value)| Sample { ts, value })
            .collect();
        out.extend(contract.series(name, &[("pdl", pdl), ("type", "monthly")], monthly, report));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            super::super::render::write_line(&mut buf, &daily.head, s.value, s.ts);
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
                r#"myelectricaldata_production_wh{pdl="12345678901234",type="monthly"}"#,
            ]
        );
        let monthly: Vec<i64> = series[4].samples.iter().map(|s| s.value).collect();
        assert_eq!(monthly, [30, 5]);
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
        assert_eq!(p.finish(&c, &mut r).len(), 1);
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
        assert_eq!(series[0].samples[0].value, 2);
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
}
