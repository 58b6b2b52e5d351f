//! Reading a family back: the count and sum of every series VictoriaMetrics
//! holds (two instant queries), and one series' raw samples. What they are
//! compared with, and what a difference means, is `verify`'s.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::model::render::{escape_label_value, series_key, series_selector};
use crate::model::{Family, OWN_LABELS, RESERVED_LABELS};
use crate::verify::{covered, Copies, Observation, Observed, READ_BACK_FROM_MS};

fn answer(e: serde_json::Error) -> SinkError {
    SinkError::Answer(e.to_string())
}

#[derive(Deserialize)]
struct QueryAnswer {
    data: QueryData,
}

#[derive(Deserialize)]
struct QueryData {
    result: Vec<QueryResult>,
}

#[derive(Deserialize)]
struct QueryResult {
    metric: BTreeMap<String, String>,
    value: (serde_json::Value, String),
}

/// Series a read-back query answers for at most, about: a family with
/// more is read in shards by the last digits of its `pdl` label, so that
/// each answer stays a few MB and each query far within VictoriaMetrics'
/// limits (`-search.maxUniqueTimeseries`, `-search.maxSamplesPerQuery`,
/// `-search.maxQueryDuration`), however many meters.
const SERIES_PER_QUERY: usize = 4_000;

/// The environment variable that lowers [`SERIES_PER_QUERY`]: a test hook,
/// so that a small database is read back in shards too.
pub const SERIES_PER_QUERY_VAR: &str = "MYELECTRICALDATA_EXPORTER_TEST_SERIES_PER_QUERY";

fn series_per_query() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var(SERIES_PER_QUERY_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(SERIES_PER_QUERY)
    })
}

/// The label matchers that split a read-back of about `series` series into
/// shards that together match every series once: by the last one or two
/// digits of `pdl`, and a last shard for every other value (none included).
fn shards(series: usize, per_query: usize) -> Vec<String> {
    let digits = if series <= per_query {
        return vec![String::new()];
    } else if series <= per_query * 10 {
        1
    } else {
        2
    };
    let mut out: Vec<String> = (0..10usize.pow(digits))
        .map(|i| format!("pdl=~\".*{i:0w$}\"", w = digits as usize))
        .collect();
    out.push(format!("pdl!~\".*{}\"", "[0-9]".repeat(digits as usize)));
    out
}

/// The selector of a family's series written under `extra` labels, within
/// the shard `shard` (a label matcher, or empty).
fn family_selector(family: Family, extra: &[(String, String)], shard: &str) -> String {
    let mut out = String::from("{__name__=~\"");
    out.push_str(&family.metrics().join("|"));
    out.push('"');
    if !shard.is_empty() {
        out.push(',');
        out.push_str(shard);
    }
    for (k, v) in extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(&mut out, v);
        out.push('"');
    }
    out.push('}');
    out
}

/// Whether a series VictoriaMetrics holds is one this exporter writes: its
/// labels are the exporter's own and exactly `extra`. Another installation
/// sharing the server (with other `VICTORIAMETRICS_LABELS`) is left alone.
fn is_ours(labels: &BTreeMap<String, String>, extra: &[(String, String)]) -> bool {
    let extras_match = extra
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|x| x == v));
    extras_match
        && labels.keys().all(|k| {
            k == "__name__"
                || RESERVED_LABELS.contains(&k.as_str())
                || extra.iter().any(|(e, _)| e == k)
        })
}

/// A series' labels, `__name__` included.
type Labels = BTreeMap<String, String>;

/// Parses one query answer into (labels, value) pairs.
fn parse_answer(body: &str) -> Result<Vec<(Labels, f64)>, SinkError> {
    let answer: QueryAnswer = serde_json::from_str(body).map_err(answer)?;
    answer
        .data
        .result
        .into_iter()
        .map(|r| {
            let v: f64 = r
                .value
                .1
                .parse()
                .map_err(|_| SinkError::Answer(format!("a value of {:?}", r.value.1)))?;
            Ok((r.metric, v))
        })
        .collect()
}

