//! rustls configurations, the master's listener, and client connectors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::either::Either;

use crate::ca::{NodeIdentity, Role, fingerprint, role_of_der};
use crate::{AGENT_NAME, MASTER_NAME, TlsError};

/// ring, not aws-lc: aws-lc needs cmake and a C toolchain set-up that a
/// fresh machine may lack. (rustls marks ring's provider deprecated only
/// for its lack of post-quantum key exchange.)
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(format!("{what}: no certificate")));
    }
    Ok(certs)
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "the cluster CA")? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// The node's chain (its certificate, then the CA's, so that a node
/// joining by fingerprint finds the CA) and key.
fn chain_and_key(
    id: &NodeIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let mut chain = certs(&id.cert_pem, "the node certificate")?;
    chain.extend(certs(&id.ca_pem, "the cluster CA")?);
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
        .map_err(|e| TlsError::Certificate(format!("the node key: {e}")))?;
    Ok((chain, key))
}

/// A node's server configuration (a master's or an agent's): its own
/// certificate; clients may present a certificate of the cluster CA (agents
/// must to the master, which reads their role from it) or none
/// (frameworks, operators, executors and joining nodes, which authenticate
/// otherwise).
pub fn server_config(id: &NodeIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&id.ca_pem)?, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let (chain, key) = chain_and_key(id)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts the cluster CA: with
/// [`https_connector`] (which verifies [`MASTER_NAME`]) only masters, with
/// [`agent_https_connector`] any agent of the cluster. With `identity`, it
/// presents that certificate (an agent's).
pub fn client_config(
    ca_pem: &str,
    identity: Option<&NodeIdentity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    with_identity(builder, identity)
}

fn with_identity(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<&NodeIdentity>,
) -> Result<ClientConfig, TlsError> {
    Ok(match identity {
        Some(id) => {
            let (chain, key) = chain_and_key(id)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// A client configuration for dialling the agent `agent_id`: the server
/// must hold a certificate of the cluster CA naming [`AGENT_NAME`] and that
/// agent id, so one agent cannot answer for another (use it with
/// [`agent_https_connector`] or [`agent_grpc_connect`]). With `identity`,
/// it presents that certificate.
pub fn agent_client_config(
    ca_pem: &str,
    identity: Option<&NodeIdentity>,
    agent_id: &str,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(ca_pem)?,
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AgentVerifier {
            inner,
            agent_id: agent_id.to_string(),
        }));
    with_identity(builder, identity)
}

/// The cluster CA's usual verification under the name [`AGENT_NAME`]
/// (whatever name the connection was opened for), then the agent id.
#[derive(Debug)]
struct AgentVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    agent_id: String,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &agent_name(),
            ocsp_response,
            now,
        )?;
        match role_of_der(end_entity) {
            Some(Role::Agent { id }) if id == self.agent_id => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "the certificate names {other:?}, not agent {}",
                self.agent_id
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn agent_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls_pki_types::DnsName::try_from(AGENT_NAME)
            .expect("AGENT_NAME is a DNS name")
            .to_owned(),
    )
}

fn master_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls_pki_types::DnsName::try_from(MASTER_NAME)
            .expect("MASTER_NAME is a DNS name")
            .to_owned(),
    )
}

/// A client configuration for a node joining with a token: it trusts the
/// master only if the master's chain holds a CA certificate with
/// `ca_fingerprint` and the master's certificate is that CA's.
pub fn pinned_client_config(ca_fingerprint: &str) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: ca_fingerprint.to_string(),
            provider,
        }))
        .with_no_client_auth())
}

