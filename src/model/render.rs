//! Prometheus text lines: label escaping, series heads, selectors, lines.

use crate::model::Scale;

/// Appends `value` to `out`, escaped as the Prometheus text format and
/// PromQL string literals both require: backslash, double quote, newline.
/// Nothing else is escaped: the format defines no other escape, and
/// VictoriaMetrics would read `\r` as a backslash and an `r` (a raw
/// carriage return inside quotes round-trips).
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The labels of one series, in the order they are written.
pub type Labels<'a> = [(&'a str, &'a str)];

/// `name{a="x",b="y"}`: the part of a line before the value. Written once
/// per series; each line then only appends value and timestamp.
pub fn series_head(name: &str, labels: &Labels<'_>) -> String {
    let mut out = String::with_capacity(name.len() + 16 * labels.len());
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(&mut out, v);
        out.push('"');
    }
    out.push('}');
    out
}

/// The canonical form of a series' name and labels: `name{a="x",b="y"}`
/// with the labels sorted by name, whatever order they come in.
pub fn series_key<'a>(name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = labels.into_iter().collect();
    sorted.sort_unstable();
    series_head(name, &sorted)
}

/// A PromQL selector matching exactly this series among the exporter's own:
/// the exporter's labels that the series lacks are matched as empty, so that
/// `{pdl="…",type="daily"}` does not also match the `quality="BRUT"` series.
pub fn series_selector(name: &str, labels: &Labels<'_>, own_labels: &[&str]) -> String {
    let mut out = String::with_capacity(name.len() + 24 * labels.len() + 16);
    out.push_str("{__name__=\"");
    escape_label_value(&mut out, name);
    out.push('"');
    for (k, v) in labels {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(&mut out, v);
        out.push('"');
    }
    for own in own_labels {
        if !labels.iter().any(|(k, _)| k == own) {
            out.push(',');
            out.push_str(own);
            out.push_str("=\"\"");
        }
    }
    out.push('}');
    out
}

/// Appends one line, `head value timestamp_ms\n`, to `buf`; the value is
/// given in units of `scale`.
pub fn write_line(buf: &mut Vec<u8>, head: &str, value: i64, scale: Scale, timestamp_ms: i64) {
    buf.extend_from_slice(head.as_bytes());
    buf.push(b' ');
    write_fixed(buf, value, scale);
    buf.push(b' ');
    if timestamp_ms < 0 {
        buf.push(b'-');
    }
    write_digits(buf, timestamp_ms.unsigned_abs(), 1);
    buf.push(b'\n');
}

/// Writes a fixed-point value as the shortest exact decimal: in
/// thousandths, `15200`, `270.5`, `16.667`, `-0.25`.
pub fn write_fixed(buf: &mut Vec<u8>, value: i64, scale: Scale) {
    let abs = value.unsigned_abs();
    let per_unit = scale.per_unit().unsigned_abs();
    let (whole, mut frac) = (abs / per_unit, abs % per_unit);
    if value < 0 {
        buf.push(b'-');
    }
    write_digits(buf, whole, 1);
    if frac != 0 {
        buf.push(b'.');
        let mut digits = scale.decimals() as usize;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        write_digits(buf, frac, digits);
    }
}

