//! The coarse-grained executor (`cairn-batch executor`): one per agent,
//! it runs the job's tasks there (the shell command in each task's data)
//! as processes of its own, each in its own
//! process group with its output in `<task id>.stdout` and `.stderr` in the
//! executor's sandbox, and exits once it has been idle for a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_model::Time;
use cairn_sdk::executor::{Executor, ExecutorDriver};
use cairn_sdk::{SdkError, TaskId, TaskInfo, TaskState, TaskStatus};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

#[derive(Debug, Default)]
struct Running {
    /// Task id to its process group, and whether a kill was asked for.
    tasks: HashMap<TaskId, (i32, bool)>,
    idle_since: Option<tokio::time::Instant>,
}

#[derive(Debug)]
struct BatchExecutor {
    running: Arc<Mutex<Running>>,
}

fn status(task_id: &TaskId, state: TaskState, message: String, code: Option<i32>) -> TaskStatus {
    let mut s = TaskStatus::from_executor(task_id.clone(), state, message, Time::now());
    s.exit_code = code;
    s
}

impl Executor for BatchExecutor {
    async fn launch(&mut self, driver: &ExecutorDriver, task: TaskInfo) {
        let id = task.task_id.clone();
        let sandbox = driver.env().sandbox.clone();
        let open = |ext: &str| std::fs::File::create(sandbox.join(format!("{id}.{ext}")));
        let (out, err) = match (open("stdout"), open("stderr")) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                driver.send_status(status(
                    &id,
                    TaskState::Failed,
                    format!("cannot open its output files: {e}"),
                    None,
                ));
                return;
            }
        };
        let command = String::from_utf8_lossy(&task.data).into_owned();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&command)
            .env_remove(cairn_sdk::executor::EXECUTOR_TOKEN_ENV)
            .envs(task.command.environment.iter().map(|(k, v)| (k, v)))
            .current_dir(&sandbox)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                driver.send_status(status(
                    &id,
                    TaskState::Failed,
                    format!("cannot start: {e}"),
                    None,
                ));
                return;
            }
        };
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if let Ok(mut r) = self.running.lock() {
            r.tasks.insert(id.clone(), (pgid, false));
            r.idle_since = None;
        }
        driver.update(&id, TaskState::Running, "");
        let driver = driver.clone();
        let running = self.running.clone();
        tokio::spawn(async move {
            let exit = child.wait().await;
            let killed = match running.lock() {
                Ok(mut r) => {
                    let k = r.tasks.remove(&id).is_some_and(|(_, k)| k);
                    if r.tasks.is_empty() {
                        r.idle_since = Some(tokio::time::Instant::now());
                    }
                    k
                }
                Err(_) => false,
            };
            let s = match exit {
                Ok(st) if killed => {
                    status(&id, TaskState::Killed, format!("killed ({st})"), st.code())
                }
                Ok(st) if st.success() => {
                    status(&id, TaskState::Finished, "exited with 0".into(), Some(0))
                }
                Ok(st) => status(&id, TaskState::Failed, format!("Command {st}"), st.code()),
                Err(e) => status(
                    &id,
                    TaskState::Failed,
                    format!("cannot wait for it: {e}"),
                    None,
                ),
            };
            driver.send_status(s);
        });
    }

    async fn kill(&mut self, _driver: &ExecutorDriver, task_id: &TaskId, grace: Duration) {
        let pgid = match self.running.lock() {
            Ok(mut r) => r.tasks.get_mut(task_id).map(|(p, k)| {
                *k = true;
                *p
            }),
            Err(_) => None,
        };
        if let Some(pgid) = pgid.filter(|p| *p > 1) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
            let running = self.running.clone();
            let task_id = task_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let still = running.lock().is_ok_and(|r| r.tasks.contains_key(&task_id));
                if still {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                }
            });
        }
    }

    async fn shutdown(&mut self, _driver: &ExecutorDriver, grace: Duration) {
        let groups: Vec<i32> = self
            .running
            .lock()
            .map(|mut r| {
                r.tasks
                    .values_mut()
                    .map(|(p, k)| {
                        *k = true;
                        *p
                    })
                    .collect()
            })
            .unwrap_or_default();
        for g in &groups {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline
            && self.running.lock().is_ok_and(|r| !r.tasks.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for g in &groups {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
    }
}

/// Runs the executor until the agent shuts it down or it has had no task
/// for `idle`.
pub async fn run(idle: Duration) -> Result<(), SdkError> {
    let driver = ExecutorDriver::from_env()?;
    let running = Arc::new(Mutex::new(Running {
        tasks: HashMap::new(),
        idle_since: Some(tokio::time::Instant::now()),
    }));
    let watcher = {
        let driver = driver.clone();
        let running = running.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let idle_for = running
                    .lock()
                    .ok()
                    .and_then(|r| r.idle_since)
                    .map(|t| t.elapsed());
                if idle_for.is_some_and(|d| d >= idle) && driver.unacknowledged() == 0 {
                    tracing::info!(?idle, "idle; the executor exits");
                    driver.stop();
                    return;
                }
            }
        })
    };
    let r = driver.run(BatchExecutor { running }).await;
    watcher.abort();
    r
}
