//! `check`: "test the connection", as a readable checklist.

use std::time::Duration;

use crate::config::{Auth, Config, SslMode};
use crate::model::costs::{KvaBook, KvaOrigin};
use crate::model::prices::{powers_listed, PriceOption, DEFAULT_KVA};
use crate::model::{Table, TABLES as TABLES_READ};
use crate::source::{Source, TlsRefusal};
use crate::vm::Sink;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All is well.
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// Does not work.
    Fail,
    /// Not tried: an earlier check failed.
    Skip,
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Item {
    /// The outcome.
    pub status: Status,
    /// What is checked, the same words whatever the outcome.
    pub check: &'static str,
    /// What was found.
    pub found: String,
    /// What to do about a failure or a warning.
    pub fix: Option<String>,
}

const PG: &str = "PostgreSQL reachable";
const PG_TLS: &str = "TLS to PostgreSQL";
const TABLES: &str = "MyElectricalData tables present";
const LOCK: &str = "Export lock";
const OFFPEAK: &str = "Off-peak hours of each PDL (tariff periods)";
const METERS: &str = "Each meter: name, option, power (costs)";
const PRICES: &str = "Price grid in force (costs)";
const SKIPPED: &str = "Rows skipped when each meter was last read";
const VM: &str = "VictoriaMetrics reachable";
const TLS: &str = "TLS to VictoriaMetrics";
const CREDENTIALS: &str = "Credentials accepted";
const READ_BACK: &str = "A sample written and read back";
const DELETE: &str = "Series deletion allowed (corrections need it)";
const RETENTION: &str = "Retention covers the history";
const MIRROR: &str = "Mirror verified (read back and compared)";

fn ok(check: &'static str, found: impl Into<String>) -> Item {
    Item {
        status: Status::Ok,
        check,
        found: found.into(),
        fix: None,
    }
}

fn bad(
    status: Status,
    check: &'static str,
    found: impl Into<String>,
    fix: impl Into<String>,
) -> Item {
    Item {
        status,
        check,
        found: found.into(),
        fix: Some(fix.into()),
    }
}

fn skip(check: &'static str, why: &str) -> Item {
    Item {
        status: Status::Skip,
        check,
        found: format!("not tried: {why}"),
        fix: None,
    }
}

/// Runs every check, in order; a check that cannot run after an earlier
/// failure is listed as skipped.
pub async fn run(config: &Config) -> Vec<Item> {
    let mut out = Vec::new();
    let oldest = check_postgres(config, &mut out).await;
    let today = chrono::Utc::now()
        .with_timezone(&config.timezone)
        .date_naive();
    out.push(check_prices(config, today));
    check_victoriametrics(config, oldest, &mut out).await;
    let reachable = |check: &str| {
        out.iter()
            .any(|i| i.check == check && matches!(i.status, Status::Ok | Status::Warn))
    };
    if reachable(TABLES) && reachable(READ_BACK) {
        out.push(check_mirror(config).await);
    } else {
        out.push(skip(
            MIRROR,
            "PostgreSQL's tables or VictoriaMetrics' read-back failed",
        ));
    }
    out
}

