//! The Cairn master server: a driver task that owns the sans-I/O core
//! (`cairn-master-core`), and thin doors into it: gRPC (the Scheduler API and
//! the agent link) and HTTP (operator endpoints), all on one port.

pub mod auth;
pub mod convert;
pub mod driver;
pub mod grpc;
pub mod http;
pub mod join;
pub mod mesos_json;
pub mod mesos_scheduler;
pub mod metrics;
pub mod operator;
pub mod registry_store;
pub mod state_json;
pub mod zk;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_master_core::{Master, MasterConfig};
use cairn_model::zk::{Leader, ZkMasterInfo, ZkUrl};
use cairn_model::{Role, Time};
use cairn_proto as pb;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::driver::MasterInfo;
use crate::grpc::{AgentLinkService, MAX_MESSAGE_BYTES, SchedulerService};
use crate::registry_store::RegistryStore;
use crate::zk::Election;

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
    /// Contend for leadership through ZooKeeper, e.g.
    /// `zk://h1:2181,h2:2181/cairn`, and keep the registry there. Without
    /// it the master leads alone and its registry lives in memory.
    #[arg(long)]
    pub zk: Option<ZkUrl>,
    /// ZooKeeper session timeout: a leader cut off from ZooKeeper this long
    /// stops, and another takes over after it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub zk_session_timeout: Duration,
    /// Where the registry lives in ZooKeeper (default: the `--zk` path
    /// followed by `-registry`, beside it, since nothing but masters' nodes
    /// may live under the election path).
    #[arg(long)]
    pub zk_registry_path: Option<String>,
    /// After a failover, how long admitted agents have to re-register
    /// before they are marked unreachable.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2mins")]
    pub agent_reregister_timeout: Duration,
    /// At most this many agents marked unreachable per period, e.g.
    /// `10/1mins` (default: no limit).
    #[arg(long, value_parser = parse_rate)]
    pub agent_removal_rate_limit: Option<(u32, Duration)>,
    /// Unreachable agents remembered (in the registry too); past this the
    /// longest unreachable are forgotten, and come back as new agents.
    #[arg(long, default_value_t = 1000)]
    pub max_unreachable_agents: usize,
    /// Removed frameworks remembered (so their ids cannot subscribe again);
    /// past this the oldest are forgotten.
    #[arg(long, default_value_t = 50)]
    pub max_completed_frameworks: usize,
    /// Ended tasks kept per framework for `/state`.
    #[arg(long, default_value_t = 1000)]
    pub max_completed_tasks_per_framework: usize,
    /// Credentials, as in Mesos (`{"credentials": [{"principal": ..,
    /// "secret": ..}]}`): with them every framework, agent and operator
    /// must authenticate (HTTP Basic; the same value in gRPC
    /// `authorization` metadata). Without them nobody is authenticated.
    #[arg(long)]
    pub credentials: Option<std::path::PathBuf>,
    /// ACLs, as in Mesos (register_frameworks, run_tasks,
    /// teardown_frameworks, view_state, read_sandboxes): what is not
    /// granted is refused. Without them every caller may do everything.
    #[arg(long)]
    pub acls: Option<std::path::PathBuf>,
    /// Most subscriptions per principal (anonymous callers count as one),
    /// as a burst and per period.
    #[arg(long, value_parser = parse_rate, default_value = "50/10s")]
    pub subscribe_rate_limit: (u32, Duration),
    /// The cluster directory (`cairn-master init` makes one): with it the
    /// master speaks only TLS, with a certificate of the cluster CA kept
    /// there, admits nodes that join with the tokens kept there, and
    /// requires agents to present the certificate they joined with.
    #[arg(long, env = "CAIRN_CLUSTER_DIR")]
    pub cluster_dir: Option<std::path::PathBuf>,
    /// With `--cluster-dir` naming an empty directory: join the cluster of
    /// the master at `--join-master` with this master token first.
    #[arg(
        long,
        env = "CAIRN_JOIN_TOKEN",
        hide_env_values = true,
        requires = "join_master"
    )]
    pub join: Option<String>,
    /// The running master to join through (`host:port`).
    #[arg(long)]
    pub join_master: Option<String>,
    /// Most join attempts per source address, as a burst and per period.
    #[arg(long, value_parser = parse_rate, default_value = "20/10s")]
    pub join_rate_limit: (u32, Duration),
    /// Run without a cluster directory: plain HTTP and gRPC, agents
    /// admitted without certificates. Without `--cluster-dir` the master
    /// refuses to start unless this is given.
    #[arg(long, conflicts_with = "cluster_dir")]
    pub insecure: bool,
}

