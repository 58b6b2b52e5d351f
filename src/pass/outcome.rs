//! What a pass reports: its outcome, or why it did not complete.

use std::time::Duration;

use crate::model::Family;
use crate::source::SourceError;
use crate::telemetry::PassCounts;
use crate::verify::Expected;
use crate::vm::batch::BatchError;
use crate::vm::retry::Cancelled;
use crate::vm::SinkError;

/// Why a pass did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// PostgreSQL failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// VictoriaMetrics failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Shutdown interrupted the pass.
    #[error("stopped before the pass completed")]
    Cancelled,
    /// The export lock's connection dropped during the pass.
    #[error("lost the export lock during the pass; another exporter may have taken over")]
    LostLock,
}

impl PassError {
    /// Whether running the pass again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PassError::Source(_) | PassError::LostLock => true,
            PassError::Sink(e) => e.is_retryable(),
            PassError::Cancelled => false,
        }
    }
}

impl From<BatchError> for PassError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Sink(e) => PassError::Sink(e),
            BatchError::Cancelled => PassError::Cancelled,
        }
    }
}

impl From<Cancelled> for PassError {
    fn from(_: Cancelled) -> Self {
        PassError::Cancelled
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Lines sent.
    pub lines: u64,
    /// Batches sent.
    pub batches: u64,
    /// Series appended to.
    pub appended: u64,
    /// Series deleted and rewritten.
    pub rewritten: u64,
    /// Series deleted because nothing produces them any more.
    pub deleted: u64,
    /// Rows skipped as malformed.
    pub skipped: u64,
    /// Rows read from PostgreSQL.
    pub rows_read: u64,
    /// Earliest sample held back as too far ahead.
    pub next_held_back: Option<i64>,
    /// Series whose lines VictoriaMetrics rejected for good (a 4xx).
    pub rejected: u64,
    /// Series left pending (a batch failed after VictoriaMetrics may have
    /// stored part of it, or rows changed during the pass): the next pass
    /// must run soon to rewrite them.
    pub left_pending: u64,
    /// Whether the pass read VictoriaMetrics back.
    pub read_back: bool,
    /// Series read back and compared.
    pub verified: u64,
    /// Series written too recently to be read back yet.
    pub unverified: u64,
    /// Series the read-back found differing, and repaired.
    pub repaired: u64,
    /// Samples VictoriaMetrics should have held and did not.
    pub samples_missing: u64,
    /// Samples it held and should not have (duplicates, other values,
    /// series no row produces).
    pub samples_extra: u64,
    /// What each series the pass wrote should hold once VictoriaMetrics
    /// shows the writes, by series key, as read back at [`Outcome::expect_at`].
    pub expect: Vec<(String, Expected)>,
    /// The instant to read the written series back at (Unix ms): the latest
    /// sample the pass may have written.
    pub expect_at: i64,
}

impl Outcome {
    /// Whether the pass wrote or deleted anything.
    pub fn wrote(&self) -> bool {
        self.lines > 0 || self.deleted > 0 || self.rewritten > 0
    }

    /// Whether the pass proved, by reading back, that VictoriaMetrics holds
    /// what it should: nothing written, nothing repaired, nothing left to
    /// read back.
    pub fn verified_clean(&self) -> bool {
        self.read_back && !self.wrote() && self.repaired == 0 && self.unverified == 0
    }

    /// Adds another pass's counts to these.
    pub fn add(&mut self, o: &Outcome) {
        self.lines += o.lines;
        self.batches += o.batches;
        self.appended += o.appended;
        self.rewritten += o.rewritten;
        self.deleted += o.deleted;
        self.skipped += o.skipped;
        self.rows_read += o.rows_read;
        self.left_pending += o.left_pending;
        self.rejected += o.rejected;
        self.read_back |= o.read_back;
        self.verified += o.verified;
        self.unverified += o.unverified;
        self.repaired += o.repaired;
        self.samples_missing += o.samples_missing;
        self.samples_extra += o.samples_extra;
        self.expect.extend(o.expect.iter().cloned());
        self.expect_at = self.expect_at.max(o.expect_at);
    }

    /// The counts `/metrics` adds up.
    pub fn counts(&self) -> PassCounts {
        PassCounts {
            rewritten: self.rewritten,
            appended: self.appended,
            deleted: self.deleted,
            rejected: self.rejected,
            read_back: self.read_back,
            verified: self.verified,
            repaired: self.repaired,
            samples_missing: self.samples_missing,
            samples_extra: self.samples_extra,
        }
    }

    /// The pass's one log line: at INFO when it did something a user may
    /// want to know of, else at DEBUG.
    pub fn log(&self, family: Family, elapsed: Duration) {
        macro_rules! line {
            ($level:expr, $message:literal) => {
                tracing::event!(
                    $level,
                    family = family.as_str(),
                    rows = self.rows_read,
                    lines = self.lines,
                    batches = self.batches,
                    appended = self.appended,
                    rewritten = self.rewritten,
                    deleted = self.deleted,
                    skipped = self.skipped,
                    rejected = self.rejected,
                    left_pending = self.left_pending,
                    verified = self.verified,
                    repaired = self.repaired,
                    samples_missing = self.samples_missing,
                    samples_extra = self.samples_extra,
                    elapsed = ?elapsed,
                    $message
                )
            };
        }
        if self.repaired > 0 {
            line!(
                tracing::Level::WARN,
                "exported; the read-back found VictoriaMetrics differing from what it acknowledged, and repaired it"
            );
        } else if self.wrote() || self.skipped > 0 || self.rejected > 0 || self.left_pending > 0 {
            line!(tracing::Level::INFO, "exported");
        } else {
            line!(tracing::Level::DEBUG, "nothing to export");
        }
    }
}
