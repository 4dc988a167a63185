//! Agents: registration, re-registration, liveness, loss.

use std::collections::BTreeSet;

use cairn_model::{
    AgentId, AgentInfo, FrameworkId, FrameworkInfo, Reason, Resources, Role, TaskId, TaskState,
    TaskStatus, Time,
};

use super::persist::Pending;
use super::{Agent, Framework, FrameworkConn, Master};
use crate::registry::RegistryOp;
use crate::task::Task;
use crate::{AgentCommand, ConnId, Event, Observed, Output, ReportedTask};

impl Master {
    pub(super) fn agent_register(
        &mut self,
        now: Time,
        conn: ConnId,
        agent_id: Option<AgentId>,
        info: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
    ) {
        if self.agent_conns.contains_key(&conn) || self.registering.contains(&conn) {
            // A session registers once; a second REGISTER on it is a protocol
            // error by the agent.
            self.outputs.push_back(Output::CloseAgent {
                conn,
                reason: "this session already registered".into(),
            });
            return;
        }
        match agent_id {
            None => {
                self.next_agent += 1;
                let id = AgentId::new(format!("{}-S{}", self.master_id, self.next_agent));
                self.registering.insert(conn);
                self.persist(
                    RegistryOp::AdmitAgent {
                        id: id.clone(),
                        info: info.clone(),
                    },
                    Pending::Admit {
                        conn,
                        id,
                        info,
                        tasks: Vec::new(),
                        frameworks: Vec::new(),
                    },
                );
            }
            Some(id) if self.agents.contains_key(&id) => {
                self.reregister_agent(now, conn, id, info, tasks, frameworks);
            }
            Some(id)
                if self.recovering.contains_key(&id) && !self.unreachable_pending.contains(&id) =>
            {
                // Admitted under an earlier leader: back in time.
                self.stop_recovering(&id);
                self.removal_queue.retain(|q| q != &id);
                self.counters.agents_reregistered += 1;
                self.admit_agent(now, Some(conn), id, info, tasks, frameworks);
            }
            Some(id) => {
                // Unreachable earlier, or unknown to this registry: admitted
                // again under its id (once durable), and its tasks adopted.
                if self.unreachable.contains_key(&id) {
                    self.counters.agents_returned_from_unreachable += 1;
                }
                self.registering.insert(conn);
                self.persist(
                    RegistryOp::AdmitAgent {
                        id: id.clone(),
                        info: info.clone(),
                    },
                    Pending::Admit {
                        conn,
                        id,
                        info,
                        tasks,
                        frameworks,
                    },
                );
            }
        }
    }

    /// Adds an admitted agent. Without a session (it ended while the
    /// admission was being persisted), the agent has until the ping timeout
    /// to come back.
    pub(super) fn admit_agent(
        &mut self,
        now: Time,
        conn: Option<ConnId>,
        id: AgentId,
        info: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
    ) {
        self.agents.insert(
            id.clone(),
            Agent {
                id: id.clone(),
                info: info.clone(),
                conn,
                last_seen: now,
                registered_at: now,
                tasks: BTreeSet::new(),
                offers: BTreeSet::new(),
                used: Resources::new(),
                offered: Resources::new(),
                usage: Vec::new(),
            },
        );
        self.allocator.add_agent(&id, info.resources.clone(), &[]);
        self.counters.agents_registered += 1;
        self.observe(Observed::AgentAdded {
            agent_id: id.clone(),
            info: info.clone(),
        });
        match conn {
            Some(conn) => {
                self.agent_conns.insert(conn, id.clone());
                self.outputs.push_back(Output::ToAgent {
                    conn,
                    agent_id: id.clone(),
                    command: AgentCommand::Registered {
                        agent_id: id.clone(),
                        heartbeat_interval: self.config.agent_heartbeat_interval,
                    },
                });
            }
            None => self.allocator.set_agent_active(&id, false),
        }
        self.adopt_tasks(now, &id, tasks, &frameworks);
        self.allocate_soon(now, Some(&id));
    }

