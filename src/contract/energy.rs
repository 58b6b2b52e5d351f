//! `myelectricaldata_consumption_wh` and `myelectricaldata_production_wh`:
//! daily, detailed (30-minute) and monthly series of one PDL.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{is_pdl, Contract, Family, Report, Sample, Series};
use crate::calendar::{day_millis, local_millis, month_millis, parse_interval_start};

/// Readings above this many Wh are taken for corrupt rows: it is more than a
/// large industrial site draws in a day.
pub const MAX_WH: i64 = 100_000_000;

/// One row of `consumption_data` or `production_data`, as read.
#[derive(Debug, Clone)]
pub struct EnergyRow {
    /// The row's `id`, to name it in warnings.
    pub id: String,
    /// `usage_point_id`.
    pub pdl: String,
    /// Local date; `None` when PostgreSQL holds one chrono cannot (infinity, year 10000 and after).
    pub date: Option<NaiveDate>,
    /// `granularity` as text: `daily` or `detailed`.
    pub granularity: String,
    /// `HH:MM` on detailed rows.
    pub interval_start: Option<String>,
    /// Wh.
    pub value: i64,
    /// `raw_data->>'quality'` when it is a non-empty string.
    pub quality: Option<String>,
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
    /// The daily rows by date: quality and value (the last row read wins).
    daily: BTreeMap<NaiveDate, (Option<String>, i64)>,
    detailed: BTreeMap<Option<String>, Vec<Sample>>,
}

impl PdlEnergy {
    /// Starts collecting the rows of `pdl`.
    pub fn new(family: Family, pdl: &str) -> Self {
        Self {
            family,
            pdl: pdl.to_string(),
            daily: BTreeMap::new(),
            detailed: BTreeMap::new(),
        }
    }

    /// The PDL being collected.
    pub fn pdl(&self) -> &str {
        &self.pdl
    }

    /// Adds one row of this PDL, or records why it is skipped.
    pub fn push(&mut self, contract: &Contract, row: EnergyRow, report: &mut Report) {
        let table = self.family.energy_table();
        if !is_pdl(&row.pdl) {
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
        match row.granularity.as_str() {
            "daily" => {
                // Rows are read in updated_at order: a duplicate daily row
                // (possible where the unique constraint lets NULLs differ)
                // gives way to the later one.
                if self.daily.insert(date, (row.quality, row.value)).is_some() {
                    report.skip(
                        table,
                        row.id,
                        format!("a second daily row for {date}; it replaces the first"),
                    );
                }
            }
            "detailed" => {
                let Some(time) = row.interval_start.as_deref().and_then(parse_interval_start)
                else {
                    report.skip(
                        table,
                        row.id,
                        format!("interval_start {:?} is not HH:MM", row.interval_start),
                    );
                    return;
                };
                let ts = local_millis(contract.tz, date.and_time(time));
                self.detailed.entry(row.quality).or_default().push(Sample {
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

    /// The PDL's series: daily and detailed per quality, and monthly.
    pub fn finish(self, contract: &Contract, report: &mut Report) -> Vec<Series> {
        let name = self.family.energy_metric();
        let pdl = self.pdl.as_str();
        let mut daily: BTreeMap<Option<String>, Vec<Sample>> = BTreeMap::new();
        let mut monthly: BTreeMap<i64, i64> = BTreeMap::new();
        for (date, (quality, value)) in self.daily {
            daily.entry(quality).or_default().push(Sample {
                ts: day_millis(contract.tz, date),
                value,
            });
            *monthly.entry(month_millis(contract.tz, date)).or_default() += value;
        }
        let mut out = Vec::new();
        for (kind, by_quality) in [("daily", daily), ("detailed", self.detailed)] {
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
        id: &str,
        date: &str,
        granularity: &str,
        start: Option<&str>,
        value: i64,
        quality: Option<&str>,
    ) -> EnergyRow {
        EnergyRow {
            id: id.into(),
            pdl: "12345678901234".into(),
            date: Some(date.parse().unwrap()),
            granularity: granularity.into(),
            interval_start: start.map(Into::into),
            value,
            quality: quality.map(Into::into),
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
        short.pdl = "123".into();
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
}
