//! Cluster identity end to end: `cairn-master init` makes a CA and join
//! tokens; the master speaks only TLS; agents join with the agent token,
//! pin the CA, get a certificate naming their id, and may speak only for
//! that id; an agent's certificate cannot pass for a master's; rotated
//! tokens stop joining while joined agents keep working; frameworks reach
//! the master over TLS; agents serve their own API (executors, sandbox
//! files) over TLS only, under their own id; tokens appear in no output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_model::TaskState;
use cairn_proto as pb;
use cairn_sdk::{FrameworkInfo, SchedulerDriver, TaskBuilder};
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use cairn_tests::process::bin;
use cairn_tests::wait_for;

const T: Duration = Duration::from_secs(30);

fn agent_identity(cluster: &Cluster, i: usize) -> cairn_tls::NodeIdentity {
    cairn_tls::NodeIdentity::load(&cluster.agents[i].work_dir().join("identity"))
        .unwrap()
        .expect("the agent kept its identity")
}

fn certified_id(id: &cairn_tls::NodeIdentity) -> String {
    match &id.role {
        cairn_tls::Role::Agent { id } => id.clone(),
        other => panic!("an agent's certificate names {other:?}"),
    }
}

/// A REGISTER of a made-up agent claiming `agent_id`.
fn register_message(agent_id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::RegisterAgent {
            agent_id: agent_id.to_string(),
            info: Some(pb::AgentInfo {
                hostname: "impostor".into(),
                address: "127.0.0.1:1".into(),
                resources: cairn_model::convert::resources_to_pb(
                    &cairn_model::Resources::parse("cpus:1;mem:128").unwrap(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

/// Opens an agent session with `config` and registers as `agent_id`; the
/// master's answer (the first message, or the refusal).
async fn register_as(
    master: &str,
    config: cairn_tls::ClientConfig,
    agent_id: &str,
) -> Result<pb::MasterMessage, tonic::Status> {
    let channel = cairn_tls::grpc_connect(master, config, Duration::from_secs(5))
        .await
        .expect("TLS to the master");
    let mut client = pb::agent_link_client::AgentLinkClient::new(channel);
    let register = register_message(agent_id);
    let mut inbound = client
        .session(tokio_stream::iter(vec![register]))
        .await?
        .into_inner();
    match tokio::time::timeout(T, inbound.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(tonic::Status::aborted("the session ended")),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

/// An HTTPS client accepting only the certificate of agent `expect`.
fn agent_client<B>(
    ca: &str,
    expect: &str,
) -> hyper_util::client::legacy::Client<cairn_tls::HttpsConnector, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let config = cairn_tls::agent_client_config(ca, None, expect).unwrap();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(cairn_tls::agent_https_connector(config, false))
}

/// `method` `https://{addr}{path}` on an agent with a JSON `body`,
/// accepting only a certificate of the cluster CA naming `expect`; the
/// status, or why it failed.
async fn agent_request(
    addr: &str,
    ca: &str,
    expect: &str,
    method: &str,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> Result<u16, String> {
    let client = agent_client::<http_body_util::Full<bytes::Bytes>>(ca, expect);
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("https://{addr}{path}"))
        .header("content-type", "application/json")
        .header("authorization", authorization.unwrap_or(""))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    match tokio::time::timeout(T, client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(cairn_tls::error_chain(&e)),
        Err(_) => Err("no answer".into()),
    }
}

async fn agent_get(addr: &str, ca: &str, expect: &str, path: &str) -> Result<u16, String> {
    agent_request(addr, ca, expect, "GET", path, "", None).await
}

/// The agent's `cairn_agent_executors_connected` gauge, over TLS.
async fn executors_connected(addr: &str, ca: &str, expect: &str) -> Option<u64> {
    use http_body_util::BodyExt;
    let client = agent_client::<http_body_util::Empty<bytes::Bytes>>(ca, expect);
    let uri: hyper::Uri = format!("https://{addr}/metrics").parse().ok()?;
    let resp = tokio::time::timeout(T, client.get(uri)).await.ok()?.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    metric(&body, "cairn_agent_executors_connected").map(|v| v as u64)
}

/// The value of the unlabelled metric `name` in a Prometheus exposition.
fn metric(exposition: &[u8], name: &str) -> Option<f64> {
    String::from_utf8_lossy(exposition).lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Opens an executor session with agent `agent_id` at `addr` as executor
/// `executor_id` of `framework_id`, presenting `token`; the session's
/// first answer.
async fn executor_session(
    addr: &str,
    ca: &str,
    agent_id: &str,
    framework_id: &str,
    executor_id: &str,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    let config = cairn_tls::agent_client_config(ca, None, agent_id).unwrap();
    let channel = cairn_tls::agent_grpc_connect(addr, config, Duration::from_secs(5))
        .await
        .expect("TLS to the agent");
    let mut client = pb::executor_link_client::ExecutorLinkClient::new(channel);
    let subscribe = pb::ExecutorMessage {
        message: Some(pb::executor_message::Message::Subscribe(
            pb::ExecutorSubscribe {
                framework_id: framework_id.into(),
                executor_id: executor_id.into(),
                unacknowledged_updates: vec![],
            },
        )),
    };
    let mut request = tonic::Request::new(tokio_stream::iter(vec![subscribe]));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.session(request).await.map(|_| ())
}

/// A TLS server on loopback presenting `identity`'s certificate: what
/// something holding a stolen agent certificate would pose as a master.
async fn impostor(identity: &cairn_tls::NodeIdentity) -> (String, tokio::task::JoinHandle<()>) {
    let config = cairn_tls::server_config(identity).expect("a server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_with_a_token_and_speak_only_for_their_certified_id() {
    let mut cluster = Cluster::start(ClusterSpec {
        tls: true,
        ..ClusterSpec::default()
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let master = cluster.master_addr.clone();

    // The agent joined: its certificate names the id it registered under.
    let a = agent_identity(&cluster, 0);
    let a_id = certified_id(&a);
    assert!(a_id.starts_with("agent-"), "{a_id}");
    assert_eq!(cluster.agent_id(0).await, a_id);
    let key = std::fs::metadata(cluster.agents[0].work_dir().join("identity/node.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o077, 0, "the key is private");

    // Plain HTTP gets no answer from a TLS-only master.
    assert_eq!(
        cairn_tests::http::get(&format!("http://{master}/health")).await,
        None,
        "plain HTTP answered"
    );
    // HTTPS verifies with the cluster CA (by address, as curl would).
    let (status, _) = cairn_tests::http::get(&format!("https://{master}/health"))
        .await
        .expect("HTTPS answers");
    assert_eq!(status, 200);

    // Without a certificate an agent session is refused.
    let anonymous = cairn_tls::client_config(&id.ca_pem, None).unwrap();
    let e = register_as(&master, anonymous, "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // Agent A's certificate cannot register as another agent.
    let as_a = cairn_tls::client_config(&id.ca_pem, Some(&a)).unwrap();
    let e = register_as(&master, as_a, "agent-b0b").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(&a_id), "{e:?}");

    // An agent's certificate cannot pass for a master's: neither a client
    // trusting the CA nor a node joining with the token accepts it.
    let (fake, server) = impostor(&a).await;
    let trusting = cairn_tls::client_config(&id.ca_pem, None).unwrap();
    let e = cairn_tls::grpc_connect(&fake, trusting.clone(), Duration::from_secs(5))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "refused for its certificate: {text}"
    );
    let e = cairn_tls::join(&fake, &id.agent_token, "victim")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("certificate") || e.contains("Certificate"),
        "the pinned join refused the agent's certificate: {e}"
    );
    server.abort();
    // The real master passes the same client.
    cairn_tls::grpc_connect(&master, trusting, Duration::from_secs(5))
        .await
        .expect("the master's certificate verifies");

    // An agent given the master token refuses it (it would be sent the
    // CA's key) and stops with the reason.
    let wrong = id.token_file(cluster.dir.path(), "master.token", &id.master_token);
    let i = cluster.add_agent(
        "cpus:1;mem:256;disk:100;ports:[32200-32209]",
        &["--join-file", &wrong],
    );
    wait_for(T, "the agent given a master token to stop", || {
        let running = cluster.agents[i].proc.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    let log = std::fs::read_to_string(cluster.dir.path().join(format!("agent-{i}.log"))).unwrap();
    assert!(log.contains("not a master token"), "{log}");

    // A token with the right CA but a wrong secret is refused.
    let forged = format!(
        "{}{}",
        &id.agent_token[..id.agent_token.len() - 8],
        "00000000"
    );
    let e = cairn_tls::join(&master, &forged, "forger")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the cluster's current"), "{e}");
    // A token naming another CA is refused before it is sent.
    let other = cairn_tls::Token::generate(cairn_tls::TokenKind::Agent, &"ab".repeat(32))
        .unwrap()
        .to_string();
    let e = cairn_tls::join(&master, &other, "lost")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("join token names"), "{e}");

    // Join attempts are rate-limited per address (20 per 10 s by
    // default): a burst of bad ones ends in RESOURCE_EXHAUSTED.
    let mut exhausted = false;
    for _ in 0..25 {
        match cairn_tls::join(&master, &forged, "flood").await {
            Err(cairn_tls::TlsError::JoinRefused {
                code: tonic::Code::ResourceExhausted,
                ..
            }) => {
                exhausted = true;
                break;
            }
            Err(_) => {}
            Ok(_) => panic!("a forged token joined"),
        }
    }
    assert!(exhausted, "25 joins in a row were never limited");

    // Frameworks reach the master over TLS, trusting the CA: a task runs
    // on the joined agent, its updates coming back over the agent's link.
    let driver =
        SchedulerDriver::new(&master, FrameworkInfo::new("tls", "nobody")).cluster_ca(&id.ca_pem);
    let mut fw = TestFramework::start_driver(driver).await;
    let offer = fw.offers(T).await.remove(0);
    assert_eq!(offer.agent_id.as_str(), a_id);
    let t = TaskBuilder::new("over-tls")
        .cpus(0.1)
        .mem(16.0)
        .shell("env")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver.launch(&offer, vec![t]).await.unwrap();
    assert_eq!(fw.terminal("over-tls", T).await.state, TaskState::Finished);
    // A framework that does not trust the CA gets nowhere.
    let untrusting = cairn_tls::client_config(
        cairn_tls::ClusterCa::generate("other").unwrap().cert_pem(),
        None,
    )
    .unwrap();
    assert!(
        cairn_tls::grpc_connect(&master, untrusting, Duration::from_secs(5))
            .await
            .is_err()
    );

    // No token appears in the master's outputs or the task's environment.
    let secret = |t: &str| t.rsplit('-').next().unwrap().to_string();
    let mut seen = String::new();
    for path in ["state", "metrics", "flags", "history"] {
        let (_, body) = cairn_tests::http::get(&format!("https://{master}/{path}"))
            .await
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&body));
    }
    let file = format!(
        "/frameworks/{}/executors/over-tls/runs/latest/stdout",
        fw.id
    );
    let read = cairn_tests::http::get_json(&format!(
        "https://{master}/files/read?agent_id={a_id}&path={file}&offset=0"
    ))
    .await
    .expect("the task's stdout through the master");
    let env = read["data"].as_str().unwrap_or_default().to_string();
    assert!(
        env.contains("PATH="),
        "the task printed its environment: {env}"
    );
    seen.push_str(&env);
    // Again, on the proxy's kept client for this agent.
    let again = cairn_tests::http::get_json(&format!(
        "https://{master}/files/read?agent_id={a_id}&path={file}&offset=0"
    ))
    .await
    .expect("the task's stdout through the master, again");
    assert_eq!(again["data"], read["data"]);

    // The agent's own API (which the master's /files proxy above and the
    // task's executor used) speaks TLS only, under the agent's certificate:
    // plain HTTP gets nothing, a client verifying masters refuses it, one
    // expecting another agent's id refuses it, one expecting A's gets A.
    let agent_addr = cluster.agents[0].addr.clone();
    assert_eq!(
        cairn_tests::http::get(&format!("http://{agent_addr}/health")).await,
        None,
        "the agent answered plain HTTP"
    );
    assert_eq!(
        cairn_tests::http::get(&format!("https://{agent_addr}/health")).await,
        None,
        "the agent passed for a master"
    );
    let e = agent_get(&agent_addr, &id.ca_pem, "agent-b0b", "/health")
        .await
        .unwrap_err();
    assert!(e.contains("not agent agent-b0b"), "{e}");
    assert_eq!(
        agent_get(&agent_addr, &id.ca_pem, &a_id, "/health").await,
        Ok(200)
    );
    let e = agent_get(&master, &id.ca_pem, &a_id, "/health")
        .await
        .unwrap_err();
    assert!(
        e.contains("certificate"),
        "the master passed for agent A: {e}"
    );

    // Executors authenticate to the agent with their own token (which the
    // task above did not see): none, or another executor's, is refused on
    // the native link and on the Mesos executor API.
    assert!(
        !env.contains(cairn_tls::EXECUTOR_TOKEN_ENV),
        "the task saw its executor's token: {env}"
    );
    assert!(env.contains(cairn_tls::AGENT_CA_ENV), "{env}");
    let fw_id = fw.id.to_string();
    let e = executor_session(&agent_addr, &id.ca_pem, &a_id, &fw_id, "over-tls", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let key =
        cairn_tls::ExecutorKey::load_or_create(&cluster.agents[0].work_dir().join("identity"))
            .unwrap();
    let other = key.token(&fw_id, "another-executor");
    let e = executor_session(
        &agent_addr,
        &id.ca_pem,
        &a_id,
        &fw_id,
        "over-tls",
        Some(&other),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let own = key.token(&fw_id, "over-tls");
    if let Err(e) = executor_session(
        &agent_addr,
        &id.ca_pem,
        &a_id,
        &fw_id,
        "over-tls",
        Some(&own),
    )
    .await
    {
        assert_ne!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    let call = serde_json::json!({
        "type": "SUBSCRIBE",
        "framework_id": {"value": fw_id},
        "executor_id": {"value": "over-tls"},
        "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []},
    })
    .to_string();
    assert_eq!(
        agent_request(
            &agent_addr,
            &id.ca_pem,
            &a_id,
            "POST",
            "/api/v1/executor",
            &call,
            None,
        )
        .await,
        Ok(401)
    );
    // An UPDATE under another executor's token, too.
    let update = serde_json::json!({
        "type": "UPDATE",
        "framework_id": {"value": fw_id},
        "executor_id": {"value": "over-tls"},
        "update": {"status": {"task_id": {"value": "over-tls"}, "state": "TASK_FAILED",
                              "uuid": "AAAAAAAAAAAAAAAAAAAAAA==", "source": "SOURCE_EXECUTOR"}},
    })
    .to_string();
    let status = agent_request(
        &agent_addr,
        &id.ca_pem,
        &a_id,
        "POST",
        "/api/v1/executor",
        &update,
        Some(&format!("Bearer {other}")),
    )
    .await;
    assert_eq!(status, Ok(401));
    // No executor token shows in the master's state or any log.
    let (_, state) = cairn_tests::http::get(&format!("https://{master}/state"))
        .await
        .unwrap();
    let mut outputs = String::from_utf8_lossy(&state).into_owned();
    for entry in std::fs::read_dir(cluster.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            outputs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    assert!(!outputs.contains(&own), "an executor's token leaked");
    // Every log of the run, whole.
    for entry in std::fs::read_dir(cluster.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            seen.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    for t in [&id.agent_token, &id.master_token] {
        assert!(!seen.contains(&secret(t)), "a token's secret leaked");
    }
}

fn basic(principal: &str, secret: &str) -> String {
    cairn_model::auth::basic_value(principal, secret)
}

/// `cairn token rotate agent` as `principal`, with the cluster CA.
fn rotate(
    master: &str,
    ca: &std::path::Path,
    principal: &str,
    secret: &str,
) -> std::process::Output {
    std::process::Command::new(bin("cairn"))
        .args(["token", "rotate", "agent", "--ttl", "1h"])
        .env("CAIRN_MASTER", master)
        .env("CAIRN_CA", ca)
        .env("CAIRN_PRINCIPAL", principal)
        .env("CAIRN_SECRET", secret)
        .env("CAIRN_CONFIG", "/nonexistent/cairn.toml")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_stops_joining_while_joined_agents_keep_working() {
    // Rotation needs an ACL grant: operators authenticate, agents too.
    let files = tempfile::Builder::new()
        .prefix("cairn-rot-")
        .tempdir()
        .unwrap();
    let creds = files.path().join("credentials.json");
    std::fs::write(
        &creds,
        r#"{"credentials": [{"principal": "ops", "secret": "ops-5ecret-1"},
                            {"principal": "viewer", "secret": "viewer-5ecret-2"},
                            {"principal": "agent", "secret": "agent-5ecret-3"}]}"#,
    )
    .unwrap();
    let acls = files.path().join("acls.json");
    std::fs::write(
        &acls,
        r#"{"view_state": [{"principals": {"values": ["ops", "viewer"]}}],
            "manage_tokens": [{"principals": {"values": ["ops"]}}]}"#,
    )
    .unwrap();
    let agent_cred = files.path().join("agent.json");
    std::fs::write(
        &agent_cred,
        r#"{"principal": "agent", "secret": "agent-5ecret-3"}"#,
    )
    .unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    cairn_tests::http::set_operator(Some(basic("ops", "ops-5ecret-1")));
    let mut cluster = Cluster::start(ClusterSpec {
        tls: true,
        master_args: vec![
            "--allocation-interval".into(),
            "200ms".into(),
            "--credentials".into(),
            path(&creds),
            "--acls".into(),
            path(&acls),
        ],
        agent_args: vec!["--credential".into(), path(&agent_cred)],
        ..ClusterSpec::default()
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let master = cluster.master_addr.clone();
    let ca = id.cluster_dir.join("ca.crt");
    let a_id = certified_id(&agent_identity(&cluster, 0));

    // Refused: anonymous (401), a principal without the grant (403), and
    // the master token over HTTP for anyone.
    let out = rotate(&master, &ca, "ops", "wrong");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );
    let out = rotate(&master, &ca, "viewer", "viewer-5ecret-2");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
    let (status, _, _) = cairn_tests::http::post(
        &format!("https://{master}/tokens/rotate?kind=master"),
        &[("Authorization", &basic("ops", "ops-5ecret-1"))],
        "",
    )
    .await
    .expect("the master answers");
    assert_eq!(status, 403);

    let out = rotate(&master, &ca, "ops", "ops-5ecret-1");
    assert!(
        out.status.success(),
        "cairn token rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(new_token.starts_with("CAIRN1-agent-"), "{new_token}");
    assert_ne!(new_token, id.agent_token);
    assert_eq!(
        cairn_tls::Tokens::load(&id.cluster_dir.join("tokens.json"))
            .unwrap()
            .agent
            .token,
        new_token,
        "the rotation is in the cluster directory"
    );

    // The old token joins nothing: an agent started with it stops with
    // the reason.
    let e = cairn_tls::join(&master, &id.agent_token, "late")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the cluster's current"), "{e}");
    let old_file = id.token_file(cluster.dir.path(), "old.token", &id.agent_token);
    let cred = path(&agent_cred);
    let late = cluster.add_agent(
        "cpus:1;mem:512;disk:1000;ports:[32000-32099]",
        &["--credential", &cred, "--join-file", &old_file],
    );
    wait_for(T, "the agent with the old token to stop", || {
        let running = cluster.agents[late].proc.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    let log =
        std::fs::read_to_string(cluster.dir.path().join(format!("agent-{late}.log"))).unwrap();
    assert!(
        log.contains("not the cluster's current agent token"),
        "{log}"
    );

    // The new token joins.
    let new_file = id.token_file(cluster.dir.path(), "new.token", &new_token);
    cluster.add_agent(
        "cpus:1;mem:512;disk:1000;ports:[32100-32199]",
        &["--credential", &cred, "--join-file", &new_file],
    );
    cluster.wait_for_agents(2).await;

    // The agent that joined before keeps working, across a restart too:
    // it comes back under its certified id (the rotated token it was
    // started with is not used: it has its certificate).
    let url = format!("https://{master}/state");
    let active = |want: bool| {
        let url = url.clone();
        let a = a_id.clone();
        move || {
            let url = url.clone();
            let a = a.clone();
            async move {
                let s = cairn_tests::http::get_json(&url).await?;
                s["slaves"]
                    .as_array()?
                    .iter()
                    .any(|x| x["id"] == a.as_str() && x["active"] == want)
                    .then_some(())
            }
        }
    };
    cluster.agents[0].proc.stop(Duration::from_secs(10));
    wait_for(T, "the first agent to be seen gone", active(false)).await;
    cluster.agents[0].restart();
    wait_for(
        T,
        "the first agent to be back, active, under its id",
        active(true),
    )
    .await;
    cluster.wait_for_agents(2).await;
    drop(files);
}

/// A child process killed (and reaped) when the test ends, also on failure.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_joins_with_the_master_token_and_serves_with_the_same_ca() {
    let cluster = Cluster::start(ClusterSpec {
        tls: true,
        agents: 0,
        ..ClusterSpec::default()
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let master = cluster.master_addr.clone();
    let start = |dir: &std::path::Path, token: &str, log: &str| {
        let addr = format!("127.0.0.1:{}", cairn_tests::cluster::free_port());
        let out = std::fs::File::create(cluster.dir.path().join(log)).unwrap();
        let child = std::process::Command::new(bin("cairn-master"))
            .args(["--listen", &addr, "--join-master", &master, "--cluster-dir"])
            .arg(dir)
            .env("CAIRN_JOIN_TOKEN", token)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        (addr, Child(child))
    };

    // With the agent token a master cannot join.
    let refused_dir = cluster.dir.path().join("refused");
    let (_, mut refused) = start(&refused_dir, &id.agent_token, "refused.log");
    let status = wait_for(T, "the master with an agent token to stop", || {
        let s = refused.0.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(!status.success());
    let log = std::fs::read_to_string(cluster.dir.path().join("refused.log")).unwrap();
    assert!(log.contains("a master joins with a master token"), "{log}");
    assert!(!refused_dir.join("ca.key").exists());

    // With the master token it receives the CA, key included, and serves
    // TLS that clients trusting the CA accept.
    let joined_dir = cluster.dir.path().join("joined");
    let (addr, _joined) = start(&joined_dir, &id.master_token, "joined.log");
    let url = format!("https://{addr}/health");
    wait_for(T, "the joined master to answer over TLS", || {
        let url = url.clone();
        async move {
            cairn_tests::http::get(&url)
                .await
                .filter(|(s, _)| *s == 200)
                .map(|_| ())
        }
    })
    .await;
    for f in ["ca.crt", "ca.key"] {
        assert_eq!(
            std::fs::read(joined_dir.join(f)).unwrap(),
            std::fs::read(id.cluster_dir.join(f)).unwrap(),
            "{f}"
        );
    }
    let tokens = cairn_tls::Tokens::load(&joined_dir.join("tokens.json")).unwrap();
    assert_eq!(tokens.agent.token, id.agent_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_or_agent_without_identity_refuses_to_start_unless_told_insecure() {
    let dir = tempfile::Builder::new()
        .prefix("cairn-default-")
        .tempdir()
        .unwrap();
    let run = |program: &str, args: &[String], log: &str| {
        let out = std::fs::File::create(dir.path().join(log)).unwrap();
        let child = std::process::Command::new(bin(program))
            .args(args)
            .env_remove("CAIRN_JOIN_TOKEN")
            .env_remove("CAIRN_CLUSTER_DIR")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Child(child)
    };
    let master_addr = format!("127.0.0.1:{}", cairn_tests::cluster::free_port());
    let mut master = run(
        "cairn-master",
        &["--listen".into(), master_addr.clone()],
        "master.log",
    );
    let agent_args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "--master",
            &master_addr,
            "--listen",
            "127.0.0.1:0",
            "--isolation",
            "posix",
            "--resources",
            "cpus:1;mem:128",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        a.extend([
            "--work-dir".into(),
            dir.path().join("agent").display().to_string(),
            "--runtime-dir".into(),
            dir.path().join("agent-run").display().to_string(),
        ]);
        a.extend(extra.iter().map(|s| (*s).to_string()));
        a
    };
    let mut agent = run("cairn-agent", &agent_args(&[]), "agent.log");
    for (child, log, says) in [
        (&mut master, "master.log", "no cluster directory"),
        (&mut agent, "agent.log", "no cluster identity"),
    ] {
        let status = wait_for(T, &format!("{log}'s process to refuse to start"), || {
            let s = child.0.try_wait().ok().flatten();
            async move { s }
        })
        .await;
        assert!(!status.success());
        let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
        assert!(text.contains(says), "{text}");
    }

    // Told so, both run plain: the agent registers.
    let _master = run(
        "cairn-master",
        &["--listen".into(), master_addr.clone(), "--insecure".into()],
        "master-insecure.log",
    );
    let _agent = run(
        "cairn-agent",
        &agent_args(&["--insecure"]),
        "agent-insecure.log",
    );
    let url = format!("http://{master_addr}/state");
    wait_for(T, "the insecure agent to register", || {
        let url = url.clone();
        async move {
            let s = cairn_tests::http::get_json(&url).await?;
            (s["activated_slaves"].as_u64()? == 1).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reaches_every_master_through_zookeeper() {
    // Two masters, each with its own copy of the cluster directory (as on
    // hosts of their own), contending through a real ZooKeeper.
    let mut cluster = Cluster::start(ClusterSpec {
        tls: true,
        masters: 2,
        ..ClusterSpec::ha(1)
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let zk = cluster.zookeeper.as_ref().unwrap().url("/cairn");
    let tokens_node = cluster.zookeeper.as_ref().unwrap();
    assert!(
        tokens_node.get("/cairn-tokens").await.is_some(),
        "the tokens are in ZooKeeper once an agent joined"
    );

    // Rotated on a host with a copy of its own: neither master's directory
    // changes, only ZooKeeper.
    let scratch = id.copy_to(&cluster.dir.path().join("operator-copy"));
    let out = std::process::Command::new(bin("cairn-master"))
        .args(["token", "rotate", "agent", "--zk", &zk, "--cluster-dir"])
        .arg(&scratch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn-master token rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(new_token, id.agent_token);

    let leader = cluster.leader_addr().await;
    let e = cairn_tls::join(&leader, &id.agent_token, "late")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the cluster's current"), "{e}");

    // After a failover the other master, whose own directory still holds
    // the old token, refuses it too, and takes the new one.
    let (_, new, _) = cluster.kill_leader().await;
    let leader = cluster.masters[new].addr.clone();
    let e = wait_for(T, "the new leader to answer a join", || {
        let leader = leader.clone();
        let old = id.agent_token.clone();
        async move {
            match cairn_tls::join(&leader, &old, "late").await {
                Err(e)
                    if e.to_string().contains("UNAVAILABLE")
                        || e.to_string().contains("not the leader")
                        || e.to_string().contains("cannot connect") =>
                {
                    None
                }
                other => Some(other),
            }
        }
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not the cluster's current"), "{e}");
    let joined = cairn_tls::join(&leader, &new_token, "fresh")
        .await
        .expect("the new token joins through the new leader");
    assert!(joined.reply.agent_id.starts_with("agent-"));
}

/// The value of counter `name` in the master's `/metrics`.
async fn counter(master: &str, name: &str) -> Option<f64> {
    let (_, body) = cairn_tests::http::get(&format!("https://{master}/metrics")).await?;
    metric(&body, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_a_holding_its_own_session_cannot_report_for_agent_b_s_tasks() {
    let cluster = Cluster::start(ClusterSpec {
        tls: true,
        agents: 2,
        ..ClusterSpec::default()
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let master = cluster.master_addr.clone();
    let a = agent_identity(&cluster, 0);
    let b_id = certified_id(&agent_identity(&cluster, 1));

    // A task runs on agent B.
    let driver = SchedulerDriver::new(&master, FrameworkInfo::new("victim", "nobody"))
        .cluster_ca(&id.ca_pem);
    let mut fw = TestFramework::start_driver(driver).await;
    let mut on_b = None;
    for _ in 0..20 {
        if let Some(o) = fw
            .offers(T)
            .await
            .into_iter()
            .find(|o| o.agent_id.as_str() == b_id)
        {
            on_b = Some(o);
            break;
        }
    }
    let offer = on_b.expect("an offer of agent B");
    let t = TaskBuilder::new("on-b")
        .cpus(0.1)
        .mem(16.0)
        .shell("sleep 600")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver.launch(&offer, vec![t]).await.unwrap();
    fw.update("on-b", T, |s| s.state == TaskState::Running)
        .await;
    let refused_before = counter(&master, "cairn_status_updates_refused_total")
        .await
        .unwrap_or(0.0);

    // A session under A's own certificate (its id) claims B's task failed.
    let channel = cairn_tls::grpc_connect(
        &master,
        cairn_tls::client_config(&id.ca_pem, Some(&a)).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut client = pb::agent_link_client::AgentLinkClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(register_message(&certified_id(&a))).await.unwrap();
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("A may hold a session as A")
        .into_inner();
    let registered = tokio::time::timeout(T, inbound.message())
        .await
        .expect("an answer to REGISTER")
        .expect("the session stays up");
    assert!(registered.is_some());
    for claimed in ["", b_id.as_str()] {
        tx.send(pb::AgentMessage {
            message: Some(pb::agent_message::Message::StatusUpdate(pb::StatusUpdate {
                framework_id: fw.id.to_string(),
                status: Some(pb::TaskStatus {
                    task_id: "on-b".into(),
                    state: pb::TaskState::TaskFailed as i32,
                    message: "forged".into(),
                    source: pb::Source::Agent as i32,
                    agent_id: claimed.into(),
                    uuid: vec![7; 16],
                    ..Default::default()
                }),
            })),
        })
        .await
        .unwrap();
    }
    wait_for(T, "the master to refuse both forged updates", || {
        let master = master.clone();
        async move {
            let now = counter(&master, "cairn_status_updates_refused_total").await?;
            (now >= refused_before + 2.0).then_some(())
        }
    })
    .await;
    let state = cluster.state().await;
    let task = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
        .find(|t| t["id"] == "on-b")
        .expect("the task is still listed as running");
    assert_eq!(task["state"], "TASK_RUNNING");
    assert_eq!(task["slave_id"], b_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_s_executor_comes_back_to_its_restarted_tls_agent() {
    let mut cluster = Cluster::start(ClusterSpec {
        tls: true,
        ..ClusterSpec::default()
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let a_id = cluster.agent_id(0).await;
    let mut info = FrameworkInfo::new("tls-restart", "nobody");
    info.checkpoint = true;
    let driver = SchedulerDriver::new(&cluster.master_addr, info).cluster_ca(&id.ca_pem);
    let mut fw = TestFramework::start_driver(driver).await;
    let offer = fw.offers(T).await.remove(0);
    let t = TaskBuilder::new("outlives")
        .cpus(0.1)
        .mem(16.0)
        .shell("sleep 600")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver.launch(&offer, vec![t]).await.unwrap();
    fw.update("outlives", T, |s| s.state == TaskState::Running)
        .await;

    // The agent dies and comes back (same work directory, so the same
    // identity and executor key): the executor reconnects over TLS with the
    // token it was started with, and a kill reaches the task through it.
    let agent_addr = cluster.agents[0].addr.clone();
    cluster.agents[0].restart();
    wait_for(
        T,
        "the executor's session with the restarted agent",
        || async {
            (executors_connected(&agent_addr, &id.ca_pem, &a_id).await == Some(1)).then_some(())
        },
    )
    .await;
    fw.driver
        .kill(&cairn_sdk::TaskId::new("outlives"), None)
        .await
        .unwrap();
    let end = fw.terminal("outlives", T).await;
    assert_eq!(end.state, TaskState::Killed, "{end:?}");
    // Said by the executor itself: the agent did not have to kill the
    // container for want of it.
    assert_eq!(end.source, cairn_model::Source::Executor, "{end:?}");
}
