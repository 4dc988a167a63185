//! Scenario tests of the master's core, driven without I/O.

mod common;

use std::collections::BTreeMap;

use cairn_master_core::{
    AgentCommand, Call, CallError, Event, Input, LaunchRequest, MasterConfig, ReportedTask,
};
use cairn_model::{Capability, FrameworkInfo, Reason, Role, TaskId, TaskState};
use common::*;

#[test]
fn a_new_agent_is_offered_whole_to_a_subscribed_framework() {
    let mut sim = Sim::new(MasterConfig::default());
    let ag = sim.agent("cpus:4;mem:4096;ports:[31000-31010]");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offers = sim.offers(&fw);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent_id, ag.id);
    assert_eq!(
        offers[0].resources,
        res("cpus:4;mem:4096;ports:[31000-31010]")
    );
    sim.check();
    // Outstanding offers hold their resources: nothing more is offered.
    sim.advance(secs(3));
    assert!(sim.offers(&fw).is_empty());
}

#[test]
fn drf_brings_two_task_shapes_within_one_task_of_each_other() {
    // The DRF paper's example: 9 cpus and 18 GB; A's tasks are <1 cpu, 4 GB>
    // (memory-dominant), B's are <3 cpus, 1 GB> (cpu-dominant).
    let mut sim = Sim::new(MasterConfig::default());
    for _ in 0..3 {
        sim.agent("cpus:3;mem:6144");
    }
    let a = sim.framework("a");
    let b = sim.framework("b");
    let shapes = [(&a, "cpus:1;mem:4096"), (&b, "cpus:3;mem:1024")];
    let mut launched: BTreeMap<String, usize> = BTreeMap::new();
    for _round in 0..40 {
        sim.advance(secs(1));
        for (fw, shape) in shapes {
            for offer in sim.offers(fw) {
                // One task per offer, the rest back to the pool, so the
                // allocator's ordering decides who gets what.
                if offer.resources.contains(&res(shape)) {
                    let n = launched.entry(fw.id.to_string()).or_default();
                    *n += 1;
                    let t = task(&format!("{}-{n}", fw.id), &offer.agent_id, shape);
                    sim.launch(fw, &offer, vec![t]);
                } else {
                    sim.decline(fw, &offer, secs(1));
                }
            }
        }
        sim.check();
    }
    let na = launched.get(&a.id.to_string()).copied().unwrap_or(0) as f64;
    let nb = launched.get(&b.id.to_string()).copied().unwrap_or(0) as f64;
    let share_a = na * 4096.0 / 18432.0;
    let share_b = nb * 3.0 / 9.0;
    let one_task = (4096.0_f64 / 18432.0).max(3.0 / 9.0);
    assert!(na >= 1.0 && nb >= 1.0, "both ran tasks: a={na} b={nb}");
    assert!(
        (share_a - share_b).abs() <= one_task + 1e-9,
        "dominant shares a={share_a:.3} ({na} tasks) b={share_b:.3} ({nb} tasks) differ by more than one task"
    );
}

#[test]
fn role_weights_divide_the_cluster_in_proportion() {
    let heavy = Role::parse("r", "heavy").unwrap();
    let light = Role::parse("r", "light").unwrap();
    let mut config = MasterConfig::default();
    config.role_weights.insert(heavy.clone(), 2.0);
    let mut sim = Sim::new(config);
    for _ in 0..30 {
        sim.agent("cpus:1;mem:1024");
    }
    let mut fws = Vec::new();
    for (name, role) in [("h", &heavy), ("l", &light)] {
        let mut info = FrameworkInfo::new(name, "nobody");
        info.roles = vec![role.clone()];
        fws.push(sim.framework_with(info));
    }
    sim.advance(secs(1));
    let mut got = Vec::new();
    for fw in &fws {
        let offers = sim.offers(fw);
        got.push(offers.len());
        for (i, o) in offers.iter().enumerate() {
            let t = task(&format!("t{i}"), &o.agent_id, "cpus:1;mem:1024");
            sim.launch(fw, o, vec![t]);
        }
    }
    sim.check();
    assert_eq!(got, vec![20, 10], "weight 2 vs 1 over 30 agents");
}

#[test]
fn a_declined_offer_is_not_made_again_until_its_filter_expires() {
    let mut sim = Sim::new(MasterConfig::default());
    let ag = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.decline(&fw, &offer, secs(10));
    sim.check();
    sim.advance(secs(9));
    assert!(sim.offers(&fw).is_empty(), "filtered for 10 s");
    sim.advance(secs(2));
    let again = sim.offers(&fw);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].agent_id, ag.id);
}

