//! Property tests: random sequences of agent and framework actions never
//! over-commit an agent, never offer a resource twice, and keep the master's
//! books consistent. A failing case prints its operation sequence; the core is
//! seeded, so it replays exactly.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cairn_master_core::{Call, Event, Input, LaunchRequest, MasterConfig, Output, ReportedTask};
use cairn_model::{FrameworkInfo, Offer, OfferId, Resources, TaskId, TaskInfo, TaskState};
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    AddAgent(u8),
    Subscribe(bool),
    Advance(u8),
    Accept {
        fw: u8,
        offer: u8,
        tasks: u8,
        size: u8,
        refuse: u8,
    },
    AcceptForeign {
        fw: u8,
        offer: u8,
    },
    Decline {
        fw: u8,
        offer: u8,
        refuse: u8,
    },
    Report {
        task: u8,
        state: u8,
    },
    Ack {
        task: u8,
    },
    Kill {
        task: u8,
    },
    SilenceAgent(u8),
    ReconnectAgent {
        agent: u8,
        keep_tasks: bool,
    },
    DisconnectFramework(u8),
    Resubscribe(u8),
    Teardown(u8),
    Suppress(u8),
    Revive(u8),
    /// The registry stops confirming writes for a while.
    HoldPersists,
    /// The registry confirms every write in flight.
    FlushPersists,
    /// The leader dies (unconfirmed writes with it); a new one recovers
    /// from the registry; agents and frameworks come back to it.
    FailOver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<u8>().prop_map(Op::AddAgent),
        1 => any::<bool>().prop_map(Op::Subscribe),
        4 => (0u8..8).prop_map(Op::Advance),
        6 => (any::<u8>(), any::<u8>(), 0u8..4, any::<u8>(), 0u8..3)
            .prop_map(|(fw, offer, tasks, size, refuse)| Op::Accept { fw, offer, tasks, size, refuse }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(fw, offer)| Op::AcceptForeign { fw, offer }),
        2 => (any::<u8>(), any::<u8>(), 0u8..3).prop_map(|(fw, offer, refuse)| Op::Decline { fw, offer, refuse }),
        5 => (any::<u8>(), 0u8..4).prop_map(|(task, state)| Op::Report { task, state }),
        3 => any::<u8>().prop_map(|task| Op::Ack { task }),
        1 => any::<u8>().prop_map(|task| Op::Kill { task }),
        1 => any::<u8>().prop_map(Op::SilenceAgent),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(agent, keep_tasks)| Op::ReconnectAgent { agent, keep_tasks }),
        1 => any::<u8>().prop_map(Op::DisconnectFramework),
        1 => any::<u8>().prop_map(Op::Resubscribe),
        1 => any::<u8>().prop_map(Op::Teardown),
        1 => any::<u8>().prop_map(Op::Suppress),
        1 => any::<u8>().prop_map(Op::Revive),
        1 => Just(Op::HoldPersists),
        2 => Just(Op::FlushPersists),
        1 => Just(Op::FailOver),
    ]
}

const SHAPES: [&str; 4] = [
    "cpus:2;mem:2048;ports:[31000-31009]",
    "cpus:4;mem:1024;disk:100",
    "cpus:1;mem:4096;ports:[1-3,7-9]",
    "cpus:8;mem:8192",
];

struct World {
    sim: Sim,
    agents: Vec<(Ag, bool)>,             // (agent, silent)
    fws: Vec<(Fw, FrameworkInfo, bool)>, // (framework, info, connected)
    /// Offers as the frameworks have seen them and not yet used up.
    seen: BTreeMap<OfferId, Offer>,
    /// Tasks launched: (framework index, task, last uuid reported).
    tasks: Vec<(usize, TaskInfo, Option<cairn_model::StatusUuid>)>,
    next_task: u64,
    /// Registry writes not yet confirmed (while held).
    held: Vec<Output>,
    config: MasterConfig,
}

