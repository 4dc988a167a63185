use clap::Parser;

/// The Cairn master.
#[derive(Parser, Debug)]
#[command(name = "cairn-master", version)]
struct Cli {
    #[command(flatten)]
    master: cairn_master::MasterArgs,
    /// Log format: human or json.
    #[arg(long, default_value = "human")]
    log_format: cairn_model::runtime::LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
