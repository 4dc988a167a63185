//! `/state` in the shape Mesos's `/master/state` has, so that existing
//! dashboards and tools read it unchanged. (Mesos's names are kept here:
//! `slaves`, `slave_id`.)

use cairn_master_core::task::StatusRecord;
use cairn_master_core::view::{
    AgentView, FrameworkView, StateSnapshot, TaskView, UnreachableAgentView,
};
use cairn_model::{AttributeValue, Capability, Offer, ResourceName, Resources, Time};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value, json};

use crate::driver::MasterInfo;

/// The model form of resources: `{"cpus":4.0,"gpus":0.0,"mem":1024.0,
/// "disk":0.0,"ports":"[31000-32000]"}`; cpus, gpus, mem and disk are always
/// present, ranges and sets are strings.
pub fn resources_json(r: &Resources) -> Value {
    serde_json::to_value(ResourcesJson(r)).unwrap_or(Value::Null)
}

/// [`resources_json`] written directly; keys in the same (sorted) order.
#[derive(Debug)]
pub struct ResourcesJson<'a>(pub &'a Resources);

impl Serialize for ResourcesJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut entries: Vec<(&str, Value)> = Vec::with_capacity(6);
        for name in [
            ResourceName::Cpus,
            ResourceName::Gpus,
            ResourceName::Mem,
            ResourceName::Disk,
        ] {
            entries.push((name_str(&name), json!(r.scalar(&name).as_f64())));
        }
        for (name, v) in r.scalars() {
            if !matches!(
                name,
                ResourceName::Cpus | ResourceName::Gpus | ResourceName::Mem | ResourceName::Disk
            ) {
                entries.push((name.as_str(), json!(v.as_f64())));
            }
        }
        for (name, set) in r.range_entries() {
            entries.push((name.as_str(), json!(set.to_string())));
        }
        for (name, items) in r.set_entries() {
            let joined: Vec<&str> = items.iter().map(String::as_str).collect();
            entries.push((name.as_str(), json!(format!("{{{}}}", joined.join(",")))));
        }
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut m = ser.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn name_str(n: &ResourceName) -> &'static str {
    match n {
        ResourceName::Cpus => "cpus",
        ResourceName::Gpus => "gpus",
        ResourceName::Mem => "mem",
        ResourceName::Disk => "disk",
        ResourceName::Ports => "ports",
        ResourceName::Other(_) => "",
    }
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
    serde_json::to_value(TaskJson(t)).unwrap_or(Value::Null)
}

struct TaskJson<'a>(&'a TaskView);

impl Serialize for TaskJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let t = self.0;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("id", t.id.as_str())?;
        m.serialize_entry("name", &t.name)?;
        m.serialize_entry("framework_id", t.framework_id.as_str())?;
        m.serialize_entry(
            "executor_id",
            t.executor_id.as_ref().map_or("", |e| e.as_str()),
        )?;
        m.serialize_entry("slave_id", t.agent_id.as_str())?;
        m.serialize_entry("state", t.state.as_str())?;
        m.serialize_entry("resources", &ResourcesJson(&t.resources))?;
        m.serialize_entry("role", t.role.as_str())?;
        m.serialize_entry("statuses", &Seq(&t.statuses, status_json))?;
        m.serialize_entry("message", &t.message)?;
        m.serialize_entry("exit_code", &t.exit_code)?;
        if !t.labels.is_empty() {
            m.serialize_entry(
                "labels",
                &t.labels
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect::<Vec<_>>(),
            )?;
        }
        m.end()
    }
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
    serde_json::to_value(FrameworkJson(f)).unwrap_or(Value::Null)
}

struct FrameworkJson<'a>(&'a FrameworkView);

impl Serialize for FrameworkJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let roles: Vec<&str> = f.info.roles.iter().map(|r| r.as_str()).collect();
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("id", f.id.as_str())?;
        m.serialize_entry("name", &f.info.name)?;
        m.serialize_entry("user", &f.info.user)?;
        m.serialize_entry("hostname", &f.info.hostname)?;
        m.serialize_entry("webui_url", &f.info.webui_url)?;
        m.serialize_entry("principal", &f.info.principal)?;
        m.serialize_entry("active", &f.connected)?;
        m.serialize_entry("connected", &f.connected)?;
        m.serialize_entry("recovered", &false)?;
        m.serialize_entry("checkpoint", &f.info.checkpoint)?;
        m.serialize_entry("failover_timeout", &f.info.failover_timeout.as_secs_f64())?;
        m.serialize_entry("role", roles.first().copied().unwrap_or("*"))?;
        m.serialize_entry("roles", &roles)?;
        m.serialize_entry(
            "capabilities",
            &f.info
                .capabilities
                .iter()
                .map(|c| capability_name(*c))
                .collect::<Vec<_>>(),
        )?;
        m.serialize_entry("registered_time", &secs(f.registered_at))?;
        m.serialize_entry("reregistered_time", &f.reregistered_at.map(secs))?;
        m.serialize_entry(
            "unregistered_time",
            &f.disconnected_since.or(f.removed_at).map(secs),
        )?;
        m.serialize_entry("failover_deadline", &f.failover_deadline.map(secs))?;
        m.serialize_entry(
            "suppressed_roles",
            &f.suppressed_roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
        )?;
        m.serialize_entry("used_resources", &ResourcesJson(&f.used))?;
        m.serialize_entry("offered_resources", &ResourcesJson(&f.offered))?;
        m.serialize_entry("resources", &ResourcesJson(&f.used.plus(&f.offered)))?;
        m.serialize_entry("tasks", &Each(&f.tasks))?;
        m.serialize_entry("unreachable_tasks", &Each(&f.unreachable_tasks))?;
        m.serialize_entry("completed_tasks", &Each(&f.completed_tasks))?;
        m.serialize_entry("offers", &Seq(&f.offers, offer_json))?;
        m.serialize_entry("executors", &[(); 0])?;
        m.end()
    }
}

