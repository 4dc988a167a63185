//! Dominant Resource Fairness ordering of clients (roles, or frameworks within
//! a role). Pure bookkeeping: no clock, no I/O.

use std::collections::BTreeSet;

use cairn_model::Resources;

use super::quantities::{Quantities, dominant_share};

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

#[derive(Debug)]
struct Client {
    allocation: Quantities,
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
/// Clients are small integers (the allocator's role and framework slots),
/// so finding one is an index, not a hash. Updates are incremental: an
/// allocation moves one client in a `BTreeSet` (O(log n)); only a change of
/// the cluster total re-sorts everyone.
#[derive(Debug, Default)]
pub struct DrfSorter {
    clients: Vec<Option<Client>>,
    len: usize,
    order: BTreeSet<(Share, u64, u32)>,
    total: Quantities,
    next_seq: u64,
}

impl DrfSorter {
    pub fn new() -> Self {
        Self::default()
    }

    fn client(&self, k: u32) -> Option<&Client> {
        self.clients.get(k as usize)?.as_ref()
    }

    fn client_mut(&mut self, k: u32) -> Option<&mut Client> {
        self.clients.get_mut(k as usize)?.as_mut()
    }

    pub fn contains(&self, k: u32) -> bool {
        self.client(k).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an inactive client with nothing allocated. Adding twice is a no-op.
    pub fn add(&mut self, k: u32, weight: f64) {
        if self.contains(k) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let i = k as usize;
        if self.clients.len() <= i {
            self.clients.resize_with(i + 1, || None);
        }
        self.clients[i] = Some(Client {
            allocation: Quantities::new(),
            weight,
            active: false,
            seq,
            share: Share(0.0),
        });
        self.len += 1;
    }

    /// Removes a client and whatever was allocated to it.
    pub fn remove(&mut self, k: u32) {
        if let Some(c) = self.clients.get_mut(k as usize).and_then(Option::take) {
            self.len -= 1;
            if c.active {
                self.order.remove(&(c.share, c.seq, k));
            }
        }
    }

    pub fn activate(&mut self, k: u32) {
        if let Some(c) = self.client_mut(k)
            && !c.active
        {
            c.active = true;
            let key = (c.share, c.seq, k);
            self.order.insert(key);
        }
    }

    pub fn deactivate(&mut self, k: u32) {
        if let Some(c) = self.client_mut(k)
            && c.active
        {
            c.active = false;
            let key = (c.share, c.seq, k);
            self.order.remove(&key);
        }
    }

    pub fn is_active(&self, k: u32) -> bool {
        self.client(k).is_some_and(|c| c.active)
    }

    pub fn set_weight(&mut self, k: u32, weight: f64) {
        self.update(k, |c| c.weight = weight);
    }

    pub fn allocated(&mut self, k: u32, r: &Resources) {
        self.update(k, |c| c.allocation.add(r));
    }

    pub fn unallocated(&mut self, k: u32, r: &Resources) {
        self.update(k, |c| c.allocation.sub(r));
    }

    /// The scalar part of what is allocated to `k`.
    pub fn allocation(&self, k: u32) -> Option<&Quantities> {
        self.client(k).map(|c| &c.allocation)
    }

    pub fn share(&self, k: u32) -> Option<f64> {
        self.client(k).map(|c| c.share.0)
    }

    /// Sets the cluster total that shares are relative to, and re-sorts.
    pub fn set_total(&mut self, total: &Resources) {
        self.total = Quantities::of(total);
        self.order.clear();
        for (k, c) in self.clients.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            c.share = Share(dominant_share(&c.allocation, &self.total, c.weight));
            if c.active
                && let Ok(k) = u32::try_from(k)
            {
                self.order.insert((c.share, c.seq, k));
            }
        }
    }

    /// Active clients, lowest share first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.order.iter().map(|(_, _, k)| *k)
    }

    fn update(&mut self, k: u32, f: impl FnOnce(&mut Client)) {
        let Some(c) = self.clients.get_mut(k as usize).and_then(Option::as_mut) else {
            return;
        };
        if c.active {
            self.order.remove(&(c.share, c.seq, k));
        }
        f(c);
        c.share = Share(dominant_share(&c.allocation, &self.total, c.weight));
        if c.active {
            self.order.insert((c.share, c.seq, k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpus: f64, mem: f64) -> Resources {
        Resources::cpus_mem(cpus, mem).unwrap()
    }

    const A: u32 = 0;
    const B: u32 = 1;
    const C: u32 = 2;

    #[test]
    fn lowest_share_comes_first_and_ties_break_by_insertion() {
        let mut s = DrfSorter::new();
        s.set_total(&res(10.0, 100.0));
        // Added in the order a, b, c but into slots that do not follow it.
        for k in [C, A, B] {
            s.add(k, 1.0);
            s.activate(k);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), [C, A, B]);
        s.allocated(A, &res(2.0, 0.0));
        s.allocated(B, &res(0.0, 10.0));
        assert_eq!(s.iter().collect::<Vec<_>>(), [C, B, A]);
        s.unallocated(A, &res(2.0, 0.0));
        assert_eq!(s.iter().collect::<Vec<_>>(), [C, A, B]);
        s.deactivate(A);
        assert_eq!(s.iter().collect::<Vec<_>>(), [C, B]);
        s.remove(C);
        assert_eq!(s.iter().collect::<Vec<_>>(), [B]);
        assert_eq!(s.len(), 2);
        assert!(!s.contains(C));
    }

    #[test]
    fn weights_scale_shares() {
        let mut s = DrfSorter::new();
        s.set_total(&res(10.0, 100.0));
        let (heavy, light) = (0, 1);
        s.add(heavy, 3.0);
        s.add(light, 1.0);
        s.activate(heavy);
        s.activate(light);
        s.allocated(heavy, &res(3.0, 0.0));
        s.allocated(light, &res(2.0, 0.0));
        // 0.3/3 = 0.1 < 0.2/1
        assert_eq!(s.iter().collect::<Vec<_>>(), [heavy, light]);
    }
}
