//! The mirror verifies itself: VictoriaMetrics loses data behind the
//! exporter's back (a volume recreated, a series deleted by hand, an old
//! snapshot restored, acknowledged lines dropped) and the exporter reads it
//! back, finds the difference and repairs it, with nobody touching its
//! state. Each scenario ends with `/api/v1/export` equal to the spec's model.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::model::{assert_exported, from_export};
use common::proxy::{Fault, Proxy};
use common::{run_ok, signal, spawn_exporter, Servers};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs `once` and checks the mirror against the model afterwards.
async fn once_is_exact(servers: &Servers, env: &[(&str, String)], when: &str) -> String {
    let before = now_ms();
    let log = run_ok(&["once"], env);
    assert_exported(
        &servers.pool,
        &BTreeMap::new(),
        before,
        &from_export(servers.vm.export_all().await),
        when,
    )
    .await;
    log
}

/// A month of the client's syncs and Enedis's corrections.
const A_MONTH_OF_CHANGES: &str = r#"
UPDATE consumption_data SET value = value + 7, updated_at = now()
 WHERE granularity = 'daily' AND date BETWEEN '2024-10-01' AND '2024-10-05';
DELETE FROM production_data WHERE granularity = 'detailed';
INSERT INTO consumption_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
SELECT md5(p || d::text || 'month'), p, d, 'daily', NULL, 10000, NULL
  FROM unnest(ARRAY['12345678901234', '98765432109876']) AS p,
       generate_series('2024-11-11'::date, '2024-12-10', '1 day') AS d;
UPDATE tempo_days SET color = 'RED' WHERE id = '2024-11-05';
"#;

#[tokio::test]
async fn once_gives_a_recreated_or_restored_victoriametrics_the_exact_mirror_back() {
    let mut servers = Servers::start().await;
    let env = servers.env(&[]);
    once_is_exact(&servers, &env, "after the first export").await;

    // The volume recreated: VictoriaMetrics comes back empty.
    servers.vm.replace_data(None);
    let started = Instant::now();
    let log = once_is_exact(&servers, &env, "after the volume was recreated").await;
    assert!(log.contains("read-back"), "{log}");
    eprintln!("empty volume repaired by once in {:?}", started.elapsed());

    // A series deleted by hand.
    servers
        .vm
        .delete_series(
            r#"myelectricaldata_consumption_wh{pdl="12345678901234",type="daily",quality=""}"#,
        )
        .await;
    // check sees it, and says what to do (the series were read back by the
    // once that wrote them a moment ago: no need to wait for them).
    let mut check_env = env.clone();
    check_env.push(("VICTORIAMETRICS_VERIFY_DELAY", "1ms".into()));
    let out = common::exporter(&["check"], &check_env);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("[WARN] Mirror verified")
            && report.contains(" 1 of ")
            && report.contains(" series differ"),
        "{report}"
    );
    assert!(report.contains("repairs them now"), "{report}");
    once_is_exact(&servers, &env, "after a series was deleted by hand").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = common::exporter(&["check"], &check_env);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("[ OK ] Mirror verified (read back and compared)")
            && report.contains("no difference"),
        "{report}"
    );

    // A copy of the volume, a month of changes exported, then the copy
    // restored: old values, deleted series back, new days missing.
    let copy = tempfile::tempdir().unwrap();
    let snapshot = copy.path().join("data");
    servers.vm.copy_data(&snapshot);
    sqlx::raw_sql(A_MONTH_OF_CHANGES)
        .execute(&servers.pool)
        .await
        .unwrap();
    once_is_exact(&servers, &env, "after a month of changes").await;
    servers.vm.replace_data(Some(&snapshot));
    let started = Instant::now();
    once_is_exact(&servers, &env, "after an older snapshot was restored").await;
    eprintln!("older snapshot repaired by once in {:?}", started.elapsed());
}

