//! The Cairn master server: a driver task that owns the sans-I/O core
//! (`cairn-master-core`), and thin doors into it: gRPC (the Scheduler API and
//! the agent link) and HTTP (operator endpoints), all on one port.

mod convert;
pub mod driver;
pub mod grpc;
pub mod http;
pub mod registry_store;
pub mod state_json;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use cairn_master_core::{Master, MasterConfig};
use cairn_model::{Role, Time};
use cairn_proto as pb;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::driver::MasterInfo;
use crate::grpc::{AgentLinkService, MAX_MESSAGE_BYTES, SchedulerService};

/// The master's flags (shared by `cairn-master` and `cairn local`).
#[derive(clap::Args, Clone, Debug)]
pub struct MasterArgs {
    /// Address for gRPC and HTTP (one port).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Period of the full allocation cycle.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub allocation_interval: Duration,
    /// An agent not heard from for this long is marked unreachable.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub agent_ping_timeout: Duration,
    /// Rescind offers outstanding this long (default: never).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub offer_timeout: Option<Duration>,
    /// Period of heartbeats on framework event streams.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub heartbeat_interval: Duration,
    /// Role weights, e.g. `analytics=2,ci=1` (unlisted roles weigh 1).
    #[arg(long, value_parser = parse_weights)]
    pub weights: Option<BTreeMap<Role, f64>>,
    /// Hostname to advertise (default: the listen address's host).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Seed of the core's randomness (default: random). The same seed and
    /// inputs replay the same decisions.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_weights(s: &str) -> Result<BTreeMap<Role, f64>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, w) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not role=weight"))?;
        let role = Role::parse("weights", role.trim()).map_err(|e| e.to_string())?;
        let w: f64 = w
            .trim()
            .parse()
            .map_err(|_| format!("{w:?} is not a number"))?;
        if !w.is_finite() || w <= 0.0 {
            return Err(format!("weight of {role} must be a positive number"));
        }
        out.insert(role, w);
    }
    Ok(out)
}

impl MasterArgs {
    pub fn core_config(&self) -> MasterConfig {
        MasterConfig {
            allocation_interval: self.allocation_interval,
            agent_ping_timeout: self.agent_ping_timeout,
            agent_heartbeat_interval: (self.agent_ping_timeout / 5).max(Duration::from_millis(100)),
            offer_timeout: self.offer_timeout,
            framework_heartbeat_interval: self.heartbeat_interval,
            role_weights: self.weights.clone().unwrap_or_default(),
            ..MasterConfig::default()
        }
    }

    fn flags_json(&self, listen: SocketAddr) -> serde_json::Value {
        json!({
            "listen": listen.to_string(),
            "allocation_interval": humantime::format_duration(self.allocation_interval).to_string(),
            "agent_ping_timeout": humantime::format_duration(self.agent_ping_timeout).to_string(),
            "offer_timeout": self.offer_timeout.map(|d| humantime::format_duration(d).to_string()),
            "heartbeat_interval": humantime::format_duration(self.heartbeat_interval).to_string(),
            "weights": self.weights.as_ref().map(|w| w.iter().map(|(r, v)| (r.to_string(), *v)).collect::<BTreeMap<_, _>>()),
        })
    }
}

/// Errors that stop the master.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("the HTTP/gRPC server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// Runs a master on `listener` until `shutdown` completes.
pub async fn serve(
    args: MasterArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let core = Master::new(args.core_config(), seed, Time::now());
    let info = MasterInfo {
        id: core.id().to_string(),
        hostname: args
            .hostname
            .clone()
            .unwrap_or_else(|| addr.ip().to_string()),
        address: addr.to_string(),
        port: addr.port(),
        epoch: 0,
    };
    tracing::info!(master_id = %info.id, %addr, "master listening");
    let store: Arc<dyn registry_store::RegistryStore> =
        Arc::new(registry_store::MemoryStore::default());
    let (handle, _driver) = driver::spawn(core, info, store);
    let app = app(handle, Arc::new(args.flags_json(addr)));
    tokio::select! {
        // No Nagle: these protocols trade small messages, and coalescing
        // writes against the peer's delayed acks costs tens of ms each.
        r = axum::serve(listener.tap_io(|tcp| { let _ = tcp.set_nodelay(true); }), app) => r.map_err(ServeError::Server),
        () = shutdown => {
            tracing::info!("master shutting down");
            Ok(())
        }
    }
}

/// gRPC and HTTP on one router: gRPC services under their service paths,
/// everything else HTTP.
fn app(handle: driver::Handle, flags: Arc<serde_json::Value>) -> Router {
    let scheduler = pb::scheduler_server::SchedulerServer::new(SchedulerService {
        handle: handle.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let agents = pb::agent_link_server::AgentLinkServer::new(AgentLinkService {
        handle: handle.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let http = http::router(http::HttpState { handle, flags });
    // tonic services take tonic's body type; axum hands them its own.
    let to_tonic = |r: axum::http::Request<axum::body::Body>| r.map(tonic::body::Body::new);
    http.route_service(
        &format!("/{}/{{*rest}}", <pb::scheduler_server::SchedulerServer<SchedulerService> as tonic::server::NamedService>::NAME),
        scheduler.map_request(to_tonic),
    )
    .route_service(
        &format!("/{}/{{*rest}}", <pb::agent_link_server::AgentLinkServer<AgentLinkService> as tonic::server::NamedService>::NAME),
        agents.map_request(to_tonic),
    )
    .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no such endpoint\n") })
}
