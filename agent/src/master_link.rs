//! The agent's session with the master: register (or re-register with its
//! id and tasks), heartbeat, take commands; reconnect with backoff whenever the
//! session ends.

use std::sync::Arc;
use std::time::Duration;

use cairn_agent_core::Input;
use cairn_model::convert::{
    agent_info_to_pb, framework_info_from_pb, framework_info_to_pb, kill_policy_from_pb,
    task_info_from_pb, task_info_to_pb, task_state_to_pb, usage_to_pb,
};
use cairn_model::zk::MasterAddr;
use cairn_model::{AgentId, AgentInfo, ExecutorId, FrameworkId, StatusUuid, TaskId};
use cairn_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::driver::{CONNECTION_QUEUE, Command, Handle};
use crate::launcher::Launcher;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where and how often usage reports come from.
#[derive(Clone, Debug)]
pub struct UsageReports {
    pub launcher: Arc<dyn Launcher>,
    pub interval: Duration,
}

/// Keeps a session with the leading master until the driver stops:
/// `master` is an address, or a ZooKeeper URL whose leader is followed. When
/// the leader changes the session moves to the new one at once, and from
/// then on messages from an older epoch are dropped.
/// `authorization`: this agent's credential for the master, if any.
pub async fn run(
    handle: Handle,
    master: MasterAddr,
    tls: Option<cairn_tls::ClientConfig>,
    info: AgentInfo,
    usage: UsageReports,
    authorization: Option<String>,
) {
    let mut leaders = cairn_model::zk::follow(master.clone());
    let mut backoff = BACKOFF_MIN;
    // Messages from a master with an older epoch than one already seen are
    // from a deposed leader and are dropped.
    let mut newest_epoch = 0u64;
    loop {
        let leader = leaders.borrow_and_update().clone();
        let Some(leader) = leader else {
            tracing::info!(%master, "no leading master; waiting for one");
            if leaders.changed().await.is_err() {
                return;
            }
            continue;
        };
        newest_epoch = newest_epoch.max(leader.epoch);
        let endpoint = leader.endpoint.clone();
        let mut leader_changed = false;
        tokio::select! {
            r = session(&handle, &endpoint, tls.as_ref(), &info, &usage, authorization.as_deref(), &mut newest_epoch) => match r {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    tracing::warn!(master = %endpoint, "master session ended; reconnecting");
                }
                Err(SessionError::Stopped) => return,
                Err(e) => {
                    tracing::warn!(master = %endpoint, error = %e, "cannot hold a master session; retrying in {backoff:?}");
                }
            },
            r = leaders.changed() => {
                if r.is_err() {
                    return;
                }
                tracing::info!(old = %endpoint, "the leading master changed; moving the session");
                leader_changed = true;
                backoff = BACKOFF_MIN;
            }
        }
        let _ = handle.send(Command::MasterSession(None)).await;
        if handle.input(Input::MasterDisconnected).await.is_err() {
            return;
        }
        if leader_changed {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            r = leaders.changed() => {
                if r.is_err() {
                    return;
                }
                // A new leader is tried at once, with a fresh backoff: the
                // failures so far were the old one's.
                backoff = BACKOFF_MIN;
                continue;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the master refused the session: {0}")]
    Refused(#[from] tonic::Status),
    #[error("the agent is stopping")]
    Stopped,
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<crate::driver::Stopped> for SessionError {
    fn from(_: crate::driver::Stopped) -> Self {
        SessionError::Stopped
    }
}

async fn session(
    handle: &Handle,
    master: &str,
    tls: Option<&cairn_tls::ClientConfig>,
    info: &AgentInfo,
    usage: &UsageReports,
    authorization: Option<&str>,
    newest_epoch: &mut u64,
) -> Result<(), SessionError> {
    let channel = match tls {
        Some(config) => cairn_tls::grpc_connect(master, config.clone(), Duration::from_secs(5))
            .await
            .map_err(|e| SessionError::Tls(e.to_string()))?,
        None => {
            tonic::transport::Endpoint::from_shared(format!("http://{master}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect()
                .await?
        }
    };
    let mut client = pb::agent_link_client::AgentLinkClient::new(channel);
    let report = handle.report().await?;
    let register = pb::RegisterAgent {
        agent_id: report
            .agent_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        info: Some(agent_info_to_pb(info)),
        tasks: report
            .tasks
            .iter()
            .map(|t| pb::TaskReport {
                framework_id: t.framework_id.to_string(),
                task: Some(task_info_to_pb(&t.task)),
                state: task_state_to_pb(t.state) as i32,
            })
            .collect(),
        frameworks: report.frameworks.iter().map(framework_info_to_pb).collect(),
        version: cairn_model::VERSION.to_string(),
    };
    let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
    let _ = tx
        .send(pb::AgentMessage {
            message: Some(pb::agent_message::Message::Register(register)),
        })
        .await;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(a) = authorization.and_then(|a| a.parse().ok()) {
        request.metadata_mut().insert("authorization", a);
    }
    let mut inbound = client.session(request).await?.into_inner();
    handle
        .send(Command::MasterSession(Some(tx.clone())))
        .await?;

    let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(status) => break Err(SessionError::Refused(status)),
        };
        if msg.epoch < *newest_epoch {
            tracing::warn!(
                epoch = msg.epoch,
                newest = *newest_epoch,
                "dropping a message from a deposed master"
            );
            continue;
        }
        *newest_epoch = msg.epoch;
        let Some(message) = msg.message else { continue };
        match to_input(message) {
            Ok(Some((input, interval))) => {
                if let (Input::Registered { agent_id }, Some(interval)) = (&input, interval) {
                    tracing::info!(%agent_id, %master, "registered with the master");
                    if let Some(h) = heartbeat.take() {
                        h.abort();
                    }
                    heartbeat = Some(tokio::spawn(heartbeats(
                        tx.clone(),
                        interval,
                        handle.clone(),
                        usage.clone(),
                    )));
                }
                if handle.input(input).await.is_err() {
                    break Err(SessionError::Stopped);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "malformed message from the master ignored"),
        }
    };
    if let Some(h) = heartbeat.take() {
        h.abort();
    }
    result
}

/// Heartbeats every `interval`, and usage reports every `usage.interval`,
/// from registration on. REGISTERED has just shown the session alive, so the
/// first heartbeat is one interval later, and the first usage report comes
/// at a random point of its interval: after a failover every agent
/// re-registers with the new leader at once, and a heartbeat and a report
/// from each at that moment would double the leader's work when it is
/// busiest.
async fn heartbeats(
    tx: mpsc::Sender<pb::AgentMessage>,
    interval: Duration,
    handle: Handle,
    usage: UsageReports,
) {
    let now = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(now + interval, interval);
    let every = usage.interval.max(Duration::from_millis(100));
    let mut report = tokio::time::interval_at(now + every.mul_f64(rand::random::<f64>()), every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = report.tick() => {
                let Ok(containers) = handle.containers().await else { return };
                let launcher = usage.launcher.clone();
                let collected = tokio::task::spawn_blocking(move || crate::usage::collect(&launcher, &containers)).await;
                let Ok(executors) = collected else { continue };
                let msg = pb::AgentMessage {
                    message: Some(pb::agent_message::Message::Usage(pb::ResourceUsage {
                        executors: executors.iter().map(usage_to_pb).collect(),
                    })),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                continue;
            }
        }
        let hb = pb::AgentMessage {
            message: Some(pb::agent_message::Message::Heartbeat(pb::AgentHeartbeat {})),
        };
        if tx.send(hb).await.is_err() {
            return;
        }
    }
}

/// A master message as a core input (and, for REGISTERED, the heartbeat
/// interval).
fn to_input(
    m: pb::master_message::Message,
) -> Result<Option<(Input, Option<Duration>)>, cairn_model::ModelError> {
    use pb::master_message::Message as M;
    Ok(Some(match m {
        M::Registered(r) => {
            let interval = Duration::try_from_secs_f64(r.heartbeat_interval_seconds)
                .unwrap_or(Duration::from_secs(3))
                .max(Duration::from_millis(50));
            (
                Input::Registered {
                    agent_id: AgentId::parse("registered.agent_id", &r.agent_id)?,
                },
                Some(interval),
            )
        }
        M::RunTask(r) => {
            let Some(framework) = r.framework.as_ref() else {
                return Ok(None);
            };
            let Some(task) = r.task.as_ref() else {
                return Ok(None);
            };
            (
                Input::RunTask {
                    framework: framework_info_from_pb("run_task.framework", framework)?,
                    task: task_info_from_pb("run_task.task", task)?,
                },
                None,
            )
        }
        M::KillTask(k) => (
            Input::KillTask {
                framework_id: FrameworkId::parse("kill_task.framework_id", &k.framework_id)?,
                task_id: TaskId::parse("kill_task.task_id", &k.task_id)?,
                grace: kill_policy_from_pb(k.kill_policy.as_ref()).grace_period,
            },
            None,
        ),
        M::Acknowledge(a) => (
            Input::Acknowledge {
                framework_id: FrameworkId::parse("acknowledge.framework_id", &a.framework_id)?,
                task_id: TaskId::parse("acknowledge.task_id", &a.task_id)?,
                uuid: StatusUuid::from_slice("acknowledge.uuid", &a.uuid)?,
            },
            None,
        ),
        M::ShutdownFramework(s) => (
            Input::ShutdownFramework {
                framework_id: FrameworkId::parse(
                    "shutdown_framework.framework_id",
                    &s.framework_id,
                )?,
            },
            None,
        ),
        M::ShutdownExecutor(s) => (
            Input::ShutdownExecutor {
                framework_id: FrameworkId::parse(
                    "shutdown_executor.framework_id",
                    &s.framework_id,
                )?,
                executor_id: ExecutorId::parse("shutdown_executor.executor_id", &s.executor_id)?,
            },
            None,
        ),
        M::FrameworkMessage(m) => (
            Input::FrameworkMessage {
                framework_id: FrameworkId::parse(
                    "framework_message.framework_id",
                    &m.framework_id,
                )?,
                executor_id: ExecutorId::parse("framework_message.executor_id", &m.executor_id)?,
                data: m.data,
            },
            None,
        ),
    }))
}
