//! Loading and attaching the kernel programs embedded in this binary, and reading their
//! events.
//!
//! Every program is optional on its own: a kernel that lacks one hook loses only what that
//! hook sees, and [`Probes::status`] says which ones are attached so the user can judge.
use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::PathBuf,
};

use apptag_common::{SockEvent, stat};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, SockOps,
        links::CgroupAttachMode,
    },
};
use log::debug;

/// The eBPF object built from `apptag-ebpf` by the build script. Empty when built with
/// `AYA_BUILD_SKIP=1`.
pub static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/apptag"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this apptag binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild \
         with `cargo xtask build`, or use `--attribution procfs`"
    )]
    NoKernelObject,
    #[error(
        "no cgroup v2 hierarchy is mounted (none in /proc/self/mounts); mount one with \
         `mount -t cgroup2 none /sys/fs/cgroup/unified` or use `--attribution procfs`"
    )]
    NoCgroup2,
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "loading the kernel programs failed: {0}. apptag needs root, or CAP_BPF, CAP_PERFMON, \
         CAP_NET_ADMIN and CAP_SYS_RESOURCE{1}"
    )]
    Load(#[source] Box<aya::EbpfError>, String),
    #[error("the kernel object has no map `{0}`: binary and kernel programs do not match")]
    MissingMap(&'static str),
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("none of the attribution programs could be attached: {0}")]
    NothingAttached(String),
}

/// Where a program hooks and whether it is attached.
#[derive(Clone, Debug)]
pub struct ProgramStatus {
    pub program: String,
    pub hook: &'static str,
    /// None when attached; otherwise why not.
    pub error: Option<String>,
}

impl ProgramStatus {
    pub fn attached(&self) -> bool {
        self.error.is_none()
    }
}

/// Counters kept by the kernel programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    pub events: u64,
    pub skb_packets: u64,
}

/// Options for [`Probes::attach`].
#[derive(Clone, Debug, Default)]
pub struct ProbeConfig {
    /// cgroup v2 directory to attach the cgroup programs to; default: the hierarchy root, so
    /// every process on the host is seen.
    pub cgroup: Option<PathBuf>,
}

/// (program name in the object, what it hooks)
pub const PROGRAMS: &[(&str, &str)] = &[
    ("apptag_sock_create", "cgroup/sock_create"),
    ("apptag_post_bind4", "cgroup/post_bind4"),
    ("apptag_post_bind6", "cgroup/post_bind6"),
    ("apptag_sock_release", "cgroup/sock_release"),
    ("apptag_connect4", "cgroup/connect4"),
    ("apptag_connect6", "cgroup/connect6"),
    ("apptag_sendmsg4", "cgroup/sendmsg4"),
    ("apptag_sendmsg6", "cgroup/sendmsg6"),
    ("apptag_recvmsg4", "cgroup/recvmsg4"),
    ("apptag_recvmsg6", "cgroup/recvmsg6"),
    ("apptag_sockops", "sock_ops"),
    ("apptag_send_length", "tp_btf/sock_send_length"),
    ("apptag_recv_length", "tp_btf/sock_recv_length"),
    ("apptag_tcp_sendmsg", "tp_btf/tcp_sendmsg_locked"),
    ("apptag_skb_egress", "cgroup_skb/egress"),
    ("apptag_skb_ingress", "cgroup_skb/ingress"),
];

/// The loaded kernel programs. Dropping it detaches them all.
pub struct Probes {
    ebpf: Ebpf,
    status: Vec<ProgramStatus>,
}

