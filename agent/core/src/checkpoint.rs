//! What the agent must find again after a restart, and how it finds it.
//!
//! The core emits a [`Checkpoint`] record before every change that must
//! survive the agent's death: the server writes it durably before it carries
//! out any output that follows it (a launch, an acknowledgement to an
//! executor, an update to the master). After a restart the records are
//! replayed, in order, by [`Agent::recover`]; [`Agent::checkpoint_snapshot`]
//! gives the fewest records that replay to the current state, so the log can
//! be compacted.

use std::collections::BTreeMap;

use cairn_model::{
    AgentId, ContainerId, ExecutorId, FrameworkId, FrameworkInfo, Reason, StatusUuid, TaskId,
    TaskInfo, TaskState, TaskStatus, Time,
};

use crate::{Agent, ExecState, Executor, Input, TaskRecord, TaskReport};

#[derive(Clone, Debug, PartialEq)]
pub enum Checkpoint {
    /// The id the master gave this agent.
    AgentId(AgentId),
    /// A framework with tasks here (its latest info).
    Framework(FrameworkInfo),
    /// A task in a container, about to be launched (or, in a snapshot,
    /// running) with the state given.
    Task {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        container_id: ContainerId,
        task: TaskInfo,
        state: TaskState,
    },
    /// A task without a live executor whose updates are unacknowledged.
    Finished {
        framework_id: FrameworkId,
        executor_id: ExecutorId,
        task: TaskInfo,
        state: TaskState,
    },
    /// An update accepted for the framework (queued until acknowledged).
    Update {
        framework_id: FrameworkId,
        status: TaskStatus,
    },
    /// The framework acknowledged the oldest queued update of a task.
    Acknowledged {
        framework_id: FrameworkId,
        task_id: TaskId,
        uuid: StatusUuid,
    },
    /// The container is gone; its tasks got their final updates.
    ContainerEnded { container_id: ContainerId },
    /// The master removed the framework.
    FrameworkRemoved { framework_id: FrameworkId },
}

/// A container found in the checkpoint: the server reattaches it (or
/// reports it gone with [`Input::ContainerExited`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredContainer {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub container_id: ContainerId,
    /// What its tasks were given (for isolation's limits).
    pub resources: cairn_model::Resources,
}

impl Agent {
    /// Rebuilds the agent from `records` (in the order they were emitted):
    /// its id, frameworks, executors and tasks, and the unacknowledged
    /// updates, which go to the master once it is registered. Executors are
    /// disconnected until they re-subscribe; one that has not within the
    /// re-registration timeout is destroyed and its tasks are lost. Returns
    /// the containers to reattach. Must be called on a new agent, before any
    /// other input.
    pub fn recover(
        &mut self,
        now: Time,
        records: impl IntoIterator<Item = Checkpoint>,
    ) -> Vec<RecoveredContainer> {
        for r in records {
            self.replay(now, r);
        }
        let deadline = now + self.config.executor_reregistration_timeout;
        let mut out = Vec::new();
        for e in self.executors.values_mut() {
            e.state = ExecState::Disconnected;
            e.recovered = true;
            e.registration_deadline = Some(deadline);
            let mut resources = cairn_model::Resources::new();
            for t in e.tasks.values() {
                resources.add(&t.info.resources);
            }
            out.push(RecoveredContainer {
                framework_id: e.framework_id.clone(),
                executor_id: e.id.clone(),
                container_id: e.container_id.clone(),
                resources,
            });
        }
        // Executors of frameworks removed while they were ending: they end.
        let ending: Vec<_> = self
            .executors
            .keys()
            .filter(|(fw, _)| self.removed.contains(fw))
            .cloned()
            .collect();
        for key in ending {
            self.shutdown_executor(now, &key);
        }
        out
    }

