//! The `cairn` command against `cairn local`, as a user runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use cairn_tests::cluster::free_port;
use cairn_tests::process::{Proc, bin, processes_marked, processes_running, sweep};
use cairn_tests::wait_for;

struct Local {
    proc: Proc,
    addr: String,
    dir: tempfile::TempDir,
}

impl Local {
    async fn start() -> Local {
        let dir = tempfile::Builder::new()
            .prefix("cairn-cli-")
            .tempdir()
            .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let proc = Proc::spawn(
            "cairn local",
            &bin("cairn"),
            &[
                "local".into(),
                "--listen".into(),
                addr.clone(),
                "--work-dir".into(),
                dir.path().join("work").display().to_string(),
                "--agent-resources".into(),
                "cpus:2;mem:1024;disk:1000;ports:[31000-31099]".into(),
                "--cgroups-root".into(),
                cgroups_root(&dir),
            ],
            &dir.path().join("local.log"),
        );
        // `cairn local` makes a cluster CA and speaks only TLS.
        let ca = dir.path().join("work/cluster/ca.crt");
        let ca_pem = wait_for(
            Duration::from_secs(30),
            "cairn local to make its cluster CA",
            || {
                let ca = ca.clone();
                async move {
                    std::fs::read_to_string(ca)
                        .ok()
                        .filter(|p| p.contains("END CERTIFICATE"))
                }
            },
        )
        .await;
        cairn_tests::http::trust_ca(&ca_pem);
        let url = format!("https://{addr}/state");
        wait_for(
            Duration::from_secs(30),
            "cairn local to have 2 agents",
            || {
                let url = url.clone();
                async move {
                    let s = cairn_tests::http::get_json(&url).await?;
                    (s["activated_slaves"].as_u64()? == 2).then_some(())
                }
            },
        )
        .await;
        Local { proc, addr, dir }
    }

    fn cairn(&self, args: &[&str]) -> Output {
        Command::new(bin("cairn"))
            .args(args)
            .env("CAIRN_MASTER", &self.addr)
            .env("CAIRN_CA", self.dir.path().join("work/cluster/ca.crt"))
            .output()
            .expect("cairn runs")
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}",
                std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
            );
        }
        self.proc.kill9();
        sweep(&self.dir.path().display().to_string());
        cairn_tests::process::remove_cgroup_tree(&cgroups_root(&self.dir));
        cairn_tests::process::unmount_below(self.dir.path());
    }
}

fn cgroups_root(dir: &tempfile::TempDir) -> String {
    format!(
        "cairn/{}",
        dir.path().file_name().unwrap().to_string_lossy()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_run_prints_the_output_and_exits_with_the_task_status() {
    let local = Local::start().await;
    let out = local.cairn(&["run", "--", "sh", "-c", "echo hello-$((6*7))"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-42\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    let out = local.cairn(&["run", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));

    let out = local.cairn(&["get", "agents"]);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listing.lines().count(),
        3,
        "a header and two agents:\n{listing}"
    );

    let out = local.cairn(&["get", "tasks", "-o", "json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_run_that_cannot_be_placed_says_so_and_exits_non_zero() {
    let local = Local::start().await;
    let out = local.cairn(&[
        "run",
        "--cpus",
        "64",
        "--placement-timeout",
        "2s",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agent offered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_cairn_local_stops_every_task_it_started() {
    let mut local = Local::start().await;
    let mut runner = Command::new(bin("cairn"))
        .args(["run", "--", "sleep", "677"])
        .env("CAIRN_MASTER", &local.addr)
        .env("CAIRN_CA", local.dir.path().join("work/cluster/ca.crt"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = local.dir.path().display().to_string();
    wait_for(Duration::from_secs(30), "the task to run", || async {
        processes_running("sleep 677")
            .iter()
            .any(|p| processes_marked(&marker).contains(p))
            .then_some(())
    })
    .await;
    local.proc.stop(Duration::from_secs(30));
    assert!(!local.proc.is_running());
    // The client (its CAIRN_CA names a file under the marked directory) is
    // not among what `cairn local` started.
    let _ = runner.kill();
    let _ = runner.wait();
    assert!(
        processes_marked(&marker).is_empty(),
        "processes left: {:?}",
        processes_marked(&marker)
    );
    let root = cgroups_root(&local.dir);
    assert!(
        cairn_tests::process::cgroups_under(&root).is_empty(),
        "cgroups left under {root}: {:?}",
        cairn_tests::process::cgroups_under(&root)
    );
}
