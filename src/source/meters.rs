//! The meters: each PDL's latest reading, found by walking the tables'
//! unique index (a few look-ups per PDL, not a scan of years of rows), and
//! what `pdls` records of it, in whichever columns its release has.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{Source, SourceError};
use crate::model::meter::MeterRecord;

/// Each distinct PDL of `{table}` with the latest date among its rows that
/// are not placeholders (`NULL` when all are), walking the index on
/// `(usage_point_id, date, ...)` that the unique constraint makes.
const LATEST: &str = "
WITH RECURSIVE p AS (
    (SELECT usage_point_id FROM {table} ORDER BY usage_point_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.usage_point_id FROM {table} t
             WHERE t.usage_point_id > p.usage_point_id
             ORDER BY t.usage_point_id LIMIT 1)
      FROM p WHERE p.usage_point_id IS NOT NULL)
SELECT p.usage_point_id::text,
       (SELECT t.date::text FROM {table} t
         WHERE t.usage_point_id = p.usage_point_id
           AND t.date BETWEEN '0001-01-01' AND '9999-12-31'
           AND coalesce((t.raw_data -> 'is_placeholder')::text = 'true', false) IS NOT TRUE
         ORDER BY t.usage_point_id DESC, t.date DESC LIMIT 1)
  FROM p WHERE p.usage_point_id IS NOT NULL";

impl Source {
    /// Every PDL with rows in `consumption_data` or `production_data`, its
    /// latest reading's date and what `pdls` records of it.
    pub async fn meter_records(&self) -> Result<Vec<MeterRecord>, SourceError> {
        let mut by_pdl: BTreeMap<String, MeterRecord> = BTreeMap::new();
        for table in ["consumption_data", "production_data"] {
            let rows: Vec<(String, Option<String>)> =
                sqlx::query_as(&LATEST.replace("{table}", table))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(SourceError::query(format!(
                        "finding each PDL's latest reading in {table}"
                    )))?;
            for (pdl, date) in rows {
                let date = date.and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
                let record = by_pdl.entry(pdl.clone()).or_insert_with(|| MeterRecord {
                    pdl,
                    ..Default::default()
                });
                record.latest = record.latest.max(date);
            }
        }
        for (pdl, name, option, production) in self.pdls_records().await? {
            if let Some(record) = by_pdl.get_mut(&pdl) {
                record.name = name;
                record.option = option;
                record.production_pdl = production;
            }
        }
        Ok(by_pdl.into_values().collect())
    }

    /// `pdls`' (PDL, name, pricing option, linked production PDL), with
    /// `NULL` for a column this release of the client lacks; none without
    /// the table.
    async fn pdls_records(
        &self,
    ) -> Result<Vec<(String, Option<String>, Option<String>, Option<String>)>, SourceError> {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = to_regclass('pdls') AND attnum > 0 AND NOT attisdropped",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("looking for pdls' columns"))?;
        let has = |c: &str| columns.iter().any(|x| x == c);
        if !has("usage_point_id") {
            return Ok(Vec::new());
        }
        let column = |c: &str| {
            if has(c) {
                format!("p.{c}::text")
            } else {
                "NULL::text".to_string()
            }
        };
        let (linked, join) = if has("linked_production_pdl_id") && has("id") {
            (
                "l.usage_point_id::text",
                "LEFT JOIN pdls l ON l.id::text = p.linked_production_pdl_id::text",
            )
        } else {
            ("NULL::text", "")
        };
        sqlx::query_as(&format!(
            "SELECT p.usage_point_id::text, {}, {}, {linked}
               FROM pdls p {join} WHERE p.usage_point_id IS NOT NULL",
            column("name"),
            column("pricing_option"),
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query(
            "reading pdls' names, options and production meters",
        ))
    }
}
