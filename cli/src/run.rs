//! `cairn run -- CMD [ARGS...]`: one command as a task. Prints its stdout and
//! stderr as it runs and exits with its exit status.

use std::time::Duration;

use cairn_sdk::{
    Driver, FrameworkInfo, Offer, Resources, Scheduler, SchedulerDriver, TaskBuilder, TaskState,
    TaskStatus,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::http::{HttpClient, encode};

/// Exit status when the task could not be placed (as Nomad uses 2).
pub const EXIT_UNPLACED: i32 = 2;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// CPUs for the task.
    #[arg(long, default_value_t = 0.1)]
    pub cpus: f64,
    /// Memory for the task, MB.
    #[arg(long, default_value_t = 64.0)]
    pub mem: f64,
    /// Task name (default: the program's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Give up if no agent offers enough resources within this time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub placement_timeout: Duration,
    /// The command and its arguments (executed directly, no shell).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Clone, Debug)]
enum Phase {
    Waiting,
    Launched { agent: AgentApi, sandbox: String },
    Done(TaskStatus),
    Error(String),
}

struct RunOne {
    task: Option<cairn_sdk::TaskInfo>,
    shape: Resources,
    phase: watch::Sender<Phase>,
    task_name: String,
}

impl Scheduler for RunOne {
    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        for offer in offers {
            let fits = offer.resources.contains(&self.shape);
            match self.task.take() {
                Some(mut task) if fits => {
                    task.agent_id = offer.agent_id.clone();
                    let task_id = task.task_id.clone();
                    if let Err(e) = driver.launch(&offer, vec![task]).await {
                        let _ = self.phase.send(Phase::Error(format!("cannot launch: {e}")));
                        driver.stop();
                        return;
                    }
                    let framework = driver
                        .framework_id()
                        .map(|f| f.to_string())
                        .unwrap_or_default();
                    let _ = self.phase.send(Phase::Launched {
                        agent: AgentApi {
                            url: offer.agent_url.clone(),
                            id: offer.agent_id.to_string(),
                            told: Default::default(),
                        },
                        sandbox: format!("/frameworks/{framework}/executors/{task_id}/runs/latest"),
                    });
                    let _ = driver.suppress().await;
                }
                other => {
                    self.task = other;
                    let _ = driver
                        .decline(
                            std::slice::from_ref(&offer.id),
                            Some(Duration::from_secs(3600)),
                        )
                        .await;
                }
            }
        }
    }

    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        tracing::debug!(task = %self.task_name, state = %status.state, "task update");
        if status.state.is_terminal() {
            let _ = driver.acknowledge(status).await;
            let _ = self.phase.send(Phase::Done(status.clone()));
            let _ = driver.teardown().await;
        }
    }

    async fn error(&mut self, _driver: &Driver, message: &str) {
        let _ = self.phase.send(Phase::Error(message.to_string()));
    }
}

/// The agent a task runs on: its API's URL (from the offer) and its id,
/// which its certificate must name when the URL is HTTPS.
#[derive(Clone, Debug)]
struct AgentApi {
    url: String,
    id: String,
    /// Whether the user was told the agent cannot be reached (once).
    told: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Copies new bytes of a sandbox file to `out`; returns the new offset.
async fn pump(
    http: &HttpClient,
    agent: &AgentApi,
    path: &str,
    offset: u64,
    out: &mut (impl AsyncWriteExt + Unpin),
) -> u64 {
    let mut offset = offset;
    loop {
        let url = format!(
            "{}/files/read?path={}&offset={offset}",
            agent.url,
            encode(path)
        );
        let v = match http.get_agent_json(&url, &agent.id).await {
            Ok(v) => v,
            // Not there yet, or the task's agent cannot be reached (a
            // refused certificate, a missing CAIRN_CA): the latter is said.
            Err(e) => {
                if matches!(e, crate::http::HttpError::Unreachable { .. })
                    && !agent.told.swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    eprintln!("cairn run: cannot read the task's output: {e}");
                }
                return offset;
            }
        };
        let data = v["data"].as_str().unwrap_or_default();
        if data.is_empty() {
            return offset;
        }
        let _ = out.write_all(data.as_bytes()).await;
        let _ = out.flush().await;
        offset += data.len() as u64;
    }
}