/// A duration in humantime or Mesos style (`5secs`, `1mins`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    humantime::parse_duration(s)
        .or_else(|e| {
            s.strip_suffix('s')
                .ok_or(e.clone())
                .and_then(|t| humantime::parse_duration(t).map_err(|_| e))
        })
        .map_err(|e| format!("{s:?} is not a duration: {e}"))
}

fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let (n, per) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not count/period, e.g. 10/1mins"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a count"))?;
    let per = parse_duration(per)?;
    if n == 0 || per.is_zero() {
        return Err(format!("{s:?}: count and period must be positive"));
    }
    Ok((n, per))
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
    /// Every flag at its default (for a master started from code).
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: MasterArgs,
        }
        use clap::Parser;
        Wrapper::parse_from(["cairn-master"]).args
    }

    /// The credentials and ACLs the flags name, read and checked.
    pub fn security(
        &self,
    ) -> Result<
        (
            Option<cairn_model::auth::Credentials>,
            Option<cairn_model::auth::Acls>,
        ),
        ServeError,
    > {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| ServeError::Security {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let parse_err = |path: &std::path::Path, e: serde_json::Error| ServeError::Security {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let credentials = match &self.credentials {
            Some(p) => {
                let c: cairn_model::auth::Credentials =
                    serde_json::from_str(&read(p)?).map_err(|e| parse_err(p, e))?;
                if c.is_empty() {
                    return Err(ServeError::Security {
                        path: p.clone(),
                        reason: "no credentials in it".into(),
                    });
                }
                Some(c)
            }
            None => None,
        };
        let acls = match &self.acls {
            Some(p) => Some(serde_json::from_str(&read(p)?).map_err(|e| parse_err(p, e))?),
            None => None,
        };
        Ok((credentials, acls))
    }

    pub fn core_config(&self) -> MasterConfig {
        MasterConfig {
            allocation_interval: self.allocation_interval,
            agent_ping_timeout: self.agent_ping_timeout,
            agent_heartbeat_interval: (self.agent_ping_timeout / 5).max(Duration::from_millis(100)),
            offer_timeout: self.offer_timeout,
            framework_heartbeat_interval: self.heartbeat_interval,
            role_weights: self.weights.clone().unwrap_or_default(),
            agent_reregister_timeout: self.agent_reregister_timeout,
            agent_removal_rate: self.agent_removal_rate_limit,
            max_unreachable_agents: self.max_unreachable_agents,
            max_completed_frameworks: self.max_completed_frameworks,
            max_completed_tasks_per_framework: self.max_completed_tasks_per_framework,
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
            "zk": self.zk.as_ref().map(ToString::to_string),
            "zk_session_timeout": humantime::format_duration(self.zk_session_timeout).to_string(),
            "registry": if self.zk.is_some() { "zookeeper" } else { "in_memory" },
            "agent_reregister_timeout": humantime::format_duration(self.agent_reregister_timeout).to_string(),
            "agent_removal_rate_limit": self.agent_removal_rate_limit.map(|(n, d)| format!("{n}/{}", humantime::format_duration(d))),
            "max_unreachable_agents": self.max_unreachable_agents,
            "max_completed_frameworks": self.max_completed_frameworks,
            "max_completed_tasks_per_framework": self.max_completed_tasks_per_framework,
            "credentials": self.credentials.as_ref().map(|p| p.display().to_string()),
            "acls": self.acls.as_ref().map(|p| p.display().to_string()),
            "subscribe_rate_limit": format!("{}/{}", self.subscribe_rate_limit.0, humantime::format_duration(self.subscribe_rate_limit.1)),
            "cluster_dir": self.cluster_dir.as_ref().map(|p| p.display().to_string()),
            "tls": self.cluster_dir.is_some(),
            "insecure": self.insecure,
            "join_rate_limit": format!("{}/{}", self.join_rate_limit.0, humantime::format_duration(self.join_rate_limit.1)),
        })
    }
}

