//! A real master and agents in the test's own process, for testing a
//! framework end to end (feature `testkit`).
//!
//! The master and agents are Cairn's own servers, on loopback ports, with
//! their state in a temporary directory; tasks run as real processes under
//! the agents' executors. Executors are separate processes started from the
//! `cairn-agent` binary: set `CAIRN_AGENT_BIN` to it, or build it into the
//! same target directory as the test (`cargo build -p cairn-agent`), where
//! the kit finds it. Agents isolate with process sessions only (no root
//! needed) unless [`TestClusterBuilder::isolation`] says otherwise.
//!
//! ```no_run
//! # async fn t() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_sdk::testkit::TestCluster;
//! let cluster = TestCluster::builder().agents(2).start().await?;
//! // ... run the framework against cluster.master() ...
//! let state = cluster.state().await?;
//! assert_eq!(state["slaves"].as_array().map(Vec::len), Some(2));
//! cluster.stop().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

/// What went wrong starting or asking the cluster.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("cannot start the test cluster: {0}")]
    Start(String),
    #[error(
        "cannot find the cairn-agent binary (set CAIRN_AGENT_BIN, or build it: cargo build -p cairn-agent): looked at {0}"
    )]
    NoAgentBinary(String),
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
}

/// How to start a [`TestCluster`].
#[derive(Clone, Debug)]
pub struct TestClusterBuilder {
    agents: usize,
    resources: String,
    attributes: Vec<String>,
    isolation: String,
    allocation_interval: Duration,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        TestClusterBuilder {
            agents: 1,
            resources: "cpus:4;mem:4096;disk:10000".into(),
            attributes: Vec::new(),
            isolation: "posix".into(),
            allocation_interval: Duration::from_millis(200),
        }
    }
}

impl TestClusterBuilder {
    pub fn agents(mut self, n: usize) -> Self {
        self.agents = n;
        self
    }

    /// Each agent's resources, Mesos syntax (each also gets its own slice
    /// of ports from 31000).
    pub fn resources(mut self, r: impl Into<String>) -> Self {
        self.resources = r.into();
        self
    }

    /// Attributes per agent (`rack:r1;zone:a`), in agent order; agents past
    /// the list have none.
    pub fn attributes(mut self, per_agent: Vec<String>) -> Self {
        self.attributes = per_agent;
        self
    }

    /// `posix` (the default), `cgroups` or `cgroups,namespaces` (root).
    pub fn isolation(mut self, isolation: impl Into<String>) -> Self {
        self.isolation = isolation.into();
        self
    }

    pub fn allocation_interval(mut self, d: Duration) -> Self {
        self.allocation_interval = d;
        self
    }

    pub async fn start(self) -> Result<TestCluster, TestkitError> {
        TestCluster::start_with(self).await
    }
}

/// A running master and agents; [`TestCluster::stop`] ends them and every
/// task they started (dropping it stops them too, less tidily).
#[derive(Debug)]
pub struct TestCluster {
    master: String,
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
}

fn start_err(e: impl ToString) -> TestkitError {
    TestkitError::Start(e.to_string())
}

/// The `cairn-agent` binary that starts executors.
pub fn agent_binary() -> Result<PathBuf, TestkitError> {
    if let Some(p) = std::env::var_os("CAIRN_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    // A test runs from target/<profile>/deps/; binaries sit in
    // target/<profile>/.
    let exe = std::env::current_exe().map_err(start_err)?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("cairn-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(TestkitError::NoAgentBinary(tried.join(", ")))
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// One agent with the default resources.
    pub async fn start() -> Result<TestCluster, TestkitError> {
        Self::builder().start().await
    }

    async fn start_with(b: TestClusterBuilder) -> Result<TestCluster, TestkitError> {
        let executor = (agent_binary()?, vec!["executor".to_string()]);
        let dir = tempfile::Builder::new()
            .prefix("cairn-testkit-")
            .tempdir()
            .map_err(start_err)?;
        let listener =
            cairn_master::listen("127.0.0.1:0".parse().map_err(start_err)?).map_err(start_err)?;
        let master_addr = listener.local_addr().map_err(start_err)?;
        let mut margs = cairn_master::MasterArgs::defaults();
        margs.listen = master_addr;
        margs.allocation_interval = b.allocation_interval;
        // An in-process test cluster on loopback: no cluster CA.
        margs.insecure = true;
        let (stop, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut servers = Vec::new();
        servers.push(tokio::spawn({
            let s = stopped(stop_rx.clone());
            async move {
                if let Err(e) = cairn_master::serve(margs, listener, s).await {
                    tracing::error!(error = %e, "test master stopped");
                }
            }
        }));
        for i in 0..b.agents {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(start_err)?;
            let first_port = 31000 + i * 100;
            let resources = format!("{};ports:[{first_port}-{}]", b.resources, first_port + 99);
            let mut args = cairn_agent::AgentArgs::defaults(
                cairn_model::zk::MasterAddr::Direct(master_addr.to_string()),
                listener.local_addr().map_err(start_err)?,
                dir.path().join(format!("agent-{i}")),
                Some(resources),
            );
            args.isolation = b.isolation.clone();
            // With the work directory, which the test kit removes.
            args.runtime_dir = Some(dir.path().join(format!("agent-{i}-run")));
            args.insecure = true;
            if let Some(a) = b.attributes.get(i) {
                args.attributes = Some(a.clone());
            }
            let s = stopped(stop_rx.clone());
            let exec = executor.clone();
            servers.push(tokio::spawn(async move {
                if let Err(e) = cairn_agent::serve(args, listener, exec, s).await {
                    tracing::error!(error = %e, "test agent stopped");
                }
            }));
        }
        let cluster = TestCluster {
            master: master_addr.to_string(),
            stop,
            servers,
            dir: Some(dir),
        };
        // Up when every agent is registered.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(state) = cluster.state().await
                && state["slaves"].as_array().map(Vec::len) == Some(b.agents)
            {
                return Ok(cluster);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestkitError::Start(format!(
                    "{} agents did not register within 30 s",
                    b.agents
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The master's `host:port`, for [`crate::SchedulerDriver::new`].
    pub fn master(&self) -> &str {
        &self.master
    }

    /// The master's `/state` (Mesos's shape).
    pub async fn state(&self) -> Result<serde_json::Value, TestkitError> {
        get_json(&format!("http://{}/state", self.master)).await
    }

    /// Ends every task, then the agents and the master.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for s in std::mem::take(&mut self.servers) {
            let _ = tokio::time::timeout(Duration::from_secs(20), s).await;
        }
        self.dir.take();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn get_json(url: &str) -> Result<serde_json::Value, TestkitError> {
    use http_body_util::BodyExt;
    let err = |reason: String| TestkitError::Http {
        url: url.to_string(),
        reason,
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| err(e.to_string()))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("status {}", resp.status())));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| err(e.to_string()))
}
