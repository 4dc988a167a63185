//! Scalar amounts by resource name, as the sorters keep them: what a client
//! holds and what the cluster has, the inputs of dominant shares.
//!
//! The allocator adds and subtracts these once or twice per agent in every
//! cycle, so the common kinds (cpus, mem, disk, gpus) live in fixed slots and
//! arithmetic on them allocates nothing; other scalar kinds go in a short
//! name-sorted list. Ranges and sets never count towards a share (as in
//! Mesos) and are not kept.

use std::sync::Arc;

use cairn_model::{ResourceName, Resources, Scalar};

/// Well-known scalar kinds, in slot order.
const KNOWN: [ResourceName; 4] = [
    ResourceName::Cpus,
    ResourceName::Mem,
    ResourceName::Disk,
    ResourceName::Gpus,
];

fn slot(name: &ResourceName) -> Option<usize> {
    match name {
        ResourceName::Cpus => Some(0),
        ResourceName::Mem => Some(1),
        ResourceName::Disk => Some(2),
        ResourceName::Gpus => Some(3),
        ResourceName::Ports | ResourceName::Other(_) => None,
    }
}

/// Non-negative scalar amounts, in thousandths (see [`Scalar`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quantities {
    known: [u64; 4],
    /// Sorted by name; no zero amounts.
    other: Vec<(Arc<str>, u64)>,
}

impl Quantities {
    pub fn new() -> Self {
        Self::default()
    }

    /// The scalar part of `r`.
    pub fn of(r: &Resources) -> Self {
        let mut q = Quantities::new();
        q.add(r);
        q
    }

    pub fn get(&self, name: &ResourceName) -> u64 {
        match (slot(name), name) {
            (Some(i), _) => self.known[i],
            (None, ResourceName::Other(n)) => self
                .other
                .binary_search_by(|(k, _)| k.as_ref().cmp(n.as_ref()))
                .map_or(0, |i| self.other[i].1),
            (None, _) => 0,
        }
    }

    /// Adds the scalars of `r`.
    pub fn add(&mut self, r: &Resources) {
        for (name, amount) in r.scalars() {
            self.change(name, amount.milli(), u64::saturating_add);
        }
    }

    /// Subtracts the scalars of `r`, stopping at zero.
    pub fn sub(&mut self, r: &Resources) {
        for (name, amount) in r.scalars() {
            self.change(name, amount.milli(), u64::saturating_sub);
        }
    }

    fn change(&mut self, name: &ResourceName, by: u64, op: fn(u64, u64) -> u64) {
        if let Some(i) = slot(name) {
            self.known[i] = op(self.known[i], by);
            return;
        }
        let ResourceName::Other(n) = name else {
            // Ports are ranges, never a scalar.
            return;
        };
        match self
            .other
            .binary_search_by(|(k, _)| k.as_ref().cmp(n.as_ref()))
        {
            Ok(i) => {
                self.other[i].1 = op(self.other[i].1, by);
                if self.other[i].1 == 0 {
                    self.other.remove(i);
                }
            }
            Err(i) => {
                let v = op(0, by);
                if v != 0 {
                    self.other.insert(i, (n.clone(), v));
                }
            }
        }
    }

    /// Every amount, with its name, zero amounts left out.
    pub fn iter(&self) -> impl Iterator<Item = (ResourceName, Scalar)> + '_ {
        KNOWN
            .iter()
            .zip(self.known)
            .filter(|(_, v)| *v != 0)
            .map(|(n, v)| (n.clone(), Scalar::from_milli(v)))
            .chain(
                self.other
                    .iter()
                    .map(|(n, v)| (ResourceName::Other(n.clone()), Scalar::from_milli(*v))),
            )
    }

    /// Back to a bundle of scalars.
    pub fn to_resources(&self) -> Resources {
        let mut r = Resources::new();
        for (n, v) in self.iter() {
            r.add_scalar(n, v);
        }
        r
    }
}

/// Dominant share = max over kinds r of `allocated[r] / total[r]`, ignoring
/// kinds the cluster has none of; then divided by the client's weight (a
/// weight that is not a positive finite number counts as 1).
pub fn dominant_share(allocated: &Quantities, total: &Quantities, weight: f64) -> f64 {
    let mut share: f64 = 0.0;
    for (a, t) in allocated.known.iter().zip(total.known) {
        if *a != 0 && t != 0 {
            share = share.max(*a as f64 / t as f64);
        }
    }
    for (name, a) in &allocated.other {
        let t = total.get(&ResourceName::Other(name.clone()));
        if t != 0 {
            share = share.max(*a as f64 / t as f64);
        }
    }
    if weight > 0.0 && weight.is_finite() {
        share / weight
    } else {
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn add_and_sub_round_trip_every_scalar_kind() {
        let r = res("cpus:1.5;mem:100;disk:7;gpus:1;fpga:2;ports:[1-10]");
        let mut q = Quantities::new();
        q.add(&r);
        q.add(&r);
        q.sub(&r);
        assert_eq!(q.to_resources(), r.scalar_part());
        q.sub(&r);
        assert_eq!(q, Quantities::new(), "zero amounts are dropped");
    }

    #[test]
    fn sub_stops_at_zero() {
        let mut q = Quantities::of(&res("cpus:1;fpga:1"));
        q.sub(&res("cpus:2;fpga:3;mem:5"));
        assert_eq!(q, Quantities::new());
    }

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let total = Quantities::of(&res("cpus:10;mem:100;fpga:4"));
        let share = |s: &str, w: f64| dominant_share(&Quantities::of(&res(s)), &total, w);
        assert_eq!(share("cpus:1;mem:50", 1.0), 0.5);
        assert_eq!(share("cpus:5;mem:10", 1.0), 0.5);
        assert_eq!(share("cpus:5;mem:10", 2.0), 0.25);
        assert_eq!(share("cpus:1;fpga:3", 1.0), 0.75);
        assert_eq!(share("gpus:1", 1.0), 0.0, "the cluster has no gpus");
        assert_eq!(share("cpus:5", f64::NAN), 0.5);
        assert_eq!(
            dominant_share(&Quantities::of(&res("cpus:5")), &Quantities::new(), 1.0),
            0.0
        );
    }
}
