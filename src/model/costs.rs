//! Costs (SPEC §3, "Costs"): what each complete day cost under each
//! regulated option, at the prices in force that day, and the price grid
//! itself as series.
//!
//! Every option is priced for every PDL, whatever its contract, so that a
//! household can compare: BASE and HC_HP per calendar day, TEMPO per Tempo
//! day of known colour, and the subscription of each per calendar day with
//! a complete load curve (the month's price over the month's days). An
//! option not offered at the PDL's power that day (no subscription in force
//! for it) has no sample of either part, and a part with no price in force
//! has none either: a partial cost of an option the household could not
//! have had would make it look cheaper than it is.
//!
//! Each interval is priced at the prices in force at its true start: a
//! Tempo day runs 06:00 to 06:00, so its 00:00-06:00 off-peak hours on the
//! day a change takes effect are priced at the new prices (the energy of
//! those hours rounded once, the rest of the off-peak energy at the day's).
//!
//! Energy is the tariff periods' exact sums (mWh, rounded once), prices are
//! millionths of a euro, and a cost is their product rounded once to the
//! millionth.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};

use crate::model::calendar::{day_millis, TempoColor};
use crate::model::metric::{COST_EUR, PRICE_EUR};
use crate::model::prices::{powers_listed, Item, PriceGrid, PriceOption, DEFAULT_KVA, POWERS};
use crate::model::{Contract, Report, Sample, Scale, Series};

/// The `part` label of a cost.
const PARTS: [&str; 2] = ["energy", "subscription"];

/// Where a PDL's subscribed power comes from, as `check` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvaOrigin {
    /// `VICTORIAMETRICS_SUBSCRIBED_KVA`.
    Setting,
    /// `pdls.subscribed_power`.
    Pdls,
    /// None recorded: 6 kVA.
    Default,
}

impl KvaOrigin {
    /// Where the power was read, in users' words.
    pub fn describe(self) -> &'static str {
        match self {
            KvaOrigin::Setting => "VICTORIAMETRICS_SUBSCRIBED_KVA",
            KvaOrigin::Pdls => "pdls.subscribed_power",
            KvaOrigin::Default => "the default, no subscribed power recorded",
        }
    }
}

/// Each PDL's subscribed power: the setting, else `pdls.subscribed_power`,
/// else 6 kVA.
#[derive(Debug, Clone, Default)]
pub struct KvaBook {
    setting: Option<u8>,
    by_pdl: HashMap<String, u8>,
}

impl KvaBook {
    /// The book from the setting and `pdls`' (PDL, `subscribed_power`)
    /// rows; a power no regulated contract has is reported as a skipped row.
    pub fn new(setting: Option<u8>, records: &[(String, i64)], report: &mut Report) -> Self {
        let mut by_pdl = HashMap::new();
        for (pdl, kva) in records {
            match u8::try_from(*kva).ok().filter(|k| POWERS.contains(k)) {
                Some(k) => {
                    by_pdl.insert(pdl.clone(), k);
                }
                None => report.skip(
                    "pdls",
                    pdl.clone(),
                    format!(
                        "subscribed_power {kva} is not a regulated power ({} kVA); {DEFAULT_KVA} kVA is assumed",
                        powers_listed()
                    ),
                ),
            }
        }
        Self { setting, by_pdl }
    }

    /// A PDL's power and where it comes from.
    pub fn for_pdl(&self, pdl: &str) -> (u8, KvaOrigin) {
        if let Some(k) = self.setting {
            return (k, KvaOrigin::Setting);
        }
        match self.by_pdl.get(pdl) {
            Some(k) => (*k, KvaOrigin::Pdls),
            None => (DEFAULT_KVA, KvaOrigin::Default),
        }
    }
}

