//! How many cores this process may really use, and why.
//!
//! `os.cpu_count()` reports the machine; a process may be limited to fewer
//! by its CPU affinity (taskset, SLURM's binding), a cgroup CPU quota
//! (containers, systemd) or the SLURM allocation. Starting more workers than
//! that only adds switching.

use std::path::Path;

/// The answer and each limit that went into it.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuReport {
    /// What to use: the smallest limit, at least 1.
    pub count: usize,
    /// Online processors of the machine (what `os.cpu_count()` says).
    pub machine: usize,
    /// Processors in this process's affinity mask.
    pub affinity: Option<usize>,
    /// cgroup CPU quota, in cores (may be fractional).
    pub cgroup_quota: Option<f64>,
    /// `SLURM_CPUS_PER_TASK`, when set to a positive number.
    pub slurm: Option<usize>,
}

pub fn cpu_report() -> CpuReport {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let machine = usize::try_from(online).unwrap_or(1).max(1);
    let affinity = affinity_count();
    let cgroup_quota = cgroup_quota();
    let slurm = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    let count = combine(machine, affinity, cgroup_quota, slurm);
    CpuReport {
        count,
        machine,
        affinity,
        cgroup_quota,
        slurm,
    }
}

fn combine(
    machine: usize,
    affinity: Option<usize>,
    quota: Option<f64>,
    slurm: Option<usize>,
) -> usize {
    let quota = quota.map(|q| q.ceil().max(1.0) as usize);
    [Some(machine), affinity, quota, slurm]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(1)
        .max(1)
}

fn affinity_count() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the set's real size and a pointer to it.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `set` was filled in by the kernel above.
    let n = unsafe { libc::CPU_COUNT(&set) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// The tightest CPU quota on this process's cgroup path (v2, else v1).
fn cgroup_quota() -> Option<f64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = Path::new("/sys/fs/cgroup");
    if let Some(path) = v2_path(&membership) {
        let mut best: Option<f64> = None;
        let mut dir = root.join(path.trim_start_matches('/'));
        loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
                if let Some(q) = parse_cpu_max(&text) {
                    best = Some(best.map_or(q, |b: f64| b.min(q)));
                }
            }
            if dir == root || !dir.pop() || !dir.starts_with(root) {
                break;
            }
        }
        if best.is_some() {
            return best;
        }
    }
    let path = v1_cpu_path(&membership)?;
    for mount in ["cpu,cpuacct", "cpu", "cpuacct,cpu"] {
        let dir = root.join(mount).join(path.trim_start_matches('/'));
        let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok();
        let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok();
        if let (Some(quota), Some(period)) = (quota, period) {
            return parse_v1(&quota, &period);
        }
    }
    None
}

/// The unified hierarchy's path from `/proc/self/cgroup` (`0::/path`).
fn v2_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The v1 path of the controller that holds `cpu`.
fn v1_cpu_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })
}

/// `cpu.max` is `"max 100000"` (no limit) or `"<quota> <period>"`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let quota: f64 = quota.parse().ok()?;
    (quota > 0.0).then(|| quota / period)
}

fn parse_v1(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_forms() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(parse_v1("-1", "100000"), None);
        assert_eq!(parse_v1("200000\n", "100000\n"), Some(2.0));
    }

    #[test]
    fn membership_lines() {
        assert_eq!(v2_path("0::/user.slice/x\n"), Some("/user.slice/x"));
        let v1 = "12:memory:/a\n4:cpu,cpuacct:/docker/abc\n";
        assert_eq!(v1_cpu_path(v1), Some("/docker/abc"));
        assert_eq!(v2_path(v1), None);
    }

    #[test]
    fn the_smallest_limit_wins_and_never_exceeds_the_machine() {
        assert_eq!(combine(8, Some(4), None, None), 4);
        assert_eq!(combine(8, Some(8), Some(1.5), None), 2);
        assert_eq!(combine(8, None, None, Some(64)), 8);
        assert_eq!(combine(8, Some(8), Some(0.1), Some(3)), 1);
    }

    #[test]
    fn report_is_sane_here() {
        let r = cpu_report();
        assert!(r.count >= 1 && r.count <= r.machine);
    }
}
