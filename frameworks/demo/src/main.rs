use clap::Parser;

/// Runs N copies of a command on a Cairn cluster.
#[derive(Parser, Debug)]
#[command(name = "cairn-demo", version)]
struct Cli {
    /// The master, as host:port.
    #[arg(long, env = "CAIRN_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// How many tasks.
    #[arg(long, default_value_t = 20)]
    tasks: usize,
    /// The command; `{index}` is replaced by the task's number.
    #[arg(long, default_value = "echo task {index} on $(hostname); sleep 0.2")]
    command: String,
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Framework name (and task id prefix).
    #[arg(long, default_value = "demo")]
    name: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cairn_model::runtime::init_logging(cairn_model::runtime::LogFormat::Human);
    let workload = cairn_demo::Workload {
        name: cli.name,
        count: cli.tasks,
        command: cli.command,
        cpus: cli.cpus,
        mem: cli.mem,
    };
    let outcome = cairn_demo::run(&cli.master, workload, false).await?;
    println!(
        "{} tasks in {:.2}s: {}",
        cli.tasks,
        outcome.elapsed.as_secs_f64(),
        outcome
            .states
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if outcome.all_finished(cli.tasks) {
        Ok(())
    } else {
        std::process::exit(1);
    }
}
