//! Master failover time: from `kill -9` of the leading master to every agent
//! re-registered with the new leader and the framework re-subscribed to it.
//! Three masters contend through a real ZooKeeper; the agents are real
//! `cairn-agent` processes (`--real-agents`) or simulated ones in this
//! process (see `cairn_benches::sim_agent`), the framework is an SDK one.
//!
//! ```text
//! cargo build --release --bins -p cairn-master -p cairn-agent -p cairn-benches
//! target/release/cairn-failover-bench --agents 3 --real-agents
//! target/release/cairn-failover-bench --agents 1000
//! ```
//!
//! Each run kills the leader, measures, then restarts the killed master as
//! a standby and waits for the cluster to settle before the next run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_benches::sim_agent::SimAgents;
use cairn_model::Resources;
use cairn_model::zk::{Leader, MasterAddr, follow};
use cairn_sdk::{
    Driver, FrameworkId, FrameworkInfo, Offer, Scheduler, SchedulerDriver, TaskStatus,
};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::http::get_json;
use clap::Parser;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Agents in the cluster.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Real `cairn-agent` processes rather than simulated agents.
    #[arg(long)]
    real_agents: bool,
    /// Failovers to measure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The masters' ZooKeeper session timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    session_timeout: Duration,
}

/// Records when the framework (re-)subscribed; declines everything for an
/// hour so offers stay quiet.
struct Quiet {
    subscribed: Arc<Mutex<Vec<Instant>>>,
}

impl Scheduler for Quiet {
    async fn subscribed(&mut self, _driver: &Driver, _id: &FrameworkId) {
        if let Ok(mut s) = self.subscribed.lock() {
            s.push(Instant::now());
        }
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        let ids: Vec<_> = offers.into_iter().map(|o| o.id).collect();
        let _ = driver.decline(&ids, Some(Duration::from_secs(3600))).await;
    }

    async fn update(&mut self, _driver: &Driver, _status: &TaskStatus) {}
}

/// One measured failover, times from the kill.
struct Sample {
    /// The new leader seen in ZooKeeper (the old one's node expired).
    detected: Duration,
    /// The first agent registered with the new leader (it serves).
    serving: Duration,
    /// Every agent registered with it.
    agents: Duration,
    /// The framework re-subscribed to it.
    framework: Duration,
}

impl Sample {
    fn total(&self) -> Duration {
        self.agents.max(self.framework)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn epoch(leaders: &watch::Receiver<Option<Leader>>) -> Option<u64> {
    leaders.borrow().as_ref().map(|l| l.epoch)
}

/// How many agents the master at `addr` has connected (real agents).
async fn connected_agents(addr: &str) -> Option<usize> {
    let s = get_json(&format!("http://{addr}/state")).await?;
    s["activated_slaves"].as_u64().map(|n| n as usize)
}

/// Ten thousand simulated agents reconnecting at once churn the heap: under
/// glibc's malloc this process spent about 40% of its CPU in the
/// allocator's bins during a failover (`perf`), time the masters under test
/// then lack on the shared cores. (The throughput benchmark measured slower
/// with mimalloc, and keeps glibc's.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.agents > 0 && args.runs > 0,
        "--agents and --runs must be positive"
    );
    let resources = "cpus:8;mem:16384;disk:100000";
    let mut cluster = Cluster::start(ClusterSpec {
        agents: if args.real_agents { args.agents } else { 0 },
        agent_resources: resources.into(),
        masters: 3,
        zookeeper: true,
        master_args: vec![
            "--allocation-interval".into(),
            "1s".into(),
            "--zk-session-timeout".into(),
            format!("{}ms", args.session_timeout.as_millis()),
        ],
        ..ClusterSpec::default()
    })
    .await;
    let url: MasterAddr = cluster
        .master_addr
        .parse()
        .map_err(|_| anyhow::anyhow!("bad ZooKeeper URL {}", cluster.master_addr))?;
    let leaders = follow(url);
    let per_agent = Resources::parse(resources).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sims = (!args.real_agents).then(|| SimAgents::start(args.agents, &per_agent, &leaders));