#[test]
fn a_filter_on_one_framework_leaves_the_agent_to_others() {
    let mut sim = Sim::new(MasterConfig::default());
    sim.agent("cpus:2;mem:1024");
    let f1 = sim.framework("f1");
    let f2 = sim.framework("f2");
    sim.advance(secs(0));
    let o1 = sim.offers(&f1);
    let o2 = sim.offers(&f2);
    let (holder, other, offer) = if o1.len() == 1 {
        (&f1, &f2, o1[0].clone())
    } else {
        (&f2, &f1, o2[0].clone())
    };
    sim.decline(holder, &offer, secs(60));
    sim.advance(secs(1));
    assert_eq!(sim.offers(other).len(), 1);
    assert!(sim.offers(holder).is_empty());
}

#[test]
fn suppress_stops_offers_and_revive_resumes_them_and_clears_filters() {
    let mut sim = Sim::new(MasterConfig::default());
    sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.call(&fw, Call::Suppress { roles: vec![] }).unwrap();
    sim.decline(&fw, &offer, secs(0));
    sim.advance(secs(5));
    assert!(sim.offers(&fw).is_empty(), "suppressed");
    let snap = sim.master.snapshot();
    assert_eq!(
        snap.frameworks[0].suppressed_roles,
        vec![Role::default_role()]
    );
    sim.call(&fw, Call::Revive { roles: vec![] }).unwrap();
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    // A long filter, then REVIVE: offered again at once.
    sim.decline(&fw, &offer, secs(3600));
    sim.advance(secs(2));
    assert!(sim.offers(&fw).is_empty());
    sim.call(&fw, Call::Revive { roles: vec![] }).unwrap();
    sim.advance(secs(0));
    assert_eq!(sim.offers(&fw).len(), 1);
}

#[test]
fn a_hoarded_offer_is_rescinded_at_the_offer_timeout_and_offered_again() {
    let config = MasterConfig {
        offer_timeout: Some(secs(5)),
        ..MasterConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.advance(secs(4));
    assert!(
        !sim.take_events(fw.conn)
            .iter()
            .any(|e| matches!(e, Event::Rescind(_)))
    );
    sim.advance(secs(1));
    let events = sim.take_events(fw.conn);
    assert!(
        events.contains(&Event::Rescind(offer.id.clone())),
        "{events:?}"
    );
    let reoffered: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Offers(o) => Some(o.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(reoffered.len(), 1);
    assert_ne!(reoffered[0].id, offer.id);
    // Accepting the rescinded offer now fails: its task is LOST, never run.
    let t = task("late", &offer.agent_id, "cpus:1;mem:128");
    sim.launch(&fw, &offer, vec![t]);
    let u = sim.updates(&fw);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Lost);
    assert_eq!(u[0].reason, Some(Reason::InvalidOffers));
    sim.check();
}

#[test]
fn a_silent_agent_loses_its_tasks_and_offers_after_the_ping_timeout() {
    let config = MasterConfig {
        agent_ping_timeout: secs(10),
        ..MasterConfig::default()
    };
    let mut sim = Sim::new(config);
    let a = sim.agent("cpus:4;mem:4096");
    let b = sim.agent("cpus:4;mem:4096");
    let f1 = sim.framework("f1");
    sim.advance(secs(0));
    let offers = sim.offers(&f1);
    let on_a = offers.iter().find(|o| o.agent_id == a.id).unwrap().clone();
    let on_b = offers.iter().find(|o| o.agent_id == b.id).unwrap().clone();
    sim.launch(&f1, &on_a, vec![task("t1", &a.id, "cpus:1;mem:128")]);
    sim.report(&a, &f1.id, "t1", TaskState::Running);
    let _ = sim.updates(&f1);
    // b keeps heartbeating; a goes silent. f1 holds b's offer.
    for _ in 0..12 {
        sim.advance(secs(1));
        sim.input(Input::AgentHeartbeat { conn: b.conn }).unwrap();
    }
    let events = sim.take_events(f1.conn);
    let lost: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Update(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1, "{events:?}");
    assert_eq!(lost[0].state, TaskState::Lost);
    assert_eq!(lost[0].reason, Some(Reason::AgentRemoved));
    assert_eq!(lost[0].task_id, TaskId::new("t1"));
    assert!(lost[0].uuid.is_none(), "master-made updates carry no uuid");
    assert!(events.contains(&Event::Failure {
        agent_id: a.id.clone(),
        executor_id: None,
        status: None
    }));
    // b's offer survives; a is gone from the registry.
    let snap = sim.master.snapshot();
    assert_eq!(snap.agents.len(), 1);
    assert_eq!(snap.unreachable_agents.len(), 1);
    assert_eq!(snap.unreachable_agents[0].id, a.id);
    assert!(snap.frameworks[0].offers.iter().any(|o| o.id == on_b.id));
    sim.check();
}

#[test]
fn an_agent_offer_is_rescinded_when_the_agent_is_lost() {
    let config = MasterConfig {
        agent_ping_timeout: secs(10),
        ..MasterConfig::default()
    };
    let mut sim = Sim::new(config);
    let a = sim.agent("cpus:4;mem:4096");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.advance(secs(11));
    let events = sim.take_events(fw.conn);
    assert!(
        events.contains(&Event::Rescind(offer.id.clone())),
        "{events:?}"
    );
    assert!(events.contains(&Event::Failure {
        agent_id: a.id.clone(),
        executor_id: None,
        status: None
    }));
    sim.check();
}

#[test]
fn a_partition_aware_framework_sees_unreachable_and_then_running_again() {
    let config = MasterConfig {
        agent_ping_timeout: secs(10),
        ..MasterConfig::default()
    };
    let mut sim = Sim::new(config);
    let a = sim.agent("cpus:4;mem:4096");
    let mut info = FrameworkInfo::new("pa", "nobody");
    info.capabilities.insert(Capability::PartitionAware);
    info.failover_timeout = secs(3600);
    let fw = sim.framework_with(info);
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    let t = task("t1", &a.id, "cpus:1;mem:128");
    sim.launch(&fw, &offer, vec![t.clone()]);
    let uuid = sim.report(&a, &fw.id, "t1", TaskState::Running);
    sim.ack(&fw, &a.id, "t1", uuid);
    let _ = sim.updates(&fw);
    sim.advance(secs(11));
    let u = sim.updates(&fw);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Unreachable);
    sim.check();
    // The agent comes back with the task still running.
    let a2 = sim.reregister_with(&a, "cpus:4;mem:4096", &fw.id, t, TaskState::Running);
    let u = sim.updates(&fw);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].state, TaskState::Running);
    assert_eq!(u[0].reason, Some(Reason::AgentReregistered));
    assert!(
        sim.take_agent(a2.conn)
            .iter()
            .all(|c| !matches!(c, AgentCommand::KillTask { .. }))
    );
    let snap = sim.master.snapshot();
    assert_eq!(snap.frameworks[0].tasks.len(), 1);
    assert_eq!(snap.frameworks[0].tasks[0].state, TaskState::Running);
    assert_eq!(snap.agents[0].used, res("cpus:1;mem:128"));
    sim.check();
}