impl Sink {
    /// Reads back a family: the count and sum of every series of the exporter's
    /// that VictoriaMetrics holds, as of `at_ms`; `expected` says about how
    /// many there are, to split the queries.
    pub async fn observe(
        &self,
        family: Family,
        extra: &[(String, String)],
        at_ms: i64,
        expected: usize,
    ) -> Result<Observation, SinkError> {
        let mut series: HashMap<String, Observed> = HashMap::with_capacity(expected);
        for shard in shards(expected, series_per_query()) {
            self.observe_shard(family, extra, at_ms, &shard, &mut series)
                .await?;
        }
        Ok(Observation {
            at_ms,
            series,
            copies: Copies::Unknown,
        })
    }

    /// Reads back one shard of a family into `series`.
    async fn observe_shard(
        &self,
        family: Family,
        extra: &[(String, String)],
        at_ms: i64,
        shard: &str,
        series: &mut HashMap<String, Observed>,
    ) -> Result<(), SinkError> {
        let selector = family_selector(family, extra, shard);
        // The whole history: from the day after the epoch to `at_ms`.
        let window = format!("{}ms", at_ms.saturating_sub(READ_BACK_FROM_MS).max(1));
        let counts = self
            .query_answer(
                &format!("count_over_time({selector}[{window}]) keep_metric_names"),
                at_ms,
            )
            .await?;
        let sums = self
            .query_answer(
                &format!("sum_over_time({selector}[{window}]) keep_metric_names"),
                at_ms,
            )
            .await?;
        let key_of = |labels: &BTreeMap<String, String>| {
            let name = labels.get("__name__").map_or("", String::as_str);
            let own: Vec<(&str, &str)> = labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            (
                series_key(name, own.iter().copied()),
                name.to_string(),
                own.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        for (labels, count) in counts {
            if !is_ours(&labels, extra) {
                continue;
            }
            let (key, name, own) = key_of(&labels);
            let pairs: Vec<(&str, &str)> =
                own.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let selector = series_selector(&name, &pairs, &OWN_LABELS);
            series.insert(
                key,
                Observed {
                    count: count.max(0.0) as u64,
                    sum: 0.0,
                    last: None,
                    selector,
                },
            );
        }
        for (labels, sum) in sums {
            if let Some(o) = series.get_mut(&key_of(&labels).0) {
                o.sum = sum;
            }
        }
        if family.spec().read_back_last {
            let lasts = self
                .query_answer(
                    &format!("tlast_over_time({selector}[{window}]) keep_metric_names"),
                    at_ms,
                )
                .await?;
            for (labels, seconds) in lasts {
                if let Some(o) = series.get_mut(&key_of(&labels).0) {
                    o.last = Some((seconds * 1000.0).round() as i64);
                }
            }
        }
        Ok(())
    }

    /// Reads one series back sample by sample, up to `at_ms`.
    pub async fn stored_samples(
        &self,
        selector: &str,
        at_ms: i64,
    ) -> Result<Vec<(i64, f64)>, SinkError> {
        let mut attempt = 0;
        let samples = loop {
            let body = self.export(selector, 0, at_ms.div_euclid(1000) + 1).await?;
            match parse_export(&body) {
                Err(_) if cut_short(&body) && attempt + 1 < READ_ATTEMPTS => {
                    again(attempt, "an export").await;
                    attempt += 1;
                }
                parsed => break parsed?,
            }
        };
        Ok(samples
            .into_iter()
            .filter(|(ts, _)| covered(*ts, at_ms))
            .collect())
    }

    /// An instant query's answer, parsed; one cut short is asked again.
    async fn query_answer(&self, query: &str, at_ms: i64) -> Result<Vec<(Labels, f64)>, SinkError> {
        let mut attempt = 0;
        loop {
            let body = self.query(query, at_ms).await?;
            match parse_answer(&body) {
                Err(_) if cut_short(&body) && attempt + 1 < READ_ATTEMPTS => {
                    again(attempt, "a query's answer").await;
                    attempt += 1;
                }
                parsed => return parsed,
            }
        }
    }
}

/// How many times a read-back is asked before an answer cut short counts
/// as an unreadable one.
const READ_ATTEMPTS: u32 = 3;

/// Whether an answer's JSON ends before it is complete: a transfer cut
/// short, not an answer of another shape. Seen in CI through vmauth 1.79
/// over TLS under load: a 200 whose body stopped after its first 4 KiB,
/// the connection closed as if the body were whole. Asked again, as a
/// dropped connection would be.
fn cut_short(body: &str) -> bool {
    let last = body.trim_end().lines().last().unwrap_or_default();
    serde_json::from_str::<serde::de::IgnoredAny>(last).is_err_and(|e| e.is_eof())
        || serde_json::from_str::<serde::de::IgnoredAny>(body).is_err_and(|e| e.is_eof())
}

/// Waits before asking again, by the one retry policy's backoff.
async fn again(attempt: u32, what: &str) {
    tracing::warn!(
        attempt = attempt + 1,
        "VictoriaMetrics' answer to a read-back was cut short ({what}): asking again"
    );
    tokio::time::sleep(super::retry::backoff(
        attempt,
        std::time::Duration::from_secs(2),
    ))
    .await;
}

/// Parses `/api/v1/export`'s JSON lines into (timestamp, value) pairs.
pub fn parse_export(body: &str) -> Result<Vec<(i64, f64)>, SinkError> {
    #[derive(Deserialize)]
    struct Line {
        values: Vec<Option<f64>>,
        timestamps: Vec<i64>,
    }
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line).map_err(answer)?;
        out.extend(
            l.timestamps
                .into_iter()
                .zip(l.values.into_iter().map(|v| v.unwrap_or(f64::NAN))),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_whose_json_stops_early_is_cut_short_and_one_of_another_shape_is_not() {
        let whole = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(!cut_short(whole));
        assert!(cut_short(&whole[..40]));
        assert!(!cut_short(r#"{"status":"error"}"#));
        assert!(!cut_short("<html>502 Bad Gateway</html>"));
        let export = "{\"metric\":{},\"values\":[1],\"timestamps\":[1]}\n";
        assert!(!cut_short(&export.repeat(3)));
        assert!(cut_short(&export.repeat(3)[..90]));
    }

    #[test]
    fn only_series_with_the_exporters_labels_and_exactly_its_extra_labels_are_its_own() {
        let extra = vec![("home".to_string(), "paris".to_string())];
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(is_ours(
            &labels(&[("__name__", "m"), ("pdl", "1"), ("home", "paris")]),
            &extra
        ));
        assert!(!is_ours(
            &labels(&[("__name__", "m"), ("pdl", "1"), ("home", "lyon")]),
            &extra
        ));
        assert!(!is_ours(
            &labels(&[
                ("__name__", "m"),
                ("pdl", "1"),
                ("home", "paris"),
                ("job", "x")
            ]),
            &extra
        ));
        assert!(!is_ours(
            &labels(&[("__name__", "m"), ("pdl", "1")]),
            &extra
        ));
    }

    #[test]
    fn a_family_selector_names_its_metrics_and_the_extra_labels() {
        assert_eq!(
            family_selector(Family::MaxPower, &[("home".into(), "a\"b".into())], ""),
            r#"{__name__=~"myelectricaldata_max_power_va",home="a\"b"}"#
        );
        assert_eq!(
            family_selector(Family::MaxPower, &[], r#"pdl=~".*7""#),
            r#"{__name__=~"myelectricaldata_max_power_va",pdl=~".*7"}"#
        );
    }

    #[test]
    fn shards_split_by_the_last_digits_of_the_pdl_and_leave_no_series_out() {
        assert_eq!(shards(4_000, 4_000), vec![String::new()]);
        let ten = shards(4_001, 4_000);
        assert_eq!(ten.len(), 11);
        assert_eq!(ten[0], r#"pdl=~".*0""#);
        assert_eq!(ten[10], r#"pdl!~".*[0-9]""#);
        let hundred = shards(40_001, 4_000);
        assert_eq!(hundred.len(), 101);
        assert_eq!(hundred[7], r#"pdl=~".*07""#);
        assert_eq!(hundred[100], r#"pdl!~".*[0-9][0-9]""#);
    }

    #[test]
    fn query_and_export_answers_are_read() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"m","pdl":"1"},"value":[1700000000,"48"]}]}}"#;
        let parsed = parse_answer(body).unwrap();
        assert_eq!(parsed[0].1, 48.0);
        let export =
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[1,2.5],\"timestamps\":[10,20]}\n";
        assert_eq!(parse_export(export).unwrap(), vec![(10, 1.0), (20, 2.5)]);
    }

    use proptest::strategy::Strategy;

    /// A label set as VictoriaMetrics may answer it.
    fn labels() -> impl Strategy<Value = Labels> {
        proptest::collection::btree_map(
            "[a-z_]{1,8}",
            crate::model::arbitrary::text("\\\\\"\na-z"),
            0..4,
        )
    }

    /// A value as the exporter writes them (thousandths or millionths),
    /// or any finite one.
    fn value() -> impl Strategy<Value = (f64, bool)> {
        proptest::prop_oneof![
            (-(1i64 << 52)..(1i64 << 52)).prop_map(|n| (n as f64 / 1000.0, true)),
            (-(1i64 << 52)..(1i64 << 52)).prop_map(|n| (n as f64 / 1e6, true)),
            (-1e300f64..1e300).prop_map(|v| (v, false)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn an_export_reads_as_its_samples_in_order(
            series in proptest::collection::vec(
                (labels(), proptest::collection::vec((proptest::prelude::any::<i64>(), proptest::option::of(value())), 0..6)),
                0..5,
            ),
            blank in proptest::prelude::any::<bool>(),
        ) {
            let mut body = String::new();
            let mut want = Vec::new();
            for (metric, samples) in &series {
                let ts: Vec<i64> = samples.iter().map(|(t, _)| *t).collect();
                let values: Vec<Option<f64>> = samples.iter().map(|(_, v)| v.map(|v| v.0)).collect();
                body.push_str(&serde_json::json!({"metric": metric, "values": values, "timestamps": ts}).to_string());
                body.push('\n');
                if blank {
                    body.push_str("  \n");
                }
                want.extend(samples.iter().copied());
            }
            let got = parse_export(&body)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{body:?}: {e}")))?;
            proptest::prop_assert_eq!(got.len(), want.len());
            for ((t, v), (want_t, want_v)) in got.into_iter().zip(want) {
                proptest::prop_assert_eq!(t, want_t);
                match want_v {
                    // null is a gap: NaN.
                    None => proptest::prop_assert!(v.is_nan()),
                    // The exporter's decimals are read exactly; any other
                    // value within a few units in the last place (serde_json
                    // parses long decimals so, without float_roundtrip).
                    Some((w, exact)) => {
                        let close = (v - w).abs() <= w.abs() * 1e-15;
                        proptest::prop_assert!(v.to_bits() == w.to_bits() || !exact && close, "{} read as {}", w, v);
                    }
                }
            }
        }

        #[test]
        fn a_query_answer_reads_as_its_labels_and_values(
            results in proptest::collection::vec(
                (labels(), proptest::prop_oneof![
                    (-1e300f64..1e300).prop_map(|v| v.to_string()),
                    proptest::sample::select(vec!["NaN", "+Inf", "-Inf", "0", "1e3"]).prop_map(String::from),
                ]),
                0..5,
            ),
        ) {
            let body = serde_json::json!({
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": results.iter().map(|(m, v)| serde_json::json!({"metric": m, "value": [1_700_000_000.5, v]})).collect::<Vec<_>>(),
                },
            })
            .to_string();
            let got = parse_answer(&body)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{body:?}: {e}")))?;
            proptest::prop_assert_eq!(got.len(), results.len());
            for ((labels, value), (want_labels, text)) in got.iter().zip(&results) {
                proptest::prop_assert_eq!(labels, want_labels);
                let want: f64 = text.parse().unwrap();
                proptest::prop_assert!(value.to_bits() == want.to_bits() || value.is_nan() && want.is_nan(), "{} read as {}", text, value);
            }
        }

        #[test]
        fn any_answer_text_is_read_or_an_error_saying_where(
            text in proptest::prop_oneof![
                crate::model::arbitrary::text("{}\\[\\]\":,0-9a-z\n"),
                crate::model::arbitrary::json("0-9a-z").prop_map(|v| v.to_string()),
                crate::model::arbitrary::json("0-9a-z").prop_map(|v| serde_json::json!({"data": {"result": [{"metric": {}, "value": [1, v]}]}}).to_string()),
            ],
        ) {
            if let Err(e) = parse_export(&text) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
            if let Err(SinkError::Answer(why)) = parse_answer(&text) {
                // serde names the line and column; a value that is no number is quoted.
                proptest::prop_assert!(why.contains("line ") || why.starts_with("a value of \""), "{}", why);
            }
        }
    }
}
