//! The instance executor (`cairn-services executor`): one per instance. It
//! runs the instance's containers (one for an app with a `command`, several
//! for a pod) as process groups of its own, in its container on the agent:
//! they share its network namespace (`localhost` reaches each other) and a
//! volume (`$VOLUME`, a directory of the sandbox). It runs the health check
//! and reports the instance healthy or not on TASK_RUNNING updates; when a
//! container ends, the instance ends (the framework starts a replacement).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_model::Time;
use cairn_sdk::executor::{Executor, ExecutorDriver};
use cairn_sdk::{SdkError, TaskId, TaskInfo, TaskState, TaskStatus};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spec::{CheckKind, Container, HealthCheck};

/// What an instance runs: the task's data, as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstanceSpec {
    pub containers: Vec<Container>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u64>,
    pub health_check: Option<HealthCheck>,
    /// The agent's hostname, for `$HOST`.
    pub host: String,
}

#[derive(Debug, Default)]
struct Instance {
    task: Option<TaskId>,
    /// Container name to its process group, while it runs.
    groups: BTreeMap<String, i32>,
    killing: bool,
    ended: bool,
}

#[derive(Debug)]
struct InstanceExecutor {
    state: Arc<Mutex<Instance>>,
}

fn status(task: &TaskId, state: TaskState, message: impl Into<String>) -> TaskStatus {
    TaskStatus::from_executor(task.clone(), state, message, Time::now())
}

fn signal_all(state: &Arc<Mutex<Instance>>, signal: Signal) {
    let groups: Vec<i32> = state
        .lock()
        .map(|s| s.groups.values().copied().collect())
        .unwrap_or_default();
    for g in groups.into_iter().filter(|g| *g > 1) {
        let _ = killpg(Pid::from_raw(g), signal);
    }
}

/// SIGTERM now, SIGKILL after `grace` to whatever is left.
fn stop_all(state: &Arc<Mutex<Instance>>, grace: Duration) {
    if let Ok(mut s) = state.lock() {
        s.killing = true;
    }
    signal_all(state, Signal::SIGTERM);
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        signal_all(&state, Signal::SIGKILL);
    });
}

fn spawn_container(
    c: &Container,
    sandbox: &Path,
    env: &BTreeMap<String, String>,
    single: bool,
) -> std::io::Result<tokio::process::Child> {
    let (out, err) = if single {
        ("stdout".to_string(), "stderr".to_string())
    } else {
        (format!("{}.stdout", c.name), format!("{}.stderr", c.name))
    };
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.join(name))
    };
    tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&c.command)
        .env_remove(cairn_sdk::executor::EXECUTOR_TOKEN_ENV)
        .envs(env)
        .env("CONTAINER", &c.name)
        .current_dir(sandbox)
        .stdin(std::process::Stdio::null())
        .stdout(open(&out)?)
        .stderr(open(&err)?)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

