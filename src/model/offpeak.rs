//! A contract's off-peak hours: `VICTORIAMETRICS_OFFPEAK_HOURS`, or the
//! forms MyElectricalData keeps in `offpeak_hours`.
//!
//! The client stores what Enedis sends, parsed or not: `{"ranges":
//! ["22:00-06:00"]}` once parsed, `{"default": "HC (22H00-6H00)"}` or
//! `{"default": "22h30-06h30"}` when its parser gave up, and lists of
//! strings or of `{"start", "end"}` objects in older releases. Its own
//! reader (the Home Assistant exporter) finds `HH[h:]MM-HH[h:]MM` in each
//! string; this one does the same, case-insensitively and for every range of
//! a string (`HC (2H30-6H30;13H00-15H00)` is two ranges), where the client's
//! misses the upper-case `H` of Enedis's own text.

use std::fmt;

use serde_json::Value;

/// Minutes in a day.
const DAY: u16 = 1440;

/// Off-peak hours: ranges of local wall-clock time, each from its start
/// (included) to its end (excluded), wrapping past midnight when the end is
/// earlier than the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffPeakHours {
    /// `(start, end)` in minutes after midnight; `end` may be 1440.
    ranges: Vec<(u16, u16)>,
}

impl Default for OffPeakHours {
    /// 22:00-06:00, the off-peak hours of most contracts and what the
    /// client assumes when it knows none.
    fn default() -> Self {
        Self {
            ranges: vec![(22 * 60, 6 * 60)],
        }
    }
}

impl OffPeakHours {
    /// Reads `VICTORIAMETRICS_OFFPEAK_HOURS`: `HH:MM-HH:MM` ranges separated
    /// by commas (`22:00-06:00`, `02:00-07:00,14:00-17:00`). The error says
    /// what is wrong, for a message that names the variable.
    pub fn parse_setting(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let range = part
                .split_once('-')
                .and_then(|(a, b)| Some((clock(a.trim(), false)?, clock(b.trim(), true)?)))
                .ok_or_else(|| {
                    format!("{part:?} is not a range such as 22:00-06:00 (HH:MM-HH:MM, ranges separated by commas)")
                })?;
            if range.0 == range.1 % DAY {
                return Err(format!(
                    "{part:?} is an empty range: its start and end are equal"
                ));
            }
            ranges.push(range);
        }
        Ok(Self { ranges })
    }

    /// Reads MyElectricalData's `offpeak_hours` JSON, in any of the forms
    /// the client writes; `None` when it holds no range.
    pub fn from_client_json(value: &Value) -> Option<Self> {
        let mut ranges = Vec::new();
        collect(value, &mut ranges, 0);
        ranges.sort_unstable();
        ranges.dedup();
        (!ranges.is_empty()).then_some(Self { ranges })
    }

    /// Whether an interval starting at `minute` (after local midnight, by
    /// the wall clock) starts in off-peak hours.
    pub fn contains(&self, minute: u16) -> bool {
        self.ranges.iter().any(|&(start, end)| {
            if start < end {
                (start..end).contains(&minute)
            } else {
                minute >= start || minute < end
            }
        })
    }
}

impl fmt::Display for OffPeakHours {
    /// The ranges as `VICTORIAMETRICS_OFFPEAK_HOURS` writes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (start, end)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(
                f,
                "{:02}:{:02}-{:02}:{:02}",
                start / 60,
                start % 60,
                end / 60,
                end % 60
            )?;
        }
        Ok(())
    }
}

/// `HH:MM` (hours 0 to 23, or 24:00 as an end) in minutes.
fn clock(text: &str, is_end: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if !(1..=2).contains(&h.len())
        || m.len() != 2
        || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    minutes(h.parse().ok()?, m.parse().ok()?, is_end)
}

fn minutes(hours: u16, minutes: u16, is_end: bool) -> Option<u16> {
    match (hours, minutes) {
        (24, 0) if is_end => Some(DAY),
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        _ => None,
    }
}

