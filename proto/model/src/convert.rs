//! Conversions between `cairn-proto` wire types and the model.
//!
//! `*_from_pb` functions validate: they take untrusted input and return a
//! [`ModelError`] naming the offending field, never panic. `*_to_pb` functions
//! take model values, which are valid by construction.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_proto as pb;

use crate::{
    AgentId, AgentInfo, Attribute, AttributeValue, Capability, CommandInfo, ContainerId,
    ExecutorId, ExecutorInfo, ExecutorUsage, FrameworkId, FrameworkInfo, KillPolicy, ModelError,
    Network, Offer, OfferId, RangeSet, Reason, ResourceName, Resources, Role, Scalar, Source,
    StatusUuid, TaskId, TaskInfo, TaskState, TaskStatus, Time,
};

/// Longest failover timeout accepted (ten years); longer values are clamped.
const MAX_FAILOVER_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Most resources, attributes, labels or environment entries in one message.
pub const MAX_LIST_LEN: usize = 1024;

fn check_len<T>(field: &str, list: &[T]) -> Result<(), ModelError> {
    if list.len() > MAX_LIST_LEN {
        return Err(ModelError::invalid(
            field,
            format!("{} entries", list.len()),
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    Ok(())
}

/// An optional id: empty string means absent.
pub fn opt_id<T>(
    field: &str,
    value: &str,
    parse: impl Fn(&str, &str) -> Result<T, ModelError>,
) -> Result<Option<T>, ModelError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(field, value).map(Some)
    }
}

fn ranges_from_pb(r: &pb::Ranges) -> Result<RangeSet, String> {
    RangeSet::from_ranges(r.ranges.iter().map(|r| (r.begin, r.end)))
}

fn ranges_to_pb(r: &RangeSet) -> pb::Ranges {
    pb::Ranges {
        ranges: r
            .ranges()
            .iter()
            .map(|&(begin, end)| pb::Range { begin, end })
            .collect(),
    }
}

pub fn resources_from_pb(field: &str, list: &[pb::Resource]) -> Result<Resources, ModelError> {
    check_len(field, list)?;
    let mut out = Resources::new();
    // A name has one kind; mixing kinds for one name is refused.
    let mut kinds: Vec<(ResourceName, u8)> = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let name = ResourceName::parse(&r.name)
            .map_err(|e| ModelError::invalid(format!("{f}.name"), &r.name, e))?;
        let kind = match &r.value {
            Some(pb::resource::Value::Scalar(_)) => 0,
            Some(pb::resource::Value::Ranges(_)) => 1,
            Some(pb::resource::Value::Set(_)) => 2,
            None => return Err(ModelError::missing(format!("{f}.value"))),
        };
        match kinds.iter().find(|(n, _)| *n == name) {
            Some((_, k)) if *k != kind => {
                return Err(ModelError::invalid(
                    format!("{f}.value"),
                    &r.name,
                    "a resource name has one kind (scalar, ranges or set)",
                ));
            }
            Some(_) => {}
            None => kinds.push((name.clone(), kind)),
        }
        match &r.value {
            Some(pb::resource::Value::Scalar(v)) => {
                let s = Scalar::from_f64(*v)
                    .map_err(|e| ModelError::invalid(format!("{f}.scalar"), v.to_string(), e))?;
                out.add_scalar(name, s);
            }
            Some(pb::resource::Value::Ranges(rs)) => {
                check_len(&format!("{f}.ranges"), &rs.ranges)?;
                let set = ranges_from_pb(rs)
                    .map_err(|e| ModelError::invalid(format!("{f}.ranges"), "", e))?;
                out = out.with_ranges(name, set);
            }
            Some(pb::resource::Value::Set(s)) => {
                check_len(&format!("{f}.set"), &s.items)?;
                out = out.with_set(name, s.items.iter().cloned().collect());
            }
            None => return Err(ModelError::missing(format!("{f}.value"))),
        }
    }
    Ok(out)
}

