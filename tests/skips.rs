//! A bad row costs a row (issue: the hourly reconciliation stays cheap when
//! some rows are skipped): a PDL whose rows skip some is recorded with what
//! was skipped, not read again while its rows do not change, and reported
//! from that record at every pass (the pass line, `/metrics`, `check`); a
//! sample held back as too far ahead makes its PDL due when it comes within
//! reach, not at every pass. Counted from what PostgreSQL returned (the
//! pass line's `rows`), the mirror compared with the model after each step.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::TimeZone;
use common::model::{assert_exported, from_export};
use common::{exporter, pass_count, run_ok, served_addr, spawn_exporter, Servers, SCHEMA_ORM};

/// Three PDLs of March and April 2024 (the clocks went forward on 31 March)
/// of 30-minute rows as the client writes them: W, raw_data in the 2026
/// shape, each real interval labelled by its local end less 30 minutes,
/// the later interval of a label kept (46 rows on 31 March).
const LOAD: &str = "
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at)
SELECT md5(p::text || label::text), lpad((12345678900900 + p)::text, 14, '0'), label::date, 'detailed',
       to_char(label, 'HH24:MI'), w,
       json_build_object('v', w::text, 'd', to_char(label, 'YYYY-MM-DD HH24:MI:SS'), 'p', 'PT30M', 'n', 'B'),
       label + interval '1 day'
  FROM (SELECT DISTINCT ON (p, label) p, label, w
          FROM generate_series(1, 3) AS p,
               generate_series(timestamp '2024-03-01', timestamp '2024-04-30', interval '1 day') AS d,
               LATERAL generate_series(d AT TIME ZONE 'Europe/Paris',
                                       ((d + interval '1 day') AT TIME ZONE 'Europe/Paris') - interval '30 minutes',
                                       interval '30 minutes') AS s,
               LATERAL (SELECT ((s + interval '30 minutes') AT TIME ZONE 'Europe/Paris') - interval '30 minutes' AS label) AS l,
               LATERAL (SELECT 100 + (p * 7 + extract(doy FROM label)::int * 13 + extract(hour FROM label)::int * 3
                                      + extract(minute FROM label)::int) % 900 AS w) AS v
         ORDER BY p, label, s DESC) AS kept;
";

/// Rows the exporter skips, as older client releases and odd databases
/// hold them (the tables of the ORM's schema: a plain unique constraint,
/// raw_data JSON):
/// - 901: a load-curve label of 01:30 on the day the clocks go forward,
///   which the client never writes: its interval lands on the instant of
///   the row labelled 00:30, and the earlier label is skipped;
/// - 901: a second daily row for 10 March, updated earlier: skipped;
/// - 902: a label that is no time of day: skipped.
const BAD: &str = "
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data, updated_at) VALUES
  ('dst-0130', '12345678900901', '2024-03-31', 'detailed', '01:30', 321, '{\"v\": \"321\", \"p\": \"PT30M\"}', '2024-04-01'),
  ('daily-b', '12345678900901', '2024-03-10', 'daily', NULL, 11000, '{\"v\": \"11000\"}', '2024-03-11 08:00+00'),
  ('daily-a', '12345678900901', '2024-03-10', 'daily', NULL, 12500, '{\"v\": \"12500\"}', '2024-03-12 08:00+00'),
  ('bad-label', '12345678900902', '2024-04-02', 'detailed', 'ab:cd', 500, '{\"v\": \"500\", \"p\": \"PT30M\"}', '2024-04-03');
";

async fn count(pool: &sqlx::PgPool, filter: &str) -> u64 {
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM consumption_data {filter}"))
        .fetch_one(pool)
        .await
        .unwrap();
    n as u64
}

