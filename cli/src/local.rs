//! `cairn local`: a master and N agents in this process, no ZooKeeper.

use std::path::PathBuf;
use std::time::Duration;

use cairn_agent::AgentArgs;
use cairn_master::MasterArgs;
use cairn_model::{RangeSet, ResourceName, Resources, Scalar};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// How many agents.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Resources of each agent, Mesos syntax (default: the host's, shared
    /// out between the agents).
    #[arg(long)]
    pub agent_resources: Option<String>,
    /// Where the agents keep sandboxes (default: a temporary directory,
    /// removed on exit).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// cgroup path under which agent i keeps its containers as
    /// `<prefix>/agent-<i>` (default: derived from each agent's work dir).
    #[arg(long)]
    pub cgroups_root: Option<String>,
    /// Run a demo workload once the cluster is up.
    #[arg(long)]
    pub demo: bool,
    /// Tasks in the demo workload.
    #[arg(long, default_value_t = 20)]
    pub demo_tasks: usize,
    #[command(flatten)]
    pub master: MasterArgs,
}

/// The host's resources divided between `n` agents on it: scalars split
/// evenly, the port range cut into disjoint slices (the agents share the
/// host's ports).
pub fn share_host(host: &Resources, n: usize) -> Vec<Resources> {
    let n = n.max(1) as u64;
    let ports = host
        .range(&ResourceName::Ports)
        .and_then(|r| r.ranges().first().copied())
        .unwrap_or((31000, 32000));
    let span = (ports.1 - ports.0 + 1) / n;
    (0..n)
        .map(|i| {
            let mut r = Resources::new();
            for (name, amount) in host.scalars() {
                r.add_scalar(name.clone(), Scalar::from_milli(amount.milli() / n));
            }
            let begin = ports.0 + i * span;
            let end = begin + span.saturating_sub(1);
            if span > 0
                && let Ok(set) = RangeSet::from_ranges([(begin, end)])
            {
                r = r.with_ranges(ResourceName::Ports, set);
            }
            r
        })
        .collect()
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let listener = cairn_master::listen(args.master.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e} (is another master running? try --listen 127.0.0.1:0)",
            args.master.listen
        )
    })?;
    let master_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let temp = match &args.work_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("cairn-local-").tempdir()?),
    };
    let base = args
        .work_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("/tmp/cairn-local"));

    // The cluster's identity, made here unless asked not to (or given).
    let mut master_args = args.master.clone();
    // By default the local cluster is made as a real one is: a cluster CA
    // and join tokens (in `cluster` under the work directory), TLS
    // everywhere, agents joined with the agent token. `--insecure` (the
    // master's flag) keeps it plain.
    let identity = if args.master.insecure {
        None
    } else {
        let dir = cairn_tls::ClusterDir::new(
            master_args
                .cluster_dir
                .clone()
                .unwrap_or_else(|| base.join("cluster")),
        );
        if !dir.exists() {
            cairn_master::join::Cluster::init(
                dir.clone(),
                "local",
                cairn_master::join::DEFAULT_TOKEN_TTL,
            )?;
        }
        let tokens = cairn_tls::Tokens::load(&dir.tokens_path())?;
        let ca_pem = std::fs::read_to_string(dir.path.join("ca.crt"))?;
        master_args.cluster_dir = Some(dir.path.clone());
        Some((dir, tokens.agent.token, ca_pem))
    };
    let master = tokio::spawn(cairn_master::serve(
        master_args,
        listener,
        stopped(stop_rx.clone()),
    ));
    let shares = match &args.agent_resources {
        Some(r) => vec![Resources::parse(r)?; args.agents],
        None => share_host(&cairn_agent::resources::detect(&base), args.agents),
    };
    let executor = (std::env::current_exe()?, vec!["executor".to_string()]);
    let mut agents = Vec::new();
    for (i, share) in shares.into_iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut agent_args = AgentArgs::defaults(
            cairn_model::zk::MasterAddr::Direct(master_addr.to_string()),
            listener.local_addr()?,
            base.join(format!("agent-{i}")),
            Some(share.to_string()),
        );
        agent_args.join = identity.as_ref().map(|(_, token, _)| token.clone());
        // Under the work directory, which goes with the local cluster (a
        // default under /run would outlive it).
        agent_args.runtime_dir = Some(base.join(format!("agent-{i}")).join("meta").join("runtime"));
        agent_args.insecure = args.master.insecure;
        agent_args.cgroups_root = args
            .cgroups_root
            .as_ref()
            .map(|prefix| format!("{}/agent-{i}", prefix.trim_end_matches('/')));
        agents.push(tokio::spawn(cairn_agent::serve(
            agent_args,
            listener,
            executor.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    println!(
        "Cairn local cluster: master at {master_addr}, {} agents",
        args.agents
    );
    match &identity {
        Some((dir, _, _)) => {
            let ca = dir.path.join("ca.crt");
            println!("  TLS with the cluster CA {}; for the CLI:", ca.display());
            println!("          export CAIRN_CA={}", ca.display());
            println!(
                "  state:  curl --cacert {} https://{master_addr}/state",
                ca.display()
            );
            println!(
                "  join:   CAIRN_JOIN_TOKEN=\"$(jq -r .agent.token {})\" cairn-agent --master {master_addr}",
                dir.tokens_path().display()
            );
        }
        None => println!("  state:  curl http://{master_addr}/state"),
    }
    println!("  run:    cairn run --master {master_addr} -- echo hello");
    println!("Ctrl-C stops the cluster and every task it started.");

    let signal = cairn_model::runtime::shutdown_signal();
    tokio::pin!(signal);
    if args.demo {
        let workload = cairn_demo::Workload {
            name: "demo".into(),
            count: args.demo_tasks,
            command: "echo task {index} says hello from $(hostname); sleep 0.5".into(),
            cpus: 0.1,
            mem: 32.0,
        };
        println!("Demo: running {} tasks...", workload.count);
        let master = master_addr.to_string();
        tokio::select! {
            r = cairn_demo::run_with(&master, identity.as_ref().map(|(_, _, ca)| ca.as_str()), workload.clone(), false) => match r {
                Ok(outcome) => println!(
                    "Demo: {} tasks in {:.2}s: {}",
                    workload.count,
                    outcome.elapsed.as_secs_f64(),
                    outcome.states.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
                ),
                Err(e) => println!("Demo failed: {e}"),
            },
            () = &mut signal => {}
        }
        println!("The cluster keeps running; Ctrl-C stops it.");
    }
    signal.await;
    println!("Stopping: ending every task...");
    let _ = stop_tx.send(true);
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(20), a).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), master).await;
    drop(temp);
    println!("Stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resources_are_shared_without_overlapping_ports() {
        let host = Resources::parse("cpus:2;mem:3000;ports:[31000-32000]").unwrap();
        let shares = share_host(&host, 2);
        assert_eq!(shares[0].cpus(), Scalar::from_units(1));
        assert_eq!(shares[1].mem(), Scalar::from_units(1500));
        let p0 = shares[0].range(&ResourceName::Ports).unwrap();
        let p1 = shares[1].range(&ResourceName::Ports).unwrap();
        assert!(p0.difference(p1) == *p0, "disjoint port ranges");
    }
}
