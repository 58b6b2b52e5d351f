//! The vmalert rules `deploy/vmalert/myelectricaldata.rules.yml`, run by a
//! real vmalert (Debian's `victoria-metrics` package) against a real
//! VictoriaMetrics fed by the exporter from PostgreSQL rows dated around
//! today: tomorrow's Tempo colour is a sample dated in the future, today's
//! EcoWatt day one dated this morning at 00:00.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use chrono_tz::Europe::Paris;
use serde_json::Value;

use common::promql::{instant_query, sum_metric};
use common::{free_port, http, Postgres, Servers, Victoria};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/vmalert/myelectricaldata.rules.yml"
);

const PDL: &str = "12345678901234";
/// A meter that stopped reading.
const SILENT: &str = "12345678900777";

/// A stand-in Alertmanager: answers 200 to every request and keeps the
/// bodies vmalert posts to `/api/v2/alerts`. vmalert 1.79 has no
/// `-notifier.blackhole` and refuses alerting rules without a notifier.
struct Alertmanager {
    url: String,
    received: Arc<Mutex<Vec<String>>>,
    _server: http::Server,
}

impl Alertmanager {
    fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let keep = received.clone();
        let server = http::serve(move |request| {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            keep.lock().unwrap().push(body);
            std::future::ready(http::Response::text(200, ""))
        });
        Alertmanager {
            url: server.url.clone(),
            received,
            _server: server,
        }
    }

    fn received(&self) -> String {
        self.received.lock().unwrap().join("\n")
    }
}

