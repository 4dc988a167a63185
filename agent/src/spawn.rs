//! Starting an executor without copying the agent.
//!
//! A container's first process must join the container's cgroups, start a
//! session and enter new namespaces before it runs anything, so it cannot
//! be started with `posix_spawn`, and `fork` copies the agent's page tables
//! only for `exec` to throw them away: with hundreds of executors a second,
//! the copy and its teardown were a fifth of the machine. This starts the
//! child the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, so the
//! child runs on a small stack of its own in the agent's memory, makes a few
//! system calls on data prepared before the clone, and `execve`s, while the
//! calling thread waits (the agent's other threads go on).
//!
//! Contract: [`spawn`] returns once the child has called `execve` (the
//! returned pid is the new program) or has failed a step before it (the
//! error names the step); the child is the caller's to wait for, through the
//! returned pidfd ([`start`]: by its pid). The program starts as
//! `std::process::Command` would start it: no signal blocked, and `SIGPIPE`
//! at its default (Rust's runtime ignores it, and an ignored signal stays
//! ignored across `execve`: a task's `yes | head -1` would then see write
//! errors instead of ending).

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the child does before `execve`, in this order.
#[derive(Debug)]
pub struct SpawnSpec {
    pub program: CString,
    /// `argv`, including `argv[0]`.
    pub args: Vec<CString>,
    /// `KEY=value` entries: the child's whole environment.
    pub env: Vec<CString>,
    pub cwd: CString,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Start a new session (the container's processes are then found, and
    /// killed, by it).
    pub setsid: bool,
    /// `cgroup.procs` files to write `0` to (joining those cgroups).
    pub cgroup_procs: Vec<CString>,
    /// Written to `/proc/self/oom_score_adj` when set.
    pub oom_score_adj: Option<&'static [u8]>,
    /// Flags for `unshare(2)`, 0 for none. A new PID namespace is made at
    /// the clone instead ([`NEW_AT_CLONE`]).
    pub unshare: c_int,
    /// Lead a process group of its own (killed together with `killpg`);
    /// implied by `setsid`.
    pub setpgid: bool,
    /// Bring the loopback device up after `unshare` (a new network
    /// namespace starts with it down).
    pub loopback_up: bool,
    /// `(uid, gid)` to switch to last, with no supplementary groups; `None`
    /// keeps the caller's.
    pub credentials: Option<(libc::uid_t, libc::gid_t)>,
}

/// Namespaces made when the child is created, not by its `unshare`: a new
/// PID namespace then has the child itself as its PID 1 (by `unshare`, the
/// child's first child would be), so a container's shim is also its init,
/// one process and one copy fewer per container.
pub const NEW_AT_CLONE: c_int = libc::CLONE_NEWPID;

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    /// Readable once the child has exited.
    pub pidfd: OwnedFd,
}

/// The step of the child that failed, for the error message.
pub(crate) const STEPS: [&str; 11] = [
    "reset signals",
    "setsid",
    "join cgroup",
    "set oom_score_adj",
    "unshare namespaces",
    "redirect stdio",
    "chdir",
    "execve",
    "setpgid",
    "bring loopback up",
    "switch user",
];

/// Shared between the parent and the child (same memory): the child's
/// inputs, as raw pointers into `SpawnSpec` and the vectors below, and the
/// step that failed with its errno.
struct Shared {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [RawFd; 3],
    setsid: bool,
    procs: *const *const libc::c_char,
    procs_len: usize,
    oom_path: *const libc::c_char,
    oom: *const u8,
    oom_len: usize,
    unshare: c_int,
    setpgid: bool,
    loopback_up: bool,
    /// Set when `credentials` is.
    switch_user: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    failed_step: usize,
    errno: c_int,
}

/// Size of the child's stack: it calls a handful of libc functions only.
const STACK: usize = 64 * 1024;

/// Starts `spec.program`; see the module documentation.
pub fn spawn(spec: &SpawnSpec) -> io::Result<Spawned> {
    let pid = start(spec)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    // The child is unreaped (only its parent can reap it, and nothing
    // waits for it yet), so `pid` still names it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing
    // else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Spawned {
        pid: u32::try_from(pid).unwrap_or(0),
        pidfd,
    })
}

