//! One allocation cycle on a prepared allocator, timed once: for profiling
//! the allocator with `valgrind --tool=callgrind` (instruction counts that
//! repeat across runs) or `perf`, outside criterion.
//!
//! ```text
//! cargo build --release -p cairn-benches --bin cairn-alloc-cycle
//! valgrind --tool=callgrind --toggle-collect='*measured_cycle*' \
//!     target/release/cairn-alloc-cycle --agents 50000 --frameworks 1000 --workload decline
//! ```

use std::time::Instant;

use cairn_benches::{Workload, prepared, t};
use cairn_master_core::allocator::Scope;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cairn-alloc-cycle")]
struct Args {
    #[arg(long, default_value_t = 50_000)]
    agents: usize,
    #[arg(long, default_value_t = 1_000)]
    frameworks: usize,
    /// accept, decline or suppressed.
    #[arg(long, default_value = "accept")]
    workload: String,
    /// Cycles to time (each from a freshly prepared allocator).
    #[arg(long, default_value_t = 1)]
    cycles: usize,
}

/// The measured cycle, kept out of line so a profiler can count it alone
/// (`--toggle-collect='*measured_cycle*'`).
#[inline(never)]
fn measured_cycle(alloc: &mut cairn_master_core::allocator::Allocator) -> usize {
    alloc.allocate(t(1000), &Scope::All).len()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workload = match args.workload.as_str() {
        "accept" => Workload::AcceptAll,
        "decline" => Workload::DeclineLongFilter { rounds: 5 },
        "suppressed" => Workload::HalfSuppressed,
        other => anyhow::bail!("unknown workload {other:?}: accept, decline or suppressed"),
    };
    let mut times = Vec::with_capacity(args.cycles);
    for _ in 0..args.cycles {
        let mut alloc = prepared(args.agents, args.frameworks, workload);
        let start = Instant::now();
        let out = measured_cycle(&mut alloc);
        times.push(start.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{} agents x {} frameworks, {}: median {:.2} ms over {} cycles",
        args.agents,
        args.frameworks,
        workload.name(),
        median.as_secs_f64() * 1000.0,
        args.cycles
    );
    Ok(())
}
