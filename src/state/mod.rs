//! What VictoriaMetrics holds, as recorded in the `vm_export_*` tables:
//! each series summarised per local day, and the plan that the summaries
//! and a series' samples give (`plan`).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::{PgPool, Row};

use crate::model::Family;
use crate::source::SourceError;

mod plan;
mod reads;

pub use plan::{bucket_of, chunks_of, plan, Chunk, Done, Plan, SeriesState};
pub use reads::{ReadCheck, Settled, READS_CONTEXT};

/// Buckets recorded per `INSERT`.
const CHUNKS_PER_STATEMENT: usize = 4096;

/// Buckets to record, as the columns of one `INSERT … SELECT unnest(…)`.
#[derive(Default)]
struct ChunkColumns {
    ids: Vec<i64>,
    buckets: Vec<i32>,
    samples: Vec<i32>,
    digests: Vec<i64>,
    max_ts: Vec<i64>,
    totals: Vec<i64>,
}

/// The `vm_export_*` tables.
#[derive(Debug, Clone)]
pub struct State {
    pool: PgPool,
}

impl State {
    /// State kept in the database behind `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Whether the state's tables exist (the exporter ran its migrations
    /// on this database).
    pub async fn exists(&self) -> Result<bool, SourceError> {
        sqlx::query_scalar("SELECT to_regclass('vm_export_series') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(SourceError::query("looking for vm_export_series"))
    }

    /// What is recorded of each of a family's series, by selector, without
    /// its buckets: a few hundred bytes a series, whatever the history's
    /// length (the buckets of a thousand meters' years would take hundreds
    /// of MB); [`State::load_chunks`] reads those of one group of series.
    pub async fn load(&self, family: Family) -> Result<HashMap<String, SeriesState>, SourceError> {
        let err = || SourceError::query("decoding vm_export_series");
        let mut rows = sqlx::query(
            "SELECT s.id, s.selector, s.pending,
                    EXTRACT(EPOCH FROM now() - s.updated_at)::float8, s.rejected IS NOT NULL,
                    coalesce(c.held, 0)::bigint, CASE WHEN c.complete IS NOT FALSE THEN coalesce(c.total, 0)::text END
               FROM vm_export_series s
               LEFT JOIN LATERAL (SELECT sum(samples) AS held, sum(total) AS total,
                                         bool_and(total IS NOT NULL) AS complete
                                    FROM vm_export_chunk WHERE series_id = s.id) c ON TRUE
              WHERE s.family = $1",
        )
        .bind(family.as_str())
        .fetch(&self.pool);
        let mut out: HashMap<String, SeriesState> = HashMap::new();
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(SourceError::query("reading vm_export_series"))?
        {
            let age: Option<f64> = row.try_get(3).map_err(err())?;
            let held: i64 = row.try_get(5).map_err(err())?;
            let total: Option<String> = row.try_get(6).map_err(err())?;
            out.insert(
                row.try_get(1).map_err(err())?,
                SeriesState {
                    id: row.try_get(0).map_err(err())?,
                    pending: row.try_get(2).map_err(err())?,
                    chunks: HashMap::new(),
                    held: held.max(0) as u64,
                    total: total.and_then(|t| t.parse().ok()),
                    age: Duration::try_from_secs_f64(age.unwrap_or(0.0)).unwrap_or(Duration::ZERO),
                    rejected: row.try_get(4).map_err(err())?,
                },
            );
        }
        Ok(out)
    }

    /// The buckets of the series `ids`, by series id.
    pub async fn load_chunks(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, HashMap<i32, Chunk>>, SourceError> {
        let mut out: HashMap<i64, HashMap<i32, Chunk>> = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let err = || SourceError::query("decoding vm_export_chunk");
        let mut rows = sqlx::query(
            "SELECT series_id, bucket, samples, digest, max_ts, coalesce(total, 0) FROM vm_export_chunk
              WHERE series_id = ANY($1)",
        )
        .bind(ids)
        .fetch(&self.pool);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(SourceError::query("reading vm_export_chunk"))?
        {
            out.entry(row.try_get(0).map_err(err())?)
                .or_default()
                .insert(
                    row.try_get(1).map_err(err())?,
                    Chunk {
                        samples: row.try_get(2).map_err(err())?,
                        digest: row.try_get(3).map_err(err())?,
                        max_ts: row.try_get(4).map_err(err())?,
                        total: row.try_get(5).map_err(err())?,
                    },
                );
        }
        Ok(out)
    }

    /// Records, before anything is sent, that a series is being written; its
    /// content in VictoriaMetrics is unknown until [`State::commit`].
    pub async fn mark_pending(&self, family: Family, selector: &str) -> Result<i64, SourceError> {
        sqlx::query_scalar(
            "INSERT INTO vm_export_series (family, selector, pending) VALUES ($1, $2, TRUE)
             ON CONFLICT ((md5(selector))) DO UPDATE SET pending = TRUE, family = EXCLUDED.family, updated_at = NOW()
             RETURNING id",
        )
        .bind(family.as_str())
        .bind(selector)
        .fetch_one(&self.pool)
        .await
        .map_err(SourceError::query("marking a series pending in vm_export_series"))
    }

    /// Records series whose every line VictoriaMetrics acknowledged.
    pub async fn commit(&self, done: &[Done]) -> Result<(), SourceError> {
        if done.is_empty() {
            return Ok(());
        }
        let replaced: Vec<i64> = done.iter().filter(|d| d.replace).map(|d| d.id).collect();
        let ids: Vec<i64> = done.iter().map(|d| d.id).collect();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SourceError::query("beginning a state commit"))?;
        sqlx::query("DELETE FROM vm_export_chunk WHERE series_id = ANY($1)")
            .bind(&replaced)
            .execute(&mut *tx)
            .await
            .map_err(SourceError::query(
                "clearing rewritten series in vm_export_chunk",
            ))?;
        // In statements of a bounded size: the connection keeps the buffer
        // a statement was encoded in, and 64 long series' buckets at once
        // left several MB behind on each pooled connection.
        let mut chunks = done
            .iter()
            .flat_map(|d| d.chunks.iter().map(move |(bucket, c)| (d.id, *bucket, *c)))
            .peekable();
        while chunks.peek().is_some() {
            let mut c = ChunkColumns::default();
            for (id, bucket, chunk) in chunks.by_ref().take(CHUNKS_PER_STATEMENT) {
                c.ids.push(id);
                c.buckets.push(bucket);
                c.samples.push(chunk.samples);
                c.digests.push(chunk.digest);
                c.max_ts.push(chunk.max_ts);
                c.totals.push(chunk.total);
            }
            sqlx::query(
                "INSERT INTO vm_export_chunk (series_id, bucket, samples, digest, max_ts, total)
                 SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[])
                 ON CONFLICT (series_id, bucket)
                 DO UPDATE SET samples = EXCLUDED.samples, digest = EXCLUDED.digest, max_ts = EXCLUDED.max_ts,
                               total = EXCLUDED.total",
            )
            .bind(&c.ids)
            .bind(&c.buckets)
            .bind(&c.samples)
            .bind(&c.digests)
            .bind(&c.max_ts)
            .bind(&c.totals)
            .execute(&mut *tx)
            .await
            .map_err(SourceError::query("recording vm_export_chunk"))?;
        }
        let rejected: Vec<Option<String>> = done.iter().map(|d| d.rejected.clone()).collect();
        sqlx::query(
            "UPDATE vm_export_series s SET pending = FALSE, rejected = r.rejected, updated_at = NOW()
               FROM unnest($1::bigint[], $2::text[]) AS r(id, rejected) WHERE s.id = r.id",
        )
        .bind(&ids)
        .bind(&rejected)
        .execute(&mut *tx)
        .await
        .map_err(SourceError::query("clearing pending in vm_export_series"))?;
        tx.commit()
            .await
            .map_err(SourceError::query("committing vm_export state"))
    }

