//! How the exporter proves who it is to VictoriaMetrics and whom it trusts:
//! the `Authorization` header (none, basic, bearer) and TLS (extra roots
//! from a home certificate authority, a client certificate).
//!
//! Files are read and their PEM parsed here, at start, so that a bad file
//! stops the program as a configuration error naming its variable and path,
//! rather than when the first request is built. No error carries a file's
//! contents or a secret.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::ConfigError;

const TOKEN: &str = "VICTORIAMETRICS_BEARER_TOKEN";
const TOKEN_FILE: &str = "VICTORIAMETRICS_BEARER_TOKEN_FILE";
const CA_FILE: &str = "VICTORIAMETRICS_TLS_CA_FILE";
const CERT_FILE: &str = "VICTORIAMETRICS_TLS_CERT_FILE";
const KEY_FILE: &str = "VICTORIAMETRICS_TLS_KEY_FILE";

/// Basic-auth credentials for VictoriaMetrics.
#[derive(Clone)]
pub struct Credentials {
    /// The user name (not secret, but kept out of logs all the same).
    pub username: String,
    /// The password, exposed only where the request is built.
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([REDACTED])")
    }
}

impl Credentials {
    /// The password, for the one call that builds the request.
    pub fn password(&self) -> &str {
        self.password.expose_secret()
    }
}

/// Where a bearer token came from, for `check` to say (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `VICTORIAMETRICS_BEARER_TOKEN`.
    Environment,
    /// `VICTORIAMETRICS_BEARER_TOKEN_FILE`, read at start.
    File(PathBuf),
}

/// How every request to VictoriaMetrics authenticates: one
/// `Authorization` header, the same on imports, reads and deletes.
#[derive(Clone, Default)]
pub enum Auth {
    /// No header.
    #[default]
    None,
    /// `Authorization: Basic …` (VICTORIAMETRICS_USERNAME/PASSWORD, or
    /// credentials written in VICTORIAMETRICS_URL).
    Basic(Credentials),
    /// `Authorization: Bearer …` (vmauth's `bearer_token`, hosted offers).
    Bearer {
        /// The token, exposed only where the header is built.
        token: SecretString,
        /// Where it was read.
        source: TokenSource,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic(_) => f.write_str("Basic([REDACTED])"),
            Auth::Bearer { source, .. } => write!(f, "Bearer([REDACTED] from {source:?})"),
        }
    }
}

impl Auth {
    /// What authenticates, in words for `check`: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Auth::None => "none".into(),
            Auth::Basic(c) => format!("basic, as user {:?}", c.username),
            Auth::Bearer {
                source: TokenSource::Environment,
                ..
            } => format!("bearer token from the environment ({TOKEN})"),
            Auth::Bearer {
                source: TokenSource::File(path),
                ..
            } => format!("bearer token from file {} ({TOKEN_FILE})", path.display()),
        }
    }

    /// The variables that set this authentication, for the advice given
    /// when VictoriaMetrics refuses it.
    pub fn variables(&self) -> &'static str {
        match self {
            Auth::None => "VICTORIAMETRICS_BEARER_TOKEN or VICTORIAMETRICS_USERNAME and VICTORIAMETRICS_PASSWORD",
            Auth::Basic(_) => "VICTORIAMETRICS_USERNAME and VICTORIAMETRICS_PASSWORD",
            Auth::Bearer {
                source: TokenSource::Environment,
                ..
            } => TOKEN,
            Auth::Bearer {
                source: TokenSource::File(_),
                ..
            } => TOKEN_FILE,
        }
    }
}

/// The token of `VICTORIAMETRICS_BEARER_TOKEN` or of the file
/// `VICTORIAMETRICS_BEARER_TOKEN_FILE` names (one of them, not both).
pub(super) fn bearer(
    inline: Option<String>,
    file: Option<String>,
) -> Result<Option<(SecretString, TokenSource)>, ConfigError> {
    let (token, var, source) = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                TOKEN_FILE,
                format!("is set together with {TOKEN} (set one of them, not both)"),
            ))
        }
        (Some(token), None) => (token, TOKEN, TokenSource::Environment),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(TOKEN_FILE, format!("cannot read {}: {e}", path.display()))
            })?;
            // An editor's or `echo`'s line end is not part of the token.
            let token = text.trim_end_matches(['\n', '\r']).to_string();
            if token.is_empty() {
                return Err(ConfigError::new(
                    TOKEN_FILE,
                    format!("{} is empty", path.display()),
                ));
            }
            (token, TOKEN_FILE, TokenSource::File(path))
        }
    };
    // The token goes in a header: anything but visible ASCII would make the
    // header invalid, and the request would leave without it.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            var,
            "holds a character other than visible ASCII (a space, a line break or a control character): a token is a single word",
        ));
    }
    Ok(Some((SecretString::from(token), source)))
}

