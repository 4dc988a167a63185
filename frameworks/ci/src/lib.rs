//! `cairn-ci`: a Jenkins-like CI framework on the Cairn SDK.
//!
//! A build queue served over HTTP (see [`api`]): submit a pipeline as YAML
//! ([`pipeline::Pipeline`]: steps, environment, resources, timeout,
//! artifacts), list builds, stream a build's log, fetch its artifacts from
//! its sandbox. Each build is one task; builds run as offers fit, and the
//! framework suppresses offers while the queue is empty and revives them
//! when a build arrives. A build over its timeout is killed and marked
//! timed out. With a state directory, the queue and the builds survive a
//! restart of the framework: it comes back as the same framework and
//! reconciles the builds that were running.

pub mod api;
pub mod files;
pub mod pipeline;
pub mod scheduler;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::{FrameworkInfo, SchedulerDriver};

#[derive(Debug, thiserror::Error)]
pub enum CiError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Sdk(#[from] cairn_sdk::SdkError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub master: String,
    pub listen: SocketAddr,
    pub state_dir: Option<PathBuf>,
    pub failover_timeout: Duration,
}

/// Serves the build queue and runs builds until `shutdown` completes.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CiError> {
    let store = store::Store::open(options.state_dir.clone())?;
    let shared = Arc::new(Mutex::new(scheduler::Shared {
        store,
        driver: None,
        framework_id: None,
    }));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| CiError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(CiError::Http)?;
    tracing::info!(%addr, master = %options.master, "cairn-ci serving");
    println!("cairn-ci: build queue at http://{addr}/builds");
    let mut info = FrameworkInfo::new("cairn-ci", "");
    info.failover_timeout = options.failover_timeout;
    let mut driver = SchedulerDriver::new(options.master.clone(), info).credential_from_env();
    if let Some(dir) = &options.state_dir {
        driver = driver.framework_id_file(dir.join("framework-id"));
    }
    let scheduler = scheduler::CiScheduler {
        shared: shared.clone(),
    };
    let framework = tokio::spawn(driver.run(scheduler));
    let http = axum::serve(listener, api::router(shared)).with_graceful_shutdown(shutdown);
    let result = http.await.map_err(CiError::Http);
    framework.abort();
    result
}
