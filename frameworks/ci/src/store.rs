//! The builds and their states, kept (with a state directory) in
//! `builds.json`, rewritten atomically on every change before the change is
//! answered or acted on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Killed,
    /// Lost by the cluster more often than it is retried.
    Lost,
}

impl BuildStatus {
    pub fn is_done(self) -> bool {
        !matches!(self, BuildStatus::Queued | BuildStatus::Running)
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Build {
    pub id: u64,
    pub pipeline: Pipeline,
    pub status: BuildStatus,
    /// Launches so far (a build lost by the cluster is launched again).
    pub attempts: u32,
    pub task_id: Option<String>,
    pub agent_id: Option<String>,
    /// `http://host:port` of the agent it runs on, for its files.
    pub agent_url: Option<String>,
    /// Seconds since the Unix epoch.
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub exit_code: Option<i32>,
    pub message: String,
    /// The kill was for the timeout.
    pub timing_out: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Store {
    pub builds: BTreeMap<u64, Build>,
    pub next_id: u64,
    #[serde(skip)]
    path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("build store {path}: {reason}")]
pub struct StoreError {
    pub path: PathBuf,
    pub reason: String,
}

impl Store {
    /// The store in `dir` (or an empty one), or one in memory only.
    pub fn open(dir: Option<PathBuf>) -> Result<Store, StoreError> {
        let Some(dir) = dir else {
            return Ok(Store::default());
        };
        let path = dir.join("builds.json");
        let err = |reason: String| StoreError {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let mut store = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Store>(&bytes).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        store.path = Some(path);
        Ok(store)
    }

    /// Writes the store (to a temporary file, synced, renamed over it).
    pub fn save(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |reason: String| StoreError {
            path: path.clone(),
            reason,
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| err(e.to_string()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    pub fn queued(&self) -> impl Iterator<Item = &Build> {
        self.builds
            .values()
            .filter(|b| b.status == BuildStatus::Queued)
    }

    pub fn by_task(&mut self, task_id: &str) -> Option<&mut Build> {
        self.builds
            .values_mut()
            .find(|b| b.task_id.as_deref() == Some(task_id))
    }
}

pub fn now_secs() -> f64 {
    cairn_model::Time::now().as_unix_secs_f64()
}
