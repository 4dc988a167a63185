//! ZooKeeper: contending for leadership, losing it safely, and the registry.
//!
//! Layout under the cluster's path `P` (`--zk zk://hosts/P`):
//! - `P/json.info_<seq>`: one ephemeral sequential node per master, holding
//!   its MasterInfo as JSON (the Mesos layout; nothing else lives under `P`).
//!   The lowest sequence leads; the sequence is the leader's epoch.
//! - `P-registry/agents/<id>`, `P-registry/frameworks/<id>`,
//!   `P-registry/removed/<id>`: the registry, a protobuf record per node.
//!
//! Every registry write is one multi-op that first checks the leader's own
//! election node: once its session is gone (and with it the node), a deposed
//! leader's writes fail, so it can change nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use cairn_master_core::registry::{AgentRecord, FrameworkRecord, RegistryOp, RegistryState};
use cairn_model::convert::{
    agent_info_from_pb, agent_info_to_pb, framework_info_from_pb, framework_info_to_pb,
};
use cairn_model::zk::{INFO_PREFIX, Leader, ZkMasterInfo, ZkUrl, leader_of, sequence_of};
use cairn_model::{AgentId, FrameworkId, Time};
use cairn_proto as pb;
use prost::Message;
use zookeeper_client as zk;

use crate::registry_store::{RegistryStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("cannot reach ZooKeeper at {hosts}: {source}")]
    Connect {
        hosts: String,
        #[source]
        source: zk::Error,
    },
    #[error("ZooKeeper operation on {path} failed: {source}")]
    Op {
        path: String,
        #[source]
        source: zk::Error,
    },
    #[error("lost the ZooKeeper session ({0}); this master stops so that another can lead safely")]
    SessionLost(String),
}

fn op_err(path: &str) -> impl FnOnce(zk::Error) -> ZkError + '_ {
    move |source| ZkError::Op {
        path: path.to_string(),
        source,
    }
}

/// Registry nodes read in one multi-read request: each is a few hundred
/// bytes, so a batch stays far below ZooKeeper's 1 MB packet limit.
const READ_BATCH: usize = 250;

static PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
static CONTENDER: zk::CreateOptions<'static> =
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());

/// This master's candidacy: its election node and the session holding it.
#[derive(Debug)]
pub struct Election {
    pub client: zk::Client,
    pub url: ZkUrl,
    /// Full path of this master's `json.info_` node.
    pub node: String,
    /// Its sequence: the epoch if it leads.
    pub epoch: u64,
    pub session_timeout: Duration,
}

