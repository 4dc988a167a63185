//! Join tokens: `CAIRN1-<kind>-<CA fingerprint>-<secret>`.
//!
//! The fingerprint lets the joining node pin the cluster CA before it
//! trusts anything the master says; the secret proves to the master that
//! the node was let in. A token has a kind (one for agents, one for
//! masters), an expiry, and is replaced by rotation, after which the old
//! one no longer joins anything (nodes that joined keep their certificates).

use std::path::Path;
use std::time::Duration;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::ca::{read, write_private};
use crate::{TlsError, unix_now};

const PREFIX: &str = "CAIRN1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Agent,
    Master,
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenKind::Agent => "agent",
            TokenKind::Master => "master",
        })
    }
}

impl std::str::FromStr for TokenKind {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "agent" => Ok(TokenKind::Agent),
            "master" => Ok(TokenKind::Master),
            other => Err(TlsError::MalformedToken(format!(
                "{other:?} is not a token kind (agent or master)"
            ))),
        }
    }
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// SHA-256 of the cluster CA's certificate, lowercase hex.
    pub ca_fingerprint: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("kind", &self.kind)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}-{}-{}-{}",
            self.kind, self.ca_fingerprint, self.secret
        )
    }
}

impl std::str::FromStr for Token {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        let bad = |why: &str| TlsError::MalformedToken(why.to_string());
        let mut parts = s.trim().splitn(4, '-');
        if parts.next() != Some(PREFIX) {
            return Err(bad("it does not start with CAIRN1-"));
        }
        let kind: TokenKind = parts.next().ok_or_else(|| bad("no kind"))?.parse()?;
        let fp = parts.next().ok_or_else(|| bad("no CA fingerprint"))?;
        let secret = parts.next().ok_or_else(|| bad("no secret"))?;
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if fp.len() != 64 || !hex(fp) {
            return Err(bad("the CA fingerprint is not 64 hex digits"));
        }
        if secret.len() < 32 || !hex(secret) {
            return Err(bad("the secret is not at least 32 hex digits"));
        }
        Ok(Token {
            kind,
            ca_fingerprint: fp.to_string(),
            secret: secret.to_string(),
        })
    }
}

impl Token {
    /// A fresh token of `kind` for the CA with `ca_fingerprint`.
    pub fn generate(kind: TokenKind, ca_fingerprint: &str) -> Result<Token, TlsError> {
        let mut bytes = [0u8; 20];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TlsError::Config("the system's random source failed".into()))?;
        Ok(Token {
            kind,
            ca_fingerprint: ca_fingerprint.to_string(),
            secret: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// Equal tokens, compared in time independent of where they differ.
    fn same(&self, other: &Token) -> bool {
        let (a, b) = (self.to_string(), other.to_string());
        a.len() == b.len()
            && a.bytes()
                .zip(b.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token, in full.
    pub token: String,
    /// Seconds since the Unix epoch after which it no longer joins.
    pub expires_at: u64,
}

impl std::fmt::Debug for TokenRecord {
    /// The token is a secret: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The cluster's current join tokens (`tokens.json` in the cluster
/// directory, readable by its owner only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub agent: TokenRecord,
    pub master: TokenRecord,
}

impl Tokens {
    /// Fresh tokens of both kinds, valid for `ttl`.
    pub fn generate(ca_fingerprint: &str, ttl: Duration) -> Result<Tokens, TlsError> {
        let record = |kind| -> Result<TokenRecord, TlsError> {
            Ok(TokenRecord {
                token: Token::generate(kind, ca_fingerprint)?.to_string(),
                expires_at: unix_now().saturating_add(ttl.as_secs()),
            })
        };
        Ok(Tokens {
            agent: record(TokenKind::Agent)?,
            master: record(TokenKind::Master)?,
        })
    }

    pub fn load(path: &Path) -> Result<Tokens, TlsError> {
        serde_json::from_str(&read(path)?).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Written before the change takes effect anywhere.
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_private(path, &text)
    }

    pub fn get(&self, kind: TokenKind) -> &TokenRecord {
        match kind {
            TokenKind::Agent => &self.agent,
            TokenKind::Master => &self.master,
        }
    }

    /// Replaces the token of `kind` with a fresh one valid for `ttl`; the
    /// old one stops joining at once.
    pub fn rotate(&mut self, kind: TokenKind, ttl: Duration) -> Result<Token, TlsError> {
        let fp = self.get(kind).token.parse::<Token>()?.ca_fingerprint;
        let token = Token::generate(kind, &fp)?;
        let record = TokenRecord {
            token: token.to_string(),
            expires_at: unix_now().saturating_add(ttl.as_secs()),
        };
        match kind {
            TokenKind::Agent => self.agent = record,
            TokenKind::Master => self.master = record,
        }
        Ok(token)
    }

    /// Whether `presented` joins now (`now` in Unix seconds).
    pub fn check(&self, presented: &str, now: u64) -> Result<TokenKind, TlsError> {
        let presented: Token = presented.parse()?;
        let record = self.get(presented.kind);
        let current: Token = record.token.parse()?;
        if !current.same(&presented) {
            return Err(TlsError::TokenRefused(format!(
                "not the cluster's current {} token (rotated, or never issued)",
                presented.kind
            )));
        }
        if now >= record.expires_at {
            return Err(TlsError::TokenRefused(format!(
                "the {} token expired; rotate it with `cairn token rotate {}`",
                presented.kind, presented.kind
            )));
        }
        Ok(presented.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_check_rotate_and_expire() {
        let fp = "ab".repeat(32);
        let mut tokens = Tokens::generate(&fp, Duration::from_secs(60)).expect("tokens");
        let agent = tokens.agent.token.clone();
        let parsed: Token = agent.parse().expect("parse");
        assert_eq!(parsed.to_string(), agent);
        assert_eq!(parsed.ca_fingerprint, fp);
        let now = unix_now();
        assert_eq!(tokens.check(&agent, now).expect("joins"), TokenKind::Agent);
        assert!(tokens.check(&tokens.master.token.clone(), now).is_ok());
        assert!(matches!(
            tokens.check(&agent, now + 61),
            Err(TlsError::TokenRefused(_))
        ));
        let new = tokens
            .rotate(TokenKind::Agent, Duration::from_secs(60))
            .expect("rotate");
        assert!(matches!(
            tokens.check(&agent, now),
            Err(TlsError::TokenRefused(_))
        ));
        assert!(tokens.check(&new.to_string(), now).is_ok());
        for bad in ["", "CAIRN1-agent", "CAIRN1-x-00-00", "CAIRN2-agent-ab-cd"] {
            assert!(tokens.check(bad, now).is_err(), "{bad:?} accepted");
        }
        // The wrong kind's secret under the right kind's name.
        let forged = format!(
            "CAIRN1-agent-{fp}-{}",
            tokens.master.token.rsplit('-').next().unwrap_or_default()
        );
        assert!(tokens.check(&forged, now).is_err());
    }
}
