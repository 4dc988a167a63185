//! The launcher seam: starting and destroying containers. The `posix`
//! launcher (process sessions only) lives here; isolating launchers implement
//! the same trait.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cairn_agent_core::{Limitation, Termination};
use cairn_model::{ContainerId, Resources};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::checkpoint::PidRecord;
use crate::isolation::cgroups::CgroupStats;

/// What to start in a new container: the executor program and its context.
#[derive(Clone)]
pub struct ContainerSpec {
    pub container_id: ContainerId,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Absolute path; exists before `launch` is called.
    pub sandbox: PathBuf,
    pub resources: Resources,
    /// Unix user to run as; `None` runs as the agent's user.
    pub user: Option<String>,
    /// The program is a task the agent runs itself (no executor): its
    /// output goes to the sandbox's `stdout` and `stderr`, not to
    /// `executor.log`.
    pub task_output: bool,
}

impl ContainerSpec {
    /// The files the container's first process writes its stdout and stderr
    /// to: an executor's `executor.log`, a direct task's `stdout` and
    /// `stderr`.
    pub fn output(&self) -> (PathBuf, PathBuf) {
        if self.task_output {
            (self.sandbox.join("stdout"), self.sandbox.join("stderr"))
        } else {
            let log = self.sandbox.join("executor.log");
            (log.clone(), log)
        }
    }
}

/// Names of the environment only: it holds the executor's token.
impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("container_id", &self.container_id)
            .field("program", &self.program)
            .field("args", &self.args)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("sandbox", &self.sandbox)
            .field("resources", &self.resources)
            .field("user", &self.user)
            .field("task_output", &self.task_output)
            .finish()
    }
}

/// A started container.
#[derive(Debug)]
pub struct Launched {
    pub pid: u32,
    /// Yields once, when the executor process has ended.
    pub exited: oneshot::Receiver<Termination>,
}

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start executor {program} for container {container}: {source}")]
    Spawn {
        container: ContainerId,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot isolate container {container}: {reason}")]
    Isolation {
        container: ContainerId,
        reason: String,
    },
    #[error("cannot kill the processes of container {container}: {reason}")]
    Destroy {
        container: ContainerId,
        reason: String,
    },
}

/// Starts and destroys containers.
///
/// Contract: `launch` returns once the executor process exists, and its
/// `exited` yields exactly once, when that process ends. `destroy` kills every
/// process of the container (the executor and all it started) and releases
/// what `launch` set up; it is idempotent and succeeds for a container the
/// launcher does not know (already destroyed, or from before a restart).
/// Both are called from the agent's driver and must not block for long.
pub trait Launcher: Send + Sync + std::fmt::Debug + 'static {
    /// The isolation this launcher provides, for logs and `/state`.
    fn name(&self) -> &'static str;
    fn launch(&self, spec: ContainerSpec) -> Result<Launched, LaunchError>;
    fn destroy(&self, container_id: &ContainerId) -> Result<(), LaunchError>;
    /// Resizes a live container to `resources` (its executor took on or
    /// ended a task). Isolation without limits has nothing to do.
    fn update(
        &self,
        _container_id: &ContainerId,
        _resources: &Resources,
    ) -> Result<(), LaunchError> {
        Ok(())
    }
    /// Sends `signal` to every process of the container (a task's polite
    /// stop before `destroy`) except those of the session led by `spare`
    /// (a direct task's shim and its namespace's init, which outlive the
    /// task to report its end). Returns how many were signalled; one pass,
    /// so a process forked meanwhile may be missed.
    fn signal(
        &self,
        container_id: &ContainerId,
        signal: Signal,
        spare: Option<Pid>,
    ) -> Result<usize, LaunchError>;
    /// A limit the container hit (out of memory), if isolation enforces any.
    fn limitation(&self, _container_id: &ContainerId) -> Option<Limitation> {
        None
    }
    /// The container's resource use, if isolation measures it.
    fn usage(&self, _container_id: &ContainerId) -> Option<CgroupStats> {
        None
    }
    /// Takes back a container started before the agent restarted, whose
    /// executor is `pid`: `None` if that process is gone (or the pid now
    /// names another process). The receiver yields when it ends; its exit
    /// status is unknown (it is not the agent's child any more).
    fn recover(
        &self,
        container_id: &ContainerId,
        pid: PidRecord,
        _resources: &Resources,
    ) -> Option<oneshot::Receiver<Termination>> {
        let _ = container_id;
        watch_pid(pid)
    }
    /// Destroys containers left by an earlier run, except `keep`; returns
    /// those removed.
    fn cleanup_orphans(&self, _keep: &[ContainerId]) -> Vec<ContainerId> {
        Vec::new()
    }
    /// Releases what the launcher holds for the agent itself (its cgroup
    /// root), once every container is destroyed.
    fn release(&self) {}
}

/// Process sessions only: the executor starts in a session of its own, and
/// destroying the container kills every process still in that session. A
/// process that starts a new session itself escapes it; only cgroups contain
/// that. Tasks run as the agent's user.
#[derive(Debug, Default)]
pub struct PosixLauncher {
    sessions: Mutex<HashMap<ContainerId, i32>>,
}

impl PosixLauncher {
    pub fn new() -> Self {
        PosixLauncher::default()
    }
}

