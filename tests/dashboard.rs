//! The Grafana dashboard `docs/grafana/myelectricaldata.json` against a real
//! VictoriaMetrics fed by the exporter: every query of every panel, with the
//! dashboard's variables substituted as Grafana would, returns data; a few
//! return exactly what PostgreSQL's rows say (the Tempo and Zen Flex
//! calendars, today's and tomorrow's colours, the EcoWatt days ahead, the
//! load curve's power, each day's maximum power and its share of the
//! subscribed power); the cost panels show the days the spec's model prices
//! from the rows and the price grid, summed by hand (`common::priced`), and
//! the price panel the grid in force each day; and the exporter-health
//! panels show what the daemon itself reports, scraped by VictoriaMetrics
//! from its `/metrics`: its work, and its read-backs of VictoriaMetrics (the
//! repairs of what VictoriaMetrics lost, the last full reconciliation that
//! verified).
//!
//! The tests come first; the helpers each needs follow, in the same order.
//! How Grafana reads the dashboard and queries VictoriaMetrics is in
//! `common::grafana`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use myelectricaldata_vm_exporter::model::calendar::{day_millis, local_millis};
use serde_json::Value;
use sqlx::{PgPool, Row};

use common::demo::{demo_range, export_demo_data, name_the_meters, PDL, PDL_10_MIN};
use common::grafana::{
    assert_close, assert_points_near, dashboard, panel, panels, shown, Grafana, Points, Query,
};
use common::model::{expected, expected_priced, from_export, Pricing};
use common::priced::{
    cheapest_at, daily_points, monthly_points, season_start, totals_at, utc_midnight, PricedDays,
};
use common::{spawn_exporter, Daemon, Servers, Victoria};

/// Both PDLs, as Grafana writes a multi-value variable in a regex.
fn both_pdls() -> String {
    format!("({PDL}|{PDL_10_MIN})")
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

    let datasource = variable(&d, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let pdl = variable(&d, "pdl");
    assert_eq!(pdl["type"], "query");
    // Chosen by name, queried by number: the variable lists each meter
    // (tests/dashboard_meter.rs evaluates it).
    assert!(
        pdl["query"]["query"]
            .as_str()
            .unwrap()
            .starts_with("query_result(")
            && pdl["query"]["query"]
                .as_str()
                .unwrap()
                .contains("myelectricaldata_pdl_info"),
        "{pdl}"
    );
    assert_eq!(pdl["datasource"]["uid"], "${datasource}");
    assert_no_price_variables(&d);
    assert_cost_panels_name_the_exporters_grid(&d);
    assert_subscribed_power_variable(&d);

    assert_panels_tile_the_grid(&d);
    assert_every_panel_queries_the_datasource_variable(&d);
}

#[tokio::test]
async fn every_dashboard_query_returns_data_and_the_calendar_shows_each_days_colour() {
    common::away_from_paris_midnight().await;
    let servers = Servers::start().await;
    add_tempo_days_around_today(&servers.pool).await;
    // Named, with an option and a solar meter, so that the meter's panels
    // have something to show.
    name_the_meters(&servers.pool).await;
    export_demo_data(&servers, &[]).await;
    let grafana = Grafana::new(&servers.vm.url, &dashboard()).with_var("pdl", PDL);
    let qs = &grafana.queries;
    assert!(qs.len() >= 20, "{} queries", qs.len());

    let data: Vec<&Query> = qs.iter().filter(|q| !q.is_health()).collect();
    assert_all_return_data(&grafana, &data).await;

    // The Tempo calendar: 1 BLEU, 2 BLANC, 3 ROUGE, each day at 00:00 UTC
    // of its date (a 1-day step there reads the day that began just
    // before, at local midnight), over days with red and white.
    let want = tempo_calendar(&servers.pool, "2024-01-01", "2024-01-20").await;
    assert!(
        want.values().any(|&c| c == 3.0) && want.values().any(|&c| c == 2.0),
        "the checked days hold red and white days: {want:?}"
    );
    assert_calendar(&grafana, "Calendrier Tempo", &want).await;

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
    let a = grafana
        .run_panel("Consommation sur la période", "A", start, end)
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
        assert_days_ahead(&grafana, panel, ref_id, want, now).await;
    }
}

