//! The family table: what each family is, said once.
//!
//! A family is a group of series reconciled together. Its row here names
//! its metrics, the table whose rows make its samples and every table it is
//! computed from; verification, the daemon's change tokens, `check` and
//! telemetry read this table rather than keeping lists of their own. How a
//! family's rows become series is the one `match` of `series::SeriesReader`, over
//! the computations of this module's siblings.

/// The metric names of SPEC §3, each written here only.
pub mod metric {
    /// Daily, monthly and load-curve energy consumed, in Wh.
    pub const CONSUMPTION_WH: &str = "myelectricaldata_consumption_wh";
    /// The consumption load curve's average power, in W.
    pub const CONSUMPTION_POWER_W: &str = "myelectricaldata_consumption_power_w";
    /// The load curve's energy per day and tariff period, in Wh.
    pub const CONSUMPTION_PERIOD_WH: &str = "myelectricaldata_consumption_period_wh";
    /// The load curve's energy per Tempo day and colour, in Wh.
    pub const TEMPO_CONSUMPTION_WH: &str = "myelectricaldata_tempo_consumption_wh";
    /// Daily, monthly and load-curve energy produced, in Wh.
    pub const PRODUCTION_WH: &str = "myelectricaldata_production_wh";
    /// The production load curve's average power, in W.
    pub const PRODUCTION_POWER_W: &str = "myelectricaldata_production_power_w";
    /// 1 on the days of a Tempo colour.
    pub const TEMPO_COLOR: &str = "myelectricaldata_tempo_color";
    /// Tempo days left in the season, by colour.
    pub const TEMPO_REMAINING: &str = "myelectricaldata_tempo_remaining";
    /// EcoWatt's daily level.
    pub const ECOWATT_LEVEL: &str = "myelectricaldata_ecowatt_level";
    /// EcoWatt's hourly level.
    pub const ECOWATT_HOURLY_LEVEL: &str = "myelectricaldata_ecowatt_hourly_level";
    /// The day's peak apparent power, in VA.
    pub const MAX_POWER_VA: &str = "myelectricaldata_max_power_va";
    /// Zen Flex days, by kind.
    pub const ZEN_FLEX_DAY: &str = "myelectricaldata_zen_flex_day";
    /// What a day cost under each regulated option, in €.
    pub const COST_EUR: &str = "myelectricaldata_cost_eur";
    /// The price grid in force, in € per kWh or per month.
    pub const PRICE_EUR: &str = "myelectricaldata_price_eur";
    /// What MyElectricalData records of a meter: its name, option, power
    /// and production meter.
    pub const PDL_INFO: &str = "myelectricaldata_pdl_info";
}

/// A table of MyElectricalData's database the exporter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Daily, monthly and load-curve consumption.
    ConsumptionData,
    /// Daily, monthly and load-curve production.
    ProductionData,
    /// The Tempo calendar.
    TempoDays,
    /// RTE's EcoWatt signal.
    Ecowatt,
    /// The day's peak power (MyElectricalData 2.2+).
    MaxPowerData,
    /// The Zen Flex calendar (MyElectricalData 2.3+).
    ZenFlexDays,
    /// Each PDL's contract, with its off-peak hours.
    ContractData,
    /// The PDLs, with the off-peak hours of older releases.
    Pdls,
}

/// How many tables the exporter reads.
pub const TABLES: usize = 8;

impl Table {
    /// Every table, in the order of arrays indexed by `table as usize`.
    pub const ALL: [Table; TABLES] = [
        Table::ConsumptionData,
        Table::ProductionData,
        Table::TempoDays,
        Table::Ecowatt,
        Table::MaxPowerData,
        Table::ZenFlexDays,
        Table::ContractData,
        Table::Pdls,
    ];

