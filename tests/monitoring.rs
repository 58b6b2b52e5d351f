//! Self-monitoring: the daemon's `/health` and `/metrics`, and the `health`
//! command a Docker HEALTHCHECK runs.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::{exporter, run_ok, served_addr, spawn_exporter, Servers};

/// The value of the line `name` (exactly, labels included) in `/metrics`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn get(port: u16, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `/metrics` until `done` holds, or fails after `within` with the log.
async fn wait_metrics(
    port: u16,
    within: Duration,
    log: &std::path::Path,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, text) = get(port, "/metrics").await;
        if status == 200 && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there: {text}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_landed_and_health_answers_ok_while_exports_succeed() {
    let servers = Servers::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let env = servers.env(&[("VICTORIAMETRICS_POLL_INTERVAL", "500ms")]);
    let _daemon = spawn_exporter(&["run"], &env, &log);
    let listen = served_addr(&log).await;
    let port = listen.port();
    servers
        .converge(
            &BTreeMap::new(),
            Duration::from_secs(60),
            &log,
            "the first export",
        )
        .await;
    let text = wait_metrics(port, Duration::from_secs(20), &log, |t| {
        metric(t, "myelectricaldata_exporter_lag_seconds") == Some(0.0)
    })
    .await;

    let stored: usize = servers.vm.export_all().await.values().map(Vec::len).sum();
    assert_eq!(
        metric(&text, "myelectricaldata_exporter_samples_sent_total"),
        Some(stored as f64),
        "{text}"
    );
    let batches = metric(&text, "myelectricaldata_exporter_batches_sent_total").unwrap();
    assert_eq!(
        batches,
        (stored as f64 / 100.0).ceil().max(batches),
        "{text}"
    );
    assert_eq!(
        metric(&text, "myelectricaldata_exporter_export_lock_held"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "myelectricaldata_exporter_errors_total{kind=\"server\"}"
        ),
        Some(0.0)
    );
    let last = metric(
        &text,
        "myelectricaldata_exporter_last_success_timestamp_seconds",
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 30.0..=now + 1.0).contains(&last), "{last} vs {now}");
    assert!(metric(&text, "process_resident_memory_bytes").unwrap() > 1e6);

    let (status, body) = get(port, "/health").await;
    assert_eq!((status, body.trim()), (200, "ok: exporting"));
    // The health command needs its one variable only (a HEALTHCHECK must
    // not fail on another).
    let out = exporter(
        &["health"],
        &[("VICTORIAMETRICS_HTTP_LISTEN_ADDR", listen.to_string())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok: exporting");
    assert_eq!(get(port, "/nothing").await.0, 404);
}

#[tokio::test]
async fn health_turns_503_and_metrics_count_errors_while_victoriametrics_is_unreachable() {
    let pg = common::Postgres::start();
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(common::SCHEMA).execute(&pool).await.unwrap();
    sqlx::raw_sql(common::DATA).execute(&pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("daemon.log");
    let env = [
        ("DATABASE_URL", pg.url("med")),
        // Every connection is refused.
        ("VICTORIAMETRICS_URL", format!("http://{}", common::REFUSED)),
        ("VICTORIAMETRICS_POLL_INTERVAL", "300ms".into()),
    ];
    let _daemon = spawn_exporter(&["run"], &env, &log);
    let listen = served_addr(&log).await;
    let port = listen.port();
    let text = wait_metrics(port, Duration::from_secs(30), &log, |t| {
        metric(t, "myelectricaldata_exporter_retries_total").is_some_and(|r| r >= 2.0)
    })
    .await;
    assert!(
        metric(
            &text,
            "myelectricaldata_exporter_errors_total{kind=\"connect\"}"
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "myelectricaldata_exporter_samples_sent_total"),
        Some(0.0)
    );
    assert!(metric(&text, "myelectricaldata_exporter_lag_seconds").unwrap() > 0.0);

    // The batch is retried for as long as the daemon runs: health turns
    // once the failures outlast three polls (at least 5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = get(port, "/health").await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(body.contains("cannot connect"), "{body}");
    let out = exporter(
        &["health"],
        &[("VICTORIAMETRICS_HTTP_LISTEN_ADDR", listen.to_string())],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("unhealthy: ") && said.contains("cannot connect"),
        "{said}"
    );
}

#[test]
fn a_listen_address_in_use_stops_the_daemon_with_a_line_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let env = [
        (
            "DATABASE_URL",
            format!("postgresql://nobody@{}/none", common::REFUSED),
        ),
        ("VICTORIAMETRICS_HTTP_LISTEN_ADDR", addr.clone()),
    ];
    let out = exporter(&["run"], &env);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "cannot listen on {addr} (VICTORIAMETRICS_HTTP_LISTEN_ADDR)"
        )),
        "{log}"
    );
}

#[tokio::test]
async fn a_long_pass_logs_rows_done_and_rate() {
    let servers = Servers::start().await;
    let proxy = Proxy::start(servers.vm.url.trim_start_matches("http://"));
    // The consumption family's 2 deletes (a first export deletes what its
    // series may hold from before, one request per PDL) and 16 batches (a
    // few at a time), slowed down so that the pass lasts past ten seconds,
    // when the first report is due.
    proxy.set_for(Fault::Delay(Duration::from_millis(3000)), 2 + 16);
    let log = run_ok(
        &["once"],
        &servers.env(&[("VICTORIAMETRICS_URL", &proxy.url)]),
    );
    let line = log
        .lines()
        .find(|l| l.contains(" exporting "))
        .unwrap_or_else(|| panic!("no progress line: {log}"));
    for part in ["family=\"consumption\"", "rows=", "rows/s", "lines_sent="] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
}
