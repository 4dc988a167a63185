//! `cairn-batch run JOB.toml`: runs a batch job on a Cairn cluster and exits
//! 0 only if it succeeded. `cairn-batch executor` is the coarse-grained
//! executor agents start.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-batch",
    version,
    about = "Run batch jobs (stages of tasks forming a DAG) on Cairn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a job file to its end.
    Run {
        /// The job file (TOML).
        job: String,
        /// The master: host:port or zk://host:port,.../path.
        #[arg(long, env = "CAIRN_MASTER", default_value = "127.0.0.1:5050")]
        master: String,
        /// Keeps the framework id and progress here, so that running the
        /// same command again after a crash resumes the job.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// How agents start the coarse-grained executor (default: this
        /// binary's path, `executor`).
        #[arg(long)]
        executor_command: Option<String>,
        /// How long a coarse-grained executor waits for work before it
        /// exits.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        executor_idle: Duration,
        /// How long the master keeps the job's tasks while the framework is
        /// away.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        failover_timeout: Duration,
        /// Writes the report as JSON here too.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// The coarse-grained executor (started by agents, not by hand).
    Executor {
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        idle: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Executor { idle } => {
            rt.block_on(cairn_batch::executor::run(idle))?;
            Ok(())
        }
        Command::Run {
            job,
            master,
            state_dir,
            executor_command,
            executor_idle,
            failover_timeout,
            report_json,
            quiet,
        } => {
            let job = cairn_batch::Job::from_file(&job)?;
            let mut options = cairn_batch::RunOptions::new(master);
            options.state_dir = state_dir;
            options.executor_command = executor_command;
            options.executor_idle = executor_idle;
            options.failover_timeout = failover_timeout;
            options.progress = !quiet;
            let report = rt.block_on(cairn_batch::run(job, options))?;
            print!("{}", report.render());
            if let Some(path) = report_json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
            }
            if !report.succeeded {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
