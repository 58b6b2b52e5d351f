//! Each meter named (SPEC §3, "The meter"): `myelectricaldata_pdl_info`
//! from `pdls` in both schema states and without it, read back from
//! VictoriaMetrics and compared with the spec's model; a renamed meter's
//! series replaced, not doubled; `check`'s line per meter.

mod common;

use std::collections::BTreeMap;

use common::model::{assert_exported, from_export, Mirror};
use common::{exporter, run_ok, Servers, SCHEMA_ORM};

const HOME: &str = "12345678901234";
const OTHER: &str = "98765432109876";
/// A production meter of its own, linked to HOME in `pdls`.
const SOLAR: &str = "12345678905555";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A series' labels without `__name__`, and its samples.
type Info = (BTreeMap<String, String>, Vec<(i64, i64)>);

/// The `pdl_info` series VictoriaMetrics holds.
fn infos(m: &Mirror) -> Vec<Info> {
    m.iter()
        .filter(|(l, _)| l["__name__"] == "myelectricaldata_pdl_info")
        .map(|(l, s)| {
            let mut l = l.clone();
            l.remove("__name__");
            (l, s.clone())
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Exports with `once` and compares the whole mirror with the model;
/// returns what VictoriaMetrics holds.
async fn export(servers: &Servers, when: &str) -> Mirror {
    let since = now_ms();
    run_ok(&["once"], &servers.env(&[]));
    let got = from_export(servers.vm.export_all().await);
    assert_exported(&servers.pool, &BTreeMap::new(), since, &got, when).await;
    got
}

/// A production meter with daily rows up to 2024-11-08 and a placeholder
/// for the 9th, which does not count as a reading.
const SOLAR_ROWS: &str = "
INSERT INTO production_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
SELECT 'solar-' || d::text, '12345678905555', d, 'daily', NULL, 4200, jsonb_build_object('v', '4200', 'd', d::text)
  FROM generate_series('2024-11-01'::date, '2024-11-08', '1 day') AS d;
INSERT INTO production_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
VALUES ('solar-placeholder', '12345678905555', '2024-11-09', 'daily', NULL, 0, '{\"is_placeholder\": true}');
";

#[tokio::test]
async fn each_meter_is_named_from_pdls_and_a_rename_moves_its_one_series() {
    let servers = Servers::start().await;
    let pool = &servers.pool;
    sqlx::raw_sql(&format!(
        "{SOLAR_ROWS}
         INSERT INTO pdls (id, usage_point_id, name) VALUES ('p-solar', '{SOLAR}', 'Toit');
         UPDATE pdls SET name = 'Maison', pricing_option = 'TEMPO', subscribed_power = 9,
                         linked_production_pdl_id = 'p-solar'
          WHERE usage_point_id = '{HOME}';"
    ))
    .execute(pool)
    .await
    .unwrap();
    let got = export(&servers, "named from pdls").await;
    let home = labels(&[
        ("pdl", HOME),
        ("name", "Maison"),
        ("option", "TEMPO"),
        ("kva", "9"),
        ("production_pdl", SOLAR),
    ]);
    let other = labels(&[("pdl", OTHER), ("name", OTHER), ("kva", "6")]);
    let solar = labels(&[("pdl", SOLAR), ("name", "Toit"), ("kva", "6")]);
    let found = infos(&got);
    let at = |l: &BTreeMap<String, String>| {
        found
            .iter()
            .find(|(x, _)| x == l)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no {l:?} in {found:?}"))
    };
    assert_eq!(found.len(), 3, "{found:?}");
    // The latest readings' days at 00:00 in Paris: HOME's load curve and
    // production run to 10 November (a placeholder then), SOLAR's to the
    // 8th (its 9th is a placeholder), OTHER's load curve to the 5th.
    let day = |d: &str| {
        myelectricaldata_vm_exporter::model::calendar::day_millis(
            chrono_tz::Europe::Paris,
            d.parse().unwrap(),
        )
    };
    assert_eq!(at(&solar), [(day("2024-11-08"), 1000)]);
    assert_eq!(at(&other).len(), 1);
    assert_eq!(at(&home).len(), 1);

    // `check` names each meter, with where each label comes from.
    let out = exporter(&["check"], &servers.env(&[]));
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("{HOME}: \"Maison\" (pdls.name), TEMPO (pdls.pricing_option), 9 kVA (pdls.subscribed_power)"),
        format!("{SOLAR}: \"Toit\" (pdls.name), no option recorded, 6 kVA (the default, no subscribed power recorded)"),
    ] {
        assert!(report.contains(&line), "{line:?} not in {report}");
    }

    // Renamed, and on another option the grid does not price: the series
    // is replaced, not doubled, and `check` warns of the option.
    sqlx::raw_sql(&format!(
        "UPDATE pdls SET name = 'Maison principale', pricing_option = 'EJP' WHERE usage_point_id = '{HOME}'"
    ))
    .execute(pool)
    .await
    .unwrap();
    let got = export(&servers, "after a rename").await;
    let found = infos(&got);
    let homes: Vec<_> = found.iter().filter(|(l, _)| l["pdl"] == HOME).collect();
    assert_eq!(homes.len(), 1, "{found:?}");
    assert_eq!(homes[0].0["name"], "Maison principale");
    assert_eq!(homes[0].0["option"], "EJP");
    let out = exporter(&["check"], &servers.env(&[]));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("[WARN] Each meter: name, option, power (costs)")
            && report.contains("EJP (pdls.pricing_option; not in the price grid)")
            && report.contains("EJP has no regulated price in the grid"),
        "{report}"
    );

    // A new reading moves the one sample to its day.
    sqlx::raw_sql(&format!(
        "INSERT INTO production_data (id, usage_point_id, date, granularity, value)
         VALUES ('solar-late', '{SOLAR}', '2024-11-12', 'daily', 3900)"
    ))
    .execute(pool)
    .await
    .unwrap();
    let got = export(&servers, "after a new reading").await;
    let found = infos(&got);
    let solar: Vec<_> = found.iter().filter(|(l, _)| l["pdl"] == SOLAR).collect();
    assert_eq!(solar.len(), 1, "{found:?}");
    assert_eq!(solar[0].1, [(day("2024-11-12"), 1000)]);
}

#[tokio::test]
async fn an_older_pdls_without_a_link_and_no_pdls_at_all_keep_the_fallbacks() {
    // The ORM's tables: pdls has a name and an option, no link column.
    let servers = Servers::start_with_schema(SCHEMA_ORM).await;
    let pool = &servers.pool;
    sqlx::raw_sql(&format!(
        "UPDATE pdls SET name = 'Appartement', pricing_option = 'HC_HP' WHERE usage_point_id = '{HOME}'"
    ))
    .execute(pool)
    .await
    .unwrap();
    let got = export(&servers, "an older pdls").await;
    let found = infos(&got);
    assert!(
        found.iter().any(|(l, _)| *l
            == labels(&[
                ("pdl", HOME),
                ("name", "Appartement"),
                ("option", "HC_HP"),
                ("kva", "6")
            ])),
        "{found:?}"
    );

    // No pdls table at all: every PDL is named by its number, at 6 kVA.
    sqlx::raw_sql("DROP TABLE pdls")
        .execute(pool)
        .await
        .unwrap();
    let got = export(&servers, "without pdls").await;
    let found: Vec<_> = infos(&got).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        found,
        [
            labels(&[("pdl", HOME), ("name", HOME), ("kva", "6")]),
            labels(&[("pdl", OTHER), ("name", OTHER), ("kva", "6")]),
        ]
    );
}
