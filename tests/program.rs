//! The program as a user meets it: configuration errors, `migrate` on an
//! empty or an existing database, `render`, `check`, batches, secrets.

mod common;

use std::collections::BTreeMap;

use common::model::{assert_exported, assert_same, expected, from_export, Mirror};
use common::{exporter, Postgres, Servers, Victoria, DATA, SCHEMA, SCHEMA_ORM};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[test]
fn a_bad_variable_stops_the_program_with_one_line_naming_it_and_exit_code_2() {
    let db = (
        "DATABASE_URL",
        format!("postgresql+asyncpg://u:p@{}/db", common::REFUSED),
    );
    let cases: &[(&str, &str)] = &[
        ("VICTORIAMETRICS_BATCH_SIZE", "ten"),
        ("VICTORIAMETRICS_POLL_INTERVAL", "soon"),
        ("VICTORIAMETRICS_URL", "victoriametrics:8428"),
        ("VICTORIAMETRICS_LABELS", r#"{"pdl": "x"}"#),
        ("VICTORIAMETRICS_TIMEZONE", "Mars/Olympus"),
        ("VICTORIAMETRICS_ENABLED", "perhaps"),
        ("VICTORIAMETRICS_OFFPEAK_HOURS", "22h00-06h00"),
    ];
    for (var, value) in cases {
        for command in ["run", "once", "check"] {
            let out = exporter(&[command], &[db.clone(), (var, value.to_string())]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{var}={value} {command}: {stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "{var}: {stderr}");
            assert!(stderr.contains(var), "{var}: {stderr}");
        }
    }
    let out = exporter(&["once"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

#[test]
fn a_password_in_the_configuration_never_reaches_the_logs() {
    // Nothing listens there: every step fails and logs its error.
    let env = [
        (
            "DATABASE_URL",
            format!(
                "postgresql+asyncpg://med:Pg-S3cret-pw@{}/db",
                common::REFUSED
            ),
        ),
        (
            "VICTORIAMETRICS_URL",
            format!("http://vmuser:Vm-S3cret-pw@{}", common::REFUSED),
        ),
        ("RUST_LOG", "trace".to_string()),
    ];
    for command in ["once", "check", "render", "migrate"] {
        let out = exporter(&[command], &env);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{command} succeeded against nothing");
        for secret in ["Pg-S3cret-pw", "Vm-S3cret-pw", "dm11c2VyOlZtLVMzY3JldC1wdw"] {
            assert!(!all.contains(secret), "{command} printed a secret: {all}");
        }
    }
}

#[tokio::test]
async fn migrate_creates_missing_tables_and_changes_nothing_in_an_existing_database() {
    let pg = Postgres::start();
    let vm = Victoria::start();

    // An existing MyElectricalData database: its schema is left as it is.
    let existing = pg.create_db("existing").await;
    sqlx::raw_sql(SCHEMA).execute(&existing).await.unwrap();
    let describe = "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
        SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS x
          FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE 'vm_export_%'
        UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename NOT LIKE 'vm_export_%'
        UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace
                     AND conrelid::regclass::text NOT LIKE 'vm_export_%'
        UNION ALL SELECT typname FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typname NOT LIKE '%vm_export%') AS d";
    let before: String = sqlx::query_scalar(describe)
        .fetch_one(&existing)
        .await
        .unwrap();
    let env = [
        ("DATABASE_URL", pg.url("existing")),
        ("VICTORIAMETRICS_URL", vm.url.clone()),
    ];
    for _ in 0..2 {
        common::run_ok(&["migrate"], &env);
    }
    let after: String = sqlx::query_scalar(describe)
        .fetch_one(&existing)
        .await
        .unwrap();
    assert_eq!(before, after, "migrate changed MyElectricalData's schema");
    let tables = "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'vm_export_%' ORDER BY 1";
    let theirs: Vec<String> = sqlx::query_scalar(tables)
        .fetch_all(&existing)
        .await
        .unwrap();
    assert_eq!(
        theirs,
        [
            "alembic_version",
            "consumption_data",
            "contract_data",
            "ecowatt",
            "max_power_data",
            "pdls",
            "production_data",
            "tempo_days",
            "zen_flex_days"
        ],
        "migrate added tables outside its vm_export_ prefix"
    );

    // An older database, made by the client's ORM, without the optional
    // tables: they are not created there (the client creates them when it
    // is upgraded), and check says they are skipped.
    let orm = pg.create_db("orm").await;
    sqlx::raw_sql(SCHEMA_ORM).execute(&orm).await.unwrap();
    let before: String = sqlx::query_scalar(describe).fetch_one(&orm).await.unwrap();
    let env = [
        ("DATABASE_URL", pg.url("orm")),
        ("VICTORIAMETRICS_URL", vm.url.clone()),
    ];
    common::run_ok(&["migrate"], &env);
    let after: String = sqlx::query_scalar(describe).fetch_one(&orm).await.unwrap();
    assert_eq!(before, after, "migrate changed the older schema");
    let out = exporter(&["check"], &env);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("max_power_data (absent, skipped until it appears), zen_flex_days (absent"),
        "{report}"
    );

    // A standalone database: the tables are created, and the data exports.
    let empty = pg.create_db("standalone").await;
    let env = [
        ("DATABASE_URL", pg.url("standalone")),
        ("VICTORIAMETRICS_URL", vm.url.clone()),
    ];
    common::run_ok(&["migrate"], &env);
    for table in ["max_power_data", "zen_flex_days"] {
        let made: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&empty)
            .await
            .unwrap();
        assert!(
            made,
            "migrate did not create {table} in a standalone database"
        );
    }
    sqlx::raw_sql(DATA).execute(&empty).await.unwrap();
    let before = now_ms();
    common::run_ok(&["once"], &env);
    assert_exported(
        &empty,
        &BTreeMap::new(),
        before,
        &from_export(vm.export_all().await),
        "standalone database",
    )
    .await;
}

fn parse_line(line: &str) -> (BTreeMap<String, String>, i64, i64) {
    // name{a="x",b="y"} value ts — label values here hold no escapes; the
    // value comes back in the model's fixed-point units.
    let (series, rest) = line.split_once("} ").expect("a line has labels");
    let (name, labels) = series.split_once('{').unwrap();
    let mut l = BTreeMap::from([("__name__".to_string(), name.to_string())]);
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once("=\"").unwrap();
        l.insert(k.to_string(), v.trim_end_matches('"').to_string());
    }
    let mut parts = rest.split(' ');
    let text = parts.next().unwrap();
    // Thousandths, or millionths for euros.
    let scale = common::model::scale_of(name);
    let decimals = if scale > 1e3 { 6 } else { 3 };
    assert!(
        text.split_once('.')
            .is_none_or(|(_, f)| f.len() <= decimals && !f.ends_with('0')),
        "{line}: not the shortest exact decimal"
    );
    let value = (text.parse::<f64>().unwrap() * scale).round() as i64;
    let ts = parts.next().unwrap().parse().unwrap();
    (l, value, ts)
}

#[tokio::test]
async fn render_prints_every_line_of_a_full_export_and_once_posts_them_in_batches_of_100() {
    let servers = Servers::start().await;
    let (vm, pool) = (&servers.vm, &servers.pool);
    let env = servers.env(&[]);

    let before = now_ms();
    let out = exporter(&["render"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rendered: Mirror = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (labels, value, ts) = parse_line(line);
        rendered.entry(labels).or_default().push((ts, value));
    }
    rendered.values_mut().for_each(|s| s.sort());
    let want = expected(pool, &BTreeMap::new(), before).await;
    assert_same(&rendered, &want, "render");
    assert_eq!(
        vm.rows_inserted().await,
        0.0,
        "render wrote to VictoriaMetrics"
    );

    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug".into()));
    common::run_ok(&["once"], &env);
    // Each family's lines go out in full batches of 100 and one partial batch.
    let mut per_family: BTreeMap<&str, usize> = BTreeMap::new();
    for (labels, samples) in &want {
        let name = labels["__name__"].as_str();
        let family = [
            "consumption_period",
            "tempo_consumption",
            "_eur",
            "consumption",
            "production",
            "tempo",
            "ecowatt",
            "max_power",
            "zen_flex",
            "pdl_info",
        ]
        .into_iter()
        .find(|f| name.contains(f))
        .map(|f| match f {
            // Tariff periods, their costs and the price grid.
            "consumption_period" | "tempo_consumption" | "_eur" => "consumption",
            "pdl_info" => "meter",
            f => f,
        })
        .unwrap();
        *per_family.entry(family).or_default() += samples.len();
    }
    let batches: usize = per_family.values().map(|n| n.div_ceil(100)).sum();
    let imports = vm
        .counter("vm_http_requests_total", "/api/v1/import/prometheus")
        .await;
    assert_eq!(
        imports as usize, batches,
        "lines per family: {per_family:?}"
    );
}

/// The HC samples `render` gives under `VICTORIAMETRICS_OFFPEAK_HOURS=hours`
/// equal the load curve's energy from `from` to `to` (local, by each
/// interval's true start) of each day, from an SQL sum of the rows: W ×
/// minutes summed, / 60, rounded once, in mWh.
async fn hc_follows_the_setting(servers: &Servers, hours: &str, from: &str, to: &str) {
    let env = servers.env(&[("VICTORIAMETRICS_OFFPEAK_HOURS", hours)]);
    let out = exporter(&["render"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut hc: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (labels, value, ts) = parse_line(line);
        if labels["__name__"] == "myelectricaldata_consumption_period_wh"
            && labels["period"] == "HC"
        {
            hc.insert((labels["pdl"].clone(), ts), value);
        }
    }
    // The true start: the end label (label + length, a local time that
    // exists; PostgreSQL reads a repeated one as its later occurrence) less
    // the length, back in local time.
    let want: Vec<(String, chrono::NaiveDate, i64)> = sqlx::query_as(
        r"WITH rows AS (
            SELECT usage_point_id, value, minutes,
                   ((date + interval_start::time + make_interval(mins => minutes)) AT TIME ZONE 'Europe/Paris'
                     - make_interval(mins => minutes)) AT TIME ZONE 'Europe/Paris' AS start
              FROM (SELECT *, coalesce(substring(raw_data::jsonb ->> 'p' from 'PT(\d+)M'),
                                       substring(raw_data::jsonb ->> 'interval_length' from 'PT(\d+)M'), '30')::int AS minutes
                      FROM consumption_data WHERE granularity = 'detailed') AS r)
          SELECT usage_point_id, start::date,
                 round(sum(value * minutes) FILTER (WHERE start::time >= $1::time AND start::time < $2::time) * 1000 / 60.0)::bigint
            FROM rows GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&servers.pool)
    .await
    .unwrap();
    assert_eq!(hc.len(), want.len(), "{hours}: {hc:?}");
    for (pdl, date, milli) in want {
        let ts = myelectricaldata_vm_exporter::model::calendar::day_millis(
            chrono_tz::Europe::Paris,
            date,
        );
        assert_eq!(
            hc.get(&(pdl.clone(), ts)),
            Some(&milli),
            "{hours}: {pdl} {date}"
        );
    }
}

#[tokio::test]
async fn the_offpeak_setting_overrides_every_contract_in_render_and_check() {
    let servers = Servers::start().await;
    hc_follows_the_setting(&servers, "12:00-14:00", "12:00", "14:00").await;
    // On the day the clocks go forward the row labelled 02:30 is the
    // interval from 01:30: peak under 02:00-07:00.
    hc_follows_the_setting(&servers, "02:00-07:00", "02:00", "07:00").await;
    let env = servers.env(&[("VICTORIAMETRICS_OFFPEAK_HOURS", "12:00-14:00")]);

    // check names the hours and where they come from, on one line.
    let offpeak_line = |env: &[(&str, String)]| {
        let out = exporter(&["check"], env);
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        report
            .lines()
            .find(|l| l.starts_with("[ OK ] Off-peak hours of each PDL (tariff periods)"))
            .unwrap_or_else(|| panic!("no off-peak line: {report}"))
            .to_string()
    };
    let line = offpeak_line(&env);
    assert!(
        line.ends_with("12:00-14:00 for every PDL (VICTORIAMETRICS_OFFPEAK_HOURS)"),
        "{line}"
    );
    // Without the setting, each PDL's contract as the client records it.
    let line = offpeak_line(&servers.env(&[]));
    assert!(
        line.ends_with("12345678901234 22:00-06:00 (contract_data.offpeak_hours); 98765432109876 02:30-06:30,13:00-15:00 (contract_data.offpeak_hours)"),
        "{line}"
    );
    // A contract record with no range in it: a warning naming it, and the
    // PDL falls back to the default.
    sqlx::query(
        r#"UPDATE contract_data SET offpeak_hours = '{"default": "heures creuses"}'
            WHERE usage_point_id = '98765432109876'"#,
    )
    .execute(&servers.pool)
    .await
    .unwrap();
    let out = exporter(&["check"], &servers.env(&[]));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let line = report
        .lines()
        .find(|l| l.starts_with("[WARN] Off-peak hours of each PDL (tariff periods)"))
        .unwrap_or_else(|| panic!("no warning: {report}"));
    assert!(
        line.contains("98765432109876 22:00-06:00 (the default, no contract recorded)")
            && line.contains("unreadable: 98765432109876: offpeak_hours")
            && line.contains("heures creuses"),
        "{line}"
    );
    assert!(
        report.contains("what to do: set VICTORIAMETRICS_OFFPEAK_HOURS"),
        "{report}"
    );
}

#[tokio::test]
async fn check_passes_against_working_servers_and_names_refused_credentials() {
    let pg = Postgres::start();
    let vm = Victoria::start_with(&["-httpAuth.username=alice", "-httpAuth.password=wonderland"]);
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
    let base = [
        ("DATABASE_URL", pg.url("med")),
        ("VICTORIAMETRICS_URL", vm.url.clone()),
    ];

    let mut good = base.to_vec();
    good.push(("VICTORIAMETRICS_USERNAME", "alice".into()));
    good.push(("VICTORIAMETRICS_PASSWORD", "wonderland".into()));
    let out = exporter(&["check"], &good);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("[ OK ] A sample written and read back"),
        "{report}"
    );
    assert!(
        report.contains("optional: max_power_data (found), zen_flex_days (found)"),
        "{report}"
    );

    let mut bad = base.to_vec();
    bad.push(("VICTORIAMETRICS_USERNAME", "alice".into()));
    bad.push(("VICTORIAMETRICS_PASSWORD", "guess".into()));
    let out = exporter(&["check"], &bad);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("[FAIL] Credentials accepted"), "{report}");
    assert!(
        report.contains("what to do: check VICTORIAMETRICS_USERNAME and VICTORIAMETRICS_PASSWORD"),
        "{report}"
    );
    assert!(
        report.contains("[SKIP] A sample written and read back"),
        "{report}"
    );
    assert!(!report.contains("guess"), "{report}");
}

