//! Resources: scalars (cpus, mem, disk, gpus, ...), ranges (ports) and sets,
//! with exact arithmetic.
//!
//! Scalars are fixed-point with three decimals, like Mesos, so repeated adds
//! and subtracts never drift: the invariant `used + offered <= total` is
//! checked with integers, not floats. Negative, NaN and infinite amounts never
//! get in: every constructor from the outside refuses them.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::ModelError;

/// A non-negative amount with a precision of 0.001.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(u64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);
    /// The largest amount accepted (10^15 units), far above any real machine,
    /// so sums over a whole cluster cannot overflow.
    pub const MAX: Scalar = Scalar(1_000_000_000_000_000_000);

    pub const fn from_milli(milli: u64) -> Self {
        Scalar(milli)
    }

    pub const fn from_units(units: u64) -> Self {
        Scalar(units * 1000)
    }

    pub const fn milli(self) -> u64 {
        self.0
    }

    /// Rounds to the nearest thousandth. Refuses NaN, infinities, negative and
    /// absurdly large values.
    pub fn from_f64(value: f64) -> Result<Self, String> {
        if !value.is_finite() {
            return Err("must be a finite number".into());
        }
        if value < 0.0 {
            return Err("must not be negative".into());
        }
        let milli = (value * 1000.0).round();
        if milli > Scalar::MAX.0 as f64 {
            return Err("too large".into());
        }
        // In range and non-negative, checked above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Scalar(milli as u64))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_sub(self, other: Scalar) -> Option<Scalar> {
        self.0.checked_sub(other.0).map(Scalar)
    }

    pub fn saturating_sub(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, other: Scalar) -> Scalar {
        Scalar(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{whole}.{frac:03}");
            f.write_str(s.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A resource's name. The common ones are variants, so the allocator's hot
/// loops compare and copy them without touching strings.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceName {
    Cpus,
    Mem,
    Disk,
    Gpus,
    Ports,
    Other(Arc<str>),
}

impl ResourceName {
    /// Longest name accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "cpus" => ResourceName::Cpus,
            "mem" => ResourceName::Mem,
            "disk" => ResourceName::Disk,
            "gpus" => ResourceName::Gpus,
            "ports" => ResourceName::Ports,
            other => {
                if other.is_empty() || other.len() > Self::MAX_LEN {
                    return Err("a name has 1 to 64 characters".into());
                }
                if !other
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    return Err(format!(
                        "name {other:?} may only contain letters, digits, '_', '-' and '.'"
                    ));
                }
                ResourceName::Other(other.into())
            }
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            ResourceName::Cpus => "cpus",
            ResourceName::Mem => "mem",
            ResourceName::Disk => "disk",
            ResourceName::Gpus => "gpus",
            ResourceName::Ports => "ports",
            ResourceName::Other(s) => s,
        }
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResourceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ResourceName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A set of integers as sorted, disjoint, non-adjacent inclusive ranges.
/// Up to two ranges are held inline (an agent's `ports` is usually one).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RangeSet(SmallVec<[(u64, u64); 2]>);

impl RangeSet {
    /// Normalises any list of inclusive ranges; `begin > end` is refused.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Result<Self, String> {
        let mut v: SmallVec<[(u64, u64); 4]> = SmallVec::new();
        for (b, e) in ranges {
            if b > e {
                return Err(format!("range [{b}-{e}] ends before it begins"));
            }
            v.push((b, e));
        }
        v.sort_unstable();
        let mut out: SmallVec<[(u64, u64); 2]> = SmallVec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Ok(RangeSet(out))
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many integers the set holds.
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|(b, e)| e - b)
            .fold(0u64, |acc, n| acc.saturating_add(n).saturating_add(1))
    }

    pub fn contains(&self, other: &RangeSet) -> bool {
        // Both are sorted and disjoint: each range of `other` must sit inside
        // one range of `self`.
        let mut i = 0;
        for &(b, e) in &other.0 {
            while i < self.0.len() && self.0[i].1 < b {
                i += 1;
            }
            match self.0.get(i) {
                Some(&(sb, se)) if sb <= b && e <= se => {}
                _ => return false,
            }
        }
        true
    }

    pub fn union(&self, other: &RangeSet) -> RangeSet {
        // Both inputs are valid ranges, so normalising cannot fail.
        RangeSet::from_ranges(self.0.iter().chain(other.0.iter()).copied())
            .unwrap_or_else(|_| self.clone())
    }

    /// `self` minus `other` (values of `other` not in `self` are ignored).
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = SmallVec::new();
        for &(b, e) in &self.0 {
            let mut cur = b;
            let mut done = false;
            for &(ob, oe) in &other.0 {
                if oe < cur || done {
                    continue;
                }
                if ob > e {
                    break;
                }
                if ob > cur {
                    out.push((cur, ob - 1));
                }
                if oe >= e {
                    done = true;
                } else {
                    cur = oe + 1;
                }
            }
            if !done {
                out.push((cur, e));
            }
        }
        RangeSet(out)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A bundle of resources. Each name has one kind (scalar, ranges or set);
