//! A framework on the SDK that launches N tasks as fast as offers allow,
//! recording for each when its offer arrived, when it was submitted, and
//! when its RUNNING and its end were seen: the load of the throughput
//! benchmarks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::{
    Driver, FrameworkInfo, Offer, Scheduler, SchedulerDriver, TaskBuilder, TaskState, TaskStatus,
};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    #[error("tasks, cpus and mem must be positive")]
    Spec,
    #[error(
        "not done after {secs} s: {finished} finished, {failed} failed, {open} launched and not seen to end"
    )]
    Deadline {
        secs: u64,
        finished: usize,
        failed: usize,
        open: usize,
    },
    #[error("a framework callback panicked")]
    Poisoned,
}

/// The tasks to run.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    pub tasks: usize,
    pub cpus: f64,
    pub mem: f64,
    /// A shell command.
    pub command: String,
}

#[derive(Default)]
struct Record {
    /// Per live task: when its offer arrived, when it was submitted, and
    /// whether its RUNNING was seen.
    launched: HashMap<String, (Instant, Instant, bool)>,
    offer_to_running: Vec<Duration>,
    submit_to_finished: Vec<Duration>,
    first_submit: Option<Instant>,
    last_finish: Option<Instant>,
    finished: usize,
    failed: usize,
    /// Per task, in seconds: offer to ACCEPT sent, ACCEPT to the agent's
    /// RUNNING, the agent's RUNNING to the framework.
    phases: Vec<[f64; 3]>,
}

struct Launcher {
    spec: FloodSpec,
    total: usize,
    /// Tasks still to launch (a refused launch comes back here).
    remaining: usize,
    next: usize,
    record: Arc<Mutex<Record>>,
    done: Arc<Notify>,
}

