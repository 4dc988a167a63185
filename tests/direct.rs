//! Direct command tasks (`--command-tasks direct`): the agent runs a command
//! task's process in its container itself, with no executor process. Needs
//! root (cgroups and namespaces), as in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use cairn_model::TaskState;
use cairn_sdk::TaskBuilder;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::process::{
    PRINT_SIGNAL_MASKS, assert_started_like_command, cgroups_under, processes_marked,
};
use cairn_tests::wait_for;

const T: Duration = Duration::from_secs(30);

async fn cluster() -> Cluster {
    cluster_with(&[]).await
}

async fn cluster_with(extra: &[&str]) -> Cluster {
    assert!(
        nix::unistd::geteuid().is_root(),
        "direct task tests need root (cgroups and namespaces), as CI has"
    );
    Cluster::start(ClusterSpec {
        agent_args: [
            "--isolation",
            "cgroups,namespaces",
            "--command-tasks",
            "direct",
            "--task-log-max-size",
            "0",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect(),
        ..ClusterSpec::default()
    })
    .await
}

/// Launches one task built by `build` on the first offer.
async fn launch(fw: &mut TestFramework, id: &str, build: impl FnOnce(TaskBuilder) -> TaskBuilder) {
    fw.launch_one(build(TaskBuilder::new(id).cpus(0.2).mem(32.0)), T)
        .await;
}

/// The task's sandbox on the host.
fn sandbox_of(cluster: &Cluster, task: &str) -> PathBuf {
    cluster.agents[0]
        .sandbox_of(task)
        .unwrap_or_else(|| panic!("no sandbox for task {task}"))
}

fn read(cluster: &Cluster, task: &str, file: &str) -> String {
    std::fs::read_to_string(sandbox_of(cluster, task).join(file)).unwrap_or_default()
}

/// The names of the live processes of `task` (marked by its sandbox).
fn process_names(task: &str) -> Vec<String> {
    let mut names: Vec<String> = processes_marked(&format!("/executors/{task}/runs/"))
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    names.sort();
    names
}

async fn wait_output(cluster: &Cluster, task: &str, file: &str, text: &str) {
    wait_for(T, &format!("{text:?} in {task}'s {file}"), || async {
        read(cluster, task, file).contains(text).then_some(())
    })
    .await;
}

async fn wait_gone(cluster: &Cluster, task: &str) {
    wait_for(
        T,
        &format!("every process of {task} to be gone"),
        || async { process_names(task).is_empty().then_some(()) },
    )
    .await;
    let root = cluster.agent_cgroups(0);
    wait_for(T, "the task's cgroups to be removed", || {
        let root = root.clone();
        async move { cgroups_under(&root).is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tasks_run_without_an_executor_and_end_by_their_status_or_a_kill() {
    let cluster = cluster().await;
    let mut fw = TestFramework::named(&cluster.master_addr, "direct").await;

    // Its own PID namespace (our init is PID 1), its user, its output in
    // the sandbox, and no executor process beside it.
    launch(&mut fw, "ok", |b| {
        b.shell("echo hello; id -un; cat /proc/1/comm; echo oops >&2; while [ ! -e go ]; do sleep 0.05; done")
    })
    .await;
    fw.update("ok", T, |s| s.state == TaskState::Running).await;
    wait_output(&cluster, "ok", "stdout", "hello").await;
    let names = process_names("ok");
    let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("cairn-")).collect();
    assert_eq!(
        ours,
        ["cairn-init"],
        "one process of ours, the shim and the container's init at once: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("executor")),
        "a direct task has no executor process: {names:?}"
    );
    std::fs::write(sandbox_of(&cluster, "ok").join("go"), "").unwrap();
    let end = fw.terminal("ok", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(end.exit_code, Some(0));
    let out = read(&cluster, "ok", "stdout");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"hello"), "{out}");
    assert_ne!(
        lines.get(1),
        Some(&"root"),
        "tasks do not run as root: {out}"
    );
    assert_eq!(lines.get(2), Some(&"cairn-init"), "{out}");
    assert_eq!(read(&cluster, "ok", "stderr"), "oops\n");
    wait_gone(&cluster, "ok").await;

    // Started as `std::process::Command` starts a program: nothing blocked
    // (the shim and init block SIGTERM), and SIGPIPE (ignored by the
    // agent's runtime) at its default. Not through a shell (dash clears its
    // signal mask), and found in PATH.
    let (awk, args) = PRINT_SIGNAL_MASKS;
    launch(&mut fw, "signals", |b| b.exec(awk, &args)).await;
    let end = fw.terminal("signals", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_started_like_command(&read(&cluster, "signals", "stdout"));

    // A failure keeps its status.
    launch(&mut fw, "fails", |b| b.shell("exit 3")).await;
    let end = fw.terminal("fails", T).await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(end.message, "Command exited with status 3");

    // A kill: SIGTERM reaches the task, which ends within its grace.
    launch(&mut fw, "polite", |b| {
        b.shell("trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.05; done")
    })
    .await;
    fw.update("polite", T, |s| s.state == TaskState::Running)
        .await;
    wait_output(&cluster, "polite", "stdout", "ready").await;
    fw.driver
        .kill(&cairn_sdk::TaskId::new("polite"), Some(T))
        .await
        .unwrap();
    let end = fw.terminal("polite", T).await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    // Its own status: the shim outlived it to report it.
    assert_eq!(end.exit_code, Some(0), "{end:?}");
    assert!(read(&cluster, "polite", "stdout").contains("got TERM"));
    wait_gone(&cluster, "polite").await;

    // A task that ignores SIGTERM goes with its container after the grace.
    launch(&mut fw, "stubborn", |b| {
        b.shell("trap '' TERM; echo ready; while true; do sleep 0.05; done")
    })
    .await;
    fw.update("stubborn", T, |s| s.state == TaskState::Running)
        .await;
    wait_output(&cluster, "stubborn", "stdout", "ready").await;
    fw.driver
        .kill(
            &cairn_sdk::TaskId::new("stubborn"),
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let end = fw.terminal("stubborn", T).await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    wait_gone(&cluster, "stubborn").await;

    // Network none: loopback only, and up.
    launch(&mut fw, "offline", |b| {
        b.network(cairn_sdk::Network::None).shell(
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip -o link show lo | grep -q '<LOOPBACK,UP' && echo up",
        )
    })
    .await;
    let end = fw.terminal("offline", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(read(&cluster, "offline", "stdout"), "lo\nup\n");

    // Kills right behind their launch, before the task is known to run:
    // each ends its task by SIGTERM, well within the grace (a lost SIGTERM
    // would leave the task to the end of the grace, past this wait).
    for i in 0..3 {
        let id = format!("short-{i}");
        launch(&mut fw, &id, |b| b.shell("sleep 600")).await;
        fw.driver
            .kill(
                &cairn_sdk::TaskId::new(id.as_str()),
                Some(Duration::from_secs(600)),
            )
            .await
            .unwrap();
        let end = fw.terminal(&id, T).await;
        assert_eq!(end.state, TaskState::Killed, "{end:?}");
        wait_gone(&cluster, &id).await;
    }

    // Each shim records its task's status; the agent removes the record
    // once the container's end is checkpointed.
    let exits = cluster.agents[0].runtime_dir().join("exits");
    wait_for(T, "no exit record left behind", || async {
        let left: Vec<_> = std::fs::read_dir(&exits)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        left.is_empty().then_some(())
    })
    .await;
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The agent's children running `fork-server`.
fn fork_servers(agent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            ppid(*p) == Some(agent) && cmdline(*p).get(1).map(String::as_str) == Some("fork-server")
        })
        .collect()
}

/// Whether process `pid`'s arguments are on its stack, where `execve` puts
/// them (a forked shim's are in its heap).
fn args_on_stack(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // arg_start is field 48 (proc_pid_stat(5)); the first after the
    // command is field 3.
    let arg_start: u64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(48 - 3)
        .unwrap()
        .parse()
        .unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let stack = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .expect("a [stack] mapping");
    let (lo, hi) = stack
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('-')
        .unwrap();
    let (lo, hi) = (
        u64::from_str_radix(lo, 16).unwrap(),
        u64::from_str_radix(hi, 16).unwrap(),
    );
    (lo..hi).contains(&arg_start)
}

/// Runs a task and looks at its shim from the host: its command line,
/// whether its environment names its container, whether its arguments are
/// on its stack.
async fn shim_of_a_task(
    cluster: &Cluster,
    fw: &mut TestFramework,
    task: &str,
) -> (Vec<String>, bool, bool) {
    launch(fw, task, |b| {
        b.shell("while [ ! -e go ]; do sleep 0.05; done")
    })
    .await;
    fw.update(task, T, |s| s.state == TaskState::Running).await;
    let shim = processes_marked(&format!("/executors/{task}/runs/"))
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "cairn-init")
        })
        .unwrap_or_else(|| panic!("no shim for {task}: {:?}", process_names(task)));
    // Created as PID 1 of the container's PID namespace: its pid there is
    // the last of its `NSpid` (its pid in each namespace, outermost first).
    let status = std::fs::read_to_string(format!("/proc/{shim}/status")).unwrap();
    let ns_pids = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap_or_else(|| panic!("no NSpid in {status}"));
    assert_eq!(
        ns_pids.split_whitespace().last(),
        Some("1"),
        "{task}'s shim is its container's init: NSpid {ns_pids}"
    );
    let parent = ppid(shim).unwrap();
    let environ = std::fs::read(format!("/proc/{shim}/environ")).unwrap();
    let has_container_id = environ
        .split(|b| *b == 0)
        .any(|kv| kv.starts_with(b"CAIRN_CONTAINER_ID=") && kv.len() > "CAIRN_CONTAINER_ID=".len());
    assert_eq!(
        parent,
        cluster.agents[0].pid(),
        "the shim of {task} is the agent's child (the agent reaps it)"
    );
    let args = cmdline(shim);
    let on_stack = args_on_stack(shim);
    std::fs::write(sandbox_of(cluster, task).join("go"), "").unwrap();
    let end = fw.terminal(task, T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(end.exit_code, Some(0));
    (args, has_container_id, on_stack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_start_from_the_agents_fork_server_and_without_it() {
    // The default: a fork server, started once by the agent, forks each
    // container's shim, which looks to the host (and to the agent's
    // recovery, which finds an unrecorded shim by its environment) like an
    // executed one.
    let cluster = cluster().await;
    let agent = cluster.agents[0].pid();
    let servers = fork_servers(agent);
    assert_eq!(servers.len(), 1, "one fork server, the agent's child");
    let mut fw = TestFramework::named(&cluster.master_addr, "forked").await;
    for task in ["forked-1", "forked-2"] {
        let (args, has_id, on_stack) = shim_of_a_task(&cluster, &mut fw, task).await;
        assert!(!on_stack, "{task}'s shim was forked, not executed");
        assert!(
            has_id,
            "{task}'s shim shows its container id in its environment"
        );
        assert_eq!(
            args.get(1..4).map(|a| a.to_vec()),
            Some(vec![
                "container-exec".to_string(),
                "--".into(),
                "/bin/sh".into()
            ]),
            "{task}'s shim shows the command line it would have been executed with: {args:?}"
        );
        assert_eq!(
            fork_servers(agent),
            servers,
            "the same fork server serves every container"
        );
    }
    // A restarted agent starts a fork server of its own; the old one ended
    // with its agent.
    let mut cluster = cluster;
    cluster.agents[0].restart();
    let agent = cluster.agents[0].pid();
    wait_for(T, "the old fork server to end with its agent", || async {
        (!servers
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists()))
        .then_some(())
    })
    .await;
    wait_for(T, "the restarted agent's fork server", || async {
        (fork_servers(agent).len() == 1).then_some(())
    })
    .await;
    drop(fw);
    drop(cluster);

    // Without it, the agent executes its binary for each container.
    let cluster = cluster_with(&["--fork-server", "false"]).await;
    assert!(fork_servers(cluster.agents[0].pid()).is_empty());
    let mut fw = TestFramework::named(&cluster.master_addr, "executed").await;
    let (args, has_id, on_stack) = shim_of_a_task(&cluster, &mut fw, "executed").await;
    assert!(on_stack, "the shim was executed");
    assert!(has_id);
    assert_eq!(args.get(1).map(String::as_str), Some("container-exec"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_task_s_status_survives_agent_restarts() {
    let mut cluster = cluster().await;
    let mut fw = TestFramework::named(&cluster.master_addr, "restarts").await;
    let wait_go = |code: i32| format!("while [ ! -e go ]; do sleep 0.05; done; exit {code}");
    launch(&mut fw, "during", |b| b.shell(wait_go(7))).await;
    fw.update("during", T, |s| s.state == TaskState::Running)
        .await;
    launch(&mut fw, "after", |b| b.shell(wait_go(0))).await;
    fw.update("after", T, |s| s.state == TaskState::Running)
        .await;
    let exits = cluster.agents[0].runtime_dir().join("exits");

    // "during" ends while the agent is down: its shim records the status.
    cluster.agents[0].proc.kill9();
    std::fs::write(sandbox_of(&cluster, "during").join("go"), "").unwrap();
    wait_for(T, "the task ended while its agent is down", || async {
        process_names("during").is_empty().then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_dir(&exits).unwrap().count(),
        1,
        "one exit recorded"
    );
    assert!(
        !process_names("after").is_empty(),
        "the other task outlives its agent"
    );
    cluster.agents[0].restart();
    let end = fw.terminal("during", T).await;
    assert_eq!(end.state, TaskState::Failed, "{end:?}");
    assert_eq!(end.exit_code, Some(7), "{end:?}");
    assert_eq!(end.message, "Command exited with status 7");

    // "after" ends under the restarted agent, which is not its shim's
    // parent: its status comes from the shim's record too.
    std::fs::write(sandbox_of(&cluster, "after").join("go"), "").unwrap();
    let end = fw.terminal("after", T).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");
    assert_eq!(end.exit_code, Some(0), "{end:?}");
    wait_gone(&cluster, "after").await;
    assert_eq!(
        std::fs::read_dir(&exits).unwrap().count(),
        0,
        "the records are removed once read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_refuses_bounded_output_and_posix_isolation_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // The agent's error when started in direct mode with `extra`.
    let refusal = |extra: &[&str]| {
        let out = std::process::Command::new(cairn_tests::process::bin("cairn-agent"))
            .args([
                "--command-tasks",
                "direct",
                "--insecure",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--work-dir")
            .arg(dir.path())
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refusal(&["--isolation", "cgroups"]);
    assert!(err.contains("--task-log-max-size 0"), "{err}");
    // Nor without cgroups: a direct task's processes are found through its
    // cgroup.
    let err = refusal(&["--task-log-max-size", "0", "--isolation", "posix"]);
    assert!(err.contains("needs cgroups"), "{err}");
}
