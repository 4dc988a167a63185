use clap::Parser;

/// The Cairn agent.
#[derive(Parser, Debug)]
#[command(name = "cairn-agent", version)]
struct Cli {
    #[command(flatten)]
    agent: cairn_agent::AgentArgs,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: cairn_model::runtime::LogFormat,
}

fn main() -> anyhow::Result<()> {
    // `cairn-agent executor`, `container-exec` and `fork-server`: how the
    // agent starts its command executors, containers and fork server.
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = cairn_agent::run_helper(&args) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    cairn_model::runtime::init_logging(cli.log_format);
    // Few blocking threads: they run container destruction and file
    // reads, and each thread is mappings that every fork of the agent (one
    // per executor it starts) has to copy.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.agent.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.agent.listen))?;
        cairn_agent::serve(
            cli.agent,
            listener,
            cairn_agent::default_executor(),
            cairn_model::runtime::shutdown_signal(),
        )
        .await?;
        anyhow::Ok(())
    })
}
