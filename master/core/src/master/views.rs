//! Snapshots for views (see [`crate::view`]).

use cairn_model::{Resources, Time};

use super::{Framework, FrameworkConn, Master};
use crate::task::Task;
use crate::view::{
    AgentView, FrameworkView, StateSnapshot, Summary, TaskView, UnreachableAgentView,
};

fn task_view(t: &Task) -> TaskView {
    TaskView {
        id: t.info.task_id.clone(),
        name: t.info.name.clone(),
        framework_id: t.framework_id.clone(),
        agent_id: t.info.agent_id.clone(),
        role: t.role.clone(),
        state: t.state,
        resources: t.info.resources.clone(),
        statuses: t.statuses.clone(),
        message: t.latest.as_ref().map(|s| s.message.clone()),
        exit_code: t.latest.as_ref().and_then(|s| s.exit_code),
        executor_id: t.info.executor.as_ref().map(|e| e.executor_id.clone()),
        labels: t.info.labels.clone(),
    }
}

impl Master {
    fn framework_view(&self, f: &Framework) -> FrameworkView {
        let mut used = Resources::new();
        for t in f.tasks.values().filter(|t| !t.state.is_terminal()) {
            used.add(&t.info.resources);
        }
        let offers: Vec<_> = f
            .offers
            .iter()
            .filter_map(|id| self.offers.get(id).map(|r| r.offer.clone()))
            .collect();
        let mut offered = Resources::new();
        for o in &offers {
            offered.add(&o.resources);
        }
        let (disconnected_since, failover_deadline) = match f.conn {
            FrameworkConn::Connected { .. } => (None, None),
            FrameworkConn::Disconnected { since, deadline } => (Some(since), Some(deadline)),
        };
        FrameworkView {
            id: f.id.clone(),
            info: f.info.clone(),
            connected: f.conn().is_some(),
            registered_at: f.registered_at,
            reregistered_at: f.reregistered_at,
            disconnected_since,
            failover_deadline,
            removed_at: None,
            tasks: f.tasks.values().map(task_view).collect(),
            unreachable_tasks: f.unreachable_tasks.values().map(task_view).collect(),
            completed_tasks: f.completed.iter().map(task_view).collect(),
            offers,
            used,
            offered,
            suppressed_roles: f
                .info
                .roles
                .iter()
                .filter(|r| self.allocator.is_suppressed(&f.id, r))
                .cloned()
                .collect(),
        }
    }

    /// A copy of everything `/state` shows.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            master_id: self.master_id.clone(),
            start_time: self.start_time,
            agents: self
                .agents
                .values()
                .map(|a| AgentView {
                    id: a.id.clone(),
                    info: a.info.clone(),
                    registered_at: a.registered_at,
                    connected: a.conn.is_some(),
                    last_seen: a.last_seen,
                    used: a.used.clone(),
                    offered: a.offered.clone(),
                    task_count: a.tasks.len(),
                    usage: a.usage.clone(),
                })
                .collect(),
            unreachable_agents: self
                .unreachable
                .iter()
                .map(|(id, u)| UnreachableAgentView {
                    id: id.clone(),
                    info: u.info.clone(),
                    since: u.since,
                })
                .collect(),
            frameworks: self
                .frameworks
                .values()
                .map(|f| self.framework_view(f))
                .collect(),
            completed_frameworks: self
                .completed_frameworks
                .iter()
                .map(|c| FrameworkView {
                    id: c.id.clone(),
                    info: c.info.clone(),
                    connected: false,
                    registered_at: c.registered_at,
                    reregistered_at: None,
                    disconnected_since: None,
                    failover_deadline: None,
                    removed_at: Some(c.removed_at),
                    tasks: Vec::new(),
                    unreachable_tasks: Vec::new(),
                    completed_tasks: c.completed.iter().map(task_view).collect(),
                    offers: Vec::new(),
                    used: Resources::new(),
                    offered: Resources::new(),
                    suppressed_roles: Vec::new(),
                })
                .collect(),
            counters: self.counters.clone(),
        }
    }

    /// Totals for metrics; cheaper than [`Master::snapshot`].
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            agents_unreachable: self.unreachable.len(),
            frameworks_completed: self.completed_frameworks.len(),
            outstanding_offers: self.offers.len(),
            counters: self.counters.clone(),
            ..Summary::default()
        };
        for a in self.agents.values() {
            if a.conn.is_some() {
                s.agents_connected += 1;
            } else {
                s.agents_disconnected += 1;
            }
            s.total.add(&a.info.resources);
            s.used.add(&a.used);
            s.offered.add(&a.offered);
        }
        for f in self.frameworks.values() {
            if f.conn().is_some() {
                s.frameworks_connected += 1;
            } else {
                s.frameworks_disconnected += 1;
            }
            for t in f.tasks.values().chain(f.unreachable_tasks.values()) {
                *s.tasks_by_state.entry(t.state).or_default() += 1;
            }
        }
        s
    }

    pub fn start_time(&self) -> Time {
        self.start_time
    }
}
