//! The Mesos v1 executor API door: `POST /api/v1/executor`, so that a
//! framework's own executor (any program, pymesos's among them) runs its
//! tasks on Cairn. It is a second door into the agent's core beside the
//! native executor link: SUBSCRIBE opens a chunked RecordIO stream of the
//! same executor commands in Mesos shapes (SUBSCRIBED, LAUNCH, KILL,
//! ACKNOWLEDGED, SHUTDOWN); UPDATE goes to the core as the native link's
//! updates do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_agent_core::{ExecConn, Input};
use cairn_model::convert::{framework_info_to_pb, task_status_from_pb};
use cairn_model::mesos_json::{command_json, id_json, record, task_info_json};
use cairn_model::runtime::NotifyOnDrop;
use cairn_model::{ExecutorId, FrameworkId, Source};
use cairn_proto as pb;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::driver::{CONNECTION_QUEUE, Command, Handle};

/// Largest message an executor may send its framework (the master takes
/// no more).
const MAX_MESSAGE_DATA: usize = 1024 * 1024;

/// Subscribed Mesos executors: UPDATE calls arrive on their own requests
/// and are matched to the executor's stream by its ids.
pub type Subscribed = Arc<Mutex<HashMap<(FrameworkId, ExecutorId), ExecConn>>>;

#[derive(Clone, Debug)]
pub struct ExecutorDoor {
    pub handle: Handle,
    pub subscribed: Subscribed,
    /// `ip:port` of this agent, and its hostname.
    pub endpoint: String,
    pub hostname: String,
    /// With TLS: every call must carry its executor's token.
    pub key: Option<std::sync::Arc<cairn_tls::ExecutorKey>>,
}

