use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelError;

/// Longest id accepted from the outside, in bytes. Ids become file names in
/// agent sandboxes, so the limit is the common file-name limit.
pub const MAX_ID_LEN: usize = 255;

/// Checks an id from the outside. Ids name sandbox directories on agents, so
/// anything that could walk a path (`/`, `.`, `..`, NUL) is refused, as are
/// control characters and whitespace, which break logs and shells.
pub(crate) fn validate_id(field: &str, value: &str) -> Result<(), ModelError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_ID_LEN {
        Some("longer than 255 bytes")
    } else if value == "." || value == ".." {
        Some("must not be '.' or '..'")
    } else if value.contains('/') {
        Some("must not contain '/'")
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ModelError::InvalidId {
            field: field.to_string(),
            value: value.chars().take(300).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone (a shared string).
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Builds an id the caller knows is valid (generated locally).
            /// Ids from the outside go through [`Self::parse`].
            pub fn new(value: impl Into<Arc<str>>) -> Self {
                $name(value.into())
            }

            /// Validates an id from the outside; `field` names it in the error.
            pub fn parse(field: &str, value: &str) -> Result<Self, ModelError> {
                validate_id(field, value)?;
                Ok($name(value.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(stringify!($name), &s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// Identifies an agent for as long as the master admits it.
    AgentId
);
string_id!(
    /// Identifies a framework across re-subscriptions and failovers.
    FrameworkId
);
string_id!(
    /// Identifies one outstanding offer.
    OfferId
);
string_id!(
    /// Identifies a task within its framework (unique per framework).
    TaskId
);
string_id!(
    /// Identifies an executor within its framework. A command task runs under
    /// an executor whose id is the task's id.
    ExecutorId
);

string_id!(
    /// Identifies one run of an executor on an agent: its sandbox, and (with
    /// isolation) its cgroups and mounts, are named after it.
    ContainerId
);

/// The 16-byte id of one status update, echoed back by its acknowledgement.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusUuid(pub [u8; 16]);

impl StatusUuid {
    pub fn from_slice(field: &str, bytes: &[u8]) -> Result<Self, ModelError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| {
            ModelError::invalid(
                field,
                format!("{} bytes", bytes.len()),
                "a uuid is 16 bytes",
            )
        })?;
        Ok(StatusUuid(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for StatusUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StatusUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatusUuid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_walk_a_path_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\0b", "a b", "tab\t"] {
            assert!(TaskId::parse("task_id", bad).is_err(), "{bad:?} accepted");
        }
        assert!(TaskId::parse("task_id", &"x".repeat(256)).is_err());
        assert!(TaskId::parse("task_id", "task-1.a_b:c").is_ok());
    }

    #[test]
    fn uuid_must_be_sixteen_bytes() {
        assert!(StatusUuid::from_slice("uuid", &[0; 15]).is_err());
        let u = StatusUuid::from_slice("uuid", &[0xab; 16]).unwrap();
        assert_eq!(u.to_string(), "abababab-abab-abab-abab-abababababab");
    }
}
