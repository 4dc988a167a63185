//! The built-in command executor: a separate process (started by the agent
//! as `<agent binary> executor`) that runs one task's command and reports its
//! states.
//!
//! It connects back to the agent named by `MESOS_AGENT_ENDPOINT`, subscribes,
//! receives the task, runs it in a process group of its own with its output
//! in the sandbox's `stdout` and `stderr`, and sends TASK_STARTING,
//! TASK_RUNNING and then one terminal update. A kill sends SIGTERM to the
//! task's whole process group and SIGKILL after the grace period. The
//! executor exits once the agent has acknowledged every update; if the agent
//! goes away meanwhile, it keeps the task running and reconnects.

use std::path::PathBuf;
use std::time::Duration;

use cairn_model::convert::{framework_info_from_pb, task_info_from_pb, task_status_to_pb};
use cairn_model::{
    Capability, ExecutorId, FrameworkId, Reason, StatusUuid, TaskId, TaskInfo, TaskState,
    TaskStatus, Time,
};
use cairn_proto as pb;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long the executor waits for an agent that went away.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    BadEnv { name: &'static str, reason: String },
    #[error("cannot start the executor's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the agent was unreachable for longer than {0:?}")]
    AgentGone(Duration),
    #[error("{0}")]
    Container(String),
}

fn env(name: &'static str) -> Result<String, ExecutorError> {
    std::env::var(name).map_err(|_| ExecutorError::MissingEnv(name))
}

/// Entry point of the executor process.
pub fn main() -> Result<(), ExecutorError> {
    // Started by the Linux launcher: set the container up first (this
    // returns in the executor process only).
    if crate::isolation::container::is_container_start() {
        crate::isolation::container::enter()
            .map_err(|e| ExecutorError::Container(e.to_string()))?;
    }
    let endpoint = env("MESOS_AGENT_ENDPOINT")?;
    let framework_id = FrameworkId::parse("MESOS_FRAMEWORK_ID", &env("MESOS_FRAMEWORK_ID")?)
        .map_err(|e| ExecutorError::BadEnv {
            name: "MESOS_FRAMEWORK_ID",
            reason: e.to_string(),
        })?;
    let executor_id =
        ExecutorId::parse("MESOS_EXECUTOR_ID", &env("MESOS_EXECUTOR_ID")?).map_err(|e| {
            ExecutorError::BadEnv {
                name: "MESOS_EXECUTOR_ID",
                reason: e.to_string(),
            }
        })?;
    let sandbox = std::env::var("MESOS_SANDBOX")
        .map(PathBuf::from)
        .or_else(|_| std::env::current_dir())
        .map_err(ExecutorError::Runtime)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExecutorError::Runtime)?;
    let tls = cairn_tls::executor_tls_from_env().map_err(|e| ExecutorError::BadEnv {
        name: cairn_tls::AGENT_CA_ENV,
        reason: e.to_string(),
    })?;
    let mut ex = CommandExecutor {
        endpoint,
        tls,
        token: cairn_tls::ExecutorToken::from_env(),
        framework_id,
        executor_id,
        sandbox,
        task: None,
        unacked: Vec::new(),
        terminal_sent: false,
        user: std::env::var("CAIRN_TASK_USER").unwrap_or_default(),
        subscribed: false,
        log_max: std::env::var(LOG_MAX_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    rt.block_on(ex.run())
}

struct RunningTask {
    id: TaskId,
    pgid: Option<i32>,
    kill_requested: bool,
    killing_state: bool,
    /// When to send SIGKILL after a SIGTERM.
    sigkill_at: Option<tokio::time::Instant>,
}

struct CommandExecutor {
    endpoint: String,
    /// With an agent that serves TLS: verifying that agent.
    tls: Option<cairn_tls::ClientConfig>,
    /// This executor's token, for an agent that authenticates executors.
    token: Option<cairn_tls::ExecutorToken>,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    sandbox: PathBuf,
    task: Option<RunningTask>,
    /// Updates the agent has not acknowledged yet, in the order sent (they
    /// are replayed in that order after a reconnect).
    unacked: Vec<TaskStatus>,
    terminal_sent: bool,
    /// The user tasks run as ("": this executor's own).
    user: String,
    /// Set when a session got through to the agent.
    subscribed: bool,
    /// See `AgentArgs::task_log_max_size` (0: output goes to the files
    /// directly, unbounded).
    log_max: u64,
}

/// Names the most bytes a task's stdout (and its stderr) may keep on disk.
pub const LOG_MAX_ENV: &str = "CAIRN_TASK_LOG_MAX_SIZE";

/// What the task's process did.
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    error: Option<String>,
}

