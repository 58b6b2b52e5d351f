//! A full reconciliation reads again only what changed (issue: installer
//! scale): PostgreSQL tells which PDLs' rows changed since a pass read them,
//! and the others are not read, only checked against what VictoriaMetrics
//! holds. Counted from what PostgreSQL returned (the pass's `rows`), and
//! the mirror compared with the model after each step.

mod common;

use std::collections::BTreeMap;

use common::model::{assert_exported, from_export};
use common::Servers;

/// Six more PDLs of two years of 30-minute rows as the client writes them
/// (W; raw_data in the 2026 shape naming the interval length; the later
/// interval of a repeated label kept): about 210,000 rows.
const LOAD: &str = "
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at)
SELECT md5(p::text || label::text), lpad((12345678900000 + p)::text, 14, '0'), label::date, 'detailed',
       to_char(label, 'HH24:MI'), w,
       jsonb_build_object('v', w::text, 'd', to_char(label, 'YYYY-MM-DD HH24:MI:SS'), 'p', 'PT30M', 'n', 'B', 'iv', '0', 'ec', '0'),
       label + interval '1 day'
  FROM (SELECT DISTINCT ON (p, label) p, label, w
          FROM generate_series(1, 6) AS p,
               generate_series(timestamp '2023-01-01', timestamp '2024-12-31', interval '1 day') AS d,
               LATERAL generate_series(d AT TIME ZONE 'Europe/Paris',
                                       ((d + interval '1 day') AT TIME ZONE 'Europe/Paris') - interval '30 minutes',
                                       interval '30 minutes') AS s,
               LATERAL (SELECT ((s + interval '30 minutes') AT TIME ZONE 'Europe/Paris') - interval '30 minutes' AS label) AS l,
               LATERAL (SELECT 100 + (p * 7 + extract(doy FROM label)::int * 13 + extract(hour FROM label)::int * 3
                                      + extract(minute FROM label)::int) % 900 AS w) AS v
         ORDER BY p, label, s DESC) AS kept;
";

/// The rows the reconciliation of `family` read, from its pass's log line.
fn rows_read(log: &str, family: &str) -> u64 {
    common::pass_count(log, family, "rows")
}

async fn count(pool: &sqlx::PgPool, filter: &str) -> u64 {
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM consumption_data {filter}"))
        .fetch_one(pool)
        .await
        .unwrap();
    n as u64
}

