use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_model::convert::{
    framework_info_to_pb, offer_from_pb, task_info_to_pb, task_status_from_pb,
};
use cairn_model::zk::MasterAddr;
use cairn_model::{
    AgentId, ExecutorId, FrameworkId, FrameworkInfo, Offer, OfferId, Role, Source, TaskId,
    TaskInfo, TaskStatus,
};
use cairn_proto as pb;
use pb::scheduler_client::SchedulerClient;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::Scheduler;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("invalid master address {0:?}")]
    Address(String),
    #[error("the framework is not subscribed (yet)")]
    NotSubscribed,
    #[error("the master refused the call: {0}")]
    Call(#[from] tonic::Status),
    #[error("the master reported an error: {0}")]
    Master(String),
    #[error("invalid task: {0}")]
    InvalidTask(String),
    #[error("executor: {0}")]
    Executor(String),
    #[error("cluster CA: {0}")]
    Tls(String),
    #[error("framework id file {path}: {reason}")]
    IdFile {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Runs a [`Scheduler`] against a master.
#[derive(Debug, Clone)]
pub struct SchedulerDriver {
    master: String,
    info: FrameworkInfo,
    auto_ack: bool,
    suppressed_roles: Vec<Role>,
    id_file: Option<std::path::PathBuf>,
    reconcile: bool,
    /// HTTP Basic of the principal and secret, when the master asks for
    /// credentials.
    authorization: Option<String>,
    /// TLS to a master of a cluster with a CA (`--cluster-dir`): the
    /// client configuration, or why the CA could not be read.
    tls: Option<Result<cairn_tls::ClientConfig, String>>,
}

impl SchedulerDriver {
    /// Authenticates with `CAIRN_PRINCIPAL` and `CAIRN_SECRET` when both
    /// are set (the convention of Cairn's CLI and frameworks).
    ///
    /// With `CAIRN_CA` naming the cluster CA's certificate (`ca.crt` of the
    /// cluster directory), it speaks TLS to the master, trusting that CA.
    pub fn credential_from_env(self) -> Self {
        let this = match std::env::var_os("CAIRN_CA") {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(pem) => self.cluster_ca(&pem),
                Err(e) => SchedulerDriver {
                    tls: Some(Err(format!(
                        "{}: {e}",
                        std::path::Path::new(&path).display()
                    ))),
                    ..self
                },
            },
            None => self,
        };
        this.credential_env()
    }

    /// Speaks TLS to the master, trusting only masters certified by the
    /// cluster CA whose certificate is `ca_pem`.
    pub fn cluster_ca(mut self, ca_pem: &str) -> Self {
        self.tls = Some(cairn_tls::client_config(ca_pem, None).map_err(|e| e.to_string()));
        self
    }

    fn credential_env(self) -> Self {
        match (
            std::env::var("CAIRN_PRINCIPAL"),
            std::env::var("CAIRN_SECRET"),
        ) {
            (Ok(p), Ok(s)) => self.credential(&p, &s),
            _ => self,
        }
    }

    /// Authenticates as `principal` with `secret` (masters started with
    /// `--credentials` refuse frameworks without). The framework's declared
    /// principal becomes `principal` unless it names one.
    pub fn credential(mut self, principal: &str, secret: &str) -> Self {
        self.authorization = Some(cairn_model::auth::basic_value(principal, secret));
        if self.info.principal.is_empty() {
            self.info.principal = principal.to_string();
        }
        self
    }

    /// `master` is `host:port`, or `zk://host:port[,host:port]/path` to
    /// follow the leading master.
    pub fn new(master: impl Into<String>, info: FrameworkInfo) -> Self {
        SchedulerDriver {
            master: master.into(),
            info,
            auto_ack: true,
            suppressed_roles: Vec::new(),
            tls: None,
            id_file: None,
            reconcile: true,
            authorization: None,
        }
    }

    /// Keeps the framework id in `path`: read at start (so a restarted
    /// framework re-subscribes as itself, keeping its tasks, if it is back
    /// within its failover timeout) and written, atomically, when the
    /// master assigns one. Delete the file to start as a new framework.
    pub fn framework_id_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.id_file = Some(path.into());
        self
    }

    /// Turns off the reconciliation the driver does after every
    /// (re-)subscription: explicit for the tasks it launched and has not
    /// seen end (so one the master does not know comes back LOST), then
    /// implicit (the master reports every live task of the framework).
    pub fn without_reconciliation(mut self) -> Self {
        self.reconcile = false;
        self
    }

    /// Leaves acknowledging updates to the scheduler ([`Driver::acknowledge`]).
    pub fn manual_acknowledgements(mut self) -> Self {
        self.auto_ack = false;
        self
    }

    /// Subscribes with offers suppressed for these roles.
    pub fn suppressed(mut self, roles: Vec<Role>) -> Self {
        self.suppressed_roles = roles;
        self
    }

    /// Runs until [`Driver::stop`] or [`Driver::teardown`], or until the
    /// master reports an error (the framework was removed, say). A broken
    /// connection is not an error: the driver re-subscribes with backoff,
    /// and with a `zk://` master it follows the leader, re-subscribing to
    /// each new one as soon as it is elected.
    pub async fn run<S: Scheduler>(self, mut scheduler: S) -> Result<(), SdkError> {
        let addr: MasterAddr = self
            .master
            .parse()
            .map_err(|_| SdkError::Address(self.master.clone()))?;
        let mut leaders = cairn_model::zk::follow(addr);
        let driver = Driver {
            inner: Arc::new(Inner {
                session: Mutex::new(None),
                leader: Mutex::new(None),
                acks: Mutex::new(AckQueue::default()),
                calls: tokio::sync::Mutex::new(CallStreamSlot::default()),
                live: Mutex::new(HashMap::new()),
                suppressed_all: AtomicBool::new(false),
                id_file: self.id_file.clone(),
                stopped: AtomicBool::new(false),
                stop: Notify::new(),
            }),
        };
        let mut info = self.info.clone();
        if let Some(path) = &self.id_file
            && info.id.is_none()
        {
            info.id = crate::persist::read_id(path)?;
        }
        let mut backoff = BACKOFF_MIN;
        // Events from a master with an older epoch than one already seen
        // come from a deposed leader and are dropped.
        let mut newest_epoch = 0;
        loop {
            if driver.is_stopped() {
                return Ok(());
            }
            let leader = leaders.borrow_and_update().clone();
            let Some(leader) = leader else {
                tokio::select! {
                    r = leaders.changed() => if r.is_err() { return Ok(()) },
                    () = driver.inner.stop.notified() => return Ok(()),
                }
                continue;
            };
            newest_epoch = newest_epoch.max(leader.epoch);
            let client = connect(
                &leader.endpoint,
                self.authorization.as_deref(),
                self.tls.as_ref(),
            )?;
            if let Ok(mut l) = driver.inner.leader.lock() {
                *l = Some((leader.endpoint.clone(), client.clone()));
            }
            // Offers the scheduler turned off stay off across the
            // re-subscription.
            let suppressed: Vec<String> = if driver.inner.suppressed_all.load(Ordering::SeqCst) {
                info.roles.iter().map(ToString::to_string).collect()
            } else {
                self.suppressed_roles
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            };
            let request = pb::SubscribeRequest {
                framework_info: Some(framework_info_to_pb(&info)),
                suppressed_roles: suppressed,
            };
            let mut subscriber = client.clone();
            let mut leader_changed = false;
            let stream = tokio::select! {
                r = subscriber.subscribe(request) => Some(r),
                r = leaders.changed() => {
                    if r.is_err() { return Ok(()) }
                    leader_changed = true;
                    None
                }
                () = driver.inner.stop.notified() => return Ok(()),
            };
            match stream {
                None => {}
                Some(Ok(response)) => {
                    let mut events = response.into_inner();
                    loop {
                        let msg = tokio::select! {
                            m = events.message() => m,
                            r = leaders.changed() => {
                                if r.is_err() { return Ok(()) }
                                tracing::info!(old = %leader.endpoint, "the leading master changed; re-subscribing");
                                leader_changed = true;
                                break;
                            }
                            () = driver.inner.stop.notified() => return Ok(()),
                        };
                        let event = match msg {
                            Ok(Some(e)) => e,
                            Ok(None) => break,
                            Err(status) => {
                                tracing::warn!(%status, "event stream broke");
                                break;
                            }
                        };
                        if event.epoch < newest_epoch {
                            tracing::warn!(
                                epoch = event.epoch,
                                newest = newest_epoch,
                                "dropping an event from a deposed master"
                            );
                            continue;
                        }
                        newest_epoch = event.epoch;
                        if let Some(e) = event.event
                            && let Some(id) = self.dispatch(&driver, &mut scheduler, e).await?
                        {
                            info.id = Some(id);
                            backoff = BACKOFF_MIN;
                        }
                        if driver.is_stopped() {
                            return Ok(());
                        }
                    }
                }
                Some(Err(status)) if status.code() == tonic::Code::PermissionDenied => {
                    return Err(SdkError::Master(status.message().to_string()));
                }
                Some(Err(status)) => {
                    tracing::debug!(%status, "cannot subscribe; retrying");
                }
            }
            if let Ok(mut s) = driver.inner.session.lock() {
                *s = None;
            }
            scheduler.disconnected(&driver).await;
            if leader_changed {
                backoff = BACKOFF_MIN;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                r = leaders.changed() => {
                    if r.is_err() { return Ok(()) }
                    // A new leader is tried at once, with a fresh backoff.
                    backoff = BACKOFF_MIN;
                    continue;
                }
                () = driver.inner.stop.notified() => return Ok(()),
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Handles one event; returns the framework id on SUBSCRIBED.
    async fn dispatch<S: Scheduler>(
        &self,
        driver: &Driver,
        scheduler: &mut S,
        event: pb::event::Event,
    ) -> Result<Option<FrameworkId>, SdkError> {
        use pb::event::Event as E;
        match event {
            E::Subscribed(s) => {
                let id = FrameworkId::parse("subscribed.framework_id", &s.framework_id)
                    .map_err(|e| SdkError::Master(e.to_string()))?;
                if let Ok(mut session) = driver.inner.session.lock() {
                    *session = Some((id.clone(), s.stream_id.clone()));
                }
                if let Some(path) = &self.id_file {
                    crate::persist::write_id(path, &id)?;
                }
                if self.reconcile {
                    // The tasks launched before this subscription; those the
                    // scheduler launches from now on are not asked about
                    // (the question could overtake their launch).
                    let live = driver.live_tasks();
                    let driver = driver.clone();
                    tokio::spawn(async move { driver.reconcile_all(live).await });
                }
                scheduler.subscribed(driver, &id).await;
                return Ok(Some(id));
            }
            E::Offers(o) => {
                let offers: Vec<Offer> = o
                    .offers
                    .iter()
                    .filter_map(|o| match offer_from_pb("offer", o) {
                        Ok(o) => Some(o),
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed offer ignored");
                            None
                        }
                    })
                    .collect();
                if !offers.is_empty() {
                    scheduler.offers(driver, offers).await;
                }
            }
            E::Rescind(r) => {
                if let Ok(id) = OfferId::parse("rescind.offer_id", &r.offer_id) {
                    scheduler.rescinded(driver, &id).await;
                }
            }
            E::Update(u) => {
                let Some(status) = u.status else {
                    return Ok(None);
                };
                match task_status_from_pb("update.status", &status, Source::Master) {
                    Ok(status) => {
                        driver.track(&status);
                        scheduler.update(driver, &status).await;
                        // A stopped driver leaves the update unacknowledged:
                        // it is delivered again if the framework comes back.
                        if self.auto_ack && !driver.is_stopped() {
                            driver.acknowledge_later(&status);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "malformed status update ignored"),
                }
            }
            E::Failure(f) => {
                if let Ok(agent) = AgentId::parse("failure.agent_id", &f.agent_id) {
                    let executor = ExecutorId::parse("failure.executor_id", &f.executor_id).ok();
                    scheduler
                        .failure(driver, &agent, executor.as_ref(), f.status)
                        .await;
                }
            }
            E::Error(e) => {
                scheduler.error(driver, &e.message).await;
                return Err(SdkError::Master(e.message));
            }
            E::Message(m) => {
                if let (Ok(agent), Ok(executor)) = (
                    AgentId::parse("message.agent_id", &m.agent_id),
                    ExecutorId::parse("message.executor_id", &m.executor_id),
                ) {
                    scheduler.message(driver, &agent, &executor, &m.data).await;
                }
            }
            E::Heartbeat(_) => {}
        }
        Ok(None)
    }
}

/// A client to the master that presents the framework's credential, if
/// it has one, on every request.
type Client = SchedulerClient<tonic::service::interceptor::InterceptedService<Channel, Credential>>;

/// Adds `authorization` metadata (HTTP Basic of the principal and secret).
#[derive(Clone)]
struct Credential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Credential(hidden)"
        } else {
            "Credential(none)"
        })
    }
}

