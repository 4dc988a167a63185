use clap::Parser;

/// The Cairn master.
#[derive(Parser, Debug)]
#[command(name = "cairn-master", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    master: cairn_master::MasterArgs,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: cairn_model::runtime::LogFormat,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Create a cluster: its CA and join tokens, in a new cluster directory.
    /// Start masters with `--cluster-dir` naming it.
    Init {
        #[arg(long, env = "CAIRN_CLUSTER_DIR")]
        cluster_dir: std::path::PathBuf,
        /// The cluster's name, in its CA's certificate.
        #[arg(long, default_value = "cairn")]
        name: String,
        /// How long the join tokens stay valid (`cairn token rotate` makes
        /// new ones).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        token_ttl: std::time::Duration,
    },
    /// The cluster's join tokens, on a master's host.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Replace the agent or master token in the cluster directory (joins
    /// with the old one are refused from now on); prints the new one.
    Rotate {
        /// agent or master.
        kind: cairn_tls::TokenKind,
        #[arg(long, env = "CAIRN_CLUSTER_DIR")]
        cluster_dir: std::path::PathBuf,
        /// How long the new token stays valid.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        ttl: std::time::Duration,
        /// The masters' ZooKeeper (`--zk` of the masters): the tokens every
        /// master reads live there.
        #[arg(long)]
        zk: Option<cairn_model::zk::ZkUrl>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Token(TokenCommand::Rotate {
        kind,
        cluster_dir,
        ttl,
        zk,
    })) = &cli.command
    {
        let cluster = cairn_master::join::Cluster::load(cairn_tls::ClusterDir::new(cluster_dir))?;
        if let Some(url) = zk {
            cluster.share_through(cairn_master::join::ZkTokens::connect(url).await?);
        }
        println!("{}", cluster.rotate(*kind, *ttl).await?);
        return Ok(());
    }
    if let Some(Command::Init {
        cluster_dir,
        name,
        token_ttl,
    }) = cli.command
    {
        let dir = cairn_tls::ClusterDir::new(&cluster_dir);
        let (cluster, tokens) = cairn_master::join::Cluster::init(dir, &name, token_ttl)?;
        println!("cluster directory: {}", cluster_dir.display());
        println!("CA fingerprint (SHA-256): {}", cluster.ca.fingerprint());
        println!("agent join token:  {}", tokens.agent.token);
        println!("master join token: {}", tokens.master.token);
        println!(
            "tokens expire in {}; start masters with --cluster-dir {}",
            humantime::format_duration(token_ttl),
            cluster_dir.display()
        );
        return Ok(());
    }
    cairn_model::runtime::init_logging(cli.log_format);
    let listener = cairn_master::listen(cli.master.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.master.listen))?;
    cairn_master::serve(
        cli.master,
        listener,
        cairn_model::runtime::shutdown_signal(),
    )
    .await?;
    Ok(())
}
