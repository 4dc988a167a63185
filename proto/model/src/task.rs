use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{AgentId, ExecutorId, Resources, StatusUuid, TaskId, Time};

/// The lifecycle of a task, as Mesos defines it.
///
/// ```text
///   STAGING -> STARTING -> RUNNING -> KILLING -> (terminal)
///      \_________\___________\__________\_____> FINISHED | FAILED | KILLED | ERROR
///                                               | LOST | DROPPED | GONE | GONE_BY_OPERATOR
///   any non-terminal <-> UNREACHABLE (agent partitioned; it may come back)
/// ```
/// STAGING is the master's state between a valid launch and the first update
/// from the agent. UNKNOWN is only ever an answer to reconciliation, never a
/// state a task is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

/// A task state change that the lifecycle does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("invalid task state transition {from} -> {to}")]
pub struct InvalidTransition {
    pub from: TaskState,
    pub to: TaskState,
}

impl TaskState {
    pub const ALL: [TaskState; 14] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Error,
        TaskState::Lost,
        TaskState::Dropped,
        TaskState::Unreachable,
        TaskState::Gone,
        TaskState::GoneByOperator,
        TaskState::Unknown,
    ];

    /// A terminal state is final: the task's resources are free again and no
    /// later state is accepted.
    pub fn is_terminal(self) -> bool {
        use TaskState::*;
        match self {
            Finished | Failed | Killed | Error | Lost | Dropped | Gone | GoneByOperator => true,
            Staging | Starting | Running | Killing | Unreachable | Unknown => false,
        }
    }

    /// The state after an update reporting `to`, or why that update is not a
    /// valid next step. Repeating a non-terminal state (a re-sent update, a
    /// health change while RUNNING) is valid and changes nothing.
    pub fn transition(self, to: TaskState) -> Result<TaskState, InvalidTransition> {
        use TaskState::*;
        let invalid = Err(InvalidTransition { from: self, to });
        match (self, to) {
            // Terminal states are final.
            (Finished | Failed | Killed | Error | Lost | Dropped | Gone | GoneByOperator, _) => {
                invalid
            }
            // UNKNOWN is an answer, not a state; nothing goes back to STAGING.
            (Unknown, _) | (_, Unknown | Staging) => invalid,
            // Any live task may end, be killed, or become unreachable.
            (
                Staging | Starting | Running | Killing | Unreachable,
                Finished | Failed | Killed | Error | Lost | Dropped | Gone | GoneByOperator
                | Killing | Unreachable,
            ) => Ok(to),
            (Staging | Starting | Unreachable, Starting) => Ok(to),
            (Running | Killing, Starting) => invalid,
            (Staging | Starting | Running | Unreachable, Running) => Ok(to),
            (Killing, Running) => invalid,
        }
    }

    /// The state named `s` (`TASK_RUNNING`), if any.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// The Mesos name, e.g. `TASK_RUNNING`.
    pub fn as_str(self) -> &'static str {
        use TaskState::*;
        match self {
            Staging => "TASK_STAGING",
            Starting => "TASK_STARTING",
            Running => "TASK_RUNNING",
            Killing => "TASK_KILLING",
            Finished => "TASK_FINISHED",
            Failed => "TASK_FAILED",
            Killed => "TASK_KILLED",
            Error => "TASK_ERROR",
            Lost => "TASK_LOST",
            Dropped => "TASK_DROPPED",
            Unreachable => "TASK_UNREACHABLE",
            Gone => "TASK_GONE",
            GoneByOperator => "TASK_GONE_BY_OPERATOR",
            Unknown => "TASK_UNKNOWN",
        }
    }

    pub fn from_name(name: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who produced a status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "SOURCE_MASTER")]
    Master,
    #[serde(rename = "SOURCE_AGENT")]
    Agent,
    #[serde(rename = "SOURCE_EXECUTOR")]
    Executor,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Master => "SOURCE_MASTER",
            Source::Agent => "SOURCE_AGENT",
            Source::Executor => "SOURCE_EXECUTOR",
        }
    }
}

