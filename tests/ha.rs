//! High availability with a real ZooKeeper: election, standbys, failover of
//! the leading master, fencing of a deposed one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_model::TaskState;
use cairn_proto as pb;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::wait_for;
use cairn_tests::workload::{Seen, Workload, WorkloadSpec};

const T: Duration = Duration::from_secs(30);
/// The masters' ZooKeeper session timeout in these tests.
const SESSION: Duration = Duration::from_secs(2);

fn ha(agents: usize) -> ClusterSpec {
    ClusterSpec {
        agents,
        masters: 3,
        zookeeper: true,
        master_args: vec![
            "--allocation-interval".into(),
            "200ms".into(),
            "--zk-session-timeout".into(),
            format!("{}ms", SESSION.as_millis()),
        ],
        ..ClusterSpec::default()
    }
}

/// The children of the election path.
async fn election_nodes(cluster: &Cluster) -> Vec<String> {
    let zk = cluster.zookeeper.as_ref().unwrap();
    let client = zookeeper_client::Client::connect(&format!("127.0.0.1:{}", zk.port))
        .await
        .expect("connect to ZooKeeper");
    let mut children = client.list_children("/cairn").await.expect("list /cairn");
    children.sort();
    children
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_master_leads_standbys_point_to_it_and_another_takes_over_after_kill_9() {
    let mut cluster = Cluster::start(ha(1)).await;
    let leader = cluster.leader().await;
    let leader_addr = cluster.masters[leader].addr.clone();
    let agent_id = cluster.agent_id(0).await;

    // The Mesos layout: only masters' nodes under the path, one each.
    let nodes = election_nodes(&cluster).await;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(
        nodes
            .iter()
            .all(|n| n.starts_with("json.info_") && n.len() == 20),
        "{nodes:?}"
    );

    for (i, m) in cluster.masters.iter().enumerate() {
        let health = cairn_tests::http::get_location(&format!("http://{}/health", m.addr)).await;
        assert_eq!(health.map(|h| h.0), Some(200), "master {i} /health");
        if i == leader {
            continue;
        }
        let (status, location) =
            cairn_tests::http::get_location(&format!("http://{}/state?x=1", m.addr))
                .await
                .expect("standby answers");
        assert_eq!(status, 307, "standby {i} redirects /state");
        assert_eq!(
            location.as_deref(),
            Some(format!("//{leader_addr}/state?x=1").as_str())
        );
        let (status, location) =
            cairn_tests::http::get_location(&format!("http://{}/redirect", m.addr))
                .await
                .expect("standby answers");
        assert_eq!((status, location), (307, Some(format!("//{leader_addr}"))));

        // gRPC: UNAVAILABLE naming the leader.
        let mut client =
            pb::scheduler_client::SchedulerClient::connect(format!("http://{}", m.addr))
                .await
                .expect("connect");
        let err = client
            .subscribe(pb::SubscribeRequest::default())
            .await
            .expect_err("a standby refuses to subscribe");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains(&leader_addr), "{err:?}");
        assert_eq!(
            err.metadata()
                .get("cairn-leader")
                .and_then(|v| v.to_str().ok()),
            Some(leader_addr.as_str())
        );
    }

    let (_, next, took) = cluster.kill_leader().await;
    assert_new_leader_in_time(took);
    assert_ne!(next, leader);
    // The agent follows and re-registers as itself.
    cluster.wait_for_agents(1).await;
    assert_eq!(cluster.agent_id(0).await, agent_id);
    // A restarted master contends again, as a standby.
    cluster.masters[leader].restart();
    wait_for(T, "the restarted master to stand by", || {
        let url = format!("http://{}/state", cluster.masters[leader].addr);
        async move {
            matches!(cairn_tests::http::get_location(&url).await, Some((307, _))).then_some(())
        }
    })
    .await;
    wait_for(T, "the dead master's node to go", || async {
        (election_nodes(&cluster).await.len() == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_follows_the_leader_through_zookeeper() {
    let mut cluster = Cluster::start(ha(1)).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "follower").await;
    fw.offers(T).await;
    cluster.kill_leader().await;
    // Offers again, from the new leader, under the same framework id.
    let offers = fw.offers(T).await;
    assert!(!offers.is_empty());
    let s = cluster.state().await;
    let ids: Vec<&str> = s["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert_eq!(ids, vec![fw.id.as_str()], "{s}");
}

/// A standby takes over within the session timeout (the old leader's
/// node expires) plus 2 s for noticing and recovering the registry.
fn assert_new_leader_in_time(took: Duration) {
    assert!(
        took <= SESSION + Duration::from_secs(2),
        "a new leader took {took:?}, more than the session timeout ({SESSION:?}) plus 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_run_loses_no_task_and_restarts_none() {
    let cluster = Cluster::start(ClusterSpec {
        agent_resources: "cpus:4;mem:8192;disk:1000".into(),
        ..ha(3)
    })
    .await;
    let spec = WorkloadSpec {
        name: "batch".into(),
        short: 500,
        short_command: "sleep 0.1".into(),
        long: 20,
        ..WorkloadSpec::default()
    };
    let shorts = Seen::short_ids(&spec);
    let longs = Seen::long_ids(&spec);
    let w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    w.wait(T, "the long tasks to run and some short ones to end", |s| {
        longs.iter().all(|t| s.state(t) == Some(TaskState::Running))
            && shorts
                .iter()
                .filter(|t| s.state(t).is_some_and(TaskState::is_terminal))
                .count()
                >= 100
    })
    .await;
    let pids = cluster.long_pids(spec.long).await;
    let mut cluster = cluster;
    let (_, _, took) = cluster.kill_leader().await;
    assert_new_leader_in_time(took);

    w.wait_shorts_ended(&spec, Duration::from_secs(240)).await;
    {
        let seen = w.seen.lock().unwrap();
        let mut by_end = std::collections::BTreeMap::new();
        for t in &shorts {
            let ends = seen.terminal_states(t);
            assert_eq!(ends.len(), 1, "{t}: {:?}", seen.updates.get(t));
            *by_end.entry(*ends.iter().next().unwrap()).or_insert(0) += 1;
            // A task that started finishes: the failover lost none.
            let started = seen.updates[t]
                .iter()
                .any(|s| s.state == TaskState::Running);
            if started {
                assert_eq!(
                    ends,
                    [TaskState::Finished].into(),
                    "{t}: {:?}",
                    seen.updates.get(t)
                );
            }
        }
        eprintln!("short tasks by end: {by_end:?}");
        for t in &longs {
            assert!(
                seen.terminal_states(t).is_empty(),
                "{t} ended: {:?}",
                seen.updates.get(t)
            );
        }
    }
    assert_eq!(
        cluster.long_pids(spec.long).await,
        pids,
        "the long tasks run in the same processes"
    );
    let s = cluster.state().await;
    assert_eq!(
        s["activated_slaves"].as_u64(),
        Some(3),
        "every agent is back: {s}"
    );
    let running = s["frameworks"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .count();
    assert_eq!(
        running, spec.long,
        "the new leader knows the long tasks as running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_that_wakes_after_its_session_expired_changes_nothing() {
    let mut cluster = Cluster::start(ha(1)).await;
    let spec = WorkloadSpec {
        name: "fenced".into(),
        long: 2,
        ..WorkloadSpec::default()
    };
    let w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    let longs = Seen::long_ids(&spec);
    w.wait_long_running(&spec).await;
    let pids = cluster.long_pids(spec.long).await;
    let old = cluster.leader().await;
    let old_addr = cluster.masters[old].addr.clone();
    let (framework_id, stream_id) = w.driver.as_ref().unwrap().session().unwrap();

    cluster.masters[old]
        .proc
        .signal(nix::sys::signal::Signal::SIGSTOP);
    // While it sleeps, a kill reaches it (the kernel queues the request);
    // it would act on it as soon as it wakes.
    let stale_kill = tokio::spawn(async move {
        let mut c =
            pb::scheduler_client::SchedulerClient::connect(format!("http://{old_addr}")).await?;
        c.call(pb::SchedulerCall {
            framework_id: framework_id.to_string(),
            stream_id,
            seq: 0,
            call: Some(pb::scheduler_call::Call::Kill(pb::scheduler_call::Kill {
                task_id: "fenced-long-0".into(),
                agent_id: String::new(),
                kill_policy: None,
            })),
        })
        .await
        .map(|_| ())
        .map_err(anyhow::Error::from)
    });
    let new = cluster.leader_other_than(Some(old)).await;
    // Everyone follows the new leader.
    cluster.wait_for_agents(1).await;
    w.wait(T, "the framework to subscribe to the new leader", |s| {
        s.subscriptions >= 2
    })
    .await;

    cluster.masters[old]
        .proc
        .signal(nix::sys::signal::Signal::SIGCONT);
    wait_for(T, "the deposed leader to exit", || {
        let exited = cluster.masters[old]
            .proc
            .child
            .try_wait()
            .ok()
            .flatten()
            .is_some();
        async move { exited.then_some(()) }
    })
    .await;
    // Its answer, if any, does not matter; what it changed is checked below.
    let _ = tokio::time::timeout(Duration::from_secs(5), stale_kill).await;
    let log =
        std::fs::read_to_string(cluster.dir.path().join(format!("master-{old}.log"))).unwrap();
    assert!(
        // Whichever it notices first: the expired session, or the registry
        // refusing its write.
        log.contains("lost the ZooKeeper session")
            || log.contains("the registry cannot be written; the master stops"),
        "the deposed leader says why it stops:\n{log}"
    );

    // Its kill took effect nowhere: the task runs, in the same process, and
    // the new leader still leads.
    assert_eq!(cluster.long_pids(spec.long).await, pids);
    {
        let seen = w.seen.lock().unwrap();
        assert!(
            seen.terminal_states(&longs[0]).is_empty(),
            "{:?}",
            seen.updates.get(&longs[0])
        );
    }
    assert_eq!(cluster.leader().await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_keeps_its_tasks_across_a_master_failover_while_it_is_away() {
    let mut cluster = Cluster::start(ha(1)).await;
    let spec = WorkloadSpec {
        name: "patient".into(),
        long: 2,
        failover_timeout: Duration::from_secs(120),
        ..WorkloadSpec::default()
    };
    let longs = Seen::long_ids(&spec);
    let mut w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    w.wait_long_running(&spec).await;
    let pids = cluster.long_pids(spec.long).await;
    let id = w.id();
    w.stop();
    // Away: the master sees it disconnected; then the master fails over.
    cluster.wait_framework_inactive().await;
    cluster.kill_leader().await;
    cluster.wait_for_agents(1).await;

    // Back as itself: its tasks are still there, and say so.
    let seen = w.seen.clone();
    seen.lock().unwrap().updates.clear();
    let back = Workload::resume(&cluster.master_addr, spec.clone(), Some(id.clone()), seen).await;
    assert_eq!(back.id(), id);
    back.driver.as_ref().unwrap().reconcile(&[]).await.unwrap();
    back.wait(T, "the tasks reported running", |s| {
        longs.iter().all(|t| s.state(t) == Some(TaskState::Running))
    })
    .await;
    assert_eq!(cluster.long_pids(spec.long).await, pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_away_past_its_failover_timeout_loses_its_tasks_also_across_a_failover() {
    let mut cluster = Cluster::start(ha(1)).await;
    let spec = WorkloadSpec {
        name: "gone".into(),
        long: 2,
        failover_timeout: Duration::from_secs(6),
        ..WorkloadSpec::default()
    };
    let mut w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    w.wait_long_running(&spec).await;
    cluster.long_pids(spec.long).await;
    let id = w.id();
    w.stop();
    let left = tokio::time::Instant::now();
    cluster.wait_framework_inactive().await;
    // The leader fails over while the framework is away; the new one keeps
    // its failover deadline (it does not restart the clock, nor give the
    // two-minute grace of a framework that was connected).
    cluster.kill_leader().await;
    wait_for(
        Duration::from_secs(40),
        "the tasks to be killed",
        || async {
            (0..spec.long)
                .all(|i| cluster.long_task_pids(i).is_empty())
                .then_some(())
        },
    )
    .await;
    assert!(
        left.elapsed() >= spec.failover_timeout,
        "killed before the failover timeout"
    );
    let s = cluster.state().await;
    let completed: Vec<&str> = s["completed_frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(completed.contains(&id.as_str()), "{s}");
}

/// The registry's writes check the writer's election node: once it is gone
/// (its session expired), a deposed leader can change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_refuses_writes_from_a_master_whose_election_node_is_gone() {
    use cairn_master::registry_store::{RegistryStore, StoreError};
    use cairn_master::zk::{Election, ZkStore};
    use cairn_master_core::registry::RegistryOp;

    let dir = tempfile::tempdir().unwrap();
    let zk = cairn_tests::zookeeper::ZooKeeper::start(dir.path()).await;
    let url: cairn_model::zk::ZkUrl = zk.url("/fence").parse().unwrap();
    let info =
        cairn_model::zk::ZkMasterInfo::new("m1", "127.0.0.1", "127.0.0.1".parse().unwrap(), 1);
    let election = Election::contend(&url, Duration::from_secs(5), &info)
        .await
        .unwrap();
    let store = ZkStore::new(&election, "/fence-registry").await.unwrap();
    let agent = cairn_model::AgentInfo {
        hostname: "h".into(),
        address: "127.0.0.1:1".into(),
        resources: cairn_model::Resources::parse("cpus:1;mem:10").unwrap(),
        attributes: vec![],
        tls: false,
    };
    let id = cairn_model::AgentId::new("a1");
    store
        .write(&[RegistryOp::AdmitAgent {
            id: id.clone(),
            info: agent.clone(),
        }])
        .await
        .unwrap();
    let state = store.load().await.unwrap();
    assert_eq!(state.agents.len(), 1);
    assert_eq!(state.agents[&id].info, agent);

    // The session ends (here: its node is removed, as expiry does).
    election.client.delete(&election.node, None).await.unwrap();
    let err = store
        .write(&[RegistryOp::RemoveAgent { id: id.clone() }])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    assert_eq!(
        store.load().await.unwrap().agents.len(),
        1,
        "nothing changed"
    );
}
