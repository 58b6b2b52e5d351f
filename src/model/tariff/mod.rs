//! Tariff periods (SPEC §3): each day's load-curve energy split by the
//! period it was drawn in, `myelectricaldata_consumption_period_wh` per
//! calendar day (the contract's off-peak hours) and
//! `myelectricaldata_tempo_consumption_wh` per Tempo day (06:00 to 06:00 in
//! that day's colour, off-peak 22:00-06:00).
//!
//! An interval belongs to the day and the period of its true local start
//! (SPEC §2): on the day clocks go forward a 30-minute meter's row `02:30`
//! is the interval of 01:30. A day is complete when it holds exactly the
//! intervals the client can hold for it: 48 on a 30-minute meter, 46 on the
//! day clocks go forward, and 48 of the 50 on the day they go back (the
//! first copy of the repeated hour lost its label to the second, and is in
//! no sum). Sums add W × minutes and round once, so that a day of 10-minute
//! intervals does not drift by a thousandth of a Wh per interval.
//!
//! Nothing is exported for an incomplete day, so that a sample changes only
//! when a reading or a colour does, never because more of the day arrived.
//!
//! The series belong to the consumption family: its rows are read once for
//! both, and its pass runs again when a colour or a contract changes.

use std::collections::{BTreeMap, HashMap};

use chrono::{Days, NaiveDate, NaiveDateTime, Timelike};
use chrono_tz::Tz;
use serde_json::Value;

pub use crate::model::offpeak::OffPeakHours;

use crate::model::calendar::{day_millis, TempoColor, TrueStart};
use crate::model::costs::{KvaBook, PdlCosts};
use crate::model::energy::{watt_minutes_milli, Interval};
use crate::model::{Contract, Report, Sample, Series};

use crate::model::metric::{
    CONSUMPTION_PERIOD_WH as PERIOD_METRIC, TEMPO_CONSUMPTION_WH as TEMPO_METRIC,
};

/// Minutes in a day.
const DAY: u16 = 1440;
/// A Tempo day starts and ends at 06:00 and its peak hours end at 22:00.
const TEMPO_START: u16 = 6 * 60;
const TEMPO_PEAK_END: u16 = 22 * 60;

/// A tariff period: `period="HP"` (peak) or `period="HC"` (off-peak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Heures pleines.
    Peak,
    /// Heures creuses.
    OffPeak,
}

impl Period {
    /// Both periods, in the order series are listed.
    pub const ALL: [Period; 2] = [Period::Peak, Period::OffPeak];

    /// The `period` label.
    pub fn label(self) -> &'static str {
        match self {
            Period::Peak => "HP",
            Period::OffPeak => "HC",
        }
    }
}

/// Where a PDL's off-peak hours come from, as `check` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `VICTORIAMETRICS_OFFPEAK_HOURS`.
    Setting,
    /// `contract_data.offpeak_hours`.
    Contract,
    /// `pdls.offpeak_hours`.
    Pdls,
    /// None known: 22:00-06:00.
    Default,
}

impl Origin {
    /// Where the hours were read, in users' words.
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Setting => "VICTORIAMETRICS_OFFPEAK_HOURS",
            Origin::Contract => "contract_data.offpeak_hours",
            Origin::Pdls => "pdls.offpeak_hours",
            Origin::Default => "the default, no contract recorded",
        }
    }
}

/// One `offpeak_hours` value as MyElectricalData stores it.
#[derive(Debug, Clone)]
pub struct OffPeakRecord {
    /// `contract_data` or `pdls`.
    pub table: &'static str,
    /// `usage_point_id`.
    pub pdl: String,
    /// The JSON text of `offpeak_hours`.
    pub json: String,
}

/// Every PDL's off-peak hours: the setting when there is one, else the
/// contract as MyElectricalData records it (`contract_data` first, as the
/// client reads it, then `pdls`), else 22:00-06:00.
#[derive(Debug, Clone, Default)]
pub struct OffPeakBook {
    setting: Option<OffPeakHours>,
    by_pdl: HashMap<String, (OffPeakHours, Origin)>,
    default: OffPeakHours,
}

