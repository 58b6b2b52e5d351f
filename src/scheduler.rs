//! The daemon's loop: poll for changes, reconcile in full on a schedule,
//! back off on failure, stop on the shutdown signal.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::batch::backoff;
use crate::config::Config;
use crate::contract::{Family, FAMILIES, FUTURE_WINDOW_MS};
use crate::export::{ExportError, Exporter, Outcome};
use crate::sink::Sink;
use crate::source::{ChangeTokens, ExportLock, Source};
use crate::telemetry::{self, ErrorKind, Role};

/// The tables (indexes in [`crate::source::TABLES`]) a family is computed from.
fn tables_of(family: Family) -> &'static [usize] {
    match family {
        // With the tariff periods of its load curve: the colours, and the
        // contracts' off-peak hours.
        Family::Consumption => &[0, 2, 6, 7],
        Family::Production => &[1],
        // Tempo series exist for each PDL of consumption_data.
        Family::Tempo => &[2, 0],
        Family::Ecowatt => &[3],
        Family::MaxPower => &[4],
        Family::ZenFlex => &[5],
    }
}

/// What the loop remembers of a family between polls.
#[derive(Debug, Default, Clone)]
struct FamilyClock {
    /// Change tokens read just before the last successful pass.
    tokens: Option<ChangeTokens>,
    /// The earliest held-back sample of the last pass.
    next_held_back: Option<i64>,
    /// The last pass failed.
    failed: bool,
    /// When to run a pass to compare series it could not read back yet
    /// (written too recently by another pass or process).
    verify_at: Option<Instant>,
    /// What the last pass wrote, read back at each poll until
    /// VictoriaMetrics shows it.
    outstanding: Option<Outstanding>,
    /// Consecutive passes that had to repair what VictoriaMetrics held: the
    /// next read-back waits twice as long after each.
    repair_streak: u32,
}

/// Series a pass wrote, and until when VictoriaMetrics may take to show them
/// before a pass compares them one by one and repairs.
#[derive(Debug, Clone)]
struct Outstanding {
    expect: Vec<(String, crate::verify::Expected)>,
    at_ms: i64,
    deadline: Instant,
}

/// When to read a family back after a pass: never when the pass proved the
/// family exact; else once VictoriaMetrics shows the pass's writes
/// (`delay`), doubling after each pass that had to repair again, at most
/// `cap` (the full reconciliation's interval).
fn follow_up(o: &Outcome, repair_streak: u32, delay: Duration, cap: Duration) -> Option<Duration> {
    if !(o.wrote() || o.repaired > 0 || o.unverified > 0) {
        return None;
    }
    // A margin past the delay, so that the last series written is old enough.
    let wait = (delay + Duration::from_millis(500)).saturating_mul(1 << repair_streak.min(8));
    Some(wait.min(cap.max(delay)))
}

