//! `cairn-batch`: a Spark-like batch framework on the Cairn SDK.
//!
//! A job file ([`job::Job`], TOML) lists stages forming a DAG; each stage
//! is N tasks from a command template. The framework runs a stage once
//! what it depends on has finished, packing its tasks into offers, retries
//! a failed task as a new one up to the stage's `retries`, and reports per
//! stage at the end. Two modes: fine-grained (each task its own command
//! executor) and coarse-grained (one long-lived executor per agent runs
//! the job's tasks there, and exits once idle). A stage may prefer agents
//! with an attribute, waiting up to a bound for them (delay scheduling).
//!
//! With a state directory the run survives a restart of the framework: the
//! framework id and every launch and end are kept there, and a restarted
//! run re-subscribes as the same framework, reconciles what was in flight
//! and goes on.

pub mod executor;
pub mod job;
pub mod progress;
pub mod report;
pub mod scheduler;

use std::path::PathBuf;
use std::time::Duration;

use cairn_sdk::{FrameworkInfo, SchedulerDriver};

pub use job::{Job, Mode};
pub use report::Report;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Job(#[from] job::JobError),
    #[error(transparent)]
    Progress(#[from] progress::ProgressError),
    #[error(transparent)]
    Sdk(#[from] cairn_sdk::SdkError),
    #[error("{0}")]
    Setup(String),
    #[error("the framework stopped before the job ended")]
    Stopped,
}

/// How to run a job.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `host:port` or `zk://...`.
    pub master: String,
    /// Keeps the framework id and the job's progress, so a restarted run
    /// resumes; without it a restart starts the job over.
    pub state_dir: Option<PathBuf>,
    /// How agents start the coarse-grained executor (default: this
    /// program's path with `executor`).
    pub executor_command: Option<String>,
    /// How long a coarse-grained executor stays without a task.
    pub executor_idle: Duration,
    /// How long the master keeps the job's tasks while the framework is
    /// away (a restart must come back within it).
    pub failover_timeout: Duration,
    /// Progress bars on the terminal (hidden when stderr is not one).
    pub progress: bool,
}

impl RunOptions {
    pub fn new(master: impl Into<String>) -> Self {
        RunOptions {
            master: master.into(),
            state_dir: None,
            executor_command: None,
            executor_idle: Duration::from_secs(10),
            failover_timeout: Duration::from_secs(600),
            progress: true,
        }
    }
}

/// Runs `job` to its end and returns the report (a failed job is a report
/// with `succeeded: false`, not an error).
pub async fn run(job: Job, options: RunOptions) -> Result<Report, BatchError> {
    let progress = match &options.state_dir {
        Some(dir) => Some(progress::Progress::open(dir)?),
        None => None,
    };
    let executor_command = match &options.executor_command {
        Some(c) => c.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| BatchError::Setup(e.to_string()))?;
            format!(
                "{} executor --idle {}",
                shell_quote(&exe.display().to_string()),
                humantime::format_duration(options.executor_idle)
            )
        }
    };
    let bars = if options.progress {
        indicatif::MultiProgress::new()
    } else {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = job.name.clone();
    let scheduler = scheduler::BatchScheduler::new(job, progress, executor_command, &bars, tx)
        .map_err(BatchError::Setup)?;
    let mut info = FrameworkInfo::new(format!("cairn-batch {name}"), "");
    info.failover_timeout = options.failover_timeout;
    let mut driver = SchedulerDriver::new(options.master.clone(), info).credential_from_env();
    if let Some(dir) = &options.state_dir {
        driver = driver.framework_id_file(dir.join("framework-id"));
    }
    driver.run(scheduler).await?;
    rx.await.map_err(|_| BatchError::Stopped)
}

/// `s` quoted for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
