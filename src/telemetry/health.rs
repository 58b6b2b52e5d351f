//! `/health`'s state machine: the daemon's role, whether exports are
//! failing and since when, and whether the mirror is complete (the lag).

use std::time::{Duration, SystemTime};

/// What the daemon is doing, for `/health` and the lock gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Not yet holding the export lock, or not a daemon.
    #[default]
    Starting,
    /// Holds the export lock and exports.
    Active,
    /// Another exporter holds the lock.
    Standby,
    /// `VICTORIAMETRICS_ENABLED=false`.
    Disabled,
}

/// Whether the daemon is healthy, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `true`: `/health` answers 200.
    pub ok: bool,
    /// One line for people.
    pub text: String,
}

/// What `/health` and the lag are judged from.
#[derive(Debug, Default)]
pub(super) struct State {
    pub role: Role,
    /// When the last cycle that left nothing behind read PostgreSQL.
    in_sync_at: Option<SystemTime>,
    /// Whether the last completed cycle left the mirror complete.
    in_sync: bool,
    failing_since: Option<SystemTime>,
    last_error: Option<String>,
}

impl State {
    /// A request or a cycle failed with `error`: failing from now, unless
    /// already failing.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        self.failing_since.get_or_insert_with(SystemTime::now);
        self.last_error = Some(error.to_string());
    }

    /// A request or a cycle succeeded: no longer failing.
    pub fn succeeded(&mut self) {
        self.failing_since = None;
        self.last_error = None;
    }

    /// A cycle that read PostgreSQL at `read_at` completed; `in_sync`: it
    /// left nothing pending.
    pub fn cycle_succeeded(&mut self, read_at: SystemTime, in_sync: bool) {
        self.succeeded();
        self.in_sync = in_sync;
        if in_sync {
            self.in_sync_at = Some(read_at);
        }
    }

    /// A cycle failed with `error`: the mirror is not known complete.
    pub fn cycle_failed(&mut self, error: &dyn std::fmt::Display) {
        self.failed(error);
        self.in_sync = false;
    }

    /// How long the mirror has been known incomplete at `now`: 0 while the
    /// last cycle left it complete, else the time since it last was (or
    /// since `started`).
    pub fn lag(&self, started: SystemTime, now: SystemTime) -> Duration {
        if self.in_sync {
            return Duration::ZERO;
        }
        now.duration_since(self.in_sync_at.unwrap_or(started))
            .unwrap_or_default()
    }

    /// Unhealthy once exports (or, for a standby, its look at the export
    /// lock) have failed for longer than `grace`; a disabled exporter is
    /// always healthy.
    pub fn health(&self, now: SystemTime, grace: Duration) -> Health {
        let failing = self
            .failing_since
            .and_then(|since| now.duration_since(since).ok())
            .filter(|d| *d > grace);
        match (self.role, failing) {
            (Role::Disabled, _) => Health {
                ok: true,
                text: "ok: export disabled (VICTORIAMETRICS_ENABLED=false)".into(),
            },
            (_, Some(d)) => Health {
                ok: false,
                text: format!(
                    "exports failing for {}s: {}",
                    d.as_secs(),
                    self.last_error.as_deref().unwrap_or("unknown error")
                ),
            },
            (Role::Active, None) => Health {
                ok: true,
                text: "ok: exporting".into(),
            },
            (Role::Standby, _) => Health {
                ok: true,
                text: "ok: standing by (another exporter holds the export lock)".into(),
            },
            (Role::Starting, _) => Health {
                ok: true,
                text: "ok: starting".into(),
            },
        }
    }
}
