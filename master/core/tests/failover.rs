//! Failover of the master's core: a new leader recovers from the registry
//! and from what agents and frameworks tell it when they come back.

mod common;

use cairn_master_core::{AgentCommand, Call, Event, Input, MasterConfig};
use cairn_model::{Capability, FrameworkInfo, TaskId, TaskState};
use common::*;

fn config() -> MasterConfig {
    MasterConfig {
        agent_ping_timeout: secs(3600),
        agent_reregister_timeout: secs(30),
        ..MasterConfig::default()
    }
}

/// One agent running task "t" of framework "f" (failover timeout 60 s).
fn running_cluster() -> (Sim, Ag, Fw, cairn_model::TaskInfo) {
    let mut sim = Sim::new(config());
    let a = sim.agent("cpus:2;mem:1024");
    let mut info = FrameworkInfo::new("f", "nobody");
    info.failover_timeout = secs(60);
    info.capabilities.insert(Capability::PartitionAware);
    let fw = sim.framework_with(info);
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    let t = task("t", &a.id, "cpus:1;mem:128");
    sim.launch(&fw, &offer, vec![t.clone()]);
    sim.report(&a, &fw.id, "t", TaskState::Running);
    let _ = sim.updates(&fw);
    (sim, a, fw, t)
}

fn resubscribe(sim: &mut Sim, fw: &Fw) -> Fw {
    let mut info = FrameworkInfo::new("f", "nobody");
    info.id = Some(fw.id.clone());
    info.failover_timeout = secs(60);
    info.capabilities.insert(Capability::PartitionAware);
    sim.framework_with(info)
}

#[test]
fn a_new_leader_rebuilds_tasks_from_returning_agents_and_frameworks() {
    let (mut sim, a, fw, t) = running_cluster();
    sim.fail_over(config());
    assert!(sim.master.is_recovering());
    // The framework comes back first and asks about its task: the agent is
    // not back, so there is no answer yet rather than a wrong one.
    let fw2 = resubscribe(&mut sim, &fw);
    assert_eq!(fw2.id, fw.id);
    sim.call(
        &fw2,
        Call::Reconcile {
            tasks: vec![(TaskId::new("t"), Some(a.id.clone()))],
        },
    )
    .unwrap();
    sim.call(
        &fw2,
        Call::Reconcile {
            tasks: vec![(TaskId::new("t"), None)],
        },
    )
    .unwrap();
    assert!(
        sim.updates(&fw2).is_empty(),
        "no answer while the agent may come back"
    );
    // The agent re-registers with its task.
    let a2 = sim.reregister_with(&a, "cpus:2;mem:1024", &fw.id, t, TaskState::Running);
    assert!(
        sim.take_agent(a2.conn)
            .iter()
            .any(|c| matches!(c, AgentCommand::Registered { agent_id, .. } if *agent_id == a.id))
    );
    assert!(!sim.master.is_recovering());
    sim.call(&fw2, Call::Reconcile { tasks: vec![] }).unwrap();
    let u = sim.updates(&fw2);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Running);
    let snap = sim.master.snapshot();
    assert_eq!(snap.agents[0].used, res("cpus:1;mem:128"));
    sim.check();
}

#[test]
fn an_agent_not_back_in_time_is_marked_unreachable() {
    let (mut sim, a, fw, _t) = running_cluster();
    sim.fail_over(config());
    let fw2 = resubscribe(&mut sim, &fw);
    sim.advance(secs(31));
    let snap = sim.master.snapshot();
    assert_eq!(snap.unreachable_agents.len(), 1);
    assert_eq!(snap.unreachable_agents[0].id, a.id);
    assert!(sim.registry.agents[&a.id].unreachable_since.is_some());
    // Reconciliation now answers: UNREACHABLE for a partition-aware framework.
    sim.call(
        &fw2,
        Call::Reconcile {
            tasks: vec![(TaskId::new("t"), Some(a.id.clone()))],
        },
    )
    .unwrap();
    let u = sim.updates(&fw2);
    assert_eq!(u[0].state, TaskState::Unreachable);
    sim.check();
}

