//! Real tasks, side by side with Slurm: N trivial jobs (`true`) through
//! Cairn (a master and one agent with isolation: every task a process in
//! cgroups and namespaces of its own, under a command executor or, with
//! `--command-tasks direct`, started by the agent itself) and, with
//! `--slurm-peer`, the same N through Slurm on this machine, set up, run and
//! stopped by the peer script. Prints both rates and their ratio, from one
//! run.
//!
//! Run as root, with release binaries:
//!
//! ```text
//! cargo build --release --bins -p cairn-master -p cairn-agent -p cairn-benches
//! target/release/cairn-jobs-bench --tasks 1000 --slurm-peer ../shared/peers/slurm-peer.sh
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cairn_benches::flood::{FloodSpec, flood};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cairn-jobs-bench")]
struct Args {
    /// Jobs to run through each scheduler.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Tasks the agent can run at once (Slurm's peer has 256 slots).
    #[arg(long, default_value_t = 256)]
    slots: usize,
    /// The agent's isolation.
    #[arg(long, default_value = "cgroups,namespaces")]
    isolation: String,
    /// How the agent runs command tasks: "executor" (a command executor
    /// process per task, the default) or "direct" (no executor process;
    /// the agent then runs with --task-log-max-size 0).
    #[arg(long, default_value = "executor")]
    command_tasks: String,
    /// The agent's `--fork-server`: containers forked by a fork server
    /// (true, the agent's default) or started by executing the agent's
    /// binary (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fork_server: bool,
    /// Slurm's peer script (`setup`, `bench N R`, `stop`); without it only
    /// Cairn runs.
    #[arg(long)]
    slurm_peer: Option<PathBuf>,
    /// Seconds to wait after Cairn's run, before Slurm's: Cairn's sandboxes
    /// have just been removed, and on a file system without a journal (ext4
    /// here) the inode allocator then scans past every inode freed in the
    /// last minute or so, which would slow Slurm's own files.
    #[arg(long, default_value_t = 90)]
    settle_secs: u64,
    /// Give up on Cairn after this many seconds.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
}

/// Cairn's jobs per second.
async fn cairn(args: &Args) -> anyhow::Result<f64> {
    const CPUS: f64 = 0.1;
    #[allow(clippy::cast_precision_loss)]
    let cpus = args.slots as f64 * CPUS;
    let cluster = Cluster::start(ClusterSpec {
        agents: 1,
        agent_resources: format!("cpus:{cpus};mem:{};disk:10000", args.slots * 64),
        master_args: vec!["--allocation-interval".into(), "1s".into()],
        agent_args: {
            let mut a = vec![
                "--isolation".into(),
                args.isolation.clone(),
                "--command-tasks".into(),
                args.command_tasks.clone(),
                "--fork-server".into(),
                args.fork_server.to_string(),
            ];
            if args.command_tasks == "direct" {
                a.extend(["--task-log-max-size".into(), "0".into()]);
            }
            a
        },
        ..ClusterSpec::default()
    })
    .await;
    // Who spends the CPU: the master, the agent itself, the containers the
    // agent started and reaped (executors and tasks), and this process (the
    // framework).
    let pids = [
        cluster.masters[0].proc.child.id(),
        cluster.agents[0].proc.child.id(),
        std::process::id(),
    ];
    let cpu = || pids.map(cairn_benches::process_cpu);
    let cpu_before = cpu();
    let busy_before = cairn_benches::machine_busy();
    let steal_before = cairn_benches::machine_steal();
    let mut report = flood(
        &cluster.master_addr,
        FloodSpec {
            tasks: args.tasks,
            cpus: CPUS,
            mem: 32.0,
            command: "true".into(),
        },
        Duration::from_secs(args.deadline_secs),
    )
    .await?;
    let busy = cairn_benches::machine_busy()
        .zip(busy_before)
        .map(|(after, before)| after.saturating_sub(before));
    let cpu_after = cpu();
    report.print(&format!(
        "one agent ({}, {} command tasks, {} slots)",
        args.isolation, args.command_tasks, args.slots
    ));
    #[allow(clippy::cast_precision_loss)]
    let per_task = |d: Duration| d.as_secs_f64() * 1000.0 / report.finished.max(1) as f64;
    if let Some(busy) = busy {
        println!(
            "machine CPU busy {:.2} s over the run: {:.2} ms per task",
            busy.as_secs_f64(),
            per_task(busy)
        );
    }
    // Time the hypervisor gave other guests: runs with much of it are
    // slower for reasons outside this machine.
    if let (Some(before), Some(after)) = (steal_before, cairn_benches::machine_steal()) {
        println!(
            "host steal {:.1}% over the run",
            cairn_benches::steal_percent(before, after)
        );
    }
    let spent = |i: usize, children: bool| {
        let (Some(a), Some(b)) = (cpu_after[i], cpu_before[i]) else {
            return None;
        };
        let pick = |t: (Duration, Duration)| if children { t.1 } else { t.0 };
        Some(per_task(pick(a).saturating_sub(pick(b))))
    };
    if let (Some(master), Some(agent), Some(containers), Some(framework)) = (
        spent(0, false),
        spent(1, false),
        spent(1, true),
        spent(2, false),
    ) {
        println!(
            "CPU per task: master {master:.2} ms, agent {agent:.2} ms, containers (executors and tasks) {containers:.2} ms, framework {framework:.2} ms"
        );
    }
    anyhow::ensure!(report.failed == 0, "{} tasks failed", report.failed);
    Ok(report.rate())
}

/// Slurm's jobs per second, from the peer script's summary line
/// (`slurm: N jobs in S s = R jobs/s; ...`).
fn slurm(script: &PathBuf, tasks: usize) -> anyhow::Result<f64> {
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("bash").arg(script).args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{} {}: {}\n{}",
            script.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["setup"])?;
    let n = tasks.to_string();
    let out = run(&["bench", &n, "1"]);
    let stopped = run(&["stop"]);
    let out = out?;
    stopped?;
    print!("{out}");
    let summary = out
        .lines()
        .rev()
        .find(|l| l.starts_with("slurm:"))
        .ok_or_else(|| anyhow::anyhow!("no summary line from the peer script"))?;
    let rate = summary
        .split(" = ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("cannot read the rate in {summary:?}"))?;
    Ok(rate)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.tasks > 0 && args.slots > 0,
        "--tasks and --slots must be positive"
    );
    let cairn_rate = cairn(&args).await?;
    if let Some(script) = &args.slurm_peer {
        // A fixed pause, not a wait for a condition: what it lets pass is
        // the file system's notion of "recently freed" (ext4: 60 s after
        // the inode table is written back).
        tokio::time::sleep(std::time::Duration::from_secs(args.settle_secs)).await;
        let slurm_rate = slurm(script, args.tasks)?;
        println!(
            "{} jobs: Cairn {cairn_rate:.0} jobs/s, Slurm {slurm_rate:.1} jobs/s: Cairn {:.1}x",
            args.tasks,
            cairn_rate / slurm_rate.max(1e-9)
        );
    }
    Ok(())
}
