//! Wire messages to core inputs and core outputs to wire messages. Shape
//! checks happen here (a malformed call is refused whole, with the field that
//! is wrong); meaning checks happen in the core.

use cairn_master_core::{Acknowledgement, AgentCommand, Call, Event, LaunchRequest, ReportedTask};
use cairn_model::convert::{
    agent_info_from_pb, framework_info_from_pb, framework_info_to_pb, kill_policy_from_pb,
    kill_policy_to_pb, offer_to_pb, opt_id, refuse_from_pb, task_info_from_pb, task_info_to_pb,
    task_state_from_pb, task_status_from_pb, task_status_to_pb,
};
use cairn_model::{
    AgentId, AgentInfo, ExecutorId, FrameworkId, FrameworkInfo, ModelError, OfferId, Role, Source,
    StatusUuid, TaskId, TaskStatus,
};
use cairn_proto as pb;

use crate::driver::MasterInfo;

/// Largest framework message (either way) accepted, as Mesos's messages
/// travel in one protobuf: 1 MiB.
pub const MAX_MESSAGE_DATA: usize = 1024 * 1024;

/// Most offers, operations, tasks or reconciliation entries in one call.
const MAX_CALL_ITEMS: usize = 10_000;

fn check_count(field: &str, n: usize) -> Result<(), ModelError> {
    if n > MAX_CALL_ITEMS {
        return Err(ModelError::InvalidValue {
            field: field.into(),
            value: format!("{n} entries"),
            reason: format!("at most {MAX_CALL_ITEMS}"),
        });
    }
    Ok(())
}

fn roles(field: &str, list: &[String]) -> Result<Vec<Role>, ModelError> {
    check_count(field, list.len())?;
    list.iter()
        .enumerate()
        .map(|(i, r)| Role::parse(&format!("{field}[{i}]"), r))
        .collect()
}

fn offer_ids(field: &str, list: &[String]) -> Result<Vec<OfferId>, ModelError> {
    check_count(field, list.len())?;
    list.iter()
        .enumerate()
        .map(|(i, o)| OfferId::parse(&format!("{field}[{i}]"), o))
        .collect()
}

pub fn subscribe_from_pb(
    req: &pb::SubscribeRequest,
) -> Result<(FrameworkInfo, Vec<Role>), ModelError> {
    let info = req
        .framework_info
        .as_ref()
        .ok_or_else(|| ModelError::Missing {
            field: "framework_info".into(),
        })?;
    Ok((
        framework_info_from_pb("framework_info", info)?,
        roles("suppressed_roles", &req.suppressed_roles)?,
    ))
}

/// A launch: each task that converts is a task; one that does not but has a
/// readable id is answered with TASK_ERROR; one without a readable id makes
/// the whole call malformed (there is no task to answer for).
fn launches_from_pb(field: &str, tasks: &[pb::TaskInfo]) -> Result<Vec<LaunchRequest>, ModelError> {
    check_count(field, tasks.len())?;
    tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = format!("{field}[{i}]");
            match task_info_from_pb(&f, t) {
                Ok(task) => Ok(LaunchRequest::Task(task)),
                Err(e) => {
                    let task_id = TaskId::parse(&format!("{f}.task_id"), &t.task_id)?;
                    Ok(LaunchRequest::Malformed {
                        task_id,
                        reason: e.to_string(),
                    })
                }
            }
        })
        .collect()
}

