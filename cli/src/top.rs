//! `cairn top`: live resource use per agent and per framework, from the
//! usage agents report to the master (CPU from cgroup time between two
//! reports, memory as resident set).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::Value;

use crate::get::{s, table};
use crate::http::HttpClient;

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Time between refreshes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    interval: Duration,
    /// Print one sample (after one interval) and exit.
    #[arg(long)]
    once: bool,
}

/// One container's CPU time at a time.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: f64,
    cpu_secs: f64,
}

#[derive(Default, Debug)]
struct Use {
    cpus: f64,
    mem_bytes: f64,
    containers: usize,
}

fn timestamp(v: &Value) -> f64 {
    // `Time` serialises as microseconds since the epoch.
    v.as_f64().map_or(0.0, |us| us / 1e6)
}

/// Usage per agent and per framework between `prev` and this `state`.
fn sample(
    state: &Value,
    prev: &mut HashMap<String, CpuSample>,
) -> (BTreeMap<String, Use>, BTreeMap<String, Use>) {
    let names: HashMap<String, String> = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (s(&f["id"]), s(&f["name"])))
        .collect();
    let mut agents: BTreeMap<String, Use> = BTreeMap::new();
    let mut frameworks: BTreeMap<String, Use> = BTreeMap::new();
    let mut seen = HashMap::new();
    for a in state["slaves"].as_array().into_iter().flatten() {
        let host = s(&a["hostname"]);
        let agent_key = format!("{} ({host})", s(&a["id"]));
        agents.entry(agent_key.clone()).or_default();
        for u in a["usage"].as_array().into_iter().flatten() {
            let container = s(&u["container_id"]);
            let now = CpuSample {
                at: timestamp(&u["timestamp"]),
                cpu_secs: u["cpus_user_time_secs"].as_f64().unwrap_or(0.0)
                    + u["cpus_system_time_secs"].as_f64().unwrap_or(0.0),
            };
            let cpus = match prev.get(&container) {
                Some(p) if now.at > p.at => {
                    ((now.cpu_secs - p.cpu_secs) / (now.at - p.at)).max(0.0)
                }
                _ => 0.0,
            };
            seen.insert(container, now);
            let mem = u["mem_rss_bytes"].as_f64().unwrap_or(0.0);
            let fw_id = s(&u["framework_id"]);
            let fw_key = match names.get(&fw_id) {
                Some(n) => format!("{fw_id} ({n})"),
                None => fw_id,
            };
            for entry in [
                agents.entry(agent_key.clone()).or_default(),
                frameworks.entry(fw_key).or_default(),
            ] {
                entry.cpus += cpus;
                entry.mem_bytes += mem;
                entry.containers += 1;
            }
        }
    }
    *prev = seen;
    (agents, frameworks)
}

fn rows(m: &BTreeMap<String, Use>) -> Vec<Vec<String>> {
    m.iter()
        .map(|(k, u)| {
            vec![
                k.clone(),
                format!("{:.2}", u.cpus),
                format!("{:.1}", u.mem_bytes / (1024.0 * 1024.0)),
                u.containers.to_string(),
            ]
        })
        .collect()
}

pub async fn run(master: &str, args: TopArgs) -> anyhow::Result<()> {
    let http = HttpClient::new();
    let mut prev = HashMap::new();
    let mut first = true;
    loop {
        let leader = crate::leader(master).await?;
        let state = http.get_json(&http.master_url(&leader, "/state")).await?;
        let (agents, frameworks) = sample(&state, &mut prev);
        if first {
            first = false;
            eprintln!(
                "cairn top: sampling for {}...",
                humantime::format_duration(args.interval)
            );
        } else {
            let mut text = String::new();
            if !args.once {
                // Clear the screen, as top does.
                text.push_str("\x1b[H\x1b[2J");
            }
            text.push_str(&format!(
                "cairn top  {}  (CPU in cores over the last interval; memory resident)\n\n",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            ));
            text.push_str(&table(
                &["agent", "cpus", "mem MiB", "containers"],
                &rows(&agents),
            ));
            text.push('\n');
            text.push_str(&table(
                &["framework", "cpus", "mem MiB", "containers"],
                &rows(&frameworks),
            ));
            print!("{text}");
            if args.once {
                return Ok(());
            }
        }
        tokio::time::sleep(args.interval).await;
    }
}
