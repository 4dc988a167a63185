//! Agent recovery: an agent killed with SIGKILL and started again takes its
//! running tasks back from its checkpoint (same processes, same agent id)
//! and delivers every update it had not yet delivered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_model::TaskState;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::wait_for;
use cairn_tests::workload::{Seen, Workload, WorkloadSpec};

const T: Duration = Duration::from_secs(60);

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether the master sees agent `id` connected.
async fn agent_active(cluster: &Cluster, id: &str) -> Option<bool> {
    let s = cluster.state().await;
    s["slaves"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == id)
        .and_then(|a| a["active"].as_bool())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_ten_times_keeps_its_tasks_their_pids_and_its_id() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root for cgroups and namespaces, as CI has"
    );
    let mut cluster = Cluster::start(ClusterSpec {
        agents: 1,
        zookeeper: true,
        agent_resources: "cpus:4;mem:8192;disk:1000".into(),
        agent_args: vec!["--isolation".into(), "cgroups,namespaces".into()],
        master_args: vec!["--allocation-interval".into(), "100ms".into()],
        ..ClusterSpec::default()
    })
    .await;
    let agent_id = cluster.agent_id(0).await;
    let spec = WorkloadSpec {
        name: "survivor".into(),
        short: 150,
        short_command: "sleep 0.5".into(),
        long: 5,
        ..WorkloadSpec::default()
    };
    let longs = Seen::long_ids(&spec);
    let shorts = Seen::short_ids(&spec);
    let w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    w.wait_long_running(&spec).await;
    let pids = cluster.long_pids(spec.long).await;

    for round in 0..10 {
        let done_before = {
            let s = w.seen.lock().unwrap();
            shorts
                .iter()
                .filter(|t| s.state(t).is_some_and(TaskState::is_terminal))
                .count()
        };
        cluster.agents[0].proc.kill9();
        wait_for(T, "the master to see the agent gone", || async {
            (agent_active(&cluster, &agent_id).await == Some(false)).then_some(())
        })
        .await;
        for (i, pid) in pids.iter().enumerate() {
            assert!(
                alive(*pid),
                "round {round}: long task {i} (pid {pid}) died with its agent"
            );
        }
        cluster.agents[0].restart();
        wait_for(T, "the agent to re-register as itself", || async {
            (agent_active(&cluster, &agent_id).await == Some(true)).then_some(())
        })
        .await;
        // Let the workload move on before the next kill (while tasks
        // remain), and kill when the tasks launched have reached the agent:
        // the kills are of an agent with running tasks, not a race with
        // launches in flight (how many of those a kill catches depends only
        // on the machine's load).
        if done_before < shorts.len() {
            w.wait(
                T,
                "a short task to end since the last kill, none in flight",
                |s| {
                    let ended = shorts
                        .iter()
                        .filter(|t| s.state(t).is_some_and(TaskState::is_terminal))
                        .count();
                    let in_flight = shorts
                        .iter()
                        .filter(|t| s.launched.contains(t.as_str()) && s.state(t).is_none())
                        .count();
                    ended > done_before && in_flight == 0
                },
            )
            .await;
        }
    }

    w.wait_shorts_ended(&spec, Duration::from_secs(180)).await;
    {
        let seen = w.seen.lock().unwrap();
        // A task that reached the agent finishes, whatever happened to the
        // agent meanwhile. One launched into an offer rescinded by the agent's
        // death, or whose launch died with the agent before it was recorded,
        // never started: it ends once, as lost.
        let mut never_started = 0;
        let mut wrong = Vec::new();
        for t in &shorts {
            let ups = seen.updates.get(t.as_str()).cloned().unwrap_or_default();
            let started = ups
                .iter()
                .any(|s| matches!(s.state, TaskState::Starting | TaskState::Running));
            let ends = seen.terminal_states(t);
            let ok = if started {
                ends == [TaskState::Finished].into()
            } else {
                never_started += 1;
                ends.len() == 1
                    && ends.iter().all(|s| {
                        matches!(
                            s,
                            TaskState::Lost | TaskState::Dropped | TaskState::Finished
                        )
                    })
            };
            if !ok {
                wrong.push((
                    t.clone(),
                    ups.iter()
                        .map(|s| (s.state, s.message.clone()))
                        .collect::<Vec<_>>(),
                ));
            }
        }
        assert!(wrong.is_empty(), "tasks that did not end right: {wrong:?}");
        assert!(
            never_started < shorts.len() / 2,
            "{never_started} of {} short tasks never started",
            shorts.len()
        );
        eprintln!("{never_started} short tasks were lost before they reached the agent");
        for (i, t) in longs.iter().enumerate() {
            assert_eq!(
                seen.state(t),
                Some(TaskState::Running),
                "{t}: {:?}",
                seen.updates.get(t)
            );
            assert!(seen.terminal_states(t).is_empty(), "{t} ended");
            let now = cluster.long_task_pids(i);
            assert_eq!(now, vec![pids[i]], "long task {i} runs in the same process");
        }
    }
    assert_eq!(cluster.agent_id(0).await, agent_id);
    let s = cluster.state().await;
    assert_eq!(
        s["slaves"].as_array().map(Vec::len),
        Some(1),
        "no second agent: {s}"
    );
}
