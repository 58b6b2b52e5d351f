//! The splitting, each case against values computed by hand.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::NaiveTime;

use super::*;
use crate::model::calendar::detailed_start;
use crate::model::energy::{interval_energy_milli, EnergyRow, PdlEnergy};
use crate::model::Family;

const PARIS: Tz = chrono_tz::Europe::Paris;

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// Where the client's label `label` (minutes) of `d` really starts.
fn at(d: &str, label: u16, length: u16) -> TrueStart {
    let t = NaiveTime::from_hms_opt(u32::from(label / 60), u32::from(label % 60), 0).unwrap();
    detailed_start(PARIS, date(d), t, u32::from(length))
}

/// A day of `length`-minute rows at `watts`, at the client's labels given.
fn day_of(d: &str, length: u16, labels: impl IntoIterator<Item = u16>, watts: i64) -> Day {
    let mut day = Day::new(date(d), length);
    for l in labels {
        day.push(at(d, l, length), length, watts * i64::from(length));
    }
    day
}

/// Every start time of a full day.
fn full(length: u16) -> impl Iterator<Item = u16> {
    (0..DAY).step_by(usize::from(length))
}

/// The labels MyElectricalData stores on the March change day: it shifts
/// Enedis's end-of-interval labels back by the length as a naive time, so
/// no label in [02:00 - length, 03:00 - length) is there.
fn march(length: u16) -> impl Iterator<Item = u16> {
    full(length).filter(move |s| !(120 - length..180 - length).contains(s))
}

#[test]
fn a_tempo_day_runs_from_six_to_six_across_midnight() {
    // 1000 W for 30 minutes is 500 Wh on the day, 2000 W is 1000 Wh on the next.
    let d = day_of("2024-01-15", 30, full(30), 1000);
    let next = day_of("2024-01-16", 30, full(30), 2000);
    // HP 06:00-22:00: 32 × 500; HC 22:00-24:00 then 00:00-06:00: 4 × 500 + 12 × 1000.
    assert_eq!(tempo_day(PARIS, &d, &next), Some([16_000_000, 14_000_000]));
    // Not the next date: no Tempo day.
    let later = day_of("2024-01-17", 30, full(30), 2000);
    assert_eq!(tempo_day(PARIS, &d, &later), None);
}

#[test]
fn the_tempo_day_before_spring_forward_lasts_23_hours() {
    let d = day_of("2024-03-30", 30, full(30), 1000);
    // Labels 00:00, 00:30, 01:00, 02:30, 03:00, ... 05:30: ten rows, five hours.
    let next = day_of("2024-03-31", 30, march(30), 1000);
    assert_eq!(next.slots.iter().filter(|(_, m, _)| *m < 360).count(), 10);
    // HP 32 × 500; HC (4 + 10) × 500: 23 hours in all.
    assert_eq!(tempo_day(PARIS, &d, &next), Some([16_000_000, 7_000_000]));
    // The calendar day has 46 intervals, which is complete.
    let sums = calendar_day(PARIS, &next, &OffPeakHours::default()).unwrap();
    assert_eq!(sums[0] + sums[1], 46 * 500_000);
    // One row fewer is not.
    let short = day_of("2024-03-31", 30, march(30).filter(|s| *s != 300), 1000);
    assert_eq!(tempo_day(PARIS, &d, &short), None);
    assert_eq!(calendar_day(PARIS, &short, &OffPeakHours::default()), None);
    // Nor is a day whose labels are wall-clock starts (01:30 for the
    // interval the client labels 02:30): 01:30's end, 02:00, does not
    // exist and lands on 00:30's instant.
    let naive = day_of(
        "2024-03-31",
        30,
        full(30).filter(|s| !(120..180).contains(s)),
        1000,
    );
    assert_eq!(calendar_day(PARIS, &naive, &OffPeakHours::default()), None);
}

#[test]
fn on_the_spring_day_the_row_02_30_is_peak_under_off_peak_hours_from_02_00() {
    // The row labelled 02:30 is 01:30-02:00 local: before 02:00, so peak.
    let mut day = Day::new(date("2024-03-31"), 30);
    for l in march(30) {
        let watts = if l == 150 { 7000 } else { 1000 };
        day.push(at("2024-03-31", l, 30), 30, watts * 30);
    }
    let hours = OffPeakHours::parse_setting("02:00-07:00").unwrap();
    // HC 03:00-07:00 by the clock: 8 intervals of 500 Wh. HP: the 37 other
    // intervals of 500 Wh and the 01:30 one of 3500 Wh.
    assert_eq!(
        calendar_day(PARIS, &day, &hours),
        Some([37 * 500_000 + 3_500_000, 8 * 500_000])
    );
}

