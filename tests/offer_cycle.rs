//! The offer cycle end to end: a real master and agents on loopback, real
//! executor and task processes, frameworks on the SDK.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cairn_model::{Reason, TaskState};
use cairn_sdk::{FrameworkInfo, TaskBuilder};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::{Ev, TestFramework};
use cairn_tests::process::processes_marked;
use cairn_tests::wait_for;

const T: Duration = Duration::from_secs(30);

/// Every agent in `state`: used + offered within total, for each scalar.
fn overcommitted(state: &serde_json::Value) -> Option<String> {
    for a in state["slaves"].as_array().into_iter().flatten() {
        for r in ["cpus", "mem", "disk"] {
            let total = a["resources"][r].as_f64().unwrap_or(0.0);
            let used = a["used_resources"][r].as_f64().unwrap_or(0.0);
            let offered = a["offered_resources"][r].as_f64().unwrap_or(0.0);
            if used + offered > total + 1e-6 {
                return Some(format!(
                    "agent {}: {r} used {used} + offered {offered} > total {total}",
                    a["id"]
                ));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frameworks_run_200_short_tasks_each_without_overcommitting_an_agent() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 3,
        agent_resources: "cpus:2;mem:2048;disk:1000;ports:[31000-31099]".into(),
        ..ClusterSpec::default()
    })
    .await;
    let master = cluster.master_addr.clone();

    // Sample /state throughout the run.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sample_master = master.clone();
    let sampler = tokio::spawn(async move {
        let mut samples = 0usize;
        let mut violations = Vec::new();
        let mut busiest = 0.0f64;
        loop {
            if let Some(s) =
                cairn_tests::http::get_json(&format!("http://{sample_master}/state")).await
            {
                samples += 1;
                if let Some(v) = overcommitted(&s) {
                    violations.push(v);
                }
                let used: f64 = s["slaves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["used_resources"]["cpus"].as_f64().unwrap_or(0.0))
                    .sum();
                busiest = busiest.max(used);
            }
            tokio::select! {
                _ = stop_rx.changed() => break,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        (samples, violations, busiest)
    });

    let run = |name: &str| {
        let workload = cairn_demo::Workload {
            name: name.to_string(),
            count: 200,
            command: "echo {index} > /dev/null".into(),
            cpus: 0.1,
            mem: 32.0,
        };
        let master = master.clone();
        tokio::spawn(async move { cairn_demo::run(&master, workload, true).await })
    };
    let (a, b) = (run("alpha"), run("beta"));
    let a = tokio::time::timeout(Duration::from_secs(240), a)
        .await
        .expect("alpha finished in time")
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(240), b)
        .await
        .expect("beta finished in time")
        .unwrap()
        .unwrap();
    let _ = stop_tx.send(true);
    let (samples, violations, busiest) = sampler.await.unwrap();

    assert!(a.all_finished(200), "alpha: {:?}", a.states);
    assert!(b.all_finished(200), "beta: {:?}", b.states);
    assert!(violations.is_empty(), "over-committed: {violations:?}");
    assert!(
        samples >= 10,
        "only {samples} samples of /state were taken during the run"
    );
    assert!(busiest > 0.0, "no sample saw a task running");
    // Both frameworks are done; every resource is free again.
    let s = cluster.state().await;
    for agent in s["slaves"].as_array().unwrap() {
        assert_eq!(
            agent["used_resources"]["cpus"].as_f64(),
            Some(0.0),
            "{agent}"
        );
    }
    let completed: usize = s["completed_frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["completed_tasks"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(completed, 400);
}

async fn launch_one(
    fw: &mut TestFramework,
    id: &str,
    command: &str,
    grace: Option<Duration>,
) -> String {
    let offer = fw.offers(T).await.remove(0);
    let mut b = TaskBuilder::new(id).cpus(0.1).mem(32.0).shell(command);
    if let Some(g) = grace {
        b = b.kill_grace(g);
    }
    let task = b.build(&offer.agent_id).unwrap();
    fw.driver.launch(&offer, vec![task]).await.unwrap();
    fw.update(id, T, |s| s.state == TaskState::Running).await;
    offer.agent_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sleep_is_killed_within_its_grace_and_leaves_no_process() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "killer").await;
    let grace = Duration::from_secs(3);
    launch_one(&mut fw, "sleeper", "sleep 600", Some(grace)).await;
    assert!(!processes_marked("sleeper").is_empty(), "the task runs");
    let started = Instant::now();
    fw.driver
        .kill(&cairn_sdk::TaskId::new("sleeper"), None)
        .await
        .unwrap();
    let end = fw.terminal("sleeper", T).await;
    let took = started.elapsed();
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert!(
        took <= grace + Duration::from_secs(1),
        "killed after {took:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "every process of the task to be gone",
        || async { processes_marked("sleeper").is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ignores_sigterm_is_sigkilled_after_its_grace() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "stubborn").await;
    let grace = Duration::from_secs(2);
    launch_one(
        &mut fw,
        "stubborn",
        "trap '' TERM; sleep 600 & wait; sleep 600",
        Some(grace),
    )
    .await;
    // RUNNING comes as the shell starts; the kill must come after it set
    // its trap, which it did once its `sleep` runs.
    wait_for(T, "the task's shell to ignore SIGTERM", || async {
        processes_marked("stubborn")
            .iter()
            .any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .then_some(())
    })
    .await;
    let started = Instant::now();
    fw.driver
        .kill(&cairn_sdk::TaskId::new("stubborn"), None)
        .await
        .unwrap();
    let end = fw.terminal("stubborn", T).await;
    let took = started.elapsed();
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    assert!(
        took >= grace - Duration::from_millis(200),
        "SIGTERM alone should not end it: {took:?}"
    );
    assert!(
        took <= grace + Duration::from_secs(1),
        "killed after {took:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "every process of the task to be gone",
        || async { processes_marked("stubborn").is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_exiting_with_status_3_fails_with_a_message_naming_the_status() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "three").await;
    let offer = fw.offers(T).await.remove(0);
    let task = TaskBuilder::new("three")
        .cpus(0.1)
        .mem(32.0)
        .shell("exit 3")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver.launch(&offer, vec![task]).await.unwrap();
    let end = fw.terminal("three", T).await;
    assert_eq!(end.state, TaskState::Failed);
    assert!(end.message.contains("status 3"), "{}", end.message);
    assert_eq!(end.exit_code, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_sigkill_loses_its_tasks_and_offers_after_the_ping_timeout() {
    let mut cluster = Cluster::start(ClusterSpec {
        agents: 1,
        master_args: vec![
            "--allocation-interval".into(),
            "200ms".into(),
            "--agent-ping-timeout".into(),
            "2s".into(),
        ],
        ..ClusterSpec::default()
    })
    .await;
    let mut fw = TestFramework::named(&cluster.master_addr, "witness").await;
    let offer = fw.offers(T).await.remove(0);
    let task = TaskBuilder::new("doomed")
        .cpus(0.5)
        .mem(64.0)
        .shell("sleep 600")
        .build(&offer.agent_id)
        .unwrap();
    // No filter on the rest: the framework is offered it again and holds it.
    fw.driver
        .accept(
            std::slice::from_ref(&offer.id),
            vec![task],
            Some(Duration::ZERO),
        )
        .await
        .unwrap();
    fw.update("doomed", T, |s| s.state == TaskState::Running)
        .await;
    let held = fw.offers(T).await.remove(0);
    assert_eq!(held.agent_id, offer.agent_id);

    let killed_at = Instant::now();
    cluster.agents[0].proc.kill9();
    let lost = fw.terminal("doomed", T).await;
    let after = killed_at.elapsed();
    assert_eq!(lost.state, TaskState::Lost, "{lost:?}");
    assert_eq!(lost.reason, Some(Reason::AgentRemoved));
    assert!(
        after >= Duration::from_millis(1500),
        "lost before the ping timeout: {after:?}"
    );
    let rescinded = fw
        .wait(T, "the held offer to be rescinded", |e| match e {
            Ev::Rescind(id) => Some(id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(rescinded, held.id);
    fw.wait(T, "a failure event for the agent", |e| match e {
        Ev::Failure(a) if *a == held.agent_id => Some(()),
        _ => None,
    })
    .await;
    let s = cluster.state().await;
    assert_eq!(s["slaves"].as_array().unwrap().len(), 0);
    assert_eq!(s["unreachable_slaves"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_accepts_get_task_error_or_lost_and_the_master_keeps_serving() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 2,
        ..ClusterSpec::default()
    })
    .await;
    let mut f1 = TestFramework::named(&cluster.master_addr, "f1").await;
    let mut mine = f1.offers(T).await;
    // f1 is offered both agents; it refuses one for long so f2 gets it.
    while mine.len() < 2 {
        mine.extend(f1.offers(T).await);
    }
    let (keep, give) = (mine[0].clone(), mine[1].clone());
    let mut f2 = TestFramework::start(&cluster.master_addr, FrameworkInfo::new("f2", "")).await;
    f1.driver
        .decline(
            std::slice::from_ref(&give.id),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let theirs = f2.offers(T).await.remove(0);
    assert_eq!(theirs.agent_id, give.agent_id);

    // Someone else's offer.
    let steal = TaskBuilder::new("steal")
        .cpus(0.1)
        .mem(32.0)
        .shell("true")
        .build(&theirs.agent_id)
        .unwrap();
    f1.driver.launch(&theirs, vec![steal]).await.unwrap();
    let s = f1.terminal("steal", T).await;
    assert!(
        matches!(s.state, TaskState::Lost | TaskState::Dropped),
        "{s:?}"
    );
    assert_eq!(s.reason, Some(Reason::InvalidOffers));

    // More than offered, and a duplicate id: TASK_ERROR each; the valid task runs.
    let a = &keep.agent_id;
    let big = TaskBuilder::new("big")
        .cpus(100.0)
        .mem(32.0)
        .shell("true")
        .build(a)
        .unwrap();
    let dup1 = TaskBuilder::new("dup")
        .cpus(0.1)
        .mem(32.0)
        .shell("true")
        .build(a)
        .unwrap();
    let dup2 = TaskBuilder::new("dup")
        .cpus(0.1)
        .mem(32.0)
        .shell("true")
        .build(a)
        .unwrap();
    f1.driver
        .launch(&keep, vec![big, dup1, dup2])
        .await
        .unwrap();
    let big = f1.terminal("big", T).await;
    assert_eq!(big.state, TaskState::Error);
    assert_eq!(big.reason, Some(Reason::TaskInvalid));
    assert!(big.message.contains("more resources"), "{}", big.message);
    let dup = f1.update("dup", T, |s| s.state == TaskState::Error).await;
    assert!(dup.message.contains("already in use"), "{}", dup.message);
    let ran = f1
        .update("dup", T, |s| s.state == TaskState::Finished)
        .await;
    assert_eq!(ran.source, cairn_sdk::Source::Executor);

    // f2's offer was untouched and the master still serves it.
    let ok = TaskBuilder::new("fine")
        .cpus(0.1)
        .mem(32.0)
        .shell("true")
        .build(&theirs.agent_id)
        .unwrap();
    f2.driver.launch(&theirs, vec![ok]).await.unwrap();
    assert_eq!(f2.terminal("fine", T).await.state, TaskState::Finished);
    assert!(overcommitted(&cluster.state().await).is_none());
}
