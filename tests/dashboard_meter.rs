//! The dashboard's meter panels (`docs/grafana/myelectricaldata.json`)
//! against a real VictoriaMetrics fed by the exporter, with the meters
//! named in `pdls` as a household names them: the `$pdl` variable lists
//! each meter by its name and queries its number; the options compared
//! mark the PDL's own; the saving of the cheapest option against it; the
//! lowest regulated power that held the year's peaks and what it saves;
//! the home's daily balance with its linked solar meter and the share of
//! the year's consumption its production covers. Each is compared with
//! what the spec's model (`common::model`, computed from PostgreSQL's rows
//! apart from the exporter) and the shipped grid say, summed by hand.

mod common;

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use chrono_tz::Europe::Paris;
use myelectricaldata_vm_exporter::model::calendar::day_millis;

use common::demo::{export_demo_data, name_the_meters, PDL, PDL_10_MIN, SOLAR};
use common::grafana::{assert_close, dashboard, variable_options, Grafana, Points};
use common::model::{expected_priced, scale_of, Mirror, Pricing};
use common::priced::{cheapest_at, daily_points, totals_at, utc_midnight, Daily, PricedDays};
use common::Servers;

/// Each PDL's option in `pdls` (`name_the_meters`).
const OWN: [(&str, &str); 2] = [(PDL, "TEMPO"), (PDL_10_MIN, "HC_HP")];

/// Each PDL's power, as the exporter prices it: `pdls.subscribed_power`,
/// else 6 kVA.
const KVA: [(&str, i64); 2] = [(PDL, 12), (PDL_10_MIN, 6)];

/// The regulated powers, in kVA.
const POWERS: [i64; 9] = [3, 6, 9, 12, 15, 18, 24, 30, 36];

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

