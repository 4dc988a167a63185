//! The task that owns the master's core.
//!
//! Every input reaches the core through one channel, in arrival order; the
//! driver feeds it, fires its timers, and dispatches its outputs without
//! blocking: each connection has a bounded queue, and a connection whose
//! queue is full is closed rather than allowed to stall the master (a slow
//! framework loses its stream and re-subscribes; its status updates are kept
//! by the agents until acknowledged).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_master_core::registry::{PersistId, RegistryOp};
use cairn_master_core::view::{StateSnapshot, Summary};
use cairn_master_core::{CallError, ConnId, Input, Master, Observed, Output};
use cairn_model::Time;
use cairn_proto as pb;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::Status;

use crate::convert::{agent_command_to_pb, event_to_pb};
use crate::metrics::{History, Metrics};

/// Queue length of one connection's outbound messages.
pub const CONNECTION_QUEUE: usize = 65_536;
/// Queue length of the driver's inbox.
const INBOX: usize = 65_536;

/// Items of a connection's queue are boxed: a queue's first block holds 32
/// of them whether or not they are used, and an unboxed agent message is
/// 640 bytes, so with tens of thousands of agents the empty queues alone
/// would take 20 KB each.
pub type Item<T> = Box<Result<T, Status>>;
pub type EventSink = mpsc::Sender<Item<pb::Event>>;
pub type AgentSink = mpsc::Sender<Item<pb::MasterMessage>>;
/// A framework on the Mesos HTTP API: its door formats the core's events;
/// `Err` ends the stream with the reason.
pub type HttpEventSink = mpsc::Sender<Result<cairn_master_core::Event, String>>;

/// Where a connection's outputs go.
#[derive(Debug)]
pub enum Sink {
    Framework(EventSink),
    HttpFramework(HttpEventSink),
    Agent(AgentSink),
}

#[derive(Debug)]
pub enum Command {
    /// Registers a connection's outbound queue; must precede its first input.
    Attach {
        conn: ConnId,
        sink: Sink,
    },
    Input {
        input: Input,
        reply: Option<oneshot::Sender<Result<(), CallError>>>,
    },
    Snapshot(oneshot::Sender<StateSnapshot>),
    Summary(oneshot::Sender<Summary>),
    /// The state now and every change after it, with nothing between.
    Watch(oneshot::Sender<(StateSnapshot, broadcast::Receiver<Arc<Observed>>)>),
    /// The registry cannot be written: the master must stop acting.
    Fatal(String),
}

/// Static facts about this master, stamped on what it sends.
#[derive(Clone, Debug)]
pub struct MasterInfo {
    pub id: String,
    pub hostname: String,
    pub address: String,
    pub port: u16,
    pub epoch: u64,
}

impl MasterInfo {
    pub fn to_pb(&self) -> pb::MasterInfo {
        pb::MasterInfo {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            address: self.address.clone(),
            port: u32::from(self.port),
            version: cairn_model::VERSION.to_string(),
            epoch: self.epoch,
        }
    }
}

/// A cheap, cloneable handle to the driver.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    next_conn: Arc<AtomicU64>,
    pub info: Arc<MasterInfo>,
    pub metrics: Arc<Metrics>,
    /// Cluster totals over the last hour, for the dashboard's charts.
    pub history: Arc<std::sync::Mutex<History>>,
}

/// The driver stopped (the master is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the master is shutting down")]
pub struct Stopped;

impl Handle {
    pub fn new_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub async fn attach(&self, conn: ConnId, sink: Sink) -> Result<(), Stopped> {
        self.tx
            .send(Command::Attach { conn, sink })
            .await
            .map_err(|_| Stopped)
    }

    /// Sends an input whose outcome nobody waits for.
    pub async fn send(&self, input: Input) -> Result<(), Stopped> {
        self.tx
            .send(Command::Input { input, reply: None })
            .await
            .map_err(|_| Stopped)
    }

