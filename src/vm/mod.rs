//! The VictoriaMetrics sink: import, delete and read back over HTTP.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{RequestBuilder, StatusCode};
use url::Url;

pub mod batch;
mod direct;
mod read;
pub mod retry;

use secrecy::ExposeSecret;

use crate::config::{Auth, VmConfig};
use crate::telemetry::{self, ErrorKind};

/// Path appended to `VICTORIAMETRICS_URL` for imports.
pub const IMPORT_PATH: &str = "/api/v1/import/prometheus";
/// Path appended to the delete base.
pub const DELETE_PATH: &str = "/api/v1/admin/tsdb/delete_series";
/// Path appended to the select base for raw reads.
pub const EXPORT_PATH: &str = "/api/v1/export";
/// Path appended to the select base for instant queries.
pub const QUERY_PATH: &str = "/api/v1/query";

/// An error talking to VictoriaMetrics. Never holds a secret: URLs carry
/// no credentials (they are moved to the Authorization header at start).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// No answer: refused, reset, timed out.
    #[error("VictoriaMetrics: {what} at {url}: {reason}")]
    Transport {
        /// What was being done.
        what: &'static str,
        /// Where.
        url: String,
        /// The transport's error, without the URL.
        reason: String,
        /// Whether the request surely did not reach the server (connection refused).
        not_sent: bool,
        /// Whether the time limit ran out.
        timed_out: bool,
    },
    /// An answer other than success.
    #[error("VictoriaMetrics: {what} at {url}: HTTP {status}: {body}")]
    Status {
        /// What was being done.
        what: &'static str,
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// An answer that is not what the Prometheus query API returns.
    #[error("VictoriaMetrics: unreadable answer to a read-back ({0})")]
    Answer(String),
}

impl SinkError {
    /// Transport errors, 408, 429 and 5xx may pass on a later try; other 4xx will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Transport { .. } => true,
            SinkError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            SinkError::Answer(_) => false,
        }
    }

    /// A 4xx that says these lines will never be accepted (not 401/403,
    /// which concern the credentials, nor 408/429, which pass with time).
    pub fn is_rejection(&self) -> bool {
        matches!(self, SinkError::Status { status, .. } if (400..500).contains(status) && !self.is_retryable() && !self.is_auth())
            && !self.is_wrong_endpoint()
    }

    /// 404, 405, or vminsert's 400 "unsupported path": the URL is wrong,
    /// not the lines, so no series is to blame.
    pub fn is_wrong_endpoint(&self) -> bool {
        match self {
            SinkError::Status {
                status: 404 | 405, ..
            } => true,
            SinkError::Status {
                status: 400, body, ..
            } => body.contains("unsupported path"),
            SinkError::Transport { .. } | SinkError::Status { .. } | SinkError::Answer(_) => false,
        }
    }

    /// 401 or 403: the credentials were refused; or vmauth 1.79's 400 for a
    /// token or user it does not know, which is no verdict on the lines.
    pub fn is_auth(&self) -> bool {
        match self {
            SinkError::Status {
                status: 401 | 403, ..
            } => true,
            SinkError::Status {
                status: 400, body, ..
            } => body.contains("cannot find the provided auth token"),
            SinkError::Transport { .. } | SinkError::Status { .. } | SinkError::Answer(_) => false,
        }
    }

    /// A failure of the TLS handshake: the server's certificate refused
    /// (unknown authority, another host name, expired) or ours.
    pub fn is_tls(&self) -> bool {
        match self {
            SinkError::Transport { reason, .. } => {
                let reason = reason.to_ascii_lowercase();
                reason.contains("certificate")
                    || reason.contains("tls")
                    || reason.contains("handshake")
            }
            SinkError::Status { .. } | SinkError::Answer(_) => false,
        }
    }

    /// The kind of failure, as `/metrics` counts it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SinkError::Transport {
                timed_out: true, ..
            } => ErrorKind::Timeout,
            SinkError::Transport { not_sent: true, .. } => ErrorKind::Connect,
            SinkError::Transport { .. } => ErrorKind::Connection,
            SinkError::Status {
                status: 408 | 429, ..
            } => ErrorKind::Throttled,
            SinkError::Status { status, .. } if *status >= 500 => ErrorKind::Server,
            _ if self.is_auth() => ErrorKind::Auth,
            _ => ErrorKind::Rejected,
        }
    }

    /// Whether VictoriaMetrics may have stored some of the request's lines
    /// even though it failed: only a refused connection proves it did not.
    pub fn may_have_landed(&self) -> bool {
        !matches!(self, SinkError::Transport { not_sent: true, .. })
    }
}

