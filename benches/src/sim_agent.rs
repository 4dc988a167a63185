//! Simulated agents: many in one process, each holding a real session with
//! the leading master over the agent gRPC link (register, heartbeats,
//! re-registration under its id when the leader changes). They run no
//! processes: a task given to one is reported STARTING, RUNNING and
//! FINISHED at once, as an executor would.
//!
//! They share one view of the leader (one ZooKeeper watch for all), where
//! real agents would each hold a ZooKeeper session: what is measured is the
//! masters' side of a failover, not the ZooKeeper server's fan-out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often unacknowledged updates are sent again (a real agent starts
/// at 10 s and backs off).
const RETRY_EVERY: Duration = Duration::from_secs(10);

/// Reconnection backoff, as the real agent's (`agent/src/master_link.rs`).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

use cairn_model::convert::agent_info_to_pb;
use cairn_model::zk::Leader;
use cairn_model::{AgentInfo, Resources};
use cairn_proto as pb;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// What one simulated agent has seen.
#[derive(Clone, Debug, Default)]
pub struct SimAgentState {
    /// The id the master gave it.
    pub id: Option<String>,
    /// The epoch of the master it is registered with, and when it was
    /// (re-)registered there.
    pub registered: Option<(u64, Instant)>,
    pub registrations: usize,
    /// Tasks it was given (each reported finished at once).
    pub tasks_run: usize,
}

/// 16 random-enough bytes for a status uuid (unique per process run).
fn uuid_bytes() -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&u64::from(std::process::id()).to_le_bytes());
    b
}

/// What simulated agent `i` announces.
fn sim_info(i: usize, resources: &Resources) -> AgentInfo {
    AgentInfo {
        hostname: format!("sim-{i}"),
        // Nothing connects to a simulated agent.
        address: "127.0.0.1:9".into(),
        resources: resources.clone(),
        attributes: Vec::new(),
        tls: false,
    }
}

/// A fleet of simulated agents.
#[derive(Debug)]
pub struct SimAgents {
    pub states: Vec<Arc<Mutex<SimAgentState>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimAgents {
    /// Starts `n` agents with `resources` each, following `leaders`.
    pub fn start(
        n: usize,
        resources: &Resources,
        leaders: &watch::Receiver<Option<Leader>>,
    ) -> Self {
        Self::start_from(n, resources, leaders, &[])
    }

    /// Like [`SimAgents::start`], agent `i` connecting from
    /// `sources[i % len]` (any when empty): one source address has only so
    /// many ephemeral ports towards one master (28,232 by Linux's default
    /// range), so tens of thousands of agents on one machine need several
    /// loopback addresses.
    pub fn start_from(
        n: usize,
        resources: &Resources,
        leaders: &watch::Receiver<Option<Leader>>,
        sources: &[std::net::IpAddr],
    ) -> Self {
        let mut states = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let state = Arc::new(Mutex::new(SimAgentState::default()));
            let info = sim_info(i, resources);
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            tasks.push(tokio::spawn(run(
                info,
                leaders.clone(),
                state.clone(),
                source,
            )));
            states.push(state);
        }
        SimAgents { states, tasks }
    }

    /// How many are registered with a master of `epoch` (or newer).
    pub fn registered_with(&self, epoch: u64) -> usize {
        self.states
            .iter()
            .filter(|s| {
                s.lock()
                    .ok()
                    .and_then(|s| s.registered)
                    .is_some_and(|(e, _)| e >= epoch)
            })
            .count()
    }

    /// When each of them registered with a master of `epoch` or newer.
    pub fn registration_times(&self, epoch: u64) -> Vec<Instant> {
        self.states
            .iter()
            .filter_map(|s| {
                s.lock()
                    .ok()?
                    .registered
                    .filter(|(e, _)| *e >= epoch)
                    .map(|(_, at)| at)
            })
            .collect()
    }

