//! Read-only snapshots of the master's state, for `/state`, the CLI and
//! tests. Building one copies what it shows; the core is not borrowed after.

use std::collections::BTreeMap;

use cairn_model::{
    AgentId, AgentInfo, ExecutorId, ExecutorUsage, FrameworkId, FrameworkInfo, Offer, Resources,
    Role, TaskId, TaskState, Time,
};

use crate::task::StatusRecord;

/// Monotonic counts of what the master has done, for metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub agents_registered: u64,
    pub agents_reregistered: u64,
    pub agents_returned_from_unreachable: u64,
    pub agents_unreachable: u64,
    pub frameworks_subscribed: u64,
    pub frameworks_resubscribed: u64,
    pub frameworks_removed: u64,
    pub offers_sent: u64,
    pub offers_accepted: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
    pub offers_expired: u64,
    pub tasks_launched: u64,
    pub task_errors: u64,
    pub tasks_dropped_invalid_offers: u64,
    pub tasks_terminal: BTreeMap<TaskState, u64>,
    pub status_updates: u64,
    pub status_updates_refused: u64,
    /// Re-sent non-terminal updates of a task already known ended,
    /// acknowledged by the master for the framework (see `status.rs`).
    pub status_updates_superseded: u64,
    pub invalid_transitions: u64,
    /// Subscriptions refused by authorization.
    pub subscriptions_refused: u64,
    pub acknowledgements: u64,
    pub kills: u64,
    pub calls: u64,
    pub allocation_cycles: u64,
    pub recovered_agents: u64,
    pub agent_removals_delayed: u64,
}

#[derive(Clone, Debug)]
pub struct TaskView {
    pub id: TaskId,
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub role: Role,
    pub state: TaskState,
    pub resources: Resources,
    pub statuses: Vec<StatusRecord>,
    /// The message of the newest status, if any.
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    /// The framework's executor that runs it; none for a command task
    /// (which has one of its own, named after it).
    pub executor_id: Option<ExecutorId>,
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct AgentView {
    pub id: AgentId,
    pub info: AgentInfo,
    pub registered_at: Time,
    pub connected: bool,
    pub last_seen: Time,
    pub used: Resources,
    pub offered: Resources,
    pub task_count: usize,
    pub usage: Vec<ExecutorUsage>,
}

#[derive(Clone, Debug)]
pub struct UnreachableAgentView {
    pub id: AgentId,
    pub info: AgentInfo,
    pub since: Time,
}

#[derive(Clone, Debug)]
pub struct FrameworkView {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
    pub connected: bool,
    pub registered_at: Time,
    pub reregistered_at: Option<Time>,
    /// When it disconnected (connected frameworks: none).
    pub disconnected_since: Option<Time>,
    /// When its failover timeout ends (connected frameworks: none).
    pub failover_deadline: Option<Time>,
    /// Removed frameworks: when.
    pub removed_at: Option<Time>,
    pub tasks: Vec<TaskView>,
    pub unreachable_tasks: Vec<TaskView>,
    pub completed_tasks: Vec<TaskView>,
    pub offers: Vec<Offer>,
    pub used: Resources,
    pub offered: Resources,
    pub suppressed_roles: Vec<Role>,
}

#[derive(Clone, Debug)]
pub struct StateSnapshot {
    pub master_id: String,
    pub start_time: Time,
    pub agents: Vec<AgentView>,
    pub unreachable_agents: Vec<UnreachableAgentView>,
    pub frameworks: Vec<FrameworkView>,
    pub completed_frameworks: Vec<FrameworkView>,
    pub counters: Counters,
}

/// Cheap totals for metrics, without copying tasks.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub agents_connected: usize,
    pub agents_disconnected: usize,
    pub agents_unreachable: usize,
    pub frameworks_connected: usize,
    pub frameworks_disconnected: usize,
    pub frameworks_completed: usize,
    pub outstanding_offers: usize,
    pub tasks_by_state: BTreeMap<TaskState, u64>,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    pub counters: Counters,
}