macro_rules! reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// Why a task reached its state (Mesos's `REASON_*`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Reason {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
    ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
    ContainerLimitation => "REASON_CONTAINER_LIMITATION",
    ContainerLimitationDisk => "REASON_CONTAINER_LIMITATION_DISK",
    ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
    ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
    FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
    InvalidOffers => "REASON_INVALID_OFFERS",
    Reconciliation => "REASON_RECONCILIATION",
    AgentDisconnected => "REASON_AGENT_DISCONNECTED",
    AgentRemoved => "REASON_AGENT_REMOVED",
    AgentRestarted => "REASON_AGENT_RESTARTED",
    AgentUnknown => "REASON_AGENT_UNKNOWN",
    TaskInvalid => "REASON_TASK_INVALID",
    TaskUnauthorized => "REASON_TASK_UNAUTHORIZED",
    TaskUnknown => "REASON_TASK_UNKNOWN",
    TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
    MaxCompletionTimeReached => "REASON_MAX_COMPLETION_TIME_REACHED",
    AgentReregistered => "REASON_AGENT_REREGISTERED",
    ExecutorRegistrationTimeout => "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
    TaskHealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
    ContainerLimitationPids => "REASON_CONTAINER_LIMITATION_PIDS",
    ExecutorReregistrationTimeout => "REASON_EXECUTOR_REREGISTRATION_TIMEOUT",
}

/// One status update of a task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    pub message: String,
    pub source: Source,
    pub reason: Option<Reason>,
    pub agent_id: Option<AgentId>,
    pub executor_id: Option<ExecutorId>,
    pub timestamp: Time,
    /// Set on updates that must be acknowledged (from agents and executors).
    pub uuid: Option<StatusUuid>,
    /// The command's exit status, when it exited on its own.
    pub exit_code: Option<i32>,
    pub healthy: Option<bool>,
}

impl TaskStatus {
    /// An executor's update of `task_id` at `now` (its uuid, agent and
    /// executor are filled in on the way).
    pub fn from_executor(
        task_id: TaskId,
        state: TaskState,
        message: impl Into<String>,
        now: Time,
    ) -> Self {
        TaskStatus {
            task_id,
            state,
            message: message.into(),
            source: Source::Executor,
            reason: None,
            agent_id: None,
            executor_id: None,
            timestamp: now,
            uuid: None,
            exit_code: None,
            healthy: None,
        }
    }

    /// A master-made update: no uuid, never acknowledged.
    pub fn from_master(
        task_id: TaskId,
        state: TaskState,
        reason: Reason,
        message: impl Into<String>,
        agent_id: Option<AgentId>,
        now: Time,
    ) -> Self {
        TaskStatus {
            task_id,
            state,
            message: message.into(),
            source: Source::Master,
            reason: Some(reason),
            agent_id,
            executor_id: None,
            timestamp: now,
            uuid: None,
            exit_code: None,
            healthy: None,
        }
    }
}

/// How to run a task's command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandInfo {
    /// Run `sh -c value` (default), or exec `value` with `arguments`.
    pub shell: bool,
    pub value: String,
    /// argv when `shell` is false (argv[0] first).
    pub arguments: Vec<String>,
    pub environment: Vec<(String, String)>,
    /// Unix user to run as; `None` means the framework's user.
    pub user: Option<String>,
}

/// Environment variable names tasks and executors may not set.
pub const RESERVED_ENV_PREFIX: &str = "CAIRN_";

/// Largest command, argument list or environment accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;

impl CommandInfo {
    pub fn shell(value: impl Into<String>) -> Self {
        CommandInfo {
            shell: true,
            value: value.into(),
            ..CommandInfo::default()
        }
    }

    /// Why this command cannot be run, if it cannot. Checked by the master
    /// before launch and by the agent again before exec.
    pub fn problem(&self) -> Option<String> {
        if self.value.trim().is_empty() {
            return Some(if self.shell {
                "the command is empty".to_string()
            } else {
                "the program to execute is empty".to_string()
            });
        }
        let bytes = self.value.len()
            + self.arguments.iter().map(String::len).sum::<usize>()
            + self
                .environment
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if bytes > MAX_COMMAND_BYTES {
            return Some(format!(
                "command, arguments and environment exceed {MAX_COMMAND_BYTES} bytes"
            ));
        }
        if self.value.contains('\0') || self.arguments.iter().any(|a| a.contains('\0')) {
            return Some("the command contains a NUL byte".to_string());
        }
        for (k, v) in &self.environment {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Some(format!("invalid environment variable name {k:?}"));
            }
            // The agent tells its containers' first processes (shims,
            // executors) what to do through these: a task or executor
            // command may not set them.
            if k.starts_with(RESERVED_ENV_PREFIX) {
                return Some(format!(
                    "environment variable {k:?}: names starting with {RESERVED_ENV_PREFIX} are reserved for the agent"
                ));
            }
        }
        if let Some(u) = &self.user
            && (u.is_empty() || u.contains('\0') || u.contains('/'))
        {
            return Some(format!("invalid user {u:?}"));
        }
        None
    }
}

