//! The Cairn agent's core: executors, tasks and reliable status updates, as a
//! deterministic state machine without I/O.
//!
//! Like the master's core, it never touches a socket, a process or the clock:
//! the server feeds [`Input`]s with `now`, carries out the [`Output`]s
//! (launch or destroy a container, send to the master or an executor), and
//! fires timers when [`Agent::poll_timeout`] says.
//!
//! Every task runs under an executor, a process separate from the agent. A
//! task with a command runs under the built-in command executor, one per
//! task, whose executor id is the task id (as in Mesos).
//!
//! ```text
//! executor --update--> agent: record, ack the executor, queue per task
//!          <--ack---        \--forward (one in flight per task)--> master --> framework
//!                            <--ack (relayed from the framework)-- master
//! ```

pub mod checkpoint;
pub mod updates;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use cairn_model::{
    AgentId, CommandInfo, ContainerId, ExecutorId, FrameworkId, FrameworkInfo, Network, Reason,
    Resources, Source, StatusUuid, TaskId, TaskInfo, TaskState, TaskStatus, Time,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use checkpoint::{Checkpoint, RecoveredContainer};
pub use updates::{Forward, RetryPolicy, StatusUpdateManager};

/// The agent's tunables.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub retry: RetryPolicy,
    /// An executor that has not subscribed this long after launch is
    /// destroyed and its tasks fail.
    pub executor_registration_timeout: Duration,
    /// After a restart, an executor found in the checkpoint that has not
    /// re-subscribed this long is destroyed and its tasks are lost.
    pub executor_reregistration_timeout: Duration,
    /// Time an executor gets to end its tasks after SHUTDOWN.
    pub executor_shutdown_grace: Duration,
    /// Time between SIGTERM and SIGKILL when a kill names none.
    pub default_kill_grace: Duration,
    /// Extra time after a kill's grace before the whole container is
    /// destroyed (the executor did not manage to end the task).
    pub kill_escalation: Duration,
    /// Whether tasks may run as root.
    pub allow_root_tasks: bool,
    /// The user for tasks whose framework and command name none.
    pub default_user: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            retry: RetryPolicy::default(),
            executor_registration_timeout: Duration::from_secs(60),
            executor_reregistration_timeout: Duration::from_secs(10),
            executor_shutdown_grace: Duration::from_secs(5),
            default_kill_grace: Duration::from_secs(3),
            kill_escalation: Duration::from_secs(5),
            allow_root_tasks: false,
            default_user: String::new(),
        }
    }
}

/// An executor's connection to the agent, numbered by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecConn(pub u64);

/// How a container's executor ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Termination {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Set by isolation when a limit ended it (memory, pids).
    pub reason: Option<Reason>,
    pub message: Option<String>,
}

impl Termination {
    fn describe(&self) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("Executor exited with status {c}"),
            (None, Some(s)) => format!("Executor terminated by signal {s}"),
            (None, None) => "Executor terminated".to_string(),
        }
    }
}

/// A limit of a container that was hit (memory, pids), as isolation saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limitation {
    pub reason: Reason,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The master admitted (or re-admitted) this agent on a new session.
    Registered {
        agent_id: AgentId,
    },
    /// The master session ended.
    MasterDisconnected,
    RunTask {
        framework: FrameworkInfo,
        task: TaskInfo,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
        grace: Option<Duration>,
    },
    /// The framework acknowledged an update (relayed by the master).
    Acknowledge {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: StatusUuid,
    },
    ShutdownFramework {
        framework_id: FrameworkId,
    },
    ExecutorSubscribed {
        conn: ExecConn,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// `limitation`: a limit the executor's container hit, if any; it
    /// explains a task that failed or was killed by it.
    ExecutorUpdate {
        conn: ExecConn,
        status: TaskStatus,
        limitation: Option<Limitation>,
    },
    ExecutorDisconnected {
        conn: ExecConn,
    },
    ContainerExited {
        container_id: ContainerId,
        termination: Termination,
    },
    /// The container could not be started. `reason` is
    /// `TaskUnauthorized` (the task ends TASK_ERROR) or a launch failure
    /// (TASK_FAILED).
    ContainerLaunchFailed {
        container_id: ContainerId,
        reason: Reason,
        message: String,
    },
    /// The agent is stopping: end every executor.
    Shutdown,
    /// The framework asks to end one of its executors.
    ShutdownExecutor {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    /// Opaque bytes from the framework for one of its executors.
    FrameworkMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// Opaque bytes from an executor for its framework.
    ExecutorMessage {
        conn: ExecConn,
        data: Vec<u8>,
    },
}

/// What an executor is told.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutorCommand {
    Launch {
        task: TaskInfo,
        framework: FrameworkInfo,
    },
    Kill {
        task_id: TaskId,
        grace: Duration,
    },
    /// The agent has the update (not: the framework acknowledged it).
    Acknowledged {
        task_id: TaskId,
        uuid: StatusUuid,
    },
    Shutdown {
        grace: Duration,
    },
    /// Opaque bytes from its framework.
    Message {
        data: Vec<u8>,
    },
}

