//! Two replicas against one PostgreSQL: only the holder of the export lock
//! writes; when it dies, the other takes over and keeps the mirror exact.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{signal, spawn_exporter, Servers};

#[tokio::test]
async fn only_one_replica_writes_and_the_other_takes_over_when_it_dies() {
    let servers = Servers::start().await;
    let pool = &servers.pool;
    let env = servers.env(&[("VICTORIAMETRICS_POLL_INTERVAL", "500ms")]);
    let none = BTreeMap::new();
    let within = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = spawn_exporter(&["run"], &env, &log_a);
    servers
        .converge(&none, within, &log_a, "replica A's first export")
        .await;
    let mut b = spawn_exporter(&["run"], &env, &log_b);

    sqlx::query("UPDATE consumption_data SET value = value + 7 WHERE date = '2024-05-05'")
        .execute(pool)
        .await
        .unwrap();
    servers
        .converge(&none, within, &log_a, "a change, with two replicas")
        .await;
    let text_b = std::fs::read_to_string(&log_b).unwrap();
    assert!(text_b.contains("standing by"), "{text_b}");
    assert!(
        !text_b.contains("holding the export lock") && !text_b.contains("exported"),
        "B wrote while A held the lock: {text_b}"
    );

    // A dies; B takes over within a poll interval and exports the next change.
    let _ = a.kill();
    let _ = a.wait();
    let died = Instant::now();
    sqlx::query("UPDATE consumption_data SET value = value + 9 WHERE date = '2024-05-06'")
        .execute(pool)
        .await
        .unwrap();
    while !std::fs::read_to_string(&log_b)
        .unwrap()
        .contains("holding the export lock")
    {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "B did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        died.elapsed() < Duration::from_millis(1500),
        "takeover took {:?}",
        died.elapsed()
    );
    servers
        .converge(&none, within, &log_b, "after the takeover")
        .await;

    signal(&b, "-TERM");
    assert!(b.wait().unwrap().success());
}
