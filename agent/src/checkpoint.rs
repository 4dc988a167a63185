//! The agent's checkpoint: an append-only log of the core's records (and of
//! the executors' pids) in `<work_dir>/meta/checkpoint.log`, so a restarted
//! agent finds its executors, tasks and unacknowledged updates again.
//!
//! Each record is framed as `len: u32 LE | crc32: u32 LE | protobuf`. A
//! record is durable once [`CheckpointLog::sync`] returns; a torn record at
//! the end (the agent died mid-write) is dropped on load, and nothing after
//! a damaged record is trusted. The log is rewritten from a snapshot of the
//! agent's state at start-up and whenever it has grown well past it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cairn_agent_core::Checkpoint;
use cairn_model::convert::{
    framework_info_from_pb, framework_info_to_pb, task_info_from_pb, task_info_to_pb,
    task_state_from_pb, task_state_to_pb, task_status_from_pb, task_status_to_pb,
};
use cairn_model::{ContainerId, ExecutorId, FrameworkId, ModelError, Source, StatusUuid, TaskId};
use cairn_proto as pb;
use pb::agent_checkpoint::Record as R;
use prost::Message;

/// Largest record accepted on load (a corrupt length is not trusted).
const MAX_RECORD: usize = 16 << 20;
/// The log is compacted once this many records were appended since the
/// last snapshot (and they outnumber the snapshot's four to one).
const COMPACT_AFTER: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {what} the checkpoint {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the checkpoint {path} holds an invalid record #{index}: {reason}")]
    Invalid {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

/// An executor process, so a restarted agent can watch it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    /// `/proc/<pid>/stat` start time, so a reused pid is not taken for it.
    pub start_time: u64,
    /// The process is a direct task's shim, not an executor (see
    /// `crate::direct`).
    pub direct: bool,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Core(Checkpoint),
    Pid(ContainerId, PidRecord),
}

/// What a restarted agent reads back.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<Checkpoint>,
    pub pids: HashMap<ContainerId, PidRecord>,
}

