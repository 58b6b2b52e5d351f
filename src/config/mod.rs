//! Configuration: the environment, read once at start and validated.
//!
//! The variables are read with `envy` into a flat struct of optional strings,
//! then each is turned into a typed value (`values` holds the parsers), so
//! that every error names the variable it comes from (envy's own errors name
//! the lowercase field).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::model::offpeak::OffPeakHours;
use crate::model::prices::{powers_listed, PriceGrid, POWERS};
use crate::model::{Contract, LEGACY_LABEL_TIMES_VAR};

mod pg_tls;
mod remote;
mod values;

pub use pg_tls::{PgTls, SslMode};
pub use remote::{Auth, ClientCert, Credentials, Tls, TlsError, TokenSource};

use values::{
    duration_var, listen_addr, nonempty, normalize_database_url, other_base_url, parse_base_url,
    parse_bool,
};
pub use values::{parse_duration, parse_labels};

/// A configuration error: always names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: String,
    /// What is wrong with its value (never the value itself when it is a secret).
    pub reason: String,
}

impl ConfigError {
    fn new(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            reason: reason.into(),
        }
    }
}

/// The environment as read: every variable optional and untyped.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    database_url: Option<String>,
    victoriametrics_enabled: Option<String>,
    victoriametrics_url: Option<String>,
    victoriametrics_select_url: Option<String>,
    victoriametrics_delete_url: Option<String>,
    victoriametrics_username: Option<String>,
    victoriametrics_password: Option<String>,
    victoriametrics_bearer_token: Option<String>,
    victoriametrics_bearer_token_file: Option<String>,
    victoriametrics_tls_ca_file: Option<String>,
    victoriametrics_tls_cert_file: Option<String>,
    victoriametrics_tls_key_file: Option<String>,
    victoriametrics_batch_size: Option<String>,
    victoriametrics_poll_interval: Option<String>,
    victoriametrics_reconcile_interval: Option<String>,
    victoriametrics_verify_delay: Option<String>,
    victoriametrics_timeout: Option<String>,
    victoriametrics_timezone: Option<String>,
    victoriametrics_labels: Option<String>,
    victoriametrics_offpeak_hours: Option<String>,
    victoriametrics_http_listen_addr: Option<String>,
    victoriametrics_prices_file: Option<String>,
    victoriametrics_subscribed_kva: Option<String>,
}

/// Where and how to talk to VictoriaMetrics.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Base the import path is appended to (single node, vminsert, vmagent, vmauth).
    pub import_url: Url,
    /// Base for reads (`/api/v1/export`); vmselect's in a cluster.
    pub select_url: Url,
    /// Base for `delete_series`; vmselect's `/delete/<tenant>/prometheus` in a cluster.
    pub delete_url: Url,
    /// The `Authorization` every request carries.
    pub auth: Auth,
    /// Extra roots and a client certificate for https.
    pub tls: Tls,
    /// Lines per POST.
    pub batch_size: NonZeroUsize,
    /// Time limit of one HTTP request.
    pub timeout: Duration,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL connection string, in the form sqlx takes.
    pub database_url: SecretString,
    /// What the connection string asks of TLS.
    pub pg_tls: PgTls,
    /// `false` makes the daemon idle instead of exporting.
    pub enabled: bool,
    /// VictoriaMetrics endpoints and batching.
    pub vm: VmConfig,
    /// Time between two polls for changes.
    pub poll_interval: Duration,
    /// Time between two full reconciliations.
    pub reconcile_interval: Duration,
    /// How long VictoriaMetrics may take to show a write to queries: a
    /// series is read back only this long after it was last written.
    pub verify_delay: Duration,
    /// Zone of the local dates and times stored by MyElectricalData.
    pub timezone: Tz,
    /// Extra labels set on every sample, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Where the daemon serves `/health` and `/metrics`; `None` when `off`.
    pub listen_addr: Option<SocketAddr>,
    /// Off-peak hours for every PDL, overriding their contracts'.
    pub offpeak_hours: Option<OffPeakHours>,
    /// The price grid in force: the shipped one, or the file's.
    pub prices: Arc<PriceGrid>,
    /// `VICTORIAMETRICS_PRICES_FILE`, when it replaces the shipped grid.
    pub prices_file: Option<PathBuf>,
    /// The subscribed power (kVA) of every PDL, overriding `pdls`'.
    pub subscribed_kva: Option<u8>,
}