    /// The table's name in PostgreSQL.
    pub const fn name(self) -> &'static str {
        match self {
            Table::ConsumptionData => "consumption_data",
            Table::ProductionData => "production_data",
            Table::TempoDays => "tempo_days",
            Table::Ecowatt => "ecowatt",
            Table::MaxPowerData => "max_power_data",
            Table::ZenFlexDays => "zen_flex_days",
            Table::ContractData => "contract_data",
            Table::Pdls => "pdls",
        }
    }

    /// The table of that name.
    pub fn named(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether a MyElectricalData database may lack it: the families'
    /// tables of releases 2.2 and 2.3 (the family is then empty), and the
    /// contract tables (off-peak hours then come from elsewhere).
    pub const fn is_optional(self) -> bool {
        matches!(
            self,
            Table::MaxPowerData | Table::ZenFlexDays | Table::ContractData | Table::Pdls
        )
    }

    /// Whether it only holds contracts (the off-peak hours), rather than
    /// a family's samples.
    pub const fn holds_contracts(self) -> bool {
        matches!(self, Table::ContractData | Table::Pdls)
    }
}

/// A group of series reconciled together, from one source table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `myelectricaldata_consumption_wh` and `..._power_w` from
    /// `consumption_data`, and the tariff periods of its load curve
    /// (`myelectricaldata_consumption_period_wh` and
    /// `myelectricaldata_tempo_consumption_wh`, with `tempo_days` and the
    /// contracts' off-peak hours) and their costs
    /// (`myelectricaldata_cost_eur`, with the subscribed powers of `pdls`),
    /// one read of the table for all; and the price grid the costs are
    /// computed with (`myelectricaldata_price_eur`), so that a new grid
    /// rewrites both together.
    Consumption,
    /// `myelectricaldata_production_wh`, from `production_data`.
    Production,
    /// `myelectricaldata_tempo_*`, from `tempo_days` and the PDLs of `consumption_data`.
    Tempo,
    /// `myelectricaldata_ecowatt_*`, from `ecowatt`.
    Ecowatt,
    /// `myelectricaldata_max_power_va`, from `max_power_data` (MyElectricalData 2.2+).
    MaxPower,
    /// `myelectricaldata_zen_flex_day`, from `zen_flex_days` (MyElectricalData 2.3+).
    ZenFlex,
    /// `myelectricaldata_pdl_info`, one series per PDL of `consumption_data`
    /// and `production_data`, labelled from `pdls` where it exists (and
    /// with the fallbacks where it does not).
    Meter,
}

/// How many families there are.
pub const FAMILIES: usize = 7;

/// One row of the family table.
#[derive(Debug)]
pub struct Spec {
    /// The family's name in state tables, logs and telemetry.
    pub name: &'static str,
    /// The table whose rows make its samples: its rows skipped are counted
    /// against it, and its absence (when optional) empties the family, but
    /// for the meters' (`pdls` labels them; without it they keep their
    /// fallbacks).
    pub table: Table,
    /// Every table it is computed from: a change in any makes it due.
    pub reads: &'static [Table],
    /// Its metric names: the read-back selects these, so a metric missing
    /// here would read back as absent and be rewritten at every pass.
    pub metrics: &'static [&'static str],
    /// How a pass tells that its rows need not be read again.
    pub reading: Reading,
    /// Its series hold one sample that moves as readings arrive, always
    /// the same value: the read-back also compares the last sample's time,
    /// which its count and sum cannot tell (a restored snapshot shows it
    /// where it was). One more query per read-back, so only where needed.
    pub read_back_last: bool,
}

/// How a pass tells that a family's rows need not be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// By PDL (`usage_point_id`, `date`): a pass re-reads only the PDLs
    /// whose rows changed since the last pass that read them
    /// (`state::reads`).
    ByPdl,
    /// Whole: its inputs are small (a calendar, the list of PDLs), and a
    /// digest of them, unchanged since the last pass that read them, leaves
    /// the family unread.
    Whole,
    /// Read at every pass that finds its tables changed.
    Always,
}

/// The decimals a metric's values carry: euros in millionths, everything
/// else in thousandths.
pub fn scale_of(metric: &str) -> super::Scale {
    if metric == COST_EUR || metric == PRICE_EUR {
        super::Scale::Micro
    } else {
        super::Scale::Milli
    }
}

use metric::*;