    let subscribed = Arc::new(Mutex::new(Vec::new()));
    let framework = {
        let mut info = FrameworkInfo::new("failover-bench", "nobody");
        info.failover_timeout = Duration::from_secs(3600);
        let driver = SchedulerDriver::new(cluster.master_addr.clone(), info);
        let scheduler = Quiet {
            subscribed: subscribed.clone(),
        };
        tokio::spawn(async move { driver.run(scheduler).await })
    };

    let settle_deadline = Duration::from_secs(120);
    let mut samples = Vec::new();
    for run in 0..args.runs {
        // Settled: every agent and the framework with the current leader.
        let settled = Instant::now();
        loop {
            anyhow::ensure!(
                settled.elapsed() < settle_deadline,
                "the cluster did not settle before run {run}"
            );
            let leader = cluster.leader().await;
            let e = epoch(&leaders).unwrap_or(0);
            let agents_ok = match &sims {
                Some(s) => s.registered_with(e) == args.agents,
                None => connected_agents(&cluster.masters[leader].addr).await == Some(args.agents),
            };
            let fw_ok = !subscribed.lock().map(|s| s.is_empty()).unwrap_or(true);
            if agents_ok && fw_ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let old_epoch = epoch(&leaders).unwrap_or(0);
        let (old, sample) = kill_and_measure(
            &mut cluster,
            &leaders,
            sims.as_ref(),
            &subscribed,
            args.agents,
            old_epoch,
        )
        .await?;
        samples.push(sample);
        let s = samples.last().expect("pushed");
        println!(
            "run {run}: total {} (ZooKeeper shows the new leader {}, serving {}, all {} agents {}, framework {})",
            ms(s.total()),
            ms(s.detected),
            ms(s.serving),
            args.agents,
            ms(s.agents),
            ms(s.framework)
        );
        cluster.masters[old].restart();
    }
    framework.abort();
    println!(
        "\n{} agents ({}), session timeout {}, {} runs: median total {} (ZooKeeper {}, serving {}, agents {}, framework {}); goal: session timeout + 1 s = {}",
        args.agents,
        if args.real_agents {
            "real"
        } else {
            "simulated"
        },
        ms(args.session_timeout),
        args.runs,
        ms(median(samples.iter().map(Sample::total).collect())),
        ms(median(samples.iter().map(|s| s.detected).collect())),
        ms(median(samples.iter().map(|s| s.serving).collect())),
        ms(median(samples.iter().map(|s| s.agents).collect())),
        ms(median(samples.iter().map(|s| s.framework).collect())),
        ms(args.session_timeout + Duration::from_secs(1)),
    );
    Ok(())
}

/// User and system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    cairn_benches::process_cpu(pid).map(|(own, _)| own)
}

