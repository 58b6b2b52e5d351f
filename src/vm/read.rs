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

/// The selector of a family's series written under `extra` labels.
fn family_selector(family: Family, extra: &[(String, String)]) -> String {
    let mut out = String::from("{__name__=~\"");
    out.push_str(&family.metrics().join("|"));
    out.push('"');
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
    /// that VictoriaMetrics holds, as of `at_ms`.
    pub async fn observe(
        &self,
        family: Family,
        extra: &[(String, String)],
        at_ms: i64,
    ) -> Result<Observation, SinkError> {
        let selector = family_selector(family, extra);
        // The whole history: from the day after the epoch to `at_ms`.
        let window = format!("{}ms", at_ms.saturating_sub(READ_BACK_FROM_MS).max(1));
        let counts = self
            .query(
                &format!("count_over_time({selector}[{window}]) keep_metric_names"),
                at_ms,
            )
            .await?;
        let sums = self
            .query(
                &format!("sum_over_time({selector}[{window}]) keep_metric_names"),
                at_ms,
            )
            .await?;
        let mut series: HashMap<String, Observed> = HashMap::new();
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
        for (labels, count) in parse_answer(&counts)? {
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
                    selector,
                },
            );
        }
        for (labels, sum) in parse_answer(&sums)? {
            if let Some(o) = series.get_mut(&key_of(&labels).0) {
                o.sum = sum;
            }
        }
        Ok(Observation {
            at_ms,
            series,
            copies: Copies::Unknown,
        })
    }

    /// Reads one series back sample by sample, up to `at_ms`.
    pub async fn stored_samples(
        &self,
        selector: &str,
        at_ms: i64,
    ) -> Result<Vec<(i64, f64)>, SinkError> {
        let body = self.export(selector, 0, at_ms.div_euclid(1000) + 1).await?;
        Ok(parse_export(&body)?
            .into_iter()
            .filter(|(ts, _)| covered(*ts, at_ms))
            .collect())
    }
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
            family_selector(Family::MaxPower, &[("home".into(), "a\"b".into())]),
            r#"{__name__=~"myelectricaldata_max_power_va",home="a\"b"}"#
        );
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
}
