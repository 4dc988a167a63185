use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::http::get_json;
use crate::process::{Proc, bin, sweep};
use crate::wait_for;
use crate::zookeeper::ZooKeeper;

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
    /// Masters to start; more than one implies ZooKeeper.
    pub masters: usize,
    /// Start ZooKeeper and have the masters contend through it.
    pub zookeeper: bool,
    /// The address masters listen on (loopback unless a test needs them
    /// reachable from a network namespace).
    pub master_host: String,
    /// A cluster CA (`cairn-master init`): masters speak only TLS, agents
    /// join with the agent token, and the harness trusts the CA.
    pub tls: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            agents: 1,
            agent_resources: "cpus:4;mem:4096;disk:10000;ports:[31000-31999]".into(),
            master_args: vec!["--allocation-interval".into(), "200ms".into()],
            agent_args: Vec::new(),
            masters: 1,
            zookeeper: false,
            master_host: "127.0.0.1".into(),
            tls: false,
        }
    }
}

impl ClusterSpec {
    /// Three masters contending through a real ZooKeeper with a 2 s session
    /// timeout (a failover takes seconds), and `agents` agents.
    pub fn ha(agents: usize) -> Self {
        ClusterSpec {
            agents,
            masters: 3,
            master_args: vec![
                "--allocation-interval".into(),
                "200ms".into(),
                "--zk-session-timeout".into(),
                "2s".into(),
            ],
            ..ClusterSpec::default()
        }
    }
}

/// A process the test can kill and start again with the same flags.
pub struct Restartable {
    pub proc: Proc,
    pub addr: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    starts: usize,
}

impl Restartable {
    fn spawn(name: &str, program: PathBuf, addr: String, args: Vec<String>, log: PathBuf) -> Self {
        let proc = Proc::spawn(name, &program, &args, &log);
        Restartable {
            proc,
            addr,
            program,
            args,
            log,
            starts: 1,
        }
    }

    /// Starts the process again (killing it first if it still runs), with
    /// the same flags; its log continues in a numbered file.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.starts += 1;
        let log = self.log.with_extension(format!("{}.log", self.starts));
        self.proc = Proc::spawn(&self.proc.name.clone(), &self.program, &self.args, &log);
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
}

pub type Agent = Restartable;

impl Restartable {
    /// An agent's work directory.
    /// The sandbox of `task`'s (first) run on this agent, if it has one.
    pub fn sandbox_of(&self, task: &str) -> Option<PathBuf> {
        let root = self.work_dir().join("frameworks");
        std::fs::read_dir(&root).ok()?.flatten().find_map(|fw| {
            let runs = fw.path().join("executors").join(task).join("runs");
            let run = std::fs::read_dir(runs).ok()?.next()?.ok()?;
            Some(run.path())
        })
    }

    /// An agent's runtime directory (`--runtime-dir`).
    pub fn runtime_dir(&self) -> PathBuf {
        self.path_flag("--runtime-dir")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.path_flag("--work-dir")
    }

    /// The path this process was started with after `flag`.
    fn path_flag(&self, flag: &str) -> PathBuf {
        let i = self
            .args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("started without {flag}"));
        PathBuf::from(&self.args[i + 1])
    }
}

/// Masters (one, or several contending through ZooKeeper) and agents as
/// real processes; all of it, executors and tasks included, is killed when
/// dropped.
pub struct Cluster {
    pub masters: Vec<Restartable>,
    /// What agents and frameworks are given: the master's address, or the
    /// `zk://` URL with several masters.
    pub master_addr: String,
    pub agents: Vec<Agent>,
    pub zookeeper: Option<ZooKeeper>,
    pub dir: TempDir,
    /// The agents' runtime directories: on /dev/shm (a tmpfs) where there is
    /// one, else in `dir`.
    pub runtime: TempDir,
    /// With `ClusterSpec::tls`: the cluster directory and its tokens.
    pub identity: Option<Identity>,
}

/// What `cairn-master init` made for a TLS cluster.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster_dir: PathBuf,
    pub ca_pem: String,
    pub agent_token: String,
    pub master_token: String,
}