impl Config {
    /// The longest wait between retries of a request: the poll interval,
    /// within 1 s and 60 s.
    pub fn retry_cap(&self) -> Duration {
        self.poll_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// The contract series are computed with, at `now_ms`.
    pub fn contract(&self, now_ms: i64) -> Contract {
        Contract {
            offpeak_hours: self.offpeak_hours.clone(),
            prices: self.prices.clone(),
            subscribed_kva: self.subscribed_kva,
            legacy_label_times: std::env::var_os(LEGACY_LABEL_TIMES_VAR).is_some_and(|v| v == "1"),
            ..Contract::new(self.timezone, &self.labels, now_ms)
        }
    }

    /// Reads and validates the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        // std::env::vars() panics on a value that is not UTF-8: read the raw
        // environment and name such a variable instead.
        let mut pairs = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if key != "DATABASE_URL" && !key.starts_with("VICTORIAMETRICS_") {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::new(key, "is not valid UTF-8"))?;
            pairs.push((key.to_string(), value));
        }
        Self::from_pairs(pairs)
    }

    /// Reads and validates the configuration from explicit pairs (tests, `.env` files).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let pairs = pairs.into_iter().map(|(k, v)| (k.into(), v.into()));
        let raw: RawEnv =
            envy::from_iter(pairs).map_err(|e| ConfigError::new("environment", e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawEnv) -> Result<Self, ConfigError> {
        let enabled = match nonempty(raw.victoriametrics_enabled) {
            None => true,
            Some(v) => parse_bool(&v).ok_or_else(|| {
                ConfigError::new(
                    "VICTORIAMETRICS_ENABLED",
                    format!("expected true or false, got {v:?}"),
                )
            })?,
        };
        let written_url = nonempty(raw.database_url)
            .ok_or_else(|| ConfigError::new("DATABASE_URL", "is not set"))?;
        let database_url = normalize_database_url(&written_url)?;
        let pg_tls = pg_tls::read(&database_url, pg_tls::written_mode(&written_url))?;

        let (import_url, url_credentials) = parse_base_url(
            "VICTORIAMETRICS_URL",
            nonempty(raw.victoriametrics_url)
                .as_deref()
                .unwrap_or("http://localhost:8428"),
        )?;
        let select_url = other_base_url(
            "VICTORIAMETRICS_SELECT_URL",
            raw.victoriametrics_select_url,
            &import_url,
            "select",
        )?;
        let delete_url = other_base_url(
            "VICTORIAMETRICS_DELETE_URL",
            raw.victoriametrics_delete_url,
            &import_url,
            "delete",
        )?;
        let credentials = match (
            nonempty(raw.victoriametrics_username),
            raw.victoriametrics_password,
        ) {
            (Some(username), Some(password)) if !password.is_empty() => Some(Credentials {
                username,
                password: SecretString::from(password),
            }),
            (Some(_), _) => {
                return Err(ConfigError::new(
                    "VICTORIAMETRICS_PASSWORD",
                    "is empty while VICTORIAMETRICS_USERNAME is set",
                ))
            }
            (None, Some(p)) if !p.is_empty() => {
                return Err(ConfigError::new(
                    "VICTORIAMETRICS_USERNAME",
                    "is empty while VICTORIAMETRICS_PASSWORD is set",
                ))
            }
            (None, _) => url_credentials,
        };
        let auth = match (
            remote::bearer(
                nonempty(raw.victoriametrics_bearer_token),
                nonempty(raw.victoriametrics_bearer_token_file),
            )?,
            credentials,
        ) {
            (None, None) => Auth::None,
            (None, Some(c)) => Auth::Basic(c),
            (Some((token, source)), None) => Auth::Bearer { token, source },
            (Some((_, source)), Some(_)) => {
                let var = match source {
                    TokenSource::Environment => "VICTORIAMETRICS_BEARER_TOKEN",
                    TokenSource::File(_) => "VICTORIAMETRICS_BEARER_TOKEN_FILE",
                };
                return Err(ConfigError::new(
                    var,
                    "is set together with basic authentication (VICTORIAMETRICS_USERNAME and VICTORIAMETRICS_PASSWORD, or a user in VICTORIAMETRICS_URL): a request carries one Authorization header, keep one of them",
                ));
            }
        };
        let tls = Tls::load(
            nonempty(raw.victoriametrics_tls_ca_file),
            nonempty(raw.victoriametrics_tls_cert_file),
            nonempty(raw.victoriametrics_tls_key_file),
        )?;
        let batch_size = match nonempty(raw.victoriametrics_batch_size) {
            None => NonZeroUsize::new(100).expect("100 is not zero"),
            Some(v) => v
                .parse::<NonZeroUsize>()
                .ok()
                .filter(|n| n.get() <= 1_000_000)
                .ok_or_else(|| {
                    ConfigError::new(
                        "VICTORIAMETRICS_BATCH_SIZE",
                        format!("expected a number of lines from 1 to 1000000, got {v:?}"),
                    )
                })?,
        };
        let poll_interval = duration_var(
            "VICTORIAMETRICS_POLL_INTERVAL",
            raw.victoriametrics_poll_interval,
            Duration::from_secs(60),
        )?;
        let reconcile_interval = duration_var(
            "VICTORIAMETRICS_RECONCILE_INTERVAL",
            raw.victoriametrics_reconcile_interval,
            Duration::from_secs(3600),
        )?;
        let verify_delay = duration_var(
            "VICTORIAMETRICS_VERIFY_DELAY",
            raw.victoriametrics_verify_delay,
            DEFAULT_VERIFY_DELAY,
        )?;
        let timeout = duration_var(
            "VICTORIAMETRICS_TIMEOUT",
            raw.victoriametrics_timeout,
            Duration::from_secs(30),
        )?;
        let timezone = match nonempty(raw.victoriametrics_timezone) {
            None => chrono_tz::Europe::Paris,
            Some(v) => v.parse::<Tz>().map_err(|_| {
                ConfigError::new(
                    "VICTORIAMETRICS_TIMEZONE",
                    format!("{v:?} is not an IANA time zone"),
                )
            })?,
        };
        let labels = match nonempty(raw.victoriametrics_labels) {
            None => BTreeMap::new(),
            Some(v) => parse_labels(&v)
                .map_err(|reason| ConfigError::new("VICTORIAMETRICS_LABELS", reason))?,
        };
        let listen_addr = listen_addr(raw.victoriametrics_http_listen_addr)?;
        let offpeak_hours = match nonempty(raw.victoriametrics_offpeak_hours) {
            None => None,
            Some(v) => Some(
                OffPeakHours::parse_setting(&v)
                    .map_err(|reason| ConfigError::new("VICTORIAMETRICS_OFFPEAK_HOURS", reason))?,
            ),
        };
        let subscribed_kva = match nonempty(raw.victoriametrics_subscribed_kva) {
            None => None,
            Some(v) => Some(
                v.parse::<u8>()
                    .ok()
                    .filter(|k| POWERS.contains(k))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "VICTORIAMETRICS_SUBSCRIBED_KVA",
                            format!("expected {} (kVA), got {v:?}", powers_listed()),
                        )
                    })?,
            ),
        };
        let prices_file = nonempty(raw.victoriametrics_prices_file).map(PathBuf::from);
        let prices = Arc::new(read_prices(prices_file.as_deref())?);
        Ok(Config {
            database_url,
            pg_tls,
            enabled,
            vm: VmConfig {
                import_url,
                select_url,
                delete_url,
                auth,
                tls,
                batch_size,
                timeout,
            },
            poll_interval,
            reconcile_interval,
            verify_delay,
            timezone,
            labels,
            listen_addr,
            offpeak_hours,
            prices,
            prices_file,
            subscribed_kva,
        })
    }
}

