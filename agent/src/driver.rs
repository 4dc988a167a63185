//! The task that owns the agent's core and carries out its outputs: launching
//! and destroying containers, and sending to the master and to executors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_agent_core::{
    Agent, Checkpoint, ContainerSummary, ExecConn, ExecutorCommand, Input, LaunchSpec, Output,
    RecoveredContainer, TaskReport, Termination,
};
use cairn_model::convert::{framework_info_to_pb, task_info_to_pb, task_status_to_pb};
use cairn_model::{AgentId, ContainerId, FrameworkInfo, Reason, Time};
use cairn_proto as pb;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::checkpoint::{CheckpointError, CheckpointLog, PidRecord, Record};
use crate::launcher::{ContainerSpec, Launcher};

pub type ExecutorSink = mpsc::Sender<Result<pb::ExecutorEvent, Status>>;
pub type MasterSink = mpsc::Sender<pb::AgentMessage>;

/// Queue length of an executor's or the master session's outbound messages.
pub const CONNECTION_QUEUE: usize = 16_384;

/// The argument with which the agent's binary starts a framework's own
/// executor in its container: `<binary> container-exec -- program args...`
/// (see [`crate::isolation::container::exec_main`]).
pub const CONTAINER_EXEC: &str = "container-exec";

#[derive(Debug)]
pub enum Command {
    Input(Input),
    /// A master session started (`Some`) or ended (`None`). Sent before the
    /// session's first input, so updates re-sent on registration go to it.
    MasterSession(Option<MasterSink>),
    AttachExecutor {
        conn: ExecConn,
        sink: ExecutorSink,
    },
    Report(oneshot::Sender<Report>),
    Containers(oneshot::Sender<Vec<ContainerSummary>>),
    /// Ends every executor; replies once all are gone.
    Shutdown(oneshot::Sender<()>),
    /// A direct task's container ended (see `crate::direct`).
    DirectExited {
        container_id: ContainerId,
        termination: Termination,
    },
    /// A direct task's kill grace period is over: its container goes.
    DirectGraceOver(ContainerId),
    /// A direct task's SIGTERM, again (see `Driver::direct_term`).
    DirectTerm(ContainerId),
}

/// What the agent knows, for registration and views.
#[derive(Clone, Debug)]
pub struct Report {
    pub agent_id: Option<AgentId>,
    /// Registered, with its master session up.
    pub registered: bool,
    pub tasks: Vec<TaskReport>,
    pub frameworks: Vec<FrameworkInfo>,
    /// Executors with a live session.
    pub executors_connected: usize,
}

/// How executors are started: which program, and where the agent is.
#[derive(Clone, Debug)]
pub struct ExecutorLaunch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub work_dir: PathBuf,
    /// `ip:port` executors connect back to.
    pub agent_endpoint: String,
    pub allow_root_tasks: bool,
    /// See `AgentArgs::task_log_max_size`.
    pub task_log_max_size: u64,
    /// Command tasks run without an executor (`AgentArgs::command_tasks`).
    pub direct_tasks: bool,
    /// Where direct tasks' shims record exit statuses the agent could not
    /// wait for.
    pub exit_dir: PathBuf,
    /// The cluster CA (PEM) when the agent serves TLS: executors get it in
    /// [`cairn_tls::AGENT_CA_ENV`] to verify the agent they connect back to.
    pub agent_ca: Option<String>,
    /// With TLS: the key executors' tokens are made with (each executor
    /// gets its own in [`cairn_tls::EXECUTOR_TOKEN_ENV`]).
    pub executor_key: Option<Arc<cairn_tls::ExecutorKey>>,
}

#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct Stopped;

impl Handle {
    pub fn new_conn(&self) -> ExecConn {
        ExecConn(
            self.next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub async fn send(&self, cmd: Command) -> Result<(), Stopped> {
        self.tx.send(cmd).await.map_err(|_| Stopped)
    }

    pub async fn input(&self, input: Input) -> Result<(), Stopped> {
        self.send(Command::Input(input)).await
    }

    /// For contexts that cannot wait (a `Drop`).
    pub fn input_later(&self, input: Input) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(Command::Input(input)) {
            let tx = self.tx.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }

    pub async fn report(&self) -> Result<Report, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Report(tx)).await?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn containers(&self) -> Result<Vec<ContainerSummary>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Containers(tx)).await?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn shutdown(&self) -> Result<(), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Shutdown(tx)).await?;
        rx.await.map_err(|_| Stopped)
    }
}