/// zero scalars and empty ranges and sets are dropped, so two bundles that
/// hold the same resources compare equal.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    scalars: SmallVec<[(ResourceName, Scalar); 4]>,
    ranges: SmallVec<[(ResourceName, RangeSet); 1]>,
    sets: Vec<(ResourceName, BTreeSet<String>)>,
}

fn lookup<'a, V>(list: &'a [(ResourceName, V)], name: &ResourceName) -> Option<&'a V> {
    list.binary_search_by(|(n, _)| n.cmp(name))
        .ok()
        .map(|i| &list[i].1)
}

impl Resources {
    pub fn new() -> Self {
        Resources::default()
    }

    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.ranges.is_empty() && self.sets.is_empty()
    }

    /// Adds a scalar (`name` must not already be a range or set).
    pub fn with_scalar(mut self, name: ResourceName, amount: Scalar) -> Self {
        self.add_scalar(name, amount);
        self
    }

    pub fn add_scalar(&mut self, name: ResourceName, amount: Scalar) {
        if amount.is_zero() {
            return;
        }
        match self.scalars.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => self.scalars[i].1 = self.scalars[i].1.saturating_add(amount),
            Err(i) => self.scalars.insert(i, (name, amount)),
        }
    }

    pub fn with_ranges(mut self, name: ResourceName, ranges: RangeSet) -> Self {
        if ranges.is_empty() {
            return self;
        }
        match self.ranges.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => self.ranges[i].1 = self.ranges[i].1.union(&ranges),
            Err(i) => self.ranges.insert(i, (name, ranges)),
        }
        self
    }

    pub fn with_set(mut self, name: ResourceName, items: BTreeSet<String>) -> Self {
        if items.is_empty() {
            return self;
        }
        match self.sets.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => self.sets[i].1.extend(items),
            Err(i) => self.sets.insert(i, (name, items)),
        }
        self
    }

    /// Convenience for the common shape `cpus`, `mem` (MB).
    pub fn cpus_mem(cpus: f64, mem_mb: f64) -> Result<Self, String> {
        Ok(Resources::new()
            .with_scalar(ResourceName::Cpus, Scalar::from_f64(cpus)?)
            .with_scalar(ResourceName::Mem, Scalar::from_f64(mem_mb)?))
    }

    pub fn scalar(&self, name: &ResourceName) -> Scalar {
        lookup(&self.scalars, name).copied().unwrap_or_default()
    }

    pub fn cpus(&self) -> Scalar {
        self.scalar(&ResourceName::Cpus)
    }

    pub fn mem(&self) -> Scalar {
        self.scalar(&ResourceName::Mem)
    }

    pub fn disk(&self) -> Scalar {
        self.scalar(&ResourceName::Disk)
    }

    pub fn range(&self, name: &ResourceName) -> Option<&RangeSet> {
        lookup(&self.ranges, name)
    }

    pub fn set(&self, name: &ResourceName) -> Option<&BTreeSet<String>> {
        lookup(&self.sets, name)
    }

    pub fn scalars(&self) -> &[(ResourceName, Scalar)] {
        &self.scalars
    }

    pub fn range_entries(&self) -> &[(ResourceName, RangeSet)] {
        &self.ranges
    }

    pub fn set_entries(&self) -> &[(ResourceName, BTreeSet<String>)] {
        &self.sets
    }

    /// Only the scalar part (what dominant shares are computed over).
    pub fn scalar_part(&self) -> Resources {
        Resources {
            scalars: self.scalars.clone(),
            ranges: SmallVec::new(),
            sets: Vec::new(),
        }
    }

    /// Adds in place: amounts of names already here change where they
    /// are, so adding what a bundle already names allocates nothing for
    /// scalars (the allocator does this for every agent in every cycle).
    pub fn add(&mut self, other: &Resources) {
        for (name, amount) in &other.scalars {
            self.add_scalar(name.clone(), *amount);
        }
        for (name, ranges) in &other.ranges {
            match self.ranges.binary_search_by(|(n, _)| n.cmp(name)) {
                Ok(i) => self.ranges[i].1 = self.ranges[i].1.union(ranges),
                Err(i) => self.ranges.insert(i, (name.clone(), ranges.clone())),
            }
        }
        for (name, items) in &other.sets {
            match self.sets.binary_search_by(|(n, _)| n.cmp(name)) {
                Ok(i) => self.sets[i].1.extend(items.iter().cloned()),
                Err(i) => self.sets.insert(i, (name.clone(), items.clone())),
            }
        }
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.add(other);
        r
    }

    /// Whether every resource of `other` is in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .scalars
            .iter()
            .all(|(n, v)| lookup(&self.scalars, n).is_some_and(|have| have >= v))
            && other
                .ranges
                .iter()
                .all(|(n, r)| lookup(&self.ranges, n).is_some_and(|have| have.contains(r)))
            && other
                .sets
                .iter()
                .all(|(n, s)| lookup(&self.sets, n).is_some_and(|have| have.is_superset(s)))
    }

    /// `self - other`, or `None` unless `self` contains `other`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        Some(self.saturating_sub(other))
    }

    /// `self - other`, dropping what `self` does not have.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        if other.is_empty() {
            return self.clone();
        }
        let scalars = self
            .scalars
            .iter()
            .filter_map(|(n, v)| {
                let left = match lookup(&other.scalars, n) {
                    Some(o) => v.saturating_sub(*o),
                    None => *v,
                };
                (!left.is_zero()).then(|| (n.clone(), left))
            })
            .collect();
        let ranges = self
            .ranges
            .iter()
            .filter_map(|(n, r)| {
                let left = match lookup(&other.ranges, n) {
                    Some(o) => r.difference(o),
                    None => r.clone(),
                };
                (!left.is_empty()).then(|| (n.clone(), left))
            })
            .collect();
        let sets = self
            .sets
            .iter()
            .filter_map(|(n, s)| {
                let left: BTreeSet<String> = match lookup(&other.sets, n) {
                    Some(o) => s.difference(o).cloned().collect(),
                    None => s.clone(),
                };
                (!left.is_empty()).then(|| (n.clone(), left))
            })
            .collect();
        Resources {
            scalars,
            ranges,
            sets,
        }
    }

    /// Parses the Mesos text form: `cpus:4;mem:8192;ports:[31000-32000];zones:{a,b}`.
    /// Reservations (`cpus(role):4`) are refused: Cairn has no reservations yet.
    pub fn parse(input: &str) -> Result<Resources, ModelError> {
        let err = |reason: String| ModelError::InvalidResources {
            input: input.chars().take(200).collect(),
            reason,
        };
        let mut out = Resources::new();
        let mut seen: BTreeSet<ResourceName> = BTreeSet::new();
        for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| err(format!("{part:?} is not name:value")))?;
            let name = name.trim();
            if name.contains('(') {
                return Err(err(format!(
                    "{name:?}: reservations (name(role):value) are not supported"
                )));
            }
            let name = ResourceName::parse(name).map_err(err)?;
            if !seen.insert(name.clone()) {
                return Err(err(format!("{name} is given twice")));
            }
            let value = value.trim();
            if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                out = out.with_ranges(name, parse_ranges(inner).map_err(err)?);
            } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                let items: BTreeSet<String> = inner
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                out = out.with_set(name, items);
            } else {
                let v: f64 = value
                    .parse()
                    .map_err(|_| err(format!("{name}: {value:?} is not a number")))?;
                let s = Scalar::from_f64(v).map_err(|e| err(format!("{name}: {e}")))?;
                out.add_scalar(name, s);
            }
        }
        Ok(out)
    }
}

