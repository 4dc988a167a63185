//! Allocation cycles and the offers they produce; offer endings.

use std::collections::BTreeMap;

use cairn_model::{AgentId, FrameworkId, Offer, OfferId, Time};

use super::Master;
use crate::Event;
use crate::allocator::Scope;
use crate::offer::{OfferEvent, OfferRecord, OfferState};

impl Master {
    /// Runs a cycle over every agent (`all`) or over those whose resources
    /// changed since the last cycle, and sends the offers, one event per
    /// framework.
    pub(super) fn run_allocation(&mut self, now: Time, all: bool) {
        let scope = if all {
            Scope::All
        } else {
            Scope::Agents(std::mem::take(&mut self.dirty))
        };
        if all {
            self.dirty.clear();
        }
        self.timers.allocate_at = None;
        self.timers.allocate_all = false;
        self.counters.allocation_cycles += 1;

        let allocations = self.allocator.allocate(now, &scope);
        let mut by_framework: BTreeMap<FrameworkId, Vec<Offer>> = BTreeMap::new();
        for a in allocations {
            let Some(agent) = self.agents.get_mut(&a.agent) else {
                // The allocator only knows agents the master admitted.
                continue;
            };
            self.next_offer += 1;
            let id = OfferId::new(format!("{}-O{}", self.master_id, self.next_offer));
            let offer = Offer {
                id: id.clone(),
                framework_id: a.framework.clone(),
                agent_id: a.agent.clone(),
                hostname: agent.info.hostname.clone(),
                resources: a.resources,
                attributes: agent.info.attributes.clone(),
                role: a.role,
                agent_url: agent.info.url(),
            };
            agent.offered.add(&offer.resources);
            agent.offers.insert(id.clone());
            if let Some(f) = self.frameworks.get_mut(&a.framework) {
                f.offers.insert(id.clone());
            }
            let expires_at = self.config.offer_timeout.map(|t| now + t);
            if let Some(at) = expires_at {
                self.offer_expiry.insert((at, id.clone()));
            }
            self.offers.insert(
                id,
                OfferRecord {
                    offer: offer.clone(),
                    state: OfferState::Outstanding,
                    created_at: now,
                    expires_at,
                },
            );
            self.counters.offers_sent += 1;
            by_framework.entry(a.framework).or_default().push(offer);
        }
        for (fw, offers) in by_framework {
            self.send_framework(&fw, Event::Offers(offers));
        }
    }

    /// Ends an outstanding offer, releasing it from the agent's and the
    /// framework's books. The allocator is left to the caller: an accept
    /// keeps what its tasks use, every other ending recovers it all.
    pub(super) fn remove_offer(&mut self, id: &OfferId, event: OfferEvent) -> Option<OfferRecord> {
        let mut record = self.offers.remove(id)?;
        match record.state.transition(event) {
            Ok(end) => record.state = end,
            Err(_) => return None,
        }
        match record.state {
            OfferState::Accepted => self.counters.offers_accepted += 1,
            OfferState::Declined => self.counters.offers_declined += 1,
            OfferState::Rescinded => self.counters.offers_rescinded += 1,
            OfferState::Expired => self.counters.offers_expired += 1,
            OfferState::Outstanding => {}
        }
        if let Some(at) = record.expires_at {
            self.offer_expiry.remove(&(at, id.clone()));
        }
        let o = &record.offer;
        if let Some(agent) = self.agents.get_mut(&o.agent_id) {
            agent.offered = agent.offered.saturating_sub(&o.resources);
            agent.offers.remove(id);
        }
        if let Some(f) = self.frameworks.get_mut(&o.framework_id) {
            f.offers.remove(id);
        }
        Some(record)
    }

    /// Ends an offer and returns all it held to the pool. With `notify`, the
    /// framework gets a RESCIND event (not needed when its stream is going
    /// away anyway).
    pub(super) fn rescind_offer(
        &mut self,
        now: Time,
        id: &OfferId,
        event: OfferEvent,
        notify: bool,
    ) {
        let Some(record) = self.remove_offer(id, event) else {
            return;
        };
        let o = record.offer;
        self.allocator
            .recover(&o.agent_id, &o.framework_id, &o.role, &o.resources, None);
        if notify {
            self.send_framework(&o.framework_id, Event::Rescind(o.id.clone()));
        }
        if self.agents.contains_key(&o.agent_id) {
            self.allocate_soon(now, Some(&o.agent_id));
        }
    }

    pub(super) fn rescind_agent_offers(&mut self, now: Time, agent: &AgentId) {
        let ids: Vec<OfferId> = self
            .agents
            .get(agent)
            .map(|a| a.offers.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.rescind_offer(now, &id, OfferEvent::Rescind, true);
        }
    }

    /// Rescinds offers held past `--offer-timeout`.
    pub(super) fn expire_offers(&mut self, now: Time) {
        while let Some((at, id)) = self.offer_expiry.first().cloned() {
            if at > now {
                break;
            }
            self.rescind_offer(now, &id, OfferEvent::Timeout, true);
            // `remove_offer` dropped the index entry; make sure of it.
            self.offer_expiry.remove(&(at, id));
        }
    }
}
