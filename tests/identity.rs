//! Cluster identity end to end: `cairn-master init` makes a CA and join
//! tokens; the master speaks only TLS; agents join with the agent token,
//! pin the CA, get a certificate naming their id, and may speak only for
//! that id; an agent's certificate cannot pass for a master's; rotated
//! tokens stop joining while joined agents keep working; frameworks reach
//! the master over TLS; tokens appear in no output.

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
    let register = pb::AgentMessage {
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
    };
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
    let cluster = Cluster::start(ClusterSpec {
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
    assert!(
        cairn_tls::join(&fake, &id.agent_token, "victim")
            .await
            .is_err()
    );
    server.abort();
    // The real master passes the same client.
    cairn_tls::grpc_connect(&master, trusting, Duration::from_secs(5))
        .await
        .expect("the master's certificate verifies");

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
    assert!(cairn_tls::join(&master, &other, "lost").await.is_err());

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
    let stdout = cluster.agents[0].work_dir().join(format!(
        "frameworks/{}/executors/over-tls/runs/latest/stdout",
        fw.id
    ));
    seen.push_str(&std::fs::read_to_string(stdout).unwrap_or_default());
    seen.push_str(&cluster.logs());
    for t in [&id.agent_token, &id.master_token] {
        assert!(!seen.contains(&secret(t)), "a token's secret leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_stops_joining_while_joined_agents_keep_working() {
    let mut cluster = Cluster::start(ClusterSpec {
        tls: true,
        ..ClusterSpec::default()
    })
    .await;
    let id = cluster.identity.clone().unwrap();
    let master = cluster.master_addr.clone();
    let a_id = certified_id(&agent_identity(&cluster, 0));

    let out = std::process::Command::new(bin("cairn"))
        .args(["token", "rotate", "agent", "--ttl", "1h"])
        .env("CAIRN_MASTER", &master)
        .env("CAIRN_CA", id.cluster_dir.join("ca.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn token rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(new_token.starts_with("CAIRN1-agent-"), "{new_token}");
    assert_ne!(new_token, id.agent_token);
    // Without the cluster CA the CLI cannot reach the master at all.
    let out = std::process::Command::new(bin("cairn"))
        .args(["token", "rotate", "agent"])
        .env("CAIRN_MASTER", &master)
        .env_remove("CAIRN_CA")
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The old token joins nothing: an agent started with it stops with
    // the reason.
    let e = cairn_tls::join(&master, &id.agent_token, "late")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the cluster's current"), "{e}");
    let late = cluster.add_agent(
        "cpus:1;mem:512;disk:1000;ports:[32000-32099]",
        &["--join", &id.agent_token],
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
    cluster.add_agent(
        "cpus:1;mem:512;disk:1000;ports:[32100-32199]",
        &["--join", &new_token],
    );
    cluster.wait_for_agents(2).await;

    // The agent that joined before keeps working, across a restart too:
    // it comes back under its certified id (the rotated token still on its
    // command line is not used: it has its certificate).
    cluster.agents[0].proc.stop(Duration::from_secs(10));
    cluster.agents[0].restart();
    let url = format!("https://{master}/state");
    let a = a_id.clone();
    wait_for(
        T,
        "the first agent to be back, active, under its id",
        || {
            let url = url.clone();
            let a = a.clone();
            async move {
                let s = cairn_tests::http::get_json(&url).await?;
                let slaves = s["slaves"].as_array()?;
                let back = slaves
                    .iter()
                    .any(|x| x["id"] == a.as_str() && x["active"] == true);
                (back && s["activated_slaves"].as_u64()? == 2).then_some(())
            }
        },
    )
    .await;
}
