//! Authentication and authorization end to end: a master with
//! `--credentials` and `--acls`, agents with their own credential (and
//! their HTTP gated the same way), frameworks on gRPC and the Mesos API,
//! operators over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_model::{Reason, TaskState};
use cairn_proto as pb;
use cairn_sdk::{FrameworkInfo, SchedulerDriver, TaskBuilder};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::http::{get_as, post};
use cairn_tests::wait_for;

const T: Duration = Duration::from_secs(30);

/// Secrets no output of the cluster may show.
const SECRETS: [&str; 5] = [
    "ops-5ecret-81f2",
    "viewer-5ecret-22aa",
    "spark-5ecret-9c1e",
    "rogue-5ecret-04bd",
    "agent-5ecret-d3f7",
];
/// In the environment of the test (and so of the agents it starts): the
/// CLI's way to hold a secret, which tasks must not inherit.
const ENV_SECRET: &str = "cli-5ecret-7a60";

fn basic(principal: &str, secret: &str) -> String {
    cairn_model::auth::basic_value(principal, secret)
}

fn ops() -> String {
    basic("ops", SECRETS[0])
}
fn viewer() -> String {
    basic("viewer", SECRETS[1])
}

/// A cluster and the directory of its credential and ACL files, removed
/// after the cluster's processes have stopped.
struct SecureCluster {
    cluster: Cluster,
    _files: tempfile::TempDir,
}

impl std::ops::Deref for SecureCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for SecureCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

