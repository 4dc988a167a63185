//! The hierarchical DRF allocator: which framework gets each agent's free
//! resources.
//!
//! A library with no I/O and no clock: the master's core tells it what exists
//! and what was allocated or recovered, and asks it for a cycle of
//! allocations. One cycle runs these named stages:
//!
//! 1. [`Allocator::expire_filters`]: drop decline filters whose time is up.
//! 2. [`Allocator::collect_candidates`]: active agents in scope with
//!    something allocatable free, in a seeded random order (so no agent is
//!    always first, and a run can be replayed from its seed).
//! 3. [`Allocator::allocate_fair_share`]: for each candidate agent, walk roles
//!    by ascending weighted dominant share, and within the role frameworks by
//!    ascending dominant share; the first framework that is active, not
//!    suppressed for the role and not filtered on the agent gets all of the
//!    agent's free resources. Shares are updated at once, so the next agent
//!    sees the new order.
//!
//! Cost: per agent, O(log F) to re-sort after an allocation plus the number of
//! frameworks skipped because they filtered that agent; filters are looked up
//! in a per-agent bitset indexed by framework slot, so a skip costs a few
//! nanoseconds.

mod quantities;
mod sorter;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use cairn_model::{AgentId, FrameworkId, Resources, Role, Scalar, Time};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use smallvec::SmallVec;

pub use quantities::{Quantities, dominant_share};
pub use sorter::DrfSorter;

/// An agent's free resources are worth offering when they hold at least this
/// many cpus or this much memory (Mesos's MIN_CPUS and MIN_MEM).
pub const MIN_ALLOCATABLE_CPUS: Scalar = Scalar::from_milli(10);
pub const MIN_ALLOCATABLE_MEM: Scalar = Scalar::from_units(32);

/// One decision of a cycle: all of `resources` on `agent` go to `framework`
/// for `role`.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub framework: FrameworkId,
    pub role: Role,
    pub agent: AgentId,
    pub resources: Resources,
}

/// Which agents a cycle considers.
#[derive(Clone, Debug)]
pub enum Scope {
    All,
    Agents(BTreeSet<AgentId>),
}

#[derive(Debug)]
struct Filter {
    /// Offers no larger than this are refused.
    resources: Resources,
    expires: Time,
}

/// An agent's books. What is allocated (offered plus used, by whoever) is
/// not stored: it is `total - free + excess`. A cycle hands an agent's
/// `free` over whole and touches nothing else of it, and the fields a cycle
/// never reads (`total`, `excess`) live apart, so the cycle walks compact
/// slots: at 50,000 agents in random order, memory traffic and not
/// arithmetic sets its cost.
#[derive(Debug)]
struct AgentSlot {
    id: AgentId,
    /// What no one holds; always contained in `total`.
    free: Resources,
    active: bool,
    filters: AgentFilters,
    cold: Box<AgentCold>,
}

/// The decline filters on one agent, by framework slot. Laid out for the
/// cycle's question "has framework `s` a filter here?", asked for every
/// framework skipped on every agent: a bit answers no (the common case)
/// without leaving the slot, and a yes finds its entry by scanning a short
/// inline list of slots, touching one filter only.
#[derive(Debug, Default)]
struct AgentFilters {
    /// Bit `s` set: framework slot `s` has a filter here.
    bits: SmallVec<[u64; 2]>,
    /// Framework slots, in the order of `entries`.
    slots: SmallVec<[u32; 6]>,
    entries: Vec<Filter>,
}

impl AgentFilters {
    fn has(&self, fw: u32) -> bool {
        let word = (fw / 64) as usize;
        self.bits
            .get(word)
            .is_some_and(|w| w & (1u64 << (fw % 64)) != 0)
    }

    fn get(&self, fw: u32) -> Option<&Filter> {
        if !self.has(fw) {
            return None;
        }
        let i = self.slots.iter().position(|s| *s == fw)?;
        self.entries.get(i)
    }

    fn set(&mut self, fw: u32, filter: Filter) {
        let word = (fw / 64) as usize;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1u64 << (fw % 64);
        match self.slots.iter().position(|s| *s == fw) {
            Some(i) => self.entries[i] = filter,
            None => {
                self.slots.push(fw);
                self.entries.push(filter);
            }
        }
    }

    fn clear(&mut self, fw: u32) {
        let word = (fw / 64) as usize;
        if let Some(w) = self.bits.get_mut(word) {
            *w &= !(1u64 << (fw % 64));
        }
        if let Some(i) = self.slots.iter().position(|s| *s == fw) {
            self.slots.swap_remove(i);
            self.entries.swap_remove(i);
        }
    }

