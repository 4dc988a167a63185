//! What goes into the core and what comes out of it.

use std::time::Duration;

use crate::registry::{PersistId, RegistryOp};

use cairn_model::{
    AgentId, AgentInfo, ExecutorId, ExecutorUsage, FrameworkId, FrameworkInfo, KillPolicy, Offer,
    OfferId, Role, StatusUuid, TaskId, TaskInfo, TaskState, TaskStatus,
};

/// A connection (an agent's session stream, or a framework's event stream),
/// numbered by the server. The core addresses outputs to connections, so a
/// message meant for a replaced connection never reaches the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A task an agent reports when it (re-)registers.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedTask {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub state: TaskState,
}

/// One task of a LAUNCH operation. The server converts what it can; a task
/// whose description could be read but not fully converted still reaches the
/// core, so that it is answered with TASK_ERROR naming the problem.
#[derive(Clone, Debug, PartialEq)]
pub enum LaunchRequest {
    Task(TaskInfo),
    Malformed { task_id: TaskId, reason: String },
}

/// One acknowledgement of a status update.
#[derive(Clone, Debug, PartialEq)]
pub struct Acknowledgement {
    pub agent_id: AgentId,
    pub task_id: TaskId,
    pub uuid: StatusUuid,
}

/// A framework's call, already decoded and checked for shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Accept {
        offer_ids: Vec<OfferId>,
        launches: Vec<LaunchRequest>,
        refuse: Duration,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        refuse: Duration,
    },
    /// Empty `roles`: all of the framework's roles.
    Revive {
        roles: Vec<Role>,
    },
    /// Empty `roles`: all of the framework's roles.
    Suppress {
        roles: Vec<Role>,
    },
    Kill {
        task_id: TaskId,
        agent_id: Option<AgentId>,
        kill_policy: Option<KillPolicy>,
    },
    /// Empty: every non-terminal task of the framework (implicit).
    Reconcile {
        tasks: Vec<(TaskId, Option<AgentId>)>,
    },
    Acknowledge {
        agent_id: AgentId,
        task_id: TaskId,
        uuid: StatusUuid,
    },
    /// Several acknowledgements, each handled as its own `Acknowledge`.
    AcknowledgeMany(Vec<Acknowledgement>),
    Teardown,
    /// Replace the framework's FrameworkInfo (roles, capabilities,
    /// failover timeout, ...) without re-subscribing; `suppressed_roles`
    /// states its whole suppression, as on SUBSCRIBE.
    UpdateFramework {
        info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
    },
    /// End one of the framework's executors (and its tasks) on an agent.
    Shutdown {
        executor_id: ExecutorId,
        agent_id: AgentId,
    },
    /// Opaque bytes for one of the framework's executors (best effort, as
    /// in Mesos: not retried, not acknowledged).
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// First message of an agent's session. `agent_id` is set when the agent
    /// was registered before (with this or an earlier master).
    AgentRegister {
        conn: ConnId,
        agent_id: Option<AgentId>,
        info: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
    },
    AgentHeartbeat {
        conn: ConnId,
    },
    AgentStatusUpdate {
        conn: ConnId,
        framework_id: FrameworkId,
        status: TaskStatus,
    },
    /// The agent's latest measurement of its containers.
    AgentUsage {
        conn: ConnId,
        executors: Vec<ExecutorUsage>,
    },
    /// Opaque bytes from one of a framework's executors, for the framework.
    AgentFrameworkMessage {
        conn: ConnId,
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
    /// The agent's session stream ended.
    AgentDisconnected {
        conn: ConnId,
    },
    Subscribe {
        conn: ConnId,
        info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
        /// The principal the door authenticated (none: authentication is
        /// off, or the caller gave no credentials).
        principal: Option<String>,
    },
    /// The framework's event stream ended.
    FrameworkDisconnected {
        conn: ConnId,
    },
    /// An operator tears a framework down (Mesos's `/teardown` and the
    /// operator API's TEARDOWN), as the authenticated `principal`.
    OperatorTeardown {
        framework_id: FrameworkId,
        principal: Option<String>,
    },
    Call {
        framework_id: FrameworkId,
        stream_id: String,
        call: Call,
    },
    /// The registry write `id` is durable.
    Persisted {
        id: PersistId,
    },
}

/// An event on a framework's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Subscribed {
        framework_id: FrameworkId,
        stream_id: String,
        heartbeat_interval: Duration,
    },
    Offers(Vec<Offer>),
    Rescind(OfferId),
    Update(TaskStatus),
    /// An agent was lost (`executor_id` none), or an executor exited.
    Failure {
        agent_id: AgentId,
        executor_id: Option<ExecutorId>,
        status: Option<i32>,
    },
    Error(String),
    Heartbeat,
    /// Opaque bytes from one of the framework's executors.
    Message {
        agent_id: AgentId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
}

/// A message to an agent.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCommand {
    Registered {
        agent_id: AgentId,
        heartbeat_interval: Duration,
    },
    RunTask {
        framework: FrameworkInfo,
        task: TaskInfo,
    },
    KillTask {
        framework_id: FrameworkId,
        task_id: TaskId,
        kill_policy: Option<KillPolicy>,
    },
    Acknowledge {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: StatusUuid,
    },
    /// Kill every task of the framework and forget it.
    ShutdownFramework { framework_id: FrameworkId },
    ShutdownExecutor {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
    },
    FrameworkMessage {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        data: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    ToFramework {
        conn: ConnId,
        framework_id: FrameworkId,
        event: Event,
    },
    /// End a framework's stream (replaced by a newer subscription, torn down,
    /// or refused).
    CloseFramework { conn: ConnId, reason: String },
    ToAgent {
        conn: ConnId,
        agent_id: AgentId,
        command: AgentCommand,
    },
    /// End an agent's session (replaced, or the agent was removed).
    CloseAgent { conn: ConnId, reason: String },
    /// Write `op` to the registry, in order with earlier writes, then answer
    /// `Input::Persisted { id }`. A master that cannot write must stop.
    Persist { id: PersistId, op: RegistryOp },
    /// A change operators may watch (event streams, metrics). Nothing waits
    /// for it: a server with no watcher drops it.
    Observed(Observed),
}

/// A change in the cluster, in the order the core made it: what the Mesos
/// operator `SUBSCRIBE` stream and the dashboard's event stream carry.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// A task was accepted for launch (it is staging on `agent_id`).
    TaskAdded {
        framework_id: FrameworkId,
        agent_id: AgentId,
        task: TaskInfo,
    },
    /// A task moved to `status.state`.
    TaskUpdated {
        framework_id: FrameworkId,
        agent_id: AgentId,
        status: TaskStatus,
    },
    AgentAdded {
        agent_id: AgentId,
        info: AgentInfo,
    },
    /// The agent is gone from the live set (unreachable or removed).
    AgentRemoved {
        agent_id: AgentId,
    },
    FrameworkAdded {
        framework_id: FrameworkId,
        info: FrameworkInfo,
    },
    /// A framework re-subscribed or changed its information.
    FrameworkUpdated {
        framework_id: FrameworkId,
        info: FrameworkInfo,
    },
    FrameworkRemoved {
        framework_id: FrameworkId,
    },
}
