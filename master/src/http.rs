//! The HTTP door: operator endpoints (Mesos-shaped, so Mesos tools read them).

use std::sync::Arc;

use std::collections::BTreeMap;

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
async fn operator_api(State(s): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
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

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Cairn master {}\n\nGET /state for the cluster's state.\n",
            cairn_model::VERSION
        ),
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
    let mut r = Router::new().route("/", get(index));
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
            );
    }
    r.with_state(http_state)
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
