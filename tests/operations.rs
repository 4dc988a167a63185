//! What operators use: Prometheus metrics and health endpoints, the
//! operator event stream, `cairn logs`, and bounded task logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use cairn_model::TaskState;
use cairn_sdk::TaskBuilder;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::process::bin;
use cairn_tests::wait_for;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

const T: Duration = Duration::from_secs(30);

/// `/metrics` of `addr`, parsed as Prometheus text.
async fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, body) = cairn_tests::http::get(&format!("http://{addr}/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).expect("UTF-8 exposition");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

/// The value of the sample `name` with `labels` (counters, gauges).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name} is not a scalar: {other:?}"),
    }
}

/// How many observations the histogram `name` holds.
fn observations(s: &prometheus_parse::Scrape, name: &str) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .unwrap_or_else(|| panic!("no histogram {name}"));
    match &sample.value {
        prometheus_parse::Value::Histogram(buckets) => {
            buckets.iter().map(|b| b.count).fold(0.0, f64::max)
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// Launches `n` tasks running `command` in the first offers, one per offer
/// slot; returns their ids.
async fn launch(fw: &mut TestFramework, prefix: &str, n: usize, command: &str) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let offer = fw.offers(T).await.remove(0);
        let tasks: Vec<_> = (ids.len()..n)
            .take(4)
            .map(|i| {
                TaskBuilder::new(format!("{prefix}-{i}"))
                    .cpus(0.1)
                    .mem(16.0)
                    .shell(command)
                    .build(&offer.agent_id)
                    .unwrap()
            })
            .collect();
        ids.extend(tasks.iter().map(|t| t.task_id.to_string()));
        fw.driver.launch(&offer, tasks).await.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_a_workload_runs() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let master = cluster.master_addr.clone();
    let agent = cluster.agents[0].addr.clone();

    for addr in [&master, &agent] {
        for path in ["livez", "readyz"] {
            let (status, _) = cairn_tests::http::get(&format!("http://{addr}/{path}"))
                .await
                .unwrap();
            assert_eq!(status, 200, "{addr}/{path}");
        }
    }

    let before = scrape(&master).await;
    let finished = |s: &prometheus_parse::Scrape| {
        value(s, "cairn_tasks_terminal_total", &[("state", "finished")])
    };
    let finished_before = finished(&before);
    let offers_before = value(&before, "cairn_offers_sent_total", &[]);
    assert_eq!(value(&before, "cairn_master_elected", &[]), 1.0);
    assert_eq!(
        value(&before, "cairn_agents", &[("state", "connected")]),
        1.0
    );
    assert_eq!(
        value(&before, "cairn_resources_total", &[("resource", "cpus")]),
        4.0
    );
    assert_eq!(
        value(
            &before,
            "cairn_resources_total",
            &[("resource", "mem_bytes")]
        ),
        4096.0 * 1024.0 * 1024.0,
        "memory in bytes"
    );

    let mut fw = TestFramework::named(&master, "metrics").await;
    let ids = launch(&mut fw, "m", 6, "true").await;
    for id in &ids {
        let s = fw.terminal(id, T).await;
        assert_eq!(s.state, TaskState::Finished, "{id}: {s:?}");
    }

    // The counts are the core's: they move with the updates just seen.
    let after = wait_for(T, "six more finished tasks in /metrics", || {
        let master = master.clone();
        async move {
            let s = scrape(&master).await;
            (value(&s, "cairn_tasks_terminal_total", &[("state", "finished")])
                >= finished_before + 6.0)
                .then_some(s)
        }
    })
    .await;
    assert_eq!(finished(&after), finished_before + 6.0);
    assert!(value(&after, "cairn_offers_sent_total", &[]) > offers_before);
    assert!(value(&after, "cairn_tasks_launched_total", &[]) >= 6.0);
    assert!(observations(&after, "cairn_master_status_update_latency_seconds") >= 18.0);
    assert!(observations(&after, "cairn_master_allocation_cycle_seconds") >= 1.0);

    let a = scrape(&agent).await;
    assert_eq!(value(&a, "cairn_agent_registered", &[]), 1.0);
    assert_eq!(
        value(&a, "cairn_agent_resources_total", &[("resource", "cpus")]),
        4.0
    );
    // The Mesos-style snapshot reads the same counters.
    let snap = cairn_tests::http::get_json(&format!("http://{master}/metrics/snapshot"))
        .await
        .unwrap();
    assert_eq!(
        snap["master/tasks_finished"].as_f64().unwrap(),
        finished(&after)
    );
}

/// Server-Sent Events from `url`: each message's `data` as JSON.
struct Sse {
    body: hyper::body::Incoming,
    buf: String,
}

impl Sse {
    async fn open(url: &str) -> Sse {
        let resp = cairn_tests::http::client()
            .get(url.parse().unwrap())
            .await
            .expect("event stream opens");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Sse {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let msg: String = self.buf.drain(..end + 2).collect();
                let data: String = msg
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return serde_json::from_str(&data).ok();
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

/// The states of `task`'s TASK_UPDATED events, in arrival order, until a
/// terminal one.
async fn updates_of(
    mut next: impl AsyncFnMut() -> Option<Value>,
    task: &str,
) -> (bool, Vec<String>) {
    let mut added = false;
    let mut states = Vec::new();
    while let Some(e) = next().await {
        match e["type"].as_str() {
            Some("TASK_ADDED") if e["task_added"]["task"]["task_id"]["value"] == task => {
                added = true;
            }
            Some("TASK_UPDATED") if e["task_updated"]["status"]["task_id"]["value"] == task => {
                let state = e["task_updated"]["state"].as_str().unwrap().to_string();
                let end = matches!(
                    state.as_str(),
                    "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED" | "TASK_LOST" | "TASK_ERROR"
                );
                // Only what came after the task was added counts.
                if added {
                    states.push(state);
                }
                if end {
                    break;
                }
            }
            _ => {}
        }
    }
    (added, states)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_delivers_a_tasks_states_in_order() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let master = cluster.master_addr.clone();

    // The Mesos operator SUBSCRIBE call (RecordIO) and Server-Sent Events.
    let mut operator = cairn_tests::http::post_streaming(
        &format!("http://{master}/api/v1"),
        &[("Content-Type", "application/json")],
        r#"{"type":"SUBSCRIBE"}"#,
    )
    .await
    .expect("SUBSCRIBE answers");
    assert_eq!(operator.status, 200);
    let first = operator.next_record(T).await.expect("SUBSCRIBED");
    assert_eq!(first["type"], "SUBSCRIBED");
    assert_eq!(
        first["subscribed"]["get_state"]["get_agents"]["agents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut sse = Sse::open(&format!("http://{master}/events")).await;
    let first = sse.next(T).await.expect("the first event");
    assert_eq!(first["type"], "SUBSCRIBED");

    let mut fw = TestFramework::named(&master, "events").await;
    let ids = launch(&mut fw, "ev", 1, "sleep 0.3").await;
    assert_eq!(fw.terminal(&ids[0], T).await.state, TaskState::Finished);

    let want = ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"];
    let (added, states) = updates_of(async || operator.next_record(T).await, &ids[0]).await;
    assert!(added, "TASK_ADDED on the operator stream");
    assert_eq!(states, want, "operator SUBSCRIBE");
    let (added, states) = updates_of(async || sse.next(T).await, &ids[0]).await;
    assert!(added, "TASK_ADDED on /events");
    assert_eq!(states, want, "/events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_logs_follows_a_tasks_output_as_it_is_written() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let master = cluster.master_addr.clone();
    let mut fw = TestFramework::named(&master, "logs").await;
    let ids = launch(
        &mut fw,
        "chatty",
        1,
        "echo err-1 >&2; for i in $(seq 1 10); do echo line-$i; sleep 0.3; done",
    )
    .await;
    let task = ids[0].clone();
    fw.update(&task, T, |s| s.state == TaskState::Running).await;

    let mut follow = tokio::process::Command::new(bin("cairn"))
        .args(["logs", "-f", &task, "--master", &master])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("a first line within 30 s")
        .unwrap();
    assert_eq!(first.as_deref(), Some("line-1"));
    // It came while the task was still writing.
    let state = cluster.state().await;
    let running = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().into_iter().flatten())
        .any(|t| t["id"] == task.as_str() && t["state"] == "TASK_RUNNING");
    assert!(running, "line-1 arrived only after the task ended");
    let mut seen = vec![first.unwrap()];
    while let Some(l) = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("lines keep coming")
        .unwrap()
    {
        seen.push(l);
    }
    let want: Vec<String> = (1..=10).map(|i| format!("line-{i}")).collect();
    assert_eq!(seen, want);
    let status = tokio::time::timeout(T, follow.wait())
        .await
        .expect("cairn logs -f ends with the task")
        .unwrap();
    assert!(status.success());

    let out = tokio::process::Command::new(bin("cairn"))
        .args(["logs", &task, "--stderr", "--master", &master])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "err-1\n");
    let out = tokio::process::Command::new(bin("cairn"))
        .args(["logs", "no-such-task", "--master", &master])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task no-such-task"));
}

/// Sizes of the files under `dir`, by name.
fn sizes_under(dir: &std::path::Path, out: &mut HashMap<String, u64>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            sizes_under(&e.path(), out);
        } else if meta.is_file() {
            *out.entry(e.file_name().to_string_lossy().into_owned())
                .or_default() += meta.len();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_printing_100_mb_keeps_at_most_the_rotation_limit_on_disk() {
    let cluster = Cluster::start(ClusterSpec {
        agent_args: vec!["--task-log-max-size".into(), "10MB".into()],
        ..ClusterSpec::default()
    })
    .await;
    let mut fw = TestFramework::named(&cluster.master_addr, "chatty").await;
    let ids = launch(
        &mut fw,
        "flood",
        1,
        "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo the-end",
    )
    .await;
    let end = fw.terminal(&ids[0], Duration::from_secs(120)).await;
    assert_eq!(end.state, TaskState::Finished, "{end:?}");

    let mut sizes = HashMap::new();
    sizes_under(&cluster.agents[0].work_dir().join("frameworks"), &mut sizes);
    let stdout = sizes.get("stdout").copied().unwrap_or(0);
    let rotated = sizes.get("stdout.1").copied().unwrap_or(0);
    assert!(rotated > 0, "stdout was never rotated: {sizes:?}");
    assert!(
        stdout + rotated <= 10_000_000,
        "stdout {stdout} + stdout.1 {rotated} bytes exceed the 10 MB limit"
    );
    // The newest output is what was kept.
    let out = tokio::process::Command::new(bin("cairn"))
        .args([
            "logs",
            &ids[0],
            "--tail-bytes",
            "100",
            "--master",
            &cluster.master_addr,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("\nthe-end\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `cairn` with `args` against `master` (given by the config file when
/// `config` is set, else by --master).
async fn cairn(
    master: &str,
    config: Option<&std::path::Path>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(bin("cairn"));
    cmd.args(args).env_remove("CAIRN_MASTER");
    match config {
        Some(path) => {
            cmd.env("CAIRN_CONFIG", path);
        }
        None => {
            cmd.args(["--master", master]);
        }
    }
    let out = tokio::time::timeout(T, cmd.output())
        .await
        .expect("cairn finished within 30 s")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_describes_selects_watches_and_tops_the_cluster() {
    let mut cluster = Cluster::start(ClusterSpec {
        agent_args: vec![
            "--attributes".into(),
            "rack:r1".into(),
            "--usage-report-interval".into(),
            "500ms".into(),
        ],
        ..ClusterSpec::default()
    })
    .await;
    cluster.add_agent(
        "cpus:4;mem:4096;disk:10000;ports:[32000-32999]",
        &[
            "--attributes",
            "rack:r2",
            "--usage-report-interval",
            "500ms",
        ],
    );
    cluster.wait_for_agents(2).await;
    let master = cluster.master_addr.clone();
    let mut fw = TestFramework::named(&master, "cli-demo").await;
    let offer = fw.offers(T).await.remove(0);
    let tasks = vec![
        TaskBuilder::new("web-0")
            .cpus(0.1)
            .mem(16.0)
            .label("app", "web")
            .shell("sleep 600")
            .build(&offer.agent_id)
            .unwrap(),
        TaskBuilder::new("db-0")
            .cpus(0.1)
            .mem(16.0)
            .label("app", "db")
            .shell("sleep 600")
            .build(&offer.agent_id)
            .unwrap(),
    ];
    fw.driver.launch(&offer, tasks).await.unwrap();
    for t in ["web-0", "db-0"] {
        fw.update(t, T, |s| s.state == TaskState::Running).await;
    }

    // Label selectors: task labels, agent attributes.
    let (ok, out, err) = cairn(
        &master,
        None,
        &["get", "tasks", "-l", "app=web", "-o", "json"],
    )
    .await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web-0"]);
    let (_, out, _) = cairn(&master, None, &["get", "tasks", "-l", "app!=web"]).await;
    assert!(out.contains("db-0") && !out.contains("web-0"), "{out}");
    let (_, out, _) = cairn(&master, None, &["get", "agents", "-l", "rack=r2"]).await;
    assert_eq!(out.lines().count(), 2, "a header and one agent:\n{out}");
    let (_, out, _) = cairn(&master, None, &["get", "tasks", "-o", "yaml"]).await;
    assert!(
        out.contains("id: web-0") && out.contains("id: db-0"),
        "{out}"
    );
    let (_, out, _) = cairn(&master, None, &["get", "roles"]).await;
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with('*')),
        "{out}"
    );
    // The second agent's resources stay offered to the only framework.
    wait_for(T, "an outstanding offer in `cairn get offers`", || {
        let master = master.clone();
        async move {
            let (_, out, _) = cairn(&master, None, &["get", "offers", "-o", "wide"]).await;
            (out.lines().count() >= 2).then_some(())
        }
    })
    .await;

    // Describe each kind.
    let (ok, out, err) = cairn(&master, None, &["describe", "task", "web-0"]).await;
    assert!(ok, "{err}");
    for want in [
        "TASK_RUNNING",
        "TASK_STAGING",
        "app=web",
        "/executors/web-0/runs/latest",
    ] {
        assert!(out.contains(want), "{want} missing in:\n{out}");
    }
    let agent = offer.agent_id.to_string();
    let (_, out, _) = cairn(&master, None, &["describe", "agent", &agent]).await;
    assert!(
        out.contains("web-0") && out.contains("db-0") && out.contains("rack=r"),
        "{out}"
    );
    let (_, out, _) = cairn(&master, None, &["describe", "framework", fw.id.as_str()]).await;
    assert!(
        out.contains("cli-demo") && out.contains("Tasks: 2"),
        "{out}"
    );
    let (ok, _, err) = cairn(&master, None, &["describe", "task", "nope"]).await;
    assert!(!ok && err.contains("no task nope"), "{err}");

    // The address from the config file.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("master = \"{master}\"\n")).unwrap();
    let (ok, out, err) = cairn(&master, Some(&config), &["get", "agents"]).await;
    assert!(ok && out.lines().count() == 3, "{out}{err}");
    std::fs::write(&config, "mastr = \"x\"\n").unwrap();
    let (ok, _, err) = cairn(&master, Some(&config), &["get", "agents"]).await;
    assert!(!ok && err.contains("config.toml"), "{err}");

    // top: both agents and the framework, with their containers.
    let (ok, out, err) = cairn(&master, None, &["top", "--once", "--interval", "1500ms"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&agent) && out.contains("cli-demo"), "{out}");

    // --watch prints again when something changes.
    let mut watch = tokio::process::Command::new(bin("cairn"))
        .args([
            "get",
            "tasks",
            "--watch",
            "--interval",
            "200ms",
            "--master",
            &master,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let next_line = async |lines: &mut tokio::io::Lines<_>| -> String {
        tokio::time::timeout(T, lines.next_line())
            .await
            .expect("--watch keeps printing")
            .unwrap()
            .expect("--watch still running")
    };
    while !next_line(&mut lines).await.starts_with("db-0") {}
    fw.driver
        .kill(&cairn_model::TaskId::new("db-0"), None)
        .await
        .unwrap();
    loop {
        let l = next_line(&mut lines).await;
        if l.starts_with("db-0") && l.contains("TASK_KILLED") {
            break;
        }
    }
    watch.kill().await.unwrap();
}
