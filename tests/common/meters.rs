//! The spec's `myelectricaldata_pdl_info` ("The meter"), worked out apart
//! from the exporter: a scan of both energy tables for each PDL's latest
//! reading, and `pdls` read in whatever columns it has.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Europe::Paris;
use myelectricaldata_vm_exporter::model::calendar::day_millis;
use sqlx::PgPool;

use super::model::Pricing;

/// A `pdls` row as read: PDL, id, name, option, linked row's id, power.
type PdlsRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The columns `pdls` has (none without the table).
async fn pdls_columns(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'pdls'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Each PDL's info series: (labels with the name first, timestamp, value
/// in thousandths).
pub async fn expected_meters(
    pool: &PgPool,
    pricing: &Pricing,
) -> Vec<(Vec<(&'static str, String)>, i64, i64)> {
    // The latest date of each PDL's rows that are not placeholders.
    let latest: Vec<(String, Option<NaiveDate>)> = sqlx::query_as(
        "SELECT usage_point_id, max(date) FILTER (WHERE coalesce(raw_data::jsonb ->> 'is_placeholder', '') <> 'true')
           FROM (SELECT usage_point_id, date, raw_data::text AS raw_data FROM consumption_data
                 UNION ALL SELECT usage_point_id, date, raw_data::text FROM production_data) AS r
          GROUP BY usage_point_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let columns = pdls_columns(pool).await;
    let has = |c: &str| columns.iter().any(|x| x == c);
    // pdl → (name, option, linked row's id, subscribed power), and id → pdl.
    let mut recorded: BTreeMap<String, [Option<String>; 4]> = BTreeMap::new();
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    if has("usage_point_id") {
        let col = |c: &str| {
            if has(c) {
                format!("{c}::text")
            } else {
                "NULL::text".into()
            }
        };
        let rows: Vec<PdlsRow> = sqlx::query_as(&format!(
            "SELECT usage_point_id, {}, {}, {}, {}, {} FROM pdls",
            col("id"),
            col("name"),
            col("pricing_option"),
            col("linked_production_pdl_id"),
            col("subscribed_power"),
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        for (pdl, id, name, option, linked, power) in rows {
            if let Some(id) = id {
                by_id.insert(id, pdl.clone());
            }
            recorded.insert(pdl, [name, option, linked, power]);
        }
    }
    let mut out = Vec::new();
    for (pdl, date) in latest {
        let Some(date) = date else { continue };
        let [name, option, linked, power] = recorded.get(&pdl).cloned().unwrap_or_default();
        let filled = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let power = power
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|k| [3, 6, 9, 12, 15, 18, 24, 30, 36].contains(k));
        let kva = pricing.kva.or(power).unwrap_or(6);
        let mut l = vec![
            ("__name__", "myelectricaldata_pdl_info".to_string()),
            ("pdl", pdl.clone()),
            ("name", filled(name).unwrap_or_else(|| pdl.clone())),
        ];
        if let Some(o) = filled(option) {
            l.push(("option", o));
        }
        l.push(("kva", kva.to_string()));
        if let Some(p) = linked.and_then(|id| by_id.get(&id).cloned()) {
            l.push(("production_pdl", p));
        }
        out.push((l, day_millis(Paris, date), 1000));
    }
    out
}
