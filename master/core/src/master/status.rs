//! Status updates: from agents (reliable, acknowledged by the framework) and
//! from the master itself (unreliable, never acknowledged).

use cairn_model::{FrameworkId, TaskId, TaskStatus, Time};

use super::Master;
use crate::{AgentCommand, ConnId, Observed};

impl Master {
    pub(super) fn agent_status_update(
        &mut self,
        now: Time,
        conn: ConnId,
        framework_id: FrameworkId,
        mut status: TaskStatus,
    ) {
        let Some(agent_id) = self.agent_conns.get(&conn).cloned() else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.last_seen = now;
        }
        // An agent speaks only for itself.
        if status.agent_id.as_ref().is_some_and(|a| a != &agent_id) {
            self.counters.status_updates_refused += 1;
            return;
        }
        status.agent_id = Some(agent_id.clone());
        self.counters.status_updates += 1;

        if !self.frameworks.contains_key(&framework_id) {
            // Removed (or never known): the agent must stop retrying and
            // clean up what the framework left there.
            self.send_agent(&agent_id, AgentCommand::ShutdownFramework { framework_id });
            return;
        }
        let on_other_agent = self
            .frameworks
            .get(&framework_id)
            .and_then(|f| f.tasks.get(&status.task_id))
            .is_some_and(|t| t.info.agent_id != agent_id);
        if on_other_agent {
            self.counters.status_updates_refused += 1;
            return;
        }
        let task_id = status.task_id.clone();
        let known = self
            .frameworks
            .get(&framework_id)
            .is_some_and(|f| f.tasks.contains_key(&task_id));
        let superseded = status.uuid.is_some()
            && !status.state.is_terminal()
            && self
                .frameworks
                .get(&framework_id)
                .and_then(|f| f.tasks.get(&task_id))
                .is_some_and(|t| t.state.is_terminal());
        if let (true, Some(uuid)) = (superseded, status.uuid) {
            // A re-sent live update of a task known to have ended (its end
            // reached this master first, with the agent's re-registration).
            // Relayed, it would tell the framework a finished task runs
            // again; the master acknowledges it for the framework instead,
            // and the agent goes on to send the end itself.
            self.counters.status_updates_superseded += 1;
            self.send_agent(
                &agent_id,
                AgentCommand::Acknowledge {
                    framework_id,
                    task_id,
                    uuid,
                },
            );
            return;
        }
        if known {
            // An invalid transition (a re-sent update after a newer one, say)
            // changes nothing here but is still relayed, so the framework can
            // acknowledge it and the agent stops re-sending.
            if !self.apply_to_task(now, &framework_id, &task_id, &status)
                && let Some(task) = self
                    .frameworks
                    .get_mut(&framework_id)
                    .and_then(|f| f.tasks.get_mut(&task_id))
                && task.state.is_terminal()
                && task.state == status.state
                && task.terminal_uuid.is_none()
            {
                // Adopted already ended (re-registration): this is the
                // agent's own copy of that end, and its acknowledgement
                // completes the task.
                task.terminal_uuid = status.uuid;
            }
            if status.uuid.is_none()
                && self
                    .frameworks
                    .get(&framework_id)
                    .and_then(|f| f.tasks.get(&task_id))
                    .is_some_and(|t| t.state.is_terminal())
            {
                self.complete_task(&framework_id, &task_id);
            }
        }
        self.send_update(&framework_id, status);
    }

    /// Applies `status` to a tracked task. When the task becomes terminal its
    /// resources return to the pool at once (before the acknowledgement), and
    /// an allocation over its agent is asked for. Returns whether the status
    /// was a valid transition.
    pub(super) fn apply_to_task(
        &mut self,
        now: Time,
        fw: &FrameworkId,
        task_id: &TaskId,
        status: &TaskStatus,
    ) -> bool {
        let max = self.config.max_statuses_per_task;
        let Some(task) = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(task_id))
        else {
            return false;
        };
        let was_terminal = task.state.is_terminal();
        let before = task.state;
        if task.apply(status, max).is_err() {
            self.counters.invalid_transitions += 1;
            return false;
        }
        if task.state != before {
            let agent_id = task.info.agent_id.clone();
            self.observe(Observed::TaskUpdated {
                framework_id: fw.clone(),
                agent_id,
                status: status.clone(),
            });
        }
        let Some(task) = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.tasks.get_mut(task_id))
        else {
            return true;
        };
        if !was_terminal && task.state.is_terminal() {
            let agent_id = task.info.agent_id.clone();
            let resources = task.info.resources.clone();
            let role = task.role.clone();
            *self.counters.tasks_terminal.entry(task.state).or_default() += 1;
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.used = agent.used.saturating_sub(&resources);
            }
            self.allocator
                .recover(&agent_id, fw, &role, &resources, None);
            self.allocate_soon(now, Some(&agent_id));
        }
        true
    }

    /// A status the master makes itself (LOST, DROPPED, ...): applied, sent,
    /// and, having no uuid, never acknowledged, so a terminal one completes
    /// the task at once.
    pub(super) fn master_task_update(&mut self, now: Time, fw: &FrameworkId, status: TaskStatus) {
        let task_id = status.task_id.clone();
        self.apply_to_task(now, fw, &task_id, &status);
        let terminal = self
            .frameworks
            .get(fw)
            .and_then(|f| f.tasks.get(&task_id))
            .is_some_and(|t| t.state.is_terminal());
        if terminal {
            self.complete_task(fw, &task_id);
        }
        self.send_update(fw, status);
    }

    /// Moves a task to its framework's completed list. A task still live
    /// (only when its framework or agent disappears) gives its resources
    /// back first.
    pub(super) fn complete_task(&mut self, fw: &FrameworkId, task_id: &TaskId) {
        let max_completed = self.config.max_completed_tasks_per_framework;
        let Some(framework) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(task) = framework.tasks.remove(task_id) else {
            return;
        };
        let agent_id = task.info.agent_id.clone();
        if !task.state.is_terminal() {
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.used = agent.used.saturating_sub(&task.info.resources);
            }
            self.allocator
                .recover(&agent_id, fw, &task.role, &task.info.resources, None);
        }
        framework.completed.push_back(task);
        while framework.completed.len() > max_completed {
            framework.completed.pop_front();
        }
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.tasks.remove(&(fw.clone(), task_id.clone()));
        }
    }
}
