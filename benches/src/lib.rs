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

/// CPU time the whole machine spent busy (user, system, interrupts, steal:
/// not idle or waiting for I/O) since boot, from `/proc/stat`. The
/// difference over a run, divided by the work done, is a cost per unit that
/// moves far less with this machine's noise than a rate does.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_of(stat.lines().next()?)
}

/// CPU time the hypervisor gave to others while this machine wanted to run
/// ("steal"), and all CPU time, since boot, from `/proc/stat`. On these
/// shared virtual machines a run during which steal is more than a few
/// percent of the time measures the host's other guests as much as Cairn.
pub fn machine_steal() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    steal_of(stat.lines().next()?)
}

/// Steal as a percentage of all CPU time between two [`machine_steal`]
/// readings.
pub fn steal_percent(before: (Duration, Duration), after: (Duration, Duration)) -> f64 {
    let total = after.1.saturating_sub(before.1).as_secs_f64();
    if total <= 0.0 {
        return 0.0;
    }
    100.0 * after.0.saturating_sub(before.0).as_secs_f64() / total
}

/// CPU time of process `pid` from `/proc/<pid>/stat`: its own (all its
/// threads) and that of the children it has waited for (and theirs, down
/// the tree: an agent's reaped containers with their executors and tasks).
pub fn process_cpu(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    process_cpu_of(&stat)
}

fn process_cpu_of(stat: &str) -> Option<(Duration, Duration)> {
    // The command name may hold spaces and parentheses; the fields after
    // its closing parenthesis are fixed: utime, stime, cutime and cstime are
    // the 12th to 15th of them.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [utime, stime, cutime, cstime] = f[..] else {
        return None;
    };
    Some((ticks(utime + stime)?, ticks(cutime + cstime)?))
}

fn ticks(n: u64) -> Option<Duration> {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_micros(n.saturating_mul(1_000_000) / hz))
}

/// The busy time in `/proc/stat`'s aggregate `cpu` line.
fn busy_of(line: &str) -> Option<Duration> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let counts: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already
    // counted in user).
    let busy = counts.get(..8)?;
    ticks(busy[0] + busy[1] + busy[2] + busy[5] + busy[6] + busy[7])
}

/// Steal and the sum of every field in `/proc/stat`'s aggregate `cpu` line.
fn steal_of(line: &str) -> Option<(Duration, Duration)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let counts: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal; guest time is already
    // counted in user.
    let c = counts.get(..8)?;
    Some((ticks(c[7])?, ticks(c.iter().sum())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_counts_everything_but_idle_and_iowait() {
        // SAFETY: sysconf only reads a system constant.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
        let busy = busy_of("cpu  100 1 20 5000 7 3 4 2 0 0").unwrap();
        assert_eq!(busy, Duration::from_micros(130 * 1_000_000 / hz));
        assert_eq!(busy_of("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(busy_of("cpu 1 2 x 4 5 6 7 8"), None);
        assert_eq!(busy_of("cpu 1 2 3"), None);
    }

    #[test]
    fn steal_is_a_share_of_all_time() {
        // SAFETY: sysconf only reads a system constant.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
        let tick = |n: u64| Duration::from_micros(n * 1_000_000 / hz);
        let before = steal_of("cpu  100 0 20 5000 0 0 0 10 0 0").unwrap();
        assert_eq!(before, (tick(10), tick(5130)));
        let after = steal_of("cpu  140 0 30 5130 0 0 0 30 0 0").unwrap();
        let p = steal_percent(before, after);
        assert!((p - 10.0).abs() < 0.01, "20 of 200 ticks: {p}");
        assert_eq!(steal_of("cpu 1 2 3"), None);
        assert_eq!(steal_percent(after, after), 0.0);
    }

    #[test]
    fn process_cpu_reads_own_and_reaped_time_past_an_odd_name() {
        // SAFETY: sysconf only reads a system constant.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 20 10 20 0 1 0";
        let (own, children) = process_cpu_of(stat).unwrap();
        assert_eq!(own, Duration::from_micros(10 * 1_000_000 / hz));
        assert_eq!(children, Duration::from_micros(30 * 1_000_000 / hz));
        assert_eq!(process_cpu_of("42 (a) S 1 2"), None);
        assert!(process_cpu(std::process::id()).is_some());
    }
}
