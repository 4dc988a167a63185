use cairn_model::{CommandInfo, KillPolicy};

use super::*;

fn t(ms: u64) -> Time {
    Time::from_micros(ms * 1000)
}

fn fw() -> FrameworkId {
    FrameworkId::new("fw")
}

fn framework() -> FrameworkInfo {
    let mut f = FrameworkInfo::new("f", "nobody");
    f.id = Some(fw());
    f
}

fn task(id: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.into(),
        agent_id: AgentId::new("a"),
        resources: Resources::parse("cpus:1;mem:32").unwrap(),
        command: CommandInfo::shell("sleep 1"),
        kill_policy: KillPolicy::default(),
        labels: vec![],
        network: cairn_model::Network::Host,
        executor: None,
        data: Vec::new(),
    }
}

/// The outputs other than checkpoint records (tests of those use
/// `drain_all`).
fn drain(a: &mut Agent) -> Vec<Output> {
    drain_all(a)
        .into_iter()
        .filter(|o| !matches!(o, Output::Checkpoint(_)))
        .collect()
}

fn drain_all(a: &mut Agent) -> Vec<Output> {
    std::iter::from_fn(|| a.poll_output()).collect()
}

fn status(id: &str, state: TaskState, u: u8) -> TaskStatus {
    TaskStatus {
        task_id: TaskId::new(id),
        state,
        message: String::new(),
        source: Source::Executor,
        reason: None,
        agent_id: None,
        executor_id: None,
        timestamp: Time::ZERO,
        uuid: Some(StatusUuid([u; 16])),
        exit_code: None,
        healthy: None,
    }
}

/// An agent registered with a running command task "t" on executor conn 1.
fn running() -> (Agent, ContainerId) {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    let out = drain(&mut a);
    let Some(Output::Launch(spec)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(spec.executor_id.as_str(), "t");
    assert!(spec.sandbox.starts_with("frameworks/fw/executors/t/runs"));
    let container = spec.container_id.clone();
    a.handle(
        t(1),
        Input::ExecutorSubscribed {
            conn: ExecConn(1),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Output::ToExecutor {
                command: ExecutorCommand::Launch { .. },
                ..
            }]
        ),
        "{out:?}"
    );
    (a, container)
}

#[test]
fn executor_updates_are_acknowledged_to_it_and_forwarded_one_at_a_time() {
    let (mut a, _) = running();
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Starting, 1),
            limitation: None,
        },
    );
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Running, 2),
            limitation: None,
        },
    );
    let out = drain(&mut a);
    let acks = out
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::ToExecutor {
                    command: ExecutorCommand::Acknowledged { .. },
                    ..
                }
            )
        })
        .count();
    let forwarded: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToMaster { status, .. } => Some(status.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(acks, 2, "the executor hears each update is stored");
    assert_eq!(forwarded.len(), 1, "RUNNING waits for STARTING's ack");
    assert_eq!(forwarded[0].executor_id, Some(ExecutorId::new("t")));
    assert_eq!(forwarded[0].agent_id, Some(AgentId::new("a")));
    a.handle(
        t(3),
        Input::Acknowledge {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            uuid: StatusUuid([1; 16]),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(out.as_slice(), [Output::ToMaster { status, .. }] if status.state == TaskState::Running)
    );
}

#[test]
fn an_executor_that_dies_without_a_terminal_update_fails_its_task() {
    let (mut a, container) = running();
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Running, 1),
            limitation: None,
        },
    );
    a.handle(
        t(3),
        Input::Acknowledge {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            uuid: StatusUuid([1; 16]),
        },
    );
    drain(&mut a);
    a.handle(
        t(4),
        Input::ContainerExited {
            container_id: container.clone(),
            termination: Termination {
                exit_code: Some(137),
                ..Termination::default()
            },
        },
    );
    let out = drain(&mut a);
    let failed = out
        .iter()
        .find_map(|o| match o {
            Output::ToMaster { status, .. } => Some(status.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.source, Source::Agent);
    assert_eq!(failed.reason, Some(Reason::ExecutorTerminated));
    assert!(failed.message.contains("137"), "{}", failed.message);
    assert!(failed.uuid.is_some(), "agent updates are reliable too");
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Destroy { container_id } if *container_id == container))
    );
    // Still reported until acknowledged.
    assert_eq!(a.report().0.len(), 1);
    a.handle(
        t(5),
        Input::Acknowledge {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            uuid: failed.uuid.unwrap(),
        },
    );
    assert!(a.report().0.is_empty());
    assert!(a.is_idle());
}

