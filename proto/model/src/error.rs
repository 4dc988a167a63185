use thiserror::Error;

/// Why a value from the outside (the wire, a flag, a JSON body) was refused.
/// Each variant names the field it concerns, as a dotted path from the message
/// that was being converted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    #[error("{field}: required field is missing")]
    Missing { field: String },
    #[error("{field}: invalid id {value:?}: {reason}")]
    InvalidId {
        field: String,
        value: String,
        reason: &'static str,
    },
    #[error("{field}: invalid value {value:?}: {reason}")]
    InvalidValue {
        field: String,
        value: String,
        reason: String,
    },
    #[error("invalid resources {input:?}: {reason}")]
    InvalidResources { input: String, reason: String },
    #[error("invalid attributes {input:?}: {reason}")]
    InvalidAttributes { input: String, reason: String },
}

impl ModelError {
    pub(crate) fn missing(field: impl Into<String>) -> Self {
        ModelError::Missing {
            field: field.into(),
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ModelError::InvalidValue {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path with `parent.` so nested conversion errors name
    /// their full path (`tasks[3].resources[0].scalar`).
    pub fn within(self, parent: &str) -> Self {
        let join = |f: String| {
            if f.is_empty() {
                parent.to_string()
            } else {
                format!("{parent}.{f}")
            }
        };
        match self {
            ModelError::Missing { field } => ModelError::Missing { field: join(field) },
            ModelError::InvalidId {
                field,
                value,
                reason,
            } => ModelError::InvalidId {
                field: join(field),
                value,
                reason,
            },
            ModelError::InvalidValue {
                field,
                value,
                reason,
            } => ModelError::InvalidValue {
                field: join(field),
                value,
                reason,
            },
            other
            @ (ModelError::InvalidResources { .. } | ModelError::InvalidAttributes { .. }) => other,
        }
    }
}
