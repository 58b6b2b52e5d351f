//! A small fault-injecting HTTP proxy between the exporter and a real
//! VictoriaMetrics: it passes requests through, or refuses connections,
//! delays, answers an error status, cuts a request mid-body, or hangs.
//! It runs on its own thread, so that tests may block while it serves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http::{loopback_listener, on_own_thread};

/// What the proxy does with the next requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward to VictoriaMetrics.
    Pass,
    /// Close every connection at once, before reading (like a server going away).
    Refuse,
    /// Answer this HTTP status without forwarding.
    Status(u16),
    /// Answer this HTTP status to imports only; pass anything else.
    ImportStatus(u16),
    /// Forward half of an import's body, then close both sides.
    CutMidBody,
    /// Forward, then wait this long before answering.
    Delay(Duration),
    /// Read the request and never answer.
    Hang,
    /// Answer 204 to an import and drop it: the acknowledgement of lines
    /// VictoriaMetrics never keeps. Anything else passes.
    Swallow,
    /// Forward an import without every n-th line, and pass its answer on:
    /// a batch acknowledged whole and stored in part.
    DropEveryNthLine(usize),
    /// Read-backs show every sample twice, as a replicated cluster whose
    /// vmselect does not deduplicate: `count_over_time` and `sum_over_time`
    /// answers doubled, each sample of `/api/v1/export` given twice.
    DoubleReadBack,
}

/// A running proxy.
pub struct Proxy {
    /// Its base URL.
    pub url: String,
    fault: Arc<Mutex<(Fault, Option<u32>)>>,
    hits: Arc<Mutex<u64>>,
}

impl Proxy {
    /// A proxy to `target` (`127.0.0.1:port`).
    pub fn start(target: &str) -> Self {
        let (std_listener, url) = loopback_listener();
        let fault = Arc::new(Mutex::new((Fault::Pass, None)));
        let hits = Arc::new(Mutex::new(0));
        let (f, h, target) = (fault.clone(), hits.clone(), target.to_string());
        on_own_thread(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (f, h, target) = (f.clone(), h.clone(), target.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &target, &f, &h).await;
                });
            }
        });
        Proxy { url, fault, hits }
    }

    /// Applies `fault` to every request from now on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = (fault, None);
    }

    /// Applies `fault` to the next `n` requests, then passes again.
    pub fn set_for(&self, fault: Fault, n: u32) {
        *self.fault.lock().unwrap() = (fault, Some(n));
    }

    /// Requests that met a fault so far.
    pub fn faults_served(&self) -> u64 {
        *self.hits.lock().unwrap()
    }
}

fn peek(f: &Mutex<(Fault, Option<u32>)>) -> Fault {
    f.lock().unwrap().0.clone()
}

/// The fault for this request, counted; a fault that does not apply to
/// it is not spent.
fn take(f: &Mutex<(Fault, Option<u32>)>, hits: &Mutex<u64>, is_import: bool) -> Fault {
    let mut g = f.lock().unwrap();
    let fault = g.0.clone();
    let imports_only = matches!(
        fault,
        Fault::ImportStatus(_) | Fault::Swallow | Fault::DropEveryNthLine(_)
    );
    if fault == Fault::DoubleReadBack {
        // Never used up: it stands for how the cluster is set up.
        return if is_import { Fault::Pass } else { fault };
    }
    if fault == Fault::Pass || (imports_only && !is_import) {
        return Fault::Pass;
    }
    *hits.lock().unwrap() += 1;
    if let Some(n) = g.1.as_mut() {
        *n -= 1;
        if *n == 0 {
            *g = (Fault::Pass, None);
        }
    }
    fault
}

/// Reads one HTTP/1.1 request: head and body (Content-Length only).
async fn read_request(s: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.split_off(head_end);
    Ok(Some((buf, body)))
}

