//! The spec's model, written apart from the exporter's code: what
//! VictoriaMetrics should hold, computed straight from PostgreSQL's rows.
//! Only the local-time conversion is shared (`calendar`, pinned by its own
//! unit tests against hand-computed instants).

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Europe::Paris;
use myelectricaldata_vm_exporter::model::calendar::{day_millis, local_millis};
use sqlx::{PgPool, Row};

/// Series labels (with `__name__`) → samples (timestamp, value in
/// thousandths, or millionths for the euro series: see [`scale_of`]) sorted
/// by timestamp.
pub type Mirror = BTreeMap<BTreeMap<String, String>, Vec<(i64, i64)>>;

/// The load curve by (pdl, local date of the true start), then true start
/// (Unix ms): (length, local start minute, W × minutes).
type Curve = BTreeMap<(String, NaiveDate), BTreeMap<i64, (i64, i64, i64)>>;

/// Where a load-curve row's interval really starts (SPEC §2), worked out
/// apart from the exporter's `calendar`: the end Enedis sent is the label
/// plus the length on the wall clock; of the instants whose Paris wall
/// clock shows it (Paris is UTC+1 or UTC+2) the later counts, and where none
/// does (a label the client never writes) the offset after the spring change,
/// +2. The start is that end less the length.
fn true_start(date: NaiveDate, label: NaiveTime, length: i64) -> i64 {
    let end = date.and_time(label) + Duration::minutes(length);
    let as_utc = end.and_utc().timestamp_millis();
    let shows = |ms: &i64| Paris.timestamp_millis_opt(*ms).unwrap().naive_local() == end;
    let end_ms = [as_utc - 3_600_000, as_utc - 7_200_000]
        .into_iter()
        .filter(shows)
        .max()
        .unwrap_or(as_utc - 7_200_000);
    end_ms - length * 60_000
}

/// The local date and minute of an instant.
fn local_of(ms: i64) -> (NaiveDate, i64) {
    let t = Paris.timestamp_millis_opt(ms).unwrap().naive_local();
    (t.date(), i64::from(t.hour() * 60 + t.minute()))
}

/// Minutes in an ISO 8601 duration of the forms the client writes.
fn minutes(text: &str) -> Option<i64> {
    let rest = text.strip_prefix("PT")?;
    // PT30M, PT1H, PT1H30M: hours, then minutes.
    let (hours, rest) = match rest.split_once('H') {
        Some((h, m)) => (h.parse::<i64>().ok()?, m),
        None => (0, rest),
    };
    let minutes = match rest {
        "" => 0,
        m => m.strip_suffix('M')?.parse::<i64>().ok()?,
    };
    Some(hours * 60 + minutes)
}

/// Whether a table exists.
async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn labels(
    name: &str,
    pairs: &[(&str, &str)],
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = extra.clone();
    l.insert("__name__".into(), name.into());
    for (k, v) in pairs {
        l.insert((*k).into(), (*v).into());
    }
    l
}

/// Fixed-point units in one of a series' values: millionths for euros
/// (SPEC: costs rounded to 0.000001 €), thousandths for the rest.
pub fn scale_of(name: &str) -> f64 {
    if name.ends_with("_eur") {
        1e6
    } else {
        1e3
    }
}

/// The price grid and subscribed power costs are computed with, read apart
/// from the exporter's parser: (from, option, kva, item, millionths of a euro).
#[derive(Debug, Clone)]
pub struct Pricing {
    rows: Vec<(NaiveDate, String, Option<i64>, String, i64)>,
    /// `VICTORIAMETRICS_SUBSCRIBED_KVA`, when the exporter runs with it.
    pub kva: Option<i64>,
}