#[test]
fn the_tempo_day_before_fall_back_is_complete_with_the_rows_the_client_keeps() {
    // 25 hours, but the client keeps one row per label: 36 + 12 rows, the
    // labels 01:30 and 02:00 standing for 02:30 CEST and 02:00 CET.
    let d = day_of("2024-10-26", 30, full(30), 1000);
    let next = day_of("2024-10-27", 30, full(30), 3000);
    // HP 32 × 500; HC 4 × 500 + 12 × 1500.
    assert_eq!(tempo_day(PARIS, &d, &next), Some([16_000_000, 20_000_000]));
    let sums = calendar_day(PARIS, &next, &OffPeakHours::default()).unwrap();
    // HC 00:00-06:00 and 22:00-24:00: 16 × 1500; HP 32 × 1500.
    assert_eq!(sums, [48_000_000, 24_000_000]);
}

#[test]
fn a_ten_minute_meter_sums_its_rounded_intervals() {
    // 100 W for 10 minutes is 16.667 Wh once rounded, as the load curve shows it.
    let d = day_of("2024-11-04", 10, full(10), 100);
    let sums = calendar_day(PARIS, &d, &OffPeakHours::default()).unwrap();
    // HC: 12 starts from 22:00, 36 before 06:00; HP: the other 96. Each
    // interval is 16.666… Wh: summed exactly, 1600 Wh and 800 Wh, where
    // adding the load curve's rounded 16.667 would give 1600.032.
    assert_eq!(sums, [1_600_000, 800_000]);
    assert_ne!(sums[0], 96 * interval_energy_milli(100, 10));
    // The March day of a 10-minute meter: 138 starts, complete.
    let m = day_of("2024-03-31", 10, march(10), 100);
    assert_eq!(m.slots.len(), 138);
    assert!(calendar_day(PARIS, &m, &OffPeakHours::default()).is_some());
    // Its Tempo day before: 96 peak and 12 + 30 off-peak intervals of
    // 1000 W × min: 96000 / 60 and 42000 / 60 Wh.
    let before = day_of("2024-03-30", 10, full(10), 100);
    assert_eq!(tempo_day(PARIS, &before, &m), Some([1_600_000, 700_000]));
    // Its autumn day: 144 labels, of which the six of 01:50-02:50 stand for
    // 02:00-03:00 CET and those of 01:00-01:50 for 02:00-03:00 CEST.
    let autumn = day_of("2024-10-27", 10, full(10), 100);
    assert_eq!(autumn.slots.len(), 144);
    assert!(calendar_day(PARIS, &autumn, &OffPeakHours::default()).is_some());
}

#[test]
fn off_peak_ranges_split_the_calendar_day() {
    let d = day_of("2024-11-04", 30, full(30), 1000);
    // Across midnight: 23:00-07:00 is 2 + 14 half hours.
    let night = OffPeakHours::parse_setting("23:00-07:00").unwrap();
    assert_eq!(
        calendar_day(PARIS, &d, &night),
        Some([32 * 500_000, 16 * 500_000])
    );
    // Two ranges: 02:30-06:30 (8 half hours) and 13:00-15:00 (4).
    let two = OffPeakHours::parse_setting("02:30-06:30,13:00-15:00").unwrap();
    assert_eq!(
        calendar_day(PARIS, &d, &two),
        Some([36 * 500_000, 12 * 500_000])
    );
    // Varying power: the interval belongs to the period at its start.
    let mut v = Day::new(date("2024-11-04"), 30);
    for s in full(30) {
        v.push(at("2024-11-04", s, 30), 30, i64::from(s) * 30);
    }
    let hc: i64 = full(30)
        .filter(|s| *s >= 1380 || *s < 420)
        .map(|s| interval_energy_milli(i64::from(s), 30))
        .sum();
    let all: i64 = full(30)
        .map(|s| interval_energy_milli(i64::from(s), 30))
        .sum();
    assert_eq!(calendar_day(PARIS, &v, &night), Some([all - hc, hc]));
}