async fn assert_mirror(servers: &Servers, since: i64, when: &str) {
    let none = BTreeMap::new();
    let got = from_export(servers.vm.export_all().await);
    assert_exported(&servers.pool, &none, since, &got, when).await;
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn a_reconciliation_reads_only_the_pdls_whose_rows_changed() {
    let servers = Servers::start().await;
    let pool = &servers.pool;
    sqlx::raw_sql(LOAD).execute(pool).await.unwrap();
    let total = count(pool, "").await;
    assert!(total > 200_000, "{total} rows");
    let e = servers.env(&[("RUST_LOG", "myelectricaldata_vm_exporter=debug")]);

    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    assert_eq!(
        rows_read(&log, "consumption"),
        total,
        "the first pass reads every row"
    );
    assert_mirror(&servers, since, "after the first export").await;

    // Nothing changed: no row of any month is read again.
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), 0, "{log}");
    assert_eq!(rows_read(&log, "production"), 0, "{log}");
    // Nor the Tempo calendar, whose inputs did not change either.
    assert_eq!(rows_read(&log, "tempo"), 0, "{log}");

    // A correction in an old month of one PDL (an Enedis re-fetch of the
    // day, the value changed): that PDL's rows are read, no other's.
    sqlx::raw_sql(
        "UPDATE consumption_data SET value = value + 40, updated_at = now()
          WHERE usage_point_id = '12345678900003' AND date = '2023-03-14' AND interval_start = '08:00'",
    )
    .execute(pool)
    .await
    .unwrap();
    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    let one = count(pool, "WHERE usage_point_id = '12345678900003'").await;
    assert_eq!(rows_read(&log, "consumption"), one, "{log}");
    assert_mirror(&servers, since, "after a correction in an old month").await;

    // A row deleted in an old month, another's: found.
    sqlx::raw_sql(
        "DELETE FROM consumption_data
          WHERE usage_point_id = '12345678900005' AND date = '2023-06-02' AND interval_start = '13:30'",
    )
    .execute(pool)
    .await
    .unwrap();
    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    let five = count(pool, "WHERE usage_point_id = '12345678900005'").await;
    assert_eq!(rows_read(&log, "consumption"), five, "{log}");
    assert_mirror(&servers, since, "after a row deleted in an old month").await;

    // VictoriaMetrics lost a series of a PDL whose rows did not change
    // (deleted by hand): the read-back finds it, and that PDL is read to
    // repair it.
    servers
        .vm
        .delete_series(r#"{__name__="myelectricaldata_consumption_power_w",pdl="12345678900002"}"#)
        .await;
    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    let two = count(pool, "WHERE usage_point_id = '12345678900002'").await;
    assert_eq!(rows_read(&log, "consumption"), two, "{log}");
    assert_mirror(&servers, since, "after a series lost in VictoriaMetrics").await;

    // The state of one Tempo series deleted by hand: the Tempo family is
    // read again and the series rewritten, not deleted as unknown.
    sqlx::raw_sql(
        "DELETE FROM vm_export_series
          WHERE selector LIKE '%myelectricaldata_tempo_color%' AND selector LIKE '%12345678900003%'",
    )
    .execute(pool)
    .await
    .unwrap();
    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    assert!(rows_read(&log, "tempo") > 0, "{log}");
    assert_mirror(&servers, since, "after Tempo series lost from the state").await;

    // The state cleared by hand: every PDL is read again.
    sqlx::raw_sql("TRUNCATE vm_export_series CASCADE")
        .execute(pool)
        .await
        .unwrap();
    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    assert_eq!(
        rows_read(&log, "consumption"),
        count(pool, "").await,
        "{log}"
    );
    assert_mirror(&servers, since, "after the state was cleared").await;
}

#[tokio::test]
async fn a_change_committed_late_in_an_old_month_is_found() {
    let servers = Servers::start().await;
    let pool = &servers.pool;
    sqlx::raw_sql(LOAD).execute(pool).await.unwrap();
    // Read back in shards (by the PDLs' last digit), as a thousand meters'
    // series are: a shard that missed a series would repair it, and read
    // its PDL again.
    let e = servers.env(&[
        ("RUST_LOG", "myelectricaldata_vm_exporter=debug"),
        ("MYELECTRICALDATA_EXPORTER_TEST_SERIES_PER_QUERY", "20"),
    ]);
    common::run_ok(&["once"], &e);

    // A writer stamps an old `updated_at` on a corrected reading of 2023
    // and commits only after the next pass has begun and ended.
    let mut late = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE consumption_data SET value = 1234, updated_at = '2023-02-02 10:00+00'
          WHERE usage_point_id = '12345678900004' AND date = '2023-02-01' AND interval_start = '19:00'",
    )
    .execute(&mut *late)
    .await
    .unwrap();
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), 0, "{log}");
    assert!(log.contains("verified=165"), "{log}");
    late.commit().await.unwrap();

    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    let four = count(pool, "WHERE usage_point_id = '12345678900004'").await;
    assert_eq!(rows_read(&log, "consumption"), four, "{log}");
    assert_mirror(&servers, since, "after the late commit").await;
}

/// The exporter's `application_name`: sessions under it are the exporter's
/// own, which the change token's gate does not wait for.
const EXPORTER: &str = "myelectricaldata-vm-exporter";

/// A connection to `med` under the exporter's name, which the gate ignores.
async fn as_exporter(servers: &Servers) -> sqlx::PgConnection {
    let options: sqlx::postgres::PgConnectOptions = servers.pg.sqlx_url("med").parse().unwrap();
    sqlx::ConnectOptions::connect(&options.application_name(EXPORTER))
        .await
        .unwrap()
}

