//! Imports over plain HTTP/1.1 on hyper's connections, without reqwest.
//!
//! An export posts tens of thousands of 100-line batches; reqwest's layers
//! (redirects, which parse the URL twice a request, its pool, proxies,
//! timeouts) cost about as much CPU per request as hyper's own work, and
//! the profile put them at a fifth of a first export's CPU. This client
//! keeps a few kept-alive connections to one `http://` address and nothing
//! else. HTTPS, and a proxy named in the environment, stay with reqwest.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use url::Url;

/// How a request failed before an answer came, in reqwest's terms.
#[derive(Debug)]
pub struct Failure {
    /// No connection: the request surely did not reach the server.
    pub connect: bool,
    /// The time limit ran out.
    pub timeout: bool,
    /// What happened.
    pub reason: String,
}

/// Connections kept for later requests; more are opened when all are busy.
const KEPT: usize = 8;

/// A client for one `http://` endpoint.
#[derive(Debug)]
pub struct Direct {
    /// `host:port` to connect to.
    address: String,
    host: HeaderValue,
    /// The request target: path and query.
    target: hyper::Uri,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// The proxy variables reqwest follows: with any of them set, requests go
/// through reqwest so that the proxy is used as before.
const PROXY_VARIABLES: [&str; 4] = ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

impl Direct {
    /// A client for `url` when it is plain HTTP and no proxy is configured.
    pub fn for_url(
        url: &Url,
        authorization: Option<HeaderValue>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Option<Direct> {
        if PROXY_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return None;
        }
        Self::plain(url, authorization, timeout, connect_timeout)
    }

    /// A client for `url` when it is plain HTTP.
    fn plain(
        url: &Url,
        authorization: Option<HeaderValue>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Option<Direct> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        // An IPv6 literal keeps its brackets in host_str, as both need.
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Some(Direct {
            address: format!("{host}:{port}"),
            host: HeaderValue::from_str(&host_header).ok()?,
            target: target.parse().ok()?,
            authorization,
            timeout,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POSTs `body` as Prometheus text; the answer's status and body.
    pub async fn post(&self, body: Bytes) -> Result<(StatusCode, String), Failure> {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                connect: false,
                timeout: true,
                reason: "operation timed out".into(),
            }),
        }
    }

    async fn exchange(&self, body: Bytes) -> Result<(StatusCode, String), Failure> {
        // A kept connection the server closed meanwhile fails before the
        // request is written: then a new connection takes it.
        let (mut sender, reused) = match self.take_idle() {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.send_request(self.request(body.clone())).await {
            Err(e) if reused && e.is_canceled() => {
                sender = self.connect().await?;
                sender.send_request(self.request(body)).await
            }
            other => other,
        }
        .map_err(failed)?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(failed)?
            .to_bytes();
        if !sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < KEPT {
                    idle.push(sender);
                }
            }
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.target.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!(
                "myelectricaldata-vm-exporter/",
                env!("CARGO_PKG_VERSION")
            )),
        );
        if let Some(a) = &self.authorization {
            headers.insert(AUTHORIZATION, a.clone());
        }
        request
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let refused = |reason: String| Failure {
            connect: true,
            timeout: false,
            reason,
        };
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        {
            Err(_) => {
                return Err(Failure {
                    connect: true,
                    timeout: true,
                    reason: "operation timed out".into(),
                })
            }
            Ok(Err(e)) => return Err(refused(format!("tcp connect error: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        // Nagle's delay would hold each request's last segment.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| refused(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

fn failed(e: hyper::Error) -> Failure {
    let mut reason = e.to_string();
    super::push_sources(&mut reason, &e);
    Failure {
        connect: false,
        timeout: false,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(url: &str) -> Option<Direct> {
        let url = Url::parse(url).unwrap();
        Direct::plain(&url, None, Duration::from_secs(5), Duration::from_secs(5))
    }

    #[test]
    fn plain_http_is_posted_directly_with_its_path_query_and_host() {
        let d = direct(
            "http://vm.lan:8480/insert/0/prometheus/api/v1/import/prometheus?extra_label=a%3Db",
        )
        .unwrap();
        assert_eq!(d.address, "vm.lan:8480");
        assert_eq!(d.host, "vm.lan:8480");
        assert_eq!(
            d.target.to_string(),
            "/insert/0/prometheus/api/v1/import/prometheus?extra_label=a%3Db"
        );
        let d = direct("http://[::1]/api/v1/import/prometheus").unwrap();
        assert_eq!(
            (d.address.as_str(), d.host.to_str().unwrap()),
            ("[::1]:80", "[::1]")
        );
    }

    #[test]
    fn https_stays_with_reqwest() {
        assert!(direct("https://vm.example/api/v1/import/prometheus").is_none());
    }
}
