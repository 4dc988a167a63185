//! A TCP load balancer per service: connections are spread round-robin over the service's
//! healthy endpoints, as listed in the [`Directory`] at the moment each connection arrives.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::dns::{Directory, Endpoint};

/// How long connecting to one endpoint may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after an accept error caused by exhausted resources (file descriptors, memory), so the
/// loop does not spin while they stay exhausted.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// Forwards each TCP connection accepted on `listener` to the next endpoint of `service` in `directory` (round-robin over the current endpoints, re-read at every connection). If connecting to the chosen endpoint fails (within 2 s), the next is tried, each at most once; with none left or none listed, the client connection is closed. Bytes are copied both ways until either side closes (tokio::io::copy_bidirectional). Runs until the listener fails; each connection is its own task.
///
/// Endpoints are taken in their sorted order, so the rotation does not depend on the order in
/// which the framework happens to list them. Accept errors that concern one connection or
/// exhausted resources are not failures of the listener: they are logged and accepting goes on.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: String,
    directory: Directory,
) -> std::io::Result<()> {
    let mut next: usize = 0;
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => {
                debug!(%service, %error, "accept error on one connection");
                continue;
            }
            Err(error) if is_resource_exhaustion(&error) => {
                warn!(%service, %error, "cannot accept connections for now");
                tokio::time::sleep(RESOURCE_BACKOFF).await;
                continue;
            }
            Err(error) => return Err(error),
        };

        let mut endpoints: Vec<Endpoint> = directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&service)
            .cloned()
            .unwrap_or_default();
        endpoints.sort();
        endpoints.dedup();
        // The rotation is decided here, in accept order, so consecutive connections go to
        // consecutive endpoints whatever the connection tasks do.
        if !endpoints.is_empty() {
            let start = next % endpoints.len();
            endpoints.rotate_left(start);
        }
        next = next.wrapping_add(1);

        let service = service.clone();
        tokio::spawn(async move {
            forward(client, peer, &service, &endpoints).await;
        });
    }
}

/// Connects `client` to the first of `endpoints` that accepts within [`CONNECT_TIMEOUT`] and
/// copies bytes both ways; drops (closes) `client` when none does.
async fn forward(mut client: TcpStream, peer: SocketAddr, service: &str, endpoints: &[Endpoint]) {
    let Some((mut backend, endpoint)) = connect_any(service, endpoints).await else {
        info!(%service, %peer, candidates = endpoints.len(), "no endpoint reachable; closing client connection");
        return;
    };
    // Latency matters more than packet count for proxied request/response traffic; failing to
    // set the option only costs that.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((to_backend, to_client)) => {
            debug!(%service, %peer, endpoint = %endpoint.name, to_backend, to_client, "connection closed");
        }
        Err(error) => {
            debug!(%service, %peer, endpoint = %endpoint.name, %error, "connection ended with an error");
        }
    }
}

/// The first endpoint, in order, that accepts a connection within [`CONNECT_TIMEOUT`].
async fn connect_any<'a>(
    service: &str,
    endpoints: &'a [Endpoint],
) -> Option<(TcpStream, &'a Endpoint)> {
    for endpoint in endpoints {
        let address = SocketAddr::from((endpoint.ip, endpoint.port));
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Some((stream, endpoint)),
            Ok(Err(error)) => {
                warn!(%service, endpoint = %endpoint.name, %address, %error, "cannot connect to endpoint; trying the next");
            }
            Err(_) => {
                warn!(%service, endpoint = %endpoint.name, %address, timeout = ?CONNECT_TIMEOUT, "connecting to endpoint timed out; trying the next");
            }
        }
    }
    None
}

/// Whether an accept error concerns only the connection being accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// Whether an accept error means the process or system is out of descriptors or memory, which
/// passes as connections close.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    // ENFILE and EMFILE have these values on Linux, macOS and the BSDs.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    error.kind() == io::ErrorKind::OutOfMemory
        || (cfg!(unix) && matches!(error.raw_os_error(), Some(ENFILE | EMFILE)))
}

/// The load balancers of all services that ask for one: `sync` starts a listener for each newly wanted (service, address) and stops the ones no longer wanted (their open connections may finish).
///
/// Dropping `Balancers` stops all listeners. Stopping is asynchronous: a stopped listener's
/// socket closes when the runtime next gets to its task, so re-binding the same port right
/// away (an address change that keeps the port) may fail once and succeed at a later `sync`.
#[derive(Debug, Default)]
pub struct Balancers {
    running: BTreeMap<String, Running>,
}

/// One running balancer.
#[derive(Debug)]
struct Running {
    /// The address `sync` was asked for (possibly with port 0).
    wanted: SocketAddr,
    /// The address actually bound.
    bound: SocketAddr,
    task: JoinHandle<()>,
}

