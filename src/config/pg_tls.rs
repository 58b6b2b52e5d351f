//! How the connection to PostgreSQL is protected: `DATABASE_URL`'s
//! `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, read as libpq and
//! asyncpg read them, with the files they name checked at start.
//!
//! sqlx parses these parameters itself; this module reads them again so
//! that a file that cannot be read stops the program at start (sqlx would
//! only fail at the first connection, retried for ever by the daemon), and
//! so that `check` can say what is in force.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::ConfigError;

/// The modes libpq names, the strongest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, the certificate not verified.
    Prefer,
    /// TLS or nothing, the certificate not verified.
    Require,
    /// TLS, the certificate verified against the roots (not its host name).
    VerifyCa,
    /// TLS, the certificate verified and naming the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The mode's name as `sslmode` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against the roots.
    pub fn verifies(self) -> bool {
        self >= SslMode::VerifyCa
    }

    /// Reads a `sslmode` value, as libpq spells them (any case).
    fn parse(v: &str) -> Option<Self> {
        Some(match v.to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            // sqlx treats allow as disable (never TLS), which a server that
            // only accepts TLS refuses; libpq's allow ends up on TLS there.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// What `DATABASE_URL` asks of TLS, after the exporter's rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// The mode in force.
    pub mode: SslMode,
    /// `sslmode=…` or `ssl=…` as written in the URL, when it is not
    /// `sslmode=` [`PgTls::mode`]'s name.
    pub written: Option<String>,
    /// `sslrootcert`: the authorities the server's certificate is checked against.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client certificate.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's key.
    pub client_key: Option<PathBuf>,
}

/// The `ssl` parameter of SQLAlchemy's asyncpg dialect, as an `sslmode`:
/// its mode names, or a boolean (`ssl=true` is what asyncpg's `ssl=True`,
/// psycopg's JDBC cousins and node-postgres mean by it: verified, with the
/// host name; `ssl=false`: none).
pub(super) fn ssl_to_sslmode(v: &str) -> String {
    match super::values::parse_bool(v.trim()) {
        Some(true) => "verify-full".into(),
        Some(false) => "disable".into(),
        None => v.to_string(),
    }
}

/// Rewrites the query of the URL in place for sqlx: `sslmode=require` with
/// `sslrootcert` becomes `verify-ca` (libpq and asyncpg verify the chain
/// then; sqlx would not look at the file), `allow` becomes `prefer`.
pub(super) fn rewrite_modes(pairs: &mut [(String, String)]) {
    let has_root = pairs.iter().any(|(k, v)| is_root_key(k) && !v.is_empty());
    for (k, v) in pairs.iter_mut() {
        if is_mode_key(k) {
            match SslMode::parse(v) {
                Some(SslMode::Require) if has_root => *v = SslMode::VerifyCa.name().into(),
                Some(m) => *v = m.name().into(),
                None => {}
            }
        }
    }
}

/// `sslmode` (or asyncpg's `ssl`) as written in the URL, for `check` to
/// say when the exporter reads it otherwise.
pub(super) fn written_mode(raw: &str) -> Option<String> {
    let parsed = Url::parse(raw).ok()?;
    let written = parsed
        .query_pairs()
        .filter(|(k, _)| is_mode_key(k) || k == "ssl")
        .last()
        .map(|(k, v)| format!("{k}={v}"));
    written
}

fn is_mode_key(k: &str) -> bool {
    matches!(k, "sslmode" | "ssl-mode")
}

fn is_root_key(k: &str) -> bool {
    matches!(k, "sslrootcert" | "ssl-root-cert" | "ssl-ca")
}

/// Reads the TLS parameters of a normalized `DATABASE_URL` (`written` is
/// the `sslmode` as the user wrote it, before the rewrites) and checks that
/// the files they name can be read.
pub(super) fn read(url: &SecretString, written: Option<String>) -> Result<PgTls, ConfigError> {
    let err = |reason: String| ConfigError::new("DATABASE_URL", reason);
    let parsed = Url::parse(url.expose_secret()).map_err(|_| err("is not a valid URL".into()))?;
    let mut tls = PgTls {
        mode: SslMode::Prefer,
        written: None,
        root_cert: None,
        client_cert: None,
        client_key: None,
    };
    for (k, v) in parsed.query_pairs() {
        match &*k {
            k if is_mode_key(k) => {
                tls.mode = SslMode::parse(&v).ok_or_else(|| {
                    err(format!(
                        "sslmode {v:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ))
                })?;
            }
            k if is_root_key(k) => tls.root_cert = Some(PathBuf::from(&*v)),
            "sslcert" | "ssl-cert" => tls.client_cert = Some(PathBuf::from(&*v)),
            "sslkey" | "ssl-key" => tls.client_key = Some(PathBuf::from(&*v)),
            _ => {}
        }
    }
    tls.written = written.filter(|w| *w != format!("sslmode={}", tls.mode.name()));
    if let Some(f) = &tls.root_cert {
        check_pem(
            f,
            "sslrootcert",
            "-----BEGIN CERTIFICATE-----",
            "certificate",
        )?;
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => {
            check_pem(c, "sslcert", "-----BEGIN CERTIFICATE-----", "certificate")?;
            check_pem(k, "sslkey", "PRIVATE KEY-----", "private key")?;
        }
        (Some(_), None) => return Err(err("sslcert is given without sslkey (its key)".into())),
        (None, Some(_)) => return Err(err("sslkey is given without sslcert".into())),
        (None, None) => {}
    }
    if tls.mode == SslMode::Disable && (tls.root_cert.is_some() || tls.client_cert.is_some()) {
        return Err(err(
            "sslmode=disable with sslrootcert or sslcert: the files would serve nothing (choose verify-full, or drop them)"
                .into(),
        ));
    }
    Ok(tls)
}

/// A file named by `param` must be readable and hold a PEM `what`; its
/// contents (a key) never appear in the message.
fn check_pem(path: &Path, param: &str, marker: &str, what: &str) -> Result<(), ConfigError> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            "DATABASE_URL",
            format!("{param}: cannot read {shown} ({})", io_reason(&e)),
        )
    })?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(ConfigError::new(
            "DATABASE_URL",
            format!("{param}: {shown} holds no PEM {what} (expected a {marker} block)"),
        ));
    }
    Ok(())
}

