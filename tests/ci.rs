//! cairn-ci on real masters and agents: ten builds at once across three
//! agents with their logs and artifacts, suppression while the queue is
//! empty, a build over its timeout, and surviving a master failover and a
//! restart of itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterSpec, free_port};
use cairn_tests::process::{Proc, bin};
use http_body_util::BodyExt;
use serde_json::Value;

const T: Duration = Duration::from_secs(180);

struct Ci {
    proc: Proc,
    url: String,
}

impl Ci {
    async fn start(master: &str, dir: &Path, state_dir: Option<&Path>) -> Ci {
        let port = free_port();
        let mut args = vec![
            "serve".to_string(),
            "--master".into(),
            master.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        if let Some(s) = state_dir {
            args.push("--state-dir".into());
            args.push(s.display().to_string());
        }
        let log = dir.join(format!("ci-{port}.log"));
        let proc = Proc::spawn("cairn-ci", &bin("cairn-ci"), &args, &log);
        let ci = Ci {
            proc,
            url: format!("http://127.0.0.1:{port}"),
        };
        let url = format!("{}/builds", ci.url);
        cairn_tests::wait_for(T, "cairn-ci to serve", || {
            let url = url.clone();
            async move {
                cairn_tests::http::get(&url)
                    .await
                    .filter(|(s, _)| *s == 200)
            }
        })
        .await;
        ci
    }

    async fn submit(&self, yaml: &str) -> u64 {
        let (status, _, body) = cairn_tests::http::post(
            &format!("{}/builds", self.url),
            &[("content-type", "application/yaml")],
            yaml,
        )
        .await
        .expect("POST /builds");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let b: Value = serde_json::from_slice(&body).unwrap();
        b["id"].as_u64().unwrap()
    }

    async fn builds(&self) -> Vec<Value> {
        let (_, body) = cairn_tests::http::get(&format!("{}/builds", self.url))
            .await
            .expect("GET /builds");
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["builds"].as_array().unwrap().clone()
    }

    /// Waits until every build is done; returns them.
    async fn wait_all_done(&self, n: usize) -> Vec<Value> {
        let url = format!("{}/builds", self.url);
        cairn_tests::wait_for(T, &format!("{n} builds done"), || {
            let url = url.clone();
            async move {
                let (_, body) = cairn_tests::http::get(&url).await?;
                let v: Value = serde_json::from_slice(&body).ok()?;
                let builds = v["builds"].as_array()?.clone();
                let done = builds
                    .iter()
                    .filter(|b| !matches!(b["status"].as_str(), Some("queued" | "running")))
                    .count();
                (builds.len() == n && done == n).then_some(builds)
            }
        })
        .await
    }
}

/// GET `url` to the end of its body (which may stream for a while).
async fn get_all(url: &str) -> (u16, String) {
    let resp = tokio::time::timeout(T, cairn_tests::http::client().get(url.parse().unwrap()))
        .await
        .expect("answered in time")
        .expect("GET");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(T, resp.into_body().collect())
        .await
        .expect("the body ends in time")
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn framework(state: &Value) -> Option<Value> {
    state["frameworks"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == "cairn-ci")
        .cloned()
}

async fn wait_suppressed(cluster: &Cluster, what: &str) {
    let master = cluster.leader_addr().await;
    cairn_tests::wait_for(T, what, || {
        let master = master.clone();
        async move {
            let state = cairn_tests::http::get_json(&format!("http://{master}/state")).await?;
            let f = framework(&state)?;
            (f["suppressed_roles"] == serde_json::json!(["*"])).then_some(())
        }
    })
    .await;
}

fn pipeline(i: usize) -> String {
    format!(
        r#"
name: app-{i}
steps:
  - name: compile
    run: echo "build {i} says hi"; sleep 1
  - name: package
    run: mkdir -p out && echo "artifact {i}" > out/app.txt
environment:
  BUILD_NUMBER: "{i}"
resources: {{ cpus: 1.5, mem: 128 }}
timeout: 2m
artifacts: [out/app.txt]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_builds_at_once_run_across_three_agents_with_their_logs_and_artifacts() {
    let cluster = Cluster::start(ClusterSpec {
        agents: 3,
        ..ClusterSpec::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ci = Ci::start(&cluster.master_addr, dir.path(), None).await;
    wait_suppressed(&cluster, "offers suppressed while the queue is empty").await;

    let mut ids = Vec::new();
    let submits = (0..10).map(|i| {
        let yaml = pipeline(i);
        let ci = &ci;
        async move { ci.submit(&yaml).await }
    });
    for id in futures_join(submits).await {
        ids.push(id);
    }
    let builds = ci.wait_all_done(10).await;
    for b in &builds {
        assert_eq!(b["status"], "succeeded", "{b}");
    }
    let agents: BTreeSet<&str> = builds
        .iter()
        .map(|b| b["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(agents.len(), 3, "the builds ran across the three agents");

    let b3 = builds
        .iter()
        .find(|b| b["pipeline"]["name"] == "app-3")
        .unwrap();
    let id3 = b3["id"].as_u64().unwrap();
    let (status, log) = get_all(&format!("{}/builds/{id3}/log", ci.url)).await;
    assert_eq!(status, 200);
    assert!(log.contains("==> compile"), "{log}");
    assert!(log.contains("build 3 says hi"), "{log}");
    assert!(log.contains("==> package"), "{log}");
    let (status, artifact) =
        get_all(&format!("{}/builds/{id3}/artifacts/out/app.txt", ci.url)).await;
    assert_eq!(status, 200);
    assert_eq!(artifact, "artifact 3\n");
    let (status, _) = get_all(&format!("{}/builds/{id3}/artifacts/../../etc", ci.url)).await;
    assert_ne!(status, 200, "only the pipeline's artifacts are served");

    wait_suppressed(&cluster, "offers suppressed again once the queue emptied").await;
    let (status, _) = get_all(&format!("{}/builds/999", ci.url)).await;
    assert_eq!(status, 404);
    drop(ci);
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(fs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_streams_as_the_build_writes_it_and_a_build_over_its_timeout_is_killed() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ci = Ci::start(&cluster.master_addr, dir.path(), None).await;
    let slow = ci
        .submit(
            "name: slow\nsteps:\n  - run: for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done\nresources: {cpus: 0.5, mem: 64}\n",
        )
        .await;
    let (status, log) = get_all(&format!("{}/builds/{slow}/log?follow=true", ci.url)).await;
    assert_eq!(status, 200);
    for i in 1..=5 {
        assert!(log.contains(&format!("line {i}\n")), "{log}");
    }
    let stuck = ci
        .submit("name: stuck\nsteps:\n  - run: sleep 600\nresources: {cpus: 0.5, mem: 64}\ntimeout: 2s\n")
        .await;
    let builds = ci.wait_all_done(2).await;
    let b = builds.iter().find(|b| b["id"] == stuck).unwrap();
    assert_eq!(b["status"], "timed_out", "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s"),
        "{b}"
    );
    let state = cluster.state().await;
    let f = framework(&state).unwrap();
    let task = f["completed_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == b["task_id"])
        .expect("the timed-out task");
    assert_eq!(task["state"], "TASK_KILLED");
    drop(ci);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_queue_survives_a_master_failover_and_a_restart_of_itself() {
    let mut cluster = Cluster::start(ClusterSpec::ha(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let mut ci = Ci::start(&cluster.master_addr, dir.path(), Some(&state_dir)).await;
    let slow = |i: usize| {
        format!(
            "name: s{i}\nsteps:\n  - run: echo s{i}; sleep 3\nresources: {{cpus: 1.5, mem: 64}}\n"
        )
    };
    for i in 0..4 {
        ci.submit(&slow(i)).await;
    }
    // Some running, some queued: the leader dies.
    let url = format!("{}/builds", ci.url);
    cairn_tests::wait_for(T, "a build running", || {
        let url = url.clone();
        async move {
            let (_, body) = cairn_tests::http::get(&url).await?;
            let v: Value = serde_json::from_slice(&body).ok()?;
            v["builds"]
                .as_array()?
                .iter()
                .any(|b| b["status"] == "running")
                .then_some(())
        }
    })
    .await;
    cluster.kill_leader().await;
    for i in 4..6 {
        ci.submit(&slow(i)).await;
    }
    // The framework dies with builds running and queued, and comes back.
    ci.proc.kill9();
    let ci = Ci::start(&cluster.master_addr, dir.path(), Some(&state_dir)).await;
    let builds = ci.wait_all_done(6).await;
    for b in &builds {
        assert_eq!(b["status"], "succeeded", "{b}");
    }
    let names: BTreeSet<&str> = builds
        .iter()
        .map(|b| b["pipeline"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 6, "every build once: {names:?}");
    let state = cluster.state().await;
    let frameworks: Vec<&Value> = state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "cairn-ci")
        .collect();
    assert_eq!(
        frameworks.len(),
        1,
        "the restarted queue is the same framework"
    );
    let _ = ci.builds().await;
}
