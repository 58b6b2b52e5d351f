//! Costs (SPEC §3, "Costs"): each complete day priced under the three
//! regulated options at the prices in force that day, against the spec's
//! model computed from the rows and the grid apart from the exporter. A
//! grid of the user's own with a price change in the middle of the data, a
//! row for one power and a subscription changed in mid-month; then an
//! edited price, a corrected reading and a colour changed after the fact,
//! each rewriting only the series it touches.

mod common;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Europe::Paris;
use common::model::{assert_same, expected_priced, from_export, Mirror, Pricing};
use common::{exporter, run_ok, Servers};
use myelectricaldata_vm_exporter::model::calendar::day_millis;

const PDL: &str = "12345678901234";
const OTHER: &str = "98765432109876";

/// A grid of the user's own: `{blue_hc}` is the blue off-peak price from
/// 4 November 2024, which the test edits.
fn grid(blue_hc: &str) -> String {
    format!(
        "# A household's own grid (every kind of row the format has)\n\
         \n\
         2023-01-01,BASE,,base,0.2000\n\
         # 9 kVA pays more until a change for every power replaces it\n\
         2023-01-01,BASE,9,base,0.2100\n\
         2024-11-04,BASE,,base,0.2500\n\
         2023-01-01,BASE,6,subscription_month,12.00\n\
         2023-01-01,BASE,9,subscription_month,15.00\n\
         2024-11-04,BASE,9,subscription_month,16.50\n\
         2023-01-01,HC_HP,,hp,0.2400\n\
         2023-01-01,HC_HP,,hc,0.1700\n\
         2023-01-01,HC_HP,,subscription_month,14.00\n\
         2023-01-01,TEMPO,,blue_hp,0.1600\n\
         2023-01-01,TEMPO,,blue_hc,0.1200\n\
         2024-11-04,TEMPO,,blue_hc,{blue_hc}\n\
         2023-01-01,TEMPO,,white_hp,0.1900\n\
         2023-01-01,TEMPO,,white_hc,0.1500\n\
         2023-01-01,TEMPO,,red_hp,0.7000\n\
         2023-01-01,TEMPO,,red_hc,0.1600\n\
         # No TEMPO subscription at 6 kVA: TEMPO is not offered there, no TEMPO cost\n\
         2023-01-01,TEMPO,9,subscription_month,15.50\n"
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn day(s: &str) -> i64 {
    day_millis(Paris, NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
}

/// The value (in the mirror's units) of a sample of the series with these
/// labels besides its name.
fn value(m: &Mirror, name: &str, labels: &[(&str, &str)], ts: i64) -> Option<i64> {
    let (_, samples) = m.iter().find(|(l, _)| {
        l["__name__"] == name
            && labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            && l.len() == labels.len() + 1
    })?;
    samples.iter().find(|(t, _)| *t == ts).map(|(_, v)| *v)
}

fn cost(m: &Mirror, pdl: &str, option: &str, part: &str, date: &str) -> Option<i64> {
    value(
        m,
        "myelectricaldata_cost_eur",
        &[("pdl", pdl), ("option", option), ("part", part)],
        day(date),
    )
}

/// The count of a field of `once`'s closing log line.
fn logged(log: &str, field: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("mirror verified"))
        .unwrap_or_else(|| panic!("no closing line in {log}"));
    let at = line
        .find(&format!("{field}="))
        .unwrap_or_else(|| panic!("no {field} in {line}"));
    line[at + field.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `once` and compares VictoriaMetrics with the model under `pricing`;
/// returns the log and what VictoriaMetrics holds.
async fn once_priced(
    servers: &Servers,
    env: &[(&str, String)],
    pricing: &Pricing,
    when: &str,
) -> (String, Mirror) {
    let log = run_ok(&["once"], env);
    let got = from_export(servers.vm.export_all().await);
    let want = expected_priced(&servers.pool, &BTreeMap::new(), now_ms(), pricing).await;
    assert_same(&got, &want, when);
    (log, got)
}

/// The series of `after` whose samples differ from `before`'s, and their
/// samples: what rewriting exactly the touched series sends.
fn touched(before: &Mirror, after: &Mirror) -> (u64, u64) {
    let changed: Vec<_> = after
        .iter()
        .filter(|(l, s)| before.get(*l) != Some(*s))
        .collect();
    (
        changed.len() as u64,
        changed.iter().map(|(_, s)| s.len() as u64).sum(),
    )
}

#[tokio::test]
async fn each_day_is_priced_at_the_prices_then_in_force_and_a_change_rewrites_only_what_it_touches()
{
    let servers = Servers::start().await;
    // One PDL at 9 kVA as MyElectricalData records it; the other has no
    // pdls row and is priced at 6 kVA.
    sqlx::raw_sql(&format!(
        "UPDATE pdls SET subscribed_power = 9 WHERE usage_point_id = '{PDL}'"
    ))
    .execute(&servers.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.csv");
    std::fs::write(&file, grid("0.1300")).unwrap();
    let env = servers.env(&[("VICTORIAMETRICS_PRICES_FILE", file.to_str().unwrap())]);
    let pricing = Pricing::from_text(&grid("0.1300"), None);

    let (_, first) = once_priced(&servers, &env, &pricing, "priced with the user's grid").await;

    // check says which grid prices the costs and at which power each PDL is.
    let out = exporter(&["check"], &env);
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        // A user grid whose latest change is two years old: a warning.
        "[WARN] Price grid in force (costs)".to_string(),
        "more than seven months ago".to_string(),
        format!(
            "{} (VICTORIAMETRICS_PRICES_FILE), 17 prices, latest change 2024-11-04",
            file.display()
        ),
        format!("{PDL}: no name recorded, no option recorded, 9 kVA (pdls.subscribed_power)"),
        format!("{OTHER}: no name recorded, no option recorded, 6 kVA (the default, no subscribed power recorded)"),
        "[WARN] Each meter: name, option, power (costs)".to_string(),
    ] {
        assert!(report.contains(&line), "{line:?} not in {report}");
    }

    // By hand. Subscriptions: 9 kVA BASE 15.00 a month over November's 30
    // days, 16.50 from the 4th; 6 kVA 12.00; TEMPO only at 9 kVA.
    assert_eq!(
        cost(&first, PDL, "BASE", "subscription", "2024-11-03"),
        Some(500_000)
    );
    assert_eq!(
        cost(&first, PDL, "BASE", "subscription", "2024-11-04"),
        Some(550_000)
    );
    assert_eq!(
        cost(&first, OTHER, "BASE", "subscription", "2024-11-04"),
        Some(400_000)
    );
    // 14.00 over March's 31 days, on the day clocks go forward.
    assert_eq!(
        cost(&first, OTHER, "HC_HP", "subscription", "2024-03-31"),
        Some(451_613)
    );
    assert_eq!(
        cost(&first, PDL, "TEMPO", "subscription", "2024-11-03"),
        Some(516_667)
    );
    // TEMPO is not offered at 6 kVA in this grid: no cost of either part,
    // though its kWh rows name every power.
    for part in ["subscription", "energy"] {
        assert_eq!(cost(&first, OTHER, "TEMPO", part, "2024-11-03"), None);
    }
    assert!(cost(&first, PDL, "TEMPO", "energy", "2024-11-03").is_some());
    // Energy: the day's kWh (the tariff periods' exact sums) at the price
    // in force, 9 kVA's own row before the 4th, the every-power row after.
    let wh = |pdl: &str, date: &str, period: &str| {
        value(
            &first,
            "myelectricaldata_consumption_period_wh",
            &[("pdl", pdl), ("period", period)],
            day(date),
        )
        .unwrap()
    };
    for (pdl, date, base) in [
        (PDL, "2024-11-03", 210_000),
        (PDL, "2024-11-05", 250_000),
        (OTHER, "2024-11-03", 200_000),
    ] {
        let (hp, hc) = (wh(pdl, date, "HP"), wh(pdl, date, "HC"));
        let priced = |mwh: i64, price: i64| mwh * price;
        // The whole day is rounded once: within a thousandth of a Wh of HP + HC.
        let want = (priced(hp + hc, base) as f64 / 1e6).round() as i64;
        let got = cost(&first, pdl, "BASE", "energy", date).unwrap();
        assert!(
            (got - want).abs() <= 1,
            "{pdl} {date}: BASE {got}, want {want}"
        );
        let want = ((priced(hp, 240_000) + priced(hc, 170_000)) as f64 / 1e6).round() as i64;
        assert_eq!(
            cost(&first, pdl, "HC_HP", "energy", date),
            Some(want),
            "{pdl} {date}"
        );
    }

    // A price corrected in the file: only the series it touches are
    // rewritten (the blue off-peak price, and the TEMPO energy of the blue
    // days from the 4th), nothing else is sent.
    std::fs::write(&file, grid("0.1350")).unwrap();
    let pricing = Pricing::from_text(&grid("0.1350"), None);
    let (log, edited) = once_priced(&servers, &env, &pricing, "after a price was corrected").await;
    let (series, samples) = touched(&first, &edited);
    assert!(series >= 2, "the edit changed {series} series");
    assert_eq!(logged(&log, "rewritten"), series, "{log}");
    assert_eq!(logged(&log, "lines"), samples, "{log}");
    assert_ne!(
        cost(&edited, PDL, "TEMPO", "energy", "2024-11-04"),
        cost(&first, PDL, "TEMPO", "energy", "2024-11-04")
    );
    // The blue Tempo day of the 3rd runs to 06:00 on the 4th: those six
    // off-peak hours are priced at the price in force on the 4th, so the
    // edit moves that day's cost by their energy × 0.005 €/kWh.
    let early: i64 = sqlx::query_scalar(&format!(
        "SELECT sum(value)::bigint * 500 FROM consumption_data
          WHERE usage_point_id = '{PDL}' AND date = '2024-11-04'
            AND granularity = 'detailed' AND interval_start < '06:00'"
    ))
    .fetch_one(&servers.pool)
    .await
    .unwrap();
    let moved = cost(&edited, PDL, "TEMPO", "energy", "2024-11-03").unwrap()
        - cost(&first, PDL, "TEMPO", "energy", "2024-11-03").unwrap();
    assert!(
        (moved - early * 5_000 / 1_000_000).abs() <= 1,
        "the 3rd's Tempo day moved by {moved} µ€ for {early} mWh"
    );

    // Enedis corrects a reading of the 3rd: that day's costs follow.
    sqlx::raw_sql(&format!(
        "UPDATE consumption_data SET value = value + 400, updated_at = now()
          WHERE usage_point_id = '{PDL}' AND date = '2024-11-03'
            AND granularity = 'detailed' AND interval_start = '12:00'"
    ))
    .execute(&servers.pool)
    .await
    .unwrap();
    let (log, corrected) = once_priced(&servers, &env, &pricing, "after a correction").await;
    let (series, _) = touched(&edited, &corrected);
    assert_eq!(logged(&log, "rewritten"), series, "{log}");
    // 400 W more for half an hour, 0.2 kWh, at 9 kVA's 0.21 €/kWh.
    let more = cost(&corrected, PDL, "BASE", "energy", "2024-11-03").unwrap()
        - cost(&edited, PDL, "BASE", "energy", "2024-11-03").unwrap();
    assert_eq!(more, 42_000);

    // The 4th turns red after the fact: its Tempo day is priced red.
    sqlx::raw_sql("UPDATE tempo_days SET color = 'RED' WHERE id = '2024-11-04'")
        .execute(&servers.pool)
        .await
        .unwrap();
    let (_, red) = once_priced(&servers, &env, &pricing, "after a colour change").await;
    let tempo = |period: &str| {
        value(
            &red,
            "myelectricaldata_tempo_consumption_wh",
            &[("pdl", PDL), ("color", "ROUGE"), ("period", period)],
            day("2024-11-04"),
        )
        .unwrap()
    };
    let want = ((tempo("HP") * 700_000 + tempo("HC") * 160_000) as f64 / 1e6).round() as i64;
    assert_eq!(cost(&red, PDL, "TEMPO", "energy", "2024-11-04"), Some(want));
    // A subscribed power set for every PDL overrides pdls': 9 kVA's rows
    // give way to 6 kVA's (BASE 12.00 a month, no TEMPO subscription).
    let mut six = env.clone();
    six.push(("VICTORIAMETRICS_SUBSCRIBED_KVA", "6".into()));
    let pricing6 = Pricing::from_text(&grid("0.1350"), Some(6));
    let (_, at6) = once_priced(&servers, &six, &pricing6, "at a subscribed power of 6 kVA").await;
    assert_eq!(
        cost(&at6, PDL, "BASE", "subscription", "2024-11-03"),
        Some(400_000)
    );
    assert_eq!(cost(&at6, PDL, "TEMPO", "subscription", "2024-11-03"), None);
    assert_eq!(cost(&at6, PDL, "TEMPO", "energy", "2024-11-03"), None);
    assert_eq!(
        cost(&at6, PDL, "BASE", "energy", "2024-11-03").map(|c| c * 21),
        cost(&red, PDL, "BASE", "energy", "2024-11-03").map(|c| c * 20),
        "0.20 instead of 0.21 per kWh"
    );

    // The grid itself, as series: the corrected row at its date.
    assert_eq!(
        value(
            &red,
            "myelectricaldata_price_eur",
            &[("option", "TEMPO"), ("item", "blue_hc")],
            day("2024-11-04")
        ),
        Some(135_000)
    );
    assert_eq!(
        value(
            &red,
            "myelectricaldata_price_eur",
            &[("option", "BASE"), ("kva", "9"), ("item", "base")],
            day("2023-01-01")
        ),
        Some(210_000)
    );
}

#[tokio::test]
async fn the_prices_command_prints_the_grid_in_force_and_a_bad_file_stops_with_its_line() {
    // The shipped grid, without any other variable.
    let out = exporter(&["prices"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prices/regulated.csv"))
            .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shipped);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.csv");
    std::fs::write(&file, grid("0.1300")).unwrap();
    let path = file.to_str().unwrap().to_string();
    let out = exporter(
        &["prices"],
        &[("VICTORIAMETRICS_PRICES_FILE", path.clone())],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), grid("0.1300"));

    // A bad line: every command stops (exit 2) on one line naming the
    // variable, the file, the line and why.
    std::fs::write(
        &file,
        "2024-02-01,BASE,,base,0.25\n# fine\n2024-02-01,BASE,,base,0,26\n",
    )
    .unwrap();
    for (args, db) in [
        (&["prices"][..], false),
        (&["once"][..], true),
        (&["check"][..], true),
    ] {
        let mut env = vec![("VICTORIAMETRICS_PRICES_FILE", path.clone())];
        if db {
            env.push(("DATABASE_URL", "postgresql://u@127.0.0.1:9/db".into()));
        }
        let out = exporter(args, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("VICTORIAMETRICS_PRICES_FILE")
                && err.contains(&format!("{path} line 3: expected 5")),
            "{err}"
        );
    }
    let out = exporter(
        &["once"],
        &[
            ("DATABASE_URL", "postgresql://u@127.0.0.1:9/db".into()),
            ("VICTORIAMETRICS_SUBSCRIBED_KVA", "7".into()),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VICTORIAMETRICS_SUBSCRIBED_KVA"));
}
