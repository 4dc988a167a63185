//! A real ZooKeeper server (Debian's `zookeeper` package) on a free loopback
//! port, with a short tick so sessions can expire in a test's time.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::free_port;
use crate::process::Proc;
use crate::wait_for;

/// Debian's ZooKeeper jar (its manifest names its dependencies) and a
/// logging backend. `CAIRN_ZK_CLASSPATH` overrides it.
const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

pub struct ZooKeeper {
    pub proc: Proc,
    pub port: u16,
    pub dir: PathBuf,
}

impl ZooKeeper {
    /// Starts a standalone server with its data under `dir` and waits until
    /// it answers. Sessions may be as short as 200 ms (tick 100 ms).
    pub async fn start(dir: &Path) -> ZooKeeper {
        assert!(
            Path::new("/usr/share/java/zookeeper.jar").exists()
                || std::env::var_os("CAIRN_ZK_CLASSPATH").is_some(),
            "ZooKeeper is not installed: apt-get install -y zookeeper libslf4j-java (scripts/test does)"
        );
        let data = dir.join("zookeeper");
        std::fs::create_dir_all(&data).expect("zookeeper data dir");
        let port = free_port();
        let cfg = data.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=100\ninitLimit=10\nsyncLimit=5\nminSessionTimeout=200\nmaxSessionTimeout=30000\n\
                 dataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr,stat,cons\nmaxClientCnxns=0\n",
                data.display()
            ),
        )
        .expect("zoo.cfg");
        let classpath =
            std::env::var("CAIRN_ZK_CLASSPATH").unwrap_or_else(|_| CLASSPATH.to_string());
        let args = vec![
            "-Xmx256m".to_string(),
            "-Dzookeeper.log.dir=".to_string() + &data.display().to_string(),
            "-cp".into(),
            classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain".into(),
            cfg.display().to_string(),
        ];
        let proc = Proc::spawn(
            "zookeeper",
            Path::new("java"),
            &args,
            &dir.join("zookeeper.log"),
        );
        let zk = ZooKeeper {
            proc,
            port,
            dir: data,
        };
        wait_for(
            Duration::from_secs(60),
            "ZooKeeper to serve",
            // `ruok` answers before the server serves sessions; `srvr`
            // names its mode only once it does.
            || async {
                four_letter(port, "srvr")
                    .is_some_and(|s| s.contains("Mode:"))
                    .then_some(())
            },
        )
        .await;
        zk
    }

    /// `zk://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("zk://127.0.0.1:{}{path}", self.port)
    }

    /// The data of the node at `path`, if it exists (and the server
    /// answers).
    pub async fn get(&self, path: &str) -> Option<Vec<u8>> {
        let client = zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(5))
            .connect(&format!("127.0.0.1:{}", self.port))
            .await
            .ok()?;
        client.get_data(path).await.ok().map(|(data, _)| data)
    }
}

/// Sends a four-letter command; the reply, if any.
pub fn four_letter(port: u16, cmd: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
