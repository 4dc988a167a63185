//! `cairn-ci serve`: the build queue and its framework.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-ci",
    version,
    about = "A CI build queue running builds on Cairn"
)]
enum Cli {
    /// Serves the build queue's HTTP API and runs builds.
    Serve {
        /// The master: host:port or zk://host:port,.../path.
        #[arg(long, env = "CAIRN_MASTER", default_value = "127.0.0.1:5050")]
        master: String,
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Keeps the framework id, the queue and the builds here.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// How long the master keeps running builds while the framework
        /// is away.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        failover_timeout: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let Cli::Serve {
        master,
        listen,
        state_dir,
        failover_timeout,
    } = Cli::parse();
    cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(cairn_ci::serve(
        cairn_ci::ServeOptions {
            master,
            listen,
            state_dir,
            failover_timeout,
        },
        cairn_model::runtime::shutdown_signal(),
    ))?;
    Ok(())
}
