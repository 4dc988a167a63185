//! The agent's fork server: containers started by forking a small
//! process that is already running, instead of executing the agent's binary
//! for each of them.
//!
//! Every container of the Linux launcher starts as this binary
//! (`container-exec` for a direct task's shim or a framework's executor,
//! `executor` for the command executor). Executing it costs about a
//! millisecond of CPU: the dynamic loader relocates tens of thousands of
//! pointers in a large binary and every touched page faults in anew. The
//! fork server is that binary started once, as `<binary> fork-server`, by
//! the agent; it stays single-threaded and small, and for each container it
//! forks a child that does what the agent's own spawn does before `execve`
//! (session, cgroups, namespaces, output, directory, user) and then runs the
//! subcommand in place, already loaded.
//!
//! Contract (the same as [`spawn::spawn`](crate::spawn::spawn)):
//! [`ForkServer::spawn`] returns once the child has done those steps (it is
//! then the subcommand) or has failed one (the error names it, and the child
//! is reaped). The child is the agent's own: it is created with
//! `CLONE_PARENT`, so the agent waits for it through the returned pidfd as
//! for any child it spawned, and a fork server that dies takes nothing with
//! it. The child's `/proc/<pid>/environ` and `cmdline` show what an executed
//! child would, so the agent's recovery finds it by its environment.
//!
//! The server serves one agent over a `SOCK_SEQPACKET` socket pair (its
//! standard input), one request at a time, and ends when the agent's end
//! closes (the agent exited). A fork server that cannot start here (no
//! `clone3`, no `PR_SET_MM_MAP` to describe its children) says so at
//! start, and the agent executes its binary instead.

use std::ffi::{CString, c_int};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

use crate::spawn::{SpawnSpec, Spawned};

/// The subcommand that runs the fork server.
pub const FORK_SERVER: &str = "fork-server";

/// Subcommands a fork server's child may run (what the agent starts its
/// containers with).
const SERVED: [&str; 2] = [crate::driver::CONTAINER_EXEC, "executor"];

/// The largest request: a container's arguments and whole environment.
const MAX_REQUEST: usize = 256 * 1024;

/// How long the agent waits for the server's answer before it gives up on
/// it (a healthy server answers within milliseconds).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The child's steps beyond those of `spawn`'s child (whose numbers, 0 to
/// 10, it shares for the same steps; see [`step_name`]).
const DESCRIBE: u32 = 11;
const REPORT: u32 = 12;
const FORK: u32 = 13;

#[derive(Debug, thiserror::Error)]
pub enum ForkServerError {
    #[error("cannot start the fork server {program}: {reason}")]
    Start { program: String, reason: String },
    #[error("the fork server (pid {pid}) is gone: {reason}")]
    Gone { pid: u32, reason: String },
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        source: io::Error,
    },
    #[error("the request cannot be sent to the fork server: {0}")]
    Request(String),
    /// The server failed while starting a child: it is no longer used.
    #[error("the fork server (pid {pid}) failed while starting a container: {reason}")]
    Lost { pid: u32, reason: String },
    /// The server started nothing (it could not fork, or refused the
    /// request); the caller may execute instead.
    #[error("the fork server started nothing: {step}: {source}")]
    NotStarted {
        step: &'static str,
        source: io::Error,
    },
}

/// The agent's side: a running fork server.
#[derive(Debug)]
pub struct ForkServer {
    /// The binary the server runs: requests for it (and a served
    /// subcommand) go to the server.
    program: CString,
    /// `None` once the server has failed: every spawn then executes.
    sock: Mutex<Option<OwnedFd>>,
    pid: u32,
    pidfd: OwnedFd,
}