    /// When the last of them registered with a master of `epoch` or newer
    /// (`None` until all have).
    pub fn all_registered_at(&self, epoch: u64) -> Option<Instant> {
        let mut last: Option<Instant> = None;
        for s in &self.states {
            let (e, at) = s.lock().ok()?.registered?;
            if e < epoch {
                return None;
            }
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        last
    }
}

impl SimAgents {
    /// Starts `n` agents with `resources` each, registering with the master
    /// at `endpoint`, `per_connection` of them sharing one HTTP/2
    /// connection (each agent still its own gRPC session). For more agents
    /// than this process may hold connections; it does not follow a leader.
    pub fn start_shared(
        n: usize,
        resources: &Resources,
        endpoint: &str,
        per_connection: usize,
    ) -> std::io::Result<Self> {
        let per_connection = per_connection.max(1);
        let mut states = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        let mut channel = None;
        let origin = http::Uri::try_from(format!("http://{endpoint}"))
            .map_err(|_| std::io::Error::other(format!("bad master address {endpoint}")))?;
        for i in 0..n {
            if i % per_connection == 0 {
                channel = Some(
                    tonic::transport::Endpoint::from(origin.clone())
                        .tcp_nodelay(true)
                        .connect_lazy(),
                );
            }
            let Some(channel) = channel.clone() else {
                continue;
            };
            let state = Arc::new(Mutex::new(SimAgentState::default()));
            let info = sim_info(i, resources);
            let st = state.clone();
            let origin = origin.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    session_on(&info, channel.clone(), origin.clone(), &st).await;
                    if let Ok(mut s) = st.lock() {
                        s.registered = None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
            states.push(state);
        }
        Ok(SimAgents { states, tasks })
    }
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One agent: a session with the current leader, a new one whenever the
/// leader changes or the session ends.
async fn run(
    info: AgentInfo,
    mut leaders: watch::Receiver<Option<Leader>>,
    state: Arc<Mutex<SimAgentState>>,
    source: Option<std::net::IpAddr>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let leader = leaders.borrow_and_update().clone();
        let registrations = state.lock().map(|s| s.registrations).unwrap_or(0);
        let Some(leader) = leader else {
            // No leader known: the next one is tried at once.
            if leaders.changed().await.is_err() {
                return;
            }
            backoff = BACKOFF_MIN;
            continue;
        };
        let mut leader_changed = false;
        tokio::select! {
            () = session(&info, &leader, &state, source) => {}
            r = leaders.changed() => {
                if r.is_err() { return }
                leader_changed = true;
            }
        }
        if let Ok(mut s) = state.lock() {
            s.registered = None;
            if s.registrations > registrations {
                backoff = BACKOFF_MIN;
            }
        }
        if leader_changed {
            // A new leader mid-attempt: tried at once, as the real agent
            // does (`agent/src/master_link.rs`), not after the backoff left
            // from the old one.
            backoff = BACKOFF_MIN;
            continue;
        }
        // As a real agent does: a failed attempt at the same leader is
        // retried after a backoff that doubles, a new leader tried at once
        // (the select returns as soon as it changes) with a fresh backoff.
        tokio::select! {
            () = tokio::time::sleep(backoff) => {
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            r = leaders.changed() => {
                if r.is_err() { return }
                backoff = BACKOFF_MIN;
            }
        }
    }
}

async fn session(
    info: &AgentInfo,
    leader: &Leader,
    state: &Arc<Mutex<SimAgentState>>,
    source: Option<std::net::IpAddr>,
) {
    let (Ok(addr), Ok(origin)) = (
        leader.endpoint.parse::<std::net::SocketAddr>(),
        http::Uri::try_from(format!("http://{}", leader.endpoint)),
    ) else {
        return;
    };
    let Ok(conn) = H2::connect(addr, source).await else {
        return;
    };
    session_on(info, conn, origin, state).await;
}

/// One HTTP/2 connection as a gRPC client's transport: what a tonic
/// `Channel` is, without its request buffer and its worker task, its
/// reconnection and its load balancing, none of which a simulated agent
/// uses (a session that ends is started again on a new connection). Ten
/// thousand agents reconnecting at once share the cores with the masters
/// under test, so what they spend per connection is the benchmark's own
/// cost, not the masters'.
#[derive(Clone, Debug)]
struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl H2 {
    /// Connects to `addr` (from `source`, when given) and starts the
    /// connection's task, which ends with the connection.
    async fn connect(
        addr: std::net::SocketAddr,
        source: Option<std::net::IpAddr>,
    ) -> std::io::Result<H2> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(source) = source {
            socket.bind(std::net::SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(H2(send))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// One session over `transport` (a connection of its own, or a channel
/// shared with other agents) to the master at `origin`.
async fn session_on<T>(
    info: &AgentInfo,
    transport: T,
    origin: http::Uri,
    state: &Arc<Mutex<SimAgentState>>,
) where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut client = pb::agent_link_client::AgentLinkClient::with_origin(transport, origin);
    let agent_id = state
        .lock()
        .ok()
        .and_then(|s| s.id.clone())
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel(16);
    let register = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::RegisterAgent {
            agent_id,
            info: Some(agent_info_to_pb(info)),
            tasks: Vec::new(),
            frameworks: Vec::new(),
            version: cairn_model::VERSION.to_string(),
        })),
    };
    if tx.send(register).await.is_err() {
        return;
    }
    let Ok(response) = client.session(ReceiverStream::new(rx)).await else {
        return;
    };
    let mut inbound = response.into_inner();
    let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
    // Updates not yet acknowledged, by uuid: sent again every
    // `RETRY_EVERY`, as a real agent does, until the framework's
    // acknowledgement comes back through the master.
    let mut unacked: HashMap<Vec<u8>, pb::AgentMessage> = HashMap::new();
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.tick().await;
    loop {
        let msg = tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(m)) => m,
                _ => break,
            },
            _ = retry.tick() => {
                for update in unacked.values() {
                    if tx.send(update.clone()).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        if let Some(pb::master_message::Message::Acknowledge(a)) = &msg.message {
            unacked.remove(&a.uuid);
            continue;
        }
        if let Some(pb::master_message::Message::RunTask(run)) = &msg.message {
            // The executor reports STARTING, RUNNING and FINISHED at once.
            let Some(task) = &run.task else { continue };
            let framework_id = run
                .framework
                .as_ref()
                .map(|f| f.id.clone())
                .unwrap_or_default();
            for state in [
                pb::TaskState::TaskStarting,
                pb::TaskState::TaskRunning,
                pb::TaskState::TaskFinished,
            ] {
                let uuid = uuid_bytes();
                let update = pb::AgentMessage {
                    message: Some(pb::agent_message::Message::StatusUpdate(pb::StatusUpdate {
                        framework_id: framework_id.clone(),
                        status: Some(pb::TaskStatus {
                            task_id: task.task_id.clone(),
                            state: state as i32,
                            source: pb::Source::Executor as i32,
                            executor_id: task.task_id.clone(),
                            timestamp: cairn_model::Time::now().as_unix_secs_f64(),
                            uuid: uuid.clone(),
                            ..Default::default()
                        }),
                    })),
                };
                unacked.insert(uuid.clone(), update.clone());
                if tx.send(update).await.is_err() {
                    return;
                }
            }
            if let Ok(mut s) = state.lock() {
                s.tasks_run += 1;
            }
            continue;
        }
        if let Some(pb::master_message::Message::Registered(r)) = msg.message {
            if let Ok(mut s) = state.lock() {
                s.id = Some(r.agent_id.clone());
                s.registered = Some((msg.epoch, Instant::now()));
                s.registrations += 1;
            }
            let every = Duration::from_secs_f64(r.heartbeat_interval_seconds.max(0.1));
            let tx = tx.clone();
            if let Some(h) = heartbeat.take() {
                h.abort();
            }
            heartbeat = Some(tokio::spawn(async move {
                // As a real agent: the first heartbeat one interval after
                // REGISTERED.
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    let beat = pb::AgentMessage {
                        message: Some(pb::agent_message::Message::Heartbeat(pb::AgentHeartbeat {})),
                    };
                    if tx.send(beat).await.is_err() {
                        return;
                    }
                }
            }));
        }
        // Kills, acknowledgements and shutdowns need no answer: every task
        // has already ended.
    }
    if let Some(h) = heartbeat {
        h.abort();
    }
}
