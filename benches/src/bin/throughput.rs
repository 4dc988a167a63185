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

use std::time::Duration;

use cairn_benches::flood::{FloodSpec, flood};
use cairn_benches::sim_agent::SimAgents;
use cairn_model::Resources;
use cairn_model::zk::{MasterAddr, follow};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use clap::Parser;
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

    let steal_before = cairn_benches::machine_steal();
    let mut report = flood(
        &cluster.masters[0].addr,
        FloodSpec {
            tasks: args.tasks,
            cpus: 0.1,
            mem: 32.0,
            command: "true".into(),
        },
        Duration::from_secs(args.deadline_secs),
    )
    .await?;
    report.print(&format!("{} simulated agents", args.agents));
    if let Some((b, a)) = steal_before.zip(cairn_benches::machine_steal()) {
        println!(
            "host steal during the run: {:.1}% (above a few percent, the host's other guests weigh on the result)",
            cairn_benches::steal_percent(b, a)
        );
    }
    Ok(())
}
