//! Job files: a job is stages forming a DAG; each stage is N tasks from a
//! command template.
//!
//! ```toml
//! name = "etl"
//! mode = "fine"            # "fine": a task per command executor;
//!                          # "coarse": one executor per agent runs many
//!
//! [[stage]]
//! name = "extract"
//! tasks = 40
//! command = "echo extracting part {index} of {stage}"
//! cpus = 0.1               # per task
//! mem = 32                 # MB per task
//! retries = 2              # attempts after the first failure
//! prefer = { attribute = "rack:r1", wait = "5s" }   # delay scheduling
//!
//! [[stage]]
//! name = "load"
//! depends_on = ["extract"]
//! tasks = 1
//! command = "echo loading"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read job file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("job {job}: {reason}")]
    Invalid { job: String, reason: String },
}

/// How tasks are run.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each task under a command executor of its own.
    #[default]
    Fine,
    /// Tasks under one long-lived executor per agent (this program, as
    /// `cairn-batch executor`), which exits when idle.
    Coarse,
}

/// Delay scheduling: wait up to `wait` for offers from agents with the
/// attribute before taking others.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prefer {
    /// `name:value` (a text or scalar attribute of the agent).
    pub attribute: String,
    #[serde(with = "humantime_serde_shim")]
    pub wait: Duration,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub tasks: usize,
    /// `{index}` (0 to tasks - 1) and `{stage}` are replaced.
    pub command: String,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub prefer: Option<Prefer>,
}

fn default_cpus() -> f64 {
    0.1
}

fn default_mem() -> f64 {
    32.0
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(rename = "stage")]
    pub stages: Vec<Stage>,
}

/// Most tasks in one stage, and in a job.
pub const MAX_TASKS: usize = 1_000_000;

impl Stage {
    /// The command of task `index`.
    pub fn command_for(&self, index: usize) -> String {
        self.command
            .replace("{index}", &index.to_string())
            .replace("{stage}", &self.name)
    }
}

impl Job {
    pub fn from_file(path: &str) -> Result<Job, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.into(),
            source,
        })?;
        Job::parse(path, &text)
    }

    /// Parses and checks a job (`what` names it in errors).
    pub fn parse(what: &str, text: &str) -> Result<Job, JobError> {
        let job: Job = toml::from_str(text).map_err(|e| JobError::Parse {
            path: what.into(),
            reason: e.to_string(),
        })?;
        job.validate()?;
        Ok(job)
    }

    fn invalid(&self, reason: impl Into<String>) -> JobError {
        JobError::Invalid {
            job: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Names unique and usable in task ids, dependencies that exist and
    /// form no cycle, positive finite resources, at least one task each.
    pub fn validate(&self) -> Result<(), JobError> {
        let ok_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok_name(&self.name) {
            return Err(self.invalid("the job name must be 1 to 64 letters, digits, '-' or '_'"));
        }
        if self.stages.is_empty() {
            return Err(self.invalid("a job needs at least one stage"));
        }
        let mut names = BTreeSet::new();
        let mut total = 0usize;
        for s in &self.stages {
            if !ok_name(&s.name) {
                return Err(self.invalid(format!(
                    "stage {:?}: a name must be 1 to 64 letters, digits, '-' or '_'",
                    s.name
                )));
            }
            if !names.insert(s.name.as_str()) {
                return Err(self.invalid(format!("stage {} is defined twice", s.name)));
            }
            if s.tasks == 0 || s.tasks > MAX_TASKS {
                return Err(
                    self.invalid(format!("stage {}: tasks must be 1 to {MAX_TASKS}", s.name))
                );
            }
            total = total.saturating_add(s.tasks);
            for (what, v) in [("cpus", s.cpus), ("mem", s.mem)] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(self.invalid(format!(
                        "stage {}: {what} must be a positive number",
                        s.name
                    )));
                }
            }
            if s.command.trim().is_empty() {
                return Err(self.invalid(format!("stage {}: the command is empty", s.name)));
            }
            if let Some(p) = &s.prefer
                && p.attribute.split_once(':').is_none()
            {
                return Err(self.invalid(format!(
                    "stage {}: prefer.attribute must be name:value",
                    s.name
                )));
            }
        }
        if total > MAX_TASKS {
            return Err(self.invalid(format!("at most {MAX_TASKS} tasks in a job")));
        }
        for s in &self.stages {
            for d in &s.depends_on {
                if !names.contains(d.as_str()) {
                    return Err(self.invalid(format!(
                        "stage {} depends on {d}, which is not a stage",
                        s.name
                    )));
                }
            }
        }
        self.order().map(|_| ())
    }

    /// Stage indexes in an order where each comes after what it depends on
    /// (ties in file order); an error names a stage on a cycle.
    pub fn order(&self) -> Result<Vec<usize>, JobError> {
        let index: BTreeMap<&str, usize> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut done = vec![false; self.stages.len()];
        let mut out = Vec::with_capacity(self.stages.len());
        while out.len() < self.stages.len() {
            let next = self.stages.iter().enumerate().find(|(i, s)| {
                !done[*i]
                    && s.depends_on
                        .iter()
                        .all(|d| index.get(d.as_str()).is_some_and(|j| done[*j]))
            });
            match next {
                Some((i, _)) => {
                    done[i] = true;
                    out.push(i);
                }
                None => {
                    let stuck = self
                        .stages
                        .iter()
                        .enumerate()
                        .find(|(i, _)| !done[*i])
                        .map_or("?", |(_, s)| s.name.as_str());
                    return Err(self.invalid(format!(
                        "the stages' dependencies form a cycle (through {stuck})"
                    )));
                }
            }
        }
        Ok(out)
    }

    pub fn total_tasks(&self) -> usize {
        self.stages.iter().map(|s| s.tasks).sum()
    }
}

