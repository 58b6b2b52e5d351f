//! Each variable's text turned into a typed value, with the reason it is
//! refused: durations, booleans, labels, listen addresses, VictoriaMetrics
//! bases and the database URL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::{ConfigError, Credentials, DEFAULT_LISTEN_PORT};
use crate::model::RESERVED_LABELS;

pub(super) fn listen_addr(value: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    Ok(match nonempty(value) {
        None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_LISTEN_PORT))),
        Some(v) if v.eq_ignore_ascii_case("off") => None,
        Some(v) => Some(parse_listen_addr(&v).ok_or_else(|| {
            ConfigError::new(
                "VICTORIAMETRICS_HTTP_LISTEN_ADDR",
                format!("expected host:port (such as 0.0.0.0:{DEFAULT_LISTEN_PORT} or :{DEFAULT_LISTEN_PORT}) or off, got {v:?}"),
            )
        })?),
    })
}

/// `host:port`, `[v6]:port` or `:port` (all interfaces), as vmagent's
/// `-httpListenAddr` takes them; `localhost` is the one name resolved.
pub(super) fn parse_listen_addr(v: &str) -> Option<SocketAddr> {
    if let Some(port) = v.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
    }
    if let Some(port) = v.strip_prefix("localhost:") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)));
    }
    v.parse().ok()
}

pub(super) fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub(super) fn duration_var(
    var: &'static str,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match nonempty(v) {
        None => Ok(default),
        Some(v) => match parse_duration(&v) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(ConfigError::new(
                var,
                format!("expected a positive duration such as 500ms, 30s, 5m or 1h, got {v:?}"),
            )),
        },
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` or a bare number of seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    if !seconds.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&seconds) {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

/// Parses `VICTORIAMETRICS_LABELS`: a JSON object of string (or number) values.
pub fn parse_labels(v: &str) -> Result<BTreeMap<String, String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(v).map_err(|e| format!("is not valid JSON ({e})"))?;
    let object = value
        .as_object()
        .ok_or("must be a JSON object such as {\"home\":\"paris\"}")?;
    let mut labels = BTreeMap::new();
    for (name, value) in object {
        if !is_label_name(name) {
            return Err(format!(
                "{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        if name.starts_with("__") {
            return Err(format!(
                "{name:?}: label names beginning with __ are reserved"
            ));
        }
        if RESERVED_LABELS.contains(&name.as_str()) {
            return Err(format!("{name:?} is a label the exporter sets itself"));
        }
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(format!("the value of {name:?} must be a string")),
        };
        labels.insert(name.clone(), value);
    }
    Ok(labels)
}

pub(super) fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a VictoriaMetrics base URL; credentials written in it are moved out
/// so that the URL can appear in logs.
pub(super) fn parse_base_url(
    var: &'static str,
    v: &str,
) -> Result<(Url, Option<Credentials>), ConfigError> {
    let mut url =
        Url::parse(v).map_err(|e| ConfigError::new(var, format!("is not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(
            var,
            "must be an http:// or https:// URL with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(var, "must not have a query or fragment"));
    }
    let credentials = if !url.username().is_empty() || url.password().is_some() {
        let username = percent_decode(url.username());
        let password = SecretString::from(url.password().map(percent_decode).unwrap_or_default());
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Some(Credentials { username, password })
    } else {
        None
    };
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok((url, credentials))
}

/// The read or delete base: its own variable, or the import base, which
/// cannot serve for a cluster's vminsert (it neither reads nor deletes).
pub(super) fn other_base_url(
    var: &'static str,
    value: Option<String>,
    import_url: &Url,
    verb: &str,
) -> Result<Url, ConfigError> {
    match nonempty(value) {
        Some(u) => match parse_base_url(var, &u)? {
            (_, Some(_)) => Err(ConfigError::new(
                var,
                "must not carry credentials: VICTORIAMETRICS_USERNAME and VICTORIAMETRICS_PASSWORD serve all three URLs",
            )),
            (url, None) => Ok(url),
        },
        None if import_url.path().contains("/insert/") => Err(ConfigError::new(
            var,
            format!("must be set when VICTORIAMETRICS_URL is a vminsert base (/insert/<tenant>/prometheus): vmselect's http://vmselect:8481/{verb}/<tenant>/prometheus"),
        )),
        None => Ok(import_url.clone()),
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns MyElectricalData's SQLAlchemy URL (`postgresql+asyncpg://…`) into
/// one sqlx takes; the URL's text never reaches an error message.
pub(super) fn normalize_database_url(v: &str) -> Result<SecretString, ConfigError> {
    let (scheme, rest) = v.split_once("://").ok_or_else(|| {
        ConfigError::new("DATABASE_URL", "is not a URL (expected postgresql://…)")
    })?;
    // What comes before the first "://" is quoted only when it can be a
    // scheme: in a URL written without one, it runs through the password.
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return Err(ConfigError::new(
            "DATABASE_URL",
            "is not a URL (expected postgresql://…)",
        ));
    }
    let base = scheme.split('+').next().unwrap_or(scheme);
    if !matches!(base, "postgresql" | "postgres") {
        return Err(ConfigError::new(
            "DATABASE_URL",
            format!("scheme {scheme:?} is not PostgreSQL (expected postgresql:// or postgresql+asyncpg://)"),
        ));
    }
    let url = format!("postgresql://{rest}");
    // SQLAlchemy's asyncpg dialect spells sslmode "ssl"; sqlx wants sslmode.
    let url = match Url::parse(&url) {
        Ok(mut parsed) => {
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    if k == "ssl" {
                        ("sslmode".into(), v.into_owned())
                    } else {
                        (k.into_owned(), v.into_owned())
                    }
                })
                .collect();
            if pairs.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => return Err(ConfigError::new("DATABASE_URL", "is not a valid URL")),
    };
    Ok(SecretString::from(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_password_without_a_user_name_is_moved_out_of_the_url_too() {
        // Found by a property: only a user name used to move credentials
        // out, and this URL kept its password, to be logged.
        let (url, credentials) =
            parse_base_url("VICTORIAMETRICS_URL", "http://:s3cret@vm:8428/").unwrap();
        assert_eq!(url.as_str(), "http://vm:8428/");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.username, "");
        assert_eq!(credentials.password.expose_secret(), "s3cret");
    }

    #[test]
    fn a_database_url_without_a_scheme_is_refused_without_quoting_it() {
        // Found by a property: the text before the first "://", quoted as
        // the scheme, held the password when "://" came later.
        for url in [
            "mysql:/med:s3cret@db/med?ssl=://",
            "med:s3cret@db/med?application_name=http://x",
        ] {
            let e = normalize_database_url(url).unwrap_err();
            assert_eq!(e.var, "DATABASE_URL");
            assert!(!e.to_string().contains("s3cret"), "{e}");
            assert!(e.reason.contains("is not a URL"), "{e}");
        }
        let e = normalize_database_url("mysql://med:s3cret@db/med").unwrap_err();
        assert!(e.reason.contains("scheme \"mysql\""), "{e}");
    }
}