impl Scheduler for Launcher {
    // After a re-subscription (the master closes the stream of a framework
    // that falls too far behind) the driver reconciles every task it
    // launched and has not seen end.

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        // The accepts (one per agent) go out together and are waited for
        // together: one round trip per OFFERS event, not one per offer, so
        // updates queued behind this event are not held up.
        let mut accepts = Vec::new();
        let mut declines = Vec::new();
        for offer in offers {
            let arrived = Instant::now();
            let cpus = offer
                .resources
                .scalar(&cairn_model::ResourceName::Cpus)
                .as_f64();
            let mem = offer
                .resources
                .scalar(&cairn_model::ResourceName::Mem)
                .as_f64();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let fit = ((cpus / self.spec.cpus + 1e-9)
                .floor()
                .min((mem / self.spec.mem + 1e-9).floor())) as usize;
            let n = fit.min(self.remaining);
            if n == 0 {
                declines.push(offer.id.clone());
                continue;
            }
            let mut tasks = Vec::with_capacity(n);
            let mut ids = Vec::with_capacity(n);
            self.remaining -= n;
            for _ in 0..n {
                let id = format!("t{}", self.next);
                self.next += 1;
                if let Ok(t) = TaskBuilder::new(&id)
                    .cpus(self.spec.cpus)
                    .mem(self.spec.mem)
                    .shell(&self.spec.command)
                    .build(&offer.agent_id)
                {
                    tasks.push(t);
                    ids.push(id);
                }
            }
            let submitted = Instant::now();
            if let Ok(mut r) = self.record.lock() {
                r.first_submit.get_or_insert(submitted);
                for id in ids {
                    r.launched.insert(id, (arrived, submitted, false));
                }
            }
            let launched: Vec<String> = tasks.iter().map(|t| t.task_id.to_string()).collect();
            accepts.push(async move {
                let refused = driver
                    .accept(std::slice::from_ref(&offer.id), tasks, Some(Duration::ZERO))
                    .await
                    .is_err();
                (refused, launched)
            });
        }
        if !declines.is_empty() {
            let _ = driver
                .decline(&declines, Some(Duration::from_secs(3600)))
                .await;
        }
        for (refused, launched) in futures::future::join_all(accepts).await {
            if refused {
                // Refused (the stream was replaced, say): never launched,
                // so launched again later under new ids.
                self.remaining += launched.len();
                if let Ok(mut r) = self.record.lock() {
                    for id in &launched {
                        r.launched.remove(id);
                    }
                }
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, status: &TaskStatus) {
        let now = Instant::now();
        let Ok(mut r) = self.record.lock() else {
            return;
        };
        // Updates are delivered at least once: a task counts once, at its
        // first RUNNING and its first end.
        let Some((arrived, submitted, running_seen)) =
            r.launched.get(status.task_id.as_str()).copied()
        else {
            return;
        };
        match status.state {
            TaskState::Running if !running_seen => {
                r.offer_to_running.push(now - arrived);
                // The agent stamps its RUNNING with the same clock (one
                // machine): split offer-to-RUNNING at the ACCEPT and there.
                let agent_at = status.timestamp.as_unix_secs_f64();
                let now_unix = cairn_model::Time::now().as_unix_secs_f64();
                let submitted_unix = now_unix - (now - submitted).as_secs_f64();
                r.phases.push([
                    (submitted - arrived).as_secs_f64(),
                    agent_at - submitted_unix,
                    now_unix - agent_at,
                ]);
                r.launched
                    .insert(status.task_id.to_string(), (arrived, submitted, true));
            }
            TaskState::Finished => {
                r.launched.remove(status.task_id.as_str());
                r.submit_to_finished.push(now - submitted);
                r.finished += 1;
                r.last_finish = Some(now);
            }
            s if s.is_terminal() => {
                r.launched.remove(status.task_id.as_str());
                r.failed += 1;
            }
            _ => {}
        }
        if r.finished + r.failed == self.total {
            self.done.notify_one();
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct FloodReport {
    pub finished: usize,
    pub failed: usize,
    /// First submit to last end.
    pub span: Duration,
    pub offer_to_running: Vec<Duration>,
    pub submit_to_finished: Vec<Duration>,
    /// Per task, in seconds: offer to ACCEPT sent, ACCEPT to the agent's
    /// RUNNING, the agent's RUNNING to the framework.
    pub phases: Vec<[f64; 3]>,
}

impl FloodReport {
    /// Tasks finished per second, first submit to last end.
    pub fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.finished as f64;
        n / self.span.as_secs_f64().max(1e-9)
    }

    /// Prints the figures; `on` says where the tasks ran.
    pub fn print(&mut self, on: &str) {
        println!(
            "{} tasks finished ({} failed) on {on} in {:.2} s: {:.0} tasks/s sustained",
            self.finished,
            self.failed,
            self.span.as_secs_f64(),
            self.rate()
        );
        println!(
            "offer-to-RUNNING p50 {} p99 {}",
            ms(pct(&mut self.offer_to_running, 0.5)),
            ms(pct(&mut self.offer_to_running, 0.99))
        );
        for (k, phase) in [
            "offer to ACCEPT",
            "ACCEPT to RUNNING at the agent",
            "RUNNING at the agent to the framework",
        ]
        .iter()
        .enumerate()
        {
            let mut v: Vec<Duration> = self
                .phases
                .iter()
                .map(|x| Duration::from_secs_f64(x[k].max(0.0)))
                .collect();
            println!(
                "  {phase}: p50 {} p99 {}",
                ms(pct(&mut v, 0.5)),
                ms(pct(&mut v, 0.99))
            );
        }
        println!(
            "submit-to-FINISHED p50 {} p99 {}",
            ms(pct(&mut self.submit_to_finished, 0.5)),
            ms(pct(&mut self.submit_to_finished, 0.99))
        );
    }
}

/// Runs `spec` on the master at `master` as one framework; fails after
/// `deadline` with how far it got.
pub async fn flood(
    master: &str,
    spec: FloodSpec,
    deadline: Duration,
) -> Result<FloodReport, FloodError> {
    if !(spec.tasks > 0 && spec.cpus > 0.0 && spec.mem > 0.0) {
        return Err(FloodError::Spec);
    }
    let record = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(Notify::new());
    let mut info = FrameworkInfo::new("cairn-bench", "nobody");
    info.failover_timeout = Duration::from_secs(60);
    let driver = SchedulerDriver::new(master, info);
    let scheduler = Launcher {
        total: spec.tasks,
        remaining: spec.tasks,
        next: 0,
        spec,
        record: record.clone(),
        done: done.clone(),
    };
    let framework = tokio::spawn(async move { driver.run(scheduler).await });
    let finished = tokio::time::timeout(deadline, done.notified()).await;
    framework.abort();
    let mut r = record.lock().map_err(|_| FloodError::Poisoned)?;
    if finished.is_err() {
        return Err(FloodError::Deadline {
            secs: deadline.as_secs(),
            finished: r.finished,
            failed: r.failed,
            open: r.launched.len(),
        });
    }
    let span = match (r.first_submit, r.last_finish) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    Ok(FloodReport {
        finished: r.finished,
        failed: r.failed,
        span,
        offer_to_running: std::mem::take(&mut r.offer_to_running),
        submit_to_finished: std::mem::take(&mut r.submit_to_finished),
        phases: std::mem::take(&mut r.phases),
    })
}

/// The `p` quantile (0 to 1) of `v` (sorted in place).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