#[test]
fn the_removal_rate_limit_spreads_out_marking_agents_unreachable() {
    let mut sim = Sim::new(config());
    for _ in 0..5 {
        sim.agent("cpus:1;mem:128");
    }
    let limited = MasterConfig {
        agent_removal_rate: Some((2, secs(60))),
        ..config()
    };
    sim.fail_over(limited);
    sim.check();
    sim.advance(secs(31));
    assert_eq!(
        sim.master.snapshot().unreachable_agents.len(),
        2,
        "two per minute"
    );
    sim.check();
    sim.advance(secs(60));
    assert_eq!(sim.master.snapshot().unreachable_agents.len(), 4);
    sim.advance(secs(60));
    assert_eq!(sim.master.snapshot().unreachable_agents.len(), 5);
    assert!(sim.master.snapshot().counters.agent_removals_delayed > 0);
    sim.check();
}

#[test]
fn a_framework_away_before_the_failover_keeps_its_deadline() {
    let (mut sim, a, fw, t) = running_cluster();
    sim.input(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    sim.advance(secs(40));
    sim.fail_over(config());
    sim.reregister_with(&a, "cpus:2;mem:1024", &fw.id, t, TaskState::Running);
    // 60 s after it left, not 60 s after the failover.
    sim.advance(secs(19));
    assert_eq!(sim.master.snapshot().frameworks.len(), 1);
    sim.advance(secs(2));
    assert!(
        sim.master.snapshot().frameworks.is_empty(),
        "removed at its original deadline"
    );
    assert!(sim.registry.frameworks.is_empty());
    assert!(sim.registry.removed_frameworks.contains_key(&fw.id));
}

#[test]
fn a_framework_connected_at_the_failover_gets_its_full_timeout_to_return() {
    let (mut sim, _a, fw, _t) = running_cluster();
    sim.fail_over(config());
    // 60 s failover timeout, but the recovery grace (2 min) is longer.
    sim.advance(secs(119));
    assert_eq!(sim.master.snapshot().frameworks.len(), 1);
    let back = resubscribe(&mut sim, &fw);
    assert_eq!(back.id, fw.id);
    sim.advance(secs(300));
    assert_eq!(sim.master.snapshot().frameworks.len(), 1);
}

#[test]
fn admission_waits_for_the_registry() {
    let mut sim = Sim::new(config());
    sim.auto_persist = false;
    let conn = sim.conn();
    sim.input(Input::AgentRegister {
        conn,
        agent_id: None,
        info: cairn_model::AgentInfo {
            hostname: "h".into(),
            address: "h:1".into(),
            resources: res("cpus:1;mem:128"),
            attributes: vec![],
            tls: false,
        },
        tasks: vec![],
        frameworks: vec![],
    })
    .unwrap();
    assert!(
        sim.take_agent(conn).is_empty(),
        "not registered before the write is durable"
    );
    assert!(sim.master.snapshot().agents.is_empty());
    let persist = sim.held_persist().expect("a registry write");
    sim.input(Input::Persisted { id: persist }).unwrap();
    assert!(matches!(
        sim.take_agent(conn).as_slice(),
        [AgentCommand::Registered { .. }]
    ));
    assert_eq!(sim.master.snapshot().agents.len(), 1);
}

#[test]
fn a_subscription_whose_stream_ended_before_the_write_leaves_the_framework_disconnected() {
    let mut sim = Sim::new(config());
    sim.auto_persist = false;
    let conn = sim.conn();
    let mut info = FrameworkInfo::new("f", "nobody");
    info.failover_timeout = secs(60);
    sim.input(Input::Subscribe {
        conn,
        info,
        suppressed_roles: vec![],
        principal: None,
    })
    .unwrap();
    sim.input(Input::FrameworkDisconnected { conn }).unwrap();
    sim.auto_persist = true;
    let persist = sim.held_persist().expect("a registry write");
    sim.input(Input::Persisted { id: persist }).unwrap();
    let snap = sim.master.snapshot();
    assert_eq!(snap.frameworks.len(), 1);
    assert!(!snap.frameworks[0].connected);
    assert!(snap.frameworks[0].failover_deadline.is_some());
    assert!(
        !sim.take_events(conn)
            .iter()
            .any(|e| matches!(e, Event::Offers(_)))
    );
}

#[test]
fn a_task_that_ended_unheard_during_the_failover_is_answered_with_its_end() {
    let (mut sim, a, fw, t) = running_cluster();
    sim.fail_over(config());
    let fw2 = resubscribe(&mut sim, &fw);
    // The task finished while no master listened: the agent still holds
    // the unacknowledged FINISHED and reports the task ended.
    let a2 = sim.reregister_with(&a, "cpus:2;mem:1024", &fw.id, t, TaskState::Finished);
    // Reconciliation tells how it ended, not that it is unknown (which a
    // framework takes as LOST, a second, different end).
    sim.call(
        &fw2,
        Call::Reconcile {
            tasks: vec![(TaskId::new("t"), None)],
        },
    )
    .unwrap();
    let u = sim.updates(&fw2);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].state, TaskState::Finished);
    // It holds no resources.
    assert_eq!(sim.master.snapshot().agents[0].used, res(""));
    // The agent re-sends its updates in order: the RUNNING it still holds
    // is superseded (the framework knows the task ended); the master
    // acknowledges it for the framework rather than relay it.
    let _ = sim.take_agent(a2.conn);
    let running = sim.report(&a2, &fw.id, "t", TaskState::Running);
    assert!(
        sim.updates(&fw2).is_empty(),
        "a finished task never runs again"
    );
    assert!(
        sim.take_agent(a2.conn)
            .iter()
            .any(|c| matches!(c, AgentCommand::Acknowledge { uuid, .. } if *uuid == running)),
        "the superseded update is acknowledged to the agent"
    );
    // The agent's own copy of the end is relayed; its acknowledgement
    // completes the task.
    let uuid = sim.report(&a2, &fw.id, "t", TaskState::Finished);
    let u = sim.updates(&fw2);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].state, TaskState::Finished);
    sim.ack(&fw2, &a.id, "t", uuid);
    let snap = sim.master.snapshot();
    assert!(
        snap.frameworks[0].tasks.is_empty(),
        "{:?}",
        snap.frameworks[0].tasks
    );
    sim.check();
}

