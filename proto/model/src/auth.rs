//! Authentication and authorization: who a caller is (a principal proven
//! by its secret) and what it may do (ACLs, deny by default).
//!
//! Files use Mesos's JSON shapes, so existing credential and ACL files
//! work:
//!
//! ```json
//! {"credentials": [{"principal": "spark", "secret": "..."}]}
//! ```
//!
//! ```json
//! {"register_frameworks": [{"principals": {"values": ["spark"]}, "roles": {"values": ["analytics"]}}],
//!  "run_tasks": [{"principals": {"type": "ANY"}, "users": {"values": ["nobody"]}}],
//!  "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}],
//!  "view_state": [{"principals": {"values": ["ops", "viewer"]}}],
//!  "read_sandboxes": [{"principals": {"values": ["ops"]}}]}
//! ```
//!
//! An action no rule grants is refused (unless `"permissive": true`).
//! `root` is never matched by `ANY` users: running tasks as root must be
//! granted by name.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Clone, Default, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    credentials: Vec<Credential>,
}

#[derive(Clone, Deserialize)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, secret hidden)", self.principal)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let principals: Vec<&str> = self
            .credentials
            .iter()
            .map(|c| c.principal.as_str())
            .collect();
        write!(f, "Credentials({principals:?}, secrets hidden)")
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials {
    pub fn new(list: Vec<Credential>) -> Self {
        Credentials { credentials: list }
    }

    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    /// Whether `secret` is `principal`'s.
    pub fn verify(&self, principal: &str, secret: &str) -> bool {
        let mut ok = false;
        for c in &self.credentials {
            // Every entry is compared, so timing says nothing of which.
            ok |= same(c.principal.as_bytes(), principal.as_bytes())
                & same(c.secret.as_bytes(), secret.as_bytes());
        }
        ok
    }

    /// Every secret, for checking that none leaks.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.credentials.iter().map(|c| c.secret.as_str())
    }
}

/// A set of principals, users, roles...: `{"values": [...]}` or
/// `{"type": "ANY"}` / `{"type": "NONE"}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Entity {
    #[serde(default)]
    values: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<EntityKind>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum EntityKind {
    Any,
    None,
    Some,
}

impl Entity {
    pub fn any() -> Self {
        Entity {
            values: Vec::new(),
            kind: Some(EntityKind::Any),
        }
    }

    pub fn of(values: &[&str]) -> Self {
        Entity {
            values: values.iter().map(|v| (*v).to_string()).collect(),
            kind: None,
        }
    }

