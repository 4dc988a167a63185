//! The doors' side of security: who is calling (HTTP Basic on HTTP, the
//! same `authorization` value in gRPC metadata), what an HTTP path needs
//! (viewing the state, reading sandboxes), and the subscription rate limit.
//! What a principal may do inside the core (roles, task users, teardowns)
//! the core decides (`MasterConfig::acls`).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_model::auth::{Acls, Credentials, RateLimit};

/// The authenticated principal of an HTTP request (none: authentication
/// is off), put in the request's extensions by [`gate`].
#[derive(Clone, Debug)]
pub struct Principal(pub Option<String>);

#[derive(Debug)]
pub struct Auth {
    pub credentials: Option<Credentials>,
    pub acls: Option<Acls>,
    subscriptions: Mutex<RateLimit>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: give a principal and secret (HTTP Basic)")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    #[error("{0}")]
    Forbidden(String),
    #[error("too many subscriptions from {0}; try again later")]
    RateLimited(String),
}

impl AuthError {
    pub fn response(&self) -> Response {
        match self {
            AuthError::Missing | AuthError::Invalid => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"cairn\"")],
                format!("{self}\n"),
            )
                .into_response(),
            AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, format!("{self}\n")).into_response(),
            AuthError::RateLimited(_) => {
                (StatusCode::TOO_MANY_REQUESTS, format!("{self}\n")).into_response()
            }
        }
    }

    pub fn status(&self) -> tonic::Status {
        match self {
            AuthError::Missing | AuthError::Invalid => {
                tonic::Status::unauthenticated(self.to_string())
            }
            AuthError::Forbidden(_) => tonic::Status::permission_denied(self.to_string()),
            AuthError::RateLimited(_) => tonic::Status::resource_exhausted(self.to_string()),
        }
    }
}

impl Auth {
    pub fn new(
        credentials: Option<Credentials>,
        acls: Option<Acls>,
        subscribe_limit: (u32, std::time::Duration),
    ) -> Self {
        Auth {
            credentials,
            acls,
            subscriptions: Mutex::new(RateLimit::new(subscribe_limit.0, subscribe_limit.1)),
        }
    }

    /// Who presents `authorization`. Without credentials configured nobody
    /// is authenticated (and everybody may call).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<String>, AuthError> {
        cairn_model::auth::authenticate(self.credentials.as_ref(), authorization).map_err(|e| {
            match e {
                cairn_model::auth::Unauthenticated::Missing => AuthError::Missing,
                cairn_model::auth::Unauthenticated::Invalid => AuthError::Invalid,
            }
        })
    }

    pub fn authenticate_grpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<String>, tonic::Status> {
        let value = metadata.get("authorization").and_then(|v| v.to_str().ok());
        self.authenticate(value).map_err(|e| e.status())
    }

    pub fn view(&self, principal: Option<&str>) -> Result<(), AuthError> {
        match &self.acls {
            Some(a) => a
                .view(principal)
                .map_err(|d| AuthError::Forbidden(d.to_string())),
            None => Ok(()),
        }
    }

    /// Unlike every other action, refused without ACLs: rotation over HTTP
    /// needs a `manage_tokens` grant (on the master's host,
    /// `cairn-master token rotate` needs only the cluster directory).
    pub fn manage_tokens(&self, principal: Option<&str>) -> Result<(), AuthError> {
        match &self.acls {
            Some(a) => a
                .manage_tokens(principal)
                .map_err(|d| AuthError::Forbidden(d.to_string())),
            None => Err(AuthError::Forbidden(
                "rotating join tokens over HTTP needs --acls granting manage_tokens \
                 (or run `cairn-master token rotate` on a master's host)"
                    .into(),
            )),
        }
    }

    pub fn read_sandbox(&self, principal: Option<&str>) -> Result<(), AuthError> {
        match &self.acls {
            Some(a) => a
                .read_sandbox(principal)
                .map_err(|d| AuthError::Forbidden(d.to_string())),
            None => Ok(()),
        }
    }

    /// One subscription by `principal` (or the anonymous callers as one).
    pub fn allow_subscription(&self, principal: Option<&str>) -> Result<(), AuthError> {
        let key = principal.unwrap_or("");
        let ok = self
            .subscriptions
            .lock()
            .map(|mut r| r.allow(key, std::time::Instant::now()))
            .unwrap_or(true);
        if ok {
            Ok(())
        } else {
            Err(AuthError::RateLimited(principal.map_or_else(
                || "anonymous callers".to_string(),
                |p| format!("principal {p:?}"),
            )))
        }
    }
}

/// What an HTTP path asks of its caller.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    /// Authenticated; the handler authorizes (framework and operator APIs).
    Caller,
    View,
    Sandbox,
    Tokens,
}

fn need(path: &str) -> Need {
    let path = path
        .strip_prefix("/master")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    match path {
        "/livez" | "/readyz" | "/health" | "/version" | "/redirect" => Need::Nothing,
        "/api/v1/scheduler" | "/api/v1" | "/teardown" => Need::Caller,
        p if p.starts_with("/files/") => Need::Sandbox,
        "/tokens/rotate" => Need::Tokens,
        _ => Need::View,
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Authenticates every HTTP request and authorizes what its path needs.
pub async fn gate(State(auth): State<Arc<Auth>>, mut req: Request<Body>, next: Next) -> Response {
    let need = need(req.uri().path());
    if need == Need::Nothing {
        return next.run(req).await;
    }
    let principal = match auth.authenticate(authorization(req.headers())) {
        Ok(p) => p,
        Err(e) => return e.response(),
    };
    let verdict = match need {
        Need::View => auth.view(principal.as_deref()),
        Need::Sandbox => auth.read_sandbox(principal.as_deref()),
        Need::Tokens => auth.manage_tokens(principal.as_deref()),
        Need::Nothing | Need::Caller => Ok(()),
    };
    if let Err(e) = verdict {
        return e.response();
    }
    req.extensions_mut().insert(Principal(principal));
    next.run(req).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cairn_model::auth::basic_value;

    #[test]
    fn basic_credentials_round_trip_and_bad_ones_are_refused() {
        let creds: Credentials =
            serde_json::from_str(r#"{"credentials": [{"principal": "ops", "secret": "pw"}]}"#)
                .unwrap();
        let auth = Auth::new(Some(creds), None, (10, std::time::Duration::from_secs(1)));
        let v = basic_value("ops", "pw");
        assert_eq!(auth.authenticate(Some(&v)), Ok(Some("ops".into())));
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some(&basic_value("ops", "no"))),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.authenticate(Some("Basic !!!")),
            Err(AuthError::Invalid)
        );
        assert_eq!(auth.authenticate(Some("Bearer x")), Err(AuthError::Invalid));
        let open = Auth::new(None, None, (10, std::time::Duration::from_secs(1)));
        assert_eq!(open.authenticate(None), Ok(None));
    }

    #[test]
    fn paths_need_what_mesos_gates_them_with() {
        assert_eq!(need("/livez"), Need::Nothing);
        assert_eq!(need("/master/health"), Need::Nothing);
        assert_eq!(need("/state"), Need::View);
        assert_eq!(need("/master/state"), Need::View);
        assert_eq!(need("/"), Need::View);
        assert_eq!(need("/files/read"), Need::Sandbox);
        assert_eq!(need("/api/v1/scheduler"), Need::Caller);
        assert_eq!(need("/teardown"), Need::Caller);
    }
}
