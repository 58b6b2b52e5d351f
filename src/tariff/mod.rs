//! Tariff periods (SPEC §3): each day's load-curve energy split by the
//! period it was drawn in, `myelectricaldata_consumption_period_wh` per
//! calendar day (the contract's off-peak hours) and
//! `myelectricaldata_tempo_consumption_wh` per Tempo day (06:00 to 06:00 in
//! that day's colour, off-peak 22:00-06:00).
//!
//! Days are judged by the rows MyElectricalData keeps: one per wall-clock
//! start time (`interval_start`) and date. A day is complete when it holds a
//! row for as many start times as the day has at the meter's interval length:
//! 48 on a 30-minute meter, 46 on the March change day, whose clock skips an
//! hour, and 48 on the October one, where the client keeps one reading per
//! start time and so one of the repeated hour. Counting rather than naming
//! the start times accepts the March day as the client writes it (its
//! 02:30 row stands for the 01:30 interval). An interval's period is that of
//! its start time.
//!
//! Nothing is exported for an incomplete day, so that a sample changes only
//! when a reading or a colour does, never because more of the day arrived.
//!
//! The series belong to the consumption family: its rows are read once for
//! both, and its pass runs again when a colour or a contract changes.

pub mod offpeak;

use std::collections::HashMap;

use chrono::{Days, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde_json::Value;

pub use offpeak::OffPeakHours;

use crate::calendar::{day_millis, TempoColor};
use crate::contract::energy::Interval;
use crate::contract::{Contract, Report, Sample, Series};

/// `myelectricaldata_consumption_period_wh`.
pub const PERIOD_METRIC: &str = "myelectricaldata_consumption_period_wh";
/// `myelectricaldata_tempo_consumption_wh`.
pub const TEMPO_METRIC: &str = "myelectricaldata_tempo_consumption_wh";

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
    /// Rows of several lengths, or not aligned on it: the day cannot be
    /// judged complete.
    Mixed,
}

/// One date's load-curve rows: start (minutes after midnight, wall clock)
/// and energy (mWh).
#[derive(Debug, Clone)]
pub struct Day {
    date: NaiveDate,
    length: Length,
    slots: Vec<(u16, i64)>,
}

impl Day {
    fn new(date: NaiveDate, length: u16) -> Self {
        Self {
            date,
            length: Length::One(length),
            slots: Vec::new(),
        }
    }

    /// Adds an interval starting at `start` of `length` minutes. Rows come
    /// by start time, one per start (the unique constraint): a second row
    /// for the start just added replaces it, as the later row wins in the
    /// load curve; one out of order makes the day too long to be complete.
    fn push(&mut self, start: u16, length: u16, milli: i64) {
        if self.length != Length::One(length) || start % length != 0 {
            self.length = Length::Mixed;
        }
        match self.slots.last_mut() {
            Some(last) if last.0 == start => last.1 = milli,
            _ => self.slots.push((start, milli)),
        }
    }

    /// The rows starting in `[from, to)` when every start time of that part
    /// of the day is there at the day's interval length, else `None`.
    fn part(&self, tz: Tz, from: u16, to: u16) -> Option<(u16, impl Iterator<Item = &(u16, i64)>)> {
        let Length::One(length) = self.length else {
            return None;
        };
        if length == 0 || DAY % length != 0 {
            return None;
        }
        let rows = || {
            self.slots
                .iter()
                .filter(move |(s, _)| (from..to).contains(s))
        };
        (rows().count() == start_times(tz, self.date, length, from, to)).then(|| (length, rows()))
    }
}

/// How many start times `k × length` in `[from, to)` the wall clock shows on
/// `date`: fewer on the day the clock skips an hour.
fn start_times(tz: Tz, date: NaiveDate, length: u16, from: u16, to: u16) -> usize {
    let all = (0..DAY)
        .step_by(usize::from(length))
        .filter(|m| (from..to).contains(m));
    let Some(next) = date.checked_add_days(Days::new(1)) else {
        return all.count();
    };
    if day_millis(tz, next) - day_millis(tz, date) >= 86_400_000 {
        return all.count();
    }
    all.filter(|m| {
        let local = date.and_hms_opt(u32::from(m / 60), u32::from(m % 60), 0);
        local.is_some_and(|t| !matches!(tz.from_local_datetime(&t), chrono::LocalResult::None))
    })
    .count()
}

/// The energy (mWh) of a complete calendar day by period, peak first.
pub fn calendar_day(tz: Tz, day: &Day, offpeak: &OffPeakHours) -> Option<[i64; 2]> {
    let (_, rows) = day.part(tz, 0, DAY)?;
    let mut sums = [0i64; 2];
    for &(start, milli) in rows {
        sums[usize::from(offpeak.contains(start))] += milli;
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
    for &(start, milli) in evening {
        sums[usize::from(start >= TEMPO_PEAK_END)] += milli;
    }
    sums[1] += morning.map(|(_, m)| m).sum::<i64>();
    Some(sums)
}

/// Collects one PDL's load-curve rows, a date at a time, into its tariff
/// series.
#[derive(Debug)]
pub struct PdlTariff {
    pdl: String,
    /// The date before the current one, kept for its Tempo day.
    previous: Option<Day>,
    current: Option<Day>,
    /// Calendar-day samples, peak then off-peak.
    periods: [Vec<Sample>; 2],
    /// Tempo-day samples by colour, peak then off-peak.
    tempo: [[Vec<Sample>; 2]; 3],
}

impl PdlTariff {
    /// Starts collecting the rows of `pdl`.
    pub fn new(pdl: &str) -> Self {
        Self {
            pdl: pdl.to_string(),
            previous: None,
            current: None,
            periods: Default::default(),
            tempo: Default::default(),
        }
    }

    /// The PDL being collected.
    pub fn pdl(&self) -> &str {
        &self.pdl
    }

    /// Adds one load-curve interval of this PDL, as the consumption
    /// family accepted it, in the source's order (by date, then start).
    pub fn push(&mut self, contract: &Contract, inputs: &TariffInputs, interval: &Interval) {
        let Interval {
            date,
            start_minute,
            minutes,
            milli,
        } = *interval;
        if self.current.as_ref().is_none_or(|d| d.date != date) {
            self.close_current(contract, inputs);
            self.current = Some(Day::new(date, minutes));
        }
        if let Some(day) = self.current.as_mut() {
            day.push(start_minute, minutes, milli);
        }
    }

    /// The current date gets no more rows: its calendar day, and the Tempo
    /// day of the date before, are complete or never will be.
    fn close_current(&mut self, contract: &Contract, inputs: &TariffInputs) {
        let Some(day) = self.current.take() else {
            return;
        };
        let tz = contract.tz;
        let ts = day_millis(tz, day.date);
        let (offpeak, _) = inputs.offpeak.for_pdl(&self.pdl);
        if let Some(sums) = calendar_day(tz, &day, offpeak) {
            for (series, milli) in self.periods.iter_mut().zip(sums) {
                series.push(Sample { ts, milli });
            }
        }
        if let Some(prev) = &self.previous {
            if let (Some(colour), Some(sums)) =
                (inputs.colour(prev.date), tempo_day(tz, prev, &day))
            {
                let ts = day_millis(tz, prev.date);
                for (series, milli) in self.tempo[colour.index()].iter_mut().zip(sums) {
                    series.push(Sample { ts, milli });
                }
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
        self.close_current(contract, inputs);
        let pdl = self.pdl.as_str();
        let mut out = Vec::with_capacity(8);
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
        out
    }
}

#[cfg(test)]
mod tests;
