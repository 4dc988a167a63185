//! Direct command tasks (`--command-tasks direct`): the agent runs a
//! command task's process in its container itself, instead of starting a
//! command executor process that runs it.
//!
//! To the core, a direct task's container is an executor like any other:
//! the driver subscribes it on the agent's own connection, carries out what
//! the core tells it (launch, kill, shutdown) and reports the task's states
//! as that executor would (TASK_STARTING and TASK_RUNNING once its process
//! is started, TASK_KILLING when killed by a framework that understands it,
//! then one terminal state from its exit). The core's checkpointing,
//! acknowledgements and retries are the same for both.
//!
//! ```text
//! agent --(fork server: clone3, CLONE_PARENT; else clone + exec)-->
//!       shim (container-exec; blocks SIGTERM; with namespaces, created as
//!       PID 1 of its PID namespace and named cairn-init: also the
//!       container's init) --spawn (clone CLONE_VM | CLONE_VFORK)-->
//!       task: a session of its own, SIGTERM unblocked, joins its own
//!       network namespace if asked, switches to its user, execs
//! ```
//! The shim ends with the task's exit status (128 + N for a signal N, as a
//! shell reports it; 127 when the command cannot be started). Before it
//! ends it records that status in `<runtime dir>/exits/<container id>`
//! (`--runtime-dir`, a tmpfs by default: on a disk file system without a
//! journal, ext4 scans past every recently freed inode when it allocates
//! one, and a record created and removed per task made that a sixth of
//! the machine at a few hundred tasks a second):
//! the agent reads it when it reaps the shim, or at its next run when it
//! was down meanwhile, and removes it once the container's end is
//! checkpointed. A kill sends SIGTERM to every process of the container
//! outside the shim's session (the task's; again until it finds one, for a
//! kill that comes before the task is started), then destroys the
//! container after the grace period. Direct tasks need cgroups: the task's
//! session is its own, and only its cgroup finds its processes.
//!
//! What differs from the command executor: the task's output is not rotated
//! (the agent refuses to start in this mode with a bounded
//! `--task-log-max-size`), a task ended by a signal is reported with the
//! shell's status (`Command exited with status 143`), a kill under way when
//! the agent stops is not resumed by its next run (the framework's kill is
//! retried, as reconciliation shows the task still running), and no
//! executor token exists (nothing connects back to the agent).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn_agent_core::checkpoint::RecoveredContainer;
use cairn_agent_core::{ExecConn, ExecutorCommand, Input, LaunchSpec, Termination};
use cairn_model::{
    Capability, ContainerId, ExecutorId, Network, Reason, StatusUuid, TaskId, TaskInfo, TaskState,
    TaskStatus, Time,
};
use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use crate::driver::{Command, Driver};
use crate::isolation::container::{DIRECT_TASK_ENV, EXIT_DIR_ENV, TASK_NETWORK_ENV};
use crate::launcher::ContainerSpec;

/// How soon a kill that found no process of the task yet is sent again.
const TERM_AGAIN: Duration = Duration::from_millis(10);

/// One direct task's container, from its launch to its end.
#[derive(Debug)]
struct DirectTask {
    executor_id: ExecutorId,
    container_id: ContainerId,
    /// What its container needs, until the core hands over the task.
    prepared: Option<Prepared>,
    /// The task, once launched (or recovered).
    task: Option<TaskId>,
    /// The framework understands TASK_KILLING.
    killing_state: bool,
    kill_requested: bool,
    /// The shim's pid (the leader of the session a kill spares), once
    /// started or recovered.
    shim: Option<u32>,
}

#[derive(Debug)]
struct Prepared {
    spec: LaunchSpec,
    sandbox: PathBuf,
    env: Vec<(String, String)>,
}

/// The driver's direct tasks, by the connection they are subscribed on and
/// by container.
#[derive(Debug, Default)]
pub(crate) struct DirectTasks {
    by_conn: HashMap<ExecConn, DirectTask>,
    by_container: HashMap<ContainerId, ExecConn>,
}

