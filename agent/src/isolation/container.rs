//! Inside a new container: the first thing the executor binary does when the
//! Linux launcher started it with namespaces (see `linux.rs`).
//!
//! It runs single-threaded (before any runtime starts), in the new mount, UTS
//! and IPC namespaces, as PID 1 of the new PID namespace (the launcher
//! creates it there, `spawn::NEW_AT_CLONE`), so the shim is also the
//! container's init. It sets up the mounts and hostname, mounts `/proc` and
//! starts the executor (PID 2):
//! forked for the command executor run in-process, which alone returns from
//! [`enter`]; spawned without a copy of the shim for a program
//! ([`exec_main`]). The shim exits with the executor's status.

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

/// Sets the container up. Returns only in the executor process; the shim
/// exits from here.
pub fn enter() -> Result<(), ContainerError> {
    shim_setup()?;
    init_setup()?;
    // SAFETY: this process is single-threaded (no runtime or other thread
    // has been started), so the child may do anything after fork.
    match unsafe { fork() }.map_err(step("fork the executor"))? {
        ForkResult::Parent { child } => shim_exit(init(child)),
        ForkResult::Child => {}
    }
    // The executor: its environment points inside the container.
    // SAFETY: single-threaded; nothing reads the environment concurrently.
    unsafe {
        for name in CONTAINER_ENV {
            std::env::remove_var(name);
        }
        std::env::set_var("MESOS_SANDBOX", CONTAINER_SANDBOX);
    }
    std::env::set_current_dir(CONTAINER_SANDBOX).map_err(|source| ContainerError::Io {
        step: format!("enter {CONTAINER_SANDBOX}"),
        source,
    })?;
    Ok(())
}

/// What the launcher tells a container's shim, not passed on to what runs
/// in the container.
const CONTAINER_ENV: [&str; 2] = ["CAIRN_CONTAINER_SANDBOX", "CAIRN_CONTAINER_HOSTNAME"];

/// The shim's part, in the new mount, UTS and IPC namespaces: the mounts
/// and the hostname.
fn shim_setup() -> Result<(), ContainerError> {
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
    sethostname(&hostname).map_err(step("set the hostname"))
}

/// The init's part: the launcher creates the shim as PID 1 of the new PID
/// namespace (`spawn::NEW_AT_CLONE`), so the shim is the container's init
/// (its end makes the kernel kill whatever is left in the namespace); it
/// mounts the namespace's own `/proc`.
fn init_setup() -> Result<(), ContainerError> {
    let pid = nix::unistd::getpid();
    if pid.as_raw() != 1 {
        return Err(ContainerError::Setup {
            step: format!(
                "be the container's init: the shim is PID {pid}, not 1, in its namespace"
            ),
            source: nix::Error::EINVAL,
        });
    }
    let _ = nix::sys::prctl::set_name(c"cairn-init");
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(step("mount /proc"))
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
    let container = is_container_start();
    if container {
        shim_setup()?;
        init_setup()?;
    } else if direct {
        // No namespaces: this process waits for the task as the shim.
        let _ = nix::sys::prctl::set_name(c"cairn-shim");
    }
    if container || direct {
        // The shim starts the program without copying itself
        // (`spawn`): no page tables to copy, no copy-on-write faults, and
        // nothing to tear down at `execve`. A failure is reported as the
        // shell reports a command it cannot run.
        let code = match start(program, program_args, direct, container) {
            Ok(pid) if container => init(pid),
            Ok(pid) => wait_exit_code(pid),
            Err(e) => {
                eprintln!("container-exec: {e}");
                127
            }
        };
        shim_exit(code)
    }
    // An executor without namespaces or a shim: in this process.
    let err = std::process::Command::new(program)
        .args(program_args)
        .exec();
    Err(ContainerError::Io {
        step: format!("exec {program}"),
        source: err,
    })
}

