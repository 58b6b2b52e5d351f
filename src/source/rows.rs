//! The rows of each table, as the contract reads them.

use bytes::Bytes;
use chrono::NaiveDate;
use futures_util::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;

use super::{Source, SourceError};
use crate::model::ecowatt::EcowattRow;
use crate::model::energy::{quality_from_json, EnergyRow};
use crate::model::max_power::MaxPowerRow;
use crate::model::tariff::OffPeakRecord;
use crate::model::tempo::TempoRow;
use crate::model::zen_flex::ZenFlexRow;
use crate::model::Family;

/// The query of an energy table: PostgreSQL's text `COPY` of it, one
/// message a row, parsed here (sqlx's row stream and per-value decoding
/// cost about a third of a pass's CPU); only the rows of `only` when given.
fn energy_sql(table: &str, only: Option<&[String]>) -> String {
    // COPY takes no parameters: the PDLs are dollar-quoted literals, which
    // no setting escapes; a PDL holding a `$` (never a real one) reads
    // the whole table instead.
    let filter = match only {
        Some([]) => "WHERE FALSE".to_string(),
        Some(pdls) if !pdls.iter().any(|p| p.contains('$')) => {
            let quoted: Vec<String> = pdls.iter().map(|p| format!("$p${p}$p$")).collect();
            format!("WHERE t.usage_point_id IN ({})", quoted.join(", "))
        }
        _ => String::new(),
    };
    // In the order of the unique constraint's index, so that PostgreSQL
    // streams rows without sorting a million of them; the quality comes
    // as JSON text, told apart from other JSON in Rust (jsonb_typeof
    // and a second look-up cost PostgreSQL a third of the query). The
    // date comes as days since 1970 and `updated_at` as Unix
    // microseconds (the second, then the microseconds within it: exact
    // whatever type `extract` returns), so that no text depends on the
    // session's DateStyle.
    format!(
        "COPY (SELECT t.id, t.usage_point_id,
                CASE WHEN t.date BETWEEN '0001-01-01' AND '9999-12-31' THEN t.date - DATE '1970-01-01' END,
                t.granularity::text, t.interval_start, t.value::bigint,
                (t.raw_data -> 'quality')::text,
                CASE WHEN t.interval_start IS NULL AND isfinite(t.updated_at)
                     THEN extract(epoch FROM date_trunc('second', t.updated_at))::bigint * 1000000
                          + extract(microseconds FROM t.updated_at)::bigint % 1000000 END,
                CASE WHEN t.interval_start IS NOT NULL
                     THEN coalesce(t.raw_data ->> 'p', t.raw_data ->> 'interval_length') END,
                (t.raw_data -> 'is_placeholder')::text = 'true'
           FROM {table} AS t {filter}
          ORDER BY t.usage_point_id, t.date, t.granularity, t.interval_start) TO STDOUT"
    )
}

/// The columns of [`energy_sql`]'s rows.
const ENERGY_COLUMNS: usize = 10;

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A field of a `COPY` text row.
#[derive(Clone, Copy)]
enum Field<'r> {
    Null,
    /// Text without escapes, as it came.
    Text(&'r str),
    /// Text that held escapes: its index among the unescaped.
    Unescaped(usize),
}

/// The text of a `COPY` field with its escapes undone (SPEC of PostgreSQL's
/// `COPY ... TO` text format: `\b \f \n \r \t \v` and a backslash before
/// any other character, which stands for itself); `None` for a lone
/// backslash at the end.
fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            other => other,
        });
    }
    Some(out)
}

/// Splits one row of `COPY` text into its fields; `None` unless it has
/// exactly `N` fields and ends with its newline.
fn split_fields<'r, const N: usize>(
    text: &'r str,
    unescaped: &mut Vec<String>,
) -> Option<[Field<'r>; N]> {
    let text = text.strip_suffix('\n')?;
    let mut fields = [Field::Null; N];
    let bytes = text.as_bytes();
    // Escapes are rare: one look at the whole row (core's word-at-a-time
    // search), then at a field only when the row has any.
    let any_escape = bytes.contains(&b'\\');
    let (mut n, mut start) = (0, 0);
    loop {
        // Tabs are ASCII, so the positions found are character boundaries.
        let end = find_tab(bytes, start);
        let part = text.get(start..end)?;
        *fields.get_mut(n)? = if part == "\\N" {
            Field::Null
        } else if any_escape && part.contains('\\') {
            unescaped.push(unescape(part)?);
            Field::Unescaped(unescaped.len() - 1)
        } else {
            Field::Text(part)
        };
        n += 1;
        if end == bytes.len() {
            break;
        }
        start = end + 1;
    }
    (n == N).then_some(fields)
}

