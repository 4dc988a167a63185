//! Where the registry lives: memory for a single master, ZooKeeper for
//! several (see `zk.rs`). A writer task applies the core's writes in order,
//! in batches, and confirms them.

use std::sync::Mutex;

use cairn_master_core::Input;
use cairn_master_core::registry::{PersistId, RegistryOp, RegistryState};
use tokio::sync::mpsc;

use crate::driver::Command;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the registry is unreachable: {0}")]
    Unreachable(String),
    #[error("this master no longer leads (its election node is gone): {0}")]
    Fenced(String),
    #[error("the registry holds an unreadable entry {path}: {reason}")]
    Corrupt { path: String, reason: String },
}

/// A registry's storage.
///
/// Contract: `load` returns the state all confirmed `write`s left. `write`
/// applies its ops in order and atomically (all or none), and returns only
/// once they are durable. An error means durability can no longer be
/// promised (the store is gone, or this master was deposed): the master must
/// stop acting.
#[tonic::async_trait]
pub trait RegistryStore: Send + Sync + std::fmt::Debug + 'static {
    async fn load(&self) -> Result<RegistryState, StoreError>;
    async fn write(&self, ops: &[RegistryOp]) -> Result<(), StoreError>;
}

/// The registry of a single master: in memory, gone with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<RegistryState>,
}

#[tonic::async_trait]
impl RegistryStore for MemoryStore {
    async fn load(&self) -> Result<RegistryState, StoreError> {
        self.state
            .lock()
            .map(|s| s.clone())
            .map_err(|e| StoreError::Unreachable(e.to_string()))
    }

    async fn write(&self, ops: &[RegistryOp]) -> Result<(), StoreError> {
        let mut s = self
            .state
            .lock()
            .map_err(|e| StoreError::Unreachable(e.to_string()))?;
        for op in ops {
            s.apply(op);
        }
        Ok(())
    }
}

/// Most writes in one batch.
const BATCH: usize = 256;

/// Writes what arrives on `rx` in order, a batch at a time, and confirms
/// each write to the driver. A failed write is fatal: the driver stops the
/// master.
pub async fn writer(
    store: std::sync::Arc<dyn RegistryStore>,
    mut rx: mpsc::UnboundedReceiver<(PersistId, RegistryOp)>,
    driver: mpsc::Sender<Command>,
) {
    while let Some(first) = rx.recv().await {
        let mut ids = vec![first.0];
        let mut ops = vec![first.1];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok((id, op)) => {
                    ids.push(id);
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
        match store.write(&ops).await {
            Ok(()) => {
                for id in ids {
                    let input = Input::Persisted { id };
                    if driver
                        .send(Command::Input { input, reply: None })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = driver.send(Command::Fatal(e.to_string())).await;
                return;
            }
        }
    }
}
