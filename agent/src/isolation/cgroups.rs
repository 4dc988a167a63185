//! Containers' cgroups, through `cgroups-rs`, on cgroup v1 (one hierarchy per
//! controller, as on hybrid hosts) or v2 (unified), picked automatically.
//!
//! Each container gets `<root>/<container id>` in the cpu, cpuacct, memory,
//! pids and freezer controllers (v1), or in the unified tree (v2). `root` is
//! per agent (derived from its work directory), so agents sharing a host
//! never touch each other's containers.
//!
//! `cgroups-rs` swallows some write errors (memory) and writes cpu shares
//! unconverted on v2; this wrapper converts shares to weights and reads the
//! limits back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_model::ContainerId;
use cgroups_rs::CgroupPid;
use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::{Cgroup, Controller, MaxValue, hierarchies};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use thiserror::Error;

/// v1 controllers a container uses; others (devices, blkio, name=systemd,
/// ...) are left alone.
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// CFS period: quota = cpus x period.
pub const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cgroups are not usable here: {0}")]
    Unavailable(String),
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cgroup {path}: {what} was not applied (wrote {wanted}, reads {got})")]
    NotApplied {
        path: String,
        what: &'static str,
        wanted: String,
        got: String,
    },
    #[error("cannot remove cgroup {path}: {reason}")]
    Remove { path: String, reason: String },
    #[error("cannot write {value} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a container may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Relative CPU weight in v1 shares (1024 = one cpu).
    pub cpu_shares: u64,
    /// Hard cap in microseconds per [`CFS_PERIOD_US`]; `None`: no cap.
    pub cfs_quota_us: Option<i64>,
    pub memory_bytes: i64,
    pub pids_max: i64,
}

impl Limits {
    /// Limits for `cpus` and `mem_mb`: shares in proportion to cpus (at least
    /// 2, the kernel's minimum), a CFS quota of cpus x period when `cfs`.
    pub fn new(cpus: f64, mem_bytes: i64, pids_max: i64, cfs: bool) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let shares = ((cpus * 1024.0).round() as u64).max(2);
        #[allow(clippy::cast_possible_truncation)]
        let quota = (cpus * CFS_PERIOD_US as f64).round() as i64;
        Limits {
            cpu_shares: shares,
            // The kernel's minimum quota is 1 ms.
            cfs_quota_us: cfs.then_some(quota.max(1000)),
            memory_bytes: mem_bytes,
            pids_max,
        }
    }
}

/// v1 shares (2..=262144) to a v2 weight (1..=10000), the kernel's mapping.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        1
    } else if shares >= 262_144 {
        10_000
    } else {
        1 + ((shares - 2) * 9999) / 262_142
    }
}

/// A container's resource use, read from its cgroups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_user_secs: f64,
    pub cpu_system_secs: f64,
    pub cpu_total_secs: f64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_secs: f64,
    pub mem_usage_bytes: u64,
    pub mem_rss_bytes: u64,
    pub mem_limit_bytes: u64,
    pub oom_kills: u64,
    pub pids_current: u64,
    pub pids_max_hits: u64,
    pub processes: usize,
}

/// The cgroups of one agent's containers.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// Relative to each hierarchy's root, e.g. `cairn/agent-1a2b3c4d`.
    root: String,
    v2: bool,
    /// Where the controllers are mounted, read once: `hierarchies::auto()`
    /// reads and parses `/proc/self/mountinfo` at every call, which was
    /// several times per container (create, resize, stats, destroy).
    /// Controllers mounted after the agent started are not seen, as in
    /// Mesos, which also reads its hierarchies at start-up.
    hierarchy: Hierarchy,
}

/// A cgroup hierarchy as `cgroups-rs` describes it; cloned per handle.
#[derive(Debug, Clone)]
enum Hierarchy {
    V1(hierarchies::V1),
    V2(hierarchies::V2),
}

impl Hierarchy {
    fn boxed(&self) -> Box<dyn cgroups_rs::fs::Hierarchy> {
        match self {
            Hierarchy::V1(h) => Box::new(h.clone()),
            Hierarchy::V2(h) => Box::new(h.clone()),
        }
    }
}