    /// A known agent opened a new session (its connection broke, or it
    /// restarted and recovered).
    pub(super) fn reregister_agent(
        &mut self,
        now: Time,
        conn: ConnId,
        id: AgentId,
        info: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
    ) {
        let old_conn = self.agents.get(&id).and_then(|a| a.conn);
        if let Some(old) = old_conn {
            self.agent_conns.remove(&old);
            self.outputs.push_back(Output::CloseAgent {
                conn: old,
                reason: "replaced by a newer session of the same agent".into(),
            });
        }
        // What was offered may no longer match what the agent has.
        self.rescind_agent_offers(now, &id);

        // Tasks the master has on this agent that the agent does not report
        // never reached it (launch lost) or were lost with a restart.
        let reported: BTreeSet<(FrameworkId, TaskId)> = tasks
            .iter()
            .map(|t| (t.framework_id.clone(), t.task.task_id.clone()))
            .collect();
        let known: Vec<(FrameworkId, TaskId)> = self
            .agents
            .get(&id)
            .map(|a| a.tasks.iter().cloned().collect())
            .unwrap_or_default();
        for (fw, task_id) in known {
            if reported.contains(&(fw.clone(), task_id.clone())) {
                continue;
            }
            let Some(task) = self.frameworks.get(&fw).and_then(|f| f.tasks.get(&task_id)) else {
                continue;
            };
            if task.state.is_terminal() {
                continue;
            }
            let (state, message, reason) = if task.state == TaskState::Staging {
                (
                    self.lost_or(&fw, TaskState::Dropped),
                    "The task never reached the agent",
                    Reason::AgentReregistered,
                )
            } else {
                (
                    self.lost_or(&fw, TaskState::Gone),
                    "The agent no longer knows the task",
                    Reason::AgentRestarted,
                )
            };
            let status =
                TaskStatus::from_master(task_id, state, reason, message, Some(id.clone()), now);
            self.master_task_update(now, &fw, status);
        }

        let known_now: BTreeSet<(FrameworkId, TaskId)> = self
            .agents
            .get(&id)
            .map(|a| a.tasks.clone())
            .unwrap_or_default();
        let new_tasks: Vec<ReportedTask> = tasks
            .into_iter()
            .filter(|t| !known_now.contains(&(t.framework_id.clone(), t.task.task_id.clone())))
            .collect();

        if let Some(agent) = self.agents.get_mut(&id) {
            agent.conn = Some(conn);
            agent.last_seen = now;
            agent.info.hostname = info.hostname.clone();
            agent.info.address = info.address.clone();
            agent.info.attributes = info.attributes.clone();
            agent.info.tls = info.tls;
            // The agent's resources may change across a restart; take the new
            // total only if it still holds what its tasks use.
            if info.resources.contains(&agent.used) {
                agent.info.resources = info.resources.clone();
            }
        }
        if let Some(total) = self.agents.get(&id).map(|a| a.info.resources.clone()) {
            self.allocator.update_agent_total(&id, total);
        }
        self.agent_conns.insert(conn, id.clone());
        self.allocator.set_agent_active(&id, true);
        self.counters.agents_reregistered += 1;
        self.outputs.push_back(Output::ToAgent {
            conn,
            agent_id: id.clone(),
            command: AgentCommand::Registered {
                agent_id: id.clone(),
                heartbeat_interval: self.config.agent_heartbeat_interval,
            },
        });
        self.adopt_tasks(now, &id, new_tasks, &frameworks);
        self.allocate_soon(now, Some(&id));
    }