impl Identity {
    /// Writes `token` to `dir/name` (owner-only) for `--join-file`; the
    /// file's path.
    pub fn token_file(&self, dir: &std::path::Path, name: &str, token: &str) -> String {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("token file");
        f.write_all(token.as_bytes()).expect("token file");
        path.display().to_string()
    }

    /// A copy of the cluster directory at `to` (a master's own); `to`.
    pub fn copy_to(&self, to: &std::path::Path) -> PathBuf {
        std::fs::create_dir_all(to).expect("cluster directory copy");
        for f in ["ca.crt", "ca.key", "tokens.json"] {
            std::fs::copy(self.cluster_dir.join(f), to.join(f)).expect("cluster directory copy");
        }
        to.to_path_buf()
    }

    /// `cairn-master init` in `dir/cluster`.
    pub fn init(dir: &std::path::Path) -> Identity {
        let cluster_dir = dir.join("cluster");
        let out = std::process::Command::new(bin("cairn-master"))
            .args(["init", "--cluster-dir"])
            .arg(&cluster_dir)
            .output()
            .expect("cairn-master init runs");
        assert!(
            out.status.success(),
            "cairn-master init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let token = |label: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|t| t.trim().to_string())
                .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
        };
        Identity {
            ca_pem: std::fs::read_to_string(cluster_dir.join("ca.crt")).expect("ca.crt"),
            agent_token: token("agent join token:"),
            master_token: token("master join token:"),
            cluster_dir,
        }
    }
}

