//! Hostile rows: what the client's tables let in, at the edges of each
//! column's type, in both schema states (the current client's and the older
//! ORM's: JSON raw_data with duplicate keys, the Tempo enum, no optional
//! tables), among the client's real data. Each row the spec cannot export
//! is skipped with a warning naming it and counted at every pass; the rest
//! (odd but valid: a 7-minute or 90-minute interval, a megabyte of
//! raw_data, raw_data of the wrong shape where the spec has a default) is
//! exported exactly as the spec's model computes it; a daemon polling over
//! them never stops, rewrites nothing once they are written, and its memory
//! stays flat.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::model::{assert_exported, from_export};
use common::{signal, spawn_exporter, Servers, SCHEMA, SCHEMA_ORM};

/// Rows at the edges of what each column takes; the optional tables' and
/// the free-text Tempo colour's only where the schema has them.
const HOSTILE: &str = r#"
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data) VALUES
 ('h-quote', '1234567890123"', '2024-06-01', 'daily', NULL, 10, NULL),
 ('h-backslash', E'123456789012\\3', '2024-06-01', 'daily', NULL, 10, NULL),
 ('h-newline', E'1234567890123\n', '2024-06-01', 'daily', NULL, 10, NULL),
 ('h-empty', '', '2024-06-01', 'daily', NULL, 10, NULL),
 ('h-int-min', '12345678901234', '2024-06-02', 'detailed', '00:00', -2147483648, NULL),
 ('h-int-max', '12345678901234', '2024-06-02', 'detailed', '00:30', 2147483647, NULL),
 ('h-bc', '12345678901234', '4713-01-01 BC', 'daily', NULL, 10, NULL),
 ('h-far', '12345678901234', '5874897-12-31', 'daily', NULL, 10, NULL),
 ('h-p-number', '98765432109876', '2024-06-05', 'detailed', '02:00', 100, '{"p": 30}'),
 ('h-p-array', '98765432109876', '2024-06-05', 'detailed', '02:30', 100, '{"p": ["PT30M"]}'),
 ('h-pt1441m', '98765432109876', '2024-06-06', 'detailed', '01:00', 700, '{"p": "PT1441M"}'),
 ('h-pt0m', '98765432109876', '2024-06-06', 'detailed', '02:00', 700, '{"p": "PT0M"}'),
 ('h-p1d', '98765432109876', '2024-06-06', 'detailed', '03:00', 700, '{"p": "P1D"}'),
 ('h-time', '98765432109876', '2024-06-06', 'detailed', '24:00', 700, NULL),
 -- Odd but valid: exported as the spec says.
 ('ok-max-wh', '12345678901234', '2024-06-02', 'detailed', '01:00', 100000000, NULL),
 ('ok-array', '98765432109876', '2024-06-05', 'detailed', '00:00', 100, '[]'),
 ('ok-number', '98765432109876', '2024-06-05', 'detailed', '00:30', 100, '42'),
 ('ok-string', '98765432109876', '2024-06-05', 'detailed', '01:00', 100, '"PT10M"'),
 ('ok-null', '98765432109876', '2024-06-05', 'detailed', '01:30', 100, 'null'),
 ('ok-quality-object', '98765432109876', '2024-06-05', 'detailed', '03:00', 100, '{"quality": {"a": 1}}'),
 ('ok-pt7m', '98765432109876', '2024-06-06', 'detailed', '00:00', 700, '{"p": "PT7M"}'),
 ('ok-pt1h30m', '98765432109876', '2024-06-06', 'detailed', '04:00', 700, '{"p": "PT1H30M"}'),
 ('ok-duplicate-keys', '98765432109876', '2024-06-06', 'detailed', '06:00', 700, '{"p": "PT10M", "p": "PT20M"}');
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
SELECT 'ok-megabyte', '98765432109876', '2024-06-05', 'detailed', '04:00', 100,
       json_build_object('v', '100', 'p', 'PT30M', 'junk', repeat('x', 1048576));