impl OffPeakBook {
    /// The book from the setting and the records read; a record that holds
    /// no range is reported as a skipped row.
    pub fn new(
        setting: Option<OffPeakHours>,
        records: &[OffPeakRecord],
        report: &mut Report,
    ) -> Self {
        let mut by_pdl: HashMap<String, (OffPeakHours, Origin)> = HashMap::new();
        // contract_data wins over pdls, whichever order the records come in.
        for pass in ["contract_data", "pdls"] {
            for r in records.iter().filter(|r| r.table == pass) {
                let value: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
                let empty = match &value {
                    Value::Null => true,
                    Value::Object(m) => m.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::String(s) => s.trim().is_empty(),
                    _ => false,
                };
                match OffPeakHours::from_client_json(&value) {
                    Some(hours) => {
                        let origin = if pass == "contract_data" { Origin::Contract } else { Origin::Pdls };
                        by_pdl.entry(r.pdl.clone()).or_insert((hours, origin));
                    }
                    None if empty => {}
                    None => report.skip(
                        r.table,
                        r.pdl.clone(),
                        format!("offpeak_hours {} names no HH:MM-HH:MM range; its off-peak hours are taken from elsewhere", r.json),
                    ),
                }
            }
        }
        Self {
            setting,
            by_pdl,
            default: OffPeakHours::default(),
        }
    }

    /// A PDL's off-peak hours and where they come from.
    pub fn for_pdl(&self, pdl: &str) -> (&OffPeakHours, Origin) {
        if let Some(s) = &self.setting {
            return (s, Origin::Setting);
        }
        match self.by_pdl.get(pdl) {
            Some((hours, origin)) => (hours, *origin),
            None => (&self.default, Origin::Default),
        }
    }
}

/// Each PDL's off-peak hours and their origin, for `check`.
pub fn describe_offpeak(book: &OffPeakBook, pdls: &[String]) -> String {
    if let Some(setting) = &book.setting {
        return format!("{setting} for every PDL ({})", Origin::Setting.describe());
    }
    if pdls.is_empty() {
        return "no PDL in consumption_data yet".into();
    }
    let each: Vec<String> = pdls
        .iter()
        .map(|pdl| {
            let (hours, origin) = book.for_pdl(pdl);
            format!("{pdl} {hours} ({})", origin.describe())
        })
        .collect();
    each.join("; ")
}

/// What a tariff pass needs besides the load curve.
#[derive(Debug, Clone, Default)]
pub struct TariffInputs {
    /// Each PDL's off-peak hours.
    pub offpeak: OffPeakBook,
    /// Each PDL's subscribed power, for its costs.
    pub kva: KvaBook,
    /// The Tempo colour of each day known, sorted by date.
    pub colours: Vec<(NaiveDate, TempoColor)>,
}

impl TariffInputs {
    fn colour(&self, date: NaiveDate) -> Option<TempoColor> {
        self.colours
            .binary_search_by_key(&date, |(d, _)| *d)
            .ok()
            .map(|i| self.colours[i].1)
    }
}

/// The interval length of a day's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    One(u16),
    /// Rows of several lengths: the day cannot be judged complete.
    Mixed,
}

/// One local date's load-curve intervals, by true start (SPEC §2).
#[derive(Debug, Clone)]
pub struct Day {
    date: NaiveDate,
    length: Length,
    /// (start in Unix ms, local start minute, W × minutes), by start: rows
    /// come nearly in order, so a sorted vector beats a map.
    slots: Vec<(i64, u16, i64)>,
    /// [`holdable`] for this day, computed once for its calendar and Tempo days.
    holdable: std::cell::OnceCell<Option<Vec<(i64, u16)>>>,
}

impl Day {
    fn new(date: NaiveDate, length: u16) -> Self {
        Self {
            date,
            length: Length::One(length),
            slots: Vec::with_capacity(usize::from(DAY / length.max(1)) + 2),
            holdable: std::cell::OnceCell::new(),
        }
    }

    /// Adds an interval of `length` minutes starting at `start`. A second
    /// one at the same instant replaces the first, as the later row wins in
    /// the load curve.
    fn push(&mut self, start: TrueStart, length: u16, watt_minutes: i64) {
        if self.length != Length::One(length) {
            self.length = Length::Mixed;
        }
        let slot = (start.ts, start.minute, watt_minutes);
        match self.slots.last() {
            Some(last) if last.0 >= start.ts => {
                match self.slots.binary_search_by_key(&start.ts, |s| s.0) {
                    Ok(i) => self.slots[i] = slot,
                    Err(i) => self.slots.insert(i, slot),
                }
            }
            _ => self.slots.push(slot),
        }
    }