#[tokio::test]
async fn the_meter_panels_name_each_pdl_mark_its_option_and_weigh_its_power_and_solar_meter() {
    let servers = Servers::start().await;
    let pool = &servers.pool;
    name_the_meters(pool).await;
    export_demo_data(&servers, &[]).await;
    let pricing = Pricing::shipped();
    let model = expected_priced(
        pool,
        &BTreeMap::new(),
        Utc::now().timestamp_millis(),
        &pricing,
    )
    .await;
    let d = dashboard();
    let all = format!("({PDL}|{PDL_10_MIN}|{SOLAR})");
    let grafana = Grafana::new(&servers.vm.url, &d).with_var("pdl", &all);

    // The variable: each meter by its name, whatever the range (its one
    // sample is at the latest reading), quotes and all.
    let pdl = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pdl")
        .unwrap();
    for at in [utc_midnight(date("2023-09-01")), Utc::now().timestamp()] {
        assert_eq!(
            variable_options(&servers.vm.url, pdl, at).await,
            [
                ("Atelier \"du fond\"".to_string(), PDL_10_MIN.to_string()),
                ("Maison".to_string(), PDL.to_string()),
                ("Toit".to_string(), SOLAR.to_string()),
            ],
            "the $pdl variable's options at {at}"
        );
    }

    // The options compared, the PDL's own marked: per day, and over the
    // period on the days that have the three options' costs; the
    // cheapest; what it saves against the PDL's own.
    let days = PricedDays::of(&model);
    let (start, end) = (
        utc_midnight(date("2023-03-01")),
        utc_midnight(date("2024-12-01")),
    );
    let per_day = mark_own(days.per_day(|_, _| true));
    let panel = "Coût par jour : Base, HP/HC et Tempo";
    let a = grafana.run_panel(panel, "A", start, end).await;
    assert_close(
        panel,
        &a.keyed(&["pdl", "option"]),
        &daily_points(&per_day),
        &a.sent,
    );

    let compared = days.per_day(|pdl, d| days.complete_days(pdl).contains(&d));
    let totals = totals_at(&compared, end);
    for (panel, want) in [
        (
            "Comparaison Base, HP/HC et Tempo sur la période",
            totals_at(&mark_own(compared.clone()), end),
        ),
        (
            "Option la moins chère sur la période",
            cheapest_at(&mark_own(compared.clone()), end),
        ),
        (
            "Économie avec l'option la moins chère",
            saving_of_the_cheapest(&totals, end),
        ),
    ] {
        let a = grafana.run_panel(panel, "A", start, end).await;
        assert_close(panel, &a.keyed(&["pdl", "option"]), &want, &a.sent);
    }
    let saved = saving_of_the_cheapest(&totals, end);
    assert!(
        saved.values().any(|p| p[&end] > 0.01),
        "an option cheaper than one PDL's own: {saved:?}"
    );

    // The power: the lowest that held each peak of the 12 months up to the
    // range's end, and a year of its subscription against the PDL's own
    // power's, at today's prices.
    let today = Utc::now().with_timezone(&Paris).date_naive();
    let peaks = yearly_peaks(&model, end);
    let mut lowest = Points::new();
    let mut saving = Points::new();
    for (pdl, kva) in KVA {
        let peak = peaks[pdl];
        let low = *POWERS.iter().find(|&&k| peak <= (k * 1000) as f64).unwrap();
        let option = OWN.iter().find(|(p, _)| *p == pdl).unwrap().1;
        let month = |k| {
            pricing
                .price(option, "subscription_month", k, today)
                .unwrap() as f64
                / 1e6
        };
        lowest.insert(pdl.to_string(), BTreeMap::from([(end, low as f64)]));
        saving.insert(
            pdl.to_string(),
            BTreeMap::from([(end, 12.0 * (month(kva) - month(low)))]),
        );
    }
    assert!(
        saving[PDL][&end] > 0.0 && saving[PDL_10_MIN][&end] < 0.0,
        "one PDL could lower its power, the other's peaks ask for more: {peaks:?} {saving:?}"
    );
    for (panel, want) in [
        ("Puissance conseillée (12 mois)", &lowest),
        ("Économie par an à la puissance conseillée", &saving),
    ] {
        let a = grafana.run_panel(panel, "A", end - 86_400, end).await;
        assert_close(panel, &a.keyed(&["pdl"]), want, &a.sent);
    }

    // The home with its solar meter: each day's production less its
    // consumption (kWh), and the year's production over its consumption.
    let produced = daily_kwh(&model, "myelectricaldata_production_wh", SOLAR);
    let consumed = daily_kwh(&model, "myelectricaldata_consumption_wh", PDL);
    let balance: BTreeMap<NaiveDate, f64> = produced
        .iter()
        .filter_map(|(d, p)| consumed.get(d).map(|c| (*d, p - c)))
        .collect();
    assert!(
        balance.len() > 150
            && balance.values().any(|b| *b > 0.0)
            && balance.values().any(|b| *b < 0.0)
    );
    let (from, to) = (
        utc_midnight(date("2024-04-20")),
        utc_midnight(date("2024-11-20")),
    );
    let panel = "Bilan quotidien du foyer : production − consommation";
    let a = grafana.run_panel(panel, "A", from, to).await;
    let want = daily_points(&Daily::from([(PDL.to_string(), balance)]));
    assert_close(panel, &a.keyed(&["pdl"]), &want, &a.sent);

    let in_year = |d: &NaiveDate| {
        let t = day_millis(Paris, *d) / 1000;
        end - 365 * 86_400 < t && t <= end
    };
    let sum = |m: &BTreeMap<NaiveDate, f64>| {
        m.iter()
            .filter(|(d, _)| in_year(d))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let share = sum(&produced) / sum(&consumed) * 100.0;
    assert!(share > 1.0 && share < 100.0, "{share}");
    let panel = "Part de la consommation couverte par la production (12 mois)";
    let a = grafana.run_panel(panel, "A", end - 86_400, end).await;
    let want = Points::from([(PDL.to_string(), BTreeMap::from([(end, share)]))]);
    assert_close(panel, &a.keyed(&["pdl"]), &want, &a.sent);
}

/// `"pdl option"` keys with the PDL's own option marked as the dashboard
/// marks it.
fn mark_own(per_day: Daily) -> Daily {
    per_day
        .into_iter()
        .map(|(k, v)| {
            let own = OWN.iter().any(|(p, o)| k == format!("{p} {o}"));
            (
                if own {
                    format!("{k} (votre option)")
                } else {
                    k
                },
                v,
            )
        })
        .collect()
}

/// Each PDL's own option's total less the cheapest's, keyed `"pdl
/// cheapest-option"`, at `at`.
fn saving_of_the_cheapest(totals: &Points, at: i64) -> Points {
    let mut out = Points::new();
    for (pdl, own) in OWN {
        let of_pdl: Vec<(&str, f64)> = totals
            .iter()
            .filter_map(|(k, p)| k.strip_prefix(&format!("{pdl} ")).map(|o| (o, p[&at])))
            .collect();
        let (cheapest, least) = of_pdl
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let own_total = of_pdl.iter().find(|(o, _)| *o == own).unwrap().1;
        out.insert(
            format!("{pdl} {cheapest}"),
            BTreeMap::from([(at, own_total - least)]),
        );
    }
    out
}

/// Each PDL's highest daily peak (VA) in the 365 days up to `end`.
fn yearly_peaks(model: &Mirror, end: i64) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for (pdl, _) in KVA {
        let peak = model
            .iter()
            .filter(|(l, _)| l["__name__"] == "myelectricaldata_max_power_va" && l["pdl"] == pdl)
            .flat_map(|(_, s)| s.iter())
            .filter(|(ts, _)| end * 1000 - 365 * 86_400_000 < *ts && *ts <= end * 1000)
            .map(|(_, v)| *v as f64 / scale_of("myelectricaldata_max_power_va"))
            .fold(0.0, f64::max);
        out.insert(pdl, peak);
    }
    out
}

/// A PDL's daily energy (kWh) by local date, from the model's daily series.
fn daily_kwh(model: &Mirror, name: &str, pdl: &str) -> BTreeMap<NaiveDate, f64> {
    model
        .iter()
        .filter(|(l, _)| {
            l["__name__"] == name
                && l["pdl"] == pdl
                && l.get("type").map(String::as_str) == Some("daily")
        })
        .flat_map(|(_, s)| s.iter())
        .map(|(ts, v)| {
            let day = chrono::DateTime::from_timestamp_millis(*ts)
                .unwrap()
                .with_timezone(&Paris)
                .date_naive();
            (day, *v as f64 / scale_of(name) / 1000.0)
        })
        .collect()
}
