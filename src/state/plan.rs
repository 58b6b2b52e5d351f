//! Each series is summarised per local day of its timestamps ("bucket"):
//! the number of samples, an order-independent digest of its (timestamp,
//! value) pairs, and the latest timestamp. Comparing those summaries with
//! what the source computes now tells, without asking VictoriaMetrics,
//! whether a series is unchanged, only gained samples after what each day
//! held (append them: new days, or an EcoWatt day whose later hours come
//! inside the future window), or changed anywhere else (VictoriaMetrics
//! cannot overwrite a sample: delete the series, rewrite it). Pure: the
//! tables that hold the summaries are the parent module's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono_tz::Tz;

use crate::model::{plain_days, Sample};

/// The summary of one bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Samples in the bucket.
    pub samples: i32,
    /// Wrapping sum of the samples' hashes.
    pub digest: i64,
    /// The latest timestamp in the bucket.
    pub max_ts: i64,
    /// The sum of the samples' values, in the series' units (wrapping):
    /// what a read-back's sum is compared with when the series is not read.
    pub total: i64,
}

impl Chunk {
    fn add(&mut self, s: Sample) {
        self.max_ts = if self.samples == 0 {
            s.ts
        } else {
            self.max_ts.max(s.ts)
        };
        self.samples += 1;
        self.digest = self.digest.wrapping_add(sample_hash(s));
        self.total = self.total.wrapping_add(s.value);
    }

    /// Adds another summary of the same bucket.
    fn merge(&mut self, other: Chunk) {
        if self.samples == 0 {
            *self = other;
        } else if other.samples != 0 {
            self.samples += other.samples;
            self.digest = self.digest.wrapping_add(other.digest);
            self.max_ts = self.max_ts.max(other.max_ts);
            self.total = self.total.wrapping_add(other.total);
        }
    }

    fn same_samples(&self, other: &Chunk) -> bool {
        self.samples == other.samples && self.digest == other.digest
    }
}

/// The bucket of a timestamp: its local date in `tz`, as days from the
/// common era, so that a new local day never touches the previous day's
/// bucket.
pub fn bucket_of(ts: i64, tz: Tz) -> i32 {
    crate::model::calendar::local_day_number(tz, ts)
}

/// Set in the hashed value of a fractional sample, so that it differs from
/// every whole one.
const FRACTION_TAG: i64 = 1 << 62;

