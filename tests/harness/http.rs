use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// How long one request may take: a stopped (SIGSTOP) master accepts
/// connections in the kernel but never answers.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The `Authorization` the harness's own requests carry (a test of a
/// cluster that asks for credentials sets it once, before it starts).
static OPERATOR: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

pub fn set_operator(authorization: Option<String>) {
    if let Ok(mut o) = OPERATOR.write() {
        *o = authorization;
    }
}

/// The cluster CAs the harness's HTTPS requests trust (a test of a cluster
/// with `--cluster-dir` adds its CA before it starts; tests in one process
/// run side by side, so each adds rather than replaces).
static CAS: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

pub fn trust_ca(ca_pem: &str) {
    if let Ok(mut c) = CAS.write() {
        c.push_str(ca_pem);
        c.push('\n');
    }
}

/// A client for `https` URLs, trusting the CAs given to [`trust_ca`] (or
/// only `ca_pem`).
pub fn https_client(
    ca_pem: Option<&str>,
) -> Option<Client<cairn_tls::HttpsConnector, Empty<Bytes>>> {
    let ca = match ca_pem {
        Some(c) => c.to_string(),
        None => CAS.read().ok()?.clone(),
    };
    let config = cairn_tls::client_config(&ca, None).ok()?;
    Some(Client::builder(TokioExecutor::new()).build(cairn_tls::https_connector(config, false)))
}

async fn send(req: hyper::Request<Empty<Bytes>>) -> Option<hyper::Response<hyper::body::Incoming>> {
    if req.uri().scheme_str() == Some("https") {
        https_client(None)?.request(req).await.ok()
    } else {
        client().request(req).await.ok()
    }
}

fn operator() -> Option<String> {
    OPERATOR.read().ok().and_then(|o| o.clone())
}

/// GET `url`; `None` when unreachable, silent past `TIMEOUT`, or unreadable.
pub async fn get(url: &str) -> Option<(u16, Bytes)> {
    get_as(url, operator().as_deref()).await
}

/// GET `url` with `authorization` (none: without credentials).
pub async fn get_as(url: &str, authorization: Option<&str>) -> Option<(u16, Bytes)> {
    let mut req = hyper::Request::get(url.parse::<hyper::Uri>().ok()?);
    if let Some(a) = authorization {
        req = req.header(hyper::header::AUTHORIZATION, a);
    }
    let req = req.body(Empty::new()).ok()?;
    let request = async {
        let resp = send(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(TIMEOUT, request).await.ok().flatten()
}

pub async fn get_json(url: &str) -> Option<Value> {
    let (status, body) = get(url).await?;
    if !(200..300).contains(&status) {
        return None;
    }
    serde_json::from_slice(&body).ok()
}

/// GET `url` without following redirects: the status and `Location`.
pub async fn get_location(url: &str) -> Option<(u16, Option<String>)> {
    let req = hyper::Request::get(url.parse::<hyper::Uri>().ok()?)
        .body(Empty::new())
        .ok()?;
    let resp = tokio::time::timeout(TIMEOUT, send(req)).await.ok()??;
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    Some((resp.status().as_u16(), location))
}

/// A response whose body is read as it arrives (a Mesos event stream).
pub struct Streaming {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    passed: std::collections::VecDeque<Value>,
}

impl Streaming {
    /// The next RecordIO record as JSON; `None` when the stream ended or
    /// nothing came within `timeout`.
    pub async fn next_record(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let len: usize = std::str::from_utf8(&self.buf[..nl]).ok()?.parse().ok()?;
                if self.buf.len() > nl + len {
                    let payload: Vec<u8> = self.buf.drain(..=nl + len).skip(nl + 1).collect();
                    return serde_json::from_slice(&payload).ok();
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next record of `type`, also one passed over by an earlier
    /// `next_of` (records of other types are kept for later calls).
    pub async fn next_of(&mut self, ty: &str, timeout: Duration) -> Option<Value> {
        if let Some(i) = self.passed.iter().position(|r| r["type"] == ty) {
            return self.passed.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.next_record(left).await?;
            if r["type"] == ty {
                return Some(r);
            }
            self.passed.push_back(r);
        }
    }
}

fn post_request(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<hyper::Request<http_body_util::Full<Bytes>>> {
    let mut req = hyper::Request::post(url.parse::<hyper::Uri>().ok()?);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let explicit = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
    if let Some(a) = operator().filter(|_| !explicit) {
        req = req.header(hyper::header::AUTHORIZATION, a);
    }
    req.body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .ok()
}

/// POST `body` with `headers`; the status, headers and whole body.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, hyper::HeaderMap, Bytes)> {
    let request = async {
        let req = post_request(url, headers, body)?;
        let resp = if url.starts_with("https://") {
            let ca = CAS.read().ok()?.clone();
            let config = cairn_tls::client_config(&ca, None).ok()?;
            Client::builder(TokioExecutor::new())
                .build(cairn_tls::https_connector(config, false))
                .request(req)
                .await
                .ok()?
        } else {
            Client::builder(TokioExecutor::new())
                .build_http()
                .request(req)
                .await
                .ok()?
        };
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, h, body))
    };
    tokio::time::timeout(TIMEOUT, request).await.ok().flatten()
}

/// POST, keeping the response body open as a stream.
pub async fn post_streaming(url: &str, headers: &[(&str, &str)], body: &str) -> Option<Streaming> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(TIMEOUT, client.request(post_request(url, headers, body)?))
        .await
        .ok()?
        .ok()?;
    Some(Streaming {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.into_body(),
        buf: Vec::new(),
        passed: std::collections::VecDeque::new(),
    })
}
