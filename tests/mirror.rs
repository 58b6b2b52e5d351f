//! The exact mirror, end to end: the real binary between a throwaway
//! PostgreSQL loaded with MyElectricalData's schema and data, and a
//! throwaway VictoriaMetrics read back through `/api/v1/export`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::model::{assert_exported, expected, from_export, released};
use common::{signal, spawn_exporter, Servers};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A day of the client's syncs, and Enedis's corrections: re-upserts of the
/// last week and of the whole Tempo and EcoWatt history with a new
/// `updated_at` (values unchanged), yesterday's placeholder replaced by the
/// reading (deleted and inserted again under a new id, as the client does),
/// a load-curve reading corrected, BRUT→CORRIGE, a max power day added, a
/// Tempo colour changed after the fact, off-peak hours changed in the
/// contract (contract_data where it exists, pdls where the client has no
/// contract record),
/// deleted rows, new days, and a row committed late with an old `updated_at`.
const CHANGES: &str = r#"
UPDATE consumption_data SET updated_at = now() WHERE date >= '2024-11-04';
UPDATE tempo_days SET updated_at = now();
UPDATE ecowatt SET updated_at = now(), generation_datetime = now();
DELETE FROM consumption_data WHERE raw_data::jsonb @> '{"is_placeholder": true}';
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
VALUES ('5b0e2f7a-real-2024-11-10', '12345678901234', '2024-11-10', 'daily', NULL, 11111,
        '{"v": "11111", "d": "2024-11-10"}');
UPDATE consumption_data SET value = value + 3, raw_data = jsonb_set(raw_data::jsonb, '{v}', to_jsonb((value + 3)::text)), updated_at = now()
 WHERE usage_point_id = '12345678901234' AND granularity = 'detailed' AND date = '2024-11-05' AND interval_start = '12:00';
UPDATE consumption_data SET value = value + 111, updated_at = now()
 WHERE usage_point_id = '12345678901234' AND granularity = 'daily' AND date = '2024-02-10';
UPDATE consumption_data SET value = value - 50, updated_at = now()
 WHERE usage_point_id = '98765432109876' AND granularity = 'detailed' AND date = '2024-10-27' AND interval_start = '02:30';
UPDATE consumption_data SET raw_data = '{"quality": "CORRIGE"}', updated_at = now()
 WHERE usage_point_id = '12345678901234' AND granularity = 'daily' AND date BETWEEN '2024-05-02' AND '2024-05-04';
UPDATE consumption_data SET raw_data = '{"v": "1", "d": "2024-05-30", "quality": "BRUT"}', updated_at = now()
 WHERE usage_point_id = '12345678901234' AND granularity = 'daily' AND date = '2024-05-30';
DELETE FROM consumption_data WHERE usage_point_id = '98765432109876' AND granularity = 'detailed' AND date = '2024-11-05';
DELETE FROM production_data WHERE granularity = 'detailed';
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at)
SELECT md5(p || d::text || 'new'), p, d, 'daily', NULL, 9999, '{"v": "9999"}', now()
  FROM unnest(ARRAY['12345678901234', '98765432109876']) AS p, generate_series('2024-11-11'::date, '2024-11-13', '1 day') AS d;
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at)
VALUES ('late-row', '98765432109876', '2023-08-01', 'daily', NULL, 4242, NULL, '2020-01-01');
INSERT INTO tempo_days (id, date, color) VALUES ('2024-11-11', '2024-11-11 00:00+00', 'RED');
UPDATE tempo_days SET color = 'WHITE', updated_at = now() WHERE id = '2024-09-02';
UPDATE tempo_days SET color = 'RED', updated_at = now() WHERE id = '2024-11-03';
UPDATE pdls SET offpeak_hours = '{"default": "HC (0H30-8H00)"}', updated_at = now() WHERE usage_point_id = '98765432109876';
UPDATE ecowatt SET dvalue = 3 WHERE periode = '2024-03-30 00:00';
DO $$
BEGIN
  IF to_regclass('max_power_data') IS NOT NULL THEN
    EXECUTE $q$INSERT INTO max_power_data (id, usage_point_id, date, interval_start, value, raw_data)
               VALUES ('max-new', '12345678901234', '2024-11-10', '19:07', 7130, '{"v": "7130", "d": "2024-11-10 19:07:12"}')$q$;
    EXECUTE $q$UPDATE max_power_data SET value = value + 10, updated_at = now() WHERE id = 'max-dst'$q$;
  END IF;
  IF to_regclass('zen_flex_days') IS NOT NULL THEN
    EXECUTE $q$UPDATE zen_flex_days SET updated_at = now() WHERE date >= '2024-11-06'$q$;
    EXECUTE $q$UPDATE zen_flex_days SET day_type = 'SOBRIETE', updated_at = now() WHERE id = '2024-11-12'$q$;
  END IF;
  IF to_regclass('contract_data') IS NOT NULL THEN
    EXECUTE $q$UPDATE contract_data SET offpeak_hours = '{"ranges": ["23:00-07:00"]}', updated_at = now()
                WHERE usage_point_id = '12345678901234'$q$;
  END IF;
END
$$;
"#;

#[tokio::test]
async fn the_mirror_is_exact_on_a_current_client_database() {
    mirror_scenario(common::SCHEMA).await;
}

#[tokio::test]
async fn the_mirror_is_exact_on_an_older_orm_made_client_database() {
    mirror_scenario(common::SCHEMA_ORM).await;
}

