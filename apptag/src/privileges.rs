//! Giving up privileges once the sensor has started, as `tcpdump -Z` does.
//!
//! Everything that needs privileges happens at start: the eBPF programs are loaded and
//! attached (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN), the packet rings opened (CAP_NET_RAW) and
//! the first output file created. From then on the sensor reads file descriptors it already
//! holds. What it still does with privileges is read `/proc/PID/exe`, `/proc/PID/fd` and
//! `/proc/PID/environ`-class files of processes owned by other users, which the kernel
//! guards with a ptrace access check: that is [`KEEP`], CAP_SYS_PTRACE, and nothing else.
//!
//! Linux credentials belong to each thread, not to the process: a `capset` or a raw
//! `setresuid` changes only the calling thread. The sensor's attribution threads already run
//! when the drop happens, so [`drop_privileges`] makes every thread apply the change itself,
//! through a signal whose handler issues the same system calls (the way libcap's psx does),
//! and then checks `/proc/self/task/*/status` of every thread.
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::sys::CAP_SYS_PTRACE;

/// Capabilities kept after the drop, with why.
pub const KEEP: &[(u32, &str, &str)] = &[(
    CAP_SYS_PTRACE,
    "CAP_SYS_PTRACE",
    "read /proc/PID/exe and /proc/PID/fd of other users' processes (process names, \
     executables and the sockets of the procfs fallback)",
)];

/// The bits of [`KEEP`].
pub fn keep_mask() -> u64 {
    KEEP.iter().fold(0, |m, (bit, _, _)| m | (1u64 << bit))
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("no user named {0:?} on this system (give an existing user to -Z)")]
    NoSuchUser(String),
    #[error("looking up user {name:?}: {source}")]
    Lookup {
        name: String,
        source: std::io::Error,
    },
    #[error("changing to user {user} failed in {step}: {source}")]
    Switch {
        user: String,
        step: &'static str,
        source: std::io::Error,
    },
    #[error(
        "thread {tid} still has uid {uid} and capabilities {caps:#x} after the drop (wanted uid \
         {want_uid}, capabilities {want_caps:#x})"
    )]
    Incomplete {
        tid: u32,
        uid: u32,
        caps: u64,
        want_uid: u32,
        want_caps: u64,
    },
    #[error("{0} thread(s) did not apply the privilege drop within 5 s")]
    Timeout(usize),
}

/// The account `-Z` switches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of the user (its /etc/group memberships).
    pub groups: Vec<u32>,
}

impl User {
    /// Looks `name` up in the system's user database (a numeric uid is accepted too).
    pub fn lookup(name: &str) -> Result<Self, PrivilegeError> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| PrivilegeError::NoSuchUser(name.to_string()))?;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: passwd is plain old data filled by getpwnam_r/getpwuid_r.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf.len() is its size.
        let r = unsafe {
            match name.parse::<u32>() {
                Ok(uid) => libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found),
                Err(_) => libc::getpwnam_r(
                    cname.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                ),
            }
        };
        if r != 0 {
            return Err(PrivilegeError::Lookup {
                name: name.to_string(),
                source: std::io::Error::from_raw_os_error(r),
            });
        }
        if found.is_null() {
            return Err(PrivilegeError::NoSuchUser(name.to_string()));
        }
        let (uid, gid) = (pw.pw_uid, pw.pw_gid);
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: pw_name points into buf (alive); groups has room for n entries.
        let r = unsafe { libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if r < 0 { 0 } else { n.max(0) as usize });
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        Ok(User {
            name: name.to_string(),
            uid,
            gid,
            groups,
        })
    }
}

/// Most supplementary groups the handler can set (the kernel allows more; users rarely have
/// more than a handful).
const MAX_GROUPS: usize = 64;

// What every thread applies, set before the signal goes out. Atomics, because the signal
// handler may only touch async-signal-safe state.
static SWITCH: AtomicBool = AtomicBool::new(false);
static UID: AtomicU32 = AtomicU32::new(0);
static GID: AtomicU32 = AtomicU32::new(0);
static NGROUPS: AtomicUsize = AtomicUsize::new(0);
static GROUPS: [AtomicU32; MAX_GROUPS] = [const { AtomicU32::new(0) }; MAX_GROUPS];
static CAPS: AtomicU64 = AtomicU64::new(0);
static LAST_CAP: AtomicU32 = AtomicU32::new(40);
static DONE: AtomicUsize = AtomicUsize::new(0);
/// First failure: (step number << 16) | errno.
static FAILED: AtomicI32 = AtomicI32::new(0);

