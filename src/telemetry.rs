//! Self-monitoring: the exporter's own counters and health, which
//! [`crate::listener`] serves on `/metrics` and `/health`.
//!
//! One process-wide set, as Prometheus client libraries keep a default
//! registry: the stages count where things happen (the sink counts its
//! errors, the batcher its batches) without threading a handle through
//! every call.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{Family, Table};

/// Why a request or a cycle failed, as `myelectricaldata_exporter_errors_total{kind}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// VictoriaMetrics did not answer within `VICTORIAMETRICS_TIMEOUT`.
    Timeout,
    /// The connection was refused or could not be opened.
    Connect,
    /// The connection broke during the request.
    Connection,
    /// 408 or 429: VictoriaMetrics asked to slow down.
    Throttled,
    /// A 5xx answer.
    Server,
    /// 401 or 403: the credentials were refused.
    Auth,
    /// Another 4xx: the lines or the request were refused for good.
    Rejected,
    /// PostgreSQL failed.
    Postgres,
}

impl ErrorKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Connection,
        ErrorKind::Throttled,
        ErrorKind::Server,
        ErrorKind::Auth,
        ErrorKind::Rejected,
        ErrorKind::Postgres,
    ];

    /// The `kind` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Connection => "connection",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Server => "server",
            ErrorKind::Auth => "auth",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Postgres => "postgres",
        }
    }
}

/// What a pass did, as `/metrics` counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassCounts {
    /// Series deleted and rewritten.
    pub rewritten: u64,
    /// Series appended to.
    pub appended: u64,
    /// Series deleted.
    pub deleted: u64,
    /// Series rejected for good.
    pub rejected: u64,
    /// Whether the pass read VictoriaMetrics back.
    pub read_back: bool,
    /// Series read back and compared.
    pub verified: u64,
    /// Series found differing and repaired.
    pub repaired: u64,
    /// Samples VictoriaMetrics lacked.
    pub samples_missing: u64,
    /// Samples it held and should not have.
    pub samples_extra: u64,
}

/// What the daemon is doing, for `/health` and the lock gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Not yet holding the export lock, or not a daemon.
    #[default]
    Starting,
    /// Holds the export lock and exports.
    Active,
    /// Another exporter holds the lock.
    Standby,
    /// `VICTORIAMETRICS_ENABLED=false`.
    Disabled,
}

#[derive(Debug, Default)]
struct Times {
    role: Role,
    last_success: Option<SystemTime>,
    /// When the last cycle that left nothing behind read PostgreSQL.
    in_sync_at: Option<SystemTime>,
    /// Whether the last completed cycle left the mirror complete.
    in_sync: bool,
    /// When the last full reconciliation verified the whole mirror.
    verified_at: Option<SystemTime>,
    failing_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// The counters and times behind `/metrics` and `/health`.
#[derive(Debug)]
pub struct Telemetry {
    started: SystemTime,
    samples_sent: AtomicU64,
    batches_sent: AtomicU64,
    retries: AtomicU64,
    errors: [AtomicU64; 8],
    /// By table, in [`Table::ALL`] order.
    rows_skipped: [AtomicU64; crate::model::TABLES],
    series_rewritten: AtomicU64,
    series_appended: AtomicU64,
    series_deleted: AtomicU64,
    series_rejected: AtomicU64,
    read_backs: AtomicU64,
    series_verified: AtomicU64,
    series_repaired: AtomicU64,
    samples_missing: AtomicU64,
    samples_extra: AtomicU64,
    cycles_ok: AtomicU64,
    cycles_failed: AtomicU64,
    /// 1 while the read-back shows every sample twice (a replicated cluster
    /// without deduplication).
    doubled: std::sync::atomic::AtomicBool,
    times: Mutex<Times>,
}

static GLOBAL: LazyLock<Telemetry> = LazyLock::new(Telemetry::new);

/// The process's telemetry.
pub fn global() -> &'static Telemetry {
    &GLOBAL
}

