//! Plain local days, remembered: a day with one UTC offset from midnight to
//! midnight (all but two a year in France), on which wall-clock time is the
//! midnight's Unix time plus the time of day. Reading a time on such a day
//! needs no look-up in the zone's rules, which the profile showed as a
//! fifth of the exporter's CPU (a look-up per row and per sample).
//!
//! The days are remembered per thread: a few recent ones, searched first,
//! and every date asked (a few hundred a year), bounded.

use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{Datelike, LocalResult, NaiveDate, NaiveTime, Offset, TimeZone};
use chrono_tz::Tz;

/// Milliseconds in a day without a change of offset.
pub const DAY_MS: i64 = 86_400_000;

/// A plain day.
#[derive(Debug, Clone, Copy)]
struct PlainDay {
    tz: Tz,
    date: NaiveDate,
    /// Days from the common era.
    number: i32,
    /// Unix milliseconds of its midnight.
    start: i64,
}

impl PlainDay {
    fn holds(&self, tz: Tz, ts: i64) -> bool {
        self.tz == tz && ts >= self.start && ts.saturating_sub(self.start) < DAY_MS
    }
}

/// Recent days searched first: the rows of a day, its neighbours and the
/// day being summed.
const RECENT: usize = 4;

/// Past this many dates remembered, the memory starts again.
const KNOWN_MAX: usize = 100_000;

#[derive(Default)]
struct Memory {
    recent: [Option<PlainDay>; RECENT],
    /// Every date asked: its midnight when the day is plain.
    known: HashMap<(Tz, NaiveDate), Option<i64>>,
}

impl Memory {
    fn remember(&mut self, day: PlainDay) {
        self.recent.rotate_right(1);
        self.recent[0] = Some(day);
    }
}

thread_local! {
    static MEMORY: RefCell<Memory> = RefCell::new(Memory::default());
}

/// Runs `f` on this thread's memory, or returns `None` when it is in use
/// (it never is: no function here calls another while holding it).
fn with_memory<T>(f: impl FnOnce(&mut Memory) -> Option<T>) -> Option<T> {
    MEMORY.with(|m| m.try_borrow_mut().ok().and_then(|mut m| f(&mut m)))
}

/// Unix milliseconds of `date`'s midnight when the day is plain, else `None`.
pub fn midnight(tz: Tz, date: NaiveDate) -> Option<i64> {
    let known = with_memory(|m| {
        if let Some(day) = m
            .recent
            .iter()
            .flatten()
            .find(|d| d.tz == tz && d.date == date)
        {
            return Some(Some(day.start));
        }
        let start = (*m.known.get(&(tz, date))?)?;
        m.remember(PlainDay {
            tz,
            date,
            number: date.num_days_from_ce(),
            start,
        });
        Some(Some(start))
    });
    if let Some(start) = known {
        return start;
    }
    let start = by_rules(tz, date);
    with_memory(|m| {
        if m.known.len() >= KNOWN_MAX {
            m.known.clear();
        }
        m.known.insert((tz, date), start);
        if let Some(start) = start {
            m.remember(PlainDay {
                tz,
                date,
                number: date.num_days_from_ce(),
                start,
            });
        }
        Some(())
    });
    start
}

/// The date (days from the common era) of a Unix time when it falls on a
/// plain day remembered or on the day after one; `None` when the zone's
/// rules must tell.
pub fn day_number(tz: Tz, ts: i64) -> Option<i32> {
    day_of(tz, ts).map(|(number, _)| number)
}

/// As [`day_number`], with the day's midnight (Unix ms): every time from it
/// to 24 hours later is on that day.
pub fn day_of(tz: Tz, ts: i64) -> Option<(i32, i64)> {
    let recent = with_memory(|m| Some(m.recent))?;
    if let Some(day) = recent.iter().flatten().find(|d| d.holds(tz, ts)) {
        return Some((day.number, day.start));
    }
    // The next day of a recent one: a series goes forward a day at a time.
    let day = recent
        .iter()
        .flatten()
        .find(|d| d.tz == tz && (DAY_MS..2 * DAY_MS).contains(&ts.saturating_sub(d.start)))?;
    let next = day.date.succ_opt()?;
    let start = day.start + DAY_MS;
    (midnight(tz, next)? == start).then(|| (next.num_days_from_ce(), start))
}

/// Whether `date` is plain, and its midnight, from the zone's rules: both
/// midnights (this day's and the next) occur once, 24 hours apart, with one
/// offset between them.
fn by_rules(tz: Tz, date: NaiveDate) -> Option<i64> {
    let once = |date: NaiveDate| match tz.from_local_datetime(&date.and_time(NaiveTime::MIN)) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        _ => None,
    };
    let start = once(date)?;
    let end = once(date.succ_opt()?)?;
    let offset = |ts: i64| {
        chrono::DateTime::from_timestamp_millis(ts).map(|t| {
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        })
    };
    (end - start == DAY_MS && offset(start).is_some() && offset(start) == offset(end - 1))
        .then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Paris;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn the_days_the_clocks_change_are_not_plain_and_their_neighbours_are() {
        assert_eq!(midnight(Paris, d(2024, 3, 31)), None);
        assert_eq!(midnight(Paris, d(2024, 10, 27)), None);
        // 2024-03-30 00:00 in Paris (UTC+1) and 2024-04-01 (UTC+2).
        assert_eq!(midnight(Paris, d(2024, 3, 30)), Some(1_711_753_200_000));
        assert_eq!(midnight(Paris, d(2024, 4, 1)), Some(1_711_922_400_000));
    }

    #[test]
    fn a_time_on_the_day_after_a_remembered_one_is_found_without_the_rules() {
        let start = midnight(Paris, d(2024, 1, 15)).unwrap();
        assert_eq!(
            day_number(Paris, start + DAY_MS + 1),
            Some(d(2024, 1, 16).num_days_from_ce())
        );
        assert_eq!(
            day_number(Paris, start + 5),
            Some(d(2024, 1, 15).num_days_from_ce())
        );
    }

    #[test]
    fn times_at_the_ends_of_the_range_are_left_to_the_rules() {
        midnight(Paris, d(2024, 1, 15));
        assert_eq!(day_number(Paris, i64::MIN), None);
        assert_eq!(day_number(Paris, i64::MAX), None);
    }
}
