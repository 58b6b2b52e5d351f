//! `myelectricaldata_zen_flex_day`: EDF's Zen Flex calendar, from
//! `zen_flex_days` (MyElectricalData 2.3+).

use chrono::{Datelike, NaiveDate};

use super::{Contract, Report, Sample, Series};
use crate::model::calendar::day_millis;

/// One row of `zen_flex_days`, as read.
#[derive(Debug, Clone)]
pub struct ZenFlexRow {
    /// `id`: the day, `YYYY-MM-DD`.
    pub id: String,
    /// `day_type` as text.
    pub day_type: String,
}

/// The Zen Flex day types, as the `day_type` label writes them.
pub const DAY_TYPES: [&str; 3] = ["ECO", "SOBRIETE", "BONUS"];

/// One series per day type: 1 on the days of that type, 0 on the others.
pub fn zen_flex_series(
    contract: &Contract,
    rows: &[ZenFlexRow],
    report: &mut Report,
) -> Vec<Series> {
    let mut days: Vec<(NaiveDate, usize)> = Vec::with_capacity(rows.len());
    for row in rows {
        let date = NaiveDate::parse_from_str(&row.id, "%Y-%m-%d")
            .ok()
            .filter(|d| (1..=9999).contains(&d.year()));
        let Some(date) = date else {
            report.skip(
                "zen_flex_days",
                row.id.clone(),
                "id is not a YYYY-MM-DD date",
            );
            continue;
        };
        let normal = row.day_type.trim().to_ascii_uppercase();
        let Some(kind) = DAY_TYPES.iter().position(|t| *t == normal) else {
            report.skip(
                "zen_flex_days",
                row.id.clone(),
                format!("day_type {:?} is not ECO, SOBRIETE or BONUS", row.day_type),
            );
            continue;
        };
        days.push((date, kind));
    }
    days.sort();
    days.dedup_by_key(|(date, _)| *date);
    DAY_TYPES
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let samples = days
                .iter()
                .map(|(date, kind)| {
                    Sample::whole(day_millis(contract.tz, *date), i64::from(*kind == i))
                })
                .collect();
            contract.series(
                super::metric::ZEN_FLEX_DAY,
                &[("day_type", name)],
                samples,
                report,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use std::collections::BTreeMap;

    #[test]
    fn each_day_is_one_for_its_type_and_zero_for_the_two_others() {
        let c = Contract::new(
            chrono_tz::Europe::Paris,
            &BTreeMap::new(),
            1_800_000_000_000,
        );
        let row = |id: &str, t: &str| ZenFlexRow {
            id: id.into(),
            day_type: t.into(),
        };
        let rows = [
            row("2026-01-15", "SOBRIETE"),
            row("2026-01-16", "eco"),
            row("2026-01-17", "PURPLE"),
            row("someday", "ECO"),
        ];
        let mut r = Report::default();
        let series = zen_flex_series(&c, &rows, &mut r);
        assert_eq!(r.skipped.len(), 2);
        assert_eq!(series.len(), 3);
        assert_eq!(
            series[1].head,
            r#"myelectricaldata_zen_flex_day{day_type="SOBRIETE"}"#
        );
        let values = |s: &Series| s.samples.iter().map(|x| x.value / 1000).collect::<Vec<_>>();
        assert_eq!(values(&series[0]), [0, 1]);
        assert_eq!(values(&series[1]), [1, 0]);
        assert_eq!(values(&series[2]), [0, 0]);
        // 2026-01-15 00:00 in Paris.
        assert_eq!(series[1].samples[0].ts, 1_768_431_600_000);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn any_row_is_a_day_of_its_type_or_a_skip_naming_its_id_and_type(
            day in proptest::option::of((1i32..=9999, 1u32..=12, 1u32..=31)),
            id in crate::model::arbitrary::text("0-9\\-+ "),
            day_type in proptest::prop_oneof![
                proptest::sample::select(vec!["ECO", "sobriete", " Bonus ", "SOBRIÉTÉ"]).prop_map(String::from),
                crate::model::arbitrary::text("A-Za-z "),
            ],
        ) {
            let c = Contract::new(chrono_tz::Europe::Paris, &BTreeMap::new(), i64::MAX / 2);
            let date = day.and_then(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d));
            let id = date.map_or(id, |d| d.format("%Y-%m-%d").to_string());
            let mut r = Report::default();
            let row = ZenFlexRow { id: id.clone(), day_type: day_type.clone() };
            let series = zen_flex_series(&c, &[row], &mut r);
            let kind = DAY_TYPES.iter().position(|t| t.eq_ignore_ascii_case(day_type.trim()));
            let ones: Vec<usize> = series
                .iter()
                .enumerate()
                .filter(|(_, s)| s.samples.iter().any(|x| x.value == 1000))
                .map(|(i, _)| i)
                .collect();
            match kind {
                Some(k) if date.is_some() => {
                    proptest::prop_assert!(r.skipped.is_empty());
                    proptest::prop_assert_eq!(ones, vec![k]);
                }
                _ => {
                    proptest::prop_assert_eq!(r.skipped.len(), 1);
                    proptest::prop_assert!(ones.is_empty());
                }
            }
            for skip in &r.skipped {
                proptest::prop_assert_eq!(&skip.row, &id);
                proptest::prop_assert!(
                    skip.reason.starts_with("id ") || skip.reason.contains(&format!("{day_type:?}")),
                    "{}", skip.reason
                );
            }
        }
    }
}