/// Like [`spawn`], for a caller that reaps its children by pid (a
/// container's init): the started program's pid.
pub fn start(spec: &SpawnSpec) -> io::Result<libc::pid_t> {
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let argv = ptrs(&spec.args);
    let envp = ptrs(&spec.env);
    let procs: Vec<*const libc::c_char> = spec.cgroup_procs.iter().map(|c| c.as_ptr()).collect();
    let oom_path = c"/proc/self/oom_score_adj";
    let oom = spec.oom_score_adj.unwrap_or_default();
    let mut shared = Shared {
        program: spec.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: spec.cwd.as_ptr(),
        fds: [
            spec.stdin.as_raw_fd(),
            spec.stdout.as_raw_fd(),
            spec.stderr.as_raw_fd(),
        ],
        setsid: spec.setsid,
        procs: procs.as_ptr(),
        procs_len: procs.len(),
        oom_path: if spec.oom_score_adj.is_some() {
            oom_path.as_ptr()
        } else {
            std::ptr::null()
        },
        oom: oom.as_ptr(),
        oom_len: oom.len(),
        unshare: spec.unshare & !NEW_AT_CLONE,
        setpgid: spec.setpgid,
        loopback_up: spec.loopback_up,
        switch_user: spec.credentials.is_some(),
        uid: spec.credentials.map_or(0, |c| c.0),
        gid: spec.credentials.map_or(0, |c| c.1),
        failed_step: usize::MAX,
        errno: 0,
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down: the child starts at the (16-byte aligned) top.
    let top = {
        let end = stack.as_mut_ptr().wrapping_add(STACK);
        end.wrapping_sub(end as usize % 16)
    };
    // SAFETY: all signals are blocked in this thread around the clone, so
    // no handler of the agent runs in the child (which shares its memory)
    // before the child resets them; the old mask is restored here, and the
    // child unblocks everything just before execve. `child` only reads
    // `shared` and the vectors it points into, which live until clone
    // returns: with CLONE_VFORK this thread is suspended until the child
    // has called execve or _exit, so nothing here changes or frees them
    // while the child runs. The stack is ours alone and outlives the child's
    // use of it for the same reason.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top.cast::<c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | (spec.unshare & NEW_AT_CLONE),
            std::ptr::addr_of_mut!(shared).cast::<c_void>(),
        );
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    drop(stack);
    if shared.failed_step != usize::MAX {
        // The child has exited (status 127); reap it.
        // SAFETY: waitpid on our own child with a valid out-pointer.
        unsafe {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        let step = STEPS.get(shared.failed_step).copied().unwrap_or("start");
        let err = io::Error::from_raw_os_error(shared.errno);
        return Err(io::Error::new(err.kind(), format!("{step}: {err}")));
    }
    Ok(pid)
}

/// The child: runs in the agent's memory on its own stack, so it makes only
/// async-signal-safe system calls on `Shared`'s data and never returns into
/// Rust code of the parent; any failure records its step and `_exit`s.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` of `spawn`, alive and not touched by the
    // parent (suspended by CLONE_VFORK) until this function execs or exits.
    // Every pointer in it is valid for the lengths given (see `spawn`), and
    // each call below is a plain system call wrapper.
    unsafe {
        let s = &mut *arg.cast::<Shared>();
        let fail = |s: &mut Shared, step: usize| -> ! {
            s.failed_step = step;
            s.errno = *libc::__errno_location();
            libc::_exit(127)
        };
        // Handlers installed by the agent must not run here: back to the
        // defaults (execve would reset them, but a signal may come first).
        // SIGPIPE too when ignored, as Rust's runtime leaves it (see the
        // module documentation); other ignored signals stay ignored.
        for sig in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(sig, &dfl, std::ptr::null_mut()) < 0 {
                    fail(s, 0);
                }
            }
        }
        if s.setsid && libc::setsid() < 0 {
            fail(s, 1);
        }
        if s.setpgid && !s.setsid && libc::setpgid(0, 0) < 0 {
            fail(s, 8);
        }
        for i in 0..s.procs_len {
            let path = *s.procs.add(i);
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                fail(s, 2);
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            if n < 0 {
                fail(s, 2);
            }
            libc::close(fd);
        }
        if !s.oom_path.is_null() {
            let fd = libc::open(s.oom_path, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                // Best effort, as the OOM score only orders victims.
                let _ = libc::write(fd, s.oom.cast(), s.oom_len);
                libc::close(fd);
            }
        }
        if s.unshare != 0 && libc::unshare(s.unshare) < 0 {
            fail(s, 4);
        }
        if s.loopback_up && loopback_up().is_err() {
            fail(s, 9);
        }
        for (target, fd) in s.fds.iter().enumerate() {
            let target = c_int::try_from(target).unwrap_or(0);
            if libc::dup2(*fd, target) < 0 {
                fail(s, 5);
            }
        }
        if libc::chdir(s.cwd) < 0 {
            fail(s, 6);
        }
        // No supplementary groups, then the group, then the user (after
        // which nothing privileged is possible). Raw system calls: glibc's
        // wrappers apply the change to every thread of the process, which
        // here would mean signalling the parent's threads (this child shares
        // their memory and glibc's view of them); the kernel changes the
        // calling task only, which is this whole child.
        if s.switch_user
            && (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
                || libc::syscall(libc::SYS_setresgid, s.gid, s.gid, s.gid) < 0
                || libc::syscall(libc::SYS_setresuid, s.uid, s.uid, s.uid) < 0)
        {
            fail(s, 10);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(s.program, s.argv, s.envp);
        fail(s, 7)
    }
}