#[tokio::test]
async fn check_warns_when_retention_is_shorter_than_the_history() {
    let pg = Postgres::start();
    let vm = Victoria::start_with(&["-retentionPeriod=1"]);
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
    sqlx::raw_sql(DATA).execute(&pool).await.unwrap();
    let out = exporter(
        &["check"],
        &[
            ("DATABASE_URL", pg.url("med")),
            ("VICTORIAMETRICS_URL", vm.url.clone()),
        ],
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("[WARN] Retention covers the history")
                && l.contains("VictoriaMetrics keeps 31 days")),
        "{report}"
    );
    assert!(
        report.contains("what to do: start VictoriaMetrics with a longer -retentionPeriod"),
        "{report}"
    );
    assert!(out.status.success(), "{report}");
}

#[test]
fn disabled_export_idles_without_exiting_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("disabled.log");
    let env = [
        (
            "DATABASE_URL",
            format!("postgresql://nobody@{}/none", common::REFUSED),
        ),
        ("VICTORIAMETRICS_ENABLED", "false".to_string()),
    ];
    let mut child = common::spawn_exporter(&[], &env, &log);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("export is disabled"), "{text}");
}

#[tokio::test]
async fn changing_the_extra_labels_replaces_every_series_written_under_the_old_ones() {
    let servers = Servers::start().await;
    common::run_ok(&["once"], &servers.env(&[]));
    let env = servers.env(&[("VICTORIAMETRICS_LABELS", r#"{"home": "paris"}"#)]);
    let before = now_ms();
    let out = exporter(&["once"], &env);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("VICTORIAMETRICS_LABELS changed"), "{log}");
    let labels = BTreeMap::from([("home".to_string(), "paris".to_string())]);
    assert_exported(
        &servers.pool,
        &labels,
        before,
        &from_export(servers.vm.export_all().await),
        "after new labels",
    )
    .await;
}

#[tokio::test]
async fn once_fails_with_exit_1_when_victoriametrics_stays_down_or_a_daemon_holds_the_lock() {
    let servers = Servers::start().await;
    let down = format!("http://{}", common::REFUSED);
    let started = std::time::Instant::now();
    let out = exporter(&["once"], &servers.env(&[("VICTORIAMETRICS_URL", &down)]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot connect"), "{log}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "once took {:?}",
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let daemon_log = dir.path().join("daemon.log");
    let _daemon = common::spawn_exporter(&["run"], &servers.env(&[]), &daemon_log);
    while !std::fs::read_to_string(&daemon_log)
        .unwrap_or_default()
        .contains("holding the export lock")
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = exporter(&["once"], &servers.env(&[]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("another exporter is exporting this database"),
        "{log}"
    );
}