    /// Sends an input from a context that cannot wait (a `Drop`).
    pub fn send_later(&self, input: Input) {
        match self.tx.try_send(Command::Input { input, reply: None }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                let tx = self.tx.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(cmd).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends an input and returns at once with a receiver of the core's
    /// verdict on it: inputs submitted one after another reach the core in
    /// that order, and their verdicts can be awaited in that order.
    pub async fn submit(
        &self,
        input: Input,
    ) -> Result<oneshot::Receiver<Result<(), CallError>>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Input {
                input,
                reply: Some(reply),
            })
            .await
            .map_err(|_| Stopped)?;
        Ok(rx)
    }

    /// Sends an input and waits for the core's verdict on it.
    pub async fn call(&self, input: Input) -> Result<Result<(), CallError>, Stopped> {
        self.submit(input).await?.await.map_err(|_| Stopped)
    }

    pub async fn snapshot(&self) -> Result<StateSnapshot, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Snapshot(tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The state now and a receiver of every change after it. A receiver
    /// that falls more than `WATCH_BUFFER` changes behind is told it lagged
    /// (`RecvError::Lagged`) and should start over.
    pub async fn watch(
        &self,
    ) -> Result<(StateSnapshot, broadcast::Receiver<Arc<Observed>>), Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Watch(tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn summary(&self) -> Result<Summary, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Summary(tx))
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// Starts the driver task around `core`, writing its registry to `store`;
/// it runs until every handle is gone.
pub fn spawn(
    core: Master,
    info: MasterInfo,
    store: std::sync::Arc<dyn crate::registry_store::RegistryStore>,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(INBOX);
    let (writes, to_write) = mpsc::unbounded_channel();
    tokio::spawn(crate::registry_store::writer(store, to_write, tx.clone()));
    let metrics = Arc::new(Metrics::new());
    let history = Arc::new(std::sync::Mutex::new(History::default()));
    let handle = Handle {
        tx,
        next_conn: Arc::new(AtomicU64::new(1)),
        info: Arc::new(info.clone()),
        metrics: metrics.clone(),
        history: history.clone(),
    };
    tokio::spawn(sample_history(handle.tx.downgrade(), history));
    let task = tokio::spawn(run(core, info, rx, writes, metrics));
    (handle, task)
}

/// Changes a watcher may fall behind by before it is told to start over.
pub const WATCH_BUFFER: usize = 16_384;

struct Driver {
    core: Master,
    info: MasterInfo,
    sinks: HashMap<ConnId, Sink>,
    writes: mpsc::UnboundedSender<(PersistId, RegistryOp)>,
    events: broadcast::Sender<Arc<Observed>>,
    metrics: Arc<Metrics>,
}

async fn run(
    core: Master,
    info: MasterInfo,
    mut rx: mpsc::Receiver<Command>,
    writes: mpsc::UnboundedSender<(PersistId, RegistryOp)>,
    metrics: Arc<Metrics>,
) {
    let mut d = Driver {
        core,
        info,
        sinks: HashMap::new(),
        writes,
        events: broadcast::channel(WATCH_BUFFER).0,
        metrics,
    };
    loop {
        let wait = d
            .core
            .poll_timeout()
            .map(|t| t.saturating_since(Time::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                d.command(cmd);
                // Take whatever else is queued before timers and dispatch, so
                // a burst of inputs is handled as one batch (one allocation
                // over all the agents they freed).
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(cmd) => d.command(cmd),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
        let now = Time::now();
        if d.core.poll_timeout().is_some_and(|t| t <= now) {
            let cycles = d.core.allocation_cycles();
            let started = std::time::Instant::now();
            d.core.handle_timeout(now);
            if d.core.allocation_cycles() != cycles {
                d.metrics.observe_allocation(started.elapsed());
            }
        }
        d.dispatch();
    }
    tracing::info!("master driver stopped");
}

impl Driver {
    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Attach { conn, sink } => {
                self.sinks.insert(conn, sink);
            }
            Command::Input { input, reply } => {
                if let Input::FrameworkDisconnected { conn } | Input::AgentDisconnected { conn } =
                    &input
                {
                    self.sinks.remove(conn);
                }
                if let Input::AgentStatusUpdate { status, .. } = &input {
                    self.metrics
                        .observe_status_update(Time::now().saturating_since(status.timestamp));
                }
                let result = self.core.handle(Time::now(), input);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.core.snapshot());
            }
            Command::Summary(reply) => {
                let _ = reply.send(self.core.summary());
            }
            Command::Watch(reply) => {
                // Changes made before the snapshot go out first, so the new
                // watcher sees none of them twice.
                self.dispatch();
                let _ = reply.send((self.core.snapshot(), self.events.subscribe()));
            }
            Command::Fatal(reason) => {
                // Nothing may take effect that the registry does not hold:
                // a master that cannot write it stops (its supervisor
                // restarts it as a contender).
                tracing::error!(%reason, "the registry cannot be written; the master stops");
                std::process::exit(1);
            }
        }
    }

    fn dispatch(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::ToFramework {
                    conn,
                    framework_id,
                    event,
                } => {
                    let full = match self.sinks.get(&conn) {
                        Some(Sink::Framework(tx)) => tx
                            .try_send(Box::new(Ok(event_to_pb(&event, &self.info))))
                            .is_err(),
                        Some(Sink::HttpFramework(tx)) => tx.try_send(Ok(event)).is_err(),
                        _ => false,
                    };
                    if full {
                        tracing::warn!(%framework_id, "framework stream is not keeping up; closing it");
                        self.close(
                            conn,
                            "event queue full: the framework is not reading its stream",
                        );
                        // The stream may stay open at the transport level;
                        // the core must not wait for it to end.
                        let _ = self
                            .core
                            .handle(Time::now(), Input::FrameworkDisconnected { conn });
                    }
                }
                Output::ToAgent {
                    conn,
                    agent_id,
                    command,
                } => {
                    let msg = pb::MasterMessage {
                        epoch: self.info.epoch,
                        message: Some(agent_command_to_pb(&command, &self.info)),
                    };
                    let full = match self.sinks.get(&conn) {
                        Some(Sink::Agent(tx)) => tx.try_send(Box::new(Ok(msg))).is_err(),
                        _ => false,
                    };
                    if full {
                        tracing::warn!(%agent_id, "agent session is not keeping up; closing it");
                        self.close(
                            conn,
                            "message queue full: the agent is not reading its session",
                        );
                        let _ = self
                            .core
                            .handle(Time::now(), Input::AgentDisconnected { conn });
                    }
                }
                Output::CloseFramework { conn, reason } | Output::CloseAgent { conn, reason } => {
                    self.close(conn, &reason);
                }
                Output::Persist { id, op } => {
                    let _ = self.writes.send((id, op));
                }
                Output::Observed(o) => {
                    // No watcher: nothing to do.
                    if self.events.receiver_count() > 0 {
                        let _ = self.events.send(Arc::new(o));
                    }
                }
            }
        }
    }

    /// Ends a connection's outbound stream with `reason`. The stream's end
    /// comes back to the core as a disconnection input, which it ignores for
    /// connections it has already let go.
    fn close(&mut self, conn: ConnId, reason: &str) {
        match self.sinks.remove(&conn) {
            Some(Sink::Framework(tx)) => {
                let _ = tx.try_send(Box::new(Err(Status::aborted(reason.to_string()))));
            }
            Some(Sink::HttpFramework(tx)) => {
                let _ = tx.try_send(Err(reason.to_string()));
            }
            Some(Sink::Agent(tx)) => {
                let _ = tx.try_send(Box::new(Err(Status::aborted(reason.to_string()))));
            }
            None => {}
        }
    }
}

/// Samples the cluster's totals every `HISTORY_INTERVAL` while the driver
/// runs (a weak sender: the sampler does not keep the driver alive).
async fn sample_history(tx: mpsc::WeakSender<Command>, history: Arc<std::sync::Mutex<History>>) {
    loop {
        let Some(tx) = tx.upgrade() else { return };
        let (reply, rx) = oneshot::channel();
        if tx.send(Command::Summary(reply)).await.is_err() {
            return;
        }
        drop(tx);
        let Ok(summary) = rx.await else { return };
        let sample = crate::metrics::Sample::of(&summary, Time::now());
        if let Ok(mut h) = history.lock() {
            h.push(sample);
        }
        tokio::time::sleep(crate::metrics::HISTORY_INTERVAL).await;
    }
}