#[test]
fn a_kill_before_the_executor_subscribes_ends_the_task_there() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    drain(&mut a);
    a.handle(
        t(1),
        Input::KillTask {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            grace: None,
        },
    );
    let out = drain(&mut a);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::ToMaster { status, .. } if status.state == TaskState::Killed)
        ),
        "{out:?}"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Destroy { .. })));
}

#[test]
fn a_kill_goes_to_the_executor_and_escalates_to_destroy_after_the_grace() {
    let config = AgentConfig::default();
    let (mut a, container) = running();
    a.handle(
        t(1000),
        Input::KillTask {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            grace: Some(Duration::from_secs(2)),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(out.as_slice(), [Output::ToExecutor { command: ExecutorCommand::Kill { grace, .. }, .. }] if *grace == Duration::from_secs(2))
    );
    let deadline = t(1000) + Duration::from_secs(2) + config.kill_escalation;
    assert_eq!(a.poll_timeout(), Some(deadline));
    a.handle_timeout(deadline);
    assert!(
        matches!(drain(&mut a).as_slice(), [Output::Destroy { container_id }] if *container_id == container)
    );
    a.handle(
        t(9000),
        Input::ContainerExited {
            container_id: container,
            termination: Termination {
                signal: Some(9),
                ..Termination::default()
            },
        },
    );
    let out = drain(&mut a);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::ToMaster { status, .. } if status.state == TaskState::Killed)
        ),
        "{out:?}"
    );
}

#[test]
fn an_executor_that_never_subscribes_is_destroyed_and_its_task_fails() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    let Some(Output::Launch(spec)) = drain(&mut a).into_iter().next() else {
        panic!()
    };
    let deadline = a.poll_timeout().unwrap();
    a.handle_timeout(deadline);
    assert!(matches!(drain(&mut a).as_slice(), [Output::Destroy { .. }]));
    a.handle(
        deadline,
        Input::ContainerExited {
            container_id: spec.container_id,
            termination: Termination::default(),
        },
    );
    let out = drain(&mut a);
    assert!(out.iter().any(|o| matches!(o, Output::ToMaster { status, .. }
        if status.state == TaskState::Failed && status.reason == Some(Reason::ExecutorRegistrationTimeout))));
}

#[test]
fn updates_queue_until_the_agent_is_registered() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    a.handle(
        t(0),
        Input::ExecutorSubscribed {
            conn: ExecConn(1),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    a.handle(
        t(1),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Running, 1),
            limitation: None,
        },
    );
    assert!(
        !drain(&mut a)
            .iter()
            .any(|o| matches!(o, Output::ToMaster { .. }))
    );
    a.handle(
        t(2),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    assert!(
        drain(&mut a)
            .iter()
            .any(|o| matches!(o, Output::ToMaster { .. }))
    );
}

#[test]
fn shutting_down_a_framework_stops_its_updates_and_ends_its_executors() {
    let (mut a, container) = running();
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Running, 1),
            limitation: None,
        },
    );
    drain(&mut a);
    a.handle(t(3), Input::ShutdownFramework { framework_id: fw() });
    let out = drain(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Output::ToExecutor {
                command: ExecutorCommand::Shutdown { .. },
                ..
            }]
        ),
        "{out:?}"
    );
    a.handle(
        t(4),
        Input::ContainerExited {
            container_id: container,
            termination: Termination::default(),
        },
    );
    let out = drain(&mut a);
    assert!(
        !out.iter().any(|o| matches!(o, Output::ToMaster { .. })),
        "{out:?}"
    );
    assert!(a.is_idle());
    assert!(a.report().0.is_empty() && a.report().1.is_empty());
}