impl tonic::service::Interceptor for Credential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn connect(
    endpoint: &str,
    authorization: Option<&str>,
    tls: Option<&Result<cairn_tls::ClientConfig, String>>,
) -> Result<Client, SdkError> {
    let channel = match tls {
        Some(Ok(config)) => {
            cairn_tls::grpc_channel(endpoint, config.clone(), Duration::from_secs(5))
                .map_err(|e| SdkError::Tls(e.to_string()))?
        }
        Some(Err(e)) => return Err(SdkError::Tls(e.clone())),
        None => tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|_| SdkError::Address(endpoint.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy(),
    };
    let credential = Credential(authorization.and_then(|a| a.parse().ok()));
    Ok(SchedulerClient::with_interceptor(channel, credential)
        .max_decoding_message_size(64 * 1024 * 1024))
}

#[derive(Debug)]
struct Inner {
    /// Framework id and stream id of the current subscription.
    session: Mutex<Option<(FrameworkId, String)>>,
    /// The leading master (`ip:port`) and a client to it.
    leader: Mutex<Option<(String, Client)>>,
    stopped: AtomicBool,
    stop: Notify,
    acks: Mutex<AckQueue>,
    calls: tokio::sync::Mutex<CallStreamSlot>,
    /// Tasks launched through this driver and not seen to end, with their
    /// agents: what reconciliation asks about.
    live: Mutex<HashMap<TaskId, AgentId>>,
    /// Whether the scheduler suppressed offers for all its roles
    /// ([`Driver::want_offers`], [`Driver::suppress`]).
    suppressed_all: AtomicBool,
    /// Where the framework id is kept, removed on teardown.
    id_file: Option<std::path::PathBuf>,
}

/// Calls go to the leader on one `Calls` stream (cheaper than a request
/// each, and in order); a master that does not offer the stream gets
/// requests.
#[derive(Debug, Default)]
struct CallStreamSlot {
    open: Option<CallStream>,
    /// Leaders (`ip:port`) that answered the stream UNIMPLEMENTED.
    unsupported: Option<String>,
}

#[derive(Debug)]
struct CallStream {
    endpoint: String,
    tx: mpsc::Sender<pb::SchedulerCall>,
    state: Arc<Mutex<CallStreamState>>,
}

#[derive(Debug, Default)]
struct CallStreamState {
    next_seq: u64,
    /// Calls sent and not yet answered; dropped (so their callers see an
    /// error) when the stream ends.
    pending: HashMap<u64, oneshot::Sender<Result<(), tonic::Status>>>,
    closed: bool,
}

/// Calls queued on a stream before the sender waits for the master.
const CALL_STREAM_QUEUE: usize = 1024;

impl CallStream {
    /// Opens a stream to `endpoint`; `Err` carries the master's refusal.
    async fn open(endpoint: &str, client: &Client) -> Result<CallStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(CALL_STREAM_QUEUE);
        let mut client = client.clone();
        let mut results = client.calls(ReceiverStream::new(rx)).await?.into_inner();
        let state = Arc::new(Mutex::new(CallStreamState::default()));
        let reader = state.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = results.message().await {
                let waiter = reader
                    .lock()
                    .ok()
                    .and_then(|mut s| s.pending.remove(&r.seq));
                if let Some(w) = waiter {
                    let verdict = if r.code == 0 {
                        Ok(())
                    } else {
                        Err(tonic::Status::new(tonic::Code::from(r.code), r.message))
                    };
                    let _ = w.send(verdict);
                }
            }
            if let Ok(mut s) = reader.lock() {
                s.closed = true;
                s.pending.clear();
            }
        });
        Ok(CallStream {
            endpoint: endpoint.to_string(),
            tx,
            state,
        })
    }

    fn is_open(&self) -> bool {
        !self.tx.is_closed() && self.state.lock().is_ok_and(|s| !s.closed)
    }

    /// Numbers `call` and registers its waiter; `None` once the stream has
    /// ended.
    fn register(
        &self,
        call: &mut pb::SchedulerCall,
    ) -> Option<oneshot::Receiver<Result<(), tonic::Status>>> {
        let mut s = self.state.lock().ok()?;
        if s.closed {
            return None;
        }
        s.next_seq += 1;
        call.seq = s.next_seq;
        let (tx, rx) = oneshot::channel();
        s.pending.insert(call.seq, tx);
        Some(rx)
    }

    fn forget(&self, seq: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.pending.remove(&seq);
        }
    }
}

