//! Isolation of containers: which launcher the agent uses.
//!
//! - `posix`: process sessions only (any user, any host).
//! - `cgroups,namespaces`: cgroups (cpu, memory, pids, freezer) and PID,
//!   mount, UTS and IPC namespaces; needs root.
//! - `cgroups`: cgroups only.
//! - `auto` (the default): `cgroups,namespaces` when it works here, else
//!   `posix` with a warning.

pub mod cgroups;
pub mod container;
pub mod linux;

use std::path::Path;
use std::sync::Arc;

use crate::launcher::{Launcher, PosixLauncher};

/// Options of the Linux launcher.
#[derive(Clone, Debug)]
pub struct LinuxOptions {
    pub enable_cfs: bool,
    pub max_pids: i64,
    /// Relative cgroup path for this agent's containers.
    pub cgroups_root: Option<String>,
    /// Keep the kernel's favordynmods mode on (fast container starts).
    pub favor_dynmods: bool,
    /// The binary to run a fork server of (see [`crate::forkserver`]).
    pub fork_server: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("unknown isolation {0:?} (auto, posix, cgroups,namespaces or cgroups)")]
    Unknown(String),
    #[error("isolation {wanted:?} is not available: {reason}")]
    Unavailable { wanted: String, reason: String },
}

/// The launcher for `--isolation`, and a warning when `auto` fell back.
pub fn select(
    isolation: &str,
    work_dir: &Path,
    options: &LinuxOptions,
) -> Result<(Arc<dyn Launcher>, Option<String>), IsolationError> {
    let root = options
        .cgroups_root
        .clone()
        .unwrap_or_else(|| cgroups::agent_root(work_dir));
    let linux = |namespaces: bool| -> Result<Arc<dyn Launcher>, String> {
        let cg = cgroups::Cgroups::detect(&root).map_err(|e| e.to_string())?;
        let favor = if options.favor_dynmods {
            match cgroups::FavorDynmods::enable(work_dir) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, "container starts may be slow: favordynmods is not available");
                    None
                }
            }
        } else {
            None
        };
        let fork_server = options.fork_server.as_deref().and_then(|program| {
            crate::forkserver::ForkServer::start(program)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "containers start by executing the agent's binary");
                })
                .ok()
        });
        Ok(Arc::new(linux::LinuxLauncher::new(
            cg,
            namespaces,
            options.enable_cfs,
            options.max_pids,
            favor,
            fork_server,
        )))
    };
    let normalized: String = isolation
        .split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",");
    match normalized.as_str() {
        "posix" => Ok((Arc::new(PosixLauncher::new()), None)),
        "cgroups,namespaces" | "namespaces,cgroups" | "cgroups" => {
            let namespaces = normalized != "cgroups";
            linux(namespaces)
                .map(|l| (l, None))
                .map_err(|reason| IsolationError::Unavailable {
                    wanted: normalized.clone(),
                    reason,
                })
        }
        "auto" => match linux(true) {
            Ok(l) => Ok((l, None)),
            Err(reason) => Ok((
                Arc::new(PosixLauncher::new()),
                Some(format!(
                    "cgroups cannot be used ({reason}); falling back to --isolation posix: tasks are not limited to their resources and may outlive a kill"
                )),
            )),
        },
        other => Err(IsolationError::Unknown(other.to_string())),
    }
}
