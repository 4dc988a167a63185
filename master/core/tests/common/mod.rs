//! A harness that drives a `Master` core without I/O: virtual time that jumps
//! to the next timer, connections as numbers, outputs collected per target.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_master_core::registry::RegistryState;
use cairn_master_core::{
    AgentCommand, Call, CallError, ConnId, Event, Input, LaunchRequest, Master, MasterConfig,
    Output, ReportedTask,
};
use cairn_model::{
    AgentId, AgentInfo, CommandInfo, FrameworkId, FrameworkInfo, KillPolicy, Offer, Resources,
    Source, StatusUuid, TaskId, TaskInfo, TaskState, TaskStatus, Time,
};

pub struct Fw {
    pub id: FrameworkId,
    pub stream_id: String,
    pub conn: ConnId,
}

pub struct Ag {
    pub id: AgentId,
    pub conn: ConnId,
}

pub struct Sim {
    pub master: Master,
    /// The registry as the writes so far left it.
    pub registry: RegistryState,
    /// Whether registry writes are confirmed at once (a store that keeps up).
    pub auto_persist: bool,
    leaders: u64,
    pub now: Time,
    next_conn: u64,
    next_uuid: u8,
    /// Every output not yet taken by a test.
    pub pending: Vec<Output>,
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn res(s: &str) -> Resources {
    Resources::parse(s).unwrap()
}

impl Sim {
    pub fn new(config: MasterConfig) -> Self {
        let now = Time::from_micros(1_700_000_000_000_000);
        Sim {
            master: Master::new(config, 42, now),
            registry: RegistryState::default(),
            auto_persist: true,
            leaders: 0,
            now,
            next_conn: 0,
            next_uuid: 0,
            pending: Vec::new(),
        }
    }

    pub fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub fn input(&mut self, input: Input) -> Result<(), CallError> {
        let r = self.master.handle(self.now, input);
        self.collect();
        r
    }

    fn collect(&mut self) {
        while let Some(o) = self.master.poll_output() {
            match o {
                Output::Persist { id, op } if self.auto_persist => {
                    self.registry.apply(&op);
                    self.master
                        .handle(self.now, Input::Persisted { id })
                        .unwrap();
                }
                other => self.pending.push(other),
            }
        }
    }

    /// The first registry write held back (with `auto_persist` off).
    pub fn held_persist(&self) -> Option<cairn_master_core::registry::PersistId> {
        self.pending.iter().find_map(|o| match o {
            Output::Persist { id, .. } => Some(*id),
            _ => None,
        })
    }

    /// Writes every registry change held back (with `auto_persist` off),
    /// in order, and confirms each; then persists automatically again.
    pub fn persist_all(&mut self) {
        let held: Vec<Output> = std::mem::take(&mut self.pending);
        self.auto_persist = true;
        for o in held {
            match o {
                Output::Persist { id, op } => {
                    self.registry.apply(&op);
                    self.master
                        .handle(self.now, Input::Persisted { id })
                        .unwrap();
                    self.collect();
                }
                other => self.pending.push(other),
            }
        }
    }

    /// A new master (another seed) taking over from the registry as it is.
    pub fn fail_over(&mut self, config: MasterConfig) {
        // Each leader has its own id (from its seed), as real ones do.
        self.leaders += 1;
        let mut master = Master::new(config, 42 + self.leaders, self.now);
        master.recover(self.now, self.registry.clone());
        self.master = master;
        self.pending.clear();
        self.collect();
    }

