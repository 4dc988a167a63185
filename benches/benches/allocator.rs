//! One allocation cycle over a grid of agents x frameworks, in three
//! workloads (see `cairn_benches::Workload`).
//!
//! `cargo bench -p cairn-benches --bench allocator` runs a small grid;
//! `CAIRN_BENCH_FULL=1` runs agents {1,000; 10,000; 50,000} x frameworks
//! {10; 100; 1,000}, as in BENCHMARKS.md.

use std::time::{Duration, Instant};

use cairn_benches::{Workload, prepared, t};
use cairn_master_core::allocator::Scope;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn grid() -> (Vec<usize>, Vec<usize>) {
    if std::env::var_os("CAIRN_BENCH_FULL").is_some() {
        (vec![1_000, 10_000, 50_000], vec![10, 100, 1_000])
    } else {
        (vec![1_000], vec![10, 100])
    }
}

fn allocation_cycle(c: &mut Criterion) {
    let (agents, frameworks) = grid();
    for workload in [
        Workload::AcceptAll,
        Workload::DeclineLongFilter { rounds: 5 },
        Workload::HalfSuppressed,
    ] {
        let mut group = c.benchmark_group(format!("allocation_cycle/{}", workload.name()));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(5));
        for &a in &agents {
            for &f in &frameworks {
                group.bench_with_input(
                    BenchmarkId::new(format!("{a}_agents"), format!("{f}_frameworks")),
                    &(a, f),
                    |b, &(a, f)| {
                        // Each measured cycle starts from a freshly prepared
                        // state, built outside the timing.
                        b.iter_custom(|iters| {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let mut alloc = prepared(a, f, workload);
                                let start = Instant::now();
                                let out = alloc.allocate(t(1000), &Scope::All);
                                total += start.elapsed();
                                std::hint::black_box(out);
                            }
                            total
                        });
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, allocation_cycle);
criterion_main!(benches);