#[derive(Debug)]
pub struct CheckpointLog {
    path: PathBuf,
    file: BufWriter<File>,
    dirty: bool,
    since_snapshot: usize,
    snapshot_len: usize,
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl CheckpointLog {
    /// Opens (creating) the log under `work_dir` and reads what it holds.
    pub fn open(work_dir: &Path) -> Result<(CheckpointLog, Recovered), CheckpointError> {
        let dir = work_dir.join("meta");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = dir.join("checkpoint.log");
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(io("read", &path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("open", &path)(e)),
        }
        let mut recovered = Recovered::default();
        let mut at = 0;
        let mut index = 0;
        while let Some(payload) = frame(&bytes[at..]) {
            let decoded = pb::AgentCheckpoint::decode(payload)
                .map_err(|e| e.to_string())
                .and_then(|r| from_pb(&r).map_err(|e| e.to_string()));
            match decoded {
                Ok(Some(Record::Core(c))) => recovered.records.push(c),
                Ok(Some(Record::Pid(c, p))) => {
                    recovered.pids.insert(c, p);
                }
                Ok(None) => {}
                Err(reason) => {
                    return Err(CheckpointError::Invalid {
                        path,
                        index,
                        reason,
                    });
                }
            }
            at += 8 + payload.len();
            index += 1;
        }
        if at < bytes.len() {
            tracing::warn!(path = %path.display(), dropped_bytes = bytes.len() - at, "the checkpoint ends in a torn record (the agent died while writing it); it is dropped");
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        // A torn tail would hide every later record: cut it off.
        file.set_len(at as u64).map_err(io("truncate", &path))?;
        let log = CheckpointLog {
            path,
            file: BufWriter::new(file),
            dirty: false,
            since_snapshot: index,
            snapshot_len: 0,
        };
        Ok((log, recovered))
    }

    /// Buffers a record; it is durable after the next [`CheckpointLog::sync`].
    pub fn append(&mut self, record: &Record) -> Result<(), CheckpointError> {
        let payload = to_pb(record).encode_to_vec();
        write_frame(&mut self.file, &payload).map_err(io("write", &self.path))?;
        self.dirty = true;
        self.since_snapshot += 1;
        Ok(())
    }

    /// Makes everything appended durable.
    pub fn sync(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        self.file.flush().map_err(io("write", &self.path))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(io("sync", &self.path))?;
        self.dirty = false;
        Ok(())
    }

    /// Whether the log has grown enough past its last snapshot to rewrite.
    pub fn wants_compaction(&self) -> bool {
        self.since_snapshot > COMPACT_AFTER.max(4 * self.snapshot_len)
    }

    /// Replaces the log, atomically, with `snapshot`.
    pub fn compact(&mut self, snapshot: &[Record]) -> Result<(), CheckpointError> {
        self.sync()?;
        let tmp = self.path.with_extension("log.new");
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(io("create", &tmp))?);
            for r in snapshot {
                write_frame(&mut w, &to_pb(r).encode_to_vec()).map_err(io("write", &tmp))?;
            }
            w.flush().map_err(io("write", &tmp))?;
            w.get_ref().sync_all().map_err(io("sync", &tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io("replace", &self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", dir))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io("open", &self.path))?;
        self.file = BufWriter::new(file);
        self.since_snapshot = 0;
        self.snapshot_len = snapshot.len();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The next complete, intact record's payload at the start of `bytes`.
fn frame(bytes: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

fn write_frame(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| std::io::Error::other("record too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    w.write_all(payload)
}

fn task_pb(
    framework_id: &FrameworkId,
    executor_id: &ExecutorId,
    container_id: Option<&ContainerId>,
    task: &cairn_model::TaskInfo,
    state: cairn_model::TaskState,
) -> pb::CheckpointTask {
    pb::CheckpointTask {
        framework_id: framework_id.to_string(),
        executor_id: executor_id.to_string(),
        container_id: container_id.map(ToString::to_string).unwrap_or_default(),
        task: Some(task_info_to_pb(task)),
        state: task_state_to_pb(state) as i32,
    }
}

fn to_pb(r: &Record) -> pb::AgentCheckpoint {
    let record = match r {
        Record::Pid(c, p) => R::Pid(pb::CheckpointPid {
            container_id: c.to_string(),
            pid: p.pid,
            start_time: p.start_time,
            direct: p.direct,
        }),
        Record::Core(c) => match c {
            Checkpoint::AgentId(id) => R::AgentId(id.to_string()),
            Checkpoint::Framework(f) => R::Framework(framework_info_to_pb(f)),
            Checkpoint::Task {
                framework_id,
                executor_id,
                container_id,
                task,
                state,
            } => R::Task(task_pb(
                framework_id,
                executor_id,
                Some(container_id),
                task,
                *state,
            )),
            Checkpoint::Finished {
                framework_id,
                executor_id,
                task,
                state,
            } => R::Finished(task_pb(framework_id, executor_id, None, task, *state)),
            Checkpoint::Update {
                framework_id,
                status,
            } => R::Update(pb::CheckpointUpdate {
                framework_id: framework_id.to_string(),
                status: Some(task_status_to_pb(status)),
            }),
            Checkpoint::Acknowledged {
                framework_id,
                task_id,
                uuid,
            } => R::Acknowledged(pb::CheckpointAck {
                framework_id: framework_id.to_string(),
                task_id: task_id.to_string(),
                uuid: uuid.0.to_vec(),
            }),
            Checkpoint::ContainerEnded { container_id } => {
                R::ContainerEnded(container_id.to_string())
            }
            Checkpoint::FrameworkRemoved { framework_id } => {
                R::FrameworkRemoved(framework_id.to_string())
            }
        },
    };
    pb::AgentCheckpoint {
        record: Some(record),
    }
}

fn from_pb(r: &pb::AgentCheckpoint) -> Result<Option<Record>, ModelError> {
    let Some(record) = &r.record else {
        // Written by a newer agent: skipped.
        return Ok(None);
    };
    let task = |t: &pb::CheckpointTask| -> Result<_, ModelError> {
        let info = t
            .task
            .as_ref()
            .ok_or_else(|| ModelError::Missing {
                field: "task".into(),
            })
            .and_then(|i| task_info_from_pb("task", i))?;
        Ok((
            FrameworkId::parse("framework_id", &t.framework_id)?,
            ExecutorId::parse("executor_id", &t.executor_id)?,
            t.container_id.clone(),
            info,
            task_state_from_pb("state", t.state)?,
        ))
    };
    Ok(Some(match record {
        R::Pid(p) => Record::Pid(
            ContainerId::parse("container_id", &p.container_id)?,
            PidRecord {
                pid: p.pid,
                start_time: p.start_time,
                direct: p.direct,
            },
        ),
        R::AgentId(id) => Record::Core(Checkpoint::AgentId(cairn_model::AgentId::parse(
            "agent_id", id,
        )?)),
        R::Framework(f) => Record::Core(Checkpoint::Framework(framework_info_from_pb(
            "framework",
            f,
        )?)),
        R::Task(t) => {
            let (framework_id, executor_id, container_id, task, state) = task(t)?;
            Record::Core(Checkpoint::Task {
                framework_id,
                executor_id,
                container_id: ContainerId::parse("container_id", &container_id)?,
                task,
                state,
            })
        }
        R::Finished(t) => {
            let (framework_id, executor_id, _, task, state) = task(t)?;
            Record::Core(Checkpoint::Finished {
                framework_id,
                executor_id,
                task,
                state,
            })
        }
        R::Update(u) => Record::Core(Checkpoint::Update {
            framework_id: FrameworkId::parse("framework_id", &u.framework_id)?,
            status: u
                .status
                .as_ref()
                .ok_or_else(|| ModelError::Missing {
                    field: "status".into(),
                })
                .and_then(|s| task_status_from_pb("status", s, Source::Executor))?,
        }),
        R::Acknowledged(a) => Record::Core(Checkpoint::Acknowledged {
            framework_id: FrameworkId::parse("framework_id", &a.framework_id)?,
            task_id: TaskId::parse("task_id", &a.task_id)?,
            uuid: StatusUuid::from_slice("uuid", &a.uuid)?,
        }),
        R::ContainerEnded(c) => Record::Core(Checkpoint::ContainerEnded {
            container_id: ContainerId::parse("container_id", c)?,
        }),
        R::FrameworkRemoved(f) => Record::Core(Checkpoint::FrameworkRemoved {
            framework_id: FrameworkId::parse("framework_id", f)?,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize) -> Record {
        Record::Core(Checkpoint::ContainerEnded {
            container_id: ContainerId::new(format!("c{i}")),
        })
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, got) = CheckpointLog::open(dir.path()).unwrap();
        assert!(got.records.is_empty());
        for i in 0..3 {
            log.append(&rec(i)).unwrap();
        }
        log.append(&Record::Pid(
            ContainerId::new("c9"),
            PidRecord {
                pid: 42,
                start_time: 7,
                direct: true,
            },
        ))
        .unwrap();
        log.sync().unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        // The agent died in the middle of the next record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut log, got) = CheckpointLog::open(dir.path()).unwrap();
        assert_eq!(got.records.len(), 3);
        assert_eq!(
            got.pids.get(&ContainerId::new("c9")),
            Some(&PidRecord {
                pid: 42,
                start_time: 7,
                direct: true,
            })
        );
        // Appends after the cut are read back.
        log.append(&rec(3)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, got) = CheckpointLog::open(dir.path()).unwrap();
        assert_eq!(got.records.len(), 4);
    }

    #[test]
    fn compaction_replaces_the_log_with_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CheckpointLog::open(dir.path()).unwrap();
        for i in 0..100 {
            log.append(&rec(i)).unwrap();
        }
        log.compact(&[rec(7)]).unwrap();
        log.append(&rec(8)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, got) = CheckpointLog::open(dir.path()).unwrap();
        let ids: Vec<_> = got
            .records
            .iter()
            .map(|r| match r {
                Checkpoint::ContainerEnded { container_id } => container_id.to_string(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(ids, ["c7", "c8"]);
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CheckpointLog::open(dir.path()).unwrap();
        log.append(&rec(1)).unwrap();
        log.sync().unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        // A valid frame whose payload is not a record.
        let junk = [0xffu8; 5];
        let mut framed = (junk.len() as u32).to_le_bytes().to_vec();
        framed.extend(crc32fast::hash(&junk).to_le_bytes());
        framed.extend(junk);
        bytes.splice(0..0, framed);
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            CheckpointLog::open(dir.path()),
            Err(CheckpointError::Invalid { index: 0, .. })
        ));
    }
}
