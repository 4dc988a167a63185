//! Mesos v1 JSON shapes (stout's mapping of the v1 protobufs) of Cairn's
//! wire messages, for the doors that speak Mesos's HTTP APIs: ids as
//! `{"value": ...}`, enums by name, bytes in base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_proto as pb;
use serde_json::{Value, json};

pub fn id_json(value: &str) -> Value {
    json!({ "value": value })
}

pub fn ranges_json(r: &pb::Ranges) -> Value {
    json!({"range": r.ranges.iter().map(|r| json!({"begin": r.begin, "end": r.end})).collect::<Vec<_>>()})
}

pub fn resource_json(r: &pb::Resource, role: &str) -> Value {
    use pb::resource::Value as R;
    let mut out = json!({"name": r.name, "role": "*"});
    if !role.is_empty() {
        out["allocation_info"] = json!({"role": role});
    }
    match &r.value {
        Some(R::Scalar(s)) => {
            out["type"] = json!("SCALAR");
            out["scalar"] = json!({"value": s});
        }
        Some(R::Ranges(rs)) => {
            out["type"] = json!("RANGES");
            out["ranges"] = ranges_json(rs);
        }
        Some(R::Set(s)) => {
            out["type"] = json!("SET");
            out["set"] = json!({"item": s.items});
        }
        None => {}
    }
    out
}

pub fn attribute_json(a: &pb::Attribute) -> Value {
    use pb::attribute::Value as A;
    let mut out = json!({"name": a.name});
    match &a.value {
        Some(A::Scalar(s)) => {
            out["type"] = json!("SCALAR");
            out["scalar"] = json!({"value": s});
        }
        Some(A::Ranges(r)) => {
            out["type"] = json!("RANGES");
            out["ranges"] = ranges_json(r);
        }
        Some(A::Set(s)) => {
            out["type"] = json!("SET");
            out["set"] = json!({"item": s.items});
        }
        Some(A::Text(t)) => {
            out["type"] = json!("TEXT");
            out["text"] = json!({"value": t});
        }
        None => {}
    }
    out
}

pub fn task_status_json(s: &pb::TaskStatus) -> Value {
    let state = pb::TaskState::try_from(s.state).map_or("TASK_UNKNOWN", |t| t.as_str_name());
    let mut out = json!({
        "task_id": id_json(&s.task_id),
        "state": state,
        "source": pb::Source::try_from(s.source).map_or("SOURCE_MASTER", |x| x.as_str_name()),
        "timestamp": s.timestamp,
    });
    if !s.message.is_empty() {
        out["message"] = json!(s.message);
    }
    if let Ok(r) = pb::Reason::try_from(s.reason)
        && r != pb::Reason::Unspecified
    {
        out["reason"] = json!(r.as_str_name());
    }
    if !s.agent_id.is_empty() {
        out["agent_id"] = id_json(&s.agent_id);
    }
    if !s.executor_id.is_empty() {
        out["executor_id"] = id_json(&s.executor_id);
    }
    if !s.uuid.is_empty() {
        out["uuid"] = json!(B64.encode(&s.uuid));
    }
    if let Some(h) = s.healthy {
        out["healthy"] = json!(h);
    }
    out
}

/// A TaskInfo as an executor receives it in LAUNCH.
pub fn task_info_json(t: &pb::TaskInfo, role: &str) -> Value {
    let mut out = json!({
        "name": t.name,
        "task_id": id_json(&t.task_id),
        "agent_id": id_json(&t.agent_id),
        "resources": t.resources.iter().map(|r| resource_json(r, role)).collect::<Vec<_>>(),
    });
    if let Some(e) = &t.executor {
        out["executor"] = json!({
            "executor_id": id_json(&e.executor_id),
            "name": e.name,
            "type": "CUSTOM",
            "command": e.command.as_ref().map(command_json),
        });
    } else if let Some(c) = &t.command {
        out["command"] = command_json(c);
    }
    if !t.data.is_empty() {
        out["data"] = json!(B64.encode(&t.data));
    }
    if !t.labels.is_empty() {
        out["labels"] = json!({"labels": t.labels.iter().map(|l| json!({"key": l.key, "value": l.value})).collect::<Vec<_>>()});
    }
    out
}

pub fn command_json(c: &pb::CommandInfo) -> Value {
    let mut out = json!({"value": c.value, "shell": c.shell.unwrap_or(true)});
    if !c.arguments.is_empty() {
        out["arguments"] = json!(c.arguments);
    }
    if !c.environment.is_empty() {
        out["environment"] = json!({"variables": c.environment.iter().map(|v| json!({"name": v.name, "value": v.value})).collect::<Vec<_>>()});
    }
    if !c.user.is_empty() {
        out["user"] = json!(c.user);
    }
    out
}

/// One RecordIO record: the payload's length in bytes, a newline, the
/// payload (compact JSON, ASCII: serde_json escapes nothing it need not, and
/// Mesos clients read bytes, so non-ASCII text is passed as UTF-8).
pub fn record(v: &Value) -> Vec<u8> {
    let payload = ascii_json(v);
    format!("{}\n{payload}", payload.len()).into_bytes()
}

/// Compact JSON with every non-ASCII character escaped (`\uXXXX`, UTF-16
/// surrogate pairs beyond the BMP). Such characters occur only inside
/// strings, where the escape means the same.
pub fn ascii_json(v: &Value) -> String {
    let s = v.to_string();
    if s.is_ascii() {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The check Mesos makes of a call's `Content-Type` (JSON only here; media
/// type parameters such as `charset` tolerated): `Err` is the HTTP status
/// and message to answer with.
pub fn check_json_content_type(header: Option<&str>) -> Result<(), (u16, String)> {
    let media = header.map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        None => Err((400, "Expecting 'Content-Type' to be present".into())),
        Some("application/json") => Ok(()),
        Some("application/x-protobuf") => Err((
            415,
            "Cairn takes application/json here; protobuf encoding is not supported".into(),
        )),
        Some(other) => Err((
            415,
            format!("Expecting 'Content-Type' of application/json, not {other:?}"),
        )),
    }
}