impl Balancers {
    /// `wanted`: service name -> address to listen on. Returns, for each service whose listener could not be bound this time, the error text (it is retried at the next sync).
    ///
    /// A balancer whose listener failed since the last call is started again.
    pub fn sync(
        &mut self,
        wanted: &BTreeMap<String, std::net::SocketAddr>,
        directory: &Directory,
    ) -> BTreeMap<String, String> {
        self.running.retain(|service, running| {
            let keep = wanted.get(service) == Some(&running.wanted) && !running.task.is_finished();
            if !keep {
                info!(%service, address = %running.bound, "stopping load balancer");
                running.task.abort();
            }
            keep
        });

        let mut errors = BTreeMap::new();
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(error) => {
                for service in wanted.keys().filter(|s| !self.running.contains_key(*s)) {
                    errors.insert(service.clone(), format!("no tokio runtime: {error}"));
                }
                return errors;
            }
        };
        for (service, &address) in wanted {
            if self.running.contains_key(service) {
                continue;
            }
            match bind(address) {
                Ok((listener, bound)) => {
                    info!(%service, address = %bound, "starting load balancer");
                    let task = runtime.spawn(run(listener, service.clone(), directory.clone()));
                    self.running.insert(
                        service.clone(),
                        Running {
                            wanted: address,
                            bound,
                            task,
                        },
                    );
                }
                Err(error) => {
                    warn!(%service, %address, %error, "cannot start load balancer");
                    errors.insert(
                        service.clone(),
                        format!("cannot listen on {address}: {error}"),
                    );
                }
            }
        }
        errors
    }

    /// The address each running balancer listens on (useful when port 0 was asked for).
    pub fn addresses(&self) -> BTreeMap<String, std::net::SocketAddr> {
        self.running
            .iter()
            .filter(|(_, running)| !running.task.is_finished())
            .map(|(service, running)| (service.clone(), running.bound))
            .collect()
    }
}

