//! `myelectricaldata_max_power_va`: the day's peak power of each PDL, from
//! `max_power_data` (MyElectricalData 2.2+).

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime};

use super::energy::MAX_WH;
use super::{is_pdl, Contract, Report, Sample, Series};
use crate::model::calendar::{local_millis, parse_interval_start};

/// One row of `max_power_data`, as read.
#[derive(Debug, Clone)]
pub struct MaxPowerRow {
    /// The row's `id`, to name it in warnings.
    pub id: String,
    /// `usage_point_id`.
    pub pdl: String,
    /// Local date; `None` when out of years 1 to 9999.
    pub date: Option<NaiveDate>,
    /// `interval_start`: `HH:MM` local time of the peak, or `None`.
    pub interval_start: Option<String>,
    /// VA.
    pub value: i64,
    /// `raw_data.is_placeholder` is `true`.
    pub placeholder: bool,
}

const TABLE: &str = "max_power_data";

/// One series per PDL: the peak at its local time (00:00 when the row
/// names no time).
pub fn max_power_series(
    contract: &Contract,
    rows: &[MaxPowerRow],
    report: &mut Report,
) -> Vec<Series> {
    let mut by_pdl: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for row in rows {
        if row.placeholder {
            continue;
        }
        if !is_pdl(&row.pdl) {
            report.skip(
                TABLE,
                row.id.clone(),
                format!("usage_point_id {:?} is not 14 digits", row.pdl),
            );
            continue;
        }
        if !(0..=MAX_WH).contains(&row.value) {
            report.skip(
                TABLE,
                row.id.clone(),
                format!("value {} VA is out of range 0..={MAX_WH}", row.value),
            );
            continue;
        }
        let Some(date) = row.date else {
            report.skip(TABLE, row.id.clone(), "date is outside years 1 to 9999");
            continue;
        };
        let time = match row.interval_start.as_deref() {
            None => NaiveTime::MIN,
            Some(text) => match parse_interval_start(text) {
                Some(t) => t,
                None => {
                    report.skip(
                        TABLE,
                        row.id.clone(),
                        format!("interval_start {text:?} is not HH:MM"),
                    );
                    continue;
                }
            },
        };
        let ts = local_millis(contract.tz, date.and_time(time));
        by_pdl
            .entry(&row.pdl)
            .or_default()
            .push(Sample::whole(ts, row.value));
    }
    by_pdl
        .into_iter()
        .filter_map(|(pdl, samples)| {
            contract.series(
                super::metric::MAX_POWER_VA,
                &[("pdl", pdl)],
                samples,
                report,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, date: &str, start: Option<&str>, value: i64) -> MaxPowerRow {
        MaxPowerRow {
            id: id.into(),
            pdl: "12345678901234".into(),
            date: date.parse().ok(),
            interval_start: start.map(str::to_string),
            value,
            placeholder: false,
        }
    }

    #[test]
    fn the_peak_is_stamped_at_its_local_time_or_midnight() {
        let c = Contract::new(
            chrono_tz::Europe::Paris,
            &BTreeMap::new(),
            1_800_000_000_000,
        );
        let mut r = Report::default();
        let mut hole = row("p", "2024-01-17", Some("10:00"), 0);
        hole.placeholder = true;
        let rows = [
            row("a", "2024-01-15", Some("18:42"), 6120),
            row("b", "2024-01-16", None, 5000),
            row("c", "2024-01-18", Some("24:00"), 1),
            hole,
        ];
        let series = max_power_series(&c, &rows, &mut r);
        assert_eq!(series.len(), 1);
        assert_eq!(
            series[0].head,
            r#"myelectricaldata_max_power_va{pdl="12345678901234"}"#
        );
        // 2024-01-15 18:42 and 2024-01-16 00:00 in Paris (UTC+1).
        assert_eq!(
            series[0].samples,
            vec![
                Sample::whole(1_705_340_520_000, 6120),
                Sample::whole(1_705_359_600_000, 5000)
            ]
        );
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].row, "c");
    }
}
