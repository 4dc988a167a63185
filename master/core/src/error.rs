use cairn_model::{AgentId, FrameworkId};
use thiserror::Error;

/// Why the master refused a framework's call outright. A refused call changes
/// nothing. (A well-formed call whose content is invalid, such as a launch
/// with too many resources, is accepted and answered with task updates.)
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CallError {
    #[error("framework {0} is not known to this master")]
    UnknownFramework(FrameworkId),
    #[error("framework {0} has been removed")]
    RemovedFramework(FrameworkId),
    #[error("framework {0} is not subscribed")]
    NotSubscribed(FrameworkId),
    #[error("stream id {stream_id:?} of framework {framework} is not its current subscription")]
    StaleStream {
        framework: FrameworkId,
        stream_id: String,
    },
    #[error("invalid call from framework {framework}: {reason}")]
    Invalid {
        framework: FrameworkId,
        reason: String,
    },
    /// The ACLs do not allow it.
    #[error("{0}")]
    Forbidden(String),
}

/// A broken internal invariant, found by [`crate::Master::check_invariants`].
#[derive(Clone, Debug, PartialEq, Error)]
pub enum InvariantViolation {
    #[error("agent {agent}: used + offered ({allocated}) exceeds total ({total})")]
    OverCommitted {
        agent: AgentId,
        allocated: String,
        total: String,
    },
    #[error("agent {agent}: allocator holds {allocator} but tasks and offers hold {records}")]
    AllocatorMismatch {
        agent: AgentId,
        allocator: String,
        records: String,
    },
    #[error("agent {agent}: {what} is {actual} but its records sum to {expected}")]
    Bookkeeping {
        agent: AgentId,
        what: &'static str,
        actual: String,
        expected: String,
    },
    #[error("resources offered twice: {0}")]
    OfferedTwice(String),
    #[error("dangling reference: {0}")]
    Dangling(String),
}