/// Kills the leader and polls (every 5 ms) until every agent and the
/// framework are with the new one. Returns the killed master's index.
async fn kill_and_measure(
    cluster: &mut Cluster,
    leaders: &watch::Receiver<Option<Leader>>,
    sims: Option<&SimAgents>,
    subscribed: &Arc<Mutex<Vec<Instant>>>,
    agents: usize,
    old_epoch: u64,
) -> anyhow::Result<(usize, Sample)> {
    let before = subscribed.lock().map(|s| s.len()).unwrap_or(0);
    let old = cluster.leader().await;
    let standbys: Vec<u32> = (0..cluster.masters.len())
        .filter(|i| *i != old)
        .map(|i| cluster.masters[i].proc.child.id())
        .collect();
    let cpu_before: Vec<Option<Duration>> = standbys.iter().map(|p| cpu_time(*p)).collect();
    let own_before = cpu_time(std::process::id());
    let steal_before = cairn_benches::machine_steal();
    cluster.masters[old].proc.kill9();
    let killed = Instant::now();
    // For lining the figures up with the masters' logs (`CAIRN_KEEP_LOGS`).
    println!(
        "  killed master {old} at {}",
        humantime::format_rfc3339_micros(std::time::SystemTime::now())
    );
    let deadline = Duration::from_secs(120);
    let mut detected = None;
    let mut serving = None;
    let mut all_agents = None;
    let mut fw = None;
    while all_agents.is_none() || fw.is_none() {
        anyhow::ensure!(
            killed.elapsed() < deadline,
            "no complete failover within {deadline:?}"
        );
        let now = Instant::now();
        let new_epoch = epoch(leaders).filter(|e| *e > old_epoch);
        if detected.is_none() && new_epoch.is_some() {
            detected = Some(now);
        }
        if let Some(e) = new_epoch {
            match sims {
                Some(s) => {
                    if serving.is_none() && s.registered_with(e) > 0 {
                        serving = Some(now);
                    }
                    if all_agents.is_none() {
                        all_agents = s.all_registered_at(e);
                    }
                }
                None => {
                    let addr = leaders.borrow().as_ref().map(|l| l.endpoint.clone());
                    if let Some(addr) = addr
                        && let Some(n) = connected_agents(&addr).await
                    {
                        if serving.is_none() && n > 0 {
                            serving = Some(now);
                        }
                        if all_agents.is_none() && n == agents {
                            all_agents = Some(Instant::now());
                        }
                    }
                }
            }
        }
        if fw.is_none() {
            fw = subscribed.lock().ok().and_then(|s| s.get(before).copied());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // CPU spent from the kill to the end: by the new leader (the standby
    // that spent most) and by this process (simulated agents, framework and
    // polling), which shares the cores with the masters under test.
    let leader_cpu = standbys
        .iter()
        .zip(&cpu_before)
        .filter_map(|(p, b)| Some(cpu_time(*p)?.saturating_sub((*b)?)))
        .max();
    let own_cpu = cpu_time(std::process::id())
        .zip(own_before)
        .map(|(a, b)| a.saturating_sub(b));
    let steal = steal_before
        .zip(cairn_benches::machine_steal())
        .map(|(b, a)| cairn_benches::steal_percent(b, a));
    if let (Some(l), Some(o), Some(steal)) = (leader_cpu, own_cpu, steal) {
        println!(
            "  CPU from the kill to the end: new leader {} ({} us per agent), this process {}; host steal {steal:.1}%",
            ms(l),
            l.as_micros() / agents.max(1) as u128,
            ms(o)
        );
    }
    // What the new leader did meanwhile besides re-registering agents.
    let addr = leaders.borrow().as_ref().map(|l| l.endpoint.clone());
    if let Some(addr) = addr
        && let Some((200, body)) = cairn_tests::http::get(&format!("http://{addr}/metrics")).await
    {
        let text = String::from_utf8_lossy(&body);
        let metric = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        println!(
            "  new leader so far: {} allocation cycles, {} offers sent",
            metric("cairn_allocation_cycles_total"),
            metric("cairn_offers_sent_total")
        );
    }
    // How the re-registrations spread out after the kill: a long tail
    // behind the 99th percentile is agents whose first attempt failed and
    // that backed off.
    if let (Some(s), Some(e)) = (sims, epoch(leaders)) {
        let mut t: Vec<u128> = s
            .registration_times(e)
            .iter()
            .map(|t| t.saturating_duration_since(killed).as_millis())
            .collect();
        t.sort_unstable();
        let pct = |p: usize| {
            t.get((t.len() * p / 100).min(t.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        println!(
            "  agents re-registered since the kill: first {} ms, p10 {} ms, p50 {} ms, p90 {} ms, p99 {} ms, last {} ms",
            pct(0),
            pct(10),
            pct(50),
            pct(90),
            pct(99),
            t.last().copied().unwrap_or(0)
        );
    }
    let since =
        |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t.saturating_duration_since(killed));
    Ok((
        old,
        Sample {
            detected: since(detected),
            serving: since(serving),
            agents: since(all_agents),
            framework: since(fw),
        },
    ))
}
