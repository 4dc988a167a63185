//! Changes that wait for the registry, and recovery from it after a
//! failover.
//!
//! Each registry-backed change is split in two: the handler emits
//! `Output::Persist` and parks a [`Pending`] continuation; `Input::Persisted`
//! runs it. A continuation re-checks what it finds, since other inputs may
//! have arrived while the write was in flight.

use cairn_model::{AgentId, AgentInfo, FrameworkId, FrameworkInfo, Role, Time};

use super::{CompletedFramework, Master};
use crate::registry::{PersistId, RegistryOp, RegistryState};
use crate::{ConnId, Output, ReportedTask};

/// What to do once a registry write is confirmed.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Admit an agent (new, returning from unreachable, or unknown here).
    Admit {
        conn: ConnId,
        id: AgentId,
        info: AgentInfo,
        tasks: Vec<ReportedTask>,
        frameworks: Vec<FrameworkInfo>,
    },
    /// Mark an agent unreachable.
    Unreachable {
        id: AgentId,
    },
    /// Finish a framework's subscription.
    Subscribe {
        conn: ConnId,
        info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
    },
    RemoveFramework {
        id: FrameworkId,
        why: String,
    },
    /// Apply a framework's new FrameworkInfo.
    UpdateFramework {
        info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
    },
    /// The change already took effect (or is only bookkeeping).
    Nothing,
}

/// An agent the registry admitted that has not re-registered with this
/// master (after a failover).
#[derive(Clone, Debug)]
pub(crate) struct RecoveringAgent {
    pub info: AgentInfo,
    pub deadline: Time,
}

impl Master {
    /// Emits a registry write; `then` runs once it is confirmed.
    pub(super) fn persist(&mut self, op: RegistryOp, then: Pending) -> PersistId {
        self.next_persist += 1;
        let id = PersistId(self.next_persist);
        self.pending.insert(id, then);
        self.outputs.push_back(Output::Persist { id, op });
        id
    }

    pub(super) fn persisted(&mut self, now: Time, id: PersistId) {
        let Some(then) = self.pending.remove(&id) else {
            return;
        };
        match then {
            Pending::Admit {
                conn,
                id,
                info,
                tasks,
                frameworks,
            } => {
                self.registering.remove(&conn);
                let live = !self.cancelled_conns.remove(&conn);
                self.unreachable.remove(&id);
                if self.agents.contains_key(&id) {
                    // Admitted meanwhile through another session.
                    if live {
                        self.reregister_agent(now, conn, id, info, tasks, frameworks);
                    }
                } else {
                    self.admit_agent(now, live.then_some(conn), id, info, tasks, frameworks);
                }
            }
            Pending::Unreachable { id } => {
                self.unreachable_pending.remove(&id);
                if let Some(recovering) = self.stop_recovering(&id) {
                    self.remember_unreachable(now, id, recovering.info, now);
                } else if self.agents.contains_key(&id) {
                    self.mark_unreachable(now, &id);
                }
            }
            Pending::Subscribe {
                conn,
                info,
                suppressed_roles,
            } => {
                self.subscribing.remove(&conn);
                let live = !self.cancelled_conns.remove(&conn);
                self.complete_subscribe(now, conn, info, suppressed_roles);
                if !live {
                    self.framework_disconnected(now, conn);
                }
            }
            Pending::RemoveFramework { id, why } => {
                self.removing.remove(&id);
                self.finish_remove_framework(now, &id, &why);
            }
            Pending::UpdateFramework {
                info,
                suppressed_roles,
            } => self.complete_update_framework(now, info, suppressed_roles),
            Pending::Nothing => {}
        }
    }

    /// Starts over from the registry of an earlier leader. Admitted agents
    /// have until the re-register timeout to come back; frameworks keep
    /// their failover deadlines (a framework that was disconnected keeps the
    /// deadline it had, one that was connected gets its full timeout, but at
    /// least the recovery grace).
    pub fn recover(&mut self, now: Time, state: RegistryState) {
        let deadline = now + self.config.agent_reregister_timeout;
        for (id, a) in state.agents {
            match a.unreachable_since {
                Some(since) => {
                    self.unreachable.insert(
                        id,
                        super::UnreachableAgent {
                            info: a.info,
                            since,
                        },
                    );
                }
                None => {
                    self.recovering_due.insert((deadline, id.clone()));
                    self.recovering.insert(
                        id,
                        RecoveringAgent {
                            info: a.info,
                            deadline,
                        },
                    );
                }
            }
        }
        for (id, f) in state.frameworks {
            let grace = f
                .info
                .failover_timeout
                .max(self.config.framework_recovery_grace);
            let deadline = match f.disconnected_since {
                Some(since) => since + f.info.failover_timeout,
                None => now + grace,
            };
            self.recover_framework_until(now, id, f.info, f.registered_at, deadline);
        }
        for (id, at) in state.removed_frameworks {
            let mut info = FrameworkInfo::new("(removed)", "");
            info.id = Some(id.clone());
            self.completed_frameworks.push_back(CompletedFramework {
                id,
                info,
                registered_at: at,
                removed_at: at,
                completed: Default::default(),
            });
        }
        self.counters.recovered_agents = self.recovering.len() as u64;
    }