/// Every series computed from PostgreSQL, compared with VictoriaMetrics.
async fn check_mirror(config: &Config) -> Item {
    let result = async {
        let source = Source::connect_lazy(&config.database_url)?;
        crate::audit::audit(config, &source, &Sink::new(&config.vm)).await
    }
    .await;
    match result {
        Ok(a) if a.doubled > 0 && a.differing == 0 => bad(
            Status::Warn,
            MIRROR,
            format!(
                "VictoriaMetrics shows every sample twice ({} of {} series): a replicated cluster whose vmselect does not deduplicate",
                a.doubled, a.series
            ),
            "set -dedup.minScrapeInterval=1ms on vmselect (vminsert's -replicationFactor stores each sample on several vmstorage nodes; see docs/cluster.md)",
        ),
        Ok(a) if a.differing == 0 => ok(
            MIRROR,
            format!(
                "{} series and {} samples compared, no difference{}",
                a.series,
                a.samples,
                recent(a.recent)
            ),
        ),
        Ok(a) => bad(
            Status::Warn,
            MIRROR,
            format!(
                "{} of {} series differ from PostgreSQL ({} samples compared){}",
                a.differing,
                a.series,
                a.samples,
                recent(a.recent)
            ),
            "the daemon repairs them at its next full reconciliation (VICTORIAMETRICS_RECONCILE_INTERVAL); `myelectricaldata-vm-exporter once` repairs them now",
        ),
        Err(e @ crate::audit::AuditError::Source(_)) => bad(
            Status::Fail,
            MIRROR,
            e.to_string(),
            "check the database user's rights on the MyElectricalData tables and vm_export_*",
        ),
        Err(e) => bad(
            Status::Fail,
            MIRROR,
            e.to_string(),
            "check that VICTORIAMETRICS_SELECT_URL answers /api/v1/query (a proxy in front must let it through)",
        ),
    }
}

fn recent(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} series written moments ago not shown yet (not counted)")
    }
}