/// Whether the daemon is healthy, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `true`: `/health` answers 200.
    pub ok: bool,
    /// One line for people.
    pub text: String,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A fresh set, all zero.
    pub fn new() -> Self {
        Self {
            started: SystemTime::now(),
            samples_sent: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            errors: Default::default(),
            rows_skipped: Default::default(),
            series_rewritten: AtomicU64::new(0),
            series_appended: AtomicU64::new(0),
            series_deleted: AtomicU64::new(0),
            series_rejected: AtomicU64::new(0),
            read_backs: AtomicU64::new(0),
            series_verified: AtomicU64::new(0),
            series_repaired: AtomicU64::new(0),
            samples_missing: AtomicU64::new(0),
            samples_extra: AtomicU64::new(0),
            cycles_ok: AtomicU64::new(0),
            cycles_failed: AtomicU64::new(0),
            doubled: std::sync::atomic::AtomicBool::new(false),
            times: Mutex::new(Times::default()),
        }
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        // Plain data behind the lock: a panic elsewhere cannot leave it torn.
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A batch of `lines` lines was acknowledged.
    pub fn batch_sent(&self, lines: u64) {
        self.batches_sent.fetch_add(1, Relaxed);
        self.samples_sent.fetch_add(lines, Relaxed);
    }

    /// A request is tried again.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// A request or a step failed.
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// A request to VictoriaMetrics failed with `error`: the daemon is
    /// failing until a request or a cycle succeeds (a batch retried for
    /// hours never ends its cycle).
    pub fn request_failed(&self, error: &dyn std::fmt::Display) {
        let mut t = self.times();
        t.failing_since.get_or_insert_with(SystemTime::now);
        t.last_error = Some(error.to_string());
    }

    /// A request to VictoriaMetrics succeeded.
    pub fn request_succeeded(&self) {
        let mut t = self.times();
        t.failing_since = None;
        t.last_error = None;
    }

    /// A row of `table` was skipped as malformed (another name, such as
    /// the several rows behind one timestamp, counts for `family`'s table).
    pub fn row_skipped(&self, family: Family, table: &str) {
        let table = Table::named(table).unwrap_or(family.spec().table);
        self.rows_skipped[table as usize].fetch_add(1, Relaxed);
    }

    /// A pass over `family` ended.
    pub fn pass(&self, o: &PassCounts) {
        self.series_rewritten.fetch_add(o.rewritten, Relaxed);
        self.series_appended.fetch_add(o.appended, Relaxed);
        self.series_deleted.fetch_add(o.deleted, Relaxed);
        self.series_rejected.fetch_add(o.rejected, Relaxed);
        self.read_backs.fetch_add(u64::from(o.read_back), Relaxed);
        self.series_verified.fetch_add(o.verified, Relaxed);
        self.series_repaired.fetch_add(o.repaired, Relaxed);
        self.samples_missing.fetch_add(o.samples_missing, Relaxed);
        self.samples_extra.fetch_add(o.samples_extra, Relaxed);
    }

    /// Whether VictoriaMetrics shows every sample twice, as a read-back
    /// judged it; `true` when it starts to.
    pub fn doubled(&self, doubled: bool) -> bool {
        let was = self.doubled.swap(doubled, Relaxed);
        doubled && !was
    }

    /// A full reconciliation read every family back and found VictoriaMetrics
    /// holding exactly what PostgreSQL says, as of `read_at`.
    pub fn verified(&self, read_at: SystemTime) {
        self.times().verified_at = Some(read_at);
    }

    /// The daemon's role changed.
    pub fn set_role(&self, role: Role) {
        self.times().role = role;
    }

    /// A cycle that read PostgreSQL at `read_at` completed; `in_sync`: it
    /// left nothing pending.
    pub fn cycle_succeeded(&self, read_at: SystemTime, in_sync: bool) {
        self.cycles_ok.fetch_add(1, Relaxed);
        let mut t = self.times();
        t.last_success = Some(SystemTime::now());
        t.failing_since = None;
        t.last_error = None;
        t.in_sync = in_sync;
        if in_sync {
            t.in_sync_at = Some(read_at);
        }
    }

    /// A cycle failed with `error`.
    pub fn cycle_failed(&self, error: &dyn std::fmt::Display) {
        self.cycles_failed.fetch_add(1, Relaxed);
        let mut t = self.times();
        t.failing_since.get_or_insert_with(SystemTime::now);
        t.last_error = Some(error.to_string());
        t.in_sync = false;
    }

    /// How long the mirror has been known incomplete: 0 while the last
    /// cycle left it complete, else the time since it last was (or since
    /// the start).
    pub fn lag(&self, now: SystemTime) -> Duration {
        let t = self.times();
        if t.in_sync {
            return Duration::ZERO;
        }
        now.duration_since(t.in_sync_at.unwrap_or(self.started))
            .unwrap_or_default()
    }

    /// Unhealthy once exports (or, for a standby, its look at the export
    /// lock) have failed for longer than `grace`; a disabled exporter is
    /// always healthy.
    pub fn health(&self, now: SystemTime, grace: Duration) -> Health {
        let t = self.times();
        let failing = t
            .failing_since
            .and_then(|since| now.duration_since(since).ok())
            .filter(|d| *d > grace);
        match (t.role, failing) {
            (Role::Disabled, _) => Health {
                ok: true,
                text: "ok: export disabled (VICTORIAMETRICS_ENABLED=false)".into(),
            },
            (_, Some(d)) => Health {
                ok: false,
                text: format!(
                    "exports failing for {}s: {}",
                    d.as_secs(),
                    t.last_error.as_deref().unwrap_or("unknown error")
                ),
            },
            (Role::Active, None) => Health {
                ok: true,
                text: "ok: exporting".into(),
            },
            (Role::Standby, _) => Health {
                ok: true,
                text: "ok: standing by (another exporter holds the export lock)".into(),
            },
            (Role::Starting, _) => Health {
                ok: true,
                text: "ok: starting".into(),
            },
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self, now: SystemTime) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "myelectricaldata_exporter_up",
            "gauge",
            "1 while the exporter runs.",
            1.0,
        );
        one(
            "myelectricaldata_exporter_start_time_seconds",
            "gauge",
            "When the exporter started, in Unix seconds.",
            unix_seconds(self.started),
        );
        for (name, help, counter) in [
            (
                "samples_sent_total",
                "Samples acknowledged by VictoriaMetrics.",
                &self.samples_sent,
            ),
            (
                "batches_sent_total",
                "Batches acknowledged by VictoriaMetrics.",
                &self.batches_sent,
            ),
            (
                "retries_total",
                "Requests to VictoriaMetrics tried again after a failure.",
                &self.retries,
            ),
            (
                "series_rewritten_total",
                "Series deleted and written again in full (corrections, deleted rows).",
                &self.series_rewritten,
            ),
            (
                "series_appended_total",
                "Series that received new samples after those they held.",
                &self.series_appended,
            ),
            (
                "series_deleted_total",
                "Series deleted because no row produces them any more.",
                &self.series_deleted,
            ),
            (
                "series_rejected_total",
                "Series whose lines VictoriaMetrics refused for good (a 4xx).",
                &self.series_rejected,
            ),
            (
                "verifications_total",
                "Passes that read their family back from VictoriaMetrics and compared it with PostgreSQL.",
                &self.read_backs,
            ),
            (
                "series_verified_total",
                "Series read back and compared.",
                &self.series_verified,
            ),
            (
                "series_repaired_total",
                "Series the read-back found differing from what VictoriaMetrics acknowledged, and repaired.",
                &self.series_repaired,
            ),
            (
                "samples_missing_total",
                "Samples VictoriaMetrics acknowledged and did not hold, found by read-backs.",
                &self.samples_missing,
            ),
            (
                "samples_extra_total",
                "Samples VictoriaMetrics held and should not have (duplicates, other values, series no row produces), found by read-backs.",
                &self.samples_extra,
            ),
        ] {
            one(
                &format!("myelectricaldata_exporter_{name}"),
                "counter",
                help,
                counter.load(Relaxed) as f64,
            );
        }
        labelled(
            &mut out,
            "myelectricaldata_exporter_errors_total",
            "Failed requests and steps, by kind.",
            "kind",
            ErrorKind::ALL.map(|k| (k.as_str(), self.errors[k as usize].load(Relaxed))),
        );
        labelled(
            &mut out,
            "myelectricaldata_exporter_rows_skipped_total",
            "Malformed rows skipped, by table.",
            "table",
            Table::ALL
                .iter()
                .zip(&self.rows_skipped)
                .map(|(t, n)| (t.name(), n.load(Relaxed))),
        );
        let _ = writeln!(
            out,
            "# HELP myelectricaldata_exporter_cycles_total Export cycles, by result.\n\
             # TYPE myelectricaldata_exporter_cycles_total counter\n\
             myelectricaldata_exporter_cycles_total{{result=\"success\"}} {}\n\
             myelectricaldata_exporter_cycles_total{{result=\"failure\"}} {}",
            self.cycles_ok.load(Relaxed),
            self.cycles_failed.load(Relaxed)
        );
        let lag = self.lag(now);
        let (role, last_success, verified_at) = {
            let t = self.times();
            (t.role, t.last_success, t.verified_at)
        };
        let mut one = |name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        one(
            "myelectricaldata_exporter_last_success_timestamp_seconds",
            "When the last export cycle completed, in Unix seconds (0: none yet).",
            last_success.map_or(0.0, unix_seconds),
        );
        one(
            "myelectricaldata_exporter_last_verified_timestamp_seconds",
            "When PostgreSQL was last read for a full reconciliation that found VictoriaMetrics holding exactly the mirror, in Unix seconds (0: not yet).",
            verified_at.map_or(0.0, unix_seconds),
        );
        one(
            "myelectricaldata_exporter_lag_seconds",
            "How long VictoriaMetrics has been behind PostgreSQL: 0 while the last cycle left the mirror complete.",
            lag.as_secs_f64(),
        );
        one(
            "myelectricaldata_exporter_replication_without_dedup",
            "1 when VictoriaMetrics shows every sample twice: a replicated cluster whose vmselect lacks -dedup.minScrapeInterval (the exporter then rewrites nothing for it).",
            if self.doubled.load(Relaxed) { 1.0 } else { 0.0 },
        );
        one(
            "myelectricaldata_exporter_export_lock_held",
            "1 when this exporter holds the export lock and writes; 0 when it stands by.",
            if role == Role::Active { 1.0 } else { 0.0 },
        );
        if let Some(rss) = resident_memory_bytes() {
            one(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss as f64,
            );
        }
        out
    }
}

