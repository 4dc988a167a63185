use crate::{AgentId, Attribute, FrameworkId, OfferId, Resources, Role};

/// Resources of one agent offered to one framework, for one role.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<Attribute>,
    pub role: Role,
    /// Base URL of the agent's HTTP API.
    pub agent_url: String,
}
