//! Placement constraints, Marathon's: `[field, OPERATOR, value?]` where the
//! field is `hostname` or an agent attribute.
//!
//! - `UNIQUE`: no two instances share the field's value.
//! - `CLUSTER v`: all on agents whose value is `v` (without `v`: all on the
//!   value of the first one placed).
//! - `GROUP_BY [n]`: spread evenly over the field's values (`n`: how many
//!   values there are, when not all are seen yet).
//! - `LIKE re` / `UNLIKE re`: the value matches (does not match) `re` whole.
//! - `MAX_PER n`: at most `n` instances per value.

use std::collections::BTreeMap;

use regex::Regex;

#[derive(Clone, Debug)]
pub enum Operator {
    Unique,
    Cluster(Option<String>),
    GroupBy(Option<usize>),
    Like(Regex),
    Unlike(Regex),
    MaxPer(usize),
}

#[derive(Clone, Debug)]
pub struct Constraint {
    pub field: String,
    pub op: Operator,
    /// As written, for messages.
    pub text: String,
}

/// An agent as constraints see it.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub hostname: &'a str,
    pub attributes: &'a [(String, String)],
}

impl Place<'_> {
    pub fn value(&self, field: &str) -> Option<&str> {
        if field == "hostname" {
            return Some(self.hostname);
        }
        self.attributes
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }
}

impl Constraint {
    pub fn parse(parts: &[String]) -> Result<Constraint, String> {
        let text = parts.join(" ");
        let (field, op, arg) = match parts {
            [f, o] => (f, o, None),
            [f, o, a] => (f, o, Some(a.as_str())),
            _ => {
                return Err(format!(
                    "constraint {text:?}: expected [field, OPERATOR, value?]"
                ));
            }
        };
        let regex = |a: Option<&str>| -> Result<Regex, String> {
            let a = a.ok_or_else(|| format!("constraint {text:?} needs a regular expression"))?;
            Regex::new(&format!("^(?:{a})$")).map_err(|e| format!("constraint {text:?}: {e}"))
        };
        let count = |a: Option<&str>| -> Result<usize, String> {
            a.ok_or_else(|| format!("constraint {text:?} needs a number"))?
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("constraint {text:?}: not a positive number"))
        };
        let op = match op.to_ascii_uppercase().as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster(arg.map(str::to_string)),
            "GROUP_BY" => Operator::GroupBy(match arg {
                Some(_) => Some(count(arg)?),
                None => None,
            }),
            "LIKE" => Operator::Like(regex(arg)?),
            "UNLIKE" => Operator::Unlike(regex(arg)?),
            "MAX_PER" => Operator::MaxPer(count(arg)?),
            other => return Err(format!("constraint {text:?}: unknown operator {other}")),
        };
        if field.is_empty() {
            return Err(format!("constraint {text:?}: no field"));
        }
        Ok(Constraint {
            field: field.clone(),
            op,
            text,
        })
    }

    /// Whether an instance may go to `candidate` beside the app's
    /// instances already at `placed`.
    pub fn allows(&self, candidate: &Place<'_>, placed: &[Place<'_>]) -> bool {
        let value = candidate.value(&self.field);
        let values = || placed.iter().filter_map(|p| p.value(&self.field));
        match &self.op {
            Operator::Unique => value.is_some_and(|v| values().all(|p| p != v)),
            Operator::Cluster(Some(want)) => value == Some(want.as_str()),
            Operator::Cluster(None) => match values().next() {
                Some(first) => value == Some(first),
                None => value.is_some(),
            },
            Operator::Like(re) => value.is_some_and(|v| re.is_match(v)),
            Operator::Unlike(re) => value.is_none_or(|v| !re.is_match(v)),
            Operator::MaxPer(n) => value.is_some_and(|v| values().filter(|p| *p == v).count() < *n),
            Operator::GroupBy(groups) => {
                let Some(v) = value else { return false };
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for p in values() {
                    *counts.entry(p).or_default() += 1;
                }
                let mine = counts.get(v).copied().unwrap_or(0);
                // Values not seen yet (when the number of groups is known)
                // hold none.
                let known = counts.len() + usize::from(!counts.contains_key(v));
                let least = if groups.is_some_and(|g| known < g) {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0).min(mine)
                };
                mine <= least
            }
        }
    }
}

/// The first constraint `candidate` breaks, if any.
pub fn first_unmet<'c>(
    constraints: &'c [Constraint],
    candidate: &Place<'_>,
    placed: &[Place<'_>],
) -> Option<&'c Constraint> {
    constraints.iter().find(|c| !c.allows(candidate, placed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(s: &str) -> Constraint {
        Constraint::parse(&s.split(' ').map(str::to_string).collect::<Vec<_>>()).unwrap()
    }

    fn attrs(rack: &str) -> Vec<(String, String)> {
        vec![("rack".into(), rack.into())]
    }

    #[test]
    fn unique_cluster_like_unlike_max_per() {
        let r1 = attrs("r1");
        let r2 = attrs("r2");
        let a = Place {
            hostname: "a",
            attributes: &r1,
        };
        let b = Place {
            hostname: "b",
            attributes: &r1,
        };
        let d = Place {
            hostname: "d",
            attributes: &r2,
        };
        assert!(c("hostname UNIQUE").allows(&a, &[b, d]));
        assert!(!c("hostname UNIQUE").allows(&a, &[a]));
        assert!(c("rack CLUSTER r2").allows(&d, &[]));
        assert!(!c("rack CLUSTER r2").allows(&a, &[]));
        assert!(!c("rack CLUSTER").allows(&d, &[a]));
        assert!(c("hostname LIKE [ab]").allows(&b, &[]));
        assert!(!c("hostname LIKE [ab]").allows(&d, &[]));
        assert!(c("hostname UNLIKE a").allows(&b, &[]));
        assert!(!c("rack MAX_PER 2").allows(&a, &[a, b]));
        assert!(c("rack MAX_PER 2").allows(&d, &[a, b]));
        // Unknown attributes: UNLIKE holds, the others do not.
        assert!(!c("zone UNIQUE").allows(&a, &[]));
    }

    #[test]
    fn group_by_spreads_evenly() {
        let r1 = attrs("r1");
        let r2 = attrs("r2");
        let a = Place {
            hostname: "a",
            attributes: &r1,
        };
        let d = Place {
            hostname: "d",
            attributes: &r2,
        };
        let g = c("rack GROUP_BY");
        assert!(g.allows(&a, &[]));
        assert!(!g.allows(&a, &[a, a, d]));
        assert!(g.allows(&d, &[a, a, d]));
        assert!(g.allows(&a, &[a, d]));
        // Three racks expected, one not seen yet: the seen ones wait.
        assert!(!c("rack GROUP_BY 3").allows(&a, &[a, d]));
    }

    #[test]
    fn bad_constraints_are_refused() {
        for bad in [
            vec!["hostname"],
            vec!["hostname", "NEAR"],
            vec!["rack", "MAX_PER", "x"],
            vec!["h", "LIKE", "("],
        ] {
            let parts: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(Constraint::parse(&parts).is_err(), "{bad:?}");
        }
    }
}
