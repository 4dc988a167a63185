//! The declarative app spec (YAML), as `cairn apply -f` sends it.
//!
//! ```yaml
//! apps:
//!   - name: web
//!     command: "exec python3 -m http.server $PORT0"   # or containers: [...]
//!     instances: 3
//!     cpus: 0.1
//!     mem: 64
//!     ports: 1                        # PORT0.. from the agent's ports
//!     labels: {tier: web}
//!     env: {GREETING: hello}
//!     constraints: [[hostname, UNIQUE]]
//!     health_check: {type: http, port_index: 0, path: /, grace_period: 5s,
//!                    interval: 1s, timeout: 1s, failure_threshold: 3}
//!     upgrade: {minimum_health_capacity: 0.5, maximum_over_capacity: 0.0}
//!     unreachable: {inactive_after: 30s, kill_selection: youngest_first}
//!     backoff: {initial: 1s, factor: 2.0, max: 60s}
//!     service: {name: web, port: 10080}   # web.services.cairn and a TCP balancer
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::constraints::Constraint;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("the spec is not valid YAML for an app list: {0}")]
    Yaml(String),
    #[error("app {app}: {reason}")]
    Invalid { app: String, reason: String },
    #[error("the spec names app {0} twice")]
    Duplicate(String),
}

fn invalid(app: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        app: app.to_string(),
        reason: reason.into(),
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub command: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Command,
    Http,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// For `command`: run with `sh -c` in the sandbox; exit 0 is healthy.
    #[serde(default)]
    pub command: Option<String>,
    /// For `http` and `tcp`: which of the instance's ports.
    #[serde(default)]
    pub port_index: usize,
    /// For `http`: a 2xx or 3xx answer is healthy.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_grace", with = "duration")]
    pub grace_period: Duration,
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_interval", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
}

fn default_path() -> String {
    "/".into()
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_threshold() -> u32 {
    3
}

impl HealthCheck {
    /// How long an instance may be failing before it is found unhealthy
    /// (after its grace period).
    pub fn detection_time(&self) -> Duration {
        (self.interval + self.timeout) * self.failure_threshold
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    /// Fraction of `instances` that must stay healthy during an update.
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// Fraction of `instances` that may run beyond it during an update.
    #[serde(default)]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KillSelection {
    /// When an unreachable instance returns beside its replacement, the
    /// newer one goes.
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unreachable {
    /// How long an instance may be unreachable before it is replaced.
    #[serde(default = "default_inactive", with = "duration")]
    pub inactive_after: Duration,
    #[serde(default)]
    pub kill_selection: KillSelection,
}

fn default_inactive() -> Duration {
    Duration::from_secs(300)
}

impl Default for Unreachable {
    fn default() -> Self {
        Unreachable {
            inactive_after: default_inactive(),
            kill_selection: KillSelection::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the second of consecutive restarts (the first is at
    /// once); each further one multiplies it by `factor`, up to `max`.
    #[serde(default = "default_backoff", with = "duration")]
    pub initial: Duration,
    #[serde(default = "default_factor")]
    pub factor: f64,
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max: Duration,
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_factor() -> f64 {
    2.0
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: default_backoff(),
            factor: default_factor(),
            max: default_max_backoff(),
        }
    }
}

impl Backoff {
    /// The delay before a restart after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let exp = i32::try_from(failures - 2).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// A DNS label: `<name>.<domain>` resolves to the healthy instances.
    pub name: String,
    /// The TCP load balancer's port (none: DNS only).
    #[serde(default)]
    pub port: Option<u16>,
    /// Which of the instances' ports the service reaches.
    #[serde(default)]
    pub port_index: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: String,
    /// One process (`command`) or a pod of several (`containers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    #[serde(default = "one_instance")]
    pub instances: u32,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default = "default_mem")]
    pub mem: f64,
    #[serde(default)]
    pub disk: f64,
    #[serde(default)]
    pub ports: usize,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub upgrade: Upgrade,
    #[serde(default)]
    pub unreachable: Unreachable,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default)]
    pub service: Option<Service>,
}

fn one_instance() -> u32 {
    1
}
fn default_cpus() -> f64 {
    0.1
}
fn default_mem() -> f64 {
    32.0
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl App {
    /// Checks what YAML cannot: names, amounts, exactly one of command and
    /// containers, constraints, ports the checks and service use.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name = &self.name;
        if !is_label(name) {
            return Err(invalid(
                name,
                "the name must be a DNS label: lower-case letters, digits and '-', at most 63",
            ));
        }
        match (&self.command, self.containers.is_empty()) {
            (Some(_), true) => {}
            (None, false) => {
                for c in &self.containers {
                    if !is_label(&c.name) {
                        return Err(invalid(
                            name,
                            format!("container name {:?} is not a DNS label", c.name),
                        ));
                    }
                }
                let mut names: Vec<&str> =
                    self.containers.iter().map(|c| c.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                if names.len() != self.containers.len() {
                    return Err(invalid(name, "two containers have the same name"));
                }
            }
            _ => return Err(invalid(name, "give either command or containers")),
        }
        for (what, v) in [("cpus", self.cpus), ("mem", self.mem), ("disk", self.disk)] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(
                    name,
                    format!("{what} must be a non-negative number"),
                ));
            }
        }
        if self.cpus <= 0.0 {
            return Err(invalid(name, "cpus must be more than 0"));
        }
        if self.instances > 10_000 {
            return Err(invalid(name, "at most 10000 instances"));
        }
        let u = &self.upgrade;
        if !(0.0..=1.0).contains(&u.minimum_health_capacity)
            || !(0.0..=1.0).contains(&u.maximum_over_capacity)
        {
            return Err(invalid(name, "upgrade capacities must be between 0 and 1"));
        }
        if !self.backoff.factor.is_finite() || self.backoff.factor < 1.0 {
            return Err(invalid(name, "backoff factor must be at least 1"));
        }
        for c in &self.constraints {
            Constraint::parse(c).map_err(|e| invalid(name, e))?;
        }
        if let Some(h) = &self.health_check {
            match h.kind {
                CheckKind::Command if h.command.is_none() => {
                    return Err(invalid(name, "a command health check needs a command"));
                }
                CheckKind::Http | CheckKind::Tcp if h.port_index >= self.ports => {
                    return Err(invalid(
                        name,
                        format!(
                            "the health check uses port {} of {}",
                            h.port_index, self.ports
                        ),
                    ));
                }
                _ => {}
            }
            if h.failure_threshold == 0 || h.interval.is_zero() || h.timeout.is_zero() {
                return Err(invalid(
                    name,
                    "health check interval, timeout and threshold must be positive",
                ));
            }
        }
        if let Some(s) = &self.service {
            if !is_label(&s.name) {
                return Err(invalid(
                    name,
                    format!("service name {:?} is not a DNS label", s.name),
                ));
            }
            if s.port_index >= self.ports {
                return Err(invalid(
                    name,
                    format!("the service uses port {} of {}", s.port_index, self.ports),
                ));
            }
        }
        Ok(())
    }

    pub fn parsed_constraints(&self) -> Vec<Constraint> {
        self.constraints
            .iter()
            .filter_map(|c| Constraint::parse(c).ok())
            .collect()
    }

    /// What the instances run: the containers, or one named after the app.
    pub fn containers(&self) -> Vec<Container> {
        match &self.command {
            Some(command) => vec![Container {
                name: self.name.clone(),
                command: command.clone(),
            }],
            None => self.containers.clone(),
        }
    }

    /// Identifies what instances run: everything but `instances` (scaling
    /// is not an update). FNV-1a over the canonical JSON, so it is stable
    /// across builds and restarts.
    pub fn version(&self) -> String {
        let mut copy = self.clone();
        copy.instances = 0;
        let text = serde_json::to_string(&copy).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:08x}", h >> 32)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    List { apps: Vec<App> },
    One(Box<App>),
}

