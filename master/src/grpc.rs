//! The gRPC doors into the core: the Scheduler API for frameworks and the
//! agent link. Handlers only convert and forward; the core decides.

use cairn_master_core::{CallError, Input};
use cairn_model::convert::usage_from_pb;
use cairn_model::runtime::NotifyOnDrop;
use cairn_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{call_from_pb, register_from_pb, status_update_from_pb, subscribe_from_pb};
use crate::driver::{CONNECTION_QUEUE, Handle, Item, Sink, Stopped};

/// Largest message accepted from a client (4 MiB, tonic's default, stated).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

impl From<Stopped> for Status {
    fn from(_: Stopped) -> Status {
        Status::unavailable("the master is shutting down")
    }
}

pub fn call_error_status(e: &CallError) -> Status {
    match e {
        CallError::UnknownFramework(_) => Status::not_found(e.to_string()),
        CallError::RemovedFramework(_) => Status::permission_denied(e.to_string()),
        CallError::NotSubscribed(_) | CallError::StaleStream { .. } => {
            Status::failed_precondition(e.to_string())
        }
        CallError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        CallError::Forbidden(_) => Status::permission_denied(e.to_string()),
    }
}

/// A connection's outbound stream: a first message already taken from the
/// queue (if any), then the queue. When the client goes away (or the driver
/// closes the stream), dropping it reports the disconnection to the core.
/// The first message stays boxed: the stream lives as long as its
/// connection, and an unboxed message would add its size to every agent's.
pub type ConnStream<T> = NotifyOnDrop<
    tokio_stream::adapters::Chain<
        Unboxed<tokio_stream::Iter<std::option::IntoIter<Item<T>>>, T>,
        Unboxed<ReceiverStream<Item<T>>, T>,
    >,
>;

type Unboxed<S, T> = tokio_stream::adapters::Map<S, fn(Item<T>) -> Result<T, Status>>;

/// How long a session's handler waits for the core's answer to REGISTER
/// before answering with headers alone.
const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

// The queue's items arrive boxed (see `Item`); tonic takes them unboxed.
#[allow(clippy::boxed_local)]
fn unbox<T>(item: Item<T>) -> Result<T, Status> {
    *item
}

fn conn_stream<T>(
    first: Option<Item<T>>,
    rx: mpsc::Receiver<Item<T>>,
    handle: Handle,
    on_drop: Input,
) -> ConnStream<T> {
    use tokio_stream::StreamExt;
    let unbox = unbox::<T> as fn(Item<T>) -> Result<T, Status>;
    let stream = tokio_stream::iter(first)
        .map(unbox)
        .chain(ReceiverStream::new(rx).map(unbox));
    NotifyOnDrop::new(stream, move || handle.send_later(on_drop))
}

#[derive(Debug, Clone)]
pub struct SchedulerService {
    pub handle: Handle,
    pub auth: std::sync::Arc<crate::auth::Auth>,
}

/// Verdicts of a `Calls` stream waiting to be answered, in call order.
const CALLS_IN_FLIGHT: usize = 4096;

