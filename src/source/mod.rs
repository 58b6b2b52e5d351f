//! The PostgreSQL source: MyElectricalData's tables, read as they are.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::ConnectOptions;
use sqlx::{PgPool, Row};

use crate::model::{Family, Table, FAMILIES, TABLES};

mod lock;
mod meters;
mod rows;
mod tls;

pub use lock::ExportLock;
pub use rows::{EnergyDecoder, EnergyRows};
pub use tls::TlsRefusal;

/// The names of the tables the exporter reads, in [`Table::ALL`] order.
const TABLE_NAMES: [&str; TABLES] = {
    let mut names = [""; TABLES];
    let mut i = 0;
    while i < TABLES {
        names[i] = Table::ALL[i].name();
        i += 1;
    }
    names
};

/// Logs, once per process and table, that an optional table is absent, and
/// once that it appeared after having been absent.
fn note_optional_table(family: Family, present: bool) {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    // Per family: 0 not seen yet, 1 seen absent, 2 seen present.
    static SEEN: [AtomicU8; FAMILIES] = [const { AtomicU8::new(0) }; FAMILIES];
    let now = if present { 2 } else { 1 };
    let before = SEEN[family as usize].swap(now, Relaxed);
    let table = family.table();
    match (before, present) {
        (0 | 2, false) => tracing::info!(
            table,
            "optional table absent (MyElectricalData before 2.2 or 2.3): its series are skipped until it appears"
        ),
        (1, true) => tracing::info!(table, "optional table appeared: mirroring it"),
        _ => {}
    }
}

/// An error reading PostgreSQL, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `DATABASE_URL` could not be turned into connection options.
    #[error("DATABASE_URL: cannot be used to connect to PostgreSQL ({0})")]
    Options(String),
    /// A query or connection failed.
    #[error("PostgreSQL: {what}: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The connection was refused for TLS: the server's certificate, ours,
    /// or TLS itself (said apart so that the log tells what to do).
    #[error("PostgreSQL: {what}: {refusal} ({source}); what to do: {}", refusal.fix())]
    Tls {
        /// What was being done.
        what: String,
        /// Why, in words.
        refusal: TlsRefusal,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed or does not match what was applied.
    #[error("PostgreSQL: migration {version} ({description}): {reason}")]
    Migration {
        /// The migration's version.
        version: i64,
        /// Its description.
        description: String,
        /// What went wrong.
        reason: String,
    },
}

impl SourceError {
    /// Wraps a driver error with what was being done.
    pub fn query(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> SourceError {
        let what = what.into();
        move |source| match TlsRefusal::of(&source) {
            Some(refusal) => SourceError::Tls {
                what,
                refusal,
                source,
            },
            None => SourceError::Query { what, source },
        }
    }

    /// Whether trying again later may succeed: connection trouble does, a
    /// missing table or a bad URL does not until someone acts.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Options(_) | SourceError::Migration { .. } => false,
            // A certificate renewed or a pg_hba.conf fixed ends it, without
            // a restart: the daemon keeps trying, unhealthy meanwhile.
            SourceError::Tls { .. } => true,
            SourceError::Query { source, .. } => {
                matches!(
                    source,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::Tls(_)
                ) || matches!(source, sqlx::Error::Database(e) if e.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57")))
            }
        }
    }
}

/// A change token per table: when it moves, the table changed; `None` while
/// the table does not exist.
pub type ChangeTokens = [Option<(i64, i64)>; TABLES];

/// A pool of connections to the MyElectricalData database.
#[derive(Debug, Clone)]
pub struct Source {
    pool: PgPool,
}

