//! Reading a build's sandbox through its agent's `/files` endpoints.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{url}: {reason}")]
    Agent { url: String, reason: String },
}

/// Largest chunk asked for at a time.
const CHUNK: u64 = 64 * 1024;

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The cluster CA (`CAIRN_CA`, read once) for agents that serve HTTPS.
fn cluster_ca() -> Result<&'static str, String> {
    static CA: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let path = std::env::var_os("CAIRN_CA")
            .ok_or("the agent speaks HTTPS: set CAIRN_CA to the cluster CA's certificate")?;
        std::fs::read_to_string(&path)
            .map_err(|e| format!("CAIRN_CA {}: {e}", std::path::Path::new(&path).display()))
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// GETs `url` from an agent's API: over HTTPS (an agent that joined the
/// cluster) only from a certificate of the cluster CA naming `agent_id`
/// (any agent of the cluster when the id is unknown).
async fn get(url: String, agent_id: Option<&str>) -> Result<Bytes, FilesError> {
    let err = |reason: String| FilesError::Agent {
        url: url.clone(),
        reason,
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| err(e.to_string()))?;
    let builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    let request = if url.starts_with("https://") {
        let ca = cluster_ca().map_err(err)?;
        let config = match agent_id {
            Some(id) => cairn_tls::agent_client_config(ca, None, id),
            None => cairn_tls::client_config(ca, None),
        }
        .map_err(|e| err(e.to_string()))?;
        builder
            .build::<_, Empty<Bytes>>(cairn_tls::agent_https_connector(config, false))
            .get(uri)
    } else {
        builder.build_http::<Empty<Bytes>>().get(uri)
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| err(cairn_tls::error_chain(&e)))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )));
    }
    Ok(body)
}

/// Up to 64 KiB of `path` from `offset` (empty at its end).
pub async fn read(
    agent_url: &str,
    agent_id: Option<&str>,
    path: &str,
    offset: u64,
) -> Result<Vec<u8>, FilesError> {
    let url = format!(
        "{agent_url}/files/read?path={}&offset={offset}&length={CHUNK}",
        encode(path)
    );
    let body = get(url.clone(), agent_id).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| FilesError::Agent {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    Ok(v["data"].as_str().unwrap_or_default().as_bytes().to_vec())
}

/// The whole of `path`.
pub async fn download(
    agent_url: &str,
    agent_id: Option<&str>,
    path: &str,
) -> Result<Bytes, FilesError> {
    get(
        format!("{agent_url}/files/download?path={}", encode(path)),
        agent_id,
    )
    .await
}