/// Starts `program` with `args`: a container's executor or direct task
/// (in the container when `container`, as PID 2), or a direct task's
/// process beside its shim. What it gets, besides what the launcher set up:
/// its environment without the agent's variables for the shim (and
/// `MESOS_SANDBOX` naming the sandbox inside the container), the sandbox as
/// its directory, and for a direct task, a session of its own (its signals,
/// `kill 0` included, stay among its processes), SIGTERM unblocked, an
/// ordinary OOM score, a network namespace of its own when asked and its
/// user's identity (looked up first: inside a network namespace of its
/// own, a network user database could not be reached).
fn start(
    program: &str,
    args: &[String],
    direct: bool,
    container: bool,
) -> Result<Pid, ContainerError> {
    use std::os::fd::AsFd;
    let io = |step: String| move |source| ContainerError::Io { step, source };
    let path = crate::spawn::find_program(program, None).map_err(io(format!("exec {program}")))?;
    let c_arg = |a: &str| crate::spawn::c_string(a).map_err(io(format!("exec {program}")));
    let mut argv = vec![c_arg(program)?];
    for a in args {
        argv.push(c_arg(a)?);
    }
    let mut withheld: Vec<&str> = Vec::new();
    let mut extra = Vec::new();
    if container {
        withheld.extend(CONTAINER_ENV);
        extra.push(("MESOS_SANDBOX".to_string(), CONTAINER_SANDBOX.to_string()));
    }
    if direct {
        withheld.extend([
            DIRECT_TASK_ENV,
            EXIT_DIR_ENV,
            TASK_NETWORK_ENV,
            TASK_USER_ENV,
            "CAIRN_CONTAINER_ID",
        ]);
    }
    let no_network = direct && std::env::var(TASK_NETWORK_ENV).as_deref() == Ok("none");
    let stdio = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(io("hand the output on".into()))
    };
    let spec = crate::spawn::SpawnSpec {
        program: crate::spawn::c_path(&path).map_err(io(format!("exec {program}")))?,
        args: argv,
        env: crate::spawn::environment(&withheld, &extra).map_err(io("environment".into()))?,
        cwd: if container {
            c_arg(CONTAINER_SANDBOX)?
        } else {
            c".".into()
        },
        stdin: stdio(std::io::stdin().as_fd())?,
        stdout: stdio(std::io::stdout().as_fd())?,
        stderr: stdio(std::io::stderr().as_fd())?,
        setsid: direct,
        cgroup_procs: Vec::new(),
        oom_score_adj: direct.then_some(b"0".as_slice()),
        unshare: if no_network { libc::CLONE_NEWNET } else { 0 },
        setpgid: false,
        loopback_up: no_network,
        credentials: if direct { task_identity()? } else { None },
    };
    crate::spawn::start(&spec)
        .map(Pid::from_raw)
        .map_err(io(format!("start {program}")))
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
/// SIGTERM is blocked in the shim, not ignored. The agent sends it to the
/// task's processes only, but the shim must outlive the task to report its
/// end whoever sends it; and a SIGTERM that reaches the task before it has
/// called `execve` stays pending until then (`spawn` blocks every signal in
/// the task until just before it), where an ignored one would be lost. The
/// exit directory is opened while the host's mounts are still in view.
fn direct_task_setup() -> Result<(), ContainerError> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    sigterm_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK).map_err(step("block SIGTERM"))?;
    // At its default for the task, which gets it unblocked (`start`),
    // whatever the agent was started with.
    // SAFETY: SIG_DFL installs no handler code; single-threaded here.
    unsafe { signal(Signal::SIGTERM, SigHandler::SigDfl) }.map_err(step("reset SIGTERM"))?;
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

/// The `(uid, gid)` a direct task switches to: its user's (`None` when that
/// is this process's own, or no user is named).
fn task_identity() -> Result<Option<(libc::uid_t, libc::gid_t)>, ContainerError> {
    let user = std::env::var(TASK_USER_ENV).unwrap_or_default();
    if user.is_empty() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name(&user)
        .map_err(step(format!("look user {user} up")))?
        .ok_or_else(|| ContainerError::Io {
            step: format!("look user {user} up"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    Ok((u.uid != nix::unistd::geteuid()).then_some((u.uid.as_raw(), u.gid.as_raw())))
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