impl ExecutorDoor {
    /// The stream of a subscribed executor, which its calls act through.
    fn conn_of(&self, framework_id: &FrameworkId, executor_id: &ExecutorId) -> Option<ExecConn> {
        let m = self.subscribed.lock().ok()?;
        m.get(&(framework_id.clone(), executor_id.clone())).copied()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (status, body).into_response()
}

fn id_of(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(|x| x.get("value"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("Missing required fields: {key}"))
}

/// A Mesos TaskStatus from an executor, as the native wire message.
/// Executors leave out agent_id and executor_id; the agent fills them in.
fn status_pb(v: &Value) -> Result<pb::TaskStatus, String> {
    let state = v
        .get("state")
        .and_then(Value::as_str)
        .ok_or("Missing required fields: status.state")?;
    let state =
        pb::TaskState::from_str_name(state).ok_or(format!("unknown task state {state:?}"))?;
    let uuid = match v.get("uuid").and_then(Value::as_str) {
        Some(u) => B64
            .decode(u.as_bytes())
            .map_err(|e| format!("status.uuid: not base64: {e}"))?,
        None => Vec::new(),
    };
    Ok(pb::TaskStatus {
        task_id: id_of(v, "task_id")?,
        state: state as i32,
        message: v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        source: pb::Source::Executor as i32,
        reason: v
            .get("reason")
            .and_then(Value::as_str)
            .and_then(pb::Reason::from_str_name)
            .map_or(0, |r| r as i32),
        timestamp: v.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0),
        uuid,
        healthy: v.get("healthy").and_then(Value::as_bool),
        ..Default::default()
    })
}

/// An executor command in Mesos's shape.
fn event_json(e: &pb::ExecutorEvent) -> Option<Value> {
    use pb::executor_event::Event as E;
    Some(match e.event.as_ref()? {
        E::Launch(l) => {
            let role = l
                .framework
                .as_ref()
                .and_then(|f| f.roles.first().cloned())
                .unwrap_or_else(|| "*".into());
            json!({"type": "LAUNCH", "launch": {"task": task_info_json(l.task.as_ref()?, &role)}})
        }
        E::Kill(k) => json!({"type": "KILL", "kill": {
            "task_id": id_json(&k.task_id),
            "kill_policy": {"grace_period": {"nanoseconds": k.grace_period_ms.saturating_mul(1_000_000)}},
        }}),
        E::Acknowledged(a) => json!({"type": "ACKNOWLEDGED", "acknowledged": {
            "task_id": id_json(&a.task_id),
            "uuid": B64.encode(&a.uuid),
        }}),
        E::Shutdown(_) => json!({"type": "SHUTDOWN"}),
        E::Message(m) => json!({"type": "MESSAGE", "message": {"data": B64.encode(&m.data)}}),
        // The native link's own greeting; the Mesos one is made here.
        E::Subscribed(_) => return None,
    })
}

pub async fn executor_api(
    State(door): State<ExecutorDoor>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    if let Err((code, message)) = cairn_model::mesos_json::check_json_content_type(content_type) {
        return error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            message,
        );
    }
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into JSON: {e}"),
            );
        }
    };
    let ids = id_of(&call, "framework_id").and_then(|f| {
        let e = id_of(&call, "executor_id")?;
        let f = FrameworkId::parse("framework_id", &f).map_err(|e| e.to_string())?;
        let e = ExecutorId::parse("executor_id", &e).map_err(|e| e.to_string())?;
        Ok((f, e))
    });
    let (framework_id, executor_id) = match ids {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    // Every call speaks for the executor it names: only with that
    // executor's token (Mesos answers 401 the same way).
    if let Some(key) = &door.key {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = key.verify(authorization, framework_id.as_str(), executor_id.as_str()) {
            return error(StatusCode::UNAUTHORIZED, e.to_string());
        }
    }
    match call.get("type").and_then(Value::as_str) {
        Some("SUBSCRIBE") => subscribe(door, framework_id, executor_id, &call).await,
        Some("UPDATE") => {
            let Some(conn) = door.conn_of(&framework_id, &executor_id) else {
                return error(StatusCode::FORBIDDEN, "Executor is not subscribed");
            };
            let status = call
                .get("update")
                .and_then(|u| u.get("status"))
                .ok_or_else(|| "Missing required fields: update.status".to_string())
                .and_then(status_pb)
                .and_then(|s| {
                    task_status_from_pb("update.status", &s, Source::Executor)
                        .map_err(|e| e.to_string())
                });
            match status {
                Ok(status) => match door
                    .handle
                    .input(Input::ExecutorUpdate {
                        conn,
                        status,
                        limitation: None,
                    })
                    .await
                {
                    Ok(()) => StatusCode::ACCEPTED.into_response(),
                    Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
                },
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        Some("MESSAGE") => {
            let Some(conn) = door.conn_of(&framework_id, &executor_id) else {
                return error(StatusCode::FORBIDDEN, "Executor is not subscribed");
            };
            let data = call
                .get("message")
                .and_then(|m| m.get("data"))
                .and_then(Value::as_str)
                .ok_or_else(|| "Missing required fields: message.data".to_string())
                .and_then(|d| {
                    B64.decode(d.as_bytes())
                        .map_err(|e| format!("message.data: not base64: {e}"))
                });
            match data {
                Ok(data) if data.len() <= MAX_MESSAGE_DATA => {
                    match door
                        .handle
                        .input(Input::ExecutorMessage { conn, data })
                        .await
                    {
                        Ok(()) => StatusCode::ACCEPTED.into_response(),
                        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
                    }
                }
                Ok(data) => error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "message.data: {} bytes; at most {MAX_MESSAGE_DATA}",
                        data.len()
                    ),
                ),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            format!("Unknown call type {other:?}"),
        ),
        None => error(StatusCode::BAD_REQUEST, "Missing required fields: type"),
    }
}

async fn subscribe(
    door: ExecutorDoor,
    framework_id: FrameworkId,
    executor_id: ExecutorId,
    call: &Value,
) -> Response {
    let Ok(report) = door.handle.report().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    };
    // Only a framework's own executor that this agent launched subscribes
    // here (command executors use the native link).
    let found = report.tasks.iter().find_map(|t| {
        let exec = t.task.executor.clone()?;
        (t.framework_id == framework_id && t.executor_id == executor_id && !t.state.is_terminal())
            .then_some((t, exec))
    });
    let Some((task, exec)) = found else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("Unknown executor {executor_id} of framework {framework_id}"),
        );
    };
    let Some(framework) = report
        .frameworks
        .iter()
        .find(|f| f.id.as_ref() == Some(&framework_id))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("Unknown framework {framework_id}"),
        );
    };
    let fw = framework_info_to_pb(framework);
    let subscribed = json!({"type": "SUBSCRIBED", "subscribed": {
        "executor_info": {
            "executor_id": id_json(executor_id.as_str()),
            "framework_id": id_json(framework_id.as_str()),
            "name": exec.name,
            "type": "CUSTOM",
            "command": command_json(&cairn_model::convert::command_to_pb(&exec.command)),
        },
        "framework_info": {
            "id": id_json(&fw.id),
            "name": fw.name,
            "user": fw.user,
            "roles": fw.roles,
            "failover_timeout": fw.failover_timeout_secs,
            "checkpoint": fw.checkpoint,
            "hostname": fw.hostname,
        },
        "agent_info": {
            "id": id_json(&report.agent_id.as_ref().map(ToString::to_string).unwrap_or_default()),
            "hostname": door.hostname,
            "port": door.endpoint.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(0),
        },
        "container_id": id_json(&task.container_id.as_ref().map(ToString::to_string).unwrap_or_default()),
    }});

    let conn = door.handle.new_conn();
    let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
    if door
        .handle
        .send(Command::AttachExecutor { conn, sink: tx })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    }
    let key = (framework_id.clone(), executor_id.clone());
    if let Ok(mut m) = door.subscribed.lock() {
        m.insert(key.clone(), conn);
    }
    let on_drop = {
        let handle = door.handle.clone();
        let subscribed = door.subscribed.clone();
        move || {
            if let Ok(mut m) = subscribed.lock()
                && m.get(&key) == Some(&conn)
            {
                m.remove(&key);
            }
            handle.input_later(Input::ExecutorDisconnected { conn });
        }
    };
    let events = NotifyOnDrop::new(ReceiverStream::new(rx), on_drop);
    if door
        .handle
        .input(Input::ExecutorSubscribed {
            conn,
            framework_id,
            executor_id,
        })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    }
    // Updates sent before a restart of the agent that it may not have
    // stored: taken again (the core drops duplicates).
    let replay = call
        .get("subscribe")
        .and_then(|s| s.get("unacknowledged_updates"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for u in replay {
        if let Some(status) = u
            .get("status")
            .and_then(|s| status_pb(s).ok())
            .and_then(|s| task_status_from_pb("status", &s, Source::Executor).ok())
        {
            let _ = door
                .handle
                .input(Input::ExecutorUpdate {
                    conn,
                    status,
                    limitation: None,
                })
                .await;
        }
    }
    let rest = events.filter_map(|item| {
        std::future::ready(match item {
            Ok(e) => event_json(&e).map(|v| Ok(Bytes::from(record(&v)))),
            Err(status) => Some(Err(std::io::Error::other(status.message().to_string()))),
        })
    });
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(record(&subscribed)))])
        .chain(rest.take_while(|r| std::future::ready(r.is_ok())));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