#[test]
fn invalid_accepts_are_answered_with_task_error_or_lost_and_the_master_keeps_serving() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:2;mem:1024");
    let b = sim.agent("cpus:2;mem:1024");
    let f1 = sim.framework("f1");
    let f2 = sim.framework("f2");
    sim.advance(secs(0));
    let o1 = sim.offers(&f1);
    let o2 = sim.offers(&f2);
    assert_eq!((o1.len(), o2.len()), (1, 1));
    let (mine, theirs) = (o1[0].clone(), o2[0].clone());

    // Someone else's offer: LOST with INVALID_OFFERS; their offer stands.
    let t = task("steal", &theirs.agent_id, "cpus:1;mem:128");
    sim.launch(&f1, &theirs, vec![t]);
    let u = sim.updates(&f1);
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Lost, Some(Reason::InvalidOffers))
    );
    assert!(
        u[0].message.contains("not made to this framework"),
        "{}",
        u[0].message
    );
    assert!(
        sim.master
            .snapshot()
            .frameworks
            .iter()
            .any(|f| f.offers.iter().any(|o| o.id == theirs.id))
    );

    // More than offered, a wrong agent, an empty command, a duplicate id in
    // one ACCEPT: TASK_ERROR each, the valid task launches.
    let agent = mine.agent_id.clone();
    let other = if agent == a.id {
        b.id.clone()
    } else {
        a.id.clone()
    };
    let mut empty = task("empty", &agent, "cpus:0.1;mem:32");
    empty.command.value.clear();
    let tasks = vec![
        task("too-big", &agent, "cpus:3;mem:128"),
        task("elsewhere", &other, "cpus:1;mem:128"),
        empty,
        task("ok", &agent, "cpus:1;mem:128"),
        task("ok", &agent, "cpus:0.5;mem:64"),
    ];
    // No filter on the rest, so f1 (the lower share) is offered it next.
    sim.call(
        &f1,
        Call::Accept {
            offer_ids: vec![mine.id.clone()],
            launches: tasks.into_iter().map(LaunchRequest::Task).collect(),
            refuse: secs(0),
        },
    )
    .unwrap();
    let u = sim.updates(&f1);
    let by_id: BTreeMap<_, _> = u
        .iter()
        .map(|s| (s.task_id.to_string(), s.clone()))
        .collect();
    assert_eq!(u.len(), 4, "{u:?}");
    for id in ["too-big", "elsewhere", "empty"] {
        assert_eq!(by_id[id].state, TaskState::Error, "{id}");
        assert_eq!(by_id[id].reason, Some(Reason::TaskInvalid), "{id}");
    }
    assert!(by_id["too-big"].message.contains("more resources"));
    assert!(by_id["ok"].message.contains("already in use"));
    let agent_cmds = sim.take_agent(if agent == a.id { a.conn } else { b.conn });
    let launched: Vec<_> = agent_cmds
        .iter()
        .filter_map(|c| match c {
            AgentCommand::RunTask { task, .. } => Some(task.task_id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(launched, vec!["ok"]);

    // A duplicate of a live task in a later ACCEPT.
    sim.advance(secs(1));
    let again = sim.offers(&f1);
    eprintln!(
        "again={again:?} snap={:#?}",
        sim.master
            .snapshot()
            .frameworks
            .iter()
            .map(|f| (f.id.clone(), f.offers.clone()))
            .collect::<Vec<_>>()
    );
    let o = again.iter().find(|o| o.agent_id == agent).unwrap().clone();
    sim.launch(&f1, &o, vec![task("ok", &agent, "cpus:0.5;mem:64")]);
    let u = sim.updates(&f1);
    assert_eq!(u[0].state, TaskState::Error);
    assert!(u[0].message.contains("already in use"));

    // An unknown offer: LOST; a malformed task: ERROR.
    sim.call(
        &f1,
        Call::Accept {
            offer_ids: vec![cairn_model::OfferId::new("no-such-offer")],
            launches: vec![LaunchRequest::Malformed {
                task_id: TaskId::new("m"),
                reason: "bad".into(),
            }],
            refuse: secs(5),
        },
    )
    .unwrap();
    let u = sim.updates(&f1);
    assert_eq!(u[0].state, TaskState::Lost);
    sim.check();
    // The master still serves: f2's offer is intact and usable.
    sim.launch(
        &f2,
        &theirs,
        vec![task("f2-ok", &theirs.agent_id, "cpus:1;mem:128")],
    );
    assert!(sim.updates(&f2).is_empty());
    sim.check();
}

#[test]
fn a_terminal_update_frees_resources_at_once_and_the_ack_completes_the_task() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:1;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:1024")]);
    let run = sim.take_agent(a.conn);
    assert!(
        matches!(run.as_slice(), [AgentCommand::RunTask { .. }]),
        "{run:?}"
    );
    let u1 = sim.report(&a, &fw.id, "t", TaskState::Running);
    let got = sim.updates(&fw);
    assert_eq!(
        got[0].uuid,
        Some(u1),
        "agent updates are relayed with their uuid"
    );
    sim.ack(&fw, &a.id, "t", u1);
    assert!(matches!(
        sim.take_agent(a.conn).as_slice(),
        [AgentCommand::Acknowledge { uuid, .. }] if *uuid == u1
    ));
    let u2 = sim.report(&a, &fw.id, "t", TaskState::Finished);
    let _ = sim.updates(&fw);
    // Freed before the acknowledgement: re-offered in the triggered cycle.
    sim.fire_due();
    assert_eq!(sim.offers(&fw).len(), 1);
    let snap = sim.master.snapshot();
    assert_eq!(snap.frameworks[0].tasks.len(), 1, "kept until acknowledged");
    sim.ack(&fw, &a.id, "t", u2);
    let snap = sim.master.snapshot();
    assert!(snap.frameworks[0].tasks.is_empty());
    assert_eq!(
        snap.frameworks[0].completed_tasks[0].state,
        TaskState::Finished
    );
    // A re-sent update after completion is still relayed (so it can be acked).
    sim.report(&a, &fw.id, "t", TaskState::Finished);
    assert_eq!(sim.updates(&fw).len(), 1);
    sim.check();
}

#[test]
fn kill_reaches_the_agent_and_an_unknown_task_is_reported_lost() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:1;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:1024")]);
    let _ = sim.take_agent(a.conn);
    sim.call(
        &fw,
        Call::Kill {
            task_id: TaskId::new("t"),
            agent_id: None,
            kill_policy: None,
        },
    )
    .unwrap();
    assert!(matches!(
        sim.take_agent(a.conn).as_slice(),
        [AgentCommand::KillTask { task_id, .. }] if task_id.as_str() == "t"
    ));
    sim.call(
        &fw,
        Call::Kill {
            task_id: TaskId::new("nope"),
            agent_id: None,
            kill_policy: None,
        },
    )
    .unwrap();
    let u = sim.updates(&fw);
    assert_eq!(u[0].state, TaskState::Lost);
    assert_eq!(u[0].reason, Some(Reason::Reconciliation));
}

