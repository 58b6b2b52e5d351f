//! Progress of a long pass (a first backfill of years of 30-minute data):
//! rows read, rate and time left in the logs every ten seconds, or a
//! progress bar when `once` runs on a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::Family;

/// How often a long send phase reports in the logs.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Passes over fewer rows finish before a bar would help.
const BAR_FROM_ROWS: u64 = 20_000;

/// How a send phase reports its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Display {
    /// Log lines every ten seconds (the daemon, `once` without a terminal).
    #[default]
    Logs,
    /// A progress bar on standard error.
    Bar,
}

/// The progress of one pass: rows read of PostgreSQL's estimate, lines sent.
pub struct Progress {
    family: Family,
    total: u64,
    rows: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A pass over about `total` rows of `family` (0: unknown).
    pub fn new(family: Family, total: u64, display: Display) -> Self {
        let bar = (display == Display::Bar && total >= BAR_FROM_ROWS).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{prefix:>11} [{bar:24}] {human_pos}/~{human_len} rows, {eta} left, {msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(family.as_str());
            bar
        });
        let now = Instant::now();
        Self {
            family,
            total,
            rows: 0,
            started: now,
            last_log: now,
            bar,
        }
    }

    /// `rows` rows are read and `lines` lines acknowledged so far.
    pub fn update(&mut self, rows: u64, lines: u64) {
        self.rows = rows;
        if let Some(bar) = &self.bar {
            // The estimate may be short of the truth.
            bar.set_length(self.total.max(rows));
            bar.set_position(rows);
            bar.set_message(format!("{lines} sent"));
            return;
        }
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let elapsed = self.started.elapsed();
            if self.total == 0 {
                let rate = estimate(rows, rows, elapsed).0;
                tracing::info!(
                    family = self.family.as_str(),
                    rows,
                    rate = format!("{rate:.0} rows/s"),
                    lines_sent = lines,
                    "exporting"
                );
                return;
            }
            let total = self.total.max(rows);
            let (rate, left) = estimate(rows, total, elapsed);
            tracing::info!(
                family = self.family.as_str(),
                rows,
                total_estimate = total,
                percent = format!("{:.1}", percent(rows, total)),
                rate = format!("{rate:.0} rows/s"),
                lines_sent = lines,
                left = ?left.map(|d| Duration::from_secs(d.as_secs())).unwrap_or_default(),
                "exporting"
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn percent(done: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    }
}

/// Lines per second so far, and the time left at that rate (`None` before
/// anything is done).
fn estimate(done: u64, total: u64, elapsed: Duration) -> (f64, Option<Duration>) {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return (0.0, None);
    }
    let rate = done as f64 / secs;
    let left = total.saturating_sub(done) as f64 / rate;
    (rate, Duration::try_from_secs_f64(left).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_follows_the_rate_so_far() {
        let (rate, left) = estimate(25_000, 100_000, Duration::from_secs(10));
        assert_eq!(rate, 2500.0);
        assert_eq!(left, Some(Duration::from_secs(30)));
        assert_eq!(estimate(0, 100, Duration::from_secs(3)), (0.0, None));
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(0, 0), 100.0);
    }
}