pub fn call_from_pb(c: &pb::SchedulerCall) -> Result<(FrameworkId, String, Call), ModelError> {
    use pb::scheduler_call::Call as C;
    let framework_id = FrameworkId::parse("framework_id", &c.framework_id)?;
    let call = match c.call.as_ref() {
        None => {
            return Err(ModelError::Missing {
                field: "call".into(),
            });
        }
        Some(C::Accept(a)) => {
            check_count("accept.operations", a.operations.len())?;
            let mut launches = Vec::new();
            for (i, op) in a.operations.iter().enumerate() {
                match &op.operation {
                    Some(pb::operation::Operation::Launch(l)) => launches.extend(launches_from_pb(
                        &format!("accept.operations[{i}].launch.tasks"),
                        &l.tasks,
                    )?),
                    None => {
                        return Err(ModelError::Missing {
                            field: format!("accept.operations[{i}].operation"),
                        });
                    }
                }
            }
            Call::Accept {
                offer_ids: offer_ids("accept.offer_ids", &a.offer_ids)?,
                launches,
                refuse: refuse_from_pb("accept.filters", a.filters.as_ref())?,
            }
        }
        Some(C::Decline(d)) => Call::Decline {
            offer_ids: offer_ids("decline.offer_ids", &d.offer_ids)?,
            refuse: refuse_from_pb("decline.filters", d.filters.as_ref())?,
        },
        Some(C::Revive(r)) => Call::Revive {
            roles: roles("revive.roles", &r.roles)?,
        },
        Some(C::Suppress(s)) => Call::Suppress {
            roles: roles("suppress.roles", &s.roles)?,
        },
        Some(C::Kill(k)) => Call::Kill {
            task_id: TaskId::parse("kill.task_id", &k.task_id)?,
            agent_id: opt_id("kill.agent_id", &k.agent_id, AgentId::parse)?,
            kill_policy: k.kill_policy.as_ref().map(|p| kill_policy_from_pb(Some(p))),
        },
        Some(C::Reconcile(r)) => {
            check_count("reconcile.tasks", r.tasks.len())?;
            let tasks = r
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Ok((
                        TaskId::parse(&format!("reconcile.tasks[{i}].task_id"), &t.task_id)?,
                        opt_id(
                            &format!("reconcile.tasks[{i}].agent_id"),
                            &t.agent_id,
                            AgentId::parse,
                        )?,
                    ))
                })
                .collect::<Result<_, ModelError>>()?;
            Call::Reconcile { tasks }
        }
        Some(C::Acknowledge(a)) => Call::Acknowledge {
            agent_id: AgentId::parse("acknowledge.agent_id", &a.agent_id)?,
            task_id: TaskId::parse("acknowledge.task_id", &a.task_id)?,
            uuid: StatusUuid::from_slice("acknowledge.uuid", &a.uuid)?,
        },
        Some(C::AcknowledgeMany(m)) => {
            check_count(
                "acknowledge_many.acknowledgements",
                m.acknowledgements.len(),
            )?;
            let acks = m
                .acknowledgements
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let field = |f: &str| format!("acknowledge_many.acknowledgements[{i}].{f}");
                    Ok(Acknowledgement {
                        agent_id: AgentId::parse(&field("agent_id"), &a.agent_id)?,
                        task_id: TaskId::parse(&field("task_id"), &a.task_id)?,
                        uuid: StatusUuid::from_slice(&field("uuid"), &a.uuid)?,
                    })
                })
                .collect::<Result<_, ModelError>>()?;
            Call::AcknowledgeMany(acks)
        }
        Some(C::Teardown(_)) => Call::Teardown,
        Some(C::UpdateFramework(u)) => {
            let info = u
                .framework_info
                .as_ref()
                .ok_or_else(|| ModelError::Missing {
                    field: "update_framework.framework_info".into(),
                })?;
            Call::UpdateFramework {
                info: framework_info_from_pb("update_framework.framework_info", info)?,
                suppressed_roles: roles("update_framework.suppressed_roles", &u.suppressed_roles)?,
            }
        }
        Some(C::Shutdown(s)) => Call::Shutdown {
            executor_id: ExecutorId::parse("shutdown.executor_id", &s.executor_id)?,
            agent_id: AgentId::parse("shutdown.agent_id", &s.agent_id)?,
        },
        Some(C::Message(m)) => {
            if m.data.len() > MAX_MESSAGE_DATA {
                return Err(ModelError::InvalidValue {
                    field: "message.data".into(),
                    value: format!("{} bytes", m.data.len()),
                    reason: format!("at most {MAX_MESSAGE_DATA}"),
                });
            }
            Call::Message {
                agent_id: AgentId::parse("message.agent_id", &m.agent_id)?,
                executor_id: ExecutorId::parse("message.executor_id", &m.executor_id)?,
                data: m.data.clone(),
            }
        }
    };
    Ok((framework_id, c.stream_id.clone(), call))
}

