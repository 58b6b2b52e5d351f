//! A small HTTP/1.1 server on hyper, for the stand-ins the tests put in
//! front of the exporter or behind vmalert (a VictoriaMetrics cluster's
//! vminsert and vmselect, an Alertmanager), and the two client helpers
//! reqwest does not cover: a basic-authentication header's value, and a GET
//! without an async runtime (plain or over TLS).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// One request, its body read whole (hyper takes off a chunked framing).
pub struct Request {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    /// Lower-cased names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One answer.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, message: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain".into(),
            body: message.into().into_bytes(),
        }
    }
}

/// A running server, stopped when dropped.
pub struct Server {
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves every request on a free loopback port with `handler`, keep-alive
/// included. The server has its own thread and runtime, so that a test may
/// block (on the exporter, say) while it answers.
pub fn serve<H, F>(handler: H) -> Server
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let (listener, url) = loopback_listener();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = Arc::new(handler);
    on_own_thread(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(answer(&*handler, req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        // Dropping the runtime then ends the connections.
        let _ = stopped.await;
    });
    Server { url, _stop: stop }
}

/// A listener on a free loopback port, ready for a tokio runtime, and its
/// base URL.
pub fn loopback_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Runs `task` on a thread and a runtime of its own, so that a test may
/// block while it serves.
pub fn on_own_thread(task: impl Future<Output = ()> + Send + 'static) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(task)
    });
}

async fn answer<H, F>(handler: &H, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let (head, body) = req.into_parts();
    let response = match body.collect().await {
        Ok(body) => {
            handler(Request {
                method: head.method.as_str().to_string(),
                target: head
                    .uri
                    .path_and_query()
                    .map_or_else(|| head.uri.to_string(), |p| p.as_str().to_string()),
                headers: head
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        (k.as_str().to_string(), v)
                    })
                    .collect(),
                body: body.to_bytes().to_vec(),
            })
            .await
        }
        Err(e) => Response::text(400, format!("request body: {e}")),
    };
    let status = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = hyper::Response::builder().status(status);
    if status != hyper::StatusCode::NO_CONTENT && status != hyper::StatusCode::NOT_MODIFIED {
        builder = builder.header(hyper::header::CONTENT_TYPE, response.content_type);
    }
    builder
        .body(Full::new(Bytes::from(response.body)))
        .expect("a valid response")
}

/// The `Authorization` header's value for basic authentication, as
/// reqwest writes it.
pub fn basic_auth(user: &str, password: &str) -> String {
    let request = reqwest::Client::new()
        .get("http://127.0.0.1/")
        .basic_auth(user, Some(password))
        .build()
        .expect("a request");
    request.headers()[reqwest::header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .to_string()
}

/// A GET without an async runtime, to wait for a server's start-up; with
/// the `Authorization` header `authorization` unless it is empty.
pub fn get_blocking(port: u16, path: &str, authorization: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let auth = if authorization.is_empty() {
        String::new()
    } else {
        format!("Authorization: {authorization}\r\n")
    };
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// [`get_blocking`] over https, on a thread and runtime of its own (the
/// caller may be inside a runtime); the server's certificate is not checked:
/// the tests read what they serve, whatever certificate they gave it.
pub fn get_tls_blocking(port: u16, path: &str, authorization: &str) -> Result<String, String> {
    let url = format!("https://127.0.0.1:{port}{path}");
    let authorization = authorization.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut request = unverified_client().get(url);
            if !authorization.is_empty() {
                request = request.header("Authorization", authorization);
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            response.text().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the request's thread panicked".to_string())?
}

/// A client for the tests' own reads, over http or over https without
/// checking the certificate.
pub fn unverified_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}