impl ForkServer {
    /// Starts `program fork-server` and waits for it to say it is ready.
    pub fn start(program: &Path) -> Result<ForkServer, ForkServerError> {
        let fail = |reason: String| ForkServerError::Start {
            program: program.display().to_string(),
            reason,
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| fail(format!("socketpair: {e}")))?;
        let c_program = crate::spawn::c_path(program).map_err(|e| fail(e.to_string()))?;
        let stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| fail(format!("dup stderr: {e}")))?;
        let spec = SpawnSpec {
            program: c_program.clone(),
            args: vec![
                c_program.clone(),
                CString::new(FORK_SERVER).map_err(|e| fail(e.to_string()))?,
            ],
            env: crate::spawn::environment(&crate::spawn::WITHHELD, &[])
                .map_err(|e| fail(e.to_string()))?,
            cwd: CString::new("/").map_err(|e| fail(e.to_string()))?,
            stdin: theirs,
            stdout: stderr
                .try_clone()
                .map_err(|e| fail(format!("dup stderr: {e}")))?,
            stderr,
            // Its own session: a terminal's ^C for the agent is the agent's
            // to handle; the server ends when the agent does.
            setsid: true,
            cgroup_procs: Vec::new(),
            oom_score_adj: None,
            unshare: 0,
            setpgid: false,
            loopback_up: false,
            credentials: None,
        };
        let server = crate::spawn::spawn(&spec).map_err(|e| fail(e.to_string()))?;
        drop(spec);
        // From here on, dropping `started` ends and reaps the server.
        let started = ForkServer {
            program: c_program,
            sock: Mutex::new(Some(ours)),
            pid: server.pid,
            pidfd: server.pidfd,
        };
        let hello = {
            let guard = started.sock.lock().map_err(|_| fail("poisoned".into()))?;
            let Some(sock) = guard.as_ref() else {
                return Err(fail("no socket".into()));
            };
            set_timeout(sock, ANSWER_WITHIN).map_err(|e| fail(format!("SO_RCVTIMEO: {e}")))?;
            // Room for the largest request (best effort: the kernel caps it
            // at net.core.wmem_max; a request it refuses is executed).
            let _ = nix::sys::socket::setsockopt(
                sock,
                nix::sys::socket::sockopt::SndBuf,
                &(2 * MAX_REQUEST),
            );
            // The server's first message: 0 when ready, else 1 and why not.
            let mut buf = vec![0u8; 4096];
            recv_plain(sock, &mut buf).map(|n| buf.get(..n).map(<[u8]>::to_vec))
        };
        match hello {
            Ok(Some(msg)) if msg.first() == Some(&0) => Ok(started),
            Ok(Some(msg)) if !msg.is_empty() => Err(fail(
                String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned(),
            )),
            Ok(_) => Err(fail(
                "it ended before it was ready (does this binary have a fork-server subcommand?)"
                    .into(),
            )),
            Err(e) => Err(fail(format!("waiting for it to be ready: {e}"))),
        }
    }

    /// Whether `spec` is for this server: its program and a subcommand the
    /// server's children run.
    pub fn serves(&self, spec: &SpawnSpec) -> bool {
        spec.program == self.program
            && spec
                .args
                .get(1)
                .is_some_and(|a| SERVED.iter().any(|s| a.as_bytes() == s.as_bytes()))
    }

    /// Starts `spec` by the server; see the module documentation.
    ///
    /// Errors: [`ForkServerError::NotStarted`], [`ForkServerError::Request`]
    /// and [`ForkServerError::Gone`] mean nothing was started (the caller
    /// may execute instead); after `Gone` every later call fails the same
    /// way. [`ForkServerError::Step`] is the child's failure (reaped), and
    /// [`ForkServerError::Lost`] a server that failed while starting the
    /// child (killed and reaped if it was known; the caller destroys what
    /// the container had, as for any failed start).
    pub fn spawn(&self, spec: &SpawnSpec) -> Result<Spawned, ForkServerError> {
        let request = encode(spec).map_err(ForkServerError::Request)?;
        let mut guard = self.sock.lock().map_err(|_| ForkServerError::Gone {
            pid: self.pid,
            reason: "a spawn panicked".into(),
        })?;
        let Some(sock) = guard.as_ref() else {
            return Err(ForkServerError::Gone {
                pid: self.pid,
                reason: "it failed earlier".into(),
            });
        };
        let fds = [
            spec.stdin.as_raw_fd(),
            spec.stdout.as_raw_fd(),
            spec.stderr.as_raw_fd(),
        ];
        let sent = sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&request)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(_) => {}
            // Refused for its size: the server never saw it and serves on.
            Err(e @ (nix::errno::Errno::EMSGSIZE | nix::errno::Errno::ENOBUFS)) => {
                return Err(ForkServerError::NotStarted {
                    step: "send the request",
                    source: e.into(),
                });
            }
            Err(e) => {
                self.give_up(&mut guard);
                return Err(ForkServerError::Gone {
                    pid: self.pid,
                    reason: e.to_string(),
                });
            }
        }
        // First the child's pid (or why there is none), then its outcome.
        let first = recv_answer(sock);
        let pid = match first {
            Ok(Answer::Forked { pid }) if pid > 0 => pid,
            Ok(Answer::Failed {
                pid: 0,
                step,
                errno,
            }) => {
                return Err(ForkServerError::NotStarted {
                    step: step_name(step),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
            other => {
                // A server gone between the request and the fork, or
                // answering nonsense: whether a child exists is unknown,
                // and any answer still to come would be read as the next
                // request's.
                self.give_up(&mut guard);
                return Err(ForkServerError::Lost {
                    pid: self.pid,
                    reason: describe_answer(other),
                });
            }
        };
        let second = recv_answer(sock);
        if !matches!(second, Ok(Answer::Ready | Answer::Failed { .. })) {
            self.give_up(&mut guard);
        }
        drop(guard);
        match second {
            Ok(Answer::Ready) => match pidfd_of_child(pid) {
                Ok(pidfd) => Ok(Spawned {
                    pid: u32::try_from(pid).unwrap_or(0),
                    pidfd,
                }),
                Err(source) => {
                    kill_and_reap(pid);
                    Err(ForkServerError::Step {
                        step: "pidfd_open",
                        source,
                    })
                }
            },
            Ok(Answer::Failed { step, errno, .. }) => {
                // The child has exited (status 127) or is about to.
                kill_and_reap(pid);
                Err(ForkServerError::Step {
                    step: step_name(step),
                    source: io::Error::from_raw_os_error(errno),
                })
            }
            other => {
                kill_and_reap(pid);
                Err(ForkServerError::Lost {
                    pid: self.pid,
                    reason: describe_answer(other),
                })
            }
        }
    }

    /// Stops using the server: its socket is closed, and it is killed and
    /// reaped.
    fn give_up(&self, sock: &mut Option<OwnedFd>) {
        sock.take();
        self.end_server();
    }

    fn end_server(&self) {
        // SAFETY: pidfd_send_signal on our own pidfd (which names the server
        // even once it is reaped: then the call fails with ESRCH), no
        // siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        // SAFETY: waitid on our own pidfd with a valid out-pointer: reaps
        // exactly the server (ECHILD once it is reaped; never another
        // process that got its pid).
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PIDFD,
                libc::id_t::try_from(self.pidfd.as_raw_fd()).unwrap_or(libc::id_t::MAX),
                &mut info,
                libc::WEXITED,
            );
        }
    }
}