/// Durations as humantime text (`5s`, `1m 30s`) in job files.
mod humantime_serde_shim {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const GOOD: &str = r#"
        name = "etl"
        mode = "coarse"
        [[stage]]
        name = "b"
        depends_on = ["a"]
        tasks = 2
        command = "echo {stage} {index}"
        [[stage]]
        name = "a"
        tasks = 3
        command = "true"
        cpus = 0.5
        mem = 64
        retries = 1
        prefer = { attribute = "rack:r1", wait = "5s" }
    "#;

    #[test]
    fn a_job_parses_and_orders_its_stages_by_dependency() {
        let job = Job::parse("good", GOOD).unwrap();
        assert_eq!(job.mode, Mode::Coarse);
        assert_eq!(job.order().unwrap(), vec![1, 0]);
        assert_eq!(job.stages[0].command_for(1), "echo b 1");
        assert_eq!(
            job.stages[1].prefer.as_ref().unwrap().wait,
            Duration::from_secs(5)
        );
        assert_eq!(job.total_tasks(), 5);
    }

    #[test]
    fn bad_jobs_are_refused_with_the_reason() {
        let cases = [
            (
                GOOD.replace("depends_on = [\"a\"]", "depends_on = [\"zz\"]"),
                "not a stage",
            ),
            (GOOD.replace("tasks = 3", "tasks = 0"), "tasks must be"),
            (
                GOOD.replace("cpus = 0.5", "cpus = -1"),
                "cpus must be a positive",
            ),
            (
                GOOD.replace("cpus = 0.5", "cpus = nan"),
                "cpus must be a positive",
            ),
            (
                GOOD.replace("name = \"a\"", "name = \"b\""),
                "defined twice",
            ),
            (
                GOOD.replace("name = \"a\"\n", "name = \"a\"\n depends_on = [\"b\"]\n"),
                "cycle",
            ),
            (GOOD.replace("rack:r1", "rack"), "name:value"),
            (
                GOOD.replace("mode = \"coarse\"", "mode = \"medium\""),
                "unknown variant",
            ),
            (
                GOOD.replace("retries = 1", "retries = 1\nbogus = 2"),
                "unknown field",
            ),
            (GOOD.replace("name = \"etl\"", "name = \"a/b\""), "job name"),
        ];
        for (text, want) in cases {
            let err = Job::parse("bad", &text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