/// `n / d` rounded to the nearest, halves away from zero.
fn div_round(n: i128, d: i128) -> i64 {
    let q = (n.abs() + d / 2) / d;
    let q = if n < 0 { -q } else { q };
    i64::try_from(q).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// The cost (millionths of a euro) of energies in mWh at prices in
/// millionths of a euro per kWh: summed exactly, rounded once.
pub fn energy_cost(parts: &[(i64, i64)]) -> i64 {
    let exact: i128 = parts
        .iter()
        .map(|(mwh, price)| i128::from(*mwh) * i128::from(*price))
        .sum();
    // mWh × µ€/kWh = 1e-6 kWh × 1e-6 € / kWh = 1e-12 €.
    div_round(exact, 1_000_000)
}

/// One day's share (millionths of a euro) of a monthly subscription: the
/// month's price over the days of the date's month.
pub fn daily_subscription(month_micro: i64, date: NaiveDate) -> i64 {
    div_round(i128::from(month_micro), i128::from(days_in_month(date)))
}

/// 28 to 31.
fn days_in_month(date: NaiveDate) -> u32 {
    let first = date.with_day(1).unwrap_or(date);
    first
        .checked_add_months(chrono::Months::new(1))
        .and_then(|next| next.pred_opt())
        .map_or(30, |last| last.day())
}

/// One PDL's cost samples, by option (in [`PriceOption::ALL`] order) and part.
#[derive(Debug, Default)]
pub struct PdlCosts {
    parts: [[Vec<Sample>; 2]; 3],
}

impl PdlCosts {
    fn push(&mut self, option: PriceOption, part: usize, ts: i64, value: i64) {
        let i = PriceOption::ALL
            .iter()
            .position(|o| *o == option)
            .unwrap_or(0);
        self.parts[i][part].push(Sample { ts, value });
    }

    /// A complete calendar day of `energy` (mWh: peak, off-peak, and the
    /// whole day rounded once) at `ts`: BASE's and HC_HP's energy, and
    /// every option's subscription.
    pub fn calendar_day(
        &mut self,
        grid: &PriceGrid,
        kva: u8,
        date: NaiveDate,
        ts: i64,
        [hp, hc, all]: [i64; 3],
    ) {
        let price = |option, item| {
            grid.offered(option, kva, date)
                .then(|| grid.price(option, item, kva, date))
                .flatten()
        };
        if let Some(p) = price(PriceOption::Base, Item::Base) {
            self.push(PriceOption::Base, 0, ts, energy_cost(&[(all, p)]));
        }
        if let (Some(php), Some(phc)) = (
            price(PriceOption::HcHp, Item::Hp),
            price(PriceOption::HcHp, Item::Hc),
        ) {
            let cost = energy_cost(&[(hp, php), (hc, phc)]);
            self.push(PriceOption::HcHp, 0, ts, cost);
        }
        for option in PriceOption::ALL {
            if let Some(month) = price(option, Item::SubscriptionMonth) {
                self.push(option, 1, ts, daily_subscription(month, date));
            }
        }
    }

    /// A complete Tempo day of `colour` and energy (mWh: peak, off-peak,
    /// and the part of the off-peak that falls on the next date, 00:00 to
    /// 06:00) at `ts`: the hours of its date at that date's prices, those
    /// of the next date at the next date's, in the day's colour.
    pub fn tempo_day(
        &mut self,
        grid: &PriceGrid,
        kva: u8,
        date: NaiveDate,
        ts: i64,
        colour: TempoColor,
        [hp, hc, morning]: [i64; 3],
    ) {
        if !grid.offered(PriceOption::Tempo, kva, date) {
            return;
        }
        let [ihp, ihc] = Item::tempo(colour);
        let price = |item, date| grid.price(PriceOption::Tempo, item, kva, date);
        let next = date.succ_opt().unwrap_or(date);
        if let (Some(php), Some(phc), Some(phc_next)) =
            (price(ihp, date), price(ihc, date), price(ihc, next))
        {
            let cost = energy_cost(&[(hp, php), (hc - morning, phc), (morning, phc_next)]);
            self.push(PriceOption::Tempo, 0, ts, cost);
        }
    }

    /// The PDL's cost series.
    pub fn finish(self, contract: &Contract, pdl: &str, report: &mut Report) -> Vec<Series> {
        let mut out = Vec::with_capacity(6);
        for (option, parts) in PriceOption::ALL.into_iter().zip(self.parts) {
            for (part, samples) in PARTS.into_iter().zip(parts) {
                out.extend(contract.series_in(
                    COST_EUR,
                    &[("pdl", pdl), ("option", option.label()), ("part", part)],
                    &[],
                    Scale::Micro,
                    samples,
                    report,
                ));
            }
        }
        out
    }
}

/// `myelectricaldata_price_eur`: one series per option, power and item of
/// the grid, one sample per row at its `from` date. A row for every power
/// has no `kva` label.
pub fn price_series(contract: &Contract, grid: &PriceGrid, report: &mut Report) -> Vec<Series> {
    let mut by_series: BTreeMap<(PriceOption, Option<u8>, Item), Vec<Sample>> = BTreeMap::new();
    for r in grid.rows() {
        by_series
            .entry((r.option, r.kva, r.item))
            .or_default()
            .push(Sample {
                ts: day_millis(contract.tz, r.from),
                value: r.micro,
            });
    }
    by_series
        .into_iter()
        .filter_map(|((option, kva, item), samples)| {
            let kva = kva.map(|k| k.to_string());
            let mut labels = vec![("option", option.label())];
            if let Some(k) = &kva {
                labels.push(("kva", k.as_str()));
            }
            labels.push(("item", item.label()));
            contract.series_in(PRICE_EUR, &labels, &["kva"], Scale::Micro, samples, report)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn an_energy_cost_is_the_exact_product_rounded_once() {
        // 12.345 kWh at 0.1952 €/kWh = 2.409744 €.
        assert_eq!(energy_cost(&[(12_345_000, 195_200)]), 2_409_744);
        // 1.0005 kWh peak at 0.2065 and 0.0015 kWh off-peak at 0.1579:
        // 0.20660325 + 0.00023685 = 0.2068401 € → 0.206840.
        assert_eq!(
            energy_cost(&[(1_000_500, 206_500), (1_500, 157_900)]),
            206_840
        );
        // Half a millionth rounds up: 0.0025 kWh at 0.0002 €/kWh = 0.0000005 €.
        assert_eq!(energy_cost(&[(2_500, 200)]), 1);
        assert_eq!(energy_cost(&[]), 0);
    }

    #[test]
    fn a_day_of_subscription_is_the_month_over_its_days() {
        // 15.65 €/month: 31 days in January, 28 in February 2026, 29 in February 2024.
        assert_eq!(daily_subscription(15_650_000, d("2026-01-15")), 504_839);
        assert_eq!(daily_subscription(15_650_000, d("2026-02-28")), 558_929);
        assert_eq!(daily_subscription(15_650_000, d("2024-02-01")), 539_655);
        assert_eq!(daily_subscription(12_000_000, d("2026-04-30")), 400_000);
    }

    #[test]
    fn a_pdls_power_comes_from_the_setting_then_pdls_then_six_kva() {
        let mut r = Report::default();
        let records = vec![("a".to_string(), 9), ("b".to_string(), 7)];
        let book = KvaBook::new(None, &records, &mut r);
        assert_eq!(book.for_pdl("a"), (9, KvaOrigin::Pdls));
        assert_eq!(book.for_pdl("b"), (6, KvaOrigin::Default));
        assert_eq!(book.for_pdl("c"), (6, KvaOrigin::Default));
        assert_eq!(r.skipped.len(), 1);
        let book = KvaBook::new(Some(12), &records, &mut Report::default());
        assert_eq!(book.for_pdl("a"), (12, KvaOrigin::Setting));
    }

    #[test]
    fn a_day_is_priced_under_every_option_at_the_prices_of_its_date() {
        let grid = PriceGrid::parse(
            "2026-01-01,BASE,,base,0.2000\n\
             2026-01-01,BASE,6,subscription_month,12.40\n\
             2026-01-01,HC_HP,,hp,0.2500\n\
             2026-01-01,HC_HP,,hc,0.1500\n\
             2026-01-01,HC_HP,6,subscription_month,15.50\n\
             2026-01-01,TEMPO,,red_hp,0.7000\n\
             2026-01-01,TEMPO,,red_hc,0.1500\n\
             2026-01-01,TEMPO,6,subscription_month,15.00\n\
             2026-02-01,BASE,,base,0.1000\n",
        )
        .unwrap();
        let mut c = PdlCosts::default();
        // 10 kWh peak, 5 kWh off-peak, 15.0004 kWh in all.
        c.calendar_day(
            &grid,
            6,
            d("2026-01-31"),
            1,
            [10_000_000, 5_000_000, 15_000_400],
        );
        c.calendar_day(
            &grid,
            6,
            d("2026-02-01"),
            2,
            [10_000_000, 5_000_000, 15_000_000],
        );
        c.tempo_day(
            &grid,
            6,
            d("2026-01-31"),
            1,
            TempoColor::Red,
            [10_000_000, 5_000_000, 3_000_000],
        );
        // No blue price: no Tempo energy that day.
        c.tempo_day(
            &grid,
            6,
            d("2026-02-01"),
            2,
            TempoColor::Blue,
            [10_000_000, 5_000_000, 3_000_000],
        );
        let v = |o: usize, p: usize| -> Vec<(i64, i64)> {
            c.parts[o][p].iter().map(|s| (s.ts, s.value)).collect()
        };
        // 15.0004 × 0.2 = 3.00008; 15 × 0.1 = 1.5.
        assert_eq!(v(0, 0), [(1, 3_000_080), (2, 1_500_000)]);
        // 10 × 0.25 + 5 × 0.15 = 3.25, both days.
        assert_eq!(v(1, 0), [(1, 3_250_000), (2, 3_250_000)]);
        assert_eq!(v(2, 0), [(1, 7_750_000)]);
        // 12.40 / 31 = 0.4; 12.40 / 28 = 0.442857; 15.50 / 31 = 0.5.
        assert_eq!(v(0, 1), [(1, 400_000), (2, 442_857)]);
        assert_eq!(v(1, 1), [(1, 500_000), (2, 553_571)]);
        // 15.00 / 31 = 0.483871; 15.00 / 28 = 0.535714.
        assert_eq!(v(2, 1), [(1, 483_871), (2, 535_714)]);
        // At 9 kVA no option has a subscription in force: none is offered,
        // and none has a sample, though the kWh rows name every power.
        let mut nine = PdlCosts::default();
        nine.calendar_day(&grid, 9, d("2026-01-31"), 1, [1, 1, 2]);
        nine.tempo_day(&grid, 9, d("2026-01-31"), 1, TempoColor::Red, [1, 1, 0]);
        assert!(nine.parts.iter().flatten().all(Vec::is_empty));
    }

    fn shipped() -> PriceGrid {
        PriceGrid::parse(crate::model::prices::SHIPPED).unwrap()
    }

    #[test]
    fn an_option_is_offered_where_its_subscription_for_the_power_is_in_force() {
        let grid = shipped();
        let offered = |o, kva, day| grid.offered(o, kva, d(day));
        // Tempo has never been offered at 3 kVA.
        for day in ["2021-02-01", "2023-06-01", "2026-09-01"] {
            assert!(!offered(PriceOption::Tempo, 3, day), "{day}");
            assert!(offered(PriceOption::Base, 3, day), "{day}");
        }
        // HC_HP at 3 kVA only since 1 August 2026.
        assert!(!offered(PriceOption::HcHp, 3, "2026-07-31"));
        assert!(offered(PriceOption::HcHp, 3, "2026-08-01"));
        // Tempo at 6 kVA since 1 February 2023, at 24 kVA since 1 August 2026.
        assert!(!offered(PriceOption::Tempo, 6, "2023-01-31"));
        assert!(offered(PriceOption::Tempo, 6, "2023-02-01"));
        assert!(!offered(PriceOption::Tempo, 24, "2026-07-31"));
        assert!(offered(PriceOption::Tempo, 24, "2026-08-01"));
    }

    #[test]
    fn an_option_not_offered_at_the_power_has_no_cost_of_either_part() {
        let grid = shipped();
        let mut three = PdlCosts::default();
        let day = [10_000_000, 5_000_000, 15_000_000];
        three.calendar_day(&grid, 3, d("2026-01-15"), 1, day);
        three.tempo_day(
            &grid,
            3,
            d("2026-01-15"),
            1,
            TempoColor::Blue,
            [10_000_000, 5_000_000, 3_000_000],
        );
        let count = |o: usize| three.parts[o].iter().map(Vec::len).sum::<usize>();
        // BASE: energy and subscription; HC_HP (before August 2026) and
        // TEMPO: nothing.
        assert_eq!((count(0), count(1), count(2)), (2, 0, 0));
        // At 6 kVA before February 2023 Tempo has neither part either.
        let mut six = PdlCosts::default();
        six.calendar_day(&grid, 6, d("2023-01-15"), 1, day);
        six.tempo_day(
            &grid,
            6,
            d("2023-01-15"),
            1,
            TempoColor::Blue,
            [10_000_000, 5_000_000, 3_000_000],
        );
        assert!(six.parts[2].iter().all(Vec::is_empty));
        assert_eq!(six.parts[1].iter().map(Vec::len).sum::<usize>(), 2);
    }

    #[test]
    fn a_tempo_day_straddling_a_change_prices_its_morning_hours_at_the_new_prices() {
        // The blue Tempo day of 31 January 2024 at 6 kVA: 16 kWh peak at
        // 0.1369, 2 kWh off-peak that evening at 0.1056 and 6 kWh off-peak
        // on 1 February, 00:00-06:00, at that day's 0.1296: 2.1904 +
        // 0.2112 + 0.7776 = 3.1792 € (all 8 kWh at 0.1056 would be 3.0352).
        let grid = shipped();
        let mut c = PdlCosts::default();
        c.tempo_day(
            &grid,
            6,
            d("2024-01-31"),
            1,
            TempoColor::Blue,
            [16_000_000, 8_000_000, 6_000_000],
        );
        assert_eq!(
            c.parts[2][0],
            [Sample {
                ts: 1,
                value: 3_179_200
            }]
        );
        // The day before, both dates share the prices: 16 × 0.1369 + 8 × 0.1056.
        let mut c = PdlCosts::default();
        c.tempo_day(
            &grid,
            6,
            d("2024-01-30"),
            1,
            TempoColor::Blue,
            [16_000_000, 8_000_000, 6_000_000],
        );
        assert_eq!(
            c.parts[2][0],
            [Sample {
                ts: 1,
                value: 3_035_200
            }]
        );
    }

    #[test]
    fn the_grid_becomes_one_series_per_option_power_and_item() {
        let grid = PriceGrid::parse(
            "2026-01-01,BASE,,base,0.2\n2026-02-01,BASE,,base,0.1\n2026-01-01,BASE,6,base,0.3\n",
        )
        .unwrap();
        let contract = Contract::new(chrono_tz::Europe::Paris, &Default::default(), i64::MAX / 2);
        let series = price_series(&contract, &grid, &mut Report::default());
        assert_eq!(series.len(), 2);
        assert_eq!(
            series[0].head,
            r#"myelectricaldata_price_eur{option="BASE",item="base"}"#
        );
        assert!(
            series[0].selector.contains(r#"kva="""#),
            "{}",
            series[0].selector
        );
        assert_eq!(series[0].samples.len(), 2);
        assert_eq!(series[0].scale, Scale::Micro);
        assert_eq!(
            series[1].head,
            r#"myelectricaldata_price_eur{option="BASE",kva="6",item="base"}"#
        );
        assert_eq!(series[1].samples[0].value, 300_000);
    }
}
