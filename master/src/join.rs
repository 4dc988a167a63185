//! The cluster's identity at the master: the cluster CA and join tokens
//! kept in the cluster directory, the `Join` gRPC door through which nodes
//! get their certificates, and token rotation for operators.
//!
//! Tokens are read at every join: from ZooKeeper when the masters contend
//! through it (`<zk path>-tokens`, seeded from the first master's cluster
//! directory, rotated with a version check), so every master sees a
//! rotation at once, whichever directory it has; otherwise from the
//! cluster directory. A rotation is written before it is answered.

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
    #[error("the join tokens in ZooKeeper at {path}: {reason}")]
    ZooKeeper { path: String, reason: String },
}

/// The join tokens in ZooKeeper, shared by every master of the cluster.
#[derive(Debug, Clone)]
pub struct ZkTokens {
    client: zookeeper_client::Client,
    path: String,
}

static TOKENS_NODE: zookeeper_client::CreateOptions<'static> =
    zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());

impl ZkTokens {
    /// `path` beside the election path (nothing but masters' nodes may live
    /// under it): `<zk path>-tokens`.
    pub fn new(client: zookeeper_client::Client, path: String) -> Self {
        ZkTokens { client, path }
    }

    /// Connects on its own (`cairn-master token rotate --zk`).
    pub async fn connect(url: &cairn_model::zk::ZkUrl) -> Result<Self, JoinError> {
        let client = zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&url.hosts)
            .await
            .map_err(|e| JoinError::ZooKeeper {
                path: url.hosts.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self::new(client, format!("{}-tokens", url.path)))
    }

    fn err(&self, reason: impl ToString) -> JoinError {
        JoinError::ZooKeeper {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    async fn load(&self) -> Result<Option<(Tokens, i32)>, JoinError> {
        match self.client.get_data(&self.path).await {
            Ok((data, stat)) => {
                let tokens = serde_json::from_slice(&data).map_err(|e| self.err(e))?;
                Ok(Some((tokens, stat.version)))
            }
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether this call created the node (another master may have).
    async fn create(&self, tokens: &Tokens) -> Result<bool, JoinError> {
        let data = serde_json::to_vec(tokens).map_err(|e| self.err(e))?;
        match self.client.create(&self.path, &data, &TOKENS_NODE).await {
            Ok(_) => Ok(true),
            Err(zookeeper_client::Error::NodeExists) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Whether the node was still at `version` and now holds `tokens`.
    async fn replace(&self, tokens: &Tokens, version: i32) -> Result<bool, JoinError> {
        let data = serde_json::to_vec(tokens).map_err(|e| self.err(e))?;
        match self.client.set_data(&self.path, &data, Some(version)).await {
            Ok(_) => Ok(true),
            Err(zookeeper_client::Error::BadVersion) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// A master's cluster identity.
#[derive(Debug)]
pub struct Cluster {
    pub dir: ClusterDir,
    pub ca: ClusterCa,
    /// Serializes rotations (joins only read).
    rotating: tokio::sync::Mutex<()>,
    /// With ZooKeeper: where the tokens live for every master.
    zk: std::sync::OnceLock<ZkTokens>,
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
            zk: std::sync::OnceLock::new(),
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

    /// Keeps the tokens in ZooKeeper from now on (set once).
    pub fn share_through(&self, zk: ZkTokens) {
        let _ = self.zk.set(zk);
    }

    /// The current tokens: ZooKeeper's when shared (the first master there
    /// seeds them from its directory), else the directory's.
    pub async fn tokens(&self) -> Result<Tokens, JoinError> {
        let Some(zk) = self.zk.get() else {
            return Ok(Tokens::load(&self.dir.tokens_path())?);
        };
        loop {
            if let Some((tokens, _)) = zk.load().await? {
                return Ok(tokens);
            }
            let seed = Tokens::load(&self.dir.tokens_path())?;
            if zk.create(&seed).await? {
                tracing::info!(path = %zk.path, "join tokens shared through ZooKeeper");
                return Ok(seed);
            }
        }
    }

    pub async fn rotate(&self, kind: TokenKind, ttl: Duration) -> Result<String, JoinError> {
        let _one = self.rotating.lock().await;
        let token = match self.zk.get() {
            None => {
                let mut tokens = Tokens::load(&self.dir.tokens_path())?;
                let token = tokens.rotate(kind, ttl)?;
                tokens.save(&self.dir.tokens_path())?;
                token
            }
            // Another master may rotate at the same moment: the version
            // check makes one of them read again.
            Some(zk) => loop {
                self.tokens().await?;
                let Some((mut tokens, version)) = zk.load().await? else {
                    continue;
                };
                let token = tokens.rotate(kind, ttl)?;
                if zk.replace(&tokens, version).await? {
                    // The directory follows, for a master started later
                    // without ZooKeeper.
                    tokens.save(&self.dir.tokens_path())?;
                    break token;
                }
            },
        };
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
    /// Join attempts per source address (each costs a token check and,
    /// when admitted, a signature).
    pub limit: Arc<std::sync::Mutex<cairn_model::auth::RateLimit>>,
}

impl JoinService {
    pub fn new(cluster: Option<Arc<Cluster>>, limit: (u32, Duration)) -> Self {
        JoinService {
            cluster,
            limit: Arc::new(std::sync::Mutex::new(cairn_model::auth::RateLimit::new(
                limit.0, limit.1,
            ))),
        }
    }
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
        let from = request
            .extensions()
            .get::<axum::extract::ConnectInfo<cairn_tls::Peer>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.addr.ip().to_string());
        let allowed = self
            .limit
            .lock()
            .map(|mut l| l.allow(&from, std::time::Instant::now()))
            .unwrap_or(true);
        if !allowed {
            return Err(Status::resource_exhausted(format!(
                "too many joins from {from}; try again later"
            )));
        }
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
        let tokens = cluster.tokens().await.map_err(|e| {
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
