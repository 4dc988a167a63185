//! Mesos v1 JSON (stout's mapping) to Cairn's wire messages and back.
//!
//! The Mesos door converts a call to the same `pb::SchedulerCall` the gRPC
//! door receives, and formats the same `pb::Event` the gRPC door sends, so
//! both reach one core through one set of checks (`convert.rs`). Parsing is
//! lenient as Mesos's is: unknown keys are ignored, integers are accepted
//! where doubles are expected (and `"Infinity"`-style strings), enums are
//! names. A value of the wrong type, or a required field missing, is an
//! error naming the field.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_proto as pb;
use serde_json::{Map, Value, json};

pub use cairn_model::mesos_json::{
    ascii_json, attribute_json, id_json, ranges_json, record, resource_json, task_status_json,
};

use crate::driver::MasterInfo;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MesosJsonError {
    #[error("Missing required fields: {0}")]
    Missing(String),
    #[error("Field '{field}': {reason}")]
    Invalid { field: String, reason: String },
}

type Result<T> = std::result::Result<T, MesosJsonError>;

fn invalid(field: &str, reason: impl Into<String>) -> MesosJsonError {
    MesosJsonError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn obj<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(field, "expected an object"))
}

/// `v[key]`, if present and not null.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn req<'a>(v: &'a Value, key: &str, field: &str) -> Result<&'a Value> {
    get(v, key).ok_or_else(|| MesosJsonError::Missing(format!("{field}.{key}")))
}

fn string(v: &Value, field: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(field, "expected a string"))
}

fn opt_string(v: &Value, key: &str, field: &str) -> Result<String> {
    get(v, key)
        .map(|x| string(x, &format!("{field}.{key}")))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A number: JSON numbers, and the strings stout accepts for doubles.
fn number(v: &Value, field: &str) -> Result<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| invalid(field, "not a number")),
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            "NaN" | "nan" => Ok(f64::NAN),
            other => other
                .parse()
                .map_err(|_| invalid(field, format!("{other:?} is not a number"))),
        },
        _ => Err(invalid(field, "expected a number")),
    }
}

fn uint(v: &Value, field: &str) -> Result<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid(field, "expected a non-negative integer")),
        Value::String(s) => s
            .parse()
            .map_err(|_| invalid(field, format!("{s:?} is not an integer"))),
        _ => Err(invalid(field, "expected an integer")),
    }
}

fn boolean(v: &Value, field: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| invalid(field, "expected true or false"))
}

fn array<'a>(v: &'a Value, key: &str, field: &str) -> Result<&'a [Value]> {
    match get(v, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(invalid(&format!("{field}.{key}"), "expected an array")),
    }
}

/// An id object `{"value": "..."}`.
fn id(v: &Value, field: &str) -> Result<String> {
    obj(v, field)?;
    string(req(v, "value", field)?, &format!("{field}.value"))
}

fn opt_id(v: &Value, key: &str, field: &str) -> Result<String> {
    get(v, key)
        .map(|x| id(x, &format!("{field}.{key}")))
        .transpose()
        .map(Option::unwrap_or_default)
}

// ---------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------

/// A scheduler call, converted.
#[derive(Debug, PartialEq)]
pub enum SchedulerCall {
    Subscribe(pb::SubscribeRequest),
    /// Any other call Cairn acts on; `stream_id` is filled in by the door.
    /// `malformed`: tasks of an ACCEPT that could not be converted, as
    /// (task id, reason), answered with TASK_ERROR by the core.
    Call {
        call: pb::SchedulerCall,
        malformed: Vec<(String, String)>,
    },
    /// Well-formed and accepted, with nothing to do (REQUEST: the allocator
    /// does not take resource requests, as Mesos's default one does not).
    Ignored(String),
}

