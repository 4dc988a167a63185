//! The Cairn agent server: the driver around the agent's core
//! (`cairn-agent-core`), the session with the master, the executor link and
//! the HTTP endpoints (all on one port), and the launcher that starts
//! executor processes.

pub mod auth;
pub mod checkpoint;
pub mod command_executor;
mod direct;
pub mod driver;
pub mod executor_api;
pub mod forkserver;
pub mod http;
pub mod isolation;
pub mod launcher;
mod master_link;
pub mod mesos_executor;
pub mod metrics;
pub mod resources;
pub mod spawn;
pub mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_agent_core::{Agent, AgentConfig, RetryPolicy};
use cairn_model::zk::MasterAddr;
use cairn_model::{AgentInfo, ContainerId, Resources, Time, parse_attributes};
use cairn_proto as pb;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::driver::ExecutorLaunch;

/// The agent's flags (shared by `cairn-agent` and `cairn local`).
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// The master: `host:port`, or `zk://host:port[,host:port]/path` to
    /// follow whichever master leads.
    #[arg(long, env = "CAIRN_MASTER", default_value = "127.0.0.1:5050")]
    pub master: MasterAddr,
    /// Address for the agent's API (executors, sandbox files).
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Where sandboxes live.
    #[arg(long, default_value = "/tmp/cairn-agent")]
    pub work_dir: PathBuf,
    /// Where the agent keeps state that must outlive the agent but not the
    /// host (direct tasks' exit records): best on a tmpfs, as `/run` is,
    /// where files come and go cheaply. Default: `/run/cairn/agents/<work
    /// dir's name>-<hash of its path>` when the agent runs as root, else
    /// `<work-dir>/meta/runtime`. Keep it the same across the agent's
    /// restarts.
    #[arg(long)]
    pub runtime_dir: Option<PathBuf>,
    /// Resources to offer, Mesos syntax: "cpus:4;mem:8192;disk:20000;ports:[31000-32000]".
    /// Default: detected from the host.
    #[arg(long)]
    pub resources: Option<String>,
    /// Attributes, e.g. "rack:r1;zone:a".
    #[arg(long)]
    pub attributes: Option<String>,
    /// Hostname to advertise (default: the listen address's host).
    #[arg(long)]
    pub hostname: Option<String>,
    /// How the agent contains tasks: "cgroups,namespaces" (needs root),
    /// "cgroups", "posix" (process sessions only), or "auto": the first
    /// when it works here, else posix with a warning.
    #[arg(long, default_value = "auto")]
    pub isolation: String,
    /// Cap each container's CPU at its cpus with a CFS quota (otherwise cpus
    /// are only relative shares).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroups_enable_cfs: bool,
    /// Keep the kernel's favordynmods cgroup mode on while the agent runs:
    /// moving a new container's process into its cgroups then costs 0.3 ms
    /// instead of up to 15 ms after a quiet moment, at a small cost to every
    /// fork and exit on the host.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroups_favor_dynmods: bool,
    /// Start containers by forking a fork server (this binary, started once)
    /// instead of executing this binary for each container; about a
    /// millisecond of CPU less per container. Used with cgroups isolation
    /// and the built-in command executor; falls back to executing when the
    /// server cannot start.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fork_server: bool,
    /// Most processes (and threads) one container may have.
    #[arg(long, default_value_t = 1024)]
    pub max_task_pids: i64,
    /// cgroup path for this agent's containers (default: cairn/agent-<hash
    /// of the work directory>).
    #[arg(long)]
    pub cgroups_root: Option<String>,
    /// Let tasks run as root.
    #[arg(long)]
    pub allow_root_tasks: bool,
    /// User for tasks whose framework names none (default: nobody when the
    /// agent runs as root, else the agent's own user).
    #[arg(long)]
    pub default_user: Option<String>,
    /// An executor that has not subscribed this long after launch fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub executor_registration_timeout: Duration,
    /// After a restart, an executor that has not reconnected this long is
    /// destroyed and its tasks are lost.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub executor_reregistration_timeout: Duration,
    /// Record executors, tasks and unacknowledged updates in the work
    /// directory before acting, so that a restarted agent (even after
    /// `kill -9`) takes its running tasks back. Without it, a restart
    /// destroys every container of the earlier run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub checkpoint: bool,
    /// Time executors get to end their tasks when shut down.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub executor_shutdown_grace_period: Duration,
    /// SIGTERM-to-SIGKILL grace for kills that name none.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub kill_grace_period: Duration,
    /// How often the agent reports its containers' usage to the master.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub usage_report_interval: Duration,
    /// First re-send interval of an unacknowledged status update (doubles up
    /// to 10 min).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub status_update_retry_interval: Duration,
    /// Most disk a command task's stdout (and, apart, its stderr) may take in
    /// its sandbox: the file is rotated to `stdout.1` at half this size, so
    /// the two never hold more. `0`: unlimited. Accepts `10MB`, `1GiB`, bytes.
    #[arg(long, value_parser = parse_size, default_value = "100MB")]
    pub task_log_max_size: u64,
    /// How command tasks run: "executor" (each under a command executor
    /// process of its own, as in Mesos) or "direct" (the agent starts the
    /// task's process in its container itself and reports its states; a
    /// small shim per container keeps its exit status across agent
    /// restarts). Direct saves an executor process per task; its output
    /// goes to the sandbox unbounded, so it needs --task-log-max-size 0.
    #[arg(long, value_enum, default_value_t = CommandTasks::Executor)]
    pub command_tasks: CommandTasks,
    /// This agent's principal and secret for the master, a JSON file:
    /// `{"principal": "...", "secret": "..."}`.
    #[arg(long)]
    pub credential: Option<PathBuf>,
    /// Credentials (Mesos JSON) callers of this agent's state, metrics and
    /// sandbox endpoints must present (HTTP Basic).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// ACLs (Mesos JSON): `view_state` and `read_sandboxes` apply here.
    #[arg(long)]
    pub acls: Option<PathBuf>,
    /// Join the cluster with this agent join token (`cairn-master init`
    /// prints it) unless already joined: the agent then speaks TLS to the
    /// master, presenting the certificate it received.
    /// (`CAIRN_JOIN_TOKEN` or `--join-file` keep it off the command line,
    /// which every local user can read.)
    #[arg(long, env = "CAIRN_JOIN_TOKEN", hide_env_values = true)]
    pub join: Option<String>,
    /// A file holding the agent join token (instead of `--join`).
    #[arg(long, conflicts_with = "join")]
    pub join_file: Option<PathBuf>,
    /// Speak plain gRPC to a master started with `--insecure`. Without a
    /// join token or an identity from an earlier join the agent refuses
    /// to start unless this is given.
    #[arg(long)]
    pub insecure: bool,
    /// Where the agent keeps its certificate, key and the cluster CA
    /// (default: `identity` in the work directory). An agent that has one
    /// speaks TLS to the master with it.
    #[arg(long)]
    pub identity_dir: Option<PathBuf>,
}

