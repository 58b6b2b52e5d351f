//! The demo data (`tests/fixtures/myelectricaldata_data.sql`) as the
//! dashboard's tests export it: its PDLs and span, the meters named as a
//! household names them in MyElectricalData, and one `once` waited for
//! until VictoriaMetrics lists what the `$pdl` variable lists.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use sqlx::PgPool;

use super::{run_ok, Servers};

/// A PDL of the demo data, which has daily, detailed and production rows
/// (a 30-minute meter).
pub const PDL: &str = "12345678901234";

/// The demo data's other PDL, a 10-minute meter.
pub const PDL_10_MIN: &str = "98765432109876";

/// A production meter of its own, linked to [`PDL`] by [`name_the_meters`].
pub const SOLAR: &str = "12345678905555";

/// The demo data lies in 2023-08-15 .. 2024-11-10, plus EcoWatt from today
/// to three days ahead.
pub fn demo_range() -> (i64, i64) {
    (
        Utc.with_ymd_and_hms(2023, 8, 1, 0, 0, 0)
            .unwrap()
            .timestamp(),
        Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0)
            .unwrap()
            .timestamp(),
    )
}

/// `pdls` as a household fills it in MyElectricalData: [`PDL`] is
/// "Maison", on Tempo at 12 kVA, with its solar panels' meter [`SOLAR`]
/// ("Toit", daily production from May to 8 November 2024) linked to it;
/// [`PDL_10_MIN`] has a name with quotes, on HC/HP at the default power.
/// Rows upserted, as the client writes them, in either schema state.
pub async fn name_the_meters(pool: &PgPool) {
    sqlx::raw_sql(&format!(
        "INSERT INTO production_data (id, usage_point_id, date, granularity, interval_start, value, raw_data)
         SELECT 'solar-' || d::text, '{SOLAR}', d, 'daily', NULL, v, jsonb_build_object('v', v::text, 'd', d::text)
           FROM generate_series('2024-05-01'::date, '2024-11-08', '1 day') AS d,
                LATERAL (SELECT 3000 + (extract(doy FROM d)::int * 71) % 21000 AS v) AS x;
         INSERT INTO pdls (id, usage_point_id, name) VALUES ('p-solar', '{SOLAR}', 'Toit');
         INSERT INTO pdls (id, usage_point_id, name, pricing_option, subscribed_power, linked_production_pdl_id)
         VALUES ('p-1', '{PDL}', 'Maison', 'TEMPO', 12, 'p-solar')
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, pricing_option = EXCLUDED.pricing_option,
           subscribed_power = EXCLUDED.subscribed_power, linked_production_pdl_id = EXCLUDED.linked_production_pdl_id;
         INSERT INTO pdls (id, usage_point_id, name, pricing_option)
         VALUES ('p-2', '{PDL_10_MIN}', 'Atelier \"du fond\"', 'HC_HP')
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, pricing_option = EXCLUDED.pricing_option;"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// Runs the exporter once over the demo data, with the settings `env`,
/// and waits until VictoriaMetrics lists both PDLs.
pub async fn export_demo_data(servers: &Servers, env: &[(&'static str, &str)]) {
    run_ok(&["once"], &servers.env(env));
    let vm = servers.vm.url.as_str();

    // What was written becomes searchable within a second.
    let client = reqwest::Client::new();
    client
        .get(format!("{vm}/internal/force_flush"))
        .send()
        .await
        .unwrap();

    let (start, end) = demo_range();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = client
            .get(format!("{vm}/api/v1/label/pdl/values"))
            .query(&[
                ("match[]", "myelectricaldata_consumption_wh"),
                ("start", &start.to_string()),
                ("end", &end.to_string()),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains(PDL) && body.contains(PDL_10_MIN) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "label_values(myelectricaldata_consumption_wh, pdl): {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