impl Probes {
    /// Loads the embedded object and attaches every program it can.
    pub fn attach(config: &ProbeConfig) -> Result<Self, ProbeError> {
        if KERNEL_OBJECT.is_empty() {
            return Err(ProbeError::NoKernelObject);
        }
        raise_memlock();
        let cgroup = match &config.cgroup {
            Some(p) => p.clone(),
            None => crate::sys::cgroup2_mount().ok_or(ProbeError::NoCgroup2)?,
        };
        let cgroup_file = File::open(&cgroup).map_err(|source| ProbeError::Cgroup {
            path: cgroup.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new().load(KERNEL_OBJECT).map_err(|e| {
            let caps = crate::sys::missing_caps(&[
                (crate::sys::CAP_BPF, "CAP_BPF"),
                (crate::sys::CAP_PERFMON, "CAP_PERFMON"),
                (crate::sys::CAP_NET_ADMIN, "CAP_NET_ADMIN"),
                (crate::sys::CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"),
            ]);
            let hint = if caps.is_empty() {
                String::new()
            } else {
                format!(" (this process lacks {})", caps.join(", "))
            };
            ProbeError::Load(Box::new(e), hint)
        })?;
        let btf = Btf::from_sys_fs().ok();
        let mut status = Vec::with_capacity(PROGRAMS.len());
        for &(name, hook) in PROGRAMS {
            let error = attach_one(&mut ebpf, name, hook, cgroup_file.as_fd(), btf.as_ref())
                .err()
                .inspect(|e| debug!("{hook}: not attached: {e}"));
            if error.is_none() {
                debug!("{hook}: attached ({name})");
            }
            status.push(ProgramStatus {
                program: name.to_string(),
                hook,
                error,
            });
        }
        // A program added to the kernel crate but not to PROGRAMS would silently never run.
        for (name, _) in ebpf.programs() {
            if !PROGRAMS.iter().any(|&(n, _)| n == name) {
                status.push(ProgramStatus {
                    program: name.to_string(),
                    hook: "unknown",
                    error: Some("in the kernel object but not in apptag's attach list".into()),
                });
            }
        }
        if !status.iter().any(ProgramStatus::attached) {
            let why = status
                .iter()
                .filter_map(|s| s.error.as_deref().map(|e| format!("{}: {e}", s.hook)))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ProbeError::NothingAttached(why));
        }
        Ok(Self { ebpf, status })
    }

    pub fn status(&self) -> &[ProgramStatus] {
        &self.status
    }

    /// Takes the event ring buffer. Call once; the stream lives independently of `self`
    /// (but events stop when `self` is dropped and the programs detach).
    pub fn events(&mut self) -> Result<EventStream, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source: Box::new(source),
        })?;
        Ok(EventStream { ring })
    }

    /// Reads the kernel-side counters, summed over CPUs.
    pub fn kernel_stats(&self) -> Result<KernelStats, ProbeError> {
        let map = self
            .ebpf
            .map("STATS")
            .ok_or(ProbeError::MissingMap("STATS"))?;
        let arr = PerCpuArray::<_, u64>::try_from(map).map_err(|source| ProbeError::Map {
            name: "STATS",
            source: Box::new(source),
        })?;
        let sum = |idx: u32| -> u64 {
            arr.get(&idx, 0)
                .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
                .unwrap_or(0)
        };
        Ok(KernelStats {
            ringbuf_full: sum(stat::RINGBUF_FULL),
            events: sum(stat::EVENTS),
            skb_packets: sum(stat::SKB_PACKETS),
        })
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &str,
    hook: &str,
    cgroup: std::os::fd::BorrowedFd<'_>,
    btf: Option<&Btf>,
) -> Result<(), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the kernel object"))?;
    // On kernels >= 5.7 aya attaches through BPF links, which always coexist with other
    // programs (systemd's, a second apptag); the link API rejects any multi-attach flag.
    let mode = CgroupAttachMode::Single;
    let err = |e: &dyn std::fmt::Display| short_error(e);
    if hook.starts_with("cgroup/sock_create")
        || hook.starts_with("cgroup/post_bind")
        || hook.starts_with("cgroup/sock_release")
    {
        let p: &mut CgroupSock = prog.try_into().map_err(|e| err(&e))?;
        p.load().map_err(|e| err(&e))?;
        p.attach(cgroup, mode).map_err(|e| err(&e))?;
    } else if hook.starts_with("cgroup/") {
        let p: &mut CgroupSockAddr = prog.try_into().map_err(|e| err(&e))?;
        p.load().map_err(|e| err(&e))?;
        p.attach(cgroup, mode).map_err(|e| err(&e))?;
    } else if hook == "sock_ops" {
        let p: &mut SockOps = prog.try_into().map_err(|e| err(&e))?;
        p.load().map_err(|e| err(&e))?;
        p.attach(cgroup, mode).map_err(|e| err(&e))?;
    } else if let Some(tp) = hook.strip_prefix("tp_btf/") {
        let btf = btf.ok_or("kernel BTF (/sys/kernel/btf/vmlinux) is not available")?;
        let p: &mut BtfTracePoint = prog.try_into().map_err(|e| err(&e))?;
        p.load(tp, btf).map_err(|e| err(&e))?;
        p.attach().map_err(|e| err(&e))?;
    } else if let Some(dir) = hook.strip_prefix("cgroup_skb/") {
        let p: &mut CgroupSkb = prog.try_into().map_err(|e| err(&e))?;
        p.load().map_err(|e| err(&e))?;
        let at = if dir == "egress" {
            CgroupSkbAttachType::Egress
        } else {
            CgroupSkbAttachType::Ingress
        };
        p.attach(cgroup, at, mode).map_err(|e| err(&e))?;
    } else {
        return Err(format!("unknown hook {hook}"));
    }
    Ok(())
}

/// Load errors carry the whole verifier log; keep the head and the verdict at the end.
fn short_error(e: &dyn std::fmt::Display) -> String {
    let mut full = format!("{e}");
    let mut src: Option<&dyn std::error::Error> = None;
    let _ = &mut src;
    if full.lines().count() > 8 {
        let lines: Vec<&str> = full.lines().collect();
        let head = lines[0];
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        full = format!("{head} ... {tail}");
    }
    full
}

/// Old kernels charge BPF memory to RLIMIT_MEMLOCK; new ones to the memory cgroup. Raising
/// the limit is harmless either way.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid resource and pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The kernel's socket-event ring buffer.
pub struct EventStream {
    ring: RingBuf<MapData>,
}

impl EventStream {
    /// Calls `f` for every event currently in the ring; returns how many. Never blocks.
    pub fn drain(&mut self, mut f: impl FnMut(&SockEvent)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<SockEvent>() {
                // SAFETY: SockEvent is plain old data, the kernel wrote exactly this layout,
                // and read_unaligned copes with any alignment of the ring slot.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<SockEvent>()) };
                f(&ev);
                n += 1;
            }
        }
        n
    }
}

impl AsRawFd for EventStream {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// Logs one line for the attached hooks and one warning per hook that is not.
pub fn log_status(status: &[ProgramStatus]) {
    let ok: Vec<&str> = status
        .iter()
        .filter(|s| s.attached())
        .map(|s| s.hook)
        .collect();
    if !ok.is_empty() {
        log::info!("attached {} hooks: {}", ok.len(), ok.join(" "));
    }
    for s in status {
        if let Some(e) = &s.error {
            log::warn!(
                "hook {} not attached (its events will be missing): {e}",
                s.hook
            );
        }
    }
}
