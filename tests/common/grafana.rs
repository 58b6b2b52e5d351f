//! The Grafana dashboard `docs/grafana/myelectricaldata.json` as Grafana
//! uses it: its panels and their queries, its variables substituted, each
//! query sent to VictoriaMetrics as Grafana sends it (a range query aligned
//! on Grafana's interval, or an instant query), and what a stat panel shows
//! for a value.

use std::collections::BTreeMap;

use serde_json::Value;

pub const DASHBOARD: &str = include_str!("../../docs/grafana/myelectricaldata.json");

pub fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// Every panel, those inside collapsed rows too.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// The panel titled `title`.
pub fn panel<'a>(d: &'a Value, title: &str) -> &'a Value {
    panels(d)
        .into_iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("the dashboard has no panel {title:?}"))
}

/// One panel target, as Grafana would send it.
#[derive(Clone)]
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    pub instant: bool,
    /// The panel's minimum interval, seconds (Grafana's default: the
    /// datasource's scrape interval, 15 s).
    pub min_interval: i64,
    pub max_data_points: i64,
    /// The panel's own relative time (`timeFrom`), if any.
    pub time_from: Option<String>,
}

impl Query {
    /// Whether it shows the exporter's own health.
    pub fn is_health(&self) -> bool {
        self.expr.contains("myelectricaldata_exporter_")
    }

    /// Grafana's interval for this panel over `start..end`: the range split
    /// in `maxDataPoints`, rounded to a round duration, at least the panel's
    /// minimum interval.
    pub fn interval(&self, start: i64, end: i64) -> i64 {
        const ROUND: [i64; 17] = [
            1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400, 604800,
            2592000,
        ];
        let raw = ((end - start) / self.max_data_points).max(1);
        let round = ROUND.iter().copied().find(|&r| r >= raw).unwrap_or(raw);
        round.max(self.min_interval)
    }

    /// The panel's own relative time around `now` (`now-2d`, or `+2d` into
    /// the future), if it has one.
    pub fn own_range(&self, now: i64) -> Option<(i64, i64)> {
        let f = self.time_from.as_deref()?;
        let (future, span) = match f.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, f.trim_start_matches("now-")),
        };
        let secs =
            duration_secs(span).unwrap_or_else(|| panic!("panel {:?}: timeFrom {f:?}", self.panel));
        Some(if future {
            (now, now + secs)
        } else {
            (now - secs, now)
        })
    }
}

/// `30m`, `1h`, `1d`, `2d`, `1w` in seconds.
pub fn duration_secs(s: &str) -> Option<i64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return None,
    };
    Some(n * unit)
}

/// Every target of every panel.
pub fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        let Some(targets) = p["targets"].as_array() else {
            continue;
        };
        for t in targets {
            out.push(Query {
                panel: p["title"].as_str().unwrap_or("?").to_string(),
                ref_id: t["refId"].as_str().unwrap_or("?").to_string(),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
                instant: t["instant"].as_bool() == Some(true),
                min_interval: p["interval"]
                    .as_str()
                    .map(|i| duration_secs(i).unwrap_or_else(|| panic!("interval {i:?}")))
                    .unwrap_or(15),
                max_data_points: p["maxDataPoints"].as_i64().unwrap_or(1000),
                time_from: p["timeFrom"].as_str().map(str::to_string),
            });
        }
    }
    out
}

/// The dashboard's own variables with their default values: textboxes and
/// constants, custom lists (the subscribed power's).
pub fn variables(d: &Value) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        let value = match v["type"].as_str() {
            Some("textbox" | "constant") => &v["query"],
            Some("custom") => &v["current"]["value"],
            _ => continue,
        };
        vars.push((
            v["name"].as_str().unwrap().to_string(),
            value.as_str().unwrap().to_string(),
        ));
    }
    vars
}

