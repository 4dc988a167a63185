//! Frameworks: subscription, disconnection, failover timeout, removal.

use std::collections::BTreeSet;

use cairn_model::{AgentId, FrameworkId, FrameworkInfo, Reason, Role, TaskState, TaskStatus, Time};

use super::persist::Pending;
use super::{CompletedFramework, Framework, FrameworkConn, Master, uuid_string};
use crate::offer::OfferEvent;
use crate::registry::RegistryOp;
use crate::{AgentCommand, CallError, ConnId, Event, Observed, Output};

impl Master {
    pub(super) fn subscribe(
        &mut self,
        now: Time,
        conn: ConnId,
        mut info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
        principal: Option<String>,
    ) {
        if let Err(why) = self.authorize_subscription(&mut info, principal.as_deref()) {
            self.counters.subscriptions_refused += 1;
            let id = info.id.clone().unwrap_or_else(|| FrameworkId::new(""));
            self.outputs.push_back(Output::ToFramework {
                conn,
                framework_id: id,
                event: Event::Error(why.clone()),
            });
            self.outputs
                .push_back(Output::CloseFramework { conn, reason: why });
            return;
        }
        let id = match info.id.clone() {
            Some(id) if self.is_removed_framework(&id) => {
                self.outputs.push_back(Output::ToFramework {
                    conn,
                    framework_id: id.clone(),
                    event: Event::Error(format!("Framework {id} has been removed")),
                });
                self.outputs.push_back(Output::CloseFramework {
                    conn,
                    reason: format!("framework {id} has been removed"),
                });
                return;
            }
            Some(id) => id,
            None => {
                self.next_framework += 1;
                FrameworkId::new(format!("{}-{:04}", self.master_id, self.next_framework))
            }
        };
        info.id = Some(id.clone());
        let registered_at = self.frameworks.get(&id).map_or(now, |f| f.registered_at);
        self.subscribing.insert(conn);
        self.persist(
            RegistryOp::AddFramework {
                id,
                info: info.clone(),
                registered_at,
            },
            Pending::Subscribe {
                conn,
                info,
                suppressed_roles,
            },
        );
    }

    /// Whether the caller, authenticated as `principal`, may subscribe with
    /// `info`: the declared principal must be its own (an empty one becomes
    /// it), a known framework keeps its principal, and the ACLs must let it
    /// register with each of its roles.
    fn authorize_subscription(
        &self,
        info: &mut FrameworkInfo,
        principal: Option<&str>,
    ) -> Result<(), String> {
        if let Some(p) = principal {
            if info.principal.is_empty() {
                info.principal = p.to_string();
            } else if info.principal != p {
                return Err(format!(
                    "FrameworkInfo.principal {:?} is not the authenticated principal {p:?}",
                    info.principal
                ));
            }
        }
        if let Some(id) = &info.id
            && let Some(f) = self.frameworks.get(id)
            && f.info.principal != info.principal
        {
            return Err(format!(
                "framework {id} belongs to principal {:?}, not {:?}",
                f.info.principal, info.principal
            ));
        }
        if let Some(acls) = &self.config.acls {
            let default_roles = [Role::default_role()];
            let roles = if info.roles.is_empty() {
                &default_roles[..]
            } else {
                &info.roles[..]
            };
            // Without authentication (no credentials), the declared
            // principal is the one authorized, as in Mesos.
            let who = Some(info.principal.as_str()).filter(|p| !p.is_empty());
            for role in roles {
                acls.register(who, role.as_str())
                    .map_err(|d| d.to_string())?;
            }
        }
        Ok(())
    }

