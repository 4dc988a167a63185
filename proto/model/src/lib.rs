//! Cairn's shared vocabulary: newtype ids, resource arithmetic, the task
//! lifecycle, and the conversions between these and the wire types of
//! `cairn-proto`. Every crate speaks these types; conversions are written once,
//! here, and validate everything that comes from the network.

mod agent;
pub mod auth;
pub mod convert;
mod error;
mod framework;
mod ids;
#[cfg(feature = "mesos-json")]
pub mod mesos_json;
mod offer;
pub mod resources;
#[cfg(feature = "runtime")]
pub mod runtime;
mod task;
mod time;
mod usage;
#[cfg(feature = "zk")]
pub mod zk;

pub use agent::{AgentInfo, Attribute, AttributeValue, parse_attributes};
pub use error::ModelError;
pub use framework::{Capability, FrameworkInfo, Role};
pub use ids::{AgentId, ContainerId, ExecutorId, FrameworkId, OfferId, StatusUuid, TaskId};
pub use offer::Offer;
pub use resources::{RangeSet, ResourceName, Resources, Scalar};
pub use task::{
    CommandInfo, ExecutorInfo, InvalidTransition, KillPolicy, Network, Reason, Source, TaskInfo,
    TaskState, TaskStatus,
};
pub use time::Time;
pub use usage::ExecutorUsage;

/// The version every Cairn binary reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