/// Every range found in a JSON value: strings, lists, `{"start","end"}`
/// objects, and the values of any other object (`ranges`, `default`, or a
/// key per day as some releases wrote).
fn collect(value: &Value, out: &mut Vec<(u16, u16)>, depth: u8) {
    if depth > 4 {
        return;
    }
    match value {
        Value::String(s) => scan(s, out),
        Value::Array(items) => items.iter().for_each(|v| collect(v, out, depth + 1)),
        Value::Object(map) => {
            if let (Some(Value::String(a)), Some(Value::String(b))) =
                (map.get("start"), map.get("end"))
            {
                let start = scan_clock(a.trim().as_bytes()).filter(|(_, n)| *n == a.trim().len());
                let end = scan_clock(b.trim().as_bytes()).filter(|(_, n)| *n == b.trim().len());
                if let (Some((s, _)), Some((e, _))) = (start, end) {
                    push_range(out, s, e);
                }
                return;
            }
            map.values().for_each(|v| collect(v, out, depth + 1));
        }
        _ => {}
    }
}

fn push_range(out: &mut Vec<(u16, u16)>, start: (u16, u16), end: (u16, u16)) {
    let start = minutes(start.0, start.1, false);
    let end = minutes(end.0, end.1, true);
    if let (Some(s), Some(e)) = (start, end) {
        if s != e % DAY {
            out.push((s, e));
        }
    }
}

/// Finds every `H[H]<h|H|:>MM <-> H[H]<h|H|:>MM` in free text, as the
/// client's regular expression `(\d{1,2})[h:](\d{2})\s*-\s*(\d{1,2})[h:](\d{2})`
/// would at each position.
fn scan(text: &str, out: &mut Vec<(u16, u16)>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let Some((start, n)) = scan_clock(&b[i..]) {
            let mut j = i + n;
            while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            if b.get(j) == Some(&b'-') {
                j += 1;
                while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                    j += 1;
                }
                if let Some((end, m)) = scan_clock(&b[j.min(b.len())..]) {
                    push_range(out, start, end);
                    i = j + m;
                    continue;
                }
            }
        }
        i += 1;
    }
}

