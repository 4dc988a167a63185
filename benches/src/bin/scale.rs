//! Scale: N simulated agents register with one master (each with its own
//! gRPC session; with `--per-connection 1` each with its own TCP
//! connection too, spread over loopback source addresses), then a framework
//! subscribes and is offered every agent. Prints the time
//! to register them all, the master's resident memory, the time from
//! SUBSCRIBE to offers for every agent (one allocation cycle over all of
//! them, and the offers on the wire), and the latency of `GET /state`.
//!
//! ```text
//! cargo build --release --bins -p cairn-master -p cairn-benches
//! target/release/cairn-scale-bench --agents 50000
//! ```
//! (as root, to raise the open-file limit for 50,000 connections).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_benches::sim_agent::SimAgents;
use cairn_model::Resources;
use cairn_model::zk::{MasterAddr, follow};
use cairn_sdk::{Driver, FrameworkInfo, Offer, Scheduler, SchedulerDriver, TaskStatus};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use clap::Parser;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "cairn-scale-bench")]
struct Args {
    #[arg(long, default_value_t = 50_000)]
    agents: usize,
    /// Loopback source addresses to spread the agents' connections over
    /// (127.0.0.1 and up), with a connection each.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Agents sharing one HTTP/2 connection; 1 gives each its own, as real
    /// agents have, which needs two open files per agent (one in the
    /// master, one here) under this process's open-file limit.
    #[arg(long, default_value_t = 1)]
    per_connection: usize,
    /// How long an agent may be silent (the master's flag; agents
    /// heartbeat five times in it).
    #[arg(long, default_value = "75secs")]
    agent_ping_timeout: String,
    /// Give up on any one phase after this long.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
}

/// Counts the agents it has been offered; keeps the offers.
struct Counter {
    agents: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Scheduler for Counter {
    async fn offers(&mut self, _driver: &Driver, offers: Vec<Offer>) {
        if let Ok(mut a) = self.agents.lock() {
            for o in offers {
                a.insert(o.agent_id.to_string());
            }
        }
    }

    async fn update(&mut self, _driver: &Driver, _status: &TaskStatus) {}
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Raises this process's open-file limit (children inherit it).
fn raise_nofile(want: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or fill the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            anyhow::bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur >= want {
            return Ok(());
        }
        lim.rlim_cur = want;
        lim.rlim_max = lim.rlim_max.max(want);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            anyhow::bail!(
                "cannot raise the open-file limit to {want} (run as root): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

async fn wait_until(
    what: &str,
    deadline: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(
            start.elapsed() < deadline,
            "{what}: not done after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.agents > 0 && args.sources > 0,
        "--agents and --sources must be positive"
    );
    let connections = args.agents.div_ceil(args.per_connection.max(1));
    raise_nofile(u64::try_from(connections).unwrap_or(u64::MAX) + 1_000)?;
    let deadline = Duration::from_secs(args.deadline_secs);
    let cluster = Cluster::start(ClusterSpec {
        agents: 0,
        master_args: vec![
            "--allocation-interval".into(),
            "1s".into(),
            "--agent-ping-timeout".into(),
            args.agent_ping_timeout.clone(),
        ],
        ..ClusterSpec::default()
    })
    .await;
    let master_pid = cluster.masters[0].pid();
    let idle_rss = rss_mib(master_pid).unwrap_or(0.0);
    let leaders = follow(MasterAddr::Direct(cluster.masters[0].addr.clone()));
    let sources: Vec<std::net::IpAddr> = (1..=args.sources)
        .map(|i| std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let per_agent = Resources::parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]")
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let started = Instant::now();
    let sims = if args.per_connection <= 1 {
        SimAgents::start_from(args.agents, &per_agent, &leaders, &sources)
    } else {
        SimAgents::start_shared(
            args.agents,
            &per_agent,
            &cluster.masters[0].addr,
            args.per_connection,
        )?
    };
    let registered = wait_until("registration", deadline, || {
        sims.registered_with(0) == args.agents
    })
    .await?;
    let rss = rss_mib(master_pid).unwrap_or(0.0);
    let mut at: Vec<Duration> = sims
        .states
        .iter()
        .filter_map(|s| s.lock().ok()?.registered.map(|(_, t)| t - started))
        .collect();
    at.sort();
    let q = |p: f64| {
        at.get(((at.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    println!(
        "  registered by: p10 {:.2} s, p50 {:.2} s, p90 {:.2} s, p99 {:.2} s",
        q(0.1),
        q(0.5),
        q(0.9),
        q(0.99)
    );
    println!(
        "{} agents over {connections} connections registered in {:.2} s ({:.0} per second)",
        args.agents,
        registered.as_secs_f64(),
        args.agents as f64 / registered.as_secs_f64().max(1e-9)
    );
    println!(
        "master resident memory: {rss:.0} MiB ({idle_rss:.0} MiB before the agents, {:.1} KiB per agent)",
        (rss - idle_rss) * 1024.0 / args.agents as f64
    );

    let offered = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut info = FrameworkInfo::new("cairn-scale-bench", "nobody");
    info.failover_timeout = Duration::from_secs(60);
    let driver = SchedulerDriver::new(cluster.masters[0].addr.clone(), info);
    let counter = Counter {
        agents: offered.clone(),
    };
    let framework = tokio::spawn(async move { driver.run(counter).await });
    let all_offered = wait_until("offers", deadline, || {
        offered.lock().map(|a| a.len()).unwrap_or(0) == args.agents
    })
    .await?;
    println!(
        "SUBSCRIBE to offers for all {} agents: {:.2} s",
        args.agents,
        all_offered.as_secs_f64()
    );
    let rss_offers = rss_mib(master_pid).unwrap_or(0.0);
    println!("master resident memory with every agent offered: {rss_offers:.0} MiB");

    let url = format!("http://{}/state", cluster.masters[0].addr);
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let resp = cairn_tests::http::client().get(url.parse()?).await?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await?
            .to_bytes();
        anyhow::ensure!(status == 200, "GET /state: {status}");
        times.push(t.elapsed());
        bytes = body.len();
    }
    times.sort();
    println!(
        "GET /state: median {:.0} ms over 5 ({:.1} MB)",
        times[2].as_secs_f64() * 1000.0,
        bytes as f64 / 1e6
    );
    let rss_end = rss_mib(master_pid).unwrap_or(0.0);
    println!("master resident memory after /state: {rss_end:.0} MiB");
    framework.abort();
    drop(sims);
    Ok(())
}
