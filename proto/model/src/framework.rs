use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{FrameworkId, ModelError};

/// A role: the unit of fair sharing between groups of frameworks. `*` is the
/// default role. Hierarchical names (`eng/ci`) are accepted as names; weights
/// apply to the name as a whole.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(Arc<str>);

impl Role {
    pub fn default_role() -> Role {
        Role("*".into())
    }

    pub fn parse(field: &str, value: &str) -> Result<Role, ModelError> {
        let bad = |reason: &str| Err(ModelError::invalid(field, value, reason));
        if value == "*" {
            return Ok(Role::default_role());
        }
        if value.is_empty() || value.len() > 128 {
            return bad("a role has 1 to 128 characters");
        }
        for segment in value.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." || segment.starts_with('-') {
                return bad(
                    "each '/'-separated part must be non-empty, not '.', '..', or start with '-'",
                );
            }
            if segment
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '\\')
            {
                return bad("must not contain whitespace, control characters, '*' or '\\'");
            }
        }
        Ok(Role(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Role({:?})", &*self.0)
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Role::parse("role", &s).map_err(serde::de::Error::custom)
    }
}

/// What a framework declares it can handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Capability {
    /// Receives TASK_UNREACHABLE, TASK_DROPPED, TASK_GONE and TASK_UNKNOWN
    /// instead of TASK_LOST.
    PartitionAware,
    /// Receives TASK_KILLING before TASK_KILLED.
    TaskKillingState,
    MultiRole,
    GpuResources,
    RevocableResources,
}

/// A framework as it describes itself when it subscribes.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkInfo {
    /// Set when re-subscribing; assigned by the master otherwise.
    pub id: Option<FrameworkId>,
    pub name: String,
    pub user: String,
    /// Never empty: a framework without roles gets the default role.
    pub roles: Vec<Role>,
    pub failover_timeout: Duration,
    pub capabilities: BTreeSet<Capability>,
    pub hostname: String,
    pub principal: String,
    pub checkpoint: bool,
    pub webui_url: String,
}

impl FrameworkInfo {
    /// A minimal info for tests and examples.
    pub fn new(name: impl Into<String>, user: impl Into<String>) -> Self {
        FrameworkInfo {
            id: None,
            name: name.into(),
            user: user.into(),
            roles: vec![Role::default_role()],
            failover_timeout: Duration::ZERO,
            capabilities: BTreeSet::new(),
            hostname: String::new(),
            principal: String::new(),
            checkpoint: false,
            webui_url: String::new(),
        }
    }

    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }

    pub fn partition_aware(&self) -> bool {
        self.has(Capability::PartitionAware)
    }
}
