//! What the source held when a pass last read each PDL, so that a full
//! reconciliation re-reads only the PDLs whose rows changed since.
//!
//! PostgreSQL computes, per PDL and month of a family's table, the row count
//! and a sum of hashes of each row's inserting transaction (`xmin`): an
//! insert, an update or a delete moves one of them, whatever `updated_at`
//! says, and a transaction that commits late moves them when it commits.
//! The digests are staged before any row is read (`vm_export_read_next`)
//! and recorded for a PDL (`vm_export_read`) once a pass read all of its
//! rows and completed: a change made while the pass was reading is seen by
//! the next one. What else the family's series depend on (the exporter's
//! release and settings, the price grid, the smaller tables the family
//! reads) is a context: when it changes, nothing recorded counts.

use sqlx::Row;

use super::State;
use crate::model::{Family, Skips};
use crate::source::SourceError;

/// The `vm_export_meta` key, followed by the family's name, of the context
/// the recorded reads were made in.
pub const READS_CONTEXT: &str = "reads_context.";

/// The `vm_export_meta` key, followed by the family's name, of the table's
/// change token when its digests were last staged.
const STAGED_TOKEN: &str = "reads_token.";

/// The table's change token (its file node and PostgreSQL's count of rows
/// inserted, updated and deleted), and whether that count can be trusted
/// to have moved with every committed change: PostgreSQL 15 or later (its
/// statistics are kept in shared memory, not sent as messages that can be
/// lost), `track_counts` on, and no other session of this database that
/// could still hold uncounted changes (PostgreSQL counts a session's
/// changes when it goes idle, at most a minute later: any session active,
/// in a transaction, or idle for less than 65 s, or that this role may
/// not see, is such a session).
const TOKEN_SQL: &str = "
SELECT c.relfilenode::text || ':' || (pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
                                      + pg_stat_get_tuples_deleted(c.oid))::text,
       current_setting('server_version_num')::int >= 150000 AND current_setting('track_counts')::bool
       AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                          AND a.backend_type IN ('client backend', 'background worker', 'logical replication worker')
                          AND a.application_name IS DISTINCT FROM 'myelectricaldata-vm-exporter'
                          AND (a.state IS DISTINCT FROM 'idle' OR a.state_change IS NULL
                               OR a.state_change > now() - interval '65 seconds'))
  FROM pg_class c WHERE c.oid = to_regclass($1)";

/// How a PDL's rows stand against what was recorded when they were last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCheck {
    /// The PDL.
    pub pdl: String,
    /// `Some(series)` when no row changed since a pass read them all and
    /// they gave that many series; `None` when they must be read.
    pub unchanged: Option<i64>,
    /// What that read skipped and held back (empty when nothing was, or
    /// the rows changed).
    pub skips: Skips,
}