pub fn event_to_pb(e: &Event, info: &MasterInfo) -> pb::Event {
    use pb::event::Event as E;
    let event = match e {
        Event::Subscribed {
            framework_id,
            stream_id,
            heartbeat_interval,
        } => E::Subscribed(pb::event::Subscribed {
            framework_id: framework_id.to_string(),
            stream_id: stream_id.clone(),
            heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
            master_info: Some(info.to_pb()),
        }),
        Event::Offers(offers) => E::Offers(pb::event::Offers {
            offers: offers.iter().map(offer_to_pb).collect(),
        }),
        Event::Rescind(id) => E::Rescind(pb::event::Rescind {
            offer_id: id.to_string(),
        }),
        Event::Update(s) => E::Update(pb::event::Update {
            status: Some(task_status_to_pb(s)),
        }),
        Event::Failure {
            agent_id,
            executor_id,
            status,
        } => E::Failure(pb::event::Failure {
            agent_id: agent_id.to_string(),
            executor_id: executor_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            status: *status,
        }),
        Event::Error(message) => E::Error(pb::event::Error {
            message: message.clone(),
        }),
        Event::Heartbeat => E::Heartbeat(pb::event::Heartbeat {}),
        Event::Message {
            agent_id,
            executor_id,
            data,
        } => E::Message(pb::event::Message {
            agent_id: agent_id.to_string(),
            executor_id: executor_id.to_string(),
            data: data.clone(),
        }),
    };
    pb::Event {
        epoch: info.epoch,
        event: Some(event),
    }
}

pub fn agent_command_to_pb(c: &AgentCommand, info: &MasterInfo) -> pb::master_message::Message {
    use pb::master_message::Message as M;
    match c {
        AgentCommand::Registered {
            agent_id,
            heartbeat_interval,
        } => M::Registered(pb::AgentRegistered {
            agent_id: agent_id.to_string(),
            heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
            master_info: Some(info.to_pb()),
        }),
        AgentCommand::RunTask { framework, task } => M::RunTask(pb::RunTask {
            framework: Some(framework_info_to_pb(framework)),
            task: Some(task_info_to_pb(task)),
        }),
        AgentCommand::KillTask {
            framework_id,
            task_id,
            kill_policy,
        } => M::KillTask(pb::KillTask {
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
            kill_policy: kill_policy.as_ref().map(kill_policy_to_pb),
        }),
        AgentCommand::Acknowledge {
            framework_id,
            task_id,
            uuid,
        } => M::Acknowledge(pb::AcknowledgeUpdate {
            framework_id: framework_id.to_string(),
            task_id: task_id.to_string(),
            uuid: uuid.0.to_vec(),
        }),
        AgentCommand::ShutdownFramework { framework_id } => {
            M::ShutdownFramework(pb::ShutdownFramework {
                framework_id: framework_id.to_string(),
            })
        }
        AgentCommand::ShutdownExecutor {
            framework_id,
            executor_id,
        } => M::ShutdownExecutor(pb::ShutdownExecutor {
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
        }),
        AgentCommand::FrameworkMessage {
            framework_id,
            executor_id,
            data,
        } => M::FrameworkMessage(pb::FrameworkMessage {
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
            data: data.clone(),
        }),
    }
}

/// A REGISTER message, converted.
#[derive(Debug)]
pub struct Registration {
    pub agent_id: Option<AgentId>,
    pub info: AgentInfo,
    pub tasks: Vec<ReportedTask>,
    pub frameworks: Vec<FrameworkInfo>,
}

pub fn register_from_pb(r: &pb::RegisterAgent) -> Result<Registration, ModelError> {
    let info = r.info.as_ref().ok_or_else(|| ModelError::Missing {
        field: "register.info".into(),
    })?;
    check_count("register.tasks", r.tasks.len())?;
    check_count("register.frameworks", r.frameworks.len())?;
    let tasks = r
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = format!("register.tasks[{i}]");
            let task = t.task.as_ref().ok_or_else(|| ModelError::Missing {
                field: format!("{f}.task"),
            })?;
            Ok(ReportedTask {
                framework_id: FrameworkId::parse(&format!("{f}.framework_id"), &t.framework_id)?,
                task: task_info_from_pb(&format!("{f}.task"), task)?,
                state: task_state_from_pb(&format!("{f}.state"), t.state)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let frameworks = r
        .frameworks
        .iter()
        .enumerate()
        .map(|(i, f)| framework_info_from_pb(&format!("register.frameworks[{i}]"), f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Registration {
        agent_id: opt_id("register.agent_id", &r.agent_id, AgentId::parse)?,
        info: agent_info_from_pb("register.info", info)?,
        tasks,
        frameworks,
    })
}

pub fn status_update_from_pb(
    u: &pb::StatusUpdate,
) -> Result<(FrameworkId, TaskStatus), ModelError> {
    let status = u.status.as_ref().ok_or_else(|| ModelError::Missing {
        field: "status_update.status".into(),
    })?;
    Ok((
        FrameworkId::parse("status_update.framework_id", &u.framework_id)?,
        task_status_from_pb("status_update.status", status, Source::Agent)?,
    ))
}
