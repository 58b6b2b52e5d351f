//! Local time: the timestamps of SPEC §2 and the Tempo seasons of §3.
//!
//! Two readings of a wall-clock time: [`local_millis`] (Python's `fold=0`)
//! for days, months and real times such as a peak's, and
//! [`detailed_start`] for a load-curve row, whose `interval_start` is a label
//! the client derived from Enedis's end-of-interval time (`fold=1`).

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::model::plain_days;

/// Unix milliseconds of a local wall-clock time, read with Python's `fold=0`
/// rules, which MyElectricalData uses: a time skipped by spring-forward takes
/// the UTC offset in force before the change, a time that occurs twice at
/// fall-back is its first occurrence.
pub fn local_millis(tz: Tz, local: NaiveDateTime) -> i64 {
    millis_at_fold(tz, local, false)
}

/// Unix milliseconds of a local wall-clock time read with Python's `fold=1`
/// rules: a time that occurs twice is its later occurrence, and one skipped
/// by spring-forward takes the UTC offset in force after the change.
pub fn local_millis_later(tz: Tz, local: NaiveDateTime) -> i64 {
    millis_at_fold(tz, local, true)
}

fn millis_at_fold(tz: Tz, local: NaiveDateTime, later: bool) -> i64 {
    let pick = |r: chrono::LocalResult<_>| match r {
        chrono::LocalResult::Single(o) => Some(o),
        chrono::LocalResult::Ambiguous(first, second) => Some(if later { second } else { first }),
        chrono::LocalResult::None => None,
    };
    let offset_seconds = pick(tz.offset_from_local_datetime(&local))
        .or_else(|| {
            // In a gap: the offset before it is that of a wall time a few
            // hours earlier, the one after it a few hours later (no zone has
            // two changes that close together).
            let hours = Duration::hours(if later { 3 } else { -3 });
            pick(tz.offset_from_local_datetime(&(local + hours)))
        })
        .map_or(0, |o: <Tz as TimeZone>::Offset| o.fix().local_minus_utc());
    (local.and_utc().timestamp() - i64::from(offset_seconds)) * 1000
}

/// A load-curve row's interval, placed in time (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrueStart {
    /// The interval's start, Unix milliseconds.
    pub ts: i64,
    /// Its local date.
    pub date: NaiveDate,
    /// Its local start time, in minutes after midnight (on the day clocks
    /// go back, the repeated hour's minutes occur twice).
    pub minute: u16,
}

/// Where a load-curve row's interval really starts. The client stores
/// Enedis's end-of-interval label shifted back by the length `minutes` as a
/// naive wall-clock time, and keeps the later interval of two that share a
/// label: so the label plus the length is the end Enedis sent, read at its
/// later occurrence (`fold=1`), and the start is that instant less the
/// length. On ordinary days this is `date` at `label`; on the day clocks go
/// forward the label `02:30` of a 30-minute meter is 01:30 local time.
pub fn detailed_start(tz: Tz, date: NaiveDate, label: NaiveTime, minutes: u32) -> TrueStart {
    let label_minute = label.hour() * 60 + label.minute();
    let end_minute = label_minute + minutes;
    if end_minute <= 24 * 60 && label.second() == 0 {
        // The interval ends on its date, or at the next midnight: on a plain
        // day (and, for the midnight, a plain next day: a midnight skipped by
        // the clocks would be read with the later offset) both ends are read
        // linearly from the day's midnight.
        let next_plain = || {
            end_minute < 24 * 60
                || date
                    .succ_opt()
                    .and_then(|d| plain_days::midnight(tz, d))
                    .is_some()
        };
        if let Some(start) = plain_days::midnight(tz, date).filter(|_| next_plain()) {
            return TrueStart {
                ts: start + i64::from(label_minute) * 60_000,
                date,
                minute: label_minute as u16,
            };
        }
    }
    detailed_start_by_rules(tz, date, label, minutes)
}