    fn replay(&mut self, now: Time, record: Checkpoint) {
        match record {
            Checkpoint::AgentId(id) => self.agent_id = Some(id),
            Checkpoint::Framework(info) => {
                if let Some(id) = info.id.clone() {
                    self.removed.remove(&id);
                    self.frameworks.insert(id, info);
                }
            }
            Checkpoint::Task {
                framework_id,
                executor_id,
                container_id,
                task,
                state,
            } => {
                let key = (framework_id.clone(), executor_id.clone());
                self.containers.insert(container_id.clone(), key.clone());
                let custom = task.executor.is_some();
                let e = self.executors.entry(key).or_insert_with(|| Executor {
                    id: executor_id,
                    framework_id,
                    container_id,
                    custom,
                    state: ExecState::Disconnected,
                    tasks: BTreeMap::new(),
                    registration_deadline: None,
                    destroy_at: None,
                    destroy_sent: false,
                    failure: None,
                    recovered: true,
                });
                e.tasks.insert(
                    task.task_id.clone(),
                    TaskRecord {
                        info: task,
                        state,
                        queued: false,
                        kill_requested: false,
                        last_uuid: None,
                    },
                );
            }
            Checkpoint::Finished {
                framework_id,
                executor_id,
                task,
                state,
            } => {
                self.finished.insert(
                    (framework_id.clone(), task.task_id.clone()),
                    TaskReport {
                        framework_id,
                        executor_id,
                        container_id: None,
                        task,
                        state,
                    },
                );
            }
            Checkpoint::Update {
                framework_id,
                status,
            } => {
                if let Some(key) = self.find_task(&framework_id, &status.task_id)
                    && let Some(t) = self
                        .executors
                        .get_mut(&key)
                        .and_then(|e| e.tasks.get_mut(&status.task_id))
                {
                    // As when it was accepted: only a valid transition
                    // changes the task.
                    if t.state.transition(status.state).is_ok() {
                        t.state = status.state;
                        t.last_uuid = status.uuid;
                    }
                }
                // Not connected: this only queues.
                let _ = self.updates.enqueue(now, framework_id, status);
            }
            Checkpoint::Acknowledged {
                framework_id,
                task_id,
                uuid,
            } => {
                if self.updates.replay_ack(&framework_id, &task_id, uuid) {
                    self.finished.remove(&(framework_id, task_id));
                }
            }
            Checkpoint::ContainerEnded { container_id } => {
                let Some(key) = self.containers.remove(&container_id) else {
                    return;
                };
                let Some(e) = self.executors.remove(&key) else {
                    return;
                };
                self.remember_finished(&key, e.tasks);
            }
            Checkpoint::FrameworkRemoved { framework_id } => {
                self.forget_framework(&framework_id);
            }
        }
    }

    /// The fewest records that [`Agent::recover`] turns back into this
    /// agent's state (what a compacted log holds).
    pub fn checkpoint_snapshot(&self) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        if let Some(id) = &self.agent_id {
            out.push(Checkpoint::AgentId(id.clone()));
        }
        for f in self.frameworks.values() {
            out.push(Checkpoint::Framework(f.clone()));
        }
        for id in &self.removed {
            out.push(Checkpoint::FrameworkRemoved {
                framework_id: id.clone(),
            });
        }
        for e in self.executors.values() {
            for t in e.tasks.values() {
                out.push(Checkpoint::Task {
                    framework_id: e.framework_id.clone(),
                    executor_id: e.id.clone(),
                    container_id: e.container_id.clone(),
                    task: t.info.clone(),
                    state: t.state,
                });
            }
        }
        for f in self.finished.values() {
            out.push(Checkpoint::Finished {
                framework_id: f.framework_id.clone(),
                executor_id: f.executor_id.clone(),
                task: f.task.clone(),
                state: f.state,
            });
        }
        // Replaying the queued updates ends each task in its latest state,
        // which is the last update queued for it.
        for (framework_id, status) in self.updates.pending() {
            out.push(Checkpoint::Update {
                framework_id: framework_id.clone(),
                status: status.clone(),
            });
        }
        out
    }

    /// The re-registration deadline of a recovered executor passed.
    pub(crate) fn reregistration_failure(&self) -> crate::Ending {
        crate::Ending {
            state: TaskState::Lost,
            reason: Reason::ExecutorReregistrationTimeout,
            message: format!(
                "The executor did not re-register within {}s after the agent restarted",
                self.config.executor_reregistration_timeout.as_secs_f64()
            ),
        }
    }
}

/// A container of the checkpoint whose executor is gone after a restart: it
/// ended while the agent was down, or never started (the agent died while
/// launching it). Its tasks that had started fail; those that had not are
/// lost.
pub fn exited_while_down(container_id: ContainerId) -> Input {
    Input::ContainerExited {
        container_id,
        termination: crate::Termination {
            reason: Some(Reason::AgentRestarted),
            message: Some("The executor exited while the agent was down".into()),
            ..crate::Termination::default()
        },
    }
}