#[test]
fn a_day_missing_one_interval_gives_nothing_and_spares_the_other_tempo_day() {
    let d = day_of("2024-11-03", 30, full(30), 1000);
    // 03:00 missing on the 4th.
    let gap = day_of("2024-11-04", 30, full(30).filter(|s| *s != 180), 1000);
    let next = day_of("2024-11-05", 30, full(30), 1000);
    assert_eq!(calendar_day(PARIS, &gap, &OffPeakHours::default()), None);
    assert_eq!(tempo_day(PARIS, &d, &gap), None);
    // The Tempo day of the 4th starts at 06:00, after the gap.
    assert_eq!(tempo_day(PARIS, &gap, &next), Some([16_000_000, 8_000_000]));
}

#[test]
fn a_day_of_mixed_or_misaligned_intervals_is_not_complete() {
    let mut mixed = day_of("2024-11-04", 30, full(30).filter(|s| *s < 720), 1000);
    for s in (720..DAY).step_by(10) {
        mixed.push(at("2024-11-04", s, 10), 10, 1);
    }
    assert_eq!(calendar_day(PARIS, &mixed, &OffPeakHours::default()), None);
    let mut off = day_of("2024-11-04", 30, full(30).filter(|s| *s != 600), 1000);
    off.push(at("2024-11-04", 615, 30), 30, 1);
    assert_eq!(calendar_day(PARIS, &off, &OffPeakHours::default()), None);
}

fn row<'a>(d: &'a str, start: &'a str, watts: i64, p: Option<&'a str>) -> EnergyRow<'a> {
    EnergyRow {
        id: "r",
        pdl: "12345678901234",
        date: Some(d.parse().unwrap()),
        granularity: "detailed",
        interval_start: Some(start),
        value: watts,
        quality: None::<Cow<'_, str>>,
        updated_at: None,
        interval: p,
        placeholder: false,
    }
}

fn series_of(colours: &[(&str, TempoColor)], offpeak: Option<&str>) -> Vec<Series> {
    let contract = Contract::new(PARIS, &BTreeMap::new(), 1_800_000_000_000);
    let inputs = TariffInputs {
        kva: Default::default(),
        offpeak: OffPeakBook::new(
            offpeak.map(|o| OffPeakHours::parse_setting(o).unwrap()),
            &[],
            &mut Report::default(),
        ),
        colours: colours.iter().map(|(d, c)| (date(d), *c)).collect(),
    };
    let starts: Vec<String> = full(30).map(hhmm).collect();
    let mut rows = Vec::new();
    for d in ["2024-01-14", "2024-01-15", "2024-01-16"] {
        for s in &starts {
            rows.push(row(d, s, 1000, Some("PT30M")));
        }
    }
    // A daily row, and the 17th's morning (incomplete), change nothing.
    let mut daily = row("2024-01-16", "00:00", 15_000, None);
    daily.granularity = "daily";
    rows.push(daily);
    for s in &starts[..4] {
        rows.push(row("2024-01-17", s, 1000, None));
    }
    // Through the load curve's own checks, as the consumption family feeds them.
    let mut energy = PdlEnergy::new(Family::Consumption, "12345678901234");
    let mut t = PdlTariff::new("12345678901234");
    for r in rows {
        if let Some(interval) = energy.push(&contract, r, &mut Report::default()) {
            t.push(&contract, &inputs, &interval);
        }
    }
    let mut r = Report::default();
    let out = t.finish(&contract, &inputs, &mut r);
    assert!(r.skipped.is_empty());
    out
}

fn values(series: &[Series], head: &str) -> Vec<(i64, i64)> {
    series
        .iter()
        .find(|s| s.head == head)
        .map(|s| s.samples.iter().map(|x| (x.ts, x.value)).collect())
        .unwrap_or_default()
}

const JAN_14: i64 = 1_705_186_800_000;
const JAN_15: i64 = 1_705_273_200_000;

#[test]
fn a_pdl_gets_calendar_days_and_tempo_days_of_known_colour() {
    let s = series_of(
        &[
            ("2024-01-14", TempoColor::Blue),
            ("2024-01-15", TempoColor::Red),
        ],
        None,
    );
    let hp = values(
        &s,
        r#"myelectricaldata_consumption_period_wh{pdl="12345678901234",period="HP"}"#,
    );
    // Three complete calendar days of 16 000 Wh HP and 8 000 Wh HC.
    assert_eq!(hp.len(), 3);
    assert_eq!(hp[0], (JAN_14, 16_000_000));
    let hc = values(
        &s,
        r#"myelectricaldata_consumption_period_wh{pdl="12345678901234",period="HC"}"#,
    );
    assert_eq!(hc[2].1, 8_000_000);
    // Tempo days 14 and 15 are complete; 16 has no colour (and no full morning after).
    assert_eq!(
        values(
            &s,
            r#"myelectricaldata_tempo_consumption_wh{pdl="12345678901234",color="BLEU",period="HP"}"#
        ),
        vec![(JAN_14, 16_000_000)]
    );
    assert_eq!(
        values(
            &s,
            r#"myelectricaldata_tempo_consumption_wh{pdl="12345678901234",color="ROUGE",period="HC"}"#
        ),
        vec![(JAN_15, 8_000_000)]
    );
    assert_eq!(s.len(), 6, "no series for a colour with no day");
}

