//! The price grid (SPEC §3, "Costs"): dated prices, one a row, read from a
//! CSV of `from,option,kva,item,eur`.
//!
//! The grid is a changelog: a row holds from its `from` date until a later
//! row of the same option and item replaces it. A row naming a power beats
//! the row for every power of the same date, not a later one: when a price
//! becomes the same at every power, one row says so.
//!
//! Prices are kept in millionths of a euro, so that a day's cost is an
//! exact product rounded once (SPEC: to 0.000001 €).

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::model::calendar::TempoColor;

/// The grid the exporter ships: EDF's regulated tariffs, with the source of
/// each change in its comments.
pub const SHIPPED: &str = include_str!("../../prices/regulated.csv");

/// The powers (kVA) a regulated contract may subscribe.
pub const POWERS: [u8; 9] = [3, 6, 9, 12, 15, 18, 24, 30, 36];

/// [`POWERS`] as messages list them: `3, 6, …, 30 or 36`.
pub fn powers_listed() -> String {
    let all: Vec<String> = POWERS.iter().map(u8::to_string).collect();
    match all.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The power assumed for a PDL whose subscribed power nobody recorded.
pub const DEFAULT_KVA: u8 = 6;

/// A regulated option, the `option` label of the cost and price series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PriceOption {
    /// One kWh price at every hour.
    Base,
    /// Heures creuses: a peak and an off-peak price.
    HcHp,
    /// Tempo: peak and off-peak prices in each day's colour.
    Tempo,
}

impl PriceOption {
    /// Every option, in the order series are listed.
    pub const ALL: [PriceOption; 3] = [PriceOption::Base, PriceOption::HcHp, PriceOption::Tempo];

    /// The `option` label, as the grid writes it.
    pub fn label(self) -> &'static str {
        match self {
            PriceOption::Base => "BASE",
            PriceOption::HcHp => "HC_HP",
            PriceOption::Tempo => "TEMPO",
        }
    }

    /// The items an option is priced with.
    pub fn items(self) -> &'static [Item] {
        use Item::*;
        match self {
            PriceOption::Base => &[SubscriptionMonth, Base],
            PriceOption::HcHp => &[SubscriptionMonth, Hp, Hc],
            PriceOption::Tempo => &[
                SubscriptionMonth,
                BlueHp,
                BlueHc,
                WhiteHp,
                WhiteHc,
                RedHp,
                RedHc,
            ],
        }
    }
}

/// What a row prices: the monthly subscription or one kind of kWh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// The subscription, € per month.
    SubscriptionMonth,
    /// BASE's kWh.
    Base,
    /// HC_HP's peak kWh.
    Hp,
    /// HC_HP's off-peak kWh.
    Hc,
    /// TEMPO's kWh by colour and period.
    BlueHp,
    /// See [`Item::BlueHp`].
    BlueHc,
    /// See [`Item::BlueHp`].
    WhiteHp,
    /// See [`Item::BlueHp`].
    WhiteHc,
    /// See [`Item::BlueHp`].
    RedHp,
    /// See [`Item::BlueHp`].
    RedHc,
}

impl Item {
    const ALL: [Item; 10] = [
        Item::SubscriptionMonth,
        Item::Base,
        Item::Hp,
        Item::Hc,
        Item::BlueHp,
        Item::BlueHc,
        Item::WhiteHp,
        Item::WhiteHc,
        Item::RedHp,
        Item::RedHc,
    ];

    /// The `item` label, as the grid writes it.
    pub fn label(self) -> &'static str {
        match self {
            Item::SubscriptionMonth => "subscription_month",
            Item::Base => "base",
            Item::Hp => "hp",
            Item::Hc => "hc",
            Item::BlueHp => "blue_hp",
            Item::BlueHc => "blue_hc",
            Item::WhiteHp => "white_hp",
            Item::WhiteHc => "white_hc",
            Item::RedHp => "red_hp",
            Item::RedHc => "red_hc",
        }
    }

    /// The Tempo kWh items of a colour, peak first.
    pub fn tempo(colour: TempoColor) -> [Item; 2] {
        match colour {
            TempoColor::Blue => [Item::BlueHp, Item::BlueHc],
            TempoColor::White => [Item::WhiteHp, Item::WhiteHc],
            TempoColor::Red => [Item::RedHp, Item::RedHc],
        }
    }
}

