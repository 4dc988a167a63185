//! Prometheus exposition (`GET /metrics`) of the master's metrics.
//!
//! Each master has its own recorder rather than the process-wide one, so
//! that `cairn local` (a master and agents in one process) keeps their
//! metrics apart. Counters and gauges are the core's own counts, set from a
//! summary at scrape time; histograms are observed by the driver as things
//! happen. Names follow Prometheus conventions: a `cairn_` prefix, base
//! units (bytes, seconds), `_total` on counters, labels with bounded values.

use std::time::Duration;

use cairn_master_core::view::Summary;
use cairn_model::{ResourceName, Resources, TaskState};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Buckets of the latency histograms, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub const ALLOCATION_CYCLE: &str = "cairn_master_allocation_cycle_seconds";
pub const STATUS_UPDATE_LATENCY: &str = "cairn_master_status_update_latency_seconds";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What `/metrics` reports about leadership.
#[derive(Clone, Copy, Debug)]
pub struct Election {
    pub elected: bool,
    /// `None` without ZooKeeper.
    pub zk_connected: Option<bool>,
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // Both histograms match the suffix; the call fails only for an
        // empty bucket list.
        let builder =
            match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Metrics { recorder, handle }
    }

    /// Runs `f` with this master's recorder as the current one.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    pub fn observe_allocation(&self, took: Duration) {
        self.with(|| histogram!(ALLOCATION_CYCLE).record(took.as_secs_f64()));
    }

    /// From a status's creation on its agent to its arrival here.
    pub fn observe_status_update(&self, latency: Duration) {
        self.with(|| histogram!(STATUS_UPDATE_LATENCY).record(latency.as_secs_f64()));
    }

    /// The exposition text, with the counts of `summary`.
    pub fn render(&self, summary: Option<&Summary>, election: Election, uptime: f64) -> String {
        self.with(|| {
            gauge!("cairn_master_elected").set(if election.elected { 1.0 } else { 0.0 });
            if let Some(up) = election.zk_connected {
                gauge!("cairn_master_zookeeper_session_connected").set(if up { 1.0 } else { 0.0 });
            }
            gauge!("cairn_master_uptime_seconds").set(uptime);
            if let Some(s) = summary {
                set_summary(s);
            }
        });
        self.handle.render()
    }
}

#[allow(clippy::cast_precision_loss)]
fn set_summary(s: &Summary) {
    for (state, n) in [
        ("connected", s.agents_connected),
        ("disconnected", s.agents_disconnected),
        ("unreachable", s.agents_unreachable),
    ] {
        gauge!("cairn_agents", "state" => state).set(n as f64);
    }
    for (state, n) in [
        ("connected", s.frameworks_connected),
        ("disconnected", s.frameworks_disconnected),
        ("completed", s.frameworks_completed),
    ] {
        gauge!("cairn_frameworks", "state" => state).set(n as f64);
    }
    // Live states are gauges (tasks in them now); terminal ones are counters
    // (tasks that ever ended so).
    for state in TaskState::ALL {
        let label = state_label(state);
        if state.is_terminal() {
            let n = s.counters.tasks_terminal.get(&state).copied().unwrap_or(0);
            counter!("cairn_tasks_terminal_total", "state" => label).absolute(n);
        } else {
            let n = s.tasks_by_state.get(&state).copied().unwrap_or(0);
            gauge!("cairn_tasks", "state" => label).set(n as f64);
        }
    }
    set_resources("cairn_resources_total", &s.total);
    set_resources("cairn_resources_used", &s.used);
    set_resources("cairn_resources_offered", &s.offered);
    gauge!("cairn_offers_outstanding").set(s.outstanding_offers as f64);
    let c = &s.counters;
    for (name, v) in [
        ("cairn_offers_sent_total", c.offers_sent),
        ("cairn_offers_accepted_total", c.offers_accepted),
        ("cairn_offers_declined_total", c.offers_declined),
        ("cairn_offers_rescinded_total", c.offers_rescinded),
        ("cairn_offers_expired_total", c.offers_expired),
        ("cairn_tasks_launched_total", c.tasks_launched),
        ("cairn_task_errors_total", c.task_errors),
        ("cairn_status_updates_total", c.status_updates),
        (
            "cairn_status_updates_refused_total",
            c.status_updates_refused,
        ),
        (
            "cairn_status_update_acknowledgements_total",
            c.acknowledgements,
        ),
        ("cairn_task_kills_total", c.kills),
        ("cairn_agent_registrations_total", c.agents_registered),
        ("cairn_agent_reregistrations_total", c.agents_reregistered),
        ("cairn_agents_unreachable_total", c.agents_unreachable),
        (
            "cairn_framework_subscriptions_total",
            c.frameworks_subscribed,
        ),
        (
            "cairn_framework_resubscriptions_total",
            c.frameworks_resubscribed,
        ),
        ("cairn_frameworks_removed_total", c.frameworks_removed),
        ("cairn_allocation_cycles_total", c.allocation_cycles),
        ("cairn_scheduler_calls_total", c.calls),
    ] {
        counter!(name).absolute(v);
    }
}

/// `TASK_RUNNING` -> `running`.
pub fn state_label(state: TaskState) -> String {
    state
        .as_str()
        .trim_start_matches("TASK_")
        .to_ascii_lowercase()
}

/// Scalars in base units: CPUs as cores, memory and disk in bytes (Mesos
/// counts them in MB), ports as a count.
#[allow(clippy::cast_precision_loss)]
pub fn set_resources(name: &'static str, r: &Resources) {
    const MB: f64 = 1024.0 * 1024.0;
    for (resource, label, scale) in [
        (ResourceName::Cpus, "cpus", 1.0),
        (ResourceName::Gpus, "gpus", 1.0),
        (ResourceName::Mem, "mem_bytes", MB),
        (ResourceName::Disk, "disk_bytes", MB),
    ] {
        gauge!(name, "resource" => label).set(r.scalar(&resource).as_f64() * scale);
    }
    let ports = r.range(&ResourceName::Ports).map_or(0, |p| p.count());
    gauge!(name, "resource" => "ports").set(ports as f64);
}

/// Seconds between two samples of the cluster's totals.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: an hour's worth.
pub const HISTORY_LEN: usize = 360;

/// The cluster's totals at one time, for the dashboard's charts.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sample {
    /// Unix time, seconds.
    pub t: f64,
    pub cpus_total: f64,
    pub cpus_used: f64,
    pub cpus_offered: f64,
    /// MB, as in the state.
    pub mem_total: f64,
    pub mem_used: f64,
    pub tasks_running: u64,
}

impl Sample {
    pub fn of(s: &Summary, now: cairn_model::Time) -> Self {
        Sample {
            t: now.as_unix_secs_f64(),
            cpus_total: s.total.cpus().as_f64(),
            cpus_used: s.used.cpus().as_f64(),
            cpus_offered: s.offered.cpus().as_f64(),
            mem_total: s.total.mem().as_f64(),
            mem_used: s.used.mem().as_f64(),
            tasks_running: s
                .tasks_by_state
                .get(&TaskState::Running)
                .copied()
                .unwrap_or(0),
        }
    }
}

/// The newest `HISTORY_LEN` samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: std::collections::VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}
