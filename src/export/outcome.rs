//! What a pass reports: its outcome, or why it did not complete.

use crate::batch::BatchError;
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::verify::{Expected, VerifyError};

/// Why a pass did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// PostgreSQL failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// VictoriaMetrics failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Shutdown interrupted the pass.
    #[error("stopped before the pass completed")]
    Cancelled,
    /// Series are still pending after repeated passes.
    #[error(
        "{0} series could not be written completely; run again when VictoriaMetrics is healthy"
    )]
    LeftPending(u64),
    /// The self-monitoring listener could not start.
    #[error(transparent)]
    Listen(#[from] crate::listener::ListenError),
    /// The export lock's connection dropped during the pass.
    #[error("lost the export lock during the pass; another exporter may have taken over")]
    LostLock,
    /// Another exporter holds the export lock on this database.
    #[error("another exporter is exporting this database (it holds the export lock); stop it or let it do the work")]
    Locked,
    /// Reading VictoriaMetrics back failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// VictoriaMetrics did not answer the read-back queries.
    #[error("the mirror cannot be verified: VictoriaMetrics did not answer the read-back (/api/v1/query below the select URL, VICTORIAMETRICS_SELECT_URL in a cluster); see the warning above")]
    NoReadBack,
    /// Series still differ from what they should hold after repairs.
    #[error("the mirror could not be verified: {0} series still differ from PostgreSQL after repeated repairs; see the warnings above")]
    Unverified(u64),
}

impl From<BatchError> for ExportError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Sink(e) => ExportError::Sink(e),
            BatchError::Cancelled => ExportError::Cancelled,
        }
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
}