impl DirectTasks {
    pub(crate) fn has(&self, conn: ExecConn) -> bool {
        self.by_conn.contains_key(&conn)
    }

    fn insert(&mut self, conn: ExecConn, task: DirectTask) {
        self.by_container.insert(task.container_id.clone(), conn);
        self.by_conn.insert(conn, task);
    }
}

/// Whether process `pid` is a direct task's shim (its environment says so:
/// it was started with [`DIRECT_TASK_ENV`]).
pub(crate) fn is_direct(pid: u32) -> bool {
    crate::launcher::environ_has(pid, &format!("{DIRECT_TASK_ENV}=1"))
}

impl Driver {
    /// A command task's container in direct mode: subscribed at once on a
    /// connection of the agent's own; the core then hands over the task.
    pub(crate) fn direct_launch(
        &mut self,
        spec: LaunchSpec,
        sandbox: PathBuf,
        mut env: Vec<(String, String)>,
    ) {
        let Some(framework_id) = spec.framework.id.clone() else {
            self.launch_failed(
                &spec.container_id,
                Reason::ContainerLaunchFailed,
                "the framework has no id".into(),
            );
            return;
        };
        // Nothing connects back: no executor token, no output bound.
        env.retain(|(k, _)| {
            k != cairn_tls::EXECUTOR_TOKEN_ENV && k != crate::command_executor::LOG_MAX_ENV
        });
        let conn = ExecConn(
            self.next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let executor_id = spec.executor_id.clone();
        self.direct.insert(
            conn,
            DirectTask {
                executor_id: executor_id.clone(),
                container_id: spec.container_id.clone(),
                prepared: Some(Prepared { spec, sandbox, env }),
                task: None,
                killing_state: false,
                kill_requested: false,
                shim: None,
            },
        );
        self.core.handle(
            Time::now(),
            Input::ExecutorSubscribed {
                conn,
                framework_id,
                executor_id,
            },
        );
    }

    /// What the core tells a direct task's (virtual) executor.
    pub(crate) fn direct_command(&mut self, conn: ExecConn, command: ExecutorCommand) {
        match command {
            ExecutorCommand::Launch { task, framework } => {
                let killing_state = framework.has(Capability::TaskKillingState);
                self.direct_start(conn, task, killing_state);
            }
            ExecutorCommand::Kill { grace, .. } => self.direct_kill(conn, grace),
            ExecutorCommand::Shutdown { grace } => {
                let started = self
                    .direct
                    .by_conn
                    .get(&conn)
                    .is_some_and(|d| d.task.is_some());
                if started {
                    self.direct_kill(conn, grace);
                } else if let Some(d) = self.direct.by_conn.get(&conn) {
                    // Nothing ever ran: the container ends as it is.
                    let container_id = d.container_id.clone();
                    self.direct_exited(&container_id, Termination::default());
                }
            }
            // The core keeps the updates until the framework acknowledges
            // them; a command task has no use for framework messages.
            ExecutorCommand::Acknowledged { .. } | ExecutorCommand::Message { .. } => {}
        }
    }

    fn direct_start(&mut self, conn: ExecConn, task: TaskInfo, killing_state: bool) {
        let Some(d) = self.direct.by_conn.get_mut(&conn) else {
            return;
        };
        if let Some(running) = &d.task {
            if *running == task.task_id {
                // Sent again after a restart of the agent, whose core had
                // not seen it start: its process runs.
                self.direct_update(conn, TaskState::Running, String::new(), None, None);
            } else {
                let message = format!("This container already runs task {running}");
                self.direct_update_of(
                    conn,
                    &task.task_id,
                    TaskState::Failed,
                    message,
                    None,
                    Some(Reason::CommandExecutorFailed),
                );
            }
            return;
        }
        let Some(prepared) = d.prepared.take() else {
            return;
        };
        d.task = Some(task.task_id.clone());
        d.killing_state = killing_state;
        let container_id = d.container_id.clone();
        let Prepared {
            spec,
            sandbox,
            mut env,
        } = prepared;
        let c = &task.command;
        env.extend(c.environment.iter().cloned());
        env.push((DIRECT_TASK_ENV.into(), "1".into()));
        env.push((
            EXIT_DIR_ENV.into(),
            self.exec.exit_dir.display().to_string(),
        ));
        if task.network == Network::None {
            env.push((TASK_NETWORK_ENV.into(), "none".into()));
        }
        let container = ContainerSpec {
            container_id: container_id.clone(),
            program: self.exec.program.clone(),
            args: crate::driver::container_exec_args(c),
            env,
            sandbox,
            resources: spec.resources.clone(),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            task_output: true,
        };
        self.direct_update(conn, TaskState::Starting, String::new(), None, None);
        match self.launcher.launch(container) {
            Ok(launched) => {
                tracing::debug!(%container_id, pid = launched.pid, "direct task started");
                self.record_pid(&container_id, launched.pid, true);
                if let Some(d) = self.direct.by_conn.get_mut(&conn) {
                    d.shim = Some(launched.pid);
                }
                self.watch_direct(container_id, launched.exited);
                self.direct_update(conn, TaskState::Running, String::new(), None, None);
            }
            Err(e) => {
                self.direct.by_container.remove(&container_id);
                self.direct.by_conn.remove(&conn);
                self.launch_failed(&container_id, Reason::ContainerLaunchFailed, e.to_string());
            }
        }
    }

    /// SIGTERM to the task's processes now, the container's destruction
    /// after `grace`.
    fn direct_kill(&mut self, conn: ExecConn, grace: Duration) {
        let Some(d) = self.direct.by_conn.get_mut(&conn) else {
            return;
        };
        if d.kill_requested || d.task.is_none() {
            return;
        }
        d.kill_requested = true;
        let (container_id, killing_state) = (d.container_id.clone(), d.killing_state);
        if killing_state {
            self.direct_update(conn, TaskState::Killing, String::new(), None, None);
        }
        self.direct_term(&container_id);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(Command::DirectGraceOver(container_id)).await;
        });
    }

    /// SIGTERM to the task's processes: those of the container outside its
    /// shim's session (the task starts a session of its own). A kill that
    /// comes before the shim has started the task reaches none of them, so
    /// it is sent again shortly, until it reaches the task or the container
    /// ends. The task is born with SIGTERM blocked (inherited from the
    /// shim), so one sent before it is ready to be ended by it is delivered
    /// when it unblocks it, never lost.
    pub(crate) fn direct_term(&mut self, container_id: &ContainerId) {
        let Some(shim) = self
            .direct
            .by_container
            .get(container_id)
            .and_then(|conn| self.direct.by_conn.get(conn))
            .map(|d| d.shim.and_then(|p| i32::try_from(p).ok()))
        else {
            return;
        };
        let shim = shim.map(nix::unistd::Pid::from_raw);
        match self.launcher.signal(container_id, Signal::SIGTERM, shim) {
            Ok(0) if shim.is_some() => {
                let (tx, container_id) = (self.tx.clone(), container_id.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(TERM_AGAIN).await;
                    let _ = tx.send(Command::DirectTerm(container_id)).await;
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%container_id, error = %e, "cannot signal the task"),
        }
    }

    pub(crate) fn direct_grace_over(&mut self, container_id: &ContainerId) {
        if self.direct.by_container.contains_key(container_id) {
            self.destroy(container_id.clone());
        }
    }

    /// Feeds the shim's end to the driver.
    fn watch_direct(&self, container_id: ContainerId, exited: oneshot::Receiver<Termination>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let termination = exited.await.unwrap_or_else(|_| Termination {
                message: Some("the launcher lost track of the task's process".into()),
                ..Termination::default()
            });
            let _ = tx
                .send(Command::DirectExited {
                    container_id,
                    termination,
                })
                .await;
        });
    }

    /// The task's process ended (or never started): its terminal update,
    /// then the container's end, as an executor's stream closing and its
    /// process exiting.
    pub(crate) fn direct_exited(&mut self, container_id: &ContainerId, termination: Termination) {
        let Some(conn) = self.direct.by_container.remove(container_id) else {
            return;
        };
        let Some(d) = self.direct.by_conn.remove(&conn) else {
            return;
        };
        let mut termination = termination;
        // Not the agent's child (started before it restarted): the shim
        // recorded the status.
        if termination.exit_code.is_none()
            && termination.signal.is_none()
            && let Some(code) = self.exit_record(container_id)
        {
            termination = Termination {
                exit_code: Some(code),
                ..Termination::default()
            };
        }
        if let Some(task_id) = &d.task {
            let (state, message) = ending(&termination, d.kill_requested);
            let limitation = if state == TaskState::Finished {
                None
            } else {
                self.launcher.limitation(container_id)
            };
            let status = new_status(
                &d.executor_id,
                task_id,
                state,
                message,
                termination.exit_code,
                None,
            );
            self.core.handle(
                Time::now(),
                Input::ExecutorUpdate {
                    conn,
                    status,
                    limitation,
                },
            );
        }
        let now = Time::now();
        self.core.handle(now, Input::ExecutorDisconnected { conn });
        self.core.handle(
            now,
            Input::ContainerExited {
                container_id: container_id.clone(),
                termination,
            },
        );
    }

    /// A direct task's container found again after a restart: alive (its
    /// shim's end is watched) or ended while the agent was down (its status
    /// recorded by the shim). Subscribed again, as its executor would.
    pub(crate) fn direct_recovered(
        &mut self,
        c: &RecoveredContainer,
        exited: Option<oneshot::Receiver<Termination>>,
    ) {
        let conn = ExecConn(
            self.next_conn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let killing_state =
            self.core.report().1.iter().any(|f| {
                f.id.as_ref() == Some(&c.framework_id) && f.has(Capability::TaskKillingState)
            });
        self.direct.insert(
            conn,
            DirectTask {
                executor_id: c.executor_id.clone(),
                container_id: c.container_id.clone(),
                prepared: None,
                // A command task's executor is named after its task.
                task: Some(TaskId::new(c.executor_id.as_str())),
                killing_state,
                kill_requested: false,
                shim: self.pids.get(&c.container_id).map(|p| p.pid),
            },
        );
        self.core.handle(
            Time::now(),
            Input::ExecutorSubscribed {
                conn,
                framework_id: c.framework_id.clone(),
                executor_id: c.executor_id.clone(),
            },
        );
        match exited {
            Some(exited) => self.watch_direct(c.container_id.clone(), exited),
            None => self.direct_exited(&c.container_id, Termination::default()),
        }
    }

    /// Removes exit records of containers this agent does not know (their
    /// tasks ended long ago, or belong to a work directory reused).
    pub(crate) fn forget_stale_exit_records(&self) {
        let Ok(dir) = std::fs::read_dir(&self.exec.exit_dir) else {
            return;
        };
        for entry in dir.flatten() {
            let known = entry.file_name().to_str().is_some_and(|name| {
                // A shim's record being written: `.<container id>.partial`.
                let name = name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".partial"))
                    .unwrap_or(name);
                self.direct
                    .by_container
                    .contains_key(&ContainerId::new(name))
            });
            if !known {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The shim writes its record under another name and renames it into
    /// place, so a record seen is complete.
    pub(crate) fn direct_exit_recorded(&self, container_id: &ContainerId) -> bool {
        self.exit_record(container_id).is_some()
    }

    /// The exit status a shim recorded for `container_id`. The record is
    /// removed once the container's end is checkpointed
    /// ([`Driver::forget_exit_record`]): an agent that dies before that
    /// reads it again.
    fn exit_record(&self, container_id: &ContainerId) -> Option<i32> {
        let path = self.exec.exit_dir.join(container_id.as_str());
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    }

    pub(crate) fn forget_exit_record(&self, container_id: &ContainerId) {
        let _ = std::fs::remove_file(self.exec.exit_dir.join(container_id.as_str()));
        // Left by a shim killed while writing (its container destroyed).
        let _ = std::fs::remove_file(self.exec.exit_dir.join(format!(".{container_id}.partial")));
    }

    /// The core destroys `container_id`: if it is a direct task's whose
    /// task was never started (no shim will report an end), it ends now.
    pub(crate) fn direct_destroyed(&mut self, container_id: &ContainerId) {
        let unstarted = self
            .direct
            .by_container
            .get(container_id)
            .and_then(|conn| self.direct.by_conn.get(conn))
            .is_some_and(|d| d.task.is_none());
        if unstarted {
            self.direct_exited(
                container_id,
                Termination {
                    message: Some("Destroyed before its task started".into()),
                    ..Termination::default()
                },
            );
        }
    }

    fn direct_update(
        &mut self,
        conn: ExecConn,
        state: TaskState,
        message: String,
        exit_code: Option<i32>,
        reason: Option<Reason>,
    ) {
        let Some(task_id) = self.direct.by_conn.get(&conn).and_then(|d| d.task.clone()) else {
            return;
        };
        self.direct_update_of(conn, &task_id, state, message, exit_code, reason);
    }

    fn direct_update_of(
        &mut self,
        conn: ExecConn,
        task_id: &TaskId,
        state: TaskState,
        message: String,
        exit_code: Option<i32>,
        reason: Option<Reason>,
    ) {
        let Some(d) = self.direct.by_conn.get(&conn) else {
            return;
        };
        let status = new_status(&d.executor_id, task_id, state, message, exit_code, reason);
        self.core.handle(
            Time::now(),
            Input::ExecutorUpdate {
                conn,
                status,
                limitation: None,
            },
        );
    }
}

/// An update as the task's executor would send it.
fn new_status(
    executor_id: &ExecutorId,
    task_id: &TaskId,
    state: TaskState,
    message: String,
    exit_code: Option<i32>,
    reason: Option<Reason>,
) -> TaskStatus {
    let mut s = TaskStatus::from_executor(task_id.clone(), state, message, Time::now());
    s.executor_id = Some(executor_id.clone());
    s.uuid = Some(StatusUuid(rand::random()));
    s.exit_code = exit_code;
    s.reason = reason;
    s
}

/// The task's terminal state and message from its shim's end.
fn ending(t: &Termination, kill_requested: bool) -> (TaskState, String) {
    let or_killed = |state| {
        if kill_requested {
            TaskState::Killed
        } else {
            state
        }
    };
    match (t.exit_code, t.signal) {
        (Some(0), _) => (
            or_killed(TaskState::Finished),
            "Command exited with status 0".into(),
        ),
        (Some(code), _) => (
            or_killed(TaskState::Failed),
            format!("Command exited with status {code}"),
        ),
        // The shim itself was killed: the container was destroyed.
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().into());
            (
                or_killed(TaskState::Failed),
                format!("Command terminated with signal {name}"),
            )
        }
        (None, None) => (
            TaskState::Failed,
            t.message.clone().unwrap_or_else(|| {
                "The task's process ended while the agent was down and its exit status was not recorded"
                    .into()
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> Termination {
        Termination {
            exit_code: Some(code),
            ..Termination::default()
        }
    }

    #[test]
    fn a_task_ends_by_its_status_and_by_whether_it_was_killed() {
        assert_eq!(ending(&exit(0), false).0, TaskState::Finished);
        assert_eq!(
            ending(&exit(3), false),
            (TaskState::Failed, "Command exited with status 3".into())
        );
        assert_eq!(ending(&exit(143), true).0, TaskState::Killed);
        assert_eq!(ending(&exit(0), true).0, TaskState::Killed);
        let destroyed = Termination {
            signal: Some(9),
            ..Termination::default()
        };
        assert_eq!(
            ending(&destroyed, true),
            (
                TaskState::Killed,
                "Command terminated with signal SIGKILL".into()
            )
        );
        assert_eq!(ending(&destroyed, false).0, TaskState::Failed);
        // Unknown: failed, killed or not.
        assert_eq!(ending(&Termination::default(), true).0, TaskState::Failed);
    }
}
