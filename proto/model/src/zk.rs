//! Finding the leading master through ZooKeeper, in the layout Mesos uses:
//! each master holds an ephemeral sequential `json.info_<seq>` node under the
//! cluster's path, with its MasterInfo as JSON; the lowest sequence leads, and
//! that sequence is the leader's epoch.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use zookeeper_client as zk;

/// The prefix of masters' nodes; nothing else lives under the path.
pub const INFO_PREFIX: &str = "json.info_";

/// `zk://host1:2181,host2:2181/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port[,host:port...]`
    pub hosts: String,
    /// Absolute, without a trailing slash, e.g. `/cairn`.
    pub path: String,
}

impl FromStr for ZkUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("zk://")
            .or_else(|| s.strip_prefix("zoo://"))
            .ok_or_else(|| format!("{s:?} is not a zk:// URL"))?;
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no path (zk://host:port/path)"))?;
        if hosts.is_empty() || hosts.contains('@') {
            return Err(format!(
                "{s:?}: hosts must be host:port[,host:port] (credentials are not supported)"
            ));
        }
        let path = format!("/{}", path.trim_end_matches('/'));
        if path == "/" || path.contains("//") {
            return Err(format!("{s:?}: the path must name a node, e.g. /cairn"));
        }
        Ok(ZkUrl {
            hosts: hosts.to_string(),
            path,
        })
    }
}

impl std::fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zk://{}{}", self.hosts, self.path)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZkAddress {
    pub hostname: String,
    pub ip: String,
    pub port: u16,
}

/// MasterInfo as Mesos clients read it from ZooKeeper: every address field
/// some client uses is written, consistently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZkMasterInfo {
    pub address: ZkAddress,
    #[serde(default)]
    pub capabilities: Vec<serde_json::Value>,
    pub hostname: String,
    pub id: String,
    /// The IPv4 address as a u32 in network byte order (MESOS-1201).
    #[serde(default)]
    pub ip: u32,
    pub pid: String,
    pub port: u16,
    pub version: String,
}

impl ZkMasterInfo {
    pub fn new(id: &str, hostname: &str, ip: IpAddr, port: u16) -> Self {
        let ip_u32 = match ip {
            // The octets as laid out in memory, read as a little-endian u32:
            // Mesos's network-byte-order integer on the usual hosts.
            IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
            IpAddr::V6(_) => 0,
        };
        ZkMasterInfo {
            address: ZkAddress {
                hostname: hostname.to_string(),
                ip: ip.to_string(),
                port,
            },
            capabilities: vec![serde_json::json!({"type": "AGENT_UPDATE"})],
            hostname: hostname.to_string(),
            id: id.to_string(),
            ip: ip_u32,
            pid: format!("master@{ip}:{port}"),
            port,
            version: crate::VERSION.to_string(),
        }
    }

    /// The leader this node names, with `epoch` its sequence.
    pub fn leader(&self, epoch: u64) -> Leader {
        Leader {
            endpoint: self.endpoint(),
            authority: format!("{}:{}", self.hostname, self.port),
            epoch,
        }
    }

    /// `ip:port` to connect to.
    pub fn endpoint(&self) -> String {
        match self.address.ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.address.port),
            _ => format!("{}:{}", self.address.ip, self.address.port),
        }
    }
}

/// The sequence number of a master's node name, if it is one.
pub fn sequence_of(child: &str) -> Option<u64> {
    child.strip_prefix(INFO_PREFIX)?.parse().ok()
}

/// The leading node among `children`: the lowest sequence.
pub fn leader_of(children: &[String]) -> Option<(&str, u64)> {
    children
        .iter()
        .filter_map(|c| sequence_of(c).map(|s| (c.as_str(), s)))
        .min_by_key(|(_, s)| *s)
}

/// Where a master is: an address, or a ZooKeeper URL to find the leader by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterAddr {
    Direct(String),
    ZooKeeper(ZkUrl),
}

impl FromStr for MasterAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("zk://") || s.starts_with("zoo://") {
            Ok(MasterAddr::ZooKeeper(s.parse()?))
        } else if s.contains(':') && !s.contains('/') {
            Ok(MasterAddr::Direct(s.to_string()))
        } else {
            Err(format!("{s:?} is neither host:port nor zk://hosts/path"))
        }
    }
}

impl std::fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterAddr::Direct(a) => f.write_str(a),
            MasterAddr::ZooKeeper(u) => u.fmt(f),
        }
    }
}

/// The leading master as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// `ip:port` of its API.
    pub endpoint: String,
    /// `hostname:port`, what HTTP redirects to the leader name.
    pub authority: String,
    /// Its leadership term (0 for a master without ZooKeeper).
    pub epoch: u64,
}

