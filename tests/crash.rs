//! Killed at any point, the exporter restores the exact mirror at the next
//! start: a series being written is marked pending first, and a pending
//! series is deleted and rewritten.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::model::{assert_exported, from_export};
use common::{spawn_exporter, Servers};

#[tokio::test]
async fn a_kill_at_any_point_of_an_export_is_repaired_by_the_next_run() {
    let servers = Servers::start().await;
    let (vm, pool) = (&servers.vm, &servers.pool);
    let dir = tempfile::tempdir().unwrap();
    // Small batches: many POSTs, so that kills land between and inside them.
    let env = servers.env(&[
        ("VICTORIAMETRICS_BATCH_SIZE", "7"),
        ("RUST_LOG", "myelectricaldata_vm_exporter=debug"),
    ]);
    let mut killed_mid_export = 0;
    let mut killed_while_sending = 0;
    for round in 0..24u64 {
        // A change that rewrites series in every family, then a kill -9
        // somewhere during the export.
        sqlx::raw_sql(&format!(
            "UPDATE consumption_data SET value = value + 1 WHERE date = '2024-01-{:02}';
             UPDATE production_data SET value = value + 1 WHERE date = '2024-06-{:02}';
             UPDATE tempo_days SET color = CASE color::text WHEN 'BLUE' THEN 'WHITE' ELSE 'BLUE' END
              WHERE id = '2024-10-{:02}';
             UPDATE ecowatt SET dvalue = 1 + (dvalue % 3) WHERE periode = '2024-03-30 00:00';",
            1 + round % 28,
            1 + round % 28,
            1 + round % 28
        ))
        .execute(pool)
        .await
        .unwrap();
        let log = dir.path().join(format!("round-{round}.log"));
        let mut child = spawn_exporter(&["once"], &env, &log);
        if round % 2 == 0 {
            // Anywhere: start-up, reading, planning, waiting to delete.
            tokio::time::sleep(Duration::from_millis(round * 97 % 3500)).await;
        } else {
            // Once lines are going out: between and inside batches.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("rewriting series")
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(round * 7 % 120)).await;
        }
        if child.try_wait().unwrap().is_none() {
            killed_mid_export += 1;
            if round % 2 == 1 {
                killed_while_sending += 1;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        killed_while_sending >= 10,
        "only {killed_while_sending} kills landed while sending"
    );
    assert!(
        killed_mid_export >= 20,
        "only {killed_mid_export} kills landed during an export"
    );

    let before = chrono::Utc::now().timestamp_millis();
    common::run_ok(&["once"], &env);
    assert_exported(
        pool,
        &BTreeMap::new(),
        before,
        &from_export(vm.export_all().await),
        "after 24 kills and one clean run",
    )
    .await;
}
