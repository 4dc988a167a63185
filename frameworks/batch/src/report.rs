//! The final report of a run.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub name: String,
    pub tasks: usize,
    pub finished: usize,
    /// Tasks that failed past their retries: index and why.
    pub failed: Vec<(usize, String)>,
    pub retries: usize,
    /// First launch to last finish, once the stage is done.
    pub elapsed: Option<Duration>,
    /// Where its tasks finished.
    pub ran_on: Vec<RanOn>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RanOn {
    pub hostname: String,
    pub agent_id: String,
    pub tasks: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub job: String,
    pub succeeded: bool,
    pub elapsed: Duration,
    pub stages: Vec<StageReport>,
}

impl Report {
    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verdict = if self.succeeded {
            "succeeded"
        } else {
            "FAILED"
        };
        let _ = writeln!(
            out,
            "job {} {verdict} in {:.2}s",
            self.job,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>7} {:>9}  ran on",
            "stage", "tasks", "done", "retries", "time"
        );
        for s in &self.stages {
            let time = s
                .elapsed
                .map_or_else(|| "-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()));
            let hosts: Vec<String> = s
                .ran_on
                .iter()
                .map(|r| format!("{} [{}]: {}", r.hostname, r.agent_id, r.tasks))
                .collect();
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>8} {:>7} {:>9}  {}",
                s.name,
                s.tasks,
                s.finished,
                s.retries,
                time,
                hosts.join(", ")
            );
            for (index, why) in &s.failed {
                let _ = writeln!(out, "  task {index} of {} failed for good: {why}", s.name);
            }
        }
        out
    }
}