/// A fixed, well-mixed hash of one sample (splitmix64's finaliser): stable
/// across versions and machines, as the digests are stored. A whole value
/// hashes as it did when values were integers, so that an upgrade finds the
/// series it had written unchanged.
fn sample_hash(s: Sample) -> i64 {
    let value = if s.value % 1000 == 0 {
        s.value / 1000
    } else {
        s.value ^ FRACTION_TAG
    };
    let mut z = (s.ts as u64) ^ (value as u64).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z = z ^ (z >> 31);
    // Mix the value in a second time so that (ts, v) and (v, ts) differ.
    let mut w = z ^ (value as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    w = (w ^ (w >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (w ^ (w >> 33)) as i64
}

/// The runs of consecutive samples of one bucket, with their bucket: a
/// series comes in order, so that a look-up per run (not per sample) does.
fn runs(samples: &[Sample], tz: Tz) -> impl Iterator<Item = (i32, &[Sample])> {
    let mut rest = samples;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let (bucket, len) = match plain_days::day_of(tz, first.ts) {
            Some((bucket, start)) => {
                let on_day =
                    |s: &Sample| s.ts >= start && s.ts.saturating_sub(start) < plain_days::DAY_MS;
                (bucket, rest.iter().position(|s| !on_day(s)))
            }
            None => {
                let bucket = bucket_of(first.ts, tz);
                (
                    bucket,
                    rest.iter().position(|s| bucket_of(s.ts, tz) != bucket),
                )
            }
        };
        let (run, tail) = rest.split_at(len.unwrap_or(rest.len()));
        rest = tail;
        Some((bucket, run))
    })
}

/// The per-bucket summaries of a series' samples.
pub fn chunks_of(samples: &[Sample], tz: Tz) -> BTreeMap<i32, Chunk> {
    let mut out: BTreeMap<i32, Chunk> = BTreeMap::new();
    for (bucket, run) in runs(samples, tz) {
        let mut chunk = Chunk::default();
        run.iter().for_each(|s| chunk.add(*s));
        out.entry(bucket).or_default().merge(chunk);
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
    /// The buckets it holds: loaded for one group of series at a time
    /// ([`super::State::load_chunks`]), empty in a family's summary.
    pub chunks: HashMap<i32, Chunk>,
    /// How many samples it holds, as recorded (the sum over its buckets).
    pub held: u64,
    /// The sum of their values, in the series' units; `None` where an older
    /// release recorded a bucket without it.
    pub total: Option<i128>,
    /// How long ago (by PostgreSQL's clock) it was last marked pending or recorded.
    pub age: Duration,
    /// VictoriaMetrics refused its lines for good, as they were recorded.
    pub rejected: bool,
}

impl SeriesState {
    /// How many samples it holds, as recorded.
    pub fn samples(&self) -> u64 {
        self.held
    }
}

/// What to do with a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// VictoriaMetrics holds exactly these samples.
    Unchanged,
    /// Only samples after what each bucket held are new: send, for each
    /// bucket listed, its samples later than the timestamp given.
    Append(BTreeMap<i32, i64>),
    /// Anything else: delete the series and send every sample.
    Rewrite,
    /// The read-back found samples VictoriaMetrics acknowledged but does not
    /// hold, and nothing else wrong: send those again (no delete), and what
    /// an append would send.
    Resend {
        /// Timestamps of the samples to send again.
        missing: HashSet<i64>,
        /// As [`Plan::Append`]'s (empty when nothing is new).
        after: BTreeMap<i32, i64>,
    },
}

impl Plan {
    /// Whether a sample is among those the plan sends.
    pub fn sends(&self, s: &Sample, tz: Tz) -> bool {
        let later =
            |after: &BTreeMap<i32, i64>| after.get(&bucket_of(s.ts, tz)).is_some_and(|t| s.ts > *t);
        match self {
            Plan::Unchanged => false,
            Plan::Rewrite => true,
            Plan::Append(after) => later(after),
            Plan::Resend { missing, after } => missing.contains(&s.ts) || later(after),
        }
    }

    /// The plan that also sends `missing` again.
    pub fn resending(self, missing: HashSet<i64>) -> Plan {
        match self {
            Plan::Unchanged => Plan::Resend {
                missing,
                after: BTreeMap::new(),
            },
            Plan::Append(after) => Plan::Resend { missing, after },
            Plan::Resend {
                missing: mut m,
                after,
            } => {
                m.extend(missing);
                Plan::Resend { missing: m, after }
            }
            Plan::Rewrite => Plan::Rewrite,
        }
    }

    /// The buckets whose recorded summary the plan's samples complete (the
    /// appended ones): samples sent again restore what was recorded.
    pub fn appended_buckets(&self) -> Option<&BTreeMap<i32, i64>> {
        match self {
            Plan::Append(after) | Plan::Resend { after, .. } => Some(after),
            Plan::Unchanged | Plan::Rewrite => None,
        }
    }
}

/// Compares what VictoriaMetrics holds with what it should hold.
pub fn plan(old: Option<&SeriesState>, samples: &[Sample], tz: Tz) -> Plan {
    let Some(old) = old.filter(|o| !o.pending) else {
        return Plan::Rewrite;
    };
    if old.rejected {
        // Refused as it stands: try again only once its rows change.
        let now = chunks_of(samples, tz);
        let same = now.len() == old.chunks.len()
            && now
                .iter()
                .all(|(b, c)| old.chunks.get(b).is_some_and(|o| o.same_samples(c)));
        return if same { Plan::Unchanged } else { Plan::Rewrite };
    }
    let mut held: HashMap<i32, Chunk> = HashMap::with_capacity(old.chunks.len());
    let mut after: BTreeMap<i32, i64> = BTreeMap::new();
    for (bucket, run) in runs(samples, tz) {
        let Some(o) = old.chunks.get(&bucket) else {
            after.insert(bucket, i64::MIN);
            continue;
        };
        let mut chunk = Chunk::default();
        for s in run {
            if s.ts <= o.max_ts {
                chunk.add(*s);
            } else {
                after.insert(bucket, o.max_ts);
            }
        }
        if chunk.samples > 0 {
            held.entry(bucket).or_default().merge(chunk);
        }
    }
    let intact = old
        .chunks
        .iter()
        .all(|(b, o)| held.get(b).is_some_and(|h| h.same_samples(o)));
    if !intact {
        Plan::Rewrite
    } else if after.is_empty() {
        Plan::Unchanged
    } else {
        Plan::Append(after)
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
    /// VictoriaMetrics' answer, when it rejected the series' lines.
    pub rejected: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Paris;

    const DAY: i64 = 86_400_000;
    /// 2024-01-15 00:00 in Paris.
    const D: i64 = 1_705_273_200_000;

    fn s(ts: i64, value: i64) -> Sample {
        Sample::whole(ts, value)
    }

    fn state_of(samples: &[Sample]) -> SeriesState {
        SeriesState {
            id: 1,
            chunks: chunks_of(samples, Paris).into_iter().collect(),
            held: samples.len() as u64,
            ..SeriesState::default()
        }
    }

    fn half_hours(day: i64) -> Vec<Sample> {
        (0..48).map(|i| s(day + i * 1_800_000, i)).collect()
    }

    #[test]
    fn digests_do_not_depend_on_sample_order() {
        let a = chunks_of(&[s(D, 10), s(D + 1, 20), s(D + DAY, 5)], Paris);
        let b = chunks_of(&[s(D + DAY, 5), s(D + 1, 20), s(D, 10)], Paris);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn digests_tell_a_changed_value_or_timestamp() {
        let base = chunks_of(&[s(D, 10), s(D + 1, 20)], Paris);
        assert_ne!(base, chunks_of(&[s(D, 10), s(D + 1, 21)], Paris));
        assert_ne!(base, chunks_of(&[s(D, 10), s(D + 2, 20)], Paris));
        assert_ne!(
            chunks_of(&[s(D, 2)], Paris),
            chunks_of(&[s(D + 2, 0)], Paris)
        );
    }

    #[test]
    fn whole_values_hash_as_integers_did_and_fractions_differ_from_them() {
        // The digest of 2024-01-15 00:00 → 15200, as version 0.1 stored it.
        assert_eq!(sample_hash(s(D, 15200)), 0xaf6a_1501_c5ac_42c9_u64 as i64);
        assert_ne!(
            sample_hash(Sample { ts: D, value: 500 }),
            sample_hash(Sample { ts: D, value: 0 })
        );
        assert_ne!(
            sample_hash(Sample { ts: D, value: 500 }),
            sample_hash(s(D, 500))
        );
    }

    #[test]
    fn buckets_are_local_days() {
        // 00:00 and 23:30 local on the 15th share a bucket; 00:00 on the 16th does not.
        assert_eq!(bucket_of(D, Paris), bucket_of(D + 47 * 1_800_000, Paris));
        assert_ne!(bucket_of(D, Paris), bucket_of(D + DAY, Paris));
        assert_ne!(bucket_of(D - 1, Paris), bucket_of(D, Paris));
    }

    #[test]
    fn an_unknown_or_pending_series_is_rewritten() {
        let new = [s(D, 1)];
        assert_eq!(plan(None, &new, Paris), Plan::Rewrite);
        let mut old = state_of(&new);
        old.pending = true;
        assert_eq!(plan(Some(&old), &new, Paris), Plan::Rewrite);
    }

    #[test]
    fn an_identical_series_is_left_alone() {
        let samples = half_hours(D);
        assert_eq!(
            plan(Some(&state_of(&samples)), &samples, Paris),
            Plan::Unchanged
        );
    }

    #[test]
    fn a_new_local_day_of_half_hours_is_appended_not_rewritten() {
        let old = state_of(&half_hours(D));
        let mut new = half_hours(D);
        new.extend(half_hours(D + DAY));
        let plan = plan(Some(&old), &new, Paris);
        let sent: Vec<_> = new.iter().filter(|x| plan.sends(x, Paris)).collect();
        assert_eq!(sent.len(), 48);
        assert!(sent.iter().all(|x| x.ts >= D + DAY));
    }

    #[test]
    fn later_hours_of_a_day_already_begun_are_appended() {
        let day = half_hours(D);
        let old = state_of(&day[..30]);
        let plan = plan(Some(&old), &day, Paris);
        assert_eq!(day.iter().filter(|x| plan.sends(x, Paris)).count(), 18);
    }

    #[test]
    fn older_days_backfilled_are_appended() {
        let old = state_of(&[s(D + 5 * DAY, 1)]);
        let new = [s(D + 5 * DAY, 1), s(D + 6 * DAY, 2), s(D, 3)];
        let plan = plan(Some(&old), &new, Paris);
        assert!(matches!(plan, Plan::Append(_)));
        assert_eq!(new.iter().filter(|x| plan.sends(x, Paris)).count(), 2);
    }

    #[test]
    fn a_resend_sends_the_missing_samples_and_what_is_new() {
        let day = half_hours(D);
        let old = state_of(&day[..30]);
        let plan = plan(Some(&old), &day, Paris).resending(HashSet::from([D, D + 1_800_000]));
        assert_eq!(day.iter().filter(|x| plan.sends(x, Paris)).count(), 20);
        let only = Plan::Unchanged.resending(HashSet::from([D]));
        assert_eq!(day.iter().filter(|x| only.sends(x, Paris)).count(), 1);
        assert_eq!(Plan::Rewrite.resending(HashSet::from([D])), Plan::Rewrite);
    }

    #[test]
    fn a_rejected_series_waits_for_its_rows_to_change() {
        let samples = half_hours(D);
        let mut old = state_of(&samples);
        old.rejected = true;
        assert_eq!(plan(Some(&old), &samples, Paris), Plan::Unchanged);
        let mut more = samples.clone();
        more.push(s(D + DAY, 1));
        assert_eq!(plan(Some(&old), &more, Paris), Plan::Rewrite);
    }

    #[test]
    fn a_correction_a_deleted_sample_or_an_inserted_earlier_sample_rewrites_the_series() {
        let old = state_of(&[s(D, 1), s(D + DAY, 2)]);
        assert_eq!(
            plan(Some(&old), &[s(D, 1), s(D + DAY, 3)], Paris),
            Plan::Rewrite
        );
        assert_eq!(plan(Some(&old), &[s(D, 1)], Paris), Plan::Rewrite);
        let old = state_of(&[s(D, 1), s(D + 10, 2)]);
        assert_eq!(
            plan(Some(&old), &[s(D, 1), s(D + 5, 9), s(D + 10, 2)], Paris),
            Plan::Rewrite
        );
    }
}