/// One row of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceRow {
    /// The day it takes effect (local 00:00).
    pub from: NaiveDate,
    /// The option it prices.
    pub option: PriceOption,
    /// The power it is for; `None` for every power.
    pub kva: Option<u8>,
    /// What it prices.
    pub item: Item,
    /// The price, in millionths of a euro (per kWh or per month), taxes included.
    pub micro: i64,
    /// Its line in the file, from 1.
    pub line: usize,
}

/// A line of a grid that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct GridError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

/// A price grid, indexed for the day's lookups.
#[derive(Debug, Clone, Default)]
pub struct PriceGrid {
    rows: Vec<PriceRow>,
    /// The rows of each option and item, by `from` then the power-specific
    /// row last, as indices into `rows`.
    by_item: HashMap<(PriceOption, Item), Vec<usize>>,
    /// The text it was read from, printed by the `prices` command.
    text: String,
}

impl PriceGrid {
    /// The grid shipped with the exporter.
    pub fn shipped() -> Result<Self, GridError> {
        Self::parse(SHIPPED)
    }

    /// Reads a grid; the first line that does not parse is the error.
    pub fn parse(text: &str) -> Result<Self, GridError> {
        let mut rows = Vec::new();
        let mut seen: HashMap<(NaiveDate, PriceOption, Option<u8>, Item), usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') || is_header(content) {
                continue;
            }
            let row = parse_row(content, line).map_err(|why| GridError { line, why })?;
            if let Some(first) = seen.insert((row.from, row.option, row.kva, row.item), line) {
                return Err(GridError {
                    line,
                    why: format!(
                        "line {first} already prices {} {} {} from {}",
                        row.option.label(),
                        row.kva
                            .map_or("every power".to_string(), |k| format!("{k} kVA")),
                        row.item.label(),
                        row.from
                    ),
                });
            }
            rows.push(row);
        }
        let mut by_item: HashMap<(PriceOption, Item), Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_item.entry((r.option, r.item)).or_default().push(i);
        }
        for list in by_item.values_mut() {
            list.sort_by_key(|&i| (rows[i].from, rows[i].kva.is_some()));
        }
        Ok(Self {
            rows,
            by_item,
            text: text.to_string(),
        })
    }

    /// The price (millionths of a euro) of `item` under `option` for a
    /// subscribed power of `kva` on `date`: the row with the latest `from`
    /// on or before it among those for that power or every power, the one
    /// naming the power on a tie. `None` when no row is in force.
    pub fn price(&self, option: PriceOption, item: Item, kva: u8, date: NaiveDate) -> Option<i64> {
        let list = self.by_item.get(&(option, item))?;
        // Rows after `date` are skipped from the end; the first row that
        // fits is the latest, and the power's own row comes after the
        // every-power row of the same date.
        list.iter()
            .rev()
            .map(|&i| &self.rows[i])
            .filter(|r| r.from <= date)
            .find(|r| r.kva.is_none_or(|k| k == kva))
            .map(|r| r.micro)
    }

    /// Whether `option` is offered at `kva` on `date`: its monthly
    /// subscription for that power is in force (a kWh row for every power
    /// does not make it offered: Tempo has never been offered at 3 kVA).
    pub fn offered(&self, option: PriceOption, kva: u8, date: NaiveDate) -> bool {
        self.price(option, Item::SubscriptionMonth, kva, date)
            .is_some()
    }

    /// Every row, in the file's order.
    pub fn rows(&self) -> &[PriceRow] {
        &self.rows
    }

    /// The latest date a price changes, if the grid holds any row.
    pub fn latest_change(&self) -> Option<NaiveDate> {
        self.rows.iter().map(|r| r.from).max()
    }

    /// The text the grid was read from, comments included.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// `from,option,kva,item,eur` (the column names, which a spreadsheet adds).
fn is_header(line: &str) -> bool {
    let cols: Vec<String> = line
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    cols == ["from", "option", "kva", "item", "eur"]
}