    /// The intervals whose local start is in `[from, to)` (minutes), when
    /// they are exactly those the client can hold for that part of the day
    /// at the day's interval length; else `None`.
    fn part(&self, tz: Tz, from: u16, to: u16) -> Option<(u16, Vec<(u16, i64)>)> {
        let Length::One(length) = self.length else {
            return None;
        };
        let inside = |m: &u16| (from..to).contains(m);
        let want = self
            .holdable
            .get_or_init(|| holdable(tz, self.date, length))
            .as_ref()?;
        let want = want.iter().filter(|(_, m)| inside(m)).map(|(ts, _)| *ts);
        let got = self.slots.iter().filter(|(_, m, _)| inside(m));
        if !want.eq(got.clone().map(|(ts, _, _)| *ts)) {
            return None;
        }
        Some((length, got.map(|(_, m, wm)| (*m, *wm)).collect()))
    }
}

/// The true starts (Unix ms, local minute) of the intervals of `date` that
/// the client can hold at `length` minutes, in order: every interval of the
/// day but those whose label a later interval took (the first hour of the
/// repeated hour on the day clocks go back). `None` for a length that does
/// not divide the day.
fn holdable(tz: Tz, date: NaiveDate, length: u16) -> Option<Vec<(i64, u16)>> {
    if length == 0 || DAY % length != 0 {
        return None;
    }
    let step = i64::from(length) * 60_000;
    let day = |n: i64| {
        date.checked_add_signed(chrono::Duration::days(n))
            .map(|d| day_millis(tz, d))
    };
    let (before, start, end, after) = (day(-1)?, day(0)?, day(1)?, day(2)?);
    if end - start == 86_400_000 && start - before == 86_400_000 && after - end == 86_400_000 {
        // No change of offset near: the wall clock's own start times.
        return Some(
            (0..DAY)
                .step_by(usize::from(length))
                .map(|m| (start + i64::from(m) * 60_000, m))
                .collect(),
        );
    }
    // Label every interval from the day before to the day after as the
    // client does (its end's wall-clock time, less the length, naively) and
    // keep the later interval of each label.
    let local = |ts: i64| {
        chrono::DateTime::from_timestamp_millis(ts).map(|t| t.with_timezone(&tz).naive_local())
    };
    let length_naive = chrono::Duration::minutes(i64::from(length));
    let mut by_label: HashMap<NaiveDateTime, i64> = HashMap::new();
    let mut ts = before;
    while ts < after {
        by_label.insert(local(ts + step)? - length_naive, ts);
        ts += step;
    }
    let mut kept: Vec<(i64, u16)> = by_label
        .into_values()
        .filter_map(|ts| {
            let t = local(ts)?;
            (t.date() == date).then(|| (ts, (t.hour() * 60 + t.minute()) as u16))
        })
        .collect();
    kept.sort_unstable();
    Some(kept)
}

/// The energy (mWh) of a complete calendar day by period, peak first:
/// W × minutes summed, then rounded once.
pub fn calendar_day(tz: Tz, day: &Day, offpeak: &OffPeakHours) -> Option<[i64; 2]> {
    calendar_watt_minutes(tz, day, offpeak).map(|sums| sums.map(watt_minutes_milli))
}

/// [`calendar_day`]'s sums before rounding, in W × minutes.
fn calendar_watt_minutes(tz: Tz, day: &Day, offpeak: &OffPeakHours) -> Option<[i64; 2]> {
    let (_, rows) = day.part(tz, 0, DAY)?;
    let mut sums = [0i64; 2];
    for (start, watt_minutes) in rows {
        sums[usize::from(offpeak.contains(start))] += watt_minutes;
    }
    Some(sums)
}

/// The energy (mWh) of the Tempo day of `day` (06:00 on it to 06:00 on
/// `next`, which must be the next date) by period, peak first, when both
/// parts are complete at one interval length.
pub fn tempo_day(tz: Tz, day: &Day, next: &Day) -> Option<[i64; 2]> {
    if day.date.checked_add_days(Days::new(1)) != Some(next.date) {
        return None;
    }
    let (len_a, evening) = day.part(tz, TEMPO_START, DAY)?;
    let (len_b, morning) = next.part(tz, 0, TEMPO_START)?;
    if len_a != len_b {
        return None;
    }
    let mut sums = [0i64; 2];
    for (start, watt_minutes) in evening {
        sums[usize::from(start >= TEMPO_PEAK_END)] += watt_minutes;
    }
    sums[1] += morning.iter().map(|(_, wm)| wm).sum::<i64>();
    Some(sums.map(watt_minutes_milli))
}

/// The energy (mWh, rounded once) of a complete Tempo day's hours on the
/// next date, 00:00 to 06:00: the part of its off-peak energy priced at
/// that date's prices.
fn tempo_morning(tz: Tz, next: &Day) -> Option<i64> {
    let (_, morning) = next.part(tz, 0, TEMPO_START)?;
    Some(watt_minutes_milli(morning.iter().map(|(_, wm)| wm).sum()))
}

