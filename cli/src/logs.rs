//! `cairn logs TASK [-f] [--stderr]`: a task's output from its sandbox,
//! read through the master (which forwards to the task's agent).

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::describe::sandbox;
use crate::get::{all_tasks, s};
use crate::http::{HttpClient, encode};

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The task's id.
    task: String,
    /// Keep printing output as it is written, until the task ends.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The task's stderr instead of its stdout.
    #[arg(long)]
    stderr: bool,
    /// Start this many bytes before the end (default: from the start).
    #[arg(long)]
    tail_bytes: Option<u64>,
}

const POLL: Duration = Duration::from_millis(250);

fn terminal(state: &str) -> bool {
    !matches!(
        state,
        "TASK_STAGING"
            | "TASK_STARTING"
            | "TASK_RUNNING"
            | "TASK_KILLING"
            | "TASK_UNREACHABLE"
            | ""
    )
}

/// The task's `(agent id, sandbox path, state)` in `state`.
fn locate(state: &Value, task: &str) -> Option<(String, String, String)> {
    all_tasks(state)
        .into_iter()
        .find(|(_, t)| t["id"] == task)
        .map(|(_, t)| (s(&t["slave_id"]), sandbox(&t), s(&t["state"])))
}

pub async fn run(master: &str, args: LogsArgs) -> anyhow::Result<i32> {
    let http = HttpClient::new();
    let leader = crate::leader(master).await?;
    let state = http.get_json(&http.master_url(&leader, "/state")).await?;
    let Some((agent, dir, mut task_state)) = locate(&state, &args.task) else {
        anyhow::bail!("no task {}", args.task);
    };
    let file = format!("{dir}/{}", if args.stderr { "stderr" } else { "stdout" });
    let url = |offset: i64| {
        format!(
            "{}/files/read?agent_id={}&path={}&offset={offset}",
            http.master_url(&leader, ""),
            encode(&agent),
            encode(&file)
        )
    };
    let mut offset: u64 = 0;
    if let Some(tail) = args.tail_bytes {
        let size = http.get_json(&url(-1)).await?["offset"]
            .as_u64()
            .unwrap_or(0);
        offset = size.saturating_sub(tail);
    }
    let mut out = tokio::io::stdout();
    let mut last_state_check = tokio::time::Instant::now();
    loop {
        // Everything written so far.
        loop {
            let v = match http
                .get_json(&url(i64::try_from(offset).unwrap_or(i64::MAX)))
                .await
            {
                Ok(v) => v,
                // Not created yet: the task may still be starting.
                Err(crate::http::HttpError::Status { status: 404, .. }) if args.follow => break,
                Err(e) => return Err(e.into()),
            };
            let at = v["offset"].as_u64().unwrap_or(offset);
            if at < offset {
                // The file was rotated: its successor starts from 0.
                offset = 0;
                continue;
            }
            let data = v["data"].as_str().unwrap_or_default();
            if data.is_empty() {
                break;
            }
            out.write_all(data.as_bytes()).await?;
            offset = at + data.len() as u64;
        }
        out.flush().await?;
        if !args.follow {
            return Ok(0);
        }
        if terminal(&task_state) {
            // Read once more after the end was seen: the task's last words.
            return Ok(0);
        }
        tokio::time::sleep(POLL).await;
        if last_state_check.elapsed() >= Duration::from_secs(1) {
            last_state_check = tokio::time::Instant::now();
            if let Ok(state) = http.get_json(&http.master_url(&leader, "/state")).await {
                task_state = locate(&state, &args.task).map_or_else(|| "TASK_LOST".into(), |t| t.2);
            }
        }
    }
}
