//! What the dashboard's cost panels should show, summed by hand: the days
//! the spec's model prices (`model::expected_priced`, computed from
//! PostgreSQL's rows and the price grid apart from the exporter), and the
//! grid's prices in force (`model::Pricing`).
//!
//! Keys are those of `grafana::Answer::keyed`: label values joined by a
//! space (`"12345678901234 TEMPO"`); a day shows at 00:00 UTC of its date,
//! where a 1-day step reads the samples of its local midnight, just before.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Paris;

use super::grafana::Points;
use super::model::{scale_of, Mirror, Pricing};

/// € (or Wh) by key, then by day.
pub type Daily = BTreeMap<String, BTreeMap<NaiveDate, f64>>;

/// Unix seconds of 00:00 UTC on `date`.
pub fn utc_midnight(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp()
}

/// The local date of a sample at a local midnight (Unix ms).
fn local_date(ms: i64) -> NaiveDate {
    Utc.timestamp_millis_opt(ms)
        .unwrap()
        .with_timezone(&Paris)
        .date_naive()
}

/// The days the model prices.
pub struct PricedDays {
    /// `"pdl option part"` → day → €.
    pub cost: Daily,
    /// `"pdl colour period"` → Tempo day → Wh.
    pub tempo_wh: Daily,
}

impl PricedDays {
    /// The cost and Tempo energy series of the model's mirror `m`.
    pub fn of(m: &Mirror) -> Self {
        let mut out = PricedDays {
            cost: Daily::new(),
            tempo_wh: Daily::new(),
        };
        for (l, samples) in m {
            let name = l["__name__"].as_str();
            let (map, key) = match name {
                "myelectricaldata_cost_eur" => {
                    (&mut out.cost, [&l["pdl"], &l["option"], &l["part"]])
                }
                "myelectricaldata_tempo_consumption_wh" => {
                    (&mut out.tempo_wh, [&l["pdl"], &l["color"], &l["period"]])
                }
                _ => continue,
            };
            let key = key.map(String::as_str).join(" ");
            for (ts, v) in samples {
                let day = local_date(*ts);
                let v = *v as f64 / scale_of(name);
                assert!(
                    map.entry(key.clone()).or_default().insert(day, v).is_none(),
                    "{key}: two samples on {day}"
                );
            }
        }
        out
    }