/// `expr` as Grafana sends it for the range `start..end` at `step` seconds.
pub fn substitute(
    expr: &str,
    vars: &[(String, String)],
    start: i64,
    end: i64,
    step: i64,
) -> String {
    let rate = (step + 15).max(60);
    let mut e = expr
        .replace("$__interval_ms", &(step * 1000).to_string())
        .replace("${__interval_ms}", &(step * 1000).to_string())
        .replace("$__rate_interval", &format!("{rate}s"))
        .replace("${__rate_interval}", &format!("{rate}s"))
        .replace("$__interval", &format!("{step}s"))
        .replace("${__interval}", &format!("{step}s"))
        .replace("$__range", &format!("{}s", end - start))
        .replace("${__range}", &format!("{}s", end - start));
    for (name, value) in vars {
        e = e
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    // Grafana leaves `$1` alone (no variable has that name): it is
    // label_replace's reference to the regex's first group.
    let undefined = e
        .match_indices('$')
        .any(|(at, _)| !e[at + 1..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(
        !undefined,
        "a variable of {expr:?} is not defined by the dashboard: {e:?}"
    );
    e
}

/// The options a query variable shows, as Grafana makes them from a
/// `query_result(...)` query, evaluated at `end`, and the variable's regex
/// with its named groups `text` and `value`: (text, value) pairs.
pub async fn variable_options(vm: &str, variable: &Value, end: i64) -> Vec<(String, String)> {
    let query = variable["query"]["query"]
        .as_str()
        .expect("a variable query");
    let inner = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a query_result variable: {query}"));
    let body = reqwest::Client::new()
        .post(format!("{vm}/api/v1/query"))
        .form(&[("query", inner.to_string()), ("time", end.to_string())])
        .send()
        .await
        .expect("query VictoriaMetrics")
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    let regex = variable["regex"].as_str().unwrap_or_default();
    let regex = regex::Regex::new(regex.trim_start_matches('/').trim_end_matches('/'))
        .unwrap_or_else(|e| panic!("the variable's regex {regex:?}: {e}"));
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().expect(&body) {
        // Grafana's text of a result: name{label="value",...} value time,
        // the labels in VictoriaMetrics' order (sorted), nothing escaped.
        let mut labels = r["metric"].as_object().unwrap().clone();
        let name = labels
            .remove("__name__")
            .map(|n| n.as_str().unwrap().to_string())
            .unwrap_or_default();
        let pairs: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
            .collect();
        let value = &r["value"];
        let text = format!(
            "{name}{{{}}} {} {}",
            pairs.join(","),
            value[1].as_str().unwrap(),
            value[0].as_f64().unwrap() * 1000.0
        );
        let Some(c) = regex.captures(&text) else {
            continue;
        };
        // Either group stands for the other when it is missing.
        let group = |name| c.name(name).map(|m| m.as_str().to_string());
        let (text, value) = (group("text"), group("value"));
        let value = value.or(text.clone()).unwrap_or_default();
        out.push((text.unwrap_or_else(|| value.clone()), value));
    }
    out.sort();
    out
}

/// A series' labels and its (timestamp, value) points.
pub type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// Points by series key, then by instant (Unix seconds).
pub type Points = BTreeMap<String, BTreeMap<i64, f64>>;

/// What VictoriaMetrics answered to one query.
pub struct Answer {
    /// The query as sent, for messages.
    pub sent: String,
    pub body: String,
    /// Series labels → (timestamp, value) points.
    pub series: Vec<Series>,
}

impl Answer {
    /// How many points, all series together.
    pub fn points(&self) -> usize {
        self.series.iter().map(|(_, p)| p.len()).sum()
    }

    /// Every point's value, series after series.
    pub fn values(&self) -> Vec<f64> {
        self.series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .collect()
    }

    /// The one value of an answer to an instant query.
    pub fn single(&self) -> f64 {
        let points = self.values();
        assert_eq!(points.len(), 1, "one value: {}\n{}", self.sent, self.body);
        points[0]
    }

    /// The points keyed by the values of `labels`, joined by spaces.
    pub fn keyed(&self, labels: &[&str]) -> Points {
        let mut out = Points::new();
        for (l, points) in &self.series {
            let key = labels
                .iter()
                .map(|n| l.get(*n).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ");
            let s = out.entry(key).or_default();
            for &(t, v) in points {
                assert!(s.insert(t, v).is_none(), "two points at {t}: {}", self.body);
            }
        }
        out
    }

    /// The points per PDL.
    pub fn by_pdl(&self) -> Points {
        self.keyed(&["pdl"])
    }
}

/// Asserts that `got` holds the keys and instants of `want`, and that
/// `near(got, want)` holds of each value.
pub fn assert_points_near(
    what: &str,
    got: &Points,
    want: &Points,
    sent: &str,
    near: impl Fn(f64, f64) -> bool,
) {
    let instants = |m: &Points| {
        m.iter()
            .map(|(k, s)| (k.clone(), s.keys().copied().collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        instants(got),
        instants(want),
        "{what}: the series and instants of {sent}"
    );
    for (k, points) in want {
        for (t, w) in points {
            let g = got[k][t];
            assert!(
                near(g, *w),
                "{what}, {k} at {t}: got {g}, want {w} ({sent})"
            );
        }
    }
}

/// Asserts that `got` holds the keys and instants of `want`, each value
/// within 1e-6 of it, relatively.
pub fn assert_close(what: &str, got: &Points, want: &Points, sent: &str) {
    assert_points_near(what, got, want, sent, |g, w| {
        (g - w).abs() <= 1e-6 * w.abs().max(1e-9)
    });
}

/// Grafana showing the dashboard on VictoriaMetrics at `vm`, its variables
/// set.
pub struct Grafana {
    pub vm: String,
    pub queries: Vec<Query>,
    pub vars: Vec<(String, String)>,
}

impl Grafana {
    /// The dashboard `d` with its variables' defaults.
    pub fn new(vm: &str, d: &Value) -> Self {
        Grafana {
            vm: vm.to_string(),
            queries: queries(d),
            vars: variables(d),
        }
    }

    /// The same with variable `name` set to `value`.
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// A variable's value, as a number.
    pub fn number(&self, name: &str) -> f64 {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
            .1
            .parse()
            .unwrap_or_else(|_| panic!("variable {name} is not a number"))
    }

    /// The target `ref_id` of the panel titled `panel`.
    pub fn query(&self, panel: &str, ref_id: &str) -> &Query {
        self.queries
            .iter()
            .find(|q| q.panel == panel && q.ref_id == ref_id)
            .unwrap_or_else(|| {
                panic!("the dashboard has no panel {panel:?} with a target {ref_id}")
            })
    }

    /// Runs the target `ref_id` of `panel` over `start..end`.
    pub async fn run_panel(&self, panel: &str, ref_id: &str, start: i64, end: i64) -> Answer {
        self.run(self.query(panel, ref_id), start, end).await
    }

    /// Runs `q` against VictoriaMetrics as Grafana would: a range query over
    /// `start..end` aligned on the step, or an instant query at `end`.
    pub async fn run(&self, q: &Query, start: i64, end: i64) -> Answer {
        let vm = &self.vm;
        let step = q.interval(start, end);
        let expr = substitute(&q.expr, &self.vars, start, end, step);
        let (url, form, sent) = if q.instant {
            (
                format!("{vm}/api/v1/query"),
                vec![("query", expr.clone()), ("time", end.to_string())],
                format!("instant query at {end}: {expr}"),
            )
        } else {
            let (s, e) = (start - start.rem_euclid(step), end - end.rem_euclid(step));
            (
                format!("{vm}/api/v1/query_range"),
                vec![
                    ("query", expr.clone()),
                    ("start", s.to_string()),
                    ("end", e.to_string()),
                    ("step", format!("{step}s")),
                ],
                format!("range query {s}..{e} step {step}s: {expr}"),
            )
        };
        let resp = reqwest::Client::new()
            .post(url)
            .form(&form)
            .send()
            .await
            .expect("query VictoriaMetrics");
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(
            status.is_success(),
            "panel {:?} target {}: VictoriaMetrics refused the {sent}: HTTP {status}: {body}",
            q.panel,
            q.ref_id
        );
        let v: Value = serde_json::from_str(&body).expect("a JSON answer");
        let series = v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| series_of(r, q.instant))
            .collect();
        Answer { sent, body, series }
    }
}

/// One result of a query's answer, its NaN points left out.
fn series_of(r: &Value, instant: bool) -> Series {
    let labels = r["metric"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let raw = if instant {
        vec![r["value"].clone()]
    } else {
        r["values"].as_array().cloned().unwrap_or_default()
    };
    let points = raw
        .iter()
        .filter_map(|p| {
            let t = p[0].as_f64()? as i64;
            let v: f64 = p[1].as_str()?.parse().ok()?;
            (!v.is_nan()).then_some((t, v))
        })
        .collect();
    (labels, points)
}

/// What a stat panel shows for `value`, as Grafana applies its value and
/// range mappings, then its thresholds: the mapped text, if any, and the
/// colour.
pub fn shown(panel: &Value, value: f64) -> (Option<String>, String) {
    let defaults = &panel["fieldConfig"]["defaults"];
    let mut colour = None;
    for step in defaults["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if step["value"].as_f64().is_none_or(|v| value >= v) {
            colour = step["color"].as_str();
        }
    }
    for m in defaults["mappings"].as_array().into_iter().flatten() {
        let result = match m["type"].as_str() {
            Some("value") => m["options"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.parse::<f64>() == Ok(value))
                .map(|(_, r)| r),
            Some("range") => {
                let o = &m["options"];
                (o["from"].as_f64().is_none_or(|f| value >= f)
                    && o["to"].as_f64().is_none_or(|t| value <= t))
                .then_some(&o["result"])
            }
            t => panic!("{}: mapping type {t:?}", panel["title"]),
        };
        if let Some(r) = result {
            let colour = r["color"].as_str().or(colour);
            return (
                r["text"].as_str().map(str::to_string),
                colour.expect("a colour").to_string(),
            );
        }
    }
    (None, colour.expect("thresholds").to_string())
}