pub fn resources_to_pb(r: &Resources) -> Vec<pb::Resource> {
    let mut out = Vec::with_capacity(r.scalars().len() + r.range_entries().len());
    for (n, v) in r.scalars() {
        out.push(pb::Resource {
            name: n.to_string(),
            value: Some(pb::resource::Value::Scalar(v.as_f64())),
        });
    }
    for (n, rs) in r.range_entries() {
        out.push(pb::Resource {
            name: n.to_string(),
            value: Some(pb::resource::Value::Ranges(ranges_to_pb(rs))),
        });
    }
    for (n, s) in r.set_entries() {
        out.push(pb::Resource {
            name: n.to_string(),
            value: Some(pb::resource::Value::Set(pb::ValueSet {
                items: s.iter().cloned().collect(),
            })),
        });
    }
    out
}

pub fn attributes_from_pb(
    field: &str,
    list: &[pb::Attribute],
) -> Result<Vec<Attribute>, ModelError> {
    check_len(field, list)?;
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let f = format!("{field}[{i}]");
            let value = match &a.value {
                Some(pb::attribute::Value::Text(t)) => AttributeValue::Text(t.clone()),
                Some(pb::attribute::Value::Scalar(v)) if v.is_finite() => {
                    AttributeValue::Scalar(*v)
                }
                Some(pb::attribute::Value::Scalar(v)) => {
                    return Err(ModelError::invalid(
                        format!("{f}.scalar"),
                        v.to_string(),
                        "must be finite",
                    ));
                }
                Some(pb::attribute::Value::Ranges(r)) => AttributeValue::Ranges(
                    ranges_from_pb(r)
                        .map_err(|e| ModelError::invalid(format!("{f}.ranges"), "", e))?,
                ),
                Some(pb::attribute::Value::Set(s)) => {
                    AttributeValue::Set(s.items.iter().cloned().collect())
                }
                None => return Err(ModelError::missing(format!("{f}.value"))),
            };
            if a.name.is_empty() {
                return Err(ModelError::missing(format!("{f}.name")));
            }
            Ok(Attribute {
                name: a.name.clone(),
                value,
            })
        })
        .collect()
}

pub fn attributes_to_pb(list: &[Attribute]) -> Vec<pb::Attribute> {
    list.iter()
        .map(|a| pb::Attribute {
            name: a.name.clone(),
            value: Some(match &a.value {
                AttributeValue::Text(t) => pb::attribute::Value::Text(t.clone()),
                AttributeValue::Scalar(v) => pb::attribute::Value::Scalar(*v),
                AttributeValue::Ranges(r) => pb::attribute::Value::Ranges(ranges_to_pb(r)),
                AttributeValue::Set(s) => pb::attribute::Value::Set(pb::ValueSet {
                    items: s.iter().cloned().collect(),
                }),
            }),
        })
        .collect()
}

pub fn capability_from_pb(c: i32) -> Option<Capability> {
    match pb::Capability::try_from(c).ok()? {
        pb::Capability::Unspecified => None,
        pb::Capability::PartitionAware => Some(Capability::PartitionAware),
        pb::Capability::TaskKillingState => Some(Capability::TaskKillingState),
        pb::Capability::MultiRole => Some(Capability::MultiRole),
        pb::Capability::GpuResources => Some(Capability::GpuResources),
        pb::Capability::RevocableResources => Some(Capability::RevocableResources),
    }
}

pub fn capability_to_pb(c: Capability) -> pb::Capability {
    match c {
        Capability::PartitionAware => pb::Capability::PartitionAware,
        Capability::TaskKillingState => pb::Capability::TaskKillingState,
        Capability::MultiRole => pb::Capability::MultiRole,
        Capability::GpuResources => pb::Capability::GpuResources,
        Capability::RevocableResources => pb::Capability::RevocableResources,
    }
}