/// PostgreSQL, the tables and the lock; the oldest reading's date.
async fn check_postgres(config: &Config, out: &mut Vec<Item>) -> Option<chrono::NaiveDate> {
    let source = match Source::connect_lazy(&config.database_url) {
        Ok(s) => s,
        Err(e) => {
            out.push(bad(Status::Fail, PG, e.to_string(), "fix DATABASE_URL"));
            out.push(skip(PG_TLS, "no database"));
            out.push(skip(TABLES, "no database"));
            out.push(skip(LOCK, "no database"));
            return None;
        }
    };
    match sqlx::query_scalar::<_, String>("SELECT current_setting('server_version')")
        .fetch_one(source.pool())
        .await
    {
        Ok(v) => {
            out.push(ok(PG, format!("version {v}")));
            out.push(pg_tls_item(config, &source).await);
        }
        Err(e) if TlsRefusal::of(&e).is_some() => {
            let refusal = TlsRefusal::of(&e).unwrap_or(TlsRefusal::ServerWithoutTls);
            out.push(bad(
                Status::Fail,
                PG,
                format!("refused for TLS: {e}"),
                "see the TLS line below",
            ));
            out.push(bad(
                Status::Fail,
                PG_TLS,
                format!("{refusal}; {}", pg_tls_mode(config)),
                refusal.fix(),
            ));
            out.push(skip(TABLES, "PostgreSQL refused the connection"));
            out.push(skip(LOCK, "PostgreSQL refused the connection"));
            return None;
        }
        Err(e) => {
            out.push(skip(PG_TLS, "PostgreSQL unreachable"));
            out.push(bad(
                Status::Fail,
                PG,
                e.to_string(),
                "check DATABASE_URL (host, port, user, password, database) and that PostgreSQL is running",
            ));
            out.push(skip(TABLES, "PostgreSQL unreachable"));
            out.push(skip(LOCK, "PostgreSQL unreachable"));
            return None;
        }
    }
    let mut oldest = None;
    match source.tables_present().await {
        Ok(present) if Table::ALL.iter().all(|t| t.is_optional() || present[*t as usize]) => {
            out.push(ok(TABLES, tables_found(&present)));
            oldest = source.oldest_date().await.ok().flatten();
            out.push(check_offpeak(config, &source).await);
            out.push(check_meters(config, &source).await);
            out.push(check_skipped(&source).await);
        }
        Ok(present) => out.push(bad(
            Status::Fail,
            TABLES,
            format!(
                "missing: {}",
                Table::ALL
                    .iter()
                    .filter(|t| !t.is_optional() && !present[**t as usize])
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "point DATABASE_URL at the MyElectricalData database; for a standalone setup, `myelectricaldata-vm-exporter migrate` creates the tables",
        )),
        Err(e) => out.push(bad(Status::Fail, TABLES, e.to_string(), "check the database user's rights")),
    }
    match source.export_lock_holder().await {
        Ok(None) => out.push(ok(LOCK, "free: no exporter is writing right now")),
        Ok(Some(pid)) => out.push(ok(
            LOCK,
            format!("held by a running exporter (PostgreSQL backend {pid}); it does the exporting, others stand by"),
        )),
        Err(e) => out.push(bad(Status::Warn, LOCK, e.to_string(), "check the database user may read pg_locks")),
    }
    oldest
}

/// What the passes' records say the meters' rows skipped and held back (a
/// PDL whose rows did not change is not read again, so these are what its
/// last read found); a skipped row is a warning.
async fn check_skipped(source: &Source) -> Item {
    let state = crate::state::State::new(source.pool().clone());
    let recorded = match state.recorded_skips().await {
        Ok(r) => r,
        Err(e) => {
            return bad(
                Status::Warn,
                SKIPPED,
                e.to_string(),
                "check the database user may read vm_export_read_skips",
            )
        }
    };
    let mut found = Vec::new();
    let mut warn = false;
    for (family, pdls, skips) in &recorded {
        let tables: Vec<String> = skips.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let mut line = if skips.skipped() > 0 {
            format!(
                "{family}: {} rows in {pdls} PDLs ({})",
                skips.skipped(),
                tables.join(", ")
            )
        } else {
            format!("{family}: no row ({pdls} PDLs)")
        };
        warn |= skips.skipped() > 0;
        if skips.held_back > 0 {
            let at = skips
                .next_held_back
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or_else(String::new, |t| {
                    format!(", the first dated {}", t.format("%Y-%m-%d %H:%M UTC"))
                });
            line.push_str(&format!(
                "; {} samples held back as too far ahead{at}",
                skips.held_back
            ));
        }
        if !skips.first.is_empty() {
            line.push_str(&format!("; first: {}", skips.named()));
        }
        found.push(line);
    }
    if found.is_empty() {
        return ok(SKIPPED, "none recorded");
    }
    if !warn {
        return ok(SKIPPED, found.join(" | "));
    }
    bad(
        Status::Warn,
        SKIPPED,
        found.join(" | "),
        "these rows are not exported: correct or delete them in PostgreSQL (older client releases wrote some); the exporter reads a meter again as soon as one of its rows changes",
    )
}

/// Each PDL's off-peak hours and where they come from; a contract record
/// that names no range is a warning.
async fn check_offpeak(config: &Config, source: &Source) -> Item {
    let read = async {
        Ok::<_, crate::source::SourceError>((
            source.consumption_pdls().await?,
            source.offpeak_records().await?,
        ))
    };
    let (pdls, records) = match read.await {
        Ok(r) => r,
        Err(e) => {
            return bad(
                Status::Warn,
                OFFPEAK,
                e.to_string(),
                "check the database user may read contract_data and pdls",
            )
        }
    };
    let mut report = crate::model::Report::default();
    let book =
        crate::model::tariff::OffPeakBook::new(config.offpeak_hours.clone(), &records, &mut report);
    let found = crate::model::tariff::describe_offpeak(&book, &pdls);
    if report.skipped.is_empty() {
        return ok(OFFPEAK, found);
    }
    let unread: Vec<String> = report
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.row, s.reason))
        .collect();
    bad(
        Status::Warn,
        OFFPEAK,
        format!("{found}; unreadable: {}", unread.join("; ")),
        "set VICTORIAMETRICS_OFFPEAK_HOURS to the contract's off-peak hours (on the bill, or in the Enedis customer area), such as 22:00-06:00",
    )
}