#[test]
fn reconciliation_answers_known_tasks_and_reports_unknown_ones() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(
        &fw,
        &offer,
        vec![
            task("r", &a.id, "cpus:1;mem:128"),
            task("s", &a.id, "cpus:1;mem:128"),
        ],
    );
    sim.report(&a, &fw.id, "r", TaskState::Running);
    let _ = sim.updates(&fw);
    sim.call(&fw, Call::Reconcile { tasks: vec![] }).unwrap();
    let mut u = sim.updates(&fw);
    u.sort_by(|x, y| x.task_id.cmp(&y.task_id));
    assert_eq!(u.len(), 2);
    assert_eq!(
        (u[0].state, u[1].state),
        (TaskState::Running, TaskState::Staging)
    );
    assert!(
        u.iter()
            .all(|s| s.reason == Some(Reason::Reconciliation) && s.uuid.is_none())
    );
    sim.call(
        &fw,
        Call::Reconcile {
            tasks: vec![
                (TaskId::new("r"), None),
                (TaskId::new("ghost"), Some(a.id.clone())),
            ],
        },
    )
    .unwrap();
    let u = sim.updates(&fw);
    assert_eq!(u[0].state, TaskState::Running);
    assert_eq!(u[1].state, TaskState::Lost);
}

#[test]
fn teardown_kills_the_tasks_frees_everything_and_retires_the_id() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:128")]);
    let _ = sim.take_agent(a.conn);
    sim.call(&fw, Call::Teardown).unwrap();
    assert!(sim.take_agent(a.conn).iter().any(
        |c| matches!(c, AgentCommand::ShutdownFramework { framework_id } if *framework_id == fw.id)
    ));
    let snap = sim.master.snapshot();
    assert!(snap.frameworks.is_empty());
    assert_eq!(snap.completed_frameworks.len(), 1);
    assert_eq!(
        snap.completed_frameworks[0].completed_tasks[0].state,
        TaskState::Killed
    );
    assert!(snap.agents[0].used.is_empty() && snap.agents[0].offered.is_empty());
    sim.check();
    // Calls and re-subscriptions under the retired id are refused.
    assert_eq!(
        sim.call(&fw, Call::Revive { roles: vec![] }),
        Err(CallError::RemovedFramework(fw.id.clone()))
    );
    let mut info = FrameworkInfo::new("f", "nobody");
    info.id = Some(fw.id.clone());
    let conn = sim.conn();
    sim.input(Input::Subscribe {
        conn,
        info,
        suppressed_roles: vec![],
        principal: None,
    })
    .unwrap();
    let events = sim.take_events(conn);
    assert!(
        matches!(events.as_slice(), [Event::Error(m)] if m.contains("removed")),
        "{events:?}"
    );
}