fn call_result(seq: u64, status: Option<&Status>) -> pb::CallResult {
    match status {
        None => pb::CallResult {
            seq,
            code: 0,
            message: String::new(),
        },
        Some(s) => pb::CallResult {
            seq,
            code: s.code() as i32,
            message: s.message().to_string(),
        },
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = ConnStream<pb::Event>;
    type CallsStream = ReceiverStream<Result<pb::CallResult, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let principal = self.auth.authenticate_grpc(request.metadata())?;
        self.auth
            .allow_subscription(principal.as_deref())
            .map_err(|e| e.status())?;
        let (info, suppressed_roles) = subscribe_from_pb(request.get_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let conn = self.handle.new_conn();
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        self.handle.attach(conn, Sink::Framework(tx)).await?;
        self.handle
            .send(Input::Subscribe {
                conn,
                info,
                suppressed_roles,
                principal,
            })
            .await?;
        Ok(Response::new(conn_stream(
            None,
            rx,
            self.handle.clone(),
            Input::FrameworkDisconnected { conn },
        )))
    }

    async fn call(
        &self,
        request: Request<pb::SchedulerCall>,
    ) -> Result<Response<pb::CallReply>, Status> {
        self.auth.authenticate_grpc(request.metadata())?;
        let (framework_id, stream_id, call) =
            call_from_pb(request.get_ref()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let verdict = self
            .handle
            .call(Input::Call {
                framework_id,
                stream_id,
                call,
            })
            .await?;
        verdict
            .map(|()| Response::new(pb::CallReply {}))
            .map_err(|e| call_error_status(&e))
    }

    async fn calls(
        &self,
        request: Request<Streaming<pb::SchedulerCall>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        self.auth.authenticate_grpc(request.metadata())?;
        let mut inbound = request.into_inner();
        let (out, rx) = mpsc::channel(CALLS_IN_FLIGHT);
        // One task reads the calls and hands them to the core in order;
        // another answers them as their verdicts come, also in order.
        let (verdicts, mut waiting) = mpsc::channel::<(u64, VerdictOrError)>(CALLS_IN_FLIGHT);
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                let call = match inbound.message().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "a framework's call stream ended");
                        break;
                    }
                };
                let seq = call.seq;
                let pending = match call_from_pb(&call) {
                    Err(e) => VerdictOrError::Error(Status::invalid_argument(e.to_string())),
                    Ok((framework_id, stream_id, call)) => match handle
                        .submit(Input::Call {
                            framework_id,
                            stream_id,
                            call,
                        })
                        .await
                    {
                        Ok(rx) => VerdictOrError::Verdict(rx),
                        Err(stopped) => VerdictOrError::Error(stopped.into()),
                    },
                };
                if verdicts.send((seq, pending)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some((seq, pending)) = waiting.recv().await {
                let status = match pending {
                    VerdictOrError::Error(s) => Some(s),
                    VerdictOrError::Verdict(rx) => match rx.await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(call_error_status(&e)),
                        Err(_) => Some(Stopped.into()),
                    },
                };
                if out
                    .send(Ok(call_result(seq, status.as_ref())))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A call on a `Calls` stream: waiting for the core, or refused before it.
enum VerdictOrError {
    Verdict(tokio::sync::oneshot::Receiver<Result<(), CallError>>),
    Error(Status),
}

#[derive(Debug, Clone)]
pub struct AgentLinkService {
    pub handle: Handle,
    pub auth: std::sync::Arc<crate::auth::Auth>,
    /// The master speaks TLS with a cluster CA: agents must present the
    /// certificate they joined with, and speak only for its agent id.
    pub tls: bool,
}

/// The agent id a session may register as: with TLS, only the one the
/// agent's certificate names (a first registration takes it as its own).
fn certified_agent_id(
    tls: bool,
    peer: Option<&cairn_tls::Peer>,
    declared: Option<cairn_model::AgentId>,
) -> Result<Option<cairn_model::AgentId>, Status> {
    if !tls {
        return Ok(declared);
    }
    match peer.and_then(|p| p.role.as_ref()) {
        Some(cairn_tls::Role::Agent { id }) => {
            let certified = cairn_model::AgentId::parse("certificate agent id", id)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            match declared {
                Some(d) if d != certified => Err(Status::permission_denied(format!(
                    "this certificate is agent {certified}'s; it cannot register as agent {d}"
                ))),
                _ => Ok(Some(certified)),
            }
        }
        Some(cairn_tls::Role::Master) => Err(Status::permission_denied(
            "a master's certificate cannot register as an agent",
        )),
        None => Err(Status::unauthenticated(
            "agents must present the certificate they joined with (cairn-agent --join TOKEN)",
        )),
    }
}

#[tonic::async_trait]
impl pb::agent_link_server::AgentLink for AgentLinkService {
    type SessionStream = ConnStream<pb::MasterMessage>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        self.auth.authenticate_grpc(request.metadata())?;
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<cairn_tls::Peer>>()
            .map(|c| c.0.clone());
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the session ended before REGISTER"))?;
        let Some(pb::agent_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message of a session must be REGISTER",
            ));
        };
        let mut reg =
            register_from_pb(&register).map_err(|e| Status::invalid_argument(e.to_string()))?;
        reg.agent_id = certified_agent_id(self.tls, peer.as_ref(), reg.agent_id)?;
        // An agent that joined serves its API with its certificate: its
        // URL is HTTPS whatever it says.
        reg.info.tls = self.tls;
        let conn = self.handle.new_conn();
        let (tx, mut rx) = mpsc::channel(CONNECTION_QUEUE);
        self.handle.attach(conn, Sink::Agent(tx.clone())).await?;
        self.handle
            .send(Input::AgentRegister {
                conn,
                agent_id: reg.agent_id,
                info: reg.info,
                tasks: reg.tasks,
                frameworks: reg.frameworks,
            })
            .await?;
        let handle = self.handle.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(conn = conn.0, %status, "agent session ended");
                        break;
                    }
                };
                let input = match msg.message {
                    Some(pb::agent_message::Message::Heartbeat(_)) => {
                        Input::AgentHeartbeat { conn }
                    }
                    Some(pb::agent_message::Message::StatusUpdate(u)) => {
                        match status_update_from_pb(&u) {
                            Ok((framework_id, status)) => Input::AgentStatusUpdate {
                                conn,
                                framework_id,
                                status,
                            },
                            Err(e) => {
                                // A malformed update is an agent bug: the
                                // session ends with the reason, and the agent
                                // re-registers.
                                tracing::warn!(conn = conn.0, error = %e, "malformed status update from agent");
                                let _ = tx.try_send(Box::new(Err(Status::invalid_argument(
                                    e.to_string(),
                                ))));
                                break;
                            }
                        }
                    }
                    Some(pb::agent_message::Message::FrameworkMessage(m)) => {
                        let ids = cairn_model::FrameworkId::parse(
                            "framework_message.framework_id",
                            &m.framework_id,
                        )
                        .and_then(|f| {
                            Ok((
                                f,
                                cairn_model::ExecutorId::parse(
                                    "framework_message.executor_id",
                                    &m.executor_id,
                                )?,
                            ))
                        });
                        match ids {
                            Ok((framework_id, executor_id))
                                if m.data.len() <= crate::convert::MAX_MESSAGE_DATA =>
                            {
                                Input::AgentFrameworkMessage {
                                    conn,
                                    framework_id,
                                    executor_id,
                                    data: m.data,
                                }
                            }
                            _ => {
                                tracing::warn!(
                                    conn = conn.0,
                                    "malformed framework message from agent dropped"
                                );
                                continue;
                            }
                        }
                    }
                    Some(pb::agent_message::Message::Usage(u)) => {
                        let executors: Result<Vec<_>, _> = u
                            .executors
                            .iter()
                            .enumerate()
                            .map(|(i, e)| usage_from_pb(&format!("usage.executors[{i}]"), e))
                            .collect();
                        match executors {
                            Ok(executors) => Input::AgentUsage { conn, executors },
                            Err(e) => {
                                tracing::warn!(conn = conn.0, error = %e, "malformed usage report ignored");
                                continue;
                            }
                        }
                    }
                    Some(pb::agent_message::Message::Register(_)) | None => {
                        let _ = tx.try_send(Box::new(Err(Status::invalid_argument(
                            "REGISTER is only valid as the first message of a session",
                        ))));
                        break;
                    }
                };
                if handle.send(input).await.is_err() {
                    break;
                }
            }
            // The response stream's drop reports the disconnection too; the
            // core takes only the first.
            handle.send_later(Input::AgentDisconnected { conn });
        });
        // The response's headers go out with the core's answer (REGISTERED,
        // or the reason the session is refused) rather than before it: one
        // write and one wake-up of the agent instead of two, for each of
        // the thousands of agents that re-register at once after a failover.
        let first = tokio::time::timeout(FIRST_ANSWER_WAIT, rx.recv())
            .await
            .ok()
            .flatten();
        Ok(Response::new(conn_stream(
            first,
            rx,
            self.handle.clone(),
            Input::AgentDisconnected { conn },
        )))
    }
}
