//! Reading VictoriaMetrics and its neighbours back: an instant PromQL
//! query, the JSON lines of `/api/v1/export`, and the counters of a
//! Prometheus-format `/metrics` page.

use std::collections::BTreeMap;

/// Every raw sample of an export: series labels → (ts, value) in stored order.
pub type Export = BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>>;

/// An instant query at now against VictoriaMetrics at `vm`: the answer's
/// text and its parsed JSON.
pub async fn instant_query(vm: &str, query: &str) -> (String, serde_json::Value) {
    let body = reqwest::Client::new()
        .post(format!("{vm}/api/v1/query"))
        .form(&[("query", query)])
        .send()
        .await
        .expect("query VictoriaMetrics")
        .text()
        .await
        .expect("read the answer");
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (body, v)
}

/// The samples of an `/api/v1/export` answer (one JSON object a line).
pub fn parse_export(body: &str) -> Export {
    let mut out = Export::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
        let labels: BTreeMap<String, String> = v["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let ts = v["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap());
        let vals = v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap());
        out.entry(labels).or_default().extend(ts.zip(vals));
    }
    out
}

/// The sum of the counter `name` over the lines of a `/metrics` page that
/// contain `filter` (all its label sets when `filter` is empty).
pub fn sum_metric(page: &str, name: &str, filter: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
