//! `cairn-services` on a real cluster: replica sets under constraints,
//! replacement, rolling updates, pods, DNS and the load balancer, and the
//! CLI's apply/get/describe/scale/delete.
//!
//! Agents advertise distinct loopback addresses as hostnames (127.0.0.2,
//! .3, .4), so `hostname` constraints see three hosts and instances are
//! reachable at their agent's address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_tests::cluster::{Cluster, ClusterSpec, free_port};
use cairn_tests::process::{Proc, bin, processes_marked};
use cairn_tests::wait_for;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// Agent `i`'s ports for test `k`: tests run at once and their instances
/// bind the ports they are given on one machine.
fn ports(k: u32, i: u32) -> String {
    let base = 21000 + k * 1000 + i * 100;
    format!("[{base}-{}]", base + 99)
}

struct Services {
    cluster: Cluster,
    proc: Proc,
    args: Vec<String>,
    api: String,
    dns: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Services {
    /// Three agents (racks r1, r2, r3) and the services framework.
    async fn start(k: u32) -> Services {
        let mut cluster = Cluster::start(ClusterSpec {
            agents: 0,
            ..ClusterSpec::default()
        })
        .await;
        for i in 0..3u32 {
            let host = format!("127.0.0.{}", i + 2);
            let rack = format!("rack:r{}", i + 1);
            cluster.add_agent(
                &format!("cpus:4;mem:4096;disk:1000;ports:{}", ports(k, i)),
                &["--hostname", &host, "--attributes", &rack],
            );
        }
        cluster.wait_for_agents(3).await;
        let dir = tempfile::Builder::new()
            .prefix("cairn-services-")
            .tempdir()
            .unwrap();
        let api = format!("127.0.0.1:{}", free_port());
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let args = vec![
            "serve".into(),
            "--master".into(),
            cluster.master_addr.clone(),
            "--listen".into(),
            api.clone(),
            "--dns".into(),
            dns.to_string(),
            "--state-dir".into(),
            dir.path().join("state").display().to_string(),
        ];
        let proc = Proc::spawn(
            "cairn-services",
            &bin("cairn-services"),
            &args,
            &cluster.dir.path().join("services.log"),
        );
        let s = Services {
            cluster,
            proc,
            args,
            api,
            dns,
            _dir: dir,
        };
        s.wait_api().await;
        s
    }

    async fn wait_api(&self) {
        let url = format!("http://{}/v1/apps", self.api);
        wait_for(T, "the services API", || {
            let url = url.clone();
            async move { cairn_tests::http::get_json(&url).await.map(|_| ()) }
        })
        .await;
    }

    /// `kill -9` of the framework, and a new one on the same state.
    async fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Proc::spawn(
            "cairn-services",
            &bin("cairn-services"),
            &self.args,
            &self.cluster.dir.path().join("services-2.log"),
        );
        self.wait_api().await;
    }