fn describe_answer(a: io::Result<Answer>) -> String {
    match a {
        Ok(a) => format!("unexpected answer {a:?}"),
        Err(e) => e.to_string(),
    }
}

fn recv_answer(sock: &OwnedFd) -> io::Result<Answer> {
    let mut buf = [0u8; 64];
    let n = recv_plain(sock, &mut buf)?;
    Answer::decode(buf.get(..n).unwrap_or_default())
}

/// A pidfd for `pid`, an unreaped child of this process.
fn pidfd_of_child(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    // The child is this process's (CLONE_PARENT) and unreaped, as only this
    // process reaps it and nothing waits for it yet, so `pid` still names
    // it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Kills and reaps `pid`, an unreaped child of this process (so the pid
/// cannot name another process meanwhile).
fn kill_and_reap(pid: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill and waitpid of our own unreaped child (a positive pid),
    // with a valid out-pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
    }
}

fn step_name(step: u32) -> &'static str {
    match step {
        DESCRIBE => "describe the process",
        REPORT => "report",
        FORK => "fork",
        s => usize::try_from(s)
            .ok()
            .and_then(|s| crate::spawn::STEPS.get(s).copied())
            .unwrap_or("fork"),
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // The server ends when its socket closes; killed first, so the wait
        // is never long.
        if let Ok(mut s) = self.sock.lock() {
            s.take();
        }
        self.end_server();
    }
}

fn set_timeout(sock: &OwnedFd, d: Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(
        libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        0,
    );
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(io::Error::from)
}

/// One message without descriptors; 0 when the peer has closed.
fn recv_plain(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::recv(sock.as_raw_fd(), buf, MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// The server's answers to one request: [`Answer::Forked`] then
/// [`Answer::Ready`] or a failure of the child (`pid` > 0); or a single
/// [`Answer::Failed`] with `pid` 0 when nothing was started.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Forked { pid: i32 },
    Ready,
    Failed { pid: i32, step: u32, errno: i32 },
}

impl Answer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13);
        match self {
            Answer::Forked { pid } => {
                out.push(0);
                out.extend_from_slice(&pid.to_le_bytes());
            }
            Answer::Failed { pid, step, errno } => {
                out.push(1);
                out.extend_from_slice(&pid.to_le_bytes());
                out.extend_from_slice(&step.to_le_bytes());
                out.extend_from_slice(&errno.to_le_bytes());
            }
            Answer::Ready => out.push(2),
        }
        out
    }

    fn decode(b: &[u8]) -> io::Result<Answer> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed answer");
        let word = |i: usize| -> io::Result<[u8; 4]> {
            b.get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(bad)
        };
        match b.first() {
            Some(0) if b.len() == 5 => Ok(Answer::Forked {
                pid: i32::from_le_bytes(word(1)?),
            }),
            Some(1) if b.len() == 13 => Ok(Answer::Failed {
                pid: i32::from_le_bytes(word(1)?),
                step: u32::from_le_bytes(word(5)?),
                errno: i32::from_le_bytes(word(9)?),
            }),
            Some(2) if b.len() == 1 => Ok(Answer::Ready),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the fork server closed its socket",
            )),
            _ => Err(bad()),
        }
    }
}

/// What a child is to do: a [`SpawnSpec`] without its descriptors (they
/// travel beside it).
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    cwd: Vec<u8>,
    setsid: bool,
    setpgid: bool,
    loopback_up: bool,
    cgroup_procs: Vec<Vec<u8>>,
    oom_score_adj: Option<Vec<u8>>,
    unshare: c_int,
    credentials: Option<(u32, u32)>,
}

