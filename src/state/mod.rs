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

pub use plan::{bucket_of, chunks_of, plan, Chunk, Done, Plan, SeriesState};

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

    /// Everything recorded of a family's series, by selector.
    pub async fn load(&self, family: Family) -> Result<HashMap<String, SeriesState>, SourceError> {
        let mut rows = sqlx::query(
            "SELECT s.id, s.selector, s.pending, c.bucket, c.samples, c.digest, c.max_ts,
                    EXTRACT(EPOCH FROM now() - s.updated_at)::float8, s.rejected IS NOT NULL
               FROM vm_export_series s LEFT JOIN vm_export_chunk c ON c.series_id = s.id
              WHERE s.family = $1",
        )
        .bind(family.as_str())
        // Streamed: a row per series and day, each with the series' selector,
        // would otherwise be held all at once (tens of MB for a large history).
        .fetch(&self.pool);
        let mut out: HashMap<String, SeriesState> = HashMap::new();
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(SourceError::query("reading vm_export_series"))?
        {
            let err = SourceError::query("decoding vm_export_series");
            // Borrowed: the selector repeats on each of the series' days.
            let selector: &str = row.try_get(1).map_err(err)?;
            let entry = match out.get_mut(selector) {
                Some(e) => e,
                None => out.entry(selector.to_string()).or_default(),
            };
            entry.id = row
                .try_get(0)
                .map_err(SourceError::query("decoding vm_export_series"))?;
            entry.pending = row
                .try_get(2)
                .map_err(SourceError::query("decoding vm_export_series"))?;
            let age: Option<f64> = row
                .try_get(7)
                .map_err(SourceError::query("decoding vm_export_series"))?;
            entry.age = Duration::try_from_secs_f64(age.unwrap_or(0.0)).unwrap_or(Duration::ZERO);
            entry.rejected = row
                .try_get(8)
                .map_err(SourceError::query("decoding vm_export_series"))?;
            let bucket: Option<i32> = row
                .try_get(3)
                .map_err(SourceError::query("decoding vm_export_chunk"))?;
            if let Some(bucket) = bucket {
                let samples = row
                    .try_get(4)
                    .map_err(SourceError::query("decoding vm_export_chunk"))?;
                let digest = row
                    .try_get(5)
                    .map_err(SourceError::query("decoding vm_export_chunk"))?;
                let max_ts = row
                    .try_get(6)
                    .map_err(SourceError::query("decoding vm_export_chunk"))?;
                entry.chunks.insert(
                    bucket,
                    Chunk {
                        samples,
                        digest,
                        max_ts,
                    },
                );
            }
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
        let total: usize = done.iter().map(|d| d.chunks.len()).sum();
        let mut c_max: Vec<i64> = Vec::with_capacity(total);
        let (mut c_ids, mut c_buckets, mut c_samples, mut c_digests) = (
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
        );
        for d in done {
            for (bucket, chunk) in &d.chunks {
                c_ids.push(d.id);
                c_buckets.push(*bucket);
                c_samples.push(chunk.samples);
                c_digests.push(chunk.digest);
                c_max.push(chunk.max_ts);
            }
        }
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
        sqlx::query(
            "INSERT INTO vm_export_chunk (series_id, bucket, samples, digest, max_ts)
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::bigint[], $5::bigint[])
             ON CONFLICT (series_id, bucket)
             DO UPDATE SET samples = EXCLUDED.samples, digest = EXCLUDED.digest, max_ts = EXCLUDED.max_ts",
        )
        .bind(&c_ids)
        .bind(&c_buckets)
        .bind(&c_samples)
        .bind(&c_digests)
        .bind(&c_max)
        .execute(&mut *tx)
        .await
        .map_err(SourceError::query("recording vm_export_chunk"))?;
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
