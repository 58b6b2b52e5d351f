//! What VictoriaMetrics holds, as recorded in the `vm_export_*` tables.
//!
//! Each series is summarised per UTC day of its timestamps ("bucket"): the
//! number of samples and an order-independent digest of its (timestamp,
//! value) pairs. Comparing those summaries with what the source computes now
//! tells, without asking VictoriaMetrics, whether a series is unchanged,
//! only gained whole new days (append them), or changed anywhere else
//! (VictoriaMetrics cannot overwrite a sample: delete the series, rewrite it).

use std::collections::{BTreeMap, HashMap};

use sqlx::{PgPool, Row};

use crate::contract::{Family, Sample};
use crate::source::SourceError;

/// Milliseconds in a bucket.
const BUCKET_MS: i64 = 86_400_000;

/// The summary of one bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Samples in the bucket.
    pub samples: i32,
    /// Wrapping sum of the samples' hashes.
    pub digest: i64,
}

/// The bucket a timestamp falls in.
pub fn bucket_of(ts: i64) -> i32 {
    // Timestamps of the contract lie within ±5 million days of 1970.
    ts.div_euclid(BUCKET_MS)
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// A fixed, well-mixed hash of one sample (splitmix64's finaliser): stable
/// across versions and machines, as the digests are stored.
fn sample_hash(s: Sample) -> i64 {
    let mut z = (s.ts as u64) ^ (s.value as u64).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z = z ^ (z >> 31);
    // Mix the value in a second time so that (ts, v) and (v, ts) differ.
    let mut w = z ^ (s.value as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    w = (w ^ (w >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (w ^ (w >> 33)) as i64
}

/// The per-bucket summaries of a series' samples.
pub fn chunks_of(samples: &[Sample]) -> BTreeMap<i32, Chunk> {
    let mut out: BTreeMap<i32, Chunk> = BTreeMap::new();
    for s in samples {
        let c = out.entry(bucket_of(s.ts)).or_default();
        c.samples += 1;
        c.digest = c.digest.wrapping_add(sample_hash(*s));
    }
    out
}

/// What the state records of one series.
#[derive(Debug, Clone, Default)]
pub struct SeriesState {
    /// Row id in `vm_export_series`.
    pub id: i64,
    /// A write was begun and not acknowledged: VictoriaMetrics' content is unknown.
    pub pending: bool,
    /// The buckets it holds.
    pub chunks: HashMap<i32, Chunk>,
    /// When it was last marked pending or recorded.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// What to do with a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// VictoriaMetrics holds exactly these samples.
    Unchanged,
    /// Only these buckets are new: send their samples.
    Append(Vec<i32>),
    /// Anything else: delete the series and send every sample.
    Rewrite,
}

/// Compares what VictoriaMetrics holds with what it should hold.
pub fn plan(old: Option<&SeriesState>, new: &BTreeMap<i32, Chunk>) -> Plan {
    let Some(old) = old.filter(|o| !o.pending) else {
        return Plan::Rewrite;
    };
    if old
        .chunks
        .iter()
        .any(|(bucket, chunk)| new.get(bucket) != Some(chunk))
    {
        return Plan::Rewrite;
    }
    let added: Vec<i32> = new
        .keys()
        .filter(|b| !old.chunks.contains_key(b))
        .copied()
        .collect();
    if added.is_empty() {
        Plan::Unchanged
    } else {
        Plan::Append(added)
    }
}

/// A series whose lines were all acknowledged: what to record.
#[derive(Debug, Clone)]
pub struct Done {
    /// Row id in `vm_export_series`.
    pub id: i64,
    /// Whether the recorded buckets are replaced (rewrite) or added to (append).
    pub replace: bool,
    /// The buckets written.
    pub chunks: Vec<(i32, Chunk)>,
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

    /// Everything recorded of a family's series, by selector.
    pub async fn load(&self, family: Family) -> Result<HashMap<String, SeriesState>, SourceError> {
        let rows = sqlx::query(
            "SELECT s.id, s.selector, s.pending, c.bucket, c.samples, c.digest, s.updated_at
               FROM vm_export_series s LEFT JOIN vm_export_chunk c ON c.series_id = s.id
              WHERE s.family = $1",
        )
        .bind(family.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading vm_export_series"))?;
        let mut out: HashMap<String, SeriesState> = HashMap::new();
        for row in rows {
            let err = SourceError::query("decoding vm_export_series");
            let selector: String = row.try_get(1).map_err(err)?;
            let entry = out.entry(selector).or_default();
            entry.id = row
                .try_get(0)
                .map_err(SourceError::query("decoding vm_export_series"))?;
            entry.pending = row
                .try_get(2)
                .map_err(SourceError::query("decoding vm_export_series"))?;
            entry.updated_at = row
                .try_get(6)
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
                entry.chunks.insert(bucket, Chunk { samples, digest });
            }
        }
        Ok(out)
    }

    /// Records, before anything is sent, that a series is being written; its
    /// content in VictoriaMetrics is unknown until [`State::commit`].
    pub async fn mark_pending(&self, family: Family, selector: &str) -> Result<i64, SourceError> {
        sqlx::query_scalar(
            "INSERT INTO vm_export_series (family, selector, pending) VALUES ($1, $2, TRUE)
             ON CONFLICT (selector) DO UPDATE SET pending = TRUE, family = EXCLUDED.family, updated_at = NOW()
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
            "INSERT INTO vm_export_chunk (series_id, bucket, samples, digest)
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::bigint[])
             ON CONFLICT (series_id, bucket) DO UPDATE SET samples = EXCLUDED.samples, digest = EXCLUDED.digest",
        )
        .bind(&c_ids)
        .bind(&c_buckets)
        .bind(&c_samples)
        .bind(&c_digests)
        .execute(&mut *tx)
        .await
        .map_err(SourceError::query("recording vm_export_chunk"))?;
        sqlx::query(
            "UPDATE vm_export_series SET pending = FALSE, updated_at = NOW() WHERE id = ANY($1)",
        )
        .bind(&ids)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: i64, value: i64) -> Sample {
        Sample { ts, value }
    }

    fn state_of(samples: &[Sample]) -> SeriesState {
        SeriesState {
            id: 1,
            pending: false,
            chunks: chunks_of(samples).into_iter().collect(),
            ..SeriesState::default()
        }
    }

    #[test]
    fn digests_do_not_depend_on_sample_order() {
        let a = chunks_of(&[s(1, 10), s(2, 20), s(BUCKET_MS, 5)]);
        let b = chunks_of(&[s(BUCKET_MS, 5), s(2, 20), s(1, 10)]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn digests_tell_a_changed_value_or_timestamp() {
        let base = chunks_of(&[s(1, 10), s(2, 20)]);
        assert_ne!(base, chunks_of(&[s(1, 10), s(2, 21)]));
        assert_ne!(base, chunks_of(&[s(1, 10), s(3, 20)]));
        assert_ne!(chunks_of(&[s(1, 2)]), chunks_of(&[s(2, 1)]));
    }

    #[test]
    fn an_unknown_or_pending_series_is_rewritten() {
        let new = chunks_of(&[s(1, 1)]);
        assert_eq!(plan(None, &new), Plan::Rewrite);
        let mut old = state_of(&[s(1, 1)]);
        old.pending = true;
        assert_eq!(plan(Some(&old), &new), Plan::Rewrite);
    }

    #[test]
    fn an_identical_series_is_left_alone() {
        let samples = [s(1, 1), s(BUCKET_MS * 3, 7)];
        assert_eq!(
            plan(Some(&state_of(&samples)), &chunks_of(&samples)),
            Plan::Unchanged
        );
    }

    #[test]
    fn new_days_only_are_appended_even_before_existing_ones() {
        let old = state_of(&[s(BUCKET_MS * 5, 1)]);
        let new = chunks_of(&[s(BUCKET_MS * 5, 1), s(BUCKET_MS * 6, 2), s(BUCKET_MS, 3)]);
        assert_eq!(plan(Some(&old), &new), Plan::Append(vec![1, 6]));
    }

    #[test]
    fn a_correction_or_a_deleted_day_rewrites_the_series() {
        let old = state_of(&[s(0, 1), s(BUCKET_MS, 2)]);
        assert_eq!(
            plan(Some(&old), &chunks_of(&[s(0, 1), s(BUCKET_MS, 3)])),
            Plan::Rewrite
        );
        assert_eq!(plan(Some(&old), &chunks_of(&[s(0, 1)])), Plan::Rewrite);
        assert_eq!(
            plan(Some(&old), &chunks_of(&[s(0, 1), s(1, 1), s(BUCKET_MS, 2)])),
            Plan::Rewrite
        );
    }

    #[test]
    fn negative_timestamps_fall_in_their_own_buckets() {
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(i64::MAX), i32::MAX);
    }
}
