//! Bad input over the real gRPC API gets a clear error, and the master keeps
//! serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cairn_proto as pb;
use cairn_tests::cluster::{Cluster, ClusterSpec};
use cairn_tests::framework::TestFramework;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

async fn client(addr: &str) -> pb::scheduler_client::SchedulerClient<tonic::transport::Channel> {
    pb::scheduler_client::SchedulerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn scalar(name: &str, v: f64) -> pb::Resource {
    pb::Resource {
        name: name.into(),
        value: Some(pb::resource::Value::Scalar(v)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_calls_get_clear_errors_and_change_nothing() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut c = client(&cluster.master_addr).await;

    // Subscribing without a name.
    let err = c
        .subscribe(pb::SubscribeRequest {
            framework_info: Some(pb::FrameworkInfo::default()),
            suppressed_roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("framework_info.name"),
        "{}",
        err.message()
    );

    // A call for a framework nobody knows.
    let err = c
        .call(pb::SchedulerCall {
            framework_id: "nobody".into(),
            stream_id: "x".into(),
            seq: 0,
            call: Some(pb::scheduler_call::Call::Revive(
                pb::scheduler_call::Revive { roles: vec![] },
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // A real framework, then its malformed calls.
    let mut fw = TestFramework::named(&cluster.master_addr, "prober").await;
    let offer = fw.offers(T).await.remove(0);
    let framework_id = fw.id.to_string();
    let stream_id = "not-the-stream".to_string();
    let err = c
        .call(pb::SchedulerCall {
            framework_id: framework_id.clone(),
            stream_id,
            seq: 0,
            call: Some(pb::scheduler_call::Call::Revive(
                pb::scheduler_call::Revive { roles: vec![] },
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a stale stream id: {err}"
    );

    // NaN refuse seconds on the framework's own stream: refused whole.
    let nan = pb::scheduler_call::Call::Decline(pb::scheduler_call::Decline {
        offer_ids: vec![offer.id.to_string()],
        filters: Some(pb::Filters {
            refuse_seconds: Some(f64::NAN),
        }),
    });
    let err = fw_call(&cluster.master_addr, &fw, nan).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("decline.filters.refuse_seconds"),
        "{}",
        err.message()
    );

    // Negative and NaN resources in a launch: TASK_ERROR naming the field.
    let mut task = cairn_model::convert::task_info_to_pb(
        &cairn_sdk::TaskBuilder::new("negative")
            .cpus(0.1)
            .shell("true")
            .build(&offer.agent_id)
            .unwrap(),
    );
    task.resources = vec![scalar("cpus", -1.0), scalar("mem", f64::NAN)];
    let accept = pb::scheduler_call::Call::Accept(pb::scheduler_call::Accept {
        offer_ids: vec![offer.id.to_string()],
        operations: vec![pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                tasks: vec![task],
            })),
        }],
        filters: None,
    });
    let status = fw_call(&cluster.master_addr, &fw, accept).await;
    assert!(status.is_ok(), "{status:?}");
    let err = fw.terminal("negative", T).await;
    assert_eq!(err.state, cairn_model::TaskState::Error);
    assert!(
        err.message.contains("resources[0].scalar"),
        "{}",
        err.message
    );

    // An oversized message.
    let huge = pb::SchedulerCall {
        framework_id: framework_id.clone(),
        stream_id: "x".repeat(5 * 1024 * 1024),
        seq: 0,
        call: None,
    };
    let err = c.call(huge).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument | Code::Internal
        ),
        "{err}"
    );

    // An agent announcing negative resources is refused.
    let mut agents =
        pb::agent_link_client::AgentLinkClient::connect(format!("http://{}", cluster.master_addr))
            .await
            .unwrap();
    let register = pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::RegisterAgent {
            agent_id: String::new(),
            info: Some(pb::AgentInfo {
                hostname: "evil".into(),
                address: "127.0.0.1:1".into(),
                resources: vec![scalar("cpus", -4.0)],
                ..Default::default()
            }),
            tasks: vec![],
            frameworks: vec![],
            version: String::new(),
        })),
    };
    let err = agents
        .session(tokio_stream::iter(vec![register]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("scalar"), "{}", err.message());

    // The master still serves: the framework still gets offers and runs tasks.
    let offer = fw.offers(T).await.remove(0);
    let ok = cairn_sdk::TaskBuilder::new("fine")
        .cpus(0.1)
        .mem(32.0)
        .shell("true")
        .build(&offer.agent_id)
        .unwrap();
    fw.driver.launch(&offer, vec![ok]).await.unwrap();
    assert_eq!(
        fw.terminal("fine", T).await.state,
        cairn_model::TaskState::Finished
    );
    assert_eq!(cluster.state().await["slaves"].as_array().unwrap().len(), 1);
}

/// Sends a raw call on the framework's current stream.
async fn fw_call(
    addr: &str,
    fw: &TestFramework,
    call: pb::scheduler_call::Call,
) -> Result<(), tonic::Status> {
    let (framework_id, stream_id) = fw.driver.session().expect("subscribed");
    client(addr)
        .await
        .call(pb::SchedulerCall {
            framework_id: framework_id.to_string(),
            stream_id,
            seq: 0,
            call: Some(call),
        })
        .await
        .map(|_| ())
}

/// The `Calls` stream answers every call with its own `seq`, in order; a
/// malformed or refused call gets its error there and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_stream_answers_each_call_and_survives_bad_ones() {
    let cluster = Cluster::start(ClusterSpec::default()).await;
    let mut fw = TestFramework::named(&cluster.master_addr, "streamer").await;
    let offer = fw.offers(T).await.remove(0);
    let (framework_id, stream_id) = fw.driver.session().expect("subscribed");
    let call = |seq: u64, framework_id: &str, call: pb::scheduler_call::Call| pb::SchedulerCall {
        framework_id: framework_id.to_string(),
        stream_id: stream_id.clone(),
        seq,
        call: Some(call),
    };
    let revive = || pb::scheduler_call::Call::Revive(pb::scheduler_call::Revive { roles: vec![] });
    let bad_ack = |n: usize| {
        pb::scheduler_call::Call::AcknowledgeMany(pb::scheduler_call::AcknowledgeMany {
            acknowledgements: vec![
                pb::scheduler_call::Acknowledge {
                    agent_id: offer.agent_id.to_string(),
                    task_id: "t".into(),
                    uuid: vec![7; 16],
                };
                n
            ],
        })
    };
    let mut malformed = bad_ack(1);
    if let pb::scheduler_call::Call::AcknowledgeMany(m) = &mut malformed {
        m.acknowledgements[0].uuid = vec![1, 2, 3];
    }
    let launch = cairn_model::convert::task_info_to_pb(
        &cairn_sdk::TaskBuilder::new("on-the-stream")
            .cpus(0.1)
            .mem(32.0)
            .shell("true")
            .build(&offer.agent_id)
            .unwrap(),
    );
    let accept = pb::scheduler_call::Call::Accept(pb::scheduler_call::Accept {
        offer_ids: vec![offer.id.to_string()],
        operations: vec![pb::Operation {
            operation: Some(pb::operation::Operation::Launch(pb::operation::Launch {
                tasks: vec![launch],
            })),
        }],
        filters: None,
    });
    let fid = framework_id.to_string();
    let calls = vec![
        call(1, &fid, revive()),
        call(2, "nobody", revive()),
        call(3, &fid, malformed),
        call(4, &fid, bad_ack(10_001)),
        call(5, &fid, bad_ack(3)),
        call(6, &fid, accept),
    ];
    let mut results = client(&cluster.master_addr)
        .await
        .calls(tokio_stream::iter(calls))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = tokio::time::timeout(T, results.message())
        .await
        .expect("results in time")
        .expect("the stream stays up")
    {
        got.push(r);
    }
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "one answer per call, in order");
    let code = |i: usize| Code::from(got[i].code);
    assert_eq!(code(0), Code::Ok);
    assert_eq!(code(1), Code::NotFound, "{}", got[1].message);
    assert_eq!(code(2), Code::InvalidArgument);
    assert!(
        got[2]
            .message
            .contains("acknowledge_many.acknowledgements[0].uuid"),
        "{}",
        got[2].message
    );
    assert_eq!(code(3), Code::InvalidArgument);
    assert!(
        got[3].message.contains("at most 10000"),
        "{}",
        got[3].message
    );
    assert_eq!(
        code(4),
        Code::Ok,
        "acknowledging unknown updates changes nothing"
    );
    assert_eq!(code(5), Code::Ok);
    // The accept on the stream took effect.
    assert_eq!(
        fw.terminal("on-the-stream", T).await.state,
        cairn_model::TaskState::Finished
    );
}
