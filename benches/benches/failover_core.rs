//! The master core's share of a failover: a new leader recovers a registry
//! of N agents, then every one of them re-registers, each on its own
//! session, the driver asking for the next timer after each input (as
//! `master/src/driver.rs` does after each batch, and a batch is often one
//! registration while agents trickle in). What is left of a failover (the
//! ZooKeeper session timeout, connections) is measured end to end by
//! `cairn-failover-bench`.
//!
//! `cargo bench -p cairn-benches --bench failover_core` runs 1,000 and
//! 10,000 agents; `CAIRN_BENCH_FULL=1` adds 50,000.

use std::time::{Duration, Instant};

use cairn_benches::t;
use cairn_master_core::registry::{AgentRecord, RegistryState};
use cairn_master_core::{ConnId, Input, Master, MasterConfig};
use cairn_model::{AgentId, AgentInfo, Resources};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn info(i: usize, resources: &Resources) -> AgentInfo {
    AgentInfo {
        hostname: format!("sim-{i}"),
        address: format!("10.{}.{}.{}:5051", i >> 16 & 255, i >> 8 & 255, i & 255),
        resources: resources.clone(),
        attributes: Vec::new(),
        tls: false,
    }
}

fn registry(n: usize, resources: &Resources) -> RegistryState {
    let mut state = RegistryState::default();
    for i in 0..n {
        state.agents.insert(
            AgentId::new(format!("old-S{i}")),
            AgentRecord {
                info: info(i, resources),
                unreachable_since: None,
            },
        );
    }
    state
}

fn reregistration(c: &mut Criterion) {
    let sizes: &[usize] = if std::env::var_os("CAIRN_BENCH_FULL").is_some() {
        &[1_000, 10_000, 50_000]
    } else {
        &[1_000, 10_000]
    };
    let resources = Resources::parse("cpus:8;mem:16384;disk:100000").expect("resources");
    let mut group = c.benchmark_group("failover_core/reregister_all");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for &n in sizes {
        let state = registry(n, &resources);
        group.bench_with_input(BenchmarkId::new("agents", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let now = t(1000);
                    let mut master = Master::new(MasterConfig::default(), 7, now);
                    master.recover(now, state.clone());
                    let start = Instant::now();
                    for i in 0..n {
                        let input = Input::AgentRegister {
                            conn: ConnId(i as u64 + 1),
                            agent_id: Some(AgentId::new(format!("old-S{i}"))),
                            info: info(i, &resources),
                            tasks: Vec::new(),
                            frameworks: Vec::new(),
                        };
                        let _ = master.handle(now, input);
                        while let Some(out) = master.poll_output() {
                            std::hint::black_box(out);
                        }
                        std::hint::black_box(master.poll_timeout());
                    }
                    total += start.elapsed();
                    assert!(!master.is_recovering(), "every agent came back");
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, reregistration);
criterion_main!(benches);
