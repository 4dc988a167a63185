//! Mesos's operator endpoints beyond `/state`: the list endpoints, the
//! summary, roles, metrics, and the v1 operator API (`POST /api/v1`). All
//! are views of one state snapshot of the core.

use std::collections::{BTreeMap, BTreeSet};

use cairn_master_core::view::{StateSnapshot, Summary, TaskView};
use cairn_model::convert::resources_to_pb;
use cairn_model::{ResourceName, Resources, TaskState, Time};
use serde_json::{Value, json};

use crate::driver::MasterInfo;
use crate::mesos_json::{master_info, resource_json};
use crate::state_json::{agent_json, framework_json, resources_json, task_json};

/// Task counts by Mesos state name, each present (0 when none).
fn task_counts<'a>(tasks: impl Iterator<Item = &'a TaskView>) -> serde_json::Map<String, Value> {
    let mut counts: BTreeMap<&'static str, u64> =
        TaskState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for t in tasks {
        *counts.entry(t.state.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

pub fn state_summary(s: &StateSnapshot, info: &MasterInfo) -> Value {
    let all_tasks = || {
        s.frameworks.iter().flat_map(|f| {
            f.tasks
                .iter()
                .chain(&f.unreachable_tasks)
                .chain(&f.completed_tasks)
        })
    };
    json!({
        "hostname": info.hostname,
        "cluster": "",
        "slaves": s.agents.iter().map(|a| {
            let mut v = json!({
                "id": a.id.as_str(),
                "pid": format!("slave(1)@{}", a.info.address),
                "hostname": a.info.hostname,
                "active": a.connected,
                "resources": resources_json(&a.info.resources),
                "used_resources": resources_json(&a.used),
                "offered_resources": resources_json(&a.offered),
                "framework_ids": s.frameworks.iter()
                    .filter(|f| f.tasks.iter().any(|t| t.agent_id == a.id))
                    .map(|f| f.id.as_str()).collect::<Vec<_>>(),
            });
            if let Some(o) = v.as_object_mut() {
                o.extend(task_counts(all_tasks().filter(|t| t.agent_id == a.id)));
            }
            v
        }).collect::<Vec<_>>(),
        "frameworks": s.frameworks.iter().map(|f| {
            let mut v = json!({
                "id": f.id.as_str(),
                "name": f.info.name,
                "active": f.connected,
                "used_resources": resources_json(&f.used),
                "offered_resources": resources_json(&f.offered),
                "slave_ids": f.tasks.iter().map(|t| t.agent_id.as_str()).collect::<BTreeSet<_>>(),
            });
            if let Some(o) = v.as_object_mut() {
                o.extend(task_counts(f.tasks.iter().chain(&f.unreachable_tasks).chain(&f.completed_tasks)));
            }
            v
        }).collect::<Vec<_>>(),
    })
}

pub fn frameworks(s: &StateSnapshot, framework_id: Option<&str>) -> Value {
    let keep = |id: &str| framework_id.is_none_or(|f| f == id);
    json!({
        "frameworks": s.frameworks.iter().filter(|f| keep(f.id.as_str())).map(framework_json).collect::<Vec<_>>(),
        "completed_frameworks": s.completed_frameworks.iter().filter(|f| keep(f.id.as_str())).map(framework_json).collect::<Vec<_>>(),
        "unregistered_frameworks": [],
    })
}

pub fn slaves(s: &StateSnapshot, slave_id: Option<&str>) -> Value {
    json!({
        "slaves": s.agents.iter().filter(|a| slave_id.is_none_or(|id| id == a.id.as_str())).map(agent_json).collect::<Vec<_>>(),
        "recovered_slaves": [],
    })
}

/// What `/tasks` takes (Mesos's names and defaults).
#[derive(Debug, Default, serde::Deserialize)]
pub struct TasksQuery {
    /// Default 100; -1 (any negative) means no limit.
    pub limit: Option<i64>,
    pub offset: Option<usize>,
    /// `asc` or `des` (the default) by start time.
    pub order: Option<String>,
    pub framework_id: Option<String>,
    pub task_id: Option<String>,
}

fn started(t: &TaskView) -> Time {
    t.statuses
        .first()
        .map_or(Time::from_micros(0), |s| s.timestamp)
}

pub fn tasks(s: &StateSnapshot, q: &TasksQuery) -> Result<Value, String> {
    let ascending = match q.order.as_deref() {
        None | Some("des") => false,
        Some("asc") => true,
        Some(other) => return Err(format!("Unsupported order {other:?}: use asc or des")),
    };
    let mut all: Vec<&TaskView> = s
        .frameworks
        .iter()
        .chain(&s.completed_frameworks)
        .filter(|f| {
            q.framework_id
                .as_deref()
                .is_none_or(|id| id == f.id.as_str())
        })
        .flat_map(|f| {
            f.tasks
                .iter()
                .chain(&f.unreachable_tasks)
                .chain(&f.completed_tasks)
        })
        .filter(|t| q.task_id.as_deref().is_none_or(|id| id == t.id.as_str()))
        .collect();
    all.sort_by_key(|t| (started(t), t.id.clone()));
    if !ascending {
        all.reverse();
    }
    let limit = match q.limit {
        None => 100,
        Some(n) if n < 0 => usize::MAX,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let page: Vec<Value> = all
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(limit)
        .map(task_json)
        .collect();
    Ok(json!({ "tasks": page }))
}

pub fn roles(s: &StateSnapshot, weights: &BTreeMap<String, f64>) -> Value {
    let mut roles: BTreeMap<String, (Resources, BTreeSet<String>)> = BTreeMap::new();
    for f in &s.frameworks {
        for r in &f.info.roles {
            roles
                .entry(r.as_str().to_string())
                .or_default()
                .1
                .insert(f.id.to_string());
        }
        for t in &f.tasks {
            roles
                .entry(t.role.as_str().to_string())
                .or_default()
                .0
                .add(&t.resources);
        }
    }
    json!({
        "roles": roles.into_iter().map(|(name, (used, fws))| json!({
            "name": name,
            "weight": weights.get(&name).copied().unwrap_or(1.0),
            "frameworks": fws,
            "resources": resources_json(&used),
        })).collect::<Vec<_>>(),
    })
}

/// `/metrics/snapshot`: a flat object of numbers, Mesos's key names.
pub fn metrics_snapshot(m: &Summary, elected: bool, uptime_secs: f64) -> Value {
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, v: f64| {
        out.insert(format!("master/{k}"), json!(v));
    };
    #[allow(clippy::cast_precision_loss)]
    {
        put("elected", if elected { 1.0 } else { 0.0 });
        put("uptime_secs", uptime_secs);
        put("slaves_active", m.agents_connected as f64);
        put("slaves_inactive", m.agents_disconnected as f64);
        put("slaves_connected", m.agents_connected as f64);
        put("slaves_disconnected", m.agents_disconnected as f64);
        put("slaves_unreachable", m.agents_unreachable as f64);
        put("frameworks_active", m.frameworks_connected as f64);
        put("frameworks_inactive", m.frameworks_disconnected as f64);
        put("frameworks_connected", m.frameworks_connected as f64);
        put("frameworks_disconnected", m.frameworks_disconnected as f64);
        put("outstanding_offers", m.outstanding_offers as f64);
        // Live states are gauges (tasks in them now); terminal ones are
        // counters (tasks that ever ended so), as in Mesos.
        for state in TaskState::ALL {
            let state_name = state
                .as_str()
                .trim_start_matches("TASK_")
                .to_ascii_lowercase();
            let name = format!("tasks_{state_name}");
            let n = if state.is_terminal() {
                m.counters.tasks_terminal.get(&state).copied().unwrap_or(0)
            } else {
                m.tasks_by_state.get(&state).copied().unwrap_or(0)
            };
            put(&name, n as f64);
        }
        put("messages_status_update", m.counters.status_updates as f64);
        put(
            "messages_acknowledge_status_update",
            m.counters.acknowledgements as f64,
        );
        put("messages_kill_task", m.counters.kills as f64);
        put("messages_decline_offers", m.counters.offers_declined as f64);
        put("messages_launch_tasks", m.counters.tasks_launched as f64);
        put(
            "invalid_status_updates",
            m.counters.invalid_transitions as f64,
        );
        put("valid_status_updates", m.counters.status_updates as f64);
        put("slave_registrations", m.counters.agents_registered as f64);
        put(
            "slave_reregistrations",
            m.counters.agents_reregistered as f64,
        );
        put(
            "slave_unreachable_completed",
            m.counters.agents_unreachable as f64,
        );
    }
    for name in [
        ResourceName::Cpus,
        ResourceName::Gpus,
        ResourceName::Mem,
        ResourceName::Disk,
    ] {
        let total = m.total.scalar(&name).as_f64();
        let used = m.used.scalar(&name).as_f64();
        let n = name.to_string();
        out.insert(format!("master/{n}_total"), json!(total));
        out.insert(format!("master/{n}_used"), json!(used));
        out.insert(
            format!("master/{n}_percent"),
            json!(if total > 0.0 { used / total } else { 0.0 }),
        );
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// The v1 operator API (`POST /api/v1`): v1 protobuf shapes in JSON.
// ---------------------------------------------------------------------------

fn v1_resources(r: &Resources) -> Value {
    Value::Array(
        resources_to_pb(r)
            .iter()
            .map(|x| resource_json(x, ""))
            .collect(),
    )
}

fn nanos(t: Time) -> Value {
    json!({"nanoseconds": t.as_micros() * 1000})
}

fn v1_task(t: &TaskView) -> Value {
    json!({
        "name": t.name,
        "task_id": {"value": t.id.as_str()},
        "framework_id": {"value": t.framework_id.as_str()},
        "agent_id": {"value": t.agent_id.as_str()},
        "state": t.state.as_str(),
        "resources": v1_resources(&t.resources),
        "statuses": t.statuses.iter().map(|s| json!({
            "task_id": {"value": t.id.as_str()},
            "state": s.state.as_str(),
            "timestamp": s.timestamp.as_unix_secs_f64(),
        })).collect::<Vec<_>>(),
    })
}

fn get_agents(s: &StateSnapshot) -> Value {
    json!({
        "agents": s.agents.iter().map(|a| json!({
            "agent_info": {
                "id": {"value": a.id.as_str()},
                "hostname": a.info.hostname,
                "port": a.info.address.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(0),
                "resources": v1_resources(&a.info.resources),
            },
            "active": a.connected,
            "version": cairn_model::VERSION,
            "pid": format!("slave(1)@{}", a.info.address),
            "registered_time": nanos(a.registered_at),
            "total_resources": v1_resources(&a.info.resources),
            "allocated_resources": v1_resources(&a.used),
            "offered_resources": v1_resources(&a.offered),
        })).collect::<Vec<_>>(),
        "recovered_agents": [],
    })
}

fn get_frameworks(s: &StateSnapshot) -> Value {
    let framework = |f: &cairn_master_core::view::FrameworkView| {
        json!({
            "framework_info": v1_framework_info(&f.id, &f.info),
            "active": f.connected,
            "connected": f.connected,
            "recovered": false,
            "registered_time": nanos(f.registered_at),
        })
    };
    json!({
        "frameworks": s.frameworks.iter().map(framework).collect::<Vec<_>>(),
        "completed_frameworks": s.completed_frameworks.iter().map(framework).collect::<Vec<_>>(),
    })
}

fn get_tasks(s: &StateSnapshot) -> Value {
    let fws = || s.frameworks.iter().chain(&s.completed_frameworks);
    json!({
        "tasks": fws().flat_map(|f| &f.tasks).map(v1_task).collect::<Vec<_>>(),
        "unreachable_tasks": fws().flat_map(|f| &f.unreachable_tasks).map(v1_task).collect::<Vec<_>>(),
        "completed_tasks": fws().flat_map(|f| &f.completed_tasks).map(v1_task).collect::<Vec<_>>(),
    })
}

/// Answers an operator call that needs the state (`None`: not one of them).
pub fn operator_call(
    ty: &str,
    s: &StateSnapshot,
    info: &MasterInfo,
    flags: &Value,
) -> Option<Value> {
    Some(match ty {
        "GET_STATE" => json!({"type": ty, "get_state": {
            "get_tasks": get_tasks(s),
            "get_executors": {"executors": []},
            "get_frameworks": get_frameworks(s),
            "get_agents": get_agents(s),
        }}),
        "GET_AGENTS" => json!({"type": ty, "get_agents": get_agents(s)}),
        "GET_FRAMEWORKS" => json!({"type": ty, "get_frameworks": get_frameworks(s)}),
        "GET_TASKS" => json!({"type": ty, "get_tasks": get_tasks(s)}),
        "GET_HEALTH" => json!({"type": ty, "get_health": {"healthy": true}}),
        "GET_MASTER" => json!({"type": ty, "get_master": {
            "master_info": master_info(info),
            "start_time": s.start_time.as_unix_secs_f64(),
            "elected_time": s.start_time.as_unix_secs_f64(),
        }}),
        "GET_VERSION" => {
            json!({"type": ty, "get_version": {"version_info": {"version": cairn_model::VERSION}}})
        }
        "GET_FLAGS" => {
            json!({"type": ty, "get_flags": {"flags": flags.as_object().map(|o| o.iter().map(|(k, v)| json!({
            "name": k,
            "value": v.as_str().map_or_else(|| v.to_string(), str::to_string),
        })).collect::<Vec<_>>()).unwrap_or_default()}})
        }
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// The operator event stream (`SUBSCRIBE` on `/api/v1`, and `/events`).
// ---------------------------------------------------------------------------

/// The v1 operator event for a change, as Mesos sends it to `SUBSCRIBE`d
/// operators.
pub fn observed_json(o: &cairn_master_core::Observed) -> Value {
    use cairn_master_core::Observed as O;
    match o {
        O::TaskAdded {
            framework_id,
            agent_id,
            task,
        } => json!({"type": "TASK_ADDED", "task_added": {"task": {
            "name": task.name,
            "task_id": {"value": task.task_id.as_str()},
            "framework_id": {"value": framework_id.as_str()},
            "agent_id": {"value": agent_id.as_str()},
            "state": "TASK_STAGING",
            "resources": v1_resources(&task.resources),
            "labels": {"labels": task.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()},
        }}}),
        O::TaskUpdated {
            framework_id,
            agent_id,
            status,
        } => {
            let mut st = cairn_model::mesos_json::task_status_json(
                &cairn_model::convert::task_status_to_pb(status),
            );
            if st.get("agent_id").is_none() {
                st["agent_id"] = json!({"value": agent_id.as_str()});
            }
            json!({"type": "TASK_UPDATED", "task_updated": {
                "framework_id": {"value": framework_id.as_str()},
                "status": st,
                "state": status.state.as_str(),
            }})
        }
        O::AgentAdded { agent_id, info } => {
            json!({"type": "AGENT_ADDED", "agent_added": {"agent": {
                "agent_info": {
                    "id": {"value": agent_id.as_str()},
                    "hostname": info.hostname,
                    "port": info.address.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(0),
                    "resources": v1_resources(&info.resources),
                },
                "active": true,
                "version": cairn_model::VERSION,
                "pid": format!("slave(1)@{}", info.address),
                "total_resources": v1_resources(&info.resources),
            }}})
        }
        O::AgentRemoved { agent_id } => {
            json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": agent_id.as_str()}}})
        }
        O::FrameworkAdded { framework_id, info } | O::FrameworkUpdated { framework_id, info } => {
            let (ty, key) = if matches!(o, O::FrameworkAdded { .. }) {
                ("FRAMEWORK_ADDED", "framework_added")
            } else {
                ("FRAMEWORK_UPDATED", "framework_updated")
            };
            json!({"type": ty, key: {"framework": {
                "framework_info": v1_framework_info(framework_id, info),
                "active": true,
                "connected": true,
                "recovered": false,
            }}})
        }
        O::FrameworkRemoved { framework_id } => {
            json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {
                "framework_info": {"id": {"value": framework_id.as_str()}},
            }})
        }
    }
}

fn v1_framework_info(id: &cairn_model::FrameworkId, info: &cairn_model::FrameworkInfo) -> Value {
    json!({
        "id": {"value": id.as_str()},
        "name": info.name,
        "user": info.user,
        "roles": info.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "failover_timeout": info.failover_timeout.as_secs_f64(),
        "checkpoint": info.checkpoint,
        "hostname": info.hostname,
        "principal": info.principal,
    })
}

/// The first event of an operator subscription: the whole state.
pub fn subscribed_json(s: &StateSnapshot, heartbeat_secs: f64) -> Value {
    json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": {
            "get_tasks": get_tasks(s),
            "get_executors": {"executors": []},
            "get_frameworks": get_frameworks(s),
            "get_agents": get_agents(s),
        },
        "heartbeat_interval_seconds": heartbeat_secs,
    }})
}