/// Runs the command; returns the exit status to leave with.
pub async fn run(master: &str, args: RunArgs) -> anyhow::Result<i32> {
    let program = args.command[0].clone();
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&program)
            .file_name()
            .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned())
    });
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let task_id = format!("{}-{stamp}", sanitize(&name));
    let rest: Vec<&str> = args.command[1..].iter().map(String::as_str).collect();
    let task = TaskBuilder::new(task_id)
        .name(name.clone())
        .cpus(args.cpus)
        .mem(args.mem)
        .exec(program, &rest)
        .build(&cairn_sdk::AgentId::new("unplaced"))?;
    let shape = task.resources.clone();

    let (phase_tx, mut phase_rx) = watch::channel(Phase::Waiting);
    let mut info = FrameworkInfo::new(format!("cairn run {name}"), "");
    info.failover_timeout = Duration::ZERO;
    let sched = RunOne {
        task: Some(task),
        shape: shape.clone(),
        phase: phase_tx,
        task_name: name,
    };
    let master_addr = master.to_string();
    let driver = SchedulerDriver::new(master_addr, info).credential_from_env();
    let driver_task = tokio::spawn(async move { driver.run(sched).await });

    let http = HttpClient::new();
    let deadline = tokio::time::Instant::now() + args.placement_timeout;
    let (mut out_off, mut err_off) = (0u64, 0u64);
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut interrupt = std::pin::pin!(cairn_model::runtime::shutdown_signal());
    loop {
        let phase = phase_rx.borrow().clone();
        match phase {
            Phase::Waiting => {
                tokio::select! {
                    _ = phase_rx.changed() => {}
                    () = tokio::time::sleep_until(deadline) => {
                        driver_task.abort();
                        eprintln!(
                            "cairn run: no agent offered {shape} within {}; is an agent registered with enough free resources?",
                            humantime::format_duration(args.placement_timeout)
                        );
                        return Ok(EXIT_UNPLACED);
                    }
                    () = &mut interrupt => {
                        driver_task.abort();
                        return Ok(130);
                    }
                }
            }
            Phase::Launched { agent, sandbox } => {
                out_off = pump(
                    &http,
                    &agent,
                    &format!("{sandbox}/stdout"),
                    out_off,
                    &mut stdout,
                )
                .await;
                err_off = pump(
                    &http,
                    &agent,
                    &format!("{sandbox}/stderr"),
                    err_off,
                    &mut stderr,
                )
                .await;
                tokio::select! {
                    _ = phase_rx.changed() => {
                        if let Phase::Done(_) = &*phase_rx.borrow() {
                            // One last read after the end.
                            pump(&http, &agent, &format!("{sandbox}/stdout"), out_off, &mut stdout).await;
                            pump(&http, &agent, &format!("{sandbox}/stderr"), err_off, &mut stderr).await;
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = &mut interrupt => {
                        eprintln!("cairn run: interrupted; killing the task");
                        let _ = tokio::time::timeout(Duration::from_secs(5), driver_task).await;
                        return Ok(130);
                    }
                }
            }
            Phase::Done(status) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), driver_task).await;
                return Ok(exit_status(&status));
            }
            Phase::Error(message) => {
                driver_task.abort();
                eprintln!("cairn run: {message}");
                return Ok(1);
            }
        }
    }
}

fn exit_status(status: &TaskStatus) -> i32 {
    match status.state {
        TaskState::Finished => 0,
        TaskState::Failed => match status.exit_code {
            Some(c) if (1..=255).contains(&c) => c,
            _ => {
                eprintln!("cairn run: task failed: {}", status.message);
                1
            }
        },
        TaskState::Killed => {
            eprintln!("cairn run: task was killed: {}", status.message);
            137
        }
        other => {
            eprintln!("cairn run: task ended {other}: {}", status.message);
            1
        }
    }
}

/// A task id from a name: letters, digits, '-', '_' and '.'.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "run".into()
    } else {
        s
    }
}
