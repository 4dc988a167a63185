//! The HTTP door: operator endpoints (Mesos-shaped, so Mesos tools read them).

use std::sync::Arc;

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use cairn_master_core::view::StateSnapshot;

use crate::driver::Handle;
use crate::operator;
use crate::state_json::state_bytes;

#[derive(Clone, Debug)]
pub struct HttpState {
    pub handle: Handle,
    pub flags: Arc<Value>,
    /// Role weights, for `/roles`.
    pub weights: Arc<BTreeMap<String, f64>>,
    pub started: cairn_model::Time,
    /// Elected through ZooKeeper (else a lone master).
    pub zk: bool,
    /// Forwards sandbox requests to agents.
    pub agents: AgentClient,
    /// The same to joined agents (TLS), one client per agent id, each
    /// accepting only that agent's certificate; kept so that connections
    /// are reused.
    pub tls_agents: Arc<std::sync::Mutex<HashMap<String, TlsAgentClient>>>,
    pub auth: Arc<crate::auth::Auth>,
    /// The cluster identity (with `--cluster-dir`), for token rotation.
    pub cluster: Option<Arc<crate::join::Cluster>>,
}

pub type AgentClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

pub type TlsAgentClient =
    hyper_util::client::legacy::Client<cairn_tls::HttpsConnector, http_body_util::Empty<Bytes>>;

/// At most this many agents' TLS clients are kept (past it they are all
/// let go and made again as needed).
const TLS_AGENT_CLIENTS: usize = 4096;

/// The HTTPS client for the joined agent `agent_id`.
fn tls_agent_client(
    s: &HttpState,
    cluster: &crate::join::Cluster,
    agent_id: &str,
) -> Result<TlsAgentClient, cairn_tls::TlsError> {
    if let Some(c) = s
        .tls_agents
        .lock()
        .ok()
        .and_then(|m| m.get(agent_id).cloned())
    {
        return Ok(c);
    }
    let config = cairn_tls::agent_client_config(cluster.ca.cert_pem(), None, agent_id)?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(cairn_tls::agent_https_connector(config, false));
    if let Ok(mut m) = s.tls_agents.lock() {
        if m.len() >= TLS_AGENT_CLIENTS {
            m.clear();
        }
        m.insert(agent_id.to_string(), client.clone());
    }
    Ok(client)
}

pub fn agent_client() -> AgentClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

async fn state(State(s): State<HttpState>, Query(j): Query<Jsonp>) -> Response {
    match s.handle.snapshot().await {
        Ok(snapshot) => answer_bytes(state_bytes(&snapshot, &s.handle.info, &s.flags), &j),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Mesos's `?jsonp=callback`: the JSON wrapped in a call.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Jsonp {
    jsonp: Option<String>,
}

/// Like [`answer`], for JSON already written.
fn answer_bytes(json: Vec<u8>, jsonp: &Jsonp) -> Response {
    match jsonp.jsonp.as_deref() {
        Some(cb) if valid_callback(cb) => {
            let mut body = Vec::with_capacity(json.len() + cb.len() + 3);
            body.extend_from_slice(cb.as_bytes());
            body.push(b'(');
            body.extend_from_slice(&json);
            body.extend_from_slice(b");");
            ([(header::CONTENT_TYPE, "text/javascript")], body).into_response()
        }
        Some(_) => (StatusCode::BAD_REQUEST, "jsonp: not a callback name\n").into_response(),
        None => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
    }
}

fn valid_callback(cb: &str) -> bool {
    !cb.is_empty()
        && cb
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
}

fn answer(v: &Value, jsonp: &Jsonp) -> Response {
    match jsonp.jsonp.as_deref() {
        Some(cb) if valid_callback(cb) => (
            [(header::CONTENT_TYPE, "text/javascript")],
            format!(
                "{cb}({});",
                serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
            ),
        )
            .into_response(),
        Some(_) => (StatusCode::BAD_REQUEST, "jsonp: not a callback name\n").into_response(),
        None => json_response(v),
    }
}

async fn snapshot_or_503(s: &HttpState) -> Result<StateSnapshot, Response> {
    s.handle
        .snapshot()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())
}