pub fn framework_info_from_pb(
    field: &str,
    f: &pb::FrameworkInfo,
) -> Result<FrameworkInfo, ModelError> {
    let id = opt_id(&format!("{field}.id"), &f.id, FrameworkId::parse)?;
    if f.name.trim().is_empty() {
        return Err(ModelError::missing(format!("{field}.name")));
    }
    if f.name.len() > 256 {
        return Err(ModelError::invalid(
            format!("{field}.name"),
            "",
            "at most 256 bytes",
        ));
    }
    if f.user.contains('\0') || f.user.contains('/') || f.user.len() > 64 {
        return Err(ModelError::invalid(
            format!("{field}.user"),
            &f.user,
            "not a valid user name",
        ));
    }
    check_len(&format!("{field}.roles"), &f.roles)?;
    let mut roles: Vec<Role> = Vec::new();
    for (i, r) in f.roles.iter().enumerate() {
        let role = Role::parse(&format!("{field}.roles[{i}]"), r)?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        roles.push(Role::default_role());
    }
    let timeout = f.failover_timeout_secs;
    if !timeout.is_finite() || timeout < 0.0 {
        return Err(ModelError::invalid(
            format!("{field}.failover_timeout_secs"),
            timeout.to_string(),
            "must be a finite, non-negative number of seconds",
        ));
    }
    let failover_timeout = Duration::try_from_secs_f64(timeout)
        .unwrap_or(MAX_FAILOVER_TIMEOUT)
        .min(MAX_FAILOVER_TIMEOUT);
    let capabilities: BTreeSet<Capability> = f
        .capabilities
        .iter()
        .filter_map(|c| capability_from_pb(*c))
        .collect();
    Ok(FrameworkInfo {
        id,
        name: f.name.clone(),
        user: f.user.clone(),
        roles,
        failover_timeout,
        capabilities,
        hostname: f.hostname.clone(),
        principal: f.principal.clone(),
        checkpoint: f.checkpoint,
        webui_url: f.webui_url.clone(),
    })
}

pub fn framework_info_to_pb(f: &FrameworkInfo) -> pb::FrameworkInfo {
    pb::FrameworkInfo {
        id: f.id.as_ref().map(ToString::to_string).unwrap_or_default(),
        name: f.name.clone(),
        user: f.user.clone(),
        roles: f.roles.iter().map(ToString::to_string).collect(),
        failover_timeout_secs: f.failover_timeout.as_secs_f64(),
        capabilities: f
            .capabilities
            .iter()
            .map(|c| capability_to_pb(*c) as i32)
            .collect(),
        hostname: f.hostname.clone(),
        principal: f.principal.clone(),
        checkpoint: f.checkpoint,
        webui_url: f.webui_url.clone(),
    }
}

/// A missing command converts to an empty one, which the master's launch
/// validation turns into TASK_ERROR for that task (rather than failing the
/// whole call).
pub fn command_from_pb(
    field: &str,
    c: Option<&pb::CommandInfo>,
) -> Result<CommandInfo, ModelError> {
    let Some(c) = c else {
        return Ok(CommandInfo::shell(""));
    };
    check_len(&format!("{field}.arguments"), &c.arguments)?;
    check_len(&format!("{field}.environment"), &c.environment)?;
    Ok(CommandInfo {
        shell: c.shell.unwrap_or(true),
        value: c.value.clone(),
        arguments: c.arguments.clone(),
        environment: c
            .environment
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        user: (!c.user.is_empty()).then(|| c.user.clone()),
    })
}

