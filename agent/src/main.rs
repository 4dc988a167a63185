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
    // `cairn-agent executor` is how the agent starts its command executors.
    if std::env::args().nth(1).as_deref() == Some("executor") {
        cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
        cairn_agent::command_executor::main()?;
        return Ok(());
    }
    // ... and a framework's own executors.
    if std::env::args().nth(1).as_deref() == Some(cairn_agent::driver::CONTAINER_EXEC) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let Err(e) = cairn_agent::isolation::container::exec_main(&args);
        // As a shell reports a command it cannot run.
        eprintln!("container-exec: {e}");
        std::process::exit(127);
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
