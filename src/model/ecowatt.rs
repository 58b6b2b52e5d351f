//! `myelectricaldata_ecowatt_level` and `myelectricaldata_ecowatt_hourly_level`.

use chrono::{Duration, NaiveDateTime};

use super::{Contract, Report, Sample, Series};
use crate::model::calendar::day_millis;

/// One row of `ecowatt`, as read.
#[derive(Debug, Clone)]
pub struct EcowattRow {
    /// `id`.
    pub id: i64,
    /// `periode`: the day the signal is for; `None` when out of years 1 to 9999.
    pub periode: Option<NaiveDateTime>,
    /// The day's level.
    pub dvalue: i64,
    /// The hourly levels, expected to be a JSON list of integers 0..=3.
    pub values: serde_json::Value,
}

const LABELS: [(&str, &str); 1] = [("region", "france")];

/// The EcoWatt series: the day level and the hourly levels.
pub fn ecowatt_series(
    contract: &Contract,
    rows: &[EcowattRow],
    report: &mut Report,
) -> Vec<Series> {
    let mut levels = Vec::with_capacity(rows.len());
    let mut hourly = Vec::with_capacity(rows.len() * 24);
    for row in rows {
        let Some(periode) = row.periode else {
            report.skip(
                "ecowatt",
                row.id.to_string(),
                "periode is outside years 1 to 9999",
            );
            continue;
        };
        let date = periode_date(periode, contract.tz);
        let day = day_millis(contract.tz, date);
        let next_day = day_millis(contract.tz, date + Duration::days(1));
        if !(0..=3).contains(&row.dvalue) {
            report.skip(
                "ecowatt",
                row.id.to_string(),
                format!("dvalue {} is not a level 0..=3", row.dvalue),
            );
            continue;
        }
        levels.push(Sample::whole(day, row.dvalue));
        match hourly_levels(&row.values) {
            Some(values) => {
                for (h, value) in values.into_iter().enumerate() {
                    let ts = day + h as i64 * 3_600_000;
                    if ts < next_day {
                        hourly.push(Sample::whole(ts, value));
                    }
                }
            }
            None => report.skip(
                "ecowatt",
                row.id.to_string(),
                "values is not a list of at most 25 integer levels 0..=3; its hourly levels are left out",
            ),
        }
    }
    let mut out = Vec::with_capacity(2);
    out.extend(contract.series(super::metric::ECOWATT_LEVEL, &LABELS, levels, report));
    out.extend(contract.series(super::metric::ECOWATT_HOURLY_LEVEL, &LABELS, hourly, report));
    out
}

/// The local date of `periode`, which has no zone: MyElectricalData writes
/// either local midnight, or the UTC instant of local midnight (23:00 or
/// 22:00 the day before in Paris). Midnight is a date as it stands; any
/// other time is read as a UTC instant.
pub fn periode_date(periode: NaiveDateTime, tz: chrono_tz::Tz) -> chrono::NaiveDate {
    if periode.time() == chrono::NaiveTime::MIN {
        periode.date()
    } else {
        periode.and_utc().with_timezone(&tz).date_naive()
    }
}

fn hourly_levels(values: &serde_json::Value) -> Option<Vec<i64>> {
    let list = values.as_array()?;
    if list.len() > 25 {
        return None;
    }
    list.iter()
        .map(|v| v.as_i64().filter(|l| (0..=3).contains(l)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn contract() -> Contract {
        Contract::new(
            chrono_tz::Europe::Paris,
            &BTreeMap::new(),
            1_800_000_000_000,
        )
    }

    fn row(id: i64, periode: &str, values: serde_json::Value) -> EcowattRow {
        EcowattRow {
            id,
            periode: Some(periode.parse().unwrap()),
            dvalue: 1,
            values,
        }
    }

    #[test]
    fn the_seed_level_line_is_reproduced_from_local_or_utc_midnight() {
        for periode in ["2024-01-15T00:00:00", "2024-01-14T23:00:00"] {
            let mut r = Report::default();
            let s = ecowatt_series(
                &contract(),
                &[row(1, periode, serde_json::json!(vec![1; 24]))],
                &mut r,
            );
            assert_eq!(
                s[0].head,
                r#"myelectricaldata_ecowatt_level{region="france"}"#
            );
            assert_eq!(s[0].samples, vec![Sample::whole(1_705_273_200_000, 1)]);
            assert_eq!(s[1].samples.len(), 24);
        }
    }

    #[test]
    fn hourly_levels_stop_at_the_next_local_midnight() {
        let mut r = Report::default();
        // Spring forward: a 23-hour day keeps 23 of 24 values.
        let s = ecowatt_series(
            &contract(),
            &[row(
                1,
                "2024-03-31T00:00:00",
                serde_json::json!(vec![2; 24]),
            )],
            &mut r,
        );
        assert_eq!(s[1].samples.len(), 23);
        // Fall back: a 25-hour day keeps all 24.
        let s = ecowatt_series(
            &contract(),
            &[row(
                1,
                "2024-10-27T00:00:00",
                serde_json::json!(vec![2; 24]),
            )],
            &mut r,
        );
        assert_eq!(s[1].samples.len(), 24);
        assert_eq!(s[1].samples[3].ts - s[1].samples[0].ts, 3 * 3_600_000);
    }

    #[test]
    fn malformed_values_skip_the_hours_but_keep_the_day_level() {
        let mut r = Report::default();
        let rows = [
            row(1, "2024-01-15T00:00:00", serde_json::json!({"pas": 0})),
            row(2, "2024-01-16T00:00:00", serde_json::json!([1, 9])),
            row(3, "2024-01-17T00:00:00", serde_json::json!(["1"])),
        ];
        let s = ecowatt_series(&contract(), &rows, &mut r);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].samples.len(), 3);
        assert_eq!(r.skipped.len(), 3);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn a_list_of_levels_reads_as_itself(levels in proptest::collection::vec(0i64..=3, 0..=25)) {
            proptest::prop_assert_eq!(hourly_levels(&serde_json::json!(levels)), Some(levels));
        }

        #[test]
        fn any_values_give_levels_0_to_3_or_a_skip_naming_the_row(
            values in crate::model::arbitrary::json("0-9"),
            id in proptest::prelude::any::<i64>(),
            dvalue in -1i64..5,
        ) {
            let got = hourly_levels(&values);
            let want = values.as_array().filter(|l| l.len() <= 25).and_then(|l| {
                l.iter().map(|v| v.as_i64().filter(|x| (0..=3).contains(x))).collect::<Option<Vec<_>>>()
            });
            proptest::prop_assert_eq!(&got, &want, "{}", values);
            let mut r = Report::default();
            let row = EcowattRow { id, periode: Some("2024-03-31T00:00:00".parse().unwrap()), dvalue, values: values.clone() };
            let _ = ecowatt_series(&contract(), &[row], &mut r);
            proptest::prop_assert_eq!(r.skipped.len(), usize::from(!(0..=3).contains(&dvalue) || got.is_none()));
            for skip in &r.skipped {
                proptest::prop_assert_eq!(&skip.row, &id.to_string());
                if !(0..=3).contains(&dvalue) {
                    proptest::prop_assert!(skip.reason.contains(&format!("dvalue {dvalue} ")), "{}", skip.reason);
                }
            }
        }
    }
}