/// Everything needed to start an executor's container.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub container_id: ContainerId,
    pub framework: FrameworkInfo,
    pub executor_id: ExecutorId,
    /// The sandbox, relative to the agent's work directory.
    pub sandbox: PathBuf,
    /// What the container may use: the sum of its tasks' resources.
    pub resources: Resources,
    /// Unix user to run as ("" for the agent's own).
    pub user: String,
    pub network: Network,
    pub shutdown_grace: Duration,
    /// The framework's executor command; `None` for the command executor.
    pub command: Option<CommandInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Write this record durably before carrying out any output that
    /// follows it.
    Checkpoint(Checkpoint),
    ToMaster {
        framework_id: FrameworkId,
        status: TaskStatus,
    },
    Launch(LaunchSpec),
    /// Kill every process of the container and clean it up. Idempotent, and
    /// safe for a container that is already gone.
    Destroy {
        container_id: ContainerId,
    },
    ToExecutor {
        conn: ExecConn,
        command: ExecutorCommand,
    },
    CloseExecutor {
        conn: ExecConn,
    },
    /// A framework's executor took on or ended a task: its container's
    /// limits become the sum of its live tasks' resources (as Mesos resizes
    /// an executor's container). Best effort: a container already gone, or
    /// a memory limit under what is in use, stays as it was.
    UpdateContainer {
        container_id: ContainerId,
        resources: Resources,
    },
    /// Opaque bytes from an executor for its framework, best effort: sent
    /// if the master is connected, else dropped (as in Mesos).
    MessageToFramework {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
struct TaskRecord {
    info: TaskInfo,
    state: TaskState,
    /// Not yet handed to the executor (it has not subscribed).
    queued: bool,
    kill_requested: bool,
    /// The uuid of the last update accepted from the executor (an executor
    /// re-sends what the agent had not acknowledged when it restarted).
    last_uuid: Option<StatusUuid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExecState {
    Launching,
    Running(ExecConn),
    /// Its connection dropped; it may reconnect, or its exit will follow.
    Disconnected,
}

#[derive(Debug)]
struct Executor {
    id: ExecutorId,
    framework_id: FrameworkId,
    container_id: ContainerId,
    /// The framework's own executor (many tasks, lives until shut down),
    /// not the command executor of one task.
    custom: bool,
    state: ExecState,
    tasks: BTreeMap<TaskId, TaskRecord>,
    registration_deadline: Option<Time>,
    /// When the whole container is destroyed if still there.
    destroy_at: Option<Time>,
    destroy_sent: bool,
    /// Why it is being destroyed, for the tasks' final updates.
    failure: Option<Ending>,
    /// Found in the checkpoint after a restart.
    recovered: bool,
}

/// How the agent ends a task itself.
#[derive(Clone, Debug)]
struct Ending {
    state: TaskState,
    reason: Reason,
    message: String,
}

/// A live container, for usage reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerSummary {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub container_id: ContainerId,
    /// The resources of its live tasks.
    pub resources: Resources,
}

/// A snapshot of one task for reports (re-registration, views).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskReport {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub container_id: Option<ContainerId>,
    pub task: TaskInfo,
    pub state: TaskState,
}

/// See the crate documentation.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    agent_id: Option<AgentId>,
    rng: ChaCha8Rng,
    frameworks: BTreeMap<FrameworkId, FrameworkInfo>,
    /// Frameworks the master removed: their executors are ending, and none of
    /// their updates are sent any more.
    removed: BTreeSet<FrameworkId>,
    executors: BTreeMap<(FrameworkId, ExecutorId), Executor>,
    containers: HashMap<ContainerId, (FrameworkId, ExecutorId)>,
    exec_conns: HashMap<ExecConn, (FrameworkId, ExecutorId)>,
    updates: StatusUpdateManager,
    /// Tasks whose executor is gone while their updates are unacknowledged.
    finished: BTreeMap<(FrameworkId, TaskId), TaskReport>,
    outputs: VecDeque<Output>,
    next_container: u64,
    shutting_down: bool,
}

impl Agent {
    pub fn new(config: AgentConfig, seed: u64) -> Self {
        let updates = StatusUpdateManager::new(config.retry);
        Agent {
            config,
            agent_id: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            frameworks: BTreeMap::new(),
            removed: BTreeSet::new(),
            executors: BTreeMap::new(),
            containers: HashMap::new(),
            exec_conns: HashMap::new(),
            updates,
            finished: BTreeMap::new(),
            outputs: VecDeque::new(),
            next_container: 0,
            shutting_down: false,
        }
    }