    /// The days of one series of costs: `"pdl option part"`.
    pub fn days(&self, key: &str) -> BTreeSet<NaiveDate> {
        self.cost
            .get(key)
            .map(|d| d.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The days on which `pdl` has the costs of the three options, energy
    /// and subscription.
    pub fn complete_days(&self, pdl: &str) -> BTreeSet<NaiveDate> {
        let mut count: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for (key, days) in &self.cost {
            if key.split(' ').next() == Some(pdl) {
                for d in days.keys() {
                    *count.entry(*d).or_default() += 1;
                }
            }
        }
        count
            .into_iter()
            .filter(|(_, n)| *n == 6)
            .map(|(d, _)| d)
            .collect()
    }

    /// Each PDL and option's cost (energy + subscription) of each day that
    /// `keep(pdl, day)` keeps: `"pdl option"` → day → €.
    pub fn per_day(&self, keep: impl Fn(&str, NaiveDate) -> bool) -> Daily {
        let mut out = Daily::new();
        for (key, days) in &self.cost {
            let (pdl_option, _part) = key.rsplit_once(' ').unwrap();
            let pdl = pdl_option.split(' ').next().unwrap();
            for (d, eur) in days.iter().filter(|(d, _)| keep(pdl, **d)) {
                *out.entry(pdl_option.to_string())
                    .or_default()
                    .entry(*d)
                    .or_default() += eur;
            }
        }
        out
    }

    /// The Tempo energy's cost of the days `keep` keeps, by `"COLOUR
    /// PERIOD"`, every PDL together: each day's energy at the price of its
    /// colour and period in force that day, for `kva`.
    pub fn tempo_by_colour(
        &self,
        pricing: &Pricing,
        kva: i64,
        keep: impl Fn(NaiveDate) -> bool,
    ) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (key, days) in &self.tempo_wh {
            let (_, colour_period) = key.split_once(' ').unwrap();
            let (colour, period) = colour_period.split_once(' ').unwrap();
            let en = match colour {
                "BLEU" => "blue",
                "BLANC" => "white",
                "ROUGE" => "red",
                c => panic!("colour {c}"),
            };
            let item = format!("{en}_{}", period.to_lowercase());
            for (d, wh) in days.iter().filter(|(d, _)| keep(**d)) {
                let price = pricing
                    .price("TEMPO", &item, kva, *d)
                    .unwrap_or_else(|| panic!("no {item} price on {d}"));
                *out.entry(colour_period.to_string()).or_default() +=
                    wh / 1000.0 * price as f64 / 1e6;
            }
        }
        out
    }

    /// Each PDL's share (%) of its Tempo energy drawn in red peak hours.
    pub fn red_peak_share(&self) -> BTreeMap<String, f64> {
        let mut all: BTreeMap<String, f64> = BTreeMap::new();
        let mut red: BTreeMap<String, f64> = BTreeMap::new();
        for (key, days) in &self.tempo_wh {
            let pdl = key.split(' ').next().unwrap().to_string();
            let wh: f64 = days.values().sum();
            *all.entry(pdl.clone()).or_default() += wh;
            if key.ends_with(" ROUGE HP") {
                *red.entry(pdl).or_default() += wh;
            }
        }
        all.into_iter()
            .map(|(pdl, all)| {
                let share = red.get(&pdl).copied().unwrap_or(0.0) / all * 100.0;
                (pdl, share)
            })
            .collect()
    }
}

/// `per_day` with each day at 00:00 UTC of its date.
pub fn daily_points(per_day: &Daily) -> Points {
    per_day
        .iter()
        .map(|(k, days)| {
            let points = days.iter().map(|(d, v)| (utc_midnight(*d), *v)).collect();
            (k.clone(), points)
        })
        .collect()
}

/// `per_day` summed by calendar month, each month at 00:00 UTC of its last
/// day.
pub fn monthly_points(per_day: &Daily) -> Points {
    let mut out = Points::new();
    for (k, days) in per_day {
        for (d, v) in days {
            let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap();
            let last = first + chrono::Months::new(1) - chrono::Days::new(1);
            *out.entry(k.clone())
                .or_default()
                .entry(utc_midnight(last))
                .or_default() += v;
        }
    }
    out
}

/// Each key's total, as one point at `at`.
pub fn totals_at(per_day: &Daily, at: i64) -> Points {
    per_day
        .iter()
        .map(|(k, days)| (k.clone(), BTreeMap::from([(at, days.values().sum())])))
        .collect()
}

/// The smallest of each PDL's totals (`"pdl option"` keys), as one point
/// at `at`.
pub fn cheapest_at(per_day: &Daily, at: i64) -> Points {
    let mut best: BTreeMap<&str, (f64, &str)> = BTreeMap::new();
    for (k, days) in per_day {
        let pdl = k.split(' ').next().unwrap();
        let total: f64 = days.values().sum();
        let b = best.entry(pdl).or_insert((total, k));
        if total < b.0 {
            *b = (total, k);
        }
    }
    best.into_values()
        .map(|(total, k)| (k.to_string(), BTreeMap::from([(at, total)])))
        .collect()
}

/// The first day of the Tempo season (1 September to 31 August) of `day`.
pub fn season_start(day: NaiveDate) -> NaiveDate {
    let year = if day.month() >= 9 {
        day.year()
    } else {
        day.year() - 1
    };
    NaiveDate::from_ymd_opt(year, 9, 1).unwrap()
}
