//! The Linux launcher: every container in cgroups of its own (cpu shares and
//! CFS quota, memory limit, pids limit) and, with namespaces, in new PID,
//! mount, UTS and IPC namespaces.
//!
//! Start-up of a container:
//!
//! ```text
//! agent --clone(VM|VFORK)--> shim: setsid, joins the container's cgroups
//!                 (writes 0 to each cgroup.procs), unshare(PID|NS|UTS|IPC),
//!                 exec executor binary (see `spawn.rs`)
//!   shim (mount/uts/ipc ns): private mounts, tmpfs /tmp, sandbox bound at
//!        /mnt/mesos/sandbox, hostname --fork--> init (PID 1): mounts /proc
//!        --fork--> executor (PID 2) --fork--> task processes
//! ```
//! The cgroups are joined before anything can fork, so no process of the
//! container ever runs outside them. When the executor exits, init exits,
//! and the kernel kills and reaps whatever else is left in the PID
//! namespace (double-forked daemons included).
//!
//! Destroying a container freezes its cgroup, SIGKILLs every process but the
//! shim (init's death ends the namespace; the shim then exits and is reaped
//! by the agent), and removes the cgroups. Mounts live only in the
//! container's mount namespace and vanish with it.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use cairn_agent_core::{Limitation, Termination};
use cairn_model::{ContainerId, Reason, Resources};

use super::cgroups::{CgroupStats, Cgroups, FavorDynmods, Limits};
use crate::checkpoint::PidRecord;
use crate::forkserver::{ForkServer, ForkServerError};
use crate::launcher::{ContainerSpec, LaunchError, Launched, Launcher, watch_pid};

/// Memory given to a container on top of its tasks' `mem`, for the executor
/// (as Mesos adds 32 MB for its command executor).
pub const EXECUTOR_MEM_OVERHEAD_MB: u64 = 32;

/// The sandbox's path inside a container with a mount namespace.
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";

#[derive(Debug)]
pub struct LinuxLauncher {
    cgroups: Cgroups,
    namespaces: bool,
    enable_cfs: bool,
    max_pids: i64,
    /// Container id to the shim's pid.
    shims: Mutex<HashMap<ContainerId, i32>>,
    /// Container id to its memory limit, for limitation messages.
    limits: Mutex<HashMap<ContainerId, (u64, u64)>>,
    /// Fast cgroup moves, while held (released with the launcher).
    favor_dynmods: Mutex<Option<FavorDynmods>>,
    /// Starts containers when it serves their program.
    fork_server: Option<ForkServer>,
}

impl LinuxLauncher {
    pub fn new(
        cgroups: Cgroups,
        namespaces: bool,
        enable_cfs: bool,
        max_pids: i64,
        favor_dynmods: Option<FavorDynmods>,
        fork_server: Option<ForkServer>,
    ) -> Self {
        LinuxLauncher {
            fork_server,
            favor_dynmods: Mutex::new(favor_dynmods),
            cgroups,
            namespaces,
            enable_cfs,
            max_pids,
            shims: Mutex::new(HashMap::new()),
            limits: Mutex::new(HashMap::new()),
        }
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }
}