impl Election {
    /// Connects and enters the election with `info`.
    pub async fn contend(
        url: &ZkUrl,
        session_timeout: Duration,
        info: &ZkMasterInfo,
    ) -> Result<Election, ZkError> {
        // ZooKeeper may come up after the master (a cluster booting, an
        // ensemble restarting): the master waits for it rather than exit.
        let mut backoff = Duration::from_millis(500);
        let client = loop {
            match zk::Client::connector()
                .with_session_timeout(session_timeout)
                .connect(&url.hosts)
                .await
            {
                Ok(c) => break c,
                Err(source) => {
                    let e = ZkError::Connect {
                        hosts: url.hosts.clone(),
                        source,
                    };
                    tracing::warn!(error = %e, "cannot reach ZooKeeper; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        client
            .mkdir(&url.path, &PERSISTENT)
            .await
            .map_err(op_err(&url.path))?;
        let data = serde_json::to_vec(info).unwrap_or_default();
        let prefix = format!("{}/{INFO_PREFIX}", url.path);
        let (_, seq) = client
            .create(&prefix, &data, &CONTENDER)
            .await
            .map_err(op_err(&prefix))?;
        let epoch = u64::try_from(seq.into_i64()).unwrap_or(0);
        let node = format!("{prefix}{seq}");
        let session_timeout = client.session_timeout();
        Ok(Election {
            client,
            url: url.clone(),
            node,
            epoch,
            session_timeout,
        })
    }

    /// Waits until this master leads, calling `standby` with the current
    /// leader whenever it changes meanwhile.
    pub async fn await_leadership(
        &self,
        mut standby: impl FnMut(Option<Leader>),
    ) -> Result<(), ZkError> {
        loop {
            let (children, watcher) = self
                .client
                .list_and_watch_children(&self.url.path)
                .await
                .map_err(op_err(&self.url.path))?;
            match leader_of(&children) {
                Some((_, seq)) if seq == self.epoch => return Ok(()),
                Some((name, seq)) => {
                    let path = format!("{}/{name}", self.url.path);
                    let leader = match self.client.get_data(&path).await {
                        Ok((data, _)) => serde_json::from_slice::<ZkMasterInfo>(&data)
                            .ok()
                            .map(|i| i.leader(seq)),
                        Err(zk::Error::NoNode) => continue,
                        Err(source) => return Err(ZkError::Op { path, source }),
                    };
                    standby(leader);
                }
                None => {
                    // Our own node is gone: the session is.
                    if !children.iter().any(|c| sequence_of(c) == Some(self.epoch)) {
                        return Err(ZkError::SessionLost(
                            "this master's election node is gone".into(),
                        ));
                    }
                    standby(None);
                }
            }
            let event = watcher.changed().await;
            if event.event_type == zk::EventType::Session {
                return Err(ZkError::SessionLost(format!("{:?}", event.session_state)));
            }
        }
    }

    /// Completes when the session is lost: expired, closed, or disconnected
    /// for longer than the session timeout (the server may already have
    /// expired it, and another master may lead).
    pub async fn session_lost(&self) -> ZkError {
        let mut states = self.client.state_watcher();
        loop {
            let state = states.state();
            match state {
                zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed => {
                    return ZkError::SessionLost(format!("{state:?}"));
                }
                zk::SessionState::Disconnected => {
                    tokio::select! {
                        _ = states.changed() => {}
                        () = tokio::time::sleep(self.session_timeout) => {
                            return ZkError::SessionLost(format!(
                                "disconnected for longer than the session timeout ({:?})",
                                self.session_timeout
                            ));
                        }
                    }
                }
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    states.changed().await;
                }
            }
        }
    }
}

fn secs(t: Time) -> f64 {
    t.as_unix_secs_f64()
}

fn time(s: f64) -> Time {
    Time::from_unix_secs_f64(s).unwrap_or(Time::ZERO)
}

/// The registry in ZooKeeper, written only while this master's election
/// node exists.
#[derive(Debug)]
pub struct ZkStore {
    client: zk::Client,
    root: String,
    fence: String,
    /// Registry nodes that exist (this master is the only writer).
    existing: Mutex<HashSet<String>>,
}

impl ZkStore {
    pub async fn new(election: &Election, root: &str) -> Result<ZkStore, ZkError> {
        for dir in ["agents", "frameworks", "removed"] {
            let path = format!("{root}/{dir}");
            election
                .client
                .mkdir(&path, &PERSISTENT)
                .await
                .map_err(op_err(&path))?;
        }
        Ok(ZkStore {
            client: election.client.clone(),
            root: root.to_string(),
            fence: election.node.clone(),
            existing: Mutex::new(HashSet::new()),
        })
    }

    fn path(&self, dir: &str, name: &str) -> String {
        format!("{}/{dir}/{name}", self.root)
    }

    /// Every child of `dir` with its data.
    async fn read_dir(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let path = format!("{}/{dir}", self.root);
        let names = self
            .client
            .list_children(&path)
            .await
            .map_err(|e| StoreError::Unreachable(format!("{path}: {e}")))?;
        // Read in batches of one request each (ZooKeeper's multi-read), the
        // batches concurrently: the session pipelines them. One request per
        // node took a new leader 1.5 s for 10,000 agents, most of its
        // failover.
        let path = path.as_str();
        let batches = names.chunks(READ_BATCH).map(|chunk| async move {
            let mut reader = self.client.new_multi_reader();
            for n in chunk {
                reader
                    .add_get_data(&format!("{path}/{n}"))
                    .map_err(|e| StoreError::Unreachable(format!("{path}/{n}: {e}")))?;
            }
            match reader.commit().await {
                Ok(results) => Ok(chunk.iter().cloned().zip(results).collect::<Vec<_>>()),
                // A server without multi-read (before 3.6), or a batch
                // whose answer is over its packet limit: one by one.
                Err(_) => {
                    let mut out = Vec::with_capacity(chunk.len());
                    for n in chunk {
                        let r = match self.client.get_data(&format!("{path}/{n}")).await {
                            Ok((data, stat)) => zk::MultiReadResult::Data { data, stat },
                            Err(err) => zk::MultiReadResult::Error { err },
                        };
                        out.push((n.clone(), r));
                    }
                    Ok(out)
                }
            }
        });
        let mut out = Vec::with_capacity(names.len());
        for batch in futures::future::join_all(batches).await {
            for (name, result) in batch? {
                match result {
                    zk::MultiReadResult::Data { data, .. } => out.push((name, data)),
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => {}
                    zk::MultiReadResult::Error { err } => {
                        return Err(StoreError::Unreachable(format!("{path}/{name}: {err}")));
                    }
                    other => {
                        return Err(StoreError::Unreachable(format!(
                            "{path}/{name}: unexpected answer {other:?}"
                        )));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn corrupt(path: String, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        path,
        reason: reason.to_string(),
    }
}

#[tonic::async_trait]
impl RegistryStore for ZkStore {
    async fn load(&self) -> Result<RegistryState, StoreError> {
        let mut state = RegistryState::default();
        let mut existing = HashSet::new();
        for (name, data) in self.read_dir("agents").await? {
            let path = self.path("agents", &name);
            let rec =
                pb::RegistryAgent::decode(data.as_slice()).map_err(|e| corrupt(path.clone(), e))?;
            let info = rec
                .info
                .as_ref()
                .ok_or_else(|| corrupt(path.clone(), "no agent info"))
                .and_then(|i| {
                    agent_info_from_pb("info", i).map_err(|e| corrupt(path.clone(), e))
                })?;
            let id = AgentId::parse("agent id", &name).map_err(|e| corrupt(path.clone(), e))?;
            state.agents.insert(
                id,
                AgentRecord {
                    info,
                    unreachable_since: rec.unreachable_since.map(time),
                },
            );
            existing.insert(path);
        }
        for (name, data) in self.read_dir("frameworks").await? {
            let path = self.path("frameworks", &name);
            let rec = pb::RegistryFramework::decode(data.as_slice())
                .map_err(|e| corrupt(path.clone(), e))?;
            let info = rec
                .info
                .as_ref()
                .ok_or_else(|| corrupt(path.clone(), "no framework info"))
                .and_then(|i| {
                    framework_info_from_pb("info", i).map_err(|e| corrupt(path.clone(), e))
                })?;
            let id =
                FrameworkId::parse("framework id", &name).map_err(|e| corrupt(path.clone(), e))?;
            state.frameworks.insert(
                id,
                FrameworkRecord {
                    info,
                    registered_at: time(rec.registered_at),
                    disconnected_since: rec.disconnected_since.map(time),
                },
            );
            existing.insert(path);
        }
        for (name, data) in self.read_dir("removed").await? {
            let path = self.path("removed", &name);
            let rec = pb::RegistryRemovedFramework::decode(data.as_slice())
                .map_err(|e| corrupt(path.clone(), e))?;
            let id =
                FrameworkId::parse("framework id", &name).map_err(|e| corrupt(path.clone(), e))?;
            state.removed_frameworks.insert(id, time(rec.removed_at));
            existing.insert(path);
        }
        if let Ok(mut e) = self.existing.lock() {
            *e = existing;
        }
        Ok(state)
    }

    async fn write(&self, ops: &[RegistryOp]) -> Result<(), StoreError> {
        // The records as they stand after `ops`, starting from what is
        // stored: the registry is small per entity, so a write carries whole
        // records (upserts) or deletions.
        let mut puts: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut agents: BTreeMap<AgentId, pb::RegistryAgent> = BTreeMap::new();
        let mut frameworks: BTreeMap<FrameworkId, pb::RegistryFramework> = BTreeMap::new();
        for op in ops {
            match op {
                RegistryOp::AdmitAgent { id, info } => {
                    let rec = pb::RegistryAgent {
                        info: Some(agent_info_to_pb(info)),
                        unreachable_since: None,
                    };
                    puts.insert(self.path("agents", id.as_str()), Some(rec.encode_to_vec()));
                    agents.insert(id.clone(), rec);
                }
                RegistryOp::MarkUnreachable { id, since } => {
                    let path = self.path("agents", id.as_str());
                    let mut rec = match agents.get(id) {
                        Some(r) => r.clone(),
                        None => match self.client.get_data(&path).await {
                            Ok((data, _)) => pb::RegistryAgent::decode(data.as_slice())
                                .map_err(|e| corrupt(path.clone(), e))?,
                            Err(zk::Error::NoNode) => continue,
                            Err(e) => return Err(StoreError::Unreachable(e.to_string())),
                        },
                    };
                    rec.unreachable_since = Some(secs(*since));
                    puts.insert(path, Some(rec.encode_to_vec()));
                    agents.insert(id.clone(), rec);
                }
                RegistryOp::RemoveAgent { id } => {
                    puts.insert(self.path("agents", id.as_str()), None);
                    agents.remove(id);
                }
                RegistryOp::AddFramework {
                    id,
                    info,
                    registered_at,
                } => {
                    let rec = pb::RegistryFramework {
                        info: Some(framework_info_to_pb(info)),
                        registered_at: secs(*registered_at),
                        disconnected_since: None,
                    };
                    puts.insert(
                        self.path("frameworks", id.as_str()),
                        Some(rec.encode_to_vec()),
                    );
                    frameworks.insert(id.clone(), rec);
                }
                RegistryOp::DisconnectFramework { id, since } => {
                    let path = self.path("frameworks", id.as_str());
                    let mut rec = match frameworks.get(id) {
                        Some(r) => r.clone(),
                        None => match self.client.get_data(&path).await {
                            Ok((data, _)) => pb::RegistryFramework::decode(data.as_slice())
                                .map_err(|e| corrupt(path.clone(), e))?,
                            Err(zk::Error::NoNode) => continue,
                            Err(e) => return Err(StoreError::Unreachable(e.to_string())),
                        },
                    };
                    rec.disconnected_since = Some(secs(*since));
                    puts.insert(path, Some(rec.encode_to_vec()));
                    frameworks.insert(id.clone(), rec);
                }
                RegistryOp::RemoveFramework { id, at } => {
                    puts.insert(self.path("frameworks", id.as_str()), None);
                    frameworks.remove(id);
                    let removed = pb::RegistryRemovedFramework {
                        removed_at: secs(*at),
                    };
                    puts.insert(
                        self.path("removed", id.as_str()),
                        Some(removed.encode_to_vec()),
                    );
                }
                RegistryOp::ForgetFramework { id } => {
                    puts.insert(self.path("removed", id.as_str()), None);
                }
            }
        }
        let existing = self.existing.lock().map(|e| e.clone()).unwrap_or_default();
        let mut multi = self.client.new_multi_writer();
        let bad = |e: zk::Error| StoreError::Unreachable(e.to_string());
        // Fencing: only while this master's election node exists.
        multi.add_check_version(&self.fence, 0).map_err(bad)?;
        let mut after = existing.clone();
        for (path, data) in &puts {
            match (data, existing.contains(path)) {
                (Some(d), true) => multi.add_set_data(path, d, None).map_err(bad)?,
                (Some(d), false) => multi.add_create(path, d, &PERSISTENT).map_err(bad)?,
                (None, true) => multi.add_delete(path, None).map_err(bad)?,
                (None, false) => continue,
            }
            if data.is_some() {
                after.insert(path.clone());
            } else {
                after.remove(path);
            }
        }
        match multi.commit().await {
            Ok(_) => {
                if let Ok(mut e) = self.existing.lock() {
                    *e = after;
                }
                Ok(())
            }
            Err(zk::MultiWriteError::OperationFailed { index: 0, source }) => {
                Err(StoreError::Fenced(source.to_string()))
            }
            Err(e) => Err(StoreError::Unreachable(e.to_string())),
        }
    }
}
