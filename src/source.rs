//! The PostgreSQL source: MyElectricalData's tables, read as they are.

use std::str::FromStr;
use std::time::Duration;

use futures_util::{Stream, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::ConnectOptions;
use sqlx::{PgPool, Row};

use crate::contract::ecowatt::EcowattRow;
use crate::contract::energy::{quality_from_json, EnergyRow};
use crate::contract::max_power::MaxPowerRow;
use crate::contract::tempo::TempoRow;
use crate::contract::zen_flex::ZenFlexRow;
use crate::contract::{Family, FAMILIES};
use crate::tariff::OffPeakRecord;

/// The tables the exporter reads: first each family's own, in
/// [`Family::ALL`] order (the first four always exist in a MyElectricalData
/// database, the next two only from its releases 2.2 and 2.3 on, see
/// [`Family::is_optional`]), then the two where the client keeps each
/// PDL's contract, whose off-peak hours the tariff family reads when they
/// exist.
pub const TABLES: [&str; 8] = [
    "consumption_data",
    "production_data",
    "tempo_days",
    "ecowatt",
    "max_power_data",
    "zen_flex_days",
    "contract_data",
    "pdls",
];

/// Whether each of [`TABLES`] may be absent.
pub const TABLE_OPTIONAL: [bool; 8] = [false, false, false, false, true, true, true, true];

/// The tables every MyElectricalData release has.
pub const REQUIRED_TABLES: [&str; 4] = [TABLES[0], TABLES[1], TABLES[2], TABLES[3]];

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
        move |source| SourceError::Query { what, source }
    }

    /// Whether trying again later may succeed: connection trouble does, a
    /// missing table or a bad URL does not until someone acts.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Options(_) | SourceError::Migration { .. } => false,
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

/// The query of an energy table, as a `&'static str` as sqlx's streams need.
macro_rules! energy_sql {
    ($table:literal) => {
        // In the order of the unique constraint's index, so that PostgreSQL
        // streams rows without sorting a million of them; the quality comes
        // as JSON text, told apart from other JSON in Rust (jsonb_typeof
        // and a second look-up cost PostgreSQL a third of the query).
        concat!(
            "SELECT t.id, t.usage_point_id,
                    CASE WHEN t.date BETWEEN '0001-01-01' AND '9999-12-31' THEN t.date END,
                    t.granularity::text, t.interval_start, t.value::bigint,
                    (t.raw_data -> 'quality')::text,
                    CASE WHEN t.interval_start IS NULL AND isfinite(t.updated_at) THEN t.updated_at END,
                    CASE WHEN t.interval_start IS NOT NULL
                         THEN coalesce(t.raw_data ->> 'p', t.raw_data ->> 'interval_length') END,
                    (t.raw_data -> 'is_placeholder')::text = 'true'
               FROM ",
            $table,
            " AS t
              ORDER BY t.usage_point_id, t.date, t.granularity, t.interval_start"
        )
    };
}

/// Decodes a row of [`Source::energy_rows`], borrowing its text.
pub fn energy_row<'r>(row: &'r PgRow, family: Family) -> Result<EnergyRow<'r>, SourceError> {
    let get = |e| SourceError::Query {
        what: format!("decoding a row of {}", family.energy_table()),
        source: e,
    };
    // The query fixes every column's type, so sqlx's per-value type check
    // (a measurable share of a million rows' decoding) can be skipped.
    let updated_at: Option<chrono::DateTime<chrono::Utc>> =
        row.try_get_unchecked(7).map_err(get)?;
    Ok(EnergyRow {
        id: row.try_get_unchecked(0).map_err(get)?,
        pdl: row.try_get_unchecked(1).map_err(get)?,
        date: row.try_get_unchecked(2).map_err(get)?,
        granularity: row.try_get_unchecked(3).map_err(get)?,
        interval_start: row.try_get_unchecked(4).map_err(get)?,
        value: row.try_get_unchecked(5).map_err(get)?,
        quality: row
            .try_get_unchecked::<Option<&str>, _>(6)
            .map_err(get)?
            .and_then(quality_from_json),
        updated_at: updated_at.map(|t| t.timestamp_micros()),
        interval: row.try_get_unchecked(8).map_err(get)?,
        placeholder: row
            .try_get_unchecked::<Option<bool>, _>(9)
            .map_err(get)?
            .unwrap_or(false),
    })
}