impl Drop for Balancers {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

/// Binds a listener on `address`; the caller must be inside a tokio runtime.
fn bind(address: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    Ok((TcpListener::from_std(listener)?, bound))
}

/// [`serve`], logging how it ended.
async fn run(listener: TcpListener, service: String, directory: Directory) {
    if let Err(error) = serve(listener, service.clone(), directory).await {
        warn!(%service, %error, "load balancer listener failed; it restarts at the next sync");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::{Arc, RwLock};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SERVICE: &str = "echo";
    const STEP: Duration = Duration::from_secs(5);

    /// A backend that answers each connection with its name, then echoes until EOF.
    async fn backend(name: &str) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let greeting = format!("{name}\n");
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    stream.write_all(greeting.as_bytes()).await?;
                    let (mut reader, mut writer) = stream.split();
                    tokio::io::copy(&mut reader, &mut writer).await?;
                    io::Result::Ok(())
                });
            }
        });
        Endpoint {
            name: name.to_string(),
            ip: Ipv4Addr::LOCALHOST,
            port,
        }
    }

    /// A port on which nothing listens (bound, then released).
    async fn closed_endpoint(name: &str) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        Endpoint {
            name: name.to_string(),
            ip: Ipv4Addr::LOCALHOST,
            port,
        }
    }

    /// Connects through the balancer, sends a line, and returns the backend's name after
    /// checking the line came back.
    async fn visit(address: SocketAddr) -> String {
        let mut stream = tokio::time::timeout(STEP, TcpStream::connect(address))
            .await
            .unwrap()
            .unwrap();
        stream.write_all(b"ping\n").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(STEP, stream.read_to_string(&mut reply))
            .await
            .unwrap()
            .unwrap();
        let (name, echoed) = reply.split_once('\n').expect("no greeting");
        assert_eq!(echoed, "ping\n");
        name.to_string()
    }

    async fn tally(address: SocketAddr, connections: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..connections {
            *counts.entry(visit(address).await).or_default() += 1;
        }
        counts
    }

    async fn start(
        endpoints: Vec<Endpoint>,
    ) -> (SocketAddr, Directory, JoinHandle<io::Result<()>>) {
        let directory: Directory = Arc::new(RwLock::new(BTreeMap::from([(
            SERVICE.to_string(),
            endpoints,
        )])));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, SERVICE.to_string(), directory.clone()));
        (address, directory, task)
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spreads_connections_evenly_and_follows_the_directory() {
        let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
        let (address, directory, task) = start(vec![c.clone(), a.clone(), b.clone()]).await;

        assert_eq!(
            tally(address, 30).await,
            counts(&[("a", 10), ("b", 10), ("c", 10)])
        );

        directory
            .write()
            .unwrap()
            .insert(SERVICE.to_string(), vec![a.clone(), c.clone()]);
        assert_eq!(tally(address, 20).await, counts(&[("a", 10), ("c", 10)]));
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skips_endpoints_that_refuse() {
        let (a, b) = (backend("a").await, backend("b").await);
        let dead = closed_endpoint("dead").await;
        let (address, _directory, task) = start(vec![a, dead, b]).await;
        let tally = tally(address, 30).await;
        assert_eq!(tally.values().sum::<usize>(), 30);
        assert_eq!(tally.keys().cloned().collect::<Vec<_>>(), vec!["a", "b"]);
        task.abort();
    }

    /// Whether the balancer closes the connection without relaying anything.
    async fn is_closed_at_once(address: SocketAddr) -> bool {
        let Ok(mut stream) = TcpStream::connect(address).await else {
            return true;
        };
        let mut buffer = [0u8; 16];
        matches!(
            tokio::time::timeout(STEP, stream.read(&mut buffer)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closes_clients_when_no_endpoint_is_usable() {
        let dead = closed_endpoint("dead").await;
        let (address, directory, task) = start(vec![dead]).await;
        assert!(is_closed_at_once(address).await);

        directory.write().unwrap().clear();
        assert!(is_closed_at_once(address).await);

        // The balancer itself keeps running.
        let a = backend("a").await;
        directory
            .write()
            .unwrap()
            .insert(SERVICE.to_string(), vec![a]);
        assert_eq!(visit(address).await, "a");
        assert!(!task.is_finished());
        task.abort();
    }

    async fn refuses_within(address: SocketAddr, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if TcpStream::connect(address).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_starts_and_stops_balancers() {
        let (a, b) = (backend("a").await, backend("b").await);
        let directory: Directory = Arc::new(RwLock::new(BTreeMap::from([
            ("one".to_string(), vec![a]),
            ("two".to_string(), vec![b]),
        ])));
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut balancers = Balancers::default();

        let wanted = BTreeMap::from([("one".to_string(), any_port), ("two".to_string(), any_port)]);
        assert!(balancers.sync(&wanted, &directory).is_empty());
        let addresses = balancers.addresses();
        assert_eq!(addresses.len(), 2);
        assert_eq!(visit(addresses["one"]).await, "a");
        assert_eq!(visit(addresses["two"]).await, "b");

        // Unchanged wants leave the running balancers alone.
        assert!(balancers.sync(&wanted, &directory).is_empty());
        assert_eq!(balancers.addresses(), addresses);

        // A connection open through "two" survives its balancer's removal.
        let mut open = TcpStream::connect(addresses["two"]).await.unwrap();
        let mut greeting = [0u8; 2];
        open.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"b\n");

        let wanted = BTreeMap::from([("one".to_string(), any_port)]);
        assert!(balancers.sync(&wanted, &directory).is_empty());
        assert_eq!(
            balancers.addresses().keys().collect::<Vec<_>>(),
            vec!["one"]
        );
        assert!(refuses_within(addresses["two"], STEP).await);
        assert_eq!(visit(addresses["one"]).await, "a");

        open.write_all(b"still here\n").await.unwrap();
        let mut echoed = [0u8; 11];
        open.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"still here\n");

        // An address that is taken is reported, and retried at the next sync.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_address = taken.local_addr().unwrap();
        let wanted = BTreeMap::from([
            ("one".to_string(), any_port),
            ("two".to_string(), taken_address),
        ]);
        let errors = balancers.sync(&wanted, &directory);
        assert_eq!(errors.keys().collect::<Vec<_>>(), vec!["two"]);
        assert!(
            errors["two"].contains(&taken_address.to_string()),
            "{errors:?}"
        );
        drop(taken);
        assert!(balancers.sync(&wanted, &directory).is_empty());
        assert_eq!(balancers.addresses()["two"], taken_address);
        assert_eq!(visit(taken_address).await, "b");

        // Dropping the balancers stops them all.
        let one = balancers.addresses()["one"];
        drop(balancers);
        assert!(refuses_within(one, STEP).await);
        assert!(refuses_within(taken_address, STEP).await);
    }

    #[test]
    fn sync_outside_a_runtime_reports_errors_instead_of_panicking() {
        let directory = Directory::default();
        let mut balancers = Balancers::default();
        let wanted = BTreeMap::from([(
            "one".to_string(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        )]);
        let errors = balancers.sync(&wanted, &directory);
        assert_eq!(errors.keys().collect::<Vec<_>>(), vec!["one"]);
        assert!(balancers.addresses().is_empty());
    }
}
