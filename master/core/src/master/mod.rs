//! The registries and the input dispatch. Handlers live in the sibling files,
//! one concern each: `agents`, `frameworks`, `calls`, `status`, `allocation`.

mod agents;
mod allocation;
mod calls;
mod frameworks;
mod invariants;
mod persist;
mod status;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use cairn_model::{
    AgentId, AgentInfo, ExecutorUsage, FrameworkId, FrameworkInfo, OfferId, Resources, TaskId,
    TaskState, TaskStatus, Time,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::allocator::{Allocator, AllocatorConfig};
use crate::offer::OfferRecord;
use crate::registry::PersistId;
use crate::task::Task;
use crate::view::Counters;
use crate::{AgentCommand, CallError, ConnId, Event, Input, MasterConfig, Observed, Output};

/// An admitted agent.
#[derive(Debug)]
pub(crate) struct Agent {
    pub id: AgentId,
    pub info: AgentInfo,
    /// The current session; `None` while the agent is disconnected (it has
    /// until the ping timeout to come back).
    pub conn: Option<ConnId>,
    pub last_seen: Time,
    pub registered_at: Time,
    /// Tasks on this agent the master still tracks (live, or terminal but not
    /// yet acknowledged).
    pub tasks: BTreeSet<(FrameworkId, TaskId)>,
    pub offers: BTreeSet<OfferId>,
    /// Resources of the live tasks.
    pub used: Resources,
    /// Resources of the outstanding offers.
    pub offered: Resources,
    /// What its containers used, as last reported.
    pub usage: Vec<ExecutorUsage>,
}

#[derive(Debug)]
pub(crate) struct UnreachableAgent {
    pub info: AgentInfo,
    pub since: Time,
}

#[derive(Debug, Clone)]
pub(crate) enum FrameworkConn {
    Connected {
        conn: ConnId,
        stream_id: String,
    },
    /// Its tasks are kept until `deadline` (disconnect time + failover timeout).
    Disconnected {
        since: Time,
        deadline: Time,
    },
}

#[derive(Debug)]
pub(crate) struct Framework {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
    pub conn: FrameworkConn,
    pub registered_at: Time,
    pub reregistered_at: Option<Time>,
    /// Live tasks, and terminal ones whose update awaits acknowledgement.
    pub tasks: BTreeMap<TaskId, Task>,
    /// Tasks on unreachable agents (partition-aware frameworks only).
    pub unreachable_tasks: BTreeMap<TaskId, Task>,
    /// Bounded, oldest first.
    pub completed: VecDeque<Task>,
    pub offers: BTreeSet<OfferId>,
    /// Agents where it launched tasks into its own executors: executors
    /// outlive their tasks, so these agents hear of its removal even when
    /// no task of it is left there.
    pub executor_agents: BTreeSet<AgentId>,
}

impl Framework {
    pub fn conn(&self) -> Option<ConnId> {
        match &self.conn {
            FrameworkConn::Connected { conn, .. } => Some(*conn),
            FrameworkConn::Disconnected { .. } => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct CompletedFramework {
    pub id: FrameworkId,
    pub info: FrameworkInfo,
    pub registered_at: Time,
    pub removed_at: Time,
    pub completed: VecDeque<Task>,
}

/// When the core wants `handle_timeout`.
#[derive(Debug)]
struct Timers {
    next_allocation: Time,
    /// A cycle over `dirty` agents (or all, see `allocate_all`) is due at
    /// this time: something freed resources or a framework wants offers.
    allocate_at: Option<Time>,
    allocate_all: bool,
    next_heartbeat: Time,
    next_liveness_check: Time,
}

/// The master's state and decisions; see the crate documentation.
#[derive(Debug)]
pub struct Master {
    config: MasterConfig,
    master_id: String,
    start_time: Time,
    rng: ChaCha8Rng,
    allocator: Allocator,
    agents: BTreeMap<AgentId, Agent>,
    agent_conns: HashMap<ConnId, AgentId>,
    unreachable: BTreeMap<AgentId, UnreachableAgent>,
    frameworks: BTreeMap<FrameworkId, Framework>,
    framework_conns: HashMap<ConnId, FrameworkId>,
    completed_frameworks: VecDeque<CompletedFramework>,
    offers: BTreeMap<OfferId, OfferRecord>,
    offer_expiry: BTreeSet<(Time, OfferId)>,
    failover_deadlines: BTreeSet<(Time, FrameworkId)>,
    next_agent: u64,
    next_framework: u64,
    next_offer: u64,
    dirty: BTreeSet<AgentId>,
    timers: Timers,
    outputs: VecDeque<Output>,
    counters: Counters,
    next_persist: u64,
    /// Registry writes in flight and what to do when each is confirmed.
    pending: BTreeMap<PersistId, persist::Pending>,
    /// Sessions whose admission or subscription awaits the registry.
    registering: BTreeSet<ConnId>,
    subscribing: BTreeSet<ConnId>,
    /// Of those, the ones that ended meanwhile.
    cancelled_conns: BTreeSet<ConnId>,
    /// Agents admitted by an earlier leader and not back yet.
    recovering: BTreeMap<AgentId, persist::RecoveringAgent>,
    /// The re-register deadlines of `recovering` agents not yet past it,
    /// in order: the next one is read after every input, and scanning
    /// `recovering` for it cost O(agents) each time while thousands of
    /// agents came back after a failover.
    recovering_due: BTreeSet<(Time, AgentId)>,
    /// Agents waiting to be marked unreachable (rate-limited), and those
    /// whose marking awaits the registry.
    removal_queue: VecDeque<AgentId>,
    recent_removals: VecDeque<Time>,
    unreachable_pending: BTreeSet<AgentId>,
    /// Frameworks whose removal awaits the registry.
    removing: BTreeSet<FrameworkId>,
}

impl Master {
    /// A master with empty registries. Everything random (its id, stream ids,
    /// the allocator's agent order) derives from `seed`.
    pub fn new(config: MasterConfig, seed: u64, now: Time) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let master_id = uuid_string(&mut rng);
        let allocator = Allocator::new(
            AllocatorConfig {
                weights: config.role_weights.clone(),
            },
            rng.random(),
        );
        let timers = Timers {
            next_allocation: now + config.allocation_interval,
            allocate_at: None,
            allocate_all: false,
            next_heartbeat: now + config.framework_heartbeat_interval,
            next_liveness_check: now + liveness_period(&config),
        };
        Master {
            config,
            master_id,
            start_time: now,
            rng,
            allocator,
            agents: BTreeMap::new(),
            agent_conns: HashMap::new(),
            unreachable: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            framework_conns: HashMap::new(),
            completed_frameworks: VecDeque::new(),
            offers: BTreeMap::new(),
            offer_expiry: BTreeSet::new(),
            failover_deadlines: BTreeSet::new(),
            next_agent: 0,
            next_framework: 0,
            next_offer: 0,
            dirty: BTreeSet::new(),
            timers,
            outputs: VecDeque::new(),
            counters: Counters::default(),
            next_persist: 0,
            pending: BTreeMap::new(),
            registering: BTreeSet::new(),
            subscribing: BTreeSet::new(),
            cancelled_conns: BTreeSet::new(),
            recovering: BTreeMap::new(),
            recovering_due: BTreeSet::new(),
            removal_queue: VecDeque::new(),
            recent_removals: VecDeque::new(),
            unreachable_pending: BTreeSet::new(),
            removing: BTreeSet::new(),
        }
    }

    /// This master's id (a uuid, the prefix of the ids it hands out).
    pub fn id(&self) -> &str {
        &self.master_id
    }

    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    /// Feeds one input. `Err` means a framework's call was refused outright
    /// and changed nothing; every other outcome comes out as outputs.
    pub fn handle(&mut self, now: Time, input: Input) -> Result<(), CallError> {
        match input {
            Input::AgentRegister {
                conn,
                agent_id,
                info,
                tasks,
                frameworks,
            } => {
                self.agent_register(now, conn, agent_id, info, tasks, frameworks);
                Ok(())
            }
            Input::AgentHeartbeat { conn } => {
                self.agent_heartbeat(now, conn);
                Ok(())
            }
            Input::AgentStatusUpdate {
                conn,
                framework_id,
                status,
            } => {
                self.agent_status_update(now, conn, framework_id, status);
                Ok(())
            }
            Input::AgentFrameworkMessage {
                conn,
                framework_id,
                executor_id,
                data,
            } => {
                // From a connected agent, for a connected framework; else
                // dropped (best effort).
                let target = self.agent_conns.get(&conn).cloned().and_then(|agent_id| {
                    let c = self.frameworks.get(&framework_id)?.conn()?;
                    Some((agent_id, c))
                });
                if let Some((agent_id, c)) = target {
                    self.outputs.push_back(Output::ToFramework {
                        conn: c,
                        framework_id,
                        event: Event::Message {
                            agent_id,
                            executor_id,
                            data,
                        },
                    });
                }
                Ok(())
            }
            Input::AgentUsage { conn, executors } => {
                if let Some(id) = self.agent_conns.get(&conn)
                    && let Some(agent) = self.agents.get_mut(id)
                {
                    agent.last_seen = now;
                    agent.usage = executors;
                }
                Ok(())
            }
            Input::AgentDisconnected { conn } => {
                if self.registering.contains(&conn) {
                    self.cancelled_conns.insert(conn);
                }
                self.agent_disconnected(now, conn);
                Ok(())
            }
            Input::Persisted { id } => {
                self.persisted(now, id);
                Ok(())
            }
            Input::Subscribe {
                conn,
                info,
                suppressed_roles,
                principal,
            } => {
                self.subscribe(now, conn, info, suppressed_roles, principal);
                Ok(())
            }
            Input::FrameworkDisconnected { conn } => {
                if self.subscribing.contains(&conn) {
                    self.cancelled_conns.insert(conn);
                }
                self.framework_disconnected(now, conn);
                Ok(())
            }
            Input::Call {
                framework_id,
                stream_id,
                call,
            } => self.call(now, framework_id, &stream_id, call),
            Input::OperatorTeardown {
                framework_id,
                principal,
            } => {
                let Some(f) = self.frameworks.get(&framework_id) else {
                    return Err(if self.is_removed_framework(&framework_id) {
                        CallError::RemovedFramework(framework_id)
                    } else {
                        CallError::UnknownFramework(framework_id)
                    });
                };
                if let Some(acls) = &self.config.acls {
                    acls.teardown(principal.as_deref(), &f.info.principal)
                        .map_err(|d| CallError::Forbidden(d.to_string()))?;
                }
                self.remove_framework(now, &framework_id, "torn down by an operator");
                Ok(())
            }
        }
    }

    /// When [`Master::handle_timeout`] must next be called. Always `Some`:
    /// the periodic allocation and heartbeats never stop.
    pub fn poll_timeout(&self) -> Option<Time> {
        let t = &self.timers;
        let mut next = t
            .next_allocation
            .min(t.next_heartbeat)
            .min(t.next_liveness_check);
        if let Some(at) = t.allocate_at {
            next = next.min(at);
        }
        if let Some((at, _)) = self.offer_expiry.first() {
            next = next.min(*at);
        }
        if let Some((at, _)) = self.failover_deadlines.first() {
            next = next.min(*at);
        }
        if let Some(at) = self.next_recovering_deadline() {
            next = next.min(at);
        }
        if let Some(at) = self.next_removal() {
            next = next.min(at);
        }
        Some(next)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.expire_offers(now);
        self.expire_failovers(now);
        self.expire_recovering(now);
        self.drain_removals(now);
        if now >= self.timers.next_liveness_check {
            self.check_agents(now);
            self.timers.next_liveness_check = now + liveness_period(&self.config);
        }
        if now >= self.timers.next_heartbeat {
            self.heartbeat_frameworks();
            self.timers.next_heartbeat = now + self.config.framework_heartbeat_interval;
        }
        if now >= self.timers.next_allocation {
            self.run_allocation(now, true);
            self.timers.next_allocation = now + self.config.allocation_interval;
        } else if self.timers.allocate_at.is_some_and(|at| now >= at) {
            let all = self.timers.allocate_all;
            self.run_allocation(now, all);
        }
    }

    /// Allocation cycles run so far (a cheap read, for timing them).
    pub fn allocation_cycles(&self) -> u64 {
        self.counters.allocation_cycles
    }

    /// The next output, in the order produced.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ----- helpers shared by the handlers -------------------------------

    fn observe(&mut self, o: Observed) {
        self.outputs.push_back(Output::Observed(o));
    }

    fn send_framework(&mut self, framework_id: &FrameworkId, event: Event) {
        if let Some(conn) = self.frameworks.get(framework_id).and_then(Framework::conn) {
            self.outputs.push_back(Output::ToFramework {
                conn,
                framework_id: framework_id.clone(),
                event,
            });
        }
    }

    fn send_update(&mut self, framework_id: &FrameworkId, status: TaskStatus) {
        self.send_framework(framework_id, Event::Update(status));
    }

    /// Sends to the agent if it is connected. Messages to a disconnected agent
    /// are dropped: launches and kills are unreliable (as in Mesos), and the
    /// agent's re-registration reconciles what it missed.
    fn send_agent(&mut self, agent_id: &AgentId, command: AgentCommand) -> bool {
        match self.agents.get(agent_id).and_then(|a| a.conn) {
            Some(conn) => {
                self.outputs.push_back(Output::ToAgent {
                    conn,
                    agent_id: agent_id.clone(),
                    command,
                });
                true
            }
            None => false,
        }
    }

    /// Asks for a cycle over `agent` as soon as the current input is done.
    fn allocate_soon(&mut self, now: Time, agent: Option<&AgentId>) {
        match agent {
            Some(a) => {
                self.dirty.insert(a.clone());
            }
            None => self.timers.allocate_all = true,
        }
        if self.timers.allocate_at.is_none() {
            self.timers.allocate_at = Some(now);
        }
    }

    fn heartbeat_frameworks(&mut self) {
        let targets: Vec<(ConnId, FrameworkId)> = self
            .frameworks
            .values()
            .filter_map(|f| f.conn().map(|c| (c, f.id.clone())))
            .collect();
        for (conn, framework_id) in targets {
            self.outputs.push_back(Output::ToFramework {
                conn,
                framework_id,
                event: Event::Heartbeat,
            });
        }
    }

    /// The state a partition-aware framework sees where others see LOST.
    fn lost_or(&self, framework_id: &FrameworkId, partition_aware_state: TaskState) -> TaskState {
        let aware = self
            .frameworks
            .get(framework_id)
            .is_some_and(|f| f.info.partition_aware());
        if aware {
            partition_aware_state
        } else {
            TaskState::Lost
        }
    }
}

/// How often agents' liveness is checked: often enough that an agent is
/// marked unreachable within a few percent of the ping timeout.
fn liveness_period(config: &MasterConfig) -> std::time::Duration {
    (config.agent_ping_timeout / 10)
        .max(std::time::Duration::from_millis(50))
        .min(std::time::Duration::from_secs(1))
}

/// A random (v4-shaped) uuid from the master's seeded generator.
fn uuid_string(rng: &mut ChaCha8Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
