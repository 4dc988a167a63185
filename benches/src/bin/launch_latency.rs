//! Launch-to-exit latency of a trivial task on one agent, with and without
//! isolation: from the framework's ACCEPT to its TASK_FINISHED, one task at
//! a time, N times per isolation mode, the modes taking turns.
//!
//! Run as root (isolation needs it), with release binaries:
//!
//! ```text
//! cargo build --release --bins -p cairn-master -p cairn-agent -p cairn-benches
//! target/release/cairn-launch-bench --launches 1000
//! ```

use std::time::{Duration, Instant};

use cairn_sdk::{TaskBuilder, TaskState};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Launches per isolation mode.
    #[arg(long, default_value_t = 1000)]
    launches: usize,
    /// Isolation modes to compare.
    #[arg(long, value_delimiter = ' ', default_values_t = vec!["posix".to_string(), "cgroups,namespaces".to_string()])]
    modes: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One cluster (master and one agent) in one isolation mode, with a
/// framework ready to launch.
struct Bench {
    mode: String,
    _cluster: Cluster,
    fw: TestFramework,
    samples: Vec<Duration>,
    /// Per launch: ACCEPT to STARTING, STARTING to RUNNING, RUNNING to
    /// FINISHED (executor timestamps), FINISHED to its arrival.
    phases: Vec<[f64; 4]>,
}

impl Bench {
    async fn start(mode: &str) -> Bench {
        let cluster = Cluster::start(ClusterSpec {
            agents: 1,
            agent_resources: "cpus:2;mem:2048;disk:1000".into(),
            master_args: vec!["--allocation-interval".into(), "1s".into()],
            agent_args: vec!["--isolation".into(), mode.into()],
            ..ClusterSpec::default()
        })
        .await;
        let fw = TestFramework::named(&cluster.master_addr, "launch-bench").await;
        Bench {
            mode: mode.to_string(),
            _cluster: cluster,
            fw,
            samples: Vec::new(),
            phases: Vec::new(),
        }
    }

    /// Launches `/bin/true` and waits for TASK_FINISHED; returns the time
    /// from ACCEPT to it.
    async fn launch(&mut self, i: usize) -> Duration {
        let offer = self.fw.offers(Duration::from_secs(30)).await.remove(0);
        let id = format!("t{i}");
        let task = TaskBuilder::new(&id)
            .cpus(0.1)
            .mem(32.0)
            .exec("/bin/true", &[])
            .build(&offer.agent_id)
            .expect("task");
        let started = Instant::now();
        let accepted_at = cairn_model::Time::now();
        self.fw
            .driver
            .accept(
                std::slice::from_ref(&offer.id),
                vec![task],
                Some(Duration::ZERO),
            )
            .await
            .expect("accept");
        let starting = self
            .fw
            .update(&id, Duration::from_secs(30), |s| {
                s.state == TaskState::Starting
            })
            .await;
        let running = self
            .fw
            .update(&id, Duration::from_secs(30), |s| {
                s.state == TaskState::Running
            })
            .await;
        let end = self.fw.terminal(&id, Duration::from_secs(30)).await;
        let took = started.elapsed();
        let arrived = cairn_model::Time::now();
        assert_eq!(end.state, TaskState::Finished, "{} {end:?}", self.mode);
        let gap = |a: cairn_model::Time, b: cairn_model::Time| {
            b.saturating_since(a).as_secs_f64() * 1000.0
        };
        self.phases.push([
            gap(accepted_at, starting.timestamp),
            gap(starting.timestamp, running.timestamp),
            gap(running.timestamp, end.timestamp),
            gap(end.timestamp, arrived),
        ]);
        took
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    println!(
        "launch-to-exit latency of /bin/true, {} launches per mode, one at a time",
        args.launches
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9}",
        "isolation", "p50 ms", "p90 ms", "p99 ms", "mean ms"
    );
    let mut benches = Vec::new();
    for mode in &args.modes {
        benches.push(Bench::start(mode).await);
    }
    // Launches alternate between the modes, so drift in the machine's load
    // affects them alike. The first ten of each warm caches and are dropped.
    for i in 0..args.launches + 10 {
        for b in &mut benches {
            let took = b.launch(i).await;
            if i >= 10 {
                b.samples.push(took);
            }
        }
    }
    let mut p50s = Vec::new();
    for b in &mut benches {
        b.samples.sort();
        let s = &b.samples;
        let mean = s.iter().sum::<Duration>() / u32::try_from(s.len()).unwrap_or(1);
        println!(
            "{:<20} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            b.mode,
            ms(percentile(s, 0.5)),
            ms(percentile(s, 0.9)),
            ms(percentile(s, 0.99)),
            ms(mean)
        );
        p50s.push((b.mode.clone(), percentile(s, 0.5)));
    }
    println!(
        "median per phase (ms): accept->STARTING, STARTING->RUNNING, RUNNING->FINISHED, FINISHED->framework"
    );
    for b in &benches {
        let median = |k: usize| {
            let mut v: Vec<f64> = b.phases.iter().map(|p| p[k]).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        println!(
            "{:<20} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            b.mode,
            median(0),
            median(1),
            median(2),
            median(3)
        );
    }
    if let [(a, pa), (b, pb)] = p50s.as_slice() {
        println!("{b} adds {:.2} ms at p50 over {a}", ms(*pb) - ms(*pa));
    }
}