/// A running vmalert with the rules under test, evaluating every second;
/// killed when dropped.
struct Vmalert {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vmalert {
    async fn start(datasource: &str, notifier: &str) -> Self {
        let bin = common::which("vmalert").unwrap_or_else(|| {
            panic!("vmalert was not found on PATH: install Debian's `victoria-metrics` package, which ships /usr/bin/vmalert (scripts/test installs it)")
        });
        let dir = tempfile::Builder::new()
            .prefix("med-vmalert-")
            .tempdir()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        'start: loop {
            let port = free_port();
            let log = dir.path().join(format!("vmalert-{port}.log"));
            let mut child = Command::new(&bin)
                .arg(format!("-rule={RULES}"))
                .arg(format!("-datasource.url={datasource}"))
                .arg(format!("-notifier.url={notifier}"))
                // The recording rule's series go back to VictoriaMetrics, as
                // deployed (vmalert refuses recording rules without it).
                .arg(format!("-remoteWrite.url={datasource}"))
                .arg("-remoteWrite.flushInterval=1s")
                .arg("-evaluationInterval=1s")
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start vmalert");
            let url = format!("http://127.0.0.1:{port}");
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    // Another process took the port: try another.
                    if text.contains("address already in use") && Instant::now() < deadline {
                        continue 'start;
                    }
                    panic!("vmalert exited ({status}) with {RULES}:\n{text}");
                }
                // Our own vmalert shows our rule file in its /metrics.
                if let Ok(r) = reqwest::get(format!("{url}/metrics")).await {
                    if r.text().await.is_ok_and(|m| m.contains(RULES)) {
                        return Vmalert {
                            child,
                            url,
                            log,
                            _dir: dir,
                        };
                    }
                }
                assert!(Instant::now() < deadline, "vmalert did not start");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// vmalert's alerts, as its `/api/v1/alerts` lists them.
    async fn alerts(&self) -> Vec<Value> {
        let body = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&body).expect("vmalert answers JSON");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The sum of vmalert's own metric `name` (all label sets).
    async fn metric(&self, name: &str) -> f64 {
        let body = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sum_metric(&body, name, "")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vmalert {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Today in Paris, away from midnight (see [`common::away_from_paris_midnight`]).
async fn paris_today() -> NaiveDate {
    common::away_from_paris_midnight().await;
    Utc::now().with_timezone(&Paris).date_naive()
}

fn day(today: NaiveDate, k: i64) -> String {
    today
        .checked_add_signed(chrono::Duration::days(k))
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

/// PostgreSQL with MyElectricalData's tables holding only one PDL's
/// reading of yesterday, the Tempo colours and the EcoWatt day levels
/// given by day offset from today; VictoriaMetrics with its default
/// `-search.latencyOffset` (30 s), as deployed; the rows exported by
/// `once`.
async fn servers_with(tempo: &[(i64, &str)], ecowatt: &[(i64, i32)]) -> Servers {
    servers_with_curve(tempo, ecowatt, &[]).await
}

/// As [`servers_with`], plus a whole 30-minute load curve at a constant
/// power (W) on each day of `curve`, given by day offset from today.
async fn servers_with_curve(
    tempo: &[(i64, &str)],
    ecowatt: &[(i64, i32)],
    curve: &[(i64, i32)],
) -> Servers {
    let today = paris_today().await;
    let pg = Postgres::start();
    let vm = Victoria::start_with(&["-search.latencyOffset=30s"]);
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(common::SCHEMA).execute(&pool).await.unwrap();
    let mut sql = format!(
        "INSERT INTO consumption_data (id, usage_point_id, date, granularity, value)
         VALUES ('alerts-1', '{PDL}', '{}', 'daily', 10000);\n",
        day(today, -1)
    );
    for (k, watts) in curve {
        let d = day(today, *k);
        for i in 0..48 {
            sql += &format!(
                "INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
                 VALUES ('alerts-curve-{k}-{i}', '{PDL}', '{d}', 'detailed', '{:02}:{:02}', {watts},
                         '{{\"p\": \"PT30M\"}}');\n",
                i / 2,
                (i % 2) * 30
            );
        }
    }
    for (k, colour) in tempo {
        let d = day(today, *k);
        sql += &format!(
            "INSERT INTO tempo_days (id, date, color)
             VALUES ('{d}', '{d} 00:00'::timestamp AT TIME ZONE 'Europe/Paris', '{colour}');\n"
        );
    }
    for (k, level) in ecowatt {
        let d = day(today, *k);
        let hours = vec![level.to_string(); 24].join(",");
        sql += &format!(
            "INSERT INTO ecowatt (generation_datetime, periode, hdebut, hfin, pas, dvalue, message, \"values\")
             VALUES (now()::timestamp, '{d} 00:00', 0, 23, 60, {level}, 'signal', '[{hours}]');\n"
        );
    }
    sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
    let servers = Servers { pg, vm, pool };
    common::run_ok(&["once"], &servers.env(&[]));
    // What was written becomes searchable within a second or so; at once
    // with a flush.
    reqwest::get(format!("{}/internal/force_flush", servers.vm.url))
        .await
        .unwrap();
    servers
}

/// An instant query at now: the values of the answer.
async fn values(vm: &str, query: &str) -> Vec<f64> {
    let (_, v) = instant_query(vm, query).await;
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse().ok())
        .collect()
}

/// Waits until `query` answers `want` at now: the exported samples are
/// searchable (VictoriaMetrics makes them so within a second or so).
async fn wait_for(vm: &str, query: &str, want: &[f64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = values(vm, query).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{query}: {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn firing<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
}

#[tokio::test]
async fn a_red_tempo_day_tomorrow_and_an_orange_ecowatt_day_today_fire_both_alerts() {
    let servers = servers_with(
        &[(-1, "BLUE"), (0, "BLUE"), (1, "RED")],
        &[(-1, 1), (0, 2), (1, 1), (2, 1)],
    )
    .await;
    let am = Alertmanager::start();
    let vmalert = Vmalert::start(&servers.vm.url, &am.url).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let alerts = vmalert.alerts().await;
        if firing(&alerts, "TempoRouge").is_some() && firing(&alerts, "EcoWattAlerte").is_some() {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "TempoRouge and EcoWattAlerte did not both fire: {alerts:#?}\n{}",
            vmalert.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let tempo = firing(&alerts, "TempoRouge").unwrap();
    assert_eq!(tempo["labels"]["pdl"], PDL, "{tempo:#}");
    assert_eq!(tempo["labels"]["severity"], "warning", "{tempo:#}");
    assert_eq!(
        tempo["annotations"]["summary"],
        "Demain est un jour Tempo ROUGE"
    );
    let description = tempo["annotations"]["description"].as_str().unwrap();
    assert!(description.contains(PDL), "{description}");
    let tempo_alerts = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "TempoRouge")
        .count();
    assert_eq!(tempo_alerts, 1, "one alert for the one PDL: {alerts:#?}");

    let ecowatt = firing(&alerts, "EcoWattAlerte").unwrap();
    assert_eq!(ecowatt["value"], "2", "{ecowatt:#}");
    assert_eq!(ecowatt["labels"]["severity"], "warning", "{ecowatt:#}");
    assert_eq!(ecowatt["labels"]["region"], "france", "{ecowatt:#}");
    assert_eq!(
        ecowatt["annotations"]["summary"],
        "EcoWatt ORANGE aujourd'hui"
    );

    // vmalert notified both to the Alertmanager.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(am.received().contains("TempoRouge") && am.received().contains("EcoWattAlerte")) {
        assert!(
            Instant::now() < deadline,
            "the Alertmanager got {}\n{}",
            am.received(),
            vmalert.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(vmalert.metric("vmalert_execution_errors_total").await, 0.0);
}

#[tokio::test]
async fn a_red_ecowatt_day_today_is_a_critical_alert() {
    let servers = servers_with(&[(0, "WHITE")], &[(0, 3), (1, 2)]).await;
    let am = Alertmanager::start();
    let vmalert = Vmalert::start(&servers.vm.url, &am.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let alerts = vmalert.alerts().await;
        if firing(&alerts, "EcoWattAlerte").is_some() {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "EcoWattAlerte did not fire: {alerts:#?}\n{}",
            vmalert.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let ecowatt = firing(&alerts, "EcoWattAlerte").unwrap();
    assert_eq!(ecowatt["labels"]["severity"], "critical", "{ecowatt:#}");
    assert_eq!(
        ecowatt["annotations"]["summary"],
        "EcoWatt ROUGE aujourd'hui"
    );
    assert!(
        firing(&alerts, "TempoRouge").is_none(),
        "no red day tomorrow: {alerts:#?}"
    );
}

#[tokio::test]
async fn a_blue_day_tomorrow_and_a_green_ecowatt_day_today_fire_nothing_even_beside_red_days() {
    // Today is red and tomorrow blue; EcoWatt was red yesterday, is green
    // today and red tomorrow: the rules look at tomorrow's colour and
    // today's level only.
    let servers = servers_with(
        &[(-1, "BLUE"), (0, "RED"), (1, "BLUE")],
        &[(-1, 3), (0, 1), (1, 3), (2, 3)],
    )
    .await;
    let vm = servers.vm.url.as_str();
    // The samples are there, at the instants the rules read.
    wait_for(
        vm,
        "first_over_time(myelectricaldata_tempo_color{color=\"BLEU\"}[25h] offset -25h)",
        &[1.0],
    )
    .await;
    wait_for(
        vm,
        "last_over_time(myelectricaldata_tempo_color{color=\"ROUGE\"}[25h])",
        &[1.0],
    )
    .await;
    wait_for(
        vm,
        "last_over_time(myelectricaldata_ecowatt_level[25h])",
        &[1.0],
    )
    .await;
    wait_for(
        vm,
        "first_over_time(myelectricaldata_ecowatt_level[25h] offset -25h)",
        &[3.0],
    )
    .await;

    let am = Alertmanager::start();
    let vmalert = Vmalert::start(vm, &am.url).await;
    // Four evaluations, each seeing those samples.
    let deadline = Instant::now() + Duration::from_secs(20);
    while vmalert.metric("vmalert_iteration_total").await < 4.0 {
        assert!(
            Instant::now() < deadline,
            "vmalert did not evaluate: {}",
            vmalert.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let alerts = vmalert.alerts().await;
    assert!(alerts.is_empty(), "no alert should be active: {alerts:#?}");
    assert_eq!(am.received(), "", "nothing should be notified");
    assert_eq!(
        vmalert.metric("vmalert_execution_errors_total").await,
        0.0,
        "{}",
        vmalert.log()
    );
    assert_eq!(
        vmalert.metric("vmalert_alerting_rules_error").await,
        0.0,
        "{}",
        vmalert.log()
    );
}

/// The energy of a day's Tempo peak hours (06:00-22:00, 32 half-hours) at
/// a constant power, Wh.
fn peak_hours_wh(watts: i32) -> f64 {
    32.0 * f64::from(watts) * 30.0 / 60.0
}

/// The Tempo price of a red day's `period` ("hp" or "hc") in force today
/// in the shipped grid, EUR per kWh: what the exporter's price series say
/// and the rules read from them.
fn red_price(period: &str) -> f64 {
    let today = Utc::now().with_timezone(&Paris).date_naive();
    let micro = common::model::Pricing::shipped()
        .price("TEMPO", &format!("red_{period}"), 6, today)
        .unwrap();
    micro as f64 / 1e6
}

/// A price as the alert writes it: four decimals, a decimal comma.
fn french(price: f64) -> String {
    format!("{price:.4} €").replace('.', ",")
}

/// Waits until vmalert fires `name`.
async fn wait_firing(vmalert: &Vmalert, name: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let alerts = vmalert.alerts().await;
        if let Some(a) = firing(&alerts, name) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not fire: {alerts:#?}\n{}",
            vmalert.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The recording rule's series for the PDL, as VictoriaMetrics holds it
/// once vmalert wrote it back: (basis label, value).
async fn typical(vm: &str, within: Duration) -> (String, f64) {
    let deadline = Instant::now() + within;
    loop {
        let (body, v) = instant_query(
            vm,
            "last_over_time(myelectricaldata:tempo_red_peak_typical_wh[5m])",
        )
        .await;
        if let Some(r) = v["data"]["result"].as_array().and_then(|r| r.first()) {
            assert_eq!(r["metric"]["pdl"], PDL, "{body}");
            let value: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
            return (r["metric"]["basis"].as_str().unwrap().to_string(), value);
        }
        assert!(
            Instant::now() < deadline,
            "no myelectricaldata:tempo_red_peak_typical_wh in VictoriaMetrics: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts the red-day cost alert: its value, the typical energy and the
/// cost at the red peak-hours price in its annotations, humanized.
fn assert_cost_alert(alert: &Value, want_wh: f64, basis_text: &str) {
    assert_eq!(alert["labels"]["pdl"], PDL, "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "info", "{alert:#}");
    let value: f64 = alert["value"].as_str().unwrap().parse().unwrap();
    assert!(
        (value - want_wh).abs() <= 1e-6 * want_wh,
        "value {value}, want {want_wh} Wh: {alert:#}"
    );
    // Prometheus' humanize: 4 significant digits and an SI prefix; the
    // energies here are whole kWh.
    assert_eq!(want_wh % 1000.0, 0.0);
    let energy = format!("{}kWh", want_wh / 1000.0);
    let cost = format!("{:.2} €", want_wh / 1000.0 * red_price("hp"));
    assert_eq!(
        alert["annotations"]["summary"],
        format!("Jour Tempo ROUGE demain : environ {energy} en heures pleines")
    );
    let description = alert["annotations"]["description"].as_str().unwrap();
    for part in [
        PDL,
        &format!("d'habitude {energy}"),
        basis_text,
        &format!(
            "à {} le kWh (prix Tempo ROUGE HP en vigueur)",
            french(red_price("hp"))
        ),
        &format!("soit environ {cost}."),
        &format!("coûte {}.", french(red_price("hc"))),
    ] {
        assert!(
            description.contains(part),
            "{part:?} not in {description:?}"
        );
    }
}

#[tokio::test]
async fn a_red_day_tomorrow_warns_of_the_pdls_usual_red_peak_hours_energy_and_its_cost() {
    // Two red days in the past year, at 1000 W and 1500 W all day: 16 and
    // 24 kWh in peak hours, 20 kWh on average; the blue days between them
    // (500 W, 8 kWh) do not count.
    let curve = [(-10, 1000), (-9, 500), (-8, 1500), (-7, 500)];
    let servers = servers_with_curve(
        &[
            (-10, "RED"),
            (-9, "BLUE"),
            (-8, "RED"),
            (-7, "BLUE"),
            (0, "BLUE"),
            (1, "RED"),
        ],
        &[],
        &curve,
    )
    .await;
    let vm = servers.vm.url.as_str();
    // The exporter wrote the red days' peak-hours energy.
    wait_for(
        vm,
        "sum(count_over_time(myelectricaldata_tempo_consumption_wh{color=\"ROUGE\",period=\"HP\"}[365d]))",
        &[2.0],
    )
    .await;
    let am = Alertmanager::start();
    let vmalert = Vmalert::start(vm, &am.url).await;
    let want = (peak_hours_wh(1000) + peak_hours_wh(1500)) / 2.0;
    assert_eq!(want, 20_000.0);

    // The recording rule, written back to VictoriaMetrics.
    let (basis, value) = typical(vm, Duration::from_secs(60)).await;
    assert_eq!(basis, "ROUGE");
    assert!((value - want).abs() <= 1e-6 * want, "{value}, want {want}");

    let alert = wait_firing(&vmalert, "TempoRougeCoutEstime", Duration::from_secs(90)).await;
    assert_cost_alert(&alert, want, "(moyenne de ses jours rouges de l'année)");
    // TempoRouge still fires beside it.
    assert!(firing(&vmalert.alerts().await, "TempoRouge").is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !am.received().contains("TempoRougeCoutEstime") {
        assert!(
            Instant::now() < deadline,
            "the Alertmanager got {}",
            am.received()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(vmalert.metric("vmalert_execution_errors_total").await, 0.0);
}

#[tokio::test]
async fn without_a_red_day_in_the_year_the_red_day_alert_uses_the_peak_hours_of_every_colour() {
    // Blue and white days only, at 1000 W and 2000 W: 16 and 32 kWh in
    // peak hours, 24 kWh on average.
    let servers = servers_with_curve(
        &[
            (-6, "BLUE"),
            (-5, "WHITE"),
            (-4, "BLUE"),
            (0, "WHITE"),
            (1, "RED"),
        ],
        &[],
        &[(-6, 1000), (-5, 2000), (-4, 700)],
    )
    .await;
    let vm = servers.vm.url.as_str();
    wait_for(
        vm,
        "sum(count_over_time(myelectricaldata_tempo_consumption_wh{period=\"HP\"}[365d]))",
        &[2.0],
    )
    .await;
    let am = Alertmanager::start();
    let vmalert = Vmalert::start(vm, &am.url).await;
    let want = (peak_hours_wh(1000) + peak_hours_wh(2000)) / 2.0;
    let (basis, value) = typical(vm, Duration::from_secs(60)).await;
    assert_eq!(basis, "toutes_couleurs");
    assert!((value - want).abs() <= 1e-6 * want, "{value}, want {want}");
    let alert = wait_firing(&vmalert, "TempoRougeCoutEstime", Duration::from_secs(90)).await;
    assert_cost_alert(
        &alert,
        want,
        "(moyenne de ses jours Tempo de l'année, faute de jour rouge)",
    );
}

#[tokio::test]
async fn a_blue_day_tomorrow_after_red_days_fires_no_red_day_cost_alert() {
    let servers = servers_with_curve(
        &[(-3, "RED"), (-2, "BLUE"), (0, "RED"), (1, "BLUE")],
        &[],
        &[(-3, 1000), (-2, 1000)],
    )
    .await;
    let vm = servers.vm.url.as_str();
    wait_for(
        vm,
        "first_over_time(myelectricaldata_tempo_color{color=\"BLEU\"}[25h] offset -25h)",
        &[1.0],
    )
    .await;
    let am = Alertmanager::start();
    let vmalert = Vmalert::start(vm, &am.url).await;
    // The typical red-day energy is there, written back and readable...
    let (basis, value) = typical(vm, Duration::from_secs(60)).await;
    assert_eq!((basis.as_str(), value), ("ROUGE", peak_hours_wh(1000)));
    // ... and the rules read it for a few more evaluations: nothing fires.
    let iterations = vmalert.metric("vmalert_iteration_total").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while vmalert.metric("vmalert_iteration_total").await < iterations + 8.0 {
        assert!(Instant::now() < deadline, "{}", vmalert.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let alerts = vmalert.alerts().await;
    assert!(alerts.is_empty(), "no alert should be active: {alerts:#?}");
    assert_eq!(am.received(), "", "nothing should be notified");
    assert_eq!(vmalert.metric("vmalert_execution_errors_total").await, 0.0);
}

#[tokio::test]
async fn a_meter_without_a_new_reading_for_three_days_is_named_in_an_alert() {
    // PDL's reading is yesterday's (all is well); another meter, named
    // in pdls, last read five days ago.
    let servers = servers_with(&[(0, "BLUE")], &[]).await;
    let today = paris_today().await;
    sqlx::raw_sql(&format!(
        "INSERT INTO consumption_data (id, usage_point_id, date, granularity, value)
         VALUES ('alerts-silent', '{SILENT}', '{}', 'daily', 8000);
         INSERT INTO pdls (id, usage_point_id, name) VALUES ('p-silent', '{SILENT}', 'Garage');",
        day(today, -5)
    ))
    .execute(&servers.pool)
    .await
    .unwrap();
    common::run_ok(&["once"], &servers.env(&[]));
    reqwest::get(format!("{}/internal/force_flush", servers.vm.url))
        .await
        .unwrap();
    let am = Alertmanager::start();
    let vmalert = Vmalert::start(&servers.vm.url, &am.url).await;
    let alert = wait_firing(&vmalert, "ReleveManquant", Duration::from_secs(30)).await;
    assert_eq!(alert["labels"]["pdl"], SILENT, "{alert:#}");
    assert_eq!(alert["labels"]["name"], "Garage", "{alert:#}");
    assert_eq!(
        alert["annotations"]["summary"],
        "Aucun nouveau relevé depuis plus de 3 jours : Garage"
    );
    // Five days ago at 00:00: between 5 and 6 days before now.
    let age: f64 = alert["value"].as_str().unwrap().parse().unwrap();
    assert!((5.0 * 86400.0..6.0 * 86400.0).contains(&age), "{alert:#}");
    // The meter read yesterday is not named.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = vmalert.alerts().await;
    let named = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "ReleveManquant")
        .count();
    assert_eq!(named, 1, "{alerts:#?}");
    assert_eq!(vmalert.metric("vmalert_execution_errors_total").await, 0.0);
}