pub(crate) struct Driver {
    pub(crate) core: Agent,
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) exec: ExecutorLaunch,
    /// Where records go before they take effect (none: not checkpointing).
    checkpoint: Option<CheckpointLog>,
    /// Executors' pids, for the checkpoint's snapshots.
    pub(crate) pids: HashMap<ContainerId, PidRecord>,
    master: Option<MasterSink>,
    executors: HashMap<ExecConn, ExecutorSink>,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) next_conn: Arc<std::sync::atomic::AtomicU64>,
    /// Command tasks the agent runs itself.
    pub(crate) direct: crate::direct::DirectTasks,
}

/// What a restarted agent found in its checkpoint, for the driver to take
/// back.
#[derive(Debug, Default)]
pub struct Recovery {
    pub containers: Vec<RecoveredContainer>,
    pub pids: HashMap<ContainerId, PidRecord>,
}

/// Starts the driver around `core` (already recovered from `checkpoint`,
/// if any): it reattaches the containers in `recovery`, then runs until
/// every handle is gone.
pub fn spawn(
    core: Agent,
    launcher: Arc<dyn Launcher>,
    exec: ExecutorLaunch,
    checkpoint: Option<CheckpointLog>,
    recovery: Recovery,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(65_536);
    let next_conn = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let handle = Handle {
        tx: tx.clone(),
        next_conn: next_conn.clone(),
    };
    let mut driver = Driver {
        core,
        launcher,
        exec,
        checkpoint,
        pids: HashMap::new(),
        master: None,
        executors: HashMap::new(),
        shutdown_waiters: Vec::new(),
        tx,
        next_conn,
        direct: crate::direct::DirectTasks::default(),
    };
    driver.reattach(recovery);
    (handle, tokio::spawn(driver.run(rx)))
}

/// Stops the agent: a checkpoint it cannot write means it can no longer
/// promise what it acknowledges. Executors keep running; a restarted agent
/// recovers them from what was written.
fn fatal(e: &CheckpointError) -> ! {
    tracing::error!(error = %e, "cannot write the checkpoint; the agent stops (restart it to recover its executors)");
    std::process::exit(1);
}

impl Driver {
    /// Watches the executors of containers found in the checkpoint; those
    /// gone while the agent was down end now.
    fn reattach(&mut self, recovery: Recovery) {
        let now = Time::now();
        for c in recovery.containers {
            let pid = recovery
                .pids
                .get(&c.container_id)
                .copied()
                .or_else(|| crate::launcher::find_executor(&c.container_id));
            let exited = pid.and_then(|p| self.launcher.recover(&c.container_id, p, &c.resources));
            match (exited, pid) {
                // A direct task's shim records the status right before it
                // exits (it may linger as a zombie of whoever adopted it).
                _ if self.direct_exit_recorded(&c.container_id) => {
                    tracing::info!(container_id = %c.container_id, executor_id = %c.executor_id, framework_id = %c.framework_id, "direct task ended while the agent was down");
                    // Its record goes once the container's end is
                    // checkpointed (see `Output::Checkpoint` below).
                    if let Some(pid) = pid {
                        self.pids.insert(
                            c.container_id.clone(),
                            PidRecord {
                                direct: true,
                                ..pid
                            },
                        );
                    }
                    self.direct_recovered(&c, None);
                }
                // Checkpoints written before pids said whether they are
                // direct: the shim's environment says so.
                (Some(exited), Some(pid)) if pid.direct || crate::direct::is_direct(pid.pid) => {
                    tracing::info!(container_id = %c.container_id, executor_id = %c.executor_id, framework_id = %c.framework_id, pid = pid.pid, "recovered direct task");
                    self.pids.insert(c.container_id.clone(), pid);
                    self.direct_recovered(&c, Some(exited));
                }
                (Some(exited), Some(pid)) => {
                    tracing::info!(container_id = %c.container_id, executor_id = %c.executor_id, framework_id = %c.framework_id, pid = pid.pid, "recovered executor");
                    self.pids.insert(c.container_id.clone(), pid);
                    self.watch(c.container_id, exited);
                }
                _ => {
                    tracing::info!(container_id = %c.container_id, executor_id = %c.executor_id, framework_id = %c.framework_id, "executor ended while the agent was down");
                    self.core.handle(
                        now,
                        cairn_agent_core::checkpoint::exited_while_down(c.container_id),
                    );
                }
            }
        }
        // After the recovered ends are checkpointed: records of containers
        // the agent no longer knows.
        self.dispatch();
        self.forget_stale_exit_records();
    }