/// A VictoriaMetrics server (single node, cluster or a proxy before them).
#[derive(Debug, Clone)]
pub struct Sink {
    client: reqwest::Client,
    /// Imports to a plain-HTTP address without reqwest's per-request cost.
    direct: Option<std::sync::Arc<direct::Direct>>,
    /// The `Authorization` header of every request, marked sensitive.
    authorization: Option<hyper::header::HeaderValue>,
    cfg: VmConfig,
    import_url: Url,
    delete_url: Url,
    export_url: Url,
    query_url: Url,
}

fn join(base: &Url, path: &str) -> Url {
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&joined).unwrap_or_else(|_| base.clone())
}

impl Sink {
    /// A client for the configured endpoints.
    pub fn new(cfg: &VmConfig) -> Self {
        let builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!(
                "myelectricaldata-vm-exporter/",
                env!("CARGO_PKG_VERSION")
            ));
        // The configuration built a client with these files already: a
        // failure here cannot come from them, and a client without them
        // refuses a server they were needed for, saying why.
        let client = match cfg.tls.apply(builder).map(|b| b.build()) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the HTTP client could not be built with the TLS settings");
                reqwest::Client::default()
            }
            Err(e) => {
                tracing::error!(error = %e, "the HTTP client could not be built with the TLS settings");
                reqwest::Client::default()
            }
        };
        let import_url = join(&cfg.import_url, IMPORT_PATH);
        let authorization = authorization(&cfg.auth);
        let direct = direct::Direct::for_url(
            &import_url,
            authorization.clone(),
            cfg.timeout,
            cfg.timeout.min(Duration::from_secs(10)),
        );
        Self {
            client,
            direct: direct.map(std::sync::Arc::new),
            authorization,
            import_url,
            delete_url: join(&cfg.delete_url, DELETE_PATH),
            export_url: join(&cfg.select_url, EXPORT_PATH),
            query_url: join(&cfg.select_url, QUERY_PATH),
            cfg: cfg.clone(),
        }
    }

    /// The variables of the authentication in use, for the advice given
    /// when VictoriaMetrics refuses it.
    pub fn auth_variables(&self) -> &'static str {
        self.cfg.auth.variables()
    }

    /// `body` without the secrets of our `Authorization` header: vmauth
    /// 1.79 answers a token it does not know with the header's value
    /// (`cannot find the provided auth token "Bearer …" in config`), and
    /// answers reach the logs.
    fn redact(&self, body: &str) -> String {
        let mut body = body.to_string();
        let Some(header) = self.authorization.as_ref().and_then(|h| h.to_str().ok()) else {
            return body;
        };
        let secret = header.split_once(' ').map_or(header, |(_, s)| s);
        let mut secrets = vec![header, secret];
        match &self.cfg.auth {
            Auth::Basic(c) => secrets.push(c.password()),
            Auth::Bearer { token, .. } => secrets.push(token.expose_secret()),
            Auth::None => {}
        }
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            body = body.replace(s, "[REDACTED]");
        }
        body
    }

    /// The import endpoint, for logs.
    pub fn import_url(&self) -> &Url {
        &self.import_url
    }

    /// Every request but the direct imports goes through here: the one
    /// place the `Authorization` header is added.
    fn auth(&self, rb: RequestBuilder) -> RequestBuilder {
        match &self.authorization {
            Some(value) => rb.header(hyper::header::AUTHORIZATION, value.clone()),
            None => rb,
        }
    }

    async fn send(
        &self,
        what: &'static str,
        url: &Url,
        rb: RequestBuilder,
    ) -> Result<String, SinkError> {
        let response = self
            .auth(rb)
            .send()
            .await
            .map_err(|e| transport(what, url, e));
        let result = match response {
            Ok(response) => {
                let status = response.status();
                match response.text().await {
                    Err(e) => Err(transport(what, url, e)),
                    Ok(body) if status.is_success() => Ok(body),
                    Ok(body) => Err(status_error(what, url, status, &self.redact(&body))),
                }
            }
            Err(e) => Err(e),
        };
        count(&result);
        result
    }

    /// POSTs Prometheus text lines.
    pub async fn import(&self, body: Bytes) -> Result<(), SinkError> {
        if let Some(direct) = &self.direct {
            let what = "importing lines";
            let result = match direct.post(body).await {
                Ok((status, _)) if status.is_success() => Ok(()),
                Ok((status, answer)) => Err(status_error(
                    what,
                    &self.import_url,
                    status,
                    &self.redact(&answer),
                )),
                Err(f) => Err(SinkError::Transport {
                    what,
                    url: self.import_url.to_string(),
                    reason: format!(
                        "{}: {}",
                        if f.timeout {
                            "timed out"
                        } else if f.connect {
                            "cannot connect"
                        } else {
                            "connection failed"
                        },
                        f.reason
                    ),
                    not_sent: f.connect,
                    timed_out: f.timeout,
                }),
            };
            count(&result);
            return result;
        }
        let rb = self
            .client
            .post(self.import_url.clone())
            .header("Content-Type", "text/plain")
            .body(body);
        self.send("importing lines", &self.import_url, rb)
            .await
            .map(drop)
    }

    /// Deletes every series matching any of `selectors`, in one request.
    pub async fn delete_series(&self, selectors: &[&str]) -> Result<(), SinkError> {
        let form: Vec<(&str, &str)> = selectors.iter().map(|s| ("match[]", *s)).collect();
        let rb = self.client.post(self.delete_url.clone()).form(&form);
        self.send("deleting series", &self.delete_url, rb)
            .await
            .map(drop)
    }

    /// Raw samples of the series matching `selector` between two Unix
    /// times in seconds, as JSON lines.
    pub async fn export(&self, selector: &str, start: i64, end: i64) -> Result<String, SinkError> {
        let (start, end) = (start.to_string(), end.to_string());
        let form = [("match[]", selector), ("start", &start), ("end", &end)];
        let rb = self.client.post(self.export_url.clone()).form(&form);
        self.send("reading series back", &self.export_url, rb).await
    }

    /// An instant PromQL query at `time_ms`, its answer as JSON text. The
    /// cache is bypassed: a read-back must see what is stored now.
    pub async fn query(&self, expr: &str, time_ms: i64) -> Result<String, SinkError> {
        let time = format!(
            "{}.{:03}",
            time_ms.div_euclid(1000),
            time_ms.rem_euclid(1000)
        );
        let form = [("query", expr), ("time", &time), ("nocache", "1")];
        let rb = self.client.post(self.query_url.clone()).form(&form);
        self.send("querying for a read-back", &self.query_url, rb)
            .await
    }

    /// Asks VictoriaMetrics to drop its query cache, best effort. The cache
    /// takes samples older than a few minutes for final, and this exporter
    /// writes yesterday's readings today: without a reset, Grafana could
    /// keep showing a day as it was before its readings came. Deletes reset
    /// it by themselves; appends do not.
    pub async fn reset_query_cache(&self) {
        // vmselect serves it at its root, not below /select/<tenant>/prometheus.
        let mut base = self.cfg.select_url.clone();
        if base.path().contains("/select/") {
            base.set_path("");
        }
        let url = join(&base, "/internal/resetRollupResultCache");
        match self.auth(self.client.get(url.clone())).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::debug!(%url, status = r.status().as_u16(), "the query cache was not reset")
            }
            Err(e) => tracing::debug!(%url, error = %e, "the query cache was not reset"),
        }
    }

    /// GET on any path below the select base (`/metrics`, `/health` on a single node).
    pub async fn get_select(&self, path: &str) -> Result<String, SinkError> {
        let url = join(&self.cfg.select_url, path);
        let rb = self.client.get(url.clone());
        self.send("querying", &url, rb).await
    }
}

