//! The SDK against a real master and agents in this process (its test
//! kit): packing, suppression, the framework id file, reconciliation after
//! a restart of the framework.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_sdk::offers::{OfferSpace, pack};
use cairn_sdk::testkit::TestCluster;
use cairn_sdk::{
    Driver, FrameworkId, FrameworkInfo, Offer, Resources, Scheduler, SchedulerDriver, TaskBuilder,
    TaskState, TaskStatus,
};

const T: Duration = Duration::from_secs(60);

/// Waits until `cond` holds (polling), failing the test with `what`.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    cairn_tests::wait_for(T, what, || {
        let ok = cond();
        async move { ok.then_some(()) }
    })
    .await;
}

#[derive(Default)]
struct Seen {
    states: BTreeMap<String, TaskState>,
    subscribed: Vec<FrameworkId>,
    offers: usize,
}

/// Launches `to_launch` (each a shell command) packed into offers, then
/// suppresses offers; records every task's latest state.
struct Runner {
    to_launch: Vec<(String, String)>,
    seen: Arc<Mutex<Seen>>,
}

impl Scheduler for Runner {
    async fn subscribed(&mut self, _driver: &Driver, id: &FrameworkId) {
        self.seen.lock().unwrap().subscribed.push(id.clone());
    }

    async fn offers(&mut self, driver: &Driver, offers: Vec<Offer>) {
        self.seen.lock().unwrap().offers += offers.len();
        let shape = Resources::cpus_mem(0.1, 32.0).unwrap();
        let mut spaces: Vec<OfferSpace> = offers.into_iter().map(OfferSpace::new).collect();
        let wanted = self.to_launch.drain(..).map(|t| (t, shape.clone()));
        let (placed, unplaced) = pack(&mut spaces, wanted);
        self.to_launch = unplaced;
        for (at, space) in spaces.iter().enumerate() {
            let tasks: Vec<_> = placed
                .iter()
                .filter(|(o, _)| *o == at)
                .map(|(_, (id, cmd))| {
                    TaskBuilder::new(id.as_str())
                        .cpus(0.1)
                        .mem(32.0)
                        .shell(cmd.as_str())
                        .build(&space.offer.agent_id)
                        .unwrap()
                })
                .collect();
            driver.launch(&space.offer, tasks).await.unwrap();
        }
        driver
            .want_offers(!self.to_launch.is_empty())
            .await
            .unwrap();
    }

    async fn update(&mut self, _driver: &Driver, status: &TaskStatus) {
        self.seen
            .lock()
            .unwrap()
            .states
            .insert(status.task_id.to_string(), status.state);
    }
}

fn info(name: &str) -> FrameworkInfo {
    let mut info = FrameworkInfo::new(name, "");
    info.failover_timeout = Duration::from_secs(120);
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_packed_into_offers_and_offers_are_suppressed_once_all_are_placed() {
    let cluster = TestCluster::builder()
        .agents(2)
        .resources("cpus:1;mem:1024;disk:1000")
        .start()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    // 20 tasks of 0.1 cpus on two agents of 1 cpu: two rounds of offers.
    let runner = Runner {
        to_launch: (0..20)
            .map(|i| (format!("t{i}"), "sleep 0.2".to_string()))
            .collect(),
        seen: seen.clone(),
    };
    let driver = SchedulerDriver::new(cluster.master(), info("packer"));
    let run = tokio::spawn(driver.run(runner));
    until("all 20 tasks finished", || {
        let s = seen.lock().unwrap();
        s.states.len() == 20 && s.states.values().all(|st| *st == TaskState::Finished)
    })
    .await;
    let state = cluster.state().await.unwrap();
    let fw = &state["frameworks"][0];
    assert_eq!(
        fw["suppressed_roles"],
        serde_json::json!(["*"]),
        "suppressed once nothing is left to launch: {fw}"
    );
    run.abort();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_framework_comes_back_as_itself_and_reconciliation_finds_its_task() {
    let cluster = TestCluster::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id_file = dir.path().join("framework-id");

    let first = Arc::new(Mutex::new(Seen::default()));
    let runner = Runner {
        to_launch: vec![("long".into(), "sleep 600".into())],
        seen: first.clone(),
    };
    let driver =
        SchedulerDriver::new(cluster.master(), info("restarted")).framework_id_file(&id_file);
    let run = tokio::spawn(driver.run(runner));
    until("the long task running", || {
        first.lock().unwrap().states.get("long") == Some(&TaskState::Running)
    })
    .await;
    let id = first.lock().unwrap().subscribed[0].clone();
    assert_eq!(
        std::fs::read_to_string(&id_file).unwrap().trim(),
        id.as_str()
    );
    // The framework process "dies": its driver goes, the master keeps it
    // for its failover timeout.
    run.abort();
    let _ = run.await;

    let second = Arc::new(Mutex::new(Seen::default()));
    let runner = Runner {
        to_launch: Vec::new(),
        seen: second.clone(),
    };
    let driver =
        SchedulerDriver::new(cluster.master(), info("restarted")).framework_id_file(&id_file);
    let run = tokio::spawn(driver.run(runner));
    until("the task reported by reconciliation", || {
        second.lock().unwrap().states.get("long") == Some(&TaskState::Running)
    })
    .await;
    assert_eq!(
        second.lock().unwrap().subscribed,
        vec![id.clone()],
        "the same framework"
    );
    let state = cluster.state().await.unwrap();
    assert_eq!(state["frameworks"].as_array().unwrap().len(), 1);
    assert_eq!(state["frameworks"][0]["tasks"][0]["state"], "TASK_RUNNING");
    run.abort();
    cluster.stop().await;
}