/// The position of the first tab in `bytes` from `from`, or its length:
/// eight bytes at a time (a row's fields are short, and a byte loop was
/// most of a row's decoding).
fn find_tab(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(word) = bytes.get(i..i + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        // Tabs become zero bytes; the lowest byte flagged is the first
        // zero byte (flags above it may be false, never below).
        let x = u64::from_le_bytes(eight) ^ (ONES * u64::from(b'\t'));
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return i + (zeros.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|b| *b != b'\t') {
        i += 1;
    }
    i.min(bytes.len())
}

/// Decodes the rows of [`Source::energy_rows`], reusing what it can from
/// one row to the next.
#[derive(Debug, Default)]
pub struct EnergyDecoder {
    /// This row's fields that held escapes, unescaped.
    unescaped: Vec<String>,
    /// The last date decoded: a day's rows come together.
    day: Option<(i32, NaiveDate)>,
}

impl EnergyDecoder {
    /// Decodes one row of [`Source::energy_rows`], borrowing its text.
    pub fn energy_row<'r>(
        &'r mut self,
        line: &'r [u8],
        family: Family,
    ) -> Result<EnergyRow<'r>, SourceError> {
        let bad = |why: &str| SourceError::Query {
            what: format!("decoding a row of {}", family.table()),
            source: sqlx::Error::Decode(why.to_string().into()),
        };
        let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
        self.unescaped.clear();
        let fields: [Field<'r>; ENERGY_COLUMNS] = split_fields(text, &mut self.unescaped)
            .ok_or_else(|| bad("not a row of the query's columns"))?;
        let unescaped: &'r [String] = &self.unescaped;
        let get = |i: usize| match fields[i] {
            Field::Null => None,
            Field::Text(t) => Some(t),
            Field::Unescaped(k) => Some(unescaped[k].as_str()),
        };
        let text_of = |i: usize| get(i).ok_or_else(|| bad("unexpected NULL"));
        let int_of = |i: usize| {
            get(i)
                .map(|t| t.parse::<i64>().map_err(|_| bad("not an integer")))
                .transpose()
        };
        let date = match int_of(2)? {
            None => None,
            Some(days) => {
                let days = i32::try_from(days).map_err(|_| bad("date out of range"))?;
                match self.day {
                    Some((d, date)) if d == days => Some(date),
                    _ => {
                        let date = days
                            .checked_add(UNIX_EPOCH_DAYS_FROM_CE)
                            .and_then(NaiveDate::from_num_days_from_ce_opt)
                            .ok_or_else(|| bad("date out of range"))?;
                        self.day = Some((days, date));
                        Some(date)
                    }
                }
            }
        };
        Ok(EnergyRow {
            id: text_of(0)?,
            pdl: text_of(1)?,
            date,
            granularity: text_of(3)?,
            interval_start: get(4),
            value: int_of(5)?.ok_or_else(|| bad("unexpected NULL"))?,
            quality: get(6).and_then(quality_from_json),
            updated_at: int_of(7)?,
            interval: get(8),
            placeholder: get(9) == Some("t"),
        })
    }
}

/// How many rows the `COPY` task hands over at a time.
const COPY_CHUNK: usize = 256;

/// What the `COPY` task hands over.
enum CopyChunk {
    Rows(Vec<Bytes>),
    /// Every row was handed over.
    End,
}