fn key_values(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        Some((k, v.trim().parse().ok()?))
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Cgroups {
    /// Checks that cgroups can be created here (root, mounted controllers)
    /// by creating and removing a probe cgroup.
    pub fn detect(root: &str) -> Result<Cgroups, CgroupError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(CgroupError::Unavailable(
                "the agent is not running as root".into(),
            ));
        }
        let v2 = hierarchies::is_cgroup2_unified_mode();
        if !v2
            && !Path::new("/sys/fs/cgroup/memory").exists()
            && !Path::new("/proc/self/cgroup").exists()
        {
            return Err(CgroupError::Unavailable(
                "no cgroup filesystem is mounted".into(),
            ));
        }
        let cgroups = Cgroups {
            root: root.trim_matches('/').to_string(),
            v2,
            hierarchy: if v2 {
                Hierarchy::V2(hierarchies::V2::new())
            } else {
                Hierarchy::V1(hierarchies::V1::new())
            },
        };
        let probe = ContainerId::new("probe");
        cgroups.create(&probe, &Limits::new(0.1, 64 << 20, 64, true))?;
        cgroups.destroy(&probe, None)?;
        Ok(cgroups)
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    fn path(&self, id: &ContainerId) -> String {
        format!("{}/{}", self.root, id)
    }

    fn load(&self, id: &ContainerId) -> Cgroup {
        let hier = self.hierarchy.boxed();
        if self.v2 {
            Cgroup::load(hier, self.path(id))
        } else {
            Cgroup::load_with_specified_controllers(
                hier,
                self.path(id),
                V1_CONTROLLERS.iter().map(|s| (*s).to_string()).collect(),
            )
        }
    }

    /// Creates the container's cgroups with `limits` applied and verified.
    pub fn create(&self, id: &ContainerId, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let path = self.path(id);
        let shares = if self.v2 {
            shares_to_weight(limits.cpu_shares)
        } else {
            limits.cpu_shares
        };
        let mut cpu = CgroupBuilder::new(&path).cpu().shares(shares);
        if let Some(q) = limits.cfs_quota_us {
            cpu = cpu.period(CFS_PERIOD_US).quota(q);
        }
        let mut builder = cpu
            .done()
            .memory()
            .memory_hard_limit(limits.memory_bytes)
            .done()
            .pid()
            .maximum_number_of_processes(MaxValue::Value(limits.pids_max))
            .done();
        if !self.v2 {
            builder = builder.set_specified_controllers(
                V1_CONTROLLERS.iter().map(|s| (*s).to_string()).collect(),
            );
        }
        let cg = match builder.build(self.hierarchy.boxed()) {
            Ok(cg) => cg,
            Err(source) => {
                // `build` may fail after creating the directories.
                let _ = self.load(id).delete();
                return Err(CgroupError::Create { path, source });
            }
        };
        // No swapping past the limit: memory+swap (v1) or swap (v2) capped.
        if let Some(mem) = cg.controller_of::<MemController>() {
            let swap_file = if self.v2 {
                "memory.swap.max"
            } else {
                "memory.memsw.limit_in_bytes"
            };
            let swap = if self.v2 { 0 } else { limits.memory_bytes };
            let f = mem.path().join(swap_file);
            if f.exists() {
                let _ = std::fs::write(&f, swap.to_string());
            }
            // Read back (cgroups-rs ignores a failed write of the limit).
            let limit_file = if self.v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            let got: i64 = read(&mem.path().join(limit_file))
                .trim()
                .parse()
                .unwrap_or(-1);
            if got != limits.memory_bytes {
                let _ = cg.delete();
                return Err(CgroupError::NotApplied {
                    path,
                    what: "the memory limit",
                    wanted: limits.memory_bytes.to_string(),
                    got: got.to_string(),
                });
            }
        }
        Ok(cg)
    }

    /// Each `cgroup.procs` file of the container: writing `0` to one moves
    /// the writing process into that cgroup.
    pub fn procs_files(&self, cg: &Cgroup) -> Vec<PathBuf> {
        cg.subsystems()
            .iter()
            .map(|s| s.to_controller().path().join("cgroup.procs"))
            .collect()
    }

    fn controller_path(&self, cg: &Cgroup, name: &str) -> Option<PathBuf> {
        cg.subsystems()
            .iter()
            .find(|s| s.controller_name() == name)
            .map(|s| s.to_controller().path().to_path_buf())
    }

    /// Sends `signal` to every process in the container's cgroups outside
    /// the session led by `spare` (one pass: a process forked meanwhile may
    /// be missed, which is what a polite signal before a SIGKILL can
    /// afford). Returns how many were signalled.
    pub fn signal(&self, id: &ContainerId, signal: Signal, spare: Option<Pid>) -> usize {
        let cg = self.load(id);
        cg.procs()
            .iter()
            .filter_map(|p: &CgroupPid| i32::try_from(p.pid).ok())
            .map(Pid::from_raw)
            .filter(|pid| {
                spare.is_none_or(|s| nix::unistd::getsid(Some(*pid)).is_ok_and(|sid| sid != s))
            })
            .filter(|pid| kill(*pid, signal).is_ok())
            .count()
    }

    /// Changes a live container's cpu and memory limits (pids stay). Memory
    /// is changed in the order the kernel allows: memory+swap first when it
    /// grows, last when it shrinks; a limit under what the container uses
    /// is refused by the kernel and reported.
    pub fn update(&self, id: &ContainerId, limits: &Limits) -> Result<(), CgroupError> {
        let cg = self.load(id);
        if !cg.exists() {
            return Ok(());
        }
        let write = |dir: &Path, file: &str, value: String| {
            let path = dir.join(file);
            std::fs::write(&path, &value).map_err(|source| CgroupError::Write {
                path,
                value,
                source,
            })
        };
        if let Some(cpu) = self.controller_path(&cg, "cpu") {
            if self.v2 {
                write(
                    &cpu,
                    "cpu.weight",
                    shares_to_weight(limits.cpu_shares).to_string(),
                )?;
                let max = limits
                    .cfs_quota_us
                    .map_or_else(|| "max".to_string(), |q| format!("{q} {CFS_PERIOD_US}"));
                write(&cpu, "cpu.max", max)?;
            } else {
                write(&cpu, "cpu.shares", limits.cpu_shares.to_string())?;
                if let Some(q) = limits.cfs_quota_us {
                    write(&cpu, "cpu.cfs_quota_us", q.to_string())?;
                }
            }
        }
        if let Some(mem) = cg.controller_of::<MemController>() {
            let dir = mem.path().to_path_buf();
            let bytes = limits.memory_bytes.to_string();
            if self.v2 {
                write(&dir, "memory.max", bytes)?;
            } else {
                let current: i64 = read(&dir.join("memory.limit_in_bytes"))
                    .trim()
                    .parse()
                    .unwrap_or(0);
                let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
                if limits.memory_bytes >= current {
                    if memsw {
                        write(&dir, "memory.memsw.limit_in_bytes", bytes.clone())?;
                    }
                    write(&dir, "memory.limit_in_bytes", bytes)?;
                } else {
                    write(&dir, "memory.limit_in_bytes", bytes.clone())?;
                    if memsw {
                        write(&dir, "memory.memsw.limit_in_bytes", bytes)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Kills every process of the container (freezing it first, so nothing
    /// forks away meanwhile), except `spare` (whose exit the caller waits
    /// for), waits until the cgroup is empty, and removes it. Succeeds for a
    /// container that has no cgroup.
    pub fn destroy(&self, id: &ContainerId, spare: Option<i32>) -> Result<(), CgroupError> {
        let cg = self.load(id);
        if !cg.exists() {
            return Ok(());
        }
        let path = self.path(id);
        // Dying takes CPU time: under its quota, a container full of
        // processes (a fork bomb) would take minutes to die. Lift the cap.
        if let Some(cpu) = self.controller_path(&cg, "cpu") {
            let (file, unlimited) = if self.v2 {
                ("cpu.max", "max")
            } else {
                ("cpu.cfs_quota_us", "-1")
            };
            let _ = std::fs::write(cpu.join(file), unlimited);
        }
        let freezer = cg.controller_of::<FreezerController>();
        let started = Instant::now();
        let pids = |cg: &Cgroup| -> Vec<i32> {
            cg.procs()
                .iter()
                .filter_map(|p: &CgroupPid| i32::try_from(p.pid).ok())
                .collect()
        };
        loop {
            let procs = pids(&cg);
            if procs.is_empty() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(CgroupError::Remove {
                    path,
                    reason: format!("{} processes are still in it after SIGKILL", procs.len()),
                });
            }
            // The spared process gets two seconds to exit by itself.
            let spare_now = spare.filter(|_| started.elapsed() < Duration::from_secs(2));
            let targets: Vec<i32> = procs
                .into_iter()
                .filter(|p| Some(*p) != spare_now)
                .collect();
            if !targets.is_empty() {
                // Frozen, nothing can fork while the signals go out; thawed,
                // the signals take effect.
                if let Some(f) = freezer {
                    let _ = f.freeze();
                    wait_frozen(f, Duration::from_secs(1));
                }
                for pid in pids(&cg).into_iter().filter(|p| Some(*p) != spare_now) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                if let Some(f) = freezer {
                    let _ = f.thaw();
                }
            }
            // Let them die before looking again.
            let wait_until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < wait_until && pids(&cg).iter().any(|p| Some(*p) != spare_now) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if spare_now.is_some() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        cg.delete().map_err(|e| CgroupError::Remove {
            path,
            reason: e.to_string(),
        })
    }

    /// Removes this agent's (empty) root cgroup, in every hierarchy.
    pub fn remove_root(&self) {
        let bases: Vec<PathBuf> = if self.v2 {
            vec![PathBuf::from("/sys/fs/cgroup")]
        } else {
            V1_CONTROLLERS
                .iter()
                .map(|c| PathBuf::from("/sys/fs/cgroup").join(c))
                .collect()
        };
        for base in bases {
            let _ = std::fs::remove_dir(base.join(&self.root));
        }
    }

    /// The container ids that have cgroups under this agent's root.
    pub fn list(&self) -> Vec<ContainerId> {
        let base = if self.v2 {
            PathBuf::from("/sys/fs/cgroup").join(&self.root)
        } else {
            PathBuf::from("/sys/fs/cgroup/memory").join(&self.root)
        };
        std::fs::read_dir(base)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| ContainerId::parse("cgroup", n).ok())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many times the kernel's OOM killer killed in the container.
    pub fn oom_kills(&self, id: &ContainerId) -> u64 {
        let cg = self.load(id);
        let Some(mem) = self.controller_path(&cg, "memory") else {
            return 0;
        };
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        key_values(&read(&mem.join(file)))
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, v)| v)
    }

    /// The container's use of cpu, memory and processes.
    pub fn stats(&self, id: &ContainerId) -> Option<CgroupStats> {
        let cg = self.load(id);
        if !cg.exists() {
            return None;
        }
        let mut s = CgroupStats {
            oom_kills: self.oom_kills(id),
            processes: cg.procs().len(),
            ..CgroupStats::default()
        };
        let cpu = self.controller_path(&cg, "cpu");
        let mem = self.controller_path(&cg, "memory");
        let pids = self.controller_path(&cg, "pids");
        if self.v2 {
            if let Some(cpu) = &cpu {
                for (k, v) in key_values(&read(&cpu.join("cpu.stat"))) {
                    match k {
                        "usage_usec" => s.cpu_total_secs = v as f64 / 1e6,
                        "user_usec" => s.cpu_user_secs = v as f64 / 1e6,
                        "system_usec" => s.cpu_system_secs = v as f64 / 1e6,
                        "nr_periods" => s.nr_periods = v,
                        "nr_throttled" => s.nr_throttled = v,
                        "throttled_usec" => s.throttled_secs = v as f64 / 1e6,
                        _ => {}
                    }
                }
            }
            if let Some(mem) = &mem {
                s.mem_usage_bytes = read(&mem.join("memory.current"))
                    .trim()
                    .parse()
                    .unwrap_or(0);
                s.mem_limit_bytes = read(&mem.join("memory.max"))
                    .trim()
                    .parse()
                    .unwrap_or(u64::MAX);
                s.mem_rss_bytes = key_values(&read(&mem.join("memory.stat")))
                    .find(|(k, _)| *k == "anon")
                    .map_or(0, |(_, v)| v);
            }
        } else {
            if let Some(acct) = self.controller_path(&cg, "cpuacct") {
                s.cpu_total_secs = read(&acct.join("cpuacct.usage"))
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0) as f64
                    / 1e9;
                // cpuacct.stat counts USER_HZ (100 per second) ticks.
                for (k, v) in key_values(&read(&acct.join("cpuacct.stat"))) {
                    match k {
                        "user" => s.cpu_user_secs = v as f64 / 100.0,
                        "system" => s.cpu_system_secs = v as f64 / 100.0,
                        _ => {}
                    }
                }
            }
            if let Some(cpu) = &cpu {
                for (k, v) in key_values(&read(&cpu.join("cpu.stat"))) {
                    match k {
                        "nr_periods" => s.nr_periods = v,
                        "nr_throttled" => s.nr_throttled = v,
                        "throttled_time" => s.throttled_secs = v as f64 / 1e9,
                        _ => {}
                    }
                }
            }
            if let Some(mem) = &mem {
                s.mem_usage_bytes = read(&mem.join("memory.usage_in_bytes"))
                    .trim()
                    .parse()
                    .unwrap_or(0);
                s.mem_limit_bytes = read(&mem.join("memory.limit_in_bytes"))
                    .trim()
                    .parse()
                    .unwrap_or(u64::MAX);
                s.mem_rss_bytes = key_values(&read(&mem.join("memory.stat")))
                    .find(|(k, _)| *k == "total_rss")
                    .map_or(0, |(_, v)| v);
            }
        }
        if let Some(p) = &pids {
            s.pids_current = read(&p.join("pids.current")).trim().parse().unwrap_or(0);
            s.pids_max_hits = key_values(&read(&p.join("pids.events")))
                .find(|(k, _)| *k == "max")
                .map_or(0, |(_, v)| v);
        }
        Some(s)
    }
}

/// Keeps the kernel's `favordynmods` mode on while it lives.
///
/// Moving a process into a cgroup takes the kernel's threadgroup rwsem for
/// writing, which waits for an RCU grace period unless a write happened just
/// before: a container started after a quiet moment pays 7 to 15 ms for it
/// (measured on these hosts), one started right after another 0.3 ms. With
/// `favordynmods` on any hierarchy the rwsem stays in the mode where writers
/// never wait (at a small cost to fork and exit). The mode lasts while a
/// hierarchy with the option is mounted: here a controller-less named one,
/// mounted in the agent's work directory.
#[derive(Debug)]
pub struct FavorDynmods {
    mount_point: PathBuf,
}

impl FavorDynmods {
    pub fn enable(work_dir: &Path) -> Result<FavorDynmods, CgroupError> {
        let mount_point = work_dir.join(".cgroup-favordynmods");
        std::fs::create_dir_all(&mount_point).map_err(|e| {
            CgroupError::Unavailable(format!("cannot create {}: {e}", mount_point.display()))
        })?;
        let mounted = read(Path::new("/proc/self/mounts"))
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&*mount_point.to_string_lossy()));
        if !mounted {
            nix::mount::mount(
                Some("cgroup"),
                &mount_point,
                Some("cgroup"),
                nix::mount::MsFlags::empty(),
                Some("none,name=cairn,favordynmods"),
            )
            .map_err(|e| {
                CgroupError::Unavailable(format!("cannot mount a favordynmods hierarchy: {e}"))
            })?;
        }
        Ok(FavorDynmods { mount_point })
    }
}

impl Drop for FavorDynmods {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.mount_point);
    }
}

