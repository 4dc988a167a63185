//! A network namespace joined to the host by a veth pair, for partitioning
//! an agent from its master for real: with the host's end of the link down,
//! no packet passes either way, and the processes on both sides stay alive.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

pub struct NetNs {
    pub name: String,
    /// The host's end of the link: what processes in the namespace reach.
    pub host_ip: Ipv4Addr,
    /// The namespace's end of the link.
    pub ns_ip: Ipv4Addr,
    host_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates the namespace and its link, both ends up, on a /30 of
    /// 10.251.0.0/16 chosen from the test's pid and a counter (tests run in
    /// parallel, in one process and in several).
    pub fn create() -> NetNs {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n =
            (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)) % 16_000;
        let name = format!("cairn-t{n}");
        let host_if = format!("cth{n}");
        let ns_if = format!("ctn{n}");
        let base = 4 * n;
        let host_ip = Ipv4Addr::new(10, 251, (base >> 8) as u8, (base & 0xff) as u8 + 1);
        let ns_ip = Ipv4Addr::new(10, 251, (base >> 8) as u8, (base & 0xff) as u8 + 2);
        // Left over by a run that was killed: start clean.
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        let _ = Command::new("ip")
            .args(["link", "delete", &host_if])
            .output();
        ip(&["netns", "add", &name]);
        let ns = NetNs {
            name,
            host_ip,
            ns_ip,
            host_if,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", ns.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// The file that names the namespace, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Cuts the link: nothing passes until `heal`.
    pub fn partition(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    pub fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it
        // the host's end.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_if])
            .output();
    }
}