/// Collects one PDL's load-curve rows, a date at a time, into its tariff
/// series.
#[derive(Debug)]
pub struct PdlTariff {
    pdl: String,
    /// The last day closed, kept for its Tempo day.
    previous: Option<Day>,
    /// The days still open, by local date of their intervals' true start.
    open: BTreeMap<NaiveDate, Day>,
    /// Calendar-day samples, peak then off-peak.
    periods: [Vec<Sample>; 2],
    /// Tempo-day samples by colour, peak then off-peak.
    tempo: [[Vec<Sample>; 2]; 3],
    /// The days' costs.
    costs: PdlCosts,
}

impl PdlTariff {
    /// Starts collecting the rows of `pdl`.
    pub fn new(pdl: &str) -> Self {
        Self {
            pdl: pdl.to_string(),
            previous: None,
            open: BTreeMap::new(),
            periods: Default::default(),
            tempo: Default::default(),
            costs: PdlCosts::default(),
        }
    }

    /// The PDL being collected.
    pub fn pdl(&self) -> &str {
        &self.pdl
    }

    /// Adds one load-curve interval of this PDL, as the consumption
    /// family accepted it, in the source's order (by date, then label).
    pub fn push(&mut self, contract: &Contract, inputs: &TariffInputs, interval: &Interval) {
        let date = interval.start.date;
        // A row's true start is on its date or next to it: days two before
        // get no more rows.
        while let Some(first) = self.open.first_entry() {
            if first
                .key()
                .checked_add_days(Days::new(1))
                .is_some_and(|d| d >= date)
            {
                break;
            }
            let day = first.remove();
            self.close(contract, inputs, day);
        }
        self.open
            .entry(date)
            .or_insert_with(|| Day::new(date, interval.minutes))
            .push(interval.start, interval.minutes, interval.watt_minutes());
    }

    /// A day gets no more rows: its calendar day, and the Tempo day of the
    /// date before, are complete or never will be.
    fn close(&mut self, contract: &Contract, inputs: &TariffInputs, day: Day) {
        let tz = contract.tz;
        let ts = day_millis(tz, day.date);
        let (offpeak, _) = inputs.offpeak.for_pdl(&self.pdl);
        let (kva, _) = inputs.kva.for_pdl(&self.pdl);
        let grid = &contract.prices;
        if let Some(wm) = calendar_watt_minutes(tz, &day, offpeak) {
            let sums = wm.map(watt_minutes_milli);
            for (series, milli) in self.periods.iter_mut().zip(sums) {
                series.push(Sample { ts, value: milli });
            }
            // BASE prices the whole day's energy, itself rounded once.
            let all = watt_minutes_milli(wm[0] + wm[1]);
            self.costs
                .calendar_day(grid, kva, day.date, ts, [sums[0], sums[1], all]);
        }
        if let Some(prev) = &self.previous {
            if let (Some(colour), Some(sums), Some(morning)) = (
                inputs.colour(prev.date),
                tempo_day(tz, prev, &day),
                tempo_morning(tz, &day),
            ) {
                let ts = day_millis(tz, prev.date);
                for (series, milli) in self.tempo[colour.index()].iter_mut().zip(sums) {
                    series.push(Sample { ts, value: milli });
                }
                let [hp, hc] = sums;
                self.costs
                    .tempo_day(grid, kva, prev.date, ts, colour, [hp, hc, morning]);
            }
        }
        self.previous = Some(day);
    }

    /// The PDL's tariff series.
    pub fn finish(
        mut self,
        contract: &Contract,
        inputs: &TariffInputs,
        report: &mut Report,
    ) -> Vec<Series> {
        for day in std::mem::take(&mut self.open).into_values() {
            self.close(contract, inputs, day);
        }
        let pdl = self.pdl.as_str();
        let mut out = Vec::with_capacity(14);
        for (period, samples) in Period::ALL.into_iter().zip(self.periods) {
            out.extend(contract.series(
                PERIOD_METRIC,
                &[("pdl", pdl), ("period", period.label())],
                samples,
                report,
            ));
        }
        for (colour, by_period) in TempoColor::ALL.into_iter().zip(self.tempo) {
            for (period, samples) in Period::ALL.into_iter().zip(by_period) {
                out.extend(contract.series(
                    TEMPO_METRIC,
                    &[
                        ("pdl", pdl),
                        ("color", colour.french()),
                        ("period", period.label()),
                    ],
                    samples,
                    report,
                ));
            }
        }
        out.extend(self.costs.finish(contract, pdl, report));
        out
    }
}

#[cfg(test)]
mod tests;
