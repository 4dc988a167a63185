//! Self-checks of the registries, used by tests (and cheap enough for debug
//! assertions in simulations).

use std::collections::BTreeMap;

use cairn_model::{ResourceName, Resources, Time};

use super::Master;
use crate::InvariantViolation;

impl Master {
    /// Checks, for every agent, that its books match its tasks and offers,
    /// that `used + offered <= total`, that the allocator agrees, and that no
    /// resource is held twice (ranges included: two offers or tasks holding
    /// the same port would pass a plain sum).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        for agent in self.agents.values() {
            let mut used = Resources::new();
            let mut held: Vec<&Resources> = Vec::new();
            for (fw, task_id) in &agent.tasks {
                let task = self
                    .frameworks
                    .get(fw)
                    .and_then(|f| f.tasks.get(task_id))
                    .ok_or_else(|| {
                        InvariantViolation::Dangling(format!(
                            "agent {} lists task {task_id} of {fw}",
                            agent.id
                        ))
                    })?;
                if task.info.agent_id != agent.id {
                    return Err(InvariantViolation::Dangling(format!(
                        "task {task_id} listed on {} but runs on {}",
                        agent.id, task.info.agent_id
                    )));
                }
                if !task.state.is_terminal() {
                    used.add(&task.info.resources);
                    held.push(&task.info.resources);
                }
            }
            let mut offered = Resources::new();
            for id in &agent.offers {
                let o = self.offers.get(id).ok_or_else(|| {
                    InvariantViolation::Dangling(format!("agent {} lists offer {id}", agent.id))
                })?;
                offered.add(&o.offer.resources);
                held.push(&o.offer.resources);
            }
            if used != agent.used {
                return Err(InvariantViolation::Bookkeeping {
                    agent: agent.id.clone(),
                    what: "used",
                    actual: agent.used.to_string(),
                    expected: used.to_string(),
                });
            }
            if offered != agent.offered {
                return Err(InvariantViolation::Bookkeeping {
                    agent: agent.id.clone(),
                    what: "offered",
                    actual: agent.offered.to_string(),
                    expected: offered.to_string(),
                });
            }
            let allocated = used.plus(&offered);
            if !agent.info.resources.contains(&allocated) {
                return Err(InvariantViolation::OverCommitted {
                    agent: agent.id.clone(),
                    allocated: allocated.to_string(),
                    total: agent.info.resources.to_string(),
                });
            }
            match self.allocator.allocated_on(&agent.id) {
                Some(a) if a == allocated => {}
                other => {
                    return Err(InvariantViolation::AllocatorMismatch {
                        agent: agent.id.clone(),
                        allocator: other
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "nothing".into()),
                        records: allocated.to_string(),
                    });
                }
            }
            // Ranges: the union is smaller than the sum iff something overlaps.
            let mut sums: BTreeMap<&ResourceName, u64> = BTreeMap::new();
            for r in &held {
                for (name, set) in r.range_entries() {
                    *sums.entry(name).or_default() += set.count();
                }
            }
            for (name, sum) in sums {
                let union = allocated.range(name).map_or(0, |s| s.count());
                if union != sum {
                    return Err(InvariantViolation::OfferedTwice(format!(
                        "agent {}: {name} held {sum} times over {union} values",
                        agent.id
                    )));
                }
            }
        }
        for (id, record) in &self.offers {
            let o = &record.offer;
            let listed = self
                .frameworks
                .get(&o.framework_id)
                .is_some_and(|f| f.offers.contains(id))
                && self
                    .agents
                    .get(&o.agent_id)
                    .is_some_and(|a| a.offers.contains(id));
            if !listed {
                return Err(InvariantViolation::Dangling(format!(
                    "offer {id} not listed by its framework and agent"
                )));
            }
        }
        for f in self.frameworks.values() {
            for (task_id, t) in &f.tasks {
                let listed = self
                    .agents
                    .get(&t.info.agent_id)
                    .is_some_and(|a| a.tasks.contains(&(f.id.clone(), task_id.clone())));
                if !listed && !t.state.is_terminal() {
                    return Err(InvariantViolation::Dangling(format!(
                        "live task {task_id} of {} is on no known agent",
                        f.id
                    )));
                }
            }
        }
        // The deadline index holds exactly the recovering agents still
        // within their deadline.
        let due = self
            .recovering
            .values()
            .filter(|r| r.deadline != Time::MAX)
            .count();
        let indexed = self
            .recovering_due
            .iter()
            .all(|(at, id)| self.recovering.get(id).is_some_and(|r| r.deadline == *at));
        if due != self.recovering_due.len() || !indexed {
            return Err(InvariantViolation::Dangling(format!(
                "{} recovering agents are due but {} deadlines are indexed",
                due,
                self.recovering_due.len()
            )));
        }
        Ok(())
    }
}