pub(crate) fn parse_ranges(inner: &str) -> Result<RangeSet, String> {
    let mut ranges = Vec::new();
    for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let (b, e) = r.split_once('-').unwrap_or((r, r));
        let b: u64 = b
            .trim()
            .parse()
            .map_err(|_| format!("{r:?} is not a range"))?;
        let e: u64 = e
            .trim()
            .parse()
            .map_err(|_| format!("{r:?} is not a range"))?;
        ranges.push((b, e));
    }
    RangeSet::from_ranges(ranges)
}

impl fmt::Display for Resources {
    /// The Mesos text form, parseable by [`Resources::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if first {
                first = false;
                Ok(())
            } else {
                f.write_str(";")
            }
        };
        for (n, v) in &self.scalars {
            sep(f)?;
            write!(f, "{n}:{v}")?;
        }
        for (n, r) in &self.ranges {
            sep(f)?;
            write!(f, "{n}:{r}")?;
        }
        for (n, s) in &self.sets {
            sep(f)?;
            write!(f, "{n}:{{")?;
            for (i, item) in s.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                f.write_str(item)?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resources({self})")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_the_mesos_text_form() {
        let r = Resources::parse("cpus:4;mem:8192;disk:20000;ports:[31000-32000]").unwrap();
        assert_eq!(r.cpus(), Scalar::from_units(4));
        assert_eq!(r.mem(), Scalar::from_units(8192));
        assert_eq!(r.range(&ResourceName::Ports).unwrap().count(), 1001);
        assert_eq!(
            r.to_string(),
            "cpus:4;mem:8192;disk:20000;ports:[31000-32000]"
        );
        let again = Resources::parse(&r.to_string()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn refuses_bad_resource_strings() {
        for bad in [
            "cpus:-1",
            "cpus:NaN",
            "cpus:inf",
            "cpus",
            "cpus:abc",
            "cpus(r1):2",
            "ports:[5-3]",
            "cpus:1;cpus:2",
            "bad name:1",
        ] {
            assert!(Resources::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn scalars_keep_three_decimals_exactly() {
        let a = Resources::cpus_mem(0.1, 32.0).unwrap();
        let mut sum = Resources::new();
        for _ in 0..10 {
            sum.add(&a);
        }
        assert_eq!(sum.cpus(), Scalar::from_units(1));
        let mut back = sum.clone();
        for _ in 0..10 {
            back = back.checked_sub(&a).unwrap();
        }
        assert!(back.is_empty());
    }

    #[test]
    fn range_difference_splits_ranges() {
        let all = RangeSet::from_ranges([(1, 10)]).unwrap();
        let some = RangeSet::from_ranges([(3, 4), (8, 8)]).unwrap();
        let left = all.difference(&some);
        assert_eq!(left.ranges(), &[(1, 2), (5, 7), (9, 10)]);
        assert!(all.contains(&some));
        assert!(!some.contains(&all));
        assert_eq!(left.union(&some), all);
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        (
            0u64..8000,
            0u64..100_000,
            proptest::collection::vec((0u64..200, 0u64..20), 0..4),
        )
            .prop_map(|(c, m, rs)| {
                let ranges = RangeSet::from_ranges(rs.into_iter().map(|(b, l)| (b, b + l)))
                    .unwrap_or_default();
                Resources::new()
                    .with_scalar(ResourceName::Cpus, Scalar::from_milli(c))
                    .with_scalar(ResourceName::Mem, Scalar::from_milli(m))
                    .with_ranges(ResourceName::Ports, ranges)
            })
    }

    proptest! {
        #[test]
        fn add_then_subtract_is_identity(a in arb_resources(), b in arb_resources()) {
            // Ranges may overlap, in which case a+b-b loses the overlap; only
            // check disjoint cases for ranges, always for scalars.
            let sum = a.plus(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            let back = sum.checked_sub(&b).unwrap();
            prop_assert_eq!(back.cpus(), a.cpus());
            prop_assert_eq!(back.mem(), a.mem());
        }

        #[test]
        fn checked_sub_never_goes_negative(a in arb_resources(), b in arb_resources()) {
            match a.checked_sub(&b) {
                Some(left) => prop_assert!(a.contains(&left)),
                None => prop_assert!(!a.contains(&b)),
            }
        }

        #[test]
        fn text_form_round_trips(a in arb_resources()) {
            prop_assert_eq!(Resources::parse(&a.to_string()).unwrap(), a);
        }
    }
}
