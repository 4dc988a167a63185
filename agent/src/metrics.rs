//! Prometheus exposition (`GET /metrics`) of the agent's metrics, from its
//! own recorder (agents of `cairn local` share a process with a master).

use cairn_model::{ResourceName, Resources, TaskState};
use metrics::gauge;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::driver::Report;

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
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Metrics { recorder, handle }
    }
}

impl Metrics {
    /// The exposition text for the agent's state in `report`.
    #[allow(clippy::cast_precision_loss)]
    pub fn render(&self, report: &Report, total: &Resources, uptime_secs: f64) -> String {
        metrics::with_local_recorder(&self.recorder, || {
            gauge!("cairn_agent_registered").set(if report.registered { 1.0 } else { 0.0 });
            gauge!("cairn_agent_uptime_seconds").set(uptime_secs);
            let mut by_state: std::collections::BTreeMap<TaskState, u64> =
                TaskState::ALL.iter().map(|s| (*s, 0)).collect();
            let mut used = Resources::new();
            let mut executors = std::collections::BTreeSet::new();
            for t in &report.tasks {
                *by_state.entry(t.state).or_default() += 1;
                if !t.state.is_terminal() {
                    used.add(&t.task.resources);
                    executors.insert((t.framework_id.clone(), t.executor_id.clone()));
                }
            }
            for (state, n) in by_state {
                let label = state
                    .as_str()
                    .trim_start_matches("TASK_")
                    .to_ascii_lowercase();
                gauge!("cairn_agent_tasks", "state" => label).set(n as f64);
            }
            gauge!("cairn_agent_executors").set(executors.len() as f64);
            gauge!("cairn_agent_executors_connected").set(report.executors_connected as f64);
            const MB: f64 = 1024.0 * 1024.0;
            for (name, r) in [
                ("cairn_agent_resources_total", total),
                ("cairn_agent_resources_used", &used),
            ] {
                for (resource, label, scale) in [
                    (ResourceName::Cpus, "cpus", 1.0),
                    (ResourceName::Mem, "mem_bytes", MB),
                    (ResourceName::Disk, "disk_bytes", MB),
                ] {
                    gauge!(name, "resource" => label).set(r.scalar(&resource).as_f64() * scale);
                }
            }
        });
        self.handle.render()
    }
}