async fn state_summary(State(s): State<HttpState>, Query(j): Query<Jsonp>) -> Response {
    match snapshot_or_503(&s).await {
        Ok(snap) => answer(&operator::state_summary(&snap, &s.handle.info), &j),
        Err(r) => r,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct ListQuery {
    jsonp: Option<String>,
    framework_id: Option<String>,
    slave_id: Option<String>,
}

async fn frameworks(State(s): State<HttpState>, Query(q): Query<ListQuery>) -> Response {
    match snapshot_or_503(&s).await {
        Ok(snap) => answer(
            &operator::frameworks(&snap, q.framework_id.as_deref()),
            &Jsonp { jsonp: q.jsonp },
        ),
        Err(r) => r,
    }
}

async fn slaves(State(s): State<HttpState>, Query(q): Query<ListQuery>) -> Response {
    match snapshot_or_503(&s).await {
        Ok(snap) => answer(
            &operator::slaves(&snap, q.slave_id.as_deref()),
            &Jsonp { jsonp: q.jsonp },
        ),
        Err(r) => r,
    }
}

async fn tasks(
    State(s): State<HttpState>,
    Query(q): Query<operator::TasksQuery>,
    Query(j): Query<Jsonp>,
) -> Response {
    match snapshot_or_503(&s).await {
        Ok(snap) => match operator::tasks(&snap, &q) {
            Ok(v) => answer(&v, &j),
            Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
        },
        Err(r) => r,
    }
}

async fn roles(State(s): State<HttpState>, Query(j): Query<Jsonp>) -> Response {
    match snapshot_or_503(&s).await {
        Ok(snap) => answer(&operator::roles(&snap, &s.weights), &j),
        Err(r) => r,
    }
}

async fn metrics_snapshot(State(s): State<HttpState>, Query(j): Query<Jsonp>) -> Response {
    match s.handle.summary().await {
        Ok(m) => {
            let uptime = cairn_model::Time::now()
                .saturating_since(s.started)
                .as_secs_f64();
            answer(&operator::metrics_snapshot(&m, true, uptime), &j)
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `/redirect` on the leader: to itself (standbys answer in the front door).
async fn redirect(State(s): State<HttpState>) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(
            header::LOCATION,
            format!("//{}:{}", s.handle.info.hostname, s.handle.info.port),
        )],
    )
        .into_response()
}

/// `POST /api/v1`: the v1 operator API, JSON.
async fn operator_api(
    State(s): State<HttpState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = principal.and_then(|p| p.0.0);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    if let Err((code, message)) = cairn_model::mesos_json::check_json_content_type(content_type) {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        return (code, format!("{message}\n")).into_response();
    }
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into JSON: {e}\n"),
            )
                .into_response();
        }
    };
    let Some(ty) = call.get("type").and_then(Value::as_str) else {
        return (StatusCode::BAD_REQUEST, "Missing required fields: type\n").into_response();
    };
    if ty == "TEARDOWN" {
        let id = call["teardown"]["framework_id"]["value"]
            .as_str()
            .unwrap_or("");
        return tear_down(&s, id, principal).await;
    }
    // Every other call reads the state.
    if let Err(e) = s.auth.view(principal.as_deref()) {
        return e.response();
    }
    if ty == "SUBSCRIBE" {
        return operator_subscribe(&s).await;
    }
    let snap = match snapshot_or_503(&s).await {
        Ok(snap) => snap,
        Err(r) => return r,
    };
    match operator::operator_call(ty, &snap, &s.handle.info, &s.flags) {
        Some(v) => json_response(&v),
        None => (
            StatusCode::NOT_IMPLEMENTED,
            format!("Cairn does not support the operator call {ty} yet\n"),
        )
            .into_response(),
    }
}

async fn health() -> StatusCode {
    StatusCode::OK
}

/// The process is alive and serving.
async fn livez() -> &'static str {
    "ok\n"
}

/// Ready: this master leads (so a leader is known), and the core, which
/// stops the process when the registry cannot be written, answers.
async fn readyz(State(s): State<HttpState>) -> Response {
    match s.handle.summary().await {
        Ok(_) => "ok: leading\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let summary = s.handle.summary().await.ok();
    let uptime = cairn_model::Time::now()
        .saturating_since(s.started)
        .as_secs_f64();
    let election = crate::metrics::Election {
        elected: true,
        zk_connected: s.zk.then_some(true),
    };
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        s.handle.metrics.render(summary.as_ref(), election, uptime),
    )
        .into_response()
}

pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn history(State(s): State<HttpState>) -> Response {
    let samples: Vec<crate::metrics::Sample> = match s.handle.history.lock() {
        Ok(h) => h.samples().copied().collect(),
        Err(_) => Vec::new(),
    };
    json_response(&json!({
        "interval_secs": crate::metrics::HISTORY_INTERVAL.as_secs(),
        "samples": samples,
    }))
}