    /// Feeds the container's end to the core when its executor exits.
    pub(crate) fn watch(&self, container_id: ContainerId, exited: oneshot::Receiver<Termination>) {
        let tx = self.tx.clone();
        let launcher = self.launcher.clone();
        tokio::spawn(async move {
            let mut termination = exited.await.unwrap_or_else(|_| Termination {
                message: Some("the launcher lost track of the executor".into()),
                ..Termination::default()
            });
            if let Some(l) = launcher.limitation(&container_id) {
                termination.reason = Some(l.reason);
                termination.message = Some(l.message);
            }
            let _ = tx
                .send(Command::Input(Input::ContainerExited {
                    container_id,
                    termination,
                }))
                .await;
        });
    }

    /// The log rewritten from the agent's state, with the pids.
    fn compact(&mut self) {
        let Some(log) = self.checkpoint.as_mut() else {
            return;
        };
        let mut snapshot: Vec<Record> = self
            .core
            .checkpoint_snapshot()
            .into_iter()
            .map(Record::Core)
            .collect();
        snapshot.extend(self.pids.iter().map(|(c, p)| Record::Pid(c.clone(), *p)));
        if let Err(e) = log.compact(&snapshot) {
            fatal(&e);
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.compact();
        loop {
            let wait = self
                .core
                .poll_timeout()
                .map(|t| t.saturating_since(Time::now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd);
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(cmd) => self.command(cmd),
                            Err(_) => break,
                        }
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
            let now = Time::now();
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
            self.dispatch();
            if !self.shutdown_waiters.is_empty() && self.core.is_idle() {
                for w in self.shutdown_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Input(mut input) => {
                if let Input::ExecutorDisconnected { conn } = &input {
                    self.executors.remove(conn);
                }
                // A task that failed may have been ended by a limit of its
                // container: isolation knows, the core decides what it means.
                if let Input::ExecutorUpdate {
                    conn,
                    status,
                    limitation,
                } = &mut input
                    && status.state.is_terminal()
                    && status.state != cairn_model::TaskState::Finished
                    && let Some(container) = self.core.container_of(*conn)
                {
                    *limitation = self.launcher.limitation(container);
                }
                self.core.handle(Time::now(), input);
            }
            Command::MasterSession(sink) => self.master = sink,
            Command::AttachExecutor { conn, sink } => {
                self.executors.insert(conn, sink);
            }
            Command::Report(reply) => {
                let (tasks, frameworks) = self.core.report();
                let _ = reply.send(Report {
                    agent_id: self.core.agent_id().cloned(),
                    registered: self.core.registered(),
                    tasks,
                    frameworks,
                    executors_connected: self.core.executors_connected(),
                });
            }
            Command::Containers(reply) => {
                let _ = reply.send(self.core.containers());
            }
            Command::Shutdown(reply) => {
                self.core.handle(Time::now(), Input::Shutdown);
                self.shutdown_waiters.push(reply);
            }
            Command::DirectExited {
                container_id,
                termination,
            } => self.direct_exited(&container_id, termination),
            Command::DirectGraceOver(container_id) => self.direct_grace_over(&container_id),
            Command::DirectTerm(container_id) => self.direct_term(&container_id),
        }
    }

    /// Carries out the core's outputs, a batch at a time: the batch's
    /// checkpoint records are made durable first, then its effects happen in
    /// order.
    fn dispatch(&mut self) {
        loop {
            let batch: Vec<Output> = std::iter::from_fn(|| self.core.poll_output()).collect();
            if batch.is_empty() {
                break;
            }
            if let Some(log) = self.checkpoint.as_mut() {
                for out in &batch {
                    if let Output::Checkpoint(c) = out
                        && let Err(e) = log.append(&Record::Core(c.clone()))
                    {
                        fatal(&e);
                    }
                }
                if let Err(e) = log.sync() {
                    fatal(&e);
                }
            }
            for out in batch {
                self.carry_out(out);
            }
            // Pids of executors started in this batch.
            if let Some(log) = self.checkpoint.as_mut()
                && let Err(e) = log.sync()
            {
                fatal(&e);
            }
        }
        if self
            .checkpoint
            .as_ref()
            .is_some_and(CheckpointLog::wants_compaction)
        {
            self.compact();
        }
    }

    fn carry_out(&mut self, out: Output) {
        {
            match out {
                Output::Checkpoint(Checkpoint::ContainerEnded { container_id }) => {
                    // Durable by now (the batch's records are synced before
                    // its effects): a direct task's exit record is not
                    // needed any more.
                    if self.pids.remove(&container_id).is_some_and(|p| p.direct) {
                        self.forget_exit_record(&container_id);
                    }
                }
                Output::Checkpoint(_) => {}
                Output::ToMaster {
                    framework_id,
                    status,
                } => {
                    if let Some(master) = &self.master {
                        let msg = pb::AgentMessage {
                            message: Some(pb::agent_message::Message::StatusUpdate(
                                pb::StatusUpdate {
                                    framework_id: framework_id.to_string(),
                                    status: Some(task_status_to_pb(&status)),
                                },
                            )),
                        };
                        // A full queue drops the send; the update stays
                        // queued in the core and is re-sent.
                        let _ = master.try_send(msg);
                    }
                }
                Output::Launch(spec) => self.launch(spec),
                Output::Destroy { container_id } => {
                    self.direct_destroyed(&container_id);
                    self.destroy(container_id);
                }
                Output::ToExecutor { conn, command } if self.direct.has(conn) => {
                    self.direct_command(conn, command);
                }
                Output::ToExecutor { conn, command } => {
                    let Some(sink) = self.executors.get(&conn) else {
                        return;
                    };
                    if sink.try_send(Ok(executor_event(&command))).is_err() {
                        tracing::warn!(
                            conn = conn.0,
                            "executor is not reading its stream; closing it"
                        );
                        self.executors.remove(&conn);
                    }
                }
                Output::CloseExecutor { conn } => {
                    self.executors.remove(&conn);
                }
                Output::UpdateContainer {
                    container_id,
                    resources,
                } => {
                    if let Err(e) = self.launcher.update(&container_id, &resources) {
                        tracing::warn!(%container_id, error = %e, "cannot resize the container");
                    }
                }
                Output::MessageToFramework {
                    framework_id,
                    executor_id,
                    data,
                } => {
                    if let Some(master) = &self.master {
                        let msg = pb::AgentMessage {
                            message: Some(pb::agent_message::Message::FrameworkMessage(
                                pb::FrameworkMessage {
                                    framework_id: framework_id.to_string(),
                                    executor_id: executor_id.to_string(),
                                    data,
                                },
                            )),
                        };
                        // Best effort, as in Mesos.
                        let _ = master.try_send(msg);
                    }
                }
            }
        }
    }

    /// Destroys a container off the driver's task (it may wait for its
    /// processes to die).
    pub(crate) fn destroy(&self, container_id: ContainerId) {
        let launcher = self.launcher.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match launcher.destroy(&container_id) {
                Ok(()) => tracing::debug!(
                    %container_id,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "container destroyed"
                ),
                Err(e) => {
                    tracing::error!(%container_id, error = %e, "cannot destroy container")
                }
            }
        });
    }

