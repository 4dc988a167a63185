//! The executor link: executors connect back to their agent over loopback,
//! subscribe, send status updates, and receive launches, kills and
//! acknowledgements.

use cairn_agent_core::Input;
use cairn_model::convert::task_status_from_pb;
use cairn_model::runtime::NotifyOnDrop;
use cairn_model::{ExecutorId, FrameworkId, Source};
use cairn_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::driver::{CONNECTION_QUEUE, Command, Handle};

/// Largest framework message an executor may send (as on the Mesos API).
const MAX_MESSAGE_DATA: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ExecutorLinkService {
    pub handle: Handle,
    /// With TLS: a session must carry its executor's token.
    pub key: Option<std::sync::Arc<cairn_tls::ExecutorKey>>,
}

type EventStream = NotifyOnDrop<ReceiverStream<Result<pb::ExecutorEvent, Status>>>;

fn stopped(_: crate::driver::Stopped) -> Status {
    Status::unavailable("the agent is shutting down")
}

#[tonic::async_trait]
impl pb::executor_link_server::ExecutorLink for ExecutorLinkService {
    type SessionStream = EventStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::ExecutorMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the session ended before SUBSCRIBE"))?;
        let Some(pb::executor_message::Message::Subscribe(sub)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message must be SUBSCRIBE",
            ));
        };
        let framework_id = FrameworkId::parse("subscribe.framework_id", &sub.framework_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let executor_id = ExecutorId::parse("subscribe.executor_id", &sub.executor_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(key) = &self.key {
            key.verify(
                authorization.as_deref(),
                framework_id.as_str(),
                executor_id.as_str(),
            )
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        }
        let conn = self.handle.new_conn();
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        self.handle
            .send(Command::AttachExecutor {
                conn,
                sink: tx.clone(),
            })
            .await
            .map_err(stopped)?;
        self.handle
            .input(Input::ExecutorSubscribed {
                conn,
                framework_id,
                executor_id,
            })
            .await
            .map_err(stopped)?;
        // Updates the executor sent before a restart of the agent, which the
        // agent may not have stored: taken again (duplicates are harmless).
        let mut replay = Vec::new();
        for (i, s) in sub.unacknowledged_updates.iter().enumerate() {
            match task_status_from_pb(
                &format!("subscribe.unacknowledged_updates[{i}]"),
                s,
                Source::Executor,
            ) {
                Ok(status) => replay.push(status),
                Err(e) => return Err(Status::invalid_argument(e.to_string())),
            }
        }
        for status in replay {
            let _ = self
                .handle
                .input(Input::ExecutorUpdate {
                    conn,
                    status,
                    limitation: None,
                })
                .await;
        }
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => break,
                };
                match msg.message {
                    Some(pb::executor_message::Message::Update(u)) => {
                        let Some(status) = u.status else { continue };
                        match task_status_from_pb("update.status", &status, Source::Executor) {
                            Ok(status) => {
                                if handle
                                    .input(Input::ExecutorUpdate {
                                        conn,
                                        status,
                                        limitation: None,
                                    })
                                    .await
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            Err(e) => {
                                let _ = tx.try_send(Err(Status::invalid_argument(e.to_string())));
                                break;
                            }
                        }
                    }
                    Some(pb::executor_message::Message::FrameworkMessage(m)) => {
                        if m.data.len() > MAX_MESSAGE_DATA {
                            tracing::warn!(
                                conn = conn.0,
                                bytes = m.data.len(),
                                "an executor's framework message over 1 MiB dropped"
                            );
                            continue;
                        }
                        if handle
                            .input(Input::ExecutorMessage { conn, data: m.data })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Some(pb::executor_message::Message::Subscribe(_)) | None => {
                        let _ = tx.try_send(Err(Status::invalid_argument(
                            "SUBSCRIBE is only valid as the first message",
                        )));
                        break;
                    }
                }
            }
            handle.input_later(Input::ExecutorDisconnected { conn });
        });
        let handle = self.handle.clone();
        Ok(Response::new(NotifyOnDrop::new(
            ReceiverStream::new(rx),
            move || {
                handle.input_later(Input::ExecutorDisconnected { conn });
            },
        )))
    }
}