    /// Framework slots with a filter here.
    fn slots(&self) -> &[u32] {
        &self.slots
    }
}

#[derive(Debug)]
struct AgentCold {
    total: Resources,
    /// Allocated beyond `total`: tasks an agent reported on re-registering
    /// that no longer fit, or the same port held twice. Normally empty.
    excess: Resources,
}

impl AgentSlot {
    fn new(id: AgentId, total: Resources) -> Self {
        AgentSlot {
            id,
            free: total.clone(),
            active: true,
            filters: AgentFilters::default(),
            cold: Box::new(AgentCold {
                total,
                excess: Resources::new(),
            }),
        }
    }

    /// `total - free + excess`.
    fn allocated(&self) -> Resources {
        let mut a = self.cold.total.saturating_sub(&self.free);
        a.add(&self.cold.excess);
        a
    }

    /// Books `r` as allocated; what `free` does not have is excess.
    fn allocate(&mut self, r: &Resources) {
        if !self.free.contains(r) {
            let short = r.saturating_sub(&self.free);
            self.cold.excess.add(&short);
        }
        self.free = self.free.saturating_sub(r);
    }

    /// Books `r` as no longer allocated: it pays off excess first, and
    /// `free` never grows past `total` (returning more than was allocated
    /// frees nothing extra).
    fn release(&mut self, r: &Resources) {
        let back = if self.cold.excess.is_empty() {
            r.clone()
        } else {
            let back = r.saturating_sub(&self.cold.excess);
            self.cold.excess = self.cold.excess.saturating_sub(r);
            back
        };
        self.free.add(&back);
        if !self.cold.total.contains(&self.free) {
            let total = &self.cold.total;
            self.free = total.saturating_sub(&total.saturating_sub(&self.free));
        }
    }

    fn set_total(&mut self, total: Resources) {
        let allocated = self.allocated();
        self.free = total.saturating_sub(&allocated);
        self.cold.excess = allocated.saturating_sub(&total);
        self.cold.total = total;
    }

    fn set_filter(&mut self, fw: u32, filter: Filter) {
        self.filters.set(fw, filter);
    }

    fn clear_filter(&mut self, fw: u32) {
        self.filters.clear(fw);
    }

    /// Whether framework slot `fw` refuses `free` on this agent at `now`.
    fn filtered(&self, fw: u32, free: &Resources, now: Time) -> bool {
        self.filters
            .get(fw)
            .is_some_and(|f| now < f.expires && f.resources.contains(free))
    }
}

#[derive(Debug)]
struct FrameworkSlot {
    id: FrameworkId,
    roles: Vec<Role>,
    suppressed: BTreeSet<Role>,
    active: bool,
    /// Agent slots where this framework has a filter, to clear them on revive.
    filtered_agents: BTreeSet<u32>,
}

#[derive(Debug)]
struct RoleEntry {
    role: Role,
    frameworks: DrfSorter,
}

/// Tunables of the allocator.
#[derive(Clone, Debug, Default)]
pub struct AllocatorConfig {
    pub weights: BTreeMap<Role, f64>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    agents: Vec<Option<AgentSlot>>,
    agent_slots: HashMap<AgentId, u32>,
    free_agent_slots: Vec<u32>,
    frameworks: Vec<Option<FrameworkSlot>>,
    framework_slots: HashMap<FrameworkId, u32>,
    free_framework_slots: Vec<u32>,
    /// Indexed by role slot; roles are few and never forgotten.
    roles: Vec<RoleEntry>,
    role_slots: BTreeMap<Role, u32>,
    role_sorter: DrfSorter,
    /// Sum of the totals of active agents (scalars only): what shares are
    /// relative to. Kept up to date as agents come, go and change, since
    /// summing it afresh is a walk over every agent, and a failover brings
    /// thousands of re-registrations with a cycle between batches of them.
    /// Scalars are fixed-point, so adding and subtracting is exact.
    total: Resources,
    /// The sorters' shares are not yet relative to `total`.
    total_dirty: bool,
    expiries: BTreeSet<(Time, u32, u32)>,
    rng: ChaCha8Rng,
}