#[tokio::test]
async fn the_load_curve_max_power_and_zen_flex_panels_show_what_the_rows_say() {
    let servers = Servers::start().await;
    export_demo_data(&servers, &[]).await;
    let pool = &servers.pool;
    let grafana = Grafana::new(&servers.vm.url, &dashboard()).with_var("pdl", &both_pdls());

    // The load curve over one day: the power of each interval, in W, at its
    // start, for the 30-minute and the 10-minute meters; the production's
    // likewise.
    assert_load_curve_day(&grafana, pool, "A", "consumption_data", "2024-11-04").await;
    assert_load_curve_day(&grafana, pool, "B", "production_data", "2024-07-14").await;

    // At a one-day step, each point is the mean power of the intervals it
    // covers: the window (t - 1 day, t].
    assert_load_curve_daily_means(&grafana, pool).await;

    // Each day's maximum power, in VA, at the peak's time: an ordinary day
    // for both PDLs, the day of the October change (a peak in the repeated
    // hour) and a row with no time (at 00:00). And the share of the
    // subscribed power (the variable's default) the day's peak reached,
    // and the subscribed power beside.
    let kva = grafana.number("subscribed_kva");
    assert_eq!(kva, 9.0, "the default subscribed power");
    for day in ["2024-10-05", "2024-10-27", "2024-03-31"] {
        assert_max_power_day(&grafana, pool, date(day), kva).await;
    }

    // The Zen Flex calendar: 1 ECO, 2 SOBRIETE, 3 BONUS, each day at 00:00
    // UTC of its date (a 1-day step there reads the day that began just
    // before, at local midnight), over days of the three types.
    let want = zen_flex_calendar(pool, "2024-09-10", "2024-11-10").await;
    for code in [1.0, 2.0, 3.0] {
        assert!(
            want.values().any(|&c| c == code),
            "the checked days hold every day type: {want:?}"
        );
    }
    assert_calendar(&grafana, "Calendrier Zen Flex", &want).await;
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

#[tokio::test]
async fn the_exporter_health_panels_show_the_daemons_metrics_scraped_by_victoriametrics() {
    let dir = tempfile::tempdir().unwrap();
    // VictoriaMetrics is told where to scrape before the daemon starts: the
    // port stays bound here until then, so that no other test's server
    // takes it meanwhile.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let servers = servers_scraping(dir.path(), &listen).await;
    let vm = servers.vm.url.as_str();
    let log = dir.path().join("daemon.log");
    let spawned = Utc::now().timestamp();
    drop(held);
    let _daemon = spawn_daemon_reconciling_every_5s(&servers, &listen, &log);

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
    let lost = lose_a_series_and_gain_a_sample(&servers).await;
    converge(
        &servers,
        &log,
        "after VictoriaMetrics lost a series and gained a sample",
    )
    .await;
    let repaired_at = Utc::now().timestamp_millis() as f64 / 1000.0;
    let after = verified_after(&listen, repaired_at, &log).await;
    let counted = |name: &str| metric(&after, name) - metric(&before, name);
    assert!(
        counted("series_repaired_total") >= 2.0
            && counted("samples_missing_total") >= lost as f64
            && counted("samples_extra_total") >= 1.0,
        "the daemon's /metrics before the losses: {before:?}\nafter the repairs: {after:?}"
    );
    // VictoriaMetrics scrapes that verification.
    let verified_at = metric(&after, "last_verified_timestamp_seconds");
    wait_scraped_verification(vm, verified_at).await;
    assert_up_sent_and_last_success(vm, samples).await;

    // Grafana aligns a range query's end on its step (15 s here): wait for
    // a step boundary after those scrapes, so that the last step holds them.
    let now = Utc::now().timestamp();
    tokio::time::sleep(Duration::from_secs((15 - now.rem_euclid(15) + 2) as u64)).await;

    let d = dashboard();
    let grafana = Grafana::new(vm, &d).with_var("pdl", PDL);
    let health: Vec<&Query> = grafana.queries.iter().filter(|q| q.is_health()).collect();
    assert!(health.len() >= 10, "{} health queries", health.len());
    assert_every_health_metric_shown(&health);
    assert_all_return_data(&grafana, &health).await;

    // The changes show as counted work.
    let now = Utc::now().timestamp();
    assert_counted_something(
        &grafana,
        &[
            ("Échantillons envoyés sur la période", "A"),
            ("Échantillons envoyés", "A"),
            ("Lots, réessais et séries réécrites", "A"),
            ("Lots, réessais et séries réécrites", "C"),
        ],
        |q| range_of(q, now),
    )
    .await;

    // Over the daemon's life: the read-backs and what they repaired, per
    // interval...
    let life = (spawned - 60, Utc::now().timestamp());
    let repairs = "Réparations : séries réparées, échantillons manquants et en trop";
    assert_counted_something(
        &grafana,
        &[
            ("Vérifications et séries comparées", "A"),
            ("Vérifications et séries comparées", "B"),
            (repairs, "A"),
            (repairs, "B"),
            (repairs, "C"),
        ],
        |_| life,
    )
    .await;
    // ... and in total: the daemon's own counts.
    let daemon = daemon_metrics(&listen).await;
    assert_totals_are_the_daemons(&grafana, &daemon, life).await;

    // A single node shows each sample once: the replication stat says so,
    // as the daemon's /metrics does.
    let replication = "Répliques sans déduplication";
    let a = grafana.run_panel(replication, "A", life.0, life.1).await;
    assert_eq!(
        a.single(),
        metric(&daemon, "replication_without_dedup"),
        "{}",
        a.sent
    );
    assert_eq!(
        shown(panel(&d, replication), a.single()),
        (Some("OK".to_string()), "green".to_string())
    );

    assert_last_verification_stat(&grafana, &d, &listen, spawned, repaired_at).await;
}

#[tokio::test]
async fn the_cost_panels_sum_the_days_priced_at_the_grids_prices_in_force_as_the_rows_say() {
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
    // The shipped grid, every price of which changes twice more among the
    // load-curve days: on the 25-hour day of the October change of time,
    // and on the day after the red one.
    let dir = tempfile::tempdir().unwrap();
    let (file, pricing) = grid_changing_on(dir.path(), &["2024-10-27", "2024-11-04"]);
    export_demo_data(&servers, &[("VICTORIAMETRICS_PRICES_FILE", &file)]).await;
    let now = Utc::now().timestamp_millis();
    let days = PricedDays::of(&expected_priced(pool, &BTreeMap::new(), now, &pricing).await);
    let pdls = [PDL, PDL_10_MIN];
    let grafana = grafana_costs(&servers);

    // The model's days, by hand: a Tempo day counts when its colour is
    // known and the load curve covers it (its date and the next); the three
    // options have their costs on the same eight days.
    let tempo_days: Vec<String> = days
        .days(&format!("{PDL} TEMPO energy"))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        tempo_days,
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
    let common: BTreeMap<&str, BTreeSet<NaiveDate>> =
        pdls.iter().map(|p| (*p, days.complete_days(p))).collect();
    for pdl in pdls {
        let base = days.days(&format!("{pdl} BASE energy"));
        assert_eq!(base.len(), 15, "{pdl}: 15 complete calendar days");
        assert_eq!(common[pdl].len(), 8, "{pdl}: the eight Tempo days");
    }

    // Per day and per month, each option: energy + subscription.
    let start = utc_midnight(date("2023-03-01"));
    let end = utc_midnight(date("2024-11-30"));
    let all = days.per_day(|_, _| true);
    for (panel, want) in [
        ("Coût par jour : Base, HP/HC et Tempo", daily_points(&all)),
        ("Coût par mois : Base, HP/HC et Tempo", monthly_points(&all)),
    ] {
        let q = grafana.query(panel, "A");
        assert_eq!(q.interval(start, end), 86_400, "{panel}: a 1-day step");
        let a = grafana.run(q, start, end).await;
        assert_close(panel, &a.keyed(&["pdl", "option"]), &want, &a.sent);
    }

    // Over the whole period: the Tempo cost, by colour and period at the
    // price of each day, and the share of red peak hours.
    let end = utc_midnight(date("2024-12-01"));
    let gap = straddle_gap(pool, &days, &pricing).await;
    assert!(
        gap.abs() > 0.01,
        "the grid changes inside Tempo days: {gap}"
    );
    assert_tempo_over_the_period(&grafana, &days, &pricing, start, end, gap).await;

    // The comparison: the three options over the days that have all their
    // costs, subscription included; and the cheapest of them.
    let compared = days.per_day(|pdl, d| common[pdl].contains(&d));
    for (panel, want) in [
        (
            "Comparaison Base, HP/HC et Tempo sur la période",
            totals_at(&compared, end),
        ),
        (
            "Option la moins chère sur la période",
            cheapest_at(&compared, end),
        ),
    ] {
        let a = grafana.run_panel(panel, "A", start, end).await;
        assert_close(panel, &a.keyed(&["pdl", "option"]), &want, &a.sent);
    }

    // Twelve months and the Tempo season up to the range's end, whatever
    // its start: at the end of 2024, the season (from 1 September) leaves
    // out the days of March that the twelve months count; at the end of
    // August, both count the same days.
    for end in [date("2024-12-01"), date("2024-08-31")] {
        let at = utc_midnight(end);
        let year = days.per_day(|_, d| {
            let t = paris_midnight(d);
            at - 365 * 86_400 < t && t <= at
        });
        let season = days.per_day(|_, d| (season_start(end)..=end).contains(&d));
        let tempo = format!("{PDL} TEMPO");
        assert_eq!(
            year[&tempo].len() > season[&tempo].len(),
            end.month() >= 9,
            "{end}: the days of 12 months {:?}, of the season {:?}",
            year[&tempo].keys(),
            season[&tempo].keys()
        );
        for (panel, want) in [
            (
                "Coût sur 12 mois : Base, HP/HC et Tempo",
                totals_at(&year, at),
            ),
            (
                "Coût de la saison Tempo : Base, HP/HC et Tempo",
                totals_at(&season, at),
            ),
        ] {
            let a = grafana.run_panel(panel, "A", at - 86_400, at).await;
            assert_close(
                &format!("{panel} at {end}"),
                &a.keyed(&["pdl", "option"]),
                &want,
                &a.sent,
            );
        }
    }

    // The prices in force each day, at two powers: at 6 kVA, Base's own
    // price wins over the one for every power of the same date (from
    // 1 February 2026, and the test's lower ones); at 9 kVA, the one for
    // every power replaces its own from 1 February 2022.
    for kva in [6, 9] {
        for (from, to) in [("2021-01-01", "2026-12-01"), ("2024-10-20", "2024-11-10")] {
            let grafana = grafana_costs(&servers).with_var("subscribed_kva", &kva.to_string());
            assert_prices(&grafana, &pricing, kva, from, to).await;
        }
    }
}

// Shared by the tests above: the servers' data, dates, ranges and checks.

/// The range this file queries `q` over: the panel's own relative time
/// around `now`; else the last five minutes for the exporter's health,
/// where the daemon just ran; else the demo data's span.
fn range_of(q: &Query, now: i64) -> (i64, i64) {
    q.own_range(now).unwrap_or_else(|| {
        if q.is_health() {
            (now - 300, now)
        } else {
            demo_range()
        }
    })
}

/// Asserts that every query of `qs` returns data over the range it is for.
async fn assert_all_return_data(grafana: &Grafana, qs: &[&Query]) {
    let now = Utc::now().timestamp();
    let mut failures = Vec::new();
    for q in qs {
        let (start, end) = range_of(q, now);
        let a = grafana.run(q, start, end).await;
        if a.points() == 0 {
            failures.push(format!(
                "panel {:?} target {} returned no data: {}\n  answer: {}",
                q.panel, q.ref_id, a.sent, a.body
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
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

/// Asserts that `got` holds exactly the points of `want`, to 1e-9.
fn assert_exact(what: &str, got: &Points, want: &Points, sent: &str) {
    assert_points_near(what, got, want, sent, |g, w| (g - w).abs() < 1e-9);
}

// The dashboard's own definition.

/// The dashboard variable `name`.
fn variable<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

/// The prices are the exporter's series: no price variable is left.
fn assert_no_price_variables(d: &Value) {
    let names: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["datasource", "pdl", "subscribed_kva"]);
}

/// Every panel that reads costs or prices says where the prices come from.
fn assert_cost_panels_name_the_exporters_grid(d: &Value) {
    let mut seen = 0;
    for p in panels(d) {
        let reads = p["targets"].as_array().into_iter().flatten().any(|t| {
            let e = t["expr"].as_str().unwrap_or_default();
            e.contains("myelectricaldata_cost_eur") || e.contains("myelectricaldata_price_eur")
        });
        if reads {
            seen += 1;
            let description = p["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("grille de prix de l'exportateur")
                    && description.contains("prices/regulated.csv")
                    && description.contains("VICTORIAMETRICS_PRICES_FILE"),
                "{}: {description}",
                p["title"]
            );
        }
    }
    assert_eq!(seen, 11, "the cost and price panels");
}

/// The subscribed power, in kVA: the standard Linky powers, 9 by default.
fn assert_subscribed_power_variable(d: &Value) {
    let kva = variable(d, "subscribed_kva");
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
}

/// Every panel has an id of its own and a place of its own on the
/// 24-column grid.
fn assert_panels_tile_the_grid(d: &Value) {
    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for p in panels(d) {
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
    }
}

/// Every panel but the rows queries the `$datasource` variable's
/// Prometheus datasource, with queries of its own that pick one type of
/// the energy series.
fn assert_every_panel_queries_the_datasource_variable(d: &Value) {
    for p in panels(d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
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

// The calendars, today's and the days ahead.

/// Tempo days around today, as MyElectricalData writes them: yesterday BLUE,
/// today WHITE, tomorrow RED (the demo data's calendar ends in 2024).
async fn add_tempo_days_around_today(pool: &PgPool) {
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

/// The Tempo calendar's codes from the rows of `from..=to`: 1 BLEU,
/// 2 BLANC, 3 ROUGE, at 00:00 UTC of each date.
async fn tempo_calendar(pool: &PgPool, from: &str, to: &str) -> BTreeMap<i64, f64> {
    let sql = "SELECT id, color::text FROM tempo_days
                WHERE id BETWEEN $1 AND $2 ORDER BY id";
    calendar(pool, sql, from, to, ["BLUE", "WHITE", "RED"]).await
}

/// The Zen Flex calendar's codes from the rows of `from..=to`: 1 ECO,
/// 2 SOBRIETE, 3 BONUS, at 00:00 UTC of each date.
async fn zen_flex_calendar(pool: &PgPool, from: &str, to: &str) -> BTreeMap<i64, f64> {
    let sql = "SELECT date::text, day_type::text FROM zen_flex_days
                WHERE date BETWEEN $1::date AND $2::date ORDER BY date";
    calendar(pool, sql, from, to, ["ECO", "SOBRIETE", "BONUS"]).await
}

/// A calendar's codes, from the rows (a date, its kind) that `sql` selects
/// between `from` and `to`: 1, 2 and 3 for `kinds` in order, at 00:00 UTC
/// of each date.
async fn calendar(
    pool: &PgPool,
    sql: &str,
    from: &str,
    to: &str,
    kinds: [&str; 3],
) -> BTreeMap<i64, f64> {
    let rows: Vec<(String, String)> = sqlx::query_as(sql)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut want = BTreeMap::new();
    for (day, kind) in &rows {
        let code = kinds
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{day}: kind {kind}, not one of {kinds:?}"));
        want.insert(utc_midnight(date(day)), (code + 1) as f64);
    }
    want
}

/// Asserts that the calendar panel `title` shows `want` (instant → code)
/// over its days, as one series.
async fn assert_calendar(grafana: &Grafana, title: &str, want: &BTreeMap<i64, f64>) {
    let (start, end) = (*want.keys().next().unwrap(), *want.keys().last().unwrap());
    let a = grafana.run_panel(title, "A", start, end).await;
    assert_eq!(a.series.len(), 1, "{title}: {}", a.body);
    let got: BTreeMap<i64, f64> = a.series[0].1.iter().copied().collect();
    assert_eq!(&got, want, "{title}: {}", a.sent);
}

/// Asserts that a panel of today and the days ahead shows `want` over its
/// own range around `now`.
async fn assert_days_ahead(grafana: &Grafana, panel: &str, ref_id: &str, want: f64, now: i64) {
    let q = grafana.query(panel, ref_id);
    let (start, end) = range_of(q, now);
    let a = grafana.run(q, start, end).await;
    // In the first hour of a Paris day, the day after tomorrow's 00:00
    // lies beyond VictoriaMetrics' two-day window: not written yet.
    let paris = Utc::now().with_timezone(&Paris);
    let held_back = ref_id == "C" && panel.starts_with("EcoWatt") && {
        use chrono::Timelike;
        paris.hour() == 0
    };
    let want = if held_back { 0.0 } else { want };
    assert_eq!(a.values(), vec![want], "{panel} {ref_id}: {}", a.sent);
}

// The load curve and the maximum power.

/// Detailed rows (`value`, an average power in W) of `table` for the days
/// `from..=to`, by PDL: their local instant (Unix seconds) → W.
async fn load_curve_rows(pool: &PgPool, table: &str, from: &str, to: &str) -> Points {
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
    let mut out = Points::new();
    for r in rows {
        let start: Option<String> = r.get(2);
        let value: i32 = r.get(3);
        out.entry(r.get(0))
            .or_default()
            .insert(row_instant(r.get(1), start.as_deref()), f64::from(value));
    }
    out
}

/// Asserts that the load curve's target `ref_id` shows the power series
/// and, over `day`, every interval of `table`'s rows at its start.
async fn assert_load_curve_day(
    grafana: &Grafana,
    pool: &PgPool,
    ref_id: &str,
    table: &str,
    day: &str,
) {
    let want = load_curve_rows(pool, table, day, day).await;
    assert!(!want.is_empty(), "{table} has a load curve on {day}");
    let day = date(day);
    let (start, end) = (
        paris_midnight(day),
        paris_midnight(day.succ_opt().unwrap()) - 1,
    );
    let q = grafana.query("Courbe de charge", ref_id);
    assert!(
        q.expr.contains("_power_w{") && !q.expr.contains("_wh{"),
        "the load curve shows the power series: {}",
        q.expr
    );
    assert!(
        q.interval(start, end) <= 600,
        "a day's load curve shows every 10-minute interval"
    );
    let a = grafana.run(q, start, end).await;
    assert_exact(
        &format!("load curve {ref_id} on {day}"),
        &a.by_pdl(),
        &want,
        &a.sent,
    );
}

/// Asserts that the load curve at a one-day step shows, at each point, the
/// mean power of the intervals of (t - 1 day, t].
async fn assert_load_curve_daily_means(grafana: &Grafana, pool: &PgPool) {
    let rows = load_curve_rows(pool, "consumption_data", "2024-11-02", "2024-11-06").await;
    let mut daily = grafana.query("Courbe de charge", "A").clone();
    daily.min_interval = 86_400;
    let (start, end) = (
        Utc.with_ymd_and_hms(2024, 11, 4, 0, 0, 0)
            .unwrap()
            .timestamp(),
        Utc.with_ymd_and_hms(2024, 11, 6, 0, 0, 0)
            .unwrap()
            .timestamp(),
    );
    let mut want = Points::new();
    for (pdl, points) in &rows {
        for t in (start..=end).step_by(86_400) {
            let w: Vec<f64> = points.range(t - 86_399..=t).map(|(_, v)| *v).collect();
            assert!(!w.is_empty());
            want.entry(pdl.clone())
                .or_default()
                .insert(t, w.iter().sum::<f64>() / w.len() as f64);
        }
    }
    let a = grafana.run(&daily, start, end).await;
    assert_exact(
        "the load curve at a 1-day step",
        &a.by_pdl(),
        &want,
        &a.sent,
    );
}

/// Asserts that on `day` the maximum power panel shows each PDL's row at
/// its peak's time, the share panel the share of `kva` it reached, and the
/// subscribed power line `kva` x 1000.
async fn assert_max_power_day(grafana: &Grafana, pool: &PgPool, day: NaiveDate, kva: f64) {
    let rows = sqlx::query(
        "SELECT usage_point_id, interval_start, value FROM max_power_data WHERE date = $1::date",
    )
    .bind(day.to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "max_power_data has {day}");
    let (start, end) = (
        paris_midnight(day),
        paris_midnight(day.succ_opt().unwrap()) - 1,
    );
    let q = grafana.query("Puissance maximale atteinte chaque jour", "A");
    let step = q.interval(start, end);
    let a = grafana.run(q, start, end).await;
    let got = a.by_pdl();
    // The panel's whole range is the day: (00:00, 24:00] shifted back
    // by a second, so that a peak at 00:00 is the day's.
    let share = grafana
        .run_panel(
            "Part de la puissance souscrite atteinte",
            "A",
            start - 1,
            end,
        )
        .await;
    let got_share = share.by_pdl();
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
    let line = grafana
        .run_panel("Puissance maximale atteinte chaque jour", "B", start, end)
        .await;
    let values = line.values();
    assert!(!values.is_empty(), "{}", line.body);
    assert!(
        values.iter().all(|&v| v == kva * 1000.0),
        "subscribed power: {}",
        line.body
    );
}

// The exporter's health.

/// PostgreSQL with the demo data, and a VictoriaMetrics that scrapes the
/// daemon's `/metrics` on `listen` every second.
async fn servers_scraping(dir: &Path, listen: &str) -> Servers {
    let scrape = dir.join("scrape.yml");
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
    Servers { pg, vm, pool }
}

/// The daemon, polling every second and listening on `listen`, with a full
/// reconciliation every 5 s, which verifies once the last writes are older
/// than the verify delay: VictoriaMetrics 1.79 takes up to about 10 s to
/// show a new series (a shorter delay would take that for a loss and
/// repair it).
fn spawn_daemon_reconciling_every_5s(servers: &Servers, listen: &str, log: &Path) -> Daemon {
    let verify_delay = std::env::var("MED_TEST_VERIFY_DELAY").unwrap_or_else(|_| "12s".into());
    let env = servers.env(&[
        ("VICTORIAMETRICS_POLL_INTERVAL", "1s"),
        ("VICTORIAMETRICS_RECONCILE_INTERVAL", "5s"),
        ("VICTORIAMETRICS_VERIFY_DELAY", &verify_delay),
        ("VICTORIAMETRICS_HTTP_LISTEN_ADDR", listen),
    ]);
    spawn_exporter(&["run"], &env, log)
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

/// Waits until VictoriaMetrics holds what the model computes from the
/// rows, the exporter's own scraped metrics set aside; returns the number
/// of samples.
async fn converge(servers: &Servers, log: &Path, when: &str) -> usize {
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
    let (body, v) = common::promql::instant_query(vm, query).await;
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok());
    (value, body)
}

/// Waits until VictoriaMetrics has scraped the daemon `n` times in the last
/// 10 s and the last scrape says the export is in sync.
async fn scraped(servers: &Servers, n: f64, listen: &str, log: &Path) {
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

/// Deletes by hand the daily series of [`PDL`] without quality, and
/// imports a stray sample beside a daily sample of the 10-minute meter;
/// returns the number of samples lost.
async fn lose_a_series_and_gain_a_sample(servers: &Servers) -> usize {
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
        .post(format!("{}/api/v1/import", servers.vm.url))
        .body(stray.to_string())
        .send()
        .await
        .expect("import a stray sample")
        .status();
    assert!(status.is_success(), "import: {status}");
    lost[0]
}

/// Waits until the daemon's `/metrics` says a full reconciliation verified
/// after `at` (Unix seconds); returns them.
async fn verified_after(listen: &str, at: f64, log: &Path) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = daemon_metrics(listen).await;
        if metric(&m, "last_verified_timestamp_seconds") > at {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no full reconciliation verified the repaired mirror: {m:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until VictoriaMetrics has scraped the verification at
/// `verified_at`.
async fn wait_scraped_verification(vm: &str, verified_at: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (scraped, body) = instant(
            vm,
            "max(myelectricaldata_exporter_last_verified_timestamp_seconds)",
        )
        .await;
        if scraped.is_some_and(|s| s >= verified_at) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "VictoriaMetrics did not scrape the verification at {verified_at}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The scraped daemon is up, has sent at least the `samples` of its first
/// export, and succeeded less than 30 s ago.
async fn assert_up_sent_and_last_success(vm: &str, samples: usize) {
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
}

/// Some health panel shows each of the daemon's metrics.
fn assert_every_health_metric_shown(health: &[&Query]) {
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
}

/// Asserts that each of `targets` (panel, ref_id) counts more than nothing
/// over the range `range` gives it.
async fn assert_counted_something(
    grafana: &Grafana,
    targets: &[(&str, &str)],
    range: impl Fn(&Query) -> (i64, i64),
) {
    for (panel, ref_id) in targets {
        let q = grafana.query(panel, ref_id);
        let (start, end) = range(q);
        let a = grafana.run(q, start, end).await;
        let total: f64 = a.values().iter().sum();
        assert!(
            total > 0.0,
            "{panel} {ref_id} counted nothing: {}\n{}",
            a.sent,
            a.body
        );
    }
}

/// The totals over the daemon's `life` are its own counts (`daemon`): the
/// repairs' have not moved since its verified reconciliation; the
/// read-backs' still grow (every reconciliation reads back).
async fn assert_totals_are_the_daemons(
    grafana: &Grafana,
    daemon: &BTreeMap<String, f64>,
    life: (i64, i64),
) {
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
        let a = grafana.run_panel(panel, "A", life.0, life.1).await;
        let got = a.single();
        let own = metric(daemon, name);
        if settled {
            assert_eq!(got, own, "{panel} against the daemon's {name} ({})", a.sent);
        }
        assert!(
            got > 0.0 && got <= own,
            "{panel}: {got}, the daemon's {name}: {own} ({})",
            a.sent
        );
    }
}

/// The last verification stat: now the one the daemon's /metrics
/// reports, after the repairs at `repaired_at`, green; over the daemon's
/// first scrapes, "jamais".
async fn assert_last_verification_stat(
    grafana: &Grafana,
    d: &Value,
    listen: &str,
    spawned: i64,
    repaired_at: f64,
) {
    let title = "Dernière vérification complète";
    let p = panel(d, title);
    let q = grafana.query(title, "A");
    // The last verification: the one the daemon's /metrics reports, a
    // moment ago, after the repairs; green. (VictoriaMetrics 1.79 evaluates
    // an instant query at the current second a second earlier, to the
    // millisecond, time() included: the stat is asked for a few seconds ago,
    // when its time() is exactly the instant asked for.)
    let end = Utc::now().timestamp() - 3;
    let own_before = metric(
        &daemon_metrics(listen).await,
        "last_verified_timestamp_seconds",
    );
    let a = grafana.run(q, spawned - 60, end).await;
    let own_after = metric(
        &daemon_metrics(listen).await,
        "last_verified_timestamp_seconds",
    );
    let age = a.single();
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
    let a = grafana.run(&first, spawned, end).await;
    let &(t0, v0) = a
        .series
        .iter()
        .flat_map(|s| s.1.iter())
        .min_by_key(|p| p.0)
        .unwrap_or_else(|| panic!("no scrape: {}", a.body));
    assert_eq!(v0, 0.0, "the first scrape: {}", a.sent);
    let a = grafana.run(q, t0 - 300, t0).await;
    let age = a.single();
    assert_eq!(
        shown(p, age),
        (Some("jamais".to_string()), "orange".to_string()),
        "{age}: {}",
        a.sent
    );
}
// The costs and the prices.

/// The demo data's PDLs record no subscribed power: the exporter prices
/// them at 6 kVA.
const DEMO_KVA: i64 = 6;

/// Every price of the grid: (option, item).
const PRICE_ITEMS: [(&str, &str); 12] = [
    ("BASE", "subscription_month"),
    ("BASE", "base"),
    ("HC_HP", "subscription_month"),
    ("HC_HP", "hp"),
    ("HC_HP", "hc"),
    ("TEMPO", "subscription_month"),
    ("TEMPO", "blue_hp"),
    ("TEMPO", "blue_hc"),
    ("TEMPO", "white_hp"),
    ("TEMPO", "white_hc"),
    ("TEMPO", "red_hp"),
    ("TEMPO", "red_hc"),
];

/// The shipped grid with every price changing again on each of `dates`
/// (each time a little more, the subscriptions at [`DEMO_KVA`]), and
/// Base's kWh at [`DEMO_KVA`] a little less than for every power, written
/// in `dir`: the file's path, and the grid as the model reads it.
fn grid_changing_on(dir: &Path, dates: &[&str]) -> (String, Pricing) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/prices/regulated.csv");
    let mut grid = std::fs::read_to_string(path).unwrap();
    grid.push_str("# The dashboard test's changes.\n");
    for (n, day) in dates.iter().enumerate() {
        for (i, (option, item)) in PRICE_ITEMS.iter().enumerate() {
            let (kva, eur) = if *item == "subscription_month" {
                (DEMO_KVA.to_string(), 20.0 + (n * 12 + i) as f64)
            } else {
                (String::new(), 0.1 + (n * 12 + i) as f64 / 100.0)
            };
            grid.push_str(&format!("{day},{option},{kva},{item},{eur:.4}\n"));
            if *item == "base" {
                let own = eur - 0.005;
                grid.push_str(&format!("{day},{option},{DEMO_KVA},{item},{own:.4}\n"));
            }
        }
    }
    let file = dir.join("prices.csv");
    std::fs::write(&file, &grid).unwrap();
    (file.display().to_string(), Pricing::from_text(&grid, None))
}

/// Grafana on the servers' VictoriaMetrics, both PDLs chosen.
fn grafana_costs(servers: &Servers) -> Grafana {
    Grafana::new(&servers.vm.url, &dashboard()).with_var("pdl", &both_pdls())
}

/// What the costs count beyond each Tempo day's energy at its date's
/// prices: a Tempo day whose 00:00-06:00 hours fall on a day the off-peak
/// price changes prices those hours at the new price (SPEC §3, Costs), which
/// the panel by colour and period, from the day's sums, cannot split out.
/// Summed by hand from the rows of those mornings (€).
async fn straddle_gap(pool: &sqlx::PgPool, days: &PricedDays, pricing: &Pricing) -> f64 {
    let mut gap = 0.0;
    for (key, by_day) in &days.tempo_wh {
        let mut parts = key.split(' ');
        let (pdl, colour, period) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        if period != "HC" {
            continue;
        }
        let item = match colour {
            "BLEU" => "blue_hc",
            "BLANC" => "white_hc",
            _ => "red_hc",
        };
        for day in by_day.keys() {
            let next = *day + chrono::Days::new(1);
            let (Some(old), Some(new)) = (
                pricing.price("TEMPO", item, DEMO_KVA, *day),
                pricing.price("TEMPO", item, DEMO_KVA, next),
            ) else {
                continue;
            };
            if old == new {
                continue;
            }
            // W × minutes / 60 = Wh, the length from raw_data.
            let wh: f64 = sqlx::query_scalar(
                "SELECT sum(value * coalesce(substring(coalesce(raw_data ->> 'p', raw_data ->> 'interval_length')
                                                        FROM 'PT([0-9]+)M')::int, 30) / 60.0)::float8
                   FROM consumption_data
                  WHERE usage_point_id = $1 AND date = $2 AND granularity = 'detailed'
                    AND interval_start < '06:00'",
            )
            .bind(pdl)
            .bind(next)
            .fetch_one(pool)
            .await
            .unwrap();
            gap += wh / 1000.0 * (new - old) as f64 / 1e6;
        }
    }
    gap
}

/// The Tempo panels over `start..end`, which hold every day of `days`:
/// the energy's cost, the same by colour and period (each day's energy at
/// the price in force on its date: the cost, less `gap`, the mornings
/// priced at a change of price), and the share of red peak hours.
async fn assert_tempo_over_the_period(
    grafana: &Grafana,
    days: &PricedDays,
    pricing: &Pricing,
    start: i64,
    end: i64,
    gap: f64,
) {
    let energy: Points = [PDL, PDL_10_MIN]
        .iter()
        .map(|pdl| {
            let eur: f64 = days.cost[&format!("{pdl} TEMPO energy")].values().sum();
            (pdl.to_string(), BTreeMap::from([(end, eur)]))
        })
        .collect();
    let panel = "Coût Tempo sur la période";
    let a = grafana.run_panel(panel, "A", start, end).await;
    assert_close(panel, &a.by_pdl(), &energy, &a.sent);

    let by_colour = days.tempo_by_colour(pricing, DEMO_KVA, |_| true);
    for k in ["BLEU HP", "BLANC HC", "ROUGE HP", "ROUGE HC"] {
        assert!(by_colour.contains_key(k), "{k}: {by_colour:?}");
    }
    let total: f64 = energy.values().map(|p| p[&end]).sum();
    let split: f64 = by_colour.values().sum();
    assert!(
        (total - split - gap).abs() < 1e-5,
        "{total} € split in {split} € and {gap} € of mornings at new prices"
    );
    let want: Points = by_colour
        .into_iter()
        .map(|(k, v)| (k, BTreeMap::from([(end, v)])))
        .collect();
    let panel = "Coût Tempo par couleur et période";
    let a = grafana.run_panel(panel, "A", start, end).await;
    assert_close(panel, &a.keyed(&["color", "period"]), &want, &a.sent);

    let want: Points = days
        .red_peak_share()
        .into_iter()
        .map(|(pdl, share)| (pdl, BTreeMap::from([(end, share)])))
        .collect();
    assert!(want.values().all(|s| s[&end] > 0.0), "{want:?}");
    let panel = "Part de l'énergie en heures pleines rouges";
    let a = grafana.run_panel(panel, "A", start, end).await;
    assert_close(panel, &a.by_pdl(), &want, &a.sent);
}

/// The price panel over `from..to`, its subscribed power set to `kva`: at
/// each of its points (00:00 UTC of a date), every price of the grid in
/// force on that date at that power.
async fn assert_prices(grafana: &Grafana, pricing: &Pricing, kva: i64, from: &str, to: &str) {
    let panel = "Prix en vigueur : kWh et abonnements";
    let q = grafana.query(panel, "A");
    let (start, end) = (utc_midnight(date(from)), utc_midnight(date(to)));
    let step = q.interval(start, end);
    let mut want = Points::new();
    for (option, item) in PRICE_ITEMS {
        for t in
            (start - start.rem_euclid(step)..=end - end.rem_euclid(step)).step_by(step as usize)
        {
            let day = Utc.timestamp_opt(t, 0).unwrap().date_naive();
            if let Some(micro) = pricing.price(option, item, kva, day) {
                want.entry(format!("{option} {item}"))
                    .or_default()
                    .insert(t, micro as f64 / 1e6);
            }
        }
    }
    let a = grafana.run(q, start, end).await;
    assert_exact(
        &format!("{panel} at {kva} kVA"),
        &a.keyed(&["option", "item"]),
        &want,
        &a.sent,
    );
}