    /// The second half of a subscription, once the registry has it.
    pub(super) fn complete_subscribe(
        &mut self,
        now: Time,
        conn: ConnId,
        info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
    ) {
        let Some(id) = info.id.clone() else {
            return;
        };
        let stream_id = uuid_string(&mut self.rng);

        if self.frameworks.contains_key(&id) {
            self.resubscribe(now, conn, &id, info, stream_id.clone());
        } else {
            // New, or known to an earlier master: either way it starts here.
            self.allocator.add_framework(&id, &info.roles, &[]);
            self.observe(Observed::FrameworkAdded {
                framework_id: id.clone(),
                info: info.clone(),
            });
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    conn: FrameworkConn::Connected {
                        conn,
                        stream_id: stream_id.clone(),
                    },
                    registered_at: now,
                    reregistered_at: None,
                    tasks: Default::default(),
                    unreachable_tasks: Default::default(),
                    completed: Default::default(),
                    offers: Default::default(),
                    executor_agents: Default::default(),
                },
            );
            self.counters.frameworks_subscribed += 1;
        }
        self.framework_conns.insert(conn, id.clone());
        self.allocator.set_framework_active(&id, true);
        // A subscription states the whole of its suppression (as in Mesos):
        // roles it does not list get offers again.
        self.allocator.set_suppressed(&id, &suppressed_roles);
        self.send_framework(
            &id,
            Event::Subscribed {
                framework_id: id.clone(),
                stream_id,
                heartbeat_interval: self.config.framework_heartbeat_interval,
            },
        );
        // Clients detect a live stream from the first heartbeat.
        self.send_framework(&id, Event::Heartbeat);
        self.allocate_soon(now, None);
    }

    /// UPDATE_FRAMEWORK: checked now, applied once the registry has it
    /// (the failover timeout must hold across a failover).
    pub(super) fn update_framework(
        &mut self,
        id: &FrameworkId,
        mut info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
    ) -> Result<(), CallError> {
        if info.id.as_ref().is_some_and(|i| i != id) {
            return Err(CallError::Invalid {
                framework: id.clone(),
                reason: "framework_info.id differs from the caller's framework id".into(),
            });
        }
        info.id = Some(id.clone());
        let Some(framework) = self.frameworks.get(id) else {
            return Err(CallError::UnknownFramework(id.clone()));
        };
        if framework.info.user != info.user {
            return Err(CallError::Invalid {
                framework: id.clone(),
                reason: "a framework's user cannot change".into(),
            });
        }
        let registered_at = framework.registered_at;
        self.persist(
            RegistryOp::AddFramework {
                id: id.clone(),
                info: info.clone(),
                registered_at,
            },
            Pending::UpdateFramework {
                info,
                suppressed_roles,
            },
        );
        Ok(())
    }

    pub(super) fn complete_update_framework(
        &mut self,
        now: Time,
        info: FrameworkInfo,
        suppressed_roles: Vec<Role>,
    ) {
        let Some(id) = info.id.clone() else {
            return;
        };
        let Some(framework) = self.frameworks.get_mut(&id) else {
            return;
        };
        // Outstanding offers were made to the old roles: they go, and the
        // next cycle offers under the new ones.
        let offers: Vec<_> = framework.offers.iter().cloned().collect();
        let roles = info.roles.clone();
        framework.info = info;
        for offer_id in offers {
            self.rescind_offer(now, &offer_id, OfferEvent::Rescind, true);
        }
        self.allocator.update_framework_roles(&id, &roles);
        self.allocator.set_suppressed(&id, &suppressed_roles);
        self.allocate_soon(now, None);
    }

    fn resubscribe(
        &mut self,
        now: Time,
        conn: ConnId,
        id: &FrameworkId,
        info: FrameworkInfo,
        stream_id: String,
    ) {
        let Some(framework) = self.frameworks.get(id) else {
            return;
        };
        let old = framework.conn.clone();
        match old {
            FrameworkConn::Connected { conn: old_conn, .. } => {
                self.framework_conns.remove(&old_conn);
                self.outputs.push_back(Output::CloseFramework {
                    conn: old_conn,
                    reason: "replaced by a newer subscription of the same framework".into(),
                });
            }
            FrameworkConn::Disconnected { deadline, .. } => {
                self.failover_deadlines.remove(&(deadline, id.clone()));
            }
        }
        // Offers belong to a stream; the new stream gets fresh ones.
        let offers: Vec<_> = framework.offers.iter().cloned().collect();
        for offer_id in offers {
            self.rescind_offer(now, &offer_id, OfferEvent::Rescind, false);
        }
        let roles = info.roles.clone();
        if let Some(f) = self.frameworks.get_mut(id) {
            f.info = info;
            f.conn = FrameworkConn::Connected { conn, stream_id };
            f.reregistered_at = Some(now);
        }
        self.allocator.update_framework_roles(id, &roles);
        self.counters.frameworks_resubscribed += 1;
        if let Some(f) = self.frameworks.get(id) {
            let info = f.info.clone();
            self.observe(Observed::FrameworkUpdated {
                framework_id: id.clone(),
                info,
            });
        }
    }

    pub(super) fn framework_disconnected(&mut self, now: Time, conn: ConnId) {
        let Some(id) = self.framework_conns.remove(&conn) else {
            return;
        };
        let Some(framework) = self.frameworks.get(&id) else {
            return;
        };
        if framework.conn() != Some(conn) {
            return;
        }
        let timeout = framework.info.failover_timeout;
        let offers: Vec<_> = framework.offers.iter().cloned().collect();
        for offer_id in offers {
            self.rescind_offer(now, &offer_id, OfferEvent::Rescind, false);
        }
        self.allocator.set_framework_active(&id, false);
        if timeout.is_zero() {
            self.remove_framework(now, &id, "disconnected with a failover timeout of 0");
            return;
        }
        // Its deadline holds across a master failover: the registry keeps
        // when it went.
        self.persist(
            RegistryOp::DisconnectFramework {
                id: id.clone(),
                since: now,
            },
            Pending::Nothing,
        );
        let deadline = now + timeout;
        if let Some(f) = self.frameworks.get_mut(&id) {
            f.conn = FrameworkConn::Disconnected {
                since: now,
                deadline,
            };
        }
        self.failover_deadlines.insert((deadline, id));
    }

    pub(super) fn expire_failovers(&mut self, now: Time) {
        while let Some((deadline, id)) = self.failover_deadlines.first().cloned() {
            if deadline > now {
                break;
            }
            self.failover_deadlines.pop_first();
            let still_away = self.frameworks.get(&id).is_some_and(|f| {
                matches!(f.conn, FrameworkConn::Disconnected { deadline: d, .. } if d == deadline)
            });
            if still_away {
                self.remove_framework(now, &id, "failover timeout elapsed");
            }
        }
    }

    /// Removes a framework once the registry has forgotten it (and
    /// remembers its id as removed).
    pub(super) fn remove_framework(&mut self, now: Time, id: &FrameworkId, why: &str) {
        if !self.frameworks.contains_key(id) || !self.removing.insert(id.clone()) {
            return;
        }
        // At once: no more offers or events for it, and what it was offered
        // goes back to the pool. Its tasks end once the registry agrees.
        if let Some(framework) = self.frameworks.get(id) {
            let offers: Vec<_> = framework.offers.iter().cloned().collect();
            if let Some(conn) = framework.conn() {
                self.framework_conns.remove(&conn);
                self.outputs.push_back(Output::CloseFramework {
                    conn,
                    reason: format!("framework removed: {why}"),
                });
            }
            for offer_id in offers {
                self.rescind_offer(now, &offer_id, OfferEvent::Rescind, false);
            }
        }
        self.allocator.set_framework_active(id, false);
        self.persist(
            RegistryOp::RemoveFramework {
                id: id.clone(),
                at: now,
            },
            Pending::RemoveFramework {
                id: id.clone(),
                why: why.to_string(),
            },
        );
    }

    /// Removes a framework: its stream closes, its offers end, its tasks are
    /// killed on their agents and recorded KILLED, and it is remembered as
    /// completed (so its id cannot subscribe again).
    pub(super) fn finish_remove_framework(&mut self, now: Time, id: &FrameworkId, why: &str) {
        let Some(framework) = self.frameworks.get(id) else {
            return;
        };
        if let Some(conn) = framework.conn() {
            self.framework_conns.remove(&conn);
            self.outputs.push_back(Output::CloseFramework {
                conn,
                reason: format!("framework removed: {why}"),
            });
        }
        if let FrameworkConn::Disconnected { deadline, .. } = framework.conn {
            self.failover_deadlines.remove(&(deadline, id.clone()));
        }
        let offers: Vec<_> = framework.offers.iter().cloned().collect();
        let task_ids: Vec<_> = framework.tasks.keys().cloned().collect();
        let executor_agents = framework.executor_agents.clone();
        for offer_id in offers {
            self.rescind_offer(now, &offer_id, OfferEvent::Rescind, false);
        }
        // Tell each agent with its tasks or executors once; the agent
        // kills them all.
        let mut agents: BTreeSet<AgentId> = executor_agents;
        for task_id in task_ids {
            let Some(task) = self.frameworks.get(id).and_then(|f| f.tasks.get(&task_id)) else {
                continue;
            };
            agents.insert(task.info.agent_id.clone());
            if !task.state.is_terminal() {
                let status = TaskStatus::from_master(
                    task_id.clone(),
                    TaskState::Killed,
                    Reason::FrameworkRemoved,
                    format!("Framework {id} removed: {why}"),
                    Some(task.info.agent_id.clone()),
                    now,
                );
                self.apply_to_task(now, id, &task_id, &status);
            }
            self.complete_task(id, &task_id);
        }
        for agent_id in agents {
            self.send_agent(
                &agent_id,
                AgentCommand::ShutdownFramework {
                    framework_id: id.clone(),
                },
            );
        }
        self.allocator.remove_framework(id);
        let Some(mut framework) = self.frameworks.remove(id) else {
            return;
        };
        // Unreachable tasks hold no resources; they end with the framework.
        for (_, mut task) in std::mem::take(&mut framework.unreachable_tasks) {
            let status = TaskStatus::from_master(
                task.info.task_id.clone(),
                TaskState::Killed,
                Reason::FrameworkRemoved,
                format!("Framework {id} removed: {why}"),
                Some(task.info.agent_id.clone()),
                now,
            );
            let _ = task.apply(&status, self.config.max_statuses_per_task);
            framework.completed.push_back(task);
        }
        self.counters.frameworks_removed += 1;
        self.observe(Observed::FrameworkRemoved {
            framework_id: id.clone(),
        });
        self.completed_frameworks.push_back(CompletedFramework {
            id: id.clone(),
            info: framework.info,
            registered_at: framework.registered_at,
            removed_at: now,
            completed: framework.completed,
        });
        self.trim_completed_frameworks();
    }
}