/// `VICTORIAMETRICS_PRICES_FILE`'s grid alone, or the shipped one, for the
/// `prices` command.
pub fn prices_from_env() -> Result<PriceGrid, ConfigError> {
    let var = "VICTORIAMETRICS_PRICES_FILE";
    let file = match std::env::var_os(var) {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
    };
    read_prices(file.as_deref())
}

/// The grid in `file`, or the shipped one; a file that cannot be read or
/// has a line that does not parse is an error naming it and the line.
pub fn read_prices(file: Option<&Path>) -> Result<PriceGrid, ConfigError> {
    const VAR: &str = "VICTORIAMETRICS_PRICES_FILE";
    match file {
        None => PriceGrid::shipped()
            .map_err(|e| ConfigError::new(VAR, format!("the shipped price grid, {e}"))),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(VAR, format!("cannot read {}: {e}", path.display()))
            })?;
            PriceGrid::parse(&text)
                .map_err(|e| ConfigError::new(VAR, format!("{} {e}", path.display())))
        }
    }
}

/// How long VictoriaMetrics may take to show a write to queries when
/// `VICTORIAMETRICS_VERIFY_DELAY` is not set: 1.79 took about 9 s to show a
/// new series, v1.150 up to 11 s, without a forced flush.
pub const DEFAULT_VERIFY_DELAY: Duration = Duration::from_secs(30);