    /// Reports a container that could not be started to the core.
    pub(crate) fn launch_failed(
        &mut self,
        container_id: &ContainerId,
        reason: Reason,
        message: String,
    ) {
        tracing::error!(%container_id, %message, "container launch failed");
        self.core.handle(
            Time::now(),
            Input::ContainerLaunchFailed {
                container_id: container_id.clone(),
                reason,
                message,
            },
        );
    }

    /// Records a started container's first process, so a restarted agent
    /// finds it.
    pub(crate) fn record_pid(&mut self, container_id: &ContainerId, pid: u32, direct: bool) {
        if let Some(start_time) = crate::launcher::process_start_time(pid) {
            let pid = PidRecord {
                pid,
                start_time,
                direct,
            };
            self.pids.insert(container_id.clone(), pid);
            if let Some(log) = self.checkpoint.as_mut()
                && let Err(e) = log.append(&Record::Pid(container_id.clone(), pid))
            {
                fatal(&e);
            }
        }
    }

    fn launch(&mut self, spec: LaunchSpec) {
        let Some((sandbox, env)) = self.prepare(&spec) else {
            return;
        };
        if spec.command.is_none() && self.exec.direct_tasks {
            self.direct_launch(spec, sandbox, env);
            return;
        }
        let mut env = env;
        // The command executor (this binary), or the framework's own
        // executor command, run as Mesos runs it. The latter starts behind
        // this binary's `container-exec`, which sets the container up (as
        // the command executor does for itself) and then execs it.
        let (program, args) = match &spec.command {
            None => (self.exec.program.clone(), self.exec.args.clone()),
            Some(c) => {
                env.extend(c.environment.iter().cloned());
                (self.exec.program.clone(), container_exec_args(c))
            }
        };
        let container = ContainerSpec {
            container_id: spec.container_id.clone(),
            program,
            args,
            env,
            sandbox,
            resources: spec.resources.clone(),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            task_output: false,
        };
        match self.launcher.launch(container) {
            Ok(launched) => {
                tracing::debug!(container_id = %spec.container_id, pid = launched.pid, "executor started");
                self.record_pid(&spec.container_id, launched.pid, false);
                self.watch(spec.container_id.clone(), launched.exited);
            }
            Err(e) => self.launch_failed(
                &spec.container_id,
                Reason::ContainerLaunchFailed,
                e.to_string(),
            ),
        }
    }