fn parse_row(line: &str, number: usize) -> Result<PriceRow, String> {
    let cols: Vec<&str> = line.split(',').map(str::trim).collect();
    let [from, option, kva, item, eur] = cols[..] else {
        return Err(format!(
            "expected 5 comma-separated fields (from,option,kva,item,eur), found {}",
            cols.len()
        ));
    };
    let from = NaiveDate::parse_from_str(from, "%Y-%m-%d")
        .ok()
        .filter(|_| from.len() == 10)
        .ok_or_else(|| format!("from {from:?} is not a date written YYYY-MM-DD"))?;
    let option = match option {
        "BASE" => PriceOption::Base,
        "HC_HP" => PriceOption::HcHp,
        "TEMPO" => PriceOption::Tempo,
        _ => return Err(format!("option {option:?} is not BASE, HC_HP or TEMPO")),
    };
    let kva = match kva {
        "" => None,
        k => Some(
            k.parse::<u8>()
                .ok()
                .filter(|k| POWERS.contains(k))
                .ok_or_else(|| format!("kva {k:?} is not empty nor one of {}", powers_listed()))?,
        ),
    };
    let item = Item::ALL
        .into_iter()
        .find(|i| i.label() == item)
        .ok_or_else(|| format!("item {item:?} is not one of the grid's items"))?;
    if !option.items().contains(&item) {
        let names: Vec<&str> = option.items().iter().map(|i| i.label()).collect();
        return Err(format!(
            "item {} is not priced under {} (its items: {})",
            item.label(),
            option.label(),
            names.join(", ")
        ));
    }
    let micro = parse_micro(eur).ok_or_else(|| {
        format!("eur {eur:?} is not a price in euros (digits, a dot, at most 6 decimals)")
    })?;
    Ok(PriceRow {
        from,
        option,
        kva,
        item,
        micro,
        line: number,
    })
}