/// A client certificate presented to VictoriaMetrics (or the proxy before
/// it) when it asks for one.
#[derive(Clone)]
pub struct ClientCert {
    /// `VICTORIAMETRICS_TLS_CERT_FILE`.
    pub cert_file: PathBuf,
    /// `VICTORIAMETRICS_TLS_KEY_FILE`.
    pub key_file: PathBuf,
    /// The certificate then the key, as reqwest's `Identity::from_pem` takes them.
    pem: SecretString,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// TLS beyond the defaults: roots trusted besides the public ones, a
/// client certificate. Server certificates are always verified.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// `VICTORIAMETRICS_TLS_CA_FILE`, when set.
    pub ca_file: Option<PathBuf>,
    /// Its certificates, each trusted as a root.
    roots: Vec<reqwest::Certificate>,
    /// The client certificate, when set.
    pub client: Option<ClientCert>,
}

/// Why a [`Tls`] could not be applied to a client builder.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The client certificate and key do not make an identity.
    #[error("the client certificate and key are not usable: {0}")]
    Identity(String),
}

impl Tls {
    /// Reads and checks the three `VICTORIAMETRICS_TLS_*` files.
    pub(super) fn load(
        ca_file: Option<String>,
        cert_file: Option<String>,
        key_file: Option<String>,
    ) -> Result<Tls, ConfigError> {
        let mut tls = Tls::default();
        if let Some(path) = ca_file.map(PathBuf::from) {
            let pem = read(CA_FILE, &path)?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ConfigError::new(
                    CA_FILE,
                    format!(
                        "{} is not a PEM certificate bundle ({})",
                        path.display(),
                        reason(&e)
                    ),
                )
            })?;
            if roots.is_empty() {
                return Err(ConfigError::new(
                    CA_FILE,
                    format!(
                        "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                        path.display()
                    ),
                ));
            }
            // The bundle's certificates are parsed only when a client is
            // built: build one now, so that a bad one is named at start.
            let mut builder = reqwest::Client::builder();
            for root in &roots {
                builder = builder.add_root_certificate(root.clone());
            }
            builder.build().map_err(|e| {
                ConfigError::new(
                    CA_FILE,
                    format!(
                        "{} holds a certificate that cannot be used ({})",
                        path.display(),
                        reason(&e)
                    ),
                )
            })?;
            tls.ca_file = Some(path);
            tls.roots = roots;
        }
        let both = format!("{CERT_FILE} and {KEY_FILE}");
        match (cert_file.map(PathBuf::from), key_file.map(PathBuf::from)) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::new(
                    KEY_FILE,
                    format!(
                        "is not set while {CERT_FILE} is: a client certificate needs both {both}"
                    ),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    CERT_FILE,
                    format!(
                        "is not set while {KEY_FILE} is: a client certificate needs both {both}"
                    ),
                ))
            }
            (Some(cert_file), Some(key_file)) => {
                let cert = read(CERT_FILE, &cert_file)?;
                let key = read(KEY_FILE, &key_file)?;
                if !contains(&cert, b"-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        CERT_FILE,
                        format!(
                            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                            cert_file.display()
                        ),
                    ));
                }
                if !contains(&key, b"PRIVATE KEY-----") {
                    return Err(ConfigError::new(
                        KEY_FILE,
                        format!(
                            "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
                            key_file.display()
                        ),
                    ));
                }
                let mut pem = cert;
                pem.push(b'\n');
                pem.extend_from_slice(&key);
                // Not UTF-8 cannot be PEM; the bytes are not shown.
                let pem = String::from_utf8(pem).map_err(|_| {
                    ConfigError::new(
                        &both,
                        format!(
                            "{} or {} is not PEM text",
                            cert_file.display(),
                            key_file.display()
                        ),
                    )
                })?;
                let client = ClientCert {
                    cert_file,
                    key_file,
                    pem: SecretString::from(pem),
                };
                Tls {
                    ca_file: None,
                    roots: Vec::new(),
                    client: Some(client.clone()),
                }
                .apply(reqwest::Client::builder())
                .and_then(|b| b.build().map_err(|e| TlsError::Identity(reason(&e))))
                .map_err(|e| {
                    ConfigError::new(
                        &both,
                        format!(
                            "{} with {}: {e}",
                            client.cert_file.display(),
                            client.key_file.display()
                        ),
                    )
                })?;
                tls.client = Some(client);
            }
        }
        Ok(tls)
    }

    /// `builder` trusting the extra roots and presenting the client
    /// certificate.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if let Some(client) = &self.client {
            let identity = reqwest::Identity::from_pem(client.pem.expose_secret().as_bytes())
                .map_err(|e| TlsError::Identity(reason(&e)))?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }

    /// Whether any `VICTORIAMETRICS_TLS_*` file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client.is_some()
    }
}

fn read(var: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A reqwest error and its sources on one line (its own text is only
/// "builder error").
fn reason(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
