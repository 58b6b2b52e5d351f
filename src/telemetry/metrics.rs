//! The exporter's own metrics, each declared once, with its name, help,
//! unit and labels, in a `prometheus-client` registry that encodes them as
//! OpenMetrics text.
//!
//! The encoder appends `_total` to a counter's name and the unit to a
//! gauge's, so the names registered below lack them: the comment beside
//! each says the name served; the registry ends each help with a full
//! stop.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::model::Table;

/// The `Content-Type` of [`Metrics::encode`]'s text, which Prometheus,
/// vmagent and VictoriaMetrics' scraper read.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a request or a cycle failed, as `myelectricaldata_exporter_errors_total{kind}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Every kind, each served from the start.
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

impl EncodeLabelValue for ErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// A cycle's result, the `result` label of the cycles counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum CycleResult {
    Success,
    Failure,
}

impl EncodeLabelValue for CycleResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            CycleResult::Success => "success",
            CycleResult::Failure => "failure",
        }
        .encode(encoder)
    }
}

/// A source table, as the `table` label names it (its PostgreSQL name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TableName(pub Table);

impl EncodeLabelValue for TableName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.0.name().encode(encoder)
    }
}

/// `{kind="…"}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByKind {
    pub kind: ErrorKind,
}

/// `{table="…"}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByTable {
    pub table: TableName,
}

/// `{result="…"}`
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ByResult {
    pub result: CycleResult,
}

/// A gauge of seconds (Unix times, durations).
pub(super) type Seconds = Gauge<f64, AtomicU64>;

/// The metrics, and the registry that encodes them.
#[derive(Debug)]
pub(super) struct Metrics {
    registry: Registry,
    pub samples_sent: Counter,
    pub batches_sent: Counter,
    pub retries: Counter,
    pub series_rewritten: Counter,
    pub series_appended: Counter,
    pub series_deleted: Counter,
    pub series_rejected: Counter,
    pub verifications: Counter,
    pub series_verified: Counter,
    pub series_repaired: Counter,
    pub samples_missing: Counter,
    pub samples_extra: Counter,
    pub errors: Family<ByKind, Counter>,
    pub rows_skipped: Family<ByTable, Counter>,
    pub cycles: Family<ByResult, Counter>,
    pub start_time: Seconds,
    pub last_success: Seconds,
    pub last_verified: Seconds,
    pub lag: Seconds,
    pub replication_without_dedup: Gauge,
    pub export_lock_held: Gauge,
    /// `None` where the resident memory cannot be read (not Linux).
    pub resident_memory: Option<Gauge>,
}

