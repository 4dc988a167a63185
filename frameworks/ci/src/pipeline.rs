//! Pipelines: what a build runs, submitted as YAML.
//!
//! ```yaml
//! name: unit-tests
//! steps:
//!   - name: build
//!     run: make
//!   - run: make test > report.txt
//! environment:
//!   RUST_LOG: info
//! resources: { cpus: 0.5, mem: 256 }
//! timeout: 10m
//! artifacts: [report.txt]
//! ```
//!
//! A build is one task: its steps run in order in one shell script in the
//! task's sandbox, stopping at the first that fails; each step's output
//! starts with a `==> step` line in the build's log.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline: {0}")]
    Parse(String),
    #[error("pipeline {name}: {reason}")]
    Invalid { name: String, reason: String },
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub name: Option<String>,
    pub run: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
}

fn default_cpus() -> f64 {
    0.5
}

fn default_mem() -> f64 {
    256.0
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            cpus: default_cpus(),
            mem: default_mem(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub environment: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Shape,
    /// A build running longer is killed and marked timed out.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Paths in the sandbox to keep and serve after the build.
    #[serde(default)]
    pub artifacts: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// Largest pipeline accepted.
pub const MAX_PIPELINE_BYTES: usize = 256 * 1024;

impl Pipeline {
    pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
        if text.len() > MAX_PIPELINE_BYTES {
            return Err(PipelineError::Parse(format!(
                "{} bytes; at most {MAX_PIPELINE_BYTES}",
                text.len()
            )));
        }
        let p: Pipeline =
            serde_yaml_ng::from_str(text).map_err(|e| PipelineError::Parse(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    fn invalid(&self, reason: impl Into<String>) -> PipelineError {
        PipelineError::Invalid {
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), PipelineError> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(self.invalid("the name must be 1 to 128 characters"));
        }
        if self.steps.is_empty() {
            return Err(self.invalid("a pipeline needs at least one step"));
        }
        if self.steps.iter().any(|s| s.run.trim().is_empty()) {
            return Err(self.invalid("a step's run is empty"));
        }
        for (what, v) in [("cpus", self.resources.cpus), ("mem", self.resources.mem)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(self.invalid(format!("resources.{what} must be a positive number")));
            }
        }
        if self.timeout.is_zero() {
            return Err(self.invalid("the timeout must be positive"));
        }
        for k in self.environment.keys() {
            let ok = !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(self.invalid(format!("{k:?} is not an environment variable name")));
            }
        }
        for a in &self.artifacts {
            if a.is_empty() || a.starts_with('/') || a.split('/').any(|c| c == "..") {
                return Err(self.invalid(format!(
                    "artifact {a:?}: a path relative to the sandbox, without '..'"
                )));
            }
        }
        Ok(())
    }

    /// The build's shell script: the steps in order, stopping at the first
    /// that fails.
    pub fn script(&self) -> String {
        let mut s = String::from("set -e\n");
        for (i, step) in self.steps.iter().enumerate() {
            let name = step
                .name
                .clone()
                .unwrap_or_else(|| format!("step {}", i + 1));
            s.push_str(&format!("echo {}\n", shell_quote(&format!("==> {name}"))));
            s.push_str(&step.run);
            s.push('\n');
        }
        s
    }
}

/// `s` quoted for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("timeout {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_pipeline_becomes_a_script_of_its_steps() {
        let p = Pipeline::parse(
            "name: t\nsteps:\n  - name: it's\n    run: echo a\n  - run: echo b\ntimeout: 5s\nartifacts: [out/x.txt]\n",
        )
        .unwrap();
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(p.resources, Shape::default());
        assert_eq!(
            p.script(),
            "set -e\necho '==> it'\\''s'\necho a\necho '==> step 2'\necho b\n"
        );
    }

    #[test]
    fn bad_pipelines_are_refused_with_the_reason() {
        let cases = [
            ("name: t\nsteps: []\n", "at least one step"),
            ("name: t\nsteps:\n  - run: ''\n", "run is empty"),
            (
                "name: t\nsteps:\n  - run: x\nresources: {cpus: -1}\n",
                "cpus must be",
            ),
            ("name: t\nsteps:\n  - run: x\ntimeout: soon\n", "timeout"),
            (
                "name: t\nsteps:\n  - run: x\nartifacts: [../etc]\n",
                "without '..'",
            ),
            (
                "name: t\nsteps:\n  - run: x\nenvironment: {'A B': x}\n",
                "environment variable",
            ),
            ("name: t\nsteps:\n  - run: x\nbogus: 1\n", "unknown field"),
            ("{{{", "pipeline:"),
        ];
        for (text, want) in cases {
            let err = Pipeline::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