/// How a task is killed: SIGTERM, then SIGKILL after the grace period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillPolicy {
    pub grace_period: Option<Duration>,
}

/// Which network a task's processes see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Network {
    /// The host's network.
    #[default]
    Host,
    /// A network namespace of its own, with only a loopback device.
    None,
}

/// A framework's own executor: one process runs every task that names it
/// (on one agent), over the Mesos executor API.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorInfo {
    pub executor_id: ExecutorId,
    pub name: String,
    pub command: CommandInfo,
}

/// A task a framework asks to launch.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    pub task_id: TaskId,
    pub name: String,
    pub agent_id: AgentId,
    pub resources: Resources,
    /// What the command executor runs; unused when `executor` is set.
    pub command: CommandInfo,
    pub kill_policy: KillPolicy,
    pub labels: Vec<(String, String)>,
    pub network: Network,
    /// The framework's executor that runs this task instead of a command.
    pub executor: Option<ExecutorInfo>,
    /// Opaque to Cairn; handed to the executor with the task.
    pub data: Vec<u8>,
}

impl TaskInfo {
    /// What starts this task's executor: the framework's executor command,
    /// or the task's own command.
    pub fn runnable(&self) -> &CommandInfo {
        self.executor.as_ref().map_or(&self.command, |e| &e.command)
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    #[test]
    fn every_transition_from_a_terminal_state_is_rejected() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert_eq!(
                    from.transition(to),
                    Err(InvalidTransition { from, to }),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn the_normal_lifecycle_is_accepted() {
        let path = [Staging, Starting, Running, Killing, Killed];
        for w in path.windows(2) {
            assert_eq!(w[0].transition(w[1]), Ok(w[1]));
        }
        for end in [Finished, Failed, Error, Lost, Dropped, Gone, GoneByOperator] {
            for from in [Staging, Starting, Running, Killing, Unreachable] {
                assert_eq!(from.transition(end), Ok(end), "{from} -> {end}");
            }
        }
    }

    #[test]
    fn going_backwards_is_rejected() {
        for (from, to) in [
            (Running, Starting),
            (Killing, Running),
            (Killing, Starting),
            (Running, Staging),
            (Starting, Staging),
            (Staging, Staging),
            (Running, Unknown),
            (Unknown, Running),
        ] {
            assert!(from.transition(to).is_err(), "{from} -> {to} accepted");
        }
    }

    #[test]
    fn an_unreachable_task_can_come_back() {
        assert_eq!(Running.transition(Unreachable), Ok(Unreachable));
        assert_eq!(Unreachable.transition(Running), Ok(Running));
        assert_eq!(Unreachable.transition(Lost), Ok(Lost));
    }

    #[test]
    fn repeating_a_live_state_is_allowed() {
        for s in [Starting, Running, Killing, Unreachable] {
            assert_eq!(s.transition(s), Ok(s));
        }
    }

    #[test]
    fn state_names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::from_name(s.as_str()), Some(s));
        }
    }

    #[test]
    fn malformed_commands_are_found() {
        assert!(CommandInfo::shell("").problem().is_some());
        assert!(CommandInfo::shell("echo\0").problem().is_some());
        let mut c = CommandInfo::shell("true");
        c.environment.push(("A=B".into(), "x".into()));
        assert!(c.problem().is_some());
        assert!(CommandInfo::shell("true").problem().is_none());
        let mut c = CommandInfo::shell("true");
        c.environment = vec![("CAIRN_TASK_USER".into(), "root".into())];
        assert!(c.problem().is_some_and(|p| p.contains("reserved")), "{c:?}");
        c.environment = vec![("MY_CAIRN_THING".into(), "ok".into())];
        assert!(c.problem().is_none());
    }
}
