//! `cairn-services`: long-running services on Cairn, as a framework on the
//! SDK.
//!
//! Apps are declared in YAML ([`spec`]) and applied idempotently: each is a
//! replica set of instances (one process, or a pod of several sharing a
//! network namespace and a volume) that the framework keeps at its count,
//! placed under constraints ([`constraints`]), health-checked by their
//! executor ([`executor`]), replaced with backoff when they end, killed
//! when unhealthy, rolled to a new version within the app's capacity
//! bounds ([`scheduler`]). A service gives an app's healthy instances a
//! stable name in DNS ([`dns`]) and a TCP load balancer ([`lb`]). The HTTP
//! API ([`api`]) is what `cairn apply`, `get`, `describe`, `scale` and
//! `delete` talk to.

pub mod api;
pub mod constraints;
pub mod dns;
pub mod executor;
pub mod lb;
pub mod scheduler;
pub mod spec;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::{Capability, FrameworkInfo, SchedulerDriver};

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error(transparent)]
    State(#[from] scheduler::StateError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error("cannot find this program to start executors with: {0}")]
    Exe(#[source] std::io::Error),
}

#[derive(Clone, Debug, clap::Args)]
pub struct ServeOptions {
    /// The master: host:port or zk://host:port,.../path.
    #[arg(long, env = "CAIRN_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Keeps the framework id, the apps and their instances here.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where the DNS server listens (UDP).
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub dns: SocketAddr,
    /// Services are `<name>.<domain>`.
    #[arg(long, default_value = "services.cairn")]
    pub domain: String,
    /// Address the services' TCP load balancers listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub lb_address: IpAddr,
    /// How long the master keeps the instances running while the framework
    /// is away.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1week")]
    pub failover_timeout: Duration,
}

/// Serves the API, DNS and the balancers, and runs the apps, until
/// `shutdown` completes.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServicesError> {
    let exe = std::env::current_exe().map_err(ServicesError::Exe)?;
    let command = format!(
        "'{}' executor",
        exe.display().to_string().replace('\'', r"'\''")
    );
    let shared = Arc::new(Mutex::new(scheduler::Shared::new(
        options.state_dir.clone(),
        command,
    )?));
    let directory = shared
        .lock()
        .map(|s| s.directory.clone())
        .unwrap_or_default();
    let udp = tokio::net::UdpSocket::bind(options.dns)
        .await
        .map_err(|source| ServicesError::Listen {
            addr: options.dns,
            source,
        })?;
    let dns_addr = udp.local_addr().map_err(ServicesError::Http)?;
    let dns = tokio::spawn(dns::serve(udp, options.domain.clone(), directory.clone()));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServicesError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServicesError::Http)?;
    tracing::info!(%addr, dns = %dns_addr, master = %options.master, "cairn-services serving");
    println!(
        "cairn-services: API at http://{addr}/v1/apps, DNS at {dns_addr} ({})",
        options.domain
    );

    let balancers = Arc::new(Mutex::new(BTreeMap::new()));
    let lbs = tokio::spawn(run_balancers(
        shared.clone(),
        directory,
        options.lb_address,
        balancers.clone(),
    ));
    let mut info = FrameworkInfo::new("cairn-services", "");
    info.failover_timeout = options.failover_timeout;
    info.capabilities.insert(Capability::PartitionAware);
    let mut driver = SchedulerDriver::new(options.master.clone(), info).credential_from_env();
    if let Some(dir) = &options.state_dir {
        driver = driver.framework_id_file(dir.join("framework-id"));
    }
    let framework = tokio::spawn(driver.run(scheduler::ServicesScheduler {
        shared: shared.clone(),
    }));
    let ticker = tokio::spawn(scheduler::tick(shared.clone()));
    let api = api::Api {
        shared,
        balancers,
        domain: options.domain.clone(),
    };
    let result = axum::serve(listener, api::router(api))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServicesError::Http);
    for t in [
        framework.abort_handle(),
        ticker.abort_handle(),
        lbs.abort_handle(),
        dns.abort_handle(),
    ] {
        t.abort();
    }
    result
}

/// Keeps a balancer listening for each service with a port.
async fn run_balancers(
    shared: Arc<Mutex<scheduler::Shared>>,
    directory: dns::Directory,
    ip: IpAddr,
    addresses: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
) {
    let mut balancers = lb::Balancers::default();
    let mut complained = BTreeMap::new();
    loop {
        let wanted: BTreeMap<String, SocketAddr> = match shared.lock() {
            Ok(s) => s
                .apps
                .values()
                .filter_map(|a| {
                    let svc = a.spec.service.as_ref()?;
                    Some((svc.name.clone(), SocketAddr::new(ip, svc.port?)))
                })
                .collect(),
            Err(_) => return,
        };
        let errors = balancers.sync(&wanted, &directory);
        for (service, e) in &errors {
            if complained.get(service) != Some(e) {
                tracing::warn!(%service, error = %e, "cannot start the service's load balancer");
            }
        }
        complained = errors;
        if let Ok(mut a) = addresses.lock() {
            *a = balancers.addresses();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
