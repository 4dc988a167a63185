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
    // Named for `ps` and `top`: each process of a container says what it
    // is (the name is informational; errors are harmless).
    let _ = nix::sys::prctl::set_name(c"cairn-shim");
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
        ForkResult::Parent { child } => shim_exit(wait_exit_code(child)),
        ForkResult::Child => {}
    }
    // PID 1 of the new namespace.
    let _ = nix::sys::prctl::set_name(c"cairn-init");
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
///
/// With [`DIRECT_TASK_ENV`] set, `program` is a task the agent runs without
/// an executor, and this process stays as its shim: it waits for the task
/// and ends with its status (see [`direct_task_setup`]).
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
    let direct = std::env::var_os(DIRECT_TASK_ENV).is_some();
    if direct {
        direct_task_setup()?;
    }
    if is_container_start() {
        enter()?;
    } else if direct {
        // No namespaces: this process waits for the task as the shim.
        let _ = nix::sys::prctl::set_name(c"cairn-shim");
        // SAFETY: this process is single-threaded (no runtime or other
        // thread has been started), so the child may do anything after fork.
        match unsafe { fork() }.map_err(step("fork the task"))? {
            ForkResult::Parent { child } => shim_exit(wait_exit_code(child)),
            ForkResult::Child => {}
        }
    }
    if direct {
        direct_task_enter()?;
    }
    let err = std::process::Command::new(program)
        .args(program_args)
        .exec();
    Err(ContainerError::Io {
        step: format!("exec {program}"),
        source: err,
    })
}

/// Set by the agent for a task it runs without an executor.
pub const DIRECT_TASK_ENV: &str = "CAIRN_DIRECT_TASK";
/// Where a direct task's shim records the task's exit status when the agent
/// that started it is gone (a restarted agent reads it there).
pub const EXIT_DIR_ENV: &str = "CAIRN_EXIT_DIR";
/// `none`: the task gets a network namespace of its own with loopback only.
pub const TASK_NETWORK_ENV: &str = "CAIRN_TASK_NETWORK";
/// The user a direct task runs as ("" or unset: the agent's).
pub const TASK_USER_ENV: &str = "CAIRN_TASK_USER";

/// Where a direct task's shim records its task's status when it ends.
struct ShimRecord {
    dir: OwnedFd,
    name: String,
}

static SHIM_RECORD: std::sync::OnceLock<ShimRecord> = std::sync::OnceLock::new();

/// The shim's side of a direct task, before the container is entered:
/// SIGTERM is blocked, not ignored, and init and the task inherit that.
/// The agent sends it to the task's processes only, but the shim and init
/// must outlive the task to report its end whoever sends it; and a SIGTERM
/// that reaches the task before it has reset its disposition stays pending
/// until [`direct_task_enter`] unblocks it, where an ignored one would be
/// lost. The exit directory is opened while the host's mounts are still in
/// view.
fn direct_task_setup() -> Result<(), ContainerError> {
    sigterm_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK).map_err(step("block SIGTERM"))?;
    if let (Some(dir), Ok(name)) = (
        std::env::var_os(EXIT_DIR_ENV),
        std::env::var("CAIRN_CONTAINER_ID"),
    ) {
        // A file name of the agent's own making; anything else is refused
        // rather than written by root.
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ContainerError::Io {
                step: format!("record exits as {name:?}"),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        let dir = open(
            Path::new(&dir),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(step(format!("open the exit directory {}", dir.display())))?;
        let _ = SHIM_RECORD.set(ShimRecord { dir, name });
    }
    Ok(())
}

/// Ends the shim with its task's status, recorded first: an agent that dies
/// before it has checkpointed the task's end (or that is gone, the shim
/// re-parented) reads it there when it starts again. The agent removes the
/// record once the end is checkpointed. Not fsynced: it outlives a crash of
/// the agent, not of the machine (whose reboot ends the task anyway).
fn shim_exit(code: i32) -> ! {
    if let Some(r) = SHIM_RECORD.get() {
        use std::io::Write;
        // Written under a temporary name and renamed into place: an agent
        // that reads the record never sees it half-written.
        let partial = format!(".{}.partial", r.name);
        let file = nix::fcntl::openat(
            &r.dir,
            partial.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        );
        if let Ok(fd) = file
            && std::fs::File::from(fd)
                .write_all(code.to_string().as_bytes())
                .is_ok()
        {
            let _ = nix::fcntl::renameat(&r.dir, partial.as_str(), &r.dir, r.name.as_str());
        }
    }
    std::process::exit(code)
}

/// The task's side of a direct task, in its own process just before exec:
/// a session of its own (its signals, `kill 0` included, stay among its
/// processes), SIGTERM back to its default, an ordinary OOM score, its user
/// looked up (before a network namespace of its own, where a network user
/// database could not be reached), that namespace when asked, and the
/// user's identity last (nothing privileged is possible after it). The
/// agent's own variables are not the task's.
fn direct_task_enter() -> Result<(), ContainerError> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    nix::unistd::setsid().map_err(step("start a session"))?;
    // SAFETY: SIG_DFL installs no handler code; single-threaded here.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigDfl) }.map_err(step("reset SIGTERM"))?;
    // A kill sent meanwhile ends the task here.
    sigterm_mask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK).map_err(step("unblock SIGTERM"))?;
    let _ = std::fs::write("/proc/self/oom_score_adj", "0");
    let user = std::env::var(TASK_USER_ENV).unwrap_or_default();
    let identity = if user.is_empty() {
        None
    } else {
        let u = nix::unistd::User::from_name(&user)
            .map_err(step(format!("look user {user} up")))?
            .ok_or_else(|| ContainerError::Io {
                step: format!("look user {user} up"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        (u.uid != nix::unistd::geteuid()).then_some((u.uid, u.gid))
    };
    if std::env::var(TASK_NETWORK_ENV).as_deref() == Ok("none") {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(step("enter a network namespace of its own"))?;
        crate::spawn::loopback_up().map_err(|source| ContainerError::Io {
            step: "bring loopback up".into(),
            source,
        })?;
    }
    // SAFETY: single-threaded; nothing reads the environment concurrently.
    unsafe {
        for name in [
            DIRECT_TASK_ENV,
            EXIT_DIR_ENV,
            TASK_NETWORK_ENV,
            TASK_USER_ENV,
            "CAIRN_CONTAINER_ID",
        ] {
            std::env::remove_var(name);
        }
    }
    if let Some((uid, gid)) = identity {
        nix::unistd::setgroups(&[]).map_err(step("drop supplementary groups"))?;
        nix::unistd::setgid(gid).map_err(step(format!("switch to group {gid}")))?;
        nix::unistd::setuid(uid).map_err(step(format!("switch to user {user}")))?;
    }
    Ok(())
}

fn sigterm_mask(how: nix::sys::signal::SigmaskHow) -> nix::Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    nix::sys::signal::sigprocmask(how, Some(&set), None)
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