/// [`detailed_start`] read from the zone's rules, for any day.
fn detailed_start_by_rules(tz: Tz, date: NaiveDate, label: NaiveTime, minutes: u32) -> TrueStart {
    let length = Duration::minutes(i64::from(minutes));
    let end = date.and_time(label) + length;
    let ts = local_millis_later(tz, end) - length.num_milliseconds();
    let local = chrono::DateTime::from_timestamp_millis(ts)
        .map(|t| t.with_timezone(&tz).naive_local())
        .unwrap_or_else(|| date.and_time(label));
    TrueStart {
        ts,
        date: local.date(),
        // At most 23 × 60 + 59.
        minute: (local.hour() * 60 + local.minute()) as u16,
    }
}

/// Unix milliseconds of 00:00 local on `date`.
pub fn day_millis(tz: Tz, date: NaiveDate) -> i64 {
    plain_days::midnight(tz, date)
        .unwrap_or_else(|| local_millis(tz, date.and_time(NaiveTime::MIN)))
}

/// The local date of a Unix time, as days from the common era (`i32::MIN`
/// for a time out of range).
pub fn local_day_number(tz: Tz, ts: i64) -> i32 {
    if let Some(number) = plain_days::day_number(tz, ts) {
        return number;
    }
    let Some(date) =
        chrono::DateTime::from_timestamp_millis(ts).map(|t| t.with_timezone(&tz).date_naive())
    else {
        return i32::MIN;
    };
    // Asked to be remembered: the next times are likely on the same day.
    plain_days::midnight(tz, date);
    date.num_days_from_ce()
}

/// Unix milliseconds of 00:00 local on the first day of `date`'s month.
pub fn month_millis(tz: Tz, date: NaiveDate) -> i64 {
    day_millis(tz, date.with_day(1).expect("day 1 exists in every month"))
}

/// Parses a detailed row's `interval_start`, strictly `HH:MM` (00:00 to 23:59).
pub fn parse_interval_start(s: &str) -> Option<NaiveTime> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hours = u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0');
    let minutes = u32::from(b[3] - b'0') * 10 + u32::from(b[4] - b'0');
    NaiveTime::from_hms_opt(hours, minutes, 0).filter(|_| hours < 24 && minutes < 60)
}

/// The first day (1 September) of the Tempo season holding `date`.
pub fn season_start(date: NaiveDate) -> NaiveDate {
    let year = if date.month() >= 9 {
        date.year()
    } else {
        date.year() - 1
    };
    NaiveDate::from_ymd_opt(year, 9, 1).expect("1 September exists")
}

/// The three Tempo colours, in the order the metrics list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TempoColor {
    /// A blue day: cheapest.
    Blue,
    /// A white day.
    White,
    /// A red day: dearest.
    Red,
}

impl TempoColor {
    /// All colours.
    pub const ALL: [TempoColor; 3] = [TempoColor::Blue, TempoColor::White, TempoColor::Red];

    /// Reads the colour as MyElectricalData stores it (`BLUE`, `WHITE`, `RED`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "BLUE" => Some(Self::Blue),
            "WHITE" => Some(Self::White),
            "RED" => Some(Self::Red),
            _ => None,
        }
    }

    /// The `color` label of `myelectricaldata_tempo_color`.
    pub fn french(self) -> &'static str {
        match self {
            Self::Blue => "BLEU",
            Self::White => "BLANC",
            Self::Red => "ROUGE",
        }
    }

    /// The `color` label of `myelectricaldata_tempo_remaining`.
    pub fn english(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::White => "white",
            Self::Red => "red",
        }
    }

    /// Days of this colour in the season starting on `start`: 301 blue days
    /// when the season holds 29 February.
    pub fn quota(self, start: NaiveDate) -> u32 {
        match self {
            Self::Red => 22,
            Self::White => 43,
            Self::Blue => {
                let feb_year = start.year() + 1;
                if NaiveDate::from_ymd_opt(feb_year, 2, 29).is_some() {
                    301
                } else {
                    300
                }
            }
        }
    }

    /// Index in [`TempoColor::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Days of each colour left in the season after each day: for every
