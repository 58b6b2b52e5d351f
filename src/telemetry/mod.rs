//! Self-monitoring: the exporter's own metrics and health, which
//! [`crate::listener`] serves on `/metrics` and `/health`.
//!
//! One process-wide set, as Prometheus client libraries keep a default
//! registry: the stages count where things happen (the sink counts its
//! errors, the batcher its batches) without threading a handle through
//! every call. A leaf: it knows nothing of the crate but the tables and
//! families of [`crate::model`]; a pass reports its counts as
//! [`PassCounts`].

mod health;
mod metrics;

use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{Family, Table};

pub use health::{Health, Role};
pub use metrics::{ErrorKind, CONTENT_TYPE};

use health::State;
use metrics::{ByKind, ByResult, ByTable, CycleResult, Metrics, TableName};

/// What a pass over a family did, as the series counters count it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassCounts {
    /// Series deleted and rewritten.
    pub rewritten: u64,
    /// Series appended to.
    pub appended: u64,
    /// Series deleted because nothing produces them any more.
    pub deleted: u64,
    /// Series whose lines VictoriaMetrics refused for good.
    pub rejected: u64,
    /// Whether the pass read its family back.
    pub read_back: bool,
    /// Series read back and compared.
    pub verified: u64,
    /// Series the read-back found differing, and repaired.
    pub repaired: u64,
    /// Samples VictoriaMetrics should have held and did not.
    pub samples_missing: u64,
    /// Samples it held and should not have.
    pub samples_extra: u64,
}

/// The metrics and the health behind `/metrics` and `/health`.
#[derive(Debug)]
pub struct Telemetry {
    started: SystemTime,
    metrics: Metrics,
    state: Mutex<State>,
}

static GLOBAL: LazyLock<Telemetry> = LazyLock::new(Telemetry::new);

/// The process's telemetry.
pub fn global() -> &'static Telemetry {
    &GLOBAL
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A fresh set, all zero.
    pub fn new() -> Self {
        let started = SystemTime::now();
        let metrics = Metrics::new(resident_memory_bytes().is_some());
        metrics.start_time.set(unix_seconds(started));
        Self {
            started,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data behind the lock: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A batch of `lines` lines was acknowledged.
    pub fn batch_sent(&self, lines: u64) {
        self.metrics.batches_sent.inc();
        self.metrics.samples_sent.inc_by(lines);
    }

    /// A request is tried again.
    pub fn retry(&self) {
        self.metrics.retries.inc();
    }

    /// A request or a step failed.
    pub fn error(&self, kind: ErrorKind) {
        self.metrics.errors.get_or_create(&ByKind { kind }).inc();
    }

    /// A request to VictoriaMetrics failed with `error`: the daemon is
    /// failing until a request or a cycle succeeds (a batch retried for
    /// hours never ends its cycle).
    pub fn request_failed(&self, error: &dyn std::fmt::Display) {
        self.state().failed(error);
    }

    /// A request to VictoriaMetrics succeeded.
    pub fn request_succeeded(&self) {
        self.state().succeeded();
    }

    /// `rows` rows of `table` were skipped as malformed (another name,
    /// such as the several rows behind one timestamp, counts for
    /// `family`'s table).
    pub fn rows_skipped(&self, family: Family, table: &str, rows: u64) {
        let table = Table::named(table).unwrap_or(family.spec().table);
        self.metrics
            .rows_skipped
            .get_or_create(&ByTable {
                table: TableName(table),
            })
            .inc_by(rows);
    }

    /// A pass over a family ended, having done `c`.
    pub fn pass(&self, c: &PassCounts) {
        let m = &self.metrics;
        m.series_rewritten.inc_by(c.rewritten);
        m.series_appended.inc_by(c.appended);
        m.series_deleted.inc_by(c.deleted);
        m.series_rejected.inc_by(c.rejected);
        m.verifications.inc_by(u64::from(c.read_back));
        m.series_verified.inc_by(c.verified);
        m.series_repaired.inc_by(c.repaired);
        m.samples_missing.inc_by(c.samples_missing);
        m.samples_extra.inc_by(c.samples_extra);
    }

    /// Whether VictoriaMetrics shows every sample twice, as a read-back
    /// judged it; `true` when it starts to.
    pub fn doubled(&self, doubled: bool) -> bool {
        let was = self
            .metrics
            .replication_without_dedup
            .set(i64::from(doubled));
        doubled && was == 0
    }

    /// A full reconciliation read every family back and found VictoriaMetrics
    /// holding exactly what PostgreSQL says, as of `read_at`.
    pub fn verified(&self, read_at: SystemTime) {
        self.metrics.last_verified.set(unix_seconds(read_at));
    }

    /// The daemon's role changed.
    pub fn set_role(&self, role: Role) {
        let mut s = self.state();
        s.role = role;
        // Under the lock, so that the gauge follows the last role set.
        self.metrics
            .export_lock_held
            .set(i64::from(role == Role::Active));
    }

    /// A cycle that read PostgreSQL at `read_at` completed; `in_sync`: it
    /// left nothing pending.
    pub fn cycle_succeeded(&self, read_at: SystemTime, in_sync: bool) {
        let m = &self.metrics;
        m.cycles
            .get_or_create(&ByResult {
                result: CycleResult::Success,
            })
            .inc();
        m.last_success.set(unix_seconds(SystemTime::now()));
        self.state().cycle_succeeded(read_at, in_sync);
    }

    /// A cycle failed with `error`.
    pub fn cycle_failed(&self, error: &dyn std::fmt::Display) {
        self.metrics
            .cycles
            .get_or_create(&ByResult {
                result: CycleResult::Failure,
            })
            .inc();
        self.state().cycle_failed(error);
    }

    /// How long the mirror has been known incomplete: 0 while the last
    /// cycle left it complete, else the time since it last was (or since
    /// the start).
    pub fn lag(&self, now: SystemTime) -> Duration {
        self.state().lag(self.started, now)
    }

    /// Unhealthy once exports (or, for a standby, its look at the export
    /// lock) have failed for longer than `grace`; a disabled exporter is
    /// always healthy.
    pub fn health(&self, now: SystemTime, grace: Duration) -> Health {
        self.state().health(now, grace)
    }

    /// The metrics as of `now`, in OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn render(&self, now: SystemTime) -> String {
        let m = &self.metrics;
        m.lag.set(self.lag(now).as_secs_f64());
        if let (Some(gauge), Some(rss)) = (&m.resident_memory, resident_memory_bytes()) {
            gauge.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        m.encode()
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// VmRSS from `/proc/self/status` (Linux; `None` elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests;