    /// Fires every timer due now (repeatedly, as a driver would).
    pub fn fire_due(&mut self) {
        for _ in 0..1000 {
            match self.master.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.master.handle_timeout(self.now);
                    self.collect();
                }
                _ => return,
            }
        }
        panic!("timers keep firing at one instant");
    }

    /// Moves time forward by `d`, firing timers at their due times.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.fire_due();
        loop {
            match self.master.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.fire_due();
                }
                _ => break,
            }
        }
        self.now = end;
        self.fire_due();
    }

    pub fn agent_with(&mut self, resources: &str, hostname: &str) -> Ag {
        let conn = self.conn();
        let info = AgentInfo {
            hostname: hostname.to_string(),
            address: format!("{hostname}:5051"),
            resources: res(resources),
            attributes: vec![],
            tls: false,
        };
        self.input(Input::AgentRegister {
            conn,
            agent_id: None,
            info,
            tasks: vec![],
            frameworks: vec![],
        })
        .unwrap();
        let id = self
            .take_agent(conn)
            .into_iter()
            .find_map(|c| match c {
                AgentCommand::Registered { agent_id, .. } => Some(agent_id),
                _ => None,
            })
            .expect("agent registered");
        Ag { id, conn }
    }

    pub fn agent(&mut self, resources: &str) -> Ag {
        let n = self.next_conn + 1;
        self.agent_with(resources, &format!("host{n}"))
    }

    pub fn framework_with(&mut self, info: FrameworkInfo) -> Fw {
        let conn = self.conn();
        self.input(Input::Subscribe {
            conn,
            info,
            suppressed_roles: vec![],
            principal: None,
        })
        .unwrap();
        let (id, stream_id) = self
            .take_events(conn)
            .into_iter()
            .find_map(|e| match e {
                Event::Subscribed {
                    framework_id,
                    stream_id,
                    ..
                } => Some((framework_id, stream_id)),
                _ => None,
            })
            .expect("subscribed");
        Fw {
            id,
            stream_id,
            conn,
        }
    }

    pub fn framework(&mut self, name: &str) -> Fw {
        let mut info = FrameworkInfo::new(name, "nobody");
        info.failover_timeout = secs(60);
        self.framework_with(info)
    }

    /// Takes the events sent on `conn` so far.
    pub fn take_events(&mut self, conn: ConnId) -> Vec<Event> {
        let mut out = Vec::new();
        self.pending.retain(|o| match o {
            Output::ToFramework { conn: c, event, .. } if *c == conn => {
                out.push(event.clone());
                false
            }
            _ => true,
        });
        out
    }

    pub fn take_agent(&mut self, conn: ConnId) -> Vec<AgentCommand> {
        let mut out = Vec::new();
        self.pending.retain(|o| match o {
            Output::ToAgent {
                conn: c, command, ..
            } if *c == conn => {
                out.push(command.clone());
                false
            }
            _ => true,
        });
        out
    }

    pub fn offers(&mut self, fw: &Fw) -> Vec<Offer> {
        self.take_events(fw.conn)
            .into_iter()
            .flat_map(|e| match e {
                Event::Offers(o) => o,
                _ => vec![],
            })
            .collect()
    }

    pub fn updates(&mut self, fw: &Fw) -> Vec<TaskStatus> {
        self.take_events(fw.conn)
            .into_iter()
            .filter_map(|e| match e {
                Event::Update(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    pub fn call(&mut self, fw: &Fw, call: Call) -> Result<(), CallError> {
        self.input(Input::Call {
            framework_id: fw.id.clone(),
            stream_id: fw.stream_id.clone(),
            call,
        })
    }

    pub fn launch(&mut self, fw: &Fw, offer: &Offer, tasks: Vec<TaskInfo>) {
        self.call(
            fw,
            Call::Accept {
                offer_ids: vec![offer.id.clone()],
                launches: tasks.into_iter().map(LaunchRequest::Task).collect(),
                refuse: secs(5),
            },
        )
        .unwrap();
    }

    pub fn decline(&mut self, fw: &Fw, offer: &Offer, refuse: Duration) {
        self.call(
            fw,
            Call::Decline {
                offer_ids: vec![offer.id.clone()],
                refuse,
            },
        )
        .unwrap();
    }

    pub fn uuid(&mut self) -> StatusUuid {
        self.next_uuid = self.next_uuid.wrapping_add(1);
        StatusUuid([self.next_uuid; 16])
    }

    /// The agent on `ag` reports `state` for a task, with a fresh uuid.
    pub fn report(
        &mut self,
        ag: &Ag,
        fw: &FrameworkId,
        task: &str,
        state: TaskState,
    ) -> StatusUuid {
        let uuid = self.uuid();
        let status = TaskStatus {
            task_id: TaskId::new(task),
            state,
            message: String::new(),
            source: Source::Executor,
            reason: None,
            agent_id: Some(ag.id.clone()),
            executor_id: None,
            timestamp: self.now,
            uuid: Some(uuid),
            exit_code: None,
            healthy: None,
        };
        self.input(Input::AgentStatusUpdate {
            conn: ag.conn,
            framework_id: fw.clone(),
            status,
        })
        .unwrap();
        uuid
    }

    pub fn ack(&mut self, fw: &Fw, ag: &AgentId, task: &str, uuid: StatusUuid) {
        self.call(
            fw,
            Call::Acknowledge {
                agent_id: ag.clone(),
                task_id: TaskId::new(task),
                uuid,
            },
        )
        .unwrap();
    }

    pub fn check(&self) {
        if let Err(e) = self.master.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    /// Re-registers `ag` reporting one task of `fw` in `state`.
    pub fn reregister_with(
        &mut self,
        ag: &Ag,
        resources: &str,
        fw: &FrameworkId,
        task: TaskInfo,
        state: TaskState,
    ) -> Ag {
        let report = ReportedTask {
            framework_id: fw.clone(),
            task,
            state,
        };
        self.reregister(ag, resources, vec![report])
    }

    pub fn reregister(&mut self, ag: &Ag, resources: &str, tasks: Vec<ReportedTask>) -> Ag {
        let conn = self.conn();
        self.input(Input::AgentRegister {
            conn,
            agent_id: Some(ag.id.clone()),
            info: AgentInfo {
                hostname: "h".into(),
                address: "h:5051".into(),
                resources: res(resources),
                attributes: vec![],
                tls: false,
            },
            tasks,
            frameworks: vec![],
        })
        .unwrap();
        Ag {
            id: ag.id.clone(),
            conn,
        }
    }
}

pub fn task(id: &str, agent: &AgentId, resources: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.to_string(),
        agent_id: agent.clone(),
        resources: res(resources),
        command: CommandInfo::shell("sleep 1"),
        kill_policy: KillPolicy::default(),
        labels: vec![],
        network: cairn_model::Network::Host,
        executor: None,
        data: Vec::new(),
    }
}
