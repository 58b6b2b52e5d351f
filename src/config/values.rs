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
    // SQLAlchemy's asyncpg dialect spells sslmode "ssl" (and takes a
    // boolean there); sqlx wants sslmode.
    let url = match Url::parse(&url) {
        Ok(mut parsed) => {
            let mut pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    if k == "ssl" {
                        ("sslmode".into(), super::pg_tls::ssl_to_sslmode(&v))
                    } else {
                        (k.into_owned(), v.into_owned())
                    }
                })
                .collect();
            super::pg_tls::rewrite_modes(&mut pairs);
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
    use crate::model::arbitrary;
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    /// A label name the exporter takes.
    fn label_name() -> impl Strategy<Value = String> {
        "[a-zA-Z_][a-zA-Z0-9_]{0,15}".prop_filter("reserved", |n| {
            !n.starts_with("__") && !RESERVED_LABELS.contains(&n.as_str())
        })
    }

    /// A label name it refuses: a bad character, a leading digit, `__`,
    /// one of its own, or nothing.
    fn bad_label_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9][a-zA-Z0-9_]{0,8}",
            "[a-z_]{0,5}[-. :\u{e9}/{}\"\\\\\n][a-z0-9]{0,5}",
            "__[a-zA-Z0-9_]{0,8}",
            proptest::sample::select(RESERVED_LABELS.to_vec()).prop_map(String::from),
            Just(String::new()),
        ]
    }

    /// Percent-encodes every byte but unreserved ones, as a URL's user
    /// information needs.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// A password: long enough not to turn up in a message by chance, of
    /// characters a URL must encode as well as plain ones.
    fn password() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9:/@?#%+ !$&'()*,;=\u{e9}\\[\\]]{10,24}"
    }

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

    proptest::proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2_000,
            ..ProptestConfig::default()
        })]

        #[test]
        fn labels_round_trip_through_their_json(
            labels in proptest::collection::btree_map(
                label_name(),
                prop_oneof![
                    any::<String>().prop_map(serde_json::Value::from),
                    any::<i64>().prop_map(serde_json::Value::from),
                    any::<bool>().prop_map(serde_json::Value::from),
                ],
                0..6,
            ),
            pretty in any::<bool>(),
        ) {
            let object = serde_json::Value::Object(labels.clone().into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&object).unwrap() } else { object.to_string() };
            let want: BTreeMap<String, String> = labels
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            prop_assert_eq!(parse_labels(&text), Ok(want));
        }

        #[test]
        fn a_bad_label_name_or_value_is_refused_naming_the_label(
            good in proptest::collection::btree_map(label_name(), any::<String>(), 0..4),
            bad in bad_label_name(),
            bad_value in prop_oneof![
                Just(None),
                Just(Some(serde_json::Value::Null)),
                Just(Some(serde_json::json!(["x"]))),
                Just(Some(serde_json::json!({"a": "b"}))),
            ],
            good_name in label_name(),
        ) {
            let mut object: serde_json::Map<String, serde_json::Value> =
                good.into_iter().map(|(k, v)| (k, v.into())).collect();
            let named = match bad_value {
                None => {
                    object.insert(bad.clone(), "x".into());
                    bad
                }
                Some(v) => {
                    object.insert(good_name.clone(), v);
                    good_name
                }
            };
            let text = serde_json::Value::Object(object).to_string();
            let e = parse_labels(&text).unwrap_err();
            prop_assert!(e.contains(&format!("{named:?}")), "{}: {}", text, e);
        }

        #[test]
        fn any_labels_text_is_read_as_valid_names_or_refused(
            text in prop_oneof![
                arbitrary::text("{}\":, a-z_0-9"),
                arbitrary::json("a-z_0-9\\-").prop_map(|v| v.to_string()),
            ],
        ) {
            if let Ok(labels) = parse_labels(&text) {
                for name in labels.keys() {
                    prop_assert!(is_label_name(name) && !name.starts_with("__") && !RESERVED_LABELS.contains(&name.as_str()), "{:?}", name);
                }
            }
        }

        #[test]
        fn a_duration_reads_as_its_length_in_its_unit(
            n in prop_oneof![0u64..100, 0u64..1_000_000],
            tenths in proptest::option::of(0u64..10),
            unit in proptest::sample::select(vec![("", 1_000u64), ("s", 1_000), ("ms", 1), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]),
            space in proptest::sample::select(vec!["", " "]),
            pad in proptest::sample::select(vec!["", " ", "\t"]),
        ) {
            let (name, ms) = unit;
            let number = tenths.map_or(n.to_string(), |t| format!("{n}.{t}"));
            let text = format!("{pad}{number}{space}{name}{pad}");
            let want_ms = (n * 10 + tenths.unwrap_or(0)) * ms;
            let want = Duration::from_millis(want_ms) / 10;
            let got = parse_duration(&text);
            if want > Duration::from_secs(10 * 365 * 86_400) {
                prop_assert_eq!(got, None, "{:?}", text);
            } else {
                let got = got.ok_or_else(|| TestCaseError::fail(format!("{text:?} refused")))?;
                // Within a microsecond: the length goes through an f64 of seconds.
                let diff = got.abs_diff(want);
                prop_assert!(diff <= Duration::from_micros(1), "{:?}: {:?}, not {:?}", text, got, want);
            }
        }

        #[test]
        fn any_duration_text_is_up_to_ten_years_or_refused_quoting_it(
            text in prop_oneof![
                arbitrary::text("0-9.eE+\\-msdh ninf"),
                "[0-9]{1,20}(\\.[0-9]{0,20})?(ms|s|m|h|d)?",
            ],
        ) {
            if let Some(d) = parse_duration(&text) {
                prop_assert!(d <= Duration::from_secs(10 * 365 * 86_400), "{:?}", text);
            }
            match duration_var("VICTORIAMETRICS_TIMEOUT", Some(text.clone()), Duration::from_secs(1)) {
                Ok(d) => prop_assert!(!d.is_zero()),
                Err(e) => {
                    prop_assert_eq!(e.var.as_str(), "VICTORIAMETRICS_TIMEOUT");
                    prop_assert!(e.reason.contains(&format!("{:?}", text.trim())), "{}", e.reason);
                }
            }
        }

        #[test]
        fn a_listen_address_is_read_as_written_or_refused_quoting_it(
            ip in any::<std::net::IpAddr>(),
            port in any::<u16>(),
            form in 0usize..3,
            text in arbitrary::text("0-9.:\\[\\]a-f localhost"),
        ) {
            let addr = SocketAddr::new(ip, port);
            let (written, want) = match form {
                0 => (addr.to_string(), addr),
                1 => (format!(":{}", addr.port()), SocketAddr::from(([0, 0, 0, 0], addr.port()))),
                _ => (format!("localhost:{}", addr.port()), SocketAddr::from(([127, 0, 0, 1], addr.port()))),
            };
            prop_assert_eq!(listen_addr(Some(written.clone())).ok(), Some(Some(want)), "{:?}", written);
            match listen_addr(Some(text.clone())) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.reason.contains(&format!("{:?}", text.trim())), "{}", e.reason),
            }
        }

        #[test]
        fn a_base_url_is_read_with_its_credentials_moved_out(
            https in any::<bool>(),
            user in proptest::option::of(("[a-zA-Z0-9._@:%\u{e9} -]{1,12}", proptest::option::of(password()))),
            host in prop_oneof!["[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5})?", any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string())],
            port in proptest::option::of(1u16..),
            path in proptest::collection::vec("[a-z0-9]{1,8}", 0..4),
            slashes in 0usize..3,
        ) {
            let scheme = if https { "https" } else { "http" };
            let userinfo = match &user {
                None => String::new(),
                Some((u, None)) => format!("{}@", encode(u)),
                Some((u, Some(p))) => format!("{}:{}@", encode(u), encode(p)),
            };
            let port_text = port.map_or(String::new(), |p| format!(":{p}"));
            let text = format!("{scheme}://{userinfo}{host}{port_text}/{}{}", path.join("/"), "/".repeat(slashes));
            let (url, credentials) = parse_base_url("VICTORIAMETRICS_URL", &text)
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(url.username(), "");
            prop_assert_eq!(url.password(), None);
            prop_assert_eq!(url.scheme(), scheme);
            prop_assert_eq!(url.host_str(), Some(host.as_str()));
            let want_path = format!("/{}", path.join("/"));
            prop_assert_eq!(url.path(), want_path.as_str());
            match (&user, credentials) {
                (None, None) => {}
                (Some((u, p)), Some(c)) => {
                    prop_assert_eq!(&c.username, u);
                    prop_assert_eq!(c.password.expose_secret(), p.as_deref().unwrap_or(""));
                    if let Some(p) = p {
                        prop_assert!(!url.as_str().contains(p.as_str()) && !url.as_str().contains(&encode(p)));
                    }
                }
                (u, c) => prop_assert!(false, "{:?} gave {:?}", u, c),
            }
            // A select or delete base may not carry them.
            let other = other_base_url("VICTORIAMETRICS_SELECT_URL", Some(text.clone()), &url, "select");
            match (&user, other) {
                (None, Ok(u)) => prop_assert_eq!(u, url),
                (Some(_), Err(e)) => {
                    prop_assert_eq!(e.var.as_str(), "VICTORIAMETRICS_SELECT_URL");
                    if let Some((_, Some(p))) = &user {
                        prop_assert!(!e.reason.contains(p.as_str()) && !e.reason.contains(&encode(p)));
                    }
                }
                (u, o) => prop_assert!(false, "{:?} gave {:?}", u, o),
            }
        }

        #[test]
        fn any_base_url_text_is_read_or_refused_naming_the_variable_and_no_password(
            scheme in proptest::sample::select(vec!["http", "https", "ftp", "HTTP", "", "http:"]),
            sep in proptest::sample::select(vec!["://", ":/", ":", ""]),
            user in "[a-z:@]{0,6}",
            password in password(),
            rest in arbitrary::text("a-z0-9.:/?#@\\[\\]%"),
            encoded in any::<bool>(),
            text in arbitrary::text("a-z0-9.:/?#@%"),
        ) {
            let p = if encoded { encode(&password) } else { password.clone() };
            let written = format!("{scheme}{sep}{user}:{p}@{rest}");
            for (v, secret) in [(&written, Some(&password)), (&text, None)] {
                match parse_base_url("VICTORIAMETRICS_URL", v) {
                    Ok((url, _)) => {
                        prop_assert!(url.username().is_empty() && url.password().is_none());
                        prop_assert!(matches!(url.scheme(), "http" | "https") && url.host().is_some());
                    }
                    Err(e) => {
                        prop_assert_eq!(e.var.as_str(), "VICTORIAMETRICS_URL");
                        if let Some(s) = secret {
                            prop_assert!(!e.reason.contains(s.as_str()) && !e.reason.contains(&encode(s)), "{:?}: {}", v, e);
                        }
                    }
                }
            }
        }

        #[test]
        fn a_database_url_is_normalized_or_refused_without_its_password(
            scheme in proptest::sample::select(vec![
                "postgresql", "postgres", "postgresql+asyncpg", "postgres+psycopg", "mysql", "http", "", "postgresql:", "Postgresql",
            ]),
            sep in proptest::sample::select(vec!["://", "://", "://", ":/", ":", "", ":///"]),
            user in "[a-zA-Z0-9_]{1,8}",
            password in password(),
            encoded in any::<bool>(),
            host in prop_oneof!["[a-z][a-z0-9.-]{0,10}", arbitrary::text("a-z0-9.:/?#@%")],
            port in proptest::option::of(0u32..70_000),
            db in "[a-z_]{0,10}",
            query in proptest::option::of(proptest::collection::vec(
                (proptest::sample::select(vec!["ssl", "sslmode", "application_name", "x"]), "[a-z:/]{0,10}"),
                0..3,
            )),
        ) {
            let p = if encoded { encode(&password) } else { password.clone() };
            let port_text = port.map_or(String::new(), |p| format!(":{p}"));
            let query_text = query.as_ref().map_or(String::new(), |q| {
                let pairs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("?{}", pairs.join("&"))
            });
            let text = format!("{scheme}{sep}{user}:{p}@{host}{port_text}/{db}{query_text}");
            let simple_host = regex::Regex::new("^[a-z][a-z0-9-]*$").unwrap().is_match(&host);
            match normalize_database_url(&text) {
                Ok(url) => {
                    let url = Url::parse(url.expose_secret())
                        .map_err(|e| TestCaseError::fail(format!("{text:?} gave no URL: {e}")))?;
                    prop_assert_eq!(url.scheme(), "postgresql");
                    prop_assert!(!url.query_pairs().any(|(k, _)| k == "ssl"), "{}", url);
                    if encoded && sep == "://" && simple_host {
                        prop_assert_eq!(url.username(), user.as_str());
                        prop_assert_eq!(url.password(), Some(p.as_str()));
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.var.as_str(), "DATABASE_URL");
                    let shown = e.to_string();
                    prop_assert!(
                        !shown.contains(password.as_str()) && !shown.contains(&encode(&password)),
                        "{:?}: {}", text, shown
                    );
                    // A well-formed URL of the schemes taken is not refused.
                    let well_formed = ["postgresql", "postgres", "postgresql+asyncpg", "postgres+psycopg"].contains(&scheme)
                        && sep == "://"
                        && encoded
                        && port.is_none_or(|p| p <= 65_535)
                        && simple_host;
                    prop_assert!(!well_formed, "{:?}: {}", text, shown);
                }
            }
        }

        #[test]
        fn any_database_url_text_is_normalized_or_refused(
            text in prop_oneof![
                arbitrary::text("a-z0-9.:/?#@%+=&"),
                arbitrary::text("a-z0-9.:/?#@%+=&").prop_map(|t| format!("postgresql://{t}")),
            ],
        ) {
            if let Err(e) = normalize_database_url(&text) {
                prop_assert_eq!(e.var.as_str(), "DATABASE_URL");
            }
        }

        #[test]
        fn a_batch_size_is_a_number_of_lines_from_1_to_a_million_or_refused_quoting_it(
            n in prop_oneof![1usize..=1_000_000, any::<usize>()],
            pad in proptest::sample::select(vec!["", " ", "\t"]),
            text in arbitrary::text("0-9+\\- "),
        ) {
            let config = |v: &str| {
                super::super::Config::from_pairs([
                    ("DATABASE_URL", "postgresql://u:p@db/med"),
                    ("VICTORIAMETRICS_BATCH_SIZE", v),
                ])
            };
            let written = format!("{pad}{n}{pad}");
            match config(&written) {
                Ok(c) => prop_assert_eq!(c.vm.batch_size.get(), n),
                Err(e) => {
                    prop_assert!(n > 1_000_000);
                    prop_assert_eq!(e.var.as_str(), "VICTORIAMETRICS_BATCH_SIZE");
                    prop_assert!(e.reason.contains(&format!("{:?}", n.to_string())), "{}", e.reason);
                }
            }
            match config(&text) {
                // Empty means the default.
                Ok(c) if text.trim().is_empty() => prop_assert_eq!(c.vm.batch_size.get(), 100),
                Ok(c) => prop_assert_eq!(text.trim().parse::<usize>().ok(), Some(c.vm.batch_size.get())),
                Err(e) => prop_assert!(e.reason.contains(&format!("{:?}", text.trim())), "{}", e.reason),
            }
        }
    }
}