pub fn command_to_pb(c: &CommandInfo) -> pb::CommandInfo {
    pb::CommandInfo {
        shell: Some(c.shell),
        value: c.value.clone(),
        arguments: c.arguments.clone(),
        environment: c
            .environment
            .iter()
            .map(|(name, value)| pb::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        user: c.user.clone().unwrap_or_default(),
    }
}

pub fn kill_policy_from_pb(k: Option<&pb::KillPolicy>) -> KillPolicy {
    KillPolicy {
        grace_period: k
            .and_then(|k| k.grace_period_ms)
            .map(|ms| Duration::from_millis(ms.min(24 * 3600 * 1000))),
    }
}

pub fn kill_policy_to_pb(k: &KillPolicy) -> pb::KillPolicy {
    pb::KillPolicy {
        grace_period_ms: k
            .grace_period
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// Largest `TaskInfo.data` accepted (Mesos sets no limit; 1 MiB is far
/// beyond what executors are handed in practice).
const MAX_TASK_DATA: usize = 1024 * 1024;

pub fn task_info_from_pb(field: &str, t: &pb::TaskInfo) -> Result<TaskInfo, ModelError> {
    check_len(&format!("{field}.labels"), &t.labels)?;
    Ok(TaskInfo {
        task_id: TaskId::parse(&format!("{field}.task_id"), &t.task_id)?,
        name: t.name.chars().take(256).collect(),
        agent_id: AgentId::parse(&format!("{field}.agent_id"), &t.agent_id)?,
        resources: resources_from_pb(&format!("{field}.resources"), &t.resources)?,
        command: match (&t.command, &t.executor) {
            (None, Some(_)) => CommandInfo::shell(""),
            (c, _) => command_from_pb(&format!("{field}.command"), c.as_ref())?,
        },
        executor: t
            .executor
            .as_ref()
            .map(|e| {
                Ok::<_, ModelError>(ExecutorInfo {
                    executor_id: ExecutorId::parse(
                        &format!("{field}.executor.executor_id"),
                        &e.executor_id,
                    )?,
                    name: e.name.chars().take(256).collect(),
                    command: command_from_pb(
                        &format!("{field}.executor.command"),
                        e.command.as_ref(),
                    )?,
                })
            })
            .transpose()?,
        data: {
            if t.data.len() > MAX_TASK_DATA {
                return Err(ModelError::invalid(
                    format!("{field}.data"),
                    format!("{} bytes", t.data.len()),
                    format!("at most {MAX_TASK_DATA}"),
                ));
            }
            t.data.clone()
        },
        kill_policy: kill_policy_from_pb(t.kill_policy.as_ref()),
        labels: t
            .labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect(),
        network: match pb::NetworkMode::try_from(t.network) {
            Ok(pb::NetworkMode::NetworkHost) => Network::Host,
            Ok(pb::NetworkMode::NetworkNone) => Network::None,
            Err(_) => {
                return Err(ModelError::invalid(
                    format!("{field}.network"),
                    t.network.to_string(),
                    "unknown network mode",
                ));
            }
        },
    })
}

pub fn task_info_to_pb(t: &TaskInfo) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: t.task_id.to_string(),
        name: t.name.clone(),
        agent_id: t.agent_id.to_string(),
        resources: resources_to_pb(&t.resources),
        command: t.executor.is_none().then(|| command_to_pb(&t.command)),
        executor: t.executor.as_ref().map(|e| pb::ExecutorInfo {
            executor_id: e.executor_id.to_string(),
            name: e.name.clone(),
            command: Some(command_to_pb(&e.command)),
        }),
        data: t.data.clone(),
        kill_policy: Some(kill_policy_to_pb(&t.kill_policy)),
        labels: t
            .labels
            .iter()
            .map(|(key, value)| pb::Label {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        network: match t.network {
            Network::Host => pb::NetworkMode::NetworkHost,
            Network::None => pb::NetworkMode::NetworkNone,
        } as i32,
    }
}

pub fn task_state_from_pb(field: &str, s: i32) -> Result<TaskState, ModelError> {
    use pb::TaskState as P;
    let p = P::try_from(s)
        .map_err(|_| ModelError::invalid(field, s.to_string(), "unknown task state"))?;
    Ok(match p {
        P::Unspecified => return Err(ModelError::missing(field)),
        P::TaskStaging => TaskState::Staging,
        P::TaskStarting => TaskState::Starting,
        P::TaskRunning => TaskState::Running,
        P::TaskKilling => TaskState::Killing,
        P::TaskFinished => TaskState::Finished,
        P::TaskFailed => TaskState::Failed,
        P::TaskKilled => TaskState::Killed,
        P::TaskError => TaskState::Error,
        P::TaskLost => TaskState::Lost,
        P::TaskDropped => TaskState::Dropped,
        P::TaskUnreachable => TaskState::Unreachable,
        P::TaskGone => TaskState::Gone,
        P::TaskGoneByOperator => TaskState::GoneByOperator,
        P::TaskUnknown => TaskState::Unknown,
    })
}

pub fn task_state_to_pb(s: TaskState) -> pb::TaskState {
    use pb::TaskState as P;
    match s {
        TaskState::Staging => P::TaskStaging,
        TaskState::Starting => P::TaskStarting,
        TaskState::Running => P::TaskRunning,
        TaskState::Killing => P::TaskKilling,
        TaskState::Finished => P::TaskFinished,
        TaskState::Failed => P::TaskFailed,
        TaskState::Killed => P::TaskKilled,
        TaskState::Error => P::TaskError,
        TaskState::Lost => P::TaskLost,
        TaskState::Dropped => P::TaskDropped,
        TaskState::Unreachable => P::TaskUnreachable,
        TaskState::Gone => P::TaskGone,
        TaskState::GoneByOperator => P::TaskGoneByOperator,
        TaskState::Unknown => P::TaskUnknown,
    }
}

pub fn reason_from_pb(r: i32) -> Option<Reason> {
    use pb::Reason as P;
    Some(match P::try_from(r).ok()? {
        P::Unspecified => return None,
        P::CommandExecutorFailed => Reason::CommandExecutorFailed,
        P::ContainerLaunchFailed => Reason::ContainerLaunchFailed,
        P::ContainerLimitation => Reason::ContainerLimitation,
        P::ContainerLimitationDisk => Reason::ContainerLimitationDisk,
        P::ContainerLimitationMemory => Reason::ContainerLimitationMemory,
        P::ExecutorTerminated => Reason::ExecutorTerminated,
        P::FrameworkRemoved => Reason::FrameworkRemoved,
        P::InvalidOffers => Reason::InvalidOffers,
        P::Reconciliation => Reason::Reconciliation,
        P::AgentDisconnected => Reason::AgentDisconnected,
        P::AgentRemoved => Reason::AgentRemoved,
        P::AgentRestarted => Reason::AgentRestarted,
        P::AgentUnknown => Reason::AgentUnknown,
        P::TaskInvalid => Reason::TaskInvalid,
        P::TaskUnauthorized => Reason::TaskUnauthorized,
        P::TaskUnknown => Reason::TaskUnknown,
        P::TaskKilledDuringLaunch => Reason::TaskKilledDuringLaunch,
        P::MaxCompletionTimeReached => Reason::MaxCompletionTimeReached,
        P::AgentReregistered => Reason::AgentReregistered,
        P::ExecutorRegistrationTimeout => Reason::ExecutorRegistrationTimeout,
        P::TaskHealthCheckStatusUpdated => Reason::TaskHealthCheckStatusUpdated,
        P::ContainerLimitationPids => Reason::ContainerLimitationPids,
        P::ExecutorReregistrationTimeout => Reason::ExecutorReregistrationTimeout,
    })
}

pub fn reason_to_pb(r: Reason) -> pb::Reason {
    use pb::Reason as P;
    match r {
        Reason::CommandExecutorFailed => P::CommandExecutorFailed,
        Reason::ContainerLaunchFailed => P::ContainerLaunchFailed,
        Reason::ContainerLimitation => P::ContainerLimitation,
        Reason::ContainerLimitationDisk => P::ContainerLimitationDisk,
        Reason::ContainerLimitationMemory => P::ContainerLimitationMemory,
        Reason::ExecutorTerminated => P::ExecutorTerminated,
        Reason::FrameworkRemoved => P::FrameworkRemoved,
        Reason::InvalidOffers => P::InvalidOffers,
        Reason::Reconciliation => P::Reconciliation,
        Reason::AgentDisconnected => P::AgentDisconnected,
        Reason::AgentRemoved => P::AgentRemoved,
        Reason::AgentRestarted => P::AgentRestarted,
        Reason::AgentUnknown => P::AgentUnknown,
        Reason::TaskInvalid => P::TaskInvalid,
        Reason::TaskUnauthorized => P::TaskUnauthorized,
        Reason::TaskUnknown => P::TaskUnknown,
        Reason::TaskKilledDuringLaunch => P::TaskKilledDuringLaunch,
        Reason::MaxCompletionTimeReached => P::MaxCompletionTimeReached,
        Reason::AgentReregistered => P::AgentReregistered,
        Reason::ExecutorRegistrationTimeout => P::ExecutorRegistrationTimeout,
        Reason::TaskHealthCheckStatusUpdated => P::TaskHealthCheckStatusUpdated,
        Reason::ContainerLimitationPids => P::ContainerLimitationPids,
        Reason::ExecutorReregistrationTimeout => P::ExecutorReregistrationTimeout,
    }
}

pub fn source_from_pb(s: i32) -> Option<Source> {
    match pb::Source::try_from(s).ok()? {
        pb::Source::Unspecified => None,
        pb::Source::Master => Some(Source::Master),
        pb::Source::Agent => Some(Source::Agent),
        pb::Source::Executor => Some(Source::Executor),
    }
}

pub fn source_to_pb(s: Source) -> pb::Source {
    match s {
        Source::Master => pb::Source::Master,
        Source::Agent => pb::Source::Agent,
        Source::Executor => pb::Source::Executor,
    }
}

/// `default_source` is used when the sender left the source unset (executors
/// written against the Mesos API often do).
pub fn task_status_from_pb(
    field: &str,
    s: &pb::TaskStatus,
    default_source: Source,
) -> Result<TaskStatus, ModelError> {
    let uuid = if s.uuid.is_empty() {
        None
    } else {
        Some(StatusUuid::from_slice(&format!("{field}.uuid"), &s.uuid)?)
    };
    let timestamp = if s.timestamp == 0.0 {
        Time::ZERO
    } else {
        Time::from_unix_secs_f64(s.timestamp).ok_or_else(|| {
            ModelError::invalid(
                format!("{field}.timestamp"),
                s.timestamp.to_string(),
                "not a valid time",
            )
        })?
    };
    Ok(TaskStatus {
        task_id: TaskId::parse(&format!("{field}.task_id"), &s.task_id)?,
        state: task_state_from_pb(&format!("{field}.state"), s.state)?,
        message: s.message.chars().take(4096).collect(),
        source: source_from_pb(s.source).unwrap_or(default_source),
        reason: reason_from_pb(s.reason),
        agent_id: opt_id(&format!("{field}.agent_id"), &s.agent_id, AgentId::parse)?,
        executor_id: opt_id(
            &format!("{field}.executor_id"),
            &s.executor_id,
            ExecutorId::parse,
        )?,
        timestamp,
        uuid,
        exit_code: s.exit_code,
        healthy: s.healthy,
    })
}

pub fn task_status_to_pb(s: &TaskStatus) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: s.task_id.to_string(),
        state: task_state_to_pb(s.state) as i32,
        message: s.message.clone(),
        source: source_to_pb(s.source) as i32,
        reason: s.reason.map_or(pb::Reason::Unspecified, reason_to_pb) as i32,
        agent_id: s
            .agent_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        executor_id: s
            .executor_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        timestamp: s.timestamp.as_unix_secs_f64(),
        uuid: s.uuid.map(|u| u.0.to_vec()).unwrap_or_default(),
        exit_code: s.exit_code,
        healthy: s.healthy,
    }
}

pub fn agent_info_from_pb(field: &str, a: &pb::AgentInfo) -> Result<AgentInfo, ModelError> {
    if a.hostname.is_empty() || a.hostname.len() > 255 {
        return Err(ModelError::invalid(
            format!("{field}.hostname"),
            &a.hostname,
            "a hostname has 1 to 255 characters",
        ));
    }
    if a.address.is_empty() || a.address.len() > 255 || !a.address.contains(':') {
        return Err(ModelError::invalid(
            format!("{field}.address"),
            &a.address,
            "expected host:port",
        ));
    }
    Ok(AgentInfo {
        hostname: a.hostname.clone(),
        address: a.address.clone(),
        resources: resources_from_pb(&format!("{field}.resources"), &a.resources)?,
        attributes: attributes_from_pb(&format!("{field}.attributes"), &a.attributes)?,
        tls: a.tls,
    })
}

pub fn agent_info_to_pb(a: &AgentInfo) -> pb::AgentInfo {
    pb::AgentInfo {
        hostname: a.hostname.clone(),
        address: a.address.clone(),
        resources: resources_to_pb(&a.resources),
        attributes: attributes_to_pb(&a.attributes),
        tls: a.tls,
    }
}

pub fn offer_to_pb(o: &Offer) -> pb::Offer {
    pb::Offer {
        id: o.id.to_string(),
        framework_id: o.framework_id.to_string(),
        agent_id: o.agent_id.to_string(),
        hostname: o.hostname.clone(),
        resources: resources_to_pb(&o.resources),
        attributes: attributes_to_pb(&o.attributes),
        role: o.role.to_string(),
        agent_url: o.agent_url.clone(),
    }
}

pub fn offer_from_pb(field: &str, o: &pb::Offer) -> Result<Offer, ModelError> {
    Ok(Offer {
        id: OfferId::parse(&format!("{field}.id"), &o.id)?,
        framework_id: FrameworkId::parse(&format!("{field}.framework_id"), &o.framework_id)?,
        agent_id: AgentId::parse(&format!("{field}.agent_id"), &o.agent_id)?,
        hostname: o.hostname.clone(),
        resources: resources_from_pb(&format!("{field}.resources"), &o.resources)?,
        attributes: attributes_from_pb(&format!("{field}.attributes"), &o.attributes)?,
        role: Role::parse(&format!("{field}.role"), &o.role)?,
        agent_url: o.agent_url.clone(),
    })
}

fn finite(field: &str, v: f64) -> Result<f64, ModelError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(ModelError::invalid(
            field,
            v.to_string(),
            "must be finite and non-negative",
        ))
    }
}

