//! Mesos v1 HTTP API compatibility, driven by pymesos (PyPI, 0.3.15): its
//! library code unchanged, against real masters and agents. The Python
//! environment is made by `scripts/test` (`target/pyenv`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::wait_for;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/python3");
    assert!(
        p.exists(),
        "{} is missing: scripts/test makes it (a venv with pymesos), or set CAIRN_PYTHON",
        p.display()
    );
    p
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// A pymesos scheduler process and the JSON lines it printed.
struct PyScheduler {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl PyScheduler {
    fn start(master: &str, tasks: usize, command: &str) -> PyScheduler {
        Self::start_with(master, tasks, &[("COMMAND", command)])
    }

    fn start_with(master: &str, tasks: usize, env: &[(&str, &str)]) -> PyScheduler {
        let mut child = Command::new(python())
            .arg(script("pymesos_scheduler.py"))
            .env("MASTER", master)
            .env("TASKS", tasks.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the pymesos scheduler");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => sink.lock().unwrap().push(v),
                    Err(_) => eprintln!("pymesos: {line}"),
                }
            }
        });
        PyScheduler {
            child,
            stdin,
            lines,
        }
    }

    /// Every state each task reported, in order.
    fn states(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in self.lines.lock().unwrap().iter() {
            if l["event"] == "update" {
                out.entry(l["task_id"].as_str().unwrap().to_string())
                    .or_default()
                    .push(l["state"].as_str().unwrap().to_string());
            }
        }
        out
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["event"] == kind)
            .cloned()
            .collect()
    }

    /// Closes stdin: the script stops its driver (TEARDOWN) and exits.
    async fn stop(&mut self) {
        drop(self.stdin.take());
        let child = &mut self.child;
        wait_for(T, "the pymesos scheduler to exit", || {
            let done = child.try_wait().ok().flatten().is_some();
            async move { done.then_some(()) }
        })
        .await;
    }
}