impl State {
    /// Stages the digests of `family`'s table as it stands now and compares
    /// them with those recorded, in the context `context` (the exporter's
    /// settings, to which the family's other tables are added): one answer
    /// per PDL that has rows or had recorded ones.
    pub async fn stage_reads(
        &self,
        family: Family,
        context: &str,
    ) -> Result<Vec<ReadCheck>, SourceError> {
        let spec = family.spec();
        let mut fingerprint = context.to_string();
        for table in spec.reads.iter().filter(|t| **t != spec.table) {
            let name = table.name();
            let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(SourceError::query(format!("looking for {name}")))?;
            let digest: String = if present {
                sqlx::query_scalar(&format!(
                    "SELECT count(*)::text || ':' || coalesce(sum(hashtextextended(t::text, 0)), 0)::text
                       FROM {name} AS t"
                ))
                .fetch_one(&self.pool)
                .await
                .map_err(SourceError::query(format!("digesting {name}")))?
            } else {
                "absent".into()
            };
            fingerprint.push_str(&format!("\n{name}: {digest}"));
        }
        let key = format!("{READS_CONTEXT}{}", family.as_str());
        let mut tx = self.pool.begin().await.map_err(SourceError::query(
            "beginning to stage the source's digests",
        ))?;
        let changed: bool = sqlx::query_scalar(
            "SELECT md5($2) IS DISTINCT FROM (SELECT value FROM vm_export_meta WHERE key = $1)",
        )
        .bind(&key)
        .bind(&fingerprint)
        .fetch_one(&mut *tx)
        .await
        .map_err(SourceError::query(
            "reading the reads' context in vm_export_meta",
        ))?;
        // When the table's token has not moved since the digests were
        // staged, and can be trusted to, they still hold: the table is not
        // read at all (a few seconds per 50 million rows saved).
        let (token, trusted): (Option<String>, Option<bool>) = sqlx::query_as(TOKEN_SQL)
            .bind(family.table())
            .fetch_optional(&mut *tx)
            .await
            .map_err(SourceError::query(format!(
                "reading {}'s change token",
                family.table()
            )))?
            .unwrap_or((None, None));
        let token_key = format!("{STAGED_TOKEN}{}", family.as_str());
        let staged: Option<String> =
            sqlx::query_scalar("SELECT value FROM vm_export_meta WHERE key = $1")
                .bind(&token_key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(SourceError::query("reading vm_export_meta"))?;
        let restage = changed || trusted != Some(true) || token.is_none() || staged != token;
        if changed {
            for table in ["vm_export_read", "vm_export_read_skips"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE family = $1"))
                    .bind(family.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(SourceError::query(format!("clearing {table}")))?;
            }
            sqlx::query(
                "INSERT INTO vm_export_meta (key, value) VALUES ($1, md5($2))
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )
            .bind(&key)
            .bind(&fingerprint)
            .execute(&mut *tx)
            .await
            .map_err(SourceError::query(
                "recording the reads' context in vm_export_meta",
            ))?;
        }
        if restage {
            self.restage(&mut tx, family, &token_key, token.as_deref())
                .await?;
        }
        tx.commit()
            .await
            .map_err(SourceError::query("committing the source's digests"))?;
        self.compare_reads(family).await
    }

    /// Computes the table's digests into `vm_export_read_next`, and records
    /// the change token read before them.
    async fn restage(
        &self,
        tx: &mut sqlx::PgConnection,
        family: Family,
        token_key: &str,
        token: Option<&str>,
    ) -> Result<(), SourceError> {
        sqlx::query("DELETE FROM vm_export_meta WHERE key = $1")
            .bind(token_key)
            .execute(&mut *tx)
            .await
            .map_err(SourceError::query("clearing a token in vm_export_meta"))?;
        sqlx::query("DELETE FROM vm_export_read_next WHERE family = $1")
            .bind(family.as_str())
            .execute(&mut *tx)
            .await
            .map_err(SourceError::query("clearing vm_export_read_next"))?;
        // date_trunc goes through a timestamp, whose range ends in 294276
        // AD while a date's goes on to 5874897: a row dated beyond it would
        // fail the whole query. Dates outside years 1 to 9999 are skipped
        // when read, so they share one bucket (their xmin still counts).
        sqlx::query(&format!(
            "INSERT INTO vm_export_read_next (family, pdl, month, rows, digest)
             SELECT $1, usage_point_id,
                    CASE WHEN date BETWEEN DATE '0001-01-01' AND DATE '9999-12-31'
                         THEN date_trunc('month', date)::date ELSE DATE '0001-01-01' END,
                    count(*), sum(hashint8(xmin::text::bigint))
               FROM {} WHERE usage_point_id IS NOT NULL GROUP BY 2, 3",
            family.table()
        ))
        .bind(family.as_str())
        .execute(&mut *tx)
        .await
        .map_err(SourceError::query(format!("digesting {}", family.table())))?;
        if let Some(token) = token {
            sqlx::query("INSERT INTO vm_export_meta (key, value) VALUES ($1, $2)")
                .bind(token_key)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(SourceError::query("recording a token in vm_export_meta"))?;
        }
        Ok(())
    }

    /// Each PDL's staged digests against those recorded, with what the
    /// recorded read skipped.
    async fn compare_reads(&self, family: Family) -> Result<Vec<ReadCheck>, SourceError> {
        let rows = sqlx::query(
            "SELECT c.pdl, c.unchanged, s.skips
               FROM (SELECT pdl, CASE WHEN bool_and(n.rows IS NOT DISTINCT FROM r.rows
                                                    AND n.digest IS NOT DISTINCT FROM r.digest)
                                      THEN max(r.series)::bigint END AS unchanged
                       FROM (SELECT pdl, month, rows, digest FROM vm_export_read_next WHERE family = $1) AS n
                       FULL JOIN (SELECT pdl, month, rows, digest, series FROM vm_export_read WHERE family = $1) AS r
                         USING (pdl, month)
                      GROUP BY pdl) AS c
               LEFT JOIN vm_export_read_skips s ON s.family = $1 AND s.pdl = c.pdl AND c.unchanged IS NOT NULL",
        )
        .bind(family.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("comparing the source's digests"))?;
        let mut checks = Vec::with_capacity(rows.len());
        for row in rows {
            let decode = || -> Result<(String, Option<i64>, Option<String>), sqlx::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            };
            let (pdl, mut unchanged, skips) =
                decode().map_err(SourceError::query("decoding the source's digests"))?;
            // A record this release cannot read is as good as none: the
            // PDL is read again, and recorded anew.
            let skips = match skips.map(|text| serde_json::from_str::<Skips>(&text)) {
                None => Skips::default(),
                Some(Ok(skips)) => skips,
                Some(Err(_)) => {
                    unchanged = None;
                    Skips::default()
                }
            };
            checks.push(ReadCheck {
                pdl,
                unchanged,
                skips,
            });
        }
        Ok(checks)
    }

    /// A digest of everything a family read whole depends on: `context`
    /// and the full contents of its table (a small one: the Tempo calendar).
    pub async fn whole_digest(&self, family: Family, context: &str) -> Result<String, SourceError> {
        let table = family.table();
        sqlx::query_scalar(&format!(
            "SELECT md5($1 || (SELECT count(*)::text || ':' || coalesce(sum(hashtextextended(t::text, 0)), 0)::text
                                 FROM {table} AS t))"
        ))
        .bind(context)
        .fetch_one(&self.pool)
        .await
        .map_err(SourceError::query(format!("digesting {table}")))
    }

    /// Records that a pass read every row of these PDLs, as staged, how
    /// many series each gave, and what each skipped and held back.
    pub async fn record_reads(&self, family: Family, pdls: &[Settled]) -> Result<(), SourceError> {
        if pdls.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = pdls.iter().map(|p| p.pdl.as_str()).collect();
        let series: Vec<i32> = pdls.iter().map(|p| p.series).collect();
        let (lossy, skips): (Vec<&str>, Vec<String>) = pdls
            .iter()
            .filter(|p| !p.skips.is_empty())
            .map(|p| {
                let text = serde_json::to_string(&p.skips).unwrap_or_default();
                (p.pdl.as_str(), text)
            })
            .unzip();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SourceError::query("beginning to record reads"))?;
        for table in ["vm_export_read", "vm_export_read_skips"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE family = $1 AND pdl = ANY($2)"
            ))
            .bind(family.as_str())
            .bind(&names)
            .execute(&mut *tx)
            .await
            .map_err(SourceError::query(format!("clearing reads in {table}")))?;
        }
        sqlx::query(
            "INSERT INTO vm_export_read (family, pdl, month, rows, digest, series)
             SELECT n.family, n.pdl, n.month, n.rows, n.digest, p.series
               FROM vm_export_read_next n
               JOIN unnest($2::text[], $3::int[]) AS p(pdl, series) ON p.pdl = n.pdl
              WHERE n.family = $1",
        )
        .bind(family.as_str())
        .bind(&names)
        .bind(&series)
        .execute(&mut *tx)
        .await
        .map_err(SourceError::query("recording reads in vm_export_read"))?;
        sqlx::query(
            "INSERT INTO vm_export_read_skips (family, pdl, skips)
             SELECT $1, pdl, skips FROM unnest($2::text[], $3::text[]) AS p(pdl, skips)",
        )
        .bind(family.as_str())
        .bind(&lossy)
        .bind(&skips)
        .execute(&mut *tx)
        .await
        .map_err(SourceError::query(
            "recording skipped rows in vm_export_read_skips",
        ))?;
        tx.commit()
            .await
            .map_err(SourceError::query("committing reads"))
    }

    /// What the recorded reads of each family skipped and held back, added
    /// up over its PDLs, with how many PDLs had any (for `check`).
    pub async fn recorded_skips(&self) -> Result<Vec<(String, u64, Skips)>, SourceError> {
        // Absent until this release's migrations ran: nothing recorded.
        let present: bool =
            sqlx::query_scalar("SELECT to_regclass('vm_export_read_skips') IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(SourceError::query("looking for vm_export_read_skips"))?;
        if !present {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT family, skips FROM vm_export_read_skips ORDER BY family, pdl")
                .fetch_all(&self.pool)
                .await
                .map_err(SourceError::query("reading vm_export_read_skips"))?;
        let mut out: Vec<(String, u64, Skips)> = Vec::new();
        for (family, text) in rows {
            let Ok(skips) = serde_json::from_str::<Skips>(&text) else {
                continue;
            };
            match out.last_mut() {
                Some((f, pdls, all)) if *f == family => {
                    *pdls += 1;
                    all.add(&skips);
                }
                _ => out.push((family, 1, skips)),
            }
        }
        Ok(out)
    }
}

/// A PDL a pass read in full: what the state records of that read.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The PDL.
    pub pdl: String,
    /// How many series its rows gave.
    pub series: i32,
    /// What its rows skipped and held back.
    pub skips: Skips,
}