impl Metrics {
    /// Every metric registered, at zero; every error kind, table and cycle
    /// result served from the start, so that rates and alerts see a series
    /// before its first increment. `with_memory`: serve the resident memory.
    pub fn new(with_memory: bool) -> Self {
        let mut r = Registry::default();
        let up = Gauge::<i64>::default();
        up.set(1);
        // myelectricaldata_exporter_up
        r.register(
            "myelectricaldata_exporter_up",
            "1 while the exporter runs",
            up,
        );
        let start_time = Seconds::default();
        // myelectricaldata_exporter_start_time_seconds
        r.register_with_unit(
            "myelectricaldata_exporter_start_time",
            "When the exporter started, in Unix seconds",
            Unit::Seconds,
            start_time.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        // Each served with `_total` appended.
        let samples_sent = counter(
            "myelectricaldata_exporter_samples_sent",
            "Samples acknowledged by VictoriaMetrics",
        );
        let batches_sent = counter(
            "myelectricaldata_exporter_batches_sent",
            "Batches acknowledged by VictoriaMetrics",
        );
        let retries = counter(
            "myelectricaldata_exporter_retries",
            "Requests to VictoriaMetrics tried again after a failure",
        );
        let series_rewritten = counter(
            "myelectricaldata_exporter_series_rewritten",
            "Series deleted and written again in full (corrections, deleted rows)",
        );
        let series_appended = counter(
            "myelectricaldata_exporter_series_appended",
            "Series that received new samples after those they held",
        );
        let series_deleted = counter(
            "myelectricaldata_exporter_series_deleted",
            "Series deleted because no row produces them any more",
        );
        let series_rejected = counter(
            "myelectricaldata_exporter_series_rejected",
            "Series whose lines VictoriaMetrics refused for good (a 4xx)",
        );
        let verifications = counter(
            "myelectricaldata_exporter_verifications",
            "Passes that read their family back from VictoriaMetrics and compared it with PostgreSQL",
        );
        let series_verified = counter(
            "myelectricaldata_exporter_series_verified",
            "Series read back and compared",
        );
        let series_repaired = counter(
            "myelectricaldata_exporter_series_repaired",
            "Series the read-back found differing from what VictoriaMetrics acknowledged, and repaired",
        );
        let samples_missing = counter(
            "myelectricaldata_exporter_samples_missing",
            "Samples VictoriaMetrics acknowledged and did not hold, found by read-backs",
        );
        let samples_extra = counter(
            "myelectricaldata_exporter_samples_extra",
            "Samples VictoriaMetrics held and should not have (duplicates, other values, series no row produces), found by read-backs",
        );
        let errors = Family::<ByKind, Counter>::default();
        for kind in ErrorKind::ALL {
            errors.get_or_create_owned(&ByKind { kind });
        }
        // myelectricaldata_exporter_errors_total{kind}
        r.register(
            "myelectricaldata_exporter_errors",
            "Failed requests and steps, by kind",
            errors.clone(),
        );
        let rows_skipped = Family::<ByTable, Counter>::default();
        for table in Table::ALL {
            rows_skipped.get_or_create_owned(&ByTable {
                table: TableName(table),
            });
        }
        // myelectricaldata_exporter_rows_skipped_total{table}
        r.register(
            "myelectricaldata_exporter_rows_skipped",
            "Malformed rows skipped, by table",
            rows_skipped.clone(),
        );
        let cycles = Family::<ByResult, Counter>::default();
        for result in [CycleResult::Success, CycleResult::Failure] {
            cycles.get_or_create_owned(&ByResult { result });
        }
        // myelectricaldata_exporter_cycles_total{result}
        r.register(
            "myelectricaldata_exporter_cycles",
            "Export cycles, by result",
            cycles.clone(),
        );
        let mut seconds = |name: &str, help: &str| {
            let g = Seconds::default();
            r.register_with_unit(name, help, Unit::Seconds, g.clone());
            g
        };
        // Each served with `_seconds` appended.
        let last_success = seconds(
            "myelectricaldata_exporter_last_success_timestamp",
            "When the last export cycle completed, in Unix seconds (0: none yet)",
        );
        let last_verified = seconds(
            "myelectricaldata_exporter_last_verified_timestamp",
            "When PostgreSQL was last read for a full reconciliation that found VictoriaMetrics holding exactly the mirror, in Unix seconds (0: not yet)",
        );
        let lag = seconds(
            "myelectricaldata_exporter_lag",
            "How long VictoriaMetrics has been behind PostgreSQL: 0 while the last cycle left the mirror complete",
        );
        let replication_without_dedup = Gauge::default();
        r.register(
            "myelectricaldata_exporter_replication_without_dedup",
            "1 when VictoriaMetrics shows every sample twice: a replicated cluster whose vmselect lacks -dedup.minScrapeInterval (the exporter then rewrites nothing for it)",
            replication_without_dedup.clone(),
        );
        let export_lock_held = Gauge::default();
        r.register(
            "myelectricaldata_exporter_export_lock_held",
            "1 when this exporter holds the export lock and writes; 0 when it stands by",
            export_lock_held.clone(),
        );
        let resident_memory = with_memory.then(|| {
            let g = Gauge::default();
            // process_resident_memory_bytes
            r.register_with_unit(
                "process_resident_memory",
                "Resident memory size in bytes",
                Unit::Bytes,
                g.clone(),
            );
            g
        });
        Self {
            registry: r,
            samples_sent,
            batches_sent,
            retries,
            series_rewritten,
            series_appended,
            series_deleted,
            series_rejected,
            verifications,
            series_verified,
            series_repaired,
            samples_missing,
            samples_extra,
            errors,
            rows_skipped,
            cycles,
            start_time,
            last_success,
            last_verified,
            lag,
            replication_without_dedup,
            export_lock_held,
            resident_memory,
        }
    }

    /// The metrics as OpenMetrics text, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail, nor can these label values.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
