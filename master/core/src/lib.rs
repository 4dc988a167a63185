//! The Cairn master's core: every decision the master makes, as a
//! deterministic state machine without I/O.
//!
//! The core never touches a socket, a clock or ZooKeeper. Inputs go in through
//! [`Master::handle`] with `now` passed in; outputs (messages to frameworks and
//! agents) come out of [`Master::poll_output`] as values; timers are asked for
//! with [`Master::poll_timeout`] and fired with [`Master::handle_timeout`].
//! One task of the server owns a `Master` and is the only caller, so the core
//! needs no locks. Given the same seed and the same inputs at the same times,
//! it produces the same outputs: tests replay runs exactly.
//!
//! Structure:
//! - [`allocator`]: hierarchical DRF, a library with named stages.
//! - [`offer`]: the offer lifecycle (outstanding until accepted, declined,
//!   rescinded or expired).
//! - [`task`]: the master's record of a task; the lifecycle itself is
//!   [`cairn_model::TaskState::transition`].
//! - `master`: the registries (agents, frameworks, offers, tasks) and the
//!   handlers for each input.
//! - [`view`]: read-only snapshots for `/state` and the CLI.

pub mod allocator;
mod config;
mod error;
mod io;
mod master;
pub mod offer;
pub mod registry;
pub mod task;
mod validation;
pub mod view;

pub use config::MasterConfig;
pub use error::{CallError, InvariantViolation};
pub use io::{
    Acknowledgement, AgentCommand, Call, ConnId, Event, Input, LaunchRequest, Observed, Output,
    ReportedTask,
};
pub use master::Master;