/// Ends every session of `med` but the exporter's (the test's own, idle:
/// a closed pool's connection was seen to linger under load) and waits
/// until they are gone, so that every change is counted and the table's
/// change token can be trusted (PostgreSQL counts a session's changes at
/// the latest when it ends).
async fn quiet(servers: &Servers) {
    let mut conn = as_exporter(servers).await;
    let others = "FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND backend_type = 'client backend' AND application_name IS DISTINCT FROM $1";
    for _ in 0..200 {
        let open: Vec<(Option<String>, Option<String>)> = sqlx::query_as(&format!(
            "SELECT state, CASE WHEN state = 'idle' THEN pg_terminate_backend(pid)::text END {others}"
        ))
        .bind(EXPORTER)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if open.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("sessions of med still open");
}

/// When the consumption digests were last computed: the transaction that
/// inserted them into `vm_export_read_next`, and the change token recorded.
async fn staged(servers: &Servers) -> (String, Option<String>) {
    let mut conn = as_exporter(servers).await;
    let xmin: String = sqlx::query_scalar(
        "SELECT string_agg(DISTINCT xmin::text, ',') FROM vm_export_read_next WHERE family = 'consumption'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let token = sqlx::query_scalar(
        "SELECT value FROM vm_export_meta WHERE key = 'reads_token.consumption'",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    (xmin, token)
}

#[tokio::test]
async fn an_unchanged_table_is_not_digested_again_while_its_change_token_holds() {
    let servers = Servers::start().await;
    sqlx::raw_sql(LOAD).execute(&servers.pool).await.unwrap();
    let total = count(&servers.pool, "").await;
    let four = count(&servers.pool, "WHERE usage_point_id = '12345678900004'").await;
    // No session but the exporter's: the token can be trusted.
    servers.pool.close().await;
    quiet(&servers).await;
    let e = servers.env(&[("RUST_LOG", "myelectricaldata_vm_exporter=debug")]);
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), total, "{log}");
    let first = staged(&servers).await;
    assert!(first.1.is_some(), "no change token recorded: {first:?}");

    // Nothing changed and nobody else connected: the digests stand as
    // computed, nothing is read.
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), 0, "{log}");
    assert_eq!(staged(&servers).await, first, "digested again: {log}");

    // Another session corrects a reading and ends: the token moved, the
    // table is digested again and that PDL read.
    let writer = servers.pg.pool("med").await;
    sqlx::raw_sql(
        "UPDATE consumption_data SET value = value + 9, updated_at = now()
          WHERE usage_point_id = '12345678900004' AND date = '2023-09-09' AND interval_start = '21:00'",
    )
    .execute(&writer)
    .await
    .unwrap();
    writer.close().await;
    quiet(&servers).await;
    let since = now_ms();
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), four, "{log}");
    let second = staged(&servers).await;
    assert_ne!(
        second.0, first.0,
        "not digested again though the token moved: {log}"
    );
    let checker = servers.pg.pool("med").await;
    let none = BTreeMap::new();
    let got = from_export(servers.vm.export_all().await);
    assert_exported(&checker, &none, since, &got, "after the correction").await;

    // A session that changed nothing but is open (its changes, if it had
    // made any, might not be counted yet): the token is not trusted and
    // the table is digested again, though nothing is read.
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), 0, "{log}");
    let third = staged(&servers).await;
    assert_ne!(
        third.0, second.0,
        "the token was trusted with a session open: {log}"
    );

    // That session corrects a reading and stays open, idle past the
    // interval at which PostgreSQL counts an idle session's changes (the
    // gate waits 65 s): its change is counted, the token trusted again, and
    // the PDL read; a pass after it, the session still open and idle, does
    // not digest the table again.
    sqlx::raw_sql(
        "UPDATE consumption_data SET value = value + 5, updated_at = now()
          WHERE usage_point_id = '12345678900004' AND date = '2023-10-10' AND interval_start = '07:00'",
    )
    .execute(&checker)
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(67)).await;
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), four, "{log}");
    let fourth = staged(&servers).await;
    assert_ne!(fourth.0, third.0, "the correction was not seen: {log}");
    let log = common::run_ok(&["once"], &e);
    assert_eq!(rows_read(&log, "consumption"), 0, "{log}");
    assert_eq!(
        staged(&servers).await,
        fourth,
        "the token was not trusted with a session idle past the interval: {log}"
    );
    checker.close().await;
}