/// `(date, colour)` in `days` (sorted by date, one per date), the remaining
/// counts for blue, white and red, never below zero.
pub fn tempo_remaining(days: &[(NaiveDate, TempoColor)]) -> Vec<[u32; 3]> {
    let mut out = Vec::with_capacity(days.len());
    let mut season = None;
    let mut used = [0u32; 3];
    for &(date, color) in days {
        let start = season_start(date);
        if season != Some(start) {
            season = Some(start);
            used = [0; 3];
        }
        used[color.index()] += 1;
        out.push(TempoColor::ALL.map(|c| c.quota(start).saturating_sub(used[c.index()])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Paris;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn at(date: NaiveDate, hhmm: &str) -> i64 {
        local_millis(Paris, date.and_time(parse_interval_start(hhmm).unwrap()))
    }

    #[test]
    fn a_winter_day_starts_at_23_00_utc_the_day_before() {
        // The seed's line: 2024-01-15 in Paris.
        assert_eq!(day_millis(Paris, d(2024, 1, 15)), 1_705_273_200_000);
    }

    #[test]
    fn spring_forward_gap_times_take_the_offset_before_the_change() {
        let day = d(2024, 3, 31);
        assert_eq!(at(day, "01:30"), 1_711_845_000_000); // 00:30 UTC
        assert_eq!(at(day, "02:00"), 1_711_846_800_000); // 01:00 UTC, like 03:00 CEST
        assert_eq!(at(day, "02:30"), 1_711_848_600_000); // 01:30 UTC
        assert_eq!(at(day, "03:00"), 1_711_846_800_000); // 01:00 UTC
        assert_eq!(at(day, "03:30"), 1_711_848_600_000);
    }

    #[test]
    fn fall_back_repeated_times_are_their_first_occurrence() {
        let day = d(2024, 10, 27);
        assert_eq!(at(day, "01:30"), 1_729_985_400_000); // 23:30 UTC on the 26th
        assert_eq!(at(day, "02:00"), 1_729_987_200_000); // 00:00 UTC, CEST
        assert_eq!(at(day, "02:30"), 1_729_989_000_000); // 00:30 UTC, CEST
        assert_eq!(at(day, "03:00"), 1_729_994_400_000); // 02:00 UTC, CET
    }

    fn start(date: NaiveDate, hhmm: &str, minutes: u32) -> (i64, String) {
        let t = detailed_start(Paris, date, parse_interval_start(hhmm).unwrap(), minutes);
        let h = t.minute / 60;
        let m = t.minute % 60;
        (t.ts, format!("{} {h:02}:{m:02}", t.date))
    }

    #[test]
    fn on_ordinary_days_a_load_curve_label_is_its_local_start() {
        let day = d(2024, 1, 15);
        assert_eq!(
            start(day, "00:00", 30),
            (1_705_273_200_000, "2024-01-15 00:00".into())
        );
        assert_eq!(start(day, "23:30", 30).1, "2024-01-15 23:30");
        assert_eq!(start(day, "23:50", 10).1, "2024-01-15 23:50");
        assert_eq!(start(day, "23:00", 60).1, "2024-01-15 23:00");
    }

    #[test]
    fn on_the_spring_day_the_label_after_the_gap_is_the_interval_before_it() {
        let day = d(2024, 3, 31);
        const UTC_0030: i64 = 1_711_845_000_000;
        // 30 minutes: 01:00 is 00:00 UTC, 02:30 is 00:30 UTC (01:30 CET), 03:00 is 01:00 UTC.
        assert_eq!(
            start(day, "01:00", 30),
            (UTC_0030 - 1_800_000, "2024-03-31 01:00".into())
        );
        assert_eq!(
            start(day, "02:30", 30),
            (UTC_0030, "2024-03-31 01:30".into())
        );
        assert_eq!(
            start(day, "03:00", 30),
            (UTC_0030 + 1_800_000, "2024-03-31 03:00".into())
        );
        // 10 minutes: 02:50 is 01:50 CET; 60 minutes: 02:00 is 01:00 CET.
        assert_eq!(
            start(day, "02:50", 10),
            (UTC_0030 + 1_200_000, "2024-03-31 01:50".into())
        );
        assert_eq!(
            start(day, "02:00", 60),
            (UTC_0030 - 1_800_000, "2024-03-31 01:00".into())
        );
        assert_eq!(
            start(day, "03:00", 60),
            (UTC_0030 + 1_800_000, "2024-03-31 03:00".into())
        );
    }

    #[test]
    fn on_the_autumn_day_labels_of_the_repeated_hour_are_its_later_intervals() {
        let day = d(2024, 10, 27);
        const UTC_0030: i64 = 1_729_989_000_000;
        assert_eq!(
            start(day, "01:00", 30),
            (UTC_0030 - 5_400_000, "2024-10-27 01:00".into())
        );
        assert_eq!(
            start(day, "01:30", 30),
            (UTC_0030, "2024-10-27 02:30".into())
        ); // CEST
        assert_eq!(
            start(day, "02:00", 30),
            (UTC_0030 + 1_800_000, "2024-10-27 02:00".into())
        ); // CET
        assert_eq!(
            start(day, "02:30", 30),
            (UTC_0030 + 3_600_000, "2024-10-27 02:30".into())
        );
        assert_eq!(
            start(day, "03:00", 30),
            (UTC_0030 + 5_400_000, "2024-10-27 03:00".into())
        );
        // 60 minutes: 01:00 ends at 02:00, later occurrence: 01:00 UTC, so 00:00 UTC (02:00 CEST).
        assert_eq!(
            start(day, "01:00", 60),
            (UTC_0030 - 1_800_000, "2024-10-27 02:00".into())
        );
        assert_eq!(
            start(day, "02:00", 60),
            (UTC_0030 + 1_800_000, "2024-10-27 02:00".into())
        );
    }

    #[test]
    fn a_real_time_keeps_fold_0_where_a_label_takes_fold_1() {
        let t = d(2024, 10, 27).and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(
            local_millis_later(Paris, t) - local_millis(Paris, t),
            3_600_000
        );
        let gap = d(2024, 3, 31).and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(
            local_millis(Paris, gap) - local_millis_later(Paris, gap),
            3_600_000
        );
    }

    #[test]
    fn months_start_at_local_midnight_on_the_first() {
        assert_eq!(
            month_millis(Paris, d(2024, 1, 15)),
            day_millis(Paris, d(2024, 1, 1))
        );
        assert_eq!(month_millis(Paris, d(2024, 7, 31)), 1_719_784_800_000); // 2024-06-30T22:00Z
    }

    #[test]
    fn interval_start_is_strictly_hh_mm() {
        assert_eq!(parse_interval_start("00:00"), Some(NaiveTime::MIN));
        assert_eq!(
            parse_interval_start("23:30"),
            NaiveTime::from_hms_opt(23, 30, 0)
        );
        for bad in [
            "24:00", "25:61", "abc", "7:30", "07:3", "07-30", "", "07:30:00", "+1:30",
        ] {
            assert_eq!(parse_interval_start(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_season_holding_29_february_has_301_blue_days() {
        assert_eq!(TempoColor::Blue.quota(d(2023, 9, 1)), 301);
        assert_eq!(TempoColor::Blue.quota(d(2024, 9, 1)), 300);
        assert_eq!(TempoColor::White.quota(d(2023, 9, 1)), 43);
        assert_eq!(TempoColor::Red.quota(d(2023, 9, 1)), 22);
        assert_eq!(season_start(d(2024, 2, 29)), d(2023, 9, 1));
        assert_eq!(season_start(d(2024, 9, 1)), d(2024, 9, 1));
        assert_eq!(season_start(d(2024, 8, 31)), d(2023, 9, 1));
    }

    #[test]
    fn remaining_days_count_down_within_a_season_and_reset_on_1_september() {
        let days = vec![
            (d(2023, 9, 1), TempoColor::Blue),
            (d(2023, 9, 2), TempoColor::White),
            (d(2024, 2, 29), TempoColor::Red),
            (d(2024, 8, 31), TempoColor::Blue),
            (d(2024, 9, 1), TempoColor::Blue),
        ];
        let r = tempo_remaining(&days);
        assert_eq!(r[0], [300, 43, 22]);
        assert_eq!(r[1], [300, 42, 22]);
        assert_eq!(r[2], [300, 42, 21]);
        assert_eq!(r[3], [299, 42, 21]);
        assert_eq!(r[4], [299, 43, 22]); // new season: 300 blue days, one used
    }

    #[test]
    fn remaining_days_never_go_below_zero() {
        let days: Vec<_> = (0..30)
            .map(|i| (d(2023, 11, 1) + Duration::days(i), TempoColor::Red))
            .collect();
        let r = tempo_remaining(&days);
        assert_eq!(r[21][2], 0);
        assert_eq!(r[29][2], 0);
    }

    #[test]
    fn the_plain_day_shortcuts_agree_with_the_zone_rules_on_every_day_and_label() {
        // Paris, and zones whose clocks change at midnight (Sao Paulo until
        // 2019, Havana), by 30 minutes (Lord Howe), or twice in a year of
        // the range (Santiago).
        let zones = [
            Paris,
            chrono_tz::America::Sao_Paulo,
            chrono_tz::America::Havana,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::America::Santiago,
        ];
        for tz in zones {
            let mut date = d(2017, 1, 1);
            while date < d(2020, 1, 1) {
                for minutes in [10, 30, 60] {
                    for m in (0..24 * 60).step_by(minutes as usize) {
                        let label = NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap();
                        assert_eq!(
                            detailed_start(tz, date, label, minutes),
                            detailed_start_by_rules(tz, date, label, minutes),
                            "{tz} {date} {label} {minutes}"
                        );
                    }
                }
                assert_eq!(
                    day_millis(tz, date),
                    local_millis(tz, date.and_time(NaiveTime::MIN)),
                    "{tz} {date}"
                );
                let start = day_millis(tz, date);
                for ts in (start - 3_600_000..start + 90_000_000).step_by(600_000) {
                    let by_rules = chrono::DateTime::from_timestamp_millis(ts)
                        .unwrap()
                        .with_timezone(&tz)
                        .date_naive()
                        .num_days_from_ce();
                    assert_eq!(local_day_number(tz, ts), by_rules, "{tz} {ts}");
                }
                date = date.succ_opt().unwrap();
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn every_hh_mm_reads_as_its_time(hour in 0u32..24, minute in 0u32..60) {
            let text = format!("{hour:02}:{minute:02}");
            proptest::prop_assert_eq!(parse_interval_start(&text), NaiveTime::from_hms_opt(hour, minute, 0));
        }

        #[test]
        fn an_interval_start_is_read_only_when_strictly_hh_mm(
            text in proptest::prop_oneof![
                crate::model::arbitrary::text("0-9:+\\- "),
                "[0-9+ ]{2}:[0-9+ ]{2}",
            ],
        ) {
            let strict = regex::Regex::new("^([01][0-9]|2[0-3]):[0-5][0-9]$").unwrap();
            proptest::prop_assert_eq!(parse_interval_start(&text).is_some(), strict.is_match(&text), "{:?}", text);
        }

        #[test]
        fn a_tempo_colour_is_read_whatever_its_case_and_padding(
            colour in proptest::sample::select(TempoColor::ALL.to_vec()),
            upper in proptest::collection::vec(proptest::prelude::any::<bool>(), 5),
            pad in proptest::sample::select(vec!["", " ", "\t", "\n", "\u{a0}"]),
            text in crate::model::arbitrary::text("A-Za-z \u{131}\u{17f}"),
        ) {
            let written: String = colour
                .english()
                .chars()
                .zip(&upper)
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            proptest::prop_assert_eq!(TempoColor::parse(&format!("{pad}{written}{pad}")), Some(colour));
            // Anything else read is one of the three names.
            if let Some(c) = TempoColor::parse(&text) {
                proptest::prop_assert!(text.trim().eq_ignore_ascii_case(c.english()), "{:?}", text);
            }
        }
    }
}
