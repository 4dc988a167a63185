//! High availability with a real ZooKeeper: election, standbys, failover of
//! the leading master, fencing of a deposed one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_proto as pb;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::wait_for;

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

    cluster.masters[leader].proc.kill9();
    let killed = tokio::time::Instant::now();
    let next = cluster.leader_other_than(Some(leader)).await;
    let took = killed.elapsed();
    assert!(
        took <= SESSION + Duration::from_secs(2),
        "a new leader took {took:?}, more than the session timeout ({SESSION:?}) plus 2 s"
    );
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
    let leader = cluster.leader().await;
    cluster.masters[leader].proc.kill9();
    cluster.leader_other_than(Some(leader)).await;
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