/// The self-monitoring listener's port when the variable is not set.
pub const DEFAULT_LISTEN_PORT: u16 = 9488;

/// `VICTORIAMETRICS_HTTP_LISTEN_ADDR` alone, for the `health` command,
/// which needs nothing else (a Docker HEALTHCHECK should not fail on
/// another variable).
pub fn listen_addr_from_env() -> Result<Option<SocketAddr>, ConfigError> {
    let var = "VICTORIAMETRICS_HTTP_LISTEN_ADDR";
    match std::env::var_os(var) {
        None => listen_addr(None),
        Some(v) => listen_addr(Some(
            v.into_string()
                .map_err(|_| ConfigError::new(var, "is not valid UTF-8"))?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![(
            "DATABASE_URL",
            "postgresql+asyncpg://med:s3cret@db:5432/myelectricaldata",
        )]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut pairs = base();
        pairs.extend_from_slice(extra);
        Config::from_pairs(pairs)
    }

    #[test]
    fn defaults_apply_when_only_the_database_is_set() {
        let c = with(&[]).unwrap();
        assert!(c.enabled);
        assert_eq!(c.vm.import_url.as_str(), "http://localhost:8428/");
        assert_eq!(c.vm.batch_size.get(), 100);
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        assert_eq!(c.reconcile_interval, Duration::from_secs(3600));
        assert_eq!(c.timezone, chrono_tz::Europe::Paris);
        assert!(c.labels.is_empty());
        assert_eq!(
            c.database_url.expose_secret(),
            "postgresql://med:s3cret@db:5432/myelectricaldata"
        );
    }

    #[test]
    fn a_vminsert_base_needs_the_select_and_delete_bases() {
        let insert = (
            "VICTORIAMETRICS_URL",
            "http://vminsert:8480/insert/0/prometheus",
        );
        let e = with(&[insert]).unwrap_err();
        assert_eq!(e.var, "VICTORIAMETRICS_SELECT_URL");
        let e = with(&[
            insert,
            (
                "VICTORIAMETRICS_SELECT_URL",
                "http://vmselect:8481/select/0/prometheus",
            ),
        ])
        .unwrap_err();
        assert_eq!(e.var, "VICTORIAMETRICS_DELETE_URL");
        assert!(
            e.reason.contains("/delete/<tenant>/prometheus"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn the_listener_takes_host_port_a_bare_port_or_off() {
        let addr = |v| {
            with(&[("VICTORIAMETRICS_HTTP_LISTEN_ADDR", v)])
                .unwrap()
                .listen_addr
        };
        assert_eq!(
            with(&[]).unwrap().listen_addr,
            Some(([127, 0, 0, 1], 9488).into())
        );
        assert_eq!(addr("0.0.0.0:9100"), Some(([0, 0, 0, 0], 9100).into()));
        assert_eq!(addr(":9100"), Some(([0, 0, 0, 0], 9100).into()));
        assert_eq!(addr("localhost:0"), Some(([127, 0, 0, 1], 0).into()));
        assert_eq!(addr("[::1]:9100"), Some("[::1]:9100".parse().unwrap()));
        assert_eq!(addr("off"), None);
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn every_bad_variable_is_named_in_its_error() {
        let cases: &[(&str, &str)] = &[
            ("VICTORIAMETRICS_ENABLED", "maybe"),
            ("VICTORIAMETRICS_URL", "victoriametrics:8428"),
            ("VICTORIAMETRICS_SELECT_URL", "ftp://x"),
            ("VICTORIAMETRICS_DELETE_URL", "not a url"),
            ("VICTORIAMETRICS_BATCH_SIZE", "0"),
            ("VICTORIAMETRICS_BATCH_SIZE", "ten"),
            ("VICTORIAMETRICS_POLL_INTERVAL", "often"),
            ("VICTORIAMETRICS_RECONCILE_INTERVAL", "0s"),
            ("VICTORIAMETRICS_VERIFY_DELAY", "soon"),
            ("VICTORIAMETRICS_OFFPEAK_HOURS", "22h-6h"),
            ("VICTORIAMETRICS_TIMEOUT", "1y"),
            ("VICTORIAMETRICS_TIMEZONE", "Europe/Pariss"),
            ("VICTORIAMETRICS_HTTP_LISTEN_ADDR", "9488"),
            (
                "VICTORIAMETRICS_SELECT_URL",
                "http://u:p@vmselect:8481/select/0/prometheus",
            ),
            ("VICTORIAMETRICS_HTTP_LISTEN_ADDR", "0.0.0.0:http"),
            ("VICTORIAMETRICS_LABELS", "[1]"),
            ("VICTORIAMETRICS_USERNAME", "alice"),
            ("VICTORIAMETRICS_SUBSCRIBED_KVA", "7"),
            ("VICTORIAMETRICS_SUBSCRIBED_KVA", "6kVA"),
            ("VICTORIAMETRICS_PRICES_FILE", "/nonexistent/prices.csv"),
        ];
        for (var, value) in cases {
            let err = with(&[(var, value)]).unwrap_err();
            let expected = if *var == "VICTORIAMETRICS_USERNAME" {
                "VICTORIAMETRICS_PASSWORD"
            } else {
                var
            };
            assert_eq!(err.var, expected, "{var}={value}");
            assert!(err.to_string().starts_with(expected), "{err}");
        }
        let err = Config::from_pairs(Vec::<(String, String)>::new()).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let err = Config::from_pairs([("DATABASE_URL", "mysql://x@y/z")]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
    }

    #[test]
    fn a_price_file_replaces_the_shipped_grid_and_a_bad_line_is_named() {
        let c = with(&[]).unwrap();
        assert_eq!(
            c.prices.rows().len(),
            PriceGrid::shipped().unwrap().rows().len()
        );
        let dir = std::env::temp_dir().join(format!("med-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.csv");
        std::fs::write(&good, "# mine\n2026-08-01,BASE,,base,0.1952\n").unwrap();
        let file = |p: &std::path::Path| {
            let mut pairs: Vec<(String, String)> = base()
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            pairs.push((
                "VICTORIAMETRICS_PRICES_FILE".into(),
                p.display().to_string(),
            ));
            Config::from_pairs(pairs)
        };
        let c = file(&good).unwrap();
        assert_eq!(c.prices.rows().len(), 1);
        let bad = dir.join("bad.csv");
        std::fs::write(
            &bad,
            "2026-08-01,BASE,,base,0.1952\n\n2026-08-01,BASE,,base,0,19\n",
        )
        .unwrap();
        let e = file(&bad).unwrap_err();
        assert_eq!(e.var, "VICTORIAMETRICS_PRICES_FILE");
        let shown = e.to_string();
        assert!(shown.contains("bad.csv line 3: expected 5"), "{shown}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_must_be_valid_names_and_not_the_exporters_own() {
        assert_eq!(
            parse_labels(r#"{"home":"paris","floor":2}"#).unwrap(),
            BTreeMap::from([
                ("floor".to_string(), "2".to_string()),
                ("home".to_string(), "paris".to_string())
            ])
        );
        assert!(parse_labels(r#"{"pdl":"x"}"#).is_err());
        assert!(parse_labels(r#"{"quality":"x"}"#).is_err());
        assert!(parse_labels(r#"{"__name__":"x"}"#).is_err());
        assert!(parse_labels(r#"{"9lives":"x"}"#).is_err());
        assert!(parse_labels(r#"{"a-b":"x"}"#).is_err());
        assert!(parse_labels(r#"{"a":{"b":1}}"#).is_err());
        assert!(parse_labels("not json").is_err());
        assert!(parse_labels(r#"{"note":"line\nbreak \"quoted\" back\\slash"}"#).is_ok());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = with(&[
            ("VICTORIAMETRICS_USERNAME", "alice"),
            ("VICTORIAMETRICS_PASSWORD", "hunter2"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let Auth::Basic(creds) = &c.vm.auth else {
            panic!("basic authentication expected: {:?}", c.vm.auth)
        };
        assert_eq!(creds.password(), "hunter2");
    }

    /// A file of `text` in a directory of its own, removed when dropped.
    fn file(name: &str, text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    fn with_owned(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut pairs: Vec<(String, String)> = base()
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_pairs(pairs)
    }

    /// The error of `extra`, checked to name every variable of `named`
    /// and to show none of `secrets`.
    fn refused(extra: &[(&str, &str)], named: &[&str], secrets: &[&str]) -> ConfigError {
        let e = with_owned(extra).unwrap_err();
        let shown = e.to_string();
        for var in named {
            assert!(shown.contains(var), "{var} not named: {shown}");
        }
        for secret in secrets {
            assert!(!shown.contains(secret), "a secret shown: {shown}");
            assert!(!format!("{e:?}").contains(secret), "a secret shown: {e:?}");
        }
        e
    }

    #[test]
    fn a_bearer_token_comes_from_the_environment_or_from_a_file_without_its_line_end() {
        let c = with_owned(&[("VICTORIAMETRICS_BEARER_TOKEN", "Tok-3n.value")]).unwrap();
        let Auth::Bearer { token, source } = &c.vm.auth else {
            panic!("bearer expected: {:?}", c.vm.auth)
        };
        assert_eq!(token.expose_secret(), "Tok-3n.value");
        assert_eq!(*source, TokenSource::Environment);
        assert!(!format!("{c:?}").contains("Tok-3n"));
        assert!(!c.vm.auth.describe().contains("Tok-3n"));

        let (_dir, path) = file("token", "Fi1e-token\r\n");
        let c = with_owned(&[("VICTORIAMETRICS_BEARER_TOKEN_FILE", &path)]).unwrap();
        let Auth::Bearer { token, source } = &c.vm.auth else {
            panic!("bearer expected: {:?}", c.vm.auth)
        };
        assert_eq!(token.expose_secret(), "Fi1e-token");
        assert_eq!(*source, TokenSource::File(path.clone().into()));
        assert!(c.vm.auth.describe().contains(&path));
        assert!(!c.vm.auth.describe().contains("Fi1e-token"));
    }

    #[test]
    fn a_token_and_a_token_file_both_set_are_refused_naming_both() {
        let (_dir, path) = file("token", "Fi1e-token\n");
        refused(
            &[
                ("VICTORIAMETRICS_BEARER_TOKEN", "Tok-3n"),
                ("VICTORIAMETRICS_BEARER_TOKEN_FILE", &path),
            ],
            &[
                "VICTORIAMETRICS_BEARER_TOKEN (",
                "VICTORIAMETRICS_BEARER_TOKEN_FILE",
            ],
            &["Tok-3n", "Fi1e-token"],
        );
    }

    #[test]
    fn a_token_with_basic_authentication_is_refused_naming_them() {
        let basic = [
            ("VICTORIAMETRICS_USERNAME", "alice"),
            ("VICTORIAMETRICS_PASSWORD", "Pa55-word"),
        ];
        let mut both = basic.to_vec();
        both.push(("VICTORIAMETRICS_BEARER_TOKEN", "Tok-3n"));
        refused(
            &both,
            &[
                "VICTORIAMETRICS_BEARER_TOKEN",
                "VICTORIAMETRICS_USERNAME",
                "VICTORIAMETRICS_PASSWORD",
            ],
            &["Tok-3n", "Pa55-word"],
        );
        refused(
            &[
                ("VICTORIAMETRICS_URL", "https://bob:Pa55-word@vm.example"),
                ("VICTORIAMETRICS_BEARER_TOKEN", "Tok-3n"),
            ],
            &["VICTORIAMETRICS_BEARER_TOKEN", "VICTORIAMETRICS_URL"],
            &["Tok-3n", "Pa55-word"],
        );
    }

    #[test]
    fn a_token_a_header_cannot_carry_or_an_empty_token_file_is_refused() {
        refused(
            &[("VICTORIAMETRICS_BEARER_TOKEN", "Tok 3n")],
            &["VICTORIAMETRICS_BEARER_TOKEN"],
            &["Tok 3n"],
        );
        let (_dir, path) = file("token", "Tok-3n\nsecond-line\n");
        refused(
            &[("VICTORIAMETRICS_BEARER_TOKEN_FILE", &path)],
            &["VICTORIAMETRICS_BEARER_TOKEN_FILE"],
            &["Tok-3n", "second-line"],
        );
        let (_dir, path) = file("token", "\n");
        refused(
            &[("VICTORIAMETRICS_BEARER_TOKEN_FILE", &path)],
            &["VICTORIAMETRICS_BEARER_TOKEN_FILE", &path],
            &[],
        );
    }

    #[test]
    fn a_client_certificate_without_its_key_or_a_key_without_its_certificate_is_refused() {
        let both = [
            "VICTORIAMETRICS_TLS_CERT_FILE",
            "VICTORIAMETRICS_TLS_KEY_FILE",
        ];
        refused(
            &[("VICTORIAMETRICS_TLS_CERT_FILE", "/etc/c.pem")],
            &both,
            &[],
        );
        refused(
            &[("VICTORIAMETRICS_TLS_KEY_FILE", "/etc/k.pem")],
            &both,
            &[],
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_is_named_with_its_variable() {
        let missing = "/nonexistent/med/file.pem";
        for var in [
            "VICTORIAMETRICS_BEARER_TOKEN_FILE",
            "VICTORIAMETRICS_TLS_CA_FILE",
        ] {
            let e = refused(&[(var, missing)], &[var, missing], &[]);
            assert_eq!(e.var, var);
        }
        let (_dir, cert) = file("cert.pem", "-----BEGIN CERTIFICATE-----\n");
        let e = refused(
            &[
                ("VICTORIAMETRICS_TLS_CERT_FILE", &cert),
                ("VICTORIAMETRICS_TLS_KEY_FILE", missing),
            ],
            &["VICTORIAMETRICS_TLS_KEY_FILE", missing],
            &[],
        );
        assert_eq!(e.var, "VICTORIAMETRICS_TLS_KEY_FILE");
    }

    #[test]
    fn a_bad_pem_is_refused_naming_its_variable_and_never_showing_a_key() {
        let (_dir, garbage) = file("ca.pem", "not a certificate\n");
        refused(
            &[("VICTORIAMETRICS_TLS_CA_FILE", &garbage)],
            &["VICTORIAMETRICS_TLS_CA_FILE", &garbage],
            &[],
        );
        let (_dir, broken) = file(
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        );
        refused(
            &[("VICTORIAMETRICS_TLS_CA_FILE", &broken)],
            &["VICTORIAMETRICS_TLS_CA_FILE", &broken],
            &[],
        );
        let key_text = "-----BEGIN PRIVATE KEY-----\nS2V5LWJ5dGVzLXRoYXQtYXJlLXNlY3JldA==\n-----END PRIVATE KEY-----\n";
        let (_dir, key) = file("key.pem", key_text);
        let e = refused(
            &[
                ("VICTORIAMETRICS_TLS_CERT_FILE", &broken),
                ("VICTORIAMETRICS_TLS_KEY_FILE", &key),
            ],
            &[
                "VICTORIAMETRICS_TLS_CERT_FILE",
                "VICTORIAMETRICS_TLS_KEY_FILE",
                &key,
            ],
            &["S2V5LWJ5dGVz", "Key-bytes"],
        );
        assert!(!e.to_string().contains("PRIVATE KEY-----\n"), "{e}");
        let (_dir, not_key) = file("key.pem", "S2V5LWJ5dGVz\n");
        refused(
            &[
                ("VICTORIAMETRICS_TLS_CERT_FILE", &broken),
                ("VICTORIAMETRICS_TLS_KEY_FILE", &not_key),
            ],
            &["VICTORIAMETRICS_TLS_KEY_FILE", &not_key],
            &["S2V5LWJ5dGVz"],
        );
    }

    #[test]
    fn credentials_in_the_url_move_to_basic_auth() {
        let c = with(&[("VICTORIAMETRICS_URL", "https://bob:p%40ss@vm.example:8428/")]).unwrap();
        assert_eq!(c.vm.import_url.as_str(), "https://vm.example:8428/");
        let Auth::Basic(creds) = c.vm.auth else {
            panic!("basic authentication expected: {:?}", c.vm.auth)
        };
        assert_eq!(creds.username, "bob");
        assert_eq!(creds.password(), "p@ss");
    }

    #[test]
    fn cluster_paths_are_kept_without_trailing_slash() {
        let c = with(&[
            (
                "VICTORIAMETRICS_URL",
                "http://vminsert:8480/insert/0/prometheus/",
            ),
            (
                "VICTORIAMETRICS_SELECT_URL",
                "http://vmselect:8481/select/0/prometheus",
            ),
            (
                "VICTORIAMETRICS_DELETE_URL",
                "http://vmselect:8481/delete/0/prometheus",
            ),
        ])
        .unwrap();
        assert_eq!(c.vm.import_url.path(), "/insert/0/prometheus");
        assert_eq!(c.vm.delete_url.path(), "/delete/0/prometheus");
    }

    #[test]
    fn asyncpg_ssl_parameter_becomes_sslmode() {
        let c = Config::from_pairs([("DATABASE_URL", "postgresql+asyncpg://u:p@h/db?ssl=require")])
            .unwrap();
        assert_eq!(
            c.database_url.expose_secret(),
            "postgresql://u:p@h/db?sslmode=require"
        );
    }
}
