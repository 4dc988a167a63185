//! `cairn-services serve`: the services framework; `cairn-services
//! executor`: what agents start for each instance.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-services",
    version,
    about = "Long-running services on Cairn: replica sets, pods, health checks, rolling updates, DNS and load balancing"
)]
enum Cli {
    /// Serves the API, DNS and load balancers, and keeps the apps running.
    Serve(cairn_services::ServeOptions),
    /// Runs one instance (started by agents).
    Executor,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    match cli {
        Cli::Serve(options) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cairn_services::serve(
                options,
                cairn_model::runtime::shutdown_signal(),
            ))?;
        }
        Cli::Executor => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(cairn_services::executor::run())?;
        }
    }
    Ok(())
}
