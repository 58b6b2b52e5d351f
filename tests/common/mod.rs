//! What the integration tests share, by subject: the throwaway servers
//! (`servers`), the exporter binary (`exporter`), the independent model of
//! the mirror (`model`) and its priced days summed by hand (`priced`),
//! reading VictoriaMetrics back (`promql`), certificates (`pki`), the Grafana dashboard as Grafana
//! would query it (`grafana`), the fault proxy (`proxy`) and a small HTTP
//! server for stand-ins (`http`).
//!
//! Each test file compiles this module on its own and uses part of it.

#![allow(dead_code)]

pub mod demo;
pub mod exporter;
pub mod grafana;
pub mod http;
pub mod meters;
pub mod model;
pub mod pki;
pub mod priced;
pub mod promql;
pub mod proxy;
pub mod servers;

use std::time::Duration;

// The names the test files use most, at `common::`; a test file that
// does not use one would be warned of it.
#[allow(unused_imports)]
pub use exporter::{exporter, pass_count, run_ok, served_addr, signal, spawn_exporter, Daemon};
#[allow(unused_imports)]
pub use servers::{
    copy_dir, free_port, which, Postgres, Servers, Victoria, DATA, REFUSED, SCHEMA, SCHEMA_ORM,
};

/// Waits, near midnight in Paris, until the new day has begun: tests that
/// write rows for "today" and "tomorrow" must not see the day turn (their
/// files take up to two minutes on a loaded machine: five are kept clear).
pub async fn away_from_paris_midnight() {
    use chrono::TimeZone;
    let paris = chrono_tz::Europe::Paris;
    let now = chrono::Utc::now().with_timezone(&paris);
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    let Some(midnight) = tomorrow
        .and_hms_opt(0, 0, 0)
        .and_then(|t| paris.from_local_datetime(&t).earliest())
    else {
        return;
    };
    let left = (midnight - now).num_seconds();
    if left < 300 {
        tokio::time::sleep(Duration::from_secs(left as u64 + 5)).await;
    }
}
