//! The agent's own HTTP gate: with `--credentials`, its operator endpoints
//! (state, metrics, sandbox files) need a principal and secret; with
//! `--acls`, viewing and reading sandboxes must be granted. Executors'
//! endpoints stay open to the executors the agent started, and health
//! checks to anyone.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_model::auth::{Acls, Credentials};

#[derive(Debug, Default)]
pub struct Gate {
    pub credentials: Option<Credentials>,
    pub acls: Option<Acls>,
}

/// The agent's principal and secret for the master (`--credential`).
#[derive(Clone, serde::Deserialize)]
pub struct OwnCredential {
    pub principal: String,
    pub secret: String,
}

impl std::fmt::Debug for OwnCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnCredential({}, secret hidden)", self.principal)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    View,
    Sandbox,
}

fn need(path: &str) -> Need {
    let path = path.strip_prefix("/slave(1)").unwrap_or(path);
    match path {
        "/health" | "/livez" | "/readyz" => Need::Nothing,
        p if p.starts_with("/api/v1/executor") || p.starts_with("/cairn.v1.") => Need::Nothing,
        p if p.starts_with("/files/") => Need::Sandbox,
        _ => Need::View,
    }
}

pub async fn gate(State(g): State<Arc<Gate>>, req: Request<Body>, next: Next) -> Response {
    let need = need(req.uri().path());
    if need == Need::Nothing {
        return next.run(req).await;
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match cairn_model::auth::authenticate(g.credentials.as_ref(), authorization) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"cairn-agent\"")],
                format!("{e}\n"),
            )
                .into_response();
        }
    };
    let verdict = match (&g.acls, need) {
        (Some(a), Need::View) => a.view(principal.as_deref()),
        (Some(a), Need::Sandbox) => a.read_sandbox(principal.as_deref()),
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(d) => (StatusCode::FORBIDDEN, format!("{d}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_and_health_paths_stay_open() {
        assert_eq!(need("/api/v1/executor"), Need::Nothing);
        assert_eq!(need("/cairn.v1.ExecutorLink/Session"), Need::Nothing);
        assert_eq!(need("/livez"), Need::Nothing);
        assert_eq!(need("/files/read"), Need::Sandbox);
        assert_eq!(need("/slave(1)/state"), Need::View);
        assert_eq!(need("/metrics"), Need::View);
    }
}
