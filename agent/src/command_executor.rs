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

use std::os::fd::OwnedFd;
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
    // Named for `ps` and `top` (informational; errors are harmless).
    let _ = nix::sys::prctl::set_name(c"cairn-executor");
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
            Ok(spawned) => {
                let copiers: Vec<_> = [
                    spawned.stdout.map(|p| (p, "stdout")),
                    spawned.stderr.map(|p| (p, "stderr")),
                ]
                .into_iter()
                .flatten()
                .filter_map(|(pipe, name)| match pipe_reader(pipe) {
                    Ok(pipe) => {
                        let log = RotatingLog::new(self.sandbox.join(name), self.log_max);
                        Some(tokio::spawn(log.copy_from(pipe)))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the task's {name}");
                        None
                    }
                })
                .collect();
                let pid = i32::try_from(spawned.process.pid).ok();
                if let Some(t) = self.task.as_mut() {
                    t.pgid = pid;
                }
                let running = self.new_status(&task.task_id, TaskState::Running, String::new());
                self.send(tx, running).await;
                let exit_tx = exit_tx.clone();
                tokio::spawn(async move {
                    let status = crate::spawn::wait(spawned.process).await;
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

/// A started task: its process (the leader of its process group) and, when
/// its output is bounded, the pipes it writes to.
struct SpawnedTask {
    process: crate::spawn::Spawned,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// Starts the task's command in a process group of its own, in the sandbox,
/// with its output appended to the sandbox's `stdout` and `stderr` (through
/// pipes when it is bounded). Started as the agent starts executors
/// (`crate::spawn`): without copying this executor's memory for a child that
/// only execs.
fn spawn_task(
    task: &TaskInfo,
    sandbox: &std::path::Path,
    user: &str,
    log_max: u64,
) -> std::io::Result<SpawnedTask> {
    use crate::spawn::{c_path, c_string, find_program};
    let owner = resolve_user(user)?;
    let c = &task.command;
    // The task's environment: this executor's, without its token (its own:
    // the task never sees it), and the command's on top.
    let env = crate::spawn::environment(&[cairn_tls::EXECUTOR_TOKEN_ENV], &c.environment)?;
    // As `execvp` looks programs up: in the command's PATH if it sets one.
    let path = c
        .environment
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v));
    let (program, args) = if c.shell {
        (
            PathBuf::from("/bin/sh"),
            vec![c"sh".to_owned(), c"-c".to_owned(), c_string(&c.value)?],
        )
    } else {
        let program = find_program(&c.value, path.as_ref())?;
        // Mesos's `arguments` include argv[0].
        let args = match c.arguments.split_first() {
            Some(_) => c
                .arguments
                .iter()
                .map(|a| c_string(a))
                .collect::<Result<_, _>>()?,
            None => vec![c_string(&c.value)?],
        };
        (program, args)
    };

    // Unbounded output goes to the files; bounded output through a pipe
    // to a copier that rotates them.
    let output = |name: &str| -> std::io::Result<(OwnedFd, Option<OwnedFd>)> {
        if log_max == 0 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(sandbox.join(name))?;
            Ok((file.into(), None))
        } else {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok((write, Some(read)))
        }
    };
    let (stdout, stdout_pipe) = output("stdout")?;
    let (stderr, stderr_pipe) = output("stderr")?;
    let no_network = task.network == cairn_model::Network::None;
    let spec = crate::spawn::SpawnSpec {
        program: c_path(&program)?,
        args,
        env,
        cwd: c_path(sandbox)?,
        stdin: std::fs::File::open("/dev/null")?.into(),
        stdout,
        stderr,
        setsid: false,
        cgroup_procs: Vec::new(),
        // The executor asked to be the OOM killer's last choice; its task
        // should not be.
        oom_score_adj: Some(b"0"),
        unshare: if no_network { libc::CLONE_NEWNET } else { 0 },
        setpgid: true,
        loopback_up: no_network,
        credentials: owner.map(|(uid, gid)| (uid.as_raw(), gid.as_raw())),
    };
    let process = crate::spawn::spawn(&spec)?;
    // `spec` (with the pipes' write ends) is dropped here: the copiers see
    // the end of the output once the task's processes have closed theirs.
    Ok(SpawnedTask {
        process,
        stdout: stdout_pipe,
        stderr: stderr_pipe,
    })
}

/// A pipe's read end for the copiers.
fn pipe_reader(fd: OwnedFd) -> std::io::Result<Pipe> {
    Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
        fd,
    )?))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod spawn_tests {
    use super::*;
    use crate::spawn::find_program;

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        let path: std::ffi::OsString = "/nonexistent:/bin".into();
        assert_eq!(
            find_program("sh", Some(&path)).unwrap(),
            PathBuf::from("/bin/sh")
        );
        // A name with a slash is taken as it is, found or not.
        assert_eq!(
            find_program("./x/y", Some(&path)).unwrap(),
            PathBuf::from("./x/y")
        );
        let missing = find_program("no-such-program-here", Some(&path)).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            find_program("", Some(&path)).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        // A directory of that name is not a program.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sh")).unwrap();
        let path: std::ffi::OsString = format!("{}:/bin", dir.path().display()).into();
        assert_eq!(
            find_program("sh", Some(&path)).unwrap(),
            PathBuf::from("/bin/sh")
        );
    }

    #[tokio::test]
    async fn a_task_gets_its_environment_and_its_output_in_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = TaskInfo {
            task_id: TaskId::new("t"),
            name: "t".into(),
            agent_id: cairn_model::AgentId::new("a"),
            resources: cairn_model::Resources::default(),
            command: cairn_model::CommandInfo::shell("echo \"$GREETING\"; echo oops >&2; exit 3"),
            kill_policy: cairn_model::KillPolicy::default(),
            labels: vec![],
            network: cairn_model::Network::Host,
            executor: None,
            data: Vec::new(),
        };
        task.command.environment = vec![("GREETING".into(), "hello".into())];
        for log_max in [0, 1 << 20] {
            let t = spawn_task(&task, dir.path(), "", log_max).unwrap();
            let copiers: Vec<_> = [(t.stdout, "stdout"), (t.stderr, "stderr")]
                .into_iter()
                .filter_map(|(p, name)| {
                    let log = RotatingLog::new(dir.path().join(name), log_max);
                    Some(tokio::spawn(log.copy_from(pipe_reader(p?).unwrap())))
                })
                .collect();
            assert_eq!(copiers.len(), if log_max == 0 { 0 } else { 2 });
            let status = crate::spawn::wait(t.process).await.unwrap();
            for c in copiers {
                c.await.unwrap();
            }
            assert_eq!(status.code(), Some(3));
        }
        let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
        assert_eq!(out, "hello\nhello\n");
        let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
        assert_eq!(err, "oops\noops\n");
    }
}