/// `GET /events`: the operator event stream as Server-Sent Events, one
/// v1 operator event (JSON) per message, starting with `SUBSCRIBED` and the
/// whole state. A watcher that falls too far behind is cut off (its
/// browser reconnects and starts over).
async fn events(State(s): State<HttpState>) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let stream = match watch_stream(&s).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let stream = futures::StreamExt::map(stream, |v| {
        Ok::<_, std::convert::Infallible>(SseEvent::default().data(v.to_string()))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

/// The state and then every change, as v1 operator events.
async fn watch_stream(
    s: &HttpState,
) -> Result<impl futures::Stream<Item = Value> + Send + 'static, Response> {
    let (snap, rx) = s
        .handle
        .watch()
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response())?;
    let first = operator::subscribed_json(&snap, OPERATOR_HEARTBEAT.as_secs_f64());
    let changes = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(o) => Some((operator::observed_json(&o), Some(rx))),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "an operator event watcher fell behind; ending its stream"
                );
                None
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    Ok(futures::StreamExt::chain(
        futures::stream::iter([first]),
        changes,
    ))
}

const OPERATOR_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// `SUBSCRIBE` on the operator API: the same events as `/events`, in
/// RecordIO (`<length>\n<json>`), with `HEARTBEAT`s between.
async fn operator_subscribe(s: &HttpState) -> Response {
    let stream = match watch_stream(s).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let heartbeats = futures::StreamExt::map(
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
            tokio::time::Instant::now() + OPERATOR_HEARTBEAT,
            OPERATOR_HEARTBEAT,
        )),
        |_| json!({"type": "HEARTBEAT"}),
    );
    // Ends when the changes end (a `None` marks it); heartbeats alone never
    // keep it open.
    let changes = futures::StreamExt::chain(
        futures::StreamExt::map(stream, Some),
        futures::stream::once(std::future::ready(None)),
    );
    let merged = futures::stream::select(changes, futures::StreamExt::map(heartbeats, Some));
    let records = futures::StreamExt::map(
        futures::StreamExt::take_while(merged, |v| std::future::ready(v.is_some())),
        |v| {
            let body = v.map(|v| v.to_string()).unwrap_or_default();
            Ok::<_, std::convert::Infallible>(Bytes::from(format!("{}\n{body}", body.len())))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(records),
    )
        .into_response()
}

/// `GET /files/{browse,read,download}?agent_id=ID&path=...`: an agent's
/// sandbox files through the master, so that the dashboard and the CLI
/// need to reach only the master.
async fn files(
    State(s): State<HttpState>,
    axum::extract::Path(op): axum::extract::Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if !matches!(op.as_str(), "browse" | "read" | "download") {
        return (StatusCode::NOT_FOUND, "no such endpoint\n").into_response();
    }
    let query = uri.query().unwrap_or("");
    let mut agent_id = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("agent_id=") {
            Some(id) => agent_id = Some(id.to_string()),
            None => rest.push(pair),
        }
    }
    let Some(agent_id) = agent_id else {
        return (StatusCode::BAD_REQUEST, "agent_id is required\n").into_response();
    };
    let snap = match snapshot_or_503(&s).await {
        Ok(snap) => snap,
        Err(r) => return r,
    };
    let Some(agent) = snap.agents.iter().find(|a| a.id.as_str() == agent_id) else {
        return (StatusCode::NOT_FOUND, format!("no agent {agent_id}\n")).into_response();
    };
    let url = format!("{}/files/{op}?{}", agent.info.url(), rest.join("&"));
    let Ok(target) = url.parse::<hyper::Uri>() else {
        return (StatusCode::BAD_REQUEST, format!("invalid request {url}\n")).into_response();
    };
    // The caller's credentials go along: agents check them too.
    let mut request = hyper::Request::get(target);
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, a.clone());
    }
    let Ok(request) = request.body(http_body_util::Empty::new()) else {
        return (StatusCode::BAD_REQUEST, "invalid request\n").into_response();
    };
    // A joined agent serves TLS only: the request (and the caller's
    // credentials) go to it encrypted, and only to the agent the
    // certificate names.
    let sent = match (&s.cluster, agent.info.tls) {
        (Some(cluster), true) => match tls_agent_client(&s, cluster, agent.id.as_str()) {
            Ok(client) => client.request(request).await,
            Err(e) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
            }
        },
        _ => s.agents.request(request).await,
    };
    match sent {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!(
                "agent {agent_id} at {} cannot be reached: {}\n",
                agent.info.address,
                cairn_tls::error_chain(&e)
            ),
        )
            .into_response(),
    }
}

async fn version() -> Response {
    json_response(&json!({
        "version": cairn_model::VERSION,
        "build_date": "",
        "build_time": 0,
        "build_user": "",
    }))
}

async fn flags(State(s): State<HttpState>) -> Response {
    json_response(&json!({ "flags": *s.flags }))
}

/// The dashboard: one page, no build step, embedded in the binary.
async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/dashboard.html"),
    )
        .into_response()
}

/// The endpoints below `/` and `/master` (see `router`).
const ENDPOINTS: &[&str] = &[
    "/state",
    "/state.json",
    "/state-summary",
    "/frameworks",
    "/slaves",
    "/tasks",
    "/tasks.json",
    "/roles",
    "/roles.json",
    "/redirect",
    "/metrics/snapshot",
    "/health",
    "/version",
    "/flags",
    "/api/v1/scheduler",
    "/api/v1",
];