impl Allocator {
    pub fn new(config: AllocatorConfig, seed: u64) -> Self {
        Allocator {
            config,
            agents: Vec::new(),
            agent_slots: HashMap::new(),
            free_agent_slots: Vec::new(),
            frameworks: Vec::new(),
            framework_slots: HashMap::new(),
            free_framework_slots: Vec::new(),
            roles: Vec::new(),
            role_slots: BTreeMap::new(),
            role_sorter: DrfSorter::new(),
            total: Resources::new(),
            total_dirty: false,
            expiries: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn weight(&self, role: &Role) -> f64 {
        self.config.weights.get(role).copied().unwrap_or(1.0)
    }

    /// The slot of `role`, added (active, with its weight) when new.
    fn role_slot(&mut self, role: &Role) -> u32 {
        if let Some(&r) = self.role_slots.get(role) {
            return r;
        }
        let r = u32::try_from(self.roles.len()).unwrap_or(u32::MAX);
        let mut frameworks = DrfSorter::new();
        frameworks.set_total(&self.total);
        self.roles.push(RoleEntry {
            role: role.clone(),
            frameworks,
        });
        self.role_slots.insert(role.clone(), r);
        let weight = self.weight(role);
        self.role_sorter.add(r, weight);
        self.role_sorter.activate(r);
        r
    }

    fn role_entry_mut(&mut self, role: &Role) -> Option<&mut RoleEntry> {
        let r = *self.role_slots.get(role)?;
        self.roles.get_mut(r as usize)
    }

    fn agent_mut(&mut self, id: &AgentId) -> Option<&mut AgentSlot> {
        let slot = *self.agent_slots.get(id)?;
        self.agents.get_mut(slot as usize)?.as_mut()
    }

    fn agent(&self, id: &AgentId) -> Option<&AgentSlot> {
        let slot = *self.agent_slots.get(id)?;
        self.agents.get(slot as usize)?.as_ref()
    }

    // ----- agents -------------------------------------------------------

    /// Adds an active agent. `used` is what is already allocated on it (tasks
    /// it reported when re-registering); their frameworks must have been
    /// added first, or those allocations count only against the agent.
    pub fn add_agent(
        &mut self,
        id: &AgentId,
        total: Resources,
        used: &[(FrameworkId, Role, Resources)],
    ) {
        if self.agent_slots.contains_key(id) {
            return;
        }
        let slot = self.free_agent_slots.pop().unwrap_or_else(|| {
            self.agents.push(None);
            u32::try_from(self.agents.len() - 1).unwrap_or(u32::MAX)
        });
        self.add_to_total(&total.scalar_part());
        self.agents[slot as usize] = Some(AgentSlot::new(id.clone(), total));
        self.agent_slots.insert(id.clone(), slot);
        for (fw, role, r) in used {
            self.allocate_to(id, fw, role, r);
        }
    }

    /// Removes an agent. Its allocations must have been recovered first; any
    /// left are dropped from the agent only.
    pub fn remove_agent(&mut self, id: &AgentId) {
        let Some(slot) = self.agent_slots.remove(id) else {
            return;
        };
        if let Some(agent) = self.agents[slot as usize].take() {
            if agent.active {
                self.subtract_from_total(&agent.cold.total.scalar_part());
            }
            for fw in agent.filters.slots() {
                if let Some(Some(f)) = self.frameworks.get_mut(*fw as usize) {
                    f.filtered_agents.remove(&slot);
                }
            }
            self.expiries.retain(|(_, a, _)| *a != slot);
        }
        self.free_agent_slots.push(slot);
    }

    /// An inactive agent keeps its allocations but gets no new offers (its
    /// connection is down).
    pub fn set_agent_active(&mut self, id: &AgentId, active: bool) {
        let Some(a) = self.agent_mut(id) else { return };
        if a.active == active {
            return;
        }
        a.active = active;
        let total = a.cold.total.scalar_part();
        if active {
            self.add_to_total(&total);
        } else {
            self.subtract_from_total(&total);
        }
    }

    pub fn update_agent_total(&mut self, id: &AgentId, total: Resources) {
        let Some(a) = self.agent_mut(id) else { return };
        let change = (a.active && a.cold.total != total)
            .then(|| (a.cold.total.scalar_part(), total.scalar_part()));
        a.set_total(total);
        if let Some((old, new)) = change {
            self.subtract_from_total(&old);
            self.add_to_total(&new);
        }
    }

    /// `scalars`: the scalar part of an agent's total.
    fn add_to_total(&mut self, scalars: &Resources) {
        self.total.add(scalars);
        self.total_dirty = true;
    }

    /// `scalars`: the scalar part of an agent's total.
    fn subtract_from_total(&mut self, scalars: &Resources) {
        self.total = self.total.saturating_sub(scalars);
        self.total_dirty = true;
    }

    /// What is offered or used on the agent.
    pub fn allocated_on(&self, id: &AgentId) -> Option<Resources> {
        self.agent(id).map(AgentSlot::allocated)
    }

    pub fn free_on(&self, id: &AgentId) -> Option<&Resources> {
        self.agent(id).map(|a| &a.free)
    }

    // ----- frameworks ---------------------------------------------------

    pub fn add_framework(&mut self, id: &FrameworkId, roles: &[Role], suppressed: &[Role]) {
        if self.framework_slots.contains_key(id) {
            return;
        }
        let slot = self.free_framework_slots.pop().unwrap_or_else(|| {
            self.frameworks.push(None);
            u32::try_from(self.frameworks.len() - 1).unwrap_or(u32::MAX)
        });
        self.frameworks[slot as usize] = Some(FrameworkSlot {
            id: id.clone(),
            roles: Vec::new(),
            suppressed: suppressed.iter().cloned().collect(),
            active: false,
            filtered_agents: BTreeSet::new(),
        });
        self.framework_slots.insert(id.clone(), slot);
        self.update_framework_roles(id, roles);
    }

    /// Changes the roles a framework subscribes to. Allocations in a dropped
    /// role stay accounted until they are recovered.
    pub fn update_framework_roles(&mut self, id: &FrameworkId, roles: &[Role]) {
        let Some(&slot) = self.framework_slots.get(id) else {
            return;
        };
        for role in roles {
            let r = self.role_slot(role);
            if let Some(entry) = self.roles.get_mut(r as usize) {
                entry.frameworks.add(slot, 1.0);
            }
        }
        if let Some(Some(f)) = self.frameworks.get_mut(slot as usize) {
            f.roles = roles.to_vec();
        }
        self.refresh_activation(slot);
    }

    /// Removes a framework. Its allocations must have been recovered first.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        let Some(slot) = self.framework_slots.remove(id) else {
            return;
        };
        let Some(f) = self.frameworks[slot as usize].take() else {
            return;
        };
        for a in &f.filtered_agents {
            if let Some(Some(agent)) = self.agents.get_mut(*a as usize) {
                agent.clear_filter(slot);
            }
        }
        self.expiries.retain(|(_, _, fw)| *fw != slot);
        for entry in &mut self.roles {
            entry.frameworks.remove(slot);
        }
        self.free_framework_slots.push(slot);
    }