impl Pricing {
    /// The grid the exporter ships, each PDL at its `pdls.subscribed_power`.
    pub fn shipped() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/prices/regulated.csv");
        Self::from_text(&std::fs::read_to_string(path).unwrap(), None)
    }

    /// A grid written as `VICTORIAMETRICS_PRICES_FILE` takes it.
    pub fn from_text(text: &str, kva: Option<i64>) -> Self {
        let rows = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let c: Vec<&str> = l.split(',').map(str::trim).collect();
                (
                    NaiveDate::parse_from_str(c[0], "%Y-%m-%d").unwrap(),
                    c[1].to_string(),
                    (!c[2].is_empty()).then(|| c[2].parse().unwrap()),
                    c[3].to_string(),
                    (c[4].parse::<f64>().unwrap() * 1e6).round() as i64,
                )
            })
            .collect();
        Self { rows, kva }
    }

    /// The price in force: the latest `from` on or before `date` for that
    /// power or every power, the power's own row on a tie.
    pub fn price(&self, option: &str, item: &str, kva: i64, date: NaiveDate) -> Option<i64> {
        self.rows
            .iter()
            .filter(|(from, o, k, i, _)| {
                o == option && i == item && *from <= date && k.is_none_or(|k| k == kva)
            })
            .max_by_key(|(from, _, k, _, _)| (*from, k.is_some()))
            .map(|r| r.4)
    }
}

/// What the spec says VictoriaMetrics holds for this database, at `now_ms`.
pub async fn expected(pool: &PgPool, extra: &BTreeMap<String, String>, now_ms: i64) -> Mirror {
    expected_with(pool, extra, now_ms, false, &Pricing::shipped()).await
}

/// [`expected`] for an exporter run with its own price grid or power.
pub async fn expected_priced(
    pool: &PgPool,
    extra: &BTreeMap<String, String>,
    now_ms: i64,
    pricing: &Pricing,
) -> Mirror {
    expected_with(pool, extra, now_ms, false, pricing).await
}

/// What releases before the daylight-saving fix left in VictoriaMetrics:
/// load-curve samples at their label read with `fold=0`.
pub async fn expected_legacy(
    pool: &PgPool,
    extra: &BTreeMap<String, String>,
    now_ms: i64,
) -> Mirror {
    expected_with(pool, extra, now_ms, true, &Pricing::shipped()).await
}

