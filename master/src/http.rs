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

/// The operator routes. Mesos serves every master endpoint also under
/// `/master/`, and old tools still ask for `*.json`.
pub fn router(http_state: HttpState) -> Router {
    let mut r = Router::new().route("/", get(index));
    for prefix in ["", "/master"] {
        r = r
            .route(&format!("{prefix}/state"), get(state))
            .route(&format!("{prefix}/state.json"), get(state))
            .route(&format!("{prefix}/health"), get(health))
            .route(&format!("{prefix}/version"), get(version))
            .route(&format!("{prefix}/flags"), get(flags));
    }
    r.with_state(http_state)
}