/// Brings the loopback device up in a fresh network namespace.
/// Async-signal-safe (socket(2), ioctl(2) and close(2) on stack memory, no
/// allocation), so a spawned child may call it before `execve`; on failure
/// `errno` still holds the cause.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: `ifr` is a zeroed ifreq on this stack frame, its name field
    // holds "lo" NUL-terminated; the socket is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if result >= 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if result < 0 { Err(err) } else { Ok(()) }
    }
}

/// Never passed on from the agent's environment: the CLI's credentials and
/// the agent's join token never reach tasks; an executor's agent CA and
/// token are the ones this agent gives (in a container's `env`), never what
/// the agent itself inherited (an agent inside another cluster's task).
pub const WITHHELD: [&str; 5] = [
    "CAIRN_SECRET",
    "CAIRN_PRINCIPAL",
    "CAIRN_JOIN_TOKEN",
    cairn_tls::AGENT_CA_ENV,
    cairn_tls::EXECUTOR_TOKEN_ENV,
];

/// The spawn of a container's executor: `program` and `args` with the
/// agent's environment plus `env`, in `sandbox`, with output to the files
/// named by [`ContainerSpec::output`](crate::launcher::ContainerSpec::output).
pub fn executor_spec(spec: &crate::launcher::ContainerSpec) -> io::Result<SpawnSpec> {
    let env = environment(&WITHHELD, &spec.env)?;
    let program = c_path(&spec.program)?;
    let mut args = vec![program.clone()];
    for a in &spec.args {
        args.push(c_string(a)?);
    }
    let (out, err) = spec.output();
    let open_log = |log: &Path| {
        use std::os::unix::fs::OpenOptionsExt;
        // The agent (root) opens them in a sandbox its task's user owns.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(log)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", log.display())))
    };
    Ok(SpawnSpec {
        program,
        args,
        env,
        cwd: c_path(&spec.sandbox)?,
        stdin: std::fs::File::open("/dev/null")?.into(),
        stdout: open_log(&out)?.into(),
        stderr: open_log(&err)?.into(),
        setsid: true,
        cgroup_procs: Vec::new(),
        oom_score_adj: None,
        unshare: 0,
        setpgid: false,
        loopback_up: false,
        credentials: None,
    })
}

/// This process's environment without the `withheld` names, with `extra`
/// on top, as `KEY=value` entries for `execve`.
pub fn environment(withheld: &[&str], extra: &[(String, String)]) -> io::Result<Vec<CString>> {
    let mut vars: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
        std::env::vars_os()
            .filter(|(k, _)| !withheld.iter().any(|w| k == w))
            .collect();
    for (k, v) in extra {
        vars.insert(k.into(), v.into());
    }
    vars.iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an environment entry holds a NUL byte",
                )
            })
        })
        .collect()
}

/// Waits for a spawned executor in the background: the receiver yields its
/// termination once.
pub fn watch(child: Spawned) -> tokio::sync::oneshot::Receiver<cairn_agent_core::Termination> {
    use cairn_agent_core::Termination;
    use std::os::unix::process::ExitStatusExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let termination = match wait(child).await {
            Ok(status) => Termination {
                exit_code: status.code(),
                signal: status.signal(),
                reason: None,
                message: None,
            },
            Err(e) => Termination {
                message: Some(format!("cannot wait for the executor: {e}")),
                ..Termination::default()
            },
        };
        let _ = tx.send(termination);
    });
    rx
}

/// A C string of a path.
pub fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

/// A C string of any text (arguments, environment entries).
pub fn c_string(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{:?} holds a NUL byte",
                s.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// Where `execvp` would find `name`: itself when it holds a slash, else the
/// first executable file of that name in `path` (the program's own `PATH`
/// when it has one), else in this process's `PATH`, else in the usual system
/// directories.
pub fn find_program(name: &str, path: Option<&std::ffi::OsString>) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let not_found = || io::Error::new(io::ErrorKind::NotFound, format!("{name:?} is not in PATH"));
    if name.is_empty() {
        return Err(not_found());
    }
    let inherited = std::env::var_os("PATH");
    let path = path
        .or(inherited.as_ref())
        .cloned()
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(not_found)
}