/// Acknowledgements waiting to be sent. At most one call carrying them is
/// in flight; those that arrive meanwhile go together in the next, so a
/// busy framework sends one call per round trip, not one per update.
#[derive(Debug, Default)]
struct AckQueue {
    pending: Vec<pb::scheduler_call::Acknowledge>,
    sending: bool,
}

/// Most acknowledgements in one call (the master's limit).
const MAX_ACKS_PER_CALL: usize = 10_000;

/// The scheduler's handle for calls to the master. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Driver {
    inner: Arc<Inner>,
}

impl Driver {
    /// The leading master's `ip:port`, once one is known.
    pub fn master(&self) -> Option<String> {
        self.inner
            .leader
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|(e, _)| e.clone()))
    }

    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.inner
            .session
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(id, _)| id.clone()))
    }

    /// The framework id and stream id of the current subscription, for
    /// frameworks that send calls of their own making.
    pub fn session(&self) -> Option<(FrameworkId, String)> {
        self.inner.session.lock().ok().and_then(|s| s.clone())
    }

    /// Ends [`SchedulerDriver::run`] after the current callback. The
    /// framework stays registered for its failover timeout.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.stop.notify_waiters();
        self.inner.stop.notify_one();
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    async fn call(&self, call: pb::scheduler_call::Call) -> Result<(), SdkError> {
        let (framework_id, stream_id) = self
            .inner
            .session
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .ok_or(SdkError::NotSubscribed)?;
        let (endpoint, mut client) = self
            .inner
            .leader
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .ok_or(SdkError::NotSubscribed)?;
        let call = pb::SchedulerCall {
            framework_id: framework_id.to_string(),
            stream_id,
            seq: 0,
            call: Some(call),
        };
        let call = match self.call_on_stream(&endpoint, &client, call).await {
            Ok(verdict) => return verdict,
            Err(call) => call,
        };
        client.call(call).await?;
        Ok(())
    }

    /// Sends `call` on the stream to `endpoint` (opened if needed) and
    /// waits for its result; gives the call back when there is no stream
    /// to send it on, to go as a request instead.
    async fn call_on_stream(
        &self,
        endpoint: &str,
        client: &Client,
        mut call: pb::SchedulerCall,
    ) -> Result<Result<(), SdkError>, pb::SchedulerCall> {
        let rx = {
            // Held while sending, so calls reach the stream in the order
            // they were made.
            let mut slot = self.inner.calls.lock().await;
            let usable = slot
                .open
                .as_ref()
                .is_some_and(|s| s.endpoint == endpoint && s.is_open());
            if !usable {
                slot.open = None;
                if slot.unsupported.as_deref() == Some(endpoint) {
                    return Err(call);
                }
                match CallStream::open(endpoint, client).await {
                    Ok(s) => slot.open = Some(s),
                    Err(status) => {
                        if status.code() == tonic::Code::Unimplemented {
                            slot.unsupported = Some(endpoint.to_string());
                        }
                        return Err(call);
                    }
                }
            }
            let Some(stream) = slot.open.as_ref() else {
                return Err(call);
            };
            let Some(rx) = stream.register(&mut call) else {
                return Err(call);
            };
            let seq = call.seq;
            if let Err(mpsc::error::SendError(mut call)) = stream.tx.send(call).await {
                stream.forget(seq);
                call.seq = 0;
                return Err(call);
            }
            rx
        };
        Ok(match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(SdkError::Call(status)),
            // Sent, but the stream ended before its answer: the master may
            // or may not have taken it, as with a request whose connection
            // broke.
            Err(_) => Err(SdkError::Call(tonic::Status::unavailable(
                "the call stream to the master ended before the call was answered",
            ))),
        })
    }

    /// Launches `tasks` on the offers (all on one agent). What the tasks do
    /// not use is refused for `refuse` (default 5 s).
    pub async fn accept(
        &self,
        offer_ids: &[OfferId],
        tasks: Vec<TaskInfo>,
        refuse: Option<Duration>,
    ) -> Result<(), SdkError> {
        // Tracked before the call: an update can come back before its
        // answer does.
        if let Ok(mut live) = self.inner.live.lock() {
            for t in &tasks {
                live.insert(t.task_id.clone(), t.agent_id.clone());
            }
        }
        let result = self
            .call(pb::scheduler_call::Call::Accept(
                pb::scheduler_call::Accept {
                    offer_ids: offer_ids.iter().map(ToString::to_string).collect(),
                    operations: vec![pb::Operation {
                        operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                            tasks: tasks.iter().map(task_info_to_pb).collect(),
                        })),
                    }],
                    filters: Some(pb::Filters {
                        refuse_seconds: refuse.map(|d| d.as_secs_f64()),
                    }),
                },
            ))
            .await;
        if result.is_err()
            && let Ok(mut live) = self.inner.live.lock()
        {
            for t in &tasks {
                live.remove(&t.task_id);
            }
        }
        result
    }

    /// Follows the tasks launched through this driver: an end forgets one.
    fn track(&self, status: &TaskStatus) {
        if status.state.is_terminal()
            && let Ok(mut live) = self.inner.live.lock()
        {
            live.remove(&status.task_id);
        }
    }

    /// Tasks launched through this driver and not seen to end.
    pub fn live_tasks(&self) -> Vec<(TaskId, AgentId)> {
        self.inner
            .live
            .lock()
            .map(|l| l.iter().map(|(t, a)| (t.clone(), a.clone())).collect())
            .unwrap_or_default()
    }

    /// Explicit reconciliation of the live tasks (in calls of at most
    /// 5,000), then implicit. Answers arrive as updates; failures are only
    /// logged (the next subscription reconciles again).
    async fn reconcile_all(&self, live: Vec<(TaskId, AgentId)>) {
        let live: Vec<(TaskId, Option<AgentId>)> =
            live.into_iter().map(|(t, a)| (t, Some(a))).collect();
        for chunk in live.chunks(5_000) {
            if let Err(e) = self.reconcile(chunk).await {
                tracing::warn!(error = %e, "explicit reconciliation failed");
                return;
            }
        }
        if let Err(e) = self.reconcile(&[]).await {
            tracing::warn!(error = %e, "implicit reconciliation failed");
        }
    }

    /// Offers wanted or not: revives (clearing decline filters) when it
    /// turns true and suppresses when it turns false, for all the
    /// framework's roles; a call only when the wish changes. The wish
    /// holds across re-subscriptions.
    pub async fn want_offers(&self, wanted: bool) -> Result<(), SdkError> {
        let suppressed = self.inner.suppressed_all.load(Ordering::SeqCst);
        if wanted != suppressed {
            return Ok(());
        }
        if wanted {
            self.revive().await
        } else {
            self.suppress().await
        }
    }

    /// Launches `tasks` on one offer.
    pub async fn launch(&self, offer: &Offer, tasks: Vec<TaskInfo>) -> Result<(), SdkError> {
        self.accept(std::slice::from_ref(&offer.id), tasks, None)
            .await
    }

    /// Declines offers; like resources are not offered again for `refuse`
    /// (default 5 s).
    pub async fn decline(
        &self,
        offer_ids: &[OfferId],
        refuse: Option<Duration>,
    ) -> Result<(), SdkError> {
        self.call(pb::scheduler_call::Call::Decline(
            pb::scheduler_call::Decline {
                offer_ids: offer_ids.iter().map(ToString::to_string).collect(),
                filters: Some(pb::Filters {
                    refuse_seconds: refuse.map(|d| d.as_secs_f64()),
                }),
            },
        ))
        .await
    }

    /// Resumes offers (all roles) and clears decline filters.
    pub async fn revive(&self) -> Result<(), SdkError> {
        self.inner.suppressed_all.store(false, Ordering::SeqCst);
        self.call(pb::scheduler_call::Call::Revive(
            pb::scheduler_call::Revive { roles: vec![] },
        ))
        .await
    }

    /// Stops offers (all roles) until [`Driver::revive`]; also after a
    /// re-subscription.
    pub async fn suppress(&self) -> Result<(), SdkError> {
        self.inner.suppressed_all.store(true, Ordering::SeqCst);
        self.call(pb::scheduler_call::Call::Suppress(
            pb::scheduler_call::Suppress { roles: vec![] },
        ))
        .await
    }

    /// Sends opaque bytes to one of this framework's executors (best
    /// effort: not retried, and lost if the executor is not connected).
    pub async fn message(
        &self,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), SdkError> {
        self.call(pb::scheduler_call::Call::Message(
            pb::scheduler_call::Message {
                agent_id: agent_id.to_string(),
                executor_id: executor_id.to_string(),
                data,
            },
        ))
        .await
    }

    /// Replaces this framework's FrameworkInfo (roles, capabilities,
    /// failover timeout, ...) without re-subscribing; `suppressed_roles` is
    /// its whole suppression. The master applies it once its registry has
    /// it; the user cannot change.
    pub async fn update_framework(
        &self,
        info: &FrameworkInfo,
        suppressed_roles: &[Role],
    ) -> Result<(), SdkError> {
        self.call(pb::scheduler_call::Call::UpdateFramework(
            pb::scheduler_call::UpdateFramework {
                framework_info: Some(framework_info_to_pb(info)),
                suppressed_roles: suppressed_roles.iter().map(ToString::to_string).collect(),
            },
        ))
        .await
    }

    /// Ends one of this framework's executors on an agent, with its tasks.
    pub async fn shutdown_executor(
        &self,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
    ) -> Result<(), SdkError> {
        self.call(pb::scheduler_call::Call::Shutdown(
            pb::scheduler_call::Shutdown {
                executor_id: executor_id.to_string(),
                agent_id: agent_id.to_string(),
            },
        ))
        .await
    }

    /// Kills a task (SIGTERM, then SIGKILL after its grace period).
    pub async fn kill(&self, task_id: &TaskId, grace: Option<Duration>) -> Result<(), SdkError> {
        self.call(pb::scheduler_call::Call::Kill(pb::scheduler_call::Kill {
            task_id: task_id.to_string(),
            agent_id: String::new(),
            kill_policy: grace.map(|g| pb::KillPolicy {
                grace_period_ms: Some(u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
            }),
        }))
        .await
    }

    /// Asks for the state of `tasks` (every live task when empty); the
    /// answers arrive as updates.
    pub async fn reconcile(&self, tasks: &[(TaskId, Option<AgentId>)]) -> Result<(), SdkError> {
        self.call(pb::scheduler_call::Call::Reconcile(
            pb::scheduler_call::Reconcile {
                tasks: tasks
                    .iter()
                    .map(|(t, a)| pb::scheduler_call::reconcile::Task {
                        task_id: t.to_string(),
                        agent_id: a.as_ref().map(ToString::to_string).unwrap_or_default(),
                    })
                    .collect(),
            },
        ))
        .await
    }

    /// Acknowledges an update (needed only with manual acknowledgements).
    /// Updates without a uuid (made by the master) need none.
    pub async fn acknowledge(&self, status: &TaskStatus) -> Result<(), SdkError> {
        let (Some(uuid), Some(agent)) = (status.uuid, status.agent_id.as_ref()) else {
            return Ok(());
        };
        self.call(pb::scheduler_call::Call::Acknowledge(
            pb::scheduler_call::Acknowledge {
                agent_id: agent.to_string(),
                task_id: status.task_id.to_string(),
                uuid: uuid.0.to_vec(),
            },
        ))
        .await
    }

    /// Queues an acknowledgement of `status` and returns at once; it is sent
    /// with any others queued meanwhile. One that fails to reach the master
    /// leaves the update with the agent, which sends it again, so nothing
    /// is lost (updates are delivered at least once). Updates without a
    /// uuid (made by the master) need none.
    pub fn acknowledge_later(&self, status: &TaskStatus) {
        let (Some(uuid), Some(agent)) = (status.uuid, status.agent_id.as_ref()) else {
            return;
        };
        let ack = pb::scheduler_call::Acknowledge {
            agent_id: agent.to_string(),
            task_id: status.task_id.to_string(),
            uuid: uuid.0.to_vec(),
        };
        let start = match self.inner.acks.lock() {
            Ok(mut q) => {
                q.pending.push(ack);
                !std::mem::replace(&mut q.sending, true)
            }
            Err(_) => false,
        };
        if start {
            let driver = self.clone();
            tokio::spawn(async move { driver.send_acks().await });
        }
    }

    /// Sends queued acknowledgements until none are left.
    async fn send_acks(&self) {
        loop {
            let batch: Vec<_> = match self.inner.acks.lock() {
                Ok(mut q) if q.pending.is_empty() => {
                    q.sending = false;
                    return;
                }
                Ok(mut q) => {
                    let n = q.pending.len().min(MAX_ACKS_PER_CALL);
                    q.pending.drain(..n).collect()
                }
                Err(_) => return,
            };
            let n = batch.len();
            let call = if n == 1 {
                batch
                    .into_iter()
                    .next()
                    .map(pb::scheduler_call::Call::Acknowledge)
            } else {
                Some(pb::scheduler_call::Call::AcknowledgeMany(
                    pb::scheduler_call::AcknowledgeMany {
                        acknowledgements: batch,
                    },
                ))
            };
            if let Some(call) = call
                && let Err(e) = self.call(call).await
            {
                tracing::warn!(error = %e, count = n, "acknowledgements not delivered; the agents will send those updates again");
            }
        }
    }

    /// Removes the framework: its tasks are killed. Then stops the driver.
    /// (A framework id file goes too: the id can never be used again.)
    pub async fn teardown(&self) -> Result<(), SdkError> {
        let r = self
            .call(pb::scheduler_call::Call::Teardown(
                pb::scheduler_call::Teardown {},
            ))
            .await;
        if r.is_ok()
            && let Some(path) = &self.inner.id_file
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the framework id file");
        }
        self.stop();
        r
    }
}