async fn expected_with(
    pool: &PgPool,
    extra: &BTreeMap<String, String>,
    now_ms: i64,
    legacy: bool,
    pricing: &Pricing,
) -> Mirror {
    let cutoff = now_ms + 2 * 86_400_000 - 3_600_000;
    // A second sample at one timestamp replaces the first: rows are read in
    // the order the exporter reads them, and the later row wins.
    let mut m: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, i64>> = BTreeMap::new();
    let mut add = |l: BTreeMap<String, String>, ts: i64, v: i64| {
        if ts <= cutoff {
            m.entry(l).or_default().insert(ts, v);
        }
    };

    // The load curve of consumption_data, for the tariff periods:
    // (pdl, date) → start minute → (length, mWh).
    let mut curve: Curve = BTreeMap::new();
    for (table, name, power) in [
        (
            "consumption_data",
            "myelectricaldata_consumption_wh",
            "myelectricaldata_consumption_power_w",
        ),
        (
            "production_data",
            "myelectricaldata_production_wh",
            "myelectricaldata_production_power_w",
        ),
    ] {
        // raw_data as text, so that JSON and JSONB columns read alike.
        let rows = sqlx::query(&format!(
            "SELECT usage_point_id, date, granularity::text, interval_start, value, raw_data::text,
                    updated_at, id FROM {table}
              ORDER BY usage_point_id, date, interval_start, updated_at, id"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        // Daily rows by (pdl, date): the one updated last wins.
        let mut daily: BTreeMap<(String, NaiveDate), (Option<String>, i64)> = BTreeMap::new();
        for r in rows {
            let pdl: String = r.get(0);
            let date: NaiveDate = r.get(1);
            let gran: String = r.get(2);
            let start: Option<String> = r.get(3);
            let value: i32 = r.get(4);
            let raw: Option<String> = r.get(5);
            let raw: Option<serde_json::Value> = raw.map(|t| serde_json::from_str(&t).unwrap());
            let field = |k: &str| raw.as_ref().and_then(|j| j.get(k));
            if field("is_placeholder").and_then(|v| v.as_bool()) == Some(true) {
                continue;
            }
            let quality = field("quality")
                .and_then(|q| q.as_str())
                .filter(|q| !q.is_empty())
                .map(str::to_string);
            if gran == "daily" {
                daily.insert((pdl, date), (quality, i64::from(value)));
                continue;
            }
            let mut pairs = vec![("pdl", pdl.as_str()), ("type", "detailed")];
            if let Some(q) = quality.as_deref() {
                pairs.push(("quality", q));
            }
            // A label that is no time of day: a malformed row, skipped.
            let Some(t) = start
                .as_deref()
                .and_then(|s| NaiveTime::parse_from_str(s, "%H:%M").ok())
            else {
                continue;
            };
            let length = field("p")
                .or_else(|| field("interval_length"))
                .and_then(|v| v.as_str())
                .map_or(30, |t| minutes(t).unwrap());
            let ts = if legacy {
                local_millis(Paris, date.and_time(t))
            } else {
                true_start(date, t, length)
            };
            // W × minutes / 60 Wh, in thousandths, rounded half up.
            let milli = (i64::from(value) * length * 1000 * 2 + 60) / 120;
            add(labels(name, &pairs, extra), ts, milli);
            add(labels(power, &pairs, extra), ts, i64::from(value) * 1000);
            if table == "consumption_data" {
                let start = true_start(date, t, length);
                let (day, minute) = local_of(start);
                curve
                    .entry((pdl.clone(), day))
                    .or_default()
                    .insert(start, (length, minute, i64::from(value) * length));
            }
        }
        let mut months: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for ((pdl, date), (quality, value)) in daily {
            let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).unwrap();
            *months
                .entry((pdl.clone(), day_millis(Paris, first)))
                .or_default() += value;
            let mut pairs = vec![("pdl", pdl.as_str()), ("type", "daily")];
            if let Some(q) = quality.as_deref() {
                pairs.push(("quality", q));
            }
            add(
                labels(name, &pairs, extra),
                day_millis(Paris, date),
                value * 1000,
            );
        }
        for ((pdl, ts), sum) in months {
            add(
                labels(name, &[("pdl", &pdl), ("type", "monthly")], extra),
                ts,
                sum * 1000,
            );
        }
    }

    if exists(pool, "max_power_data").await {
        let rows = sqlx::query(
            "SELECT usage_point_id, date, interval_start, value, raw_data::text FROM max_power_data",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        for r in rows {
            let pdl: String = r.get(0);
            let date: NaiveDate = r.get(1);
            let start: Option<String> = r.get(2);
            let value: i32 = r.get(3);
            let raw: Option<String> = r.get(4);
            let raw: Option<serde_json::Value> = raw.map(|t| serde_json::from_str(&t).unwrap());
            if raw.and_then(|j| j.get("is_placeholder").and_then(|v| v.as_bool())) == Some(true) {
                continue;
            }
            let t = start.map_or(NaiveTime::MIN, |s| {
                NaiveTime::parse_from_str(&s, "%H:%M").unwrap()
            });
            add(
                labels("myelectricaldata_max_power_va", &[("pdl", &pdl)], extra),
                local_millis(Paris, date.and_time(t)),
                i64::from(value) * 1000,
            );
        }
    }

    if exists(pool, "zen_flex_days").await {
        let days: Vec<(String, String)> =
            sqlx::query_as("SELECT id::text, day_type::text FROM zen_flex_days")
                .fetch_all(pool)
                .await
                .unwrap();
        for (id, kind) in days {
            let date = NaiveDate::parse_from_str(&id, "%Y-%m-%d").unwrap();
            for t in ["ECO", "SOBRIETE", "BONUS"] {
                add(
                    labels("myelectricaldata_zen_flex_day", &[("day_type", t)], extra),
                    day_millis(Paris, date),
                    i64::from(kind == t) * 1000,
                );
            }
        }
    }

    for (l, ts, milli) in super::meters::expected_meters(pool, pricing).await {
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        add(labels(l[0].1.as_str(), &pairs[1..], extra), ts, milli);
    }

    for (l, ts, milli) in tariff(pool, &curve, pricing).await {
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        add(labels(l[0].1.as_str(), &pairs[1..], extra), ts, milli);
    }

    let pdls: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT usage_point_id FROM consumption_data")
            .fetch_all(pool)
            .await
            .unwrap();
    let days: Vec<(String, String)> =
        // A colour whatever its case and padding (" red "), as the exporter reads it.
        sqlx::query_as("SELECT id::text, upper(btrim(color::text)) FROM tempo_days ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut used: BTreeMap<(i32, String), i64> = BTreeMap::new();
    for (id, color) in days {
        let date = NaiveDate::parse_from_str(&id, "%Y-%m-%d").unwrap();
        let season = if date.month() >= 9 {
            date.year()
        } else {
            date.year() - 1
        };
        *used.entry((season, color.clone())).or_default() += 1;
        let leap = NaiveDate::from_ymd_opt(season + 1, 2, 29).is_some();
        let ts = day_millis(Paris, date);
        for pdl in &pdls {
            for (en, fr, quota) in [
                ("BLUE", "BLEU", if leap { 301 } else { 300 }),
                ("WHITE", "BLANC", 43),
                ("RED", "ROUGE", 22),
            ] {
                add(
                    labels(
                        "myelectricaldata_tempo_color",
                        &[("pdl", pdl), ("color", fr)],
                        extra,
                    ),
                    ts,
                    i64::from(color == en) * 1000,
                );
                let left =
                    (quota - used.get(&(season, en.to_string())).copied().unwrap_or(0)).max(0);
                add(
                    labels(
                        "myelectricaldata_tempo_remaining",
                        &[("pdl", pdl), ("color", &en.to_lowercase())],
                        extra,
                    ),
                    ts,
                    left * 1000,
                );
            }
        }
    }

    let rows = sqlx::query("SELECT periode, dvalue, \"values\"::text FROM ecowatt")
        .fetch_all(pool)
        .await
        .unwrap();
    for r in rows {
        let periode: chrono::NaiveDateTime = r.get(0);
        let dvalue: i32 = r.get(1);
        let values: String = r.get(2);
        let values: serde_json::Value = serde_json::from_str(&values).unwrap();
        // Midnight is a local date as it stands; another time is a UTC instant.
        let date = if periode.time() == NaiveTime::MIN {
            periode.date()
        } else {
            periode.and_utc().with_timezone(&Paris).date_naive()
        };
        let day = day_millis(Paris, date);
        let next = day_millis(Paris, date + Duration::days(1));
        // A level that is none of 0 to 3: the row is skipped.
        if !(0..=3).contains(&dvalue) {
            continue;
        }
        add(
            labels(
                "myelectricaldata_ecowatt_level",
                &[("region", "france")],
                extra,
            ),
            day,
            i64::from(dvalue) * 1000,
        );
        // Hourly levels: a list of at most 25 levels 0 to 3, else none (the
        // day's level stands).
        let hourly: Option<Vec<i64>> = values.as_array().filter(|a| a.len() <= 25).and_then(|a| {
            a.iter()
                .map(|v| v.as_i64().filter(|l| (0..=3).contains(l)))
                .collect()
        });
        for (h, v) in hourly.unwrap_or_default().into_iter().enumerate() {
            let ts = day + h as i64 * 3_600_000;
            if ts < next {
                add(
                    labels(
                        "myelectricaldata_ecowatt_hourly_level",
                        &[("region", "france")],
                        extra,
                    ),
                    ts,
                    v * 1000,
                );
            }
        }
    }
    m.into_iter()
        .map(|(l, samples)| (l, samples.into_iter().collect()))
        .collect()
}

/// VictoriaMetrics' export turned into a [`Mirror`], keeping every stored
/// sample (duplicates included) so that the comparison sees them.
pub fn from_export(export: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>>) -> Mirror {
    export
        .into_iter()
        .map(|(l, samples)| {
            let mut s: Vec<(i64, i64)> = samples
                .into_iter()
                .map(|(t, v)| (t, (v * scale_of(&l["__name__"])).round() as i64))
                .collect();
            s.sort();
            (l, s)
        })
        .collect()
}

/// Panics with a readable difference when the two mirrors differ.
pub fn assert_same(actual: &Mirror, expected: &Mirror, when: &str) {
    let mut problems = Vec::new();
    for (l, want) in expected {
        match actual.get(l) {
            None => problems.push(format!("missing series {l:?} ({} samples)", want.len())),
            Some(got) if got != want => {
                let dups = got.windows(2).filter(|w| w[0].0 == w[1].0).count();
                let wrong: Vec<_> = want.iter().filter(|s| !got.contains(s)).take(3).collect();
                let extra: Vec<_> = got.iter().filter(|s| !want.contains(s)).take(3).collect();
                problems.push(format!(
                    "series {l:?}: {} samples, want {}; {dups} duplicate timestamps; missing {wrong:?}; unexpected {extra:?}",
                    got.len(),
                    want.len()
                ));
            }
            _ => {}
        }
    }
    for l in actual.keys().filter(|l| !expected.contains_key(*l)) {
        problems.push(format!("unexpected series {l:?}"));
    }
    assert!(
        problems.is_empty(),
        "{when}: VictoriaMetrics differs from the spec's model:\n{}",
        problems.join("\n")
    );
}

/// How many samples came inside VictoriaMetrics' future window between two
/// instants (EcoWatt forecasts enter it hour by hour): what an export with
/// nothing else changed may still write.
pub async fn released(
    pool: &PgPool,
    extra: &BTreeMap<String, String>,
    since_ms: i64,
    until_ms: i64,
) -> f64 {
    let count = |m: Mirror| m.values().map(Vec::len).sum::<usize>();
    let before = count(expected(pool, extra, since_ms).await);
    let after = count(expected(pool, extra, until_ms).await);
    after.saturating_sub(before) as f64
}

/// Asserts that an export which started at or after `since_ms` and has
/// ended left VictoriaMetrics as the model computes it at some instant of
/// that run: an hour of EcoWatt forecast may have entered the window meanwhile.
pub async fn assert_exported(
    pool: &PgPool,
    extra: &BTreeMap<String, String>,
    since_ms: i64,
    actual: &Mirror,
    when: &str,
) {
    if *actual == expected(pool, extra, since_ms).await {
        return;
    }
    let now = chrono::Utc::now().timestamp_millis();
    assert_same(actual, &expected(pool, extra, now).await, when);
}

/// Off-peak ranges (start, end) in minutes found in the client's
/// `offpeak_hours` JSON text: `H:MM-H:MM` once every `h`/`H` is read as `:`,
/// and `{"start", "end"}` objects.
fn ranges_in(json: &str) -> Vec<(i64, i64)> {
    let objects = json
        .replace(char::is_whitespace, "")
        .replace(r#"{"start":""#, "")
        .replace(r#"","end":""#, "-");
    let text = objects.replace(['h', 'H'], ":");
    let clock = |s: &str| -> Option<i64> {
        let (h, m) = s.split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60).then_some(h * 60 + m)
    };
    text.split(|c: char| !(c.is_ascii_digit() || c == ':' || c == '-'))
        .filter_map(|token| {
            let (a, b) = token.split_once('-')?;
            Some((clock(a)?, clock(b)?))
        })
        .collect()
}

/// The samples of the tariff-period series (SPEC §3, "Tariff periods"),
/// their costs and the price grid's ("Costs"): (labels with the name first,
/// timestamp, mWh or millionths of a euro).
async fn tariff(
    pool: &PgPool,
    curve: &Curve,
    pricing: &Pricing,
) -> Vec<(Vec<(&'static str, String)>, i64, i64)> {
    // Subscribed powers: the setting, else pdls.subscribed_power, else 6.
    let mut powers: BTreeMap<String, i64> = BTreeMap::new();
    let has_power: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                         WHERE table_name = 'pdls' AND column_name = 'subscribed_power')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    if has_power {
        let rows: Vec<(String, Option<i32>)> =
            sqlx::query_as("SELECT usage_point_id, subscribed_power FROM pdls")
                .fetch_all(pool)
                .await
                .unwrap();
        for (pdl, kva) in rows {
            if let Some(k) = kva
                .map(i64::from)
                .filter(|k| [3, 6, 9, 12, 15, 18, 24, 30, 36].contains(k))
            {
                powers.insert(pdl, k);
            }
        }
    }
    let kva_of = |pdl: &str| pricing.kva.unwrap_or(powers.get(pdl).copied().unwrap_or(6));
    // n / d rounded half up (n ≥ 0).
    let round = |n: i128, d: i128| ((n + d / 2) / d) as i64;
    let cost = |parts: &[(i64, i64)]| {
        round(
            parts
                .iter()
                .map(|(mwh, price)| i128::from(*mwh) * i128::from(*price))
                .sum(),
            1_000_000,
        )
    };
    let cost_labels = |pdl: &str, option: &str, part: &str| {
        vec![
            ("__name__", "myelectricaldata_cost_eur".to_string()),
            ("pdl", pdl.to_string()),
            ("option", option.to_string()),
            ("part", part.to_string()),
        ]
    };
    // Off-peak hours: contract_data, then pdls, then 22:00-06:00.
    let mut offpeak: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for table in ["contract_data", "pdls"] {
        if !exists(pool, table).await {
            continue;
        }
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
            "SELECT usage_point_id, offpeak_hours::text FROM {table}"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        for (pdl, json) in rows {
            let ranges = ranges_in(json.as_deref().unwrap_or(""));
            if !ranges.is_empty() {
                offpeak.entry(pdl).or_insert(ranges);
            }
        }
    }
    let colours: BTreeMap<NaiveDate, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT id::text, upper(btrim(color::text)) FROM tempo_days",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, c)| (id.parse().unwrap(), c))
    .collect();
    let in_range = |m: i64, (a, b): (i64, i64)| {
        if a < b {
            a <= m && m < b
        } else {
            m >= a || m < b
        }
    };
    // The true starts of the intervals of `date` the client can hold at
    // `length` minutes: each real interval of the day is labelled by its
    // end's wall-clock time less the length, and of two with one label the
    // later stays.
    let holdable = |date: NaiveDate, length: i64| -> Vec<i64> {
        let (from, to) = (
            day_millis(Paris, date),
            day_millis(Paris, date + Duration::days(1)),
        );
        let mut by_label: BTreeMap<chrono::NaiveDateTime, i64> = BTreeMap::new();
        let mut s = from;
        while s < to {
            let end = Paris
                .timestamp_millis_opt(s + length * 60_000)
                .unwrap()
                .naive_local();
            by_label.insert(end - Duration::minutes(length), s);
            s += length * 60_000;
        }
        let mut kept: Vec<i64> = by_label.into_values().collect();
        kept.sort();
        kept
    };
    // The rows of (pdl, date) starting in [from, to) (local minutes) when
    // they are exactly those the client can hold there, at one length: (W ×
    // minutes, local minute) each.
    let part = |pdl: &str, date: NaiveDate, from: i64, to: i64| -> Option<(i64, Vec<(i64, i64)>)> {
        let rows = curve.get(&(pdl.to_string(), date))?;
        let length = rows.values().next()?.0;
        if rows.values().any(|(l, _, _)| *l != length) {
            return None;
        }
        let inside = |ts: &i64| (from..to).contains(&local_of(*ts).1);
        let want: Vec<i64> = holdable(date, length).into_iter().filter(inside).collect();
        let got: Vec<(i64, i64)> = rows
            .iter()
            .filter(|(ts, _)| inside(ts))
            .map(|(_, (_, m, wm))| (*m, *wm))
            .collect();
        let got_ts: Vec<i64> = rows.keys().copied().filter(inside).collect();
        (got_ts == want).then_some((length, got))
    };
    // W × minutes to mWh, rounded half up once.
    let milli = |wm: i64| (wm * 2000 + 60) / 120;
    let mut out = Vec::new();
    for (pdl, date) in curve.keys() {
        let ts = day_millis(Paris, *date);
        if let Some((_, rows)) = part(pdl, *date, 0, 1440) {
            let ranges = offpeak.get(pdl).cloned().unwrap_or(vec![(1320, 360)]);
            let hc: i64 = rows
                .iter()
                .filter(|(m, _)| ranges.iter().any(|r| in_range(*m, *r)))
                .map(|(_, e)| e)
                .sum();
            let all: i64 = rows.iter().map(|(_, e)| e).sum();
            for (period, v) in [("HP", milli(all - hc)), ("HC", milli(hc))] {
                out.push((
                    vec![
                        (
                            "__name__",
                            "myelectricaldata_consumption_period_wh".to_string(),
                        ),
                        ("pdl", pdl.clone()),
                        ("period", period.to_string()),
                    ],
                    ts,
                    v,
                ));
            }
            let kva = kva_of(pdl);
            // An option is offered at a power on a day when its monthly
            // subscription for that power is in force: else no sample of it.
            let price = |option: &str, item: &str| {
                pricing.price(option, "subscription_month", kva, *date)?;
                pricing.price(option, item, kva, *date)
            };
            if let Some(p) = price("BASE", "base") {
                out.push((
                    cost_labels(pdl, "BASE", "energy"),
                    ts,
                    cost(&[(milli(all), p)]),
                ));
            }
            if let (Some(hp), Some(hcp)) = (price("HC_HP", "hp"), price("HC_HP", "hc")) {
                let c = cost(&[(milli(all - hc), hp), (milli(hc), hcp)]);
                out.push((cost_labels(pdl, "HC_HP", "energy"), ts, c));
            }
            let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).unwrap();
            let days = (first + chrono::Months::new(1) - first).num_days() as i128;
            for option in ["BASE", "HC_HP", "TEMPO"] {
                if let Some(month) = price(option, "subscription_month") {
                    let c = round(i128::from(month), days);
                    out.push((cost_labels(pdl, option, "subscription"), ts, c));
                }
            }
        }
        let colour = match colours.get(date).map(String::as_str) {
            Some("BLUE") => "BLEU",
            Some("WHITE") => "BLANC",
            Some("RED") => "ROUGE",
            _ => continue,
        };
        let (Some((la, evening)), Some((lb, morning))) = (
            part(pdl, *date, 360, 1440),
            part(pdl, *date + Duration::days(1), 0, 360),
        ) else {
            continue;
        };
        if la != lb {
            continue;
        }
        let hp: i64 = evening
            .iter()
            .filter(|(m, _)| *m < 1320)
            .map(|(_, e)| e)
            .sum();
        let hc: i64 = evening.iter().chain(&morning).map(|(_, e)| e).sum::<i64>() - hp;
        let en = match colour {
            "BLEU" => "blue",
            "BLANC" => "white",
            _ => "red",
        };
        let kva = kva_of(pdl);
        // The hours of the next date (00:00-06:00) at the prices in force
        // on that date: their energy rounded once, the rest of the
        // off-peak energy at the Tempo day's date's prices.
        let next = *date + Duration::days(1);
        let early = milli(morning.iter().map(|(_, e)| e).sum());
        if let (Some(_), Some(php), Some(phc), Some(phc_next)) = (
            pricing.price("TEMPO", "subscription_month", kva, *date),
            pricing.price("TEMPO", &format!("{en}_hp"), kva, *date),
            pricing.price("TEMPO", &format!("{en}_hc"), kva, *date),
            pricing.price("TEMPO", &format!("{en}_hc"), kva, next),
        ) {
            let c = cost(&[
                (milli(hp), php),
                (milli(hc) - early, phc),
                (early, phc_next),
            ]);
            out.push((cost_labels(pdl, "TEMPO", "energy"), ts, c));
        }
        for (period, v) in [("HP", milli(hp)), ("HC", milli(hc))] {
            out.push((
                vec![
                    (
                        "__name__",
                        "myelectricaldata_tempo_consumption_wh".to_string(),
                    ),
                    ("pdl", pdl.clone()),
                    ("color", colour.to_string()),
                    ("period", period.to_string()),
                ],
                ts,
                v,
            ));
        }
    }
    // The grid itself: one series per option, power and item.
    for (from, option, kva, item, micro) in &pricing.rows {
        let mut l = vec![
            ("__name__", "myelectricaldata_price_eur".to_string()),
            ("option", option.clone()),
        ];
        if let Some(k) = kva {
            l.push(("kva", k.to_string()));
        }
        l.push(("item", item.clone()));
        out.push((l, day_millis(Paris, *from), *micro));
    }
    out
}