/// The head with its Content-Length set to `len`.
fn with_length(head: &[u8], len: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(&format!("Content-Length: {len}\r\n"));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Rewrites the head so that the upstream closes after answering.
fn close_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

async fn serve(
    mut client: TcpStream,
    target: &str,
    f: &Mutex<(Fault, Option<u32>)>,
    hits: &Mutex<u64>,
) -> std::io::Result<()> {
    loop {
        if peek(f) == Fault::Refuse {
            take(f, hits, false);
            return Ok(());
        }
        let Some((head, body)) = read_request(&mut client).await? else {
            return Ok(());
        };
        let is_import = String::from_utf8_lossy(&head).contains("/import");
        let fault = take(f, hits, is_import);
        match fault {
            Fault::Status(code) | Fault::ImportStatus(code) => {
                let text = format!("injected {code}");
                let answer = format!(
                    "HTTP/1.1 {code} Injected\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
                    text.len()
                );
                client.write_all(answer.as_bytes()).await?;
                continue;
            }
            Fault::Swallow => {
                client
                    .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .await?;
                continue;
            }
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Fault::CutMidBody if is_import && body.len() > 1 => {
                let mut up = TcpStream::connect(target).await?;
                up.write_all(&head).await?;
                up.write_all(&body[..body.len() / 2]).await?;
                up.flush().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(());
            }
            _ => {}
        }
        let (head, body) = match fault {
            Fault::DropEveryNthLine(n) => {
                let kept: Vec<&[u8]> = body
                    .split_inclusive(|b| *b == b'\n')
                    .enumerate()
                    .filter(|(i, _)| (i + 1) % n != 0)
                    .map(|(_, l)| l)
                    .collect();
                let body = kept.concat();
                (with_length(&head, body.len()), body)
            }
            _ => (head, body),
        };
        let doubled = fault == Fault::DoubleReadBack && is_read_back(&head, &body);
        let mut up = TcpStream::connect(target).await?;
        if doubled {
            // HTTP/1.0: an answer of plain bytes, not chunked, to rewrite.
            let text =
                String::from_utf8_lossy(&close_head(&head)).replacen("HTTP/1.1", "HTTP/1.0", 1);
            up.write_all(text.as_bytes()).await?;
        } else {
            up.write_all(&close_head(&head)).await?;
        }
        up.write_all(&body).await?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        if doubled {
            answer = double_samples(&head, answer);
        }
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(d).await;
        }
        // The upstream closed after answering (Connection: close); so does the proxy.
        client.write_all(&answer).await?;
        return Ok(());
    }
}

/// Whether a request reads the mirror back: a count or sum over time, or
/// an export.
fn is_read_back(head: &[u8], body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(head);
    let body = String::from_utf8_lossy(body);
    head.contains("/api/v1/export")
        || (head.contains("/api/v1/query")
            && (body.contains("count_over_time") || body.contains("sum_over_time")))
}

/// An answer to a read-back with every sample twice.
fn double_samples(request: &[u8], answer: Vec<u8>) -> Vec<u8> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    if !answer.starts_with(b"HTTP/1.0 200") && !answer.starts_with(b"HTTP/1.1 200") {
        return answer;
    }
    let body = String::from_utf8_lossy(&answer[split + 4..]).to_string();
    let out = if String::from_utf8_lossy(request).contains("/api/v1/export") {
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in ["values", "timestamps"] {
                    let a = v[k].as_array().unwrap().clone();
                    v[k] = serde_json::Value::Array(a.iter().chain(&a).cloned().collect());
                }
                format!("{v}\n")
            })
            .collect::<String>()
    } else {
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for r in v["data"]["result"].as_array_mut().unwrap() {
            let x: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
            r["value"][1] = serde_json::Value::String(format!("{}", 2.0 * x));
        }
        v.to_string()
    };
    let mut doubled = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        out.len()
    )
    .into_bytes();
    doubled.extend_from_slice(out.as_bytes());
    doubled
}