#[test]
fn killing_an_unknown_task_reports_it_lost() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(1),
        Input::KillTask {
            framework_id: fw(),
            task_id: TaskId::new("ghost"),
            grace: None,
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(out.as_slice(), [Output::ToMaster { status, .. }] if status.state == TaskState::Lost)
    );
}

#[test]
fn an_update_after_a_terminal_one_is_acknowledged_but_not_forwarded() {
    let (mut a, _) = running();
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Finished, 1),
            limitation: None,
        },
    );
    drain(&mut a);
    a.handle(
        t(3),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Running, 2),
            limitation: None,
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Output::ToExecutor {
                command: ExecutorCommand::Acknowledged { .. },
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn a_kill_without_a_grace_uses_the_task_kill_policy() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    let mut tk = task("t");
    tk.kill_policy.grace_period = Some(Duration::from_secs(7));
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: tk,
        },
    );
    a.handle(
        t(1),
        Input::ExecutorSubscribed {
            conn: ExecConn(1),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    drain(&mut a);
    a.handle(
        t(2),
        Input::KillTask {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            grace: None,
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(out.as_slice(), [Output::ToExecutor { command: ExecutorCommand::Kill { grace, .. }, .. }] if *grace == Duration::from_secs(7)),
        "{out:?}"
    );
}

#[test]
fn root_tasks_are_refused_unless_allowed() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    let mut tk = task("t");
    tk.command.user = Some("root".into());
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: tk.clone(),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(out.as_slice(), [Output::ToMaster { status, .. }]
            if status.state == TaskState::Error && status.reason == Some(Reason::TaskUnauthorized)),
        "{out:?}"
    );
    let mut allowed = Agent::new(
        AgentConfig {
            allow_root_tasks: true,
            ..AgentConfig::default()
        },
        1,
    );
    allowed.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    allowed.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: tk,
        },
    );
    assert!(
        matches!(drain(&mut allowed).as_slice(), [Output::Launch(spec)] if spec.user == "root")
    );
}

#[test]
fn the_default_user_applies_when_none_is_named() {
    let config = AgentConfig {
        default_user: "nobody".into(),
        ..AgentConfig::default()
    };
    let mut a = Agent::new(config, 1);
    let mut f = framework();
    f.user = String::new();
    a.handle(
        t(0),
        Input::RunTask {
            framework: f,
            task: task("t"),
        },
    );
    assert!(matches!(drain(&mut a).as_slice(), [Output::Launch(spec)] if spec.user == "nobody"));
}

#[test]
fn a_task_killed_by_a_limit_fails_with_the_limit_as_reason() {
    let (mut a, _) = running();
    let mut s = status("t", TaskState::Failed, 1);
    s.message = "Command terminated with signal SIGKILL".into();
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: s,
            limitation: Some(Limitation {
                reason: Reason::ContainerLimitationMemory,
                message: "Memory limit exceeded: 64 MB".into(),
            }),
        },
    );
    let out = drain(&mut a);
    let sent = out
        .iter()
        .find_map(|o| match o {
            Output::ToMaster { status, .. } => Some(status.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(sent.state, TaskState::Failed);
    assert_eq!(sent.reason, Some(Reason::ContainerLimitationMemory));
    assert!(sent.message.contains("64 MB"));
}

#[test]
fn a_relaunch_under_an_id_with_pending_updates_is_refused() {
    let (mut a, container) = running();
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Finished, 1),
            limitation: None,
        },
    );
    a.handle(
        t(3),
        Input::ContainerExited {
            container_id: container,
            termination: Termination::default(),
        },
    );
    drain(&mut a);
    // FINISHED is not acknowledged yet; the framework launches "t" again.
    a.handle(
        t(4),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    let out = drain(&mut a);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Launch(_))),
        "{out:?}"
    );
    // Its refusal queues behind the unacknowledged FINISHED.
    a.handle(
        t(5),
        Input::Acknowledge {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            uuid: StatusUuid([1; 16]),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(out.as_slice(), [Output::ToMaster { status, .. }] if status.state == TaskState::Error),
        "{out:?}"
    );
}