/// The rows of an energy table, as `COPY` text: one [`Bytes`] a row, to
/// decode with [`EnergyDecoder::energy_row`].
///
/// A task reads the `COPY` on a connection of its own and hands the rows
/// over in chunks. A connection whose `COPY` did not run to its end (an
/// error, or these rows dropped before the last) is closed, never returned
/// to the pool: sqlx would hand it out with the rest of the `COPY` still
/// unread.
pub struct EnergyRows {
    rx: mpsc::Receiver<Result<CopyChunk, SourceError>>,
    rows: std::vec::IntoIter<Bytes>,
    table: &'static str,
    ended: bool,
}

impl EnergyRows {
    /// The next row, `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Bytes>, SourceError> {
        loop {
            if let Some(row) = self.rows.next() {
                return Ok(Some(row));
            }
            if self.ended {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(Ok(CopyChunk::Rows(rows))) => self.rows = rows.into_iter(),
                Some(Ok(CopyChunk::End)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                // The task ended without saying so: the rows are not all
                // there, which must not pass for the end of the table.
                None => {
                    return Err(SourceError::Query {
                        what: format!("reading {}", self.table),
                        source: sqlx::Error::WorkerCrashed,
                    })
                }
            }
        }
    }
}

/// A pooled connection that is closed rather than returned to the pool
/// unless its `COPY` ran to its end.
struct CopyConnection {
    conn: PoolConnection<Postgres>,
    clean: bool,
}

impl Drop for CopyConnection {
    fn drop(&mut self) {
        if !self.clean {
            self.conn.close_on_drop();
        }
    }
}

/// Runs `sql`, a `COPY ... TO STDOUT`, and hands its rows to `tx`.
async fn copy_out(
    pool: PgPool,
    sql: String,
    table: &'static str,
    tx: mpsc::Sender<Result<CopyChunk, SourceError>>,
) {
    let result: Result<(), sqlx::Error> = async {
        let mut conn = CopyConnection {
            conn: pool.acquire().await?,
            clean: false,
        };
        let mut stream = conn.conn.copy_out_raw(&sql).await?;
        let mut rows = Vec::with_capacity(COPY_CHUNK);
        while let Some(row) = stream.try_next().await? {
            rows.push(row);
            if rows.len() == COPY_CHUNK {
                let full = std::mem::replace(&mut rows, Vec::with_capacity(COPY_CHUNK));
                if tx.send(Ok(CopyChunk::Rows(full))).await.is_err() {
                    // Dropped before the end: the connection is closed.
                    return Ok(());
                }
            }
        }
        drop(stream);
        // The COPY ran to its end: the connection is ready for another query.
        conn.clean = true;
        if !rows.is_empty() && tx.send(Ok(CopyChunk::Rows(rows))).await.is_err() {
            return Ok(());
        }
        let _ = tx.send(Ok(CopyChunk::End)).await;
        Ok(())
    }
    .await;
    if let Err(source) = result {
        let _ = tx
            .send(Err(SourceError::query(format!("reading {table}"))(source)))
            .await;
    }
}

