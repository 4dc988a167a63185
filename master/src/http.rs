//! The HTTP door: operator endpoints (Mesos-shaped, so Mesos tools read them).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::driver::Handle;
use crate::state_json::state_json;

#[derive(Clone, Debug)]
pub struct HttpState {
    pub handle: Handle,
    pub flags: Arc<Value>,
}

fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

async fn state(State(s): State<HttpState>) -> Response {
    match s.handle.snapshot().await {
        Ok(snapshot) => json_response(&state_json(&snapshot, &s.handle.info, &s.flags)),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
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
    "/health",
    "/version",
    "/flags",
    "/api/v1/scheduler",
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