#[test]
fn a_colour_changed_after_the_fact_moves_the_day_to_the_other_series() {
    let before = series_of(&[("2024-01-15", TempoColor::Blue)], None);
    let after = series_of(&[("2024-01-15", TempoColor::White)], None);
    let blue =
        r#"myelectricaldata_tempo_consumption_wh{pdl="12345678901234",color="BLEU",period="HP"}"#;
    let white =
        r#"myelectricaldata_tempo_consumption_wh{pdl="12345678901234",color="BLANC",period="HP"}"#;
    assert_eq!(values(&before, blue), vec![(JAN_15, 16_000_000)]);
    assert!(values(&after, blue).is_empty());
    assert_eq!(values(&after, white), vec![(JAN_15, 16_000_000)]);
}

#[test]
fn the_setting_overrides_every_contract() {
    let s = series_of(&[], Some("12:00-14:00"));
    let hc = values(
        &s,
        r#"myelectricaldata_consumption_period_wh{pdl="12345678901234",period="HC"}"#,
    );
    assert_eq!(hc[0].1, 4 * 500_000);
}

#[test]
fn the_contract_wins_over_pdls_and_an_unreadable_record_is_reported() {
    let records = [
        OffPeakRecord {
            table: "pdls",
            pdl: "1".into(),
            json: r#"{"default":"22h30-06h30"}"#.into(),
        },
        OffPeakRecord {
            table: "contract_data",
            pdl: "1".into(),
            json: r#"{"ranges":["23:00-07:00"]}"#.into(),
        },
        OffPeakRecord {
            table: "pdls",
            pdl: "2".into(),
            json: r#"{"default":"HC (1H00-7H00)"}"#.into(),
        },
        OffPeakRecord {
            table: "contract_data",
            pdl: "3".into(),
            json: r#"{"default":"heures creuses"}"#.into(),
        },
        OffPeakRecord {
            table: "contract_data",
            pdl: "4".into(),
            json: "{}".into(),
        },
    ];
    let mut r = Report::default();
    let book = OffPeakBook::new(None, &records, &mut r);
    assert_eq!(book.for_pdl("1").0.to_string(), "23:00-07:00");
    assert_eq!(book.for_pdl("1").1, Origin::Contract);
    assert_eq!(
        book.for_pdl("2"),
        (
            &OffPeakHours::parse_setting("01:00-07:00").unwrap(),
            Origin::Pdls
        )
    );
    assert_eq!(book.for_pdl("3").1, Origin::Default);
    assert_eq!(book.for_pdl("4").1, Origin::Default);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].table, "contract_data");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 2_000,
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn any_offpeak_record_is_read_or_reported_quoting_its_json(
        json in proptest::prop_oneof![
            crate::model::arbitrary::text("{}\\[\\]\":0-9hH\\- "),
            proptest::strategy::Strategy::prop_map(crate::model::arbitrary::json("0-9:hH\\- "), |v| v.to_string()),
        ],
        table in proptest::sample::select(vec!["contract_data", "pdls"]),
    ) {
        let records = [OffPeakRecord { table, pdl: "1".into(), json: json.clone() }];
        let mut r = Report::default();
        let book = OffPeakBook::new(None, &records, &mut r);
        let value: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
        let read = OffPeakHours::from_client_json(&value);
        match &read {
            Some(hours) => {
                proptest::prop_assert_eq!(book.for_pdl("1").0, hours);
                proptest::prop_assert!(r.skipped.is_empty());
            }
            None => proptest::prop_assert_eq!(book.for_pdl("1").1, Origin::Default),
        }
        for skip in &r.skipped {
            proptest::prop_assert_eq!(skip.table, table);
            proptest::prop_assert_eq!(skip.row.as_str(), "1");
            proptest::prop_assert!(skip.reason.contains(&json), "{}", skip.reason);
        }
    }
}