/// A counter with one label, one line per value.
fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, count) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
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
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text_with_every_error_kind() {
        let t = Telemetry::new();
        t.batch_sent(100);
        t.batch_sent(20);
        t.error(ErrorKind::Server);
        let text = t.render(SystemTime::now());
        assert!(text.contains("myelectricaldata_exporter_samples_sent_total 120\n"));
        assert!(text.contains("myelectricaldata_exporter_batches_sent_total 2\n"));
        assert!(text.contains("myelectricaldata_exporter_errors_total{kind=\"server\"} 1\n"));
        assert!(text.contains("myelectricaldata_exporter_errors_total{kind=\"postgres\"} 0\n"));
        assert!(text.contains(
            "myelectricaldata_exporter_rows_skipped_total{table=\"consumption_data\"} 0"
        ));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn skipped_rows_count_under_their_own_table_or_their_familys() {
        let t = Telemetry::new();
        t.row_skipped(Family::Consumption, "contract_data");
        t.row_skipped(Family::Consumption, "pdls");
        t.row_skipped(Family::Consumption, "consumption_data");
        t.row_skipped(Family::Tempo, "(several rows)");
        let text = t.render(SystemTime::now());
        for (table, n) in [
            ("consumption_data", 1),
            ("contract_data", 1),
            ("pdls", 1),
            ("tempo_days", 1),
            ("production_data", 0),
        ] {
            assert!(
                text.contains(&format!(
                    "myelectricaldata_exporter_rows_skipped_total{{table=\"{table}\"}} {n}\n"
                )),
                "{table}: {text}"
            );
        }
    }

    #[test]
    fn lag_is_zero_in_sync_and_grows_from_the_last_sync_otherwise() {
        let t = Telemetry::new();
        let read = SystemTime::now();
        t.cycle_succeeded(read, true);
        assert_eq!(t.lag(read + Duration::from_secs(50)), Duration::ZERO);
        t.cycle_failed(&"VictoriaMetrics: cannot connect");
        assert_eq!(
            t.lag(read + Duration::from_secs(50)),
            Duration::from_secs(50)
        );
        t.cycle_succeeded(read + Duration::from_secs(60), false);
        assert_eq!(
            t.lag(read + Duration::from_secs(70)),
            Duration::from_secs(70)
        );
    }

    #[test]
    fn health_fails_only_after_failing_for_longer_than_the_grace() {
        let t = Telemetry::new();
        t.set_role(Role::Active);
        let now = SystemTime::now();
        assert!(t.health(now, Duration::from_secs(300)).ok);
        t.cycle_failed(&"VictoriaMetrics: HTTP 503");
        assert!(t.health(now, Duration::from_secs(300)).ok);
        let later = t.health(now + Duration::from_secs(301), Duration::from_secs(300));
        assert!(!later.ok);
        assert!(later.text.contains("HTTP 503"), "{}", later.text);
        t.set_role(Role::Disabled);
        assert!(
            t.health(now + Duration::from_secs(301), Duration::from_secs(300))
                .ok
        );
        t.set_role(Role::Active);
        t.cycle_succeeded(now, true);
        assert!(
            t.health(now + Duration::from_secs(301), Duration::from_secs(300))
                .ok
        );
    }
}