impl SchedulerCall {
    pub fn type_name(&self) -> &str {
        match self {
            SchedulerCall::Subscribe(_) => "SUBSCRIBE",
            SchedulerCall::Call { call: c, .. } => match &c.call {
                Some(pb::scheduler_call::Call::Accept(_)) => "ACCEPT",
                Some(pb::scheduler_call::Call::Decline(_)) => "DECLINE",
                Some(pb::scheduler_call::Call::Revive(_)) => "REVIVE",
                Some(pb::scheduler_call::Call::Suppress(_)) => "SUPPRESS",
                Some(pb::scheduler_call::Call::Kill(_)) => "KILL",
                Some(pb::scheduler_call::Call::Reconcile(_)) => "RECONCILE",
                Some(pb::scheduler_call::Call::Acknowledge(_)) => "ACKNOWLEDGE",
                // Native only: no Mesos JSON call decodes to it.
                Some(pb::scheduler_call::Call::AcknowledgeMany(_)) => "ACKNOWLEDGE_MANY",
                Some(pb::scheduler_call::Call::Teardown(_)) => "TEARDOWN",
                Some(pb::scheduler_call::Call::Shutdown(_)) => "SHUTDOWN",
                Some(pb::scheduler_call::Call::Message(_)) => "MESSAGE",
                Some(pb::scheduler_call::Call::UpdateFramework(_)) => "UPDATE_FRAMEWORK",
                None => "UNKNOWN",
            },
            SchedulerCall::Ignored(t) => t,
        }
    }
}

/// Calls Mesos defines that Cairn does not act on yet.
/// Calls about things Cairn never creates: inverse offers (no maintenance
/// schedules) and operation feedback (only LAUNCH, which has none). Any id
/// they name is unknown; Mesos ignores unknown ones, and so does Cairn.
const NOTHING_TO_DO: &[&str] = &[
    "REQUEST",
    "ACCEPT_INVERSE_OFFERS",
    "DECLINE_INVERSE_OFFERS",
    "ACKNOWLEDGE_OPERATION_STATUS",
    "RECONCILE_OPERATIONS",
];

