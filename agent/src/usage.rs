//! What containers use, read from isolation (blocking file reads: callers
//! run this off the async threads), for `/monitor/statistics` and the
//! reports to the master.

use std::sync::Arc;

use cairn_agent_core::ContainerSummary;
use cairn_model::{ExecutorUsage, Time};
use serde_json::{Value, json};

use crate::launcher::Launcher;

/// Usage of every container the launcher can measure.
pub fn collect(
    launcher: &Arc<dyn Launcher>,
    containers: &[ContainerSummary],
) -> Vec<ExecutorUsage> {
    let now = Time::now();
    containers
        .iter()
        .filter_map(|c| {
            let s = launcher.usage(&c.container_id)?;
            Some(ExecutorUsage {
                framework_id: c.framework_id.clone(),
                executor_id: c.executor_id.clone(),
                container_id: c.container_id.clone(),
                timestamp: now,
                cpus_limit: c.resources.cpus().as_f64(),
                cpus_user_time_secs: s.cpu_user_secs,
                cpus_system_time_secs: s.cpu_system_secs,
                cpus_nr_periods: s.nr_periods,
                cpus_nr_throttled: s.nr_throttled,
                cpus_throttled_time_secs: s.throttled_secs,
                mem_rss_bytes: s.mem_rss_bytes,
                mem_total_bytes: s.mem_usage_bytes,
                mem_limit_bytes: s.mem_limit_bytes,
                processes: s.processes as u64,
                pids_limit_hits: s.pids_max_hits,
            })
        })
        .collect()
}

/// Mesos's `/monitor/statistics` shape: one entry per executor.
pub fn statistics_json(usage: &[ExecutorUsage]) -> Value {
    Value::Array(
        usage
            .iter()
            .map(|u| {
                json!({
                    "executor_id": u.executor_id.as_str(),
                    "executor_name": format!("Command Executor (Task: {})", u.executor_id),
                    "framework_id": u.framework_id.as_str(),
                    "source": u.executor_id.as_str(),
                    "container_id": u.container_id.as_str(),
                    "statistics": {
                        "timestamp": u.timestamp.as_unix_secs_f64(),
                        "cpus_limit": u.cpus_limit,
                        "cpus_user_time_secs": u.cpus_user_time_secs,
                        "cpus_system_time_secs": u.cpus_system_time_secs,
                        "cpus_nr_periods": u.cpus_nr_periods,
                        "cpus_nr_throttled": u.cpus_nr_throttled,
                        "cpus_throttled_time_secs": u.cpus_throttled_time_secs,
                        "mem_rss_bytes": u.mem_rss_bytes,
                        "mem_total_bytes": u.mem_total_bytes,
                        "mem_limit_bytes": u.mem_limit_bytes,
                        "processes": u.processes,
                        "pids_limit_hits": u.pids_limit_hits,
                    }
                })
            })
            .collect(),
    )
}