/// Each meter as `myelectricaldata_pdl_info` names it, one line per PDL:
/// its name, its pricing option and its subscribed power, and where each
/// comes from. A PDL priced at the default 6 kVA is a warning (its
/// subscription costs may be wrong), and so is an option the grid does not
/// price (EJP, HC_WEEKEND...: its costs are comparisons only).
async fn check_meters(config: &Config, source: &Source) -> Item {
    let read = async {
        Ok::<_, crate::source::SourceError>((
            source.meter_records().await?,
            source.subscribed_powers().await?,
        ))
    };
    let (meters, records) = match read.await {
        Ok(r) => r,
        Err(e) => {
            return bad(
                Status::Warn,
                METERS,
                e.to_string(),
                "check the database user may read pdls",
            )
        }
    };
    let mut report = crate::model::Report::default();
    let book = KvaBook::new(config.subscribed_kva, &records, &mut report);
    if meters.is_empty() {
        return ok(METERS, "no PDL in consumption_data or production_data yet");
    }
    let filled = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let (mut defaulted, mut unpriced) = (false, Vec::new());
    let lines: Vec<String> = meters
        .iter()
        .map(|m| {
            let name = match filled(&m.name) {
                Some(n) => format!("{n:?} (pdls.name)"),
                None => "no name recorded".to_string(),
            };
            let option = match filled(&m.option) {
                Some(o) if PriceOption::ALL.iter().any(|p| p.label() == o) => {
                    format!("{o} (pdls.pricing_option)")
                }
                Some(o) => {
                    unpriced.push(o.clone());
                    format!("{o} (pdls.pricing_option; not in the price grid)")
                }
                None => "no option recorded".to_string(),
            };
            let (kva, origin) = book.for_pdl(&m.pdl);
            defaulted |= origin == KvaOrigin::Default;
            format!(
                "{}: {name}, {option}, {kva} kVA ({})",
                m.pdl,
                origin.describe()
            )
        })
        .collect();
    let found = lines.join("\n");
    let mut fixes = Vec::new();
    if defaulted {
        fixes.push(format!(
            "set VICTORIAMETRICS_SUBSCRIBED_KVA to the contract's power (on the bill: {}), or record it in MyElectricalData: subscriptions are priced at {DEFAULT_KVA} kVA meanwhile",
            powers_listed()
        ));
    }
    if !unpriced.is_empty() {
        unpriced.sort();
        unpriced.dedup();
        fixes.push(format!(
            "{} has no regulated price in the grid: the costs of BASE, HC_HP and TEMPO are what those options would have cost, not the bill",
            unpriced.join(", ")
        ));
    }
    if fixes.is_empty() {
        return ok(METERS, found);
    }
    bad(Status::Warn, METERS, found, fixes.join("; "))
}

/// Which grid prices the costs and its latest change; a change more than
/// seven months old is a warning, as regulated prices change on 1 February
/// and 1 August.
pub fn check_prices(config: &Config, today: chrono::NaiveDate) -> Item {
    let grid = &config.prices;
    let which = match &config.prices_file {
        Some(path) => format!("{} (VICTORIAMETRICS_PRICES_FILE)", path.display()),
        None => "the shipped grid (EDF's regulated tariffs)".to_string(),
    };
    let Some(latest) = grid.latest_change() else {
        return bad(
            Status::Warn,
            PRICES,
            format!("{which} holds no price: no cost is computed"),
            "add prices to the file, or unset VICTORIAMETRICS_PRICES_FILE to use the shipped grid",
        );
    };
    let found = format!(
        "{which}, {} prices, latest change {latest}",
        grid.rows().len()
    );
    let stale = latest
        .checked_add_months(chrono::Months::new(7))
        .is_some_and(|limit| limit < today);
    if !stale {
        return ok(PRICES, found);
    }
    bad(
        Status::Warn,
        PRICES,
        format!("{found}, more than seven months ago: a regulated change (1 February, 1 August) was probably missed"),
        "update the exporter, or save `myelectricaldata-vm-exporter prices` to a file, add the new prices and set VICTORIAMETRICS_PRICES_FILE to it",
    )
}

/// The tables found: the required ones, then each optional one found or
/// skipped.
fn tables_found(present: &[bool; TABLES_READ]) -> String {
    let (optional, required): (Vec<Table>, Vec<Table>) =
        Table::ALL.into_iter().partition(|t| t.is_optional());
    let required: Vec<&str> = required.iter().map(|t| t.name()).collect();
    let optional: Vec<String> = optional
        .into_iter()
        .map(|t| match (present[t as usize], t.holds_contracts()) {
            (true, _) => format!("{} (found)", t.name()),
            (false, true) => format!("{} (absent: off-peak hours from elsewhere)", t.name()),
            (false, false) => format!("{} (absent, skipped until it appears)", t.name()),
        })
        .collect();
    format!("{}; optional: {}", required.join(", "), optional.join(", "))
}