    /// Whether agents admitted by an earlier leader are still expected.
    pub fn is_recovering(&self) -> bool {
        !self.recovering.is_empty()
    }

    /// Agents silent (or not back after a failover) past their deadline are
    /// queued for marking unreachable, at most `agent_removal_rate` a
    /// period; the queue is then drained as the rate allows.
    pub(super) fn request_unreachable(&mut self, now: Time, id: AgentId) {
        if self.unreachable_pending.contains(&id) || self.removal_queue.contains(&id) {
            return;
        }
        self.removal_queue.push_back(id);
        self.drain_removals(now);
    }

    pub(super) fn drain_removals(&mut self, now: Time) {
        while let Some(id) = self.removal_queue.front().cloned() {
            if let Some((count, per)) = self.config.agent_removal_rate {
                while self
                    .recent_removals
                    .front()
                    .is_some_and(|t| now.saturating_since(*t) >= per)
                {
                    self.recent_removals.pop_front();
                }
                if self.recent_removals.len() >= count as usize {
                    self.counters.agent_removals_delayed += 1;
                    return;
                }
            }
            self.removal_queue.pop_front();
            self.recent_removals.push_back(now);
            self.unreachable_pending.insert(id.clone());
            self.persist(
                RegistryOp::MarkUnreachable {
                    id: id.clone(),
                    since: now,
                },
                Pending::Unreachable { id },
            );
        }
    }

    /// When the removal queue can next make progress.
    pub(super) fn next_removal(&self) -> Option<Time> {
        if self.removal_queue.is_empty() {
            return None;
        }
        let (_, per) = self.config.agent_removal_rate?;
        self.recent_removals.front().map(|t| *t + per)
    }

    /// Recovering agents whose re-register deadline passed.
    pub(super) fn expire_recovering(&mut self, now: Time) {
        let mut late = Vec::new();
        while let Some((at, _)) = self.recovering_due.first()
            && *at <= now
        {
            if let Some((_, id)) = self.recovering_due.pop_first() {
                late.push(id);
            }
        }
        for id in late {
            // Queued now; the removal rate decides when.
            if let Some(r) = self.recovering.get_mut(&id) {
                r.deadline = Time::MAX;
            }
            self.request_unreachable(now, id);
        }
    }

    pub(super) fn next_recovering_deadline(&self) -> Option<Time> {
        self.recovering_due.first().map(|(at, _)| *at)
    }

    /// An agent no longer expected (it came back, or it is being marked
    /// unreachable): out of `recovering` and its deadline index.
    pub(super) fn stop_recovering(&mut self, id: &AgentId) -> Option<RecoveringAgent> {
        let r = self.recovering.remove(id)?;
        self.recovering_due.remove(&(r.deadline, id.clone()));
        Some(r)
    }

    /// Records an agent as unreachable (bounded: the oldest are forgotten,
    /// in the registry too).
    pub(super) fn remember_unreachable(
        &mut self,
        _now: Time,
        id: AgentId,
        info: AgentInfo,
        since: Time,
    ) {
        self.unreachable
            .insert(id, super::UnreachableAgent { info, since });
        while self.unreachable.len() > self.config.max_unreachable_agents {
            let oldest = self
                .unreachable
                .iter()
                .min_by_key(|(_, u)| u.since)
                .map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            self.unreachable.remove(&k);
            self.persist(RegistryOp::RemoveAgent { id: k }, Pending::Nothing);
        }
    }

    /// Bounds the removed frameworks kept (and their registry entries).
    pub(super) fn trim_completed_frameworks(&mut self) {
        while self.completed_frameworks.len() > self.config.max_completed_frameworks {
            if let Some(old) = self.completed_frameworks.pop_front() {
                self.persist(RegistryOp::ForgetFramework { id: old.id }, Pending::Nothing);
            }
        }
    }
}