impl Cluster {
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("tempdir");
        let runtime = tempfile::Builder::new()
            .prefix("cairn-it-run-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("run-")
                    .tempdir_in(dir.path())
            })
            .expect("runtime tempdir");
        let zookeeper = if spec.zookeeper || spec.masters > 1 {
            Some(ZooKeeper::start(dir.path()).await)
        } else {
            None
        };
        let zk_url = zookeeper.as_ref().map(|z| z.url("/cairn"));
        let identity = spec.tls.then(|| Identity::init(dir.path()));
        if let Some(id) = &identity {
            crate::http::trust_ca(&id.ca_pem);
        }
        let scheme = if spec.tls { "https" } else { "http" };
        let mut masters = Vec::new();
        for i in 0..spec.masters.max(1) {
            let addr = format!("{}:{}", spec.master_host, free_port());
            let mut args = vec!["--listen".to_string(), addr.clone()];
            if let Some(url) = &zk_url {
                args.extend(["--zk".to_string(), url.clone()]);
            }
            match &identity {
                // Several masters get a directory each, as on hosts of
                // their own: what they share goes through ZooKeeper.
                Some(id) if spec.masters > 1 => args.extend([
                    "--cluster-dir".to_string(),
                    id.copy_to(&dir.path().join(format!("cluster-{i}")))
                        .display()
                        .to_string(),
                ]),
                Some(id) => args.extend([
                    "--cluster-dir".to_string(),
                    id.cluster_dir.display().to_string(),
                ]),
                None => args.push("--insecure".to_string()),
            }
            args.extend(spec.master_args.iter().cloned());
            masters.push(Restartable::spawn(
                &format!("master-{i}"),
                bin("cairn-master"),
                addr,
                args,
                dir.path().join(format!("master-{i}.log")),
            ));
        }
        let master_addr = zk_url.unwrap_or_else(|| masters[0].addr.clone());
        let mut cluster = Cluster {
            masters,
            master_addr,
            agents: Vec::new(),
            zookeeper,
            dir,
            runtime,
            identity,
        };
        for m in &cluster.masters {
            let url = format!("{scheme}://{}/health", m.addr);
            wait_for(
                Duration::from_secs(20),
                "the masters to answer /health",
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
        }
        cluster.leader().await;
        let mut extra: Vec<&str> = spec.agent_args.iter().map(String::as_str).collect();
        // The token in a file: never on a command line others can read.
        let token_file = cluster
            .identity
            .as_ref()
            .map(|i| i.token_file(cluster.dir.path(), "agent.token", &i.agent_token));
        if let Some(f) = &token_file {
            extra.extend(["--join-file", f.as_str()]);
        }
        for _ in 0..spec.agents {
            cluster.add_agent(&spec.agent_resources, &extra);
        }
        cluster.wait_for_agents(spec.agents).await;
        cluster
    }

    /// Starts another agent; returns its index.
    pub fn add_agent(&mut self, resources: &str, extra: &[&str]) -> usize {
        self.add_agent_in(None, resources, extra)
    }

    /// Starts another agent, in network namespace `netns` if given (it
    /// listens on the namespace's address); returns its index.
    pub fn add_agent_in(
        &mut self,
        netns: Option<&crate::netns::NetNs>,
        resources: &str,
        extra: &[&str],
    ) -> usize {
        let i = self.agents.len();
        let host = netns.map_or_else(|| "127.0.0.1".to_string(), |n| n.ns_ip.to_string());
        let addr = format!("{host}:{}", free_port());
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
            // On a tmpfs, as /run is on a host (the default's place, which
            // a test would leave behind).
            "--runtime-dir".into(),
            self.runtime
                .path()
                .join(format!("agent-{i}"))
                .display()
                .to_string(),
        ];
        if self.identity.is_none() {
            args.push("--insecure".to_string());
        }
        args.extend(extra.iter().map(|s| (*s).to_string()));
        // Only the network namespace changes (nsenter); `ip netns exec`
        // would also remount /sys and hide the cgroup hierarchies.
        let program = match netns {
            Some(n) => {
                let mut wrapped = vec![
                    format!("--net={}", n.path().display()),
                    "--".to_string(),
                    bin("cairn-agent").display().to_string(),
                ];
                wrapped.extend(args);
                args = wrapped;
                PathBuf::from("nsenter")
            }
            None => bin("cairn-agent"),
        };
        self.agents.push(Restartable::spawn(
            &format!("agent-{i}"),
            program,
            addr,
            args,
            self.dir.path().join(format!("agent-{i}.log")),
        ));
        i
    }

    /// The leading master's index, once one leads (with one master, that
    /// master once it answers).
    pub async fn leader(&self) -> usize {
        self.leader_other_than(None).await
    }

    /// Waits for a leader that is not master `old`; returns its index.
    pub async fn leader_other_than(&self, old: Option<usize>) -> usize {
        if self.masters.len() == 1 && self.zookeeper.is_none() {
            return 0;
        }
        let addrs: Vec<String> = self.masters.iter().map(|m| m.addr.clone()).collect();
        let scheme = self.scheme();
        wait_for(Duration::from_secs(60), "a master to lead", || {
            let addrs = addrs.clone();
            async move {
                for (i, a) in addrs.iter().enumerate() {
                    if Some(i) == old {
                        continue;
                    }
                    // A leader serves /state itself; a standby redirects.
                    if let Some((200, _)) = crate::http::get(&format!("{scheme}://{a}/state")).await
                    {
                        return Some(i);
                    }
                }
                None
            }
        })
        .await
    }

    /// Kills the leading master with SIGKILL and waits for another to lead;
    /// returns (old, new) and how long the new leader took to appear.
    pub async fn kill_leader(&mut self) -> (usize, usize, Duration) {
        let old = self.leader().await;
        self.masters[old].proc.kill9();
        let killed = tokio::time::Instant::now();
        let new = self.leader_other_than(Some(old)).await;
        (old, new, killed.elapsed())
    }

    /// Waits until the leader sees the (only) framework disconnected.
    pub async fn wait_framework_inactive(&self) {
        wait_for(
            Duration::from_secs(30),
            "the master to see the framework gone",
            || async {
                let s = self.state().await;
                (s["frameworks"][0]["active"] == false).then_some(())
            },
        )
        .await;
        // With ZooKeeper, also until the registry holds when it went (the
        // master records it right after): a failover before that would
        // take the framework for connected at the failover.
        let Some(zk) = &self.zookeeper else { return };
        let s = self.state().await;
        let Some(id) = s["frameworks"][0]["id"].as_str() else {
            return;
        };
        let path = format!("/cairn-registry/frameworks/{id}");
        wait_for(
            Duration::from_secs(30),
            "the registry to record the framework's disconnection",
            || {
                let path = path.clone();
                async move {
                    let data = zk.get(&path).await?;
                    let f =
                        <cairn_proto::RegistryFramework as prost::Message>::decode(data.as_slice())
                            .ok()?;
                    f.disconnected_since.map(|_| ())
                }
            },
        )
        .await;
    }

    /// `https` for a TLS cluster, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.identity.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The leading master's `ip:port`.
    pub async fn leader_addr(&self) -> String {
        let i = self.leader().await;
        self.masters[i].addr.clone()
    }

    pub async fn state(&self) -> Value {
        get_json(&format!(
            "{}://{}/state",
            self.scheme(),
            self.leader_addr().await
        ))
        .await
        .expect("the master answers /state")
    }

    /// Waits until `n` agents are registered and connected.
    pub async fn wait_for_agents(&self, n: usize) {
        let addrs: Vec<String> = self.masters.iter().map(|m| m.addr.clone()).collect();
        let scheme = self.scheme();
        wait_for(
            Duration::from_secs(30),
            &format!("{n} agents to register"),
            || {
                let addrs = addrs.clone();
                async move {
                    for a in &addrs {
                        if let Some(s) = get_json(&format!("{scheme}://{a}/state")).await {
                            return (s["activated_slaves"].as_u64()? as usize >= n).then_some(());
                        }
                    }
                    None
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

    /// Live processes of this cluster's tasks named `comm` whose command
    /// line contains `needle`.
    pub fn task_pids(&self, comm: &str, needle: &str) -> Vec<i32> {
        let mine = crate::process::processes_marked(&self.marker());
        let root = self.cgroups_root();
        // Ours: in this cluster's cgroups, or (without cgroups) carrying its
        // sandbox path in the environment.
        let ours = |p: &i32| {
            mine.contains(p)
                || std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                    .is_ok_and(|c| c.contains(&root))
        };
        crate::process::processes_running(needle)
            .into_iter()
            .filter(ours)
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect()
    }

    /// The `sleep` processes (not their shells) of the workload's long task
    /// `i` (its command is `sleep 9{i}9`).
    pub fn long_task_pids(&self, i: usize) -> Vec<i32> {
        self.task_pids("sleep", &format!("sleep 9{i}9 "))
    }

    /// The one process of each of the first `n` long tasks. A task reports
    /// RUNNING once its shell is started, a moment before the shell execs
    /// `sleep`, so this waits for each to show up.
    pub async fn long_pids(&self, n: usize) -> Vec<i32> {
        wait_for(
            Duration::from_secs(10),
            &format!("one process for each of {n} long tasks"),
            || async {
                let found: Vec<Vec<i32>> = (0..n).map(|i| self.long_task_pids(i)).collect();
                found
                    .iter()
                    .all(|f| f.len() == 1)
                    .then(|| found.iter().map(|f| f[0]).collect())
            },
        )
        .await
    }

    /// Copies every log to `$CAIRN_KEEP_LOGS` when it is set: for digging
    /// into a failed test or a benchmark run.
    pub fn keep_logs(&self) {
        let Some(keep) = std::env::var_os("CAIRN_KEEP_LOGS") else {
            return;
        };
        let _ = std::fs::create_dir_all(&keep);
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(e.path(), std::path::Path::new(&keep).join(e.file_name()));
            }
        }
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
        self.keep_logs();
        for a in &mut self.agents {
            a.proc.kill9();
        }
        sweep(&self.marker());
        for m in &mut self.masters {
            m.proc.kill9();
        }
        if let Some(z) = &mut self.zookeeper {
            z.proc.kill9();
        }
        crate::process::remove_cgroup_tree(&self.cgroups_root());
        crate::process::unmount_below(self.dir.path());
    }
}