INSERT INTO ecowatt (generation_datetime, periode, hdebut, hfin, pas, dvalue, message, "values") VALUES
  (now(), '2024-05-01', 0, 23, 60, 1, NULL, '{}'),
  (now(), '2024-05-02', 0, 23, 60, 1, NULL, '"x"'),
  (now(), '2024-05-03', 0, 23, 60, 9, NULL, '[5, -1, "a"]'),
  (now(), '2024-05-04', 0, 23, 60, -2147483648, NULL, '[1]');
INSERT INTO ecowatt (generation_datetime, periode, hdebut, hfin, pas, dvalue, message, "values")
SELECT now(), '2024-05-05', 0, 23, 60, 1, NULL, (SELECT jsonb_agg(1) FROM generate_series(1, 100000));
DO $$
BEGIN
  IF (SELECT data_type FROM information_schema.columns
       WHERE table_name = 'tempo_days' AND column_name = 'color') = 'character varying' THEN
    INSERT INTO tempo_days (id, date, color) VALUES
      ('2024-11-11', '2024-11-10 23:00+00', 'PURPLE'), ('2024-11-12', '2024-11-11 23:00+00', ''),
      ('2024-11-13', '2024-11-12 23:00+00', ' red ');
  END IF;
  IF to_regclass('zen_flex_days') IS NOT NULL THEN
    INSERT INTO zen_flex_days (id, date, day_type, raw_value) VALUES
      ('2024-11-13', '2024-11-13', 'WEIRD', NULL), ('2024-11-14', '2024-11-14', '', NULL);
  END IF;
  IF to_regclass('max_power_data') IS NOT NULL THEN
    INSERT INTO max_power_data (id, usage_point_id, date, interval_start, value, raw_data) VALUES
      ('h-max-power-negative', '12345678901234', '2024-09-01', '12:00', -1, NULL),
      ('h-max-power-huge', '12345678901234', '2024-09-02', '12:00', 2147483647, NULL),
      ('h-max-power-time', '12345678901234', '2024-09-03', '25:99', 3000, NULL);
  END IF;
END
$$;
"#;

/// The rows skipped, by the id the warnings name: in every schema state.
const SKIPPED: [&str; 14] = [
    "h-quote",
    "h-backslash",
    "h-newline",
    "h-empty",
    "h-int-min",
    "h-int-max",
    "h-bc",
    "h-far",
    "h-p-number",
    "h-p-array",
    "h-pt1441m",
    "h-pt0m",
    "h-p1d",
    "h-time",
];

/// The rows skipped only where the schema lets them in.
const SKIPPED_CURRENT: [&str; 7] = [
    "2024-11-11",
    "2024-11-12",
    "h-max-power-negative",
    "h-max-power-huge",
    "h-max-power-time",
    // Zen Flex's ids are their dates: 2024-11-13 is also the Tempo day
    // whose colour reads as RED, which is not skipped.
    "2024-11-14",
    "table=\"zen_flex_days\" row=2024-11-13",
];

/// The EcoWatt rows skipped (their ids are serial numbers).
const ECOWATT_SKIPPED: u64 = 5;

/// Passes the daemon makes over the rows before its memory is compared.
const PASSES: usize = 12;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How many pass lines of `family` the log holds.
fn passes<'a>(log: &'a str, family: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("pass::outcome") && l.contains(&format!("family=\"{family}\"")))
        .collect()
}

