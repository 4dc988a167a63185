//! Dominant Resource Fairness ordering of clients (roles, or frameworks within
//! a role). Pure bookkeeping: no clock, no I/O.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use cairn_model::Resources;

/// A non-negative, finite share with a total order.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Shares are finite and non-negative by construction (see
        // `dominant_share`), so `total_cmp` agrees with numeric order.
        self.0.total_cmp(&other.0)
    }
}

/// Dominant share = max over kinds r of `allocated[r] / total[r]`, ignoring
/// kinds the cluster has none of; then divided by the client's weight.
pub fn dominant_share(allocated: &Resources, total: &Resources, weight: f64) -> f64 {
    let mut share: f64 = 0.0;
    for (name, amount) in allocated.scalars() {
        let t = total.scalar(name);
        if !t.is_zero() {
            share = share.max(amount.milli() as f64 / t.milli() as f64);
        }
    }
    if weight > 0.0 && weight.is_finite() {
        share / weight
    } else {
        share
    }
}

#[derive(Debug)]
struct Client {
    allocation: Resources,
    weight: f64,
    active: bool,
    /// Ties between equal shares break by `seq`: the order clients were added,
    /// which for frameworks is the order of their ids.
    seq: u64,
    share: Share,
}

/// Orders clients by ascending weighted dominant share; ties break by the order
/// clients were added. Only active clients are ordered.
///
/// Updates are incremental: an allocation moves one client in a `BTreeSet`
/// (O(log n)); only a change of the cluster total re-sorts everyone.
#[derive(Debug)]
pub struct DrfSorter<K: Ord + Clone + Hash> {
    clients: HashMap<K, Client>,
    order: BTreeSet<(Share, u64, K)>,
    total: Resources,
    next_seq: u64,
}

impl<K: Ord + Clone + Hash> Default for DrfSorter<K> {
    fn default() -> Self {
        DrfSorter {
            clients: HashMap::new(),
            order: BTreeSet::new(),
            total: Resources::new(),
            next_seq: 0,
        }
    }
}

impl<K: Ord + Clone + Hash> DrfSorter<K> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, k: &K) -> bool {
        self.clients.contains_key(k)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Adds an inactive client with nothing allocated. Adding twice is a no-op.
    pub fn add(&mut self, k: K, weight: f64) {
        if self.clients.contains_key(&k) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.clients.insert(
            k,
            Client {
                allocation: Resources::new(),
                weight,
                active: false,
                seq,
                share: Share(0.0),
            },
        );
    }

    /// Removes a client and whatever was allocated to it.
    pub fn remove(&mut self, k: &K) {
        if let Some(c) = self.clients.remove(k)
            && c.active
        {
            self.order.remove(&(c.share, c.seq, k.clone()));
        }
    }

    pub fn activate(&mut self, k: &K) {
        if let Some(c) = self.clients.get_mut(k)
            && !c.active
        {
            c.active = true;
            self.order.insert((c.share, c.seq, k.clone()));
        }
    }

    pub fn deactivate(&mut self, k: &K) {
        if let Some(c) = self.clients.get_mut(k)
            && c.active
        {
            c.active = false;
            self.order.remove(&(c.share, c.seq, k.clone()));
        }
    }

    pub fn is_active(&self, k: &K) -> bool {
        self.clients.get(k).is_some_and(|c| c.active)
    }

    pub fn set_weight(&mut self, k: &K, weight: f64) {
        self.update(k, |c| c.weight = weight);
    }

    pub fn allocated(&mut self, k: &K, r: &Resources) {
        self.update(k, |c| c.allocation.add(&r.scalar_part()));
    }

    pub fn unallocated(&mut self, k: &K, r: &Resources) {
        self.update(k, |c| c.allocation = c.allocation.saturating_sub(r));
    }

    pub fn allocation(&self, k: &K) -> Option<&Resources> {
        self.clients.get(k).map(|c| &c.allocation)
    }

    pub fn share(&self, k: &K) -> Option<f64> {
        self.clients.get(k).map(|c| c.share.0)
    }

    /// Sets the cluster total that shares are relative to, and re-sorts.
    pub fn set_total(&mut self, total: &Resources) {
        self.total = total.scalar_part();
        self.order.clear();
        for (k, c) in &mut self.clients {
            c.share = Share(dominant_share(&c.allocation, &self.total, c.weight));
            if c.active {
                self.order.insert((c.share, c.seq, k.clone()));
            }
        }
    }

    /// Active clients, lowest share first.
    pub fn iter(&self) -> impl Iterator<Item = &K> + '_ {
        self.order.iter().map(|(_, _, k)| k)
    }

    fn update(&mut self, k: &K, f: impl FnOnce(&mut Client)) {
        let Some(c) = self.clients.get_mut(k) else {
            return;
        };
        if c.active {
            self.order.remove(&(c.share, c.seq, k.clone()));
        }
        f(c);
        c.share = Share(dominant_share(&c.allocation, &self.total, c.weight));
        if c.active {
            self.order.insert((c.share, c.seq, k.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpus: f64, mem: f64) -> Resources {
        Resources::cpus_mem(cpus, mem).unwrap()
    }

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let total = res(10.0, 100.0);
        assert_eq!(dominant_share(&res(1.0, 50.0), &total, 1.0), 0.5);
        assert_eq!(dominant_share(&res(5.0, 10.0), &total, 1.0), 0.5);
        assert_eq!(dominant_share(&res(5.0, 10.0), &total, 2.0), 0.25);
        assert_eq!(dominant_share(&res(5.0, 10.0), &Resources::new(), 1.0), 0.0);
    }

    #[test]
    fn lowest_share_comes_first_and_ties_break_by_insertion() {
        let mut s = DrfSorter::new();
        s.set_total(&res(10.0, 100.0));
        for k in ["a", "b", "c"] {
            s.add(k, 1.0);
            s.activate(&k);
        }
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["a", "b", "c"]);
        s.allocated(&"a", &res(2.0, 0.0));
        s.allocated(&"b", &res(0.0, 10.0));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["c", "b", "a"]);
        s.unallocated(&"a", &res(2.0, 0.0));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["a", "c", "b"]);
        s.deactivate(&"a");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["c", "b"]);
    }

    #[test]
    fn weights_scale_shares() {
        let mut s = DrfSorter::new();
        s.set_total(&res(10.0, 100.0));
        s.add("heavy", 3.0);
        s.add("light", 1.0);
        s.activate(&"heavy");
        s.activate(&"light");
        s.allocated(&"heavy", &res(3.0, 0.0));
        s.allocated(&"light", &res(2.0, 0.0));
        // 0.3/3 = 0.1 < 0.2/1
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), ["heavy", "light"]);
    }
}
