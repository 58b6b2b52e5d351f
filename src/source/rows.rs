//! The rows of each table, as the contract reads them.

use futures_util::{Stream, TryStreamExt};
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{Source, SourceError};
use crate::model::ecowatt::EcowattRow;
use crate::model::energy::{quality_from_json, EnergyRow};
use crate::model::max_power::MaxPowerRow;
use crate::model::tariff::OffPeakRecord;
use crate::model::tempo::TempoRow;
use crate::model::zen_flex::ZenFlexRow;
use crate::model::Family;

/// The query of an energy table, as a `&'static str` as sqlx's streams need.
macro_rules! energy_sql {
    ($table:literal) => {
        // In the order of the unique constraint's index, so that PostgreSQL
        // streams rows without sorting a million of them; the quality comes
        // as JSON text, told apart from other JSON in Rust (jsonb_typeof
        // and a second look-up cost PostgreSQL a third of the query).
        concat!(
            "SELECT t.id, t.usage_point_id,
                    CASE WHEN t.date BETWEEN '0001-01-01' AND '9999-12-31' THEN t.date END,
                    t.granularity::text, t.interval_start, t.value::bigint,
                    (t.raw_data -> 'quality')::text,
                    CASE WHEN t.interval_start IS NULL AND isfinite(t.updated_at) THEN t.updated_at END,
                    CASE WHEN t.interval_start IS NOT NULL
                         THEN coalesce(t.raw_data ->> 'p', t.raw_data ->> 'interval_length') END,
                    (t.raw_data -> 'is_placeholder')::text = 'true'
               FROM ",
            $table,
            " AS t
              ORDER BY t.usage_point_id, t.date, t.granularity, t.interval_start"
        )
    };
}

/// Decodes a row of [`Source::energy_rows`], borrowing its text.
pub fn energy_row<'r>(row: &'r PgRow, family: Family) -> Result<EnergyRow<'r>, SourceError> {
    let get = |e| SourceError::Query {
        what: format!("decoding a row of {}", family.table()),
        source: e,
    };
    // The query fixes every column's type, so sqlx's per-value type check
    // (a measurable share of a million rows' decoding) can be skipped.
    let updated_at: Option<chrono::DateTime<chrono::Utc>> =
        row.try_get_unchecked(7).map_err(get)?;
    Ok(EnergyRow {
        id: row.try_get_unchecked(0).map_err(get)?,
        pdl: row.try_get_unchecked(1).map_err(get)?,
        date: row.try_get_unchecked(2).map_err(get)?,
        granularity: row.try_get_unchecked(3).map_err(get)?,
        interval_start: row.try_get_unchecked(4).map_err(get)?,
        value: row.try_get_unchecked(5).map_err(get)?,
        quality: row
            .try_get_unchecked::<Option<&str>, _>(6)
            .map_err(get)?
            .and_then(quality_from_json),
        updated_at: updated_at.map(|t| t.timestamp_micros()),
        interval: row.try_get_unchecked(8).map_err(get)?,
        placeholder: row
            .try_get_unchecked::<Option<bool>, _>(9)
            .map_err(get)?
            .unwrap_or(false),
    })
}

