//! The live sensor: capture threads -> bounded queues -> one merge/write thread.
//!
//! Capture threads (one per fanout member, so one per CPU) copy ring packets into batches
//! of at most `BATCH_BYTES` and hand them over their own bounded queue. When the writer falls behind, the
//! channel fills and the capture threads wait, so the kernel rings (`-B`, 32 MiB per interface by default) absorb
//! the burst; only when they are full too does the kernel drop, and it counts every drop
//! (PACKET_STATISTICS), which goes into the file's interface statistics. Nothing is lost
//! silently and memory stays bounded. The merge thread holds packets for a short
//! window so that the kernel events describing their sockets (which can arrive just after
//! an ingress packet) are applied before the packet is tagged, then writes the pcapng.
mod cgroup;
mod merge;
mod naming;
mod output;
mod queue;
mod reorder;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::TryRecvError,
    },
    time::{Duration, Instant},
};

pub use crate::model::Summary;
pub use naming::{default_output, file_name};
pub use output::Rotation;

use crate::{
    model::InterfaceInfo,
    pcapng::PcapngError,
    sensor::attribution::table::Limits,
    sensor::attribution::{AttributionError, Attributor, Mode, ledger::Ledger},
    sensor::capture::{Capture, CaptureConfig, CaptureError, RingConfig},
    sensor::probes::ProbeConfig,
};
use cgroup::CgroupFilter;
use merge::Merge;
use output::Output;
use queue::start_threads;
use reorder::Reorder;

/// Packets are tagged only once they are this old, so late socket events are applied first.
const MERGE_DELAY_NS: u64 = 100_000_000;
/// How long the writer sleeps when no queue has anything (far below the merge delay).
const IDLE_WAIT: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Attribution(#[from] AttributionError),
    #[error("output {path}: {source}")]
    Output { path: PathBuf, source: PcapngError },
    #[error(
        "{path}: the file system is full, so the capture stopped. The file keeps its {packets} \
         packets ({bytes} bytes){kept}. Free space, write elsewhere (-w) or rotate into a ring \
         of files (-C MB -W FILES)"
    )]
    DiskFull {
        path: PathBuf,
        packets: u64,
        bytes: u64,
        /// What the space kept in reserve held, as a clause.
        kept: String,
    },
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
    #[error("cannot give {path} to user {user}: {source}")]
    Chown {
        path: PathBuf,
        user: String,
        source: std::io::Error,
    },
    #[error("could not start a capture thread: {0}")]
    Thread(std::io::Error),
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct SensorConfig {
    pub interfaces: Vec<String>,
    pub output: PathBuf,
    pub snaplen: u32,
    pub promisc: bool,
    pub filter: Option<String>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub attribution: Mode,
    pub workers: usize,
    /// Ring memory per interface, shared by its `workers` capture threads (`-B`).
    pub ring_bytes: u64,
    /// How often new and changed application records are appended.
    pub app_interval: Duration,
    pub rotation: Rotation,
    /// Keep only packets of these pids / comms (empty = all).
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// cgroup paths (as in /proc/PID/cgroup, e.g. `/system.slice/nginx.service`) or
    /// container ids; a process matches when its cgroup is at or below one of them.
    pub cgroups: Vec<String>,
    /// Mode of every file written (exactly, whatever the umask).
    pub file_mode: u32,
    /// What to give up once the probes, rings and first file are in place.
    pub privileges: Privileges,
    /// Live flow-record export (`--export`): fed each periodic and final table, never
    /// waited on (see `export::live`).
    pub export: Option<crate::export::ExportHandle>,
    /// Caps of the socket and process tables; the socket cap also bounds the sockets of
    /// one file held between periodic blocks.
    pub limits: Limits,
}

/// What the sensor keeps once started (see [`crate::privileges`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Privileges {
    /// Everything it started with.
    #[default]
    Keep,
    /// Only the capabilities of `privileges::KEEP`, as the same user.
    DropCapabilities,
    /// Become this user (files are then created in a directory it can write), with only
    /// the capabilities of `privileges::KEEP`.
    Switch(crate::privileges::User),
}

