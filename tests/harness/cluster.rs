use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::get_json;
use crate::process::{Proc, bin, sweep};
use crate::wait_for;

/// A free loopback port (bound, then released for the process to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub struct ClusterSpec {
    pub agents: usize,
    pub agent_resources: String,
    pub master_args: Vec<String>,
    pub agent_args: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            agents: 1,
            agent_resources: "cpus:4;mem:4096;disk:10000;ports:[31000-31999]".into(),
            master_args: vec!["--allocation-interval".into(), "200ms".into()],
            agent_args: Vec::new(),
        }
    }
}

pub struct Agent {
    pub proc: Proc,
    pub addr: String,
    pub work_dir: PathBuf,
}

/// One master and its agents as real processes; all of it, executors and
/// tasks included, is killed when dropped.
pub struct Cluster {
    pub master: Proc,
    pub master_addr: String,
    pub agents: Vec<Agent>,
    pub dir: TempDir,
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("tempdir");
        let master_addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--listen".to_string(), master_addr.clone()];
        args.extend(spec.master_args.iter().cloned());
        let master = Proc::spawn(
            "master",
            &bin("cairn-master"),
            &args,
            &dir.path().join("master.log"),
        );
        let mut cluster = Cluster {
            master,
            master_addr,
            agents: Vec::new(),
            dir,
        };
        let url = format!("http://{}/health", cluster.master_addr);
        wait_for(
            Duration::from_secs(20),
            "the master to answer /health",
            || {
                let url = url.clone();
                async move {
                    crate::http::get(&url)
                        .await
                        .filter(|(s, _)| *s == 200)
                        .map(|_| ())
                }
            },
        )
        .await;
        let extra: Vec<&str> = spec.agent_args.iter().map(String::as_str).collect();
        for _ in 0..spec.agents {
            cluster.add_agent(&spec.agent_resources, &extra);
        }
        cluster.wait_for_agents(spec.agents).await;
        cluster
    }

    /// Starts another agent; returns its index.
    pub fn add_agent(&mut self, resources: &str, extra: &[&str]) -> usize {
        let i = self.agents.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let work_dir = self.dir.path().join(format!("agent-{i}"));
        let mut args = vec![
            "--master".to_string(),
            self.master_addr.clone(),
            "--listen".into(),
            addr.clone(),
            "--work-dir".into(),
            work_dir.display().to_string(),
            "--resources".into(),
            resources.to_string(),
            "--cgroups-root".into(),
            self.agent_cgroups(i),
        ];
        args.extend(extra.iter().map(|s| (*s).to_string()));
        let proc = Proc::spawn(
            &format!("agent-{i}"),
            &bin("cairn-agent"),
            &args,
            &self.dir.path().join(format!("agent-{i}.log")),
        );
        self.agents.push(Agent {
            proc,
            addr,
            work_dir,
        });
        i
    }

    pub async fn state(&self) -> Value {
        get_json(&format!("http://{}/state", self.master_addr))
            .await
            .expect("the master answers /state")
    }

    /// Waits until `n` agents are registered and connected.
    pub async fn wait_for_agents(&self, n: usize) {
        let url = format!("http://{}/state", self.master_addr);
        wait_for(
            Duration::from_secs(20),
            &format!("{n} agents to register"),
            || {
                let url = url.clone();
                async move {
                    let s = get_json(&url).await?;
                    (s["activated_slaves"].as_u64()? as usize >= n).then_some(())
                }
            },
        )
        .await;
    }

    /// The master's agent id of agent `i` (matched by address).
    pub async fn agent_id(&self, i: usize) -> String {
        let addr = self.agents[i].addr.clone();
        let s = self.state().await;
        s["slaves"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["pid"].as_str().is_some_and(|p| p.ends_with(&addr)))
            .and_then(|a| a["id"].as_str().map(String::from))
            .expect("agent registered")
    }

    /// The cgroup root of this test's agents, under which each agent `i`
    /// has `agent-<i>`.
    pub fn cgroups_root(&self) -> String {
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("cairn/{name}")
    }

    pub fn agent_cgroups(&self, i: usize) -> String {
        format!("{}/agent-{i}", self.cgroups_root())
    }

    fn marker(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The tail of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    out.push_str(&format!("--- {} ---\n", p.display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for a in &mut self.agents {
            a.proc.kill9();
        }
        sweep(&self.marker());
        self.master.kill9();
        crate::process::remove_cgroup_tree(&self.cgroups_root());
        crate::process::unmount_below(self.dir.path());
    }
}
