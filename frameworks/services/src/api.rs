//! The framework's HTTP API (what `cairn apply`, `get`, `describe`,
//! `scale` and `delete` use):
//!
//! - `POST /v1/apply` (YAML body): creates or updates each app in it.
//! - `GET /v1/apps`, `GET /v1/apps/{name}`, `GET /v1/instances[?app=]`,
//!   `GET /v1/services`.
//! - `POST /v1/apps/{name}/scale` (`{"instances": N}`), `DELETE /v1/apps/{name}`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::scheduler::{Instance, Phase, Shared, carry_out, unix_now};

#[derive(Clone, Debug)]
pub struct Api {
    pub shared: Arc<Mutex<Shared>>,
    /// Where each service's balancer listens, for `/v1/services`.
    pub balancers: Arc<Mutex<std::collections::BTreeMap<String, std::net::SocketAddr>>>,
    pub domain: String,
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (code, axum::Json(json!({"error": message.to_string()}))).into_response()
}

fn busy() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the framework's state is unavailable",
    )
}

/// Runs `change` on the state, plans, records it before answering, and
/// carries out the kills it asks for.
async fn change<T>(api: &Api, change: impl FnOnce(&mut Shared) -> T) -> Result<T, Response> {
    let now = unix_now();
    let (out, actions, driver) = {
        let Ok(mut s) = api.shared.lock() else {
            return Err(busy());
        };
        let out = change(&mut s);
        let actions = s.plan(now);
        s.save()
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        s.publish();
        (out, actions, s.driver.clone())
    };
    if let Some(d) = driver {
        carry_out(&d, actions).await;
    }
    Ok(out)
}

async fn apply(State(api): State<Api>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return error(StatusCode::BAD_REQUEST, "the spec is not UTF-8"),
    };
    let apps = match crate::spec::parse(text) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match change(&api, |s| s.apply(apps)).await {
        Ok(results) => axum::Json(json!({
            "apps": results.iter().map(|(name, r)| json!({"name": name, "result": r})).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

fn instance_json(i: &Instance) -> Value {
    let (phase, reason) = match &i.phase {
        Phase::Pending { reason } => ("pending", Some(reason.clone())),
        Phase::Delayed { until } => (
            "delayed",
            Some(format!(
                "backing off after failures: retried in {:.1} s",
                (until - unix_now()).max(0.0)
            )),
        ),
        Phase::Launched => ("launched", None),
        Phase::Killing { why } => ("killing", Some(why.clone())),
    };
    json!({
        "id": i.id,
        "app": i.app,
        "version": i.version,
        "phase": phase,
        "reason": reason,
        "state": i.state,
        "healthy": i.healthy,
        "agent_id": i.agent_id,
        "hostname": i.hostname,
        "ip": i.ip.map(|ip| ip.to_string()),
        "ports": i.ports,
        "message": i.message,
    })
}

fn app_summary(s: &Shared, name: &str) -> Option<Value> {
    let a = s.apps.get(name)?;
    let mine: Vec<&Instance> = s.instances.values().filter(|i| i.app == name).collect();
    let count = |f: &dyn Fn(&Instance) -> bool| mine.iter().filter(|i| f(i)).count();
    Some(json!({
        "name": name,
        "version": a.version,
        "instances": a.spec.instances,
        "running": count(&|i| i.state.as_deref() == Some("TASK_RUNNING")),
        "healthy": count(&|i| i.is_healthy(&a.spec)),
        "pending": count(&|i| matches!(i.phase, Phase::Pending { .. })),
        "delayed": count(&|i| matches!(i.phase, Phase::Delayed { .. })),
        "updated": count(&|i| i.version == a.version),
        "labels": a.spec.labels,
        "service": a.spec.service.as_ref().map(|s| s.name.clone()),
    }))
}

async fn apps(State(api): State<Api>) -> Response {
    let Ok(s) = api.shared.lock() else {
        return busy();
    };
    let list: Vec<Value> = s.apps.keys().filter_map(|n| app_summary(&s, n)).collect();
    axum::Json(list).into_response()
}

async fn app(State(api): State<Api>, Path(name): Path<String>) -> Response {
    let Ok(s) = api.shared.lock() else {
        return busy();
    };
    let Some(mut v) = app_summary(&s, &name) else {
        return error(StatusCode::NOT_FOUND, format!("no app {name}"));
    };
    if let Some(a) = s.apps.get(&name) {
        v["spec"] = serde_json::to_value(&a.spec).unwrap_or(Value::Null);
        v["failures"] = json!(a.failures);
    }
    v["instance_list"] = s
        .instances
        .values()
        .filter(|i| i.app == name)
        .map(instance_json)
        .collect();
    axum::Json(v).into_response()
}

#[derive(serde::Deserialize)]
struct InstancesQuery {
    app: Option<String>,
}

async fn instances(State(api): State<Api>, Query(q): Query<InstancesQuery>) -> Response {
    let Ok(s) = api.shared.lock() else {
        return busy();
    };
    let list: Vec<Value> = s
        .instances
        .values()
        .filter(|i| q.app.as_ref().is_none_or(|a| &i.app == a))
        .map(|i| {
            let mut v = instance_json(i);
            if let Some(a) = s.apps.get(&i.app) {
                v["labels"] = json!(a.spec.labels);
            }
            v
        })
        .collect();
    axum::Json(list).into_response()
}

async fn services(State(api): State<Api>) -> Response {
    let endpoints = match api.shared.lock() {
        Ok(s) => {
            let mut out = Vec::new();
            let eps = s.endpoints();
            for a in s.apps.values() {
                let Some(svc) = &a.spec.service else { continue };
                out.push((
                    svc.name.clone(),
                    a.spec.name.clone(),
                    a.spec.labels.clone(),
                    eps.get(&svc.name).cloned().unwrap_or_default(),
                ));
            }
            out
        }
        Err(_) => return busy(),
    };
    let lbs = api.balancers.lock().map(|b| b.clone()).unwrap_or_default();
    let list: Vec<Value> = endpoints
        .into_iter()
        .map(|(name, app, labels, eps)| {
            json!({
                "name": name,
                "app": app,
                "labels": labels,
                "dns": format!("{name}.{}", api.domain),
                "balancer": lbs.get(&name).map(|a| a.to_string()),
                "endpoints": eps.iter().map(|e| format!("{}:{}", e.ip, e.port)).collect::<Vec<_>>(),
            })
        })
        .collect();
    axum::Json(list).into_response()
}

#[derive(serde::Deserialize)]
struct Scale {
    instances: u32,
}

async fn scale(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Scale>(&body) else {
        return error(StatusCode::BAD_REQUEST, "expected {\"instances\": N}");
    };
    if req.instances > 10_000 {
        return error(StatusCode::BAD_REQUEST, "at most 10000 instances");
    }
    match change(&api, |s| s.scale(&name, req.instances)).await {
        Ok(true) => axum::Json(json!({"name": name, "instances": req.instances})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no app {name}")),
        Err(r) => r,
    }
}

async fn delete(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match change(&api, |s| s.delete(&name)).await {
        Ok(true) => axum::Json(json!({"name": name, "deleted": true})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no app {name}")),
        Err(r) => r,
    }
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/apply", post(apply))
        .route("/v1/apps", get(apps))
        .route("/v1/apps/{name}", get(app).delete(delete))
        .route("/v1/apps/{name}/scale", post(scale))
        .route("/v1/instances", get(instances))
        .route("/v1/services", get(services))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(api)
}
