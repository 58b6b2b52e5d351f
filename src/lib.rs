//! myelectricaldata-vm-exporter keeps a VictoriaMetrics database an exact
//! mirror of the electricity data the MyElectricalData client stores in
//! PostgreSQL. The contract is `SPEC.md`; the README tells how to run it.
//!
//! # Layout
//!
//! Modules from the bottom up; each imports only those above it (or on its
//! own line): no import circle.
//!
//! - [`model`]: the pure core, rows in and series out. The family table
//!   ([`model::family`]: each family's metrics and tables, said once), samples
//!   and series, labels, local time and daylight saving
//!   ([`model::calendar`]), off-peak hours, tariff periods, the price grid
//!   and the days' costs ([`model::prices`], [`model::costs`]), each
//!   meter's info ([`model::meter`]), what a computation skipped
//!   ([`model::report`]), Prometheus text lines. No I/O; imports nothing
//!   above it.
//! - [`config`]: the environment, validated at start, with how each server
//!   is reached: VictoriaMetrics' authentication and TLS files
//!   (`config::remote`), `DATABASE_URL`'s TLS parameters
//!   (`config::pg_tls`).
//! - [`telemetry`]: self-monitoring counters and the health state machine; a
//!   leaf that other modules record into.
//! - [`source`]: PostgreSQL: MyElectricalData's tables streamed as they are,
//!   change tokens, the export lock, the migrations; a TLS refusal read into
//!   what to do (`source::tls`).
//! - [`state`]: what VictoriaMetrics holds, summarised per series and day in
//!   the `vm_export_*` tables (read a group of series at a time, so that
//!   memory does not grow with the history), and the plan of a series:
//!   unchanged, append, rewrite; what each PDL's rows were when last read,
//!   and what that read skipped.
//! - [`series`]: a family's rows read into series, one PDL at a time.
//! - [`verify`]: read-back judged, purely: expected against observed, a
//!   verdict, a diagnosis, a repair.
//! - [`vm`]: the VictoriaMetrics client: import (the pipelined
//!   [`vm::batch::Batcher`]), delete, query, export and the read-back queries,
//!   with one retry policy ([`vm::retry`]).
//! - [`pass`]: one pass over a family in named stages, read, plan, write,
//!   confirm; it carries the crash-safety protocol (pending marks, commit on
//!   acknowledgement, tainted batches on ambiguous retries, the measured
//!   delete settle). [`progress`] reports on long sends.
//! - The commands, each with its own error: [`daemon`] (`run`: poll, full
//!   reconciliation, follow-up of unconfirmed writes, export lock, shutdown)
//!   with [`listener`] serving `/health` and `/metrics`; [`once`]; [`check`]
//!   with [`audit`]. `main.rs` parses the command line and maps errors to
//!   exit codes.
//!
//! Why this shape: the core that turns rows into series is pure and tested
//! alone; what a family is lives in one table the rest reads; a pass reads
//! top-down; errors below the commands say whether a retry may help, and
//! only the commands decide what to do about them.

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
