//! Network partitions for real: an agent in its own network namespace,
//! cut off from the master by taking the link down (both processes stay
//! alive, no connection is closed; packets stop).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_model::TaskState;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::netns::NetNs;
use cairn_tests::wait_for;
use cairn_tests::workload::{Seen, Workload, WorkloadSpec};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_is_unreachable_then_its_tasks_run_again_after_the_heal() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root for network namespaces, as CI has"
    );
    let ns = NetNs::create();
    let mut cluster = Cluster::start(ClusterSpec {
        agents: 0,
        master_host: ns.host_ip.to_string(),
        master_args: vec![
            "--allocation-interval".into(),
            "100ms".into(),
            "--agent-ping-timeout".into(),
            "2s".into(),
        ],
        ..ClusterSpec::default()
    })
    .await;
    cluster.add_agent_in(Some(&ns), "cpus:2;mem:1024;disk:1000", &[]);
    cluster.wait_for_agents(1).await;
    let agent_id = cluster.agent_id(0).await;

    let spec = WorkloadSpec {
        name: "split".into(),
        long: 3,
        partition_aware: true,
        ..WorkloadSpec::default()
    };
    let longs = Seen::long_ids(&spec);
    let w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    w.wait_long_running(&spec).await;
    let pids = cluster.long_pids(spec.long).await;

    ns.partition();
    // Past the ping timeout the master gives up on the agent: a
    // partition-aware framework hears UNREACHABLE (not LOST), and the
    // agent is listed as unreachable.
    w.wait(T, "every long task reported unreachable", |s| {
        longs
            .iter()
            .all(|t| s.state(t) == Some(TaskState::Unreachable))
    })
    .await;
    let s = cluster.state().await;
    assert_eq!(s["unreachable_slaves"], 1, "{s}");
    assert_eq!(s["activated_slaves"], 0, "{s}");
    // Nothing was killed on the other side of the partition.
    assert_eq!(cluster.long_pids(spec.long).await, pids);

    ns.heal();
    // The agent comes back under its id; its tasks are RUNNING again, in
    // the same processes, not killed and relaunched.
    w.wait(T, "every long task reported running again", |s| {
        longs.iter().all(|t| s.state(t) == Some(TaskState::Running))
    })
    .await;
    wait_for(T, "the agent active again under its id", || async {
        let s = cluster.state().await;
        s["slaves"]
            .as_array()?
            .iter()
            .any(|a| a["id"] == agent_id.as_str() && a["active"] == true)
            .then_some(())
    })
    .await;
    assert_eq!(cluster.long_pids(spec.long).await, pids);
    let seen = w.seen.lock().unwrap();
    for t in &longs {
        assert!(
            seen.terminal_states(t).is_empty(),
            "{t} ended: {:?}",
            seen.updates.get(t)
        );
    }
    assert!(seen.ended_twice().is_empty());
}
