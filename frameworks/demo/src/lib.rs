//! An example framework: runs `count` copies of a command as tasks, packing
//! as many into each offer as fit, and reports how each ended.
//!
//! `{index}` in the command is replaced by the task's number.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_sdk::{
    Driver, FrameworkInfo, Offer, Resources, Scheduler, SchedulerDriver, SdkError, TaskBuilder,
    TaskState, TaskStatus,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub count: usize,
    pub command: String,
    pub cpus: f64,
    pub mem: f64,
}

/// How the run went.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Tasks by final state.
    pub states: BTreeMap<TaskState, usize>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn all_finished(&self, count: usize) -> bool {
        self.states.get(&TaskState::Finished).copied().unwrap_or(0) == count
    }
}

struct Demo {
    workload: Workload,
    shape: Resources,
    next: usize,
    done: BTreeMap<String, TaskState>,
    quiet: bool,
}

impl Demo {
    fn pending(&self) -> usize {
        self.workload.count - self.next
    }
}

impl Scheduler for Demo {
    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while self.pending() > 0 && left.contains(&self.shape) {
                let i = self.next;
                let command = self.workload.command.replace("{index}", &i.to_string());
                let built = TaskBuilder::new(format!("{}-{i}", self.workload.name))
                    .cpus(self.workload.cpus)
                    .mem(self.workload.mem)
                    .shell(command)
                    .build(&offer.agent_id);
                match built {
                    Ok(t) => tasks.push(t),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the task");
                        driver.stop();
                        return;
                    }
                }
                left = left.saturating_sub(&self.shape);
                self.next += 1;
            }
            let result = if tasks.is_empty() {
                driver
                    .decline(
                        std::slice::from_ref(&offer.id),
                        Some(Duration::from_secs(30)),
                    )
                    .await
            } else {
                driver.launch(&offer, tasks).await
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "call failed");
            }
        }
        if self.pending() == 0 {
            let _ = driver.suppress().await;
        }
    }

    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        if !status.state.is_terminal() {
            return;
        }
        self.done.insert(status.task_id.to_string(), status.state);
        if !self.quiet && status.state != TaskState::Finished {
            eprintln!("{} {}: {}", status.task_id, status.state, status.message);
        }
        if self.done.len() == self.workload.count {
            driver.stop();
        }
    }
}

/// Runs the workload against the master at `master` and tears the framework
/// down at the end.
pub async fn run(master: &str, workload: Workload, quiet: bool) -> Result<Outcome, SdkError> {
    run_with(master, None, workload, quiet).await
}

/// [`run`], trusting the cluster CA `ca_pem` (a master with a cluster
/// directory speaks only TLS).
pub async fn run_with(
    master: &str,
    ca_pem: Option<&str>,
    workload: Workload,
    quiet: bool,
) -> Result<Outcome, SdkError> {
    let shape = Resources::cpus_mem(workload.cpus, workload.mem).map_err(SdkError::InvalidTask)?;
    let mut info = FrameworkInfo::new(workload.name.clone(), "");
    info.failover_timeout = Duration::from_secs(60);
    let started = Instant::now();
    let demo = Demo {
        workload: workload.clone(),
        shape,
        next: 0,
        done: BTreeMap::new(),
        quiet,
    };
    let mut outcome = Outcome::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut driver = SchedulerDriver::new(master, info).credential_from_env();
    if let Some(ca) = ca_pem {
        driver = driver.cluster_ca(ca);
    }
    let wrapped = Reporting {
        inner: demo,
        report: Some(tx),
    };
    driver.run(wrapped).await?;
    if let Ok(done) = rx.await {
        for state in done.values() {
            *outcome.states.entry(*state).or_default() += 1;
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// Hands the final states out when the run stops, and tears down.
struct Reporting {
    inner: Demo,
    report: Option<tokio::sync::oneshot::Sender<BTreeMap<String, TaskState>>>,
}

impl Scheduler for Reporting {
    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        self.inner.offers(driver, offers).await;
    }

    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        self.inner.update(driver, status).await;
        if driver.is_stopped()
            && let Some(tx) = self.report.take()
        {
            // Acknowledge this last update before leaving: the driver would
            // only do it after this returns.
            let _ = driver.acknowledge(status).await;
            let _ = tx.send(self.inner.done.clone());
            let _ = driver.teardown().await;
        }
    }
}