    /// Whether `v` is in the set (`None`: the anonymous caller, matched only
    /// by ANY). `root` is matched only by name when `root_by_name`.
    fn matches(&self, v: Option<&str>, root_by_name: bool) -> bool {
        match self.kind {
            Some(EntityKind::None) => false,
            Some(EntityKind::Any) if root_by_name && v == Some("root") => false,
            Some(EntityKind::Any) => true,
            _ => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RegisterRule {
    pub principals: Entity,
    pub roles: Entity,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RunRule {
    pub principals: Entity,
    pub users: Entity,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TeardownRule {
    pub principals: Entity,
    pub framework_principals: Entity,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PrincipalRule {
    pub principals: Entity,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Acls {
    #[serde(default)]
    pub permissive: bool,
    #[serde(default)]
    pub register_frameworks: Vec<RegisterRule>,
    #[serde(default)]
    pub run_tasks: Vec<RunRule>,
    #[serde(default)]
    pub teardown_frameworks: Vec<TeardownRule>,
    #[serde(default)]
    pub view_state: Vec<PrincipalRule>,
    #[serde(default)]
    pub read_sandboxes: Vec<PrincipalRule>,
    /// Who may rotate the cluster's join tokens (Cairn's own action).
    #[serde(default)]
    pub manage_tokens: Vec<PrincipalRule>,
}

/// Why an action was refused, for the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{principal} is not authorized to {action}")]
pub struct Denied {
    pub principal: String,
    pub action: String,
}

fn who(p: Option<&str>) -> String {
    p.map_or_else(
        || "the anonymous caller".to_string(),
        |p| format!("principal {p:?}"),
    )
}

impl Acls {
    fn verdict(
        &self,
        granted: bool,
        principal: Option<&str>,
        action: String,
    ) -> Result<(), Denied> {
        if granted || self.permissive {
            Ok(())
        } else {
            Err(Denied {
                principal: who(principal),
                action,
            })
        }
    }

    pub fn register(&self, principal: Option<&str>, role: &str) -> Result<(), Denied> {
        let ok = self
            .register_frameworks
            .iter()
            .any(|r| r.principals.matches(principal, false) && r.roles.matches(Some(role), false));
        self.verdict(
            ok,
            principal,
            format!("register a framework with role {role:?}"),
        )
    }

    pub fn run_as(&self, principal: Option<&str>, user: &str) -> Result<(), Denied> {
        let ok = self
            .run_tasks
            .iter()
            .any(|r| r.principals.matches(principal, false) && r.users.matches(Some(user), true));
        self.verdict(ok, principal, format!("run tasks as user {user:?}"))
    }

    pub fn teardown(
        &self,
        principal: Option<&str>,
        framework_principal: &str,
    ) -> Result<(), Denied> {
        let ok = self.teardown_frameworks.iter().any(|r| {
            r.principals.matches(principal, false)
                && r.framework_principals
                    .matches(Some(framework_principal), false)
        });
        self.verdict(
            ok,
            principal,
            format!("tear down frameworks of principal {framework_principal:?}"),
        )
    }

    pub fn view(&self, principal: Option<&str>) -> Result<(), Denied> {
        let ok = self
            .view_state
            .iter()
            .any(|r| r.principals.matches(principal, false));
        self.verdict(ok, principal, "view the cluster's state".into())
    }

    pub fn read_sandbox(&self, principal: Option<&str>) -> Result<(), Denied> {
        let ok = self
            .read_sandboxes
            .iter()
            .any(|r| r.principals.matches(principal, false));
        self.verdict(ok, principal, "read task sandboxes".into())
    }

    /// Granted only by a `manage_tokens` rule, never by `permissive`: a
    /// join token admits nodes to the cluster.
    pub fn manage_tokens(&self, principal: Option<&str>) -> Result<(), Denied> {
        let ok = self
            .manage_tokens
            .iter()
            .any(|r| r.principals.matches(principal, false));
        if ok {
            Ok(())
        } else {
            Err(Denied {
                principal: who(principal),
                action: "rotate the cluster's join tokens (grant it with a manage_tokens ACL)"
                    .into(),
            })
        }
    }
}

/// `Basic base64(principal:secret)` -> its parts.
#[cfg(feature = "mesos-json")]
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (p, s) = text.split_once(':')?;
    Some((p.to_string(), s.to_string()))
}

/// The HTTP `Authorization` (and gRPC `authorization`) value for
/// `principal` and `secret`.
#[cfg(feature = "mesos-json")]
pub fn basic_value(principal: &str, secret: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"))
    )
}

/// Who presents `authorization`, checked against `credentials` (none: no
/// authentication, nobody is identified).
#[cfg(feature = "mesos-json")]
pub fn authenticate(
    credentials: Option<&Credentials>,
    authorization: Option<&str>,
) -> Result<Option<String>, Unauthenticated> {
    let Some(creds) = credentials else {
        return Ok(None);
    };
    let (principal, secret) = parse_basic(authorization.ok_or(Unauthenticated::Missing)?)
        .ok_or(Unauthenticated::Invalid)?;
    if creds.verify(&principal, &secret) {
        Ok(Some(principal))
    } else {
        Err(Unauthenticated::Invalid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("authentication required: give a principal and secret (HTTP Basic)")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
}

/// A token bucket per key (a principal, or a client address): at most
/// `burst` events at once and `burst` per `period` sustained.
#[derive(Debug)]
pub struct RateLimit {
    burst: f64,
    per_sec: f64,
    buckets: BTreeMap<String, (f64, std::time::Instant)>,
}

impl RateLimit {
    pub fn new(burst: u32, period: std::time::Duration) -> Self {
        RateLimit {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(burst.max(1)) / period.as_secs_f64().max(1e-3),
            buckets: BTreeMap::new(),
        }
    }

    /// Takes one event for `key` at `now`; false when over the limit.
    pub fn allow(&mut self, key: &str, now: std::time::Instant) -> bool {
        if self.buckets.len() > 100_000 {
            // Forget full buckets rather than grow without bound.
            let per_sec = self.per_sec;
            let burst = self.burst;
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = self
            .buckets
            .entry(key.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acls(json: &str) -> Acls {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn everything_is_denied_unless_granted() {
        let a = Acls::default();
        assert!(a.register(Some("p"), "*").is_err());
        assert!(a.view(Some("p")).is_err());
        assert!(a.run_as(Some("p"), "nobody").is_err());
        let a = acls(r#"{"permissive": true}"#);
        assert!(a.view(None).is_ok());
        assert!(
            a.manage_tokens(Some("p")).is_err(),
            "permissive never grants token rotation"
        );
        let a = acls(r#"{"manage_tokens": [{"principals": {"values": ["ops"]}}]}"#);
        assert!(a.manage_tokens(Some("ops")).is_ok());
        assert!(a.manage_tokens(Some("viewer")).is_err());
    }

    #[test]
    fn rules_grant_by_principal_and_object() {
        let a = acls(
            r#"{"register_frameworks": [{"principals": {"values": ["spark"]}, "roles": {"values": ["analytics"]}}],
                "run_tasks": [{"principals": {"type": "ANY"}, "users": {"type": "ANY"}},
                              {"principals": {"values": ["ops"]}, "users": {"values": ["root"]}}],
                "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}],
                "view_state": [{"principals": {"values": ["ops", "viewer"]}}],
                "read_sandboxes": [{"principals": {"values": ["ops"]}}]}"#,
        );
        assert!(a.register(Some("spark"), "analytics").is_ok());
        let e = a.register(Some("spark"), "prod").unwrap_err();
        assert_eq!(
            e.to_string(),
            "principal \"spark\" is not authorized to register a framework with role \"prod\""
        );
        assert!(a.register(None, "analytics").is_err());
        assert!(a.run_as(Some("spark"), "nobody").is_ok());
        assert!(
            a.run_as(Some("spark"), "root").is_err(),
            "ANY users must not include root"
        );
        assert!(a.run_as(Some("ops"), "root").is_ok());
        assert!(a.teardown(Some("ops"), "spark").is_ok());
        assert!(a.teardown(Some("spark"), "spark").is_err());
        assert!(a.view(Some("viewer")).is_ok());
        assert!(a.read_sandbox(Some("viewer")).is_err());
        assert!(
            serde_json::from_str::<Acls>(r#"{"run_task": []}"#).is_err(),
            "a misspelt rule is refused"
        );
    }

    #[test]
    fn secrets_are_checked_whole_and_never_printed() {
        let c: Credentials =
            serde_json::from_str(r#"{"credentials": [{"principal": "a", "secret": "s3cr3t"}]}"#)
                .unwrap();
        assert!(c.verify("a", "s3cr3t"));
        assert!(!c.verify("a", "s3cr3"));
        assert!(!c.verify("b", "s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let mut r = RateLimit::new(3, std::time::Duration::from_secs(1));
        let t0 = std::time::Instant::now();
        assert!((0..3).all(|_| r.allow("k", t0)));
        assert!(!r.allow("k", t0));
        assert!(r.allow("other", t0));
        assert!(r.allow("k", t0 + std::time::Duration::from_millis(400)));
    }
}