    /// Fills in the buckets' totals an older release did not record, for
    /// series found unchanged: `(series id, its buckets)`.
    pub async fn record_totals(
        &self,
        series: &[(i64, Vec<(i32, Chunk)>)],
    ) -> Result<(), SourceError> {
        let mut c = ChunkColumns::default();
        for (id, chunks) in series {
            for (bucket, chunk) in chunks {
                c.ids.push(*id);
                c.buckets.push(*bucket);
                c.totals.push(chunk.total);
            }
        }
        if c.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE vm_export_chunk c SET total = r.total
               FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS r(id, bucket, total)
              WHERE c.series_id = r.id AND c.bucket = r.bucket",
        )
        .bind(&c.ids)
        .bind(&c.buckets)
        .bind(&c.totals)
        .execute(&self.pool)
        .await
        .map_err(SourceError::query("recording totals in vm_export_chunk"))?;
        Ok(())
    }

    /// Marks a recorded series pending by id (before deleting it).
    pub async fn mark_pending_id(&self, id: i64) -> Result<(), SourceError> {
        sqlx::query("UPDATE vm_export_series SET pending = TRUE, updated_at = NOW() WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(SourceError::query(
                "marking a series pending in vm_export_series",
            ))?;
        Ok(())
    }

    /// Forgets a series deleted from VictoriaMetrics.
    pub async fn forget(&self, id: i64) -> Result<(), SourceError> {
        sqlx::query("DELETE FROM vm_export_series WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(SourceError::query("deleting from vm_export_series"))?;
        Ok(())
    }

    /// A setting the state was written under.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, SourceError> {
        sqlx::query_scalar("SELECT value FROM vm_export_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(SourceError::query("reading vm_export_meta"))
    }

    /// Records a setting the state is written under.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), SourceError> {
        sqlx::query(
            "INSERT INTO vm_export_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(SourceError::query("writing vm_export_meta"))?;
        Ok(())
    }
}