    /// Takes in live tasks an agent reports that the master does not know
    /// (after a master restart, or the agent returning from unreachable).
    /// Tasks of removed frameworks are killed; tasks that do not fit the
    /// agent's total are killed rather than over-committing it.
    fn adopt_tasks(
        &mut self,
        now: Time,
        agent_id: &AgentId,
        tasks: Vec<ReportedTask>,
        frameworks: &[FrameworkInfo],
    ) {
        // Frameworks the agent still holds tasks or updates for exist until
        // they re-subscribe or their failover timeout passes, so their
        // queued updates are relayed rather than refused.
        for info in frameworks {
            if let Some(id) = info.id.clone()
                && !self.frameworks.contains_key(&id)
                && !self.is_removed_framework(&id)
            {
                self.recover_framework(now, id, info.clone());
            }
        }
        let mut shutdown: BTreeSet<FrameworkId> = BTreeSet::new();
        let mut seen: BTreeSet<(FrameworkId, TaskId)> = BTreeSet::new();
        for report in tasks {
            let fw_id = report.framework_id.clone();
            let task_id = report.task.task_id.clone();
            if !seen.insert((fw_id.clone(), task_id.clone())) {
                // Reported twice: the first report stands.
                continue;
            }
            if self.is_removed_framework(&fw_id) {
                shutdown.insert(fw_id);
                continue;
            }
            let returning = self
                .frameworks
                .get(&fw_id)
                .is_some_and(|f| f.unreachable_tasks.contains_key(&task_id));
            if report.state.is_terminal() {
                // Its terminal update is still queued on the agent and will
                // reach the framework; a task the framework last saw
                // UNREACHABLE learns its end now.
                if returning {
                    self.resolve_unreachable(
                        now,
                        &fw_id,
                        &task_id,
                        report.state,
                        "ended while its agent was unreachable",
                    );
                } else {
                    self.adopt_ended_task(now, agent_id, &fw_id, report);
                }
                continue;
            }
            if !self.frameworks.contains_key(&fw_id) {
                let info = frameworks
                    .iter()
                    .find(|f| f.id.as_ref() == Some(&fw_id))
                    .cloned()
                    .unwrap_or_else(|| {
                        let mut info = FrameworkInfo::new(format!("(recovered {fw_id})"), "");
                        info.id = Some(fw_id.clone());
                        info
                    });
                self.recover_framework(now, fw_id.clone(), info);
            }
            // A live task of this id already runs elsewhere (relaunched
            // while this agent was away): the copy here goes.
            let elsewhere = self
                .frameworks
                .get(&fw_id)
                .and_then(|f| f.tasks.get(&task_id))
                .is_some_and(|t| !t.state.is_terminal());
            let fits = self.agents.get(agent_id).is_some_and(|a| {
                a.info
                    .resources
                    .contains(&a.used.plus(&a.offered).plus(&report.task.resources))
            });
            if elsewhere || !fits {
                self.send_agent(
                    agent_id,
                    AgentCommand::KillTask {
                        framework_id: fw_id.clone(),
                        task_id: task_id.clone(),
                        kill_policy: None,
                    },
                );
                if returning {
                    let why = if elsewhere {
                        "a task of this id runs on another agent"
                    } else {
                        "its agent returned without room for it"
                    };
                    let state = self.lost_or(&fw_id, TaskState::Gone);
                    self.resolve_unreachable(now, &fw_id, &task_id, state, why);
                }
                continue;
            }
            let Some(framework) = self.frameworks.get_mut(&fw_id) else {
                continue;
            };
            let was_unreachable = framework.unreachable_tasks.remove(&task_id);
            let role = was_unreachable
                .as_ref()
                .map(|t| t.role.clone())
                .or_else(|| framework.info.roles.first().cloned())
                .unwrap_or_else(Role::default_role);
            let notify = was_unreachable.is_some();
            let mut task = was_unreachable.unwrap_or_else(|| {
                Task::new(report.task.clone(), fw_id.clone(), role.clone(), now)
            });
            task.info.agent_id = agent_id.clone();
            let resources = task.info.resources.clone();
            let status = TaskStatus::from_master(
                task_id.clone(),
                report.state,
                Reason::AgentReregistered,
                format!("Agent {agent_id} re-registered with the task"),
                Some(agent_id.clone()),
                now,
            );
            // Staging -> reported state; a repeated state is also fine.
            let _ = task.apply(&status, self.config.max_statuses_per_task);
            if task.info.executor.is_some() {
                framework.executor_agents.insert(agent_id.clone());
            }
            framework.tasks.insert(task_id.clone(), task);
            if let Some(agent) = self.agents.get_mut(agent_id) {
                agent.used.add(&resources);
                agent.tasks.insert((fw_id.clone(), task_id));
            }
            self.allocator
                .allocate_to(agent_id, &fw_id, &role, &resources);
            // Only a framework that was told UNREACHABLE needs to hear the
            // task is back; others learn from the agent's own updates.
            if notify {
                self.send_update(&fw_id, status);
            }
        }
        // Tasks last seen UNREACHABLE on this agent that it no longer has.
        let missing: Vec<(FrameworkId, TaskId)> = self
            .frameworks
            .values()
            .flat_map(|f| {
                f.unreachable_tasks
                    .values()
                    .filter(|t| &t.info.agent_id == agent_id)
                    .map(|t| (f.id.clone(), t.info.task_id.clone()))
            })
            .collect();
        for (fw_id, task_id) in missing {
            let state = self.lost_or(&fw_id, TaskState::Gone);
            self.resolve_unreachable(
                now,
                &fw_id,
                &task_id,
                state,
                "its agent returned without it",
            );
        }
        for framework_id in shutdown {
            self.send_agent(agent_id, AgentCommand::ShutdownFramework { framework_id });
        }
    }