/// `H[H]` then `h`, `H` or `:` then `MM` at the start of `b`: the hours and
/// minutes, and the bytes taken.
fn scan_clock(b: &[u8]) -> Option<((u16, u16), usize)> {
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u16::from(c - b'0'))
    };
    let sep = |i: usize| matches!(b.get(i), Some(b'h' | b'H' | b':'));
    let h0 = digit(0)?;
    let (hours, at) = match digit(1) {
        Some(h1) if sep(2) => (h0 * 10 + h1, 3),
        _ if sep(1) => (h0, 2),
        _ => return None,
    };
    let minutes = digit(at)? * 10 + digit(at + 1)?;
    Some(((hours, minutes), at + 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hours(v: Value) -> Option<String> {
        OffPeakHours::from_client_json(&v).map(|o| o.to_string())
    }

    #[test]
    fn the_setting_takes_one_range_or_several() {
        assert_eq!(
            OffPeakHours::parse_setting("22:00-06:00").unwrap(),
            OffPeakHours::default()
        );
        let two = OffPeakHours::parse_setting(" 02:00-07:00 , 14:00-17:00").unwrap();
        assert_eq!(two.to_string(), "02:00-07:00,14:00-17:00");
        assert_eq!(
            OffPeakHours::parse_setting("20:00-24:00")
                .unwrap()
                .to_string(),
            "20:00-24:00"
        );
    }

    #[test]
    fn a_setting_that_is_not_ranges_is_refused_with_the_reason() {
        for bad in [
            "",
            "22h00-06h00",
            "22:00",
            "25:00-06:00",
            "22:00-06:60",
            "06:00-06:00",
            "22:00-06:00,",
            "24:00-02:00",
            "22:0-06:00",
            // Found by a property: integer parsing takes a sign.
            "+1:00-0:00",
            "01:00-06:+1",
        ] {
            let err = OffPeakHours::parse_setting(bad).unwrap_err();
            assert!(err.contains('"'), "{bad}: {err}");
        }
    }

    #[test]
    fn every_form_the_client_writes_is_read() {
        assert_eq!(
            hours(json!({"ranges": ["22:00-06:00"]})).unwrap(),
            "22:00-06:00"
        );
        assert_eq!(
            hours(json!({"default": "HC (22H00-6H00)"})).unwrap(),
            "22:00-06:00"
        );
        assert_eq!(
            hours(json!({"default": "HC (2H30-6H30;13H00-15H00)"})).unwrap(),
            "02:30-06:30,13:00-15:00"
        );
        assert_eq!(
            hours(json!({"default": "22h30-06h30"})).unwrap(),
            "22:30-06:30"
        );
        assert_eq!(
            hours(json!([{"start": "01:00", "end": "07:00"}, {"start": "12:30", "end": "14:30"}]))
                .unwrap(),
            "01:00-07:00,12:30-14:30"
        );
        assert_eq!(hours(json!(["23:00-07:00"])).unwrap(), "23:00-07:00");
        assert_eq!(hours(json!("HC (0H30-8H00)")).unwrap(), "00:30-08:00");
        // A key per weekday, as an early release wrote them: the same ranges once.
        assert_eq!(
            hours(json!({"monday": "22h00-06h00", "tuesday": "22h00-06h00"})).unwrap(),
            "22:00-06:00"
        );
    }

    #[test]
    fn a_record_with_no_range_gives_none() {
        for v in [
            json!(null),
            json!({}),
            json!([]),
            json!({"default": "HC"}),
            json!(42),
            json!({"start": "x", "end": "y"}),
            json!("25h00-06h00"),
        ] {
            assert_eq!(hours(v.clone()), None, "{v}");
        }
    }

    #[test]
    fn ranges_include_their_start_and_exclude_their_end_across_midnight() {
        let o = OffPeakHours::default();
        assert!(o.contains(22 * 60));
        assert!(o.contains(0));
        assert!(o.contains(5 * 60 + 59));
        assert!(!o.contains(6 * 60));
        assert!(!o.contains(21 * 60 + 30));
        let two = OffPeakHours::parse_setting("02:30-06:30,13:00-15:00").unwrap();
        assert!(!two.contains(2 * 60));
        assert!(two.contains(2 * 60 + 30));
        assert!(two.contains(14 * 60 + 50));
        assert!(!two.contains(15 * 60));
    }

    /// A range: a start 00:00 to 23:59, an end 00:00 to 24:00, not equal.
    fn range() -> impl proptest::strategy::Strategy<Value = (u16, u16)> {
        use proptest::prelude::*;
        (0..DAY, 0..=DAY).prop_filter("empty range", |(s, e)| *s != *e % DAY)
    }

    /// A time as the client may write it: `H`, `HH`, with `sep` between
    /// the hours and the minutes.
    fn written(minute: u16, sep: char, short: bool) -> String {
        let (h, m) = (minute / 60, minute % 60);
        if short {
            format!("{h}{sep}{m:02}")
        } else {
            format!("{h:02}{sep}{m:02}")
        }
    }

    /// A range written with `sep`, the hours shortened where `short` says.
    fn written_range((s, e): (u16, u16), sep: char, short: (bool, bool), dash: &str) -> String {
        format!(
            "{}{dash}{}",
            written(s, sep, short.0),
            written(e, sep, short.1)
        )
    }

    fn sorted(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
        ranges.sort_unstable();
        ranges.dedup();
        ranges
    }

    /// Text close to a setting: ranges of times whose parts are each
    /// right or a near miss.
    fn near_setting() -> proptest::strategy::BoxedStrategy<String> {
        use proptest::prelude::*;
        use proptest::sample::select;
        let clock = (
            select(vec![
                "0", "1", "22", "23", "24", "25", "+1", "-1", "007", "", " 1", "\u{e9}",
            ]),
            select(vec![":", ":", ":", "h", "", "::"]),
            select(vec!["00", "59", "60", "+5", "5", "000", "", "0\u{e9}"]),
        )
            .prop_map(|(h, s, m)| format!("{h}{s}{m}"));
        let range = (
            clock.clone(),
            select(vec!["-", "-", " - ", "--", ""]),
            clock,
        )
            .prop_map(|(a, d, b)| format!("{a}{d}{b}"));
        (
            proptest::collection::vec(range, 1..4),
            select(vec![",", ",", ", ", ";"]),
        )
            .prop_map(|(ranges, comma)| ranges.join(comma))
            .boxed()
    }

    static SETTING_PART: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^[0-9]{1,2}:[0-9]{2}\s*-\s*[0-9]{1,2}:[0-9]{2}$").unwrap()
    });

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn a_written_setting_reads_as_its_ranges_in_their_order(
            ranges in proptest::collection::vec(range(), 1..5),
            shorts in proptest::collection::vec(proptest::prelude::any::<(bool, bool)>(), 5),
            dash in proptest::sample::select(vec!["-", " - ", "- "]),
            comma in proptest::sample::select(vec![",", ", ", " , "]),
        ) {
            let text: Vec<String> = ranges
                .iter()
                .zip(&shorts)
                .map(|(r, short)| written_range(*r, ':', *short, dash))
                .collect();
            let text = text.join(comma);
            let got = OffPeakHours::parse_setting(&text).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(format!("{text:?}: {e}"))
            })?;
            proptest::prop_assert_eq!(&got.ranges, &ranges, "{:?}", text);
            // Its ranges written back read the same.
            proptest::prop_assert_eq!(OffPeakHours::parse_setting(&got.to_string()), Ok(got.clone()));
            for minute in (0..DAY).step_by(7) {
                let want = ranges.iter().any(|&(s, e)| {
                    if s < e { s <= minute && minute < e } else { minute >= s || minute < e }
                });
                proptest::prop_assert_eq!(got.contains(minute), want, "{} at {}", text, minute);
            }
        }

        #[test]
        fn every_form_the_client_writes_reads_as_the_same_minutes(
            ranges in proptest::collection::vec(range(), 1..5),
            shorts in proptest::collection::vec(proptest::prelude::any::<(bool, bool)>(), 5),
            form in 0usize..7,
            sep in proptest::sample::select(vec![':', 'h', 'H']),
            joint in proptest::sample::select(vec![";", " ", ", ", " / "]),
        ) {
            use serde_json::json;
            let text = |sep: char| -> Vec<String> {
                ranges
                    .iter()
                    .zip(&shorts)
                    .map(|(r, short)| written_range(*r, sep, *short, "-"))
                    .collect()
            };
            let value = match form {
                // Parsed by the client.
                0 => json!({ "ranges": text(':') }),
                // Enedis's text, kept when the client's parser gave up.
                1 => json!({ "default": format!("HC ({})", text('H').join(";")) }),
                2 => json!({ "default": text(sep).join(joint) }),
                // Older releases: lists of strings, of start and end.
                3 => json!(text(sep)),
                4 => serde_json::Value::Array(
                    ranges
                        .iter()
                        .zip(&shorts)
                        .map(|(&(s, e), short)| json!({"start": written(s, sep, short.0), "end": written(e, sep, short.1)}))
                        .collect(),
                ),
                // A key per day, each with some of the ranges: all of them in all.
                5 => {
                    let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
                    let all = text(sep);
                    let map: serde_json::Map<String, serde_json::Value> = days
                        .iter()
                        .enumerate()
                        .map(|(i, day)| (day.to_string(), json!(all[i % all.len()..].join(joint))))
                        .collect();
                    serde_json::Value::Object(map)
                }
                _ => json!(text(sep).join(joint)),
            };
            let got = OffPeakHours::from_client_json(&value);
            proptest::prop_assert_eq!(got.map(|o| o.ranges), Some(sorted(ranges.clone())), "{}", value);
        }

        #[test]
        fn any_setting_text_is_read_as_ranges_or_refused_quoting_the_part(
            text in proptest::prop_oneof![
                crate::model::arbitrary::text("0-9:,\\- hH+"),
                near_setting(),
            ],
        ) {
            match OffPeakHours::parse_setting(&text) {
                Ok(hours) => {
                    for part in text.split(',') {
                        proptest::prop_assert!(SETTING_PART.is_match(part.trim()), "{:?} in {:?}", part, text);
                    }
                    proptest::prop_assert_eq!(hours.ranges.len(), text.split(',').count());
                    for (s, e) in hours.ranges {
                        proptest::prop_assert!(s < DAY && e <= DAY && s != e % DAY);
                    }
                }
                Err(e) => {
                    let quoted = text.split(',').any(|p| e.contains(&format!("{:?}", p.trim())));
                    proptest::prop_assert!(quoted, "{:?}: {}", text, e);
                }
            }
        }

        #[test]
        fn any_json_gives_valid_ranges_or_none(
            value in crate::model::arbitrary::json("0-9:hH\\- ;()"),
        ) {
            if let Some(hours) = OffPeakHours::from_client_json(&value) {
                proptest::prop_assert!(!hours.ranges.is_empty());
                for (s, e) in hours.ranges {
                    proptest::prop_assert!(s < DAY && e <= DAY && s != e % DAY, "{}", value);
                }
            }
        }
    }
}
