//! What we know about processes: read from /proc once per process, kept after the process
//! exits, and keyed by (pid, start time) so a reused pid is never confused with the old
//! process.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{model::ProcessInfo, sys::BootClock};

/// Process details read from /proc by the event thread the moment a new (pid, comm) shows
/// up, before the merge thread gets to it (by then a short-lived process is often gone).
#[derive(Clone, Default)]
pub struct Prefetch(Arc<Mutex<HashMap<u32, ProcessInfo>>>);

impl Prefetch {
    /// Reads /proc/PID unless the same process (pid and name) is already cached.
    pub fn observe(&self, pid: u32, comm: &str, clock: BootClock) {
        let known = self
            .0
            .lock()
            .is_ok_and(|m| m.get(&pid).is_some_and(|p| p.name == comm));
        if known {
            return;
        }
        if let Some(info) = read_proc(pid, clock.boot_epoch_ns(), crate::sys::clk_tck())
            && info.name == comm
            && let Ok(mut m) = self.0.lock()
        {
            // Bounded: a host that forks constantly must not grow this forever.
            if m.len() > 65_536 {
                m.clear();
            }
            m.insert(pid, info);
        }
    }

    fn get(&self, pid: u32, comm: &str) -> Option<ProcessInfo> {
        self.0
            .lock()
            .ok()?
            .get(&pid)
            .filter(|p| p.name == comm)
            .cloned()
    }
}

/// Process identity that survives pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: u32,
    pub start_ns: u64,
}

#[derive(Default)]
pub struct ProcessTable {
    /// Every process seen, in order of appearance per pid (oldest first).
    by_pid: HashMap<u32, Vec<ProcessInfo>>,
    boot_ns: u64,
    tck: u64,
    prefetch: Prefetch,
}

impl ProcessTable {
    pub fn new(clock: BootClock) -> Self {
        Self::with_prefetch(clock, Prefetch::default())
    }

    pub fn with_prefetch(clock: BootClock, prefetch: Prefetch) -> Self {
        Self {
            by_pid: HashMap::new(),
            boot_ns: clock.boot_epoch_ns(),
            tck: crate::sys::clk_tck(),
            prefetch,
        }
    }

    /// Returns the process `pid` whose kernel name is `comm`, reading /proc if it is new.
    /// `seen_ns` is when the kernel saw it (used as start time if /proc is already gone).
    pub fn observe(&mut self, pid: u32, comm: &str, seen_ns: u64) -> ProcKey {
        if let Some(list) = self.by_pid.get(&pid)
            && let Some(last) = list.last()
            && last.name == comm
            && last.start_ns <= seen_ns.saturating_add(1_000_000_000)
        {
            return ProcKey {
                pid,
                start_ns: last.start_ns,
            };
        }
        // New pid, a pid reused by another program, or an exec (comm changed).
        let mut info = self
            .prefetch
            .get(pid, comm)
            .or_else(|| read_proc(pid, self.boot_ns, self.tck))
            .unwrap_or_default();
        if info.pid == 0 || (!comm.is_empty() && info.name != comm) {
            // Gone already (or reused between event and look-up): keep what the kernel told us.
            info = ProcessInfo {
                pid,
                name: comm.to_string(),
                start_ns: seen_ns,
                ..ProcessInfo::default()
            };
        }
        let key = ProcKey {
            pid,
            start_ns: info.start_ns,
        };
        let list = self.by_pid.entry(pid).or_default();
        if !list
            .iter()
            .any(|p| p.start_ns == info.start_ns && p.name == info.name)
        {
            list.push(info);
        }
        key
    }

    pub fn get(&self, key: ProcKey) -> Option<&ProcessInfo> {
        self.by_pid
            .get(&key.pid)?
            .iter()
            .rev()
            .find(|p| p.start_ns == key.start_ns)
    }

    /// The process that had `pid` at time `ts_ns`.
    pub fn at(&self, pid: u32, ts_ns: u64) -> Option<&ProcessInfo> {
        let list = self.by_pid.get(&pid)?;
        list.iter()
            .rev()
            .find(|p| p.start_ns <= ts_ns)
            .or_else(|| list.first())
    }