impl Executor for InstanceExecutor {
    async fn launch(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        let id = task.task_id.clone();
        let spec: InstanceSpec = match serde_json::from_slice(&task.data) {
            Ok(s) => s,
            Err(e) => {
                driver.send_status(status(
                    &id,
                    TaskState::Failed,
                    format!("unreadable instance spec: {e}"),
                ));
                return;
            }
        };
        let sandbox = driver.env().sandbox.clone();
        let volume = sandbox.join("volume");
        if let Err(e) = std::fs::create_dir_all(&volume) {
            driver.send_status(status(
                &id,
                TaskState::Failed,
                format!("cannot create the volume: {e}"),
            ));
            return;
        }
        let mut env = spec.env.clone();
        for (i, p) in spec.ports.iter().enumerate() {
            env.insert(format!("PORT{i}"), p.to_string());
        }
        if let Some(p) = spec.ports.first() {
            env.insert("PORT".into(), p.to_string());
        }
        let ports: Vec<String> = spec.ports.iter().map(u64::to_string).collect();
        env.insert("PORTS".into(), ports.join(","));
        env.insert("HOST".into(), spec.host.clone());
        env.insert("INSTANCE".into(), id.to_string());
        env.insert("VOLUME".into(), volume.display().to_string());
        if let Ok(mut s) = self.state.lock() {
            s.task = Some(id.clone());
        }
        let single = spec.containers.len() == 1;
        let mut children = Vec::new();
        for c in &spec.containers {
            match spawn_container(c, &sandbox, &env, single) {
                Ok(child) => {
                    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
                    if let Ok(mut s) = self.state.lock() {
                        s.groups.insert(c.name.clone(), pgid);
                    }
                    children.push((c.name.clone(), child));
                }
                Err(e) => {
                    stop_all(&self.state, Duration::from_secs(2));
                    driver.send_status(status(
                        &id,
                        TaskState::Failed,
                        format!("container {} cannot start: {e}", c.name),
                    ));
                    return;
                }
            }
        }
        driver.update(&id, TaskState::Running, "");
        for (name, mut child) in children {
            let driver = driver.clone();
            let state = self.state.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let exit = child.wait().await;
                let (first, killing) = match state.lock() {
                    Ok(mut s) => {
                        s.groups.remove(&name);
                        let first = !s.ended;
                        s.ended = true;
                        (first, s.killing)
                    }
                    Err(_) => (false, false),
                };
                if !first {
                    return;
                }
                // One container ended: the instance ends with it.
                stop_all(&state, Duration::from_secs(3));
                let s = match exit {
                    _ if killing => status(&id, TaskState::Killed, "killed"),
                    Ok(st) if st.success() => status(
                        &id,
                        TaskState::Finished,
                        format!("container {name} exited with 0"),
                    ),
                    Ok(st) => {
                        let mut s =
                            status(&id, TaskState::Failed, format!("container {name}: {st}"));
                        s.exit_code = st.code();
                        s
                    }
                    Err(e) => status(&id, TaskState::Failed, format!("container {name}: {e}")),
                };
                // Report once every container is gone.
                for _ in 0..100 {
                    if state.lock().map(|s| s.groups.is_empty()).unwrap_or(true) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                driver.send_status(s);
            });
        }
        if let Some(check) = spec.health_check.clone() {
            let driver = driver.clone();
            let state = self.state.clone();
            tokio::spawn(health_loop(driver, state, id, check, spec, env, sandbox));
        }
    }

    async fn kill(&mut self, driver: &ExecutorDriver, task_id: &TaskId, grace: Duration) {
        let running = self
            .state
            .lock()
            .map(|s| s.task.as_ref() == Some(task_id) && !s.groups.is_empty())
            .unwrap_or(false);
        if running {
            stop_all(&self.state, grace);
        } else {
            driver.send_status(status(task_id, TaskState::Killed, "killed before it ran"));
        }
    }

    async fn shutdown(&mut self, _driver: &ExecutorDriver, grace: Duration) {
        stop_all(&self.state, grace);
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(1);
        while tokio::time::Instant::now() < deadline
            && self.state.lock().is_ok_and(|s| !s.groups.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs `check` after its grace period; reports TASK_RUNNING with
/// `healthy` when the verdict changes: healthy at the first success,
/// unhealthy after `failure_threshold` failures in a row.
async fn health_loop(
    driver: ExecutorDriver,
    state: Arc<Mutex<Instance>>,
    id: TaskId,
    check: HealthCheck,
    spec: InstanceSpec,
    env: BTreeMap<String, String>,
    sandbox: std::path::PathBuf,
) {
    tokio::time::sleep(check.grace_period).await;
    let mut failures = 0u32;
    let mut verdict: Option<bool> = None;
    loop {
        if state.lock().map(|s| s.ended || s.killing).unwrap_or(true) {
            return;
        }
        let ok = tokio::time::timeout(check.timeout, probe(&check, &spec, &env, &sandbox))
            .await
            .unwrap_or(false);
        failures = if ok { 0 } else { failures + 1 };
        let now = if ok {
            Some(true)
        } else if failures >= check.failure_threshold {
            Some(false)
        } else {
            verdict
        };
        if now != verdict && now.is_some() {
            verdict = now;
            let mut s = status(
                &id,
                TaskState::Running,
                if ok {
                    "healthy".to_string()
                } else {
                    format!("unhealthy: {failures} failed checks")
                },
            );
            s.healthy = now;
            driver.send_status(s);
        }
        tokio::time::sleep(check.interval).await;
    }
}

async fn probe(
    check: &HealthCheck,
    spec: &InstanceSpec,
    env: &BTreeMap<String, String>,
    sandbox: &Path,
) -> bool {
    let port = spec.ports.get(check.port_index).copied().unwrap_or(0);
    let addr = format!("127.0.0.1:{port}");
    match check.kind {
        CheckKind::Command => {
            let Some(cmd) = &check.command else {
                return false;
            };
            let run = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .env_remove(cairn_sdk::executor::EXECUTOR_TOKEN_ENV)
                .envs(env)
                .current_dir(sandbox)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await;
            run.is_ok_and(|s| s.success())
        }
        CheckKind::Tcp => tokio::net::TcpStream::connect(&addr).await.is_ok(),
        CheckKind::Http => {
            let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await else {
                return false;
            };
            let req = format!(
                "GET {} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: cairn-health\r\n\r\n",
                check.path
            );
            if conn.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut head = [0u8; 16];
            let mut n = 0;
            while n < 12 {
                match conn.read(&mut head[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            // "HTTP/1.x 2xx" or 3xx.
            let line = String::from_utf8_lossy(&head[..n]);
            let code = line.split_whitespace().nth(1).unwrap_or("");
            code.starts_with('2') || code.starts_with('3')
        }
    }
}

/// Runs the executor until its instance ended and the agent has every
/// update, or the agent shuts it down.
pub async fn run() -> Result<(), SdkError> {
    let driver = ExecutorDriver::from_env()?;
    let state = Arc::new(Mutex::new(Instance::default()));
    let watcher = {
        let driver = driver.clone();
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = state.lock().is_ok_and(|s| s.ended && s.groups.is_empty());
                if done && driver.unacknowledged() == 0 {
                    // Leave a moment for the terminal update to go out.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if driver.unacknowledged() == 0 {
                        driver.stop();
                        return;
                    }
                }
            }
        })
    };
    let r = driver.run(InstanceExecutor { state }).await;
    watcher.abort();
    r
}