pub fn usage_from_pb(field: &str, u: &pb::ExecutorUsage) -> Result<ExecutorUsage, ModelError> {
    Ok(ExecutorUsage {
        framework_id: FrameworkId::parse(&format!("{field}.framework_id"), &u.framework_id)?,
        executor_id: ExecutorId::parse(&format!("{field}.executor_id"), &u.executor_id)?,
        container_id: ContainerId::parse(&format!("{field}.container_id"), &u.container_id)?,
        timestamp: Time::from_unix_secs_f64(u.timestamp).unwrap_or(Time::ZERO),
        cpus_limit: finite(&format!("{field}.cpus_limit"), u.cpus_limit)?,
        cpus_user_time_secs: finite(
            &format!("{field}.cpus_user_time_secs"),
            u.cpus_user_time_secs,
        )?,
        cpus_system_time_secs: finite(
            &format!("{field}.cpus_system_time_secs"),
            u.cpus_system_time_secs,
        )?,
        cpus_nr_periods: u.cpus_nr_periods,
        cpus_nr_throttled: u.cpus_nr_throttled,
        cpus_throttled_time_secs: finite(
            &format!("{field}.cpus_throttled_time_secs"),
            u.cpus_throttled_time_secs,
        )?,
        mem_rss_bytes: u.mem_rss_bytes,
        mem_total_bytes: u.mem_total_bytes,
        mem_limit_bytes: u.mem_limit_bytes,
        processes: u.processes,
        pids_limit_hits: u.pids_limit_hits,
    })
}