/// Parses a spec: `apps: [...]`, or a single app; YAML documents separated
/// by `---` may each hold either.
pub fn parse(text: &str) -> Result<Vec<App>, SpecError> {
    let mut apps = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v =
            serde_yaml_ng::Value::deserialize(doc).map_err(|e| SpecError::Yaml(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        match serde_yaml_ng::from_value::<Document>(v.clone()) {
            Ok(Document::List { apps: list }) => apps.extend(list),
            Ok(Document::One(app)) => apps.push(*app),
            // The untagged error says nothing; a direct parse says what.
            Err(_) => {
                let e = if v.get("apps").is_some() {
                    #[derive(Deserialize)]
                    #[allow(dead_code)]
                    struct L {
                        apps: Vec<App>,
                    }
                    serde_yaml_ng::from_value::<L>(v).err()
                } else {
                    serde_yaml_ng::from_value::<App>(v).err()
                };
                return Err(SpecError::Yaml(
                    e.map_or_else(|| "not an app list".into(), |e| e.to_string()),
                ));
            }
        }
    }
    let mut names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    for w in names.windows(2) {
        if w[0] == w[1] {
            return Err(SpecError::Duplicate(w[0].to_string()));
        }
    }
    for a in &apps {
        a.validate()?;
    }
    Ok(apps)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_parses_with_defaults_and_a_stable_version() {
        let apps = parse(
            "apps:\n  - name: web\n    command: 'echo hi'\n    instances: 3\n    ports: 1\n    \
             constraints: [[hostname, UNIQUE]]\n    health_check: {type: http, grace_period: 2s}\n",
        )
        .unwrap();
        assert_eq!(apps.len(), 1);
        let a = &apps[0];
        assert_eq!(a.instances, 3);
        assert_eq!(
            a.health_check.as_ref().unwrap().grace_period,
            Duration::from_secs(2)
        );
        let mut b = a.clone();
        b.instances = 7;
        assert_eq!(a.version(), b.version(), "scaling is not a new version");
        b.command = Some("echo bye".into());
        assert_ne!(a.version(), b.version());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert!(err("name: Web\ncommand: x\n").contains("DNS label"));
        assert!(err("name: w\n").contains("either command or containers"));
        assert!(err("name: w\ncommand: x\ncpus: -1\n").contains("cpus"));
        assert!(err("name: w\ncommand: x\nconstraints: [[hostname, NEAR]]\n").contains("NEAR"));
        assert!(err("name: w\ncommand: x\nhealth_check: {type: tcp}\n").contains("port 0 of 0"));
        assert!(err("name: w\ncommand: x\nbogus: 1\n").contains("bogus"));
        assert!(err("apps: [{name: a, command: x}, {name: a, command: y}]").contains("twice"));
    }

    #[test]
    fn backoff_grows_from_the_second_restart_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(5),
        };
        let d: Vec<u64> = (1..=6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(d, [0, 1, 2, 4, 5, 5]);
    }
}