#[test]
fn the_registry_keeps_a_bounded_number_of_unreachable_agents_and_removed_frameworks() {
    let mut sim = Sim::new(MasterConfig {
        agent_ping_timeout: secs(5),
        max_unreachable_agents: 2,
        max_completed_frameworks: 1,
        ..config()
    });
    let mut agents = Vec::new();
    for _ in 0..4 {
        agents.push(sim.agent("cpus:1;mem:128"));
        // Each goes silent a second after the one before.
        sim.advance(secs(1));
    }
    sim.advance(secs(30));
    // The two that became unreachable last are kept, in the registry too.
    let kept: Vec<_> = sim.registry.agents.keys().cloned().collect();
    assert_eq!(kept, vec![agents[2].id.clone(), agents[3].id.clone()]);
    assert!(
        sim.registry
            .agents
            .values()
            .all(|a| a.unreachable_since.is_some())
    );
    assert_eq!(sim.master.snapshot().unreachable_agents.len(), 2);

    let mut ids = Vec::new();
    for n in 0..3 {
        let fw = sim.framework(&format!("f{n}"));
        sim.call(&fw, Call::Teardown).unwrap();
        ids.push(fw.id);
    }
    let removed: Vec<_> = sim.registry.removed_frameworks.keys().cloned().collect();
    assert_eq!(
        removed,
        vec![ids[2].clone()],
        "only the newest removal is remembered"
    );
    assert!(sim.registry.frameworks.is_empty());
    sim.check();
}

#[test]
fn update_framework_is_written_before_it_applies_and_survives_a_failover() {
    let (mut sim, _a, fw, _t) = running_cluster();
    let mut info = FrameworkInfo::new("renamed", "nobody");
    info.id = Some(fw.id.clone());
    info.failover_timeout = secs(600);
    sim.auto_persist = false;
    sim.call(
        &fw,
        Call::UpdateFramework {
            info: info.clone(),
            suppressed_roles: vec![],
        },
    )
    .unwrap();
    assert_eq!(
        sim.master.snapshot().frameworks[0].info.name,
        "f",
        "not before the registry has it"
    );
    sim.persist_all();
    assert_eq!(sim.master.snapshot().frameworks[0].info.name, "renamed");
    assert_eq!(
        sim.registry.frameworks[&fw.id].info.failover_timeout,
        secs(600)
    );
    sim.fail_over(config());
    assert_eq!(sim.master.snapshot().frameworks[0].info.name, "renamed");
    // Another user is refused.
    let mut other = info;
    other.user = "root".into();
    let fw2 = resubscribe(&mut sim, &fw);
    assert!(
        sim.call(
            &fw2,
            Call::UpdateFramework {
                info: other,
                suppressed_roles: vec![]
            }
        )
        .is_err()
    );
}
