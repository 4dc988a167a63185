//! cairn-batch on real masters and agents: a DAG of stages, retries, a job
//! that fails, coarse-grained mode, locality, and surviving a master
//! failover and a restart of itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::process::bin;
use serde_json::Value;

const JOB_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs `cairn-batch run` against `cluster` to its end (trusting its CA
/// when it has one); returns its exit code, output, and the JSON report.
async fn run_batch(
    cluster: &Cluster,
    dir: &Path,
    job: &str,
    extra: &[&str],
) -> (i32, String, Value) {
    let job_file = dir.join("job.toml");
    std::fs::write(&job_file, job).unwrap();
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut cmd = tokio::process::Command::new(bin("cairn-batch"));
    cmd.arg("run")
        .arg(&job_file)
        .args(["--master", &cluster.master_addr, "--quiet", "--report-json"])
        .arg(&report)
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(id) = &cluster.identity {
        cmd.env("CAIRN_CA", id.cluster_dir.join("ca.crt"));
    }
    let out = tokio::time::timeout(JOB_TIMEOUT, cmd.output())
        .await
        .expect("the job ends in time")
        .expect("cairn-batch runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), text, report)
}

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_stage_job_of_100_tasks_succeeds_and_a_task_that_fails_once_is_retried() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 2,
        ..ClusterSpec::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Not under /tmp: isolated tasks see a /tmp of their own.
    // Tasks run as the framework's user (nobody when it gives none).
    let flags = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(
        flags.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let flag = flags.path().join("failed-once");
    let job = format!(
        r#"
        name = "etl"
        [[stage]]
        name = "extract"
        tasks = 40
        retries = 1
        command = "if [ {{index}} = 7 ] && [ ! -e {flag} ]; then touch {flag}; exit 3; fi; echo {{stage}} {{index}}"
        [[stage]]
        name = "transform"
        depends_on = ["extract"]
        tasks = 40
        command = "true"
        [[stage]]
        name = "load"
        depends_on = ["transform"]
        tasks = 20
        command = "true"
        "#,
        flag = flag.display()
    );
    let (code, out, report) = run_batch(&cluster, dir.path(), &job, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("job etl succeeded"), "{out}");
    assert_eq!(report["succeeded"], true);
    for (name, n) in [("extract", 40), ("transform", 40), ("load", 20)] {
        assert_eq!(stage(&report, name)["finished"], n, "{report}");
    }
    assert_eq!(
        stage(&report, "extract")["retries"],
        1,
        "the failed task ran again"
    );
    assert!(flag.exists());
    // The stages ran in order: none started before what it depends on ended.
    let tasks = all_tasks(&cluster.state().await);
    let ends = |s: &str| latest(&tasks, s, "TASK_FINISHED", f64::max);
    let starts = |s: &str| latest(&tasks, s, "TASK_STARTING", f64::min);
    assert!(ends("extract") <= starts("transform"), "{tasks:?}");
    assert!(ends("transform") <= starts("load"));
}

/// Every task of the frameworks in `/state` (live and completed ones).
fn all_tasks(state: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for key in ["frameworks", "completed_frameworks"] {
        for f in state[key].as_array().into_iter().flatten() {
            for k in ["tasks", "completed_tasks"] {
                out.extend(f[k].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

/// The earliest or latest (`pick`) time a task of `stage` reached `state`.
fn latest(tasks: &[Value], stage: &str, state: &str, pick: fn(f64, f64) -> f64) -> f64 {
    let mut acc: Option<f64> = None;
    for t in tasks {
        let id = t["id"].as_str().unwrap_or("");
        if id.split('.').nth(1) != Some(stage) {
            continue;
        }
        for s in t["statuses"].as_array().into_iter().flatten() {
            if s["state"] == state
                && let Some(ts) = s["timestamp"].as_f64()
            {
                acc = Some(acc.map_or(ts, |a| pick(a, ts)));
            }
        }
    }
    acc.unwrap_or_else(|| panic!("no {state} for stage {stage}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_always_fails_fails_the_job_with_a_clear_report() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = r#"
        name = "doomed"
        [[stage]]
        name = "work"
        tasks = 5
        retries = 2
        command = "if [ {index} = 2 ]; then echo broken >&2; exit 4; fi"
        [[stage]]
        name = "never"
        depends_on = ["work"]
        tasks = 3
        command = "true"
    "#;
    let (code, out, report) = run_batch(&cluster, dir.path(), job, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("job doomed FAILED"), "{out}");
    assert!(
        out.contains("task 2 of work failed for good: TASK_FAILED"),
        "{out}"
    );
    assert!(out.contains("exit") || out.contains("status 4"), "{out}");
    let work = stage(&report, "work");
    assert_eq!(work["retries"], 2, "three attempts in all: {report}");
    assert_eq!(stage(&report, "never")["finished"], 0);
    assert_eq!(report["succeeded"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coarse_grained_mode_runs_500_tasks_with_one_executor_per_agent_over_tls() {
    // With the cluster's identity: the framework's own executors (the SDK's)
    // reach their agents over TLS, verifying each agent's certificate.
    let cluster = Cluster::start(ClusterSpec {
        agents: 3,
        tls: true,
        ..ClusterSpec::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let job = r#"
        name = "coarse"
        mode = "coarse"
        [[stage]]
        name = "many"
        tasks = 500
        command = "echo {index}"
    "#;
    let (code, out, report) = run_batch(&cluster, dir.path(), job, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(stage(&report, "many")["finished"], 500);
    let tasks = all_tasks(&cluster.state().await);
    assert!(tasks.len() >= 500, "{} tasks in /state", tasks.len());
    let mut executors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in &tasks {
        let exec = t["executor_id"].as_str().unwrap().to_string();
        assert!(!exec.is_empty(), "a coarse task names its executor: {t}");
        executors
            .entry(t["slave_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(exec);
    }
    for (agent, execs) in &executors {
        assert_eq!(execs.len(), 1, "agent {agent} ran executors {execs:?}");
    }
    // The executor ran each task's command, its output in the sandbox.
    let out = find_file(cluster.dir.path(), "coarse.many.42.1.stdout").expect("task 42's output");
    assert_eq!(std::fs::read_to_string(out).unwrap().trim(), "42");
}

fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir()
            && !p.is_symlink()
            && let Some(found) = find_file(&p, name)
        {
            return Some(found);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_preferring_agents_runs_all_its_tasks_on_them() {
    let mut cluster = Cluster::start(ClusterSpec {
        agents: 0,
        ..ClusterSpec::default()
    })
    .await;
    for rack in ["r1", "r2", "r2"] {
        cluster.add_agent(
            "cpus:2;mem:2048;disk:1000",
            &["--attributes", &format!("rack:{rack}")],
        );
    }
    cluster.wait_for_agents(3).await;
    let dir = tempfile::tempdir().unwrap();
    let job = r#"
        name = "local"
        [[stage]]
        name = "near"
        tasks = 60
        command = "sleep 0.1"
        prefer = { attribute = "rack:r1", wait = "60s" }
    "#;
    let (code, out, report) = run_batch(&cluster, dir.path(), job, &[]).await;
    assert_eq!(code, 0, "{out}");
    let state = cluster.state().await;
    let r1: Vec<String> = state["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["attributes"]["rack"] == "r1")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(r1.len(), 1);
    let ran_on = stage(&report, "near")["ran_on"].as_array().unwrap().clone();
    let on: u64 = ran_on.iter().map(|r| r["tasks"].as_u64().unwrap()).sum();
    assert_eq!(on, 60);
    // The one agent on r1 has room for 20 at a time: the stage waited for
    // it rather than spreading over the others.
    for r in &ran_on {
        let agent = r["agent_id"].as_str().unwrap();
        assert!(
            r1.iter().any(|a| a == agent),
            "tasks ran on {agent}, not on rack r1"
        );
    }
}

/// Finished tasks recorded in a state directory's progress log.
fn finished_in_log(state_dir: &Path) -> usize {
    std::fs::read_to_string(state_dir.join("progress.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"ended\"") && l.contains("TASK_FINISHED"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_master_failover_and_a_restart_of_itself_with_every_task_accounted_for() {
    let mut cluster = Cluster::start(ClusterSpec::ha(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let job_file = dir.path().join("job.toml");
    std::fs::write(
        &job_file,
        r#"
        name = "steady"
        [[stage]]
        name = "work"
        tasks = 120
        command = "sleep 0.5"
        [[stage]]
        name = "after"
        depends_on = ["work"]
        tasks = 10
        command = "true"
        "#,
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let master = cluster.master_addr.clone();
    let start = || {
        let mut cmd = tokio::process::Command::new(bin("cairn-batch"));
        cmd.arg("run")
            .arg(&job_file)
            .args(["--master", &master, "--quiet", "--state-dir"])
            .arg(&state_dir)
            .arg("--report-json")
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd.spawn().expect("cairn-batch starts")
    };
    let mut first = start();
    let progressed = |n: usize| {
        let state_dir = state_dir.clone();
        async move {
            cairn_tests::wait_for(JOB_TIMEOUT, &format!("{n} tasks finished"), || {
                let got = finished_in_log(&state_dir);
                async move { (got >= n).then_some(()) }
            })
            .await;
        }
    };
    progressed(15).await;
    cluster.kill_leader().await;
    progressed(40).await;
    // The framework dies mid-run and is started again on the same state.
    first.start_kill().unwrap();
    let _ = first.wait().await;
    let second = start();
    let out = tokio::time::timeout(JOB_TIMEOUT, second.wait_with_output())
        .await
        .expect("the resumed job ends in time")
        .unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(stage(&report, "work")["finished"], 120, "{report}");
    assert_eq!(stage(&report, "after")["finished"], 10);
    // Every task index finished exactly once (attempts after a loss are new
    // tasks, but only one of them finished).
    let log = std::fs::read_to_string(state_dir.join("progress.jsonl")).unwrap();
    let mut launched: BTreeMap<String, String> = BTreeMap::new();
    let mut finished_indexes: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        if r["event"] == "launched" {
            launched.insert(
                r["task_id"].as_str().unwrap().into(),
                format!("{}/{}", r["stage"], r["index"]),
            );
        } else if r["state"] == "TASK_FINISHED" {
            let idx = launched[r["task_id"].as_str().unwrap()].clone();
            *finished_indexes.entry(idx).or_default() += 1;
        }
    }
    assert_eq!(finished_indexes.len(), 130);
    assert!(
        finished_indexes.values().all(|n| *n == 1),
        "an index finished twice: {finished_indexes:?}"
    );
}