/// VictoriaMetrics: reachable, credentials, a sample written, read back
/// and deleted, retention.
async fn check_victoriametrics(
    config: &Config,
    oldest: Option<chrono::NaiveDate>,
    out: &mut Vec<Item>,
) {
    let sink = Sink::new(&config.vm);
    let now = chrono::Utc::now().timestamp_millis();
    let selector = "{__name__=\"myelectricaldata_exporter_check\"}";
    let line = format!("myelectricaldata_exporter_check 1 {now}\n");
    let skip_rest = |out: &mut Vec<Item>, why: &str| {
        out.push(skip(READ_BACK, why));
        out.push(skip(DELETE, why));
        out.push(skip(RETENTION, why));
    };
    let auth = &config.vm.auth;
    match sink.import(line.into()).await {
        Ok(()) => {
            out.push(ok(VM, format!("{} accepted a sample", sink.import_url())));
            out.push(tls_item(config, None));
            out.push(ok(
                CREDENTIALS,
                match auth {
                    Auth::None => "none set, none asked for".to_string(),
                    _ => format!("{} accepted", auth.describe()),
                },
            ));
        }
        Err(e) if e.is_auth() => {
            out.push(ok(VM, format!("{} answers", sink.import_url())));
            out.push(tls_item(config, None));
            let fix = match auth {
                Auth::None => format!(
                    "VictoriaMetrics asks for credentials: set {}",
                    auth.variables()
                ),
                _ => format!("check {}", auth.variables()),
            };
            out.push(bad(
                Status::Fail,
                CREDENTIALS,
                format!("{} refused: {e}", auth.describe()),
                fix,
            ));
            return skip_rest(out, "credentials refused");
        }
        Err(e) if e.is_tls() => {
            out.push(bad(
                Status::Fail,
                VM,
                e.to_string(),
                "see the TLS line below",
            ));
            out.push(tls_item(config, Some(&e)));
            out.push(skip(CREDENTIALS, "no TLS connection"));
            return skip_rest(out, "no TLS connection");
        }
        Err(e) => {
            let fix = if e.is_retryable() {
                "check VICTORIAMETRICS_URL and that VictoriaMetrics is running"
            } else {
                "VICTORIAMETRICS_URL is the base /api/v1/import/prometheus is appended to: http://host:8428 for a single node, http://vminsert:8480/insert/<tenant>/prometheus for a cluster"
            };
            out.push(bad(Status::Fail, VM, e.to_string(), fix));
            out.push(skip(TLS, "VictoriaMetrics unreachable"));
            out.push(skip(CREDENTIALS, "VictoriaMetrics unreachable"));
            return skip_rest(out, "VictoriaMetrics unreachable");
        }
    }

    // A new series can take several seconds to become searchable, and a
    // narrow window finds it sooner than a search over all time.
    let secs = now / 1000;
    let mut found = false;
    for _ in 0..60 {
        if let Ok(body) = sink.export(selector, secs - 3600, secs + 3600).await {
            if body.contains(&now.to_string()) {
                found = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if found {
        out.push(ok(READ_BACK, "read back from /api/v1/export"));
    } else {
        out.push(bad(
            Status::Fail,
            READ_BACK,
            "not read back within 30 s",
            "check VICTORIAMETRICS_SELECT_URL (vmselect's /select/<tenant>/prometheus in a cluster) and that it reads what VICTORIAMETRICS_URL writes",
        ));
    }
    match sink.delete_series(&[selector]).await {
        Ok(()) => out.push(ok(DELETE, "the sample's series was deleted")),
        Err(e) => out.push(bad(
            Status::Fail,
            DELETE,
            e.to_string(),
            "check VICTORIAMETRICS_DELETE_URL (vmselect's /delete/<tenant>/prometheus in a cluster) and that a proxy in front allows /api/v1/admin/tsdb/delete_series",
        )),
    }

    match sink.get_select("/metrics").await.ok().and_then(|m| retention_from_metrics(&m)) {
        Some(retention) => {
            let age = oldest.map(|d| (chrono::Utc::now().date_naive() - d).num_days());
            match age {
                Some(age) if age > retention => out.push(bad(
                    Status::Warn,
                    RETENTION,
                    format!("VictoriaMetrics keeps {retention} days (-retentionPeriod) but the oldest reading is {age} days old: older samples are dropped silently"),
                    "start VictoriaMetrics with a longer -retentionPeriod (e.g. 100y)",
                )),
                Some(age) => out.push(ok(RETENTION, format!("VictoriaMetrics keeps {retention} days; the oldest reading is {age} days old"))),
                None => out.push(ok(RETENTION, format!("VictoriaMetrics keeps {retention} days; no readings yet"))),
            }
        }
        None => out.push(bad(
            Status::Warn,
            RETENTION,
            "VictoriaMetrics' retention could not be read (no /metrics at the select URL, as behind vmselect or a proxy)",
            "make sure -retentionPeriod covers your history (e.g. 100y); in a cluster it is vmstorage's flag (http://vmstorage:8482/metrics shows it)",
        )),
    }
}

/// The sslmode in force and what the server's certificate is checked
/// against, in words.
fn pg_tls_mode(config: &Config) -> String {
    let tls = &config.pg_tls;
    let written = match &tls.written {
        Some(w) => format!(" (DATABASE_URL says {w})"),
        None => String::new(),
    };
    let roots = match &tls.root_cert {
        Some(f) => format!("sslrootcert {} and the public roots", f.display()),
        None => "the public roots".into(),
    };
    let checked = match tls.mode {
        SslMode::VerifyFull => {
            format!("the server's certificate verified against {roots}, and its host name")
        }
        SslMode::VerifyCa => {
            format!("the server's certificate verified against {roots}, not its host name")
        }
        SslMode::Require | SslMode::Prefer => "the server's certificate not verified".into(),
        SslMode::Disable => "no TLS".into(),
    };
    let client = match &tls.client_cert {
        Some(c) => format!("; client certificate {}", c.display()),
        None => String::new(),
    };
    format!("sslmode={}{written}: {checked}{client}", tls.mode.name())
}

/// Whether the connection to PostgreSQL is encrypted (PostgreSQL's own
/// pg_stat_ssl), with which version, and what was verified.
async fn pg_tls_item(config: &Config, source: &Source) -> Item {
    let row = sqlx::query_as::<_, (bool, Option<String>, Option<String>)>(
        "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_optional(source.pool())
    .await;
    let mode = pg_tls_mode(config);
    match row {
        Ok(Some((true, version, cipher))) => {
            let how = format!(
                "encrypted, {} ({}); {mode}",
                version.as_deref().unwrap_or("TLS"),
                cipher.as_deref().unwrap_or("cipher unknown")
            );
            if config.pg_tls.mode.verifies() {
                ok(PG_TLS, how)
            } else {
                bad(
                    Status::Warn,
                    PG_TLS,
                    format!("{how}: encrypted but not verified, a machine between could pose as the server"),
                    "give DATABASE_URL the authority that issued the server's certificate: sslmode=verify-full&sslrootcert=/path/to/ca.pem",
                )
            }
        }
        Ok(_) if is_local(config) => ok(PG_TLS, format!("not encrypted (a local connection); {mode}")),
        Ok(_) => bad(
            Status::Warn,
            PG_TLS,
            format!("not encrypted, to another machine; {mode}"),
            "turn TLS on in PostgreSQL (ssl = on) and set sslmode=verify-full&sslrootcert=/path/to/ca.pem in DATABASE_URL",
        ),
        Err(e) => bad(
            Status::Warn,
            PG_TLS,
            format!("cannot read pg_stat_ssl: {e}; {mode}"),
            "check the database user may read pg_stat_ssl",
        ),
    }
}

/// Whether DATABASE_URL's host is this machine (loopback or a socket),
/// where an unencrypted connection crosses no network.
fn is_local(config: &Config) -> bool {
    use secrecy::ExposeSecret;
    let Ok(url) = url::Url::parse(config.database_url.expose_secret()) else {
        return false;
    };
    match url.host() {
        None => true,
        Some(url::Host::Domain(d)) => d == "localhost" || d.starts_with('%'),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
    }
}

/// What TLS protects the requests to VictoriaMetrics: for https, the
/// roots the server's certificate was verified against and whether a client
/// certificate is offered; `failed` when the handshake was refused.
fn tls_item(config: &Config, failed: Option<&crate::vm::SinkError>) -> Item {
    let vm = &config.vm;
    let urls = [&vm.import_url, &vm.select_url, &vm.delete_url];
    let https = urls.iter().filter(|u| u.scheme() == "https").count();
    let roots = match &vm.tls.ca_file {
        Some(f) => format!(
            "the public roots and the CA file {} (VICTORIAMETRICS_TLS_CA_FILE)",
            f.display()
        ),
        None => "the public roots".to_string(),
    };
    let client = match &vm.tls.client {
        Some(c) => format!(
            "client certificate {} presented when asked for",
            c.cert_file.display()
        ),
        None => "no client certificate".to_string(),
    };
    if let Some(e) = failed {
        let fix = match &vm.tls.ca_file {
            None => "a server whose certificate comes from your own authority needs VICTORIAMETRICS_TLS_CA_FILE (its CA certificate, PEM); the URL's host name must be one the certificate names",
            Some(_) => "check that VICTORIAMETRICS_TLS_CA_FILE holds the authority that issued the server's certificate, and that the URL's host name is one the certificate names",
        };
        return bad(
            Status::Fail,
            TLS,
            format!("the server's certificate was refused, checked against {roots}: {e}"),
            fix,
        );
    }
    if https == 0 {
        if vm.tls.is_set() {
            return bad(
                Status::Warn,
                TLS,
                "not used: the VictoriaMetrics URLs are http://, the VICTORIAMETRICS_TLS_* files serve nothing",
                "use https:// in VICTORIAMETRICS_URL (and the select and delete URLs) for TLS",
            );
        }
        return ok(TLS, "not used (http://)");
    }
    let partly = if https < urls.len() {
        " (only the https:// ones of the import, select and delete URLs)"
    } else {
        ""
    };
    ok(
        TLS,
        format!("https: the server's certificate verified against {roots}; {client}{partly}"),
    )
}

/// The checklist as printed: one line per check, what to do under each
/// failure or warning, and a summary.
pub fn report(items: &[Item]) -> String {
    let mut out = String::new();
    let width = items.iter().map(|i| i.check.len()).max().unwrap_or(0);
    for i in items {
        let mark = match i.status {
            Status::Ok => "[ OK ]",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
            Status::Skip => "[SKIP]",
        };
        // A finding of several lines keeps to its column.
        let found = i.found.replace('\n', &format!("\n{:1$}", "", width + 9));
        out.push_str(&format!("{mark} {:width$}  {found}\n", i.check));
        if let Some(fix) = &i.fix {
            out.push_str(&format!("       what to do: {fix}\n"));
        }
    }
    let count = |s| items.iter().filter(|i| i.status == s).count();
    let (failed, warned, skipped) = (
        count(Status::Fail),
        count(Status::Warn),
        count(Status::Skip),
    );
    if failed == 0 {
        out.push_str(&format!(
            "all is well: {} checks passed{}\n",
            items.len(),
            if warned > 0 {
                format!(", {warned} with a warning to read above")
            } else {
                String::new()
            }
        ));
    } else {
        out.push_str(&format!(
            "{failed} of {} checks failed{}; see what to do above\n",
            items.len(),
            if skipped > 0 {
                format!(" ({skipped} could not be tried)")
            } else {
                String::new()
            }
        ));
    }
    out
}

/// Whether the checklist passed (warnings allowed).
pub fn passed(items: &[Item]) -> bool {
    items.iter().all(|i| i.status != Status::Fail)
}

/// Days of retention from VictoriaMetrics' own `/metrics`
/// (`flag{name="retentionPeriod", value="100y"}`; a bare number is months).
pub fn retention_from_metrics(metrics: &str) -> Option<i64> {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("flag{") && l.contains("name=\"retentionPeriod\""))?;
    let value = line.split("value=\"").nth(1)?.split('"').next()?;
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let number: f64 = value[..split].parse().ok()?;
    let days = match &value[split..] {
        "" => number * 31.0,
        "h" => number / 24.0,
        "d" => number,
        "w" => number * 7.0,
        "y" => number * 365.0,
        _ => return None,
    };
    Some(days as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_each_check_with_what_to_do_under_failures() {
        let items = vec![
            ok(PG, "version 15"),
            bad(Status::Fail, VM, "cannot connect", "start it"),
            skip(READ_BACK, "VictoriaMetrics unreachable"),
        ];
        let text = report(&items);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("[ OK ] PostgreSQL reachable"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("[FAIL] VictoriaMetrics reachable"),
            "{text}"
        );
        assert_eq!(lines[2], "       what to do: start it");
        assert!(
            lines[3].starts_with("[SKIP] A sample written and read back"),
            "{text}"
        );
        assert_eq!(
            lines[4],
            "1 of 3 checks failed (1 could not be tried); see what to do above"
        );
        assert!(!passed(&items));
    }

    #[test]
    fn a_price_grid_whose_latest_change_is_over_seven_months_old_is_a_warning() {
        let config = Config::from_pairs([("DATABASE_URL", "postgresql://u@h/db")]).unwrap();
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let latest = config.prices.latest_change().unwrap();
        let fresh = check_prices(
            &config,
            latest.checked_add_months(chrono::Months::new(7)).unwrap(),
        );
        assert_eq!(fresh.status, Status::Ok, "{}", fresh.found);
        assert!(fresh.found.contains("the shipped grid"), "{}", fresh.found);
        assert!(
            fresh.found.contains(&format!("latest change {latest}")),
            "{}",
            fresh.found
        );
        let stale = check_prices(&config, day("2099-01-01"));
        assert_eq!(stale.status, Status::Warn);
        assert!(stale.fix.unwrap().contains("VICTORIAMETRICS_PRICES_FILE"));
    }

    #[test]
    fn retention_is_read_from_the_flag_metric() {
        let m = "vm_x 1\nflag{name=\"retentionPeriod\", value=\"100y\", is_set=\"true\"} 1\n";
        assert_eq!(retention_from_metrics(m), Some(36500));
        assert_eq!(
            retention_from_metrics("flag{name=\"retentionPeriod\", value=\"1\"} 1"),
            Some(31)
        );
        assert_eq!(
            retention_from_metrics("flag{name=\"retentionPeriod\", value=\"2w\"} 1"),
            Some(14)
        );
        assert_eq!(retention_from_metrics("nothing"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2_000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn a_retention_flag_reads_as_its_days(
            n in 0u32..10_000,
            unit in proptest::sample::select(vec![("", 31.0), ("h", 1.0 / 24.0), ("d", 1.0), ("w", 7.0), ("y", 365.0)]),
            text in crate::model::arbitrary::text("0-9.hdwy\"=a-z{}, "),
        ) {
            let (suffix, days) = unit;
            let page = format!("# HELP x\nflag{{name=\"retentionPeriod\", value=\"{n}{suffix}\", is_set=\"true\"}} 1\n");
            proptest::prop_assert_eq!(retention_from_metrics(&page), Some((f64::from(n) * days) as i64));
            let _ = retention_from_metrics(&format!("flag{{name=\"retentionPeriod\", value=\"{text}"));
            let _ = retention_from_metrics(&text);
        }
    }
}