    /// Number of processes held.
    pub fn len(&self) -> usize {
        self.by_pid.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Forgets `n` processes: first those `live` says no socket names, then the others,
    /// oldest start first. Returns how many went.
    pub fn evict_oldest(&mut self, n: usize, live: impl Fn(ProcKey) -> bool) -> usize {
        let mut order: Vec<(bool, u64, u32)> = Vec::with_capacity(self.len());
        for (&pid, list) in &self.by_pid {
            for p in list {
                let key = ProcKey {
                    pid,
                    start_ns: p.start_ns,
                };
                order.push((live(key), p.start_ns, pid));
            }
        }
        order.sort_unstable();
        let gone: std::collections::HashSet<(u32, u64)> = order
            .iter()
            .take(n)
            .map(|&(_, start, pid)| (pid, start))
            .collect();
        let before = self.len();
        self.retain(|k| !gone.contains(&(k.pid, k.start_ns)));
        before - self.len()
    }

    /// Keeps only the processes `keep` says are still referenced.
    pub fn retain(&mut self, mut keep: impl FnMut(ProcKey) -> bool) {
        self.by_pid.retain(|&pid, list| {
            list.retain(|p| {
                keep(ProcKey {
                    pid,
                    start_ns: p.start_ns,
                })
            });
            !list.is_empty()
        });
    }
}

/// Reads /proc/PID. Returns None if the process is gone.
pub fn read_proc(pid: u32, boot_ns: u64, tck: u64) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // comm may contain spaces and parentheses: it ends at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // Fields after comm start at field 3 (state); ppid is field 4, starttime field 22.
    let ppid = rest.get(1)?.parse().unwrap_or(0);
    let start_ticks: u64 = rest.get(19)?.parse().unwrap_or(0);
    let start_ns = boot_ns + start_ticks * (1_000_000_000 / tck.max(1));
    let cmdline = std::fs::read(format!("{base}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let exe = std::fs::read_link(format!("{base}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let uid = std::fs::read_to_string(format!("{base}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0);
    let cgroup = std::fs::read_to_string(format!("{base}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid,
        uid,
        user: user_name(uid),
        container_id: container_id(&cgroup),
        name,
        exe,
        cmdline,
        start_ns,
        cgroup,
    })
}

/// The user name for `uid` from /etc/passwd (no NSS: good enough for local accounts),
/// cached: every new process asks, and rereading the file each time costs more than the
/// rest of the /proc reads.
pub fn user_name(uid: u32) -> String {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<u32, String>>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(n) = cache.lock().ok().and_then(|c| c.get(&uid).cloned()) {
        return n;
    }
    let name = read_user_name(uid);
    if let Ok(mut c) = cache.lock() {
        c.insert(uid, name.clone());
    }
    name
}

fn read_user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_default()
}

/// Docker, containerd, CRI-O and podman put a 64-hex-digit id in the cgroup path.
pub fn container_id(cgroup: &str) -> String {
    cgroup
        .split(['/', '-', '.', ':'])
        .find(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default()
        .to_string()
}

/// Maps socket inode -> owning pid by scanning /proc/*/fd. Costs one readlink per open fd on
/// the host, so callers rate-limit it.
pub fn socket_inodes() -> HashMap<u64, u32> {
    let mut map = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return map;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
            {
                // The first (lowest) pid wins for sockets shared across fork: usually the parent.
                map.entry(inode).or_insert(pid);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_like_ps_does() {
        let clock = BootClock::new();
        let me = read_proc(
            std::process::id(),
            clock.boot_epoch_ns(),
            crate::sys::clk_tck(),
        )
        .expect("own /proc entry");
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(me.name, comm.trim());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.exe, exe.to_string_lossy());
        // Started before now, and not before boot.
        assert!(me.start_ns <= crate::sys::now_ns());
        assert!(me.start_ns >= clock.boot_epoch_ns());
    }

    #[test]
    fn finds_own_socket_inode() {
        use std::os::unix::fs::MetadataExt;
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = &s;
        let me = std::process::id();
        let inodes = socket_inodes();
        // Oracle: fstat on our own fd gives the inode the kernel uses in /proc.
        use std::os::fd::AsRawFd;
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap();
        assert_eq!(inodes.get(&meta.ino()), Some(&me));
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")),
            id
        );
        assert_eq!(container_id("/user.slice/user-0.slice"), "");
    }

    #[test]
    fn pid_reuse_gives_a_new_identity() {
        let mut t = ProcessTable::new(BootClock::new());
        // A pid far above pid_max, so /proc has nothing and the kernel's word is used.
        let a = t.observe(4_000_000_001, "first", 1_000);
        let b = t.observe(4_000_000_001, "second", 5_000_000_000);
        assert_ne!(a, b);
        assert_eq!(
            t.at(4_000_000_001, 2_000).map(|p| p.name.as_str()),
            Some("first")
        );
        assert_eq!(
            t.at(4_000_000_001, 6_000_000_000).map(|p| p.name.as_str()),
            Some("second")
        );
    }
}