    /// An inactive framework (disconnected) gets no offers.
    pub fn set_framework_active(&mut self, id: &FrameworkId, active: bool) {
        let Some(&slot) = self.framework_slots.get(id) else {
            return;
        };
        if let Some(Some(f)) = self.frameworks.get_mut(slot as usize) {
            f.active = active;
        }
        self.refresh_activation(slot);
    }

    /// Stops offers for `roles` (all of the framework's roles when empty).
    pub fn suppress(&mut self, id: &FrameworkId, roles: &[Role]) {
        let Some(&slot) = self.framework_slots.get(id) else {
            return;
        };
        if let Some(Some(f)) = self.frameworks.get_mut(slot as usize) {
            let which: Vec<Role> = if roles.is_empty() {
                f.roles.clone()
            } else {
                roles.to_vec()
            };
            f.suppressed.extend(which);
        }
        self.refresh_activation(slot);
    }

    /// Suppresses exactly `roles` (none when empty), without touching filters.
    pub fn set_suppressed(&mut self, id: &FrameworkId, roles: &[Role]) {
        let Some(&slot) = self.framework_slots.get(id) else {
            return;
        };
        if let Some(Some(f)) = self.frameworks.get_mut(slot as usize) {
            f.suppressed = roles.iter().cloned().collect();
        }
        self.refresh_activation(slot);
    }

    /// Resumes offers for `roles` (all when empty) and clears the framework's
    /// decline filters.
    pub fn revive(&mut self, id: &FrameworkId, roles: &[Role]) {
        let Some(&slot) = self.framework_slots.get(id) else {
            return;
        };
        let mut filtered = BTreeSet::new();
        if let Some(Some(f)) = self.frameworks.get_mut(slot as usize) {
            if roles.is_empty() {
                f.suppressed.clear();
            } else {
                for r in roles {
                    f.suppressed.remove(r);
                }
            }
            filtered = std::mem::take(&mut f.filtered_agents);
        }
        for a in filtered {
            if let Some(Some(agent)) = self.agents.get_mut(a as usize) {
                agent.clear_filter(slot);
            }
        }
        self.expiries.retain(|(_, _, fw)| *fw != slot);
        self.refresh_activation(slot);
    }

