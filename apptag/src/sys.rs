//! Small facts about the running system that several modules need: where cgroup v2 is
//! mounted, how kernel clocks map to wall-clock time, and which privileges we hold.
use std::path::PathBuf;

/// Finds the cgroup v2 mount from /proc/self/mounts. It is not always /sys/fs/cgroup: on
/// hybrid hosts (like the CI machines) it is /sys/fs/cgroup/unified.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_path(dir)))
    })
}

/// /proc/self/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Wall-clock time, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CLOCK_BOOTTIME in ns: the clock of `bpf_ktime_get_boot_ns`.
pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// Converts kernel CLOCK_BOOTTIME stamps to ns since the epoch, the clock of packet
/// stamps. Both clocks advance at the same NTP-disciplined rate, so their offset only
/// changes on a step of the wall clock (settimeofday, a leap second). Ownership is decided
/// by comparing a syscall's start with its packets' stamps, microseconds apart, so the
/// offset must be exact to well under that: it is taken from the tightest of several
/// samples.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    offset: i128,
    /// Half the realtime window the chosen boottime read sat in: the offset's error bound.
    uncertainty_ns: u64,
}

/// Samples taken by [`BootClock::new`]; one not preempted is enough.
const BOOT_CLOCK_SAMPLES: usize = 16;

impl BootClock {
    pub fn new() -> Self {
        let mut best = (i128::MAX, 0i128);
        for _ in 0..BOOT_CLOCK_SAMPLES {
            // Read boottime between two realtime samples to bound the error.
            let r1 = now_ns() as i128;
            let b = boottime_ns() as i128;
            let r2 = now_ns() as i128;
            if r2 - r1 < best.0 {
                best = (r2 - r1, (r1 + r2) / 2 - b);
            }
        }
        Self {
            offset: best.1,
            uncertainty_ns: (best.0.max(0) as u64).div_ceil(2),
        }
    }

    /// The most the offset can be wrong by, in ns (half the best sampling window).
    pub fn uncertainty_ns(&self) -> u64 {
        self.uncertainty_ns
    }

    pub fn to_epoch_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset).max(0) as u64
    }

    /// Boot time (ns since the epoch): add to /proc/PID/stat start times.
    pub fn boot_epoch_ns(&self) -> u64 {
        self.offset.max(0) as u64
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Mode of the files apptag writes (captures, rotated files, extracts): the owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// With `--group-read`: the owner's group may read too.
pub const GROUP_READ_FILE_MODE: u32 = 0o640;

/// Creates (or truncates) `path` with exactly `mode`, whatever the umask and whatever mode
/// an existing file had: packets are other users' traffic.
pub fn create_private(path: &std::path::Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Effective capabilities of this process, from /proc/self/status (CapEff).
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Names of the capabilities in `needed` that this process lacks.
pub fn missing_caps(needed: &[(u32, &'static str)]) -> Vec<&'static str> {
    let eff = effective_caps();
    needed
        .iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Clock ticks per second for /proc/PID/stat times.
pub fn clk_tck() -> u64 {
    // SAFETY: no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_like_the_kernel_reports_it() {
        // Oracle: the cgroup2 entry as `findmnt`-style parsing of the same file would see it;
        // on a host without cgroup2 both must agree there is none.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let has = mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("cgroup2"));
        let found = cgroup2_mount();
        assert_eq!(has, found.is_some());
        if let Some(p) = found {
            assert!(
                p.join("cgroup.procs").exists(),
                "{} is not a cgroup2 root",
                p.display()
            );
        }
    }

    #[test]
    fn unescapes_octal_in_mount_paths() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    /// A boottime read between two realtime reads must map inside that window, give or
    /// take the clock's own error bound; and that bound must be far below the microseconds
    /// that separate a syscall's start from its first packet.
    #[test]
    fn boot_clock_maps_now_to_now() {
        let c = BootClock::new();
        let u = c.uncertainty_ns() as i128;
        assert!(
            u <= 5_000,
            "boot clock offset known to only +-{u} ns in {BOOT_CLOCK_SAMPLES} samples"
        );
        for _ in 0..1000 {
            let r1 = now_ns() as i128;
            let mapped = c.to_epoch_ns(boottime_ns()) as i128;
            let r2 = now_ns() as i128;
            assert!(
                mapped >= r1 - u && mapped <= r2 + u,
                "boottime mapped to {mapped}, outside [{r1}, {r2}] +- {u} ns"
            );
        }
    }
}