/// The reason of an I/O error, without Rust's "(os error 2)".
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn config(url: &str) -> Result<Config, ConfigError> {
        Config::from_pairs([("DATABASE_URL", url)])
    }

    fn url(c: &Config) -> &str {
        c.database_url.expose_secret()
    }

    /// A directory with a certificate and a key (not real ones: only their
    /// PEM markers are checked at start).
    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("ca.pem"), cert).unwrap();
        std::fs::write(dir.path().join("client.pem"), cert).unwrap();
        std::fs::write(
            dir.path().join("client.key"),
            "-----BEGIN PRIVATE KEY-----\nS3cretKeyBytes\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn without_sslmode_tls_is_preferred_unverified_as_in_libpq() {
        let c = config("postgresql://u:p@h/db").unwrap();
        assert_eq!(c.pg_tls.mode, SslMode::Prefer);
        assert_eq!(c.pg_tls.written, None);
    }

    #[test]
    fn asyncpg_ssl_booleans_become_verify_full_or_disable() {
        for (written, mode) in [
            ("true", "verify-full"),
            ("True", "verify-full"),
            ("1", "verify-full"),
            ("false", "disable"),
            ("0", "disable"),
            ("verify-full", "verify-full"),
            ("disable", "disable"),
        ] {
            let c = config(&format!("postgresql+asyncpg://u:p@h/db?ssl={written}")).unwrap();
            assert_eq!(url(&c), format!("postgresql://u:p@h/db?sslmode={mode}"));
            assert_eq!(c.pg_tls.mode.name(), mode);
        }
    }

    #[test]
    fn every_libpq_mode_is_taken_in_either_spelling_and_allow_becomes_prefer() {
        for (written, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("VERIFY-FULL", SslMode::VerifyFull),
        ] {
            for key in ["sslmode", "ssl"] {
                let c = config(&format!("postgresql+asyncpg://u:p@h/db?{key}={written}")).unwrap();
                assert_eq!(c.pg_tls.mode, mode, "{key}={written}");
                assert!(
                    url(&c).ends_with(&format!("sslmode={}", mode.name())),
                    "{}",
                    url(&c)
                );
                // sqlx takes what the exporter writes.
                let options: sqlx::postgres::PgConnectOptions = url(&c).parse().unwrap();
                assert!(format!("{:?}", options.get_ssl_mode())
                    .eq_ignore_ascii_case(&mode.name().replace('-', "")));
            }
        }
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
        let dir = files();
        let ca = dir.path().join("ca.pem");
        let c = config(&format!(
            "postgresql+asyncpg://u:p@h/db?ssl=require&sslrootcert={}",
            ca.display()
        ))
        .unwrap();
        assert_eq!(c.pg_tls.mode, SslMode::VerifyCa);
        assert_eq!(c.pg_tls.written.as_deref(), Some("ssl=require"));
        assert_eq!(c.pg_tls.root_cert.as_deref(), Some(ca.as_path()));
        assert!(url(&c).contains("sslmode=verify-ca"), "{}", url(&c));
    }

    #[test]
    fn verify_full_with_a_home_authority_and_a_client_certificate_is_read() {
        let dir = files();
        let p = |f: &str| dir.path().join(f);
        let c = config(&format!(
            "postgresql://u:p@db.home/med?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            p("ca.pem").display(),
            p("client.pem").display(),
            p("client.key").display()
        ))
        .unwrap();
        assert_eq!(
            c.pg_tls,
            PgTls {
                mode: SslMode::VerifyFull,
                written: None,
                root_cert: Some(p("ca.pem")),
                client_cert: Some(p("client.pem")),
                client_key: Some(p("client.key")),
            }
        );
    }

    #[test]
    fn an_unreadable_file_is_refused_naming_the_parameter_and_file_never_the_password_or_key() {
        let dir = files();
        let p = |f: &str| dir.path().join(f).display().to_string();
        let cases = [
            (
                format!("sslrootcert={}", p("missing.pem")),
                "sslrootcert: cannot read",
                "missing.pem",
            ),
            (
                format!("sslrootcert={}", p("client.key")),
                "sslrootcert:",
                "holds no PEM certificate",
            ),
            (
                format!("sslrootcert={}", dir.path().display()),
                "sslrootcert: cannot read",
                "",
            ),
            (
                format!("sslcert={}&sslkey={}", p("client.pem"), p("nokey")),
                "sslkey: cannot read",
                "nokey",
            ),
            (
                format!("sslcert={}&sslkey={}", p("client.pem"), p("client.pem")),
                "sslkey:",
                "holds no PEM private key",
            ),
            (
                format!("sslcert={}&sslkey={}", p("client.key"), p("client.key")),
                "sslcert:",
                "holds no PEM certificate",
            ),
            (
                format!("sslcert={}", p("client.pem")),
                "sslcert is given without sslkey",
                "",
            ),
            (
                format!("sslkey={}", p("client.key")),
                "sslkey is given without sslcert",
                "",
            ),
            (
                "sslmode=verify-fully".to_string(),
                "sslmode \"verify-fully\" is not one of",
                "",
            ),
            (
                format!("sslmode=disable&sslrootcert={}", p("ca.pem")),
                "sslmode=disable with sslrootcert",
                "",
            ),
        ];
        for (query, reason, also) in cases {
            let e = config(&format!("postgresql://u:S3cretPassw0rd@h/db?{query}")).unwrap_err();
            assert_eq!(e.var, "DATABASE_URL");
            let shown = e.to_string();
            assert!(
                shown.contains(reason) && shown.contains(also),
                "{query}: {shown}"
            );
            assert!(
                !shown.contains("S3cretPassw0rd") && !shown.contains("S3cretKeyBytes"),
                "{shown}"
            );
        }
    }
}
