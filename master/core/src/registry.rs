//! The registry: what a newly elected master must know to carry on, persisted
//! before it takes effect (the Mesos registrar's model).
//!
//! The core emits [`RegistryOp`]s as `Output::Persist`; the server writes
//! them (to ZooKeeper, or memory for a single master) in order and answers
//! `Input::Persisted`; only then does the change take effect. A master that
//! cannot persist stops.
//!
//! Tasks are not in the registry: agents report theirs when they re-register
//! with a new leader. Frameworks are, with when they disconnected, so a
//! framework's failover timeout holds across a master failover.

use std::collections::BTreeMap;

use cairn_model::{AgentId, AgentInfo, FrameworkId, FrameworkInfo, Time};

/// An agent as the registry knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRecord {
    pub info: AgentInfo,
    /// When it became unreachable; `None` while admitted.
    pub unreachable_since: Option<Time>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkRecord {
    pub info: FrameworkInfo,
    pub registered_at: Time,
    /// When its connection ended; `None` while connected.
    pub disconnected_since: Option<Time>,
}

/// One change to the registry.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryOp {
    /// A new agent, or one returning (from unreachable or an earlier
    /// master): admitted.
    AdmitAgent {
        id: AgentId,
        info: AgentInfo,
    },
    MarkUnreachable {
        id: AgentId,
        since: Time,
    },
    /// Forgets an agent (an old unreachable entry).
    RemoveAgent {
        id: AgentId,
    },
    /// A framework subscribed (or re-subscribed): connected.
    AddFramework {
        id: FrameworkId,
        info: FrameworkInfo,
        registered_at: Time,
    },
    DisconnectFramework {
        id: FrameworkId,
        since: Time,
    },
    /// Removes a framework; its id is remembered so it cannot return.
    RemoveFramework {
        id: FrameworkId,
        at: Time,
    },
    /// Forgets a removed framework's id (bounding the registry).
    ForgetFramework {
        id: FrameworkId,
    },
}

/// The registry's contents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistryState {
    pub agents: BTreeMap<AgentId, AgentRecord>,
    pub frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    /// Removed frameworks and when.
    pub removed_frameworks: BTreeMap<FrameworkId, Time>,
}

impl RegistryState {
    /// Applies `op` (what a store does when it persists it).
    pub fn apply(&mut self, op: &RegistryOp) {
        match op {
            RegistryOp::AdmitAgent { id, info } => {
                self.agents.insert(
                    id.clone(),
                    AgentRecord {
                        info: info.clone(),
                        unreachable_since: None,
                    },
                );
            }
            RegistryOp::MarkUnreachable { id, since } => {
                if let Some(a) = self.agents.get_mut(id) {
                    a.unreachable_since = Some(*since);
                }
            }
            RegistryOp::RemoveAgent { id } => {
                self.agents.remove(id);
            }
            RegistryOp::AddFramework {
                id,
                info,
                registered_at,
            } => {
                self.frameworks.insert(
                    id.clone(),
                    FrameworkRecord {
                        info: info.clone(),
                        registered_at: *registered_at,
                        disconnected_since: None,
                    },
                );
            }
            RegistryOp::DisconnectFramework { id, since } => {
                if let Some(f) = self.frameworks.get_mut(id) {
                    f.disconnected_since = Some(*since);
                }
            }
            RegistryOp::RemoveFramework { id, at } => {
                self.frameworks.remove(id);
                self.removed_frameworks.insert(id.clone(), *at);
            }
            RegistryOp::ForgetFramework { id } => {
                self.removed_frameworks.remove(id);
            }
        }
    }
}

/// Numbers `Persist` outputs, so `Persisted` inputs name what they confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub u64);