#[test]
fn a_framework_that_returns_within_its_failover_timeout_keeps_its_tasks() {
    // Agents in this harness do not heartbeat; keep them registered.
    let mut sim = Sim::new(MasterConfig {
        agent_ping_timeout: secs(3600),
        ..MasterConfig::default()
    });
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f"); // failover timeout 60 s
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:128")]);
    sim.input(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    sim.advance(secs(30));
    let mut info = FrameworkInfo::new("f", "nobody");
    info.id = Some(fw.id.clone());
    info.failover_timeout = secs(60);
    let back = sim.framework_with(info);
    assert_eq!(back.id, fw.id);
    assert_ne!(back.stream_id, fw.stream_id);
    // The old stream id is stale now.
    assert!(matches!(
        sim.call(&fw, Call::Revive { roles: vec![] }),
        Err(CallError::StaleStream { .. })
    ));
    sim.advance(secs(60));
    let snap = sim.master.snapshot();
    assert_eq!(snap.frameworks.len(), 1);
    assert_eq!(snap.frameworks[0].tasks.len(), 1);
    sim.check();
}

#[test]
fn a_framework_away_past_its_failover_timeout_is_removed_with_its_tasks() {
    // Agents in this harness do not heartbeat; keep them registered.
    let mut sim = Sim::new(MasterConfig {
        agent_ping_timeout: secs(3600),
        ..MasterConfig::default()
    });
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f"); // failover timeout 60 s
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:128")]);
    let _ = sim.take_agent(a.conn);
    sim.input(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    assert!(matches!(
        sim.call(&fw, Call::Revive { roles: vec![] }),
        Err(CallError::NotSubscribed(_))
    ));
    sim.advance(secs(59));
    assert_eq!(sim.master.snapshot().frameworks.len(), 1);
    sim.advance(secs(2));
    assert!(sim.master.snapshot().frameworks.is_empty());
    assert!(
        sim.take_agent(a.conn)
            .iter()
            .any(|c| matches!(c, AgentCommand::ShutdownFramework { .. }))
    );
    sim.check();
}

#[test]
fn calls_from_unknown_frameworks_are_refused() {
    let mut sim = Sim::new(MasterConfig::default());
    let r = sim.input(Input::Call {
        framework_id: cairn_model::FrameworkId::new("nobody"),
        stream_id: "x".into(),
        call: Call::Revive { roles: vec![] },
    });
    assert!(matches!(r, Err(CallError::UnknownFramework(_))));
}

#[test]
fn a_reregistering_agent_that_never_got_a_launch_has_the_task_reported_lost() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:128")]);
    // The session breaks before the agent saw RunTask; it reconnects with no tasks.
    sim.input(Input::AgentDisconnected { conn: a.conn })
        .unwrap();
    sim.reregister(&a, "cpus:2;mem:1024", vec![]);
    let u = sim.updates(&fw);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].state, TaskState::Lost);
    assert!(sim.master.snapshot().agents[0].used.is_empty());
    sim.check();
}

