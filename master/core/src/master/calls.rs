//! Framework calls: accept, decline, revive, suppress, kill, reconcile,
//! acknowledge, teardown.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_model::{
    AgentId, FrameworkId, KillPolicy, OfferId, Reason, Resources, Role, StatusUuid, TaskId,
    TaskInfo, TaskState, TaskStatus, Time,
};

use super::{FrameworkConn, Master};
use crate::offer::OfferEvent;
use crate::task::Task;
use crate::validation::launch_problem;
use crate::{AgentCommand, Call, CallError, LaunchRequest, Observed};

impl Master {
    pub(super) fn call(
        &mut self,
        now: Time,
        framework_id: FrameworkId,
        stream_id: &str,
        call: Call,
    ) -> Result<(), CallError> {
        self.check_caller(&framework_id, stream_id)?;
        self.counters.calls += 1;
        match call {
            Call::Accept {
                offer_ids,
                launches,
                refuse,
            } => self.accept(now, &framework_id, offer_ids, launches, refuse),
            Call::Decline { offer_ids, refuse } => {
                self.decline(now, &framework_id, &offer_ids, refuse);
            }
            Call::Revive { roles } => {
                self.allocator.revive(&framework_id, &roles);
                self.allocate_soon(now, None);
            }
            Call::Suppress { roles } => self.allocator.suppress(&framework_id, &roles),
            Call::Kill {
                task_id,
                agent_id,
                kill_policy,
            } => self.kill(now, &framework_id, task_id, agent_id, kill_policy),
            Call::Reconcile { tasks } => self.reconcile(now, &framework_id, tasks),
            Call::Acknowledge {
                agent_id,
                task_id,
                uuid,
            } => self.acknowledge(&framework_id, &agent_id, &task_id, uuid),
            Call::AcknowledgeMany(acks) => {
                for a in acks {
                    self.acknowledge(&framework_id, &a.agent_id, &a.task_id, a.uuid);
                }
            }
            Call::Teardown => {
                self.remove_framework(now, &framework_id, "torn down by the framework")
            }
            Call::UpdateFramework {
                info,
                suppressed_roles,
            } => return self.update_framework(&framework_id, info, suppressed_roles),
            // To an agent that is not connected, these are dropped (as in
            // Mesos): a shutdown reaches the executor again with the
            // framework's removal, and messages are best effort.
            Call::Shutdown {
                executor_id,
                agent_id,
            } => {
                self.send_agent(
                    &agent_id,
                    AgentCommand::ShutdownExecutor {
                        framework_id,
                        executor_id,
                    },
                );
            }
            Call::Message {
                agent_id,
                executor_id,
                data,
            } => {
                self.send_agent(
                    &agent_id,
                    AgentCommand::FrameworkMessage {
                        framework_id,
                        executor_id,
                        data,
                    },
                );
            }
        }
        Ok(())
    }

    /// A call is taken only from the framework's current subscription.
    fn check_caller(&self, id: &FrameworkId, stream_id: &str) -> Result<(), CallError> {
        if self.removing.contains(id) {
            return Err(CallError::RemovedFramework(id.clone()));
        }
        let Some(framework) = self.frameworks.get(id) else {
            return Err(if self.is_removed_framework(id) {
                CallError::RemovedFramework(id.clone())
            } else {
                CallError::UnknownFramework(id.clone())
            });
        };
        match &framework.conn {
            FrameworkConn::Disconnected { .. } => Err(CallError::NotSubscribed(id.clone())),
            FrameworkConn::Connected { stream_id: s, .. } if s != stream_id => {
                Err(CallError::StaleStream {
                    framework: id.clone(),
                    stream_id: stream_id.chars().take(128).collect(),
                })
            }
            FrameworkConn::Connected { .. } => Ok(()),
        }
    }

    /// The agent and role of the offers, or why they cannot be used together.
    fn check_offers(
        &self,
        framework: &FrameworkId,
        offer_ids: &[OfferId],
    ) -> Result<(AgentId, Role), String> {
        if offer_ids.is_empty() {
            return Err("No offers given".into());
        }
        let mut seen = BTreeSet::new();
        let mut target: Option<(AgentId, Role)> = None;
        for id in offer_ids {
            if !seen.insert(id) {
                return Err(format!("Offer {id} is given more than once"));
            }
            let Some(record) = self.offers.get(id) else {
                return Err(format!("Offer {id} is no longer valid"));
            };
            if &record.offer.framework_id != framework {
                return Err(format!("Offer {id} was not made to this framework"));
            }
            let here = (record.offer.agent_id.clone(), record.offer.role.clone());
            match &target {
                None => target = Some(here),
                Some((agent, _)) if agent != &here.0 => {
                    return Err("The offers are for more than one agent".into());
                }
                Some((_, role)) if role != &here.1 => {
                    return Err("The offers are for more than one role".into());
                }
                Some(_) => {}
            }
        }
        target.ok_or_else(|| "No offers given".into())
    }

