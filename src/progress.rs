//! Progress of a long send phase (a first backfill of years of 30-minute
//! data): lines done, rate and time left in the logs every few seconds, or
//! a progress bar when `once` runs on a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::contract::Family;

/// How often a long send phase reports in the logs.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Sends smaller than this finish before a report would help.
const BAR_FROM_LINES: u64 = 20_000;

/// How a send phase reports its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Display {
    /// Log lines every ten seconds (the daemon, `once` without a terminal).
    #[default]
    Logs,
    /// A progress bar on standard error.
    Bar,
}

/// The progress of one family's send phase.
pub struct Progress {
    family: Family,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A send phase of `total` lines for `family`.
    pub fn new(family: Family, total: u64, display: Display) -> Self {
        let bar = (display == Display::Bar && total >= BAR_FROM_LINES).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{prefix:>11} [{bar:30}] {human_pos}/{human_len} lines, {per_sec}, {eta} left",
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
            done: 0,
            started: now,
            last_log: now,
            bar,
        }
    }

    /// `done` lines of the total are acknowledged.
    pub fn update(&mut self, done: u64) {
        self.done = done.min(self.total);
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            return;
        }
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let (rate, left) = estimate(self.done, self.total, self.started.elapsed());
            tracing::info!(
                family = self.family.as_str(),
                lines = self.done,
                total = self.total,
                percent = format!("{:.1}", percent(self.done, self.total)),
                rate = format!("{rate:.0} lines/s"),
                left = ?left.map(|d| Duration::from_secs(d.as_secs())),
                "sending"
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