/// Parses a `mesos.v1.scheduler.Call`.
pub fn scheduler_call(v: &Value) -> Result<SchedulerCall> {
    use pb::scheduler_call::Call as C;
    obj(v, "call")?;
    let ty = string(req(v, "type", "call")?, "call.type")?;
    if ty == "SUBSCRIBE" {
        let sub = req(v, "subscribe", "call")?;
        let info = framework_info(
            req(sub, "framework_info", "subscribe")?,
            "subscribe.framework_info",
        )?;
        let suppressed_roles = array(sub, "suppressed_roles", "subscribe")?
            .iter()
            .enumerate()
            .map(|(i, r)| string(r, &format!("subscribe.suppressed_roles[{i}]")))
            .collect::<Result<_>>()?;
        return Ok(SchedulerCall::Subscribe(pb::SubscribeRequest {
            framework_info: Some(info),
            suppressed_roles,
        }));
    }
    let framework_id = id(req(v, "framework_id", "call")?, "call.framework_id")?;
    let body = |key: &str| get(v, key).cloned().unwrap_or_else(|| json!({}));
    let mut malformed = Vec::new();
    let call = match ty.as_str() {
        "TEARDOWN" => C::Teardown(pb::scheduler_call::Teardown {}),
        "ACCEPT" => {
            let a = body("accept");
            let mut operations = Vec::new();
            for (i, op) in array(&a, "operations", "accept")?.iter().enumerate() {
                operations.push(operation(
                    op,
                    &format!("accept.operations[{i}]"),
                    &mut malformed,
                )?);
            }
            C::Accept(pb::scheduler_call::Accept {
                offer_ids: ids(&a, "offer_ids", "accept")?,
                operations,
                filters: filters(&a, "accept")?,
            })
        }
        "DECLINE" => {
            let d = body("decline");
            C::Decline(pb::scheduler_call::Decline {
                offer_ids: ids(&d, "offer_ids", "decline")?,
                filters: filters(&d, "decline")?,
            })
        }
        "REVIVE" => C::Revive(pb::scheduler_call::Revive {
            roles: roles(&body("revive"), "revive")?,
        }),
        "SUPPRESS" => C::Suppress(pb::scheduler_call::Suppress {
            roles: roles(&body("suppress"), "suppress")?,
        }),
        "KILL" => {
            let k = req(v, "kill", "call")?;
            C::Kill(pb::scheduler_call::Kill {
                task_id: id(req(k, "task_id", "kill")?, "kill.task_id")?,
                agent_id: opt_id(k, "agent_id", "kill")?,
                kill_policy: get(k, "kill_policy")
                    .map(|p| kill_policy(p, "kill.kill_policy"))
                    .transpose()?,
            })
        }
        "RECONCILE" => {
            let r = body("reconcile");
            let tasks = array(&r, "tasks", "reconcile")?
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let f = format!("reconcile.tasks[{i}]");
                    Ok(pb::scheduler_call::reconcile::Task {
                        task_id: id(req(t, "task_id", &f)?, &format!("{f}.task_id"))?,
                        agent_id: opt_id(t, "agent_id", &f)?,
                    })
                })
                .collect::<Result<_>>()?;
            C::Reconcile(pb::scheduler_call::Reconcile { tasks })
        }
        "ACKNOWLEDGE" => {
            let a = req(v, "acknowledge", "call")?;
            let uuid = string(req(a, "uuid", "acknowledge")?, "acknowledge.uuid")?;
            let uuid = B64
                .decode(uuid.as_bytes())
                .map_err(|e| invalid("acknowledge.uuid", format!("not base64: {e}")))?;
            if uuid.len() != 16 {
                return Err(invalid(
                    "acknowledge.uuid",
                    format!("{} bytes; a status uuid is 16", uuid.len()),
                ));
            }
            C::Acknowledge(pb::scheduler_call::Acknowledge {
                agent_id: id(req(a, "agent_id", "acknowledge")?, "acknowledge.agent_id")?,
                task_id: id(req(a, "task_id", "acknowledge")?, "acknowledge.task_id")?,
                uuid,
            })
        }
        "UPDATE_FRAMEWORK" => {
            let u = req(v, "update_framework", "call")?;
            let info = framework_info(
                req(u, "framework_info", "update_framework")?,
                "update_framework.framework_info",
            )?;
            let suppressed_roles = array(u, "suppressed_roles", "update_framework")?
                .iter()
                .enumerate()
                .map(|(i, r)| string(r, &format!("update_framework.suppressed_roles[{i}]")))
                .collect::<Result<_>>()?;
            C::UpdateFramework(pb::scheduler_call::UpdateFramework {
                framework_info: Some(info),
                suppressed_roles,
            })
        }
        "SHUTDOWN" => {
            let sh = req(v, "shutdown", "call")?;
            C::Shutdown(pb::scheduler_call::Shutdown {
                executor_id: id(req(sh, "executor_id", "shutdown")?, "shutdown.executor_id")?,
                agent_id: id(req(sh, "agent_id", "shutdown")?, "shutdown.agent_id")?,
            })
        }
        "MESSAGE" => {
            let m = req(v, "message", "call")?;
            let data = string(req(m, "data", "message")?, "message.data")?;
            C::Message(pb::scheduler_call::Message {
                agent_id: id(req(m, "agent_id", "message")?, "message.agent_id")?,
                executor_id: id(req(m, "executor_id", "message")?, "message.executor_id")?,
                data: B64
                    .decode(data.as_bytes())
                    .map_err(|e| invalid("message.data", format!("not base64: {e}")))?,
            })
        }
        t if NOTHING_TO_DO.contains(&t) => return Ok(SchedulerCall::Ignored(ty)),
        other => return Err(invalid("call.type", format!("unknown call type {other:?}"))),
    };
    Ok(SchedulerCall::Call {
        call: pb::SchedulerCall {
            framework_id,
            stream_id: String::new(),
            seq: 0,
            call: Some(call),
        },
        malformed,
    })
}

fn ids(v: &Value, key: &str, field: &str) -> Result<Vec<String>> {
    array(v, key, field)?
        .iter()
        .enumerate()
        .map(|(i, x)| id(x, &format!("{field}.{key}[{i}]")))
        .collect()
}

