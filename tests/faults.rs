//! The daemon under faults: VictoriaMetrics failing in every way a fault
//! proxy can make it fail, PostgreSQL stopped and restarted, malformed
//! rows. Every scenario ends with VictoriaMetrics' export compared with the
//! spec's model.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::model::{assert_exported, from_export};
use common::proxy::{Fault, Proxy};
use common::{signal, spawn_exporter, Postgres, Servers, Victoria, DATA};

const WITHIN: Duration = Duration::from_secs(60);

async fn change(pool: &sqlx::PgPool, n: i32) {
    sqlx::raw_sql(&format!(
        "UPDATE consumption_data SET value = value + {n} WHERE date = '2024-04-{n:02}';
         UPDATE tempo_days SET color = (CASE color::text WHEN 'RED' THEN 'BLUE' ELSE 'RED' END)
          WHERE id = '2024-10-{n:02}';"
    ))
    .execute(pool)
    .await
    .unwrap();
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[tokio::test]
async fn the_daemon_rides_out_failing_victoriametrics_and_keeps_the_mirror_exact() {
    let servers = Servers::start().await;
    let proxy = Proxy::start(servers.vm.url.trim_start_matches("http://"));
    let pool = &servers.pool;
    let none = BTreeMap::new();
    let env = [
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", proxy.url.clone()),
        ("VICTORIAMETRICS_SELECT_URL", servers.vm.url.clone()),
        ("VICTORIAMETRICS_POLL_INTERVAL", "300ms".to_string()),
        ("VICTORIAMETRICS_TIMEOUT", "1s".to_string()),
        ("VICTORIAMETRICS_BATCH_SIZE", "50".to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");

    // Down from the start: 503 for every request. The daemon retries with
    // backoff (no hot loop), stays up, and catches up when it comes back.
    proxy.set(Fault::Status(503));
    let mut daemon = spawn_exporter(&["run"], &env, &log);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
    let tries = proxy.faults_served();
    assert!(
        (2..=12).contains(&tries),
        "{tries} requests in 4 s while failing: no backoff?"
    );
    proxy.set(Fault::Pass);
    servers.converge(&none, WITHIN, &log, "after 503s").await;

    // Each fault in turn, during an export of a change.
    let faults = [
        Fault::Status(429),
        Fault::Status(502),
        Fault::CutMidBody,
        Fault::Delay(Duration::from_millis(1500)),
        Fault::Refuse,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let before = proxy.faults_served();
        proxy.set_for(fault.clone(), 3);
        change(pool, i as i32 + 1).await;
        servers
            .converge(&none, WITHIN, &log, &format!("after {fault:?}"))
            .await;
        assert!(proxy.faults_served() > before, "{fault:?} was never met");
    }
    assert!(
        count(&log, "retrying") >= 5,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // A batch refused for good (400) is logged with VictoriaMetrics' answer,
    // its series are skipped (not retried) until their rows change, and the
    // rest of the pass goes on. At the turn of an hour an EcoWatt hourly
    // sample enters VictoriaMetrics' window and is posted by itself: the
    // 400 must meet the changed rows, not that sample.
    let secs_into_hour = chrono::Utc::now().timestamp() % 3600;
    if secs_into_hour > 3600 - 15 {
        tokio::time::sleep(Duration::from_secs((3600 - secs_into_hour + 5) as u64)).await;
    }
    proxy.set_for(Fault::ImportStatus(400), 1);
    let before = proxy.faults_served();
    change(pool, 9).await;
    let deadline = Instant::now() + WITHIN;
    while count(&log, "rejected a batch") == 0 {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.faults_served(), before + 1);
    assert!(
        count(&log, "HTTP 400: injected 400") >= 1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&log, "rejected a batch"),
        1,
        "the rejected lines were retried"
    );
    change(pool, 9).await;
    servers
        .converge(&none, WITHIN, &log, "after a 400, once the rows changed")
        .await;

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    assert!(daemon.wait().unwrap().success());
}

#[tokio::test]
async fn sigterm_stops_the_daemon_within_10_seconds_while_victoriametrics_hangs() {
    let servers = Servers::start().await;
    let proxy = Proxy::start(servers.vm.url.trim_start_matches("http://"));
    proxy.set(Fault::Hang);
    let env = [
        ("DATABASE_URL", servers.pg.url("med")),
        ("VICTORIAMETRICS_URL", proxy.url.clone()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    for sig in ["-TERM", "-INT"] {
        let mut daemon = spawn_exporter(&["run"], &env, &log);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            proxy.faults_served() > 0,
            "the daemon never reached VictoriaMetrics"
        );
        let started = Instant::now();
        signal(&daemon, sig);
        let status = daemon.wait().unwrap();
        assert!(status.success(), "{sig}: {status}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sig} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn postgresql_stopped_and_restarted_is_ridden_out() {
    let mut servers = Servers::start().await;
    let env = servers.env(&[("VICTORIAMETRICS_POLL_INTERVAL", "300ms")]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = spawn_exporter(&["run"], &env, &log);
    let none = BTreeMap::new();
    servers
        .converge(&none, WITHIN, &log, "before the restart")
        .await;

    servers.pool.close().await;
    servers.pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon exited while PostgreSQL was down"
    );
    servers.pg.restart();
    servers.pool = servers.pg.pool("med").await;
    change(&servers.pool, 3).await;
    servers
        .converge(&none, WITHIN, &log, "after PostgreSQL came back")
        .await;
    signal(&daemon, "-TERM");
    assert!(daemon.wait().unwrap().success());
}

#[tokio::test]
async fn malformed_rows_are_skipped_with_a_warning_naming_them_and_the_rest_is_exported() {
    let pg = Postgres::start();
    let vm = Victoria::start();
    let pool = pg.create_db("med").await;
    let env = [
        ("DATABASE_URL", pg.url("med")),
        ("VICTORIAMETRICS_URL", vm.url.clone()),
    ];
    // The exporter's own schema: tempo_days.color is VARCHAR, so anything goes.
    common::run_ok(&["migrate"], &env);
    sqlx::raw_sql(DATA).execute(&pool).await.unwrap();
    sqlx::raw_sql(
        r#"INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value) VALUES
             ('bad-time', '12345678901234', '2024-06-01', 'detailed', '25:61', 10),
             ('bad-text', '12345678901234', '2024-06-01', 'detailed', 'abc', 10),
             ('bad-pdl', 'PDL-ABC', '2024-06-01', 'daily', NULL, 10),
             ('bad-negative', '98765432109876', '2024-06-02', 'detailed', '10:00', -5),
             ('bad-huge', '98765432109876', '2024-06-02', 'detailed', '10:30', 2000000000),
             ('bad-infinity', '98765432109876', 'infinity', 'daily', NULL, 10);
           INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data) VALUES
             ('bad-length', '98765432109876', '2024-06-03', 'detailed', '10:00', 10, '{"p": "thirty minutes"}');
           INSERT INTO tempo_days (id, date, color) VALUES ('-262143-01-01', '2000-01-01', 'RED');
           INSERT INTO ecowatt (generation_datetime, periode, hdebut, hfin, dvalue, "values")
           VALUES (now(), 'infinity', 0, 23, 1, '[1]');
           INSERT INTO tempo_days (id, date, color) VALUES ('2024-11-11', '2024-11-10 23:00+00', 'PURPLE');
           UPDATE ecowatt SET "values" = '{"pas": 0, "hvalue": 1}' WHERE periode = '2024-03-30 00:00';"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = chrono::Utc::now().timestamp_millis();
    let out = common::exporter(&["once"], &env);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    for row in [
        "bad-time",
        "bad-text",
        "bad-pdl",
        "bad-negative",
        "bad-huge",
        "bad-length",
        "2024-11-11",
    ] {
        assert_eq!(
            log.matches(&format!("row={row} ")).count(),
            1,
            "one warning naming {row}: {log}"
        );
    }
    // The seven bad consumption rows, the daily row another one written
    // later replaces, the two bad Tempo days and the two bad EcoWatt rows.
    assert!(log.contains("skipped=12"), "{log}");

    // What landed is what the model computes from the good rows.
    sqlx::raw_sql(
        r#"DELETE FROM consumption_data WHERE id LIKE 'bad-%';
           DELETE FROM tempo_days WHERE color = 'PURPLE' OR id LIKE '-%';
           DELETE FROM ecowatt WHERE periode = 'infinity';
           UPDATE ecowatt SET "values" = '[]' WHERE periode = '2024-03-30 00:00';"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_exported(
        &pool,
        &BTreeMap::new(),
        before,
        &from_export(vm.export_all().await),
        "with malformed rows",
    )
    .await;
}

#[tokio::test]
async fn label_values_of_any_content_round_trip_through_victoriametrics() {
    let servers = Servers::start().await;
    // Quality strings come from raw_data, the extra label from the
    // environment: both reach label values as they are.
    let pieces = [
        "\\", "\"", "\n", "\r", "\t", "{", "}", ",", "=", " ", "#", "é", "😀", "\\n", "\\\"", "a",
    ];
    let mut seed: u64 = 0x5eed;
    let mut tricky = Vec::new();
    for _ in 0..40 {
        let mut s = String::new();
        for _ in 0..1 + seed % 7 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
        }
        tricky.push(s);
    }
    for (k, quality) in tricky.iter().enumerate() {
        sqlx::query(
            "INSERT INTO consumption_data (id, usage_point_id, date, granularity, value, raw_data)
             VALUES ($1, '11111111111111', DATE '2024-01-01' + $2::int, 'daily', 100, jsonb_build_object('quality', $3::text))",
        )
        .bind(format!("tricky-{k}"))
        .bind(k as i32)
        .bind(quality)
        .execute(&servers.pool)
        .await
        .unwrap();
    }
    let note = "line\nbreak \"quoted\" back\\slash\r\t}{=,é😀\\";
    let labels_json = serde_json::json!({ "note": note }).to_string();
    let env = servers.env(&[("VICTORIAMETRICS_LABELS", &labels_json)]);
    let before = chrono::Utc::now().timestamp_millis();
    common::run_ok(&["once"], &env);
    let labels = BTreeMap::from([("note".to_string(), note.to_string())]);
    assert_exported(
        &servers.pool,
        &labels,
        before,
        &from_export(servers.vm.export_all().await),
        "tricky label values",
    )
    .await;
}
