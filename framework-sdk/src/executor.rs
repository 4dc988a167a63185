//! Custom executors: one long-lived process on an agent that runs many of a
//! framework's tasks.
//!
//! A framework names its executor in a task's [`TaskInfo::executor`]
//! (see [`crate::TaskBuilder::executor`]); the agent starts it once per
//! (framework, executor id) on that agent, in a container of its own, and
//! hands it that task and every later one with the same executor. The
//! executor implements [`Executor`] and runs an [`ExecutorDriver`], which
//! speaks the agent's native executor link: it subscribes, hands launches,
//! kills and messages to the executor, and delivers the executor's status
//! updates reliably (kept until the agent has stored them, sent again after
//! an agent restart).
//!
//! ```no_run
//! use cairn_sdk::executor::{Executor, ExecutorDriver};
//! use cairn_sdk::{TaskInfo, TaskId, TaskState};
//! use std::time::Duration;
//!
//! struct Echo;
//!
//! impl Executor for Echo {
//!     async fn launch(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
//!         driver.update(&task.task_id, TaskState::Running, "");
//!         println!("running {}", task.task_id);
//!         driver.update(&task.task_id, TaskState::Finished, "done");
//!     }
//!     async fn kill(&mut self, driver: &ExecutorDriver, task_id: &TaskId, _grace: Duration) {
//!         driver.update(task_id, TaskState::Killed, "killed");
//!     }
//! }
//!
//! # async fn main_() -> Result<(), cairn_sdk::SdkError> {
//! ExecutorDriver::from_env()?.run(Echo).await
//! # }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_model::convert::{task_info_from_pb, task_status_to_pb};
use cairn_model::{
    AgentId, ExecutorId, FrameworkId, StatusUuid, TaskId, TaskInfo, TaskState, TaskStatus, Time,
};
use cairn_proto as pb;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::SdkError;

/// How long the executor waits for an agent that went away (it restarts,
/// say) before giving up.
const AGENT_RECOVERY: Duration = Duration::from_secs(15 * 60);
/// How long a stopping executor waits for the agent to store its last
/// updates.
const DRAIN: Duration = Duration::from_secs(10);

