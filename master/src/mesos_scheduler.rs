//! The Mesos v1 scheduler API door: `POST /api/v1/scheduler`.
//!
//! A call is read as Mesos JSON, converted to the native wire call and
//! checked by the same code as a gRPC call (`convert.rs`); the core decides.
//! SUBSCRIBE answers `200` with a chunked RecordIO stream of the core's
//! events in Mesos shapes (SUBSCRIBED, then at once a HEARTBEAT); every other
//! well-formed call answers `202` with an empty body, its effects arriving as
//! events. Standbys never reach this code: the front door redirects.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_master_core::{Call, CallError, Event, Input, LaunchRequest};
use cairn_model::TaskId;
use cairn_model::runtime::NotifyOnDrop;
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::convert::{call_from_pb, event_to_pb, subscribe_from_pb};
use crate::driver::{CONNECTION_QUEUE, Sink};
use crate::http::HttpState;
use crate::mesos_json::{SchedulerCall, event_json, record, scheduler_call};

pub const STREAM_ID_HEADER: &str = "mesos-stream-id";

/// How long SUBSCRIBE waits for the core's answer (it may wait for a
/// registry write) before answering 503.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A refusal: its status and message.
type Refusal = (StatusCode, String);

fn check_content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    cairn_model::mesos_json::check_json_content_type(value).map_err(|(code, message)| {
        (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            message,
        )
    })
}

/// SUBSCRIBE's `Accept`: none, JSON or a wildcard.
fn check_accept(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(());
    };
    let ok = accept.to_str().unwrap_or("").split(',').any(|part| {
        let t = part.split(';').next().unwrap_or("").trim();
        matches!(t, "application/json" | "*/*" | "application/*" | "")
    });
    if ok {
        Ok(())
    } else {
        Err((
            StatusCode::NOT_ACCEPTABLE,
            "Cairn streams application/json only".into(),
        ))
    }
}

pub async fn scheduler(
    State(s): State<HttpState>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = principal.and_then(|p| p.0.0);
    if let Err((status, message)) = check_content_type(&headers) {
        return error(status, message);
    }
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body into JSON: {e}"),
            );
        }
    };
    let call = match scheduler_call(&json) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Failed to convert JSON into Call protobuf: {e}"),
            );
        }
    };
    let stream_id = headers
        .get(STREAM_ID_HEADER)
        .map(|v| v.to_str().unwrap_or("").to_string());
    match call {
        SchedulerCall::Subscribe(req) => {
            if let Err((status, message)) = check_accept(&headers) {
                return error(status, message);
            }
            if stream_id.is_some() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Subscribe calls should not include the 'Mesos-Stream-Id' header",
                );
            }
            if let Err(e) = s.auth.allow_subscription(principal.as_deref()) {
                return e.response();
            }
            subscribe(s, req, principal).await
        }
        SchedulerCall::Ignored(_) => StatusCode::ACCEPTED.into_response(),
        SchedulerCall::Call {
            mut call,
            malformed,
        } => {
            // UPDATE_FRAMEWORK answers 200, every other call 202 (Mesos).
            let done = if matches!(
                call.call,
                Some(cairn_proto::scheduler_call::Call::UpdateFramework(_))
            ) {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let Some(stream_id) = stream_id else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                );
            };
            call.stream_id = stream_id;
            let (framework_id, stream_id, mut call) = match call_from_pb(&call) {
                Ok(c) => c,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("Invalid call: {e}"));
                }
            };
            if let Call::Accept { launches, .. } = &mut call {
                for (task_id, reason) in malformed {
                    match TaskId::parse("task_id", &task_id) {
                        Ok(task_id) => launches.push(LaunchRequest::Malformed { task_id, reason }),
                        Err(e) => {
                            return error(StatusCode::BAD_REQUEST, format!("Invalid call: {e}"));
                        }
                    }
                }
            }
            match s
                .handle
                .call(Input::Call {
                    framework_id,
                    stream_id,
                    call,
                })
                .await
            {
                Ok(Ok(())) => done.into_response(),
                Ok(Err(e)) => call_error(&e),
                Err(stopped) => error(StatusCode::SERVICE_UNAVAILABLE, stopped.to_string()),
            }
        }
    }
}

/// The spec's status codes for a call the core refused.
fn call_error(e: &CallError) -> Response {
    let status = match e {
        CallError::UnknownFramework(_)
        | CallError::StaleStream { .. }
        | CallError::Invalid { .. } => StatusCode::BAD_REQUEST,
        CallError::Forbidden(_) => StatusCode::FORBIDDEN,
        CallError::NotSubscribed(_) | CallError::RemovedFramework(_) => StatusCode::FORBIDDEN,
    };
    error(status, e.to_string())
}

async fn subscribe(
    s: HttpState,
    req: cairn_proto::SubscribeRequest,
    principal: Option<String>,
) -> Response {
    let (info, suppressed_roles) = match subscribe_from_pb(&req) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Invalid call: {e}")),
    };
    let handle = s.handle.clone();
    let conn = handle.new_conn();
    let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
    if handle.attach(conn, Sink::HttpFramework(tx)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the master is stopping");
    }
    // From here on, however this ends (answered, refused, or the client
    // gone), the core hears that the connection ended.
    let on_drop = {
        let handle = handle.clone();
        move || handle.send_later(Input::FrameworkDisconnected { conn })
    };
    let mut events = NotifyOnDrop::new(ReceiverStream::new(rx), on_drop);
    if handle
        .send(Input::Subscribe {
            conn,
            info,
            suppressed_roles,
            principal,
        })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the master is stopping");
    }
    let first = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, events.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(reason))) => return error(StatusCode::SERVICE_UNAVAILABLE, reason),
        Ok(None) => return error(StatusCode::SERVICE_UNAVAILABLE, "the master is stopping"),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the subscription was not answered in time; retry",
            );
        }
    };
    let stream_id = match &first {
        Event::Subscribed { stream_id, .. } => Some(stream_id.clone()),
        _ => None,
    };
    let info = handle.info.clone();
    let format =
        move |e: &Event| event_json(&event_to_pb(e, &info), &info).map(|v| Bytes::from(record(&v)));
    let mut head: Vec<Bytes> = format(&first).into_iter().collect();
    if stream_id.is_some() {
        // Mesos starts the heartbeats right after SUBSCRIBED.
        head.extend(format(&Event::Heartbeat));
    }
    let rest = events.filter_map(move |item| {
        let out = match item {
            Ok(e) => format(&e).map(Ok),
            // The core closed the stream (replaced or torn down): end it.
            Err(reason) => Some(Err(std::io::Error::other(reason))),
        };
        std::future::ready(out)
    });
    let body = futures::stream::iter(head.into_iter().map(Ok::<_, std::io::Error>))
        .chain(rest.take_while(|r| std::future::ready(r.is_ok())));
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = stream_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        h.insert(STREAM_ID_HEADER, id);
    }
    response
}
