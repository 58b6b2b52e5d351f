//! The daemon (the `run` command): poll for changes, reconcile in full on a
//! schedule, follow up what passes wrote until VictoriaMetrics shows it,
//! back off on failure, stop on the shutdown signal. What it remembers of
//! each family, and when one is due, is in `clock`.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::listener::ListenError;
use crate::model::{Family, FAMILIES};
use crate::pass::{Exporter, PassError, Shown};
use crate::source::{ExportLock, Source, SourceError};
use crate::telemetry::{self, ErrorKind, Role};
use crate::vm::retry::{backoff, Retry};
use crate::vm::Sink;

mod clock;

use clock::{follow_up, FamilyClock, Outstanding};

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The self-monitoring listener could not start.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// `DATABASE_URL` cannot be used.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let cancel = CancellationToken::new();
    let _stop_tasks = cancel.clone().drop_guard();
    if let Some(addr) = config.listen_addr {
        // Exports that keep failing for three polls make the daemon unhealthy.
        let grace = (config.poll_interval * 3).max(Duration::from_secs(5));
        let bound = crate::listener::start(addr, grace, cancel.clone()).await?;
        tracing::info!(address = %bound, "serving /health and /metrics");
    }
    let work = async {
        if !config.enabled {
            telemetry::global().set_role(Role::Disabled);
            tracing::info!(
                "export is disabled (VICTORIAMETRICS_ENABLED=false); idling until stopped"
            );
            std::future::pending::<()>().await;
        }
        let source = Source::connect_lazy(&config.database_url)?;
        let sink = Sink::new(&config.vm);
        let retry = Retry::new(config.retry_cap(), cancel.clone());
        migrate_until_done(&source, &retry).await;
        let exporter = Exporter::new(source, sink, config.clone(), retry);
        poll_loop(&exporter, &config).await
    };
    tokio::select! {
        result = work => result,
        () = shutdown => {
            // Dropping the pass mid-way is safe: every series being written
            // is marked pending and is rewritten at the next start.
            cancel.cancel();
            tracing::info!("stopping");
            Ok(())
        }
    }
}

/// Applies the migrations, retrying until they pass or the daemon stops:
/// the database may start after the exporter.
async fn migrate_until_done(source: &Source, retry: &Retry) {
    let _ = retry
        .run(
            "preparing the database",
            |_: &SourceError| true,
            || {},
            || source.migrate(),
        )
        .await;
}

/// Polls until the process stops: only the holder of the export lock
/// exports; the others stand by.
async fn poll_loop(exporter: &Exporter, config: &Config) -> Result<(), DaemonError> {
    let mut clocks: [FamilyClock; FAMILIES] = Default::default();
    let mut next_full = Instant::now();
    let mut failures: u32 = 0;
    tracing::info!(
        url = %exporter.sink_url(),
        poll_interval = ?config.poll_interval,
        reconcile_interval = ?config.reconcile_interval,
        "exporter started"
    );
    let mut lock: Option<ExportLock> = None;
    let mut standing_by = false;
    loop {
        // Only the holder of the export lock exports: replicas stand by and
        // take over within a poll interval when the holder's connection dies.
        let held = match &mut lock {
            Some(l) => l.is_held().await,
            None => false,
        };
        if !held {
            if lock.take().is_some() {
                tracing::warn!("lost the database connection holding the export lock");
            }
            match exporter.source().try_lock_export().await {
                Ok(Some(l)) => {
                    tracing::info!(
                        "holding the export lock: this exporter writes to VictoriaMetrics"
                    );
                    telemetry::global().set_role(Role::Active);
                    // Another replica may have written until now: start afresh.
                    exporter.took_over(l.pid);
                    lock = Some(l);
                    standing_by = false;
                    clocks = Default::default();
                    next_full = Instant::now();
                }
                Ok(None) => {
                    telemetry::global().set_role(Role::Standby);
                    telemetry::global().cycle_succeeded(SystemTime::now(), true);
                    if !standing_by {
                        tracing::info!("another exporter holds the export lock; standing by");
                        standing_by = true;
                    }
                    tokio::time::sleep(config.poll_interval).await;
                    continue;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures - 1, config.poll_interval);
                    tracing::error!(error = %e, retry_in = ?wait, "cannot reach PostgreSQL");
                    telemetry::global().error(ErrorKind::Postgres);
                    telemetry::global().cycle_failed(&e);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
        }
        let full = Instant::now() >= next_full;
        let read_at = SystemTime::now();
        let ok = match cycle(exporter, config, &mut clocks, full).await {
            Ok(in_sync) => {
                if full {
                    next_full = Instant::now() + config.reconcile_interval;
                }
                failures = 0;
                telemetry::global().cycle_succeeded(read_at, in_sync);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "export cycle failed; will retry");
                if matches!(e, PassError::Source(_)) {
                    // VictoriaMetrics' errors are counted where they happen.
                    telemetry::global().error(ErrorKind::Postgres);
                }
                telemetry::global().cycle_failed(&e);
                failures = failures.saturating_add(1);
                false
            }
        };
        let wait = if ok {
            config.poll_interval
        } else {
            backoff(failures - 1, config.poll_interval)
        };
        tokio::time::sleep(wait).await;
    }
}