/// A change token per table: when it moves, the table changed; `None` while
/// the table does not exist.
pub type ChangeTokens = [Option<(i64, i64)>; TABLES.len()];

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

    /// Whether each of [`TABLES`] exists.
    pub async fn tables_present(&self) -> Result<[bool; TABLES.len()], SourceError> {
        let present: Vec<bool> =
            sqlx::query_scalar("SELECT to_regclass(t) IS NOT NULL FROM unnest($1::text[]) AS t")
                .bind(TABLES)
                .fetch_all(&self.pool)
                .await
                .map_err(SourceError::query(
                    "looking for the MyElectricalData tables",
                ))?;
        let mut out = [false; TABLES.len()];
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

    /// A token per table (in [`TABLES`] order) that moves whenever rows are
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
        .bind(TABLES)
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading the tables' change counters"))?;
        let mut tokens: ChangeTokens = [None; TABLES.len()];
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

    /// The rows of an energy table, ordered by PDL so that the series of
    /// one PDL can be built and sent before the next PDL is read; decode
    /// each with [`energy_row`].
    pub fn energy_rows(
        &self,
        family: Family,
    ) -> impl Stream<Item = Result<PgRow, SourceError>> + '_ {
        let table = family.energy_table();
        let sql = match family {
            Family::Production => energy_sql!("production_data"),
            _ => energy_sql!("consumption_data"),
        };
        sqlx::query(sql)
            .fetch(&self.pool)
            .map_err(move |source| SourceError::Query {
                what: format!("reading {table}"),
                source,
            })
    }

    /// Every `offpeak_hours` MyElectricalData keeps, in `contract_data` and
    /// in `pdls`, where the table and its column exist.
    pub async fn offpeak_records(&self) -> Result<Vec<OffPeakRecord>, SourceError> {
        let mut out = Vec::new();
        for table in ["contract_data", "pdls"] {
            let has_column: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute
                                 WHERE attrelid = to_regclass($1) AND attname = 'offpeak_hours'
                                   AND NOT attisdropped)",
            )
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .map_err(SourceError::query(format!(
                "looking for {table}.offpeak_hours"
            )))?;
            if !has_column {
                continue;
            }
            let sql = format!(
                "SELECT usage_point_id::text, offpeak_hours::text FROM {table}
                  WHERE offpeak_hours IS NOT NULL AND usage_point_id IS NOT NULL"
            );
            let rows: Vec<(String, String)> = sqlx::query_as(&sql)
                .fetch_all(&self.pool)
                .await
                .map_err(SourceError::query(format!("reading {table}.offpeak_hours")))?;
            out.extend(
                rows.into_iter()
                    .map(|(pdl, json)| OffPeakRecord { table, pdl, json }),
            );
        }
        Ok(out)
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

    /// The distinct PDLs of `consumption_data`, walking its index rather
    /// than scanning the table.
    pub async fn consumption_pdls(&self) -> Result<Vec<String>, SourceError> {
        sqlx::query_scalar(
            "WITH RECURSIVE p AS (
                (SELECT usage_point_id FROM consumption_data ORDER BY usage_point_id LIMIT 1)
                UNION ALL
                SELECT (SELECT c.usage_point_id FROM consumption_data c
                         WHERE c.usage_point_id > p.usage_point_id
                         ORDER BY c.usage_point_id LIMIT 1)
                  FROM p WHERE p.usage_point_id IS NOT NULL)
             SELECT usage_point_id FROM p WHERE usage_point_id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("listing the PDLs of consumption_data"))
    }

    /// Every row of `tempo_days` (a few hundred per season).
    pub async fn tempo_rows(&self) -> Result<Vec<TempoRow>, SourceError> {
        let rows = sqlx::query("SELECT id::text, color::text FROM tempo_days ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(SourceError::query("reading tempo_days"))?;
        rows.into_iter()
            .map(|r| {
                Ok(TempoRow {
                    id: r
                        .try_get(0)
                        .map_err(SourceError::query("decoding tempo_days"))?,
                    color: r
                        .try_get(1)
                        .map_err(SourceError::query("decoding tempo_days"))?,
                })
            })
            .collect()
    }

    /// Every row of `ecowatt` (one per day).
    pub async fn ecowatt_rows(&self) -> Result<Vec<EcowattRow>, SourceError> {
        let rows = sqlx::query(
            "SELECT id::bigint,
                    CASE WHEN periode BETWEEN '0001-01-02' AND '9999-12-30' THEN periode END,
                    dvalue::bigint, \"values\"
               FROM ecowatt ORDER BY periode, generation_datetime, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading ecowatt"))?;
        rows.into_iter()
            .map(|r| {
                let id: i64 = r
                    .try_get(0)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                let periode = r
                    .try_get(1)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                let dvalue = r
                    .try_get(2)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                let values = r
                    .try_get(3)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                Ok(EcowattRow {
                    id,
                    periode,
                    dvalue,
                    values,
                })
            })
            .collect()
    }

    /// Every row of `max_power_data` (one per PDL and day); none when the
    /// table does not exist.
    pub async fn max_power_rows(&self) -> Result<Vec<MaxPowerRow>, SourceError> {
        if !self.has_table(Family::MaxPower).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id::text, usage_point_id::text,
                    CASE WHEN date BETWEEN '0001-01-01' AND '9999-12-31' THEN date END,
                    interval_start::text, value::bigint,
                    coalesce((raw_data -> 'is_placeholder')::text = 'true', false)
               FROM max_power_data ORDER BY usage_point_id, date",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading max_power_data"))?;
        let decode = SourceError::query;
        rows.into_iter()
            .map(|r| {
                Ok(MaxPowerRow {
                    id: r.try_get(0).map_err(decode("decoding max_power_data"))?,
                    pdl: r.try_get(1).map_err(decode("decoding max_power_data"))?,
                    date: r.try_get(2).map_err(decode("decoding max_power_data"))?,
                    interval_start: r.try_get(3).map_err(decode("decoding max_power_data"))?,
                    value: r.try_get(4).map_err(decode("decoding max_power_data"))?,
                    placeholder: r.try_get(5).map_err(decode("decoding max_power_data"))?,
                })
            })
            .collect()
    }

    /// Every row of `zen_flex_days`; none when the table does not exist.
    pub async fn zen_flex_rows(&self) -> Result<Vec<ZenFlexRow>, SourceError> {
        if !self.has_table(Family::ZenFlex).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id::text, day_type::text FROM zen_flex_days ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(SourceError::query("reading zen_flex_days"))?;
        rows.into_iter()
            .map(|r| {
                Ok(ZenFlexRow {
                    id: r
                        .try_get(0)
                        .map_err(SourceError::query("decoding zen_flex_days"))?,
                    day_type: r
                        .try_get(1)
                        .map_err(SourceError::query("decoding zen_flex_days"))?,
                })
            })
            .collect()
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
