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

/// GET `url`; `None` when unreachable, silent past `TIMEOUT`, or unreadable.
pub async fn get(url: &str) -> Option<(u16, Bytes)> {
    let request = async {
        let resp = client().get(url.parse().ok()?).await.ok()?;
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
    let resp = tokio::time::timeout(TIMEOUT, client().get(url.parse().ok()?))
        .await
        .ok()?
        .ok()?;
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    Some((resp.status().as_u16(), location))
}
