use std::collections::BTreeMap;
use std::time::Duration;

use cairn_model::Role;

/// The master's tunables. Defaults follow Mesos where Mesos has one, shortened
/// where Mesos's suits only large, slow clusters.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Period of the full allocation cycle. A cycle over the agents whose
    /// resources were freed also runs right after such an event.
    pub allocation_interval: Duration,
    /// An agent not heard from for this long is marked unreachable.
    pub agent_ping_timeout: Duration,
    /// How often agents are asked to heartbeat.
    pub agent_heartbeat_interval: Duration,
    /// Outstanding offers are rescinded after this long (none: never).
    pub offer_timeout: Option<Duration>,
    /// Period of HEARTBEAT events to frameworks.
    pub framework_heartbeat_interval: Duration,
    /// Weights of roles; a role not listed weighs 1.
    pub role_weights: BTreeMap<Role, f64>,
    /// Completed tasks kept per framework for views and reconciliation.
    pub max_completed_tasks_per_framework: usize,
    /// Removed frameworks kept for views (and to refuse their ids).
    pub max_completed_frameworks: usize,
    /// Unreachable agents remembered, oldest dropped first.
    pub max_unreachable_agents: usize,
    /// Status transitions kept per task.
    pub max_statuses_per_task: usize,
    /// How long a framework known only from agents' reports (after a master
    /// restart) is kept at least, waiting for it to re-subscribe.
    pub framework_recovery_grace: Duration,
    /// After a failover, how long admitted agents have to re-register before
    /// they are marked unreachable.
    pub agent_reregister_timeout: Duration,
    /// At most this many agents marked unreachable per period (none: no
    /// limit), so a bad failover cannot remove the whole cluster at once.
    pub agent_removal_rate: Option<(u32, Duration)>,
    /// Who may do what (none: no authorization, every caller may do all).
    /// The doors authenticate callers; the core authorizes their actions.
    pub acls: Option<cairn_model::auth::Acls>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            allocation_interval: Duration::from_secs(1),
            agent_ping_timeout: Duration::from_secs(15),
            agent_heartbeat_interval: Duration::from_secs(3),
            offer_timeout: None,
            framework_heartbeat_interval: Duration::from_secs(15),
            role_weights: BTreeMap::new(),
            max_completed_tasks_per_framework: 1000,
            max_completed_frameworks: 50,
            max_unreachable_agents: 1000,
            max_statuses_per_task: 16,
            framework_recovery_grace: Duration::from_secs(120),
            agent_reregister_timeout: Duration::from_secs(120),
            agent_removal_rate: None,
            acls: None,
        }
    }
}