/// The family table, in [`Family::ALL`] order.
static SPECS: [Spec; FAMILIES] = [
    Spec {
        name: "consumption",
        table: Table::ConsumptionData,
        // With the tariff periods of its load curve and their costs: the
        // colours, the contracts' off-peak hours and subscribed powers.
        reads: &[
            Table::ConsumptionData,
            Table::TempoDays,
            Table::ContractData,
            Table::Pdls,
        ],
        metrics: &[
            CONSUMPTION_WH,
            CONSUMPTION_POWER_W,
            CONSUMPTION_PERIOD_WH,
            TEMPO_CONSUMPTION_WH,
            COST_EUR,
            PRICE_EUR,
        ],
        reading: Reading::ByPdl,
        read_back_last: false,
    },
    Spec {
        name: "production",
        table: Table::ProductionData,
        reads: &[Table::ProductionData],
        metrics: &[PRODUCTION_WH, PRODUCTION_POWER_W],
        reading: Reading::ByPdl,
        read_back_last: false,
    },
    Spec {
        name: "tempo",
        table: Table::TempoDays,
        // Tempo series exist for each PDL of consumption_data.
        reads: &[Table::TempoDays, Table::ConsumptionData],
        metrics: &[TEMPO_COLOR, TEMPO_REMAINING],
        reading: Reading::Whole,
        read_back_last: false,
    },
    Spec {
        name: "ecowatt",
        table: Table::Ecowatt,
        reads: &[Table::Ecowatt],
        metrics: &[ECOWATT_LEVEL, ECOWATT_HOURLY_LEVEL],
        reading: Reading::Always,
        read_back_last: false,
    },
    Spec {
        name: "max_power",
        table: Table::MaxPowerData,
        reads: &[Table::MaxPowerData],
        metrics: &[MAX_POWER_VA],
        reading: Reading::Always,
        read_back_last: false,
    },
    Spec {
        name: "zen_flex",
        table: Table::ZenFlexDays,
        reads: &[Table::ZenFlexDays],
        metrics: &[ZEN_FLEX_DAY],
        reading: Reading::Always,
        read_back_last: false,
    },
    Spec {
        name: "meter",
        table: Table::Pdls,
        // Each PDL's latest reading, found by index look-ups, not a scan.
        reads: &[Table::Pdls, Table::ConsumptionData, Table::ProductionData],
        metrics: &[PDL_INFO],
        reading: Reading::Always,
        read_back_last: true,
    },
];

impl Family {
    /// Every family, in export order; `Family::ALL[f as usize] == f`.
    pub const ALL: [Family; FAMILIES] = [
        Family::Consumption,
        Family::Production,
        Family::Tempo,
        Family::Ecowatt,
        Family::MaxPower,
        Family::ZenFlex,
        Family::Meter,
    ];

    /// The family's row of the family table.
    pub fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }

    /// The family's name in state tables and logs.
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The name of the table whose rows make the family's samples.
    pub fn table(self) -> &'static str {
        self.spec().table.name()
    }

    /// Whether the family's table may be absent (older MyElectricalData
    /// releases): the family is then empty rather than an error.
    pub fn is_optional(self) -> bool {
        self.spec().table.is_optional()
    }

    /// The metric names of the family.
    pub fn metrics(self) -> &'static [&'static str] {
        self.spec().metrics
    }

    /// How a pass tells that its rows need not be read again.
    pub fn reading(self) -> Reading {
        self.spec().reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_table_is_in_the_order_of_the_families() {
        for (i, f) in Family::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i);
            assert!(f.spec().reads.contains(&f.spec().table));
        }
        for (i, t) in Table::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i);
            assert_eq!(Table::named(t.name()), Some(t));
        }
    }

    #[test]
    fn euros_carry_millionths_and_everything_else_thousandths() {
        assert_eq!(scale_of(COST_EUR), crate::model::Scale::Micro);
        assert_eq!(scale_of(PRICE_EUR), crate::model::Scale::Micro);
        assert_eq!(scale_of(CONSUMPTION_WH), crate::model::Scale::Milli);
    }

    #[test]
    fn each_metric_belongs_to_one_family() {
        let mut all: Vec<&str> = Family::ALL
            .iter()
            .flat_map(|f| f.metrics())
            .copied()
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