fn field(line: &str, name: &str) -> u64 {
    line.split(&format!(" {name}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS")
}

async fn hostile_rows_in(schema: &str, current: bool) {
    let servers = Servers::start_with_schema(schema).await;
    sqlx::raw_sql(HOSTILE).execute(&servers.pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("daemon.log");
    let env = servers.env(&[
        ("VICTORIAMETRICS_POLL_INTERVAL", "200ms"),
        // A full reconciliation every few passes too: the rows are read
        // whole again then, not only when they change.
        ("VICTORIAMETRICS_RECONCILE_INTERVAL", "2s"),
    ]);
    let since = now_ms();
    let mut daemon = spawn_exporter(&["run"], &env, &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The first pass: every bad row named once, the rest written.
    let deadline = Instant::now() + Duration::from_secs(120);
    while passes(&log(), "consumption").len() < 3 {
        assert!(Instant::now() < deadline, "no third pass:\n{}", log());
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon stopped:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let early = rss_kib(daemon.id());
    let text = log();
    let mut named: Vec<&str> = SKIPPED.to_vec();
    if current {
        named.extend(SKIPPED_CURRENT);
    }
    for row in &named {
        let needle = if row.starts_with("table=") {
            row.to_string()
        } else {
            format!("row={row} ")
        };
        assert!(text.contains(&needle), "no warning naming {row}:\n{text}");
    }

    // Then pass after pass over the same rows: nothing written again,
    // every skipped row still counted, the daemon alive.
    while passes(&log(), "consumption").len() < PASSES {
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "no pass {PASSES}:\n{}",
            log()
        );
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon stopped:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = rss_kib(daemon.id());
    signal(&daemon, "-TERM");
    assert!(daemon.wait().unwrap().success(), "SIGTERM:\n{}", log());
    let text = log();
    let consumption = passes(&text, "consumption");
    let first_skipped = field(consumption[0], "skipped");
    for (k, line) in consumption.iter().enumerate().skip(1) {
        for f in ["appended", "rewritten", "deleted"] {
            assert_eq!(field(line, f), 0, "pass {k} wrote again: {line}");
        }
        assert_eq!(field(line, "skipped"), first_skipped, "pass {k}: {line}");
    }
    // The 14 bad consumption rows, and the fixture's own second daily row
    // of one day (in the schema whose constraint lets it in).
    let own = u64::from(!current);
    assert_eq!(
        first_skipped,
        SKIPPED.len() as u64 + own,
        "{}",
        consumption[0]
    );
    for line in passes(&text, "ecowatt").iter().skip(1) {
        assert_eq!(field(line, "skipped"), ECOWATT_SKIPPED, "{line}");
    }
    // Memory: what 9 more passes over a megabyte row and 100,000
    // EcoWatt levels added (a generous bound: the figures are in the note).
    eprintln!("resident memory after 3 passes {early} KiB, after {PASSES} passes {late} KiB");
    assert!(
        late <= early + 8 * 1024,
        "the daemon grew from {early} KiB to {late} KiB over {PASSES} passes"
    );

    // The rest: exactly what the model computes from the rows the spec
    // exports, odd ones included.
    sqlx::raw_sql(
        "DELETE FROM consumption_data WHERE id LIKE 'h-%';
         DO $$ BEGIN
           IF to_regclass('max_power_data') IS NOT NULL THEN
             DELETE FROM max_power_data WHERE id LIKE 'h-%';
           END IF;
           IF to_regclass('zen_flex_days') IS NOT NULL THEN
             DELETE FROM zen_flex_days WHERE id IN ('2024-11-13', '2024-11-14');
           END IF;
           DELETE FROM tempo_days WHERE id IN ('2024-11-11', '2024-11-12');
         END $$;",
    )
    .execute(&servers.pool)
    .await
    .unwrap();
    assert_exported(
        &servers.pool,
        &BTreeMap::new(),
        since,
        &from_export(servers.vm.export_all().await),
        "after the hostile rows",
    )
    .await;
}

#[tokio::test]
async fn hostile_rows_in_the_current_schema_are_skipped_and_counted_and_the_rest_stays_exact() {
    hostile_rows_in(SCHEMA, true).await;
}

#[tokio::test]
async fn hostile_rows_in_the_orm_schema_are_skipped_and_counted_and_the_rest_stays_exact() {
    hostile_rows_in(SCHEMA_ORM, false).await;
}