    /// The container's sandbox, made and given to the task's user, and the
    /// environment every container of the agent gets. `None` when that
    /// failed (the core was told).
    fn prepare(&mut self, spec: &LaunchSpec) -> Option<(PathBuf, Vec<(String, String)>)> {
        let sandbox = self.exec.work_dir.join(&spec.sandbox);
        if let Err(e) = std::fs::create_dir_all(&sandbox) {
            self.launch_failed(
                &spec.container_id,
                Reason::ContainerLaunchFailed,
                format!("cannot create sandbox {}: {e}", sandbox.display()),
            );
            return None;
        }
        let owner = match task_owner(&spec.user, self.exec.allow_root_tasks) {
            Ok(owner) => owner,
            Err((reason, message)) => {
                self.launch_failed(&spec.container_id, reason, message);
                return None;
            }
        };
        if let Some((uid, gid)) = owner
            && let Err(e) = nix::unistd::chown(&sandbox, Some(uid), Some(gid))
        {
            self.launch_failed(
                &spec.container_id,
                Reason::ContainerLaunchFailed,
                format!(
                    "cannot give sandbox {} to user {}: {e}",
                    sandbox.display(),
                    spec.user
                ),
            );
            return None;
        }
        let agent_id = self
            .core
            .agent_id()
            .map(ToString::to_string)
            .unwrap_or_default();
        let framework_id = spec
            .framework
            .id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let token = self
            .exec
            .executor_key
            .as_ref()
            .map(|key| key.token(&framework_id, spec.executor_id.as_str()));
        let sandbox_str = sandbox.display().to_string();
        let mut env: Vec<(String, String)> = vec![
            (
                "MESOS_AGENT_ENDPOINT".into(),
                self.exec.agent_endpoint.clone(),
            ),
            ("MESOS_FRAMEWORK_ID".into(), framework_id),
            ("MESOS_EXECUTOR_ID".into(), spec.executor_id.to_string()),
            ("MESOS_DIRECTORY".into(), sandbox_str.clone()),
            ("MESOS_SANDBOX".into(), sandbox_str),
            (
                "MESOS_CHECKPOINT".into(),
                if spec.framework.checkpoint { "1" } else { "0" }.into(),
            ),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".into(),
                format!("{}secs", spec.shutdown_grace.as_secs()),
            ),
            ("MESOS_SLAVE_ID".into(), agent_id.clone()),
            ("MESOS_AGENT_ID".into(), agent_id),
            (
                "MESOS_SLAVE_PID".into(),
                format!("slave(1)@{}", self.exec.agent_endpoint),
            ),
            ("CAIRN_CONTAINER_ID".into(), spec.container_id.to_string()),
            ("CAIRN_TASK_USER".into(), spec.user.clone()),
            (
                crate::command_executor::LOG_MAX_ENV.into(),
                self.exec.task_log_max_size.to_string(),
            ),
        ];
        if let Some(ca) = &self.exec.agent_ca {
            env.push((cairn_tls::AGENT_CA_ENV.into(), ca.clone()));
        }
        if let Some(token) = token {
            env.push((cairn_tls::EXECUTOR_TOKEN_ENV.into(), token));
        }
        Some((sandbox, env))
    }
}