#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General("the master's CA is not the one the join token names".into())
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTPS connector to masters (verifying [`MASTER_NAME`], whatever
/// address is dialled); with `http2` for gRPC, HTTP/1 otherwise.
pub type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// (The connector sets ALPN itself, from the HTTP versions enabled.)
pub fn https_connector(config: ClientConfig, http2: bool) -> HttpsConnector {
    connector(config, http2, master_name())
}

/// An HTTPS connector to agents: it verifies [`AGENT_NAME`] (and, with a
/// configuration from [`agent_client_config`], the agent id), whatever
/// address is dialled.
pub fn agent_https_connector(config: ClientConfig, http2: bool) -> HttpsConnector {
    connector(config, http2, agent_name())
}

fn connector(mut config: ClientConfig, http2: bool, name: ServerName<'static>) -> HttpsConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    config.alpn_protocols.clear();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    }
}

fn endpoint(addr: &str, connect_timeout: Duration) -> Result<tonic::transport::Endpoint, TlsError> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| TlsError::Config(format!("{addr:?} is not an address: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true),
    )
}

/// A lazily connecting gRPC channel to the master at `addr` (`host:port`)
/// over TLS with `config`.
pub fn grpc_channel(
    addr: &str,
    config: ClientConfig,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    Ok(endpoint(addr, connect_timeout)?.connect_with_connector_lazy(https_connector(config, true)))
}

/// A gRPC channel to the master at `addr`, connected (TLS handshake
/// done) before it is returned, so that a refused certificate reads as such.
pub async fn grpc_connect(
    addr: &str,
    config: ClientConfig,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    connect(addr, https_connector(config, true), connect_timeout).await
}

async fn connect(
    addr: &str,
    connector: HttpsConnector,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    endpoint(addr, connect_timeout)?
        .connect_with_connector(connector)
        .await
        .map_err(|e| TlsError::Connect {
            addr: addr.to_string(),
            reason: crate::error_chain(&e),
        })
}

/// A gRPC channel to the agent at `addr` (`host:port`), connected before
/// it is returned; `config` from [`agent_client_config`].
pub async fn agent_grpc_connect(
    addr: &str,
    config: ClientConfig,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    connect(addr, agent_https_connector(config, true), connect_timeout).await
}

/// An executor's TLS configuration for its agent, from the environment
/// the agent started it with: with [`crate::AGENT_CA_ENV`] set, verifying
/// the agent `MESOS_AGENT_ID`; `None` for an agent that speaks plain HTTP.
pub fn executor_tls_from_env() -> Result<Option<ClientConfig>, TlsError> {
    let Ok(ca) = std::env::var(crate::AGENT_CA_ENV) else {
        return Ok(None);
    };
    let agent_id = std::env::var("MESOS_AGENT_ID").unwrap_or_default();
    if agent_id.is_empty() {
        return Err(TlsError::Config(format!(
            "{} is set but MESOS_AGENT_ID is not: no agent to verify",
            crate::AGENT_CA_ENV
        )));
    }
    agent_client_config(&ca, None, &agent_id).map(Some)
}

/// A gRPC channel to the agent at `addr` (`host:port`): over TLS with
/// `tls` (from [`executor_tls_from_env`] or [`agent_client_config`]),
/// plain without.
pub async fn agent_channel(
    addr: &str,
    tls: Option<&ClientConfig>,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, TlsError> {
    if let Some(config) = tls {
        return agent_grpc_connect(addr, config.clone(), connect_timeout).await;
    }
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| TlsError::Config(format!("{addr:?} is not an address: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| TlsError::Connect {
            addr: addr.to_string(),
            reason: crate::error_chain(&e),
        })
}

/// Who is at the other end of an accepted connection: its address, and
/// with TLS the role its verified certificate names.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
    pub role: Option<Role>,
}

type Io = Either<tokio_rustls::server::TlsStream<TcpStream>, TcpStream>;

/// A node's listener for axum: plain TCP, or TLS with handshakes done
/// off the accept loop (a slow client cannot hold up the others).
pub struct Listener {
    local: SocketAddr,
    rx: mpsc::Receiver<(Io, Peer)>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many handshakes at once: past it, accepting waits, and
/// clients that never finish theirs cannot hold every descriptor.
const MAX_HANDSHAKES: usize = 1024;

impl Listener {
    /// Accepts on `tcp`; with `tls`, every connection speaks TLS. Must be
    /// called inside a tokio runtime.
    pub fn new(tcp: TcpListener, tls: Option<Arc<ServerConfig>>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off, as
                        // axum's own listener does.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // No Nagle: these protocols trade small messages.
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        let peer = Peer {
                            addr,
                            tls: false,
                            role: None,
                        };
                        if tx.send((Either::Right(stream), peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let tls = match tokio::time::timeout(
                                HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                            let role = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| role_of_der(c));
                            let peer = Peer {
                                addr,
                                tls: true,
                                role,
                            };
                            // The server takes connections as fast as it
                            // can; one it cannot take in time is dropped.
                            let _ = tx
                                .send_timeout((Either::Left(tls), peer), HANDSHAKE_TIMEOUT)
                                .await;
                        });
                    }
                }
            }
        });
        Ok(Listener { local, rx, task })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Io;
    type Addr = Peer;

    async fn accept(&mut self) -> (Io, Peer) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            tls: false,
            role: None,
        })
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        stream.remote_addr().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{ClusterCa, certificate_request};

    fn agent(ca: &ClusterCa, id: &str) -> NodeIdentity {
        let (key, csr) = certificate_request().expect("csr");
        let role = Role::Agent { id: id.into() };
        let pem = ca.sign_request(&csr, &role).expect("sign");
        NodeIdentity::new(&key, pem, ca.cert_pem().into()).expect("identity")
    }

    /// A whole handshake in memory: `server` serving, `client` dialling
    /// `name`.
    async fn handshake(
        server: &NodeIdentity,
        client: ClientConfig,
        name: ServerName<'static>,
    ) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(server).expect("server"));
        let serving = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let result = connector
            .connect(name, a)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        serving.abort();
        result
    }

    #[tokio::test]
    async fn an_agent_serves_under_its_own_id_and_cannot_pass_for_a_master_or_another_agent() {
        let ca = ClusterCa::generate("test").expect("ca");
        let a = agent(&ca, "agent-a");
        let master = ca.issue(&Role::Master, &[]).expect("master");
        let config = |id: &str| agent_client_config(ca.cert_pem(), None, id).expect("config");

        // Dialling agent-a: its certificate passes, whatever name is asked.
        handshake(&a, config("agent-a"), master_name())
            .await
            .expect("agent-a verifies as agent-a");
        // Another agent, a master, or another CA's agent-a do not.
        let e = handshake(&a, config("agent-b"), agent_name())
            .await
            .unwrap_err();
        assert!(e.contains("not agent agent-b"), "{e}");
        handshake(&master, config("agent-a"), agent_name())
            .await
            .unwrap_err();
        let other = ClusterCa::generate("other").expect("ca");
        handshake(&agent(&other, "agent-a"), config("agent-a"), agent_name())
            .await
            .unwrap_err();
        // A client verifying masters refuses the agent; one verifying any
        // agent of the cluster accepts it.
        let trusting = client_config(ca.cert_pem(), None).expect("config");
        let e = handshake(&a, trusting.clone(), master_name())
            .await
            .unwrap_err();
        assert!(e.contains("certificate"), "{e}");
        handshake(&a, trusting.clone(), agent_name())
            .await
            .expect("any agent of the cluster");
        handshake(&master, trusting, agent_name())
            .await
            .unwrap_err();
    }
}
