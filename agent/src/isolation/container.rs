//! Inside a new container: the first thing the executor binary does when the
//! Linux launcher started it with namespaces (see `linux.rs`).
//!
//! It runs single-threaded (before any runtime starts), in the new mount, UTS
//! and IPC namespaces, with the new PID namespace waiting for its first
//! child. It sets up the mounts and hostname, forks the namespace's init
//! (PID 1), which mounts `/proc` and forks the executor (PID 2). Only the
//! executor returns from [`enter`]; the shim and init exit with the
//! executor's status.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, sethostname};
use thiserror::Error;

use super::linux::CONTAINER_SANDBOX;

#[derive(Debug, Error)]
pub enum ContainerError {
    #[error("container set-up: {step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: nix::Error,
    },
    #[error("container set-up: {step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ContainerError {
    let step = what.into();
    move |source| ContainerError::Setup { step, source }
}

/// Whether this process was started as a container's shim.
pub fn is_container_start() -> bool {
    std::env::var_os("CAIRN_CONTAINER_SANDBOX").is_some()
}

/// Sets the container up. Returns only in the executor process; the shim and
/// init processes exit from here.
pub fn enter() -> Result<(), ContainerError> {
    let sandbox = std::env::var("CAIRN_CONTAINER_SANDBOX").unwrap_or_default();
    let hostname = std::env::var("CAIRN_CONTAINER_HOSTNAME").unwrap_or_else(|_| "container".into());

    // Nothing mounted here propagates to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("make mounts private"))?;
    // A handle on the sandbox before anything is mounted over its path.
    let sandbox_fd: OwnedFd = open(
        Path::new(&sandbox),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(step(format!("open sandbox {sandbox}")))?;
    std::fs::create_dir_all("/mnt").map_err(|source| ContainerError::Io {
        step: "create /mnt".into(),
        source,
    })?;
    mount(
        Some("tmpfs"),
        "/mnt",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .map_err(step("mount tmpfs on /mnt"))?;
    std::fs::create_dir_all(CONTAINER_SANDBOX).map_err(|source| ContainerError::Io {
        step: format!("create {CONTAINER_SANDBOX}"),
        source,
    })?;
    let fd_path = format!("/proc/self/fd/{}", sandbox_fd.as_raw_fd());
    mount(
        Some(fd_path.as_str()),
        CONTAINER_SANDBOX,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step(format!("bind the sandbox at {CONTAINER_SANDBOX}")))?;
    drop(sandbox_fd);
    mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .map_err(step("mount a private /tmp"))?;
    sethostname(&hostname).map_err(step("set the hostname"))?;

    // SAFETY: this process is single-threaded (no runtime or other thread
    // has been started), so the child may do anything after fork.
    match unsafe { fork() }.map_err(step("fork the container's init"))? {
        ForkResult::Parent { child } => std::process::exit(wait_exit_code(child)),
        ForkResult::Child => {}
    }
    // PID 1 of the new namespace.
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(step("mount /proc"))?;
    // SAFETY: still single-threaded, as above.
    match unsafe { fork() }.map_err(step("fork the executor"))? {
        ForkResult::Parent { child } => std::process::exit(init(child)),
        ForkResult::Child => {}
    }
    // The executor: its environment points inside the container.
    // SAFETY: single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::remove_var("CAIRN_CONTAINER_SANDBOX");
        std::env::remove_var("CAIRN_CONTAINER_HOSTNAME");
        std::env::set_var("MESOS_SANDBOX", CONTAINER_SANDBOX);
    }
    std::env::set_current_dir(CONTAINER_SANDBOX).map_err(|source| ContainerError::Io {
        step: format!("enter {CONTAINER_SANDBOX}"),
        source,
    })?;
    Ok(())
}

/// `<binary> container-exec -- program args...`: sets the container up
/// (when the launcher made one with namespaces), then execs `program` as
/// its executor, in the container's sandbox. Returns only on failure.
pub fn exec_main(args: &[String]) -> Result<std::convert::Infallible, ContainerError> {
    use std::os::unix::process::CommandExt;
    let rest = match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => args,
    };
    let Some((program, program_args)) = rest.split_first() else {
        return Err(ContainerError::Io {
            step: "container-exec: no program given".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    };
    if is_container_start() {
        enter()?;
    }
    let err = std::process::Command::new(program)
        .args(program_args)
        .exec();
    Err(ContainerError::Io {
        step: format!("exec {program}"),
        source: err,
    })
}

/// The exit code a shell would report for `pid`'s end.
fn wait_exit_code(pid: Pid) -> i32 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => return 1,
        }
    }
}

/// PID 1: reaps every process of the namespace until the executor ends, then
/// ends with its status (which makes the kernel kill whatever is left).
fn init(executor: Pid) -> i32 {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == executor => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == executor => return 128 + sig as i32,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return 1,
        }
    }
}
