//! The `once` command: one full reconciliation of every family, then the
//! read-back of what it wrote until VictoriaMetrics shows it, repairing
//! what it does not. It succeeds only on a mirror it has verified.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::Family;
use crate::pass::{read_back_wait, Exporter, Outcome, PassError, Shown};
use crate::progress::Display;
use crate::source::{Source, SourceError};
use crate::vm::retry::Retry;
use crate::vm::Sink;

/// Why `once` failed.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// PostgreSQL failed before the passes.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A pass failed.
    #[error(transparent)]
    Pass(#[from] PassError),
    /// Another exporter holds the export lock on this database.
    #[error("another exporter is exporting this database (it holds the export lock); stop it or let it do the work")]
    Locked,
    /// Series are still pending after repeated passes.
    #[error(
        "{0} series could not be written completely; run again when VictoriaMetrics is healthy"
    )]
    LeftPending(u64),
    /// VictoriaMetrics did not answer the read-back queries.
    #[error("the mirror cannot be verified: VictoriaMetrics did not answer the read-back (/api/v1/query below the select URL, VICTORIAMETRICS_SELECT_URL in a cluster); see the warning above")]
    NoReadBack,
    /// Series still differ from what they should hold after repairs.
    #[error("the mirror could not be verified: {0} series still differ from PostgreSQL after repeated repairs; see the warnings above")]
    Unverified(u64),
}

/// How long after its writes `once` first reads them back: asked too soon
/// after the write, v1.150 keeps answering that a new series does not exist
/// for about 10 s; asked 2 s after, it shows it at once (measured).
const FIRST_READ_BACK: Duration = Duration::from_secs(2);

/// Rounds of read-back and repair `once` runs before it gives up.
const VERIFY_ROUNDS: u32 = 4;

/// Failed attempts after which `once` gives up on a request: it is run by
/// hand or by a timer, and should end rather than wait out an outage.
const ATTEMPTS: u32 = 6;

/// One full reconciliation of every family, read back until verified; long
/// sends report their progress as `display` says.
pub async fn once(config: Config, display: Display) -> Result<Outcome, OnceError> {
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
            None => return Err(OnceError::Locked),
        }
    };
    let delay = config.verify_delay;
    let retry =
        Retry::new(config.retry_cap(), CancellationToken::new()).with_attempt_limit(Some(ATTEMPTS));
    let exporter = Exporter::new(source, sink, config, retry).with_progress(display);
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
    // again, waiting longer each round.
    for round in 0..=VERIFY_ROUNDS {
        if last.iter().any(|(_, o)| !o.read_back) {
            return Err(OnceError::NoReadBack);
        }
        last.retain(|(_, o)| !o.verified_clean());
        if last.is_empty() {
            break;
        }
        let wait = read_back_wait(delay, round);
        tracing::info!(
            families = ?last.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
            within = ?wait,
            "reading back what was written"
        );
        last = unshown_by(&exporter, last, Instant::now() + wait).await?;
        if last.is_empty() {
            break;
        }
        if round == VERIFY_ROUNDS {
            let differing = last
                .iter()
                .map(|(_, o)| o.expect.len() as u64 + o.unverified)
                .sum();
            return Err(OnceError::Unverified(differing));
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
        lines = total.lines,
        appended = total.appended,
        rewritten = total.rewritten,
        deleted = total.deleted,
        skipped = total.skipped,
        series = total.verified + total.expect.len() as u64,
        repaired = total.repaired,
        "mirror verified: VictoriaMetrics holds what PostgreSQL says"
    );
    Ok(total)
}

/// Reads back what passes wrote until VictoriaMetrics shows all of it or
/// `deadline` passes; returns the passes whose writes it does not show.
async fn unshown_by(
    exporter: &Exporter,
    mut open: Vec<(Family, Outcome)>,
    deadline: Instant,
) -> Result<Vec<(Family, Outcome)>, OnceError> {
    let wait = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(FIRST_READ_BACK.min(wait)).await;
    loop {
        let mut still = Vec::new();
        for (family, o) in open.drain(..) {
            if o.unverified > 0 || o.left_pending > 0 {
                still.push((family, o));
                continue;
            }
            match exporter.confirm(family, &o.unconfirmed()).await? {
                Shown::All => {}
                Shown::Not(_) => still.push((family, o)),
                Shown::NoReadBack => return Err(OnceError::NoReadBack),
            }
        }
        open = still;
        if open.is_empty() || Instant::now() >= deadline {
            return Ok(open);
        }
        tokio::time::sleep(Duration::from_millis(500).min(wait)).await;
    }
}

/// One pass over `family`, run again while it leaves series pending (an
/// ambiguous failed batch), so that `once` ends with every line
/// acknowledged or fails.
async fn export_acked(exporter: &Exporter, family: Family) -> Result<Outcome, OnceError> {
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
        return Err(OnceError::LeftPending(o.left_pending));
    }
    Ok(o)
}
