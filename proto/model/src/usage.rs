use serde::Serialize;

use crate::{ContainerId, ExecutorId, FrameworkId, Time};

/// What one executor's container used, as read from its cgroups. Counters
/// (cpu times, throttling) are totals since the container started; rates come
/// from two samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutorUsage {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub container_id: ContainerId,
    pub timestamp: Time,
    pub cpus_limit: f64,
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub cpus_nr_periods: u64,
    pub cpus_nr_throttled: u64,
    pub cpus_throttled_time_secs: f64,
    pub mem_rss_bytes: u64,
    pub mem_total_bytes: u64,
    pub mem_limit_bytes: u64,
    pub processes: u64,
    /// Forks refused because the container was at its pids limit.
    pub pids_limit_hits: u64,
}
