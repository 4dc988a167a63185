//! The master's record of a task. The lifecycle rules themselves are
//! [`cairn_model::TaskState::transition`]; this record applies them and keeps
//! what views and reconciliation need.

use cairn_model::{
    FrameworkId, InvalidTransition, Role, StatusUuid, TaskInfo, TaskState, TaskStatus, Time,
};

/// One state a task went through, for views (`statuses[]` in `/state`).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusRecord {
    pub state: TaskState,
    pub timestamp: Time,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub info: TaskInfo,
    pub framework_id: FrameworkId,
    /// The role whose allocation the task's resources count against.
    pub role: Role,
    pub state: TaskState,
    /// Chronological, bounded (oldest dropped first).
    pub statuses: Vec<StatusRecord>,
    /// The newest status, as reconciliation reports it.
    pub latest: Option<TaskStatus>,
    /// The uuid of the terminal update the framework has yet to acknowledge;
    /// the task moves to the completed list once it does.
    pub terminal_uuid: Option<StatusUuid>,
    pub launched_at: Time,
}

impl Task {
    pub fn new(info: TaskInfo, framework_id: FrameworkId, role: Role, now: Time) -> Self {
        Task {
            info,
            framework_id,
            role,
            state: TaskState::Staging,
            statuses: vec![StatusRecord {
                state: TaskState::Staging,
                timestamp: now,
            }],
            latest: None,
            terminal_uuid: None,
            launched_at: now,
        }
    }

    /// Applies a status: the state moves if the lifecycle allows it. The
    /// status is kept as the latest either way only when the move is valid.
    pub fn apply(
        &mut self,
        status: &TaskStatus,
        max_statuses: usize,
    ) -> Result<(), InvalidTransition> {
        let next = self.state.transition(status.state)?;
        if next != self.state {
            self.statuses.push(StatusRecord {
                state: next,
                timestamp: status.timestamp,
            });
            if self.statuses.len() > max_statuses.max(2) {
                // Keep the first (launch) and the newest ones.
                self.statuses.remove(1);
            }
        }
        self.state = next;
        self.latest = Some(status.clone());
        if next.is_terminal() {
            self.terminal_uuid = status.uuid;
        }
        Ok(())
    }
}