/// Follows the leading master: the current leader (`None` while there is
/// none) in a watch channel, kept up to date until every receiver is gone.
pub fn follow(addr: MasterAddr) -> watch::Receiver<Option<Leader>> {
    match addr {
        MasterAddr::Direct(endpoint) => {
            let (tx, rx) = watch::channel(Some(Leader {
                authority: endpoint.clone(),
                endpoint,
                epoch: 0,
            }));
            // Kept alive for as long as anyone listens.
            tokio::spawn(async move { tx.closed().await });
            rx
        }
        MasterAddr::ZooKeeper(url) => {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(async move {
                tokio::select! {
                    () = detect(&url, &tx) => {}
                    () = tx.closed() => {}
                }
            });
            rx
        }
    }
}

/// The leader now: waits up to `timeout` for one.
pub async fn resolve(addr: MasterAddr, timeout: Duration) -> Result<Leader, String> {
    let mut rx = follow(addr.clone());
    let found = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
    match found {
        Ok(Ok(leader)) => leader.clone().ok_or_else(|| "no leader".into()),
        _ => Err(match addr {
            MasterAddr::ZooKeeper(url) => {
                format!("no leading master found in {url} within {timeout:?}")
            }
            MasterAddr::Direct(a) => format!("cannot use {a}"),
        }),
    }
}

async fn detect(url: &ZkUrl, tx: &watch::Sender<Option<Leader>>) {
    loop {
        let client = match zk::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&url.hosts)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(zk = %url, error = %e, "cannot reach ZooKeeper; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        watch_leader(&client, url, tx).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes the leader on every change, until the session ends.
async fn watch_leader(client: &zk::Client, url: &ZkUrl, tx: &watch::Sender<Option<Leader>>) {
    loop {
        let (children, watcher) = match client.list_and_watch_children(&url.path).await {
            Ok(x) => x,
            Err(zk::Error::NoNode) => {
                publish(tx, None);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(_) => return,
        };
        let leader = match leader_of(&children) {
            None => None,
            Some((name, seq)) => {
                match client.get_data(&format!("{}/{name}", url.path)).await {
                    Ok((data, _)) => match serde_json::from_slice::<ZkMasterInfo>(&data) {
                        Ok(info) => Some(info.leader(seq)),
                        Err(e) => {
                            tracing::warn!(node = name, error = %e, "unreadable master info in ZooKeeper");
                            None
                        }
                    },
                    // Gone between the listing and the read: list again.
                    Err(zk::Error::NoNode) => continue,
                    Err(_) => return,
                }
            }
        };
        publish(tx, leader);
        let event = watcher.changed().await;
        if event.event_type == zk::EventType::Session {
            return;
        }
    }
}

fn publish(tx: &watch::Sender<Option<Leader>>, leader: Option<Leader>) {
    tx.send_if_modified(|current| {
        if *current == leader {
            false
        } else {
            *current = leader;
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_refuse_what_they_cannot_use() {
        let u: ZkUrl = "zk://h1:2181,h2:2181/cairn".parse().unwrap();
        assert_eq!(u.hosts, "h1:2181,h2:2181");
        assert_eq!(u.path, "/cairn");
        assert_eq!(u.to_string(), "zk://h1:2181,h2:2181/cairn");
        for bad in [
            "http://x/y",
            "zk://h1:2181",
            "zk://h1:2181/",
            "zk://u:p@h:1/x",
            "zk:///x",
        ] {
            assert!(bad.parse::<ZkUrl>().is_err(), "{bad:?}");
        }
        assert!(matches!(
            "127.0.0.1:5050".parse::<MasterAddr>(),
            Ok(MasterAddr::Direct(_))
        ));
        assert!(matches!(
            "zk://h:1/c".parse::<MasterAddr>(),
            Ok(MasterAddr::ZooKeeper(_))
        ));
        assert!("nonsense".parse::<MasterAddr>().is_err());
    }

    #[test]
    fn the_lowest_sequence_leads_and_other_children_are_skipped() {
        let children: Vec<String> = [
            "json.info_0000000012",
            "log_replicas",
            "json.info_0000000003",
            "info_0000000001",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        assert_eq!(leader_of(&children), Some(("json.info_0000000003", 3)));
        assert_eq!(leader_of(&[]), None);
    }

    #[test]
    fn master_info_has_every_address_field_clients_read() {
        let info = ZkMasterInfo::new("id", "m1", "10.0.0.1".parse().unwrap(), 5050);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["address"]["ip"], "10.0.0.1");
        assert_eq!(json["address"]["port"], 5050);
        assert_eq!(json["pid"], "master@10.0.0.1:5050");
        assert_eq!(
            json["ip"], 16777226,
            "network byte order, as Mesos writes it"
        );
        assert_eq!(info.endpoint(), "10.0.0.1:5050");
    }
}
