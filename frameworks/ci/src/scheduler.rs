//! The CI scheduler: queued builds go into offers in order as they fit;
//! offers are suppressed while the queue is empty and revived when a build
//! arrives; a build over its timeout is killed and marked so; a build the
//! cluster loses is queued again (up to three launches).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::offers::{OfferSpace, pack};
use cairn_sdk::{
    AgentId, Driver, FrameworkId, Offer, Resources, Scheduler, TaskBuilder, TaskId, TaskState,
    TaskStatus,
};

use crate::store::{BuildStatus, Store, now_secs};

/// Launches of one build before a loss by the cluster is final.
pub const MAX_ATTEMPTS: u32 = 3;

/// What the scheduler and the HTTP API share.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    /// The driver, once subscribed: the API revives offers through it.
    pub driver: Option<Driver>,
    pub framework_id: Option<FrameworkId>,
}

pub type SharedState = Arc<Mutex<Shared>>;

/// Saves the store; a build system that cannot keep its state stops rather
/// than lose builds.
pub fn save(shared: &Shared) {
    if let Err(e) = shared.store.save() {
        tracing::error!(error = %e, "cannot save the builds; stopping");
        std::process::exit(1);
    }
}

/// Asks for offers, or stops them, as the queue needs now. Callbacks and
/// the API call this concurrently; one at a time, each reading the queue
/// afresh, the last call always reflects the last change (a decision taken
/// before an await could otherwise suppress offers after a build arrived).
pub async fn want_offers_now(shared: &SharedState, driver: &Driver) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let wanted = match shared.lock() {
        Ok(s) => wants_offers(&s),
        Err(poisoned) => wants_offers(&poisoned.into_inner()),
    };
    let _ = driver.want_offers(wanted).await;
}

/// Whether offers are wanted: a build is queued.
pub fn wants_offers(shared: &Shared) -> bool {
    shared.store.queued().next().is_some()
}

#[derive(Debug)]
pub struct CiScheduler {
    pub shared: SharedState,
}

impl CiScheduler {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding the lock is a bug; the state is still the
        // best there is.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Kills `task_id` once `timeout` has passed, if its build still runs it.
fn arm_timeout(
    shared: SharedState,
    driver: Driver,
    build: u64,
    task_id: String,
    timeout: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let still = {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            let running = s.store.builds.get_mut(&build).filter(|b| {
                b.status == BuildStatus::Running && b.task_id.as_deref() == Some(task_id.as_str())
            });
            match running {
                Some(b) => {
                    b.timing_out = true;
                    save(&s);
                    true
                }
                None => false,
            }
        };
        if still {
            tracing::info!(build, %task_id, ?timeout, "build over its timeout; killing it");
            let _ = driver
                .kill(&TaskId::new(task_id.as_str()), Some(Duration::from_secs(5)))
                .await;
        }
    });
}