    pub fn agent_id(&self) -> Option<&AgentId> {
        self.agent_id.as_ref()
    }

    /// Registered with the master, and its session still up.
    pub fn registered(&self) -> bool {
        self.agent_id.is_some() && self.updates.is_connected()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        let executors = self
            .executors
            .values()
            .flat_map(|e| {
                [
                    e.registration_deadline,
                    e.destroy_at.filter(|_| !e.destroy_sent),
                ]
            })
            .flatten();
        self.updates
            .poll_timeout()
            .into_iter()
            .chain(executors)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Time) {
        for f in self.updates.retry_due(now) {
            self.outputs.push_back(Output::ToMaster {
                framework_id: f.framework_id,
                status: f.status,
            });
        }
        let timeout = self.config.executor_registration_timeout;
        let rereg = self.reregistration_failure();
        for e in self.executors.values_mut() {
            if e.registration_deadline.is_some_and(|d| d <= now) {
                e.registration_deadline = None;
                e.failure = Some(if e.recovered {
                    rereg.clone()
                } else {
                    Ending {
                        state: TaskState::Failed,
                        reason: Reason::ExecutorRegistrationTimeout,
                        message: format!(
                            "Executor did not subscribe within {}s",
                            timeout.as_secs_f64()
                        ),
                    }
                });
                e.destroy_at = Some(now);
            }
            if !e.destroy_sent && e.destroy_at.is_some_and(|d| d <= now) {
                e.destroy_sent = true;
                self.outputs.push_back(Output::Destroy {
                    container_id: e.container_id.clone(),
                });
            }
        }
    }

    /// Whether every executor is gone (a stopping agent may exit).
    pub fn is_idle(&self) -> bool {
        self.executors.is_empty()
    }

    /// What the agent reports to a master when it (re-)registers: its live
    /// tasks and those with unacknowledged updates, and their frameworks.
    pub fn report(&self) -> (Vec<TaskReport>, Vec<FrameworkInfo>) {
        let mut tasks: Vec<TaskReport> = self
            .executors
            .values()
            .flat_map(|e| {
                e.tasks.values().map(|t| TaskReport {
                    framework_id: e.framework_id.clone(),
                    executor_id: e.id.clone(),
                    container_id: Some(e.container_id.clone()),
                    task: t.info.clone(),
                    state: t.state,
                })
            })
            .collect();
        tasks.extend(self.finished.values().cloned());
        let frameworks = self
            .frameworks
            .iter()
            .filter(|(id, _)| !self.removed.contains(*id))
            .map(|(_, f)| f.clone())
            .collect();
        (tasks, frameworks)
    }

    /// Executors with a live session (subscribed, or back after a restart of
    /// either side).
    pub fn executors_connected(&self) -> usize {
        self.executors
            .values()
            .filter(|e| matches!(e.state, ExecState::Running(_)))
            .count()
    }

    /// Every live container, with what its tasks were given.
    pub fn containers(&self) -> Vec<ContainerSummary> {
        self.executors
            .values()
            .map(|e| {
                let mut resources = Resources::new();
                for t in e.tasks.values().filter(|t| !t.state.is_terminal()) {
                    resources.add(&t.info.resources);
                }
                ContainerSummary {
                    framework_id: e.framework_id.clone(),
                    executor_id: e.id.clone(),
                    container_id: e.container_id.clone(),
                    resources,
                }
            })
            .collect()
    }

    /// The container of the executor connected as `conn`.
    pub fn container_of(&self, conn: ExecConn) -> Option<&ContainerId> {
        let key = self.exec_conns.get(&conn)?;
        self.executors.get(key).map(|e| &e.container_id)
    }

    /// Where each live container's sandbox is, for the files API.
    pub fn sandboxes(&self) -> Vec<(FrameworkId, ExecutorId, ContainerId)> {
        self.executors
            .values()
            .map(|e| (e.framework_id.clone(), e.id.clone(), e.container_id.clone()))
            .collect()
    }