/// Counts a request's outcome for `/metrics`.
fn count<T>(result: &Result<T, SinkError>) {
    match result {
        Ok(_) => telemetry::global().request_succeeded(),
        Err(e) => {
            telemetry::global().error(e.kind());
            telemetry::global().request_failed(e);
        }
    }
}

/// The `Authorization` header of `auth`, marked sensitive so that no
/// debug output shows it. The configuration refused a token a header cannot
/// carry, and basic credentials are base64: the header is always valid.
fn authorization(auth: &Auth) -> Option<hyper::header::HeaderValue> {
    use base64::Engine;
    let text = match auth {
        Auth::None => return None,
        Auth::Basic(c) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                c.username,
                c.password()
            ))
        ),
        Auth::Bearer { token, .. } => format!("Bearer {}", token.expose_secret()),
    };
    let mut value = hyper::header::HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Appends the chain of `e`'s sources to `text`, each after ": ".
fn push_sources(text: &mut String, e: &dyn std::error::Error) {
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
}

fn transport(what: &'static str, url: &Url, e: reqwest::Error) -> SinkError {
    let not_sent = e.is_connect();
    let timed_out = e.is_timeout();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    let mut reason = kind.to_string();
    push_sources(&mut reason, &e);
    SinkError::Transport {
        what,
        url: url.to_string(),
        reason,
        not_sent,
        timed_out,
    }
}