/// Writes `n` in decimal, padded with zeros to at least `width` digits
/// (at most 20): two lines a row, `write!`'s formatting machinery was a
/// measurable share of a pass.
fn write_digits(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    // Two digits at a time.
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else if n > 0 {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    let start = start.min(digits.len() - width.clamp(1, 20));
    buf.extend_from_slice(&digits[start..]);
}

/// `00` to `99`.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline_and_nothing_else() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd\re\tf");
        assert_eq!(out, "a\\\\b\\\"c\\nd\re\tf");
    }

    /// Name, labels, value in thousandths, timestamp.
    type Parsed = (String, Vec<(String, String)>, i64, i64);

    /// A decimal read back into thousandths, apart from the renderer.
    fn parse_milli(s: &str) -> Option<i64> {
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if frac.len() > 3 || frac.ends_with('0') || whole.is_empty() {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let frac: i64 = format!("{frac:0<3}").parse().ok()?;
        let v = whole.checked_mul(1000)?.checked_add(frac)?;
        Some(if neg { -v } else { v })
    }

    /// A Prometheus text line parser written from the format's description,
    /// apart from the renderer: `name{k="v",...} value timestamp`.
    fn parse(line: &str) -> Option<Parsed> {
        let line = line.strip_suffix('\n')?;
        let open = line.find('{')?;
        let name = line[..open].to_string();
        let mut chars = line[open + 1..].chars();
        let mut labels = Vec::new();
        loop {
            let mut key = String::new();
            let c = chars.next()?;
            if c == '}' && labels.is_empty() {
                break;
            }
            key.push(c);
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next()? != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '\\' => match chars.next()? {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    '"' => break,
                    '\n' => return None,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.next()? {
                ',' => continue,
                '}' => break,
                _ => return None,
            }
        }
        let rest: String = chars.collect();
        let mut parts = rest.strip_prefix(' ')?.split(' ');
        let value = parse_milli(parts.next()?)?;
        let ts = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((name, labels, value, ts))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn any_label_values_round_trip_through_a_text_parser_on_one_line(
            a in proptest::prelude::any::<String>(),
            b in "[\\\\\"\n\r\t{}=, #a-z]{0,20}",
            value in -(i64::MAX / 2)..(i64::MAX / 2),
            ts in proptest::prelude::any::<i64>(),
        ) {
            let head = series_head("m", &[("pdl", &a), ("home", &b)]);
            let mut buf = Vec::new();
            write_line(&mut buf, &head, value, Scale::Milli, ts);
            let line = String::from_utf8(buf).unwrap();
            proptest::prop_assert_eq!(line.matches('\n').count(), 1, "one line, ending the line: {:?}", line);
            let parsed = parse(&line);
            let want = ("m".to_string(), vec![("pdl".to_string(), a), ("home".to_string(), b)], value, ts);
            proptest::prop_assert_eq!(parsed, Some(want));
        }
    }

    #[test]
    fn a_head_lists_labels_in_order() {
        assert_eq!(
            series_head(
                "m",
                &[
                    ("pdl", "12345678901234"),
                    ("type", "daily"),
                    ("home", "say \"hi\"")
                ]
            ),
            r#"m{pdl="12345678901234",type="daily",home="say \"hi\""}"#
        );
    }

    #[test]
    fn a_key_sorts_the_labels_by_name() {
        assert_eq!(
            series_key("m", [("type", "daily"), ("home", "a\"b"), ("pdl", "1")]),
            r#"m{home="a\"b",pdl="1",type="daily"}"#
        );
    }

    #[test]
    fn a_selector_pins_the_missing_own_labels_to_empty() {
        let s = series_selector(
            "m",
            &[("pdl", "1"), ("type", "daily")],
            &["pdl", "type", "quality"],
        );
        assert_eq!(s, r#"{__name__="m",pdl="1",type="daily",quality=""}"#);
    }

    #[test]
    fn a_line_is_head_value_and_millisecond_timestamp() {
        let mut buf = Vec::new();
        write_line(
            &mut buf,
            "m{a=\"b\"}",
            15_200_000,
            Scale::Milli,
            1_705_273_200_000,
        );
        write_line(&mut buf, "m{a=\"b\"}", -3000, Scale::Milli, 0);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "m{a=\"b\"} 15200 1705273200000\nm{a=\"b\"} -3 0\n"
        );
    }

    #[test]
    fn fractional_values_are_written_as_exact_decimals_without_float_noise() {
        let text = |m: i64| {
            let mut buf = Vec::new();
            write_fixed(&mut buf, m, Scale::Milli);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(text(270_500), "270.5");
        assert_eq!(text(16_667), "16.667");
        assert_eq!(text(250), "0.25");
        assert_eq!(text(5), "0.005");
        assert_eq!(text(-1_050), "-1.05");
        assert_eq!(text(0), "0");
        assert_eq!(text(i64::MIN), "-9223372036854775.808");
        assert_eq!(text(i64::MAX), "9223372036854775.807");
        assert_eq!(text(1_000), "1");
        assert_eq!(text(10_010), "10.01");
        assert_eq!(text(-100), "-0.1");
        let mut buf = Vec::new();
        write_fixed(&mut buf, 1_234_560, Scale::Micro);
        write_fixed(&mut buf, 7, Scale::Micro);
        assert_eq!(String::from_utf8(buf).unwrap(), "1.234560.000007");
    }

    #[test]
    fn lines_are_written_as_the_formatting_machinery_would() {
        for (milli, ts) in [
            (0, 0),
            (1, -1),
            (999, 9),
            (1_000, 10),
            (-1_001, i64::MIN),
            (i64::MAX, i64::MAX),
            (i64::MIN, 1_705_273_200_000),
            (123_456_789, -1_705_273_200_000),
            (10_000, 100),
            (99_099, 1_000_000_000_000_000_000),
            (100_100, 99),
        ] {
            let mut buf = Vec::new();
            write_line(&mut buf, "m", milli, Scale::Milli, ts);
            let sign = if milli < 0 { "-" } else { "" };
            let (whole, frac) = (milli.unsigned_abs() / 1000, milli.unsigned_abs() % 1000);
            let value = if frac == 0 {
                format!("{sign}{whole}")
            } else {
                let f = format!("{frac:03}");
                format!("{sign}{whole}.{}", f.trim_end_matches('0'))
            };
            assert_eq!(String::from_utf8(buf).unwrap(), format!("m {value} {ts}\n"));
        }
    }
}