/// Mesos's (libprocess's) routing rules, for HTTP paths: a trailing `/` is
/// dropped, and a path no endpoint serves is shortened a segment at a time
/// until one does (`/api/v1/scheduler/x` is served by `/api/v1/scheduler`),
/// both with and without the `/master` prefix. `None`: leave the path as it
/// is (the root, gRPC methods, or nothing matches).
pub fn route_path(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    let (prefix, mut rest) = match trimmed.strip_prefix("/master") {
        Some(r) if r.is_empty() || r.starts_with('/') => ("/master", r),
        _ => ("", trimmed),
    };
    while !rest.is_empty() {
        if ENDPOINTS.contains(&rest) {
            let routed = format!("{prefix}{rest}");
            return (routed != path).then_some(routed);
        }
        rest = &rest[..rest.rfind('/').unwrap_or(0)];
    }
    None
}

/// The operator routes. Mesos serves every master endpoint also under
/// `/master/`, and old tools still ask for `*.json`.
pub fn router(http_state: HttpState) -> Router {
    let mut r = Router::new()
        .route("/", get(index))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/history", get(history))
        .route("/files/{op}", get(files));
    // Keep `ENDPOINTS` in step with these.
    for prefix in ["", "/master"] {
        r = r
            .route(&format!("{prefix}/state"), get(state))
            .route(&format!("{prefix}/state.json"), get(state))
            .route(&format!("{prefix}/health"), get(health))
            .route(&format!("{prefix}/version"), get(version))
            .route(&format!("{prefix}/flags"), get(flags))
            .route(&format!("{prefix}/state-summary"), get(state_summary))
            .route(&format!("{prefix}/frameworks"), get(frameworks))
            .route(&format!("{prefix}/slaves"), get(slaves))
            .route(&format!("{prefix}/tasks"), get(tasks))
            .route(&format!("{prefix}/tasks.json"), get(tasks))
            .route(&format!("{prefix}/roles"), get(roles))
            .route(&format!("{prefix}/roles.json"), get(roles))
            .route(&format!("{prefix}/redirect"), get(redirect))
            .route(&format!("{prefix}/metrics/snapshot"), get(metrics_snapshot))
            .route(
                &format!("{prefix}/api/v1"),
                axum::routing::post(operator_api),
            )
            .route(
                &format!("{prefix}/api/v1/scheduler"),
                axum::routing::post(crate::mesos_scheduler::scheduler),
            )
            .route(&format!("{prefix}/teardown"), axum::routing::post(teardown));
    }
    r = r.route("/tokens/rotate", axum::routing::post(rotate_tokens));
    let auth = http_state.auth.clone();
    r.with_state(http_state)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::gate,
        ))
}

async fn rotate_tokens(
    State(s): State<HttpState>,
    Query(q): Query<crate::join::RotateQuery>,
) -> Response {
    crate::join::rotate(s.cluster.clone(), q).await
}

/// Tears a framework down for an operator: the core checks the ACLs.
async fn tear_down(s: &HttpState, framework_id: &str, principal: Option<String>) -> Response {
    let Ok(id) = cairn_model::FrameworkId::parse("frameworkId", framework_id) else {
        return (StatusCode::BAD_REQUEST, "invalid framework id\n").into_response();
    };
    match s
        .handle
        .call(cairn_master_core::Input::OperatorTeardown {
            framework_id: id,
            principal,
        })
        .await
    {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(e @ cairn_master_core::CallError::Forbidden(_))) => {
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// `POST /teardown` with `frameworkId=ID` (Mesos's form body).
async fn teardown(
    State(s): State<HttpState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body);
    let id = text
        .split('&')
        .find_map(|kv| kv.trim().strip_prefix("frameworkId="))
        .unwrap_or("");
    tear_down(&s, id, principal.and_then(|p| p.0.0)).await
}

#[cfg(test)]
mod tests {
    use super::route_path;

    #[test]
    fn paths_route_as_in_mesos() {
        assert_eq!(route_path("/state/"), Some("/state".into()));
        assert_eq!(route_path("/master/state/"), Some("/master/state".into()));
        assert_eq!(
            route_path("/master/api/v1/scheduler/"),
            Some("/master/api/v1/scheduler".into())
        );
        assert_eq!(
            route_path("/api/v1/scheduler/extra/parts"),
            Some("/api/v1/scheduler".into())
        );
        assert_eq!(route_path("/state"), None);
        assert_eq!(route_path("/"), None);
        assert_eq!(route_path("/cairn.v1.Scheduler/Subscribe"), None);
        assert_eq!(route_path("/nothing/here"), None);
        assert_eq!(route_path("/masterpiece"), None);
    }
}