    /// A task that ended on the agent while no master heard of it (its
    /// terminal update is still queued there, unacknowledged). As with a
    /// task that ends under this master, it stays known in its terminal
    /// state until that update is acknowledged, so reconciliation answers
    /// with how it ended rather than "unknown". It holds no resources.
    fn adopt_ended_task(
        &mut self,
        now: Time,
        agent_id: &AgentId,
        fw_id: &FrameworkId,
        report: ReportedTask,
    ) {
        let task_id = report.task.task_id.clone();
        let Some(framework) = self.frameworks.get_mut(fw_id) else {
            return;
        };
        if framework.tasks.contains_key(&task_id) {
            // Known under this id (live elsewhere, or already ended): that
            // record stands.
            return;
        }
        let role = framework
            .info
            .roles
            .first()
            .cloned()
            .unwrap_or_else(Role::default_role);
        let mut task = Task::new(report.task, fw_id.clone(), role, now);
        task.info.agent_id = agent_id.clone();
        let status = TaskStatus::from_master(
            task_id.clone(),
            report.state,
            Reason::AgentReregistered,
            format!("Agent {agent_id} re-registered with the task ended"),
            Some(agent_id.clone()),
            now,
        );
        let _ = task.apply(&status, self.config.max_statuses_per_task);
        framework.tasks.insert(task_id.clone(), task);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.tasks.insert((fw_id.clone(), task_id));
        }
    }

    /// Ends a task last seen UNREACHABLE: it reaches `state` (master-made,
    /// so it completes at once) and the framework hears why.
    fn resolve_unreachable(
        &mut self,
        now: Time,
        fw: &FrameworkId,
        task_id: &TaskId,
        state: TaskState,
        why: &str,
    ) {
        let max = self.config.max_statuses_per_task;
        let max_completed = self.config.max_completed_tasks_per_framework;
        let Some(framework) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(mut task) = framework.unreachable_tasks.remove(task_id) else {
            return;
        };
        let status = TaskStatus::from_master(
            task_id.clone(),
            state,
            Reason::AgentReregistered,
            format!("Task {task_id}: {why}"),
            Some(task.info.agent_id.clone()),
            now,
        );
        let _ = task.apply(&status, max);
        framework.completed.push_back(task);
        while framework.completed.len() > max_completed {
            framework.completed.pop_front();
        }
        if state.is_terminal() {
            *self.counters.tasks_terminal.entry(state).or_default() += 1;
        }
        self.send_update(fw, status);
    }

    /// A framework known only from an agent's report (the registry lost it,
    /// or never had it): it exists, disconnected, until it re-subscribes or
    /// its failover timeout passes, but for at least the recovery grace (its
    /// own timeout may be 0, and a master restart must not kill its tasks).
    /// The registry learns of it.
    pub(super) fn recover_framework(
        &mut self,
        now: Time,
        id: FrameworkId,
        mut info: FrameworkInfo,
    ) {
        info.id = Some(id.clone());
        let deadline = now
            + info
                .failover_timeout
                .max(self.config.framework_recovery_grace);
        self.persist(
            RegistryOp::AddFramework {
                id: id.clone(),
                info: info.clone(),
                registered_at: now,
            },
            Pending::Nothing,
        );
        self.persist(
            RegistryOp::DisconnectFramework {
                id: id.clone(),
                since: now,
            },
            Pending::Nothing,
        );
        self.recover_framework_until(now, id, info, now, deadline);
    }

    /// Adds a disconnected framework that is removed at `deadline` unless
    /// it re-subscribes.
    pub(super) fn recover_framework_until(
        &mut self,
        now: Time,
        id: FrameworkId,
        mut info: FrameworkInfo,
        registered_at: Time,
        deadline: Time,
    ) {
        info.id = Some(id.clone());
        self.allocator.add_framework(&id, &info.roles, &[]);
        self.frameworks.insert(
            id.clone(),
            Framework {
                id: id.clone(),
                info,
                conn: FrameworkConn::Disconnected {
                    since: now,
                    deadline,
                },
                registered_at,
                reregistered_at: None,
                tasks: Default::default(),
                unreachable_tasks: Default::default(),
                completed: Default::default(),
                offers: Default::default(),
                executor_agents: Default::default(),
            },
        );
        self.failover_deadlines.insert((deadline, id));
    }

    pub(super) fn agent_heartbeat(&mut self, now: Time, conn: ConnId) {
        if let Some(id) = self.agent_conns.get(&conn)
            && let Some(agent) = self.agents.get_mut(id)
        {
            agent.last_seen = now;
        }
    }

    pub(super) fn agent_disconnected(&mut self, now: Time, conn: ConnId) {
        let Some(id) = self.agent_conns.remove(&conn) else {
            return;
        };
        let current = self.agents.get(&id).and_then(|a| a.conn) == Some(conn);
        if !current {
            return;
        }
        if let Some(agent) = self.agents.get_mut(&id) {
            agent.conn = None;
        }
        // Nothing can be launched there until it is back.
        self.rescind_agent_offers(now, &id);
        self.allocator.set_agent_active(&id, false);
    }

    /// Marks agents silent past the ping timeout unreachable.
    pub(super) fn check_agents(&mut self, now: Time) {
        let timeout = self.config.agent_ping_timeout;
        let silent: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| now.saturating_since(a.last_seen) > timeout)
            .map(|a| a.id.clone())
            .collect();
        for id in silent {
            self.request_unreachable(now, id);
        }
    }

    /// The agent is gone from the master's view: its offers are rescinded,
    /// its live tasks become LOST (UNREACHABLE for partition-aware
    /// frameworks, which keep them in case the agent returns), and every
    /// framework hears of the failure.
    pub(super) fn mark_unreachable(&mut self, now: Time, id: &AgentId) {
        self.rescind_agent_offers(now, id);
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let silent_for = now.saturating_since(agent.last_seen);
        let task_keys: Vec<(FrameworkId, TaskId)> = agent.tasks.iter().cloned().collect();
        let message = format!(
            "Agent {id} is unreachable (not heard from for {:.1}s)",
            silent_for.as_secs_f64()
        );
        for (fw, task_id) in task_keys {
            let live = self
                .frameworks
                .get(&fw)
                .and_then(|f| f.tasks.get(&task_id))
                .is_some_and(|t| !t.state.is_terminal());
            if !live {
                // Terminal, waiting for an acknowledgement that can no longer
                // be relayed: complete it now.
                self.complete_task(&fw, &task_id);
                continue;
            }
            let state = self.lost_or(&fw, TaskState::Unreachable);
            let status = TaskStatus::from_master(
                task_id.clone(),
                state,
                Reason::AgentRemoved,
                message.clone(),
                Some(id.clone()),
                now,
            );
            if state == TaskState::Unreachable {
                self.task_unreachable(&fw, &task_id, &status);
                self.send_update(&fw, status);
            } else {
                self.master_task_update(now, &fw, status);
            }
        }
        let Some(agent) = self.agents.remove(id) else {
            return;
        };
        if let Some(conn) = agent.conn {
            self.agent_conns.remove(&conn);
            self.outputs.push_back(Output::CloseAgent {
                conn,
                reason: "agent marked unreachable".into(),
            });
        }
        self.allocator.remove_agent(id);
        self.dirty.remove(id);
        self.counters.agents_unreachable += 1;
        self.observe(Observed::AgentRemoved {
            agent_id: id.clone(),
        });
        self.remember_unreachable(now, id.clone(), agent.info, now);
        let connected: Vec<FrameworkId> = self
            .frameworks
            .values()
            .filter(|f| f.conn().is_some())
            .map(|f| f.id.clone())
            .collect();
        for fw in connected {
            self.send_framework(
                &fw,
                Event::Failure {
                    agent_id: id.clone(),
                    executor_id: None,
                    status: None,
                },
            );
        }
    }

    /// Moves a live task of a partition-aware framework to its unreachable
    /// set, releasing its resources.
    fn task_unreachable(&mut self, fw: &FrameworkId, task_id: &TaskId, status: &TaskStatus) {
        let max = self.config.max_statuses_per_task;
        let Some(framework) = self.frameworks.get_mut(fw) else {
            return;
        };
        let Some(mut task) = framework.tasks.remove(task_id) else {
            return;
        };
        let _ = task.apply(status, max);
        let agent_id = task.info.agent_id.clone();
        self.outputs
            .push_back(Output::Observed(Observed::TaskUpdated {
                framework_id: fw.clone(),
                agent_id: agent_id.clone(),
                status: status.clone(),
            }));
        let resources = task.info.resources.clone();
        let role = task.role.clone();
        framework.unreachable_tasks.insert(task_id.clone(), task);
        if let Some(agent) = self.agents.get_mut(&agent_id) {
            agent.used = agent.used.saturating_sub(&resources);
            agent.tasks.remove(&(fw.clone(), task_id.clone()));
        }
        self.allocator
            .recover(&agent_id, fw, &role, &resources, None);
    }

    /// Removed, or being removed.
    pub(super) fn is_removed_framework(&self, id: &FrameworkId) -> bool {
        self.removing.contains(id)
            || (!self.frameworks.contains_key(id)
                && self.completed_frameworks.iter().any(|f| &f.id == id))
    }
}
