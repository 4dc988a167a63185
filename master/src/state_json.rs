//! `/state` in the shape Mesos's `/master/state` has, so that existing
//! dashboards and tools read it unchanged. (Mesos's names are kept here:
//! `slaves`, `slave_id`.)

use cairn_master_core::task::StatusRecord;
use cairn_master_core::view::{AgentView, FrameworkView, StateSnapshot, TaskView};
use cairn_model::{AttributeValue, Capability, Offer, ResourceName, Resources, Time};
use serde_json::{Map, Value, json};

use crate::driver::MasterInfo;

/// The model form of resources: `{"cpus":4.0,"gpus":0.0,"mem":1024.0,
/// "disk":0.0,"ports":"[31000-32000]"}`; cpus, gpus, mem and disk are always
/// present, ranges and sets are strings.
pub fn resources_json(r: &Resources) -> Value {
    let mut m = Map::new();
    for name in [
        ResourceName::Cpus,
        ResourceName::Gpus,
        ResourceName::Mem,
        ResourceName::Disk,
    ] {
        m.insert(name.to_string(), json!(r.scalar(&name).as_f64()));
    }
    for (name, v) in r.scalars() {
        m.insert(name.to_string(), json!(v.as_f64()));
    }
    for (name, set) in r.range_entries() {
        m.insert(name.to_string(), json!(set.to_string()));
    }
    for (name, items) in r.set_entries() {
        let joined: Vec<&str> = items.iter().map(String::as_str).collect();
        m.insert(name.to_string(), json!(format!("{{{}}}", joined.join(","))));
    }
    Value::Object(m)
}

fn secs(t: Time) -> f64 {
    t.as_unix_secs_f64()
}

fn attributes_json(attrs: &[cairn_model::Attribute]) -> Value {
    let mut m = Map::new();
    for a in attrs {
        let v = match &a.value {
            AttributeValue::Scalar(s) => json!(s),
            other => json!(other.to_string()),
        };
        m.insert(a.name.clone(), v);
    }
    Value::Object(m)
}

fn status_json(s: &StatusRecord) -> Value {
    json!({"state": s.state.as_str(), "timestamp": secs(s.timestamp)})
}

pub fn task_json(t: &TaskView) -> Value {
    json!({
        "id": t.id.as_str(),
        "name": t.name,
        "framework_id": t.framework_id.as_str(),
        "executor_id": "",
        "slave_id": t.agent_id.as_str(),
        "state": t.state.as_str(),
        "resources": resources_json(&t.resources),
        "role": t.role.as_str(),
        "statuses": t.statuses.iter().map(status_json).collect::<Vec<_>>(),
        "message": t.message,
        "exit_code": t.exit_code,
    })
}

fn offer_json(o: &Offer) -> Value {
    json!({
        "id": o.id.as_str(),
        "framework_id": o.framework_id.as_str(),
        "slave_id": o.agent_id.as_str(),
        "hostname": o.hostname,
        "resources": resources_json(&o.resources),
        "allocation_info": {"role": o.role.as_str()},
    })
}

fn capability_name(c: Capability) -> &'static str {
    match c {
        Capability::PartitionAware => "PARTITION_AWARE",
        Capability::TaskKillingState => "TASK_KILLING_STATE",
        Capability::MultiRole => "MULTI_ROLE",
        Capability::GpuResources => "GPU_RESOURCES",
        Capability::RevocableResources => "REVOCABLE_RESOURCES",
    }
}

pub fn framework_json(f: &FrameworkView) -> Value {
    let roles: Vec<&str> = f.info.roles.iter().map(|r| r.as_str()).collect();
    json!({
        "id": f.id.as_str(),
        "name": f.info.name,
        "user": f.info.user,
        "hostname": f.info.hostname,
        "webui_url": f.info.webui_url,
        "principal": f.info.principal,
        "active": f.connected,
        "connected": f.connected,
        "recovered": false,
        "checkpoint": f.info.checkpoint,
        "failover_timeout": f.info.failover_timeout.as_secs_f64(),
        "role": roles.first().copied().unwrap_or("*"),
        "roles": roles,
        "capabilities": f.info.capabilities.iter().map(|c| capability_name(*c)).collect::<Vec<_>>(),
        "registered_time": secs(f.registered_at),
        "reregistered_time": f.reregistered_at.map(secs),
        "unregistered_time": f.disconnected_since.or(f.removed_at).map(secs),
        "failover_deadline": f.failover_deadline.map(secs),
        "suppressed_roles": f.suppressed_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "used_resources": resources_json(&f.used),
        "offered_resources": resources_json(&f.offered),
        "resources": resources_json(&f.used.plus(&f.offered)),
        "tasks": f.tasks.iter().map(task_json).collect::<Vec<_>>(),
        "unreachable_tasks": f.unreachable_tasks.iter().map(task_json).collect::<Vec<_>>(),
        "completed_tasks": f.completed_tasks.iter().map(task_json).collect::<Vec<_>>(),
        "offers": f.offers.iter().map(offer_json).collect::<Vec<_>>(),
        "executors": [],
    })
}

pub fn agent_json(a: &AgentView) -> Value {
    let port = a
        .info
        .address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(0);
    let unreserved = a.info.resources.clone();
    json!({
        "id": a.id.as_str(),
        "hostname": a.info.hostname,
        "port": port,
        "pid": format!("slave(1)@{}", a.info.address),
        "attributes": attributes_json(&a.info.attributes),
        "registered_time": secs(a.registered_at),
        "last_seen": secs(a.last_seen),
        "resources": resources_json(&a.info.resources),
        "used_resources": resources_json(&a.used),
        "offered_resources": resources_json(&a.offered),
        "reserved_resources": {},
        "unreserved_resources": resources_json(&unreserved),
        "active": a.connected,
        "task_count": a.task_count,
        "usage": a.usage,
        "version": cairn_model::VERSION,
    })
}

/// The whole of `/state`.
pub fn state_json(s: &StateSnapshot, info: &MasterInfo, flags: &Value) -> Value {
    let pid = format!("master@{}", info.address);
    let active = s.agents.iter().filter(|a| a.connected).count();
    json!({
        "version": cairn_model::VERSION,
        "id": s.master_id,
        "pid": pid,
        "hostname": info.hostname,
        "start_time": secs(s.start_time),
        "elected_time": secs(s.start_time),
        "leader": pid,
        "leader_info": info.to_json(),
        "activated_slaves": active,
        "deactivated_slaves": s.agents.len() - active,
        "unreachable_slaves": s.unreachable_agents.len(),
        "flags": flags,
        "slaves": s.agents.iter().map(agent_json).collect::<Vec<_>>(),
        "recovered_slaves": [],
        "unreachable": s.unreachable_agents.iter().map(|u| json!({
            "id": u.id.as_str(),
            "hostname": u.info.hostname,
            "since": secs(u.since),
        })).collect::<Vec<_>>(),
        "frameworks": s.frameworks.iter().map(framework_json).collect::<Vec<_>>(),
        "completed_frameworks": s.completed_frameworks.iter().map(framework_json).collect::<Vec<_>>(),
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    })
}

impl MasterInfo {
    /// MasterInfo as Mesos clients read it (every address field they use).
    pub fn to_json(&self) -> Value {
        let ip = self
            .address
            .rsplit_once(':')
            .map_or(self.address.as_str(), |(h, _)| h)
            .to_string();
        json!({
            "id": self.id,
            "hostname": self.hostname,
            "port": self.port,
            "pid": format!("master@{}", self.address),
            "version": cairn_model::VERSION,
            "address": {"hostname": self.hostname, "ip": ip, "port": self.port},
        })
    }
}
