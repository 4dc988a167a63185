//! `cairn get agents|frameworks|tasks|offers|roles`: the master's state as
//! tables, JSON or YAML, filtered by label selectors, optionally watched.

use serde_json::Value;

use crate::http::HttpClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "agent")]
    Agents,
    #[value(alias = "framework")]
    Frameworks,
    #[value(alias = "task")]
    Tasks,
    #[value(alias = "offer")]
    Offers,
    #[value(alias = "role")]
    Roles,
    /// Apps of the services framework.
    #[value(alias = "app")]
    Apps,
    /// Instances of the services framework's apps.
    #[value(alias = "instance")]
    Instances,
    /// Services (stable names) of the services framework.
    #[value(alias = "service", alias = "svc")]
    Services,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    kind: Kind,
    /// Output format.
    #[arg(short = 'o', long, default_value = "table")]
    output: Format,
    /// Label selector: `key=value`, `key!=value` or `key`, comma-separated
    /// (all must hold). Tasks match their labels, agents their attributes,
    /// frameworks their labels.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Print again whenever what is shown changes, until interrupted.
    #[arg(short = 'w', long)]
    watch: bool,
    /// How often `--watch` looks.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    interval: std::time::Duration,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
}

/// Parses `a=b,c!=d,e`.
pub fn parse_selector(s: &str) -> anyhow::Result<Vec<Requirement>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().to_string(), v.trim().to_string())
        } else {
            Requirement::Exists(part.to_string())
        };
        let key = match &req {
            Requirement::Equals(k, _) | Requirement::NotEquals(k, _) | Requirement::Exists(k) => k,
        };
        if key.is_empty() {
            anyhow::bail!("invalid label selector {part:?}: no key");
        }
        out.push(req);
    }
    Ok(out)
}

/// Whether `labels` satisfy every requirement.
pub fn matches(selector: &[Requirement], labels: &[(String, String)]) -> bool {
    let get = |k: &str| {
        labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.as_str())
    };
    selector.iter().all(|r| match r {
        Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
        Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
        Requirement::Exists(k) => get(k).is_some(),
    })
}

/// Key/value pairs of a Mesos `labels` list (`[{key, value}]`, or
/// `{labels: [...]}`) or of agent attributes (`{key: value}`).
pub fn labels_of(v: &Value) -> Vec<(String, String)> {
    let list = v.get("labels").unwrap_or(v);
    match list {
        Value::Array(items) => items
            .iter()
            .filter_map(|l| Some((l["key"].as_str()?.to_string(), s(&l["value"]))))
            .collect(),
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
        _ => Vec::new(),
    }
}

pub fn s(v: &Value) -> String {
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

/// Rows as aligned columns under upper-case headers.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut text = String::new();
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
        out.trim_end().to_string()
    };
    text.push_str(&line(headers.iter().map(|h| h.to_uppercase()).collect()));
    text.push('\n');
    for row in rows {
        text.push_str(&line(row.clone()));
        text.push('\n');
    }
    text
}

/// `v` as pretty JSON or YAML.
pub fn structured(v: &Value, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Yaml => serde_yaml_ng::to_string(v)?,
        _ => format!("{}\n", serde_json::to_string_pretty(v)?),
    })
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