    pub fn handle(&mut self, now: Time, input: Input) {
        match input {
            Input::Registered { agent_id } => {
                if self.agent_id.as_ref() != Some(&agent_id) {
                    self.outputs
                        .push_back(Output::Checkpoint(Checkpoint::AgentId(agent_id.clone())));
                }
                self.agent_id = Some(agent_id);
                for f in self.updates.connected(now) {
                    self.send_to_master(f);
                }
            }
            Input::MasterDisconnected => self.updates.disconnected(),
            Input::RunTask { framework, task } => self.run_task(now, framework, task),
            Input::KillTask {
                framework_id,
                task_id,
                grace,
            } => self.kill_task(now, &framework_id, &task_id, grace),
            Input::Acknowledge {
                framework_id,
                task_id,
                uuid,
            } => {
                if self.updates.is_in_flight(&framework_id, &task_id, uuid) {
                    self.outputs
                        .push_back(Output::Checkpoint(Checkpoint::Acknowledged {
                            framework_id: framework_id.clone(),
                            task_id: task_id.clone(),
                            uuid,
                        }));
                }
                let (next, done) = self.updates.acknowledge(now, &framework_id, &task_id, uuid);
                for f in next {
                    self.send_to_master(f);
                }
                if done {
                    self.finished.remove(&(framework_id, task_id));
                }
            }
            Input::ShutdownFramework { framework_id } => {
                self.shutdown_framework(now, &framework_id)
            }
            Input::ShutdownExecutor {
                framework_id,
                executor_id,
            } => self.shutdown_executor(now, &(framework_id, executor_id)),
            Input::FrameworkMessage {
                framework_id,
                executor_id,
                data,
            } => {
                // Best effort: an executor that is not connected misses it.
                if let Some(ExecState::Running(conn)) = self
                    .executors
                    .get(&(framework_id, executor_id))
                    .map(|e| e.state)
                {
                    self.outputs.push_back(Output::ToExecutor {
                        conn,
                        command: ExecutorCommand::Message { data },
                    });
                }
            }
            Input::ExecutorMessage { conn, data } => {
                if let Some((framework_id, executor_id)) = self.exec_conns.get(&conn).cloned()
                    && !self.removed.contains(&framework_id)
                {
                    self.outputs.push_back(Output::MessageToFramework {
                        framework_id,
                        executor_id,
                        data,
                    });
                }
            }
            Input::ExecutorSubscribed {
                conn,
                framework_id,
                executor_id,
            } => self.executor_subscribed(conn, framework_id, executor_id),
            Input::ExecutorUpdate {
                conn,
                status,
                limitation,
            } => self.executor_update(now, conn, status, limitation),
            Input::ExecutorDisconnected { conn } => {
                if let Some(key) = self.exec_conns.remove(&conn)
                    && let Some(e) = self.executors.get_mut(&key)
                    && e.state == ExecState::Running(conn)
                {
                    e.state = ExecState::Disconnected;
                }
            }
            Input::ContainerExited {
                container_id,
                termination,
            } => self.container_exited(now, &container_id, &termination),
            Input::ContainerLaunchFailed {
                container_id,
                reason,
                message,
            } => {
                if let Some(key) = self.containers.get(&container_id).cloned()
                    && let Some(e) = self.executors.get_mut(&key)
                {
                    let state = if reason == Reason::TaskUnauthorized {
                        TaskState::Error
                    } else {
                        TaskState::Failed
                    };
                    e.failure = Some(Ending {
                        state,
                        reason,
                        message: format!("Failed to launch the container: {message}"),
                    });
                }
                self.container_exited(now, &container_id, &Termination::default());
            }
            Input::Shutdown => {
                self.shutting_down = true;
                let keys: Vec<_> = self.executors.keys().cloned().collect();
                for key in keys {
                    self.shutdown_executor(now, &key);
                }
            }
        }
    }

    fn send_to_master(&mut self, f: Forward) {
        if self.removed.contains(&f.framework_id) {
            return;
        }
        self.outputs.push_back(Output::ToMaster {
            framework_id: f.framework_id,
            status: f.status,
        });
    }

    fn new_uuid(&mut self) -> StatusUuid {
        StatusUuid(self.rng.random())
    }

    /// An update the agent makes itself (the executor could not): recorded
    /// and sent reliably like an executor's.
    fn agent_update(&mut self, now: Time, task: (&FrameworkId, &ExecutorId, &TaskId), end: Ending) {
        let (framework_id, executor_id, task_id) = task;
        let status = TaskStatus {
            task_id: task_id.clone(),
            state: end.state,
            message: end.message,
            source: Source::Agent,
            reason: Some(end.reason),
            agent_id: self.agent_id.clone(),
            executor_id: Some(executor_id.clone()),
            timestamp: now,
            uuid: Some(self.new_uuid()),
            exit_code: None,
            healthy: None,
        };
        self.enqueue(now, framework_id, status);
    }

    /// Remembers a task the agent ended itself without an executor (a
    /// refused launch), so re-registration reports it until acknowledged.
    fn remember_refused(&mut self, framework_id: &FrameworkId, task: &TaskInfo, state: TaskState) {
        if self.updates.has_stream(framework_id, &task.task_id) {
            self.outputs
                .push_back(Output::Checkpoint(Checkpoint::Finished {
                    framework_id: framework_id.clone(),
                    executor_id: ExecutorId::new(task.task_id.as_str()),
                    task: task.clone(),
                    state,
                }));
            self.finished.insert(
                (framework_id.clone(), task.task_id.clone()),
                TaskReport {
                    framework_id: framework_id.clone(),
                    executor_id: ExecutorId::new(task.task_id.as_str()),
                    container_id: None,
                    task: task.clone(),
                    state,
                },
            );
        }
    }

