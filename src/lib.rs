//! myelectricaldata-vm-exporter keeps a VictoriaMetrics database an exact
//! mirror of the electricity data the MyElectricalData client stores in
//! PostgreSQL. The contract is `SPEC.md`; the README tells how to run it.
//!
//! # Layout
//!
//! The pipeline, one module per stage:
//!
//! - [`config`]: the `VICTORIAMETRICS_*` environment, validated at start.
//! - [`source`]: the PostgreSQL source, MyElectricalData's tables as they are,
//!   and the migrations.
//! - [`calendar`]: local times (daylight saving: `fold=0` for real times,
//!   the true start of a load-curve label) and Tempo seasons.
//! - [`contract`]: the metrics of the spec, computed from rows into series,
//!   and rendered as Prometheus text lines.
//! - [`tariff`]: tariff periods, each day's load-curve energy split into
//!   peak and off-peak hours, by calendar day and by Tempo day; computed
//!   from the consumption family's rows as they stream by.
//! - [`state`]: what VictoriaMetrics holds, summarised per series and day in
//!   the `vm_export_*` tables, and the plan: unchanged, append or rewrite.
//! - [`batch`] and [`sink`]: lines in batches, posted to VictoriaMetrics with
//!   retries; series deletion and read-back.
//! - [`series`]: a family's series, read from the source through the contract.
//! - [`export`]: one pass over a family: plan, delete, send, acknowledge;
//!   [`progress`] reports on long sends.
//! - [`scheduler`]: the daemon's loop: poll, full reconciliation, shutdown.
//! - [`telemetry`] and [`listener`]: self-monitoring, `/health` and
//!   `/metrics` on `VICTORIAMETRICS_HTTP_LISTEN_ADDR`.
//! - [`verify`]: read-back: each family's count and sum per series from
//!   VictoriaMetrics, compared with what it should hold, and what to repair.
//! - [`check`]: the `check` command's checklist; [`audit`] compares the
//!   whole mirror for it.

pub mod audit;
pub mod check;
pub mod config;
pub mod daemon;
pub mod listener;
pub mod model;
pub mod once;
pub mod pass;
pub mod progress;
pub mod series;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod verify;
pub mod vm;