#[tokio::test]
async fn the_daemon_notices_a_wiped_victoriametrics_at_its_next_full_reconciliation() {
    let mut servers = Servers::start().await;
    let none = BTreeMap::new();
    let env = servers.env(&[
        ("VICTORIAMETRICS_POLL_INTERVAL", "300ms"),
        ("VICTORIAMETRICS_RECONCILE_INTERVAL", "5s"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let daemon = spawn_exporter(&["run"], &env, &log);
    let within = Duration::from_secs(60);
    servers
        .converge(&none, within, &log, "after the daemon's start")
        .await;

    servers.vm.replace_data(None);
    let started = Instant::now();
    servers
        .converge(
            &none,
            within,
            &log,
            "after the volume was wiped under the daemon",
        )
        .await;
    eprintln!(
        "wiped volume repaired by the daemon in {:?}",
        started.elapsed()
    );

    servers
        .vm
        .delete_series(r#"{__name__="myelectricaldata_tempo_remaining",color="red"}"#)
        .await;
    servers
        .converge(&none, within, &log, "after series were deleted by hand")
        .await;
    signal(&daemon, "-TERM");
}

#[tokio::test]
async fn acknowledged_lines_that_were_never_stored_are_found_and_sent_again() {
    let servers = Servers::start().await;
    let proxy = Proxy::start(servers.vm.url.trim_start_matches("http://"));
    let mut env = servers.env(&[]);
    for (k, v) in env.iter_mut() {
        if *k == "VICTORIAMETRICS_URL" {
            *v = proxy.url.clone();
        }
    }

    // Whole batches answered 204 and dropped.
    proxy.set_for(Fault::Swallow, 5);
    let log = once_is_exact(
        &servers,
        &env,
        "after batches were acknowledged and dropped",
    )
    .await;
    assert_eq!(proxy.faults_served(), 5);
    assert!(log.contains("repaired"), "{log}");

    // Batches stored in part: every 7th line of the next ten batches lost.
    sqlx::raw_sql("UPDATE consumption_data SET value = value + 1, updated_at = now() WHERE granularity = 'detailed'")
        .execute(&servers.pool)
        .await
        .unwrap();
    proxy.set_for(Fault::DropEveryNthLine(7), 10);
    once_is_exact(
        &servers,
        &env,
        "after lines were dropped from acknowledged batches",
    )
    .await;

    // And nothing is written once the mirror is whole again.
    let inserted = servers.vm.rows_inserted().await;
    run_ok(&["once"], &env);
    let written = servers.vm.rows_inserted().await - inserted;
    let allowed =
        common::model::released(&servers.pool, &BTreeMap::new(), now_ms() - 60_000, now_ms()).await;
    assert!(
        written <= allowed,
        "a verified mirror was written again: {written} rows"
    );
}

#[tokio::test]
async fn a_replicated_cluster_that_shows_every_sample_twice_is_named_and_nothing_is_rewritten_for_it(
) {
    let servers = Servers::start().await;
    let none = BTreeMap::new();
    // The first export straight to VictoriaMetrics.
    let direct = servers.env(&[]);
    once_is_exact(&servers, &direct, "after the first export").await;

    // Then every read-back through a proxy that shows each sample twice, as
    // vmselect without -dedup.minScrapeInterval in front of two replicas.
    let proxy = Proxy::start(servers.vm.url.trim_start_matches("http://"));
    proxy.set(Fault::DoubleReadBack);
    let mut env = direct.clone();
    for (k, v) in env.iter_mut() {
        if *k == "VICTORIAMETRICS_URL" {
            *v = proxy.url.clone();
        }
    }

    // check names it in one line, with what to set where.
    let out = common::exporter(&["check"], &env);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.lines().any(|l| l.contains("[WARN] Mirror verified")
            && l.contains("shows every sample twice")),
        "{report}"
    );
    assert!(
        report.contains("-dedup.minScrapeInterval=1ms on vmselect"),
        "{report}"
    );

    // once verifies, says it once, and writes nothing.
    let inserted = servers.vm.rows_inserted().await;
    let from = now_ms();
    let log = run_ok(&["once"], &env);
    let written = servers.vm.rows_inserted().await - inserted;
    let allowed = common::model::released(&servers.pool, &none, from, now_ms()).await;
    assert!(
        written <= allowed,
        "the doubled read-back caused {written} rows to be written\n{log}"
    );
    assert!(log.contains("shows every sample twice"), "{log}");
    assert!(!log.contains("repairing"), "{log}");

    // A change is still written, and read back as written.
    sqlx::raw_sql("UPDATE consumption_data SET value = value + 1, updated_at = now() WHERE granularity = 'daily' AND date = '2024-11-01'")
        .execute(&servers.pool)
        .await
        .unwrap();
    once_is_exact(&servers, &env, "after a change read back doubled").await;

    // The daemon exposes it on /metrics and logs it once.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon_env = env.clone();
    daemon_env.push(("VICTORIAMETRICS_POLL_INTERVAL", "300ms".into()));
    let daemon = spawn_exporter(&["run"], &daemon_env, &log);
    let port = common::served_addr(&log).await.port();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("\nmyelectricaldata_exporter_replication_without_dedup 1\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gauge never showed it: {text}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&daemon, "-TERM");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.matches("shows every sample twice").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("repairing"), "{text}");
}