/// Opens the master's listening socket. The accept queue is deep (capped
/// by the kernel's `somaxconn`): after a failover every agent and framework
/// connects to the new leader at once, and connections dropped from a full
/// queue are retried only after the kernel's one-second SYN timeout.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

const LISTEN_BACKLOG: u32 = 4096;

/// Errors that stop the master.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("the HTTP/gRPC server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    ZooKeeper(#[from] zk::ZkError),
    #[error("{path}: {reason}")]
    Security {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot read the registry: {0}")]
    Registry(#[from] registry_store::StoreError),
    #[error(transparent)]
    Cluster(#[from] join::JoinError),
    #[error(
        "no cluster directory: create one with `cairn-master init --cluster-dir DIR` and start \
         with --cluster-dir DIR (TLS, agents join with a token), or pass --insecure to run \
         without TLS and without node authentication"
    )]
    NoClusterDir,
}

/// Runs a master on `listener` until `shutdown` completes. With `--zk` it
/// contends for leadership and serves as a standby until it leads; it
/// returns an error (and the process should exit) when its ZooKeeper
/// session is lost, so that it can never act beside a newer leader.
pub async fn serve(
    args: MasterArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    let (credentials, acls) = args.security()?;
    let auth = Arc::new(auth::Auth::new(
        credentials,
        acls.clone(),
        args.subscribe_rate_limit,
    ));
    let core_config = MasterConfig {
        acls,
        ..args.core_config()
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    if args.cluster_dir.is_none() && !args.insecure {
        return Err(ServeError::NoClusterDir);
    }
    let flags = Arc::new(args.flags_json(addr));
    let cluster = match &args.cluster_dir {
        Some(dir) => {
            let dir = cairn_tls::ClusterDir::new(dir);
            if let (false, Some(token), Some(via)) = (dir.exists(), &args.join, &args.join_master) {
                join::join_as_master(&dir, via, token, &hostname).await?;
                tracing::info!(via = %via, dir = %dir.path.display(), "joined the cluster");
            }
            Some(Arc::new(join::Cluster::load(dir)?))
        }
        None => None,
    };
    let tls = match &cluster {
        Some(c) => {
            let mut names = vec![hostname.clone(), addr.ip().to_string()];
            if addr.ip().is_unspecified() {
                names.push("127.0.0.1".into());
            }
            let identity = c.master_identity(&names)?;
            Some(cairn_tls::server_config(&identity).map_err(join::JoinError::from)?)
        }
        None => None,
    };
    // The listener sets no Nagle: these protocols trade small messages, and
    // coalescing writes against the peer's delayed acks costs tens of ms.
    let listener = cairn_tls::Listener::new(listener, tls).map_err(ServeError::LocalAddr)?;
    let Some(url) = args.zk.clone() else {
        let core = Master::new(core_config.clone(), seed, Time::now());
        let info = MasterInfo {
            id: core.id().to_string(),
            hostname,
            address: addr.to_string(),
            port: addr.port(),
            epoch: 0,
        };
        tracing::info!(master_id = %info.id, %addr, "master listening (registry in memory; no ZooKeeper)");
        let store: Arc<dyn registry_store::RegistryStore> =
            Arc::new(registry_store::MemoryStore::default());
        let (handle, _driver) = driver::spawn(core, info, store);
        let app = app(handle, flags, false, auth, cluster, args.join_rate_limit);
        return tokio::select! {
            r = axum::serve(listener, app.into_make_service_with_connect_info::<cairn_tls::Peer>()) => r.map_err(ServeError::Server),
            () = shutdown => {
                tracing::info!("master shutting down");
                Ok(())
            }
        };
    };

    // The id is the core's, derived from the seed, so the node written now
    // names the master that will lead.
    let id = Master::new(core_config.clone(), seed, Time::now())
        .id()
        .to_string();
    let zk_info = ZkMasterInfo::new(&id, &hostname, addr.ip(), addr.port());
    let election = Election::contend(&url, args.zk_session_timeout, &zk_info).await?;
    if let Some(c) = &cluster {
        c.share_through(join::ZkTokens::new(
            election.client.clone(),
            format!("{}-tokens", url.path),
        ));
    }
    tracing::info!(master_id = %id, %addr, zk = %url, node = %election.node, "contending for leadership");
    let (mode_tx, mode_rx) = watch::channel(Mode::Standby(None));
    let front = front(mode_rx, format!("{hostname}:{}", addr.port()));
    let registry_path = args
        .zk_registry_path
        .clone()
        .unwrap_or_else(|| format!("{}-registry", url.path));
    let lead = async {
        election
            .await_leadership(|leader| {
                match &leader {
                    Some(l) => tracing::info!(leader = %l.endpoint, epoch = l.epoch, "standing by"),
                    None => tracing::info!("standing by; no leader elected"),
                }
                mode_tx.send_replace(Mode::Standby(leader));
            })
            .await?;
        // Elected: requests wait for the registry to load rather than
        // bounce (every agent and framework arrives at once; refused, they
        // would retry in a storm while the master recovers).
        mode_tx.send_replace(Mode::Recovering);
        let loading = std::time::Instant::now();
        let store = zk::ZkStore::new(&election, &registry_path).await?;
        let state = store.load().await?;
        let now = Time::now();
        let mut core = Master::new(core_config.clone(), seed, now);
        tracing::info!(
            epoch = election.epoch,
            agents = state.agents.len(),
            frameworks = state.frameworks.len(),
            load_ms = u64::try_from(loading.elapsed().as_millis()).unwrap_or(u64::MAX),
            "elected leader; recovered the registry"
        );
        core.recover(now, state);
        let info = MasterInfo {
            id: id.clone(),
            hostname: hostname.clone(),
            address: addr.to_string(),
            port: addr.port(),
            epoch: election.epoch,
        };
        let (handle, driver) = driver::spawn(core, info, Arc::new(store));
        mode_tx.send_replace(Mode::Leading(app(
            handle,
            flags.clone(),
            true,
            auth.clone(),
            cluster.clone(),
            args.join_rate_limit,
        )));
        let _ = driver.await;
        Ok::<(), ServeError>(())
    };
    tokio::select! {
        r = axum::serve(listener, front.into_make_service_with_connect_info::<cairn_tls::Peer>()) => r.map_err(ServeError::Server),
        r = lead => r,
        e = election.session_lost() => {
            tracing::error!(error = %e, "lost the ZooKeeper session; stopping");
            Err(e.into())
        }
        () = shutdown => {
            tracing::info!("master shutting down");
            // Step down at once rather than at the session's expiry.
            if let Err(e) = election.client.delete(&election.node, None).await {
                tracing::warn!(error = %e, "cannot remove this master's election node");
            }
            Ok(())
        }
    }
}

/// What a master with ZooKeeper serves.
#[derive(Clone)]
enum Mode {
    /// Another master leads (or none does).
    Standby(Option<Leader>),
    /// This one was elected and is loading the registry.
    Recovering,
    /// This one leads: the full router.
    Leading(Router),
}

/// How long a request to a just-elected master waits for it to finish
/// recovering before it is answered as if no leader were elected.
const RECOVERY_HOLD: Duration = Duration::from_secs(10);

/// The door of a contending master: the full API while it leads; while it
/// stands by, a 307 to the leader for HTTP (503 while there is none) and a
/// gRPC `UNAVAILABLE` naming the leader (also in `cairn-leader` metadata);
/// while it recovers, requests wait (up to `RECOVERY_HOLD`).
/// `me` is this master's `hostname:port`.
fn front(mode: watch::Receiver<Mode>, me: String) -> Router {
    let svc = tower::service_fn(move |req: Request<Body>| {
        let now = mode.borrow().clone();
        let mut changes = mode.clone();
        let me = me.clone();
        async move {
            let path = req.uri().path().to_string();
            let mode = match now {
                Mode::Recovering => tokio::time::timeout(
                    RECOVERY_HOLD,
                    changes.wait_for(|m| !matches!(m, Mode::Recovering)),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map_or(Mode::Recovering, |m| m.clone()),
                m => m,
            };
            let response = match mode {
                Mode::Leading(_) if path == "/redirect" || path == "/master/redirect" => {
                    redirect(&me, "")
                }
                Mode::Leading(app) => match app.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
                Mode::Standby(leader) => standby(&req, leader.as_ref()),
                // Still loading after the hold: as if no leader yet.
                Mode::Recovering => standby(&req, None),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    Router::new().fallback_service(svc)
}

fn redirect(authority: &str, path_and_query: &str) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, format!("//{authority}{path_and_query}"))],
    )
        .into_response()
}

fn standby(req: &Request<Body>, leader: Option<&Leader>) -> Response {
    let path = req.uri().path();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let mut status = match leader {
            Some(l) => tonic::Status::unavailable(format!(
                "this master is not the leader; the leading master is at {}",
                l.endpoint
            )),
            None => tonic::Status::unavailable("this master is not the leader; no leader elected"),
        };
        if let Some(v) = leader.and_then(|l| l.endpoint.parse().ok()) {
            status.metadata_mut().insert(LEADER_METADATA, v);
        }
        return status.into_http::<Body>();
    }
    match path {
        "/health" | "/master/health" | "/livez" => StatusCode::OK.into_response(),
        // Ready when a leader is known to send clients to.
        "/readyz" => match leader {
            Some(l) => format!("ok: standing by; the leader is {}\n", l.endpoint).into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected\n").into_response(),
        },
        // A standby's own metrics: not elected, its session up.
        "/metrics" => (
            [(header::CONTENT_TYPE, http::PROMETHEUS_TEXT)],
            "# TYPE cairn_master_elected gauge\ncairn_master_elected 0\n\
             # TYPE cairn_master_zookeeper_session_connected gauge\n\
             cairn_master_zookeeper_session_connected 1\n",
        )
            .into_response(),
        _ => match leader {
            Some(l) if path == "/redirect" || path == "/master/redirect" => {
                redirect(&l.authority, "")
            }
            Some(l) => redirect(
                &l.authority,
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or(path),
            ),
            None => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response(),
        },
    }
}

/// gRPC metadata key naming the leading master (`ip:port`) on a standby's
/// `UNAVAILABLE`.
pub const LEADER_METADATA: &str = "cairn-leader";

/// gRPC and HTTP on one router: gRPC services under their service paths,
/// everything else HTTP.
fn app(
    handle: driver::Handle,
    flags: Arc<serde_json::Value>,
    zk: bool,
    auth: Arc<auth::Auth>,
    cluster: Option<Arc<join::Cluster>>,
    join_limit: (u32, Duration),
) -> Router {
    let join =
        pb::join_server::JoinServer::new(join::JoinService::new(cluster.clone(), join_limit))
            .max_decoding_message_size(64 * 1024);
    let scheduler = pb::scheduler_server::SchedulerServer::new(SchedulerService {
        handle: handle.clone(),
        auth: auth.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let agents = pb::agent_link_server::AgentLinkServer::new(AgentLinkService {
        handle: handle.clone(),
        auth: auth.clone(),
        tls: cluster.is_some(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let weights = flags["weights"]
        .as_object()
        .map(|w| {
            w.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let http = http::router(http::HttpState {
        handle,
        flags,
        weights: Arc::new(weights),
        started: Time::now(),
        zk,
        agents: http::agent_client(),
        tls_agents: Arc::default(),
        auth,
        cluster,
    });
    // tonic services take tonic's body type; axum hands them its own.
    let to_tonic = |r: axum::http::Request<axum::body::Body>| r.map(tonic::body::Body::new);
    let routes = http.route_service(
        &format!("/{}/{{*rest}}", <pb::scheduler_server::SchedulerServer<SchedulerService> as tonic::server::NamedService>::NAME),
        scheduler.map_request(to_tonic),
    )
    .route_service(
        &format!("/{}/{{*rest}}", <pb::agent_link_server::AgentLinkServer<AgentLinkService> as tonic::server::NamedService>::NAME),
        agents.map_request(to_tonic),
    )
    .route_service(
        &format!("/{}/{{*rest}}", <pb::join_server::JoinServer<join::JoinService> as tonic::server::NamedService>::NAME),
        join.map_request(to_tonic),
    )
    .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no such endpoint\n") });
    // Mesos's routing rules apply before the routes: see `http::route_path`.
    Router::new().fallback_service(routes.map_request(
        |mut req: axum::http::Request<axum::body::Body>| {
            if let Some(path) = http::route_path(req.uri().path()) {
                let mut parts = req.uri().clone().into_parts();
                let pq = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                if let Ok(pq) = pq.parse() {
                    parts.path_and_query = Some(pq);
                    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                        *req.uri_mut() = uri;
                    }
                }
            }
            req
        },
    ))
}
