//! The Grafana dashboard `docs/grafana/myelectricaldata.json` against a real
//! VictoriaMetrics fed by the exporter: every query of every panel, with the
//! dashboard's variables substituted as Grafana would, returns data; a few
//! return exactly what PostgreSQL's rows say (the Tempo cost, the Tempo and
//! Zen Flex calendars, today's and tomorrow's colours, the EcoWatt days
//! ahead, the load curve's power, each day's maximum power and its share of
//! the subscribed power); and the exporter-health panels show what the
//! daemon itself reports, scraped by VictoriaMetrics from its `/metrics`:
//! its work, and its read-backs of VictoriaMetrics (the repairs of what
//! VictoriaMetrics lost, the last full reconciliation that verified).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use myelectricaldata_vm_exporter::model::calendar::{day_millis, local_millis};
use serde_json::Value;
use sqlx::Row;

use common::model::{expected, from_export};
use common::{free_port, spawn_exporter, Servers, Victoria};

const DASHBOARD: &str = include_str!("../docs/grafana/myelectricaldata.json");

/// A PDL of the demo data, which has daily, detailed and production rows
/// (a 30-minute meter).
const PDL: &str = "12345678901234";

/// The demo data's other PDL, a 10-minute meter.
const PDL_10_MIN: &str = "98765432109876";

/// The demo data (tests/fixtures/myelectricaldata_data.sql) lies in
/// 2023-08-15 .. 2024-11-10, plus EcoWatt from today to three days ahead.
fn demo_range() -> (i64, i64) {
    (
        Utc.with_ymd_and_hms(2023, 8, 1, 0, 0, 0)
            .unwrap()
            .timestamp(),
        Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0)
            .unwrap()
            .timestamp(),
    )
}

/// The tariff variables and their defaults: the regulated prices in force
/// since 1 February 2026 (EUR/kWh incl. taxes) and the subscriptions of a
/// 9 kVA meter (EUR a month incl. taxes).
const TARIFF_DEFAULTS: &[(&str, &str)] = &[
    ("price_tempo_bleu_hp", "0.1612"),
    ("price_tempo_bleu_hc", "0.1325"),
    ("price_tempo_blanc_hp", "0.1871"),
    ("price_tempo_blanc_hc", "0.1499"),
    ("price_tempo_rouge_hp", "0.7060"),
    ("price_tempo_rouge_hc", "0.1575"),
    ("price_hp", "0.2065"),
    ("price_hc", "0.1579"),
    ("price_base", "0.1927"),
    ("subscription_base", "19.88"),
    ("subscription_hphc", "19.88"),
    ("subscription_tempo", "19.84"),
];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// Every panel, those inside collapsed rows too.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// One panel target, as Grafana would send it.
#[derive(Clone)]
struct Query {
    panel: String,
    ref_id: String,
    expr: String,
    instant: bool,
    /// The panel's minimum interval, seconds (Grafana's default: the
    /// datasource's scrape interval, 15 s).
    min_interval: i64,
    max_data_points: i64,
    /// The panel's own relative time (`timeFrom`), if any.
    time_from: Option<String>,
}

impl Query {
    fn is_health(&self) -> bool {
        self.expr.contains("myelectricaldata_exporter_")
    }

    /// Grafana's interval for this panel over `start..end`: the range split
    /// in `maxDataPoints`, rounded to a round duration, at least the panel's
    /// minimum interval.
    fn interval(&self, start: i64, end: i64) -> i64 {
        const ROUND: [i64; 17] = [
            1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400, 604800,
            2592000,
        ];
        let raw = ((end - start) / self.max_data_points).max(1);
        let round = ROUND.iter().copied().find(|&r| r >= raw).unwrap_or(raw);
        round.max(self.min_interval)
    }

    /// The range this test queries: the panel's own relative time around
    /// `now`; else the last five minutes for the exporter's health, where
    /// the daemon just ran; else the demo data's span.
    fn range(&self, now: i64) -> (i64, i64) {
        match self.time_from.as_deref() {
            Some(f) => {
                let (future, span) = match f.strip_prefix('+') {
                    Some(rest) => (true, rest),
                    None => (false, f.trim_start_matches("now-")),
                };
                let secs = duration_secs(span)
                    .unwrap_or_else(|| panic!("panel {:?}: timeFrom {f:?}", self.panel));
                if future {
                    (now, now + secs)
                } else {
                    (now - secs, now)
                }
            }
            None if self.is_health() => (now - 300, now),
            None => demo_range(),
        }
    }
}