/// Waits for a spawned child to exit and reaps it, returning its status
/// (as `waitpid` gives it).
pub async fn wait(child: Spawned) -> io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: the AsyncFd owns the pidfd (an OwnedFd), which stays open and
    // names the same process until the AsyncFd is dropped.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(child.pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)?;
    let _ = afd.readable().await?;
    let pid = i32::try_from(child.pid).map_err(|_| io::Error::other("pid out of range"))?;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own, exited child with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(std::process::ExitStatus::from_raw(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn spec(dir: &Path, script: &str, cwd: &Path) -> SpawnSpec {
        let out = std::fs::File::create(dir.join("out")).unwrap();
        SpawnSpec {
            program: c"/bin/sh".into(),
            args: vec![c"sh".into(), c"-c".into(), c_string(script).unwrap()],
            env: vec![c"GREETING=hello".into()],
            cwd: c_path(cwd).unwrap(),
            stdin: std::fs::File::open("/dev/null").unwrap().into(),
            stdout: out.try_clone().unwrap().into(),
            stderr: out.into(),
            setsid: true,
            cgroup_procs: Vec::new(),
            oom_score_adj: None,
            unshare: 0,
            setpgid: false,
            loopback_up: false,
            credentials: None,
        }
    }

    #[tokio::test]
    async fn the_child_gets_its_environment_directory_session_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            // The session id is field 6 of /proc/self/stat: a session
            // leader's equals its pid.
            r#"echo "$GREETING $(pwd)"; set -- $(cat /proc/$$/stat); [ "$6" = "$$" ] && echo leader; exit 7"#,
            dir.path(),
        );
        let child = spawn(&s).unwrap();
        let status = wait(child).await.unwrap();
        assert_eq!(status.code(), Some(7));
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        let expected = format!("hello {}\nleader\n", dir.path().display());
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn the_child_leads_its_process_group_and_runs_as_the_user_given() {
        let dir = tempfile::tempdir().unwrap();
        // The process group is field 5 of /proc/self/stat, after the state
        // and the parent.
        let mut s = spec(
            dir.path(),
            r#"set -- $(cat /proc/$$/stat); [ "$5" = "$$" ] && echo group; id -u; id -g; id -G"#,
            dir.path(),
        );
        s.setsid = false;
        s.setpgid = true;
        let root = nix::unistd::geteuid().is_root();
        if root {
            s.credentials = Some((65534, 65534));
        }
        let status = wait(spawn(&s).unwrap()).await.unwrap();
        assert_eq!(status.code(), Some(0));
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        if root {
            // No supplementary group of the agent's is kept.
            assert_eq!(out, "group\n65534\n65534\n65534\n");
        } else {
            assert!(out.starts_with("group\n"), "{out}");
        }
    }

    #[test]
    fn the_program_starts_with_nothing_blocked_and_sigpipe_at_its_default() {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
        let dir = tempfile::tempdir().unwrap();
        // Not through a shell: dash clears its signal mask.
        let mut s = spec(dir.path(), "", dir.path());
        s.program = c"/usr/bin/awk".into();
        s.args = vec![
            c"awk".into(),
            c"/^Sig(Blk|Ign)/ {print $2}".into(),
            c"/proc/self/status".into(),
        ];
        // This test's runtime ignores SIGPIPE; a caller may block signals.
        let mut usr1 = SigSet::empty();
        usr1.add(Signal::SIGUSR1);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&usr1), None).unwrap();
        let pid = start(&s);
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&usr1), None).unwrap();
        let pid = nix::unistd::Pid::from_raw(pid.unwrap());
        assert_eq!(
            nix::sys::wait::waitpid(pid, None).unwrap(),
            nix::sys::wait::WaitStatus::Exited(pid, 0)
        );
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        let masks: Vec<u64> = out
            .lines()
            .map(|l| u64::from_str_radix(l, 16).unwrap())
            .collect();
        assert_eq!(masks.len(), 2, "{out}");
        assert_eq!(masks[0], 0, "nothing blocked: {out}");
        assert_eq!(
            masks[1] & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {out}"
        );
    }

    #[tokio::test]
    async fn a_failed_step_is_named_and_leaves_no_child() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), "true", &dir.path().join("missing"));
        let err = spawn(&s).unwrap_err();
        assert!(err.to_string().starts_with("chdir:"), "{err}");
        let mut s = spec(dir.path(), "true", dir.path());
        s.program = c"/nonexistent/program".into();
        let err = spawn(&s).unwrap_err();
        assert!(err.to_string().starts_with("execve:"), "{err}");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
