//! What a run has done, kept in `<state dir>/progress.jsonl` so that a
//! restarted `cairn-batch` picks the job up where it was: every launch is
//! written (and synced) before the ACCEPT that makes it, every end before
//! its update is acknowledged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("progress log {path}: {reason}")]
pub struct ProgressError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record {
    Launched {
        task_id: String,
        stage: usize,
        index: usize,
        attempt: u32,
        agent_id: String,
        hostname: String,
    },
    Ended {
        task_id: String,
        state: String,
        message: String,
    },
}

/// A launch and, once known, how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub stage: usize,
    pub index: usize,
    pub attempt: u32,
    pub agent_id: String,
    pub hostname: String,
    pub ended: Option<(String, String)>,
}

/// The log, open for appending.
#[derive(Debug)]
pub struct Progress {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl Progress {
    /// Opens (creating) the log in `dir` and returns what it holds, by task
    /// id.
    pub fn open(dir: &Path) -> Result<(Progress, BTreeMap<String, Attempt>), ProgressError> {
        let path = dir.join("progress.jsonl");
        let err = |reason: String| ProgressError {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let mut attempts = BTreeMap::new();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        // Bytes of whole, readable records: a torn last line (a crash
        // mid-write) is cut off, so what is appended next starts clean.
        let mut good = 0;
        for line in text.split_inclusive('\n') {
            let record = if line.ends_with('\n') {
                serde_json::from_str::<Record>(line.trim()).ok()
            } else {
                None
            };
            let Some(record) = record else {
                if !line.trim().is_empty() {
                    tracing::warn!(path = %path.display(), "cutting an unreadable last progress record");
                }
                break;
            };
            good += line.len();
            match record {
                Record::Launched {
                    task_id,
                    stage,
                    index,
                    attempt,
                    agent_id,
                    hostname,
                } => {
                    attempts.insert(
                        task_id,
                        Attempt {
                            stage,
                            index,
                            attempt,
                            agent_id,
                            hostname,
                            ended: None,
                        },
                    );
                }
                Record::Ended {
                    task_id,
                    state,
                    message,
                } => {
                    if let Some(a) = attempts.get_mut(&task_id) {
                        a.ended = Some((state, message));
                    }
                }
            }
        }
        if good < text.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| err(e.to_string()))?;
            f.set_len(u64::try_from(good).unwrap_or(0))
                .map_err(|e| err(e.to_string()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| err(e.to_string()))?;
        Ok((
            Progress {
                path,
                file: std::io::BufWriter::new(file),
            },
            attempts,
        ))
    }

    /// Appends `records` and syncs them to disk.
    pub fn write(&mut self, records: &[Record]) -> Result<(), ProgressError> {
        let err = |e: std::io::Error| ProgressError {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        for r in records {
            let line = serde_json::to_string(r).map_err(|e| ProgressError {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            writeln!(self.file, "{line}").map_err(err)?;
        }
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_data().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn launches_and_ends_survive_a_reopen_and_a_torn_line_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut p, seen) = Progress::open(dir.path()).unwrap();
        assert!(seen.is_empty());
        let launched = |t: &str, i| Record::Launched {
            task_id: t.into(),
            stage: 0,
            index: i,
            attempt: 1,
            agent_id: "a".into(),
            hostname: "h".into(),
        };
        p.write(&[launched("t0", 0), launched("t1", 1)]).unwrap();
        p.write(&[Record::Ended {
            task_id: "t0".into(),
            state: "TASK_FINISHED".into(),
            message: String::new(),
        }])
        .unwrap();
        drop(p);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("progress.jsonl"))
            .unwrap();
        f.write_all(b"{\"event\":\"ended\",\"task_id\":\"t1\"")
            .unwrap();
        let (mut p, seen) = Progress::open(dir.path()).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen["t0"].ended.as_ref().unwrap().0, "TASK_FINISHED");
        assert_eq!(seen["t1"].ended, None, "the torn record is not taken");
        p.write(&[Record::Ended {
            task_id: "t1".into(),
            state: "TASK_FAILED".into(),
            message: "exit 1".into(),
        }])
        .unwrap();
        let (_, seen) = Progress::open(dir.path()).unwrap();
        assert_eq!(
            seen["t1"].ended.as_ref().unwrap().0,
            "TASK_FAILED",
            "appended after the cut"
        );
    }
}