/// `container-exec` arguments that run `c` (a framework's executor command
/// or a direct task's command), as Mesos runs commands: `sh -c value`, or
/// `value` with `arguments` (whose first is argv[0]).
pub(crate) fn container_exec_args(c: &cairn_model::CommandInfo) -> Vec<String> {
    let mut args = vec![CONTAINER_EXEC.to_string(), "--".to_string()];
    if c.shell {
        args.extend(["/bin/sh".to_string(), "-c".to_string(), c.value.clone()]);
    } else {
        args.push(c.value.clone());
        args.extend(c.arguments.iter().skip(1).cloned());
    }
    args
}

/// Who will own the task's processes and sandbox: `None` when the agent
/// cannot switch users (it does not run as root) and the task runs as the
/// agent's own user. Refuses root unless allowed, and users the agent cannot
/// become.
fn task_owner(
    user: &str,
    allow_root: bool,
) -> Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>, (Reason, String)> {
    let me = nix::unistd::geteuid();
    let (uid, gid) = if user.is_empty() {
        (me, nix::unistd::getegid())
    } else {
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => (u.uid, u.gid),
            Ok(None) => {
                return Err((
                    Reason::ContainerLaunchFailed,
                    format!("no such user {user:?} on this agent"),
                ));
            }
            Err(e) => {
                return Err((
                    Reason::ContainerLaunchFailed,
                    format!("cannot look up user {user:?}: {e}"),
                ));
            }
        }
    };
    if uid.is_root() && !allow_root {
        return Err((
            Reason::TaskUnauthorized,
            "the task would run as root, which this agent does not allow (start it with --allow-root-tasks)".into(),
        ));
    }
    if me.is_root() {
        return Ok(Some((uid, gid)));
    }
    if uid != me {
        return Err((
            Reason::ContainerLaunchFailed,
            format!("cannot run tasks as {user:?}: the agent does not run as root"),
        ));
    }
    Ok(None)
}

fn executor_event(c: &ExecutorCommand) -> pb::ExecutorEvent {
    use pb::executor_event::Event as E;
    let event = match c {
        ExecutorCommand::Launch { task, framework } => E::Launch(pb::LaunchTask {
            task: Some(task_info_to_pb(task)),
            framework: Some(framework_info_to_pb(framework)),
        }),
        ExecutorCommand::Kill { task_id, grace } => E::Kill(pb::ExecutorKill {
            task_id: task_id.to_string(),
            grace_period_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        }),
        ExecutorCommand::Acknowledged { task_id, uuid } => {
            E::Acknowledged(pb::ExecutorAcknowledged {
                task_id: task_id.to_string(),
                uuid: uuid.0.to_vec(),
            })
        }
        ExecutorCommand::Shutdown { grace } => E::Shutdown(pb::ExecutorShutdown {
            grace_period_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        }),
        ExecutorCommand::Message { data } => {
            E::Message(pb::ExecutorFrameworkMessage { data: data.clone() })
        }
    };
    pb::ExecutorEvent { event: Some(event) }
}