impl World {
    fn new() -> Self {
        let config = MasterConfig {
            agent_ping_timeout: secs(10),
            offer_timeout: Some(secs(20)),
            ..MasterConfig::default()
        };
        World {
            sim: Sim::new(config.clone()),
            held: Vec::new(),
            config,
            agents: Vec::new(),
            fws: Vec::new(),
            seen: BTreeMap::new(),
            tasks: Vec::new(),
            next_task: 0,
        }
    }

    /// Reads events the frameworks got: offers in, rescinds out.
    fn absorb(&mut self) {
        let pending = std::mem::take(&mut self.sim.pending);
        for o in pending {
            match o {
                Output::Persist { .. } => {
                    // Held: stays queued until flushed (or lost in a failover).
                    self.held.push(o);
                }
                Output::ToFramework {
                    event: Event::Offers(offers),
                    ..
                } => {
                    for offer in offers {
                        assert!(
                            self.seen.insert(offer.id.clone(), offer).is_none(),
                            "offer id reused"
                        );
                    }
                }
                Output::ToFramework {
                    event: Event::Rescind(id),
                    ..
                } => {
                    self.seen.remove(&id);
                }
                _ => {}
            }
        }
    }

    fn drop_offers_of(&mut self, fw: usize) {
        let id = self.fws[fw].0.id.clone();
        self.seen.retain(|_, o| o.framework_id != id);
    }