fn encode(spec: &SpawnSpec) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(4096);
    let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(b);
    };
    let put_list = |out: &mut Vec<u8>, l: &[CString]| {
        out.extend_from_slice(&u32::try_from(l.len()).unwrap_or(u32::MAX).to_le_bytes());
        for s in l {
            put_bytes(out, s.as_bytes());
        }
    };
    put_list(&mut out, &spec.args);
    put_list(&mut out, &spec.env);
    put_bytes(&mut out, spec.cwd.as_bytes());
    out.push(u8::from(spec.setsid));
    out.push(u8::from(spec.setpgid));
    out.push(u8::from(spec.loopback_up));
    put_list(&mut out, &spec.cgroup_procs);
    match spec.oom_score_adj {
        Some(o) => {
            out.push(1);
            put_bytes(&mut out, o);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&spec.unshare.to_le_bytes());
    match spec.credentials {
        Some((uid, gid)) => {
            out.push(1);
            out.extend_from_slice(&uid.to_le_bytes());
            out.extend_from_slice(&gid.to_le_bytes());
        }
        None => out.push(0),
    }
    if out.len() > MAX_REQUEST {
        return Err(format!(
            "{} bytes of arguments and environment (at most {MAX_REQUEST})",
            out.len()
        ));
    }
    Ok(out)
}

/// Reads what [`encode`] wrote; any inconsistency is an error, never a
/// panic.
fn decode(b: &[u8]) -> Result<Request, String> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            if self.0.len() < n {
                return Err("truncated request".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u32(&mut self) -> Result<u32, String> {
            let w: [u8; 4] = self
                .take(4)?
                .try_into()
                .map_err(|_| "truncated request".to_string())?;
            Ok(u32::from_le_bytes(w))
        }
        fn flag(&mut self) -> Result<bool, String> {
            match self.take(1)? {
                [0] => Ok(false),
                [1] => Ok(true),
                _ => Err("malformed flag".into()),
            }
        }
        fn bytes(&mut self) -> Result<Vec<u8>, String> {
            let n = usize::try_from(self.u32()?).map_err(|e| e.to_string())?;
            let b = self.take(n)?;
            if b.contains(&0) {
                return Err("a string holds a NUL byte".into());
            }
            Ok(b.to_vec())
        }
        fn list(&mut self) -> Result<Vec<Vec<u8>>, String> {
            let n = usize::try_from(self.u32()?).map_err(|e| e.to_string())?;
            // Each entry takes at least its 4-byte length.
            if n > self.0.len() / 4 {
                return Err("truncated request".into());
            }
            (0..n).map(|_| self.bytes()).collect()
        }
    }
    let mut r = Reader(b);
    let req = Request {
        args: r.list()?,
        env: r.list()?,
        cwd: r.bytes()?,
        setsid: r.flag()?,
        setpgid: r.flag()?,
        loopback_up: r.flag()?,
        cgroup_procs: r.list()?,
        oom_score_adj: if r.flag()? { Some(r.bytes()?) } else { None },
        unshare: c_int::from_le_bytes(
            r.take(4)?
                .try_into()
                .map_err(|_| "truncated request".to_string())?,
        ),
        credentials: if r.flag()? {
            Some((r.u32()?, r.u32()?))
        } else {
            None
        },
    };
    if !r.0.is_empty() {
        return Err("trailing bytes in the request".into());
    }
    match req.args.get(1) {
        Some(sub) if SERVED.iter().any(|s| sub.as_slice() == s.as_bytes()) => Ok(req),
        _ => Err("not a subcommand the fork server runs".into()),
    }
}

/// What the server learned about itself at start, for its children.
struct Server {
    /// Where glibc keeps this thread's id (`PR_GET_TID_ADDRESS`): a child
    /// created with `CLONE_CHILD_SETTID` there has its own id in it, as
    /// glibc's `fork` arranges.
    tid_address: u64,
    /// This thread's robust futex list, registered again in each child (the
    /// kernel clears it on fork, glibc's `fork` registers it again).
    robust_list: (usize, usize),
}

/// `<binary> fork-server`: serves the agent on standard input until it
/// closes. Returns the process's exit status.
pub fn serve() -> i32 {
    // SAFETY: `stdin` is this process's descriptor 0, owned by nothing else
    // in this process (the server never reads standard input otherwise).
    let sock = unsafe { OwnedFd::from_raw_fd(0) };
    let is_seqpacket = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::SockType)
        .is_ok_and(|t| t == SockType::SeqPacket);
    if !is_seqpacket {
        eprintln!("fork-server: started by the agent only (its standard input is its socket)");
        return 2;
    }
    let server = match prepare() {
        Ok(s) => s,
        Err(e) => {
            let mut msg = vec![1u8];
            msg.extend_from_slice(e.as_bytes());
            let _ = nix::sys::socket::send(sock.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL);
            return 1;
        }
    };
    if nix::sys::socket::send(sock.as_raw_fd(), &[0], MsgFlags::MSG_NOSIGNAL).is_err() {
        return 1;
    }
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 3]);
        let (n, fds, truncated) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
                Ok(msg) => {
                    let mut fds: Vec<OwnedFd> = Vec::new();
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(raw) = c {
                                // SAFETY: descriptors just received with
                                // SCM_RIGHTS are new in this process and
                                // owned by nothing else.
                                fds.extend(
                                    raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                                );
                            }
                        }
                    }
                    let truncated = msg
                        .flags
                        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                    (msg.bytes, fds, truncated)
                }
            }
        };
        if n == 0 && fds.is_empty() {
            // The agent closed its end: it has exited or let the server go.
            return 0;
        }
        let decoded = decode(buf.get(..n).unwrap_or_default());
        // What the request held (environments carry executors' tokens) is
        // not left in memory that later children get a copy of.
        wipe(buf.get_mut(..n).unwrap_or_default());
        let answer = match (truncated, <[OwnedFd; 3]>::try_from(fds)) {
            (false, Ok(fds)) => match decoded {
                Ok(req) => start_child(&server, &sock, req, fds),
                Err(e) => {
                    // The agent's stderr: a request it sent and cannot have
                    // meant.
                    eprintln!("fork-server: request refused: {e}");
                    Answer::Failed {
                        pid: 0,
                        step: REPORT,
                        errno: libc::EINVAL,
                    }
                }
            },
            _ => Answer::Failed {
                pid: 0,
                step: REPORT,
                errno: libc::EMSGSIZE,
            },
        };
        if nix::sys::socket::send(sock.as_raw_fd(), &answer.encode(), MsgFlags::MSG_NOSIGNAL)
            .is_err()
        {
            return 1;
        }
    }
}

