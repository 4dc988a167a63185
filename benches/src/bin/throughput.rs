//! Control-plane throughput: a real master over its real gRPC API, simulated
//! agents in this process whose executors report STARTING, RUNNING and
//! FINISHED at once, and a framework on the SDK launching as fast as offers
//! allow. Prints sustained tasks per second and the offer-to-RUNNING and
//! submit-to-FINISHED latencies (p50, p99).
//!
//! ```text
//! cargo build --release --bins -p cairn-master -p cairn-benches
//! target/release/cairn-bench --tasks 100000 --agents 100
//! # every agent with room for 320 tasks: throughput at saturation
//! target/release/cairn-bench --tasks 100000 --agents 100 --agent-resources 'cpus:32;mem:131072'
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_benches::sim_agent::SimAgents;
use cairn_model::Resources;
use cairn_model::zk::{MasterAddr, follow};
use cairn_sdk::{
    Driver, FrameworkId, FrameworkInfo, Offer, Scheduler, SchedulerDriver, TaskBuilder, TaskState,
    TaskStatus,
};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use clap::Parser;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "cairn-bench")]
struct Args {
    /// Tasks to run in all.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Each agent's resources. The default holds three tasks, so 300 are in
    /// flight on 100 agents. The framework launches as fast as offers allow,
    /// so every slot is always busy and a task's latency is the number in
    /// flight divided by the rate (Little's law): with room for thousands
    /// the latency measures that queue, not the path of one task.
    #[arg(long, default_value = "cpus:0.3;mem:1024;disk:1000")]
    agent_resources: String,
    /// The master's allocation interval (offers also follow freed
    /// resources at once).
    #[arg(long, default_value = "1s")]
    allocation_interval: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
}

const CPUS: f64 = 0.1;
const MEM: f64 = 32.0;

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
    subscriptions: usize,
    total: usize,
    /// Tasks still to launch (a refused launch comes back here).
    remaining: usize,
    next: usize,
    record: Arc<Mutex<Record>>,
    done: Arc<Notify>,
}

impl Scheduler for Launcher {
    async fn subscribed(&mut self, driver: &Driver, _id: &FrameworkId) {
        // After a re-subscription (the master closes the stream of a
        // framework that falls too far behind), ask about every task not
        // seen to end: a master-made end sent while the stream was down is
        // not sent again, and an unknown task is answered LOST.
        let open: Vec<_> = self
            .record
            .lock()
            .map(|r| {
                r.launched
                    .keys()
                    .map(|id| (cairn_sdk::TaskId::new(id.as_str()), None))
                    .collect()
            })
            .unwrap_or_default();
        self.subscriptions += 1;
        if self.subscriptions > 1 {
            // The master takes at most 10,000 entries per call.
            for chunk in open.chunks(5_000) {
                let _ = driver.reconcile(chunk).await;
            }
        }
    }

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
            let fit = ((cpus / CPUS + 1e-9).floor().min((mem / MEM).floor())) as usize;
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
                    .cpus(CPUS)
                    .mem(MEM)
                    .shell("true")
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

fn pct(v: &mut [Duration], p: f64) -> Duration {
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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.tasks > 0 && args.agents > 0,
        "--tasks and --agents must be positive"
    );
    let cluster = Cluster::start(ClusterSpec {
        agents: 0,
        master_args: vec![
            "--allocation-interval".into(),
            args.allocation_interval.clone(),
        ],
        ..ClusterSpec::default()
    })
    .await;
    let addr = MasterAddr::Direct(cluster.masters[0].addr.clone());
    let leaders = follow(addr);
    let per_agent = Resources::parse(&args.agent_resources).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sims = SimAgents::start(args.agents, &per_agent, &leaders);
    let started = Instant::now();
    while sims.registered_with(0) < args.agents {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "agents did not register"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let record = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(Notify::new());
    let mut info = FrameworkInfo::new("cairn-bench", "nobody");
    info.failover_timeout = Duration::from_secs(60);
    let driver = SchedulerDriver::new(cluster.masters[0].addr.clone(), info);
    let scheduler = Launcher {
        subscriptions: 0,
        total: args.tasks,
        remaining: args.tasks,
        next: 0,
        record: record.clone(),
        done: done.clone(),
    };
    let framework = tokio::spawn(async move { driver.run(scheduler).await });
    if tokio::time::timeout(Duration::from_secs(args.deadline_secs), done.notified())
        .await
        .is_err()
    {
        let r = record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        anyhow::bail!(
            "not done after {} s: {} finished, {} failed, {} launched and not seen to end",
            args.deadline_secs,
            r.finished,
            r.failed,
            r.launched.len()
        );
    }
    framework.abort();

    let mut r = record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let span = match (r.first_submit, r.last_finish) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = r.finished as f64 / span.as_secs_f64().max(1e-9);
    let finished = r.finished;
    let failed = r.failed;
    let (o50, o99) = (
        pct(&mut r.offer_to_running, 0.5),
        pct(&mut r.offer_to_running, 0.99),
    );
    let (s50, s99) = (
        pct(&mut r.submit_to_finished, 0.5),
        pct(&mut r.submit_to_finished, 0.99),
    );
    println!(
        "{finished} tasks finished ({failed} failed) on {} simulated agents in {:.2} s: {rate:.0} tasks/s sustained",
        args.agents,
        span.as_secs_f64()
    );
    println!("offer-to-RUNNING p50 {} p99 {}", ms(o50), ms(o99));
    for (k, phase) in [
        "offer to ACCEPT",
        "ACCEPT to RUNNING at the agent",
        "RUNNING at the agent to the framework",
    ]
    .iter()
    .enumerate()
    {
        let mut v: Vec<Duration> = r
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
    println!("submit-to-FINISHED p50 {} p99 {}", ms(s50), ms(s99));
    Ok(())
}
