//! `cairn`: the command-line interface.

mod describe;
mod get;
mod http;
mod local;
mod logs;
mod run;
mod services;
mod top;

use clap::{Parser, Subcommand};

/// Cairn: a two-level resource-offer cluster scheduler.
#[derive(Parser, Debug)]
#[command(name = "cairn", version)]
struct Cli {
    /// The master: `host:port`, or `zk://host:port[,host:port]/path` to
    /// find the leading master. Else `CAIRN_MASTER`, else `master` in the
    /// config file (`$CAIRN_CONFIG`, or `~/.config/cairn/config.toml`),
    /// else 127.0.0.1:5050.
    #[arg(long, global = true, env = "CAIRN_MASTER")]
    master: Option<String>,
    /// The services framework's API (`host:port`): for apply, scale,
    /// delete, and apps, instances and services. Else `CAIRN_SERVICES`,
    /// else `services` in the config file, else 127.0.0.1:8090.
    #[arg(long, global = true, env = "CAIRN_SERVICES")]
    services: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A master and agents in this process: a cluster on one machine.
    Local(local::LocalArgs),
    /// Run one command as a task; print its output; exit with its status.
    Run(run::RunArgs),
    /// List agents, frameworks, tasks, offers or roles.
    Get(get::GetArgs),
    /// Show one agent, framework, task or app in detail.
    Describe { kind: describe::Kind, id: String },
    /// Create or update the apps in a spec file (`-` for stdin); applying
    /// the same file again changes nothing.
    Apply {
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
    /// Change how many instances an app runs.
    Scale {
        kind: AppKind,
        name: String,
        #[arg(long)]
        instances: u32,
    },
    /// Delete an app (its instances are killed).
    Delete { kind: AppKind, name: String },
    /// Print a task's output (stdout, or stderr), following it with -f.
    Logs(logs::LogsArgs),
    /// Live resource use per agent and per framework.
    Top(top::TopArgs),
    /// The cluster's join tokens (masters started with `--cluster-dir`).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Replace the agent or master join token: joins with the old one are
    /// refused from now on; nodes that joined keep working. Prints the new
    /// token.
    Rotate {
        /// agent or master.
        kind: String,
        /// How long the new token stays valid (default 24h), e.g. `7d`.
        #[arg(long)]
        ttl: Option<String>,
    },
}

async fn rotate_token(master: &str, kind: &str, ttl: Option<&str>) -> anyhow::Result<()> {
    let leader = leader(master).await?;
    let http = http::HttpClient::new();
    let mut path = format!("/tokens/rotate?kind={}", http::encode(kind));
    if let Some(t) = ttl {
        path.push_str(&format!("&ttl={}", http::encode(t)));
    }
    let v = http
        .send("POST", &http.master_url(&leader, &path), Vec::new())
        .await?;
    println!("{}", v["token"].as_str().unwrap_or_default());
    Ok(())
}

/// The config file: `$CAIRN_CONFIG`, else `$XDG_CONFIG_HOME/cairn/config.toml`,
/// else `~/.config/cairn/config.toml`.
fn config_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_CONFIG") {
        return Some(p.into());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config")))?;
    Some(base.join("cairn").join("config.toml"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AppKind {
    App,
}

#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    master: Option<String>,
    services: Option<String>,
    /// The operator's credential (`CAIRN_PRINCIPAL`/`CAIRN_SECRET` win).
    principal: Option<String>,
    secret: Option<String>,
    /// The cluster CA's certificate (`CAIRN_CA`): HTTPS to masters.
    ca: Option<std::path::PathBuf>,
}

fn read_config() -> anyhow::Result<Config> {
    let Some(path) = config_path() else {
        return Ok(Config::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
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
    // `cairn executor`, `container-exec` and `fork-server`: how agents of
    // `cairn local` start their command executors, containers and fork
    // server.
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = cairn_agent::run_helper(&args) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let config = match read_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e:#}");
            std::process::exit(1);
        }
    };
    if std::env::var_os("CAIRN_PRINCIPAL").is_none()
        && let (Some(p), Some(s)) = (&config.principal, &config.secret)
    {
        // SAFETY: set before any thread is started.
        unsafe {
            std::env::set_var("CAIRN_PRINCIPAL", p);
            std::env::set_var("CAIRN_SECRET", s);
        }
    }
    if std::env::var_os("CAIRN_CA").is_none()
        && let Some(ca) = &config.ca
    {
        // SAFETY: set before any thread is started.
        unsafe { std::env::set_var("CAIRN_CA", ca) };
    }
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
        let master = cli
            .master
            .or(config.master)
            .unwrap_or_else(|| "127.0.0.1:5050".into());
        let services = cli
            .services
            .or(config.services)
            .unwrap_or_else(|| "127.0.0.1:8090".into());
        match cli.command {
            Command::Local(args) => local::run(args).await.map(|()| 0),
            Command::Run(args) => run::run(&master, args).await,
            Command::Get(args) => get::run(&master, &services, args).await.map(|()| 0),
            Command::Describe {
                kind: describe::Kind::App,
                id,
            } => {
                print!("{}", services::describe_app(&services, &id).await?);
                Ok(0)
            }
            Command::Describe { kind, id } => describe::run(&master, kind, &id).await.map(|()| 0),
            Command::Apply { file } => services::apply(&services, &file).await.map(|()| 0),
            Command::Scale {
                kind: AppKind::App,
                name,
                instances,
            } => services::scale(&services, &name, instances)
                .await
                .map(|()| 0),
            Command::Delete {
                kind: AppKind::App,
                name,
            } => services::delete(&services, &name).await.map(|()| 0),
            Command::Logs(args) => logs::run(&master, args).await,
            Command::Top(args) => top::run(&master, args).await.map(|()| 0),
            Command::Token(TokenCommand::Rotate { kind, ttl }) => {
                rotate_token(&master, &kind, ttl.as_deref())
                    .await
                    .map(|()| 0)
            }
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