/// What a child needs from the server, checked once at start: the calls
/// that fail here would fail in every child.
fn prepare() -> Result<Server, String> {
    // Its children are made by a raw clone3, which (unlike glibc's fork)
    // resets no lock another thread might hold: there must be no other
    // thread, and the server starts none.
    if MmMap::threads() != Some(1) {
        return Err("the fork server must be single-threaded".into());
    }
    let mut tid_address: *mut c_int = std::ptr::null_mut();
    // SAFETY: PR_GET_TID_ADDRESS stores a pointer in the given out-pointer.
    if unsafe {
        libc::prctl(
            libc::PR_GET_TID_ADDRESS,
            &mut tid_address as *mut *mut c_int,
        )
    } < 0
        || tid_address.is_null()
    {
        return Err(format!(
            "PR_GET_TID_ADDRESS: {}",
            io::Error::last_os_error()
        ));
    }
    let mut head: usize = 0;
    let mut len: usize = 0;
    // SAFETY: get_robust_list of this thread (pid 0) with valid out-pointers.
    if unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &mut head, &mut len) } < 0 {
        return Err(format!("get_robust_list: {}", io::Error::last_os_error()));
    }
    // clone3 is there (not ENOSYS, nor refused by a seccomp filter): a
    // null argument is refused as invalid by a kernel that has it.
    // SAFETY: clone3 with a null pointer and size 0 fails without effect.
    if unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) } >= 0
        || nix::errno::Errno::last() != nix::errno::Errno::EINVAL
    {
        return Err(format!("clone3: {}", io::Error::last_os_error()));
    }
    // A child describes its arguments and environment with PR_SET_MM_MAP
    // (no capability needed for these fields): try it on this process's
    // own, unchanged.
    let map = MmMap::now().ok_or("cannot read this process's memory layout")?;
    map.apply().map_err(|e| format!("PR_SET_MM_MAP: {e}"))?;
    Ok(Server {
        tid_address: tid_address as u64,
        robust_list: (head, len),
    })
}

/// `struct prctl_mm_map`: the bounds the kernel shows in `/proc/<pid>`
/// (`cmdline` and `environ` read the argument and environment bounds).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

impl MmMap {
    /// This process's current bounds (from `/proc/self/stat` and `brk`),
    /// with the auxiliary vector and executable left as they are. Uses no
    /// heap: a `free` between reading `brk` and [`MmMap::apply`] could
    /// shrink the heap, and the stale, higher `brk` set back would leave
    /// malloc a break with nothing mapped below it.
    fn now() -> Option<MmMap> {
        use std::io::Read;
        let mut buf = [0u8; 2048];
        // A path this short is made a C string on the stack.
        let n = std::fs::File::open("/proc/self/stat")
            .and_then(|mut f| f.read(&mut buf))
            .ok()?;
        let mut map = MmMap::from_stat(buf.get(..n)?)?;
        // SAFETY: brk(0) changes nothing and returns the current break.
        map.brk = u64::try_from(unsafe { libc::syscall(libc::SYS_brk, 0usize) }).ok()?;
        Some(map)
    }

    /// Reads the bounds from a `/proc/<pid>/stat` line, without allocating.
    fn from_stat(stat: &[u8]) -> Option<MmMap> {
        let close = stat.iter().rposition(|b| *b == b')')?;
        let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
        // Fields after the command: the first is field 3 (state); numbers
        // as in proc_pid_stat(5). Fields that are not addresses (some are
        // negative) read as 0 and are not used.
        let mut fields = [0u64; 52];
        let mut count = 0;
        for (slot, word) in fields.iter_mut().skip(3).zip(rest.split_ascii_whitespace()) {
            *slot = word.parse().unwrap_or(0);
            count += 1;
        }
        if count < 51 - 2 {
            return None;
        }
        let field = |n: usize| fields.get(n).copied();
        Some(MmMap {
            start_code: field(26)?,
            end_code: field(27)?,
            start_stack: field(28)?,
            start_data: field(45)?,
            end_data: field(46)?,
            start_brk: field(47)?,
            brk: field(47)?,
            arg_start: field(48)?,
            arg_end: field(49)?,
            env_start: field(50)?,
            env_end: field(51)?,
            auxv: 0,
            auxv_size: 0,
            exe_fd: u32::MAX,
        })
    }