impl Drop for PyScheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn all_finished(states: &BTreeMap<String, Vec<String>>, n: usize) -> bool {
    states.len() == n
        && states
            .values()
            .all(|s| s.last().is_some_and(|l| l == "TASK_FINISHED"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymesos_scheduler_runs_twenty_command_tasks() {
    let cluster = Cluster::start(ClusterSpec {
        master_args: vec!["--allocation-interval".into(), "100ms".into()],
        ..ClusterSpec::default()
    })
    .await;
    let mut py = PyScheduler::start(&cluster.master_addr, 20, "echo hello from $MESOS_TASK_ID");
    wait_for(T, "20 tasks to finish, as pymesos sees them", || {
        let ok = all_finished(&py.states(), 20);
        async move { ok.then_some(()) }
    })
    .await;
    for (task, states) in py.states() {
        assert_eq!(
            states,
            ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"],
            "{task}"
        );
    }
    // Updates from the executor carry uuids, which pymesos acknowledged
    // (a refused acknowledgement kills its driver: it would have stopped).
    assert!(
        py.events("update")
            .iter()
            .all(|u| u["uuid"].is_string() && u["source"] == "SOURCE_EXECUTOR")
    );
    assert!(py.events("error").is_empty(), "{:?}", py.events("error"));
    let fw_id = py.events("registered")[0]["framework_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Every acknowledgement reached the agent: the master moved the tasks
    // to completed_tasks, which happens on the acknowledgement of each end.
    let addr = cluster.leader_addr().await;
    wait_for(T, "/master/state to show 20 completed tasks", || async {
        let s = cairn_tests::http::get_json(&format!("http://{addr}/master/state")).await?;
        let fw = s["frameworks"]
            .as_array()?
            .iter()
            .find(|f| f["id"] == fw_id.as_str())?
            .clone();
        let done = fw["completed_tasks"].as_array()?;
        (done.len() == 20
            && done.iter().all(|t| t["state"] == "TASK_FINISHED")
            && fw["name"] == "pymesos-test")
            .then_some(())
    })
    .await;

    // stop(): TEARDOWN; the framework is removed.
    py.stop().await;
    wait_for(T, "the framework to be torn down", || async {
        let s = cairn_tests::http::get_json(&format!("http://{addr}/master/state")).await?;
        (s["frameworks"].as_array()?.is_empty()
            && s["completed_frameworks"]
                .as_array()?
                .iter()
                .any(|f| f["id"] == fw_id.as_str()))
        .then_some(())
    })
    .await;
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn subscribe_body(name: &str) -> String {
    serde_json::json!({
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {"user": "nobody", "name": name, "failover_timeout": 60}},
    })
    .to_string()
}

/// A raw Mesos-API framework: its stream, framework id and stream id.
struct RawFramework {
    stream: Streaming,
    id: String,
    stream_id: String,
}

use cairn_tests::http::{Streaming, post, post_streaming};

async fn raw_subscribe(url: &str, name: &str) -> RawFramework {
    let mut stream = post_streaming(
        url,
        &[JSON, ("accept", "application/json")],
        &subscribe_body(name),
    )
    .await
    .expect("subscribe answered");
    assert_eq!(stream.status, 200);
    let h = &stream.headers;
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["transfer-encoding"], "chunked", "{h:?}");
    assert!(h.get("content-length").is_none(), "{h:?}");
    let stream_id = h["mesos-stream-id"].to_str().unwrap().to_string();
    let subscribed = stream.next_record(T).await.expect("SUBSCRIBED");
    assert_eq!(subscribed["type"], "SUBSCRIBED", "{subscribed}");
    assert_eq!(subscribed["subscribed"]["heartbeat_interval_seconds"], 15.0);
    // A heartbeat follows at once.
    let hb = stream
        .next_record(Duration::from_secs(2))
        .await
        .expect("HEARTBEAT");
    assert_eq!(hb["type"], "HEARTBEAT");
    let id = subscribed["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    RawFramework {
        stream,
        id,
        stream_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scheduler_calls_get_the_mesos_status_codes_and_disturb_no_one() {
    let cluster = Cluster::start(ClusterSpec {
        master_args: vec!["--allocation-interval".into(), "100ms".into()],
        ..ClusterSpec::default()
    })
    .await;
    let url = format!("http://{}/api/v1/scheduler", cluster.leader_addr().await);
    let mut a = raw_subscribe(&url, "careless").await;
    let mut b = raw_subscribe(
        &url.replace("/api/v1/scheduler", "/master/api/v1/scheduler/"),
        "bystander",
    )
    .await;
    let sid = a.stream_id.clone();
    let call = |ty: &str, extra: Value| {
        let mut v = serde_json::json!({"type": ty, "framework_id": {"value": a.id}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v.to_string()
    };
    let status = |r: Option<(u16, hyper::HeaderMap, bytes::Bytes)>| r.expect("answered").0;

    // Shape and transport errors.
    assert_eq!(
        status(post(&url, &[JSON, ("mesos-stream-id", &sid)], "{not json").await),
        400
    );
    assert_eq!(
        status(
            post(
                &url,
                &[("content-type", "text/plain"), ("mesos-stream-id", &sid)],
                &call("REVIVE", Value::Null)
            )
            .await
        ),
        415
    );
    assert_eq!(
        status(
            post(
                &url,
                &[("mesos-stream-id", &sid)],
                &call("REVIVE", Value::Null)
            )
            .await
        ),
        400
    );
    assert_eq!(
        status(
            post(
                &url,
                &[JSON, ("mesos-stream-id", &sid)],
                &call("NO_SUCH_CALL", Value::Null)
            )
            .await
        ),
        400
    );
    assert_eq!(
        status(post(&url, &[JSON, ("accept", "text/html")], &subscribe_body("x")).await),
        406
    );
    assert_eq!(
        status(
            post(
                &url,
                &[JSON, ("mesos-stream-id", &sid)],
                &subscribe_body("x")
            )
            .await
        ),
        400
    );
    // Stream ids: missing or stale.
    assert_eq!(
        status(post(&url, &[JSON], &call("REVIVE", Value::Null)).await),
        400
    );
    assert_eq!(
        status(
            post(
                &url,
                &[JSON, ("mesos-stream-id", "stale")],
                &call("REVIVE", Value::Null)
            )
            .await
        ),
        400
    );
    // An unknown framework.
    let unknown =
        serde_json::json!({"type": "REVIVE", "framework_id": {"value": "no-such-framework"}})
            .to_string();
    assert_eq!(
        status(post(&url, &[JSON, ("mesos-stream-id", &sid)], &unknown).await),
        400
    );
    // An acknowledgement whose uuid is not 16 bytes of base64.
    let bad_ack = call(
        "ACKNOWLEDGE",
        serde_json::json!({"acknowledge": {
        "agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "bm90IGEgdXVpZA=="}}),
    );
    assert_eq!(
        status(post(&url, &[JSON, ("mesos-stream-id", &sid)], &bad_ack).await),
        400
    );

    // Calls about what Cairn never creates (inverse offers, operation
    // feedback) are accepted and change nothing.
    for (ty, body) in [
        (
            "DECLINE_INVERSE_OFFERS",
            serde_json::json!({"decline_inverse_offers": {"inverse_offer_ids": [{"value": "x"}]}}),
        ),
        (
            "ACCEPT_INVERSE_OFFERS",
            serde_json::json!({"accept_inverse_offers": {"inverse_offer_ids": [{"value": "x"}]}}),
        ),
        (
            "RECONCILE_OPERATIONS",
            serde_json::json!({"reconcile_operations": {"operations": []}}),
        ),
        ("REQUEST", serde_json::json!({"request": {"requests": []}})),
        (
            "SHUTDOWN",
            serde_json::json!({"shutdown": {"executor_id": {"value": "e"}, "agent_id": {"value": "no-such-agent"}}}),
        ),
        (
            "MESSAGE",
            serde_json::json!({"message": {"executor_id": {"value": "e"}, "agent_id": {"value": "no-such-agent"}, "data": "aGk="}}),
        ),
    ] {
        assert_eq!(
            status(post(&url, &[JSON, ("mesos-stream-id", &sid)], &call(ty, body)).await),
            202,
            "{ty}"
        );
    }

    // Well-formed calls: 202 with an empty body, validated after. An
    // ACCEPT of an offer that does not exist answers with TASK_LOST from
    // the master, with no uuid (never acknowledged).
    let accept = call(
        "ACCEPT",
        serde_json::json!({"accept": {
        "offer_ids": [{"value": "no-such-offer"}],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "no-such-agent"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "command": {"value": "true"}}]}}]}}),
    );
    let (code, headers, body) = post(&url, &[JSON, ("mesos-stream-id", &sid)], &accept)
        .await
        .unwrap();
    assert_eq!(code, 202);
    assert_eq!(headers["content-length"], "0");
    assert!(body.is_empty());
    let update = a
        .stream
        .next_of("UPDATE", T)
        .await
        .expect("an update for the bad launch");
    let st = &update["update"]["status"];
    assert_eq!(st["task_id"]["value"], "t1");
    assert_eq!(st["state"], "TASK_LOST", "{update}");
    assert_eq!(st["source"], "SOURCE_MASTER");
    assert!(st.get("uuid").is_none(), "{update}");

    // The bystander is offered the agent: at once, or once the careless
    // framework, offered it first, declines it for an hour.
    let first = tokio::select! {
        o = a.stream.next_of("OFFERS", T) => ("careless", o),
        o = b.stream.next_of("OFFERS", T) => ("bystander", o),
    };
    let offer = match first {
        ("careless", Some(offers)) => {
            let ids: Vec<Value> = offers["offers"]["offers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].clone())
                .collect();
            let decline = call(
                "DECLINE",
                serde_json::json!({"decline": {"offer_ids": ids, "filters": {"refuse_seconds": 3600}}}),
            );
            assert_eq!(
                status(post(&url, &[JSON, ("mesos-stream-id", &sid)], &decline).await),
                202
            );
            b.stream
                .next_of("OFFERS", T)
                .await
                .expect("the bystander is offered the agent")
        }
        (_, o) => o.expect("offers to one of the frameworks"),
    };
    assert_eq!(
        offer["offers"]["offers"][0]["framework_id"]["value"],
        b.id.as_str()
    );
    let revive = serde_json::json!({"type": "REVIVE", "framework_id": {"value": b.id}}).to_string();
    assert_eq!(
        status(post(&url, &[JSON, ("mesos-stream-id", &b.stream_id)], &revive).await),
        202
    );
    // UPDATE_FRAMEWORK: 200, and the master shows the new FrameworkInfo.
    let update = call(
        "UPDATE_FRAMEWORK",
        serde_json::json!({"update_framework": {"framework_info": {
        "id": {"value": a.id}, "user": "nobody", "name": "careful", "failover_timeout": 120}}}),
    );
    assert_eq!(
        status(post(&url, &[JSON, ("mesos-stream-id", &sid)], &update).await),
        200
    );
    let base = url.trim_end_matches("/api/v1/scheduler").to_string();
    wait_for(T, "the framework renamed", || async {
        let f = cairn_tests::http::get_json(&format!("{base}/frameworks?framework_id={}", a.id))
            .await?;
        (f["frameworks"][0]["name"] == "careful" && f["frameworks"][0]["failover_timeout"] == 120.0)
            .then_some(())
    })
    .await;
    let other_user = call(
        "UPDATE_FRAMEWORK",
        serde_json::json!({"update_framework": {"framework_info": {
        "id": {"value": a.id}, "user": "root", "name": "careful"}}}),
    );
    assert_eq!(
        status(post(&url, &[JSON, ("mesos-stream-id", &sid)], &other_user).await),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_follows_the_leader_through_zookeeper_and_loses_no_task() {
    let mut cluster = Cluster::start(ClusterSpec {
        masters: 3,
        zookeeper: true,
        master_args: vec![
            "--allocation-interval".into(),
            "100ms".into(),
            "--zk-session-timeout".into(),
            "2s".into(),
        ],
        ..ClusterSpec::default()
    })
    .await;
    // A standby sends scheduler calls to the leader.
    let leader = cluster.leader().await;
    let standby = (leader + 1) % 3;
    let (code, headers, _) = post(
        &format!("http://{}/api/v1/scheduler", cluster.masters[standby].addr),
        &[JSON],
        &subscribe_body("x"),
    )
    .await
    .unwrap();
    assert_eq!(code, 307);
    let location = headers["location"].to_str().unwrap();
    let port = cluster.masters[leader].addr.rsplit(':').next().unwrap();
    assert!(
        location.starts_with("//") && location.ends_with(&format!(":{port}/api/v1/scheduler")),
        "{location}"
    );

    let py = PyScheduler::start(&cluster.master_addr, 20, "sleep 1");
    wait_for(T, "some tasks to run", || {
        let n = py
            .states()
            .values()
            .filter(|s| s.iter().any(|x| x == "TASK_RUNNING"))
            .count();
        async move { (n >= 5).then_some(()) }
    })
    .await;
    cluster.kill_leader().await;
    wait_for(
        Duration::from_secs(120),
        "every task to reach a terminal state, as pymesos sees it",
        || {
            let states = py.states();
            let ok = states.len() == 20
                && states.values().all(|s| {
                    s.last()
                        .is_some_and(|l| l.starts_with("TASK_") && TERMINAL.contains(&l.as_str()))
                });
            async move { ok.then_some(()) }
        },
    )
    .await;
    assert!(
        py.events("registered").len() + py.events("reregistered").len() >= 2,
        "pymesos subscribed again, to the new leader: {:?}",
        py.lines.lock().unwrap()
    );
    for (task, states) in py.states() {
        let ends: Vec<_> = states
            .iter()
            .filter(|s| TERMINAL.contains(&s.as_str()))
            .collect();
        assert!(
            ends.windows(2).all(|w| w[0] == w[1]),
            "{task} ended differently twice: {states:?}"
        );
    }
}

const TERMINAL: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_answer_in_mesos_shapes_and_routes() {
    use cairn_tests::http::get;
    use cairn_tests::workload::{Workload, WorkloadSpec};
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let spec = WorkloadSpec {
        name: "ops".into(),
        short: 5,
        short_command: "true".into(),
        ..WorkloadSpec::default()
    };
    let w = Workload::start(&cluster.master_addr, spec.clone(), None).await;
    w.wait_shorts_ended(&spec, T).await;
    let base = format!("http://{}", cluster.leader_addr().await);
    let getj = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            cairn_tests::http::get_json(&url)
                .await
                .unwrap_or_else(|| panic!("GET {url}"))
        }
    };
    // Acknowledgements land a moment after the updates.
    wait_for(T, "5 completed tasks in /tasks", || async {
        let t = cairn_tests::http::get_json(&format!("{base}/tasks?limit=-1")).await?;
        (t["tasks"].as_array()?.len() == 5).then_some(())
    })
    .await;

    let v = getj("/version").await;
    let version = v["version"].as_str().unwrap();
    assert!(
        version.split('.').all(|p| p.parse::<u64>().is_ok()),
        "{version}"
    );

    let summary = getj("/state-summary").await;
    assert_eq!(summary["slaves"][0]["TASK_FINISHED"], 5, "{summary}");
    assert_eq!(summary["frameworks"][0]["TASK_FINISHED"], 5, "{summary}");

    let fws = getj("/master/frameworks").await;
    let fw_id = fws["frameworks"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(fws["frameworks"].as_array().unwrap().len(), 1);
    assert_eq!(
        getj("/frameworks?framework_id=none").await["frameworks"],
        serde_json::json!([])
    );
    assert_eq!(getj("/slaves").await["slaves"].as_array().unwrap().len(), 1);

    let page = getj("/tasks?limit=2&offset=1&order=asc").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    let one = getj(&format!("/tasks?task_id=ops-short-3&framework_id={fw_id}")).await;
    assert_eq!(one["tasks"][0]["id"], "ops-short-3");
    assert_eq!(one["tasks"][0]["state"], "TASK_FINISHED");
    assert_eq!(getj("/tasks").await["tasks"].as_array().unwrap().len(), 5);
    assert_eq!(
        get(&format!("{base}/tasks?order=sideways"))
            .await
            .unwrap()
            .0,
        400
    );

    let roles = getj("/roles.json").await;
    assert!(
        roles["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["frameworks"][0] == fw_id.as_str()),
        "{roles}"
    );

    let m = getj("/metrics/snapshot").await;
    assert_eq!(m["master/elected"], 1.0);
    assert_eq!(m["master/slaves_active"], 1.0);
    assert_eq!(m["master/tasks_finished"], 5.0);
    assert_eq!(m["master/cpus_total"], 4.0);

    // Routing: trailing slash, /master prefix, old *.json, prefix fallback.
    assert_eq!(get(&format!("{base}/master/state/")).await.unwrap().0, 200);
    assert_eq!(
        get(&format!("{base}/master/state.json")).await.unwrap().0,
        200
    );
    let (code, body) = get(&format!("{base}/state?jsonp=cb")).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.starts_with(b"cb({") && body.ends_with(b");"));
    let (code, location) = cairn_tests::http::get_location(&format!("{base}/redirect"))
        .await
        .unwrap();
    assert_eq!(code, 307);
    assert!(location.unwrap().starts_with("//"));

    // The v1 operator API, also under /api/v1/operator as pymesos calls it.
    for path in ["/api/v1", "/api/v1/operator", "/master/api/v1/"] {
        let (code, _, body) = post(&format!("{base}{path}"), &[JSON], r#"{"type":"GET_STATE"}"#)
            .await
            .unwrap();
        assert_eq!(code, 200, "{path}");
        let s: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            s["get_state"]["get_tasks"]["completed_tasks"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        assert_eq!(s["get_state"]["get_agents"]["agents"][0]["active"], true);
        assert_eq!(
            s["get_state"]["get_frameworks"]["frameworks"][0]["framework_info"]["id"]["value"],
            fw_id.as_str()
        );
    }
    let call = |ty: &'static str| {
        let url = format!("{base}/api/v1");
        async move {
            let (code, _, body) = post(&url, &[JSON], &format!(r#"{{"type":"{ty}"}}"#))
                .await
                .unwrap();
            (
                code,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(call("GET_HEALTH").await.1["get_health"]["healthy"], true);
    assert_eq!(
        call("GET_VERSION").await.1["get_version"]["version_info"]["version"],
        version
    );
    assert!(call("GET_MASTER").await.1["get_master"]["master_info"]["address"]["port"].is_u64());
    assert_eq!(
        call("GET_AGENTS").await.1["get_agents"]["agents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        call("GET_TASKS").await.1["get_tasks"]["completed_tasks"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        call("GET_FRAMEWORKS").await.1["get_frameworks"]["frameworks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(call("NO_SUCH_CALL").await.0, 501);
    assert_eq!(
        post(&format!("{base}/api/v1"), &[JSON], "{nope")
            .await
            .unwrap()
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymesos_custom_executor_runs_five_tasks_and_shuts_down_with_its_framework() {
    let mut cluster = Cluster::start(ClusterSpec {
        master_args: vec!["--allocation-interval".into(), "100ms".into()],
        ..ClusterSpec::default()
    })
    .await;
    let executor = format!(
        "{} {}",
        python().display(),
        script("pymesos_executor.py").display()
    );
    let mut py = PyScheduler::start_with(
        &cluster.master_addr,
        5,
        &[("EXECUTOR", executor.as_str()), ("TASK_MEM", "128")],
    );
    wait_for(T, "5 tasks to finish in the custom executor", || {
        let ok = all_finished(&py.states(), 5);
        async move { ok.then_some(()) }
    })
    .await;
    assert!(py.events("error").is_empty(), "{:?}", py.events("error"));
    // One executor process ran them all.
    let messages: std::collections::BTreeSet<String> = py
        .events("update")
        .iter()
        .filter(|u| u["state"] == "TASK_FINISHED")
        .map(|u| u["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages
            .iter()
            .all(|m| m.starts_with("ran in executor pid ")),
        "{messages:?}"
    );
    for (task, states) in py.states() {
        assert_eq!(states, ["TASK_RUNNING", "TASK_FINISHED"], "{task}");
    }
    // Framework messages, both ways: pymesos sends "ping" to the executor,
    // which answers "pong:ping".
    wait_for(
        T,
        "the executor's answer to the framework's message",
        || {
            let ok = py
                .events("message")
                .iter()
                .any(|m| m["data"] == "pong:ping" && m["executor_id"] == "pyexec");
            async move { ok.then_some(()) }
        },
    )
    .await;
    let executor_pids = || cluster.task_pids("python3", "pymesos_executor.py");
    assert_eq!(executor_pids().len(), 1, "the executor runs");

    // TEARDOWN: the agent tells the executor to shut down; pymesos's
    // executor then kills its own process group, which is its own session,
    // not the agent's.
    py.stop().await;
    wait_for(T, "the executor to be gone", || {
        let gone = executor_pids().is_empty();
        async move { gone.then_some(()) }
    })
    .await;
    assert!(
        cluster.agents[0].proc.child.try_wait().unwrap().is_none(),
        "the agent survives"
    );
    wait_for(T, "the agent to stay registered and active", || async {
        let s = cluster.state().await;
        (s["activated_slaves"] == 1).then_some(())
    })
    .await;
}