pub fn run(cfg: &SensorConfig, stop: Arc<AtomicBool>) -> Result<Summary, PipelineError> {
    // Cheap checks first, so a typo costs nothing: interface names and the filter. Then
    // the kernel programs, and only then the rings, so that every packet captured can be
    // attributed; the output file is created last and so never left behind by a failed
    // start.
    for name in &cfg.interfaces {
        let iface = crate::sensor::capture::iface::lookup(name)?;
        if let Some(f) = &cfg.filter {
            crate::sensor::capture::filter::check(f, iface.linktype)?;
        }
    }
    let mut attributor = start_attribution(cfg.attribution)?;
    attributor.set_limits(cfg.limits);
    let mut captures = Vec::new();
    for (i, name) in cfg.interfaces.iter().enumerate() {
        let mut c = CaptureConfig::new(name);
        c.snaplen = cfg.snaplen;
        c.promisc = cfg.promisc;
        c.filter = cfg.filter.clone();
        c.idb_index = i as u32;
        c.ring = RingConfig::for_buffer(cfg.ring_bytes, cfg.workers)?;
        captures.push(Capture::open(&c, cfg.workers)?);
    }
    let infos: Vec<InterfaceInfo> = captures.iter().map(Capture::info).collect();
    let mut out = Output::create(cfg, &infos)?;
    crate::sensor::probes::log_status(attributor.probe_status());
    give_up_privileges(cfg, &out.path)?;
    let loopback = infos
        .iter()
        // On loopback each packet has a local sender and a local receiver, and the capture
        // keeps only the incoming copy: attribute it to its sender first.
        .map(|i| crate::sensor::capture::iface::lookup(&i.name).is_ok_and(|i| i.is_loopback()))
        .collect();
    let threads = start_threads(&mut captures)?;
    let mut queues = threads.queues;
    let started = Instant::now();
    let mut merge = Merge {
        cgroups: CgroupFilter::default(),
        ledger: Ledger::new(cfg.limits.max_sockets),
        summary: Summary::default(),
        linktypes: infos.iter().map(|i| i.linktype).collect(),
        loopback,
    };
    let mut reorder = Reorder::default();
    let mut last_apps = Instant::now();
    let mut status = crate::sensor::status::StatusLine::new();
    let mut stopping = false;
    loop {
        if !stopping
            && (stop.load(Ordering::Relaxed)
                || out.finished
                || out.full()
                || cfg.duration.is_some_and(|d| started.elapsed() >= d)
                || cfg.count.is_some_and(|c| merge.summary.written >= c))
        {
            stopping = true;
            for s in &threads.stops {
                s.stop();
            }
        }
        // Each capture thread has its own queue; take what every one has.
        let mut got = false;
        queues.retain(|q| {
            loop {
                match q.try_recv() {
                    Ok(b) => {
                        got = true;
                        reorder.push(b);
                    }
                    Err(TryRecvError::Empty) => break true,
                    // That thread is done (stopped, or its ring failed).
                    Err(TryRecvError::Disconnected) => break false,
                }
            }
        });
        // All capture threads are done: tag and write what is left, then stop.
        let disconnected = queues.is_empty();
        if !got && !disconnected {
            std::thread::sleep(IDLE_WAIT);
        }
        attributor.poll();
        let horizon = if stopping || disconnected {
            u64::MAX
        } else {
            crate::sys::now_ns().saturating_sub(MERGE_DELAY_NS)
        };
        reorder.release(horizon, |b, i| {
            merge.write_one(b, i, &mut attributor, &mut out, &captures, cfg)
        })?;
        if disconnected {
            break;
        }
        // The first application of each file is recorded at once: a capture that ends
        // early (full disk, kill) must not depend on the first interval having passed.
        let first = !out.apps_written && !merge.ledger.is_empty();
        if first || last_apps.elapsed() >= cfg.app_interval {
            last_apps = Instant::now();
            let apps = merge.ledger.apps();
            out.periodic(&apps)?;
            if let Some(x) = &cfg.export {
                x.table(&out.path, &apps, merge.ledger.processes());
            }
            // Every socket's record is in the file now: those that are over leave memory.
            if out.apps_written {
                let gone = merge.ledger.retire(attributor.table());
                if !gone.is_empty() {
                    let gone_apps = gone.apps();
                    let ledger = &merge.ledger;
                    out.writer.forget(
                        &gone_apps,
                        gone.processes()
                            .filter(|p| !ledger.has_process(p))
                            .map(|p| (p.pid, p.start_ns)),
                    );
                    if let Some(x) = &cfg.export {
                        x.retired(&out.path, &gone_apps, gone.processes());
                    }
                }
            }
            let ev = attributor.table().evictions();
            merge.summary.evicted_sockets = ev.sockets + merge.ledger.evicted();
            merge.summary.evicted_processes = ev.processes;
        }
        if status.due() {
            let export = cfg.export.as_ref().map(|x| x.counters());
            status.update(&merge.summary, &merge.ledger.top(3), export.as_ref());
        }
    }
    for t in threads.threads {
        let _ = t.join();
    }
    status.clear();
    merge.summary.kernel_dropped = captures.iter().map(|c| c.stats().os_dropped).sum();
    let apps = merge.ledger.apps();
    if let Some(x) = &cfg.export {
        x.end_of_file(&out.path, &apps, merge.ledger.processes());
    }
    out.close(&apps, &captures)?;
    if let Some(k) = attributor.kernel_stats()
        && k.ringbuf_full > 0
    {
        log::warn!(
            "{} socket events were lost: the kernel event ring was full",
            k.ringbuf_full
        );
    }
    Ok(merge.summary)
}

/// Before any capture thread starts, so that they inherit the reduced credentials.
fn give_up_privileges(
    cfg: &SensorConfig,
    first_file: &std::path::Path,
) -> Result<(), PipelineError> {
    let user = match &cfg.privileges {
        Privileges::Keep => return Ok(()),
        Privileges::DropCapabilities => None,
        Privileges::Switch(u) => {
            // The first file was created as root; the ring overwrites it later as the user.
            std::os::unix::fs::chown(first_file, Some(u.uid), Some(u.gid)).map_err(|source| {
                PipelineError::Chown {
                    path: first_file.to_path_buf(),
                    user: u.name.clone(),
                    source,
                }
            })?;
            Some(u)
        }
    };
    let kept = crate::privileges::drop_privileges(user)?;
    let caps = crate::privileges::cap_names(kept);
    log::info!(
        "privileges dropped: running as {}, keeping {}",
        user.map_or_else(
            || "the same user".to_string(),
            |u| format!("{} (uid {})", u.name, u.uid)
        ),
        if caps.is_empty() {
            "no capabilities".to_string()
        } else {
            caps.join(", ")
        }
    );
    Ok(())
}

/// eBPF attribution, or procfs with a warning when the host has no cgroup v2.
fn start_attribution(mode: Mode) -> Result<Attributor, PipelineError> {
    match Attributor::start(mode, &ProbeConfig::default()) {
        Err(AttributionError::Probes(crate::sensor::probes::ProbeError::NoCgroup2)) => {
            log::warn!(
                "no cgroup v2 hierarchy is mounted: falling back to procfs attribution, which \
                 misses short-lived processes (mount cgroup2 to get eBPF attribution)"
            );
            Ok(Attributor::start(Mode::Procfs, &ProbeConfig::default())?)
        }
        r => Ok(r?),
    }
}
