//! `cairn get agents|frameworks|tasks`: the master's state as tables or JSON.

use serde_json::Value;

use crate::http::HttpClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Agents,
    Frameworks,
    Tasks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f:.2}")
            }
        }
        other => other.to_string(),
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Prints rows as aligned columns under upper-case headers.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn ratio(used: &Value, total: &Value, key: &str) -> String {
    format!("{}/{}", s(&used[key]), s(&total[key]))
}

/// Every task of every framework (live, unreachable and completed) with its
/// framework's name.
pub fn all_tasks(state: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for key in ["frameworks", "completed_frameworks"] {
        for f in state[key].as_array().into_iter().flatten() {
            let name = s(&f["name"]);
            for list in ["tasks", "unreachable_tasks", "completed_tasks"] {
                for t in f[list].as_array().into_iter().flatten() {
                    out.push((name.clone(), t.clone()));
                }
            }
        }
    }
    out
}

pub async fn run(master: &str, kind: Kind, format: Format) -> anyhow::Result<()> {
    let master = crate::leader(master).await?;
    let state = HttpClient::new()
        .get_json(&format!("http://{master}/state"))
        .await?;
    let wide = format == Format::Wide;
    match kind {
        Kind::Agents => {
            let agents = state["slaves"].as_array().cloned().unwrap_or_default();
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
                return Ok(());
            }
            let mut headers = vec![
                "id", "hostname", "address", "cpus", "mem", "tasks", "active",
            ];
            if wide {
                headers.extend(["offered cpus", "offered mem", "disk", "attributes"]);
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|a| {
                    let address = s(&a["pid"])
                        .rsplit('@')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let mut row = vec![
                        s(&a["id"]),
                        s(&a["hostname"]),
                        address,
                        ratio(&a["used_resources"], &a["resources"], "cpus"),
                        ratio(&a["used_resources"], &a["resources"], "mem"),
                        s(&a["task_count"]),
                        s(&a["active"]),
                    ];
                    if wide {
                        row.push(s(&a["offered_resources"]["cpus"]));
                        row.push(s(&a["offered_resources"]["mem"]));
                        row.push(ratio(&a["used_resources"], &a["resources"], "disk"));
                        row.push(a["attributes"].to_string());
                    }
                    row
                })
                .collect();
            print_table(&headers, &rows);
        }
        Kind::Frameworks => {
            let mut all: Vec<Value> = state["frameworks"].as_array().cloned().unwrap_or_default();
            if wide || format == Format::Json {
                all.extend(
                    state["completed_frameworks"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            let mut headers = vec![
                "id",
                "name",
                "user",
                "roles",
                "tasks",
                "cpus",
                "mem",
                "connected",
            ];
            if wide {
                headers.extend(["completed", "offers", "failover timeout", "capabilities"]);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|f| {
                    let roles: Vec<String> =
                        f["roles"].as_array().into_iter().flatten().map(s).collect();
                    let mut row = vec![
                        s(&f["id"]),
                        s(&f["name"]),
                        s(&f["user"]),
                        roles.join(","),
                        f["tasks"].as_array().map_or(0, Vec::len).to_string(),
                        s(&f["used_resources"]["cpus"]),
                        s(&f["used_resources"]["mem"]),
                        s(&f["connected"]),
                    ];
                    if wide {
                        row.push(
                            f["completed_tasks"]
                                .as_array()
                                .map_or(0, Vec::len)
                                .to_string(),
                        );
                        row.push(f["offers"].as_array().map_or(0, Vec::len).to_string());
                        row.push(format!("{}s", num(&f["failover_timeout"])));
                        let caps: Vec<String> = f["capabilities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(s)
                            .collect();
                        row.push(caps.join(","));
                    }
                    row
                })
                .collect();
            print_table(&headers, &rows);
        }
        Kind::Tasks => {
            let tasks = all_tasks(&state);
            if format == Format::Json {
                let list: Vec<&Value> = tasks.iter().map(|(_, t)| t).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let mut headers = vec!["id", "framework", "state", "agent", "cpus", "mem"];
            if wide {
                headers.extend(["framework id", "role", "message"]);
            }
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|(fw, t)| {
                    let mut row = vec![
                        s(&t["id"]),
                        fw.clone(),
                        s(&t["state"]),
                        s(&t["slave_id"]),
                        s(&t["resources"]["cpus"]),
                        s(&t["resources"]["mem"]),
                    ];
                    if wide {
                        row.push(s(&t["framework_id"]));
                        row.push(s(&t["role"]));
                        row.push(s(&t["message"]));
                    }
                    row
                })
                .collect();
            print_table(&headers, &rows);
        }
    }
    Ok(())
}