pub fn agent_json(a: &AgentView) -> Value {
    serde_json::to_value(AgentJson(a)).unwrap_or(Value::Null)
}

struct AgentJson<'a>(&'a AgentView);

impl Serialize for AgentJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let port = a
            .info
            .address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(0);
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("id", a.id.as_str())?;
        m.serialize_entry("hostname", &a.info.hostname)?;
        m.serialize_entry("port", &port)?;
        m.serialize_entry("pid", &format!("slave(1)@{}", a.info.address))?;
        m.serialize_entry("attributes", &attributes_json(&a.info.attributes))?;
        m.serialize_entry("registered_time", &secs(a.registered_at))?;
        m.serialize_entry("last_seen", &secs(a.last_seen))?;
        m.serialize_entry("resources", &ResourcesJson(&a.info.resources))?;
        m.serialize_entry("used_resources", &ResourcesJson(&a.used))?;
        m.serialize_entry("offered_resources", &ResourcesJson(&a.offered))?;
        m.serialize_entry("reserved_resources", &json!({}))?;
        m.serialize_entry("unreserved_resources", &ResourcesJson(&a.info.resources))?;
        m.serialize_entry("active", &a.connected)?;
        m.serialize_entry("task_count", &a.task_count)?;
        m.serialize_entry("usage", &a.usage)?;
        m.serialize_entry("version", cairn_model::VERSION)?;
        m.end()
    }
}

/// The whole of `/state`, written straight to JSON: at tens of thousands
/// of agents a `Value` tree of it took twenty times the memory of its text.
pub fn state_bytes(s: &StateSnapshot, info: &MasterInfo, flags: &Value) -> Vec<u8> {
    serde_json::to_vec(&StateJson { s, info, flags }).unwrap_or_else(|_| b"{}".to_vec())
}

/// The whole of `/state` as a value (for tests and small clusters).
pub fn state_json(s: &StateSnapshot, info: &MasterInfo, flags: &Value) -> Value {
    serde_json::to_value(StateJson { s, info, flags }).unwrap_or(Value::Null)
}

struct StateJson<'a> {
    s: &'a StateSnapshot,
    info: &'a MasterInfo,
    flags: &'a Value,
}

/// A sequence serialized item by item through `f`.
struct Seq<'a, T, F>(&'a [T], F);

impl<T, F, J> Serialize for Seq<'_, T, F>
where
    F: Fn(&T) -> J,
    J: Serialize,
{
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&(self.1)(item))?;
        }
        seq.end()
    }
}

/// A slice of views, each written by its JSON wrapper.
struct Each<'a, T>(&'a [T]);

macro_rules! each {
    ($view:ty, $json:ident) => {
        impl Serialize for Each<'_, $view> {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                let mut seq = ser.serialize_seq(Some(self.0.len()))?;
                for item in self.0 {
                    seq.serialize_element(&$json(item))?;
                }
                seq.end()
            }
        }
    };
}

each!(TaskView, TaskJson);
each!(AgentView, AgentJson);
each!(FrameworkView, FrameworkJson);

impl Serialize for StateJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (s, info) = (self.s, self.info);
        let pid = format!("master@{}", info.address);
        let active = s.agents.iter().filter(|a| a.connected).count();
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("version", cairn_model::VERSION)?;
        m.serialize_entry("id", &s.master_id)?;
        m.serialize_entry("pid", &pid)?;
        m.serialize_entry("hostname", &info.hostname)?;
        m.serialize_entry("start_time", &secs(s.start_time))?;
        m.serialize_entry("elected_time", &secs(s.start_time))?;
        m.serialize_entry("leader", &pid)?;
        m.serialize_entry("leader_info", &info.to_json())?;
        m.serialize_entry("activated_slaves", &active)?;
        m.serialize_entry("deactivated_slaves", &(s.agents.len() - active))?;
        m.serialize_entry("unreachable_slaves", &s.unreachable_agents.len())?;
        m.serialize_entry("flags", self.flags)?;
        m.serialize_entry("slaves", &Each(&s.agents))?;
        m.serialize_entry("recovered_slaves", &[(); 0])?;
        m.serialize_entry(
            "unreachable",
            &Seq(&s.unreachable_agents, |u: &UnreachableAgentView| {
                json!({
                    "id": u.id.as_str(),
                    "hostname": u.info.hostname,
                    "since": secs(u.since),
                })
            }),
        )?;
        m.serialize_entry("frameworks", &Each(&s.frameworks))?;
        m.serialize_entry("completed_frameworks", &Each(&s.completed_frameworks))?;
        m.serialize_entry("orphan_tasks", &[(); 0])?;
        m.serialize_entry("unregistered_frameworks", &[(); 0])?;
        m.end()
    }
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
