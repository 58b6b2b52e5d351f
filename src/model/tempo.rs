//! `myelectricaldata_tempo_color` and `myelectricaldata_tempo_remaining`.

use chrono::{Datelike, NaiveDate};

use super::{Contract, Report, Sample, Series};
use crate::model::calendar::{day_millis, tempo_remaining, TempoColor};

/// One row of `tempo_days`, as read.
#[derive(Debug, Clone)]
pub struct TempoRow {
    /// `id`: the day, `YYYY-MM-DD`.
    pub id: String,
    /// `color` as text.
    pub color: String,
}

/// The days of `tempo_days` and their colours, sorted by date, one per
/// date; rows that name no date or colour are reported.
pub fn tempo_days(rows: &[TempoRow], report: &mut Report) -> Vec<(NaiveDate, TempoColor)> {
    let mut days: Vec<(NaiveDate, TempoColor)> = Vec::with_capacity(rows.len());
    for row in rows {
        let date = NaiveDate::parse_from_str(&row.id, "%Y-%m-%d")
            .ok()
            .filter(|d| (1..=9999).contains(&d.year()));
        let Some(date) = date else {
            report.skip("tempo_days", row.id.clone(), "id is not a YYYY-MM-DD date");
            continue;
        };
        let Some(color) = TempoColor::parse(&row.color) else {
            report.skip(
                "tempo_days",
                row.id.clone(),
                format!("color {:?} is not BLUE, WHITE or RED", row.color),
            );
            continue;
        };
        days.push((date, color));
    }
    days.sort();
    days.dedup_by_key(|(date, _)| *date);
    days
}

/// The Tempo series of every PDL: a colour series and a remaining-days
/// series for each of the three colours.
pub fn tempo_series(
    contract: &Contract,
    rows: &[TempoRow],
    pdls: &[String],
    report: &mut Report,
) -> Vec<Series> {
    let days = tempo_days(rows, report);
    let remaining = tempo_remaining(&days);
    let stamps: Vec<i64> = days
        .iter()
        .map(|(date, _)| day_millis(contract.tz, *date))
        .collect();

    let mut out = Vec::with_capacity(pdls.len() * 6);
    for pdl in pdls {
        for color in TempoColor::ALL {
            let samples = days
                .iter()
                .zip(&stamps)
                .map(|((_, c), &ts)| Sample::whole(ts, i64::from(*c == color)))
                .collect();
            out.extend(contract.series(
                super::metric::TEMPO_COLOR,
                &[("pdl", pdl), ("color", color.french())],
                samples,
                report,
            ));
        }
        for color in TempoColor::ALL {
            let samples = remaining
                .iter()
                .zip(&stamps)
                .map(|(r, &ts)| Sample::whole(ts, i64::from(r[color.index()])))
                .collect();
            out.extend(contract.series(
                super::metric::TEMPO_REMAINING,
                &[("pdl", pdl), ("color", color.english())],
                samples,
                report,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use std::collections::BTreeMap;

    #[test]
    fn the_seed_tempo_lines_are_reproduced() {
        let c = Contract::new(
            chrono_tz::Europe::Paris,
            &BTreeMap::new(),
            1_800_000_000_000,
        );
        let mut rows: Vec<TempoRow> = (0..5)
            .map(|i| TempoRow {
                id: format!("2024-01-{:02}", 11 + i),
                color: "BLUE".into(),
            })
            .collect();
        rows[1].color = "WHITE".into();
        rows[2].color = "WHITE".into();
        rows[3].color = "WHITE".into();
        rows.push(TempoRow {
            id: "2024-01-16".into(),
            color: "PURPLE".into(),
        });
        rows.push(TempoRow {
            id: "not a date".into(),
            color: "RED".into(),
        });
        let mut r = Report::default();
        let series = tempo_series(&c, &rows, &["12345678901234".to_string()], &mut r);
        assert_eq!(series.len(), 6);
        assert_eq!(r.skipped.len(), 2);
        let bleu = &series[0];
        assert_eq!(
            bleu.head,
            r#"myelectricaldata_tempo_color{pdl="12345678901234",color="BLEU"}"#
        );
        assert_eq!(
            bleu.samples.last().unwrap(),
            &Sample::whole(1_705_273_200_000, 1)
        );
        let white = &series[4];
        assert_eq!(
            white.head,
            r#"myelectricaldata_tempo_remaining{pdl="12345678901234",color="white"}"#
        );
        assert_eq!(
            white.samples.last().unwrap(),
            &Sample::whole(1_705_273_200_000, 40)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn any_row_is_a_day_or_a_skip_naming_its_id_and_colour(
            day in proptest::option::of((1i32..=9999, 1u32..=12, 1u32..=31)),
            id in crate::model::arbitrary::text("0-9\\-+ "),
            color in proptest::prop_oneof![
                proptest::sample::select(vec!["BLUE", "white", " Red ", "ROUGE"]).prop_map(String::from),
                crate::model::arbitrary::text("A-Za-z "),
            ],
        ) {
            let date = day.and_then(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d));
            let id = date.map_or(id, |d| d.format("%Y-%m-%d").to_string());
            let mut r = Report::default();
            let days = tempo_days(&[TempoRow { id: id.clone(), color: color.clone() }], &mut r);
            match TempoColor::parse(&color) {
                Some(c) if date.is_some() => proptest::prop_assert_eq!(days, vec![(date.unwrap(), c)]),
                _ => proptest::prop_assert!(days.len() + r.skipped.len() == 1),
            }
            for skip in &r.skipped {
                proptest::prop_assert_eq!(&skip.row, &id);
                proptest::prop_assert!(
                    skip.reason.starts_with("id ") || skip.reason.contains(&format!("{color:?}")),
                    "{}", skip.reason
                );
            }
        }
    }
}