/// A C string for a path, for use between fork and exec.
fn cpath(p: &std::path::Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

impl Launcher for LinuxLauncher {
    fn name(&self) -> &'static str {
        if self.namespaces {
            "cgroups,namespaces"
        } else {
            "cgroups"
        }
    }

    fn launch(&self, spec: ContainerSpec) -> Result<Launched, LaunchError> {
        let id = spec.container_id.clone();
        let (cpus, task_mb, limit_mb) = container_shape(&spec.resources);
        let limits = Limits::new(
            cpus,
            i64::try_from(limit_mb << 20).unwrap_or(i64::MAX),
            self.max_pids,
            self.enable_cfs,
        );
        let t0 = std::time::Instant::now();
        let cg = self
            .cgroups
            .create(&id, &limits)
            .map_err(|e| LaunchError::Isolation {
                container: id.clone(),
                reason: e.to_string(),
            })?;
        let t_cg = t0.elapsed();
        if let Ok(mut l) = self.limits.lock() {
            l.insert(id.clone(), (task_mb, limit_mb));
        }
        let mut spec = spec;
        if self.namespaces {
            spec.env.push((
                "CAIRN_CONTAINER_SANDBOX".into(),
                spec.sandbox.display().to_string(),
            ));
            spec.env
                .push(("CAIRN_CONTAINER_HOSTNAME".into(), hostname_for(&id)));
            spec.env
                .push(("MESOS_SANDBOX".into(), CONTAINER_SANDBOX.into()));
        }
        let spawned = crate::spawn::executor_spec(&spec)
            .map_err(|source| LaunchError::Open {
                path: spec.output().0,
                source,
            })
            .and_then(|mut s| {
                s.cgroup_procs = self
                    .cgroups
                    .procs_files(&cg)
                    .iter()
                    .filter_map(|p| cpath(p))
                    .collect();
                // The executor should be the OOM killer's last choice in
                // its container; tasks reset this to 0.
                s.oom_score_adj = Some(b"-999");
                if self.namespaces {
                    s.unshare = libc::CLONE_NEWPID
                        | libc::CLONE_NEWNS
                        | libc::CLONE_NEWUTS
                        | libc::CLONE_NEWIPC;
                }
                let forked = match &self.fork_server {
                    Some(f) if f.serves(&s) => match f.spawn(&s) {
                        Ok(c) => Some(Ok(c)),
                        Err(ForkServerError::Step { step, source }) => Some(Err(
                            std::io::Error::new(source.kind(), format!("{step}: {source}")),
                        )),
                        // A child may have joined the container: the start
                        // fails, and the container is destroyed below.
                        Err(e @ ForkServerError::Lost { .. }) => {
                            Some(Err(std::io::Error::other(e.to_string())))
                        }
                        // Nothing was started (the server is gone,
                        // could not fork, or cannot take the request):
                        // execute instead.
                        Err(
                            e @ (ForkServerError::Gone { .. }
                            | ForkServerError::NotStarted { .. }
                            | ForkServerError::Request(_)
                            | ForkServerError::Start { .. }),
                        ) => {
                            tracing::warn!(container_id = %id, error = %e, "starting the container by executing the agent's binary");
                            None
                        }
                    },
                    _ => None,
                };
                forked
                    .unwrap_or_else(|| crate::spawn::spawn(&s))
                    .map_err(|source| LaunchError::Spawn {
                        container: id.clone(),
                        program: spec.program.clone(),
                        source,
                    })
            });
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = self.cgroups.destroy(&id, None);
                return Err(e);
            }
        };
        let pid = child.pid;
        tracing::debug!(container_id = %id, cgroups_us = t_cg.as_micros() as u64, spawn_us = (t0.elapsed() - t_cg).as_micros() as u64, "container started");
        if let Ok(mut s) = self.shims.lock() {
            s.insert(id.clone(), i32::try_from(pid).unwrap_or(0));
        }
        Ok(Launched {
            pid,
            exited: crate::spawn::watch(child),
        })
    }

    fn signal(
        &self,
        container_id: &ContainerId,
        signal: nix::sys::signal::Signal,
        spare: Option<nix::unistd::Pid>,
    ) -> Result<usize, LaunchError> {
        Ok(self.cgroups.signal(container_id, signal, spare))
    }

    fn update(&self, container_id: &ContainerId, resources: &Resources) -> Result<(), LaunchError> {
        let (cpus, task_mb, limit_mb) = container_shape(resources);
        let limits = Limits::new(
            cpus,
            i64::try_from(limit_mb << 20).unwrap_or(i64::MAX),
            self.max_pids,
            self.enable_cfs,
        );
        self.cgroups
            .update(container_id, &limits)
            .map_err(|e| LaunchError::Isolation {
                container: container_id.clone(),
                reason: e.to_string(),
            })?;
        if let Ok(mut l) = self.limits.lock() {
            l.insert(container_id.clone(), (task_mb, limit_mb));
        }
        Ok(())
    }

    fn destroy(&self, container_id: &ContainerId) -> Result<(), LaunchError> {
        let shim = self
            .shims
            .lock()
            .ok()
            .and_then(|mut s| s.remove(container_id));
        if let Ok(mut l) = self.limits.lock() {
            l.remove(container_id);
        }
        self.cgroups
            .destroy(container_id, shim)
            .map_err(|e| LaunchError::Destroy {
                container: container_id.clone(),
                reason: e.to_string(),
            })
    }

    fn recover(
        &self,
        container_id: &ContainerId,
        pid: PidRecord,
        resources: &Resources,
    ) -> Option<tokio::sync::oneshot::Receiver<Termination>> {
        let exited = watch_pid(pid)?;
        if let Ok(mut s) = self.shims.lock() {
            s.insert(container_id.clone(), i32::try_from(pid.pid).unwrap_or(0));
        }
        let task_mb = resources.mem().milli() / 1000;
        if let Ok(mut l) = self.limits.lock() {
            l.insert(
                container_id.clone(),
                (task_mb, task_mb + EXECUTOR_MEM_OVERHEAD_MB),
            );
        }
        Some(exited)
    }

    fn limitation(&self, container_id: &ContainerId) -> Option<Limitation> {
        if self.cgroups.oom_kills(container_id) == 0 {
            return None;
        }
        let (task_mb, limit_mb) = self
            .limits
            .lock()
            .ok()
            .and_then(|l| l.get(container_id).copied())
            .unwrap_or((0, 0));
        Some(Limitation {
            reason: Reason::ContainerLimitationMemory,
            message: format!(
                "Memory limit exceeded: the container's limit is {limit_mb} MB ({task_mb} MB for the task, {EXECUTOR_MEM_OVERHEAD_MB} MB for its executor)"
            ),
        })
    }

    fn usage(&self, container_id: &ContainerId) -> Option<CgroupStats> {
        self.cgroups.stats(container_id)
    }

    fn release(&self) {
        self.cgroups.remove_root();
        if let Ok(mut f) = self.favor_dynmods.lock() {
            f.take();
        }
    }

    fn cleanup_orphans(&self, keep: &[ContainerId]) -> Vec<ContainerId> {
        let mut removed = Vec::new();
        for id in self.cgroups.list() {
            if keep.contains(&id) {
                continue;
            }
            match self.cgroups.destroy(&id, None) {
                Ok(()) => removed.push(id),
                Err(e) => {
                    tracing::warn!(container_id = %id, error = %e, "cannot remove a container left by an earlier run")
                }
            }
        }
        removed
    }
}

/// A container's cpus, its tasks' memory and its memory limit (MB) for
/// `resources`: the executor gets its overhead on top.
fn container_shape(resources: &Resources) -> (f64, u64, u64) {
    let cpus = resources.cpus().as_f64().max(0.01);
    let task_mb = resources.mem().milli() / 1000;
    (cpus, task_mb, task_mb + EXECUTOR_MEM_OVERHEAD_MB)
}

/// A container's hostname: short and unique, from its id.
pub fn hostname_for(id: &ContainerId) -> String {
    let s: String = id
        .as_str()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(63)
        .collect();
    if s.is_empty() { "container".into() } else { s }
}