/// Waits until the freezer reports the cgroup frozen, at most `limit`.
fn wait_frozen(f: &FreezerController, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if matches!(f.state(), Ok(cgroups_rs::FreezerState::Frozen)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The cgroup root of the agent whose work directory is `work_dir`: stable
/// across restarts, distinct between agents on one host.
pub fn agent_root(work_dir: &Path) -> String {
    // FNV-1a over the path's bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in work_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("cairn/agent-{:08x}", h & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_weights_like_the_kernel() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn limits_follow_the_resources() {
        let l = Limits::new(0.5, 64 << 20, 1024, true);
        assert_eq!(l.cpu_shares, 512);
        assert_eq!(l.cfs_quota_us, Some(50_000));
        let tiny = Limits::new(0.001, 1 << 20, 1, true);
        assert_eq!(tiny.cpu_shares, 2);
        assert_eq!(tiny.cfs_quota_us, Some(1000));
        assert_eq!(Limits::new(1.0, 0, 1, false).cfs_quota_us, None);
    }

    #[test]
    fn agent_roots_differ_by_work_dir_and_stay_stable() {
        let a = agent_root(Path::new("/var/lib/cairn/a"));
        assert_eq!(a, agent_root(Path::new("/var/lib/cairn/a")));
        assert_ne!(a, agent_root(Path::new("/var/lib/cairn/b")));
        assert!(a.starts_with("cairn/agent-"));
    }
}