/// Pids of the processes in session `sid`, read from `/proc`.
pub fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may hold spaces and parentheses; the
                    // fields after its closing parenthesis are fixed:
                    // state ppid pgrp session ... Zombies are already dead
                    // (their parent reaps them) and are skipped.
                    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
                    let state = fields.next()?;
                    let session = fields.nth(2)?.parse::<i32>().ok()?;
                    (state != "Z").then_some(session)
                })
                == Some(sid)
        })
        .collect()
}

impl Launcher for PosixLauncher {
    fn name(&self) -> &'static str {
        "posix"
    }

    fn recover(
        &self,
        container_id: &ContainerId,
        pid: PidRecord,
        _resources: &Resources,
    ) -> Option<oneshot::Receiver<Termination>> {
        let exited = watch_pid(pid)?;
        // The executor leads its own session (setsid at launch).
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(container_id.clone(), i32::try_from(pid.pid).unwrap_or(0));
        }
        Some(exited)
    }

    fn launch(&self, spec: ContainerSpec) -> Result<Launched, LaunchError> {
        let spawn_spec =
            crate::spawn::executor_spec(&spec).map_err(|source| LaunchError::Open {
                path: spec.output().0,
                source,
            })?;
        let child = crate::spawn::spawn(&spawn_spec).map_err(|source| LaunchError::Spawn {
            container: spec.container_id.clone(),
            program: spec.program.clone(),
            source,
        })?;
        let pid = child.pid;
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(spec.container_id.clone(), i32::try_from(pid).unwrap_or(0));
        }
        Ok(Launched {
            pid,
            exited: crate::spawn::watch(child),
        })
    }

    fn signal(
        &self,
        container_id: &ContainerId,
        signal: Signal,
        spare: Option<Pid>,
    ) -> Result<usize, LaunchError> {
        let sid = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(container_id).copied())
            .filter(|s| *s > 1);
        let Some(sid) = sid else {
            return Err(LaunchError::Destroy {
                container: container_id.clone(),
                reason: "no such container".into(),
            });
        };
        if spare.is_some_and(|s| s.as_raw() == sid) {
            return Ok(0);
        }
        Ok(session_members(sid)
            .into_iter()
            .filter(|pid| kill(Pid::from_raw(*pid), signal).is_ok())
            .count())
    }

    fn destroy(&self, container_id: &ContainerId) -> Result<(), LaunchError> {
        let sid = match self.sessions.lock() {
            Ok(mut s) => s.remove(container_id),
            Err(_) => None,
        };
        let Some(sid) = sid.filter(|s| *s > 1) else {
            return Ok(());
        };
        // The session leader's group first, then every straggler in the
        // session; repeat while processes fork during the kill.
        let _ = killpg(Pid::from_raw(sid), Signal::SIGKILL);
        for _ in 0..50 {
            let members = session_members(sid);
            if members.is_empty() {
                return Ok(());
            }
            for pid in members {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = session_members(sid);
        if left.is_empty() {
            Ok(())
        } else {
            Err(LaunchError::Destroy {
                container: container_id.clone(),
                reason: format!("processes {left:?} survived SIGKILL"),
            })
        }
    }
}

/// The start time of process `pid` (clock ticks after boot; field 22 of
/// `/proc/<pid>/stat`): with the pid, it names one process for good.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name's closing parenthesis, from the
    // third (state) on: the start time is the 20th of them.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Watches a process that is not the agent's child: the receiver yields when
/// it exits. `None` if it is already gone or the pid was reused.
pub fn watch_pid(pid: PidRecord) -> Option<oneshot::Receiver<Termination>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    if pid.pid == 0 || process_start_time(pid.pid) != Some(pid.start_time) {
        return None;
    }
    let raw = i32::try_from(pid.pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing
    // else.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).ok()?) };
    // The pid might have been reused between the check and the open.
    if process_start_time(pid.pid) != Some(pid.start_time) {
        return None;
    }
    // SAFETY: the AsyncFd owns `fd` (an OwnedFd), which stays open and
    // names the same pidfd until the AsyncFd is dropped.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .ok()?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        // A pidfd becomes readable when the process exits.
        let _ = afd.readable().await;
        let _ = tx.send(Termination {
            message: Some("The executor exited; its status is unknown (it was started before the agent restarted)".into()),
            ..Termination::default()
        });
    });
    Some(rx)
}

/// Whether process `pid` was started with `entry` (`NAME=value`) in its
/// environment.
pub(crate) fn environ_has(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()))
}

/// Finds the executor of a container whose pid was not recorded (the agent
/// died between starting it and writing its pid): the session leader whose
/// environment names the container (`CAIRN_CONTAINER_ID`, set at launch)
/// and whose parent's does not (a direct task, a session leader too, still
/// shows its shim's environment until it execs).
pub fn find_executor(container_id: &ContainerId) -> Option<PidRecord> {
    let needle = format!("CAIRN_CONTAINER_ID={container_id}");
    let dir = std::fs::read_dir("/proc").ok()?;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if !environ_has(pid, &needle) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp session ...: the executor leads its session.
        let leads = fields.get(3).and_then(|s| s.parse::<u32>().ok()) == Some(pid);
        let topmost = fields
            .get(1)
            .and_then(|ppid| ppid.parse().ok())
            .is_some_and(|ppid| !environ_has(ppid, &needle));
        if leads && topmost && fields.first() != Some(&"Z") {
            let start_time = fields.get(19)?.parse().ok()?;
            return Some(PidRecord {
                pid,
                start_time,
                direct: crate::direct::is_direct(pid),
            });
        }
    }
    None
}