#[test]
fn a_resubscribing_executor_gets_launches_it_never_reported_on() {
    let (mut a, _) = running();
    // The stream breaks before the executor reported anything.
    a.handle(t(2), Input::ExecutorDisconnected { conn: ExecConn(1) });
    a.handle(
        t(3),
        Input::ExecutorSubscribed {
            conn: ExecConn(2),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [Output::ToExecutor {
                conn: ExecConn(2),
                command: ExecutorCommand::Launch { .. }
            }]
        ),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// Checkpointing and recovery
// ---------------------------------------------------------------------------

fn records(out: &[Output]) -> Vec<Checkpoint> {
    out.iter()
        .filter_map(|o| match o {
            Output::Checkpoint(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

/// What recovery must bring back: tasks (with states), frameworks, and the
/// unacknowledged updates in order.
type Fingerprint = (
    Vec<TaskReport>,
    Vec<FrameworkInfo>,
    Vec<(FrameworkId, TaskStatus)>,
    Option<AgentId>,
);

fn fingerprint(a: &Agent) -> Fingerprint {
    let (tasks, frameworks) = a.report();
    let pending = a
        .updates
        .pending()
        .map(|(f, s)| (f.clone(), s.clone()))
        .collect();
    (tasks, frameworks, pending, a.agent_id().cloned())
}

#[test]
fn every_effect_is_preceded_by_the_record_that_explains_it() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    a.handle(
        t(1),
        Input::ExecutorSubscribed {
            conn: ExecConn(1),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("t", TaskState::Running, 7),
            limitation: None,
        },
    );
    let out = drain_all(&mut a);
    let pos = |pred: &dyn Fn(&Output) -> bool| {
        out.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{out:?}"))
    };
    let task_rec = pos(&|o| matches!(o, Output::Checkpoint(Checkpoint::Task { .. })));
    let launch = pos(&|o| matches!(o, Output::Launch(_)));
    assert!(
        task_rec < launch,
        "the task is recorded before its container starts: {out:?}"
    );
    let update_rec = pos(
        &|o| matches!(o, Output::Checkpoint(Checkpoint::Update { status, .. }) if status.uuid == Some(StatusUuid([7; 16]))),
    );
    let ack = pos(&|o| {
        matches!(
            o,
            Output::ToExecutor {
                command: ExecutorCommand::Acknowledged { .. },
                ..
            }
        )
    });
    let forward = pos(&|o| matches!(o, Output::ToMaster { .. }));
    assert!(
        update_rec < ack && update_rec < forward,
        "the update is recorded before it is acknowledged or forwarded: {out:?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Checkpoint(Checkpoint::AgentId(_))))
    );
}

#[test]
fn a_recovered_agent_has_its_tasks_and_unacknowledged_updates_back() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    let mut log = Vec::new();
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    let container = drain_all(&mut a)
        .into_iter()
        .inspect(|o| log.extend(records(std::slice::from_ref(o))))
        .find_map(|o| match o {
            Output::Launch(s) => Some(s.container_id),
            _ => None,
        })
        .unwrap();
    a.handle(
        t(1),
        Input::ExecutorSubscribed {
            conn: ExecConn(1),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    for (state, u) in [(TaskState::Starting, 1), (TaskState::Running, 2)] {
        a.handle(
            t(2),
            Input::ExecutorUpdate {
                conn: ExecConn(1),
                status: status("t", state, u),
                limitation: None,
            },
        );
    }
    // The framework acknowledges STARTING; RUNNING is then in flight.
    a.handle(
        t(3),
        Input::Acknowledge {
            framework_id: fw(),
            task_id: TaskId::new("t"),
            uuid: StatusUuid([1; 16]),
        },
    );
    log.extend(records(&drain_all(&mut a)));

    // The agent dies; a new one replays what was written.
    let mut b = Agent::new(AgentConfig::default(), 2);
    let recovered = b.recover(t(10), log.clone());
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].container_id, container);
    assert_eq!(fingerprint(&b), fingerprint(&a));
    let (tasks, _) = b.report();
    assert_eq!(tasks[0].state, TaskState::Running);
    assert_eq!(b.agent_id(), Some(&AgentId::new("a")));
    assert!(drain(&mut b).is_empty(), "recovery itself does nothing");

    // Registered with the master: the unacknowledged RUNNING goes again.
    b.handle(
        t(11),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    let out = drain_all(&mut b);
    assert!(
        matches!(out.as_slice(), [Output::ToMaster { status, .. }] if status.uuid == Some(StatusUuid([2; 16]))),
        "{out:?}"
    );
    // The executor re-subscribes and re-sends RUNNING (its ack was lost):
    // acknowledged again, not queued twice, and no launch is sent again.
    b.handle(
        t(12),
        Input::ExecutorSubscribed {
            conn: ExecConn(5),
            framework_id: fw(),
            executor_id: ExecutorId::new("t"),
        },
    );
    b.handle(
        t(12),
        Input::ExecutorUpdate {
            conn: ExecConn(5),
            status: status("t", TaskState::Running, 2),
            limitation: None,
        },
    );
    let out = drain_all(&mut b);
    assert!(
        matches!(
            out.as_slice(),
            [Output::ToExecutor {
                conn: ExecConn(5),
                command: ExecutorCommand::Acknowledged { .. }
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn an_executor_that_does_not_reregister_after_a_restart_is_destroyed_and_its_task_lost() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    a.handle(
        t(0),
        Input::RunTask {
            framework: framework(),
            task: task("t"),
        },
    );
    let log = records(&drain_all(&mut a));
    let mut b = Agent::new(AgentConfig::default(), 2);
    b.recover(t(100), log);
    let deadline = b.poll_timeout().expect("a re-registration deadline");
    assert_eq!(
        deadline,
        t(100) + AgentConfig::default().executor_reregistration_timeout
    );
    b.handle_timeout(deadline);
    let Some(Output::Destroy { container_id }) = drain(&mut b).into_iter().next() else {
        panic!("the executor's container is destroyed")
    };
    b.handle(
        t(20_000),
        Input::ContainerExited {
            container_id,
            termination: Termination::default(),
        },
    );
    b.handle(
        t(20_001),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    let out = drain(&mut b);
    assert!(
        matches!(out.as_slice(), [Output::ToMaster { status, .. }]
            if status.state == TaskState::Lost && status.reason == Some(Reason::ExecutorReregistrationTimeout)),
        "{out:?}"
    );
}

#[test]
fn a_container_gone_after_a_restart_fails_a_started_task_and_loses_one_that_never_started() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    for id in ["started", "never"] {
        a.handle(
            t(0),
            Input::RunTask {
                framework: framework(),
                task: task(id),
            },
        );
    }
    a.handle(
        t(1),
        Input::ExecutorSubscribed {
            conn: ExecConn(1),
            framework_id: fw(),
            executor_id: ExecutorId::new("started"),
        },
    );
    a.handle(
        t(2),
        Input::ExecutorUpdate {
            conn: ExecConn(1),
            status: status("started", TaskState::Running, 1),
            limitation: None,
        },
    );
    let log = records(&drain_all(&mut a));
    let mut b = Agent::new(AgentConfig::default(), 2);
    for c in b.recover(t(100), log) {
        b.handle(t(101), crate::checkpoint::exited_while_down(c.container_id));
    }
    b.handle(
        t(102),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    // The framework acknowledges everything; collect how each task ends.
    let mut ends: BTreeMap<String, (TaskState, String)> = BTreeMap::new();
    for round in 0..4 {
        for o in drain(&mut b) {
            if let Output::ToMaster { status, .. } = o {
                if status.state.is_terminal() {
                    ends.insert(
                        status.task_id.to_string(),
                        (status.state, status.message.clone()),
                    );
                }
                b.handle(
                    t(103 + round),
                    Input::Acknowledge {
                        framework_id: fw(),
                        task_id: status.task_id.clone(),
                        uuid: status.uuid.unwrap(),
                    },
                );
            }
        }
    }
    assert_eq!(ends["started"].0, TaskState::Failed, "{ends:?}");
    assert!(
        ends["started"].1.contains("while the agent was down"),
        "{ends:?}"
    );
    assert_eq!(ends["never"].0, TaskState::Lost, "{ends:?}");
}

mod recovery_props {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Run(u8),
        Subscribe(u8),
        Update(u8, TaskState),
        MasterUp,
        MasterDown,
        Ack(u8),
        Kill(u8),
        Exit(u8),
        Shutdown,
    }

    fn op() -> impl Strategy<Value = Op> {
        let state = prop_oneof![
            Just(TaskState::Starting),
            Just(TaskState::Running),
            Just(TaskState::Finished),
            Just(TaskState::Failed),
        ];
        prop_oneof![
            (0u8..4).prop_map(Op::Run),
            (0u8..4).prop_map(Op::Subscribe),
            ((0u8..4), state).prop_map(|(i, s)| Op::Update(i, s)),
            Just(Op::MasterUp),
            Just(Op::MasterDown),
            (0u8..4).prop_map(Op::Ack),
            (0u8..4).prop_map(Op::Kill),
            (0u8..4).prop_map(Op::Exit),
            Just(Op::Shutdown).prop_filter("rare", |_| true),
        ]
    }

    proptest! {
        /// Replaying every record, or the snapshot, gives the state the
        /// agent had: the same tasks in the same states, the same
        /// unacknowledged updates in the same order.
        #[test]
        fn replaying_the_log_or_its_snapshot_restores_the_agent(ops in proptest::collection::vec(op(), 1..60)) {
            let mut a = Agent::new(AgentConfig::default(), 1);
            let mut log = Vec::new();
            let mut containers: BTreeMap<u8, ContainerId> = BTreeMap::new();
            let mut uuid = 10u8;
            for (n, op) in ops.into_iter().enumerate() {
                let now = t(n as u64);
                let name = |i: u8| format!("t{i}");
                match op {
                    Op::Run(i) => a.handle(now, Input::RunTask { framework: framework(), task: task(&name(i)) }),
                    Op::Subscribe(i) => a.handle(now, Input::ExecutorSubscribed {
                        conn: ExecConn(u64::from(i) + 1), framework_id: fw(), executor_id: ExecutorId::new(name(i)),
                    }),
                    Op::Update(i, s) => {
                        uuid = uuid.wrapping_add(1);
                        a.handle(now, Input::ExecutorUpdate { conn: ExecConn(u64::from(i) + 1), status: status(&name(i), s, uuid), limitation: None });
                    }
                    Op::MasterUp => a.handle(now, Input::Registered { agent_id: AgentId::new("a") }),
                    Op::MasterDown => a.handle(now, Input::MasterDisconnected),
                    Op::Ack(i) => {
                        let front = a.updates.pending().find(|(_, s)| s.task_id.as_str() == name(i)).and_then(|(_, s)| s.uuid);
                        if let Some(u) = front {
                            a.handle(now, Input::Acknowledge { framework_id: fw(), task_id: TaskId::new(name(i)), uuid: u });
                        }
                    }
                    Op::Kill(i) => a.handle(now, Input::KillTask { framework_id: fw(), task_id: TaskId::new(name(i)), grace: None }),
                    Op::Exit(i) => {
                        if let Some(c) = containers.remove(&i) {
                            a.handle(now, Input::ContainerExited { container_id: c, termination: Termination::default() });
                        }
                    }
                    Op::Shutdown => a.handle(now, Input::ShutdownFramework { framework_id: fw() }),
                }
                for o in drain_all(&mut a) {
                    match o {
                        Output::Checkpoint(c) => log.push(c),
                        Output::Launch(spec) => {
                            let i: u8 = spec.executor_id.as_str()[1..].parse().unwrap();
                            containers.insert(i, spec.container_id);
                        }
                        _ => {}
                    }
                }
            }
            let mut from_log = Agent::new(AgentConfig::default(), 2);
            from_log.recover(t(1000), log);
            prop_assert_eq!(fingerprint(&from_log), fingerprint(&a));
            let mut from_snapshot = Agent::new(AgentConfig::default(), 3);
            from_snapshot.recover(t(1000), a.checkpoint_snapshot());
            prop_assert_eq!(fingerprint(&from_snapshot), fingerprint(&a));
        }
    }
}

fn executor_task(id: &str) -> TaskInfo {
    TaskInfo {
        executor: Some(cairn_model::ExecutorInfo {
            executor_id: ExecutorId::new("ex"),
            name: "mine".into(),
            command: CommandInfo::shell("./my-executor"),
        }),
        ..task(id)
    }
}

#[test]
fn a_framework_executor_runs_every_task_naming_it_and_is_asked_not_destroyed() {
    let mut a = Agent::new(AgentConfig::default(), 1);
    a.handle(
        t(0),
        Input::Registered {
            agent_id: AgentId::new("a"),
        },
    );
    for id in ["t1", "t2"] {
        a.handle(
            t(0),
            Input::RunTask {
                framework: framework(),
                task: executor_task(id),
            },
        );
    }
    // One container, started with the executor's command; the second task
    // waits in it for the executor to subscribe, and the container grows
    // to hold both.
    let out = drain(&mut a);
    let [
        Output::Launch(spec),
        Output::UpdateContainer {
            container_id,
            resources,
        },
    ] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!(container_id, &spec.container_id);
    assert_eq!(resources, &spec.resources.plus(&spec.resources));
    assert_eq!(spec.executor_id.as_str(), "ex");
    assert_eq!(
        spec.command.as_ref().map(|c| c.value.as_str()),
        Some("./my-executor")
    );
    let conn = ExecConn(7);
    a.handle(
        t(1),
        Input::ExecutorSubscribed {
            conn,
            framework_id: fw(),
            executor_id: ExecutorId::new("ex"),
        },
    );
    let launched: Vec<_> = drain(&mut a)
        .into_iter()
        .filter_map(|o| match o {
            Output::ToExecutor {
                command: ExecutorCommand::Launch { task, .. },
                ..
            } => Some(task.task_id),
            _ => None,
        })
        .collect();
    assert_eq!(launched, vec![TaskId::new("t1"), TaskId::new("t2")]);
    // A third task goes straight to the running executor.
    a.handle(
        t(2),
        Input::RunTask {
            framework: framework(),
            task: executor_task("t3"),
        },
    );
    let out = drain(&mut a);
    assert!(
        matches!(
            out.as_slice(),
            [
                Output::ToExecutor { command: ExecutorCommand::Launch { task, .. }, .. },
                Output::UpdateContainer { resources, .. },
            ] if task.task_id.as_str() == "t3"
                && resources.cpus() == cairn_model::Scalar::from_units(3)
        ),
        "{out:?}"
    );
    // A kill asks the executor; the container is not destroyed after the
    // grace (the executor runs other tasks).
    a.handle(
        t(3),
        Input::KillTask {
            framework_id: fw(),
            task_id: TaskId::new("t1"),
            grace: Some(Duration::from_secs(1)),
        },
    );
    assert!(matches!(
        drain(&mut a).as_slice(),
        [Output::ToExecutor {
            command: ExecutorCommand::Kill { .. },
            ..
        }]
    ));
    assert_eq!(a.poll_timeout(), None, "no destroy is scheduled");
    // Messages both ways, and a shutdown asked for by the framework.
    a.handle(
        t(4),
        Input::FrameworkMessage {
            framework_id: fw(),
            executor_id: ExecutorId::new("ex"),
            data: b"hi".to_vec(),
        },
    );
    assert!(matches!(
        drain(&mut a).as_slice(),
        [Output::ToExecutor { command: ExecutorCommand::Message { data }, .. }] if data == b"hi"
    ));
    a.handle(
        t(5),
        Input::ExecutorMessage {
            conn,
            data: b"yo".to_vec(),
        },
    );
    assert!(matches!(
        drain(&mut a).as_slice(),
        [Output::MessageToFramework { executor_id, data, .. }] if executor_id.as_str() == "ex" && data == b"yo"
    ));
    a.handle(
        t(6),
        Input::ShutdownExecutor {
            framework_id: fw(),
            executor_id: ExecutorId::new("ex"),
        },
    );
    assert!(matches!(
        drain(&mut a).as_slice(),
        [Output::ToExecutor {
            command: ExecutorCommand::Shutdown { .. },
            ..
        }]
    ));
}
