//! The services framework's commands: `apply -f`, `get apps|instances|services`,
//! `describe app`, `scale app`, `delete app`. They talk to the framework's
//! API (`--services`, else `CAIRN_SERVICES`, else `services` in the config
//! file, else 127.0.0.1:8090).

use std::fmt::Write as _;

use serde_json::Value;

use crate::get::{Format, Kind, Requirement, labels_of, matches, s, structured, table};
use crate::http::{HttpClient, HttpError};

/// The framework's list for `kind`.
pub async fn list(http: &HttpClient, services: &str, kind: Kind) -> Result<Value, HttpError> {
    let path = match kind {
        Kind::Apps => "apps",
        Kind::Instances => "instances",
        _ => "services",
    };
    http.get_json(&format!("http://{services}/v1/{path}")).await
}

pub fn render(
    state: &Value,
    kind: Kind,
    format: Format,
    selector: &[Requirement],
) -> anyhow::Result<String> {
    let items: Vec<Value> = state
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| matches(selector, &labels_of(&v["labels"])))
        .cloned()
        .collect();
    if matches!(format, Format::Json | Format::Yaml) {
        return structured(&Value::Array(items), format);
    }
    let wide = format == Format::Wide;
    Ok(match kind {
        Kind::Apps => {
            let mut headers = vec![
                "name",
                "instances",
                "running",
                "healthy",
                "pending",
                "delayed",
                "version",
            ];
            if wide {
                headers.extend(["updated", "service", "labels"]);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|a| {
                    let mut row = vec![
                        s(&a["name"]),
                        s(&a["instances"]),
                        s(&a["running"]),
                        s(&a["healthy"]),
                        s(&a["pending"]),
                        s(&a["delayed"]),
                        s(&a["version"]),
                    ];
                    if wide {
                        row.push(s(&a["updated"]));
                        row.push(s(&a["service"]));
                        row.push(label_text(&a["labels"]));
                    }
                    row
                })
                .collect();
            table(&headers, &rows)
        }
        Kind::Instances => {
            let mut headers = vec!["id", "app", "phase", "state", "healthy", "host", "ports"];
            if wide {
                headers.extend(["agent", "version", "reason"]);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    let ports: Vec<String> =
                        i["ports"].as_array().into_iter().flatten().map(s).collect();
                    let mut row = vec![
                        s(&i["id"]),
                        s(&i["app"]),
                        s(&i["phase"]),
                        s(&i["state"]),
                        s(&i["healthy"]),
                        s(&i["hostname"]),
                        ports.join(","),
                    ];
                    if wide {
                        row.push(s(&i["agent_id"]));
                        row.push(s(&i["version"]));
                        row.push(s(&i["reason"]));
                    }
                    row
                })
                .collect();
            table(&headers, &rows)
        }
        _ => {
            let headers = ["name", "app", "dns", "balancer", "endpoints"];
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| {
                    let eps: Vec<String> = v["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    vec![
                        s(&v["name"]),
                        s(&v["app"]),
                        s(&v["dns"]),
                        s(&v["balancer"]),
                        eps.join(","),
                    ]
                })
                .collect();
            table(&headers, &rows)
        }
    })
}

fn label_text(v: &Value) -> String {
    labels_of(v)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn apply(services: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let body = if file.as_os_str() == "-" {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)?;
        text
    } else {
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
    };
    let v = HttpClient::new()
        .send("POST", &format!("http://{services}/v1/apply"), body)
        .await?;
    for a in v["apps"].as_array().into_iter().flatten() {
        println!("app/{} {}", s(&a["name"]), s(&a["result"]));
    }
    Ok(())
}

pub async fn describe_app(services: &str, name: &str) -> anyhow::Result<String> {
    let a = HttpClient::new()
        .get_json(&format!(
            "http://{services}/v1/apps/{}",
            crate::http::encode(name)
        ))
        .await?;
    let mut out = String::new();
    writeln!(out, "App:         {}", s(&a["name"]))?;
    writeln!(out, "Version:     {}", s(&a["version"]))?;
    writeln!(
        out,
        "Instances:   {} wanted, {} running, {} healthy, {} pending, {} delayed, {} on this version",
        s(&a["instances"]),
        s(&a["running"]),
        s(&a["healthy"]),
        s(&a["pending"]),
        s(&a["delayed"]),
        s(&a["updated"])
    )?;
    writeln!(out, "Labels:      {}", label_text(&a["labels"]))?;
    writeln!(out, "Service:     {}", s(&a["service"]))?;
    let spec = &a["spec"];
    writeln!(
        out,
        "Resources:   cpus {}, mem {}, disk {}, {} ports",
        s(&spec["cpus"]),
        s(&spec["mem"]),
        s(&spec["disk"]),
        s(&spec["ports"])
    )?;
    let constraints: Vec<String> = spec["constraints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            c.as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    writeln!(out, "Constraints: {}", constraints.join("; "))?;
    writeln!(out, "Failures:    {} in a row", s(&a["failures"]))?;
    writeln!(out, "Instances:")?;
    let rows: Vec<Vec<String>> = a["instance_list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                s(&i["id"]),
                s(&i["phase"]),
                s(&i["state"]),
                s(&i["healthy"]),
                s(&i["hostname"]),
                s(&i["reason"]),
            ]
        })
        .collect();
    for line in table(&["id", "phase", "state", "healthy", "host", "why"], &rows).lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(out)
}

pub async fn scale(services: &str, name: &str, instances: u32) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({"instances": instances}))?;
    HttpClient::new()
        .send(
            "POST",
            &format!(
                "http://{services}/v1/apps/{}/scale",
                crate::http::encode(name)
            ),
            body,
        )
        .await?;
    println!("app/{name} scaled to {instances}");
    Ok(())
}

pub async fn delete(services: &str, name: &str) -> anyhow::Result<()> {
    HttpClient::new()
        .send(
            "DELETE",
            &format!("http://{services}/v1/apps/{}", crate::http::encode(name)),
            Vec::new(),
        )
        .await?;
    println!("app/{name} deleted");
    Ok(())
}
