//! Placing tasks in offers.
//!
//! An offer is all of one agent's free resources; a framework usually puts
//! several tasks in it. [`OfferSpace`] is what is left of one offer as tasks
//! are placed; [`pack`] places a list of task shapes over several offers,
//! first fit, largest first.
//!
//! ```
//! use cairn_sdk::offers::{OfferSpace, pack};
//! use cairn_sdk::{AgentId, Offer, OfferId, FrameworkId, Resources, Role};
//!
//! let offer = Offer {
//!     id: OfferId::new("o1"),
//!     framework_id: FrameworkId::new("f"),
//!     agent_id: AgentId::new("a1"),
//!     hostname: "host-1".into(),
//!     resources: Resources::parse("cpus:2;mem:1024;ports:[31000-31009]").unwrap(),
//!     attributes: vec![],
//!     role: Role::default_role(),
//!     agent_url: String::new(),
//! };
//! let mut spaces = vec![OfferSpace::new(offer)];
//! let small = Resources::parse("cpus:0.5;mem:256").unwrap();
//! let shapes = vec![("a", small.clone()), ("b", small.clone()), ("c", small.clone()),
//!                   ("d", small.clone()), ("e", small)];
//! let (placed, unplaced) = pack(&mut spaces, shapes);
//! assert_eq!(placed.len(), 4, "four halves of a cpu fit in two");
//! assert_eq!(unplaced, vec!["e"]);
//! assert_eq!(spaces[0].take_ports(2), Some(vec![31000, 31001]));
//! ```

use cairn_model::{Offer, RangeSet, ResourceName, Resources};

/// What is left of an offer as tasks are placed in it.
#[derive(Clone, Debug)]
pub struct OfferSpace {
    pub offer: Offer,
    left: Resources,
}

impl OfferSpace {
    pub fn new(offer: Offer) -> Self {
        let left = offer.resources.clone();
        OfferSpace { offer, left }
    }

    /// What is still free in the offer.
    pub fn left(&self) -> &Resources {
        &self.left
    }

    pub fn fits(&self, shape: &Resources) -> bool {
        self.left.contains(shape)
    }

    /// Takes `shape` out of what is left, if it fits.
    pub fn take(&mut self, shape: &Resources) -> bool {
        match self.left.checked_sub(shape) {
            Some(rest) => {
                self.left = rest;
                true
            }
            None => false,
        }
    }

    /// Takes `n` ports (the lowest free ones) out of what is left; `None`
    /// if fewer are free. Put them in the task's resources
    /// ([`crate::TaskBuilder::ports`]).
    pub fn take_ports(&mut self, n: usize) -> Option<Vec<u64>> {
        let ranges = self.left.range(&ResourceName::Ports)?;
        let mut ports = Vec::with_capacity(n);
        'ranges: for &(b, e) in ranges.ranges() {
            for p in b..=e {
                if ports.len() == n {
                    break 'ranges;
                }
                ports.push(p);
            }
        }
        if ports.len() < n {
            return None;
        }
        let taken = RangeSet::from_ranges(ports.iter().map(|p| (*p, *p))).ok()?;
        let shape = Resources::new().with_ranges(ResourceName::Ports, taken);
        self.take(&shape).then_some(ports)
    }

    /// Whether the offer still has room for a task of at least `shape`.
    pub fn is_exhausted(&self, shape: &Resources) -> bool {
        !self.fits(shape)
    }
}

/// Places `items` (each with the resources it needs) in `spaces`: the
/// largest first (by cpus, then memory), each in the first offer it fits.
/// Returns the placed items with the index of their offer, in placement
/// order, and the items that fit nowhere, in their original order.
pub fn pack<T>(
    spaces: &mut [OfferSpace],
    items: impl IntoIterator<Item = (T, Resources)>,
) -> (Vec<(usize, T)>, Vec<T>) {
    let mut items: Vec<(usize, T, Resources)> = items
        .into_iter()
        .enumerate()
        .map(|(i, (t, r))| (i, t, r))
        .collect();
    items.sort_by(|a, b| {
        (b.2.cpus(), b.2.mem())
            .cmp(&(a.2.cpus(), a.2.mem()))
            .then(a.0.cmp(&b.0))
    });
    let mut placed = Vec::new();
    let mut unplaced = Vec::new();
    for (i, item, shape) in items {
        match spaces.iter_mut().position(|s| s.fits(&shape)) {
            Some(at) => {
                spaces[at].take(&shape);
                placed.push((at, item));
            }
            None => unplaced.push((i, item)),
        }
    }
    unplaced.sort_by_key(|(i, _)| *i);
    (placed, unplaced.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use cairn_model::{AgentId, FrameworkId, OfferId, Role};

    fn offer(id: &str, r: &str) -> OfferSpace {
        OfferSpace::new(Offer {
            id: OfferId::new(id),
            framework_id: FrameworkId::new("f"),
            agent_id: AgentId::new(id),
            hostname: id.into(),
            resources: Resources::parse(r).unwrap(),
            attributes: vec![],
            role: Role::default_role(),
            agent_url: String::new(),
        })
    }

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    #[test]
    fn large_tasks_go_first_and_nothing_is_overcommitted() {
        let mut spaces = vec![offer("a", "cpus:2;mem:2048"), offer("b", "cpus:1;mem:512")];
        let items = vec![
            ("small-1", res("cpus:0.5;mem:128")),
            ("big", res("cpus:2;mem:1024")),
            ("small-2", res("cpus:0.5;mem:128")),
            ("huge", res("cpus:4;mem:128")),
        ];
        let (placed, unplaced) = pack(&mut spaces, items);
        assert_eq!(placed[0], (0, "big"), "the largest first, in the first fit");
        assert_eq!(placed[1], (1, "small-1"));
        assert_eq!(placed[2], (1, "small-2"));
        assert_eq!(unplaced, vec!["huge"]);
        assert!(spaces.iter().all(|s| s.offer.resources.contains(s.left())));
        assert_eq!(spaces[1].left(), &res("mem:256"));
    }

    #[test]
    fn ports_come_lowest_first_and_run_out() {
        let mut s = offer("a", "cpus:1;mem:64;ports:[100-101,200-200]");
        assert_eq!(s.take_ports(2), Some(vec![100, 101]));
        assert_eq!(s.take_ports(2), None);
        assert_eq!(s.take_ports(1), Some(vec![200]));
        assert_eq!(s.left(), &res("cpus:1;mem:64"));
    }
}