    fn enqueue(&mut self, now: Time, framework_id: &FrameworkId, status: TaskStatus) {
        if self.removed.contains(framework_id) {
            return;
        }
        self.outputs
            .push_back(Output::Checkpoint(Checkpoint::Update {
                framework_id: framework_id.clone(),
                status: status.clone(),
            }));
        for f in self.updates.enqueue(now, framework_id.clone(), status) {
            self.send_to_master(f);
        }
    }

    /// The user a task runs as: its command's, else its framework's, else
    /// the agent's default ("" runs it as the agent's own user).
    fn task_user(&self, framework: &FrameworkInfo, task: &TaskInfo) -> String {
        task.runnable()
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| (!framework.user.is_empty()).then(|| framework.user.clone()))
            .unwrap_or_else(|| self.config.default_user.clone())
    }

    fn run_task(&mut self, now: Time, framework: FrameworkInfo, task: TaskInfo) {
        let Some(framework_id) = framework.id.clone() else {
            return;
        };
        // A command task's executor is named after the task; a framework's
        // executor has its own id, shared by the tasks it runs.
        let executor_id = task.executor.as_ref().map_or_else(
            || ExecutorId::new(task.task_id.as_str()),
            |e| e.executor_id.clone(),
        );
        // The same task again while it runs (a master re-sending a launch):
        // it is already here, and an answer would land on its updates.
        if self
            .executors
            .get(&(framework_id.clone(), executor_id.clone()))
            .and_then(|e| e.tasks.get(&task.task_id))
            .is_some_and(|t| !t.state.is_terminal())
        {
            return;
        }
        let refuse = if self.shutting_down {
            Some((
                TaskState::Lost,
                Reason::AgentRestarted,
                "The agent is shutting down".to_string(),
            ))
        } else if let Some(problem) = task.runnable().problem() {
            Some((
                TaskState::Failed,
                Reason::ContainerLaunchFailed,
                format!("Invalid command: {problem}"),
            ))
        } else if self.task_user(&framework, &task) == "root" && !self.config.allow_root_tasks {
            Some((
                TaskState::Error,
                Reason::TaskUnauthorized,
                "Running tasks as root is not allowed on this agent (it was started without --allow-root-tasks)"
                    .to_string(),
            ))
        } else if let Some(e) = self
            .executors
            .get(&(framework_id.clone(), executor_id.clone()))
            .filter(|e| {
                !(e.custom
                    && task.executor.is_some()
                    && e.failure.is_none()
                    && e.destroy_at.is_none())
            })
        {
            Some((
                TaskState::Failed,
                Reason::ContainerLaunchFailed,
                if e.custom {
                    format!("Executor {executor_id} is shutting down")
                } else {
                    format!("An executor named {executor_id} is still running")
                },
            ))
        } else if self.updates.has_stream(&framework_id, &task.task_id)
            || self
                .finished
                .contains_key(&(framework_id.clone(), task.task_id.clone()))
        {
            // An earlier run's updates are still unacknowledged; a late one
            // would land on this run.
            Some((
                TaskState::Error,
                Reason::TaskInvalid,
                format!(
                    "Task {} still has unacknowledged updates from an earlier run on this agent; use a new task id",
                    task.task_id
                ),
            ))
        } else {
            None
        };
        let was_removed = self.removed.remove(&framework_id);
        if was_removed || self.frameworks.get(&framework_id) != Some(&framework) {
            self.outputs
                .push_back(Output::Checkpoint(Checkpoint::Framework(framework.clone())));
        }
        self.frameworks
            .insert(framework_id.clone(), framework.clone());
        if let Some((state, reason, message)) = refuse {
            let refused_in_use = reason == Reason::TaskInvalid;
            self.agent_update(
                now,
                (&framework_id, &executor_id, &task.task_id),
                Ending {
                    state,
                    reason,
                    message,
                },
            );
            if !refused_in_use {
                self.remember_refused(&framework_id, &task, state);
            }
            return;
        }
        let key = (framework_id.clone(), executor_id.clone());
        if let Some(e) = self.executors.get_mut(&key) {
            // The framework's executor runs already: the task joins it.
            self.outputs.push_back(Output::Checkpoint(Checkpoint::Task {
                framework_id: framework_id.clone(),
                executor_id: executor_id.clone(),
                container_id: e.container_id.clone(),
                task: task.clone(),
                state: TaskState::Staging,
            }));
            let queued = !matches!(e.state, ExecState::Running(_));
            if let ExecState::Running(conn) = e.state {
                self.outputs.push_back(Output::ToExecutor {
                    conn,
                    command: ExecutorCommand::Launch {
                        task: task.clone(),
                        framework: framework.clone(),
                    },
                });
            }
            e.tasks.insert(
                task.task_id.clone(),
                TaskRecord {
                    info: task,
                    state: TaskState::Staging,
                    queued,
                    kill_requested: false,
                    last_uuid: None,
                },
            );
            let update = Output::UpdateContainer {
                container_id: e.container_id.clone(),
                resources: live_resources(e),
            };
            self.outputs.push_back(update);
            return;
        }
        self.next_container += 1;
        let suffix: u32 = self.rng.random();
        let container_id = ContainerId::new(format!("c{}-{suffix:08x}", self.next_container));
        let sandbox = PathBuf::from("frameworks")
            .join(framework_id.as_str())
            .join("executors")
            .join(executor_id.as_str())
            .join("runs")
            .join(container_id.as_str());
        let user = self.task_user(&framework, &task);
        let spec = LaunchSpec {
            container_id: container_id.clone(),
            framework: framework.clone(),
            executor_id: executor_id.clone(),
            sandbox,
            resources: task.resources.clone(),
            user,
            network: task.network,
            shutdown_grace: self.config.executor_shutdown_grace,
            command: task.executor.as_ref().map(|e| e.command.clone()),
        };
        let custom = task.executor.is_some();
        self.outputs.push_back(Output::Checkpoint(Checkpoint::Task {
            framework_id: framework_id.clone(),
            executor_id: executor_id.clone(),
            container_id: container_id.clone(),
            task: task.clone(),
            state: TaskState::Staging,
        }));
        let mut tasks = BTreeMap::new();
        tasks.insert(
            task.task_id.clone(),
            TaskRecord {
                info: task,
                state: TaskState::Staging,
                queued: true,
                kill_requested: false,
                last_uuid: None,
            },
        );
        self.executors.insert(
            key.clone(),
            Executor {
                id: executor_id,
                framework_id,
                container_id: container_id.clone(),
                custom,
                state: ExecState::Launching,
                tasks,
                registration_deadline: Some(now + self.config.executor_registration_timeout),
                destroy_at: None,
                destroy_sent: false,
                failure: None,
                recovered: false,
            },
        );
        self.containers.insert(container_id, key);
        self.outputs.push_back(Output::Launch(spec));
    }

    fn executor_subscribed(
        &mut self,
        conn: ExecConn,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    ) {
        let key = (framework_id, executor_id);
        let Some(e) = self.executors.get_mut(&key) else {
            self.outputs.push_back(Output::CloseExecutor { conn });
            return;
        };
        // A re-subscription (its stream broke, or the agent restarted) may
        // have lost a launch in flight: tasks it never reported on are sent
        // again (executors ignore a launch of a task they already run).
        let resubscribed = e.state != ExecState::Launching;
        if let ExecState::Running(old) = e.state
            && old != conn
        {
            self.exec_conns.remove(&old);
            self.outputs.push_back(Output::CloseExecutor { conn: old });
        }
        e.state = ExecState::Running(conn);
        e.registration_deadline = None;
        self.exec_conns.insert(conn, key.clone());
        let framework = self.frameworks.get(&key.0).cloned();
        let Some(framework) = framework else {
            return;
        };
        let mut launches = Vec::new();
        for t in e
            .tasks
            .values_mut()
            .filter(|t| t.queued || (resubscribed && t.state == TaskState::Staging))
        {
            t.queued = false;
            launches.push(t.info.clone());
        }
        for task in launches {
            self.outputs.push_back(Output::ToExecutor {
                conn,
                command: ExecutorCommand::Launch {
                    task,
                    framework: framework.clone(),
                },
            });
        }
    }

    fn executor_update(
        &mut self,
        now: Time,
        conn: ExecConn,
        mut status: TaskStatus,
        limitation: Option<Limitation>,
    ) {
        let Some(key) = self.exec_conns.get(&conn).cloned() else {
            return;
        };
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        // Not this executor's task, or its framework was removed (nobody
        // will hear of it): acknowledged so the executor does not wait
        // forever, and otherwise ignored.
        let task = e
            .tasks
            .get_mut(&status.task_id)
            .filter(|_| !self.removed.contains(&key.0));
        let Some(task) = task else {
            if let Some(uuid) = status.uuid {
                self.outputs.push_back(Output::ToExecutor {
                    conn,
                    command: ExecutorCommand::Acknowledged {
                        task_id: status.task_id,
                        uuid,
                    },
                });
            }
            return;
        };
        // An update the agent accepted before it restarted, re-sent because
        // its acknowledgement to the executor was lost: acknowledged again,
        // not queued twice.
        if let Some(u) = status.uuid
            && (task.last_uuid == Some(u) || self.updates.is_queued(&key.0, &status.task_id, u))
        {
            self.outputs.push_back(Output::ToExecutor {
                conn,
                command: ExecutorCommand::Acknowledged {
                    task_id: status.task_id,
                    uuid: u,
                },
            });
            return;
        }
        let uuid = match status.uuid {
            Some(u) => u,
            None => {
                let u = StatusUuid(self.rng.random());
                status.uuid = Some(u);
                u
            }
        };
        status.agent_id = self.agent_id.clone();
        status.executor_id = Some(key.1.clone());
        // A task that ended because its container hit a limit failed for
        // that reason, whatever the executor saw (a SIGKILL).
        if let Some(l) = limitation
            && status.state.is_terminal()
            && status.state != TaskState::Finished
        {
            status.state = TaskState::Failed;
            status.reason = Some(l.reason);
            status.message = l.message;
        }
        if status.timestamp == Time::ZERO {
            status.timestamp = now;
        }
        let valid = task.state.transition(status.state).is_ok();
        if valid {
            task.state = status.state;
            task.last_uuid = Some(uuid);
        }
        if valid && status.state.is_terminal() && e.custom && e.tasks.len() > 1 {
            let resources = live_resources(e);
            if !resources.is_empty() {
                self.outputs.push_back(Output::UpdateContainer {
                    container_id: e.container_id.clone(),
                    resources,
                });
            }
        }
        let task_id = status.task_id.clone();
        // Recorded (with the checkpoint) before the executor hears that the
        // agent has it.
        if valid {
            self.enqueue(now, &key.0, status);
        }
        self.outputs.push_back(Output::ToExecutor {
            conn,
            command: ExecutorCommand::Acknowledged { task_id, uuid },
        });
    }

    fn find_task(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
    ) -> Option<(FrameworkId, ExecutorId)> {
        // Command tasks: the executor is named after the task.
        let direct = (framework_id.clone(), ExecutorId::new(task_id.as_str()));
        if self
            .executors
            .get(&direct)
            .is_some_and(|e| e.tasks.contains_key(task_id))
        {
            return Some(direct);
        }
        self.executors
            .iter()
            .find(|((fw, _), e)| fw == framework_id && e.tasks.contains_key(task_id))
            .map(|(k, _)| k.clone())
    }

    /// The grace period is the kill call's, else the task's kill policy's,
    /// else the agent's default.
    fn kill_task(
        &mut self,
        now: Time,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        grace: Option<Duration>,
    ) {
        // A removed framework's executors are already being destroyed.
        if self.removed.contains(framework_id) {
            return;
        }
        let Some(key) = self.find_task(framework_id, task_id) else {
            if self
                .finished
                .contains_key(&(framework_id.clone(), task_id.clone()))
            {
                return;
            }
            // The master thinks the task is here; it is not (its launch was
            // lost). Say so, reliably.
            let executor_id = ExecutorId::new(task_id.as_str());
            self.agent_update(
                now,
                (framework_id, &executor_id, task_id),
                Ending {
                    state: TaskState::Lost,
                    reason: Reason::TaskUnknown,
                    message: "The agent does not know this task".into(),
                },
            );
            return;
        };
        let escalation = self.config.kill_escalation;
        let default_grace = self.config.default_kill_grace;
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        let Some(task) = e.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        let grace = grace
            .or(task.info.kill_policy.grace_period)
            .unwrap_or(default_grace);
        task.kill_requested = true;
        if task.queued {
            // Never reached its executor: it ends here.
            task.queued = false;
            task.state = TaskState::Killed;
            let only_task = e.tasks.values().all(|t| t.state.is_terminal());
            let executor_id = key.1.clone();
            self.agent_update(
                now,
                (framework_id, &executor_id, task_id),
                Ending {
                    state: TaskState::Killed,
                    reason: Reason::TaskKilledDuringLaunch,
                    message: "Killed before the executor started it".into(),
                },
            );
            if only_task {
                self.shutdown_executor(now, &key);
            }
            return;
        }
        // A command executor runs one task: if the task outlives its grace,
        // the container goes. A framework's executor runs others too; it
        // is asked, and answers for the task itself.
        if !e.custom {
            let deadline = now + grace + escalation;
            e.destroy_at = Some(e.destroy_at.map_or(deadline, |d| d.min(deadline)));
        }
        if let ExecState::Running(conn) = e.state {
            self.outputs.push_back(Output::ToExecutor {
                conn,
                command: ExecutorCommand::Kill {
                    task_id: task_id.clone(),
                    grace,
                },
            });
        }
    }

    fn shutdown_executor(&mut self, now: Time, key: &(FrameworkId, ExecutorId)) {
        let grace = self.config.executor_shutdown_grace;
        let escalation = self.config.kill_escalation;
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        for t in e.tasks.values_mut() {
            t.kill_requested = true;
        }
        match e.state {
            ExecState::Running(conn) => {
                self.outputs.push_back(Output::ToExecutor {
                    conn,
                    command: ExecutorCommand::Shutdown { grace },
                });
                let deadline = now + grace + escalation;
                e.destroy_at = Some(e.destroy_at.map_or(deadline, |d| d.min(deadline)));
            }
            ExecState::Launching | ExecState::Disconnected => {
                e.destroy_at = Some(now);
                if !e.destroy_sent {
                    e.destroy_sent = true;
                    self.outputs.push_back(Output::Destroy {
                        container_id: e.container_id.clone(),
                    });
                }
            }
        }
    }

    fn shutdown_framework(&mut self, now: Time, framework_id: &FrameworkId) {
        self.outputs
            .push_back(Output::Checkpoint(Checkpoint::FrameworkRemoved {
                framework_id: framework_id.clone(),
            }));
        self.forget_framework(framework_id);
        let keys: Vec<_> = self
            .executors
            .keys()
            .filter(|(fw, _)| fw == framework_id)
            .cloned()
            .collect();
        for key in keys {
            self.shutdown_executor(now, &key);
        }
    }

    /// The framework is removed: none of its updates are sent any more.
    fn forget_framework(&mut self, framework_id: &FrameworkId) {
        self.removed.insert(framework_id.clone());
        self.updates.drop_framework(framework_id);
        self.finished.retain(|(fw, _), _| fw != framework_id);
        if !self.executors.keys().any(|(fw, _)| fw == framework_id) {
            self.frameworks.remove(framework_id);
        }
    }

    /// An executor is gone: its tasks whose updates are unacknowledged are
    /// remembered for re-registration until they are.
    fn remember_finished(
        &mut self,
        key: &(FrameworkId, ExecutorId),
        tasks: BTreeMap<TaskId, TaskRecord>,
    ) {
        let (framework_id, executor_id) = key;
        for (task_id, t) in tasks {
            if self.updates.has_stream(framework_id, &task_id) {
                self.finished.insert(
                    (framework_id.clone(), task_id),
                    TaskReport {
                        framework_id: framework_id.clone(),
                        executor_id: executor_id.clone(),
                        container_id: None,
                        task: t.info,
                        state: t.state,
                    },
                );
            }
        }
        if self.removed.contains(framework_id)
            && !self.executors.keys().any(|(fw, _)| fw == framework_id)
        {
            self.frameworks.remove(framework_id);
        }
    }

    fn container_exited(
        &mut self,
        now: Time,
        container_id: &ContainerId,
        termination: &Termination,
    ) {
        let Some(key) = self.containers.remove(container_id) else {
            return;
        };
        let Some(e) = self.executors.remove(&key) else {
            return;
        };
        if let ExecState::Running(conn) = e.state {
            self.exec_conns.remove(&conn);
            self.outputs.push_back(Output::CloseExecutor { conn });
        }
        // Whatever is left of the container goes (processes it leaked).
        if !e.destroy_sent {
            self.outputs.push_back(Output::Destroy {
                container_id: container_id.clone(),
            });
        }
        let (framework_id, executor_id) = key.clone();
        let mut tasks = e.tasks;
        for (task_id, t) in &mut tasks {
            if !t.state.is_terminal() {
                let (new_state, reason, message) = if let Some(f) = &e.failure {
                    (f.state, f.reason, f.message.clone())
                } else if termination.reason == Some(Reason::AgentRestarted)
                    && t.state == TaskState::Staging
                {
                    (
                        TaskState::Lost,
                        Reason::AgentRestarted,
                        "The agent restarted before the task started".to_string(),
                    )
                } else if t.kill_requested && termination.reason.is_none() {
                    (
                        TaskState::Killed,
                        Reason::ExecutorTerminated,
                        "Task killed".to_string(),
                    )
                } else {
                    (
                        TaskState::Failed,
                        termination.reason.unwrap_or(Reason::ExecutorTerminated),
                        termination.describe(),
                    )
                };
                t.state = new_state;
                self.agent_update(
                    now,
                    (&framework_id, &executor_id, task_id),
                    Ending {
                        state: new_state,
                        reason,
                        message,
                    },
                );
            }
        }
        self.outputs
            .push_back(Output::Checkpoint(Checkpoint::ContainerEnded {
                container_id: container_id.clone(),
            }));
        self.remember_finished(&key, tasks);
    }
}

/// The resources of an executor's tasks that have not ended.
fn live_resources(e: &Executor) -> Resources {
    let mut r = Resources::new();
    for t in e.tasks.values().filter(|t| !t.state.is_terminal()) {
        r.add(&t.info.resources);
    }
    r
}

#[cfg(test)]
mod tests;