impl Source {
    /// The rows of an energy table (those of the PDLs `only` when given),
    /// ordered by PDL so that the series of one PDL can be built and sent
    /// before the next PDL is read; decode each with
    /// [`EnergyDecoder::energy_row`].
    pub fn energy_rows(&self, family: Family, only: Option<&[String]>) -> EnergyRows {
        let table = match family {
            Family::Production => "production_data",
            _ => "consumption_data",
        };
        let sql = energy_sql(table, only);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(copy_out(self.pool.clone(), sql, table, tx));
        EnergyRows {
            rx,
            rows: Vec::new().into_iter(),
            table,
            ended: false,
        }
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

    /// Each PDL's `pdls.subscribed_power` (kVA) where MyElectricalData
    /// records one; nothing when the table or its column is absent.
    pub async fn subscribed_powers(&self) -> Result<Vec<(String, i64)>, SourceError> {
        let has_column: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                             WHERE attrelid = to_regclass('pdls') AND attname = 'subscribed_power'
                               AND NOT attisdropped)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(SourceError::query("looking for pdls.subscribed_power"))?;
        if !has_column {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "SELECT usage_point_id::text, subscribed_power::bigint FROM pdls
              WHERE subscribed_power IS NOT NULL AND usage_point_id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(SourceError::query("reading pdls.subscribed_power"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(line: &str) -> Result<String, SourceError> {
        let mut d = EnergyDecoder::default();
        let row = d.energy_row(line.as_bytes(), Family::Consumption)?;
        Ok(format!("{row:?}"))
    }

    #[test]
    fn a_copy_row_is_read_as_the_row_it_stands_for() {
        let mut d = EnergyDecoder::default();
        let line = "a1\t12345678901234\t19737\tdetailed\t13:30\t541\t\"BRUT\"\t\\N\tPT30M\tf\n";
        let row = d.energy_row(line.as_bytes(), Family::Consumption).unwrap();
        assert_eq!(row.id, "a1");
        assert_eq!(row.pdl, "12345678901234");
        assert_eq!(row.date, NaiveDate::from_ymd_opt(2024, 1, 15));
        assert_eq!(row.granularity, "detailed");
        assert_eq!(row.interval_start, Some("13:30"));
        assert_eq!(row.value, 541);
        assert_eq!(row.quality.as_deref(), Some("BRUT"));
        assert_eq!(row.updated_at, None);
        assert_eq!(row.interval, Some("PT30M"));
        assert!(!row.placeholder);

        let line = "d\\\\1\\t2\t12345678901234\t-719162\tdaily\t\\N\t0\t\"a\\\\\"b\"\t-1\t\\N\tt\n";
        let row = d.energy_row(line.as_bytes(), Family::Consumption).unwrap();
        assert_eq!(row.id, "d\\1\t2");
        assert_eq!(row.date, NaiveDate::from_ymd_opt(1, 1, 1));
        assert_eq!(row.interval_start, None);
        assert_eq!(row.quality.as_deref(), Some("a\"b"));
        assert_eq!(row.updated_at, Some(-1));
        assert_eq!(row.interval, None);
        assert!(row.placeholder);

        let line = "x\t12345678901234\t\\N\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N\n";
        let row = d.energy_row(line.as_bytes(), Family::Consumption).unwrap();
        assert_eq!(
            (row.date, row.quality, row.placeholder),
            (None, None, false)
        );
    }

    #[test]
    fn escapes_are_undone_as_copy_writes_them() {
        assert_eq!(
            unescape("a\\\\b\\tc\\nd\\re\\bf\\fg\\vh\\Ni\u{1}").as_deref(),
            Some("a\\b\tc\nd\re\u{8}f\u{c}g\u{b}hNi\u{1}")
        );
        assert_eq!(unescape("a\\"), None);
    }

    #[test]
    fn anything_but_a_row_of_the_columns_is_an_error_not_a_panic() {
        for line in [
            "",
            "\n",
            "a\tb\n",
            "a\t12345678901234\t1\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N",
            "a\t12345678901234\t1\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N\tx\n",
            "a\t12345678901234\tx\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N\n",
            "a\t12345678901234\t99999999999\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N\n",
            "a\t12345678901234\t1\tdaily\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n",
            "\\N\t12345678901234\t1\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N\n",
            "a\\\t12345678901234\t1\tdaily\t\\N\t5\t\\N\t\\N\t\\N\t\\N\n",
        ] {
            assert!(decode(line).is_err(), "{line:?}");
        }
        let mut d = EnergyDecoder::default();
        assert!(d.energy_row(b"\xff\t\n", Family::Production).is_err());
    }

    /// A field as PostgreSQL's `COPY ... TO` text writes it.
    fn copy_escape(field: Option<&str>) -> String {
        let Some(field) = field else {
            return "\\N".to_string();
        };
        field
            .chars()
            .map(|c| match c {
                '\\' => "\\\\".to_string(),
                '\u{8}' => "\\b".to_string(),
                '\u{c}' => "\\f".to_string(),
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                '\u{b}' => "\\v".to_string(),
                c => c.to_string(),
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn a_row_as_copy_writes_it_decodes_to_its_values(
            id in crate::model::arbitrary::text("a-z0-9\\\\\t\n\r\u{8}\u{b}\u{c}"),
            pdl in crate::model::arbitrary::text("0-9\\\\\t"),
            days in proptest::option::of(-719_162i32..=2_932_896),
            granularity in crate::model::arbitrary::text("a-z\\\\\t"),
            start in proptest::option::of(crate::model::arbitrary::text("0-9:\\\\\t")),
            value in proptest::prelude::any::<i64>(),
            quality in proptest::option::of(crate::model::arbitrary::json("A-Z\"\\\\\\\t\n")),
            updated_at in proptest::option::of(proptest::prelude::any::<i64>()),
            interval in proptest::option::of(crate::model::arbitrary::text("PTHM0-9\\\\\t")),
            placeholder in proptest::option::of(proptest::prelude::any::<bool>()),
        ) {
            let quality_text = quality.as_ref().map(|q| q.to_string());
            let fields = [
                Some(id.clone()),
                Some(pdl.clone()),
                days.map(|d| d.to_string()),
                Some(granularity.clone()),
                start.clone(),
                Some(value.to_string()),
                quality_text.clone(),
                updated_at.map(|u| u.to_string()),
                interval.clone(),
                placeholder.map(|p| if p { "t" } else { "f" }.to_string()),
            ];
            let line: Vec<String> = fields.iter().map(|f| copy_escape(f.as_deref())).collect();
            let line = line.join("\t") + "\n";
            let mut d = EnergyDecoder::default();
            let row = d.energy_row(line.as_bytes(), Family::Consumption);
            let row = row.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{line:?}: {e}")))?;
            proptest::prop_assert_eq!(row.id, id.as_str());
            proptest::prop_assert_eq!(row.pdl, pdl.as_str());
            let want_date = days.map(|d| NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(i64::from(d)));
            proptest::prop_assert_eq!(row.date, want_date);
            proptest::prop_assert_eq!(row.granularity, granularity.as_str());
            proptest::prop_assert_eq!(row.interval_start, start.as_deref());
            proptest::prop_assert_eq!(row.value, value);
            proptest::prop_assert_eq!(row.quality.as_deref(), quality.as_ref().and_then(|q| q.as_str()));
            proptest::prop_assert_eq!(row.updated_at, updated_at);
            proptest::prop_assert_eq!(row.interval, interval.as_deref());
            proptest::prop_assert_eq!(row.placeholder, placeholder == Some(true));
        }

        #[test]
        fn fields_are_what_splitting_on_tabs_gives(
            parts in proptest::collection::vec("[a-z\\\\N\t\u{e9}]{0,12}", 1..14),
        ) {
            let line = parts.join("\t") + "\n";
            let body = &line[..line.len() - 1];
            let want: Vec<Option<String>> = body
                .split('\t')
                .map(|p| if p == "\\N" { None } else { unescape(p) })
                .collect();
            let mut unescaped = Vec::new();
            let got = match want.len() {
                3 => split_fields::<3>(&line, &mut unescaped).map(|f| f.to_vec()),
                10 => split_fields::<10>(&line, &mut unescaped).map(|f| f.to_vec()),
                _ => None,
            };
            let bad_escape = body.split('\t').any(|p| p != "\\N" && unescape(p).is_none());
            if want.len() == 3 || want.len() == 10 {
                proptest::prop_assert_eq!(got.is_some(), !bad_escape);
            }
            if let Some(fields) = got {
                let got: Vec<Option<String>> = fields
                    .iter()
                    .map(|f| match f {
                        Field::Null => None,
                        Field::Text(t) => Some(t.to_string()),
                        Field::Unescaped(k) => Some(unescaped[*k].clone()),
                    })
                    .collect();
                proptest::prop_assert_eq!(got, want);
            }
            for tab in 0..line.len() {
                let want = line.as_bytes()[tab..].iter().position(|b| *b == b'\t').map_or(line.len(), |p| tab + p);
                proptest::prop_assert_eq!(find_tab(line.as_bytes(), tab), want);
            }
        }

        #[test]
        fn no_line_makes_the_decoder_panic(line in proptest::prelude::any::<Vec<u8>>()) {
            let mut d = EnergyDecoder::default();
            let _ = d.energy_row(&line, Family::Consumption);
        }
    }
}
