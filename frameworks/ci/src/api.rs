//! The build queue's HTTP API.
//!
//! - `POST /builds` with a pipeline (YAML): 201 and the build.
//! - `GET /builds`: every build, newest first; `GET /builds/{id}`: one.
//! - `GET /builds/{id}/log[?follow=true][&stream=stderr]`: the build's
//!   output, read from its sandbox on the agent; with `follow`, streamed as
//!   it is written until the build ends.
//! - `GET /builds/{id}/artifacts`: the pipeline's artifacts;
//!   `GET /builds/{id}/artifacts/{path}`: one, downloaded from the sandbox.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::pipeline::Pipeline;
use crate::scheduler::{SharedState, save};
use crate::store::{Build, BuildStatus, now_secs};

pub fn router(shared: SharedState) -> Router {
    Router::new()
        .route("/builds", get(list).post(submit))
        .route("/builds/{id}", get(show))
        .route("/builds/{id}/log", get(log))
        .route("/builds/{id}/artifacts", get(artifacts))
        .route("/builds/{id}/artifacts/{*path}", get(artifact))
        .with_state(shared)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, crate::scheduler::Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

async fn submit(State(shared): State<SharedState>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return error(StatusCode::BAD_REQUEST, "the pipeline is not UTF-8"),
    };
    let pipeline = match Pipeline::parse(text) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (build, driver) = {
        let mut s = lock(&shared);
        s.store.next_id += 1;
        let id = s.store.next_id;
        let build = Build {
            id,
            pipeline,
            status: BuildStatus::Queued,
            attempts: 0,
            task_id: None,
            agent_id: None,
            agent_url: None,
            created: now_secs(),
            started: None,
            finished: None,
            exit_code: None,
            message: String::new(),
            timing_out: false,
        };
        s.store.builds.insert(id, build.clone());
        // Kept before it is acknowledged.
        save(&s);
        (build, s.driver.clone())
    };
    // Work arrived: offers again.
    if let Some(d) = driver {
        let shared = shared.clone();
        tokio::spawn(async move {
            crate::scheduler::want_offers_now(&shared, &d).await;
        });
    }
    (StatusCode::CREATED, Json(build)).into_response()
}

async fn list(State(shared): State<SharedState>) -> Response {
    let s = lock(&shared);
    let builds: Vec<&Build> = s.store.builds.values().rev().collect();
    Json(json!({ "builds": builds })).into_response()
}

/// A refusal: the status and why.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn find(shared: &SharedState, id: &str) -> Result<(Build, Option<String>), ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{id:?} is not a build id")))?;
    let s = lock(shared);
    let b = s
        .store
        .builds
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no build {id}")))?;
    Ok((b, s.framework_id.as_ref().map(ToString::to_string)))
}

async fn show(State(shared): State<SharedState>, Path(id): Path<String>) -> Response {
    match find(&shared, &id) {
        Ok((b, _)) => Json(b).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    stream: Option<String>,
}

/// The agent URL and sandbox path of `file` in a build's sandbox.
fn sandbox_file(b: &Build, framework_id: Option<&str>, file: &str) -> Option<(String, String)> {
    let url = b.agent_url.clone()?;
    let task = b.task_id.as_deref()?;
    let fw = framework_id?;
    // A command task's executor is named after the task.
    Some((
        url,
        format!("/frameworks/{fw}/executors/{task}/runs/latest/{file}"),
    ))
}

async fn log(
    State(shared): State<SharedState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let (b, _) = match find(&shared, &id) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let stream = match q.stream.as_deref() {
        None | Some("stdout") => "stdout",
        Some("stderr") => "stderr",
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("stream {other:?}: stdout or stderr"),
            );
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let follow = q.follow;
    let build_id = b.id;
    tokio::spawn(async move {
        let mut offset: u64 = 0;
        loop {
            let (build, fw) = {
                let s = lock(&shared);
                (
                    s.store.builds.get(&build_id).cloned(),
                    s.framework_id.as_ref().map(ToString::to_string),
                )
            };
            let Some(build) = build else { return };
            let done = build.status.is_done();
            let mut got = 0;
            if let Some((url, path)) = sandbox_file(&build, fw.as_deref(), stream) {
                match crate::files::read(&url, build.agent_id.as_deref(), &path, offset).await {
                    Ok(chunk) if !chunk.is_empty() => {
                        got = chunk.len();
                        offset += u64::try_from(chunk.len()).unwrap_or(0);
                        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Not there yet (the task is starting).
                    Err(_) if !done => {}
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
            if got > 0 {
                continue;
            }
            if done || !follow {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "cannot stream"))
}

async fn artifacts(State(shared): State<SharedState>, Path(id): Path<String>) -> Response {
    match find(&shared, &id) {
        Ok((b, _)) => Json(json!({ "artifacts": b.pipeline.artifacts })).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn artifact(
    State(shared): State<SharedState>,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    let (b, fw) = match find(&shared, &id) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    // Only what the pipeline named: the API does not browse sandboxes.
    if !b.pipeline.artifacts.iter().any(|a| a == &path) {
        return error(
            StatusCode::NOT_FOUND,
            format!("{path:?} is not an artifact of build {}", b.id),
        );
    }
    let Some((url, file)) = sandbox_file(&b, fw.as_deref(), &path) else {
        return error(StatusCode::NOT_FOUND, format!("build {} has not run", b.id));
    };
    match crate::files::download(&url, b.agent_id.as_deref(), &file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
