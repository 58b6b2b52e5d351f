//! Two replicas against one PostgreSQL: only the holder of the export lock
//! writes; when it dies, the other takes over and keeps the mirror exact.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::model::{assert_same, expected, from_export};
use common::{spawn_exporter, Postgres, Victoria};

const SCHEMA: &str = include_str!("fixtures/myelectricaldata_schema.sql");
const DATA: &str = include_str!("fixtures/myelectricaldata_data.sql");

async fn converge(pool: &sqlx::PgPool, vm: &Victoria, within: Duration, when: &str) {
    let deadline = Instant::now() + within;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let want = expected(
            pool,
            &BTreeMap::new(),
            chrono::Utc::now().timestamp_millis(),
        )
        .await;
        let got = from_export(vm.export_all().await);
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            assert_same(&got, &want, when);
        }
    }
}

#[tokio::test]
async fn only_one_replica_writes_and_the_other_takes_over_when_it_dies() {
    let pg = Postgres::start();
    let vm = Victoria::start();
    let pool = pg.create_db("med").await;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
    sqlx::raw_sql(DATA).execute(&pool).await.unwrap();
    let env = [
        ("DATABASE_URL", pg.url("med")),
        ("VICTORIAMETRICS_URL", vm.url.clone()),
        ("VICTORIAMETRICS_POLL_INTERVAL", "500ms".to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = spawn_exporter(&["run"], &env, &log_a);
    converge(
        &pool,
        &vm,
        Duration::from_secs(30),
        "replica A's first export",
    )
    .await;
    let mut b = spawn_exporter(&["run"], &env, &log_b);

    sqlx::query("UPDATE consumption_data SET value = value + 7 WHERE date = '2024-05-05'")
        .execute(&pool)
        .await
        .unwrap();
    converge(
        &pool,
        &vm,
        Duration::from_secs(30),
        "a change, with two replicas",
    )
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
        .execute(&pool)
        .await
        .unwrap();
    loop {
        if std::fs::read_to_string(&log_b)
            .unwrap()
            .contains("holding the export lock")
        {
            break;
        }
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
    converge(&pool, &vm, Duration::from_secs(30), "after the takeover").await;

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(b.id().to_string())
        .status();
    assert!(b.wait().unwrap().success());
}