/// A master with credentials and ACLs, and one agent with its credential
/// and the same gate on its own endpoints.
async fn secure_cluster(extra_master: &[&str]) -> SecureCluster {
    let dir = tempfile::Builder::new()
        .prefix("cairn-sec-")
        .tempdir()
        .unwrap();
    let creds = dir.path().join("credentials.json");
    let names = ["ops", "viewer", "spark", "rogue", "agent"];
    let list: Vec<String> = names
        .iter()
        .zip(SECRETS)
        .map(|(p, s)| format!(r#"{{"principal": "{p}", "secret": "{s}"}}"#))
        .collect();
    std::fs::write(
        &creds,
        format!(r#"{{"credentials": [{}]}}"#, list.join(",")),
    )
    .unwrap();
    let acls = dir.path().join("acls.json");
    std::fs::write(
        &acls,
        r#"{"register_frameworks": [{"principals": {"values": ["spark", "rogue"]}, "roles": {"values": ["analytics", "*"]}}],
            "run_tasks": [{"principals": {"values": ["spark"]}, "users": {"type": "ANY"}}],
            "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}],
            "view_state": [{"principals": {"values": ["ops", "viewer"]}}],
            "read_sandboxes": [{"principals": {"values": ["ops"]}}]}"#,
    )
    .unwrap();
    let agent_cred = dir.path().join("agent.json");
    std::fs::write(
        &agent_cred,
        format!(r#"{{"principal": "agent", "secret": "{}"}}"#, SECRETS[4]),
    )
    .unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let mut master_args = vec![
        "--allocation-interval".to_string(),
        "200ms".into(),
        "--credentials".into(),
        path(&creds),
        "--acls".into(),
        path(&acls),
    ];
    master_args.extend(extra_master.iter().map(|s| (*s).to_string()));
    cairn_tests::http::set_operator(Some(ops()));
    // SAFETY: set before the cluster (or any thread reading it) starts.
    unsafe { std::env::set_var("CAIRN_SECRET", ENV_SECRET) };
    let cluster = Cluster::start(ClusterSpec {
        master_args,
        agent_args: vec![
            "--credential".into(),
            path(&agent_cred),
            "--credentials".into(),
            path(&creds),
            "--acls".into(),
            path(&acls),
        ],
        ..ClusterSpec::default()
    })
    .await;
    SecureCluster {
        cluster,
        _files: dir,
    }
}

async fn framework(
    master: &str,
    principal: &str,
    secret: &str,
    info: FrameworkInfo,
) -> TestFramework {
    TestFramework::start_driver(SchedulerDriver::new(master, info).credential(principal, secret))
        .await
}

/// A raw gRPC subscription: the refusal's status, or the first event.
async fn raw_subscribe(
    master: &str,
    authorization: Option<&str>,
    info: FrameworkInfo,
) -> Result<pb::Event, tonic::Status> {
    let mut client = pb::scheduler_client::SchedulerClient::connect(format!("http://{master}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::SubscribeRequest {
        framework_info: Some(cairn_model::convert::framework_info_to_pb(&info)),
        suppressed_roles: vec![],
    });
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().unwrap());
    }
    let mut stream = client.subscribe(req).await?.into_inner();
    match tokio::time::timeout(T, stream.message()).await {
        Ok(Ok(Some(e))) => Ok(e),
        Ok(Ok(None)) => Err(tonic::Status::aborted("the stream ended")),
        Ok(Err(s)) => Err(s),
        Err(_) => panic!("no answer to a subscription within {T:?}"),
    }
}

fn error_text(e: &pb::Event) -> Option<String> {
    match &e.event {
        Some(pb::event::Event::Error(err)) => Some(err.message.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_valid_credentials_are_refused_everywhere() {
    let cluster = secure_cluster(&["--subscribe-rate-limit", "4/1mins"]).await;
    let master = cluster.master_addr.clone();
    let state = format!("http://{master}/state");

    // Operators over HTTP.
    let (status, _) = get_as(&state, None).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = get_as(&state, Some(&basic("ops", "wrong"))).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = get_as(&state, Some(&viewer())).await.unwrap();
    assert_eq!(status, 200, "viewers may read the state");
    let (status, _) = get_as(&state, Some(&basic("spark", SECRETS[2])))
        .await
        .unwrap();
    assert_eq!(
        status, 403,
        "a framework's principal may not read the state"
    );
    let (status, _) = get_as(&format!("http://{master}/livez"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "health needs no credentials");
    for path in ["metrics", "events", ""] {
        let (status, _) = get_as(&format!("http://{master}/{path}"), None)
            .await
            .unwrap();
        assert_eq!(status, 401, "/{path}");
    }

    // Frameworks on gRPC: none, a wrong secret.
    let info = FrameworkInfo::new("anon", "");
    let e = raw_subscribe(&master, None, info.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let e = raw_subscribe(&master, Some(&basic("spark", "nope")), info.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // Frameworks on the Mesos HTTP API.
    let subscribe = r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"","name":"m"}}}"#;
    let (status, _, _) = post(
        &format!("http://{master}/api/v1/scheduler"),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Basic eDp5"),
        ],
        subscribe,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);

    // An agent without a credential never registers.
    let mut cluster = cluster;
    let i = cluster.add_agent("cpus:1;mem:512;disk:100;ports:[33000-33009]", &[]);
    let log = cluster.dir.path().join(format!("agent-{i}.log"));
    wait_for(
        T,
        "the agent without a credential to be refused",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("authentication required").then_some(())
        },
    )
    .await;
    assert_eq!(cluster.state().await["slaves"].as_array().unwrap().len(), 1);

    // The agent's own endpoints.
    let agent = cluster.agents[0].addr.clone();
    let (status, _) = get_as(&format!("http://{agent}/state"), None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = get_as(&format!("http://{agent}/state"), Some(&viewer()))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Subscriptions beyond the rate limit (4 per minute per principal).
    let spark = basic("spark", SECRETS[2]);
    let mut refused = None;
    for _ in 0..6 {
        if let Err(e) = raw_subscribe(&master, Some(&spark), FrameworkInfo::new("burst", "")).await
        {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("a subscription beyond the limit");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_roles_task_users_teardowns_and_sandboxes_are_authorized() {
    let cluster = secure_cluster(&[]).await;
    let master = cluster.master_addr.clone();
    let spark = basic("spark", SECRETS[2]);

    // The declared principal must be the authenticated one.
    let mut info = FrameworkInfo::new("liar", "");
    info.principal = "ops".into();
    let e = raw_subscribe(&master, Some(&spark), info).await.unwrap();
    let why = error_text(&e).expect("an error event");
    assert!(why.contains("not the authenticated principal"), "{why}");
    // A role not granted.
    let mut info = FrameworkInfo::new("prod", "");
    info.roles = vec![cairn_model::Role::parse("role", "prod").unwrap()];
    let e = raw_subscribe(&master, Some(&spark), info).await.unwrap();
    let why = error_text(&e).expect("an error event");
    assert!(
        why.contains("register a framework with role \"prod\""),
        "{why}"
    );

    // Allowed: spark in analytics. Root is refused, nobody runs.
    let mut info = FrameworkInfo::new("etl", "");
    info.roles = vec![cairn_model::Role::parse("role", "analytics").unwrap()];
    let mut fw = framework(&master, "spark", SECRETS[2], info).await;
    let offer = fw.offers(T).await.remove(0);
    let as_root = TaskBuilder::new("as-root")
        .cpus(0.1)
        .mem(16.0)
        .user("root")
        .shell("id")
        .build(&offer.agent_id)
        .unwrap();
    let as_nobody = TaskBuilder::new("as-nobody")
        .cpus(0.1)
        .mem(16.0)
        .user("nobody")
        .shell("echo sandbox-line; sleep 600")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver
        .launch(&offer, vec![as_root, as_nobody])
        .await
        .unwrap();
    let s = fw.terminal("as-root", T).await;
    assert_eq!(s.state, TaskState::Error);
    assert_eq!(s.reason, Some(Reason::TaskUnauthorized));
    assert!(
        s.message.contains("run tasks as user \"root\""),
        "{}",
        s.message
    );
    fw.update("as-nobody", T, |s| s.state == TaskState::Running)
        .await;

    // Another principal cannot take the framework over.
    let mut stolen = FrameworkInfo::new("etl", "");
    stolen.id = Some(fw.id.clone());
    let e = raw_subscribe(&master, Some(&basic("rogue", SECRETS[3])), stolen)
        .await
        .unwrap();
    let why = error_text(&e).expect("an error event");
    assert!(why.contains("belongs to principal \"spark\""), "{why}");

    // rogue may register but run nothing.
    let mut rogue = framework(
        &master,
        "rogue",
        SECRETS[3],
        FrameworkInfo::new("rogue", "nobody"),
    )
    .await;
    let offer = rogue.offers(T).await.remove(0);
    let t = TaskBuilder::new("r1")
        .cpus(0.1)
        .mem(16.0)
        .shell("true")
        .build(&offer.agent_id)
        .unwrap();
    rogue.driver.launch(&offer, vec![t]).await.unwrap();
    let s = rogue.terminal("r1", T).await;
    assert_eq!(s.reason, Some(Reason::TaskUnauthorized), "{s:?}");

    // Sandboxes: through the master and on the agent.
    let agent_id = offer.agent_id.to_string();
    let file = format!(
        "/frameworks/{}/executors/as-nobody/runs/latest/stdout",
        fw.id
    );
    let via_master = format!("http://{master}/files/read?agent_id={agent_id}&path={file}&offset=0");
    let (status, _) = get_as(&via_master, Some(&viewer())).await.unwrap();
    assert_eq!(status, 403, "viewers may not read sandboxes");
    // RUNNING comes as the shell starts; its echo may land a moment later.
    wait_for(T, "the task's line through the master", || async {
        let (status, body) = get_as(&via_master, Some(&ops())).await?;
        (status == 200 && String::from_utf8_lossy(&body).contains("sandbox-line")).then_some(())
    })
    .await;
    let on_agent = format!(
        "http://{}/files/read?path={file}&offset=0",
        cluster.agents[0].addr
    );
    let (status, _) = get_as(&on_agent, None).await.unwrap();
    assert_eq!(status, 401);

    // Teardown: only ops.
    let teardown = |auth: String| {
        let url = format!("http://{master}/teardown");
        let body = format!("frameworkId={}", fw.id);
        async move {
            post(&url, &[("Authorization", auth.as_str())], &body)
                .await
                .unwrap()
                .0
        }
    };
    assert_eq!(teardown(viewer()).await, 403);
    assert_eq!(teardown(ops()).await, 200);
    wait_for(T, "the framework to be gone", || async {
        let s = cluster.state().await;
        let gone = s["frameworks"]
            .as_array()?
            .iter()
            .all(|f| f["id"] != fw.id.as_str());
        gone.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_shows_in_state_metrics_flags_logs_or_task_environments() {
    let cluster = secure_cluster(&[]).await;
    let master = cluster.master_addr.clone();
    let mut fw = framework(
        &master,
        "spark",
        SECRETS[2],
        FrameworkInfo::new("env", "nobody"),
    )
    .await;
    let offer = fw.offers(T).await.remove(0);
    let t = TaskBuilder::new("env")
        .cpus(0.1)
        .mem(16.0)
        .shell("env; cat /proc/self/environ | tr '\\0' '\\n'")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver.launch(&offer, vec![t]).await.unwrap();
    assert_eq!(fw.terminal("env", T).await.state, TaskState::Finished);

    let mut seen = String::new();
    for path in ["state", "metrics", "metrics/snapshot", "flags", "history"] {
        let (status, body) = get_as(&format!("http://{master}/{path}"), Some(&ops()))
            .await
            .unwrap();
        assert_eq!(status, 200, "/{path}");
        seen.push_str(&String::from_utf8_lossy(&body));
    }
    let agent = cluster.agents[0].addr.clone();
    for path in ["state", "metrics"] {
        let (_, body) = get_as(&format!("http://{agent}/{path}"), Some(&ops()))
            .await
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&body));
    }
    let file = format!("/frameworks/{}/executors/env/runs/latest/stdout", fw.id);
    let (status, body) = get_as(
        &format!(
            "http://{master}/files/read?agent_id={}&path={file}&offset=0",
            offer.agent_id
        ),
        Some(&ops()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let task_env = String::from_utf8_lossy(&body).into_owned();
    assert!(
        task_env.contains("MESOS_SANDBOX="),
        "the task's environment was not captured: {task_env}"
    );
    seen.push_str(&task_env);
    for e in std::fs::read_dir(cluster.dir.path()).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            seen.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    for secret in SECRETS.iter().chain([&ENV_SECRET]) {
        assert!(!seen.contains(secret), "secret {secret} leaked");
    }
}
