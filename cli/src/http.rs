//! A minimal HTTP/1 GET client for the master's and agents' JSON endpoints.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} did not return JSON: {reason}")]
    Json { url: String, reason: String },
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    /// With `CAIRN_CA` (the cluster CA's certificate): HTTPS to masters,
    /// trusting only masters that CA certified; or why it cannot be read.
    tls: Option<Result<(String, cairn_tls::ClientConfig), String>>,
    /// HTTP Basic of `CAIRN_PRINCIPAL` and `CAIRN_SECRET`, when both are set.
    authorization: Option<String>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// The caller's credential from the environment (`main` puts the config
/// file's there when the environment has none).
pub fn credential() -> Option<(String, String)> {
    let principal = std::env::var("CAIRN_PRINCIPAL").ok()?;
    let secret = std::env::var("CAIRN_SECRET").ok()?;
    Some((principal, secret))
}

impl HttpClient {
    pub fn new() -> Self {
        let tls = std::env::var_os("CAIRN_CA").map(|path| {
            std::fs::read_to_string(&path)
                .map_err(|e| format!("CAIRN_CA {}: {e}", std::path::Path::new(&path).display()))
                .and_then(|pem| {
                    let config = cairn_tls::client_config(&pem, None)
                        .map_err(|e| format!("CAIRN_CA: {e}"))?;
                    Ok((pem, config))
                })
        });
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
            tls,
            authorization: credential().map(|(p, s)| cairn_model::auth::basic_value(&p, &s)),
        }
    }

    /// The URL of `path` on the master at `leader`: HTTPS when the cluster
    /// CA is given.
    pub fn master_url(&self, leader: &str, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{leader}{path}")
    }

    fn tls_config(&self, url: &str) -> Result<cairn_tls::ClientConfig, HttpError> {
        self.tls(url).map(|(_, c)| c.clone())
    }

    fn tls(&self, url: &str) -> Result<&(String, cairn_tls::ClientConfig), HttpError> {
        match &self.tls {
            Some(Ok(c)) => Ok(c),
            Some(Err(e)) => Err(HttpError::Unreachable {
                url: url.to_string(),
                reason: e.clone(),
            }),
            None => Err(HttpError::Unreachable {
                url: url.to_string(),
                reason: "set CAIRN_CA to the cluster CA's certificate to speak HTTPS".into(),
            }),
        }
    }

    /// Sends `req` over HTTP or, for an `https` URL, over TLS.
    async fn dispatch<B>(
        &self,
        url: &str,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, HttpError>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let unreachable = |e: hyper_util::client::legacy::Error| HttpError::Unreachable {
            url: url.to_string(),
            reason: cairn_tls::error_chain(&e),
        };
        if url.starts_with("https://") {
            let connector = cairn_tls::https_connector(self.tls_config(url)?, false);
            Client::builder(TokioExecutor::new())
                .build(connector)
                .request(req)
                .await
                .map_err(unreachable)
        } else {
            Client::builder(TokioExecutor::new())
                .build_http()
                .request(req)
                .await
                .map_err(unreachable)
        }
    }

    fn request(&self, uri: hyper::Uri) -> Result<hyper::Request<Empty<Bytes>>, HttpError> {
        let mut req = hyper::Request::get(uri.clone());
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.as_str());
        }
        req.body(Empty::new())
            .map_err(|_| HttpError::Url(uri.to_string()))
    }

    /// GETs `url`, following a standby master's redirects to the leader
    /// (`Location: //host:port/path`) a few times.
    pub async fn get(&self, url: &str) -> Result<Bytes, HttpError> {
        let mut url = url.to_string();
        let mut redirects = 0;
        let resp = loop {
            let uri: hyper::Uri = url.parse().map_err(|_| HttpError::Url(url.clone()))?;
            let resp = if url.starts_with("https://") {
                self.dispatch(&url, self.request(uri)?).await?
            } else {
                self.client.request(self.request(uri)?).await.map_err(|e| {
                    HttpError::Unreachable {
                        url: url.clone(),
                        // A master with a cluster CA speaks only TLS.
                        reason: format!(
                            "{e} (if the master speaks TLS, set CAIRN_CA to its cluster CA's certificate)"
                        ),
                    }
                })?
            };
            let location = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            match location {
                Some(l) if resp.status().is_redirection() && redirects < 5 => {
                    redirects += 1;
                    let scheme = if url.starts_with("https://") {
                        "https"
                    } else {
                        "http"
                    };
                    url = match l.strip_prefix("//") {
                        Some(rest) => format!("{scheme}://{rest}"),
                        None => l,
                    };
                }
                _ => break resp,
            }
        };
        body_of(&url, resp).await
    }

    /// Sends `method` with `body` to `url` (no redirects followed); the
    /// JSON answer of a 2xx, else the error with the body's text.
    pub async fn send(&self, method: &str, url: &str, body: Vec<u8>) -> Result<Value, HttpError> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.as_str());
        }
        let req = req
            .body(http_body_util::Full::new(Bytes::from(body)))
            .map_err(|_| HttpError::Url(url.to_string()))?;
        let resp = self.dispatch(url, req).await?;
        json_of(url, &body_of(url, resp).await?)
    }

    /// GETs `url` from the agent `agent_id`'s own API (its `agent_url`
    /// from an offer; no redirects). An `https` URL is an agent that joined
    /// the cluster: only that agent's certificate is accepted.
    pub async fn get_agent_json(&self, url: &str, agent_id: &str) -> Result<Value, HttpError> {
        let uri: hyper::Uri = url.parse().map_err(|_| HttpError::Url(url.to_string()))?;
        let req = self.request(uri)?;
        let unreachable = |e: hyper_util::client::legacy::Error| HttpError::Unreachable {
            url: url.to_string(),
            reason: cairn_tls::error_chain(&e),
        };
        let resp = if url.starts_with("https://") {
            let (pem, _) = self.tls(url)?;
            let config = cairn_tls::agent_client_config(pem, None, agent_id).map_err(|e| {
                HttpError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                }
            })?;
            Client::builder(TokioExecutor::new())
                .build(cairn_tls::agent_https_connector(config, false))
                .request(req)
                .await
                .map_err(unreachable)?
        } else {
            self.client.request(req).await.map_err(unreachable)?
        };
        json_of(url, &body_of(url, resp).await?)
    }

    pub async fn get_json(&self, url: &str) -> Result<Value, HttpError> {
        json_of(url, &self.get(url).await?)
    }
}

fn json_of(url: &str, body: &[u8]) -> Result<Value, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::Json {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// The whole body of a 2xx answer; otherwise the status with the answer's
/// text (its `error` field when it is JSON that has one).
async fn body_of(
    url: &str,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<Bytes, HttpError> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| HttpError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .to_bytes();
    if status.is_success() {
        return Ok(body);
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = match json["error"].as_str() {
        Some(e) => e.to_string(),
        None => String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    };
    Err(HttpError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body: text,
    })
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