    fn offers_of(&self, fw: usize) -> Vec<Offer> {
        let id = &self.fws[fw].0.id;
        self.seen
            .values()
            .filter(|o| &o.framework_id == id)
            .cloned()
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        // The harness's helpers expect registrations and subscriptions to
        // complete at once: held writes are flushed before them.
        if matches!(
            op,
            Op::AddAgent(_) | Op::Subscribe(_) | Op::ReconnectAgent { .. } | Op::Resubscribe(_)
        ) {
            self.flush();
        }
        let nf = self.fws.len();
        let na = self.agents.len();
        match *op {
            Op::AddAgent(k) => {
                let ag = self.sim.agent(SHAPES[k as usize % SHAPES.len()]);
                self.agents.push((ag, false));
            }
            Op::Subscribe(partition_aware) => {
                let mut info = FrameworkInfo::new(format!("f{nf}"), "nobody");
                info.failover_timeout = secs(15);
                if partition_aware {
                    info.capabilities
                        .insert(cairn_model::Capability::PartitionAware);
                }
                let fw = self.sim.framework_with(info.clone());
                self.fws.push((fw, info, true));
            }
            Op::Advance(s) => {
                for _ in 0..s {
                    self.sim.advance(secs(1));
                    for (ag, silent) in &self.agents {
                        if !*silent {
                            let _ = self.sim.input(Input::AgentHeartbeat { conn: ag.conn });
                        }
                    }
                    self.absorb();
                }
            }
            Op::Accept {
                fw,
                offer,
                tasks,
                size,
                refuse,
            } if nf > 0 => {
                let fw = fw as usize % nf;
                let offers = self.offers_of(fw);
                if offers.is_empty() {
                    return;
                }
                let o = offers[offer as usize % offers.len()].clone();
                let mut launches = Vec::new();
                for i in 0..tasks {
                    self.next_task += 1;
                    // Sizes vary so that some fit and some do not.
                    let cpus =
                        (o.resources.cpus().as_f64() * f64::from(size % 7 + 1) / 4.0).max(0.01);
                    let mut r = Resources::cpus_mem(cpus, 64.0).unwrap();
                    if i == 0
                        && let Some(p) = o.resources.range(&cairn_model::ResourceName::Ports)
                    {
                        let first = p.ranges()[0].0;
                        r = r.with_ranges(
                            cairn_model::ResourceName::Ports,
                            cairn_model::RangeSet::from_ranges([(first, first)]).unwrap(),
                        );
                    }
                    let t = TaskInfo {
                        resources: r,
                        ..task(&format!("t{}", self.next_task), &o.agent_id, "cpus:1")
                    };
                    self.tasks.push((fw, t.clone(), None));
                    launches.push(LaunchRequest::Task(t));
                }
                let (f, ..) = &self.fws[fw];
                let call = Call::Accept {
                    offer_ids: vec![o.id.clone()],
                    launches,
                    refuse: secs(u64::from(refuse) * 3),
                };
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id,
                    stream_id,
                    call,
                });
                self.seen.remove(&o.id);
            }
            Op::AcceptForeign { fw, offer } if nf > 0 && !self.seen.is_empty() => {
                // Try to use an offer that may belong to another framework.
                let fw = fw as usize % nf;
                let all: Vec<_> = self.seen.values().cloned().collect();
                let o = all[offer as usize % all.len()].clone();
                let t = task(&format!("x{offer}"), &o.agent_id, "cpus:0.01;mem:1");
                let (f, ..) = &self.fws[fw];
                let call = Call::Accept {
                    offer_ids: vec![o.id.clone()],
                    launches: vec![LaunchRequest::Task(t)],
                    refuse: secs(1),
                };
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id.clone(),
                    stream_id,
                    call,
                });
                if o.framework_id == id {
                    self.seen.remove(&o.id);
                }
            }
            Op::Decline { fw, offer, refuse } if nf > 0 => {
                let fw = fw as usize % nf;
                let offers = self.offers_of(fw);
                if offers.is_empty() {
                    return;
                }
                let o = offers[offer as usize % offers.len()].clone();
                let (f, ..) = &self.fws[fw];
                let call = Call::Decline {
                    offer_ids: vec![o.id.clone()],
                    refuse: secs(u64::from(refuse) * 5),
                };
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id,
                    stream_id,
                    call,
                });
                self.seen.remove(&o.id);
            }
            Op::Report { task, state } if !self.tasks.is_empty() => {
                let i = task as usize % self.tasks.len();
                let (fw, t, _) = self.tasks[i].clone();
                let Some((ag, _)) = self.agents.iter().find(|(a, _)| a.id == t.agent_id) else {
                    return;
                };
                let ag = Ag {
                    id: ag.id.clone(),
                    conn: ag.conn,
                };
                let state = [
                    TaskState::Starting,
                    TaskState::Running,
                    TaskState::Finished,
                    TaskState::Failed,
                ][state as usize];
                let fw_id = self.fws[fw].0.id.clone();
                let uuid = self.sim.report(&ag, &fw_id, t.task_id.as_str(), state);
                self.tasks[i].2 = Some(uuid);
            }
            Op::Ack { task } if !self.tasks.is_empty() => {
                let i = task as usize % self.tasks.len();
                let (fw, t, uuid) = self.tasks[i].clone();
                if let Some(uuid) = uuid {
                    let f = &self.fws[fw].0;
                    let call = Call::Acknowledge {
                        agent_id: t.agent_id.clone(),
                        task_id: t.task_id.clone(),
                        uuid,
                    };
                    let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                    let _ = self.sim.input(Input::Call {
                        framework_id: id,
                        stream_id,
                        call,
                    });
                }
            }
            Op::Kill { task } if !self.tasks.is_empty() => {
                let i = task as usize % self.tasks.len();
                let (fw, t, _) = self.tasks[i].clone();
                let f = &self.fws[fw].0;
                let call = Call::Kill {
                    task_id: t.task_id.clone(),
                    agent_id: None,
                    kill_policy: None,
                };
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id,
                    stream_id,
                    call,
                });
            }
            Op::SilenceAgent(k) if na > 0 => {
                self.agents[k as usize % na].1 = true;
            }
            Op::ReconnectAgent { agent, keep_tasks } if na > 0 => {
                let k = agent as usize % na;
                let old = Ag {
                    id: self.agents[k].0.id.clone(),
                    conn: self.agents[k].0.conn,
                };
                let _ = self.sim.input(Input::AgentDisconnected { conn: old.conn });
                self.absorb();
                // Report the tasks the master last knew on this agent (as a
                // recovered agent would), or none (as after a wipe).
                let snap = self.sim.master.snapshot();
                let reported: Vec<ReportedTask> = if keep_tasks {
                    snap.frameworks
                        .iter()
                        .flat_map(|f| f.tasks.iter().chain(f.unreachable_tasks.iter()))
                        .filter(|t| t.agent_id == old.id && !t.state.is_terminal())
                        .map(|t| ReportedTask {
                            framework_id: t.framework_id.clone(),
                            task: TaskInfo {
                                resources: t.resources.clone(),
                                ..task(t.id.as_str(), &old.id, "cpus:1")
                            },
                            state: if t.state == TaskState::Unreachable {
                                TaskState::Running
                            } else {
                                t.state
                            },
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let shape = SHAPES[agent as usize % SHAPES.len()];
                let new = self.sim.reregister(&old, shape, reported);
                self.agents[k] = (new, false);
            }
            Op::DisconnectFramework(k) if nf > 0 => {
                let k = k as usize % nf;
                if self.fws[k].2 {
                    let conn = self.fws[k].0.conn;
                    let _ = self.sim.input(Input::FrameworkDisconnected { conn });
                    self.fws[k].2 = false;
                    self.drop_offers_of(k);
                }
            }
            Op::Resubscribe(k) if nf > 0 => {
                let k = k as usize % nf;
                let mut info = self.fws[k].1.clone();
                info.id = Some(self.fws[k].0.id.clone());
                let conn = self.sim.conn();
                let _ = self.sim.input(Input::Subscribe {
                    conn,
                    info,
                    suppressed_roles: vec![],
                    principal: None,
                });
                self.drop_offers_of(k);
                let events = self.sim.take_events(conn);
                let sub = events.iter().find_map(|e| match e {
                    Event::Subscribed { stream_id, .. } => Some(stream_id.clone()),
                    _ => None,
                });
                if let Some(stream_id) = sub {
                    self.fws[k].0.conn = conn;
                    self.fws[k].0.stream_id = stream_id;
                    self.fws[k].2 = true;
                }
                for e in events {
                    if let Event::Offers(os) = e {
                        for o in os {
                            self.seen.insert(o.id.clone(), o);
                        }
                    }
                }
            }
            Op::Teardown(k) if nf > 0 => {
                let k = k as usize % nf;
                let f = &self.fws[k].0;
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id,
                    stream_id,
                    call: Call::Teardown,
                });
                self.drop_offers_of(k);
            }
            Op::Suppress(k) if nf > 0 => {
                let f = &self.fws[k as usize % nf].0;
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id,
                    stream_id,
                    call: Call::Suppress { roles: vec![] },
                });
            }
            Op::Revive(k) if nf > 0 => {
                let f = &self.fws[k as usize % nf].0;
                let (id, stream_id) = (f.id.clone(), f.stream_id.clone());
                let _ = self.sim.input(Input::Call {
                    framework_id: id,
                    stream_id,
                    call: Call::Revive { roles: vec![] },
                });
            }
            Op::HoldPersists => self.sim.auto_persist = false,
            Op::FlushPersists => self.flush(),
            Op::FailOver => self.fail_over(),
            _ => {}
        }
        self.absorb();
    }

    fn flush(&mut self) {
        self.sim.auto_persist = true;
        for o in std::mem::take(&mut self.held) {
            if let Output::Persist { id, op } = o {
                self.sim.registry.apply(&op);
                let _ = self.sim.input(Input::Persisted { id });
            }
        }
        self.absorb();
    }

    fn fail_over(&mut self) {
        // What each agent runs, as it would report it.
        let snap = self.sim.master.snapshot();
        self.held.clear();
        self.sim.auto_persist = true;
        self.sim.fail_over(self.config.clone());
        self.seen.clear();
        for k in 0..self.agents.len() {
            if self.agents[k].1 {
                continue;
            }
            let id = self.agents[k].0.id.clone();
            let reported: Vec<ReportedTask> = snap
                .frameworks
                .iter()
                .flat_map(|f| f.tasks.iter())
                .filter(|t| t.agent_id == id && !t.state.is_terminal())
                .map(|t| ReportedTask {
                    framework_id: t.framework_id.clone(),
                    task: TaskInfo {
                        resources: t.resources.clone(),
                        ..task(t.id.as_str(), &id, "cpus:1")
                    },
                    state: if t.state == TaskState::Staging {
                        TaskState::Running
                    } else {
                        t.state
                    },
                })
                .collect();
            let shape = snap
                .agents
                .iter()
                .find(|a| a.id == id)
                .map(|a| a.info.resources.to_string())
                .unwrap_or_else(|| SHAPES[0].to_string());
            let old = Ag {
                id: id.clone(),
                conn: self.agents[k].0.conn,
            };
            let new = self.sim.reregister(&old, &shape, reported);
            self.agents[k] = (new, false);
        }
        self.absorb();
        for k in 0..self.fws.len() {
            if !self.fws[k].2 {
                continue;
            }
            let mut info = self.fws[k].1.clone();
            info.id = Some(self.fws[k].0.id.clone());
            let conn = self.sim.conn();
            let _ = self.sim.input(Input::Subscribe {
                conn,
                info,
                suppressed_roles: vec![],
                principal: None,
            });
            let events = self.sim.take_events(conn);
            for e in events {
                match e {
                    Event::Subscribed { stream_id, .. } => {
                        self.fws[k].0.conn = conn;
                        self.fws[k].0.stream_id = stream_id;
                    }
                    Event::Offers(os) => {
                        for o in os {
                            self.seen.insert(o.id.clone(), o);
                        }
                    }
                    _ => {}
                }
            }
        }
        self.absorb();
    }

    /// Black-box: the offers frameworks hold are exactly the master's
    /// outstanding offers, and on each agent they plus the live tasks fit the
    /// total without sharing a port.
    fn check(&self) -> Result<(), String> {
        self.sim
            .master
            .check_invariants()
            .map_err(|e| e.to_string())?;
        let snap = self.sim.master.snapshot();
        let outstanding: BTreeSet<OfferId> = snap
            .frameworks
            .iter()
            .flat_map(|f| f.offers.iter().map(|o| o.id.clone()))
            .collect();
        let seen: BTreeSet<OfferId> = self.seen.keys().cloned().collect();
        if outstanding != seen {
            return Err(format!(
                "frameworks hold {seen:?}, master has {outstanding:?}"
            ));
        }
        for agent in &snap.agents {
            let mut sum = agent.used.clone();
            let mut ports = agent
                .used
                .range(&cairn_model::ResourceName::Ports)
                .map_or(0, |r| r.count());
            for o in self.seen.values().filter(|o| o.agent_id == agent.id) {
                sum.add(&o.resources);
                ports += o
                    .resources
                    .range(&cairn_model::ResourceName::Ports)
                    .map_or(0, |r| r.count());
            }
            if !agent.info.resources.contains(&sum) {
                return Err(format!(
                    "agent {} over-committed: {sum} > {}",
                    agent.id, agent.info.resources
                ));
            }
            let union = sum
                .range(&cairn_model::ResourceName::Ports)
                .map_or(0, |r| r.count());
            if ports != union {
                return Err(format!(
                    "agent {}: a port is offered or used twice",
                    agent.id
                ));
            }
        }
        Ok(())
    }
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=5000 for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_histories_never_overcommit_or_offer_twice(ops in proptest::collection::vec(op(), 1..120)) {
        let mut w = World::new();
        for (i, op) in ops.iter().enumerate() {
            w.apply(op);
            if let Err(e) = w.check() {
                prop_assert!(false, "after op {i} ({op:?}): {e}");
            }
        }
        // Task ids stay unique per framework among live tasks.
        let snap = w.sim.master.snapshot();
        for f in &snap.frameworks {
            let ids: BTreeSet<&TaskId> = f.tasks.iter().map(|t| &t.id).collect();
            prop_assert_eq!(ids.len(), f.tasks.len());
        }
    }
}
