//! The `once` command: one full reconciliation of every family, then the
//! read-back of what it wrote until VictoriaMetrics shows it, repairing
//! what it does not.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::export::{ExportError, Exporter, Outcome};
use crate::model::Family;
use crate::sink::Sink;
use crate::source::Source;

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