    pub fn is_suppressed(&self, id: &FrameworkId, role: &Role) -> bool {
        self.framework_slots
            .get(id)
            .and_then(|s| self.frameworks.get(*s as usize)?.as_ref())
            .is_some_and(|f| f.suppressed.contains(role))
    }

    /// Puts the framework in or out of each role's ordering according to its
    /// activity and suppression.
    fn refresh_activation(&mut self, slot: u32) {
        let Some(Some(f)) = self.frameworks.get(slot as usize) else {
            return;
        };
        for entry in &mut self.roles {
            let role = &entry.role;
            let wanted = f.active && f.roles.contains(role) && !f.suppressed.contains(role);
            if wanted {
                entry.frameworks.activate(slot);
            } else {
                entry.frameworks.deactivate(slot);
            }
        }
    }

    // ----- allocations --------------------------------------------------

    /// Records that `r` on `agent` is allocated to `framework` for `role`
    /// outside a cycle (tasks adopted from a re-registering agent).
    pub fn allocate_to(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        role: &Role,
        r: &Resources,
    ) {
        if let Some(a) = self.agent_mut(agent) {
            a.allocate(r);
        }
        let role_slot = self.role_slot(role);
        self.role_sorter.allocated(role_slot, r);
        if let Some(&slot) = self.framework_slots.get(framework)
            && let Some(entry) = self.roles.get_mut(role_slot as usize)
        {
            entry.frameworks.allocated(slot, r);
        }
    }

    /// Returns `r` on `agent`, allocated to `framework` for `role`, to the
    /// pool. With `refuse`, the framework is not offered resources no larger
    /// than `r` on that agent until `refuse` has passed.
    pub fn recover(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        role: &Role,
        r: &Resources,
        refuse: Option<(Time, Duration)>,
    ) {
        let fw_slot = self.framework_slots.get(framework).copied();
        if let Some(&agent_slot) = self.agent_slots.get(agent)
            && let Some(Some(a)) = self.agents.get_mut(agent_slot as usize)
        {
            a.release(r);
            if let (Some(fw), Some((now, d))) = (fw_slot, refuse)
                && !d.is_zero()
                && !r.is_empty()
            {
                let expires = now + d;
                a.set_filter(
                    fw,
                    Filter {
                        resources: r.clone(),
                        expires,
                    },
                );
                self.expiries.insert((expires, agent_slot, fw));
                if let Some(Some(f)) = self.frameworks.get_mut(fw as usize) {
                    f.filtered_agents.insert(agent_slot);
                }
            }
        }
        if let Some(&role_slot) = self.role_slots.get(role) {
            self.role_sorter.unallocated(role_slot, r);
        }
        if let Some(slot) = fw_slot
            && let Some(entry) = self.role_entry_mut(role)
        {
            entry.frameworks.unallocated(slot, r);
        }
    }

    /// Runs one allocation cycle over `scope`; see the module documentation.
    pub fn allocate(&mut self, now: Time, scope: &Scope) -> Vec<Allocation> {
        self.expire_filters(now);
        if self.total_dirty {
            self.refresh_total();
        }
        let candidates = self.collect_candidates(scope);
        self.allocate_fair_share(now, &candidates)
    }

    /// Stage 1.
    pub fn expire_filters(&mut self, now: Time) {
        while let Some(&(t, agent, fw)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(Some(a)) = self.agents.get_mut(agent as usize) {
                // A newer filter for the same pair may have replaced this one.
                let current = a.filters.get(fw).map(|f| f.expires);
                if current.is_some_and(|e| e <= now) {
                    a.clear_filter(fw);
                    if let Some(Some(f)) = self.frameworks.get_mut(fw as usize) {
                        f.filtered_agents.remove(&agent);
                    }
                }
            }
        }
    }

    /// Stage 2.
    fn collect_candidates(&mut self, scope: &Scope) -> Vec<u32> {
        let allocatable = |a: &AgentSlot| {
            a.active
                && (a.free.cpus() >= MIN_ALLOCATABLE_CPUS || a.free.mem() >= MIN_ALLOCATABLE_MEM)
        };
        let mut out: Vec<u32> = match scope {
            Scope::All => self
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.as_ref().is_some_and(allocatable))
                .filter_map(|(i, _)| u32::try_from(i).ok())
                .collect(),
            Scope::Agents(ids) => ids
                .iter()
                .filter_map(|id| self.agent_slots.get(id).copied())
                .filter(|s| {
                    self.agents
                        .get(*s as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(allocatable)
                })
                .collect(),
        };
        out.shuffle(&mut self.rng);
        out
    }

