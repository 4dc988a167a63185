//! `cairn`: the command-line interface.

mod get;
mod http;
mod local;
mod run;

use clap::{Parser, Subcommand};

/// Cairn: a two-level resource-offer cluster scheduler.
#[derive(Parser, Debug)]
#[command(name = "cairn", version)]
struct Cli {
    /// The master: `host:port`, or `zk://host:port[,host:port]/path` to
    /// find the leading master.
    #[arg(
        long,
        global = true,
        env = "CAIRN_MASTER",
        default_value = "127.0.0.1:5050"
    )]
    master: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A master and agents in this process: a cluster on one machine.
    Local(local::LocalArgs),
    /// Run one command as a task; print its output; exit with its status.
    Run(run::RunArgs),
    /// List agents, frameworks or tasks.
    Get {
        kind: get::Kind,
        /// Output format.
        #[arg(short = 'o', long, default_value = "table")]
        output: get::Format,
    },
}

/// The leading master's `ip:port` for `master` (an address, or a
/// `zk://` URL to look the leader up in).
pub async fn leader(master: &str) -> anyhow::Result<String> {
    let addr: cairn_model::zk::MasterAddr = master
        .parse()
        .map_err(|e| anyhow::anyhow!("--master: {e}"))?;
    match addr {
        cairn_model::zk::MasterAddr::Direct(a) => Ok(a),
        zk => Ok(
            cairn_model::zk::resolve(zk, std::time::Duration::from_secs(15))
                .await
                .map_err(|e| anyhow::anyhow!(e))?
                .endpoint,
        ),
    }
}

fn main() {
    // `cairn executor` is how agents of `cairn local` start command executors.
    if std::env::args().nth(1).as_deref() == Some("executor") {
        cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
        if let Err(e) = cairn_agent::command_executor::main() {
            eprintln!("executor: {e}");
            std::process::exit(1);
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some(cairn_agent::driver::CONTAINER_EXEC) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let Err(e) = cairn_agent::isolation::container::exec_main(&args);
        eprintln!("container-exec: {e}");
        std::process::exit(127);
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Local(_)) {
        cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    } else if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: set before any thread is started.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
        cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    } else {
        cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Local(args) => local::run(args).await.map(|()| 0),
            Command::Run(args) => run::run(&cli.master, args).await,
            Command::Get { kind, output } => get::run(&cli.master, kind, output).await.map(|()| 0),
        }
    });
    match code {
        Ok(code) => {
            drop(rt);
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("cairn: {e:#}");
            std::process::exit(1);
        }
    }
}
