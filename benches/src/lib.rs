//! Shared set-up for Cairn's benchmarks.
//!
//! The allocator benchmark mirrors Mesos's `HierarchicalAllocator_BENCHMARK`
//! workloads: a grid of agents x frameworks, each cycle measured alone (the
//! state it starts from is built outside the timing).

pub mod flood;
pub mod sim_agent;

use std::time::Duration;

use cairn_master_core::allocator::{Allocation, Allocator, AllocatorConfig, Scope};
use cairn_model::{AgentId, FrameworkId, Resources, Role, Time};

/// How frameworks treat offers before the measured cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Every agent is free and every framework wants resources.
    AcceptAll,
    /// Frameworks declined earlier offers with a long filter: each agent has
    /// already been refused by `rounds` frameworks.
    DeclineLongFilter { rounds: usize },
    /// Half of the frameworks are suppressed.
    HalfSuppressed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::AcceptAll => "accept_all",
            Workload::DeclineLongFilter { .. } => "decline_long_filter",
            Workload::HalfSuppressed => "half_suppressed",
        }
    }
}

pub fn t(secs: u64) -> Time {
    Time::from_micros(1_700_000_000_000_000 + secs * 1_000_000)
}

/// An allocator with `agents` agents of 16 cpus and 64 GB, and `frameworks`
/// frameworks in the default role, prepared for `workload`.
pub fn prepared(agents: usize, frameworks: usize, workload: Workload) -> Allocator {
    let mut a = Allocator::new(AllocatorConfig::default(), 7);
    let total =
        Resources::parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]").unwrap_or_default();
    for i in 0..agents {
        a.add_agent(&AgentId::new(format!("agent-{i}")), total.clone(), &[]);
    }
    let role = Role::default_role();
    for i in 0..frameworks {
        let id = FrameworkId::new(format!("fw-{i:05}"));
        a.add_framework(&id, std::slice::from_ref(&role), &[]);
        a.set_framework_active(&id, true);
        if workload == Workload::HalfSuppressed && i % 2 == 1 {
            a.suppress(&id, &[]);
        }
    }
    if let Workload::DeclineLongFilter { rounds } = workload {
        for r in 0..rounds {
            let allocations = a.allocate(t(r as u64), &Scope::All);
            decline_all(&mut a, &allocations, t(r as u64));
        }
    }
    a
}

/// Declines every allocation with a filter that outlives the benchmark.
pub fn decline_all(a: &mut Allocator, allocations: &[Allocation], now: Time) {
    for x in allocations {
        a.recover(
            &x.agent,
            &x.framework,
            &x.role,
            &x.resources,
            Some((now, Duration::from_secs(365 * 24 * 3600))),
        );
    }
}