    /// Stage 3.
    fn allocate_fair_share(&mut self, now: Time, candidates: &[u32]) -> Vec<Allocation> {
        let mut out = Vec::with_capacity(candidates.len());
        for &agent_slot in candidates {
            let Some(Some(agent)) = self.agents.get(agent_slot as usize) else {
                continue;
            };
            let mut choice: Option<(u32, u32)> = None;
            'roles: for role in self.role_sorter.iter() {
                let Some(entry) = self.roles.get(role as usize) else {
                    continue;
                };
                for fw in entry.frameworks.iter() {
                    if !agent.filtered(fw, &agent.free, now) {
                        choice = Some((role, fw));
                        break 'roles;
                    }
                }
            }
            let Some((role_slot, fw)) = choice else {
                continue;
            };
            let Some(Some(framework)) = self.frameworks.get(fw as usize) else {
                continue;
            };
            let framework_id = framework.id.clone();
            let (Some(Some(agent)), Some(entry)) = (
                self.agents.get_mut(agent_slot as usize),
                self.roles.get_mut(role_slot as usize),
            ) else {
                continue;
            };
            let free = std::mem::take(&mut agent.free);
            entry.frameworks.allocated(fw, &free);
            let allocation = Allocation {
                framework: framework_id,
                role: entry.role.clone(),
                agent: agent.id.clone(),
                resources: free,
            };
            self.role_sorter.allocated(role_slot, &allocation.resources);
            out.push(allocation);
        }
        out
    }

    /// Makes the sorters' shares relative to the current total.
    fn refresh_total(&mut self) {
        self.role_sorter.set_total(&self.total);
        for entry in &mut self.roles {
            entry.frameworks.set_total(&self.total);
        }
        self.total_dirty = false;
    }

    /// The sum of active agents' totals, summed afresh (for checks of the
    /// kept total).
    #[cfg(test)]
    fn summed_total(&self) -> Resources {
        let mut total = Resources::new();
        for a in self.agents.iter().flatten().filter(|a| a.active) {
            total.add(&a.cold.total.scalar_part());
        }
        total
    }

    /// The weighted dominant share of `framework` within `role`, for views
    /// and tests.
    pub fn framework_share(&mut self, framework: &FrameworkId, role: &Role) -> f64 {
        if self.total_dirty {
            self.refresh_total();
        }
        let Some(slot) = self.framework_slots.get(framework) else {
            return 0.0;
        };
        let slot = *slot;
        self.role_slots
            .get(role)
            .and_then(|r| self.roles.get(*r as usize))
            .and_then(|e| e.frameworks.share(slot))
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Resources {
        Resources::parse(s).unwrap()
    }

    fn t(secs: u64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    fn role() -> Role {
        Role::default_role()
    }

    fn setup(agents: usize, frameworks: &[&str]) -> Allocator {
        let mut a = Allocator::new(AllocatorConfig::default(), 7);
        for i in 0..agents {
            a.add_agent(&AgentId::new(format!("a{i}")), res("cpus:4;mem:4096"), &[]);
        }
        for f in frameworks {
            let id = FrameworkId::new(*f);
            a.add_framework(&id, &[role()], &[]);
            a.set_framework_active(&id, true);
        }
        a
    }

    #[test]
    fn each_agent_is_offered_whole_to_one_framework() {
        let mut a = setup(4, &["f1", "f2"]);
        let allocs = a.allocate(t(0), &Scope::All);
        assert_eq!(allocs.len(), 4);
        let to_f1 = allocs
            .iter()
            .filter(|x| x.framework.as_str() == "f1")
            .count();
        assert_eq!(to_f1, 2, "DRF alternates between equal frameworks");
        for x in &allocs {
            assert_eq!(x.resources, res("cpus:4;mem:4096"));
        }
        // Nothing left to offer.
        assert!(a.allocate(t(1), &Scope::All).is_empty());
    }

    #[test]
    fn the_kept_total_is_the_sum_of_active_agents_through_any_changes() {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut a = setup(0, &["f1", "f2"]);
        let bundles = [
            "cpus:4;mem:4096",
            "cpus:0.1;mem:1.5;disk:10",
            "cpus:2;gpus:1;ports:[31000-32000]",
            "mem:1;bandwidth:0.001",
        ];
        for step in 0..2_000 {
            let agent = AgentId::new(format!("a{}", rng.random_range(0..20)));
            let bundle = res(bundles[rng.random_range(0..bundles.len())]);
            match rng.random_range(0..5) {
                0 => a.add_agent(&agent, bundle, &[]),
                1 => a.remove_agent(&agent),
                2 => a.set_agent_active(&agent, rng.random_bool(0.5)),
                3 => a.update_agent_total(&agent, bundle),
                _ => {
                    // A cycle takes resources away from free, never from
                    // the total.
                    a.allocate(t(step), &Scope::All);
                }
            }
            assert_eq!(a.total, a.summed_total(), "after step {step}");
        }
        // The shares follow the kept total.
        a.allocate(t(3_000), &Scope::All);
        assert!(!a.total_dirty);
    }

    #[test]
    fn declined_resources_are_filtered_until_the_filter_expires() {
        let mut a = setup(1, &["f1"]);
        let first = a.allocate(t(0), &Scope::All);
        assert_eq!(first.len(), 1);
        let x = &first[0];
        a.recover(
            &x.agent,
            &x.framework,
            &x.role,
            &x.resources,
            Some((t(0), Duration::from_secs(10))),
        );
        assert!(a.allocate(t(5), &Scope::All).is_empty(), "filtered at t=5");
        assert_eq!(a.allocate(t(10), &Scope::All).len(), 1, "expired at t=10");
    }

    #[test]
    fn a_filter_does_not_hold_back_more_resources_than_were_declined() {
        let mut a = setup(1, &["f1"]);
        let agent = AgentId::new("a0");
        let fw = FrameworkId::new("f1");
        let x = a.allocate(t(0), &Scope::All).remove(0);
        // Decline only part: the filter covers that part.
        a.recover(
            &agent,
            &fw,
            &role(),
            &res("cpus:1;mem:1024"),
            Some((t(0), Duration::from_secs(60))),
        );
        assert!(a.allocate(t(1), &Scope::All).is_empty());
        // Then the rest comes back too: now more is free than was refused.
        let rest = x.resources.checked_sub(&res("cpus:1;mem:1024")).unwrap();
        a.recover(&agent, &fw, &role(), &rest, None);
        assert_eq!(a.allocate(t(2), &Scope::All).len(), 1);
    }

    #[test]
    fn suppressed_frameworks_get_nothing_until_revived() {
        let mut a = setup(2, &["f1"]);
        let fw = FrameworkId::new("f1");
        a.suppress(&fw, &[]);
        assert!(a.allocate(t(0), &Scope::All).is_empty());
        a.revive(&fw, &[]);
        assert_eq!(a.allocate(t(1), &Scope::All).len(), 2);
    }

    #[test]
    fn revive_clears_filters() {
        let mut a = setup(1, &["f1"]);
        let x = a.allocate(t(0), &Scope::All).remove(0);
        a.recover(
            &x.agent,
            &x.framework,
            &x.role,
            &x.resources,
            Some((t(0), Duration::from_secs(3600))),
        );
        assert!(a.allocate(t(1), &Scope::All).is_empty());
        a.revive(&x.framework, &[]);
        assert_eq!(a.allocate(t(2), &Scope::All).len(), 1);
    }

    #[test]
    fn inactive_agents_and_frameworks_are_skipped() {
        let mut a = setup(2, &["f1"]);
        a.set_agent_active(&AgentId::new("a0"), false);
        assert_eq!(a.allocate(t(0), &Scope::All).len(), 1);
        let mut b = setup(2, &["f1"]);
        b.set_framework_active(&FrameworkId::new("f1"), false);
        assert!(b.allocate(t(0), &Scope::All).is_empty());
    }

    #[test]
    fn role_weights_split_agents_in_proportion() {
        let mut weights = BTreeMap::new();
        let heavy = Role::parse("r", "heavy").unwrap();
        let light = Role::parse("r", "light").unwrap();
        weights.insert(heavy.clone(), 3.0);
        let mut a = Allocator::new(AllocatorConfig { weights }, 1);
        for i in 0..40 {
            a.add_agent(&AgentId::new(format!("a{i}")), res("cpus:1;mem:1024"), &[]);
        }
        for (f, r) in [("fh", &heavy), ("fl", &light)] {
            let id = FrameworkId::new(f);
            a.add_framework(&id, std::slice::from_ref(r), &[]);
            a.set_framework_active(&id, true);
        }
        let allocs = a.allocate(t(0), &Scope::All);
        let h = allocs.iter().filter(|x| x.role == heavy).count();
        let l = allocs.iter().filter(|x| x.role == light).count();
        assert_eq!(h + l, 40);
        assert_eq!((h, l), (30, 10), "weight 3 vs 1 gives 3:1");
    }

    #[test]
    fn scope_limits_the_cycle_to_given_agents() {
        let mut a = setup(3, &["f1"]);
        let only: BTreeSet<AgentId> = [AgentId::new("a1")].into_iter().collect();
        let allocs = a.allocate(t(0), &Scope::Agents(only));
        assert_eq!(allocs.len(), 1);
        assert_eq!(allocs[0].agent.as_str(), "a1");
    }

    #[test]
    fn tasks_beyond_an_agents_total_keep_it_full_until_enough_of_them_end() {
        let mut a = setup(0, &["f1"]);
        let agent = AgentId::new("a0");
        let fw = FrameworkId::new("f1");
        // Re-registered with fewer resources than its tasks use.
        let task = res("cpus:3;mem:1024");
        a.add_agent(
            &agent,
            res("cpus:4;mem:4096"),
            &[
                (fw.clone(), role(), task.clone()),
                (fw.clone(), role(), task.clone()),
            ],
        );
        assert_eq!(
            a.allocated_on(&agent),
            Some(res("cpus:6;mem:2048")),
            "what is allocated is counted in full, past the total"
        );
        assert_eq!(a.free_on(&agent), Some(&res("mem:2048")));
        a.recover(&agent, &fw, &role(), &task, None);
        assert_eq!(a.free_on(&agent), Some(&res("cpus:1;mem:3072")));
        a.recover(&agent, &fw, &role(), &task, None);
        assert_eq!(a.free_on(&agent), Some(&res("cpus:4;mem:4096")));
        // Returning more than was allocated frees nothing beyond the total.
        a.recover(&agent, &fw, &role(), &task, None);
        assert_eq!(a.free_on(&agent), Some(&res("cpus:4;mem:4096")));
        assert_eq!(a.allocated_on(&agent), Some(Resources::new()));
    }

    #[test]
    fn a_smaller_total_leaves_running_tasks_allocated() {
        let mut a = setup(1, &["f1"]);
        let agent = AgentId::new("a0");
        let fw = FrameworkId::new("f1");
        a.allocate_to(&agent, &fw, &role(), &res("cpus:3;mem:1024"));
        a.update_agent_total(&agent, res("cpus:2;mem:4096"));
        assert_eq!(a.free_on(&agent), Some(&res("mem:3072")));
        assert_eq!(a.allocated_on(&agent), Some(res("cpus:3;mem:1024")));
        a.update_agent_total(&agent, res("cpus:8;mem:4096"));
        assert_eq!(a.free_on(&agent), Some(&res("cpus:5;mem:3072")));
    }

    #[test]
    fn a_port_held_twice_is_free_only_when_both_holders_return_it() {
        let mut a = setup(0, &["f1"]);
        let agent = AgentId::new("a0");
        let fw = FrameworkId::new("f1");
        a.add_agent(&agent, res("cpus:4;mem:4096;ports:[100-110]"), &[]);
        let port = res("ports:[105-105]");
        a.allocate_to(&agent, &fw, &role(), &port);
        a.allocate_to(&agent, &fw, &role(), &port);
        a.recover(&agent, &fw, &role(), &port, None);
        assert_eq!(
            a.free_on(&agent),
            Some(&res("cpus:4;mem:4096;ports:[100-104,106-110]"))
        );
        a.recover(&agent, &fw, &role(), &port, None);
        assert_eq!(
            a.free_on(&agent),
            Some(&res("cpus:4;mem:4096;ports:[100-110]"))
        );
    }

    #[test]
    fn removed_framework_slot_is_reused_without_its_filters() {
        let mut a = setup(1, &["f1"]);
        let x = a.allocate(t(0), &Scope::All).remove(0);
        a.recover(
            &x.agent,
            &x.framework,
            &x.role,
            &x.resources,
            Some((t(0), Duration::from_secs(3600))),
        );
        a.remove_framework(&x.framework);
        let f2 = FrameworkId::new("f2");
        a.add_framework(&f2, &[role()], &[]);
        a.set_framework_active(&f2, true);
        let allocs = a.allocate(t(1), &Scope::All);
        assert_eq!(allocs.len(), 1, "f2 must not inherit f1's filter");
        assert_eq!(allocs[0].framework, f2);
    }
}
