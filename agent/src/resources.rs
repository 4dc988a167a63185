//! What the agent offers when `--resources` is not given: the host's cpus,
//! memory and disk, less a reserve for the system, and a port range.

use std::path::Path;

use cairn_model::{RangeSet, ResourceName, Resources, Scalar};

/// Memory kept for the system: 1 GiB, or half of it on small hosts (Mesos's rule).
fn usable_mem_mb(total_mb: u64) -> u64 {
    if total_mb >= 2048 {
        total_mb - 1024
    } else {
        total_mb / 2
    }
}

/// Disk kept for the system: 5 GiB, or half on small disks.
fn usable_disk_mb(avail_mb: u64) -> u64 {
    if avail_mb >= 10 * 1024 {
        avail_mb - 5 * 1024
    } else {
        avail_mb / 2
    }
}

fn mem_total_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(1024, |kb| kb / 1024)
}

fn disk_avail_mb(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
        .unwrap_or(0)
}

/// The host's resources as seen from `work_dir`.
pub fn detect(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u64;
    let ports = RangeSet::from_ranges([(31000, 32000)]).unwrap_or_default();
    Resources::new()
        .with_scalar(ResourceName::Cpus, Scalar::from_units(cpus))
        .with_scalar(
            ResourceName::Mem,
            Scalar::from_units(usable_mem_mb(mem_total_mb())),
        )
        .with_scalar(
            ResourceName::Disk,
            Scalar::from_units(usable_disk_mb(disk_avail_mb(work_dir))),
        )
        .with_ranges(ResourceName::Ports, ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_follow_the_host_size() {
        assert_eq!(usable_mem_mb(16 * 1024), 15 * 1024);
        assert_eq!(usable_mem_mb(1024), 512);
        assert_eq!(usable_disk_mb(100 * 1024), 95 * 1024);
        assert_eq!(usable_disk_mb(4 * 1024), 2 * 1024);
        let r = detect(Path::new("/tmp"));
        assert!(!r.cpus().is_zero() && !r.mem().is_zero());
    }
}