impl Scheduler for CiScheduler {
    async fn subscribed(&mut self, driver: &Driver, id: &FrameworkId) {
        let running = {
            let mut s = self.lock();
            s.driver = Some(driver.clone());
            s.framework_id = Some(id.clone());
            let running: Vec<(TaskId, Option<AgentId>)> = s
                .store
                .builds
                .values()
                .filter(|b| b.status == BuildStatus::Running)
                .filter_map(|b| {
                    Some((
                        TaskId::new(b.task_id.as_deref()?),
                        b.agent_id.as_deref().map(AgentId::new),
                    ))
                })
                .collect();
            running
        };
        // Builds a previous run of this framework launched: the master says
        // where they are, or LOST (and they are queued again); their
        // timeouts run on from when they started.
        if !running.is_empty() {
            let _ = driver.reconcile(&running).await;
        }
        let timers: Vec<(u64, String, Duration)> = {
            let s = self.lock();
            s.store
                .builds
                .values()
                .filter(|b| b.status == BuildStatus::Running)
                .filter_map(|b| {
                    let ran = b.started.map_or(0.0, |t| (now_secs() - t).max(0.0));
                    let left = b
                        .pipeline
                        .timeout
                        .saturating_sub(Duration::from_secs_f64(ran));
                    Some((b.id, b.task_id.clone()?, left))
                })
                .collect()
        };
        for (id, task_id, left) in timers {
            arm_timeout(self.shared.clone(), driver.clone(), id, task_id, left);
        }
        want_offers_now(&self.shared, driver).await;
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        let mut spaces: Vec<OfferSpace> = offers.into_iter().map(OfferSpace::new).collect();
        let mut launches: Vec<(usize, u64, cairn_sdk::TaskInfo, Duration)> = Vec::new();
        {
            let mut s = self.lock();
            let queued: Vec<(u64, Resources)> = s
                .store
                .queued()
                .filter_map(|b| {
                    let r =
                        Resources::cpus_mem(b.pipeline.resources.cpus, b.pipeline.resources.mem)
                            .ok()?;
                    Some((b.id, r))
                })
                .collect();
            let (placed, _) = pack(&mut spaces, queued);
            for (at, id) in placed {
                let space = &spaces[at];
                let Some(b) = s.store.builds.get_mut(&id) else {
                    continue;
                };
                b.attempts += 1;
                let task_id = format!("build-{id}-{}", b.attempts);
                let mut builder = TaskBuilder::new(task_id.as_str())
                    .name(format!("{} #{id}", b.pipeline.name))
                    .cpus(b.pipeline.resources.cpus)
                    .mem(b.pipeline.resources.mem)
                    .shell(b.pipeline.script())
                    .label("ci.build", id.to_string());
                for (k, v) in &b.pipeline.environment {
                    builder = builder.env(k.clone(), v.clone());
                }
                match builder.build(&space.offer.agent_id) {
                    Ok(task) => {
                        b.status = BuildStatus::Running;
                        b.task_id = Some(task_id);
                        b.agent_id = Some(space.offer.agent_id.to_string());
                        b.agent_url = Some(space.offer.agent_url.clone());
                        b.started = None;
                        b.timing_out = false;
                        launches.push((at, id, task, b.pipeline.timeout));
                    }
                    Err(e) => {
                        b.status = BuildStatus::Failed;
                        b.finished = Some(now_secs());
                        b.message = format!("cannot be launched: {e}");
                    }
                }
            }
            // Launched builds are on disk before the launch.
            save(&s);
        }
        for (at, space) in spaces.iter().enumerate() {
            let tasks: Vec<_> = launches
                .iter()
                .filter(|(o, ..)| *o == at)
                .map(|(_, _, t, _)| t.clone())
                .collect();
            let _ = driver
                .accept(
                    std::slice::from_ref(&space.offer.id),
                    tasks,
                    Some(Duration::from_secs(1)),
                )
                .await;
        }
        for (_, id, task, timeout) in launches {
            arm_timeout(
                self.shared.clone(),
                driver.clone(),
                id,
                task.task_id.to_string(),
                timeout,
            );
        }
        want_offers_now(&self.shared, driver).await;
    }

    async fn update(&mut self, driver: &Driver, status: &TaskStatus) {
        {
            let mut s = self.lock();
            let Some(b) = s.store.by_task(status.task_id.as_str()) else {
                return;
            };
            if b.status != BuildStatus::Running {
                return;
            }
            match status.state {
                TaskState::Running => {
                    b.started.get_or_insert(status.timestamp.as_unix_secs_f64());
                }
                st if st.is_terminal() => {
                    b.message = status.message.clone();
                    b.exit_code = status.exit_code;
                    b.status = match st {
                        TaskState::Finished => BuildStatus::Succeeded,
                        TaskState::Killed if b.timing_out => BuildStatus::TimedOut,
                        TaskState::Killed => BuildStatus::Killed,
                        TaskState::Failed | TaskState::Error => BuildStatus::Failed,
                        _ if b.attempts < MAX_ATTEMPTS => BuildStatus::Queued,
                        _ => BuildStatus::Lost,
                    };
                    if b.status == BuildStatus::TimedOut {
                        b.message = format!(
                            "timed out after {}",
                            humantime::format_duration(b.pipeline.timeout)
                        );
                    }
                    if b.status.is_done() {
                        b.finished = Some(now_secs());
                    } else {
                        tracing::warn!(build = b.id, state = %st, "build lost by the cluster; queued again");
                    }
                }
                _ => {}
            }
            save(&s);
        }
        want_offers_now(&self.shared, driver).await;
    }
}
