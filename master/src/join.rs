//! The cluster's identity at the master: the cluster CA and join tokens
//! kept in the cluster directory, the `Join` gRPC door through which nodes
//! get their certificates, and token rotation for operators.
//!
//! Tokens are read from the cluster directory at every join, so masters
//! that share the directory see each other's rotations at once; a rotation
//! is written there before it is answered. Masters with directories of
//! their own (joined with `--join`) do not see each other's rotations.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_proto as pb;
use cairn_tls::{ClusterCa, ClusterDir, NodeIdentity, Role, TlsError, TokenKind, Tokens};
use tonic::{Request, Response as GrpcResponse, Status};

/// Errors of the cluster identity at the master.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot join the cluster through {master}: {reason}")]
    Join { master: String, reason: String },
    #[error("{path} already holds a cluster; remove it first to make a new one")]
    Exists { path: PathBuf },
}

/// A master's cluster identity.
#[derive(Debug)]
pub struct Cluster {
    pub dir: ClusterDir,
    pub ca: ClusterCa,
    /// Serializes rotations (joins only read).
    rotating: tokio::sync::Mutex<()>,
}

/// Default lifetime of a join token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Cluster {
    pub fn load(dir: ClusterDir) -> Result<Self, JoinError> {
        let ca = dir.load_ca()?;
        Ok(Cluster {
            dir,
            ca,
            rotating: tokio::sync::Mutex::new(()),
        })
    }

    /// `cairn-master init`: a new CA and tokens in `dir`, which must not
    /// hold a cluster already.
    pub fn init(dir: ClusterDir, name: &str, ttl: Duration) -> Result<(Self, Tokens), JoinError> {
        if dir.exists() {
            return Err(JoinError::Exists { path: dir.path });
        }
        let ca = ClusterCa::generate(name)?;
        let tokens = Tokens::generate(&ca.fingerprint(), ttl)?;
        // Tokens first: a directory with a CA is a cluster.
        tokens.save(&dir.tokens_path())?;
        dir.save_ca(&ca)?;
        Ok((Self::load(dir)?, tokens))
    }

    /// This master's own certificate, naming it by `names` too.
    pub fn master_identity(&self, names: &[String]) -> Result<NodeIdentity, JoinError> {
        Ok(self.ca.issue(&Role::Master, names)?)
    }

    fn tokens(&self) -> Result<Tokens, TlsError> {
        Tokens::load(&self.dir.tokens_path())
    }

    pub async fn rotate(&self, kind: TokenKind, ttl: Duration) -> Result<String, JoinError> {
        let _one = self.rotating.lock().await;
        let mut tokens = self.tokens()?;
        let token = tokens.rotate(kind, ttl)?;
        tokens.save(&self.dir.tokens_path())?;
        tracing::info!(%kind, "join token rotated");
        Ok(token.to_string())
    }
}

/// Joins a master to a cluster through a running master: the CA (key
/// included) and tokens are written to `dir`.
pub async fn join_as_master(
    dir: &ClusterDir,
    master: &str,
    token: &str,
    hostname: &str,
) -> Result<(), JoinError> {
    let err = |reason: String| JoinError::Join {
        master: master.to_string(),
        reason,
    };
    let parsed: cairn_tls::Token = token.parse()?;
    if parsed.kind != TokenKind::Master {
        return Err(err("a master joins with a master token".into()));
    }
    let joined = cairn_tls::join(master, token, hostname).await?;
    let ca = ClusterCa::from_pem(&joined.reply.ca_pem, &joined.reply.ca_key_pem)?;
    let tokens: Tokens = serde_json::from_str(&joined.reply.tokens_json)
        .map_err(|e| err(format!("malformed tokens in the reply: {e}")))?;
    tokens.save(&dir.tokens_path())?;
    dir.save_ca(&ca)?;
    Ok(())
}

/// The `Join` door.
#[derive(Debug, Clone)]
pub struct JoinService {
    pub cluster: Option<Arc<Cluster>>,
}

/// Largest certificate request accepted.
const MAX_CSR_BYTES: usize = 16 * 1024;

#[tonic::async_trait]
impl pb::join_server::Join for JoinService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<GrpcResponse<pb::JoinReply>, Status> {
        let Some(cluster) = &self.cluster else {
            return Err(Status::failed_precondition(
                "this master has no cluster CA (start it with --cluster-dir)",
            ));
        };
        let mut req = request.into_inner();
        // Only for the log: a name, not a payload.
        req.hostname.truncate(
            (0..=req.hostname.len().min(255))
                .rev()
                .find(|i| req.hostname.is_char_boundary(*i))
                .unwrap_or(0),
        );
        if req.csr.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "the certificate request is larger than {MAX_CSR_BYTES} bytes"
            )));
        }
        let tokens = cluster.tokens().map_err(|e| {
            tracing::error!(error = %e, "cannot read the join tokens");
            Status::unavailable("the master cannot read its join tokens")
        })?;
        let kind = tokens
            .check(&req.token, cairn_tls::unix_now())
            .map_err(|e| {
                tracing::warn!(hostname = %req.hostname, error = %e, "join refused");
                match e {
                    TlsError::MalformedToken(_) => Status::invalid_argument(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                }
            })?;
        let role = match kind {
            TokenKind::Agent => Role::Agent {
                id: format!("agent-{}", uuid::Uuid::new_v4().simple()),
            },
            TokenKind::Master => Role::Master,
        };
        let certificate_pem = cluster
            .ca
            .sign_request(&req.csr, &role)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut reply = pb::JoinReply {
            certificate_pem,
            ca_pem: cluster.ca.cert_pem().to_string(),
            ..Default::default()
        };
        match &role {
            Role::Agent { id } => {
                tracing::info!(hostname = %req.hostname, agent_id = %id, "agent joined");
                reply.agent_id = id.clone();
            }
            Role::Master => {
                tracing::info!(hostname = %req.hostname, "master joined");
                reply.ca_key_pem = cluster.ca.key_pem().to_string();
                reply.tokens_json =
                    serde_json::to_string(&tokens).map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        Ok(GrpcResponse::new(reply))
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct RotateQuery {
    kind: String,
    ttl: Option<String>,
}

/// `POST /tokens/rotate?kind=agent[&ttl=24h]`: a new agent token, the old
/// one refused from now on; the answer holds the new token (and is the only
/// place it is shown besides the cluster directory).
pub async fn rotate(cluster: Option<Arc<Cluster>>, q: RotateQuery) -> Response {
    let Some(cluster) = cluster else {
        return (
            StatusCode::CONFLICT,
            "this master has no cluster CA (start it with --cluster-dir)\n",
        )
            .into_response();
    };
    let kind: TokenKind = match q.kind.parse() {
        Ok(TokenKind::Master) => {
            // A master token yields the CA's key: it is rotated only by
            // whoever holds the cluster directory.
            return (
                StatusCode::FORBIDDEN,
                "the master token is rotated on a master's host: \
                 cairn-master token rotate master --cluster-dir DIR\n",
            )
                .into_response();
        }
        Ok(k) => k,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let ttl = match q.ttl.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_TOKEN_TTL,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "ttl must be a positive duration, e.g. 24h\n",
            )
                .into_response();
        }
    };
    match cluster.rotate(kind, ttl).await {
        Ok(token) => Json(serde_json::json!({
            "kind": kind.to_string(),
            "token": token,
            "expires_in_seconds": ttl.as_secs(),
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "token rotation failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}
