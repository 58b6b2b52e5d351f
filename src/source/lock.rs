//! The export lock: one exporter writes, the others stand by.

use super::{Source, SourceError};

/// The advisory lock the exporters sharing a database take turns on: only
/// its holder exports, so that two replicas never both write.
const EXPORT_LOCK: i64 = 0x6d65_645f_766d_6578;

/// The export lock, held for as long as this connection lives (it is
/// detached from the pool, so that dropping it releases the lock).
pub struct ExportLock {
    conn: sqlx::PgConnection,
    /// The backend holding the lock.
    pub pid: i32,
}

impl ExportLock {
    /// Whether the lock is still held: its connection still answers.
    pub async fn is_held(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }
}

impl Source {
    /// Takes the export lock if no other exporter holds it.
    pub async fn try_lock_export(&self) -> Result<Option<ExportLock>, SourceError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(SourceError::query("connecting to take the export lock"))?;
        let (got, pid): (bool, i32) =
            sqlx::query_as("SELECT pg_try_advisory_lock($1), pg_backend_pid()")
                .bind(EXPORT_LOCK)
                .fetch_one(&mut *conn)
                .await
                .map_err(SourceError::query("taking the export lock"))?;
        Ok(got.then(|| ExportLock {
            conn: conn.detach(),
            pid,
        }))
    }

    /// The backend holding the export lock, if an exporter holds it.
    pub async fn export_lock_holder(&self) -> Result<Option<i32>, SourceError> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
                AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid AND objsubid = 1
              LIMIT 1",
        )
        .bind(EXPORT_LOCK)
        .fetch_optional(&self.pool)
        .await
        .map_err(SourceError::query("looking for the export lock"))
    }

    /// Whether backend `pid` still holds the export lock, asked on any
    /// connection: a pass checks it before it deletes or records anything,
    /// so that a holder whose lock connection dropped mid-pass stops before
    /// it could disturb a replica that took over.
    pub async fn holds_export_lock(&self, pid: i32) -> Result<bool, SourceError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1
                              AND classid = ($2 >> 32)::oid AND objid = ($2 & 4294967295)::oid AND objsubid = 1)",
        )
        .bind(pid)
        .bind(EXPORT_LOCK)
        .fetch_one(&self.pool)
        .await
        .map_err(SourceError::query("checking the export lock"))
    }
}
