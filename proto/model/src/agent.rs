use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resources::parse_ranges;
use crate::{ModelError, RangeSet, Resources};

/// A value of an agent attribute (`rack:r1`, `slots:4`, `ids:[1-4]`, `zones:{a,b}`).
#[derive(Clone, PartialEq)]
pub enum AttributeValue {
    Text(String),
    Scalar(f64),
    Ranges(RangeSet),
    Set(BTreeSet<String>),
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::Text(t) => f.write_str(t),
            AttributeValue::Scalar(s) => write!(f, "{s}"),
            AttributeValue::Ranges(r) => write!(f, "{r}"),
            AttributeValue::Set(s) => {
                f.write_str("{")?;
                for (i, item) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(item)?;
                }
                f.write_str("}")
            }
        }
    }
}

impl fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: AttributeValue,
}

/// Parses `rack:r1;zone:a;slots:4` (Mesos syntax). A value that parses as a
/// number is a scalar, `[a-b]` ranges, `{x,y}` a set, anything else text.
pub fn parse_attributes(input: &str) -> Result<Vec<Attribute>, ModelError> {
    let err = |reason: String| ModelError::InvalidAttributes {
        input: input.chars().take(200).collect(),
        reason,
    };
    let mut out: Vec<Attribute> = Vec::new();
    for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| err(format!("{part:?} is not name:value")))?;
        let name = name.trim();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_whitespace) {
            return Err(err(format!("{name:?} is not a valid attribute name")));
        }
        if out.iter().any(|a| a.name == name) {
            return Err(err(format!("{name} is given twice")));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            AttributeValue::Ranges(parse_ranges(inner).map_err(err)?)
        } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            AttributeValue::Set(
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            )
        } else if let Ok(v) = value.parse::<f64>()
            && v.is_finite()
        {
            AttributeValue::Scalar(v)
        } else {
            AttributeValue::Text(value.to_string())
        };
        out.push(Attribute {
            name: name.to_string(),
            value,
        });
    }
    Ok(out)
}

/// What an agent tells the master about itself when it registers.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentInfo {
    pub hostname: String,
    /// `host:port` of the agent's own API (executors, sandbox files).
    pub address: String,
    pub resources: Resources,
    pub attributes: Vec<Attribute>,
    /// The agent serves its API over TLS only (it joined the cluster and
    /// holds a certificate of the cluster CA). Set by the master from the
    /// agent's link, never taken from what the agent says.
    pub tls: bool,
}

impl AgentInfo {
    /// Base URL of the agent's HTTP API.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }
}

impl Serialize for AttributeValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AttributeValue::Text(t) => s.serialize_str(t),
            AttributeValue::Scalar(v) => s.serialize_f64(*v),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for AttributeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(AttributeValue::Text(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_take_each_value_kind() {
        let a = parse_attributes("rack:r1;zone:a;slots:4;ids:[1-4];tags:{x,y}").unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].value, AttributeValue::Text("r1".into()));
        assert_eq!(a[2].value, AttributeValue::Scalar(4.0));
        assert!(matches!(a[3].value, AttributeValue::Ranges(_)));
        assert!(matches!(a[4].value, AttributeValue::Set(_)));
        assert!(parse_attributes("rack").is_err());
        assert!(parse_attributes("rack:a;rack:b").is_err());
    }
}
