//! A framework for fault tests: runs `short` quick tasks and `long` tasks
//! that run until killed, and records every update it sees, so a test can
//! check that each task ended exactly once, whatever failed meanwhile.
//!
//! After each re-subscription (a master failover, a broken stream) it asks
//! the master for the state of every task it has not seen end, as a
//! framework should.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::{
    Capability, Driver, FrameworkId, FrameworkInfo, Offer, Resources, Scheduler, SchedulerDriver,
    TaskBuilder, TaskId, TaskState, TaskStatus,
};

use crate::wait_for;

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub name: String,
    pub short: usize,
    pub short_command: String,
    /// `{index}` is replaced by the long task's number.
    pub long: usize,
    pub long_command: String,
    pub cpus: f64,
    pub mem: f64,
    pub failover_timeout: Duration,
    pub partition_aware: bool,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            name: "workload".into(),
            short: 0,
            short_command: "sleep 0.2".into(),
            long: 0,
            long_command: "sleep 9{index}9".into(),
            cpus: 0.1,
            mem: 32.0,
            failover_timeout: Duration::from_secs(300),
            partition_aware: false,
        }
    }
}

/// What the framework has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every update per task, in arrival order.
    pub updates: BTreeMap<String, Vec<TaskStatus>>,
    pub launched: BTreeSet<String>,
    /// Launched by an ACCEPT not yet answered: the master may not have them
    /// yet, so they are not reconciled (it would rightly answer "unknown").
    pub launching: BTreeSet<String>,
    pub subscriptions: usize,
    pub errors: Vec<String>,
}

impl Seen {
    /// The distinct terminal states each task reported.
    pub fn terminal_states(&self, task: &str) -> BTreeSet<TaskState> {
        self.updates
            .get(task)
            .into_iter()
            .flatten()
            .filter(|s| s.state.is_terminal())
            .map(|s| s.state)
            .collect()
    }

    /// The last state seen for `task`.
    pub fn state(&self, task: &str) -> Option<TaskState> {
        self.updates
            .get(task)
            .and_then(|u| u.last())
            .map(|s| s.state)
    }

    /// Tasks that reported something after their first terminal state other
    /// than the same state again (at-least-once may repeat an update; a
    /// task must not end twice differently, nor live again).
    pub fn ended_twice(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (task, ups) in &self.updates {
            if let Some(first) = ups.iter().position(|s| s.state.is_terminal()) {
                let end = ups[first].state;
                if ups[first..].iter().any(|s| s.state != end) {
                    out.push(format!(
                        "{task}: {:?}",
                        ups.iter()
                            .map(|s| {
                                format!(
                                    "{:?}({:?}: {} @{})",
                                    s.state, s.reason, s.message, s.timestamp
                                )
                            })
                            .collect::<Vec<_>>()
                    ));
                }
            }
        }
        out
    }

    pub fn short_ids(spec: &WorkloadSpec) -> Vec<String> {
        (0..spec.short)
            .map(|i| format!("{}-short-{i}", spec.name))
            .collect()
    }

    pub fn long_ids(spec: &WorkloadSpec) -> Vec<String> {
        (0..spec.long)
            .map(|i| format!("{}-long-{i}", spec.name))
            .collect()
    }
}

struct Runner {
    spec: WorkloadSpec,
    shape: Resources,
    next_short: usize,
    next_long: usize,
    seen: Arc<Mutex<Seen>>,
}

impl Runner {
    fn build(&self, id: String, command: String, offer: &Offer) -> Option<cairn_sdk::TaskInfo> {
        TaskBuilder::new(id)
            .cpus(self.spec.cpus)
            .mem(self.spec.mem)
            .shell(command)
            .build(&offer.agent_id)
            .ok()
    }

    /// Tasks launched and not seen to end: what to reconcile.
    fn open_tasks(&self) -> Vec<(TaskId, Option<cairn_sdk::AgentId>)> {
        let seen = self.seen.lock().unwrap();
        seen.launched
            .iter()
            .filter(|t| !seen.state(t).is_some_and(TaskState::is_terminal))
            .filter(|t| !seen.launching.contains(*t))
            .map(|t| {
                let agent = seen
                    .updates
                    .get(t)
                    .and_then(|u| u.iter().rev().find_map(|s| s.agent_id.clone()));
                (TaskId::new(t.as_str()), agent)
            })
            .collect()
    }
}

impl Scheduler for Runner {
    async fn subscribed(&mut self, driver: &Driver, _id: &FrameworkId) {
        let again = {
            let mut seen = self.seen.lock().unwrap();
            seen.subscriptions += 1;
            seen.subscriptions > 1
        };
        if again {
            let open = self.open_tasks();
            if !open.is_empty() {
                let _ = driver.reconcile(&open).await;
            }
        }
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while left.contains(&self.shape) {
                let (id, command) = if self.next_long < self.spec.long {
                    let i = self.next_long;
                    self.next_long += 1;
                    (
                        format!("{}-long-{i}", self.spec.name),
                        self.spec.long_command.replace("{index}", &i.to_string()),
                    )
                } else if self.next_short < self.spec.short {
                    let i = self.next_short;
                    self.next_short += 1;
                    (
                        format!("{}-short-{i}", self.spec.name),
                        self.spec.short_command.clone(),
                    )
                } else {
                    break;
                };
                if let Some(t) = self.build(id.clone(), command, &offer) {
                    let mut seen = self.seen.lock().unwrap();
                    seen.launched.insert(id.clone());
                    seen.launching.insert(id);
                    tasks.push(t);
                }
                left = left.saturating_sub(&self.shape);
            }
            let _ = if tasks.is_empty() {
                driver
                    .decline(
                        std::slice::from_ref(&offer.id),
                        Some(Duration::from_secs(1)),
                    )
                    .await
            } else {
                let ids: Vec<String> = tasks.iter().map(|t| t.task_id.to_string()).collect();
                let r = driver
                    .accept(
                        std::slice::from_ref(&offer.id),
                        tasks,
                        Some(Duration::from_millis(100)),
                    )
                    .await;
                let mut seen = self.seen.lock().unwrap();
                for id in ids {
                    seen.launching.remove(&id);
                }
                r
            };
        }
    }

    async fn update(&mut self, _driver: &Driver, status: &TaskStatus) {
        self.seen
            .lock()
            .unwrap()
            .updates
            .entry(status.task_id.to_string())
            .or_default()
            .push(status.clone());
    }

    async fn error(&mut self, _driver: &Driver, message: &str) {
        self.seen.lock().unwrap().errors.push(message.to_string());
    }
}

