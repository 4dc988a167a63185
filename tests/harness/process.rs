use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A binary of this workspace, built next to the test executable
/// (`cargo build --bins` must have run: the README's test command does).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, benchmark binaries from
    // target/<profile>/: the binaries are in target/<profile>/.
    let here = exe.parent().expect("executable directory");
    let dir = if here.join(name).exists() {
        here
    } else {
        here.parent().expect("target directory")
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A process that is killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Proc {
        Proc::spawn_with_env(name, program, args, &[], log)
    }

    /// Like [`Proc::spawn`], with `env` added to the environment.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        log: &Path,
    ) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, s: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), s);
    }

    /// SIGTERM, then SIGKILL if still alive after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of live processes whose environment mentions `marker` (executors and
/// tasks inherit their sandbox path in `MESOS_SANDBOX`).
pub fn processes_marked(marker: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        .filter(|pid| {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            !zombie
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| {
                        env.split(|b| *b == 0)
                            .any(|kv| String::from_utf8_lossy(kv).contains(marker))
                    })
                    .unwrap_or(false)
        })
        .collect()
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_running(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let live = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| !r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            live && std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Removes the cgroup tree at `rel` (relative to each hierarchy's root),
/// deepest first, in every cgroup hierarchy mounted under /sys/fs/cgroup.
pub fn remove_cgroup_tree(rel: &str) {
    let mut bases = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        bases.extend(
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    // Every process of the tree is killed and every cgroup of it thawed
    // before any is removed: on v1 the freezer is a hierarchy of its own, and
    // a process frozen there takes no SIGKILL, so its cgroups in the
    // hierarchies listed before the freezer's would stay busy (a CI run left
    // a container's pids, freezer and memory cgroups so).
    for base in &bases {
        walk_bottom_up(&base.join(rel), &mut kill_processes);
    }
    for base in &bases {
        walk_bottom_up(&base.join(rel), &mut thaw);
    }
    // A process left in the tree (one that carries no marker, so a sweep
    // missed it) keeps its cgroup busy: killed here, and the removal
    // retried while it exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    for base in bases {
        let root = base.join(rel);
        while root.is_dir() {
            remove_dirs_bottom_up(&root);
            if !root.is_dir() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("cannot remove cgroup {}: still busy", root.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Calls `f` on every cgroup below `dir`, deepest first, then on `dir`.
fn walk_bottom_up(dir: &Path, f: &mut impl FnMut(&Path)) {
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_bottom_up(&e.path(), f);
            }
        }
    }
    if dir.is_dir() {
        f(dir);
    }
}

fn kill_processes(dir: &Path) {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A cgroup left frozen (an agent killed while it destroyed a container:
/// freeze, kill, thaw) holds its processes where no SIGKILL reaches them:
/// thawed, they take the signal already sent.
fn thaw(dir: &Path) {
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
}

/// Kills the processes of `dir` and of every cgroup below it, thaws them,
/// then removes those that are empty, deepest first.
fn remove_dirs_bottom_up(dir: &Path) {
    walk_bottom_up(dir, &mut |d| {
        kill_processes(d);
        thaw(d);
        let _ = std::fs::remove_dir(d);
    });
}

/// Unmounts everything mounted below `dir` (deepest first).
pub fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The container cgroups (directories) under `rel` in the memory (v1) or
/// unified (v2) hierarchy.
pub fn cgroups_under(rel: &str) -> Vec<String> {
    let v1 = PathBuf::from("/sys/fs/cgroup/memory").join(rel);
    let dir = if v1.is_dir() {
        v1
    } else {
        PathBuf::from("/sys/fs/cgroup").join(rel)
    };
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of live processes with a file open, or their working directory,
/// under `dir`.
pub fn processes_using(dir: &Path) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let under = |link: PathBuf| std::fs::read_link(link).is_ok_and(|t| t.starts_with(dir));
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        .filter(|pid| {
            under(PathBuf::from(format!("/proc/{pid}/cwd")))
                || std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|fds| fds.filter_map(Result::ok).any(|fd| under(fd.path())))
                    .unwrap_or(false)
        })
        .collect()
}

/// Removes `dir` whatever still writes into it: processes with files open
/// under it are killed, and the removal is retried until the directory is
/// gone (a process that was not killed may still create files while it
/// exits, and a removal racing it fails with the directory not empty).
/// Panics after 20 s, naming what is left (prints instead if the thread
/// is already panicking).
pub fn remove_dir_released(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for pid in processes_using(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                let msg = format!(
                    "cannot remove {}: {e} (used by {:?})",
                    dir.display(),
                    processes_using(dir)
                );
                // A second panic while unwinding would abort the test run.
                if std::thread::panicking() {
                    eprintln!("{msg}");
                    return;
                }
                panic!("{msg}");
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills every process marked with `marker`, repeatedly, until none is left.
pub fn sweep(marker: &str) {
    for _ in 0..100 {
        let pids = processes_marked(marker);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A program and arguments that print its own blocked and ignored signal
/// masks (`SigBlk`, `SigIgn` of `/proc/self/status`), one per line, in hex.
/// Not a shell: dash clears its signal mask.
pub const PRINT_SIGNAL_MASKS: (&str, [&str; 2]) =
    ("awk", ["/^Sig(Blk|Ign)/ {print $2}", "/proc/self/status"]);

/// Asserts that `out`, printed by [`PRINT_SIGNAL_MASKS`], shows a program
/// started as `std::process::Command` starts one: no signal blocked, and
/// SIGPIPE (which Rust's runtime ignores) not ignored.
pub fn assert_started_like_command(out: &str) {
    let masks: Vec<u64> = out
        .lines()
        .map(|l| u64::from_str_radix(l.trim(), 16).unwrap_or(u64::MAX))
        .collect();
    assert_eq!(masks.len(), 2, "two signal masks expected: {out:?}");
    assert_eq!(masks[0], 0, "signals blocked: {out:?}");
    assert_eq!(
        masks[1] & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored: {out:?}"
    );
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// A process the sweep cannot see (no marker) must not leave its
    /// cgroup behind. Needs root, as CI has.
    #[test]
    fn a_cgroup_tree_goes_with_the_processes_left_in_it() {
        // The memory controller's hierarchy (v1), or the unified one (v2).
        let base = if Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
            PathBuf::from("/sys/fs/cgroup/memory")
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        cgroup_tree_goes(&base, "plain", false);
    }

    /// Nor a process in a cgroup left frozen (SIGKILL waits for a thaw).
    #[test]
    fn a_frozen_cgroup_tree_goes_with_its_processes() {
        // The freezer's hierarchy (v1), or the unified one (v2).
        let base = if Path::new("/sys/fs/cgroup/freezer/cgroup.procs").exists() {
            PathBuf::from("/sys/fs/cgroup/freezer")
        } else {
            PathBuf::from("/sys/fs/cgroup")
        };
        cgroup_tree_goes(&base, "frozen", true);
    }

    /// Nor one frozen in v1's freezer hierarchy whose cgroups in the other
    /// hierarchies are removed first (`/sys/fs/cgroup` lists `pids` before
    /// `freezer` here). Needs root and v1 controllers, as CI has.
    #[test]
    fn a_frozen_process_leaves_none_of_its_v1_hierarchies_behind() {
        let freezer = Path::new("/sys/fs/cgroup/freezer");
        let pids = Path::new("/sys/fs/cgroup/pids");
        if !freezer.join("cgroup.procs").exists() || !pids.join("cgroup.procs").exists() {
            eprintln!("skipped: no v1 freezer and pids hierarchies here");
            return;
        }
        assert!(
            nix::unistd::geteuid().is_root(),
            "cgroup clean-up tests need root, as CI has"
        );
        let rel = format!("cairn-harness-{}-hierarchies", std::process::id());
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        for base in [pids, freezer] {
            let inner = base.join(&rel).join("inner");
            std::fs::create_dir_all(&inner).unwrap();
            std::fs::write(inner.join("cgroup.procs"), child.id().to_string()).unwrap();
        }
        let frozen = freezer.join(&rel).join("inner");
        freeze(&frozen);

        remove_cgroup_tree(&rel);
        let left: Vec<PathBuf> = [pids, freezer]
            .iter()
            .map(|b| b.join(&rel))
            .filter(|p| p.exists())
            .collect();
        // Whatever the outcome, nothing stays behind.
        let _ = std::fs::write(frozen.join("freezer.state"), "THAWED");
        let _ = child.kill();
        let status = child.wait().unwrap();
        for dir in &left {
            let _ = std::fs::remove_dir(dir.join("inner"));
            let _ = std::fs::remove_dir(dir);
        }
        assert!(left.is_empty(), "left behind: {left:?}");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    /// Freezes cgroup `dir` (v1 `freezer.state`, or v2 `cgroup.freeze`),
    /// waiting on v1 until the freezer reports it frozen.
    fn freeze(dir: &Path) {
        let v1 = dir.join("freezer.state").exists();
        if !v1 {
            std::fs::write(dir.join("cgroup.freeze"), "1").unwrap();
            return;
        }
        std::fs::write(dir.join("freezer.state"), "FROZEN").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(dir.join("freezer.state"))
            .unwrap_or_default()
            .trim()
            != "FROZEN"
        {
            assert!(Instant::now() < deadline, "the cgroup did not freeze");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn cgroup_tree_goes(base: &Path, name: &str, frozen: bool) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "cgroup clean-up tests need root, as CI has"
        );
        let rel = format!("cairn-harness-{}-{name}", std::process::id());
        let inner = base.join(&rel).join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        std::fs::write(inner.join("cgroup.procs"), child.id().to_string()).unwrap();
        if frozen {
            freeze(&inner);
        }

        remove_cgroup_tree(&rel);
        let gone = !base.join(&rel).exists();
        // Its end, if the clean-up killed it; killed here otherwise, so a
        // failure leaves nothing behind either.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ended = child.try_wait().unwrap();
        while ended.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            ended = child.try_wait().unwrap();
        }
        if ended.is_none() {
            let _ = std::fs::write(inner.join("freezer.state"), "THAWED");
            let _ = std::fs::write(inner.join("cgroup.freeze"), "0");
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir(&inner);
            let _ = std::fs::remove_dir(base.join(&rel));
        }
        assert!(gone, "{} left behind", base.join(&rel).display());
        let status = ended.expect("the process in the cgroup was not killed");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
