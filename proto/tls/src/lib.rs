//! Cairn's cluster identity and the TLS of its links.
//!
//! A cluster has one certificate authority (the *cluster CA*), kept by its
//! masters in the *cluster directory* (`cairn-master init`). Nodes join with
//! a *join token*: the CA's SHA-256 fingerprint, which the joining node pins,
//! and a secret, which it proves. A joined node holds a certificate naming
//! its role: a master's carries the DNS name [`MASTER_NAME`], an agent's only
//! [`AGENT_NAME`] and its agent id, so a client that verifies the name
//! [`MASTER_NAME`] can never be served by an agent's certificate, and the
//! master reads the agent id an agent may speak for from its certificate.
//! Agents serve their own API (executors, sandbox files) with the same
//! certificate; clients verify [`AGENT_NAME`] and, where they know which
//! agent they dial, its id ([`agent_client_config`]).
//!
//! Everything here is plumbing at the edges: the master's and agent's
//! decisions stay in their cores.

mod ca;
mod executor;
mod net;
mod token;

pub use rustls::ClientConfig;

pub use ca::{
    ClusterCa, ClusterDir, NodeIdentity, Role, certificate_request, fingerprint,
    fingerprint_of_pem, role_of_der,
};
pub use executor::{EXECUTOR_TOKEN_ENV, ExecutorAuthError, ExecutorKey, ExecutorToken};
pub use net::{
    HttpsConnector, Listener, Peer, agent_channel, agent_client_config, agent_grpc_connect,
    agent_https_connector, client_config, executor_tls_from_env, grpc_channel, grpc_connect,
    https_connector, pinned_client_config, server_config,
};
pub use token::{Token, TokenKind, TokenRecord, Tokens};

use std::path::PathBuf;

/// The DNS name in every master certificate, and the name clients verify.
pub const MASTER_NAME: &str = "master.cairn";
/// The DNS name in every agent certificate, and the name clients of
/// agents verify.
pub const AGENT_NAME: &str = "agent.cairn";

/// The environment variable carrying the cluster CA's certificate (PEM) to
/// the executors of an agent that serves TLS; absent, the agent speaks
/// plain HTTP.
pub const AGENT_CA_ENV: &str = "CAIRN_AGENT_CA";

/// Errors of cluster identity and TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path} holds no cluster; create one with `cairn-master init --cluster-dir {path}`")]
    NoCluster { path: PathBuf },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("malformed join token: {0}")]
    MalformedToken(String),
    #[error("join token refused: {0}")]
    TokenRefused(String),
    #[error("cannot join through the master at {master}: {reason}")]
    JoinRefused {
        master: String,
        code: tonic::Code,
        reason: String,
    },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Certificate(e.to_string())
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e.to_string())
    }
}

/// What joining gave a node: its identity and the master's whole reply.
pub struct Joined {
    pub identity: NodeIdentity,
    pub reply: cairn_proto::JoinReply,
}

impl std::fmt::Debug for Joined {
    /// The reply may hold the CA's key and the tokens: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("identity", &self.identity)
            .field("agent_id", &self.reply.agent_id)
            .finish_non_exhaustive()
    }
}

/// An error and its sources, one line (what a refused handshake says is
/// several levels down).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

/// Joins the cluster through the master at `master` (`host:port`) with
/// `token`: pins the CA the token names, proves the token's secret, and
/// returns a certificate for a key made here (the key never leaves).
pub async fn join(master: &str, token: &str, hostname: &str) -> Result<Joined, TlsError> {
    let parsed: Token = token.parse()?;
    let (key, csr) = ca::certificate_request()?;
    let config = pinned_client_config(&parsed.ca_fingerprint)?;
    let channel = grpc_connect(master, config, std::time::Duration::from_secs(10)).await?;
    let reply = cairn_proto::join_client::JoinClient::new(channel)
        .join(cairn_proto::JoinRequest {
            token: token.to_string(),
            csr,
            hostname: hostname.to_string(),
        })
        .await
        .map_err(|s| TlsError::JoinRefused {
            master: master.to_string(),
            code: s.code(),
            reason: s.message().to_string(),
        })?
        .into_inner();
    if fingerprint_of_pem(&reply.ca_pem)? != parsed.ca_fingerprint {
        return Err(TlsError::JoinRefused {
            master: master.to_string(),
            code: tonic::Code::PermissionDenied,
            reason: "the CA it returned is not the one the token names".into(),
        });
    }
    let identity = NodeIdentity::new(&key, reply.certificate_pem.clone(), reply.ca_pem.clone())?;
    Ok(Joined { identity, reply })
}

/// Seconds since the Unix epoch (token expiry is kept in these).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