/// A non-negative decimal with at most six decimals, in millionths.
fn parse_micro(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() > 9
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut f: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..6 {
        f *= 10;
    }
    Some(whole * 1_000_000 + f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_shipped_grid_parses_and_ends_with_the_august_2026_change() {
        let g = PriceGrid::shipped().unwrap();
        assert_eq!(g.rows().len(), 350);
        assert_eq!(g.latest_change(), Some(d("2026-08-01")));
        // Every option is priced at 6 and 9 kVA on every day since February 2021.
        for date in ["2021-02-01", "2023-07-31", "2026-01-31", "2026-12-06"] {
            for option in PriceOption::ALL {
                for item in option.items() {
                    assert!(
                        g.price(option, *item, 9, d(date)).is_some(),
                        "{option:?} {item:?} {date}"
                    );
                }
            }
        }
        assert_eq!(
            g.price(PriceOption::Base, Item::Base, 6, d("2021-01-31")),
            None
        );
    }

    #[test]
    fn the_shipped_grid_keeps_edfs_figures_where_the_regulator_differs() {
        let g = PriceGrid::shipped().unwrap();
        assert_eq!(
            g.price(PriceOption::Tempo, Item::BlueHc, 6, d("2025-02-01")),
            Some(128_800)
        );
        assert_eq!(
            g.price(PriceOption::HcHp, Item::Hc, 6, d("2026-02-01")),
            Some(157_900)
        );
    }

    #[test]
    fn the_latest_row_in_force_wins_and_a_powers_own_row_wins_on_its_date() {
        let g = PriceGrid::parse(
            "# a comment\n\
             \n\
             from,option,kva,item,eur\n\
             2024-02-01,BASE,,base,0.2516\n\
             2024-02-01,BASE,9,base,0.2600\n\
             2025-02-01,BASE,,base,0.2016\n\
             2025-08-01,BASE,9,base,0.1952\r\n",
        )
        .unwrap();
        let p = |kva, date| g.price(PriceOption::Base, Item::Base, kva, d(date));
        assert_eq!(p(6, "2024-01-31"), None);
        assert_eq!(p(6, "2024-02-01"), Some(251_600));
        assert_eq!(p(9, "2024-02-01"), Some(260_000));
        // A later row for every power replaces an earlier one for 9 kVA.
        assert_eq!(p(9, "2025-02-01"), Some(201_600));
        assert_eq!(p(9, "2025-08-01"), Some(195_200));
        assert_eq!(p(6, "2030-01-01"), Some(201_600));
        assert_eq!(
            g.price(
                PriceOption::Base,
                Item::SubscriptionMonth,
                6,
                d("2030-01-01")
            ),
            None
        );
    }

    #[test]
    fn every_kind_of_bad_line_is_named_with_its_number() {
        let cases = [
            ("2024-02-01,BASE,,base", "5 comma-separated"),
            ("2024-02-01,BASE,,base,0.2,x", "5 comma-separated"),
            ("2024-2-1,BASE,,base,0.2", "YYYY-MM-DD"),
            ("2024-02-30,BASE,,base,0.2", "YYYY-MM-DD"),
            ("2024-02-01,EJP,,base,0.2", "option \"EJP\""),
            ("2024-02-01,BASE,7,base,0.2", "kva \"7\""),
            ("2024-02-01,BASE,,peak,0.2", "item \"peak\""),
            ("2024-02-01,BASE,,hp,0.2", "not priced under BASE"),
            ("2024-02-01,BASE,,base,0,25", "5 comma-separated"),
            ("2024-02-01,BASE,,base,-0.2", "eur \"-0.2\""),
            ("2024-02-01,BASE,,base,0.1234567", "at most 6 decimals"),
            ("2024-02-01,BASE,,base,", "eur \"\""),
            ("2024-02-01,BASE,,base,€0.2", "eur"),
        ];
        for (bad, why) in cases {
            let text = format!("# header\n2024-02-01,BASE,,base,0.2516\n{bad}\n");
            let e = PriceGrid::parse(&text).unwrap_err();
            assert_eq!(e.line, 3, "{bad}");
            assert!(e.to_string().starts_with("line 3: "), "{e}");
            assert!(e.why.contains(why), "{bad}: {}", e.why);
        }
        let e = PriceGrid::parse("2024-02-01,BASE,,base,0.25\n2024-02-01,BASE,,base,0.26\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.why.contains("line 1 already prices"), "{}", e.why);
    }

    #[test]
    fn prices_are_read_exactly_in_millionths() {
        assert_eq!(parse_micro("0.1952"), Some(195_200));
        assert_eq!(parse_micro("12.6"), Some(12_600_000));
        assert_eq!(parse_micro("7"), Some(7_000_000));
        assert_eq!(parse_micro(".5"), Some(500_000));
        assert_eq!(parse_micro("0.000001"), Some(1));
        assert_eq!(powers_listed(), "3, 6, 9, 12, 15, 18, 24, 30 or 36");
        assert_eq!(parse_micro("."), None);
    }

    /// A price in millionths as a grid may write it: whole euros, then a
    /// dot and the decimals with some of their trailing zeros dropped (or
    /// no dot at all), `.5` for less than a euro now and then.
    fn written_price(micro: i64, extra_zeros: usize, leading_dot: bool) -> String {
        let (whole, frac) = (micro / 1_000_000, micro % 1_000_000);
        let digits = format!("{frac:06}");
        let kept = digits.trim_end_matches('0');
        let frac = format!("{kept}{}", "0".repeat(extra_zeros.min(6 - kept.len())));
        let whole = if whole == 0 && leading_dot && !frac.is_empty() {
            String::new()
        } else {
            whole.to_string()
        };
        if frac.is_empty() && extra_zeros % 2 == 0 {
            whole
        } else {
            format!("{whole}.{frac}")
        }
    }

    /// Whitespace a spreadsheet or an editor may leave around a field.
    fn pad() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec!["", "", "", " ", "  ", "\t"])
    }

    /// One row of a generated grid: a date, an option, a power or none, one
    /// of the option's items, a price, and how each is written.
    fn row() -> impl proptest::strategy::Strategy<Value = (PriceRow, String)> {
        use proptest::prelude::*;
        (
            (0u32..40_000).prop_map(|n| {
                NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + chrono::Duration::days(i64::from(n))
            }),
            proptest::sample::select(PriceOption::ALL.to_vec()),
            proptest::option::of(proptest::sample::select(POWERS.to_vec())),
            any::<proptest::sample::Index>(),
            prop_oneof![0i64..2_000_000, 0i64..1_000_000_000_000_000],
            (0usize..7, any::<bool>()),
            proptest::collection::vec(pad(), 10),
        )
            .prop_map(|(from, option, kva, item, micro, (zeros, dot), pads)| {
                let item = *item.get(option.items());
                let fields = [
                    from.to_string(),
                    option.label().to_string(),
                    kva.map_or(String::new(), |k| k.to_string()),
                    item.label().to_string(),
                    written_price(micro, zeros, dot),
                ];
                let text: Vec<String> = fields
                    .iter()
                    .zip(pads.chunks(2))
                    .map(|(f, p)| format!("{}{f}{}", p[0], p[1]))
                    .collect();
                let row = PriceRow {
                    from,
                    option,
                    kva,
                    item,
                    micro,
                    line: 0,
                };
                (row, text.join(","))
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn any_text_is_read_or_refused_naming_a_line_that_holds_a_row(
            lines in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<String>(),
                    "[-0-9,. #\r\t\u{e9}a-zA-Z_]{0,40}",
                    "20[0-9]{2}-[01][0-9]-[0-3][0-9],(BASE|HC_HP|TEMPO|EJP),(|[0-9]{1,3}),(base|hp|hc|red_hc|subscription_month|x),[-0-9.]{0,12}",
                ],
                0..8,
            ),
            ending in proptest::sample::select(vec!["\n", "\r\n"]),
        ) {
            let text = lines.join(ending);
            match PriceGrid::parse(&text) {
                Ok(grid) => {
                    for row in grid.rows() {
                        proptest::prop_assert!(row.line >= 1 && row.line <= text.lines().count());
                        let line = text.lines().nth(row.line - 1).unwrap();
                        proptest::prop_assert!(line.contains(&row.from.to_string()), "{:?}", line);
                    }
                }
                Err(e) => {
                    proptest::prop_assert!(e.line >= 1, "{}", e);
                    let line = text.lines().nth(e.line - 1);
                    proptest::prop_assert!(line.is_some(), "line {} of {:?}", e.line, text);
                    let content = line.unwrap().trim();
                    proptest::prop_assert!(
                        !content.is_empty() && !content.starts_with('#') && !is_header(content),
                        "{}: {:?}", e, content
                    );
                    let prefix = format!("line {}: ", e.line);
                    proptest::prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
                    // The error quotes the field it could not read, or names
                    // the count of fields, or the item and option that clash,
                    // or the earlier line of the same key.
                    let quoted = content.split(',').map(str::trim).any(|f| e.why.contains(&format!("{f:?}")));
                    proptest::prop_assert!(
                        quoted
                            || e.why.starts_with("expected 5 comma-separated fields")
                            || e.why.contains("is not priced under")
                            || e.why.contains("already prices"),
                        "{}", e
                    );
                }
            }
        }

        #[test]
        fn a_well_formed_grid_reads_back_every_row_and_its_price_in_force(
            rows in proptest::collection::vec(row(), 1..12),
            header in proptest::prelude::any::<bool>(),
            ending in proptest::sample::select(vec!["\n", "\r\n"]),
        ) {
            // One row per key: a second would be refused, as another test says.
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<(PriceRow, String)> = rows
                .into_iter()
                .filter(|(r, _)| seen.insert((r.from, r.option, r.kva, r.item)))
                .collect();
            let mut text = String::from("# generated\n");
            if header {
                text.push_str("from, option, kva, item, eur\n");
            }
            let first = text.lines().count() + 1;
            for (_, line) in &rows {
                text.push_str(line);
                text.push_str(ending);
            }
            let grid = PriceGrid::parse(&text).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(format!("{e} in {text:?}"))
            })?;
            proptest::prop_assert_eq!(grid.rows().len(), rows.len());
            for (i, ((want, written), got)) in rows.iter().zip(grid.rows()).enumerate() {
                let want = PriceRow { line: first + i, ..*want };
                proptest::prop_assert_eq!(*got, want, "{:?}", written);
                // On its own date, a row is the price in force at its power
                // (or at every power no row of that date names).
                let powers: Vec<u8> = match want.kva {
                    Some(k) => vec![k],
                    None => POWERS
                        .into_iter()
                        .filter(|k| !seen.contains(&(want.from, want.option, Some(*k), want.item)))
                        .collect(),
                };
                for kva in powers {
                    proptest::prop_assert_eq!(
                        grid.price(want.option, want.item, kva, want.from),
                        Some(want.micro),
                        "{:?} at {} kVA", written, kva
                    );
                }
            }
        }

        #[test]
        fn a_price_reads_as_the_millionths_it_writes(
            micro in proptest::prop_oneof![0i64..2_000_000, 0i64..1_000_000_000_000_000],
            zeros in 0usize..7,
            dot in proptest::prelude::any::<bool>(),
            junk in "[-+0-9.e ]{0,14}",
        ) {
            let written = written_price(micro, zeros, dot);
            proptest::prop_assert_eq!(parse_micro(&written), Some(micro), "{:?}", written);
            // Anything read is digits, at most one dot, and at most 6 decimals.
            if let Some(m) = parse_micro(&junk) {
                proptest::prop_assert!(m >= 0);
                let (whole, frac) = junk.split_once('.').unwrap_or((&junk, ""));
                proptest::prop_assert!(whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()), "{:?}", junk);
                proptest::prop_assert!(frac.len() <= 6, "{:?}", junk);
                let want = format!("{whole}{frac:0<6}").parse::<i64>().unwrap_or(0);
                proptest::prop_assert_eq!(m, want, "{:?}", junk);
            }
        }
    }
}
