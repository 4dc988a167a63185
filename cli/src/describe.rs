//! `cairn describe agent|framework|task ID`: one object in detail, as
//! `kubectl describe` shows it.

use std::fmt::Write as _;

use serde_json::Value;

use crate::get::{all_tasks, labels_of, s, table};
use crate::http::HttpClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "agents")]
    Agent,
    #[value(alias = "frameworks")]
    Framework,
    #[value(alias = "tasks")]
    Task,
    /// An app of the services framework.
    #[value(alias = "apps")]
    App,
}

pub async fn run(master: &str, kind: Kind, id: &str) -> anyhow::Result<()> {
    let leader = crate::leader(master).await?;
    let http = HttpClient::new();
    let state = http.get_json(&http.master_url(&leader, "/state")).await?;
    print!("{}", describe(&state, kind, id)?);
    Ok(())
}

fn when(secs: &Value) -> String {
    let Some(t) = secs.as_f64().filter(|t| *t > 0.0) else {
        return String::new();
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t);
    let ago = std::time::SystemTime::now()
        .duration_since(at)
        .map(|d| {
            format!(
                " ({} ago)",
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
            )
        })
        .unwrap_or_default();
    format!("{}{ago}", humantime::format_rfc3339_seconds(at))
}

fn resources_rows(rows: &[(&str, &Value)]) -> String {
    let keys = ["cpus", "mem", "disk", "gpus", "ports"];
    let headers: Vec<&str> = std::iter::once("").chain(keys).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, r)| {
            std::iter::once((*name).to_string())
                .chain(keys.iter().map(|k| s(&r[*k])))
                .collect()
        })
        .collect();
    table(&headers, &body)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The description of one object of `state`.