impl FamilyClock {
    fn is_due(&self, family: Family, tokens: &ChangeTokens, now_ms: i64) -> bool {
        if self.failed || self.verify_at.is_some_and(|t| t <= Instant::now()) {
            return true;
        }
        let Some(seen) = &self.tokens else {
            return true;
        };
        if tables_of(family).iter().any(|&t| seen[t] != tokens[t]) {
            return true;
        }
        self.next_held_back
            .is_some_and(|ts| ts <= now_ms.saturating_add(FUTURE_WINDOW_MS))
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ExportError> {
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
        migrate_until_done(&source, &config, &cancel).await;
        let exporter = Exporter::new(source, sink, config.clone(), cancel.clone());
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

async fn migrate_until_done(source: &Source, config: &Config, cancel: &CancellationToken) {
    let mut attempt = 0;
    loop {
        match source.migrate().await {
            Ok(()) => return,
            Err(e) => {
                let delay = backoff(attempt, config.poll_interval.max(Duration::from_secs(1)));
                tracing::error!(error = %e, retry_in = ?delay, "cannot prepare the database; retrying");
                attempt += 1;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn poll_loop(exporter: &Exporter, config: &Config) -> Result<(), ExportError> {
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
                if matches!(e, ExportError::Source(_)) {
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
) -> Result<bool, ExportError> {
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
        let started = Instant::now();
        match exporter.export(family).await {
            Ok(o) => {
                if o.left_pending > 0 {
                    tracing::info!(
                        family = family.as_str(),
                        series = o.left_pending,
                        "series left pending; rewriting them at the next poll"
                    );
                }
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
                            expect: o.expect.clone(),
                            at_ms: o.expect_at,
                            deadline,
                        }
                    }),
                    repair_streak: streak,
                };
                if o.repaired > 0 {
                    tracing::warn!(
                        family = family.as_str(),
                        series = o.repaired,
                        missing = o.samples_missing,
                        extra = o.samples_extra,
                        "read-back found VictoriaMetrics differing from what it acknowledged; repaired, reading back again later"
                    );
                }
                if o.lines > 0 || o.deleted > 0 || o.skipped > 0 || o.rejected > 0 {
                    tracing::info!(
                        family = family.as_str(),
                        lines = o.lines,
                        batches = o.batches,
                        appended = o.appended,
                        rewritten = o.rewritten,
                        deleted = o.deleted,
                        skipped = o.skipped,
                        rejected = o.rejected,
                        elapsed = ?started.elapsed(),
                        "exported"
                    );
                }
            }
            Err(ExportError::Cancelled) => return Err(ExportError::Cancelled),
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
        match exporter.unmatched(family, &out.expect, out.at_ms).await {
            Ok(Some(0)) => {
                tracing::debug!(
                    family = family.as_str(),
                    series = out.expect.len(),
                    "read back: VictoriaMetrics holds what was written"
                );
                clock.outstanding = None;
                clock.repair_streak = 0;
            }
            Ok(Some(n)) if Instant::now() >= out.deadline => {
                tracing::info!(family = family.as_str(), series = n, "read back: VictoriaMetrics does not show all that was written; comparing series one by one");
                clock.outstanding = None;
                clock.verify_at = Some(Instant::now());
            }
            Ok(Some(_)) => {}
            Ok(None) => clock.outstanding = None,
            Err(e) => {
                tracing::warn!(family = family.as_str(), error = %e, "cannot read VictoriaMetrics back; trying again at the next poll")
            }
        }
    }
}

/// One full reconciliation of every family, as `once` runs it; long sends
/// report their progress as `display` says.
pub async fn once(
    config: Config,
    display: crate::progress::Display,
) -> Result<Outcome, ExportError> {
    let source = Source::connect_lazy(&config.database_url)?;
    source.migrate().await?;
    let sink = Sink::new(&config.vm);
    // A process killed a moment ago may still hold the lock for a few
    // milliseconds; a running daemon holds it for good.
    let deadline = Instant::now() + Duration::from_secs(10);
    let _lock = loop {
        match source.try_lock_export().await? {
            Some(lock) => break lock,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            None => return Err(ExportError::Locked),
        }
    };
    let delay = config.verify_delay;
    let exporter = Exporter::new(source, sink, config, CancellationToken::new())
        .with_attempt_limit(6)
        .with_progress(display);
    exporter.prepare().await?;
    let mut total = Outcome::default();
    let mut last: Vec<(Family, Outcome)> = Vec::new();
    for family in Family::ALL {
        let o = export_acked(&exporter, family).await?;
        total.add(&o);
        last.push((family, o));
    }
    // Read back what was written until VictoriaMetrics shows it; what it
    // does not show in time is repaired by another pass, and read back
    // again, waiting longer each round: `once` succeeds only on a mirror it
    // has verified.
    for round in 0..=VERIFY_ROUNDS {
        if last.iter().any(|(_, o)| !o.read_back) {
            return Err(ExportError::NoReadBack);
        }
        last.retain(|(_, o)| !o.verified_clean());
        if last.is_empty() {
            break;
        }
        let wait = delay.saturating_mul(1 << round);
        tracing::info!(
            families = ?last.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            within = ?wait,
            "reading back what was written"
        );
        let deadline = Instant::now() + wait;
        // Asked too soon after the write, v1.150 keeps answering that a new
        // series does not exist for about 10 s; asked 2 s after, it shows it
        // at once (measured).
        tokio::time::sleep(FIRST_READ_BACK.min(wait)).await;
        loop {
            let mut open = Vec::new();
            for (family, o) in last.drain(..) {
                if !shown(&exporter, family, &o).await? {
                    open.push((family, o));
                }
            }
            last = open;
            if last.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500).min(wait)).await;
        }
        if last.is_empty() {
            break;
        }
        if round == VERIFY_ROUNDS {
            let differing = last
                .iter()
                .map(|(_, o)| o.expect.len() as u64 + o.unverified)
                .sum();
            return Err(ExportError::Unverified(differing));
        }
        // Not shown in time: a pass compares every series and repairs.
        let again: Vec<Family> = last.drain(..).map(|(f, _)| f).collect();
        for family in again {
            let o = export_acked(&exporter, family).await?;
            total.add(&o);
            last.push((family, o));
        }
    }
    tracing::info!(
        series = total.verified + total.expect.len() as u64,
        repaired = total.repaired,
        "mirror verified: VictoriaMetrics holds what PostgreSQL says"
    );
    Ok(total)
}

/// Whether VictoriaMetrics shows every series a pass wrote as written, and
/// the pass left no series unread.
async fn shown(exporter: &Exporter, family: Family, o: &Outcome) -> Result<bool, ExportError> {
    if o.unverified > 0 || o.left_pending > 0 {
        return Ok(false);
    }
    match exporter.unmatched(family, &o.expect, o.expect_at).await? {
        Some(0) => Ok(true),
        Some(_) => Ok(false),
        None => Err(ExportError::NoReadBack),
    }
}

/// How long after its writes `once` first reads them back.
const FIRST_READ_BACK: Duration = Duration::from_secs(2);

/// Rounds of read-back and repair `once` runs before it gives up.
const VERIFY_ROUNDS: u32 = 4;

/// One pass over `family`, run again while it leaves series pending (an
/// ambiguous failed batch), so that `once` ends with every line
/// acknowledged or fails.
async fn export_acked(exporter: &Exporter, family: Family) -> Result<Outcome, ExportError> {
    let mut o = exporter.export(family).await?;
    for _ in 0..3 {
        if o.left_pending == 0 {
            break;
        }
        let again = exporter.export(family).await?;
        o.add(&again);
        o.left_pending = again.left_pending;
    }
    if o.left_pending > 0 {
        return Err(ExportError::LeftPending(o.left_pending));
    }
    tracing::info!(
        family = family.as_str(),
        lines = o.lines,
        appended = o.appended,
        rewritten = o.rewritten,
        deleted = o.deleted,
        skipped = o.skipped,
        verified = o.verified,
        repaired = o.repaired,
        "exported"
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_due_when_one_of_its_tables_moved() {
        let tokens: ChangeTokens = [
            Some((1, 10)),
            Some((2, 0)),
            Some((3, 5)),
            Some((4, 1)),
            None,
            Some((6, 2)),
            Some((7, 3)),
            None,
        ];
        let clock = FamilyClock {
            tokens: Some(tokens),
            ..Default::default()
        };
        assert!(!clock.is_due(Family::Tempo, &tokens, 0));
        let mut moved = tokens;
        moved[0] = Some((1, 11));
        assert!(clock.is_due(Family::Consumption, &moved, 0));
        assert!(clock.is_due(Family::Tempo, &moved, 0));
        assert!(!clock.is_due(Family::Production, &moved, 0));
        assert!(!clock.is_due(Family::Ecowatt, &moved, 0));
        // A colour or a contract changed: the consumption family's tariff
        // periods read them.
        let mut colour = tokens;
        colour[2] = Some((3, 6));
        assert!(clock.is_due(Family::Consumption, &colour, 0));
        assert!(!clock.is_due(Family::Production, &colour, 0));
        let mut contract = tokens;
        contract[6] = Some((7, 4));
        assert!(clock.is_due(Family::Consumption, &contract, 0));
        assert!(!clock.is_due(Family::Tempo, &contract, 0));
        // The pdls table appeared.
        let mut pdls = tokens;
        pdls[7] = Some((8, 0));
        assert!(clock.is_due(Family::Consumption, &pdls, 0));
    }

    #[test]
    fn a_held_back_sample_makes_its_family_due_once_inside_the_window() {
        let tokens: ChangeTokens = [None; crate::source::TABLES.len()];
        let clock = FamilyClock {
            tokens: Some(tokens),
            next_held_back: Some(FUTURE_WINDOW_MS + 10),
            ..Default::default()
        };
        assert!(!clock.is_due(Family::Ecowatt, &tokens, 9));
        assert!(clock.is_due(Family::Ecowatt, &tokens, 10));
    }

    #[test]
    fn a_failed_or_never_run_family_is_due() {
        let tokens: ChangeTokens = [None; crate::source::TABLES.len()];
        assert!(FamilyClock::default().is_due(Family::Consumption, &tokens, 0));
        let clock = FamilyClock {
            tokens: Some(tokens),
            failed: true,
            ..Default::default()
        };
        assert!(clock.is_due(Family::Consumption, &tokens, 0));
    }

    #[test]
    fn a_family_is_read_back_after_it_wrote_and_later_after_each_repair() {
        let delay = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        let quiet = Outcome {
            read_back: true,
            ..Default::default()
        };
        assert_eq!(follow_up(&quiet, 0, delay, cap), None);
        let wrote = Outcome {
            lines: 5,
            ..quiet.clone()
        };
        assert_eq!(
            follow_up(&wrote, 0, delay, cap),
            Some(Duration::from_millis(2500))
        );
        let repaired = Outcome {
            repaired: 1,
            ..quiet.clone()
        };
        assert_eq!(
            follow_up(&repaired, 2, delay, cap),
            Some(Duration::from_secs(10))
        );
        assert_eq!(follow_up(&repaired, 20, delay, cap), Some(cap));
        let clock = FamilyClock {
            tokens: Some([None; crate::source::TABLES.len()]),
            verify_at: Some(Instant::now()),
            ..Default::default()
        };
        assert!(clock.is_due(Family::Ecowatt, &[None; crate::source::TABLES.len()], 0));
    }
}