    /// The number of threads of this process (field 20 of its stat line).
    fn threads() -> Option<u64> {
        use std::io::Read;
        let mut buf = [0u8; 2048];
        let n = std::fs::File::open("/proc/self/stat")
            .and_then(|mut f| f.read(&mut buf))
            .ok()?;
        let stat = buf.get(..n)?;
        let close = stat.iter().rposition(|b| *b == b')')?;
        std::str::from_utf8(stat.get(close + 1..)?)
            .ok()?
            .split_ascii_whitespace()
            .nth(20 - 3)?
            .parse()
            .ok()
    }

    /// Sets the bounds. Only in a single-threaded process: `brk` must not
    /// move between [`MmMap::now`] and this.
    fn apply(&self) -> io::Result<()> {
        // SAFETY: PR_SET_MM_MAP reads a `struct prctl_mm_map` of the size
        // given from a live, properly laid out value.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_MM,
                libc::PR_SET_MM_MAP,
                std::ptr::from_ref(self),
                std::mem::size_of::<MmMap>(),
                0usize,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// `struct clone_args`, version 0 (64 bytes), for `clone3`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Forks a child for `req`, tells the agent its pid, and waits until the
/// child has done its steps; returns the final answer (or the only one,
/// when nothing was started).
fn start_child(server: &Server, sock: &OwnedFd, mut req: Request, fds: [OwnedFd; 3]) -> Answer {
    let failed = |step: u32, e: nix::errno::Errno| Answer::Failed {
        pid: 0,
        step,
        errno: e as i32,
    };
    let (ready_r, ready_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return failed(FORK, e),
    };
    let mut clone_args = CloneArgs {
        // The agent is the child's parent; the child's thread id is written
        // where glibc keeps it, and cleared at its exit, as `fork` does. A
        // new PID namespace is made here rather than by the child's
        // `unshare`, so that the child is its PID 1 (see `NEW_AT_CLONE`).
        flags: (libc::CLONE_PARENT
            | libc::CLONE_CHILD_SETTID
            | libc::CLONE_CHILD_CLEARTID
            | (req.unshare & crate::spawn::NEW_AT_CLONE)) as u64,
        child_tid: server.tid_address,
        // Must be 0 with CLONE_PARENT: the child inherits the server's
        // exit signal (SIGCHLD, as the agent spawned it), which the agent
        // gets when the child ends.
        exit_signal: 0,
        ..CloneArgs::default()
    };
    // SAFETY: sigset_t is plain data, filled by sigfillset.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; filled by pthread_sigmask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of
    // this process, single-threaded (checked at start, and it starts no
    // thread) so no other thread holds a lock the child would inherit held,
    // with glibc's thread id kept right by CLONE_CHILD_SETTID at the address
    // glibc registered for it. Signals are blocked around it so no handler
    // runs in the child before it has set itself up. The struct outlives
    // the call.
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(clone_args),
            std::mem::size_of::<CloneArgs>(),
        );
        if pid != 0 {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        pid
    };
    if pid < 0 {
        let e = nix::errno::Errno::last();
        req.wipe();
        return failed(FORK, e);
    }
    if pid == 0 {
        drop(ready_r);
        child(server, sock, &req, &fds, ready_w, &old);
    }
    drop(ready_w);
    drop(fds);
    req.wipe();
    let pid = i32::try_from(pid).unwrap_or(0);
    // The agent learns the pid first: whatever happens to this server from
    // here on, the agent knows the child it has to reap.
    if nix::sys::socket::send(
        sock.as_raw_fd(),
        &Answer::Forked { pid }.encode(),
        MsgFlags::MSG_NOSIGNAL,
    )
    .is_err()
    {
        // The agent is gone; the child's report will fail and it exits.
        return Answer::Failed {
            pid,
            step: REPORT,
            errno: libc::EPIPE,
        };
    }
    // The child's report: 8 bytes (step and errno) on failure, 8 bytes of
    // u32::MAX and 0 once its steps are done.
    let mut report = [0u8; 8];
    let mut got = 0;
    while let Some(rest) = report.get_mut(got..).filter(|r| !r.is_empty()) {
        match nix::unistd::read(&ready_r, rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let (step, errno) = match (report.get(..4), report.get(4..)) {
        (Some(s), Some(e)) if got == 8 => (
            u32::from_le_bytes(s.try_into().unwrap_or_default()),
            i32::from_le_bytes(e.try_into().unwrap_or_default()),
        ),
        // Ended (killed) before it reported.
        _ => (REPORT, libc::ECHILD),
    };
    if step == u32::MAX {
        Answer::Ready
    } else {
        Answer::Failed { pid, step, errno }
    }
}

/// Overwrites `b` with zeros in a way the compiler keeps (the memory is
/// freed or reused right after).
fn wipe(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a write through a valid, exclusive reference.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
}

impl Request {
    fn wipe(&mut self) {
        for v in self
            .args
            .iter_mut()
            .chain(self.env.iter_mut())
            .chain(std::iter::once(&mut self.cwd))
        {
            wipe(v);
        }
    }
}

/// `entries` NUL-terminated one after the other, as the kernel lays out
/// arguments and environment.
fn nul_block(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum());
    for e in entries {
        b.extend_from_slice(e);
        b.push(0);
    }
    b
}

/// The child: sets itself up as `spawn`'s child does before `execve`,
/// reports, then runs its subcommand. Never returns.
fn child(
    server: &Server,
    sock: &OwnedFd,
    req: &Request,
    fds: &[OwnedFd; 3],
    ready: OwnedFd,
    mask: &libc::sigset_t,
) -> ! {
    let fail = |step: u32| -> ! {
        let errno = nix::errno::Errno::last() as i32;
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&step.to_le_bytes());
        report[4..].copy_from_slice(&errno.to_le_bytes());
        let _ = nix::unistd::write(&ready, &report);
        // SAFETY: _exit ends this child at once, without running the
        // server's exit handlers or flushing its buffers (which are copies
        // of the server's).
        unsafe { libc::_exit(127) }
    };
    // SAFETY: the robust list address and length are the server's main
    // thread's, which this child's only thread is a copy of.
    unsafe {
        libc::syscall(
            libc::SYS_set_robust_list,
            server.robust_list.0,
            server.robust_list.1,
        );
    }
    // The server's socket is not the child's to hold (the agent's end would
    // never see it close).
    let _ = nix::unistd::close(sock.as_raw_fd());
    let Ok(cwd) = CString::new(req.cwd.clone()) else {
        nix::errno::Errno::set_raw(libc::EINVAL);
        fail(6);
    };
    if req.setsid && nix::unistd::setsid().is_err() {
        fail(1);
    }
    if req.setpgid
        && !req.setsid
        && nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))
            .is_err()
    {
        fail(8);
    }
    for procs in &req.cgroup_procs {
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .open(std::ffi::OsStr::from_bytes(procs))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"0"));
        if let Err(e) = ok {
            nix::errno::Errno::set_raw(e.raw_os_error().unwrap_or(libc::EIO));
            fail(2);
        }
    }
    if let Some(oom) = &req.oom_score_adj {
        // Best effort, as the OOM score only orders victims.
        let _ = std::fs::write("/proc/self/oom_score_adj", oom);
    }
    let unshare = req.unshare & !crate::spawn::NEW_AT_CLONE;
    // SAFETY: unshare with flags from the agent's request; on failure errno
    // says why.
    if unshare != 0 && unsafe { libc::unshare(unshare) } < 0 {
        fail(4);
    }
    if req.loopback_up && crate::spawn::loopback_up().is_err() {
        fail(9);
    }
    for (target, fd) in fds.iter().enumerate() {
        let target = c_int::try_from(target).unwrap_or(0);
        // SAFETY: dup2 of a descriptor this child owns onto 0, 1 or 2.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            fail(5);
        }
    }
    // SAFETY: chdir with a NUL-terminated path.
    if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
        fail(6);
    }
    if let Some((uid, gid)) = req.credentials {
        // SAFETY: plain system calls changing this single-threaded child's
        // credentials: no groups, then the group, then the user.
        let ok = unsafe {
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) >= 0
                && libc::syscall(libc::SYS_setresgid, gid, gid, gid) >= 0
                && libc::syscall(libc::SYS_setresuid, uid, uid, uid) >= 0
        };
        if !ok {
            fail(10);
        }
    }
    // What an executed child would show in /proc and hold in `environ`.
    let args_block = nul_block(&req.args);
    let env_block = nul_block(&req.env);
    if let Err(e) = describe(&args_block, &env_block) {
        nix::errno::Errno::set_raw(e.raw_os_error().unwrap_or(libc::EINVAL));
        fail(DESCRIBE);
    }
    // SAFETY: this process is single-threaded; nothing reads the
    // environment concurrently.
    unsafe {
        for (k, _) in std::env::vars_os() {
            std::env::remove_var(k);
        }
        for kv in &req.env {
            if let Some(i) = kv.iter().position(|b| *b == b'=') {
                let (k, v) = kv.split_at(i);
                if !k.is_empty() {
                    std::env::set_var(
                        std::ffi::OsStr::from_bytes(k),
                        std::ffi::OsStr::from_bytes(v.get(1..).unwrap_or_default()),
                    );
                }
            }
        }
    }
    // The blocks live as long as the process: the kernel reads them for
    // /proc/<pid>/environ and cmdline.
    std::mem::forget(args_block);
    std::mem::forget(env_block);
    let mut report = [0u8; 8];
    report[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    if nix::unistd::write(&ready, &report) != Ok(8) {
        fail(REPORT);
    }
    drop(ready);
    for fd in fds.iter().filter(|f| f.as_raw_fd() > 2) {
        let _ = nix::unistd::close(fd.as_raw_fd());
    }
    // SAFETY: restores the server's signal mask (blocked around the fork).
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
    }
    let args: Vec<String> = req
        .args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // A panic ends this process here rather than unwinding into the
    // server's loop, whose copy this process is.
    let code = std::panic::catch_unwind(|| crate::run_helper(&args))
        .map(|c| c.unwrap_or(127))
        .unwrap_or(101);
    std::process::exit(code)
}

