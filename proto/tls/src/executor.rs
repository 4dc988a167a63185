//! Executor authentication: an agent that serves TLS gives each executor
//! it starts a token (Mesos's `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`) that
//! the executor presents as `Authorization: Bearer <token>` on its link.
//! The token is an HMAC of the executor's framework and executor ids under
//! a key only the agent holds, so the agent needs no table of tokens: the
//! same key (kept in its work directory) verifies tokens of executors that
//! outlived a restart of the agent, and a token is good only for its own
//! executor.

use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::SecureRandom;

use crate::TlsError;
use crate::ca::{read, write_private};

/// The environment variable carrying an executor's token (Mesos's name).
pub const EXECUTOR_TOKEN_ENV: &str = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN";

/// The agent's key for executor tokens.
pub struct ExecutorKey {
    key: hmac::Key,
}

impl std::fmt::Debug for ExecutorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutorKey(hidden)")
    }
}

/// Why an executor's token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorAuthError {
    #[error(
        "executors of this agent must present their token (Authorization: Bearer, from {EXECUTOR_TOKEN_ENV})"
    )]
    Missing,
    #[error("the token is not executor {executor_id}'s of framework {framework_id}")]
    Wrong {
        framework_id: String,
        executor_id: String,
    },
}

impl ExecutorKey {
    /// The key in `dir/executor.key`, made (owner-only, written before it is
    /// used) if there is none yet.
    pub fn load_or_create(dir: &Path) -> Result<ExecutorKey, TlsError> {
        let path: PathBuf = dir.join("executor.key");
        let hex = if path.exists() {
            read(&path)?
        } else {
            let mut bytes = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| TlsError::Config("the system's random source failed".into()))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, &hex)?;
            hex
        };
        let bytes = decode_hex(hex.trim())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| TlsError::File {
                path: path.clone(),
                reason: "not a key of 64 hex digits".into(),
            })?;
        Ok(ExecutorKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    fn message(framework_id: &str, executor_id: &str) -> Vec<u8> {
        // Ids cannot hold NUL: the pair is read back one way only.
        [framework_id.as_bytes(), b"\0", executor_id.as_bytes()].concat()
    }

    /// The token of executor `executor_id` of `framework_id`.
    pub fn token(&self, framework_id: &str, executor_id: &str) -> String {
        let tag = hmac::sign(&self.key, &Self::message(framework_id, executor_id));
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks an `Authorization` value (`Bearer <token>`) against the
    /// executor it claims to be, in constant time.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        framework_id: &str,
        executor_id: &str,
    ) -> Result<(), ExecutorAuthError> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ExecutorAuthError::Missing)?;
        let wrong = || ExecutorAuthError::Wrong {
            framework_id: framework_id.to_string(),
            executor_id: executor_id.to_string(),
        };
        let tag = decode_hex(token).ok_or_else(wrong)?;
        hmac::verify(&self.key, &Self::message(framework_id, executor_id), &tag)
            .map_err(|_| wrong())
    }
}

/// An executor's own token, as its agent gave it; never printed.
#[derive(Clone)]
pub struct ExecutorToken(String);

impl std::fmt::Debug for ExecutorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecutorToken(hidden)")
    }
}

impl ExecutorToken {
    /// From [`EXECUTOR_TOKEN_ENV`]; `None` when the agent gave none (it
    /// does not authenticate executors). With a token, the process is made
    /// non-dumpable: its tasks, often of the same user, cannot then read
    /// it from `/proc/<pid>/environ` or attach to it (they get the flag
    /// back at their own exec).
    pub fn from_env() -> Option<ExecutorToken> {
        let token = std::env::var(EXECUTOR_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())?;
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(error = %e, "cannot make the executor non-dumpable: its tasks may read its token");
        }
        Some(ExecutorToken(token))
    }

    /// Presents the token on a request to the agent.
    pub fn attach<T>(&self, request: &mut tonic::Request<T>) {
        if let Ok(v) = format!("Bearer {}", self.0).parse() {
            request.metadata_mut().insert("authorization", v);
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_for_its_own_executor_only_and_survives_a_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let key = ExecutorKey::load_or_create(dir.path()).expect("key");
        let token = key.token("fw-1", "ex-1");
        let bearer = format!("Bearer {token}");
        assert_eq!(key.verify(Some(&bearer), "fw-1", "ex-1"), Ok(()));
        assert!(matches!(
            key.verify(Some(&bearer), "fw-1", "ex-2"),
            Err(ExecutorAuthError::Wrong { .. })
        ));
        assert!(key.verify(Some(&bearer), "fw-2", "ex-1").is_err());
        assert_eq!(
            key.verify(None, "fw-1", "ex-1"),
            Err(ExecutorAuthError::Missing)
        );
        assert_eq!(
            key.verify(Some(&token), "fw-1", "ex-1"),
            Err(ExecutorAuthError::Missing)
        );
        for bad in ["Bearer ", "Bearer zz", "Bearer abc", "Bearer é€"] {
            assert!(key.verify(Some(bad), "fw-1", "ex-1").is_err(), "{bad}");
        }
        // The same key after a restart; another agent's key refuses it.
        let again = ExecutorKey::load_or_create(dir.path()).expect("key");
        assert_eq!(again.verify(Some(&bearer), "fw-1", "ex-1"), Ok(()));
        let other = tempfile::tempdir().expect("dir");
        let other = ExecutorKey::load_or_create(other.path()).expect("key");
        assert!(other.verify(Some(&bearer), "fw-1", "ex-1").is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("executor.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
}