pub async fn run(master: &str, services: &str, args: GetArgs) -> anyhow::Result<()> {
    let selector = match &args.selector {
        Some(s) => parse_selector(s)?,
        None => Vec::new(),
    };
    let http = HttpClient::new();
    let mut last = String::new();
    loop {
        let state = match args.kind {
            Kind::Apps | Kind::Instances | Kind::Services => {
                crate::services::list(&http, services, args.kind).await
            }
            _ => {
                let leader = crate::leader(master).await?;
                http.get_json(&http.master_url(&leader, "/state")).await
            }
        };
        let text = match state {
            Ok(state) => render(&state, args.kind, args.output, &selector)?,
            Err(e) if args.watch => format!("cannot read the state: {e}\n"),
            Err(e) => return Err(e.into()),
        };
        if !args.watch {
            print!("{text}");
            return Ok(());
        }
        if text != last {
            if !last.is_empty() {
                println!();
            }
            println!(
                "# {}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            );
            print!("{text}");
            last = text;
        }
        tokio::time::sleep(args.interval).await;
    }
}

fn has_structured(format: Format) -> bool {
    matches!(format, Format::Json | Format::Yaml)
}

/// What `cairn get` prints for `state`.
pub fn render(
    state: &Value,
    kind: Kind,
    format: Format,
    selector: &[Requirement],
) -> anyhow::Result<String> {
    let wide = format == Format::Wide;
    let keep = |labels: &Value| matches(selector, &labels_of(labels));
    match kind {
        Kind::Apps | Kind::Instances | Kind::Services => {
            crate::services::render(state, kind, format, selector)
        }
        Kind::Agents => {
            let agents: Vec<Value> = state["slaves"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| keep(&a["attributes"]))
                .cloned()
                .collect();
            if has_structured(format) {
                return structured(&Value::Array(agents), format);
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
            Ok(table(&headers, &rows))
        }
        Kind::Frameworks => {
            let mut all: Vec<Value> = state["frameworks"].as_array().cloned().unwrap_or_default();
            if wide || has_structured(format) {
                all.extend(
                    state["completed_frameworks"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            all.retain(|f| keep(&f["labels"]));
            if has_structured(format) {
                return structured(&Value::Array(all), format);
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
            Ok(table(&headers, &rows))
        }
        Kind::Tasks => {
            let mut tasks = all_tasks(state);
            tasks.retain(|(_, t)| keep(&t["labels"]));
            if has_structured(format) {
                let list: Vec<Value> = tasks.into_iter().map(|(_, t)| t).collect();
                return structured(&Value::Array(list), format);
            }
            let mut headers = vec!["id", "framework", "state", "agent", "cpus", "mem"];
            if wide {
                headers.extend(["framework id", "role", "labels", "message"]);
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
                        let labels: Vec<String> = labels_of(&t["labels"])
                            .into_iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        row.push(labels.join(","));
                        row.push(s(&t["message"]));
                    }
                    row
                })
                .collect();
            Ok(table(&headers, &rows))
        }
        Kind::Offers => {
            if !selector.is_empty() {
                anyhow::bail!("label selectors apply to agents, frameworks and tasks");
            }
            let mut offers = Vec::new();
            for f in state["frameworks"].as_array().into_iter().flatten() {
                for o in f["offers"].as_array().into_iter().flatten() {
                    offers.push((s(&f["name"]), o.clone()));
                }
            }
            if has_structured(format) {
                let list: Vec<Value> = offers.into_iter().map(|(_, o)| o).collect();
                return structured(&Value::Array(list), format);
            }
            let mut headers = vec!["id", "framework", "agent", "hostname", "cpus", "mem"];
            if wide {
                headers.extend(["disk", "ports", "role"]);
            }
            let rows: Vec<Vec<String>> = offers
                .iter()
                .map(|(fw, o)| {
                    let mut row = vec![
                        s(&o["id"]),
                        fw.clone(),
                        s(&o["slave_id"]),
                        s(&o["hostname"]),
                        s(&o["resources"]["cpus"]),
                        s(&o["resources"]["mem"]),
                    ];
                    if wide {
                        row.push(s(&o["resources"]["disk"]));
                        row.push(s(&o["resources"]["ports"]));
                        row.push(s(&o["allocation_info"]["role"]));
                    }
                    row
                })
                .collect();
            Ok(table(&headers, &rows))
        }
        Kind::Roles => {
            if !selector.is_empty() {
                anyhow::bail!("label selectors apply to agents, frameworks and tasks");
            }
            let roles = roles_of(state);
            if has_structured(format) {
                return structured(&Value::Array(roles), format);
            }
            let headers = [
                "role",
                "frameworks",
                "cpus",
                "mem",
                "offered cpus",
                "offered mem",
            ];
            let rows: Vec<Vec<String>> = roles
                .iter()
                .map(|r| {
                    vec![
                        s(&r["name"]),
                        s(&r["frameworks"]),
                        s(&r["used"]["cpus"]),
                        s(&r["used"]["mem"]),
                        s(&r["offered"]["cpus"]),
                        s(&r["offered"]["mem"]),
                    ]
                })
                .collect();
            Ok(table(&headers, &rows))
        }
    }
}

/// Per role: its frameworks, and what they use and are offered.
fn roles_of(state: &Value) -> Vec<Value> {
    let mut roles: std::collections::BTreeMap<String, (u64, [f64; 4])> = Default::default();
    for f in state["frameworks"].as_array().into_iter().flatten() {
        let names: Vec<String> = match f["roles"].as_array() {
            Some(r) if !r.is_empty() => r.iter().map(s).collect(),
            _ => vec![s(&f["role"])],
        };
        for name in &names {
            roles.entry(name.clone()).or_default().0 += 1;
        }
        for t in f["tasks"].as_array().into_iter().flatten() {
            let e = roles.entry(s(&t["role"])).or_default();
            e.1[0] += num(&t["resources"]["cpus"]);
            e.1[1] += num(&t["resources"]["mem"]);
        }
        for o in f["offers"].as_array().into_iter().flatten() {
            let e = roles.entry(s(&o["allocation_info"]["role"])).or_default();
            e.1[2] += num(&o["resources"]["cpus"]);
            e.1[3] += num(&o["resources"]["mem"]);
        }
    }
    roles
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, (n, r))| {
            serde_json::json!({
                "name": name,
                "frameworks": n,
                "used": {"cpus": r[0], "mem": r[1]},
                "offered": {"cpus": r[2], "mem": r[3]},
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let sel = parse_selector("app=web, tier!=db,canary").unwrap();
        let labels = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(matches(&sel, &labels(&[("app", "web"), ("canary", "1")])));
        assert!(!matches(&sel, &labels(&[("app", "web")])));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("canary", ""), ("tier", "db")])
        ));
        assert!(parse_selector("=x").is_err());
    }

    #[test]
    fn tasks_are_filtered_by_their_labels() {
        let state = serde_json::json!({"frameworks": [{"name": "f", "tasks": [
            {"id": "a", "state": "TASK_RUNNING", "labels": [{"key": "app", "value": "web"}]},
            {"id": "b", "state": "TASK_RUNNING"},
        ]}]});
        let sel = parse_selector("app=web").unwrap();
        let out = render(&state, Kind::Tasks, Format::Json, &sel).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["id"], "a");
        let yaml = render(&state, Kind::Tasks, Format::Yaml, &[]).unwrap();
        assert!(yaml.contains("id: a") && yaml.contains("id: b"), "{yaml}");
    }
}
