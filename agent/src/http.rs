//! The agent's HTTP endpoints: sandbox files (Mesos-style `/files/*`), its
//! own `/state`, and `/health`.
//!
//! Sandbox paths are accepted absolute (as `/state` shows them) or relative
//! to the work directory (`/frameworks/F/executors/E/runs/latest/stdout`,
//! where `latest` is the newest run). Nothing outside the work directory's
//! `frameworks/` is ever served.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::driver::Handle;

/// Most bytes one `/files/read` returns.
pub const MAX_READ: u64 = 1 << 20;

#[derive(Clone, Debug)]
pub struct HttpState {
    pub handle: Handle,
    pub launcher: Arc<dyn crate::launcher::Launcher>,
    pub work_dir: Arc<PathBuf>,
    pub info: Arc<Value>,
    /// What the agent offers.
    pub resources: Arc<cairn_model::Resources>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub started: std::time::Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("missing query parameter 'path'")]
    NoPath,
    #[error("path {0:?} is outside the agent's sandboxes")]
    Outside(String),
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("{0} is a directory")]
    IsDirectory(String),
    #[error("{0} is not a directory")]
    NotDirectory(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        let code = match &self {
            FilesError::NoPath | FilesError::IsDirectory(_) | FilesError::NotDirectory(_) => {
                StatusCode::BAD_REQUEST
            }
            FilesError::Outside(_) => StatusCode::FORBIDDEN,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, format!("{self}\n")).into_response()
    }
}

/// The newest directory in `dir` (by modification time, then name).
fn newest_child(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .max_by_key(|e| (e.metadata().and_then(|m| m.modified()).ok(), e.file_name()))
        .map(|e| e.path())
}

/// Resolves a requested path to a real path inside `work_dir/frameworks`.
pub fn resolve(work_dir: &Path, requested: &str) -> Result<PathBuf, FilesError> {
    let root = work_dir.join("frameworks");
    let req = Path::new(requested);
    if req.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FilesError::Outside(requested.into()));
    }
    let relative: PathBuf = if let Ok(rest) = req.strip_prefix(work_dir) {
        rest.to_path_buf()
    } else {
        req.components()
            .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
            .collect()
    };
    let mut path = work_dir.to_path_buf();
    for c in relative.components() {
        let Component::Normal(name) = c else {
            return Err(FilesError::Outside(requested.into()));
        };
        if name == "latest" && path.file_name().is_some_and(|n| n == "runs") {
            path = newest_child(&path).ok_or_else(|| FilesError::NotFound(requested.into()))?;
        } else {
            path.push(name);
        }
    }
    let real = path
        .canonicalize()
        .map_err(|_| FilesError::NotFound(requested.into()))?;
    let root = root.canonicalize().unwrap_or(root);
    if !real.starts_with(&root) {
        return Err(FilesError::Outside(requested.into()));
    }
    Ok(real)
}

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    path: Option<String>,
    offset: Option<i64>,
    length: Option<i64>,
}