#[test]
fn a_status_update_for_a_task_on_another_agent_is_refused() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:2;mem:1024");
    let b = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim
        .offers(&fw)
        .into_iter()
        .find(|o| o.agent_id == a.id)
        .unwrap();
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:128")]);
    sim.report(&b, &fw.id, "t", TaskState::Finished);
    assert!(sim.updates(&fw).is_empty());
    assert_eq!(
        sim.master.snapshot().frameworks[0].tasks[0].state,
        TaskState::Staging
    );
    sim.check();
}

#[test]
fn the_same_seed_and_inputs_give_the_same_outputs() {
    let run = || {
        let mut sim = Sim::new(MasterConfig::default());
        for _ in 0..20 {
            sim.agent("cpus:2;mem:1024");
        }
        let f1 = sim.framework("a");
        let f2 = sim.framework("b");
        sim.advance(secs(1));
        let mut ids: Vec<String> = sim
            .offers(&f1)
            .iter()
            .map(|o| o.agent_id.to_string())
            .collect();
        ids.extend(sim.offers(&f2).iter().map(|o| o.agent_id.to_string()));
        ids
    };
    assert_eq!(run(), run());
}

#[test]
fn a_reregistering_agent_brings_back_the_frameworks_it_holds_updates_for() {
    let mut sim = Sim::new(MasterConfig::default());
    let mut info = FrameworkInfo::new("old", "nobody");
    info.id = Some(cairn_model::FrameworkId::new("from-an-earlier-master"));
    info.failover_timeout = secs(60);
    let conn = sim.conn();
    sim.input(Input::AgentRegister {
        conn,
        agent_id: Some(cairn_model::AgentId::new("earlier-agent")),
        info: cairn_model::AgentInfo {
            hostname: "h".into(),
            address: "h:1".into(),
            resources: res("cpus:1;mem:128"),
            attributes: vec![],
            tls: false,
        },
        tasks: vec![],
        frameworks: vec![info],
    })
    .unwrap();
    let snap = sim.master.snapshot();
    assert_eq!(snap.frameworks.len(), 1);
    assert!(!snap.frameworks[0].connected);
    // Its re-sent update is relayed, not answered with a shutdown.
    let ag = Ag {
        id: cairn_model::AgentId::new("earlier-agent"),
        conn,
    };
    let _ = sim.take_agent(conn);
    sim.report(
        &ag,
        &cairn_model::FrameworkId::new("from-an-earlier-master"),
        "t",
        TaskState::Finished,
    );
    assert!(sim.take_agent(conn).is_empty());
    sim.check();
}

fn long_ping() -> MasterConfig {
    MasterConfig {
        agent_ping_timeout: secs(10),
        ..MasterConfig::default()
    }
}

#[test]
fn a_returning_agent_does_not_overwrite_a_task_relaunched_elsewhere() {
    let mut sim = Sim::new(long_ping());
    let a = sim.agent("cpus:2;mem:1024");
    let b = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offers = sim.offers(&fw);
    let on_a = offers.iter().find(|o| o.agent_id == a.id).unwrap().clone();
    let on_b = offers.iter().find(|o| o.agent_id == b.id).unwrap().clone();
    let t_a = task("t", &a.id, "cpus:1;mem:128");
    sim.launch(&fw, &on_a, vec![t_a.clone()]);
    // a goes silent past the ping timeout (b keeps heartbeating): t is LOST.
    for _ in 0..11 {
        sim.advance(secs(1));
        sim.input(Input::AgentHeartbeat { conn: b.conn }).unwrap();
    }
    assert_eq!(sim.updates(&fw)[0].state, TaskState::Lost);
    // The framework relaunches t on b.
    sim.launch(&fw, &on_b, vec![task("t", &b.id, "cpus:1;mem:128")]);
    let _ = sim.take_agent(b.conn);
    // a comes back, still running its copy of t: that copy is killed.
    let a2 = sim.reregister_with(&a, "cpus:2;mem:1024", &fw.id, t_a, TaskState::Running);
    assert!(
        sim.take_agent(a2.conn).iter().any(
            |c| matches!(c, AgentCommand::KillTask { task_id, .. } if task_id.as_str() == "t")
        )
    );
    let snap = sim.master.snapshot();
    assert_eq!(snap.frameworks[0].tasks.len(), 1);
    assert_eq!(snap.frameworks[0].tasks[0].agent_id, b.id);
    sim.check();
}