    fn cairn(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(bin("cairn"))
            .args(args)
            .args([
                "--services",
                &self.api,
                "--master",
                &self.cluster.master_addr,
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `cairn apply -f` of `yaml`; what it printed.
    fn apply(&self, yaml: &str) -> String {
        let file = self
            .cluster
            .dir
            .path()
            .join(format!("spec-{}.yaml", free_port()));
        std::fs::write(&file, yaml).unwrap();
        let (ok, out, err) = self.cairn(&["apply", "-f", &file.display().to_string()]);
        assert!(ok, "apply failed: {err}");
        out
    }

    async fn app(&self, name: &str) -> Value {
        cairn_tests::http::get_json(&format!("http://{}/v1/apps/{name}", self.api))
            .await
            .unwrap_or(Value::Null)
    }

    /// The app's instances that satisfy `pred`, once at least `n` do.
    async fn wait_instances(
        &self,
        app: &str,
        n: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + T;
        loop {
            let a = self.app(app).await;
            let list: Vec<Value> = a["instance_list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| pred(i))
                .cloned()
                .collect();
            if list.len() >= n {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "{app}: fewer than {n} instances {what} within {T:?}: {a:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn healthy(&self, app: &str, n: usize) -> Vec<Value> {
        self.wait_instances(app, n, "healthy", |i| {
            i["state"] == "TASK_RUNNING" && i["healthy"] == true
        })
        .await
    }

    /// The sandbox of instance `id` (its executor is named after it).
    fn sandbox(&self, id: &str) -> PathBuf {
        for a in &self.cluster.agents {
            let fws = a.work_dir().join("frameworks");
            for f in std::fs::read_dir(&fws).into_iter().flatten().flatten() {
                // `latest` is the agent's name for the newest run.
                let runs = f.path().join("executors").join(id).join("runs");
                if let Some(run) = std::fs::read_dir(&runs)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .next()
                {
                    return run.path();
                }
            }
        }
        panic!("no sandbox for {id}");
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.cluster.dir.path().join("services.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- services.log ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        self.proc.kill9();
    }
}

/// An HTTP server on `$PORT0` answering with the instance's id (and
/// `$VERSION` if set), healthy while `$VOLUME/sick` does not exist.
fn web_app(name: &str, instances: u32, extra: &str) -> String {
    format!(
        r#"
name: {name}
command: "mkdir -p www && echo $INSTANCE $VERSION > www/index.html && exec python3 -m http.server $PORT0 --bind 0.0.0.0 --directory www"
instances: {instances}
cpus: 0.1
mem: 64
ports: 1
health_check:
  type: http
  port_index: 0
  grace_period: 20s
  interval: 500ms
  timeout: 1s
  failure_threshold: 2
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_hostname_runs_three_of_five_and_says_why_two_wait() {
    let s = Services::start(0).await;
    s.apply(
        "name: uniq\ncommand: sleep 600\ninstances: 5\nconstraints: [[hostname, UNIQUE]]\nlabels: {tier: batchy}\n",
    );
    let running = s
        .wait_instances("uniq", 3, "running", |i| i["state"] == "TASK_RUNNING")
        .await;
    let hosts: BTreeSet<&str> = running
        .iter()
        .map(|i| i["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 3, "one per host: {running:?}");
    let deadline = Instant::now() + T;
    loop {
        let (ok, out, err) = s.cairn(&["describe", "app", "uniq"]);
        assert!(ok, "{err}");
        let waiting = out
            .lines()
            .filter(|l| l.contains("constraint unmet: hostname UNIQUE"))
            .count();
        if waiting == 2 {
            assert!(out.contains("5 wanted, 3 running"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two instances should wait on the constraint:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Never more than three ran.
    let a = s.app("uniq").await;
    assert_eq!(a["running"], 3);
    let (_, out, _) = s.cairn(&["get", "instances", "-l", "tier=batchy", "-o", "wide"]);
    assert_eq!(
        out.lines().count(),
        6,
        "a header and five instances:\n{out}"
    );
    let (_, out, _) = s.cairn(&["get", "apps"]);
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with("uniq")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_unhealthy_instance_is_replaced_within_detection_plus_an_allocation_interval() {
    let s = Services::start(1).await;
    s.apply(
        &web_app("web", 2, "  command: 'test ! -e $VOLUME/sick'\n")
            .replace("  type: http\n  port_index: 0\n", "  type: command\n"),
    );
    let before = s.healthy("web", 2).await;
    let victim = before[0]["id"].as_str().unwrap().to_string();
    let check = Duration::from_millis(500) + Duration::from_secs(1);
    let detection = check * 2;
    let allocation_interval = Duration::from_millis(200);

    // kill -9 of the instance's process.
    let pids = processes_marked(&format!("INSTANCE={victim}"));
    assert!(!pids.is_empty(), "no process of {victim}");
    let killed_at = Instant::now();
    for p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let replacement = s
        .wait_instances("web", 1, "replacing the killed one", |i| {
            i["state"] == "TASK_RUNNING" && !before.iter().any(|b| b["id"] == i["id"])
        })
        .await;
    let took = killed_at.elapsed();
    assert!(
        took <= detection + allocation_interval,
        "replacement {} running after {took:?}, more than detection {detection:?} + {allocation_interval:?}",
        replacement[0]["id"]
    );

    // An instance failing its health checks is killed and replaced.
    let sick = before[1]["id"].as_str().unwrap().to_string();
    std::fs::write(s.sandbox(&sick).join("volume").join("sick"), b"").unwrap();
    let sick_at = Instant::now();
    let gone = |list: &Value| {
        !list["instance_list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == sick.as_str())
    };
    wait_for(T, "the unhealthy instance to be killed", || async {
        gone(&s.app("web").await).then_some(())
    })
    .await;
    s.wait_instances("web", 2, "running after the unhealthy one went", |i| {
        i["state"] == "TASK_RUNNING" && i["id"] != sick.as_str()
    })
    .await;
    let took = sick_at.elapsed();
    assert!(
        took <= detection + check + allocation_interval + Duration::from_secs(3),
        "unhealthy instance replaced after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_half_the_instances_healthy_and_ends_on_the_new_version() {
    let s = Services::start(2).await;
    let upgrade = "upgrade: {minimum_health_capacity: 0.5, maximum_over_capacity: 0.0}\n";
    s.apply(&format!(
        "{}env: {{VERSION: v1}}\n",
        web_app("roll", 4, upgrade)
    ));
    s.healthy("roll", 4).await;
    let v1 = s.app("roll").await["version"].as_str().unwrap().to_string();

    // Sample the healthy count throughout the update.
    let api = s.api.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut least = usize::MAX;
        let mut samples = 0;
        loop {
            if let Some(a) =
                cairn_tests::http::get_json(&format!("http://{api}/v1/apps/roll")).await
            {
                let healthy = a["instance_list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|i| {
                        i["state"] == "TASK_RUNNING"
                            && i["healthy"] == true
                            && i["phase"] != "killing"
                    })
                    .count();
                least = least.min(healthy);
                samples += 1;
            }
            tokio::select! {
                _ = stop_rx.changed() => return (least, samples),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    s.apply(&format!(
        "{}env: {{VERSION: v2}}\n",
        web_app("roll", 4, upgrade)
    ));
    let v2 = s.app("roll").await["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = s.app("roll").await;
        let list = a["instance_list"].as_array().unwrap();
        let done = list.len() == 4
            && list
                .iter()
                .all(|i| i["version"] == v2.as_str() && i["healthy"] == true);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update did not finish: {a:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    let (least, samples) = sampler.await.unwrap();
    assert!(samples > 20, "too few samples: {samples}");
    assert!(
        least >= 2,
        "healthy instances dropped to {least} during the update"
    );
    // The instances serve the new version.
    for i in s.app("roll").await["instance_list"].as_array().unwrap() {
        let url = format!("http://{}:{}/", i["ip"].as_str().unwrap(), i["ports"][0]);
        let (_, body) = cairn_tests::http::get(&url).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("v2"), "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_containers_share_localhost_and_a_volume() {
    let s = Services::start(3).await;
    s.apply(
        r#"
name: pod
ports: 1
containers:
  - name: server
    command: "echo written-by-server > $VOLUME/hello && mkdir -p www && echo pong-from-server > www/index.html && exec python3 -m http.server $PORT0 --bind 127.0.0.1 --directory www"
  - name: client
    command: "until python3 -c \"import urllib.request,os; print(urllib.request.urlopen('http://localhost:'+os.environ['PORT0']+'/').read().decode().strip())\" > $VOLUME/client-saw 2>/dev/null; do sleep 0.2; done; until [ -s $VOLUME/hello ]; do sleep 0.2; done; cat $VOLUME/hello > $VOLUME/client-read; exec sleep 600"
"#,
    );
    let running = s
        .wait_instances("pod", 1, "running", |i| i["state"] == "TASK_RUNNING")
        .await;
    let volume = s.sandbox(running[0]["id"].as_str().unwrap()).join("volume");
    let read = |name: &str| std::fs::read_to_string(volume.join(name)).unwrap_or_default();
    wait_for(
        T,
        "the client container to reach the server and read its file",
        || async { (!read("client-read").is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(read("client-saw").trim(), "pong-from-server");
    assert_eq!(read("client-read").trim(), "written-by-server");
    // Both containers are one instance: one task.
    let state = s.cluster.state().await;
    let tasks: usize = state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["tasks"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(tasks, 1);
}

/// One DNS query of `name` and `ty` to `server`: the answers' data.
async fn dns(server: SocketAddr, name: &str, ty: hickory_proto::rr::RecordType) -> Vec<String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData};
    let mut m = Message::new();
    m.set_id(7).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("a DNS answer within 5 s")
        .unwrap();
    let resp = Message::from_vec(&buf[..n]).unwrap();
    resp.answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(a) => a.0.to_string(),
            RData::SRV(srv) => format!("{} {}", srv.target(), srv.port()),
            other => format!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_and_the_load_balancer_reach_the_healthy_instances_only() {
    let s = Services::start(4).await;
    let lb_port = free_port();
    s.apply(&web_app(
        "echo",
        3,
        &format!("  command: 'test ! -e $VOLUME/sick'\nconstraints: [[hostname, UNIQUE]]\nservice: {{name: echo, port: {lb_port}}}\n"),
    ).replace("  type: http\n  port_index: 0\n", "  type: command\n"));
    let healthy = s.healthy("echo", 3).await;
    let addr = |i: &Value| i["ip"].as_str().unwrap().to_string();
    let want: BTreeSet<String> = healthy.iter().map(addr).collect();
    let a = wait_for(T, "three A records", || async {
        let got = dns(
            s.dns,
            "echo.services.cairn",
            hickory_proto::rr::RecordType::A,
        )
        .await;
        (got.len() == 3).then_some(got)
    })
    .await;
    assert_eq!(a.into_iter().collect::<BTreeSet<_>>(), want);
    let srv = dns(
        s.dns,
        "_echo._tcp.services.cairn",
        hickory_proto::rr::RecordType::SRV,
    )
    .await;
    let srv_ports: BTreeSet<String> = srv
        .iter()
        .map(|r| r.rsplit(' ').next().unwrap().to_string())
        .collect();
    let inst_ports: BTreeSet<String> = healthy.iter().map(|i| i["ports"][0].to_string()).collect();
    assert_eq!(srv_ports, inst_ports, "SRV records: {srv:?}");

    // One instance turns unhealthy: it leaves DNS and the balancer.
    let sick = healthy[0]["id"].as_str().unwrap().to_string();
    let sick_ip = addr(&healthy[0]);
    std::fs::write(s.sandbox(&sick).join("volume").join("sick"), b"").unwrap();
    wait_for(T, "the sick instance to leave DNS", || async {
        let got = dns(
            s.dns,
            "echo.services.cairn",
            hickory_proto::rr::RecordType::A,
        )
        .await;
        (!got.contains(&sick_ip)).then_some(())
    })
    .await;
    let now_healthy: BTreeSet<String> = s.app("echo").await["instance_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["healthy"] == true && i["state"] == "TASK_RUNNING")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let mut reached: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..100 {
        let (status, body) = cairn_tests::http::get(&format!("http://127.0.0.1:{lb_port}/"))
            .await
            .expect("the balancer answers");
        assert_eq!(status, 200);
        let who = String::from_utf8_lossy(&body)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        *reached.entry(who).or_default() += 1;
    }
    assert!(
        !reached.contains_key(&sick),
        "the unhealthy instance got connections: {reached:?}"
    );
    for id in &now_healthy {
        assert!(
            reached.contains_key(id),
            "{id} got no connection: {reached:?}"
        );
    }
    let (_, out, _) = s.cairn(&["get", "services"]);
    assert!(
        out.contains("echo.services.cairn") && out.contains(&format!("127.0.0.1:{lb_port}")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_same_file_twice_changes_nothing_and_scale_and_delete_work() {
    let s = Services::start(5).await;
    let spec = "apps:\n  - name: idem\n    command: sleep 600\n    instances: 2\n";
    assert_eq!(s.apply(spec).trim(), "app/idem created");
    let first: BTreeSet<String> = s
        .wait_instances("idem", 2, "running", |i| i["state"] == "TASK_RUNNING")
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(s.apply(spec).trim(), "app/idem unchanged");
    let a = s.app("idem").await;
    let again: BTreeSet<String> = a["instance_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        first, again,
        "a second apply of the same file touched the instances"
    );

    let (ok, _, err) = s.cairn(&["scale", "app", "idem", "--instances", "3"]);
    assert!(ok, "{err}");
    let three = s
        .wait_instances("idem", 3, "running", |i| i["state"] == "TASK_RUNNING")
        .await;
    assert!(
        first
            .iter()
            .all(|id| three.iter().any(|i| i["id"] == id.as_str())),
        "scaling up restarted instances"
    );
    let (ok, _, err) = s.cairn(&["delete", "app", "idem"]);
    assert!(ok, "{err}");
    wait_for(T, "the deleted app's tasks to end", || async {
        let state = s.cluster.state().await;
        let live: usize = state["frameworks"]
            .as_array()?
            .iter()
            .map(|f| f["tasks"].as_array().map_or(0, Vec::len))
            .sum();
        (live == 0).then_some(())
    })
    .await;
    let (ok, _, err) = s.cairn(&["describe", "app", "idem"]);
    assert!(!ok && err.contains("no app idem"), "{err}");
    let (ok, _, err) = s.cairn(&["scale", "app", "nope", "--instances", "1"]);
    assert!(!ok && err.contains("no app nope"), "{err}");
    let bad = s.cluster.dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: Bad\ncommand: x\n").unwrap();
    let (ok, _, err) = s.cairn(&["apply", "-f", &bad.display().to_string()]);
    assert!(!ok && err.contains("DNS label"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_framework_keeps_its_instances_and_goes_on_managing_them() {
    let mut s = Services::start(6).await;
    s.apply("name: keep\ncommand: sleep 600\ninstances: 2\n");
    let before: BTreeSet<String> = s
        .wait_instances("keep", 2, "running", |i| i["state"] == "TASK_RUNNING")
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    s.restart().await;
    // Same instances, reconciled as running; nothing new started.
    let after = s
        .wait_instances("keep", 2, "running after the restart", |i| {
            i["state"] == "TASK_RUNNING"
        })
        .await;
    let after: BTreeSet<String> = after
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before, after);
    let state = s.cluster.state().await;
    let frameworks = state["frameworks"].as_array().unwrap();
    assert_eq!(frameworks.len(), 1, "the framework came back as itself");
    assert_eq!(frameworks[0]["tasks"].as_array().unwrap().len(), 2);
    let (ok, _, err) = s.cairn(&["scale", "app", "keep", "--instances", "1"]);
    assert!(ok, "{err}");
    wait_for(T, "one instance left", || async {
        let a = s.app("keep").await;
        (a["instance_list"].as_array()?.len() == 1).then_some(())
    })
    .await;
}
