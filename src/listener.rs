//! The daemon's HTTP listener (`VICTORIAMETRICS_HTTP_LISTEN_ADDR`):
//! `/health` for Docker and systemd, `/metrics` for VictoriaMetrics to scrape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (VICTORIAMETRICS_HTTP_LISTEN_ADDR): {source}")]
pub struct ListenError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` and serves until `cancel`; returns the bound address (the
/// port is chosen by the system when `addr` asks for port 0).
///
/// `grace` is how long exports may fail before `/health` says so.
pub async fn start(
    addr: SocketAddr,
    grace: Duration,
    cancel: CancellationToken,
) -> Result<SocketAddr, ListenError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, go on.
                        tracing::warn!(error = %e, "listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let service = hyper::service::service_fn(move |req| async move {
                Ok::<_, Infallible>(respond(&req, grace))
            });
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "listener: connection ended");
                }
            });
        }
    });
    Ok(bound)
}

fn respond(req: &Request<Incoming>, grace: Duration) -> Response<Full<Bytes>> {
    let t = telemetry::global();
    let now = SystemTime::now();
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/health") => {
            let h = t.health(now, grace);
            let status = if h.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "text/plain; charset=utf-8", h.text + "\n")
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, telemetry::CONTENT_TYPE, t.render(now))
        }
        (&Method::GET | &Method::HEAD, "/") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "myelectricaldata-vm-exporter: /health, /metrics\n".to_string(),
        ),
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /health or /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// Asks a running daemon's `/health` (the `health` command, for a Docker
/// HEALTHCHECK in an image without curl): `Ok` with its answer on 200.
pub async fn probe(addr: SocketAddr) -> Result<String, String> {
    // A daemon listening on every interface answers on loopback.
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{target}/health");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: no answer ({e}); is the daemon running with VICTORIAMETRICS_HTTP_LISTEN_ADDR={addr}?"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body.trim().to_string())
    } else {
        Err(format!("{url}: HTTP {}: {}", status.as_u16(), body.trim()))
    }
}