/// A running workload framework; stopped (not torn down) when dropped.
pub struct Workload {
    pub spec: WorkloadSpec,
    pub seen: Arc<Mutex<Seen>>,
    pub driver: Option<Driver>,
    task: tokio::task::JoinHandle<()>,
}

impl Workload {
    /// Subscribes to `master` (an address or `zk://` URL) and starts
    /// launching. `id`: re-subscribe as this framework (a failover).
    pub async fn start(master: &str, spec: WorkloadSpec, id: Option<FrameworkId>) -> Workload {
        let seen = Arc::new(Mutex::new(Seen::default()));
        Workload::resume(master, spec, id, seen).await
    }

    /// Starts again as the same framework, keeping what was seen.
    pub async fn resume(
        master: &str,
        spec: WorkloadSpec,
        id: Option<FrameworkId>,
        seen: Arc<Mutex<Seen>>,
    ) -> Workload {
        let mut info = FrameworkInfo::new(spec.name.clone(), "");
        info.failover_timeout = spec.failover_timeout;
        info.id = id;
        if spec.partition_aware {
            info.capabilities.insert(Capability::PartitionAware);
        }
        let (next_short, next_long) = {
            let s = seen.lock().unwrap();
            let count = |kind: &str| s.launched.iter().filter(|t| t.contains(kind)).count();
            (count("-short-"), count("-long-"))
        };
        let runner = Runner {
            shape: Resources::cpus_mem(spec.cpus, spec.mem).expect("task shape"),
            spec: spec.clone(),
            next_short,
            next_long,
            seen: seen.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let notify = Notify {
            inner: runner,
            tx: Some(tx),
        };
        let driver = SchedulerDriver::new(master, info);
        let task = tokio::spawn(async move {
            let _ = driver.run(notify).await;
        });
        let driver = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the workload framework subscribed within 60 s")
            .expect("driver running");
        Workload {
            spec,
            seen,
            driver: Some(driver),
            task,
        }
    }

    pub fn id(&self) -> FrameworkId {
        self.driver
            .as_ref()
            .and_then(Driver::framework_id)
            .expect("subscribed")
    }

    /// Waits until `pred` holds of what was seen.
    pub async fn wait(&self, timeout: Duration, what: &str, pred: impl Fn(&Seen) -> bool) {
        let seen = self.seen.clone();
        let driver = self.driver.clone();
        let mut last_reconcile = tokio::time::Instant::now();
        wait_for(timeout, what, || {
            let ok = pred(&seen.lock().unwrap());
            // Ask again now and then about tasks not seen to end: answers
            // for tasks on agents not yet back come once they are.
            if !ok && last_reconcile.elapsed() > Duration::from_secs(3) {
                last_reconcile = tokio::time::Instant::now();
                if let Some(d) = driver.clone() {
                    let open: Vec<_> = {
                        let s = seen.lock().unwrap();
                        s.launched
                            .iter()
                            .filter(|t| !s.state(t).is_some_and(TaskState::is_terminal))
                            .filter(|t| !s.launching.contains(*t))
                            .map(|t| (TaskId::new(t.as_str()), None))
                            .collect()
                    };
                    tokio::spawn(async move {
                        let _ = d.reconcile(&open).await;
                    });
                }
            }
            async move { ok.then_some(()) }
        })
        .await;
    }

    /// Waits for every short task of `spec` to end; then no task may have
    /// ended twice.
    pub async fn wait_shorts_ended(&self, spec: &WorkloadSpec, timeout: Duration) {
        let shorts = Seen::short_ids(spec);
        self.wait(timeout, "every short task to end", |s| {
            shorts
                .iter()
                .all(|t| s.state(t).is_some_and(TaskState::is_terminal))
        })
        .await;
        let twice = self.seen.lock().unwrap().ended_twice();
        assert!(twice.is_empty(), "tasks that ended twice: {twice:?}");
    }

    /// Waits for every long task of `spec` to be RUNNING.
    pub async fn wait_long_running(&self, spec: &WorkloadSpec) {
        let longs = Seen::long_ids(spec);
        self.wait(Duration::from_secs(60), "the long tasks to run", |s| {
            longs.iter().all(|t| s.state(t) == Some(TaskState::Running))
        })
        .await;
    }

    /// Stops the driver; the framework stays registered for its failover
    /// timeout.
    pub fn stop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.stop();
        }
        self.task.abort();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Hands the driver out once subscribed.
struct Notify {
    inner: Runner,
    tx: Option<tokio::sync::oneshot::Sender<Driver>>,
}

impl Scheduler for Notify {
    async fn subscribed(&mut self, driver: &Driver, id: &FrameworkId) {
        self.inner.subscribed(driver, id).await;
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(driver.clone());
        }
    }
    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        self.inner.offers(driver, offers).await;
    }
    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        self.inner.update(driver, status).await;
    }
    async fn error(&mut self, driver: &Driver, message: &str) {
        self.inner.error(driver, message).await;
    }
}