fn roles(v: &Value, field: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = array(v, "roles", field)?
        .iter()
        .enumerate()
        .map(|(i, r)| string(r, &format!("{field}.roles[{i}]")))
        .collect::<Result<_>>()?;
    // The docs' singular `role` (older clients send it).
    if let Some(r) = get(v, "role") {
        out.push(string(r, &format!("{field}.role"))?);
    }
    Ok(out)
}

fn filters(v: &Value, field: &str) -> Result<Option<pb::Filters>> {
    get(v, "filters")
        .map(|f| {
            Ok(pb::Filters {
                refuse_seconds: get(f, "refuse_seconds")
                    .map(|r| number(r, &format!("{field}.filters.refuse_seconds")))
                    .transpose()?,
            })
        })
        .transpose()
}

fn kill_policy(v: &Value, field: &str) -> Result<pb::KillPolicy> {
    let grace_period_ms = get(v, "grace_period")
        .map(|g| {
            let f = format!("{field}.grace_period.nanoseconds");
            let ns = number(req(g, "nanoseconds", &format!("{field}.grace_period"))?, &f)?;
            if !ns.is_finite() || ns < 0.0 {
                return Err(invalid(&f, "must be a non-negative number"));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok((ns / 1e6).round() as u64)
        })
        .transpose()?;
    Ok(pb::KillPolicy { grace_period_ms })
}

/// A LAUNCH operation. A task that cannot be converted but has an id goes
/// to `malformed`, to be answered with TASK_ERROR; one without an id makes
/// the call malformed (there is no task to answer for).
fn operation(
    v: &Value,
    field: &str,
    malformed: &mut Vec<(String, String)>,
) -> Result<pb::Operation> {
    let ty = string(req(v, "type", field)?, &format!("{field}.type"))?;
    match ty.as_str() {
        "LAUNCH" => {
            let l = req(v, "launch", field)?;
            let mut tasks = Vec::new();
            for (i, t) in array(l, "task_infos", &format!("{field}.launch"))?
                .iter()
                .enumerate()
            {
                match task_info(t, &format!("{field}.launch.task_infos[{i}]")) {
                    Ok(task) => tasks.push(task),
                    Err(e) => match failed_task_id(t) {
                        Some(task_id) => malformed.push((task_id, e.to_string())),
                        None => return Err(e),
                    },
                }
            }
            Ok(pb::Operation {
                operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                    tasks,
                })),
            })
        }
        other => Err(invalid(
            &format!("{field}.type"),
            format!("operation {other} is not supported (only LAUNCH)"),
        )),
    }
}

/// The capabilities Cairn knows, by Mesos name.
fn capability(name: &str) -> Option<pb::Capability> {
    pb::Capability::from_str_name(&format!("CAPABILITY_{name}"))
}

