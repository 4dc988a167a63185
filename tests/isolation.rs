//! Isolation: every task in its own cgroups and namespaces (needs root and a
//! cgroup filesystem, as in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cairn_model::{Reason, TaskState};
use cairn_sdk::{FrameworkInfo, TaskBuilder, TaskStatus};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::process::{
    PRINT_SIGNAL_MASKS, assert_started_like_command, cgroups_under, processes_marked,
    processes_running,
};
use cairn_tests::wait_for;

const T: Duration = Duration::from_secs(30);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "isolation tests need root (cgroups and namespaces), as CI has"
    );
}

async fn cluster(agent_args: &[&str]) -> Cluster {
    require_root();
    let mut args = vec!["--isolation".to_string(), "cgroups,namespaces".to_string()];
    args.extend(agent_args.iter().map(|s| (*s).to_string()));
    Cluster::start(ClusterSpec {
        agent_args: args,
        ..ClusterSpec::default()
    })
    .await
}

/// Launches one task built by `build` on the first offer.
async fn launch(fw: &mut TestFramework, id: &str, build: impl FnOnce(TaskBuilder) -> TaskBuilder) {
    fw.launch_one(build(TaskBuilder::new(id).cpus(0.5).mem(64.0)), T)
        .await;
}

/// The task's stdout, read from its sandbox on the host.
fn stdout_of(cluster: &Cluster, task: &str) -> String {
    cluster.agents[0]
        .sandbox_of(task)
        .and_then(|run| std::fs::read_to_string(run.join("stdout")).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_memory_limit_fails_with_the_memory_reason_and_others_run_on() {
    let cluster = cluster(&[]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "mem").await;
    launch(&mut fw, "bystander", |b| b.shell("sleep 3")).await;
    fw.update("bystander", T, |s| s.state == TaskState::Running)
        .await;
    launch(&mut fw, "hog", |b| {
        b.shell("dd if=/dev/zero of=/dev/null bs=200M count=1")
    })
    .await;
    let end = fw.terminal("hog", T).await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(
        end.reason,
        Some(Reason::ContainerLimitationMemory),
        "{end:?}"
    );
    assert!(
        end.message.contains("64 MB"),
        "the message names the limit: {}",
        end.message
    );
    let other = fw.terminal("bystander", T).await;
    assert_eq!(
        other.state,
        TaskState::Finished,
        "the other task is unaffected: {other:?}"
    );
    assert!(
        cairn_tests::http::get(&format!("http://{}/health", cluster.agents[0].addr))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_bounded_and_killing_it_leaves_nothing() {
    let cluster = cluster(&["--max-task-pids", "64"]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "bomb").await;
    // Forks without end, retrying refused forks (as shells do not): every
    // process it can get, and more.
    let bomb = "exec perl -e 'while (1) { my $p = fork(); if (defined $p && $p == 0) { sleep 600; exit } }'";
    launch(&mut fw, "bomb", |b| {
        b.shell(bomb).kill_grace(Duration::from_secs(1))
    })
    .await;
    fw.update("bomb", T, |s| s.state == TaskState::Running)
        .await;
    let stats = format!("http://{}/monitor/statistics", cluster.agents[0].addr);
    let health = format!("http://{}/health", cluster.agents[0].addr);
    // The kernel refuses its forks at the limit.
    wait_for(T, "the bomb to be held at its pids limit", || {
        let stats = stats.clone();
        async move {
            let s = cairn_tests::http::get_json(&stats).await?;
            (s[0]["statistics"]["pids_limit_hits"].as_u64()? > 0).then_some(())
        }
    })
    .await;
    // It stays within the limit, and the agent keeps answering quickly.
    for _ in 0..20 {
        let started = Instant::now();
        assert!(
            cairn_tests::http::get(&health).await.is_some(),
            "the agent stopped answering"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the agent took {:?} to answer",
            started.elapsed()
        );
        let s = cairn_tests::http::get_json(&stats)
            .await
            .expect("statistics");
        let n = s[0]["statistics"]["processes"].as_u64().expect("processes");
        assert!(
            n <= 64,
            "{n} processes in the container under a limit of 64"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fw.driver
        .kill(&cairn_sdk::TaskId::new("bomb"), None)
        .await
        .unwrap();
    let end = fw.terminal("bomb", T).await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    wait_for(T, "every process of the bomb to be gone", || async {
        processes_marked("bomb").is_empty().then_some(())
    })
    .await;
    let root = cluster.agent_cgroups(0);
    wait_for(T, "the bomb's cgroups to be removed", || {
        let root = root.clone();
        async move { cgroups_under(&root).is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_with_half_a_cpu_uses_at_most_about_0_6_of_a_core() {
    let cluster = cluster(&[]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "cpu").await;
    launch(&mut fw, "spin", |b| {
        b.cpus(0.5).shell("while :; do :; done")
    })
    .await;
    fw.update("spin", T, |s| s.state == TaskState::Running)
        .await;
    let stats = format!("http://{}/monitor/statistics", cluster.agents[0].addr);
    let sample = || {
        let stats = stats.clone();
        async move {
            let s = cairn_tests::http::get_json(&stats)
                .await
                .expect("statistics");
            let st = &s[0]["statistics"];
            (
                st["cpus_user_time_secs"].as_f64().unwrap()
                    + st["cpus_system_time_secs"].as_f64().unwrap(),
                st["timestamp"].as_f64().unwrap(),
                st["cpus_nr_throttled"].as_u64().unwrap(),
            )
        }
    };
    // Let it get going, then measure five seconds.
    wait_for(T, "the loop to use cpu", || async {
        (sample().await.0 > 0.2).then_some(())
    })
    .await;
    let (c0, t0, _) = sample().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c1, t1, throttled) = sample().await;
    let cores = (c1 - c0) / (t1 - t0);
    assert!(cores <= 0.6, "used {cores:.2} of a core with cpus:0.5");
    assert!(
        cores >= 0.3,
        "used only {cores:.2} of a core: the loop did not run?"
    );
    assert!(throttled > 0, "the CFS quota never throttled it");
    // The agent's usage reports reach the master.
    let url = format!("http://{}/state", cluster.master_addr);
    wait_for(T, "usage in the master's state", || {
        let url = url.clone();
        async move {
            let s = cairn_tests::http::get_json(&url).await?;
            let usage = s["slaves"][0]["usage"].as_array()?.first()?.clone();
            (usage["cpus_user_time_secs"].as_f64()? > 0.0 && usage["cpus_limit"].as_f64()? == 0.5)
                .then_some(())
        }
    })
    .await;
    fw.driver
        .kill(&cairn_sdk::TaskId::new("spin"), None)
        .await
        .unwrap();
    assert_eq!(fw.terminal("spin", T).await.state, TaskState::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sees_only_its_processes_its_own_hostname_and_a_private_tmp() {
    let cluster = cluster(&[]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "ns").await;
    let marker = format!("private-{}", std::process::id());
    let script = format!(
        "echo procs=$(ps -e -o pid= | wc -l); echo host=$(hostname); echo {marker} > /tmp/{marker}; \
         echo tmp=$(cat /tmp/{marker}); echo sandbox=$MESOS_SANDBOX; echo cwd=$(pwd); echo uid=$(id -u)"
    );
    launch(&mut fw, "look", |b| b.shell(script)).await;
    let end = fw.terminal("look", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    let out = stdout_of(&cluster, "look");
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in {out:?}"))
            .to_string()
    };
    let procs: usize = field("procs").trim().parse().unwrap();
    // init, executor, the shell, ps and wc: nothing of the host.
    assert!(procs <= 6, "the task sees {procs} processes:\n{out}");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_ne!(field("host"), host, "the task has the host's hostname");
    assert_eq!(field("tmp"), marker, "the task can use its /tmp");
    assert!(
        !std::path::Path::new(&format!("/tmp/{marker}")).exists(),
        "the task's /tmp file is on the host"
    );
    assert_eq!(field("sandbox"), "/mnt/mesos/sandbox");
    assert_eq!(field("cwd"), "/mnt/mesos/sandbox");
    assert_ne!(field("uid"), "0", "tasks do not run as root by default");

    // Started as `std::process::Command` starts a program: nothing blocked,
    // and SIGPIPE (ignored by the executor's runtime) at its default, so
    // that `yes | head -1` ends quietly. (Not through a shell: dash clears
    // its signal mask.)
    let (awk, args) = PRINT_SIGNAL_MASKS;
    launch(&mut fw, "signals", |b| b.exec(awk, &args)).await;
    let end = fw.terminal("signals", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_started_like_command(&stdout_of(&cluster, "signals"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_daemon_does_not_outlive_its_task() {
    let cluster = cluster(&[]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "daemon").await;
    launch(&mut fw, "daemonizer", |b| {
        b.shell("(setsid sleep 613 &) ; sleep 0.5; exit 0")
    })
    .await;
    let end = fw.terminal("daemonizer", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    wait_for(T, "the daemon to be gone", || async {
        processes_running("sleep 613").is_empty().then_some(())
    })
    .await;
    let root = cluster.agent_cgroups(0);
    wait_for(T, "the task's cgroups to be removed", || {
        let root = root.clone();
        async move { cgroups_under(&root).is_empty().then_some(()) }
    })
    .await;
}

async fn run_as(master: &str, user: &str) -> TaskStatus {
    let mut fw = TestFramework::start(master, FrameworkInfo::new("who", user)).await;
    launch(&mut fw, "whoami", |b| b.shell("id -u")).await;
    fw.terminal("whoami", T).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_tasks_are_refused_unless_the_agent_allows_them() {
    let strict = cluster(&[]).await;
    let end = run_as(&strict.master_addr, "root").await;
    assert_eq!(end.state, TaskState::Error, "{end:?}");
    assert_eq!(end.reason, Some(Reason::TaskUnauthorized));
    assert!(end.message.contains("root"), "{}", end.message);
    drop(strict);

    let lenient = cluster(&["--allow-root-tasks"]).await;
    let end = run_as(&lenient.master_addr, "root").await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(stdout_of(&lenient, "whoami").trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_removes_containers_it_does_not_know() {
    // Without a checkpoint the restarted agent knows none of the earlier
    // run's containers.
    let mut cluster = cluster(&["--checkpoint", "false"]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "orphans").await;
    launch(&mut fw, "orphan", |b| b.shell("sleep 619")).await;
    fw.update("orphan", T, |s| s.state == TaskState::Running)
        .await;
    cluster.agents[0].proc.kill9();
    assert!(
        !processes_running("sleep 619").is_empty(),
        "the task outlives its agent's kill -9"
    );
    // The same agent (same work dir and cgroup root) starts again.
    let root = cluster.agent_cgroups(0);
    cluster.agents[0].restart();
    wait_for(T, "the orphaned task to be killed", || async {
        processes_running("sleep 619").is_empty().then_some(())
    })
    .await;
    wait_for(T, "the orphaned cgroups to be removed", || {
        let root = root.clone();
        async move { cgroups_under(&root).is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_network_none_sees_only_loopback() {
    let cluster = cluster(&[]).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "net").await;
    let script =
        "echo devices=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ,)";
    // Loopback is up in the task's own namespace (`ip` is iproute2's,
    // installed by scripts/test).
    let isolated = format!("{script}; ip -o link show lo | grep -q '<LOOPBACK,UP' && echo lo=up");
    launch(&mut fw, "isolated", |b| {
        b.network(cairn_sdk::Network::None).shell(&isolated)
    })
    .await;
    assert_eq!(fw.terminal("isolated", T).await.state, TaskState::Finished);
    assert_eq!(stdout_of(&cluster, "isolated").trim(), "devices=lo,\nlo=up");
    launch(&mut fw, "hosted", |b| b.shell(script)).await;
    assert_eq!(fw.terminal("hosted", T).await.state, TaskState::Finished);
    let host = stdout_of(&cluster, "hosted");
    assert_ne!(
        host.trim(),
        "devices=lo,",
        "the default is the host's network: {host}"
    );
}