/// `30m`, `1h`, `1d`, `2d`, `1w` in seconds.
fn duration_secs(s: &str) -> Option<i64> {
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

fn queries(d: &Value) -> Vec<Query> {
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

/// The dashboard's own variables with their default values (the price
/// textboxes, the subscribed power's list), plus `$pdl` set to one real PDL.
fn variables(d: &Value) -> Vec<(String, String)> {
    let mut vars = vec![("pdl".to_string(), PDL.to_string())];
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

/// `vars` with `name` set to `value`.
fn with_var(vars: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars.iter().filter(|(n, _)| n != name).cloned().collect();
    out.push((name.to_string(), value.to_string()));
    out
}

/// A variable's value in `vars`, as a number.
fn number(vars: &[(String, String)], name: &str) -> f64 {
    vars.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
        .1
        .parse()
        .unwrap_or_else(|_| panic!("variable {name} is not a number"))
}

/// `expr` as Grafana sends it for the range `start..end` at `step` seconds.
fn substitute(expr: &str, vars: &[(String, String)], start: i64, end: i64, step: i64) -> String {
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
    assert!(
        !e.contains('$'),
        "a variable of {expr:?} is not defined by the dashboard: {e:?}"
    );
    e
}

/// A series' labels and its (timestamp, value) points.
type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);

/// What VictoriaMetrics answered to one query.
struct Answer {
    /// The query as sent, for messages.
    sent: String,
    body: String,
    /// Series labels → (timestamp, value) points.
    series: Vec<Series>,
}

impl Answer {
    fn points(&self) -> usize {
        self.series.iter().map(|(_, p)| p.len()).sum()
    }
}

/// Runs `q` against VictoriaMetrics as Grafana would: a range query over
/// `start..end` aligned on the step, or an instant query at `end`.
async fn run(vm: &str, q: &Query, vars: &[(String, String)], start: i64, end: i64) -> Answer {
    let step = q.interval(start, end);
    let expr = substitute(&q.expr, vars, start, end, step);
    let client = reqwest::Client::new();
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
    let resp = client
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
    let mut series = Vec::new();
    for r in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let labels = r["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let raw = if q.instant {
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
        series.push((labels, points));
    }
    Answer { sent, body, series }
}

/// Asserts that every query of `qs` returns data over the range it is for.
async fn assert_all_return_data(vm: &str, qs: &[&Query], vars: &[(String, String)]) {
    let now = Utc::now().timestamp();
    let mut failures = Vec::new();
    for q in qs {
        let (start, end) = q.range(now);
        let a = run(vm, q, vars, start, end).await;
        if a.points() == 0 {
            failures.push(format!(
                "panel {:?} target {} returned no data: {}\n  answer: {}",
                q.panel, q.ref_id, a.sent, a.body
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn find<'a>(qs: &'a [Query], panel: &str, ref_id: &str) -> &'a Query {
    qs.iter()
        .find(|q| q.panel == panel && q.ref_id == ref_id)
        .unwrap_or_else(|| panic!("the dashboard has no panel {panel:?} with a target {ref_id}"))
}

fn paris_today() -> NaiveDate {
    Utc::now().with_timezone(&Paris).date_naive()
}

/// Unix seconds of 00:00 in Paris on `date`.
fn paris_midnight(date: NaiveDate) -> i64 {
    day_millis(Paris, date) / 1000
}

/// Unix seconds of a row's `date` at its `interval_start` (00:00 when
/// NULL), local time.
fn row_instant(date: NaiveDate, start: Option<&str>) -> i64 {
    let t = start.map_or(NaiveTime::MIN, |s| {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap_or_else(|_| panic!("start {s:?}"))
    });
    local_millis(Paris, date.and_time(t)) / 1000
}

/// An answer's points per PDL.
fn by_pdl(a: &Answer) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (labels, points) in &a.series {
        let pdl = labels.get("pdl").cloned().unwrap_or_default();
        let s = out.entry(pdl).or_default();
        for &(t, v) in points {
            assert!(s.insert(t, v).is_none(), "two points at {t}: {}", a.body);
        }
    }
    out
}

/// Asserts that `a` holds exactly the points of `want` (by PDL), to 1e-9.
fn assert_points(what: &str, a: &Answer, want: &BTreeMap<String, BTreeMap<i64, f64>>) {
    let got = by_pdl(a);
    assert_eq!(
        got.iter()
            .map(|(p, s)| (p, s.keys().collect::<Vec<_>>()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|(p, s)| (p, s.keys().collect::<Vec<_>>()))
            .collect::<Vec<_>>(),
        "{what}: the PDLs and instants of {}",
        a.sent
    );
    for (pdl, points) in want {
        for (t, w) in points {
            let g = got[pdl][t];
            assert!(
                (g - w).abs() < 1e-9,
                "{what}, PDL {pdl} at {t}: got {g}, want {w} ({})",
                a.sent
            );
        }
    }
}

/// Runs the exporter once over the demo data and waits until
/// VictoriaMetrics lists both PDLs, as the `$pdl` variable's query does.
async fn export_demo_data(servers: &Servers) {
    common::run_ok(&["once"], &servers.env(&[]));
    let vm = servers.vm.url.as_str();

    // What was written becomes searchable within a second.
    let client = reqwest::Client::new();
    client
        .get(format!("{vm}/internal/force_flush"))
        .send()
        .await
        .unwrap();

    // The $pdl variable lists the PDLs of the range.
    let (start, end) = demo_range();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = client
            .get(format!("{vm}/api/v1/label/pdl/values"))
            .query(&[
                ("match[]", "myelectricaldata_consumption_wh"),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains(PDL) && body.contains(PDL_10_MIN) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "label_values(myelectricaldata_consumption_wh, pdl): {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Tempo days around today, as MyElectricalData writes them: yesterday BLUE,
/// today WHITE, tomorrow RED (the demo data's calendar ends in 2024).
async fn add_tempo_days_around_today(pool: &sqlx::PgPool) {
    let today = paris_today();
    for (k, colour) in [(-1i64, "BLUE"), (0, "WHITE"), (1, "RED")] {
        let d = today
            .checked_add_signed(chrono::Duration::days(k))
            .unwrap()
            .format("%Y-%m-%d");
        sqlx::raw_sql(&format!(
            "INSERT INTO tempo_days (id, date, color) \
             VALUES ('{d}', '{d} 00:00'::timestamp AT TIME ZONE 'Europe/Paris', '{colour}')"
        ))
        .execute(pool)
        .await
        .unwrap();
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_i64().unwrap() >= 36);
    assert_eq!(d["uid"], "myelectricaldata");
    assert_eq!(d["time"]["from"], "now-90d");
    assert!(
        d["id"].is_null(),
        "an exported dashboard has no database id"
    );

    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let pdl = var("pdl");
    assert_eq!(pdl["type"], "query");
    assert_eq!(
        pdl["query"]["query"],
        "label_values(myelectricaldata_consumption_wh, pdl)"
    );
    assert_eq!(pdl["datasource"]["uid"], "${datasource}");
    // The prices (EUR/kWh) and the monthly subscriptions (EUR) of the three
    // options, textboxes defaulting to the regulated tariff, each saying
    // where its default comes from and when it changes.
    assert!(
        vars.iter()
            .all(|v| !["price_bleu", "price_blanc", "price_rouge"]
                .contains(&v["name"].as_str().unwrap())),
        "the blended Tempo prices are gone"
    );
    for (name, default) in TARIFF_DEFAULTS {
        let v = var(name);
        assert_eq!(v["type"], "textbox", "{name}");
        assert_eq!(v["query"], *default, "{name}");
        assert_eq!(v["current"]["value"], v["query"], "{name}");
        let value: f64 = default.parse().unwrap();
        let range = if name.starts_with("subscription_") {
            5.0..60.0
        } else {
            0.05..1.0
        };
        assert!(range.contains(&value), "{name} = {value}");
        let description = v["description"].as_str().unwrap();
        assert!(
            description.contains("1er février et le 1er août")
                && description.contains("Par défaut"),
            "{name}: {description}"
        );
    }
    // The subscribed power, in kVA: the standard Linky powers, 9 by default.
    let kva = var("subscribed_kva");
    assert_eq!(kva["type"], "custom");
    assert_eq!(kva["query"], "3,6,9,12,15,18,24,30,36");
    assert_eq!(kva["current"]["value"], "9");
    let options: Vec<&str> = kva["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(options, ["3", "6", "9", "12", "15", "18", "24", "30", "36"]);

    let mut ids = std::collections::BTreeSet::new();
    let mut cells = std::collections::BTreeMap::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().unwrap(),
            g["y"].as_i64().unwrap(),
            g["w"].as_i64().unwrap(),
            g["h"].as_i64().unwrap(),
        );
        assert!(x >= 0 && w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title) {
                    panic!("panels {other:?} and {title:?} overlap");
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = std::collections::BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(!expr.trim().is_empty(), "{title}");
            // The energy series mix daily, monthly and per-interval samples:
            // a query that does not pick one type counts the energy twice.
            for metric in [
                "myelectricaldata_consumption_wh{",
                "myelectricaldata_production_wh{",
            ] {
                for (at, _) in expr.match_indices(metric) {
                    let matchers = &expr[at..at + expr[at..].find('}').unwrap()];
                    assert!(matchers.contains("type=\""), "{title}: {expr}");
                }
            }
        }
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_data_and_the_calendar_shows_each_days_colour() {
    common::away_from_paris_midnight().await;
    let servers = Servers::start().await;
    add_tempo_days_around_today(&servers.pool).await;
    export_demo_data(&servers).await;
    let vm = servers.vm.url.as_str();
    let d = dashboard();
    let vars = variables(&d);
    let qs = queries(&d);
    assert!(qs.len() >= 20, "{} queries", qs.len());

    let data: Vec<&Query> = qs.iter().filter(|q| !q.is_health()).collect();
    assert_all_return_data(vm, &data, &vars).await;

    // The Tempo calendar: 1 BLEU, 2 BLANC, 3 ROUGE, each day at 00:00 UTC
    // of its date (a 1-day step there reads the day that began just
    // before, at local midnight), over days with red and white.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, color::text FROM tempo_days
          WHERE id BETWEEN '2024-01-01' AND '2024-01-20' ORDER BY id",
    )
    .fetch_all(&servers.pool)
    .await
    .unwrap();
    let mut want_colour = BTreeMap::new();
    for (id, colour) in &rows {
        let code = match colour.as_str() {
            "BLUE" => 1.0,
            "WHITE" => 2.0,
            "RED" => 3.0,
            c => panic!("colour {c}"),
        };
        let date = NaiveDate::parse_from_str(id, "%Y-%m-%d").unwrap();
        want_colour.insert(
            date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
            code,
        );
    }
    assert!(
        want_colour.values().any(|&c| c == 3.0) && want_colour.values().any(|&c| c == 2.0),
        "the checked days hold red and white days: {want_colour:?}"
    );
    let (start, end) = (
        *want_colour.keys().next().unwrap(),
        *want_colour.keys().last().unwrap(),
    );
    let a = run(vm, find(&qs, "Calendrier Tempo", "A"), &vars, start, end).await;
    assert_eq!(a.series.len(), 1, "Calendrier Tempo: {}", a.body);
    let got: BTreeMap<i64, f64> = a.series[0].1.iter().copied().collect();
    assert_eq!(got, want_colour, "Calendrier Tempo: {}", a.sent);

    // The total over the range counts each day once, whatever its quality.
    let total: f64 = sqlx::query_scalar(
        "SELECT sum(value)::float8 / 1000 FROM consumption_data
          WHERE usage_point_id = $1 AND granularity = 'daily'",
    )
    .bind(PDL)
    .fetch_one(&servers.pool)
    .await
    .unwrap();
    let (start, end) = demo_range();
    let a = run(
        vm,
        find(&qs, "Consommation sur la période", "A"),
        &vars,
        start,
        end,
    )
    .await;
    assert!(
        (a.series[0].1[0].1 - total).abs() < 1e-6,
        "{}: want {total}",
        a.body
    );

    // Today and tomorrow, whose samples lie in the future of "now" for
    // tomorrow: today WHITE (2), tomorrow RED (3); EcoWatt J, J+1, J+2 of
    // the demo data: 1, 2, 3.
    let now = Utc::now().timestamp();
    for (panel, ref_id, want) in [
        ("Tempo aujourd'hui et demain", "A", 2.0),
        ("Tempo aujourd'hui et demain", "B", 3.0),
        ("EcoWatt : aujourd'hui, demain, après-demain", "A", 1.0),
        ("EcoWatt : aujourd'hui, demain, après-demain", "B", 2.0),
        ("EcoWatt : aujourd'hui, demain, après-demain", "C", 3.0),
    ] {
        let q = find(&qs, panel, ref_id);
        let (start, end) = q.range(now);
        let a = run(vm, q, &vars, start, end).await;
        let got: Vec<f64> = a
            .series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .collect();
        // In the first hour of a Paris day, the day after tomorrow's 00:00
        // lies beyond VictoriaMetrics' two-day window: not written yet.
        let paris = Utc::now().with_timezone(&Paris);
        let held_back = ref_id == "C" && panel.starts_with("EcoWatt") && {
            use chrono::Timelike;
            paris.hour() == 0
        };
        let want = if held_back { 0.0 } else { want };
        assert_eq!(got, vec![want], "{panel} {ref_id}: {}", a.sent);
    }
}

/// Detailed rows (`value`, an average power in W) of `table` for the days
/// `from..=to`, by PDL: their local instant (Unix seconds) → W.
async fn load_curve_rows(
    pool: &sqlx::PgPool,
    table: &str,
    from: &str,
    to: &str,
) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let rows = sqlx::query(&format!(
        "SELECT usage_point_id, date, interval_start, value FROM {table}
          WHERE granularity = 'detailed' AND date BETWEEN $1::date AND $2::date
            AND coalesce(raw_data->>'is_placeholder', 'false') <> 'true'"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for r in rows {
        let start: Option<String> = r.get(2);
        let value: i32 = r.get(3);
        out.entry(r.get(0))
            .or_default()
            .insert(row_instant(r.get(1), start.as_deref()), f64::from(value));
    }
    out
}

#[tokio::test]
async fn the_load_curve_max_power_and_zen_flex_panels_show_what_the_rows_say() {
    let servers = Servers::start().await;
    export_demo_data(&servers).await;
    let vm = servers.vm.url.as_str();
    let pool = &servers.pool;
    let d = dashboard();
    let qs = queries(&d);
    // Both PDLs, as Grafana writes a multi-value variable in a regex.
    let vars = with_var(&variables(&d), "pdl", &format!("({PDL}|{PDL_10_MIN})"));
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();

    // The load curve over one day: the power of each interval, in W, at its
    // start, for the 30-minute and the 10-minute meters; the production's
    // likewise.
    for (ref_id, table, day) in [
        ("A", "consumption_data", "2024-11-04"),
        ("B", "production_data", "2024-07-14"),
    ] {
        let want = load_curve_rows(pool, table, day, day).await;
        assert!(!want.is_empty(), "{table} has a load curve on {day}");
        let day = date(day);
        let (start, end) = (
            paris_midnight(day),
            paris_midnight(day.succ_opt().unwrap()) - 1,
        );
        let q = find(&qs, "Courbe de charge", ref_id);
        assert!(
            q.expr.contains("_power_w{") && !q.expr.contains("_wh{"),
            "the load curve shows the power series: {}",
            q.expr
        );
        assert!(
            q.interval(start, end) <= 600,
            "a day's load curve shows every 10-minute interval"
        );
        let a = run(vm, q, &vars, start, end).await;
        assert_points(&format!("load curve {ref_id} on {day}"), &a, &want);
    }

    // At a one-day step, each point is the mean power of the intervals it
    // covers: the window (t - 1 day, t].
    let rows = load_curve_rows(pool, "consumption_data", "2024-11-02", "2024-11-06").await;
    let mut daily = find(&qs, "Courbe de charge", "A").clone();
    daily.min_interval = 86_400;
    let (start, end) = (
        Utc.with_ymd_and_hms(2024, 11, 4, 0, 0, 0)
            .unwrap()
            .timestamp(),
        Utc.with_ymd_and_hms(2024, 11, 6, 0, 0, 0)
            .unwrap()
            .timestamp(),
    );
    let mut want: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (pdl, points) in &rows {
        for t in (start..=end).step_by(86_400) {
            let w: Vec<f64> = points.range(t - 86_399..=t).map(|(_, v)| *v).collect();
            assert!(!w.is_empty());
            want.entry(pdl.clone())
                .or_default()
                .insert(t, w.iter().sum::<f64>() / w.len() as f64);
        }
    }
    let a = run(vm, &daily, &vars, start, end).await;
    assert_points("the load curve at a 1-day step", &a, &want);

    // Each day's maximum power, in VA, at the peak's time: an ordinary day
    // for both PDLs, the day of the October change (a peak in the repeated
    // hour) and a row with no time (at 00:00). And the share of the
    // subscribed power (the variable's default) the day's peak reached.
    let kva = number(&vars, "subscribed_kva");
    assert_eq!(kva, 9.0, "the default subscribed power");
    for day in ["2024-10-05", "2024-10-27", "2024-03-31"] {
        let rows = sqlx::query(
            "SELECT usage_point_id, interval_start, value FROM max_power_data WHERE date = $1::date",
        )
        .bind(day)
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(!rows.is_empty(), "max_power_data has {day}");
        let day = date(day);
        let (start, end) = (
            paris_midnight(day),
            paris_midnight(day.succ_opt().unwrap()) - 1,
        );
        let q = find(&qs, "Puissance maximale atteinte chaque jour", "A");
        let step = q.interval(start, end);
        let a = run(vm, q, &vars, start, end).await;
        let got = by_pdl(&a);
        let share_q = find(&qs, "Part de la puissance souscrite atteinte", "A");
        // The panel's whole range is the day: (00:00, 24:00] shifted back
        // by a second, so that a peak at 00:00 is the day's.
        let share = run(vm, share_q, &vars, start - 1, end).await;
        let got_share = by_pdl(&share);
        assert_eq!(
            got.len(),
            rows.len(),
            "maximum power on {day}: one series per PDL with a row: {}",
            a.body
        );
        assert_eq!(
            got_share.len(),
            rows.len(),
            "share on {day}: {}",
            share.body
        );
        for r in &rows {
            let pdl: String = r.get(0);
            let start_time: Option<String> = r.get(1);
            let value = f64::from(r.get::<i32, _>(2));
            let peak = row_instant(day, start_time.as_deref());
            let points = &got[&pdl];
            assert_eq!(
                points.len(),
                1,
                "maximum power of {pdl} on {day}: one point: {}",
                a.body
            );
            let (&t, &v) = points.iter().next().unwrap();
            assert_eq!(v, value, "maximum power of {pdl} on {day}: {}", a.sent);
            assert!(
                t - step < peak && peak <= t,
                "maximum power of {pdl} on {day}: the point at {t} for the peak at {peak} \
                 (step {step}s)"
            );
            let want = value / (kva * 1000.0) * 100.0;
            let (_, &got) = got_share[&pdl].iter().next().unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "share of {kva} kVA reached by {pdl} on {day}: got {got} %, want {want} % ({})",
                share.sent
            );
        }
        // The subscribed power, beside: kVA x 1000 at every point.
        let line = run(
            vm,
            find(&qs, "Puissance maximale atteinte chaque jour", "B"),
            &vars,
            start,
            end,
        )
        .await;
        let values: Vec<f64> = line
            .series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .collect();
        assert!(!values.is_empty(), "{}", line.body);
        assert!(
            values.iter().all(|&v| v == kva * 1000.0),
            "subscribed power: {}",
            line.body
        );
    }

    // The Zen Flex calendar: 1 ECO, 2 SOBRIETE, 3 BONUS, each day at 00:00
    // UTC of its date (a 1-day step there reads the day that began just
    // before, at local midnight), over days of the three types.
    let days: Vec<(NaiveDate, String)> = sqlx::query_as(
        "SELECT date, day_type::text FROM zen_flex_days
          WHERE date BETWEEN '2024-09-10' AND '2024-11-10' ORDER BY date",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut want = BTreeMap::new();
    for (day, kind) in &days {
        let code = match kind.as_str() {
            "ECO" => 1.0,
            "SOBRIETE" => 2.0,
            "BONUS" => 3.0,
            k => panic!("day type {k}"),
        };
        want.insert(
            day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
            code,
        );
    }
    for code in [1.0, 2.0, 3.0] {
        assert!(
            want.values().any(|&c| c == code),
            "the checked days hold every day type: {want:?}"
        );
    }
    let (start, end) = (*want.keys().next().unwrap(), *want.keys().last().unwrap());
    let a = run(vm, find(&qs, "Calendrier Zen Flex", "A"), &vars, start, end).await;
    assert_eq!(a.series.len(), 1, "Calendrier Zen Flex: {}", a.body);
    let got: BTreeMap<i64, f64> = a.series[0].1.iter().copied().collect();
    assert_eq!(got, want, "Calendrier Zen Flex: {}", a.sent);
}

/// The panel titled `title`.
fn panel<'a>(d: &'a Value, title: &str) -> &'a Value {
    panels(d)
        .into_iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("the dashboard has no panel {title:?}"))
}

/// What a stat panel shows for `value`, as Grafana applies its value and
/// range mappings, then its thresholds: the mapped text, if any, and the
/// colour.
fn shown(panel: &Value, value: f64) -> (Option<String>, String) {
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

#[test]
fn the_last_verification_stat_says_never_before_the_first_and_turns_orange_after_two_hours() {
    let d = dashboard();
    let p = panel(&d, "Dernière vérification complète");
    assert_eq!(p["type"], "stat");
    assert_eq!(p["fieldConfig"]["defaults"]["unit"], "s");
    let expr = p["targets"][0]["expr"].as_str().unwrap();
    assert!(
        expr.starts_with("time() - ")
            && expr.contains("myelectricaldata_exporter_last_verified_timestamp_seconds"),
        "{expr}"
    );
    // Until a full reconciliation has verified, the gauge is 0: the stat's
    // value is then time() itself, decades.
    let now = Utc::now().timestamp() as f64;
    let never = (Some("jamais".to_string()), "orange".to_string());
    assert_eq!(shown(p, now), never);
    assert_eq!(shown(p, now + 86_400.0), never);
    let green = (None, "green".to_string());
    assert_eq!(shown(p, 0.0), green);
    assert_eq!(shown(p, 3_600.0), green, "verified an hour ago");
    assert_eq!(shown(p, 7_199.0), green);
    assert_eq!(
        shown(p, 7_200.0 + 60.0),
        (None, "orange".to_string()),
        "two reconciliations missed"
    );
    assert_eq!(
        shown(p, 365.0 * 86_400.0),
        (None, "red".to_string()),
        "a year without verification is not never"
    );
}

#[test]
fn the_replication_stat_turns_red_and_names_vmselects_flag_when_every_sample_shows_twice() {
    let d = dashboard();
    let p = panel(&d, "Répliques sans déduplication");
    assert_eq!(p["type"], "stat");
    assert_eq!(
        p["targets"][0]["expr"],
        "max(myelectricaldata_exporter_replication_without_dedup)"
    );
    assert_eq!(shown(p, 0.0), (Some("OK".to_string()), "green".to_string()));
    let (text, colour) = shown(p, 1.0);
    assert_eq!(colour, "red");
    let description = p["description"].as_str().unwrap();
    for said in [text.as_deref().unwrap_or_default(), description] {
        assert!(
            said.contains("-dedup.minScrapeInterval=1ms") && said.contains("vmselect"),
            "{said}"
        );
    }
}

/// The daemon's own `/metrics` on `listen`: each line's value, by its
/// name and labels.
async fn daemon_metrics(listen: &str) -> BTreeMap<String, f64> {
    let body = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .expect("the daemon's /metrics")
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `myelectricaldata_exporter_<name>` in `metrics`.
fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    let name = format!("myelectricaldata_exporter_{name}");
    *metrics
        .get(&name)
        .unwrap_or_else(|| panic!("the daemon's /metrics has no {name}: {metrics:?}"))
}

/// The one value of an answer to an instant query.
fn single(a: &Answer) -> f64 {
    let points: Vec<f64> = a
        .series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .collect();
    assert_eq!(points.len(), 1, "one value: {}\n{}", a.sent, a.body);
    points[0]
}

/// Waits until VictoriaMetrics holds what the model computes from the
/// rows, the exporter's own scraped metrics set aside; returns the number
/// of samples.
async fn converge(servers: &Servers, log: &std::path::Path, when: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Utc::now().timestamp_millis();
        let want = expected(&servers.pool, &BTreeMap::new(), now).await;
        let mut got = from_export(servers.vm.export_all().await);
        got.retain(|l, _| !l["__name__"].starts_with("myelectricaldata_exporter_"));
        if got == want {
            return want.values().map(Vec::len).sum();
        }
        if Instant::now() > deadline {
            eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
            common::model::assert_same(&got, &want, when);
        }
    }
}

/// An instant query at now: the first result's value, and the answer.
async fn instant(vm: &str, query: &str) -> (Option<f64>, String) {
    let (body, v) = common::instant_query(vm, query).await;
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok());
    (value, body)
}

/// Waits until VictoriaMetrics has scraped the daemon `n` times in the last
/// 10 s and the last scrape says the export is in sync.
async fn scraped(servers: &Servers, n: f64, listen: &str, log: &std::path::Path) {
    let vm = servers.vm.url.as_str();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (scrapes, _) = instant(vm, "count_over_time(myelectricaldata_exporter_up[10s])").await;
        let (lag, _) = instant(vm, "max(myelectricaldata_exporter_lag_seconds)").await;
        if scrapes.unwrap_or(0.0) >= n && lag == Some(0.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "VictoriaMetrics did not scrape the daemon's /metrics on {listen} \
             (VICTORIAMETRICS_HTTP_LISTEN_ADDR) {n} times with lag 0: {:?}\n{}\n{}",
            instant(vm, "myelectricaldata_exporter_lag_seconds").await,
            std::fs::read_to_string(log).unwrap_or_default(),
            servers.vm.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_exporter_health_panels_show_the_daemons_metrics_scraped_by_victoriametrics() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let scrape = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: myelectricaldata-vm-exporter\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: [\"{listen}\"]\n"
        ),
    )
    .unwrap();
    let pg = common::Postgres::start();
    let vm = Victoria::start_with(&[&format!("-promscrape.config={}", scrape.display())]);
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(common::SCHEMA).execute(&pool).await.unwrap();
    sqlx::raw_sql(common::DATA).execute(&pool).await.unwrap();
    let servers = Servers { pg, vm, pool };
    let vm = servers.vm.url.as_str();

    let log = dir.path().join("daemon.log");
    // A full reconciliation every 5 s, which verifies once the last writes
    // are older than the verify delay: VictoriaMetrics 1.79 takes up to
    // about 10 s to show a new series (a shorter delay would take that for
    // a loss and repair it).
    let verify_delay = std::env::var("MED_TEST_VERIFY_DELAY").unwrap_or_else(|_| "12s".into());
    let env = servers.env(&[
        ("VICTORIAMETRICS_POLL_INTERVAL", "1s"),
        ("VICTORIAMETRICS_RECONCILE_INTERVAL", "5s"),
        ("VICTORIAMETRICS_VERIFY_DELAY", &verify_delay),
        ("VICTORIAMETRICS_HTTP_LISTEN_ADDR", &listen),
    ]);
    let spawned = Utc::now().timestamp();
    let _daemon = spawn_exporter(&["run"], &env, &log);

    // The first export converges and VictoriaMetrics scrapes the daemon...
    let samples = converge(&servers, &log, "the daemon's first export").await;
    scraped(&servers, 2.0, &listen, &log).await;
    // ... then Enedis corrects a day and a new day arrives: a series
    // rewritten, samples sent, which the counters' increase shows.
    sqlx::raw_sql(
        "UPDATE consumption_data SET value = value + 100, updated_at = now()
          WHERE usage_point_id = '12345678901234' AND granularity = 'daily' AND date = '2024-02-10';
         INSERT INTO consumption_data (id, usage_point_id, date, granularity, value)
         VALUES ('dashboard-new-day', '98765432109876', '2024-11-11', 'daily', 12345);",
    )
    .execute(&servers.pool)
    .await
    .unwrap();
    converge(&servers, &log, "after the changes").await;
    scraped(&servers, 3.0, &listen, &log).await;

    // ... then VictoriaMetrics loses a series behind the daemon's back
    // (deleted by hand) and gains a sample no row produces: a full
    // reconciliation reads them back and repairs them, and a later one
    // finds VictoriaMetrics holding exactly the mirror.
    let before = daemon_metrics(&listen).await;
    let exported = servers.vm.export_all().await;
    let daily = |l: &BTreeMap<String, String>, pdl: &str| {
        l["__name__"] == "myelectricaldata_consumption_wh"
            && l.get("pdl").map(String::as_str) == Some(pdl)
            && l.get("type").map(String::as_str) == Some("daily")
    };
    let lost: Vec<usize> = exported
        .iter()
        .filter(|(l, _)| daily(l, PDL) && l.get("quality").is_none_or(|q| q.is_empty()))
        .map(|(_, samples)| samples.len())
        .collect();
    assert!(
        lost.len() == 1 && lost[0] > 0,
        "one daily series of {PDL} without quality: {lost:?}"
    );
    servers
        .vm
        .delete_series(&format!(
            r#"myelectricaldata_consumption_wh{{pdl="{PDL}",type="daily",quality=""}}"#
        ))
        .await;
    let (labels, points) = exported
        .iter()
        .find(|(l, _)| daily(l, PDL_10_MIN))
        .expect("a daily series of the 10-minute meter");
    let (t, v) = points[0];
    let stray = serde_json::json!({"metric": labels, "values": [v], "timestamps": [t + 1000]});
    let status = reqwest::Client::new()
        .post(format!("{vm}/api/v1/import"))
        .body(stray.to_string())
        .send()
        .await
        .expect("import a stray sample")
        .status();
    assert!(status.is_success(), "import: {status}");
    converge(
        &servers,
        &log,
        "after VictoriaMetrics lost a series and gained a sample",
    )
    .await;
    let repaired_at = Utc::now().timestamp_millis() as f64 / 1000.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let m = daemon_metrics(&listen).await;
        if metric(&m, "last_verified_timestamp_seconds") > repaired_at {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no full reconciliation verified the repaired mirror: {m:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let counted = |name: &str| metric(&after, name) - metric(&before, name);
    assert!(
        counted("series_repaired_total") >= 2.0
            && counted("samples_missing_total") >= lost[0] as f64
            && counted("samples_extra_total") >= 1.0,
        "the daemon's /metrics before the losses: {before:?}\nafter the repairs: {after:?}"
    );
    // VictoriaMetrics scrapes that verification.
    let verified_at = metric(&after, "last_verified_timestamp_seconds");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (scraped, body) = instant(
            vm,
            "max(myelectricaldata_exporter_last_verified_timestamp_seconds)",
        )
        .await;
        if scraped.is_some_and(|s| s >= verified_at) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VictoriaMetrics did not scrape the verification at {verified_at}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (up, body) = instant(vm, "max(myelectricaldata_exporter_up)").await;
    assert_eq!(up, Some(1.0), "{body}");
    let (sent, body) = instant(vm, "max(myelectricaldata_exporter_samples_sent_total)").await;
    assert!(
        sent.unwrap_or(0.0) >= samples as f64,
        "samples_sent_total below the {samples} samples of the first export: {body}"
    );
    let (age, body) = instant(
        vm,
        "time() - max(myelectricaldata_exporter_last_success_timestamp_seconds)",
    )
    .await;
    assert!(
        age.is_some_and(|a| (0.0..30.0).contains(&a)),
        "last success: {body}"
    );

    // Grafana aligns a range query's end on its step (15 s here): wait for
    // a step boundary after those scrapes, so that the last step holds them.
    let now = Utc::now().timestamp();
    tokio::time::sleep(Duration::from_secs((15 - now.rem_euclid(15) + 2) as u64)).await;

    let d = dashboard();
    let vars = variables(&d);
    let qs = queries(&d);
    let health: Vec<&Query> = qs.iter().filter(|q| q.is_health()).collect();
    assert!(health.len() >= 10, "{} health queries", health.len());
    for name in [
        "samples_sent_total",
        "batches_sent_total",
        "retries_total",
        "errors_total",
        "rows_skipped_total",
        "series_rewritten_total",
        "last_success_timestamp_seconds",
        "lag_seconds",
        "up",
        "verifications_total",
        "series_verified_total",
        "series_repaired_total",
        "samples_missing_total",
        "samples_extra_total",
        "last_verified_timestamp_seconds",
        "replication_without_dedup",
    ] {
        let metric = format!("myelectricaldata_exporter_{name}");
        assert!(
            health.iter().any(|q| q.expr.contains(&format!("{metric}["))
                || q.expr.contains(&format!("{metric})"))),
            "no panel shows {metric}"
        );
    }
    assert_all_return_data(vm, &health, &vars).await;

    // The changes show as counted work.
    let now = Utc::now().timestamp();
    for (panel, ref_id) in [
        ("Échantillons envoyés sur la période", "A"),
        ("Échantillons envoyés", "A"),
        ("Lots, réessais et séries réécrites", "A"),
        ("Lots, réessais et séries réécrites", "C"),
    ] {
        let q = find(&qs, panel, ref_id);
        let (start, end) = q.range(now);
        let a = run(vm, q, &vars, start, end).await;
        let total: f64 = a.series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).sum();
        assert!(
            total > 0.0,
            "{panel} {ref_id} counted nothing: {}\n{}",
            a.sent,
            a.body
        );
    }

    // Over the daemon's life: the read-backs and what they repaired, per
    // interval...
    let life = (spawned - 60, Utc::now().timestamp());
    for (panel, ref_id) in [
        ("Vérifications et séries comparées", "A"),
        ("Vérifications et séries comparées", "B"),
        (
            "Réparations : séries réparées, échantillons manquants et en trop",
            "A",
        ),
        (
            "Réparations : séries réparées, échantillons manquants et en trop",
            "B",
        ),
        (
            "Réparations : séries réparées, échantillons manquants et en trop",
            "C",
        ),
    ] {
        let a = run(vm, find(&qs, panel, ref_id), &vars, life.0, life.1).await;
        let total: f64 = a.series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).sum();
        assert!(
            total > 0.0,
            "{panel} {ref_id} counted nothing: {}\n{}",
            a.sent,
            a.body
        );
    }
    // ... and in total: the daemon's own counts. The repairs' have not moved
    // since its verified reconciliation; the read-backs' still grow (every
    // reconciliation reads back).
    let daemon = daemon_metrics(&listen).await;
    for (panel, name, settled) in [
        (
            "Séries réparées sur la période",
            "series_repaired_total",
            true,
        ),
        (
            "Échantillons manquants sur la période",
            "samples_missing_total",
            true,
        ),
        (
            "Échantillons en trop sur la période",
            "samples_extra_total",
            true,
        ),
        ("Vérifications sur la période", "verifications_total", false),
        (
            "Séries comparées sur la période",
            "series_verified_total",
            false,
        ),
    ] {
        let a = run(vm, find(&qs, panel, "A"), &vars, life.0, life.1).await;
        let got = single(&a);
        let own = metric(&daemon, name);
        if settled {
            assert_eq!(got, own, "{panel} against the daemon's {name} ({})", a.sent);
        }
        assert!(
            got > 0.0 && got <= own,
            "{panel}: {got}, the daemon's {name}: {own} ({})",
            a.sent
        );
    }

    // A single node shows each sample once: the replication stat says so,
    // as the daemon's /metrics does.
    let replication = "Répliques sans déduplication";
    let a = run(vm, find(&qs, replication, "A"), &vars, life.0, life.1).await;
    assert_eq!(
        single(&a),
        metric(&daemon, "replication_without_dedup"),
        "{}",
        a.sent
    );
    assert_eq!(
        shown(panel(&d, replication), single(&a)),
        (Some("OK".to_string()), "green".to_string())
    );

    // The last verification: the one the daemon's /metrics reports, a
    // moment ago, after the repairs; green. (VictoriaMetrics 1.79 evaluates
    // an instant query at the current second a second earlier, to the
    // millisecond, time() included: the stat is asked for a few seconds ago,
    // when its time() is exactly the instant asked for.)
    let p = panel(&d, "Dernière vérification complète");
    let q = find(&qs, "Dernière vérification complète", "A");
    let end = Utc::now().timestamp() - 3;
    let own_before = metric(
        &daemon_metrics(&listen).await,
        "last_verified_timestamp_seconds",
    );
    let a = run(vm, q, &vars, spawned - 60, end).await;
    let own_after = metric(
        &daemon_metrics(&listen).await,
        "last_verified_timestamp_seconds",
    );
    let age = single(&a);
    let at = end as f64 - age;
    assert!(
        at > repaired_at && at <= own_after + 1e-3 && at >= own_before - 30.0,
        "{}: verified at {at} ({age} s before); the daemon says {own_before}, then \
         {own_after}; repaired at {repaired_at}",
        a.sent
    );
    assert_eq!(shown(p, age), (None, "green".to_string()), "{age} s");

    // At its start the daemon had not verified yet (its first full
    // reconciliation writes): its first scrapes say 0, which the stat shows
    // as "jamais".
    let first = Query {
        panel: "first scrapes".into(),
        ref_id: "A".into(),
        expr: "myelectricaldata_exporter_last_verified_timestamp_seconds".into(),
        instant: false,
        min_interval: 1,
        max_data_points: 100_000,
        time_from: None,
    };
    let a = run(vm, &first, &vars, spawned, end).await;
    let &(t0, v0) = a
        .series
        .iter()
        .flat_map(|s| s.1.iter())
        .min_by_key(|p| p.0)
        .unwrap_or_else(|| panic!("no scrape: {}", a.body));
    assert_eq!(v0, 0.0, "the first scrape: {}", a.sent);
    let a = run(vm, q, &vars, t0 - 300, t0).await;
    let age = single(&a);
    assert_eq!(
        shown(p, age),
        (Some("jamais".to_string()), "orange".to_string()),
        "{age}: {}",
        a.sent
    );
}

/// One interval of the load curve, from its row: PDL, local date, start
/// (minutes after 00:00 local) and energy (Wh: the average power times the
/// interval's length).
struct Interval {
    pdl: String,
    date: NaiveDate,
    minute: u32,
    wh: f64,
}

/// Every detailed consumption row that is a reading, as an [`Interval`].
async fn intervals(pool: &sqlx::PgPool) -> Vec<Interval> {
    let rows = sqlx::query(
        "SELECT usage_point_id, date, interval_start, value,
                coalesce(raw_data->>'p', raw_data->>'interval_length', 'PT30M')
           FROM consumption_data
          WHERE granularity = 'detailed'
            AND coalesce(raw_data->>'is_placeholder', 'false') <> 'true'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let start: String = r.get(2);
            let t = NaiveTime::parse_from_str(&start, "%H:%M").unwrap();
            let length: String = r.get(4);
            let minutes: f64 = match length.strip_prefix("PT") {
                Some(m) if m.ends_with('M') => m.trim_end_matches('M').parse().unwrap(),
                Some(h) if h.ends_with('H') => {
                    h.trim_end_matches('H').parse::<f64>().unwrap() * 60.0
                }
                _ => panic!("interval length {length:?}"),
            };
            use chrono::Timelike;
            Interval {
                pdl: r.get(0),
                date: r.get(1),
                minute: t.hour() * 60 + t.minute(),
                wh: f64::from(r.get::<i32, _>(3)) * minutes / 60.0,
            }
        })
        .collect()
}

/// Unix seconds of 00:00 UTC on `date`: where a 1-day step reads the day
/// whose samples lie at its local midnight, just before.
fn utc_midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// An answer's points keyed by the values of `labels`, joined by spaces.
fn keyed(a: &Answer, labels: &[&str]) -> BTreeMap<String, BTreeMap<i64, f64>> {
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (l, points) in &a.series {
        let key = labels
            .iter()
            .map(|n| l.get(*n).cloned().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        let s = out.entry(key).or_default();
        for &(t, v) in points {
            assert!(s.insert(t, v).is_none(), "two points at {t}: {}", a.body);
        }
    }
    out
}

/// Asserts that `got` holds the keys and instants of `want`, each value
/// within 1e-6 of it, relatively.
fn assert_close(
    what: &str,
    got: &BTreeMap<String, BTreeMap<i64, f64>>,
    want: &BTreeMap<String, BTreeMap<i64, f64>>,
    sent: &str,
) {
    let instants = |m: &BTreeMap<String, BTreeMap<i64, f64>>| {
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
                (g - w).abs() <= 1e-6 * w.abs().max(1e-9),
                "{what}, {k} at {t}: got {g}, want {w} ({sent})"
            );
        }
    }
}

/// Sums `per_day` (key → day → EUR) by calendar month, each month at 00:00
/// UTC of its last day.
fn by_month(
    per_day: &BTreeMap<String, BTreeMap<NaiveDate, f64>>,
) -> BTreeMap<String, BTreeMap<i64, f64>> {
    use chrono::Datelike;
    let mut out: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (k, days) in per_day {
        for (d, v) in days {
            let next = if d.month() == 12 {
                NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)
            }
            .unwrap();
            let last = next.pred_opt().unwrap();
            *out.entry(k.clone())
                .or_default()
                .entry(utc_midnight(last))
                .or_default() += v;
        }
    }
    out
}

fn at_utc_midnights(
    per_day: &BTreeMap<String, BTreeMap<NaiveDate, f64>>,
) -> BTreeMap<String, BTreeMap<i64, f64>> {
    per_day
        .iter()
        .map(|(k, days)| {
            (
                k.clone(),
                days.iter().map(|(d, v)| (utc_midnight(*d), *v)).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_cost_panels_price_each_tempo_day_and_each_period_of_the_load_curve_as_the_rows_say() {
    let servers = Servers::start().await;
    let pool = &servers.pool;
    // The load-curve days are all blue in the demo data: one red and one
    // white Tempo day among them, as RTE would have published them.
    sqlx::raw_sql(
        "UPDATE tempo_days SET color = 'RED' WHERE id = '2024-11-03';
         UPDATE tempo_days SET color = 'WHITE' WHERE id = '2024-10-26';",
    )
    .execute(pool)
    .await
    .unwrap();
    export_demo_data(&servers).await;
    let vm = servers.vm.url.as_str();
    let d = dashboard();
    let qs = queries(&d);
    let vars = with_var(&variables(&d), "pdl", &format!("({PDL}|{PDL_10_MIN})"));
    for (name, default) in TARIFF_DEFAULTS {
        assert_eq!(
            number(&vars, name),
            default.parse::<f64>().unwrap(),
            "{name}"
        );
    }
    let colour_name = |c: &str| match c {
        "BLUE" => "bleu",
        "WHITE" => "blanc",
        "RED" => "rouge",
        c => panic!("colour {c}"),
    };
    let label = |c: &str| match c {
        "BLUE" => "BLEU",
        "WHITE" => "BLANC",
        "RED" => "ROUGE",
        c => panic!("colour {c}"),
    };

    // The Tempo cost, from the rows alone: each interval belongs to the
    // Tempo day that began at the last 06:00 before its start, in peak
    // hours from 06:00 to 22:00; a Tempo day counts when its colour is
    // known and the load curve covers it (its date and the next).
    let rows = intervals(pool).await;
    let colours: BTreeMap<NaiveDate, String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, color::text FROM tempo_days")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, c)| (NaiveDate::parse_from_str(&id, "%Y-%m-%d").unwrap(), c))
            .collect();
    let curve_days: std::collections::BTreeSet<(String, NaiveDate)> =
        rows.iter().map(|i| (i.pdl.clone(), i.date)).collect();
    // (pdl, Tempo day, period) → Wh
    let mut tempo_wh: BTreeMap<(String, NaiveDate, &str), f64> = BTreeMap::new();
    for i in &rows {
        let (day, period) = if i.minute >= 6 * 60 {
            (i.date, if i.minute < 22 * 60 { "HP" } else { "HC" })
        } else {
            (i.date.pred_opt().unwrap(), "HC")
        };
        let covered = curve_days.contains(&(i.pdl.clone(), day))
            && curve_days.contains(&(i.pdl.clone(), day.succ_opt().unwrap()));
        if covered && colours.contains_key(&day) {
            *tempo_wh.entry((i.pdl.clone(), day, period)).or_default() += i.wh;
        }
    }
    let mut tempo_day: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    let mut tempo_by_colour: BTreeMap<String, f64> = BTreeMap::new();
    let (mut red_hp_wh, mut tempo_all_wh) = (BTreeMap::new(), BTreeMap::<String, f64>::new());
    for ((pdl, day, period), wh) in &tempo_wh {
        let c = &colours[day];
        let price = number(
            &vars,
            &format!("price_tempo_{}_{}", colour_name(c), period.to_lowercase()),
        );
        *tempo_day
            .entry(pdl.clone())
            .or_default()
            .entry(*day)
            .or_default() += wh * price / 1000.0;
        *tempo_by_colour
            .entry(format!("{} {period}", label(c)))
            .or_default() += wh * price / 1000.0;
        *tempo_all_wh.entry(pdl.clone()).or_default() += wh;
        let red = red_hp_wh.entry(pdl.clone()).or_insert(0.0);
        if c == "RED" && *period == "HP" {
            *red += wh;
        }
    }
    let tempo_days: Vec<NaiveDate> = tempo_day[PDL].keys().copied().collect();
    assert_eq!(
        tempo_days.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        [
            "2023-10-28",
            "2023-10-29",
            "2024-03-30",
            "2024-03-31",
            "2024-10-26",
            "2024-10-27",
            "2024-11-03",
            "2024-11-04"
        ],
        "the Tempo days the load curve covers"
    );
    assert_eq!(tempo_day.len(), 2, "both meters");
    assert!(
        ["BLEU HP", "BLANC HC", "ROUGE HP", "ROUGE HC"]
            .iter()
            .all(|k| tempo_by_colour.contains_key(*k)),
        "{tempo_by_colour:?}"
    );

    // HP/HC and Base: the energy of each complete calendar day in each
    // period of the PDL's contract, as the model computes it from the rows
    // and the contracts; Base's is also the whole day's rows.
    let now = Utc::now().timestamp_millis();
    let mirror = expected(pool, &BTreeMap::new(), now).await;
    let mut period_wh: BTreeMap<(String, NaiveDate), BTreeMap<String, f64>> = BTreeMap::new();
    for (l, samples) in &mirror {
        if l["__name__"] != "myelectricaldata_consumption_period_wh" {
            continue;
        }
        for (ts, mwh) in samples {
            let day = Utc
                .timestamp_millis_opt(*ts)
                .unwrap()
                .with_timezone(&Paris)
                .date_naive();
            period_wh
                .entry((l["pdl"].clone(), day))
                .or_default()
                .insert(l["period"].clone(), *mwh as f64 / 1000.0);
        }
    }
    assert_eq!(
        period_wh.len(),
        30,
        "15 load-curve days of 2 meters: {period_wh:?}"
    );
    let (hp, hc, base) = (
        number(&vars, "price_hp"),
        number(&vars, "price_hc"),
        number(&vars, "price_base"),
    );
    let mut hphc_day: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    let mut base_day: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for ((pdl, day), periods) in &period_wh {
        let whole: f64 = rows
            .iter()
            .filter(|i| &i.pdl == pdl && i.date == *day)
            .map(|i| i.wh)
            .sum();
        let total = periods["HP"] + periods["HC"];
        assert!(
            (total - whole).abs() <= 1e-6 * whole,
            "{pdl} on {day}: HP + HC = {total} Wh, the rows {whole} Wh"
        );
        hphc_day
            .entry(pdl.clone())
            .or_default()
            .insert(*day, (periods["HP"] * hp + periods["HC"] * hc) / 1000.0);
        base_day
            .entry(pdl.clone())
            .or_default()
            .insert(*day, total * base / 1000.0);
    }

    // Per day and per month, each option.
    let (start, end) = (
        utc_midnight(NaiveDate::from_ymd_opt(2023, 3, 1).unwrap()),
        utc_midnight(NaiveDate::from_ymd_opt(2024, 11, 30).unwrap()),
    );
    for (panel, monthly) in [
        ("Coût par jour : Base, HP/HC et Tempo", false),
        ("Coût par mois : Base, HP/HC et Tempo", true),
    ] {
        for (ref_id, per_day) in [("A", &tempo_day), ("B", &hphc_day), ("C", &base_day)] {
            let q = find(&qs, panel, ref_id);
            assert_eq!(q.interval(start, end), 86_400, "{panel}: a 1-day step");
            let a = run(vm, q, &vars, start, end).await;
            let want = if monthly {
                by_month(per_day)
            } else {
                at_utc_midnights(per_day)
            };
            assert_close(
                &format!("{panel} {ref_id}"),
                &keyed(&a, &["pdl"]),
                &want,
                &a.sent,
            );
        }
    }

    // Over the whole period: the Tempo cost, by colour and period, and the
    // share of red peak hours.
    let end = utc_midnight(NaiveDate::from_ymd_opt(2024, 12, 1).unwrap());
    let total = |m: &BTreeMap<String, BTreeMap<NaiveDate, f64>>, days: Option<&[NaiveDate]>| {
        m.iter()
            .map(|(pdl, per_day)| {
                let sum: f64 = per_day
                    .iter()
                    .filter(|(d, _)| days.is_none_or(|days| days.contains(d)))
                    .map(|(_, v)| v)
                    .sum();
                (pdl.clone(), BTreeMap::from([(end, sum)]))
            })
            .collect::<BTreeMap<_, _>>()
    };
    let a = run(
        vm,
        find(&qs, "Coût Tempo sur la période", "A"),
        &vars,
        start,
        end,
    )
    .await;
    assert_close(
        "Tempo over the period",
        &keyed(&a, &["pdl"]),
        &total(&tempo_day, None),
        &a.sent,
    );
    let a = run(
        vm,
        find(&qs, "Coût Tempo par couleur et période", "A"),
        &vars,
        start,
        end,
    )
    .await;
    let want: BTreeMap<String, BTreeMap<i64, f64>> = tempo_by_colour
        .iter()
        .map(|(k, v)| (k.clone(), BTreeMap::from([(end, *v)])))
        .collect();
    assert_close(
        "Tempo by colour and period",
        &keyed(&a, &["color", "period"]),
        &want,
        &a.sent,
    );
    let a = run(
        vm,
        find(&qs, "Part de l'énergie en heures pleines rouges", "A"),
        &vars,
        start,
        end,
    )
    .await;
    let want: BTreeMap<String, BTreeMap<i64, f64>> = tempo_all_wh
        .iter()
        .map(|(pdl, all)| {
            (
                pdl.clone(),
                BTreeMap::from([(end, red_hp_wh[pdl] / all * 100.0)]),
            )
        })
        .collect();
    assert!(want.values().all(|s| s[&end] > 0.0), "{want:?}");
    assert_close(
        "share of red peak hours",
        &keyed(&a, &["pdl"]),
        &want,
        &a.sent,
    );

    // The comparison: the three options over the same days (those with
    // both a complete calendar day and a complete Tempo day), energy plus
    // the monthly subscription x 12 / 365 a day.
    for (ref_id, per_day, subscription) in [
        ("A", &base_day, "subscription_base"),
        ("B", &hphc_day, "subscription_hphc"),
        ("C", &tempo_day, "subscription_tempo"),
    ] {
        let mut want = BTreeMap::new();
        for (pdl, days) in &tempo_day {
            let common: Vec<NaiveDate> = days
                .keys()
                .filter(|d| period_wh.contains_key(&(pdl.clone(), **d)))
                .copied()
                .collect();
            assert_eq!(
                common.len(),
                8,
                "{pdl}: the eight Tempo days of the fixture"
            );
            let energy = total(per_day, Some(&common))[pdl][&end];
            let fixed = number(&vars, subscription) * 12.0 / 365.0 * common.len() as f64;
            want.insert(pdl.clone(), BTreeMap::from([(end, energy + fixed)]));
        }
        let q = find(
            &qs,
            "Comparaison Base, HP/HC et Tempo sur la période",
            ref_id,
        );
        let a = run(vm, q, &vars, start, end).await;
        assert_close(
            &format!("comparison {ref_id}"),
            &keyed(&a, &["pdl"]),
            &want,
            &a.sent,
        );
    }
}
