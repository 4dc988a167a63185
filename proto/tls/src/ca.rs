//! The cluster CA, the certificates it issues, and the files that keep them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::{AGENT_NAME, MASTER_NAME, TlsError};

/// What a certificate lets its holder be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    /// An agent, and the one agent id it may speak for.
    Agent {
        id: String,
    },
}

impl Role {
    fn uri(&self) -> String {
        match self {
            Role::Master => "cairn://master".into(),
            Role::Agent { id } => format!("cairn://agent/{id}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Role> {
        let rest = uri.strip_prefix("cairn://")?;
        if rest == "master" {
            return Some(Role::Master);
        }
        let id = rest.strip_prefix("agent/")?;
        (!id.is_empty()).then(|| Role::Agent { id: id.to_string() })
    }
}

/// The role a (chain-verified) certificate names, from its `cairn://` URI
/// name. `None` for a certificate that names no role.
pub fn role_of_der(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Role::from_uri(u),
        _ => None,
    })
}

/// SHA-256 of a DER certificate, lowercase hex: what join tokens pin.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint of the first certificate in a PEM text.
pub fn fingerprint_of_pem(pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Certificate(format!("not a PEM certificate: {e}")))?;
    Ok(fingerprint(&der))
}

/// The cluster's certificate authority: its certificate and signing key.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate(cluster_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("Cairn cluster CA ({cluster_name})"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::Certificate(format!("the CA certificate: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's key (given only to masters, which issue certificates too).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    fn params(role: &Role, names: &[String]) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        let (dns, eku): (&str, &[ExtendedKeyUsagePurpose]) = match role {
            // A master serves, and is a client of other masters' endpoints.
            Role::Master => (
                MASTER_NAME,
                &[
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
            // An agent is a client of the master and serves its own API
            // (executors, sandbox files) under the name [`AGENT_NAME`]: a
            // client dialling a master verifies [`MASTER_NAME`], which no
            // agent certificate carries.
            Role::Agent { .. } => (
                AGENT_NAME,
                &[
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
        };
        dn.push(DnType::CommonName, role.uri());
        params.distinguished_name = dn;
        params.extended_key_usages = eku.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let ia5 = |s: &str| {
            s.to_string()
                .try_into()
                .map_err(|_| TlsError::Certificate(format!("{s:?} is not an ASCII name")))
        };
        params.subject_alt_names =
            vec![SanType::DnsName(ia5(dns)?), SanType::URI(ia5(&role.uri())?)];
        // Only masters are named by their addresses too (for `curl
        // --cacert` and browsers); an agent's certificate must never match
        // an address a client dials.
        if *role == Role::Master {
            for name in names {
                match name.parse::<IpAddr>() {
                    Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                    Err(_) if name != MASTER_NAME => {
                        params.subject_alt_names.push(SanType::DnsName(ia5(name)?));
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(params)
    }

    /// Signs a node's certificate request for `role`. Only the request's
    /// key is used: the names come from the role, never from the request.
    pub fn sign_request(&self, csr_der: &[u8], role: &Role) -> Result<String, TlsError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der.to_vec(),
        ))
        .map_err(|e| TlsError::Certificate(format!("the certificate request: {e}")))?;
        let cert = Self::params(role, &[])?.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.pem())
    }

    /// A certificate and fresh key for `role` (a master's own, at start).
    pub fn issue(&self, role: &Role, names: &[String]) -> Result<NodeIdentity, TlsError> {
        let key = KeyPair::generate()?;
        let cert = Self::params(role, names)?.signed_by(&key, &self.issuer)?;
        Ok(NodeIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
            role: role.clone(),
        })
    }
}