const STEPS: [&str; 6] = [
    "",
    "prctl(PR_SET_KEEPCAPS)",
    "setgroups",
    "setresgid",
    "setresuid",
    "capset",
];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The drop on the calling thread, with raw system calls only (it runs in a signal
/// handler). Returns 0, or (step << 16) | errno.
fn apply_here() -> i32 {
    let switch = SWITCH.load(Ordering::Acquire);
    let keep = CAPS.load(Ordering::Acquire);
    // SAFETY (whole function): plain system calls on this thread's own credentials, with
    // pointers to local or static data that outlive each call.
    unsafe {
        if switch && libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return (1 << 16) | errno();
        }
        // The bounding set too, so an exec cannot get the rest back. Needs CAP_SETPCAP, which
        // a non-root sensor usually lacks: its bounding set is then left as it is.
        for cap in 0..=LAST_CAP.load(Ordering::Relaxed) {
            if keep & (1u64 << cap) == 0 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
        }
        if switch {
            let n = NGROUPS.load(Ordering::Acquire).min(MAX_GROUPS);
            let mut groups = [0 as libc::gid_t; MAX_GROUPS];
            for (g, a) in groups.iter_mut().zip(GROUPS.iter()).take(n) {
                *g = a.load(Ordering::Acquire);
            }
            let (uid, gid) = (UID.load(Ordering::Acquire), GID.load(Ordering::Acquire));
            if libc::syscall(libc::SYS_setgroups, n, groups.as_ptr()) != 0 {
                return (2 << 16) | errno();
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
                return (3 << 16) | errno();
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                return (4 << 16) | errno();
            }
        }
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: keep as u32,
                permitted: keep as u32,
                inheritable: 0,
            },
            CapData {
                effective: (keep >> 32) as u32,
                permitted: (keep >> 32) as u32,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return (5 << 16) | errno();
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if switch {
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    0
}

extern "C" fn on_signal(_: libc::c_int) {
    let r = apply_here();
    if r != 0 {
        let _ = FAILED.compare_exchange(0, r, Ordering::AcqRel, Ordering::Acquire);
    }
    DONE.fetch_add(1, Ordering::AcqRel);
}

fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

fn task_ids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// (uid, CapEff, CapPrm) of thread `tid`, from its status file.
fn thread_creds(tid: u32) -> Option<(u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    let uid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    let eff = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
    let prm = u64::from_str_radix(field("CapPrm:")?, 16).ok()?;
    Some((uid, eff, prm))
}

/// Switches every thread of the process to `user` (when given) and leaves each with only the
/// capabilities of [`KEEP`] that it holds now. Returns the capabilities kept.
pub fn drop_privileges(user: Option<&User>) -> Result<u64, PrivilegeError> {
    let me = gettid();
    let held = thread_creds(me).map_or(0, |(_, _, prm)| prm);
    let keep = keep_mask() & held;
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    SWITCH.store(user.is_some(), Ordering::Release);
    if let Some(u) = user {
        UID.store(u.uid, Ordering::Release);
        GID.store(u.gid, Ordering::Release);
        let n = u.groups.len().min(MAX_GROUPS);
        for (a, g) in GROUPS.iter().zip(&u.groups).take(n) {
            a.store(*g, Ordering::Release);
        }
        NGROUPS.store(n, Ordering::Release);
    }
    CAPS.store(keep, Ordering::Release);
    LAST_CAP.store(last_cap, Ordering::Release);
    DONE.store(0, Ordering::Release);
    FAILED.store(0, Ordering::Release);

    let sig = libc::SIGRTMIN() + 6;
    // SAFETY: sigaction with a handler that only makes system calls and touches atomics;
    // SA_RESTART so that the interrupted threads' blocking calls resume.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, &mut old);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut sent = 0;
    for tid in task_ids().into_iter().filter(|&t| t != me) {
        // SAFETY: tgkill to a thread of our own process; a thread gone meanwhile is ESRCH.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } == 0 {
            sent += 1;
        }
    }
    let r = apply_here();
    let deadline = Instant::now() + Duration::from_secs(5);
    while DONE.load(Ordering::Acquire) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: puts back the disposition saved above.
    unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    let failed = if r != 0 {
        r
    } else {
        FAILED.load(Ordering::Acquire)
    };
    let name = user.map_or_else(|| "the current user".to_string(), |u| u.name.clone());
    if failed != 0 {
        return Err(PrivilegeError::Switch {
            user: name,
            step: STEPS.get((failed >> 16) as usize).copied().unwrap_or("?"),
            source: std::io::Error::from_raw_os_error(failed & 0xffff),
        });
    }
    let done = DONE.load(Ordering::Acquire);
    if done < sent {
        return Err(PrivilegeError::Timeout(sent - done));
    }
    // Every thread, as the kernel reports it.
    let want_uid = user.map_or_else(|| thread_creds(me).map_or(0, |c| c.0), |u| u.uid);
    for tid in task_ids() {
        if let Some((uid, eff, _)) = thread_creds(tid)
            && (uid != want_uid || eff != keep)
        {
            return Err(PrivilegeError::Incomplete {
                tid,
                uid,
                caps: eff,
                want_uid,
                want_caps: keep,
            });
        }
    }
    Ok(keep)
}

/// Names of the capabilities in `mask`, for messages.
pub fn cap_names(mask: u64) -> Vec<&'static str> {
    KEEP.iter()
        .filter(|(bit, _, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name, _)| *name)
        .collect()
}