/// A first export, an idle one, a day of the client's syncs, re-upserts:
/// after each, `/api/v1/export` equals the spec's model.
async fn mirror_scenario(schema: &str) {
    let servers = Servers::start_with_schema(schema).await;
    let (vm, pool) = (&servers.vm, &servers.pool);
    let e = servers.env(&[]);
    let none = BTreeMap::new();

    // First export: everything.
    let before = now_ms();
    common::run_ok(&["once"], &e);
    let want = expected(pool, &none, before).await;
    assert!(want.len() >= 20, "the model holds {} series", want.len());
    assert_exported(
        pool,
        &none,
        before,
        &from_export(vm.export_all().await),
        "after the first export",
    )
    .await;

    // A second export with nothing changed writes nothing (but the EcoWatt
    // hours that time brought inside the future window meanwhile).
    let inserted = vm.rows_inserted().await;
    common::run_ok(&["once"], &e);
    let written = vm.rows_inserted().await - inserted;
    let allowed = released(pool, &none, before, now_ms()).await;
    assert!(
        written <= allowed,
        "an export with nothing changed wrote {written} rows ({allowed} released)"
    );

    // MyElectricalData's changes, then the mirror again.
    sqlx::raw_sql(CHANGES).execute(pool).await.unwrap();
    let before = now_ms();
    common::run_ok(&["once"], &e);
    assert_exported(
        pool,
        &none,
        before,
        &from_export(vm.export_all().await),
        "after the changes",
    )
    .await;

    // A re-upsert of unchanged rows writes nothing; nor does a third run.
    sqlx::query("UPDATE consumption_data SET updated_at = now()")
        .execute(pool)
        .await
        .unwrap();
    let inserted = vm.rows_inserted().await;
    common::run_ok(&["once"], &e);
    let last = now_ms();
    common::run_ok(&["once"], &e);
    let written = vm.rows_inserted().await - inserted;
    let allowed = released(pool, &none, before, now_ms()).await;
    assert!(
        written <= allowed,
        "unchanged rows were written again: {written} rows ({allowed} released)"
    );
    assert_exported(
        pool,
        &none,
        last,
        &from_export(vm.export_all().await),
        "after the idle runs",
    )
    .await;
}

#[tokio::test]
async fn the_daemon_follows_changes_by_polling_and_stops_on_sigterm() {
    let servers = Servers::start().await;
    let (vm, pool) = (&servers.vm, &servers.pool);
    let labels = BTreeMap::from([("home".to_string(), "la \"maison\"\nparis\\2".to_string())]);
    let e = servers.env(&[
        ("VICTORIAMETRICS_POLL_INTERVAL", "300ms"),
        (
            "VICTORIAMETRICS_LABELS",
            r#"{"home": "la \"maison\"\nparis\\2"}"#,
        ),
        ("VICTORIAMETRICS_BATCH_SIZE", "37"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = spawn_exporter(&["run"], &e, &log);

    let within = Duration::from_secs(60);
    servers
        .converge(&labels, within, &log, "after the daemon's start")
        .await;
    sqlx::raw_sql(CHANGES).execute(pool).await.unwrap();
    servers
        .converge(&labels, within, &log, "after the changes, found by polling")
        .await;

    // Idle polls write nothing and read no table: PostgreSQL's own counters
    // of scans on the four tables stay still over a dozen polls.
    let scans = "SELECT sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint FROM pg_stat_user_tables
                  WHERE relname IN ('consumption_data', 'production_data', 'tempo_days', 'ecowatt', 'contract_data', 'pdls')";
    // Let the statistics of the last writes reach PostgreSQL's counters
    // (a backend publishes them within 10 s) and the daemon follow them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await;
    let scans_before: i64 = sqlx::query_scalar(scans).fetch_one(pool).await.unwrap();
    let inserted = vm.rows_inserted().await;
    let idle_from = now_ms();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await;
    let scans_after: i64 = sqlx::query_scalar(scans).fetch_one(pool).await.unwrap();
    assert_eq!(
        scans_after, scans_before,
        "idle polls scanned the source tables"
    );
    let written = vm.rows_inserted().await - inserted;
    let allowed = released(pool, &labels, idle_from - 60_000, now_ms()).await;
    assert!(
        written <= allowed,
        "idle polls wrote {written} rows ({allowed} released)"
    );

    // A TRUNCATE moves no row counter but the table's file node: it is seen too.
    sqlx::query("TRUNCATE production_data")
        .execute(pool)
        .await
        .unwrap();
    servers
        .converge(&labels, within, &log, "after TRUNCATE production_data")
        .await;

    // The tariff periods follow a contract's off-peak hours and a Tempo
    // colour changed on their own, with no new reading to wake the
    // consumption family.
    sqlx::query(
        r#"UPDATE contract_data SET offpeak_hours = '{"default": "HC (1H00-7H00)"}', updated_at = now()
            WHERE usage_point_id = '98765432109876'"#,
    )
    .execute(pool)
    .await
    .unwrap();
    servers
        .converge(
            &labels,
            within,
            &log,
            "after a contract's off-peak hours changed",
        )
        .await;
    sqlx::query(
        "UPDATE tempo_days SET color = 'WHITE', updated_at = now() WHERE id = '2024-11-04'",
    )
    .execute(pool)
    .await
    .unwrap();
    servers
        .converge(&labels, within, &log, "after a Tempo colour changed")
        .await;

    let started = Instant::now();
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "the daemon exited with {status}: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
}