/// What an executor does with the agent's requests. Callbacks run one at a
/// time, in order; long work belongs in tasks the executor spawns (and
/// reports on with [`ExecutorDriver::update`]).
pub trait Executor: Send {
    /// Connected to the agent (also after it restarted); `agent_id` from
    /// the environment the agent gave.
    fn subscribed(
        &mut self,
        _driver: &ExecutorDriver,
        _agent_id: &AgentId,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A task to run. The executor reports it with
    /// [`ExecutorDriver::update`]: RUNNING when it starts, then one
    /// terminal state.
    fn launch(
        &mut self,
        driver: &ExecutorDriver,
        task: TaskInfo,
    ) -> impl Future<Output = ()> + Send;

    /// The framework killed a task: end it within `grace` and report
    /// TASK_KILLED.
    fn kill(
        &mut self,
        driver: &ExecutorDriver,
        task_id: &TaskId,
        grace: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// Opaque bytes from the framework.
    fn message(
        &mut self,
        _driver: &ExecutorDriver,
        _data: &[u8],
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The agent asks the executor to end its tasks within `grace` and exit;
    /// the driver stops once this returns and its updates are stored.
    fn shutdown(
        &mut self,
        _driver: &ExecutorDriver,
        _grace: Duration,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Where the executor is and who it is, from the environment the agent
/// gives it.
#[derive(Clone, Debug)]
pub struct ExecutorEnv {
    /// The agent's `host:port`.
    pub agent_endpoint: String,
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    /// The sandbox (the executor's working directory).
    pub sandbox: std::path::PathBuf,
    /// The agent's id (`MESOS_AGENT_ID`), when given.
    pub agent_id: Option<AgentId>,
    /// With an agent that serves TLS (`CAIRN_AGENT_CA`): the configuration
    /// verifying that agent's certificate.
    pub agent_tls: Option<cairn_tls::ClientConfig>,
    /// This executor's token ([`EXECUTOR_TOKEN_ENV`]), for an agent that
    /// authenticates executors. Executors must not pass it to their tasks:
    /// remove [`EXECUTOR_TOKEN_ENV`] from the environment of what they
    /// start.
    pub token: Option<cairn_tls::ExecutorToken>,
}

pub use cairn_tls::EXECUTOR_TOKEN_ENV;

impl ExecutorEnv {
    /// From `MESOS_AGENT_ENDPOINT`, `MESOS_FRAMEWORK_ID`,
    /// `MESOS_EXECUTOR_ID`, `MESOS_SANDBOX`, `MESOS_AGENT_ID` and
    /// `CAIRN_AGENT_CA`.
    pub fn from_env() -> Result<Self, SdkError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                SdkError::Executor(format!("{name} is not set: not started by an agent?"))
            })
        };
        let framework_id = FrameworkId::parse("MESOS_FRAMEWORK_ID", &var("MESOS_FRAMEWORK_ID")?)
            .map_err(|e| SdkError::Executor(e.to_string()))?;
        let executor_id = ExecutorId::parse("MESOS_EXECUTOR_ID", &var("MESOS_EXECUTOR_ID")?)
            .map_err(|e| SdkError::Executor(e.to_string()))?;
        let sandbox = std::env::var("MESOS_SANDBOX")
            .map(std::path::PathBuf::from)
            .or_else(|_| std::env::current_dir())
            .map_err(|e| SdkError::Executor(format!("no sandbox: {e}")))?;
        Ok(ExecutorEnv {
            agent_endpoint: var("MESOS_AGENT_ENDPOINT")?,
            framework_id,
            executor_id,
            sandbox,
            agent_id: std::env::var("MESOS_AGENT_ID")
                .ok()
                .and_then(|a| AgentId::parse("MESOS_AGENT_ID", &a).ok()),
            agent_tls: cairn_tls::executor_tls_from_env()
                .map_err(|e| SdkError::Executor(e.to_string()))?,
            token: cairn_tls::ExecutorToken::from_env(),
        })
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Updates sent and not yet stored by the agent, by uuid.
    unacked: BTreeMap<[u8; 16], TaskStatus>,
    /// The current session's sender, if connected.
    session: Option<mpsc::Sender<pb::ExecutorMessage>>,
    agent_id: Option<AgentId>,
}

/// Runs an [`Executor`] against its agent. Cheap to clone; the clones share
/// the session.
#[derive(Clone, Debug)]
pub struct ExecutorDriver {
    env: ExecutorEnv,
    shared: Arc<Mutex<Shared>>,
    stopped: Arc<AtomicBool>,
    stop: Arc<Notify>,
    drained: Arc<Notify>,
}

impl ExecutorDriver {
    pub fn new(env: ExecutorEnv) -> Self {
        ExecutorDriver {
            env,
            shared: Arc::new(Mutex::new(Shared::default())),
            stopped: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(Notify::new()),
            drained: Arc::new(Notify::new()),
        }
    }

    /// The driver for the executor the agent started (see
    /// [`ExecutorEnv::from_env`]).
    pub fn from_env() -> Result<Self, SdkError> {
        Ok(Self::new(ExecutorEnv::from_env()?))
    }

    pub fn env(&self) -> &ExecutorEnv {
        &self.env
    }

    /// The agent's id, once subscribed.
    pub fn agent_id(&self) -> Option<AgentId> {
        self.shared.lock().ok().and_then(|s| s.agent_id.clone())
    }

    /// Reports `task_id`'s new state. Delivered at least once: the update
    /// is kept and sent again (after a reconnection) until the agent has
    /// stored it; the agent then relays it to the framework reliably.
    pub fn update(&self, task_id: &TaskId, state: TaskState, message: &str) {
        self.send_status(TaskStatus::from_executor(
            task_id.clone(),
            state,
            message,
            Time::now(),
        ));
    }

    /// Reports a status made by the caller (an exit code, a reason); a
    /// missing uuid is filled in.
    pub fn send_status(&self, mut status: TaskStatus) {
        let uuid = *status.uuid.get_or_insert_with(|| StatusUuid(rand_uuid()));
        status.executor_id = Some(self.env.executor_id.clone());
        let msg = update_message(&status);
        let sender = match self.shared.lock() {
            Ok(mut s) => {
                s.unacked.insert(uuid.0, status);
                s.session.clone()
            }
            Err(_) => None,
        };
        // Not connected, or the queue is full: the update waits in
        // `unacked` and goes with the next subscription.
        if let Some(tx) = sender {
            let _ = tx.try_send(msg);
        }
    }

    /// Sends opaque bytes to the framework (best effort, at most 1 MiB).
    pub fn send_message(&self, data: Vec<u8>) -> Result<(), SdkError> {
        let tx = self
            .shared
            .lock()
            .ok()
            .and_then(|s| s.session.clone())
            .ok_or_else(|| SdkError::Executor("not connected to the agent".into()))?;
        tx.try_send(pb::ExecutorMessage {
            message: Some(pb::executor_message::Message::FrameworkMessage(
                pb::ExecutorFrameworkMessage { data },
            )),
        })
        .map_err(|_| SdkError::Executor("the agent link is not keeping up".into()))
    }

    /// Updates not yet stored by the agent.
    pub fn unacknowledged(&self) -> usize {
        self.shared.lock().map(|s| s.unacked.len()).unwrap_or(0)
    }

    /// Ends [`ExecutorDriver::run`] once every update is stored (or after
    /// ten seconds).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        self.stop.notify_one();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Runs until [`ExecutorDriver::stop`] or the agent's SHUTDOWN, or until
    /// the agent has been unreachable for 15 minutes.
    pub async fn run<E: Executor>(self, mut executor: E) -> Result<(), SdkError> {
        let mut away_since: Option<tokio::time::Instant> = None;
        loop {
            let connected = self.session(&mut executor).await;
            if self.is_stopped() {
                return Ok(());
            }
            if connected {
                away_since = None;
            }
            let since = *away_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > AGENT_RECOVERY {
                return Err(SdkError::Executor(format!(
                    "the agent at {} was unreachable for {AGENT_RECOVERY:?}",
                    self.env.agent_endpoint
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.stop.notified() => {
                    if self.unacknowledged() == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One session with the agent; returns whether it subscribed.
    async fn session<E: Executor>(&self, executor: &mut E) -> bool {
        let channel = match cairn_tls::agent_channel(
            &self.env.agent_endpoint,
            self.env.agent_tls.as_ref(),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the agent");
                return false;
            }
        };
        let mut client = pb::executor_link_client::ExecutorLinkClient::new(channel);
        let (tx, rx) = mpsc::channel(1024);
        let unacked: Vec<pb::TaskStatus> = self
            .shared
            .lock()
            .map(|s| s.unacked.values().map(task_status_to_pb).collect())
            .unwrap_or_default();
        let subscribe = pb::ExecutorMessage {
            message: Some(pb::executor_message::Message::Subscribe(
                pb::ExecutorSubscribe {
                    framework_id: self.env.framework_id.to_string(),
                    executor_id: self.env.executor_id.to_string(),
                    unacknowledged_updates: unacked,
                },
            )),
        };
        if tx.send(subscribe).await.is_err() {
            return false;
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.env.token {
            token.attach(&mut request);
        }
        let response = match client.session(request).await {
            Ok(r) => r,
            Err(status) => {
                // A refused token or certificate does not heal: said each
                // time, for the executor's log.
                tracing::warn!(agent = %self.env.agent_endpoint, error = %status.message(), "the agent refused the executor's session");
                return false;
            }
        };
        let mut events = response.into_inner();
        // The agent answers a subscription by opening its stream (and
        // sending launches); updates may flow from here on.
        let agent_id = self.env.agent_id.clone();
        if let Ok(mut sh) = self.shared.lock() {
            sh.session = Some(tx.clone());
            sh.agent_id = agent_id.clone();
        }
        if let Some(a) = &agent_id {
            executor.subscribed(self, a).await;
        }
        let subscribed = true;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let until_drain =
                drain_deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            let event = tokio::select! {
                e = events.message() => e,
                () = self.stop.notified(), if drain_deadline.is_none() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN);
                    if self.unacknowledged() == 0 {
                        break;
                    }
                    continue;
                }
                () = self.drained.notified(), if drain_deadline.is_some() => break,
                () = tokio::time::sleep(until_drain.unwrap_or(DRAIN)), if until_drain.is_some() => break,
            };
            let Ok(Some(event)) = event else { break };
            use pb::executor_event::Event as E;
            match event.event {
                Some(E::Subscribed(s)) => {
                    let agent_id = AgentId::new(s.agent_id.as_str());
                    if let Ok(mut sh) = self.shared.lock() {
                        sh.agent_id = Some(agent_id);
                    }
                }
                Some(E::Launch(l)) => {
                    let Some(task) = l.task else { continue };
                    match task_info_from_pb("launch.task", &task) {
                        Ok(task) => executor.launch(self, task).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed launch from the agent ignored")
                        }
                    }
                }
                Some(E::Kill(k)) => {
                    let grace = Duration::from_millis(k.grace_period_ms);
                    match TaskId::parse("kill.task_id", &k.task_id) {
                        Ok(id) => executor.kill(self, &id, grace).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed kill from the agent ignored")
                        }
                    }
                }
                Some(E::Acknowledged(a)) => {
                    let Ok(uuid) = <[u8; 16]>::try_from(a.uuid.as_slice()) else {
                        continue;
                    };
                    let empty = match self.shared.lock() {
                        Ok(mut s) => {
                            s.unacked.remove(&uuid);
                            s.unacked.is_empty()
                        }
                        Err(_) => false,
                    };
                    if empty && self.is_stopped() {
                        self.drained.notify_one();
                    }
                }
                Some(E::Shutdown(s)) => {
                    executor
                        .shutdown(self, Duration::from_millis(s.grace_period_ms))
                        .await;
                    self.stop();
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN);
                    if self.unacknowledged() == 0 {
                        break;
                    }
                }
                Some(E::Message(m)) => executor.message(self, &m.data).await,
                None => {}
            }
        }
        if let Ok(mut s) = self.shared.lock() {
            s.session = None;
        }
        subscribed
    }
}

fn update_message(status: &TaskStatus) -> pb::ExecutorMessage {
    pb::ExecutorMessage {
        message: Some(pb::executor_message::Message::Update(pb::ExecutorUpdate {
            status: Some(task_status_to_pb(status)),
        })),
    }
}

/// A random status uuid.
fn rand_uuid() -> [u8; 16] {
    rand::random()
}