pub fn usage_to_pb(u: &ExecutorUsage) -> pb::ExecutorUsage {
    pb::ExecutorUsage {
        framework_id: u.framework_id.to_string(),
        executor_id: u.executor_id.to_string(),
        container_id: u.container_id.to_string(),
        timestamp: u.timestamp.as_unix_secs_f64(),
        cpus_limit: u.cpus_limit,
        cpus_user_time_secs: u.cpus_user_time_secs,
        cpus_system_time_secs: u.cpus_system_time_secs,
        cpus_nr_periods: u.cpus_nr_periods,
        cpus_nr_throttled: u.cpus_nr_throttled,
        cpus_throttled_time_secs: u.cpus_throttled_time_secs,
        mem_rss_bytes: u.mem_rss_bytes,
        mem_total_bytes: u.mem_total_bytes,
        mem_limit_bytes: u.mem_limit_bytes,
        processes: u.processes,
        pids_limit_hits: u.pids_limit_hits,
    }
}

/// Refuse-seconds from `Filters`: default 5 s, capped at 365 days, negative or
/// NaN refused.
pub fn refuse_from_pb(field: &str, f: Option<&pb::Filters>) -> Result<Duration, ModelError> {
    const DEFAULT: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(365 * 24 * 3600);
    match f.and_then(|f| f.refuse_seconds) {
        None => Ok(DEFAULT),
        Some(s) if s.is_finite() && s >= 0.0 => {
            Ok(Duration::try_from_secs_f64(s).unwrap_or(MAX).min(MAX))
        }
        Some(s) => Err(ModelError::invalid(
            format!("{field}.refuse_seconds"),
            s.to_string(),
            "must be a finite, non-negative number of seconds",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_nan_resources_are_refused_with_the_field_path() {
        let bad = vec![
            pb::Resource {
                name: "cpus".into(),
                value: Some(pb::resource::Value::Scalar(1.0)),
            },
            pb::Resource {
                name: "mem".into(),
                value: Some(pb::resource::Value::Scalar(f64::NAN)),
            },
        ];
        let err = resources_from_pb("task.resources", &bad).unwrap_err();
        assert!(
            err.to_string().contains("task.resources[1].scalar"),
            "{err}"
        );
        let neg = vec![pb::Resource {
            name: "cpus".into(),
            value: Some(pb::resource::Value::Scalar(-0.5)),
        }];
        assert!(resources_from_pb("r", &neg).is_err());
    }

    #[test]
    fn a_name_with_two_kinds_is_refused() {
        let mixed = vec![
            pb::Resource {
                name: "ports".into(),
                value: Some(pb::resource::Value::Scalar(1.0)),
            },
            pb::Resource {
                name: "ports".into(),
                value: Some(pb::resource::Value::Ranges(pb::Ranges::default())),
            },
        ];
        assert!(resources_from_pb("r", &mixed).is_err());
    }

    #[test]
    fn task_status_round_trips() {
        let s = TaskStatus {
            task_id: TaskId::new("t1"),
            state: TaskState::Failed,
            message: "Command exited with status 3".into(),
            source: Source::Executor,
            reason: Some(Reason::CommandExecutorFailed),
            agent_id: Some(AgentId::new("a1")),
            executor_id: Some(ExecutorId::new("t1")),
            timestamp: Time::from_micros(1_700_000_000_000_000),
            uuid: Some(StatusUuid([7; 16])),
            exit_code: Some(3),
            healthy: None,
        };
        let back = task_status_from_pb("s", &task_status_to_pb(&s), Source::Agent).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn framework_info_defaults_role_and_refuses_bad_timeout() {
        let mut f = pb::FrameworkInfo {
            name: "fw".into(),
            user: "nobody".into(),
            ..Default::default()
        };
        let info = framework_info_from_pb("framework_info", &f).unwrap();
        assert_eq!(info.roles, vec![Role::default_role()]);
        f.failover_timeout_secs = f64::NAN;
        assert!(framework_info_from_pb("framework_info", &f).is_err());
        f.failover_timeout_secs = 1.0;
        f.name = String::new();
        assert!(framework_info_from_pb("framework_info", &f).is_err());
    }

    #[test]
    fn refuse_seconds_default_cap_and_reject() {
        assert_eq!(refuse_from_pb("f", None).unwrap(), Duration::from_secs(5));
        let huge = pb::Filters {
            refuse_seconds: Some(1e30),
        };
        assert_eq!(
            refuse_from_pb("f", Some(&huge)).unwrap(),
            Duration::from_secs(365 * 24 * 3600)
        );
        let neg = pb::Filters {
            refuse_seconds: Some(-1.0),
        };
        assert!(refuse_from_pb("f", Some(&neg)).is_err());
    }
}