/// Points this process's `/proc/<pid>/cmdline` and `environ` at `args` and
/// `env` (NUL-separated blocks that must live as long as the process).
fn describe(args: &[u8], env: &[u8]) -> io::Result<()> {
    let mut map = MmMap::now().ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    let bounds = |b: &[u8]| {
        let start = b.as_ptr() as u64;
        (start, start + b.len() as u64)
    };
    (map.arg_start, map.arg_end) = bounds(args);
    (map.env_start, map.env_end) = bounds(env);
    map.apply()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn spec() -> SpawnSpec {
        let null = || -> OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
        SpawnSpec {
            program: CString::new("/usr/bin/cairn-agent").unwrap(),
            args: vec![
                CString::new("/usr/bin/cairn-agent").unwrap(),
                CString::new("container-exec").unwrap(),
                CString::new("--").unwrap(),
                CString::new("/bin/sh").unwrap(),
            ],
            env: vec![CString::new("A=1").unwrap(), CString::new("B=x=y").unwrap()],
            cwd: CString::new("/tmp").unwrap(),
            stdin: null(),
            stdout: null(),
            stderr: null(),
            setsid: true,
            cgroup_procs: vec![CString::new("/sys/fs/cgroup/x/cgroup.procs").unwrap()],
            oom_score_adj: Some(b"-999"),
            unshare: libc::CLONE_NEWNS | libc::CLONE_NEWPID,
            setpgid: false,
            loopback_up: true,
            credentials: Some((1000, 100)),
        }
    }

    #[test]
    fn a_request_reads_back_as_written() {
        let s = spec();
        let req = decode(&encode(&s).unwrap()).unwrap();
        assert_eq!(
            req,
            Request {
                args: s.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                env: vec![b"A=1".to_vec(), b"B=x=y".to_vec()],
                cwd: b"/tmp".to_vec(),
                setsid: true,
                setpgid: false,
                loopback_up: true,
                cgroup_procs: vec![b"/sys/fs/cgroup/x/cgroup.procs".to_vec()],
                oom_score_adj: Some(b"-999".to_vec()),
                unshare: libc::CLONE_NEWNS | libc::CLONE_NEWPID,
                credentials: Some((1000, 100)),
            }
        );
    }

    #[test]
    fn malformed_requests_are_refused_not_panicked_on() {
        let good = encode(&spec()).unwrap();
        // Every truncation, and every single-byte corruption, decodes to an
        // error or to some request: never a panic.
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncated at {n}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = decode(&bad);
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing).unwrap_err(),
            "trailing bytes in the request"
        );
        // A huge list count with no entries behind it.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn only_the_agents_subcommands_are_served() {
        let mut s = spec();
        s.args[1] = CString::new("something-else").unwrap();
        assert_eq!(
            decode(&encode(&s).unwrap()).unwrap_err(),
            "not a subcommand the fork server runs"
        );
    }

    #[test]
    fn oversized_requests_are_refused_before_sending() {
        let mut s = spec();
        s.env = vec![CString::new(vec![b'x'; MAX_REQUEST]).unwrap()];
        assert!(encode(&s).unwrap_err().contains("at most"));
    }

    #[test]
    fn answers_read_back_and_garbage_is_an_error() {
        for a in [
            Answer::Forked { pid: 42 },
            Answer::Ready,
            Answer::Failed {
                pid: 7,
                step: 4,
                errno: libc::EPERM,
            },
        ] {
            assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
        }
        assert!(Answer::decode(&[]).is_err());
        assert!(Answer::decode(&[0, 1]).is_err());
        assert!(Answer::decode(&[9; 13]).is_err());
    }

    #[test]
    fn the_memory_layout_is_read_from_stat() {
        let map = MmMap::now().unwrap();
        assert!(
            map.start_code > 0 && map.start_code < map.end_code,
            "{map:?}"
        );
        assert!(map.arg_start > 0 && map.arg_start < map.arg_end, "{map:?}");
        assert!(map.env_start <= map.env_end, "{map:?}");
        assert!(map.start_brk <= map.brk, "{map:?}");
        assert_eq!(std::mem::size_of::<MmMap>(), 104, "struct prctl_mm_map");
        // A command holding ") " does not shift the fields.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (_, rest) = stat.rsplit_once(')').unwrap();
        let odd = format!("1 (a) b) c){rest}");
        let parsed = MmMap::from_stat(odd.as_bytes()).unwrap();
        assert_eq!(
            (parsed.start_code, parsed.arg_start, parsed.env_end),
            (map.start_code, map.arg_start, map.env_end)
        );
        assert!(MmMap::from_stat(b"1 (x) S 0 0").is_none(), "too few fields");
        assert!(MmMap::threads().unwrap() >= 1);
        // Not applied here: other test threads move the break meanwhile.
    }
}