impl Source {
    /// The rows of an energy table, ordered by PDL so that the series of
    /// one PDL can be built and sent before the next PDL is read; decode
    /// each with [`energy_row`].
    pub fn energy_rows(
        &self,
        family: Family,
    ) -> impl Stream<Item = Result<PgRow, SourceError>> + '_ {
        let table = family.table();
        let sql = match family {
            Family::Production => energy_sql!("production_data"),
            _ => energy_sql!("consumption_data"),
        };
        sqlx::query(sql)
            .fetch(&self.pool)
            .map_err(move |source| SourceError::Query {
                what: format!("reading {table}"),
                source,
            })
    }

    /// Every `offpeak_hours` MyElectricalData keeps, in `contract_data` and
    /// in `pdls`, where the table and its column exist.
    pub async fn offpeak_records(&self) -> Result<Vec<OffPeakRecord>, SourceError> {
        let mut out = Vec::new();
        for table in ["contract_data", "pdls"] {
            let has_column: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute
                                 WHERE attrelid = to_regclass($1) AND attname = 'offpeak_hours'
                                   AND NOT attisdropped)",
            )
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .map_err(SourceError::query(format!(
                "looking for {table}.offpeak_hours"
            )))?;
            if !has_column {
                continue;
            }
            let sql = format!(
                "SELECT usage_point_id::text, offpeak_hours::text FROM {table}
                  WHERE offpeak_hours IS NOT NULL AND usage_point_id IS NOT NULL"
            );
            let rows: Vec<(String, String)> = sqlx::query_as(&sql)
                .fetch_all(&self.pool)
                .await
                .map_err(SourceError::query(format!("reading {table}.offpeak_hours")))?;
            out.extend(
                rows.into_iter()
                    .map(|(pdl, json)| OffPeakRecord { table, pdl, json }),
            );
        }
        Ok(out)
    }

    /// The distinct PDLs of `consumption_data`, walking its index rather
    /// than scanning the table.
    pub async fn consumption_pdls(&self) -> Result<Vec<String>, SourceError> {
        sqlx::query_scalar(
            "WITH RECURSIVE p AS (
                (SELECT usage_point_id FROM consumption_data ORDER BY usage_point_id LIMIT 1)
                UNION ALL
                SELECT (SELECT c.usage_point_id FROM consumption_data c
                         WHERE c.usage_point_id > p.usage_point_id
                         ORDER BY c.usage_point_id LIMIT 1)
                  FROM p WHERE p.usage_point_id IS NOT NULL)
             SELECT usage_point_id FROM p WHERE usage_point_id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("listing the PDLs of consumption_data"))
    }

    /// Every row of `tempo_days` (a few hundred per season).
    pub async fn tempo_rows(&self) -> Result<Vec<TempoRow>, SourceError> {
        let rows = sqlx::query("SELECT id::text, color::text FROM tempo_days ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(SourceError::query("reading tempo_days"))?;
        rows.into_iter()
            .map(|r| {
                Ok(TempoRow {
                    id: r
                        .try_get(0)
                        .map_err(SourceError::query("decoding tempo_days"))?,
                    color: r
                        .try_get(1)
                        .map_err(SourceError::query("decoding tempo_days"))?,
                })
            })
            .collect()
    }

    /// Every row of `ecowatt` (one per day).
    pub async fn ecowatt_rows(&self) -> Result<Vec<EcowattRow>, SourceError> {
        let rows = sqlx::query(
            "SELECT id::bigint,
                    CASE WHEN periode BETWEEN '0001-01-02' AND '9999-12-30' THEN periode END,
                    dvalue::bigint, \"values\"
               FROM ecowatt ORDER BY periode, generation_datetime, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading ecowatt"))?;
        rows.into_iter()
            .map(|r| {
                let id: i64 = r
                    .try_get(0)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                let periode = r
                    .try_get(1)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                let dvalue = r
                    .try_get(2)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                let values = r
                    .try_get(3)
                    .map_err(SourceError::query("decoding ecowatt"))?;
                Ok(EcowattRow {
                    id,
                    periode,
                    dvalue,
                    values,
                })
            })
            .collect()
    }

    /// Every row of `max_power_data` (one per PDL and day); none when the
    /// table does not exist.
    pub async fn max_power_rows(&self) -> Result<Vec<MaxPowerRow>, SourceError> {
        if !self.has_table(Family::MaxPower).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id::text, usage_point_id::text,
                    CASE WHEN date BETWEEN '0001-01-01' AND '9999-12-31' THEN date END,
                    interval_start::text, value::bigint,
                    coalesce((raw_data -> 'is_placeholder')::text = 'true', false)
               FROM max_power_data ORDER BY usage_point_id, date",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading max_power_data"))?;
        let decode = SourceError::query;
        rows.into_iter()
            .map(|r| {
                Ok(MaxPowerRow {
                    id: r.try_get(0).map_err(decode("decoding max_power_data"))?,
                    pdl: r.try_get(1).map_err(decode("decoding max_power_data"))?,
                    date: r.try_get(2).map_err(decode("decoding max_power_data"))?,
                    interval_start: r.try_get(3).map_err(decode("decoding max_power_data"))?,
                    value: r.try_get(4).map_err(decode("decoding max_power_data"))?,
                    placeholder: r.try_get(5).map_err(decode("decoding max_power_data"))?,
                })
            })
            .collect()
    }

    /// Every row of `zen_flex_days`; none when the table does not exist.
    pub async fn zen_flex_rows(&self) -> Result<Vec<ZenFlexRow>, SourceError> {
        if !self.has_table(Family::ZenFlex).await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id::text, day_type::text FROM zen_flex_days ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(SourceError::query("reading zen_flex_days"))?;
        rows.into_iter()
            .map(|r| {
                Ok(ZenFlexRow {
                    id: r
                        .try_get(0)
                        .map_err(SourceError::query("decoding zen_flex_days"))?,
                    day_type: r
                        .try_get(1)
                        .map_err(SourceError::query("decoding zen_flex_days"))?,
                })
            })
            .collect()
    }
}