#[test]
fn unreachable_tasks_an_agent_returns_without_are_reported_gone() {
    let mut sim = Sim::new(long_ping());
    let a = sim.agent("cpus:2;mem:1024");
    let mut info = FrameworkInfo::new("pa", "nobody");
    info.capabilities.insert(Capability::PartitionAware);
    info.failover_timeout = secs(3600);
    let fw = sim.framework_with(info);
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.launch(&fw, &offer, vec![task("t", &a.id, "cpus:1;mem:128")]);
    sim.advance(secs(11));
    assert_eq!(sim.updates(&fw)[0].state, TaskState::Unreachable);
    sim.reregister(&a, "cpus:2;mem:1024", vec![]);
    let u = sim.updates(&fw);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].state, TaskState::Gone);
    let snap = sim.master.snapshot();
    assert!(snap.frameworks[0].unreachable_tasks.is_empty());
    assert_eq!(snap.frameworks[0].completed_tasks[0].state, TaskState::Gone);
    sim.check();
}

#[test]
fn frameworks_recovered_after_a_master_restart_outlive_a_zero_failover_timeout() {
    let mut sim = Sim::new(MasterConfig {
        agent_ping_timeout: secs(3600),
        ..MasterConfig::default()
    });
    let mut info = FrameworkInfo::new("zero", "nobody");
    info.id = Some(cairn_model::FrameworkId::new("earlier-0001"));
    let conn = sim.conn();
    sim.input(Input::AgentRegister {
        conn,
        agent_id: Some(cairn_model::AgentId::new("earlier-S1")),
        info: cairn_model::AgentInfo {
            hostname: "h".into(),
            address: "h:1".into(),
            resources: res("cpus:2;mem:1024"),
            attributes: vec![],
            tls: false,
        },
        tasks: vec![ReportedTask {
            framework_id: cairn_model::FrameworkId::new("earlier-0001"),
            task: task(
                "t",
                &cairn_model::AgentId::new("earlier-S1"),
                "cpus:1;mem:128",
            ),
            state: TaskState::Running,
        }],
        frameworks: vec![info],
    })
    .unwrap();
    sim.advance(secs(60));
    assert_eq!(
        sim.master.snapshot().frameworks.len(),
        1,
        "kept while it may re-subscribe"
    );
    sim.advance(secs(61));
    assert!(
        sim.master.snapshot().frameworks.is_empty(),
        "removed after the recovery grace"
    );
    sim.check();
}

#[test]
fn an_acknowledgement_that_cannot_reach_the_agent_keeps_the_task_until_resent() {
    let mut sim = Sim::new(MasterConfig {
        agent_ping_timeout: secs(3600),
        ..MasterConfig::default()
    });
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    let t = task("t", &a.id, "cpus:1;mem:128");
    sim.launch(&fw, &offer, vec![t.clone()]);
    let u1 = sim.report(&a, &fw.id, "t", TaskState::Finished);
    sim.input(Input::AgentDisconnected { conn: a.conn })
        .unwrap();
    sim.ack(&fw, &a.id, "t", u1);
    assert_eq!(
        sim.master.snapshot().frameworks[0].tasks.len(),
        1,
        "not completed: the ack went nowhere"
    );
    // The agent is back and re-sends the update; this ack gets through.
    let a2 = sim.reregister_with(&a, "cpus:2;mem:1024", &fw.id, t, TaskState::Finished);
    sim.input(Input::AgentStatusUpdate {
        conn: a2.conn,
        framework_id: fw.id.clone(),
        status: cairn_model::TaskStatus {
            uuid: Some(u1),
            ..cairn_model::TaskStatus::from_master(
                TaskId::new("t"),
                TaskState::Finished,
                Reason::Reconciliation,
                "",
                Some(a.id.clone()),
                sim.now,
            )
        },
    })
    .unwrap();
    sim.ack(&fw, &a.id, "t", u1);
    assert!(sim.master.snapshot().frameworks[0].tasks.is_empty());
    sim.check();
}

#[test]
fn a_subscription_states_its_whole_suppression() {
    let mut sim = Sim::new(MasterConfig::default());
    sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    sim.advance(secs(0));
    let offer = sim.offers(&fw).remove(0);
    sim.call(&fw, Call::Suppress { roles: vec![] }).unwrap();
    sim.decline(&fw, &offer, secs(0));
    sim.input(Input::FrameworkDisconnected { conn: fw.conn })
        .unwrap();
    let mut info = FrameworkInfo::new("f", "nobody");
    info.id = Some(fw.id.clone());
    info.failover_timeout = secs(60);
    let back = sim.framework_with(info);
    sim.advance(secs(1));
    assert_eq!(
        sim.offers(&back).len(),
        1,
        "re-subscribing without suppressed roles resumes offers"
    );
}