enum Step {
    Continue,
    Done,
}

impl CommandExecutor {
    async fn run(&mut self) -> Result<(), ExecutorError> {
        let (exit_tx, mut exit_rx) = mpsc::channel::<Exit>(4);
        let mut disconnected_since: Option<tokio::time::Instant> = None;
        loop {
            match self.session(&exit_tx, &mut exit_rx).await {
                Ok(Step::Done) => return Ok(()),
                Ok(Step::Continue) => {}
                // Said each time: a refused certificate or token does not
                // heal, and the task's stderr is where its user looks.
                Err(e) => {
                    tracing::warn!(agent = %self.endpoint, error = %e.message(), "no session with the agent")
                }
            }
            // The recovery clock runs from the end of the last session that
            // got through to the agent.
            if std::mem::take(&mut self.subscribed) {
                disconnected_since = None;
            }
            let since = *disconnected_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > RECOVERY_TIMEOUT {
                self.kill_task(Signal::SIGKILL);
                return Err(ExecutorError::AgentGone(RECOVERY_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn new_status(&self, task_id: &TaskId, state: TaskState, message: String) -> TaskStatus {
        let mut s = TaskStatus::from_executor(task_id.clone(), state, message, Time::now());
        s.executor_id = Some(self.executor_id.clone());
        s.uuid = Some(StatusUuid(rand::random()));
        s
    }

    /// Records `status` as unacknowledged and sends it.
    async fn send(&mut self, tx: &mpsc::Sender<pb::ExecutorMessage>, status: TaskStatus) {
        if status.state.is_terminal() {
            self.terminal_sent = true;
        }
        if status.uuid.is_some() {
            self.unacked.push(status.clone());
        }
        let _ = tx
            .send(pb::ExecutorMessage {
                message: Some(pb::executor_message::Message::Update(pb::ExecutorUpdate {
                    status: Some(task_status_to_pb(&status)),
                })),
            })
            .await;
    }

    /// One connection to the agent. Returns `Done` when the task is over and
    /// every update is acknowledged.
    async fn session(
        &mut self,
        exit_tx: &mpsc::Sender<Exit>,
        exit_rx: &mut mpsc::Receiver<Exit>,
    ) -> Result<Step, tonic::Status> {
        let channel =
            cairn_tls::agent_channel(&self.endpoint, self.tls.as_ref(), Duration::from_secs(10))
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = pb::executor_link_client::ExecutorLinkClient::new(channel);
        let (tx, rx) = mpsc::channel(64);
        let subscribe = pb::ExecutorMessage {
            message: Some(pb::executor_message::Message::Subscribe(
                pb::ExecutorSubscribe {
                    framework_id: self.framework_id.to_string(),
                    executor_id: self.executor_id.to_string(),
                    unacknowledged_updates: self.unacked.iter().map(task_status_to_pb).collect(),
                },
            )),
        };
        let _ = tx.send(subscribe).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.token {
            token.attach(&mut request);
        }
        let mut inbound = client.session(request).await?.into_inner();
        self.subscribed = true;
        loop {
            if self.terminal_sent && self.unacked.is_empty() {
                return Ok(Step::Done);
            }
            let sigkill_at = self.task.as_ref().and_then(|t| t.sigkill_at);
            tokio::select! {
                msg = inbound.message() => {
                    let Some(msg) = msg? else { return Ok(Step::Continue) };
                    let Some(event) = msg.event else { continue };
                    self.event(event, &tx, exit_tx).await;
                }
                Some(exit) = exit_rx.recv() => {
                    self.exited(exit, &tx).await;
                }
                () = sleep_until_opt(sigkill_at) => {
                    if let Some(t) = self.task.as_mut() {
                        t.sigkill_at = None;
                    }
                    self.kill_task(Signal::SIGKILL);
                }
            }
        }
    }

    async fn event(
        &mut self,
        event: pb::executor_event::Event,
        tx: &mpsc::Sender<pb::ExecutorMessage>,
        exit_tx: &mpsc::Sender<Exit>,
    ) {
        use pb::executor_event::Event as E;
        match event {
            // The command executor runs a command; framework messages have
            // no one to go to.
            E::Subscribed(_) | E::Message(_) => {}
            E::Launch(l) => {
                let task = l.task.as_ref().map(|t| task_info_from_pb("launch.task", t));
                let killing_state = l
                    .framework
                    .as_ref()
                    .and_then(|f| framework_info_from_pb("launch.framework", f).ok())
                    .is_some_and(|f| f.has(Capability::TaskKillingState));
                match task {
                    Some(Ok(task)) => self.launch(task, killing_state, tx, exit_tx).await,
                    Some(Err(e)) => tracing::error!(error = %e, "malformed task from the agent"),
                    None => {}
                }
            }
            E::Kill(k) => {
                self.kill(Duration::from_millis(k.grace_period_ms), tx)
                    .await
            }
            E::Shutdown(s) => {
                if self.task.is_none() {
                    // Nothing ever ran: nothing to report.
                    self.terminal_sent = true;
                } else {
                    self.kill(Duration::from_millis(s.grace_period_ms), tx)
                        .await;
                }
            }
            E::Acknowledged(a) => {
                if let Ok(u) = StatusUuid::from_slice("uuid", &a.uuid) {
                    self.unacked.retain(|s| s.uuid != Some(u));
                }
            }
        }
    }

    async fn launch(
        &mut self,
        task: TaskInfo,
        killing_state: bool,
        tx: &mpsc::Sender<pb::ExecutorMessage>,
        exit_tx: &mpsc::Sender<Exit>,
    ) {
        if let Some(running) = &self.task {
            if running.id == task.task_id {
                // Sent again after a reconnect: already running.
                return;
            }
            let mut s = self.new_status(
                &task.task_id,
                TaskState::Failed,
                format!("This command executor already runs task {}", running.id),
            );
            s.reason = Some(Reason::CommandExecutorFailed);
            self.send(tx, s).await;
            return;
        }
        self.task = Some(RunningTask {
            id: task.task_id.clone(),
            pgid: None,
            kill_requested: false,
            killing_state,
            sigkill_at: None,
        });
        let starting = self.new_status(&task.task_id, TaskState::Starting, String::new());
        self.send(tx, starting).await;
        match spawn_task(&task, &self.sandbox, &self.user, self.log_max) {
            Ok(mut child) => {
                let copiers: Vec<_> = [
                    child.stdout.take().map(|p| (Box::new(p) as Pipe, "stdout")),
                    child.stderr.take().map(|p| (Box::new(p) as Pipe, "stderr")),
                ]
                .into_iter()
                .flatten()
                .map(|(pipe, name)| {
                    let log = RotatingLog::new(self.sandbox.join(name), self.log_max);
                    tokio::spawn(log.copy_from(pipe))
                })
                .collect();
                let pid = child.id().and_then(|p| i32::try_from(p).ok());
                if let Some(t) = self.task.as_mut() {
                    t.pgid = pid;
                }
                let running = self.new_status(&task.task_id, TaskState::Running, String::new());
                self.send(tx, running).await;
                let exit_tx = exit_tx.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    // The output is on disk before the end is reported; a
                    // daemon the task left holding its pipes gets a moment.
                    for c in copiers {
                        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
                    }
                    let exit = match status {
                        Ok(status) => {
                            use std::os::unix::process::ExitStatusExt;
                            Exit {
                                code: status.code(),
                                signal: status.signal(),
                                error: None,
                            }
                        }
                        Err(e) => Exit {
                            code: None,
                            signal: None,
                            error: Some(format!("cannot wait for the command: {e}")),
                        },
                    };
                    let _ = exit_tx.send(exit).await;
                });
            }
            Err(e) => {
                let mut s = self.new_status(
                    &task.task_id,
                    TaskState::Failed,
                    format!("Failed to launch the command: {e}"),
                );
                s.reason = Some(Reason::CommandExecutorFailed);
                self.send(tx, s).await;
            }
        }
    }

    fn kill_task(&self, signal: Signal) {
        if let Some(pgid) = self.task.as_ref().and_then(|t| t.pgid).filter(|p| *p > 1) {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }

    async fn kill(&mut self, grace: Duration, tx: &mpsc::Sender<pb::ExecutorMessage>) {
        let Some(t) = self.task.as_mut() else { return };
        if t.kill_requested || self.terminal_sent {
            return;
        }
        t.kill_requested = true;
        t.sigkill_at = Some(tokio::time::Instant::now() + grace);
        let (id, killing_state, started) = (t.id.clone(), t.killing_state, t.pgid.is_some());
        if killing_state && started {
            let s = self.new_status(&id, TaskState::Killing, String::new());
            self.send(tx, s).await;
        }
        self.kill_task(Signal::SIGTERM);
    }

    async fn exited(&mut self, exit: Exit, tx: &mpsc::Sender<pb::ExecutorMessage>) {
        let Some(t) = self.task.as_mut() else { return };
        t.sigkill_at = None;
        let (id, killed) = (t.id.clone(), t.kill_requested);
        // Whatever the command left in its group goes with it.
        self.kill_task(Signal::SIGKILL);
        let (state, message) = match (&exit.error, exit.code, exit.signal) {
            (Some(e), _, _) => (TaskState::Failed, e.clone()),
            (None, _, Some(sig)) => {
                let name = Signal::try_from(sig)
                    .map_or_else(|_| sig.to_string(), |s| s.as_str().to_string());
                let state = if killed {
                    TaskState::Killed
                } else {
                    TaskState::Failed
                };
                (state, format!("Command terminated with signal {name}"))
            }
            (None, Some(0), None) => (
                if killed {
                    TaskState::Killed
                } else {
                    TaskState::Finished
                },
                "Command exited with status 0".to_string(),
            ),
            (None, Some(code), None) => (
                if killed {
                    TaskState::Killed
                } else {
                    TaskState::Failed
                },
                format!("Command exited with status {code}"),
            ),
            (None, None, None) => (
                TaskState::Failed,
                "Command ended for an unknown reason".into(),
            ),
        };
        let mut s = self.new_status(&id, state, message);
        s.exit_code = exit.code;
        self.send(tx, s).await;
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Who the task runs as: `None` to stay this process's user.
fn resolve_user(user: &str) -> std::io::Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    if user.is_empty() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name(user)
        .map_err(std::io::Error::from)?
        .ok_or_else(|| std::io::Error::other(format!("no such user {user:?}")))?;
    let me = nix::unistd::geteuid();
    if u.uid == me {
        return Ok(None);
    }
    if !me.is_root() {
        return Err(std::io::Error::other(format!(
            "cannot run as {user:?}: the executor does not run as root"
        )));
    }
    Ok(Some((u.uid, u.gid)))
}

/// Brings the loopback device up in a fresh network namespace.
/// Async-signal-safe: socket(2), ioctl(2), close(2) on stack memory.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: `ifr` is a zeroed ifreq on this stack frame, its name field
    // holds "lo" NUL-terminated; the socket is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if result >= 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if result < 0 { Err(err) } else { Ok(()) }
    }
}

/// Starts the task's command in a process group of its own, in the sandbox,
/// with its output appended to the sandbox's `stdout` and `stderr`.
fn spawn_task(
    task: &TaskInfo,
    sandbox: &std::path::Path,
    user: &str,
    log_max: u64,
) -> std::io::Result<tokio::process::Child> {
    let owner = resolve_user(user)?;
    let no_network = task.network == cairn_model::Network::None;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.join(name))
    };
    let c = &task.command;
    let mut cmd = if c.shell {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&c.value);
        cmd
    } else {
        let mut cmd = tokio::process::Command::new(&c.value);
        if let Some((argv0, rest)) = c.arguments.split_first() {
            cmd.arg0(argv0).args(rest);
        }
        cmd
    };
    let output = |name: &str| -> std::io::Result<std::process::Stdio> {
        if log_max == 0 {
            Ok(open(name)?.into())
        } else {
            Ok(std::process::Stdio::piped())
        }
    };
    // The executor's token is its own: the task never sees it.
    cmd.current_dir(sandbox)
        .env_remove(cairn_tls::EXECUTOR_TOKEN_ENV)
        .envs(c.environment.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(output("stdout")?)
        .stderr(output("stderr")?)
        .kill_on_drop(false);
    // SAFETY: runs in the child between fork and exec, and makes only
    // async-signal-safe syscalls (setpgid, unshare, socket/ioctl, open/write,
    // setgroups, setgid, setuid) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if no_network {
                if libc::unshare(libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                loopback_up()?;
            }
            // The executor asked to be the OOM killer's last choice; its
            // task should not be.
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            if let Some((uid, gid)) = owner {
                // No supplementary groups, then the group, then the user
                // (after which nothing privileged is possible).
                if libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setgid(gid.as_raw()) < 0
                    || libc::setuid(uid.as_raw()) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

type Pipe = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// A task's output file that never holds more than `max` bytes with its one
/// rotated predecessor (`<name>.1`): at `max / 2` bytes the file becomes
/// `<name>.1` (replacing the older one) and a new one starts.
#[derive(Debug)]
struct RotatingLog {
    path: PathBuf,
    rotated: PathBuf,
    /// Bytes a file may reach before it is rotated.
    limit: u64,
}

impl RotatingLog {
    fn new(path: PathBuf, max: u64) -> Self {
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        RotatingLog {
            path,
            rotated: rotated.into(),
            limit: (max / 2).max(1),
        }
    }

    fn open(&self) -> std::io::Result<(std::fs::File, u64)> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    }

    /// Copies `pipe` until its end. Output that cannot be written is dropped
    /// rather than left to block the task.
    async fn copy_from(self, mut pipe: Pipe) {
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let mut file = self.open();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut chunk = &buf[..n];
            while !chunk.is_empty() {
                let Ok((f, len)) = file.as_mut() else {
                    // Try again later (the sandbox may be full).
                    file = self.open();
                    break;
                };
                let room = usize::try_from(self.limit.saturating_sub(*len)).unwrap_or(usize::MAX);
                let take = chunk.len().min(room);
                if take > 0 {
                    if f.write_all(&chunk[..take]).is_err() {
                        break;
                    }
                    *len += take as u64;
                    chunk = &chunk[take..];
                }
                if *len >= self.limit {
                    let _ = std::fs::rename(&self.path, &self.rotated);
                    file = self.open();
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod rotation_tests {
    use super::*;

    #[tokio::test]
    async fn output_past_the_limit_is_rotated_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = RotatingLog::new(dir.path().join("stdout"), 1000);
        let data: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        log.copy_from(Box::new(std::io::Cursor::new(data.clone())))
            .await;
        let now = std::fs::read(dir.path().join("stdout")).unwrap();
        let before = std::fs::read(dir.path().join("stdout.1")).unwrap();
        assert!(
            now.len() + before.len() <= 1000,
            "{} + {}",
            now.len(),
            before.len()
        );
        // The newest bytes are kept, in order.
        let mut kept = before;
        kept.extend_from_slice(&now);
        assert!(
            data.ends_with(&kept),
            "the newest output is not what was kept"
        );
    }
}