/// Calls [`release_memory`] when a cycle that exported ends, however it ends.
struct TrimOnDrop;

impl Drop for TrimOnDrop {
    fn drop(&mut self) {
        release_memory();
    }
}

/// Gives the memory a full pass used back to the system: glibc keeps freed
/// heap for reuse, and a daemon that read a million rows an hour ago would
/// otherwise stay at its peak while it idles.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // takes no pointer and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One cycle: the families that changed (or all of them, on a full
/// reconciliation). `Ok(true)` when it left nothing pending.
async fn cycle(
    exporter: &Exporter,
    config: &Config,
    clocks: &mut [FamilyClock; FAMILIES],
    full: bool,
) -> Result<bool, PassError> {
    let read_at = SystemTime::now();
    read_back_outstanding(exporter, clocks).await;
    let tokens = exporter.source().change_tokens().await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let due: Vec<usize> = (0..FAMILIES)
        .filter(|&i| full || clocks[i].is_due(Family::ALL[i], &tokens, now_ms))
        .collect();
    if due.is_empty() {
        tracing::debug!("nothing changed");
        return Ok(clocks.iter().all(|c| !c.failed));
    }
    exporter.prepare().await?;
    let _trim = TrimOnDrop;
    let mut first_error = None;
    let mut all_verified = full;
    for i in due {
        let family = Family::ALL[i];
        match exporter.export(family).await {
            Ok(o) => {
                all_verified &= o.verified_clean();
                let streak = if o.repaired > 0 {
                    clocks[i].repair_streak.saturating_add(1)
                } else {
                    0
                };
                let wait = follow_up(
                    &o,
                    clocks[i].repair_streak,
                    config.verify_delay,
                    config.reconcile_interval,
                )
                .map(|w| Instant::now() + w);
                clocks[i] = FamilyClock {
                    tokens: Some(tokens),
                    next_held_back: o.next_held_back,
                    failed: o.left_pending > 0,
                    verify_at: wait.filter(|_| o.unverified > 0),
                    outstanding: wait.filter(|_| !o.expect.is_empty()).map(|deadline| {
                        Outstanding {
                            written: o.unconfirmed(),
                            deadline,
                        }
                    }),
                    repair_streak: streak,
                };
            }
            Err(PassError::Cancelled) => return Err(PassError::Cancelled),
            Err(e) => {
                tracing::error!(family = family.as_str(), error = %e, "export failed");
                clocks[i].failed = true;
                all_verified = false;
                first_error.get_or_insert(e);
            }
        }
    }
    if all_verified {
        telemetry::global().verified(read_at);
    }
    first_error.map_or(Ok(clocks.iter().all(|c| !c.failed)), Err)
}

/// Reads back what the last passes wrote: a family VictoriaMetrics shows as
/// written is verified; one it does not show by the deadline is due for a
/// pass that compares each series and repairs.
async fn read_back_outstanding(exporter: &Exporter, clocks: &mut [FamilyClock; FAMILIES]) {
    for (family, clock) in Family::ALL.into_iter().zip(clocks.iter_mut()) {
        let Some(out) = &clock.outstanding else {
            continue;
        };
        match exporter.confirm(family, &out.written).await {
            Ok(Shown::All) => {
                tracing::debug!(
                    family = family.as_str(),
                    series = out.written.expect.len(),
                    "read back: VictoriaMetrics holds what was written"
                );
                clock.outstanding = None;
                clock.repair_streak = 0;
            }
            Ok(Shown::Not(n)) if Instant::now() >= out.deadline => {
                tracing::info!(family = family.as_str(), series = n, "read back: VictoriaMetrics does not show all that was written; comparing series one by one");
                clock.outstanding = None;
                clock.verify_at = Some(Instant::now());
            }
            Ok(Shown::Not(_)) => {}
            Ok(Shown::NoReadBack) => clock.outstanding = None,
            Err(e) => {
                tracing::warn!(family = family.as_str(), error = %e, "cannot read VictoriaMetrics back; trying again at the next poll")
            }
        }
    }
}