#[test]
fn shutdown_and_messages_reach_the_agent_and_executor_messages_the_framework() {
    let mut sim = Sim::new(MasterConfig::default());
    let a = sim.agent("cpus:2;mem:1024");
    let fw = sim.framework("f");
    let executor = cairn_model::ExecutorId::new("ex");
    sim.call(
        &fw,
        Call::Shutdown {
            executor_id: executor.clone(),
            agent_id: a.id.clone(),
        },
    )
    .unwrap();
    sim.call(
        &fw,
        Call::Message {
            agent_id: a.id.clone(),
            executor_id: executor.clone(),
            data: b"ping".to_vec(),
        },
    )
    .unwrap();
    let cmds = sim.take_agent(a.conn);
    assert!(cmds.iter().any(|c| matches!(c, AgentCommand::ShutdownExecutor { executor_id, .. } if *executor_id == executor)), "{cmds:?}");
    assert!(
        cmds.iter()
            .any(|c| matches!(c, AgentCommand::FrameworkMessage { data, .. } if data == b"ping")),
        "{cmds:?}"
    );
    sim.input(Input::AgentFrameworkMessage {
        conn: a.conn,
        framework_id: fw.id.clone(),
        executor_id: executor.clone(),
        data: b"pong".to_vec(),
    })
    .unwrap();
    let events = sim.take_events(fw.conn);
    assert!(events.iter().any(|e| matches!(e, Event::Message { agent_id, data, .. } if *agent_id == a.id && data == b"pong")), "{events:?}");
}

/// The core authorizes what the doors authenticated: principals, roles,
/// task users and operator teardowns.
#[test]
fn authorization_is_decided_by_the_core() {
    let acls: cairn_model::auth::Acls = serde_json::from_str(
        r#"{"register_frameworks": [{"principals": {"values": ["spark"]}, "roles": {"type": "ANY"}}],
            "run_tasks": [{"principals": {"values": ["spark"]}, "users": {"type": "ANY"}}],
            "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}]}"#,
    )
    .unwrap();
    let mut sim = Sim::new(MasterConfig {
        acls: Some(acls),
        ..MasterConfig::default()
    });
    let refused = |sim: &mut Sim, info: FrameworkInfo, principal: &str| -> Option<String> {
        let conn = sim.conn();
        sim.input(Input::Subscribe {
            conn,
            info,
            suppressed_roles: vec![],
            principal: Some(principal.into()),
        })
        .unwrap();
        sim.persist_all();
        sim.take_events(conn).into_iter().find_map(|e| match e {
            Event::Error(why) => Some(why),
            _ => None,
        })
    };
    // Declared and authenticated principals differ; a principal without a
    // grant to register.
    let mut info = FrameworkInfo::new("f", "");
    info.principal = "ops".into();
    assert!(
        refused(&mut sim, info, "spark")
            .unwrap()
            .contains("not the authenticated principal")
    );
    assert!(
        refused(&mut sim, FrameworkInfo::new("f", ""), "rogue")
            .unwrap()
            .contains("register a framework")
    );

    // A framework whose principal is spark runs as nobody, not as root.
    let mut info = FrameworkInfo::new("g", "");
    info.principal = "spark".into();
    let fw = sim.framework_with(info);
    let ag = sim.agent("cpus:4;mem:4096");
    sim.advance(secs(1));
    let offer = sim.offers(&fw).remove(0);
    let mut root = task("t-root", &ag.id, "cpus:1;mem:64");
    root.command.user = Some("root".into());
    let mut nobody = task("t-nobody", &ag.id, "cpus:1;mem:64");
    nobody.command.user = Some("nobody".into());
    sim.launch(&fw, &offer, vec![root, nobody]);
    let updates = sim.updates(&fw);
    let root_update = updates
        .iter()
        .find(|s| s.task_id.as_str() == "t-root")
        .unwrap();
    assert_eq!(root_update.state, TaskState::Error);
    assert_eq!(root_update.reason, Some(Reason::TaskUnauthorized));
    assert!(!updates.iter().any(|s| s.task_id.as_str() == "t-nobody"));

    // Teardown by an operator: only ops.
    let by = |p: &str| Input::OperatorTeardown {
        framework_id: fw.id.clone(),
        principal: Some(p.into()),
    };
    assert!(matches!(
        sim.input(by("viewer")),
        Err(CallError::Forbidden(_))
    ));
    assert_eq!(sim.input(by("ops")), Ok(()));
}