    fn accept(
        &mut self,
        now: Time,
        fw: &FrameworkId,
        offer_ids: Vec<OfferId>,
        launches: Vec<LaunchRequest>,
        refuse: Duration,
    ) {
        let (agent_id, role) = match self.check_offers(fw, &offer_ids) {
            Ok(target) => target,
            Err(reason) => {
                // The framework's own offers in the call are used up (their
                // resources return to the pool); nobody else's are touched.
                for id in &offer_ids {
                    if self
                        .offers
                        .get(id)
                        .is_some_and(|o| &o.offer.framework_id == fw)
                    {
                        self.rescind_offer(now, id, OfferEvent::Accept, false);
                    }
                }
                let state = self.lost_or(fw, TaskState::Dropped);
                for launch in launches {
                    let task_id = match launch {
                        LaunchRequest::Task(t) => t.task_id,
                        LaunchRequest::Malformed { task_id, .. } => task_id,
                    };
                    let status = TaskStatus::from_master(
                        task_id,
                        state,
                        Reason::InvalidOffers,
                        format!("Task launched with invalid offers: {reason}"),
                        None,
                        now,
                    );
                    self.counters.tasks_dropped_invalid_offers += 1;
                    self.send_update(fw, status);
                }
                return;
            }
        };

        let mut remaining = Resources::new();
        for id in &offer_ids {
            if let Some(record) = self.remove_offer(id, OfferEvent::Accept) {
                remaining.add(&record.offer.resources);
            }
        }
        let framework_info = self.frameworks.get(fw).map(|f| f.info.clone());
        let mut launched: BTreeSet<TaskId> = BTreeSet::new();
        for launch in launches {
            let task = match launch {
                LaunchRequest::Task(t) => t,
                LaunchRequest::Malformed { task_id, reason } => {
                    self.task_error(now, fw, task_id, format!("Invalid task: {reason}"));
                    continue;
                }
            };
            let in_use = launched.contains(&task.task_id)
                || self.frameworks.get(fw).is_some_and(|f| {
                    f.tasks.contains_key(&task.task_id)
                        || f.unreachable_tasks.contains_key(&task.task_id)
                });
            if let Some(problem) = launch_problem(&task, &agent_id, &remaining, in_use) {
                self.task_error(now, fw, task.task_id, problem);
                continue;
            }
            if let Some(why) = self.unauthorized_user(fw, &task) {
                self.counters.task_errors += 1;
                let status = TaskStatus::from_master(
                    task.task_id.clone(),
                    TaskState::Error,
                    Reason::TaskUnauthorized,
                    why,
                    None,
                    now,
                );
                self.send_update(fw, status);
                continue;
            }
            let Some(left) = remaining.checked_sub(&task.resources) else {
                continue;
            };
            remaining = left;
            launched.insert(task.task_id.clone());
            let Some(framework) = self.frameworks.get_mut(fw) else {
                continue;
            };
            if task.executor.is_some() {
                framework.executor_agents.insert(agent_id.clone());
            }
            framework.tasks.insert(
                task.task_id.clone(),
                Task::new(task.clone(), fw.clone(), role.clone(), now),
            );
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.used.add(&task.resources);
                agent.tasks.insert((fw.clone(), task.task_id.clone()));
            }
            self.counters.tasks_launched += 1;
            self.observe(Observed::TaskAdded {
                framework_id: fw.clone(),
                agent_id: agent_id.clone(),
                task: task.clone(),
            });
            if let Some(framework) = framework_info.clone() {
                self.send_agent(&agent_id, AgentCommand::RunTask { framework, task });
            }
        }
        // The unused part returns under the framework's filter. It waits for
        // the next periodic cycle: re-offering declined resources at once
        // would let a framework that refuses for 0 s spin the master.
        if !remaining.is_empty() {
            self.allocator
                .recover(&agent_id, fw, &role, &remaining, Some((now, refuse)));
        }
    }

    /// Why the framework may not run `task` as its user, if it may not.
    /// Tasks (and executors) with no user of their own run as the
    /// framework's; with none there either, as the agent's default user,
    /// which the agent never lets be root unless told to.
    fn unauthorized_user(&self, fw: &FrameworkId, task: &TaskInfo) -> Option<String> {
        let acls = self.config.acls.as_ref()?;
        let framework = self.frameworks.get(fw)?;
        let user = task
            .runnable()
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| framework.info.user.clone());
        if user.is_empty() {
            return None;
        }
        let principal = Some(framework.info.principal.as_str()).filter(|p| !p.is_empty());
        acls.run_as(principal, &user).err().map(|d| d.to_string())
    }

    fn task_error(&mut self, now: Time, fw: &FrameworkId, task_id: TaskId, message: String) {
        self.counters.task_errors += 1;
        let status = TaskStatus::from_master(
            task_id,
            TaskState::Error,
            Reason::TaskInvalid,
            message,
            None,
            now,
        );
        self.send_update(fw, status);
    }

    fn decline(&mut self, now: Time, fw: &FrameworkId, offer_ids: &[OfferId], refuse: Duration) {
        for id in offer_ids {
            let Some(record) = self.offers.get(id) else {
                continue;
            };
            if &record.offer.framework_id != fw {
                continue;
            }
            if let Some(record) = self.remove_offer(id, OfferEvent::Decline) {
                let o = &record.offer;
                // Like an accept's remainder, re-offered at the next
                // periodic cycle.
                self.allocator.recover(
                    &o.agent_id,
                    &o.framework_id,
                    &o.role,
                    &o.resources,
                    Some((now, refuse)),
                );
            }
        }
    }

    fn kill(
        &mut self,
        now: Time,
        fw: &FrameworkId,
        task_id: TaskId,
        agent_hint: Option<AgentId>,
        kill_policy: Option<KillPolicy>,
    ) {
        let task = self.frameworks.get(fw).and_then(|f| f.tasks.get(&task_id));
        match task {
            Some(task) if task.state.is_terminal() => {
                // Already over; its terminal update is on its way.
            }
            Some(task) => {
                let agent_id = task.info.agent_id.clone();
                self.counters.kills += 1;
                self.send_agent(
                    &agent_id,
                    AgentCommand::KillTask {
                        framework_id: fw.clone(),
                        task_id,
                        kill_policy,
                    },
                );
            }
            None => {
                let unreachable = self
                    .frameworks
                    .get(fw)
                    .is_some_and(|f| f.unreachable_tasks.contains_key(&task_id));
                if unreachable {
                    // Its agent cannot be reached; the framework retries the
                    // kill once the agent is back.
                    return;
                }
                let state = self.lost_or(fw, TaskState::Unknown);
                let status = TaskStatus::from_master(
                    task_id,
                    state,
                    Reason::Reconciliation,
                    "Attempted to kill an unknown task",
                    agent_hint,
                    now,
                );
                self.send_update(fw, status);
            }
        }
    }

    fn reconcile(&mut self, now: Time, fw: &FrameworkId, tasks: Vec<(TaskId, Option<AgentId>)>) {
        let Some(framework) = self.frameworks.get(fw) else {
            return;
        };
        let answer = |t: &Task| {
            let mut s = TaskStatus::from_master(
                t.info.task_id.clone(),
                t.state,
                Reason::Reconciliation,
                t.latest
                    .as_ref()
                    .map(|l| l.message.clone())
                    .unwrap_or_default(),
                Some(t.info.agent_id.clone()),
                now,
            );
            s.exit_code = t.latest.as_ref().and_then(|l| l.exit_code);
            s
        };
        let mut out: Vec<TaskStatus> = Vec::new();
        if tasks.is_empty() {
            out.extend(
                framework
                    .tasks
                    .values()
                    .chain(framework.unreachable_tasks.values())
                    .filter(|t| !t.state.is_terminal())
                    .map(answer),
            );
        } else {
            for (task_id, agent_hint) in tasks {
                let known = framework
                    .tasks
                    .get(&task_id)
                    .or_else(|| framework.unreachable_tasks.get(&task_id))
                    .or_else(|| {
                        framework
                            .completed
                            .iter()
                            .rev()
                            .find(|t| t.info.task_id == task_id)
                    });
                if let Some(t) = known {
                    out.push(answer(t));
                    continue;
                }
                // After a failover, a task may be on an agent that has not
                // re-registered yet: no answer is better than a wrong one
                // (the framework asks again).
                let may_come_back = match &agent_hint {
                    Some(a) => self.recovering.contains_key(a),
                    None => !self.recovering.is_empty(),
                };
                if may_come_back {
                    continue;
                }
                let aware = framework.info.partition_aware();
                let state = match &agent_hint {
                    _ if !aware => TaskState::Lost,
                    Some(a) if self.agents.contains_key(a) => TaskState::Gone,
                    Some(a) if self.unreachable.contains_key(a) => TaskState::Unreachable,
                    Some(_) | None => TaskState::Unknown,
                };
                out.push(TaskStatus::from_master(
                    task_id,
                    state,
                    Reason::Reconciliation,
                    "Reconciliation: task unknown to the master",
                    agent_hint,
                    now,
                ));
            }
        }
        for status in out {
            self.send_update(fw, status);
        }
    }

    fn acknowledge(
        &mut self,
        fw: &FrameworkId,
        agent_id: &AgentId,
        task_id: &TaskId,
        uuid: StatusUuid,
    ) {
        self.counters.acknowledgements += 1;
        let delivered = self.send_agent(
            agent_id,
            AgentCommand::Acknowledge {
                framework_id: fw.clone(),
                task_id: task_id.clone(),
                uuid,
            },
        );
        // Undelivered (the agent is disconnected), the agent keeps the
        // update and re-sends it; the task stays until that one is acked,
        // so a late copy can never land on a relaunch of the same id.
        let done = delivered
            && self
                .frameworks
                .get(fw)
                .and_then(|f| f.tasks.get(task_id))
                .is_some_and(|t| t.state.is_terminal() && t.terminal_uuid == Some(uuid));
        if done {
            self.complete_task(fw, task_id);
        }
    }
}