pub fn describe(state: &Value, kind: Kind, id: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    match kind {
        Kind::Agent => {
            let a = state["slaves"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["id"] == id)
                .ok_or_else(|| anyhow::anyhow!("no agent {id}"))?;
            writeln!(out, "Agent:       {}", s(&a["id"]))?;
            writeln!(out, "Hostname:    {}", s(&a["hostname"]))?;
            writeln!(
                out,
                "Address:     {}",
                s(&a["pid"]).rsplit('@').next().unwrap_or_default()
            )?;
            writeln!(out, "Active:      {}", s(&a["active"]))?;
            writeln!(out, "Registered:  {}", when(&a["registered_time"]))?;
            let attrs: Vec<String> = labels_of(&a["attributes"])
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(out, "Attributes:  {}", attrs.join(", "))?;
            writeln!(out, "Resources:")?;
            out.push_str(&indent(&resources_rows(&[
                ("total", &a["resources"]),
                ("used", &a["used_resources"]),
                ("offered", &a["offered_resources"]),
            ])));
            writeln!(out, "Tasks:")?;
            let rows: Vec<Vec<String>> = all_tasks(state)
                .into_iter()
                .filter(|(_, t)| t["slave_id"] == id && !is_completed(t))
                .map(|(fw, t)| {
                    vec![
                        s(&t["id"]),
                        fw,
                        s(&t["state"]),
                        s(&t["resources"]["cpus"]),
                        s(&t["resources"]["mem"]),
                    ]
                })
                .collect();
            out.push_str(&indent(&table(
                &["id", "framework", "state", "cpus", "mem"],
                &rows,
            )));
        }
        Kind::Framework => {
            let f = state["frameworks"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(
                    state["completed_frameworks"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                )
                .find(|f| f["id"] == id)
                .ok_or_else(|| anyhow::anyhow!("no framework {id}"))?;
            writeln!(out, "Framework:   {}", s(&f["id"]))?;
            writeln!(out, "Name:        {}", s(&f["name"]))?;
            writeln!(out, "User:        {}", s(&f["user"]))?;
            writeln!(out, "Principal:   {}", s(&f["principal"]))?;
            let roles: Vec<String> = f["roles"].as_array().into_iter().flatten().map(s).collect();
            writeln!(out, "Roles:       {}", roles.join(", "))?;
            writeln!(out, "Connected:   {}", s(&f["connected"]))?;
            writeln!(out, "Registered:  {}", when(&f["registered_time"]))?;
            writeln!(out, "Failover:    {}s", s(&f["failover_timeout"]))?;
            writeln!(out, "Resources:")?;
            out.push_str(&indent(&resources_rows(&[
                ("used", &f["used_resources"]),
                ("offered", &f["offered_resources"]),
            ])));
            for (title, key) in [
                ("Tasks", "tasks"),
                ("Unreachable tasks", "unreachable_tasks"),
                ("Completed tasks", "completed_tasks"),
            ] {
                let rows: Vec<Vec<String>> = f[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            s(&t["id"]),
                            s(&t["state"]),
                            s(&t["slave_id"]),
                            s(&t["message"]),
                        ]
                    })
                    .collect();
                writeln!(out, "{title}: {}", rows.len())?;
                if !rows.is_empty() {
                    out.push_str(&indent(&table(&["id", "state", "agent", "message"], &rows)));
                }
            }
            let offers: Vec<Vec<String>> = f["offers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    vec![
                        s(&o["id"]),
                        s(&o["hostname"]),
                        s(&o["resources"]["cpus"]),
                        s(&o["resources"]["mem"]),
                    ]
                })
                .collect();
            writeln!(out, "Offers: {}", offers.len())?;
            if !offers.is_empty() {
                out.push_str(&indent(&table(&["id", "hostname", "cpus", "mem"], &offers)));
            }
        }
        Kind::App => anyhow::bail!("apps are described by the services framework"),
        Kind::Task => {
            let (fw, t) = all_tasks(state)
                .into_iter()
                .find(|(_, t)| t["id"] == id)
                .ok_or_else(|| anyhow::anyhow!("no task {id}"))?;
            writeln!(out, "Task:        {}", s(&t["id"]))?;
            writeln!(out, "Name:        {}", s(&t["name"]))?;
            writeln!(out, "Framework:   {} ({fw})", s(&t["framework_id"]))?;
            writeln!(out, "Agent:       {}", s(&t["slave_id"]))?;
            writeln!(out, "State:       {}", s(&t["state"]))?;
            if !t["exit_code"].is_null() {
                writeln!(out, "Exit code:   {}", s(&t["exit_code"]))?;
            }
            writeln!(out, "Message:     {}", s(&t["message"]))?;
            writeln!(out, "Role:        {}", s(&t["role"]))?;
            let labels: Vec<String> = labels_of(&t["labels"])
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(out, "Labels:      {}", labels.join(", "))?;
            writeln!(out, "Sandbox:     {}", sandbox(&t))?;
            writeln!(out, "Resources:")?;
            out.push_str(&indent(&resources_rows(&[("", &t["resources"])])));
            writeln!(out, "Events:")?;
            let rows: Vec<Vec<String>> = t["statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|st| vec![when(&st["timestamp"]), s(&st["state"])])
                .collect();
            out.push_str(&indent(&table(&["time", "state"], &rows)));
        }
    }
    Ok(out)
}

fn is_completed(t: &Value) -> bool {
    matches!(
        t["state"].as_str(),
        Some(
            "TASK_FINISHED"
                | "TASK_FAILED"
                | "TASK_KILLED"
                | "TASK_LOST"
                | "TASK_ERROR"
                | "TASK_DROPPED"
                | "TASK_GONE"
                | "TASK_GONE_BY_OPERATOR"
        )
    )
}

/// A task's sandbox path on its agent (Mesos layout; a command task's
/// executor is named after the task).
pub fn sandbox(t: &Value) -> String {
    let executor = match t["executor_id"].as_str() {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => s(&t["id"]),
    };
    format!(
        "/frameworks/{}/executors/{executor}/runs/latest",
        s(&t["framework_id"])
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_described_with_its_history_and_sandbox() {
        let state = serde_json::json!({"frameworks": [{"name": "f", "id": "F", "tasks": [
            {"id": "t1", "framework_id": "F", "slave_id": "A", "state": "TASK_RUNNING",
             "executor_id": "", "statuses": [{"state": "TASK_STAGING", "timestamp": 1.0e9},
             {"state": "TASK_RUNNING", "timestamp": 1.0e9}], "resources": {"cpus": 0.5}},
        ]}]});
        let text = describe(&state, Kind::Task, "t1").unwrap();
        assert!(
            text.contains("/frameworks/F/executors/t1/runs/latest"),
            "{text}"
        );
        assert!(
            text.contains("TASK_STAGING") && text.contains("TASK_RUNNING"),
            "{text}"
        );
        assert!(describe(&state, Kind::Task, "nope").is_err());
    }
}