async fn assert_mirror(servers: &Servers, since: i64, when: &str) {
    let got = from_export(servers.vm.export_all().await);
    assert_exported(&servers.pool, &BTreeMap::new(), since, &got, when).await;
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rows(log: &str) -> u64 {
    pass_count(log, "consumption", "rows")
}

fn skipped(log: &str) -> u64 {
    pass_count(log, "consumption", "skipped")
}

/// The value of the line `name` (exactly, labels included) in `/metrics`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_pdl_with_skipped_rows_is_not_read_again_until_its_rows_change_and_is_reported_every_pass(
) {
    let servers = Servers::start_with_schema(SCHEMA_ORM).await;
    let pool = &servers.pool;
    sqlx::raw_sql(LOAD).execute(pool).await.unwrap();
    let e = servers.env(&[("RUST_LOG", "myelectricaldata_vm_exporter=debug")]);
    // The fixture's own rows skip one: a second daily row of one day, as
    // the ORM's plain constraint lets the client write.
    let log = run_ok(&["once"], &e);
    let base = skipped(&log);
    assert_eq!(base, 1, "{log}");
    sqlx::raw_sql(BAD).execute(pool).await.unwrap();

    let since = now_ms();
    let log = run_ok(&["once"], &e);
    let (one, two) = (
        count(pool, "WHERE usage_point_id = '12345678900901'").await,
        count(pool, "WHERE usage_point_id = '12345678900902'").await,
    );
    assert_eq!(
        rows(&log),
        one + two,
        "the two PDLs whose rows changed: {log}"
    );
    // 901: the 00:30 row of 31 March (the later label wins) and the
    // earlier daily row; 902: its bad label.
    assert_eq!(skipped(&log), base + 3, "{log}");
    assert_mirror(&servers, since, "after the bad rows came").await;

    // Nothing changed: no row read, every skipped row reported again, from
    // the record of the PDLs' last read.
    let log = run_ok(&["once"], &e);
    assert_eq!(rows(&log), 0, "{log}");
    assert_eq!(skipped(&log), base + 3, "{log}");
    assert!(
        log.contains("rows skipped, as when their PDLs were last read") && log.contains("pdls=3"),
        "{log}"
    );
    assert!(log.contains("bad-label"), "the first rows named: {log}");

    // `check` says so too, from the same record.
    let out = exporter(&["check"], &e);
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Rows skipped when each meter was last read"))
        .unwrap_or_else(|| panic!("no skipped rows in check: {report}"));
    assert!(
        line.starts_with("[WARN]")
            && line.contains("consumption: 4 rows in 3 PDLs")
            && line.contains("daily-b"),
        "{report}"
    );

    // The daemon's full reconciliation at start reads no row and counts
    // them in /metrics.
    let dir = tempfile::tempdir().unwrap();
    let daemon_log = dir.path().join("daemon.log");
    let daemon = spawn_exporter(&["run"], &e, &daemon_log);
    let port = served_addr(&daemon_log).await.port();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let log = std::fs::read_to_string(&daemon_log).unwrap();
        if log.contains("family=\"consumption\"") && log.contains("pass::outcome") {
            assert_eq!(rows(&log), 0, "{log}");
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no pass: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric(
            &text,
            r#"myelectricaldata_exporter_rows_skipped_total{table="consumption_data"}"#
        ),
        Some((base + 3) as f64),
        "{text}"
    );
    drop(daemon);

    // Enedis corrects a reading of 902: its rows are read, 901's are not,
    // and every skipped row is still reported.
    sqlx::raw_sql(
        "UPDATE consumption_data SET value = value + 11, updated_at = now()
          WHERE usage_point_id = '12345678900902' AND date = '2024-03-05' AND interval_start = '12:00'",
    )
    .execute(pool)
    .await
    .unwrap();
    let since = now_ms();
    let log = run_ok(&["once"], &e);
    assert_eq!(rows(&log), two, "{log}");
    assert_eq!(skipped(&log), base + 3, "{log}");
    assert_mirror(&servers, since, "after a correction of 902").await;

    // 901's bad rows deleted: read again, and only 902's is left to report.
    sqlx::raw_sql("DELETE FROM consumption_data WHERE id IN ('dst-0130', 'daily-b')")
        .execute(pool)
        .await
        .unwrap();
    let since = now_ms();
    let log = run_ok(&["once"], &e);
    assert_eq!(rows(&log), one - 2, "{log}");
    assert_eq!(skipped(&log), base + 1, "{log}");
    assert_mirror(&servers, since, "after 901's bad rows were deleted").await;
    let log = run_ok(&["once"], &e);
    assert_eq!((rows(&log), skipped(&log)), (0, base + 1), "{log}");
}

#[tokio::test]
async fn a_row_held_back_as_too_far_ahead_comes_in_when_its_day_comes_without_a_read_at_every_pass()
{
    let servers = Servers::start().await;
    let pool = &servers.pool;
    let e = servers.env(&[("RUST_LOG", "myelectricaldata_vm_exporter=debug")]);
    // A reading dated just beyond what VictoriaMetrics accepts (two days
    // ahead, less the exporter's hour of margin): a minute boundary 30 to
    // 90 s past it, labelled as the client labels the interval it starts.
    let window = 2 * 86_400_000 - 3_600_000;
    let ahead = (now_ms() + window + 30_000).div_euclid(60_000) * 60_000 + 60_000;
    let paris = chrono_tz::Europe::Paris;
    let local = paris.timestamp_millis_opt(ahead).unwrap().naive_local();
    let today = paris.timestamp_millis_opt(now_ms()).unwrap().date_naive();
    sqlx::query(
        "INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
         VALUES ('now', '12345678900904', $1, 'detailed', '08:00', 740, '{\"v\": \"740\", \"p\": \"PT30M\"}'),
                ('ahead', '12345678900904', $2, 'detailed', $3, 610, '{\"v\": \"610\", \"p\": \"PT30M\"}')",
    )
    .bind(today)
    .bind(local.date())
    .bind(local.format("%H:%M").to_string())
    .execute(pool)
    .await
    .unwrap();
    let power = |got: &common::model::Mirror| {
        got.iter()
            .filter(|(l, _)| {
                l.get("pdl").map(String::as_str) == Some("12345678900904")
                    && l["__name__"] == "myelectricaldata_consumption_power_w"
            })
            .flat_map(|(_, s)| s.iter().map(|(ts, _)| *ts))
            .collect::<Vec<_>>()
    };

    let log = run_ok(&["once"], &e);
    let got = from_export(servers.vm.export_all().await);
    assert!(!power(&got).contains(&ahead), "sent ahead of time: {log}");
    // Not yet within reach: the PDL is not read again.
    let log = run_ok(&["once"], &e);
    assert!(now_ms() + window < ahead, "the test machine took too long");
    assert_eq!(rows(&log), 0, "{log}");

    // Its time comes: the PDL is read and the sample lands.
    let wait = ahead - (now_ms() + window) + 1_000;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let since = now_ms();
    let log = run_ok(&["once"], &e);
    assert_eq!(rows(&log), 2, "{log}");
    let got = from_export(servers.vm.export_all().await);
    assert!(
        power(&got).contains(&ahead),
        "not sent once in reach: {log}"
    );
    assert_mirror(&servers, since, "once the held-back row came within reach").await;
    let log = run_ok(&["once"], &e);
    assert_eq!(rows(&log), 0, "{log}");
}