impl Source {
    /// Prepares a pool; connections are opened on first use, so that a
    /// database that is down at start is retried rather than fatal.
    pub fn connect_lazy(database_url: &SecretString) -> Result<Self, SourceError> {
        let options = PgConnectOptions::from_str(database_url.expose_secret())
            .map_err(|e| SourceError::Options(redact_url_error(&e.to_string(), database_url)))?
            .application_name("myelectricaldata-vm-exporter")
            // A row stream stays open while its lines are posted: sqlx would
            // call every long send a slow statement.
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(3600));
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The pool, for the state kept beside the source tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations, recording them in
    /// `vm_export_migrations` (not sqlx's `_sqlx_migrations`: the exporter
    /// keeps all its bookkeeping under its own prefix).
    pub async fn migrate(&self) -> Result<(), SourceError> {
        let migrator = sqlx::migrate!("./migrations");
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(SourceError::query("connecting to run migrations"))?;
        sqlx::query("SELECT pg_advisory_lock(hashtext('vm_export_migrations'))")
            .execute(&mut *conn)
            .await
            .map_err(SourceError::query("locking the migrations"))?;
        let result = async {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS vm_export_migrations (
                    version BIGINT PRIMARY KEY,
                    description TEXT NOT NULL,
                    checksum BYTEA NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())",
            )
            .execute(&mut *conn)
            .await
            .map_err(SourceError::query("creating vm_export_migrations"))?;
            for m in migrator.iter() {
                let applied: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT checksum FROM vm_export_migrations WHERE version = $1")
                        .bind(m.version)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(SourceError::query("reading vm_export_migrations"))?;
                match applied {
                    Some(sum) if sum == *m.checksum => continue,
                    Some(_) => {
                        return Err(SourceError::Migration {
                            version: m.version,
                            description: m.description.to_string(),
                            reason: "was applied with different contents".into(),
                        })
                    }
                    None => {}
                }
                let mut tx = sqlx::Acquire::begin(&mut *conn)
                    .await
                    .map_err(SourceError::query("beginning a migration"))?;
                sqlx::raw_sql(&m.sql).execute(&mut *tx).await.map_err(|e| SourceError::Migration {
                    version: m.version,
                    description: m.description.to_string(),
                    reason: e.to_string(),
                })?;
                sqlx::query("INSERT INTO vm_export_migrations (version, description, checksum) VALUES ($1, $2, $3)")
                    .bind(m.version)
                    .bind(&*m.description)
                    .bind(&*m.checksum)
                    .execute(&mut *tx)
                    .await
                    .map_err(SourceError::query("recording a migration"))?;
                tx.commit().await.map_err(SourceError::query("committing a migration"))?;
            }
            Ok(())
        }
        .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('vm_export_migrations'))")
            .execute(&mut *conn)
            .await;
        result
    }

    /// Whether each table exists, in [`Table::ALL`] order.
    pub async fn tables_present(&self) -> Result<[bool; TABLES], SourceError> {
        let present: Vec<bool> =
            sqlx::query_scalar("SELECT to_regclass(t) IS NOT NULL FROM unnest($1::text[]) AS t")
                .bind(TABLE_NAMES)
                .fetch_all(&self.pool)
                .await
                .map_err(SourceError::query(
                    "looking for the MyElectricalData tables",
                ))?;
        let mut out = [false; TABLES];
        for (slot, p) in out.iter_mut().zip(present) {
            *slot = p;
        }
        Ok(out)
    }

    /// Whether an optional family's table exists now (logged once when it
    /// does not); `true` for the other families.
    async fn has_table(&self, family: Family) -> Result<bool, SourceError> {
        if !family.is_optional() {
            return Ok(true);
        }
        let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(family.table())
            .fetch_one(&self.pool)
            .await
            .map_err(SourceError::query(format!(
                "looking for {}",
                family.table()
            )))?;
        note_optional_table(family, present);
        Ok(present)
    }

    /// A token per table (in [`Table::ALL`] order) that moves whenever rows are
    /// inserted, updated or deleted, or the table is truncated: PostgreSQL's
    /// own statistics counters, read without touching the tables.
    pub async fn change_tokens(&self) -> Result<ChangeTokens, SourceError> {
        let rows = sqlx::query(
            "SELECT c.relfilenode::bigint,
                    pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
                        + pg_stat_get_tuples_deleted(c.oid)
               FROM unnest($1::text[]) WITH ORDINALITY AS t(name, n)
               LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)
              ORDER BY t.n",
        )
        .bind(TABLE_NAMES)
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading the tables' change counters"))?;
        let mut tokens: ChangeTokens = [None; TABLES];
        for (slot, row) in tokens.iter_mut().zip(rows) {
            let node: Option<i64> = row
                .try_get(0)
                .map_err(SourceError::query("reading change counters"))?;
            let count: Option<i64> = row
                .try_get(1)
                .map_err(SourceError::query("reading change counters"))?;
            *slot = node.map(|n| (n, count.unwrap_or(0)));
        }
        Ok(tokens)
    }

    /// PostgreSQL's estimate of the rows a family reads (from the last
    /// ANALYZE or autovacuum: no scan), for progress reports; 0 when unknown.
    pub async fn estimated_rows(&self, family: Family) -> Result<u64, SourceError> {
        let estimate: Option<f64> = sqlx::query_scalar(
            "SELECT reltuples::float8 FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(family.table())
        .fetch_optional(&self.pool)
        .await
        .map_err(SourceError::query("reading the table's size estimate"))?
        .flatten();
        Ok(estimate.filter(|n| *n > 0.0).map_or(0, |n| n as u64))
    }

    /// The date of the oldest energy row, for the retention check.
    pub async fn oldest_date(&self) -> Result<Option<chrono::NaiveDate>, SourceError> {
        sqlx::query_scalar(
            "SELECT min(d) FROM (SELECT min(date) AS d FROM consumption_data
                                 UNION ALL SELECT min(date) FROM production_data) AS m",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(SourceError::query("finding the oldest reading"))
    }
}

/// sqlx's URL errors may quote the URL; its password must not reach a log.
fn redact_url_error(message: &str, url: &SecretString) -> String {
    let url = url.expose_secret();
    let mut out = message.replace(url, "[DATABASE_URL]");
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(p) = parsed.password().filter(|p| !p.is_empty()) {
            out = out.replace(p, "[REDACTED]");
        }
    }
    out
}