/// The agent's cluster identity: the one kept in `dir`, or a new one from
/// joining with `token` through the leading master. A refusal that will
/// not change by retrying (a bad or rotated token, a master without a
/// cluster CA, a CA other than the token's) stops the agent with the
/// reason; an unreachable master is waited for.
async fn identity(
    dir: &std::path::Path,
    token: Option<&str>,
    master: &MasterAddr,
    hostname: &str,
) -> Result<Option<cairn_tls::NodeIdentity>, AgentError> {
    if let Some(id) = cairn_tls::NodeIdentity::load(dir)? {
        return match id.role {
            cairn_tls::Role::Agent { .. } if !id.can_serve() => Err(AgentError::Join(format!(
                "the certificate in {} cannot serve TLS (issued before agents served their \
                 own API over TLS): drain this agent and start it with a new work directory \
                 and a join token",
                dir.display()
            ))),
            cairn_tls::Role::Agent { .. } => Ok(Some(id)),
            cairn_tls::Role::Master => Err(AgentError::Join(format!(
                "{} holds a master's certificate, not an agent's",
                dir.display()
            ))),
        };
    }
    let Some(token) = token else {
        return Ok(None);
    };
    let parsed: cairn_tls::Token = token.parse()?;
    if parsed.kind != cairn_tls::TokenKind::Agent {
        return Err(AgentError::Join(format!(
            "an agent joins with an agent token, not a {} token",
            parsed.kind
        )));
    }
    let mut leaders = cairn_model::zk::follow(master.clone());
    let mut backoff = Duration::from_millis(200);
    loop {
        let leader = leaders.borrow_and_update().clone();
        if let Some(leader) = leader {
            match cairn_tls::join(&leader.endpoint, token, hostname).await {
                Ok(joined) => {
                    joined.identity.save(dir)?;
                    tracing::info!(agent_id = %joined.reply.agent_id, master = %leader.endpoint, "joined the cluster");
                    return Ok(Some(joined.identity));
                }
                Err(e @ cairn_tls::TlsError::MalformedToken(_)) => return Err(e.into()),
                Err(cairn_tls::TlsError::JoinRefused {
                    code:
                        tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition,
                    reason,
                    ..
                }) => {
                    return Err(AgentError::Join(reason));
                }
                Err(cairn_tls::TlsError::Connect { reason, .. })
                    if reason.contains("join token names") =>
                {
                    return Err(AgentError::Join(reason));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot join yet; retrying in {backoff:?}");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = leaders.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::Security {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| AgentError::Security {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A size: a number of bytes, or with a unit (`KB`/`MB`/`GB` as powers of
/// 1000, `KiB`/`MiB`/`GiB` as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] cairn_tls::TlsError),
    #[error("the master refused to let this agent join: {0}")]
    Join(String),
    #[error("invalid --resources: {0}")]
    Resources(#[source] cairn_model::ModelError),
    #[error("invalid --attributes: {0}")]
    Attributes(#[source] cairn_model::ModelError),
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Isolation(#[from] isolation::IsolationError),
    #[error("cannot read the listening address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("the agent's server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{path}: {reason}")]
    Security { path: PathBuf, reason: String },
    #[error("invalid flags: {0}")]
    Flags(String),
}

/// How the agent runs command tasks (see `AgentArgs::command_tasks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CommandTasks {
    Executor,
    Direct,
}

/// Runs one of the agent binary's helper subcommands when `args` (the whole
/// command line, `args[0]` the program) names one: `executor` (the command
/// executor), `container-exec` (a container's first process) or
/// `fork-server`. Returns the process's exit status, or `None` for any
/// other command line. Binaries that host an agent (`cairn-agent`, and
/// `cairn` for `cairn local`) call it first thing; the fork server's
/// children call it in place of executing the binary.
pub fn run_helper(args: &[String]) -> Option<i32> {
    match args.get(1).map(String::as_str) {
        Some("executor") => {
            cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
            match command_executor::main() {
                Ok(()) => Some(0),
                Err(e) => {
                    eprintln!("executor: {e}");
                    Some(1)
                }
            }
        }
        Some(driver::CONTAINER_EXEC) => {
            let Err(e) = isolation::container::exec_main(args.get(2..).unwrap_or_default());
            // As a shell reports a command it cannot run.
            eprintln!("container-exec: {e}");
            Some(127)
        }
        Some(forkserver::FORK_SERVER) => Some(forkserver::serve()),
        _ => None,
    }
}

/// The runtime directory an agent with `work_dir` uses unless told (see
/// `AgentArgs::runtime_dir`): one per work directory, so agents sharing a
/// host keep theirs apart, and the same at every restart.
pub fn default_runtime_dir(work_dir: &std::path::Path, root: bool) -> PathBuf {
    if !root {
        return work_dir.join("meta").join("runtime");
    }
    let name: String = work_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let hash = crc32fast::hash(work_dir.as_os_str().as_encoded_bytes());
    PathBuf::from("/run/cairn/agents").join(format!("{name}-{hash:08x}"))
}

/// The program executors are started with: this binary, `executor`.
pub fn default_executor() -> (PathBuf, Vec<String>) {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cairn-agent"));
    (exe, vec!["executor".into()])
}

/// Runs an agent on `listener` until `shutdown` completes; then ends every
/// executor (killing its tasks) before returning.
pub async fn serve(
    args: AgentArgs,
    listener: TcpListener,
    executor: (PathBuf, Vec<String>),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let addr = listener.local_addr().map_err(AgentError::LocalAddr)?;
    let credential: Option<auth::OwnCredential> = match &args.credential {
        Some(p) => Some(read_json(p)?),
        None => None,
    };
    let gate = Arc::new(auth::Gate {
        credentials: match &args.credentials {
            Some(p) => Some(read_json(p)?),
            None => None,
        },
        acls: match &args.acls {
            Some(p) => Some(read_json(p)?),
            None => None,
        },
    });
    if args.command_tasks == CommandTasks::Direct && args.task_log_max_size != 0 {
        return Err(AgentError::Flags(
            "--command-tasks direct writes task output to the sandbox unbounded: it needs --task-log-max-size 0 (bounded output needs --command-tasks executor)".into(),
        ));
    }
    std::fs::create_dir_all(&args.work_dir).map_err(|source| AgentError::WorkDir {
        path: args.work_dir.clone(),
        source,
    })?;
    let work_dir = args
        .work_dir
        .canonicalize()
        .unwrap_or(args.work_dir.clone());
    let resources = match &args.resources {
        Some(r) => Resources::parse(r).map_err(AgentError::Resources)?,
        None => resources::detect(&work_dir),
    };
    let attributes = match &args.attributes {
        Some(a) => parse_attributes(a).map_err(AgentError::Attributes)?,
        None => Vec::new(),
    };
    let (launcher, warning) = isolation::select(
        &args.isolation,
        &work_dir,
        &isolation::LinuxOptions {
            enable_cfs: args.cgroups_enable_cfs,
            max_pids: args.max_task_pids,
            cgroups_root: args.cgroups_root.clone(),
            favor_dynmods: args.cgroups_favor_dynmods,
            // Only for this binary's own subcommands (a test's executor
            // program is something else).
            fork_server: (args.fork_server && executor.1 == ["executor"])
                .then(|| executor.0.clone()),
        },
    )?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if args.command_tasks == CommandTasks::Direct && launcher.name() == "posix" {
        return Err(AgentError::Flags(
            "--command-tasks direct needs cgroups (--isolation cgroups or cgroups,namespaces): a direct task leaves its shim's session, and only its cgroup finds its processes to end them".into(),
        ));
    }
    let running_as_root = nix::unistd::geteuid().is_root();
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| addr.ip().to_string());
    let info = AgentInfo {
        hostname: hostname.clone(),
        address: addr.to_string(),
        resources: resources.clone(),
        attributes,
        tls: false,
    };
    let config = AgentConfig {
        retry: RetryPolicy {
            initial: args.status_update_retry_interval,
            max: Duration::from_secs(600),
        },
        executor_registration_timeout: args.executor_registration_timeout,
        executor_reregistration_timeout: args.executor_reregistration_timeout,
        executor_shutdown_grace: args.executor_shutdown_grace_period,
        default_kill_grace: args.kill_grace_period,
        allow_root_tasks: args.allow_root_tasks,
        default_user: args.default_user.clone().unwrap_or_else(|| {
            if running_as_root {
                "nobody".into()
            } else {
                String::new()
            }
        }),
        ..AgentConfig::default()
    };
    let mut core = Agent::new(config, rand::random());
    // What an earlier run of this agent left: executors, tasks and
    // unacknowledged updates come back; containers it did not record go.
    let mut recovered_id = None;
    let (checkpoint, recovery) = if args.checkpoint {
        let (log, found) = checkpoint::CheckpointLog::open(&work_dir)?;
        let containers = core.recover(Time::now(), found.records);
        if let Some(id) = core.agent_id() {
            tracing::info!(agent_id = %id, executors = containers.len(), "recovered from the checkpoint");
            recovered_id = Some(id.to_string());
        }
        (
            Some(log),
            driver::Recovery {
                containers,
                pids: found.pids,
            },
        )
    } else {
        (None, driver::Recovery::default())
    };
    let keep: Vec<ContainerId> = recovery
        .containers
        .iter()
        .map(|c| c.container_id.clone())
        .collect();
    for id in launcher.cleanup_orphans(&keep) {
        tracing::info!(container_id = %id, "removed a container the checkpoint does not know");
    }
    let identity_dir = args
        .identity_dir
        .clone()
        .unwrap_or_else(|| work_dir.join("identity"));
    let token = match &args.join_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| AgentError::Join(format!("{}: {e}", path.display())))?
                .trim()
                .to_string(),
        ),
        None => args.join.clone(),
    };
    let identity = match identity(&identity_dir, token.as_deref(), &args.master, &hostname).await? {
        Some(id) => {
            // The master admits an agent only under its certificate's id.
            if let (cairn_tls::Role::Agent { id: certified }, Some(recovered)) =
                (&id.role, &recovered_id)
                && certified != recovered
            {
                return Err(AgentError::Join(format!(
                    "the checkpoint in {} is agent {recovered}'s, but the certificate in {} is \
                     agent {certified}'s; use the work directory this agent joined with",
                    work_dir.display(),
                    identity_dir.display()
                )));
            }
            tracing::info!(role = ?id.role, dir = %identity_dir.display(), "speaking TLS to the master and serving TLS");
            Some(id)
        }
        None if args.insecure => None,
        None => {
            return Err(AgentError::Join(
                "no cluster identity: join with CAIRN_JOIN_TOKEN or --join-file (the master's \
                 `cairn-master init` prints the agent token), or pass --insecure for a master \
                 started with --insecure"
                    .into(),
            ));
        }
    };
    // With an identity the agent's own API (executors, sandbox files) is
    // TLS only, under its certificate; executors verify it with the CA.
    let (tls, server_tls) = match &identity {
        Some(id) => (
            Some(cairn_tls::client_config(&id.ca_pem, Some(id))?),
            Some(cairn_tls::server_config(id)?),
        ),
        None => (None, None),
    };
    // With an identity executors authenticate too: each gets a token (kept
    // verifiable across restarts by a key in the identity directory).
    let executor_key = match &identity {
        Some(_) => Some(Arc::new(cairn_tls::ExecutorKey::load_or_create(
            &identity_dir,
        )?)),
        None => None,
    };
    // Direct tasks' shims record exit statuses here when the agent is gone
    // (made whatever the mode: containers from a run in direct mode may be
    // recovered by one that is not).
    let runtime_dir = args
        .runtime_dir
        .clone()
        .unwrap_or_else(|| default_runtime_dir(&work_dir, running_as_root));
    let exit_dir = runtime_dir.join("exits");
    std::fs::create_dir_all(&exit_dir).map_err(|source| AgentError::WorkDir {
        path: exit_dir.clone(),
        source,
    })?;
    let (handle, _driver) = driver::spawn(
        core,
        launcher.clone(),
        ExecutorLaunch {
            program: executor.0,
            args: executor.1,
            work_dir: work_dir.clone(),
            agent_endpoint: addr.to_string(),
            allow_root_tasks: args.allow_root_tasks,
            task_log_max_size: args.task_log_max_size,
            direct_tasks: args.command_tasks == CommandTasks::Direct,
            exit_dir,
            agent_ca: identity.as_ref().map(|id| id.ca_pem.clone()),
            executor_key: executor_key.clone(),
        },
        checkpoint,
        recovery,
    );
    tracing::info!(%addr, master = %args.master, isolation = launcher.name(), %resources, "agent listening");

    let http_state = http::HttpState {
        handle: handle.clone(),
        launcher: launcher.clone(),
        work_dir: Arc::new(work_dir),
        info: Arc::new(json!({
            "hostname": hostname,
            "pid": format!("slave(1)@{addr}"),
            "version": cairn_model::VERSION,
            "resources": resources.to_string(),
            "isolation": launcher.name(),
        })),
        resources: Arc::new(resources.clone()),
        metrics: Arc::new(metrics::Metrics::default()),
        started: std::time::Instant::now(),
    };
    let executors =
        pb::executor_link_server::ExecutorLinkServer::new(executor_api::ExecutorLinkService {
            handle: handle.clone(),
            key: executor_key.clone(),
        });
    let to_tonic = |r: axum::http::Request<axum::body::Body>| r.map(tonic::body::Body::new);
    let door = mesos_executor::ExecutorDoor {
        handle: handle.clone(),
        subscribed: mesos_executor::Subscribed::default(),
        endpoint: addr.to_string(),
        hostname: hostname.clone(),
        key: executor_key,
    };
    let mesos = axum::routing::post(mesos_executor::executor_api).with_state(door);
    // The gate covers the operator endpoints only: executors' endpoints
    // are added after it.
    let app = http::router(http_state)
        .layer(axum::middleware::from_fn_with_state(gate, auth::gate))
        .route("/api/v1/executor", mesos.clone())
        .route("/slave(1)/api/v1/executor", mesos)
        .route_service(
        &format!(
            "/{}/{{*rest}}",
            <pb::executor_link_server::ExecutorLinkServer<executor_api::ExecutorLinkService> as tonic::server::NamedService>::NAME
        ),
        executors.map_request(to_tonic),
    );
    let link = tokio::spawn(master_link::run(
        handle.clone(),
        args.master.clone(),
        tls,
        info,
        master_link::UsageReports {
            launcher: launcher.clone(),
            interval: args.usage_report_interval,
        },
        credential
            .as_ref()
            .map(|c| cairn_model::auth::basic_value(&c.principal, &c.secret)),
    ));
    // No Nagle (the listener sets none; see the master): executors and the
    // files API trade small messages.
    let listener = cairn_tls::Listener::new(listener, server_tls).map_err(AgentError::LocalAddr)?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    shutdown.await;
    tracing::info!("agent stopping: ending every executor");
    link.abort();
    let grace = args.executor_shutdown_grace_period
        + AgentConfig::default().kill_escalation
        + Duration::from_secs(2);
    if tokio::time::timeout(grace, handle.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("executors did not end within {grace:?}");
    }
    // Whatever is left is destroyed here, then the agent's own cgroup root
    // is let go.
    let released = launcher.clone();
    let _ = tokio::task::spawn_blocking(move || {
        released.cleanup_orphans(&[]);
        released.release();
    })
    .await;
    server.abort();
    Ok(())
}

impl AgentArgs {
    /// The flags' defaults, with the four settings every embedded agent
    /// needs (used by `cairn local` and tests).
    pub fn defaults(
        master: MasterAddr,
        listen: SocketAddr,
        work_dir: PathBuf,
        resources: Option<String>,
    ) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: AgentArgs,
        }
        use clap::Parser;
        let mut args = Wrapper::parse_from(["cairn-agent"]).args;
        args.master = master;
        args.listen = listen;
        args.work_dir = work_dir;
        args.resources = resources;
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dirs_are_apart_per_work_dir_and_stable() {
        let a = default_runtime_dir(std::path::Path::new("/var/lib/cairn/agent"), true);
        let b = default_runtime_dir(std::path::Path::new("/srv/cairn/agent"), true);
        assert!(a.starts_with("/run/cairn/agents"), "{a:?}");
        assert!(
            a.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("agent-"))
        );
        assert_ne!(a, b, "same name, different work directories");
        assert_eq!(
            a,
            default_runtime_dir(std::path::Path::new("/var/lib/cairn/agent"), true)
        );
        let odd = default_runtime_dir(std::path::Path::new("/x/a b/../c d\n"), true);
        assert!(
            odd.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("c_d_-")),
            "{odd:?}"
        );
        assert_eq!(
            default_runtime_dir(std::path::Path::new("/home/u/w"), false),
            std::path::Path::new("/home/u/w/meta/runtime")
        );
    }
}