fn status_error(what: &'static str, url: &Url, status: StatusCode, body: &str) -> SinkError {
    let mut body: String = body.trim().chars().take(300).collect();
    if body.is_empty() {
        body = status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string();
    }
    SinkError::Status {
        what,
        url: url.to_string(),
        status: status.as_u16(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> SinkError {
        SinkError::Status {
            what: "x",
            url: "u".into(),
            status: code,
            body: String::new(),
        }
    }

    #[test]
    fn transport_errors_408_429_and_5xx_are_retried_other_4xx_are_not() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        let refused = SinkError::Transport {
            what: "x",
            url: "u".into(),
            reason: String::new(),
            not_sent: true,
            timed_out: false,
        };
        assert!(refused.is_retryable());
        assert!(!refused.may_have_landed());
        assert!(status(503).may_have_landed());
        assert_eq!(refused.kind(), ErrorKind::Connect);
        let wrong_path = SinkError::Status {
            what: "x",
            url: "u".into(),
            status: 400,
            body: "unsupported path requested: \"/api/v1/import/prometheus\"".into(),
        };
        assert!(wrong_path.is_wrong_endpoint() && !wrong_path.is_rejection());
        assert!(status(404).is_wrong_endpoint() && !status(404).is_rejection());
        assert!(status(400).is_rejection() && status(422).is_rejection());
        assert!(status(401).is_auth() && status(403).is_auth() && !status(404).is_auth());
        let unknown_token = SinkError::Status {
            what: "x",
            url: "u".into(),
            status: 400,
            body: "cannot find the provided auth token \"[REDACTED]\" in config".into(),
        };
        assert!(unknown_token.is_auth() && !unknown_token.is_rejection());
        assert_eq!(unknown_token.kind(), ErrorKind::Auth);
    }

    #[test]
    fn an_answer_quoting_our_authorization_header_is_logged_without_its_secret() {
        let mut pairs = vec![
            ("DATABASE_URL", "postgresql://u@h/db"),
            ("VICTORIAMETRICS_BEARER_TOKEN", "Tok-3n"),
        ];
        let cfg = crate::config::Config::from_pairs(pairs.clone()).unwrap();
        let sink = Sink::new(&cfg.vm);
        let body = sink.redact("cannot find the provided auth token \"Bearer Tok-3n\" in config");
        assert_eq!(
            body,
            "cannot find the provided auth token \"[REDACTED]\" in config"
        );
        pairs.pop();
        pairs.push(("VICTORIAMETRICS_USERNAME", "alice"));
        pairs.push(("VICTORIAMETRICS_PASSWORD", "Pa55"));
        let cfg = crate::config::Config::from_pairs(pairs).unwrap();
        let sink = Sink::new(&cfg.vm);
        let header = "Basic YWxpY2U6UGE1NQ==";
        assert_eq!(sink.authorization.as_ref().unwrap(), header);
        let body = sink.redact("unknown \"Basic YWxpY2U6UGE1NQ==\", YWxpY2U6UGE1NQ== or Pa55");
        assert!(
            !body.contains("YWxpY2U6UGE1NQ") && !body.contains("Pa55"),
            "{body}"
        );
    }

    #[test]
    fn paths_join_onto_cluster_bases() {
        let base = Url::parse("http://vminsert:8480/insert/0/prometheus").unwrap();
        assert_eq!(
            join(&base, IMPORT_PATH).as_str(),
            "http://vminsert:8480/insert/0/prometheus/api/v1/import/prometheus"
        );
        let root = Url::parse("http://vm:8428/").unwrap();
        assert_eq!(
            join(&root, IMPORT_PATH).as_str(),
            "http://vm:8428/api/v1/import/prometheus"
        );
    }
}