pub fn framework_info(v: &Value, field: &str) -> Result<pb::FrameworkInfo> {
    obj(v, field)?;
    let mut roles = array(v, "roles", field)?
        .iter()
        .enumerate()
        .map(|(i, r)| string(r, &format!("{field}.roles[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    if roles.is_empty()
        && let Some(r) = get(v, "role")
    {
        roles.push(string(r, &format!("{field}.role"))?);
    }
    let capabilities = array(v, "capabilities", field)?
        .iter()
        .filter_map(|c| get(c, "type").and_then(Value::as_str).and_then(capability))
        .map(|c| c as i32)
        .collect();
    Ok(pb::FrameworkInfo {
        id: opt_id(v, "id", field)?,
        name: string(req(v, "name", field)?, &format!("{field}.name"))?,
        user: string(req(v, "user", field)?, &format!("{field}.user"))?,
        roles,
        failover_timeout_secs: get(v, "failover_timeout")
            .map(|f| number(f, &format!("{field}.failover_timeout")))
            .transpose()?
            .unwrap_or(0.0),
        capabilities,
        hostname: opt_string(v, "hostname", field)?,
        principal: opt_string(v, "principal", field)?,
        checkpoint: get(v, "checkpoint")
            .map(|c| boolean(c, &format!("{field}.checkpoint")))
            .transpose()?
            .unwrap_or(false),
        webui_url: opt_string(v, "webui_url", field)?,
    })
}

fn ranges(v: &Value, field: &str) -> Result<pb::Ranges> {
    let ranges = array(v, "range", field)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("{field}.range[{i}]");
            Ok(pb::Range {
                begin: uint(req(r, "begin", &f)?, &format!("{f}.begin"))?,
                end: uint(req(r, "end", &f)?, &format!("{f}.end"))?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(pb::Ranges { ranges })
}

fn set(v: &Value, field: &str) -> Result<pb::ValueSet> {
    let items = array(v, "item", field)?
        .iter()
        .enumerate()
        .map(|(i, x)| string(x, &format!("{field}.item[{i}]")))
        .collect::<Result<_>>()?;
    Ok(pb::ValueSet { items })
}

fn resource(v: &Value, field: &str) -> Result<pb::Resource> {
    use pb::resource::Value as R;
    let name = string(req(v, "name", field)?, &format!("{field}.name"))?;
    let ty = get(v, "type").and_then(Value::as_str);
    let value = match (ty, get(v, "scalar"), get(v, "ranges"), get(v, "set")) {
        (Some("SCALAR") | None, Some(s), _, _) => R::Scalar(number(
            req(s, "value", &format!("{field}.scalar"))?,
            &format!("{field}.scalar.value"),
        )?),
        (Some("RANGES") | None, _, Some(r), _) => R::Ranges(ranges(r, &format!("{field}.ranges"))?),
        (Some("SET") | None, _, _, Some(s)) => R::Set(set(s, &format!("{field}.set"))?),
        _ => {
            return Err(invalid(
                field,
                "needs a type (SCALAR, RANGES or SET) and its value",
            ));
        }
    };
    Ok(pb::Resource {
        name,
        value: Some(value),
    })
}

fn resources(v: &Value, key: &str, field: &str) -> Result<Vec<pb::Resource>> {
    array(v, key, field)?
        .iter()
        .enumerate()
        .map(|(i, r)| resource(r, &format!("{field}.{key}[{i}]")))
        .collect()
}

fn command_info(v: &Value, field: &str) -> Result<pb::CommandInfo> {
    let environment = match get(v, "environment") {
        None => Vec::new(),
        Some(env) => array(env, "variables", &format!("{field}.environment"))?
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let f = format!("{field}.environment.variables[{i}]");
                Ok(pb::EnvironmentVariable {
                    name: string(req(e, "name", &f)?, &format!("{f}.name"))?,
                    value: opt_string(e, "value", &f)?,
                })
            })
            .collect::<Result<_>>()?,
    };
    if !array(v, "uris", field)?.is_empty() {
        return Err(invalid(
            &format!("{field}.uris"),
            "fetching URIs into the sandbox is not supported",
        ));
    }
    Ok(pb::CommandInfo {
        shell: get(v, "shell")
            .map(|s| boolean(s, &format!("{field}.shell")))
            .transpose()?,
        value: opt_string(v, "value", field)?,
        arguments: array(v, "arguments", field)?
            .iter()
            .enumerate()
            .map(|(i, a)| string(a, &format!("{field}.arguments[{i}]")))
            .collect::<Result<_>>()?,
        environment,
        user: opt_string(v, "user", field)?,
    })
}

/// A TaskInfo. What Cairn cannot run (a custom executor, URIs to fetch)
/// keeps the task's id and name, with the problem in place of the command,
/// so the core answers it with TASK_ERROR rather than refusing the call.
fn task_info(v: &Value, field: &str) -> Result<pb::TaskInfo> {
    let task_id = id(req(v, "task_id", field)?, &format!("{field}.task_id"))?;
    let labels = match get(v, "labels") {
        None => Vec::new(),
        Some(l) => array(l, "labels", &format!("{field}.labels"))?
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let f = format!("{field}.labels.labels[{i}]");
                Ok(pb::Label {
                    key: string(req(l, "key", &f)?, &format!("{f}.key"))?,
                    value: opt_string(l, "value", &f)?,
                })
            })
            .collect::<Result<_>>()?,
    };
    let (command, executor) = match (get(v, "command"), get(v, "executor")) {
        (Some(c), None) => (Some(command_info(c, &format!("{field}.command"))?), None),
        (None, Some(e)) => (None, Some(executor_info(e, &format!("{field}.executor"))?)),
        (Some(_), Some(_)) => {
            return Err(invalid(
                field,
                "exactly one of command and executor must be set",
            ));
        }
        (None, None) => return Err(MesosJsonError::Missing(format!("{field}.command"))),
    };
    let data = get(v, "data")
        .map(|d| {
            let f = format!("{field}.data");
            B64.decode(string(d, &f)?.as_bytes())
                .map_err(|e| invalid(&f, format!("not base64: {e}")))
        })
        .transpose()?
        .unwrap_or_default();
    Ok(pb::TaskInfo {
        task_id,
        name: opt_string(v, "name", field)?,
        agent_id: id(req(v, "agent_id", field)?, &format!("{field}.agent_id"))?,
        resources: resources(v, "resources", field)?,
        command,
        executor,
        data,
        kill_policy: get(v, "kill_policy")
            .map(|p| kill_policy(p, &format!("{field}.kill_policy")))
            .transpose()?,
        labels,
        network: pb::NetworkMode::NetworkHost as i32,
    })
}

/// An ExecutorInfo: its id and the command that starts it. What Cairn does
/// not support (container images, other executor types) is refused by name
/// rather than ignored.
fn executor_info(v: &Value, field: &str) -> Result<pb::ExecutorInfo> {
    if let Some(t) = get(v, "type").and_then(Value::as_str)
        && t != "CUSTOM"
    {
        return Err(invalid(
            &format!("{field}.type"),
            format!("{t} executors are not supported; use CUSTOM"),
        ));
    }
    if get(v, "container").is_some() {
        return Err(invalid(
            &format!("{field}.container"),
            "container images are not supported",
        ));
    }
    Ok(pb::ExecutorInfo {
        executor_id: id(
            req(v, "executor_id", field)?,
            &format!("{field}.executor_id"),
        )?,
        name: opt_string(v, "name", field)?,
        command: Some(command_info(
            req(v, "command", field)?,
            &format!("{field}.command"),
        )?),
    })
}

/// The task id of a TaskInfo whose conversion failed, to answer for it.
fn failed_task_id(v: &Value) -> Option<String> {
    get(v, "task_id")
        .and_then(|t| t.get("value"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// MasterInfo as Mesos writes it (`ip` is IPv4 in network byte order).
pub fn master_info(info: &MasterInfo) -> Value {
    let host = info
        .address
        .rsplit_once(':')
        .map_or(info.address.as_str(), |(h, _)| h);
    let ip_num = host
        .parse::<std::net::Ipv4Addr>()
        .map_or(0, |ip| u32::from_le_bytes(ip.octets()));
    json!({
        "id": info.id,
        "ip": ip_num,
        "port": info.port,
        "pid": format!("master@{host}:{}", info.port),
        "hostname": info.hostname,
        "version": cairn_model::VERSION,
        "address": {"hostname": info.hostname, "ip": host, "port": info.port},
        "capabilities": [{"type": "AGENT_UPDATE"}],
    })
}

pub fn offer_json(o: &pb::Offer) -> Value {
    json!({
        "id": id_json(&o.id),
        "framework_id": id_json(&o.framework_id),
        "agent_id": id_json(&o.agent_id),
        "hostname": o.hostname,
        "resources": o.resources.iter().map(|r| resource_json(r, &o.role)).collect::<Vec<_>>(),
        "attributes": o.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "executor_ids": [],
        "allocation_info": {"role": o.role},
    })
}

/// A `mesos.v1.scheduler.Event`; `None` for nothing Mesos clients know.
pub fn event_json(e: &pb::Event, info: &MasterInfo) -> Option<Value> {
    use pb::event::Event as E;
    Some(match e.event.as_ref()? {
        E::Subscribed(s) => json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": id_json(&s.framework_id),
                "heartbeat_interval_seconds": s.heartbeat_interval_seconds,
                "master_info": master_info(info),
            },
        }),
        E::Offers(o) => json!({
            "type": "OFFERS",
            "offers": {"offers": o.offers.iter().map(offer_json).collect::<Vec<_>>()},
        }),
        E::Rescind(r) => json!({"type": "RESCIND", "rescind": {"offer_id": id_json(&r.offer_id)}}),
        E::Update(u) => json!({
            "type": "UPDATE",
            "update": {"status": u.status.as_ref().map(task_status_json)?},
        }),
        E::Failure(f) => {
            let mut failure = json!({"agent_id": id_json(&f.agent_id)});
            if !f.executor_id.is_empty() {
                failure["executor_id"] = id_json(&f.executor_id);
            }
            if let Some(st) = f.status {
                failure["status"] = json!(st);
            }
            json!({"type": "FAILURE", "failure": failure})
        }
        E::Error(err) => json!({"type": "ERROR", "error": {"message": err.message}}),
        E::Heartbeat(_) => json!({"type": "HEARTBEAT"}),
        E::Message(m) => json!({"type": "MESSAGE", "message": {
            "agent_id": id_json(&m.agent_id),
            "executor_id": id_json(&m.executor_id),
            "data": B64.encode(&m.data),
        }}),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SchedulerCall> {
        scheduler_call(&serde_json::from_str::<Value>(s).unwrap())
    }

    #[test]
    fn subscribe_reads_mesos_framework_info_leniently() {
        let c = parse(
            r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n",
            "failover_timeout":100,"checkpoint":true,"roles":["a"],"unknown_key":1,
            "capabilities":[{"type":"PARTITION_AWARE"},{"type":"GPU_RESOURCES"},{"type":"SHARED_RESOURCES"}]}}}"#,
        )
        .unwrap();
        let SchedulerCall::Subscribe(s) = c else {
            panic!("{c:?}")
        };
        let info = s.framework_info.unwrap();
        assert_eq!(info.failover_timeout_secs, 100.0);
        assert!(info.checkpoint);
        assert_eq!(info.roles, vec!["a".to_string()]);
        assert_eq!(
            info.capabilities,
            vec![
                pb::Capability::PartitionAware as i32,
                pb::Capability::GpuResources as i32
            ]
        );
    }

    #[test]
    fn accept_with_a_launch_becomes_the_native_call() {
        let c = parse(
            r#"{"type":"ACCEPT","framework_id":{"value":"F"},"accept":{"offer_ids":[{"value":"O1"}],
            "operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"T"},
            "agent_id":{"value":"A"},"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}},
            {"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":31001}]}}],
            "command":{"value":"echo hi","environment":{"variables":[{"name":"X","value":"1"}]}}}]}}],
            "filters":{"refuse_seconds":"Infinity"}}}"#,
        )
        .unwrap();
        let SchedulerCall::Call { call, malformed } = c else {
            panic!("{c:?}")
        };
        assert!(malformed.is_empty());
        assert_eq!(call.framework_id, "F");
        let Some(pb::scheduler_call::Call::Accept(a)) = call.call else {
            panic!()
        };
        assert_eq!(a.offer_ids, vec!["O1".to_string()]);
        assert_eq!(a.filters.unwrap().refuse_seconds, Some(f64::INFINITY));
        let Some(pb::operation::Operation::Launch(l)) = &a.operations[0].operation else {
            panic!()
        };
        assert_eq!(l.tasks[0].resources.len(), 2);
        assert_eq!(l.tasks[0].command.as_ref().unwrap().value, "echo hi");
    }

    #[test]
    fn bad_calls_name_the_field() {
        assert_eq!(
            parse(r#"{"type":"KILL","framework_id":{"value":"F"}}"#),
            Err(MesosJsonError::Missing("call.kill".into()))
        );
        assert!(matches!(
            parse(r#"{"type":"NOPE","framework_id":{"value":"F"}}"#),
            Err(MesosJsonError::Invalid { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"ACKNOWLEDGE","framework_id":{"value":"F"},"acknowledge":{
                "agent_id":{"value":"A"},"task_id":{"value":"T"},"uuid":"c2hvcnQ="}}"#),
            Err(MesosJsonError::Invalid { field, .. }) if field == "acknowledge.uuid"
        ));
        assert!(matches!(
            parse(r#"[1,2]"#),
            Err(MesosJsonError::Invalid { .. })
        ));
        assert_eq!(
            parse(r#"{"type":"UPDATE_FRAMEWORK","framework_id":{"value":"F"}}"#),
            Err(MesosJsonError::Missing("call.update_framework".into()))
        );
    }

    #[test]
    fn a_task_cairn_cannot_run_is_answered_not_refused() {
        let c = parse(
            r#"{"type":"ACCEPT","framework_id":{"value":"F"},"accept":{"offer_ids":[],
            "operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":"T"},
            "agent_id":{"value":"A"},"executor":{"executor_id":{"value":"E"}}}]}}]}}"#,
        )
        .unwrap();
        let SchedulerCall::Call { malformed, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(malformed.len(), 1);
        assert_eq!(malformed[0].0, "T");
        assert!(malformed[0].1.contains("executor.command"), "{malformed:?}");
        // No task id: nothing to answer for, so the call is refused.
        assert!(
            parse(
                r#"{"type":"ACCEPT","framework_id":{"value":"F"},"accept":{"operations":[
                {"type":"LAUNCH","launch":{"task_infos":[{"name":"t"}]}}]}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn records_are_ascii() {
        let r = record(&json!({"m": "é😀"}));
        assert!(r.is_ascii());
        let (len, payload) = std::str::from_utf8(&r).unwrap().split_once('\n').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), payload.len());
        let back: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(back["m"], "é😀");
    }

    #[test]
    fn events_have_the_wire_shapes_clients_read() {
        let info = MasterInfo {
            id: "M".into(),
            hostname: "h".into(),
            address: "10.0.0.1:5050".into(),
            port: 5050,
            epoch: 3,
        };
        let status = pb::TaskStatus {
            task_id: "T".into(),
            state: pb::TaskState::TaskRunning as i32,
            source: pb::Source::Executor as i32,
            uuid: vec![7; 16],
            agent_id: "A".into(),
            timestamp: 1.5,
            ..Default::default()
        };
        let e = pb::Event {
            epoch: 3,
            event: Some(pb::event::Event::Update(pb::event::Update {
                status: Some(status),
            })),
        };
        let v = event_json(&e, &info).unwrap();
        assert_eq!(v["type"], "UPDATE");
        assert_eq!(v["update"]["status"]["state"], "TASK_RUNNING");
        assert_eq!(v["update"]["status"]["source"], "SOURCE_EXECUTOR");
        assert_eq!(v["update"]["status"]["uuid"], B64.encode([7u8; 16]));
        assert_eq!(v["update"]["status"]["agent_id"]["value"], "A");
        let offers = pb::Event {
            epoch: 3,
            event: Some(pb::event::Event::Offers(pb::event::Offers {
                offers: vec![],
            })),
        };
        assert_eq!(
            event_json(&offers, &info).unwrap(),
            json!({"type":"OFFERS","offers":{"offers":[]}})
        );
        let m = master_info(&info);
        assert_eq!(m["address"]["ip"], "10.0.0.1");
        assert_eq!(m["ip"], u32::from_le_bytes([10, 0, 0, 1]));
        assert_eq!(
            &record(&json!({"type":"HEARTBEAT"}))[..],
            b"20\n{\"type\":\"HEARTBEAT\"}"
        );
    }
}
