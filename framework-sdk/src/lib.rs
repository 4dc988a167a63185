#![doc = include_str!("../README.md")]

mod builder;
mod driver;
pub mod executor;
pub mod offers;
mod persist;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use builder::TaskBuilder;
pub use cairn_model::{
    AgentId, Capability, CommandInfo, ExecutorId, FrameworkId, FrameworkInfo, KillPolicy, Network,
    Offer, OfferId, Reason, Resources, Role, Source, StatusUuid, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
pub use driver::{Driver, SchedulerDriver, SdkError};

use std::future::Future;

/// A framework's scheduler: what it does with offers and task updates.
///
/// Callbacks run one at a time, in event order. Every method but `offers`
/// and `update` has a default that does nothing.
pub trait Scheduler: Send {
    /// The master accepted the subscription (also after a re-subscription).
    fn subscribed(
        &mut self,
        _driver: &Driver,
        _framework_id: &FrameworkId,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Resources offered to this framework. Each offer must be used
    /// ([`Driver::launch`] or [`Driver::accept`]) or declined, or it stays
    /// outstanding, holding its resources, until the master rescinds it.
    fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) -> impl Future<Output = ()> + Send;

    /// An offer is no longer valid.
    fn rescinded(
        &mut self,
        _driver: &Driver,
        _offer_id: &OfferId,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// A task's state changed. With automatic acknowledgements (the
    /// default), the update is acknowledged once this returns.
    fn update(&mut self, driver: &Driver, status: &TaskStatus) -> impl Future<Output = ()> + Send;

    /// An agent was lost (`executor_id` none), or an executor ended.
    fn failure(
        &mut self,
        _driver: &Driver,
        _agent_id: &AgentId,
        _executor_id: Option<&ExecutorId>,
        _status: Option<i32>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Opaque bytes from one of the framework's executors.
    fn message(
        &mut self,
        _driver: &Driver,
        _agent_id: &AgentId,
        _executor_id: &ExecutorId,
        _data: &[u8],
    ) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The master reported an error (for example, the framework was removed).
    fn error(&mut self, _driver: &Driver, _message: &str) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The connection to the master broke; the driver re-subscribes.
    fn disconnected(&mut self, _driver: &Driver) -> impl Future<Output = ()> + Send {
        async {}
    }
}