/// A key and its certificate request, made by a node about to join.
pub fn certificate_request() -> Result<(KeyPair, Vec<u8>), TlsError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// A node's own certificate and key, and the CA it trusts.
#[derive(Clone)]
pub struct NodeIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub role: Role,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Joins with a key made here and a certificate the CA signed.
    pub fn new(key: &KeyPair, cert_pem: String, ca_pem: String) -> Result<NodeIdentity, TlsError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::Certificate(format!("the issued certificate: {e}")))?;
        let role = role_of_der(&der)
            .ok_or_else(|| TlsError::Certificate("the issued certificate names no role".into()))?;
        Ok(NodeIdentity {
            cert_pem,
            key_pem: key.serialize_pem(),
            ca_pem,
            role,
        })
    }

    /// Whether the certificate may serve TLS (has server usage). Agent
    /// certificates issued before agents served their own API lack it.
    pub fn can_serve(&self) -> bool {
        let Ok(der) = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()) else {
            return false;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
            return false;
        };
        matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth)
    }

    const FILES: [&'static str; 3] = ["node.crt", "node.key", "ca.crt"];

    /// The identity kept in `dir`, if the node has joined.
    pub fn load(dir: &Path) -> Result<Option<NodeIdentity>, TlsError> {
        let [cert, key, ca] = Self::FILES.map(|f| dir.join(f));
        if !cert.exists() {
            return Ok(None);
        }
        let cert_pem = read(&cert)?;
        let der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::File {
                path: cert.clone(),
                reason: e.to_string(),
            })?;
        let role = role_of_der(&der).ok_or_else(|| TlsError::File {
            path: cert.clone(),
            reason: "the certificate names no Cairn role".into(),
        })?;
        Ok(Some(NodeIdentity {
            cert_pem,
            key_pem: read(&key)?,
            ca_pem: read(&ca)?,
            role,
        }))
    }

    /// Writes the identity to `dir` (the key readable by its owner only).
    /// The certificate goes last: its presence marks a complete identity.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let [cert, key, ca] = Self::FILES.map(|f| dir.join(f));
        write_private(&key, &self.key_pem)?;
        write_public(&ca, &self.ca_pem)?;
        write_public(&cert, &self.cert_pem)
    }
}

pub(crate) fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes `text` to `path` readable by the owner only, atomically (a
/// crash leaves the old file or the new, never half of one).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    write_file(path, text, 0o600)
}

/// A certificate is public: readable by all (users point `CAIRN_CA` and
/// `curl --cacert` at it).
fn write_public(path: &Path, text: &str) -> Result<(), TlsError> {
    write_file(path, text, 0o644)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(err)?;
    // A name of its own (never another file's leftover, whose mode could
    // be looser), created new, its mode set whatever the umask.
    let name = path
        .file_name()
        .map_or_else(|| "file".to_string(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{name}.{}.{}.tmp", std::process::id(), unique()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    // The rename itself is durable once the directory is.
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The masters' cluster directory: `ca.crt`, `ca.key` and `tokens.json`.
#[derive(Debug, Clone)]
pub struct ClusterDir {
    pub path: PathBuf,
}

impl ClusterDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ClusterDir { path: path.into() }
    }

    pub fn exists(&self) -> bool {
        self.path.join("ca.key").exists()
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.path.join("tokens.json")
    }

    pub fn load_ca(&self) -> Result<ClusterCa, TlsError> {
        if !self.exists() {
            return Err(TlsError::NoCluster {
                path: self.path.clone(),
            });
        }
        let cert = read(&self.path.join("ca.crt"))?;
        let key = read(&self.path.join("ca.key"))?;
        ClusterCa::from_pem(&cert, &key)
    }

    /// Keeps `ca` here (a master that joined receives the CA this way).
    /// The key goes last: its presence marks a cluster directory.
    pub fn save_ca(&self, ca: &ClusterCa) -> Result<(), TlsError> {
        write_public(&self.path.join("ca.crt"), ca.cert_pem())?;
        write_private(&self.path.join("ca.key"), ca.key_pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_survive_signing_and_requests_cannot_choose_their_names() {
        let ca = ClusterCa::generate("test").expect("ca");
        let (key, csr) = certificate_request().expect("csr");
        let role = Role::Agent { id: "a1".into() };
        let pem = ca.sign_request(&csr, &role).expect("sign");
        let id = NodeIdentity::new(&key, pem, ca.cert_pem().into()).expect("identity");
        assert_eq!(id.role, role);
        let master = ca
            .issue(&Role::Master, &["127.0.0.1".into()])
            .expect("master");
        let der = CertificateDer::from_pem_slice(master.cert_pem.as_bytes()).expect("der");
        assert_eq!(role_of_der(&der), Some(Role::Master));
        assert!(id.can_serve() && master.can_serve());
        assert!(ca.sign_request(b"not a request", &role).is_err());
        assert_eq!(ca.fingerprint().len(), 64);
    }
}