/// `{"data": "...", "offset": n}`; `offset=-1` returns the file's length as
/// the offset and no data (Mesos's way of asking for the size).
async fn read(
    State(s): State<HttpState>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, FilesError> {
    let requested = q.path.ok_or(FilesError::NoPath)?;
    let path = resolve(&s.work_dir, &requested)?;
    let io = |source| FilesError::Io {
        path: requested.clone(),
        source,
    };
    let meta = std::fs::metadata(&path).map_err(io)?;
    if meta.is_dir() {
        return Err(FilesError::IsDirectory(requested));
    }
    let size = meta.len();
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Ok(axum::Json(json!({"data": "", "offset": size})).into_response());
    }
    let offset = u64::try_from(offset).unwrap_or(0).min(size);
    let want = q
        .length
        .and_then(|l| u64::try_from(l).ok())
        .unwrap_or(MAX_READ)
        .min(MAX_READ)
        .min(size - offset);
    let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        f.take(want).read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await
    .map_err(|e| io(std::io::Error::other(e)))?
    .map_err(io)?;
    Ok(axum::Json(json!({
        "data": String::from_utf8_lossy(&data),
        "offset": offset,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: Option<String>,
}

fn mode_string(mode: u32, dir: bool) -> String {
    let mut s = String::with_capacity(10);
    s.push(if dir { 'd' } else { '-' });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

async fn browse(
    State(s): State<HttpState>,
    Query(q): Query<PathQuery>,
) -> Result<Response, FilesError> {
    let requested = q.path.ok_or(FilesError::NoPath)?;
    let path = resolve(&s.work_dir, &requested)?;
    if !path.is_dir() {
        return Err(FilesError::NotDirectory(requested));
    }
    let io = |source| FilesError::Io {
        path: requested.clone(),
        source,
    };
    let mut entries: Vec<Value> = Vec::new();
    for e in std::fs::read_dir(&path).map_err(io)?.filter_map(Result::ok) {
        let Ok(m) = e.metadata() else { continue };
        entries.push(json!({
            "path": e.path().display().to_string(),
            "size": m.len(),
            "mode": mode_string(m.permissions().mode(), m.is_dir()),
            "mtime": m.mtime(),
            "nlink": m.nlink(),
            "uid": m.uid(),
            "gid": m.gid(),
        }));
    }
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(axum::Json(Value::Array(entries)).into_response())
}

async fn download(
    State(s): State<HttpState>,
    Query(q): Query<PathQuery>,
) -> Result<Response, FilesError> {
    let requested = q.path.ok_or(FilesError::NoPath)?;
    let path = resolve(&s.work_dir, &requested)?;
    if path.is_dir() {
        return Err(FilesError::IsDirectory(requested));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Streamed: a large file is never held in memory.
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|source| FilesError::Io {
            path: requested.clone(),
            source,
        })?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

async fn state(State(s): State<HttpState>) -> Response {
    let Ok(report) = s.handle.report().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
            .into_response();
    };
    let mut frameworks: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for t in &report.tasks {
        let directory = t.container_id.as_ref().map(|c| {
            s.work_dir
                .join("frameworks")
                .join(t.framework_id.as_str())
                .join("executors")
                .join(t.executor_id.as_str())
                .join("runs")
                .join(c.as_str())
                .display()
                .to_string()
        });
        frameworks.entry(t.framework_id.to_string()).or_default().push(json!({
            "id": t.executor_id.as_str(),
            "container": t.container_id.as_ref().map(|c| c.to_string()),
            "directory": directory,
            "tasks": [{"id": t.task.task_id.as_str(), "name": t.task.name, "state": t.state.as_str()}],
        }));
    }
    let mut info = (*s.info).clone();
    if let Value::Object(m) = &mut info {
        m.insert("id".into(), json!(report.agent_id.map(|a| a.to_string())));
        m.insert(
            "frameworks".into(),
            Value::Array(
                frameworks
                    .into_iter()
                    .map(|(id, executors)| json!({"id": id, "executors": executors}))
                    .collect(),
            ),
        );
    }
    axum::Json(info).into_response()
}

/// Mesos's `/monitor/statistics`: what each container uses.
async fn statistics(State(s): State<HttpState>) -> Response {
    let Ok(containers) = s.handle.containers().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
            .into_response();
    };
    let launcher = s.launcher.clone();
    match tokio::task::spawn_blocking(move || crate::usage::collect(&launcher, &containers)).await {
        Ok(usage) => axum::Json(crate::usage::statistics_json(&usage)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn health() -> StatusCode {
    StatusCode::OK
}

/// Ready: registered with a master and its session up.
async fn readyz(State(s): State<HttpState>) -> Response {
    match s.handle.report().await {
        Ok(r) if r.registered => "ok: registered\n".into_response(),
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with a master\n",
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    match s.handle.report().await {
        Ok(r) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            s.metrics
                .render(&r, &s.resources, s.started.elapsed().as_secs_f64()),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

pub fn router(s: HttpState) -> Router {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    for prefix in ["", "/slave(1)"] {
        r = r.route(&format!("{prefix}/state"), get(state));
    }
    for prefix in ["", "/slave(1)"] {
        r = r
            .route(&format!("{prefix}/monitor/statistics"), get(statistics))
            .route(
                &format!("{prefix}/monitor/statistics.json"),
                get(statistics),
            );
    }
    r.route("/files/read", get(read))
        .route("/files/browse", get(browse))
        .route("/files/download", get(download))
        .with_state(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_sandboxes_only() {
        let dir = std::env::temp_dir().join(format!("cairn-files-{}", std::process::id()));
        let run = dir.join("frameworks/f/executors/e/runs/c1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("stdout"), b"hi").unwrap();
        std::fs::write(dir.join("secret"), b"no").unwrap();
        let ok = resolve(&dir, "/frameworks/f/executors/e/runs/latest/stdout").unwrap();
        assert!(ok.ends_with("c1/stdout"));
        let abs = run.join("stdout").display().to_string();
        assert!(resolve(&dir, &abs).is_ok());
        assert!(matches!(
            resolve(&dir, "/frameworks/../secret"),
            Err(FilesError::Outside(_))
        ));
        assert!(matches!(
            resolve(&dir, &dir.join("secret").display().to_string()),
            Err(FilesError::Outside(_))
        ));
        assert!(matches!(
            resolve(&dir, "/etc/passwd"),
            Err(FilesError::NotFound(_) | FilesError::Outside(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
