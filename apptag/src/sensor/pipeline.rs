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
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, SyncSender, TryRecvError},
    },
    time::{Duration, Instant},
};

use crate::{
    dissect::dissect,
    model::{AppRecord, Direction, InterfaceInfo, InterfaceStats, Packet, SocketRecord, proto},
    pcapng::{PcapngError, SectionInfo, Writer},
    sensor::attribution::{
        AttributionError, Attributor, Mode, process::ProcKey, table::SocketTable,
    },
    sensor::capture::{Capture, CaptureConfig, CaptureError, RingConfig, StopHandle},
    sensor::probes::ProbeConfig,
};

/// Packets are tagged only once they are this old, so late socket events are applied first.
const MERGE_DELAY_NS: u64 = 100_000_000;
/// Batches in flight between each capture thread and the writer (at most
/// QUEUE_BATCHES x BATCH_BYTES = 4 MiB of packet data per thread: the kernel ring, not this
/// queue, is where bursts wait, and its size is the one the user chooses).
const QUEUE_BATCHES: usize = 16;
/// How long the writer sleeps when no queue has anything (far below the merge delay).
const IDLE_WAIT: Duration = Duration::from_millis(2);
const BATCH_BYTES: usize = 256 << 10;
/// How long the end of a capture waits for the exporter to deliver the last file's final
/// records before that file's statistics take the export counters as they are.
const EXPORT_SETTLE: Duration = Duration::from_secs(5);

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

/// Totals printed at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub captured: u64,
    pub written: u64,
    pub attributed: u64,
    pub kernel_dropped: u64,
    pub bytes: u64,
}

struct Batch {
    iface: u32,
    data: Vec<u8>,
    /// (ts_ns, orig_len, offset, len, direction)
    pkts: Vec<(u64, u32, u32, u32, Direction)>,
}

impl Batch {
    fn new(iface: u32) -> Self {
        Self {
            iface,
            data: Vec::with_capacity(256 * 1024),
            pkts: Vec::with_capacity(2048),
        }
    }

    fn push(&mut self, p: &Packet<'_>) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(p.data);
        self.pkts
            .push((p.ts_ns, p.orig_len, off, p.data.len() as u32, p.direction));
    }
}

/// A capture thread's side of the queue.
struct Feeder {
    batch: Batch,
    tx: SyncSender<Batch>,
    /// The writer is gone (an output error ended the capture).
    gone: bool,
}

impl Feeder {
    fn push(&mut self, p: &Packet<'_>) {
        self.batch.push(p);
        if self.batch.data.len() >= BATCH_BYTES {
            self.send();
        }
    }

    /// Hands the batch over, waiting while the writer is behind: the kernel ring buffers
    /// meanwhile, and counts what it cannot hold.
    fn send(&mut self) {
        if self.batch.pkts.is_empty() || self.gone {
            return;
        }
        let iface = self.batch.iface;
        let full = std::mem::replace(&mut self.batch, Batch::new(iface));
        self.gone = self.tx.send(full).is_err();
    }
}

/// Packets of all capture threads, released in timestamp order once older than the merge
/// delay. Each fanout member's packets arrive in order, but members (and interfaces)
/// interleave; without this the file's timestamps would jump back and forth.
#[derive(Default)]
struct Reorder {
    /// Batches with the index of their first packet not yet released.
    batches: Vec<(Batch, usize)>,
    order: Vec<(u64, u32, u32)>,
}

impl Reorder {
    fn push(&mut self, b: Batch) {
        if !b.pkts.is_empty() {
            self.batches.push((b, 0));
        }
    }

    /// Calls `f` for every packet stamped at or before `horizon`, oldest first.
    fn release(
        &mut self,
        horizon: u64,
        mut f: impl FnMut(&Batch, usize) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        self.order.clear();
        for (bi, (b, next)) in self.batches.iter().enumerate() {
            for (pi, p) in b.pkts.iter().enumerate().skip(*next) {
                if p.0 > horizon {
                    break;
                }
                self.order.push((p.0, bi as u32, pi as u32));
            }
        }
        if self.order.is_empty() {
            return Ok(());
        }
        // Equal stamps keep their arrival order (batch, then position).
        self.order.sort_unstable();
        let mut result = Ok(());
        for &(_, bi, pi) in &self.order {
            if let Some((b, next)) = self.batches.get_mut(bi as usize) {
                // Released packets are a prefix of each batch, whatever order they go in.
                *next = (*next).max(pi as usize + 1);
                result = f(b, pi as usize);
                if result.is_err() {
                    break;
                }
            }
        }
        self.batches.retain(|(b, next)| *next < b.pkts.len());
        result
    }
}

struct CaptureThreads {
    queues: Vec<Receiver<Batch>>,
    stops: Vec<StopHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
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
        sockets: HashMap::new(),
        procs: HashMap::new(),
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
        let first = !out.apps_written && !merge.sockets.is_empty();
        if first || last_apps.elapsed() >= cfg.app_interval {
            last_apps = Instant::now();
            let apps = merge.apps();
            out.periodic(&apps)?;
            if let Some(x) = &cfg.export {
                x.table(&out.path, &apps, merge.procs.values());
            }
        }
        if status.due() {
            let export = cfg.export.as_ref().map(|x| x.counters());
            status.update(&merge.summary, &merge.apps_top(), export.as_ref());
        }
    }
    for t in threads.threads {
        let _ = t.join();
    }
    status.clear();
    merge.summary.kernel_dropped = captures.iter().map(|c| c.stats().os_dropped).sum();
    let apps = merge.apps();
    if let Some(x) = &cfg.export {
        x.end_of_file(&out.path, &apps, merge.procs.values());
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

/// File rotation, as tcpdump's -C/-G/-W.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rotation {
    /// -C: start a new file once this many bytes are written.
    pub max_bytes: Option<u64>,
    /// -G: start a new file every this often.
    pub every: Option<Duration>,
    /// -W: with -C, keep this many files and overwrite the oldest (a ring of files); with
    /// -G alone, stop after this many files.
    pub max_files: Option<u32>,
}

impl Rotation {
    pub fn enabled(&self) -> bool {
        self.max_bytes.is_some() || self.every.is_some()
    }
}

/// The output file(s). Each rotated file is complete on its own: section and interface
/// blocks, the process entries of its packets, its own application records and interface
/// statistics.
struct Output {
    base: PathBuf,
    rotation: Rotation,
    interfaces: Vec<InterfaceInfo>,
    writer: Writer<std::fs::File>,
    path: PathBuf,
    /// Number of the current file (0 for the first).
    seq: u32,
    opened: Instant,
    opened_ns: u64,
    /// Capture counters at the start of the current file, per interface.
    stats_base: Vec<InterfaceStats>,
    /// -G with -W reached its last file.
    finished: bool,
    /// The current file has an application-record block.
    apps_written: bool,
    file_mode: u32,
    /// The live exporter, whose counters go into each file's statistics.
    export: Option<crate::export::ExportHandle>,
}

impl Output {
    fn create(cfg: &SensorConfig, interfaces: &[InterfaceInfo]) -> Result<Self, PipelineError> {
        let base = cfg.output.clone();
        let path = file_name(&base, 0, &cfg.rotation);
        let writer = open_writer(&path, interfaces, cfg.file_mode)?;
        // Only now: the probes are attached, the rings open and the file exists.
        log::info!("writing {}", path.display());
        Ok(Self {
            base,
            rotation: cfg.rotation,
            interfaces: interfaces.to_vec(),
            writer,
            path,
            seq: 0,
            opened: Instant::now(),
            opened_ns: crate::sys::now_ns(),
            stats_base: vec![InterfaceStats::default(); interfaces.len()],
            finished: false,
            apps_written: false,
            file_mode: cfg.file_mode,
            export: cfg.export.clone(),
        })
    }

    fn err(&self, source: PcapngError) -> PipelineError {
        PipelineError::Output {
            path: self.path.clone(),
            source,
        }
    }

    /// The file system is full: only the end of the file may still be written.
    fn full(&self) -> bool {
        self.writer.disk_full()
    }

    /// A full disk is not an error of the write that met it: the capture stops and the
    /// reserve takes the end of the file.
    fn check(&self, r: Result<(), PcapngError>) -> Result<(), PipelineError> {
        match r {
            Ok(()) | Err(PcapngError::DiskFull { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    fn due(&self) -> bool {
        self.rotation
            .max_bytes
            .is_some_and(|m| self.writer.len_with_buffered() >= m)
            || self
                .rotation
                .every
                .is_some_and(|e| self.opened.elapsed() >= e)
    }

    fn periodic(&mut self, apps: &[AppRecord]) -> Result<(), PipelineError> {
        if self.full() {
            return Ok(());
        }
        let r = self.writer.write_app_changes(apps).map(|n| {
            self.apps_written |= n > 0;
        });
        self.check(r)?;
        let r = self.writer.flush();
        self.check(r)
    }

    /// Final application table and statistics of the current file.
    fn finish_file(
        &mut self,
        apps: &[AppRecord],
        captures: &[Capture],
        last: bool,
    ) -> Result<(), PipelineError> {
        self.write_final_table(apps)?;
        self.write_stats(captures, last)
    }

    fn write_final_table(&mut self, apps: &[AppRecord]) -> Result<(), PipelineError> {
        self.writer
            .write_app_records(apps, true)
            .map_err(|e| self.err(e))
    }

    /// One Interface Statistics Block per interface, counting since the file was opened.
    /// The first one also carries the export counters (since the start of the capture): a
    /// snapshot when a rotated file closes, and for the `last` file, once the exporter has
    /// delivered its final records (waiting at most `EXPORT_SETTLE`).
    fn write_stats(&mut self, captures: &[Capture], last: bool) -> Result<(), PipelineError> {
        let export = self.export.as_ref().map(|x| {
            if last {
                x.settle(EXPORT_SETTLE)
            } else {
                x.counters()
            }
            .isb_comment()
        });
        let end_ns = crate::sys::now_ns();
        for (i, c) in captures.iter().enumerate() {
            let now = c.stats();
            let base = self.stats_base.get(i).copied().unwrap_or_default();
            let s = InterfaceStats {
                start_ns: self.opened_ns,
                end_ns,
                received: now.received.saturating_sub(base.received),
                if_dropped: now.if_dropped.saturating_sub(base.if_dropped),
                os_dropped: now.os_dropped.saturating_sub(base.os_dropped),
                delivered: now.delivered.saturating_sub(base.delivered),
                filter_accepted: now.filter_accepted.saturating_sub(base.filter_accepted),
            };
            if let Some(b) = self.stats_base.get_mut(i) {
                *b = now;
            }
            let comment = if i == 0 { export.as_deref() } else { None };
            self.writer
                .write_interface_stats_with_comment(i as u32, &s, comment)
                .map_err(|e| self.err(e))?;
        }
        self.writer.flush().map_err(|e| self.err(e))
    }

    /// Closes the current file and opens the next. Returns false when -G/-W says stop.
    fn rotate(&mut self, apps: &[AppRecord], captures: &[Capture]) -> Result<bool, PipelineError> {
        self.finish_file(apps, captures, false)?;
        let next = self.seq + 1;
        if self.rotation.max_bytes.is_none() && self.rotation.max_files.is_some_and(|w| next >= w) {
            self.finished = true;
            return Ok(false);
        }
        let path = file_name(&self.base, next, &self.rotation);
        self.writer = open_writer(&path, &self.interfaces, self.file_mode)?;
        log::info!("rotated to {}", path.display());
        self.path = path;
        self.seq = next;
        self.opened = Instant::now();
        self.opened_ns = crate::sys::now_ns();
        self.apps_written = false;
        Ok(true)
    }

    fn close(mut self, apps: &[AppRecord], captures: &[Capture]) -> Result<(), PipelineError> {
        if !self.full() {
            return self.finish_file(apps, captures, true);
        }
        // The statistics first: they are small and say what the capture lost.
        let stats = self.write_stats(captures, true).is_ok();
        let table = self.write_final_table(apps).is_ok();
        let kept = match (table, stats) {
            (true, true) => format!(
                ", its final application table ({} application(s)) and the interface statistics",
                apps.len()
            ),
            (true, false) => format!(
                " and its final application table ({} application(s)); the interface \
                 statistics did not fit",
                apps.len()
            ),
            (false, true) => ", the interface statistics and the application records of its \
                 periodic blocks; the final table did not fit"
                .to_string(),
            (false, false) => " and the application records of its periodic blocks; the final \
                 table and the statistics did not fit"
                .to_string(),
        };
        self.writer.release_reserve();
        Err(PipelineError::DiskFull {
            path: self.path.clone(),
            packets: self.writer.packets_written(),
            bytes: self.writer.bytes_written(),
            kept,
        })
    }
}

fn open_writer(
    path: &std::path::Path,
    interfaces: &[InterfaceInfo],
    mode: u32,
) -> Result<Writer<std::fs::File>, PipelineError> {
    let err = |source| PipelineError::Output {
        path: path.to_path_buf(),
        source,
    };
    let mut w = Writer::create_with_mode(path, &SectionInfo::detect(), mode).map_err(err)?;
    for i in interfaces {
        w.add_interface(i).map_err(err)?;
    }
    // Room for the end of the file (final table, statistics) even when the disk fills up.
    if !w.keep_reserve().map_err(err)? {
        log::warn!(
            "{}: this file system cannot preallocate, so no space is kept for the end of the \
             file; on a full disk only the periodic application blocks remain",
            path.display()
        );
    }
    Ok(w)
}

/// out.pcapng, then out.1.pcapng, out.2.pcapng ... With -C and -W the files form a ring
/// numbered out.0.pcapng .. out.(W-1).pcapng.
pub fn file_name(base: &std::path::Path, seq: u32, rotation: &Rotation) -> PathBuf {
    let ring = rotation.max_bytes.is_some() && rotation.max_files.is_some();
    let n = match rotation.max_files {
        Some(w) if ring && w > 0 => seq % w,
        _ => seq,
    };
    if !rotation.enabled() || (!ring && n == 0) {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    base.with_file_name(name)
}

fn start_threads(captures: &mut [Capture]) -> Result<CaptureThreads, PipelineError> {
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    let mut queues = Vec::new();
    for (iface, c) in captures.iter_mut().enumerate() {
        stops.push(c.stop_handle());
        for mut reader in c.take_readers() {
            // One bounded queue per capture thread (per CPU with fanout): no contention
            // between capture threads, and each one's backpressure is its own.
            let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
            queues.push(rx);
            let t = std::thread::Builder::new()
                .name(format!("apptag-cap{iface}"))
                .spawn(move || {
                    let mut feed = Feeder {
                        batch: Batch::new(iface as u32),
                        tx,
                        gone: false,
                    };
                    loop {
                        let stopped = reader.is_stopped();
                        let r = if stopped {
                            Ok(reader.flush(|p| feed.push(p)))
                        } else {
                            reader.poll(Duration::from_millis(50), |p| feed.push(p))
                        };
                        if let Err(e) = r {
                            log::error!("capture failed: {e}");
                            break;
                        }
                        feed.send();
                        if stopped || feed.gone {
                            break;
                        }
                    }
                })
                .map_err(PipelineError::Thread)?;
            threads.push(t);
        }
    }
    Ok(CaptureThreads {
        stops,
        threads,
        queues,
    })
}

struct Merge {
    cgroups: CgroupFilter,
    /// Per socket: what was seen on it, and which process it belongs to.
    sockets: HashMap<u64, (SocketRecord, ProcKey)>,
    /// The processes those sockets belong to, copied when first seen: the attribution
    /// tables forget exited processes, the file's records must not.
    procs: HashMap<ProcKey, crate::model::ProcessInfo>,
    summary: Summary,
    linktypes: Vec<u16>,
    loopback: Vec<bool>,
}

impl Merge {
    /// Tags and writes packet `i` of batch `b`.
    fn write_one(
        &mut self,
        b: &Batch,
        i: usize,
        a: &mut Attributor,
        out: &mut Output,
        captures: &[Capture],
        cfg: &SensorConfig,
    ) -> Result<(), PipelineError> {
        let linktype = self.linktypes.get(b.iface as usize).copied().unwrap_or(1);
        let loopback = self
            .loopback
            .get(b.iface as usize)
            .copied()
            .unwrap_or(false);
        if let Some(&(ts, orig_len, off, len, direction)) = b.pkts.get(i) {
            if out.finished || out.full() || cfg.count.is_some_and(|c| self.summary.written >= c) {
                return Ok(());
            }
            if out.due() {
                let apps = self.apps();
                // The next file describes only its own packets.
                if let Some(x) = &cfg.export {
                    x.end_of_file(&out.path, &apps, self.procs.values());
                }
                self.sockets.clear();
                self.procs.clear();
                if !out.rotate(&apps, captures)? {
                    return Ok(());
                }
            }
            self.summary.captured += 1;
            let data = b
                .data
                .get(off as usize..(off + len) as usize)
                .unwrap_or(&[]);
            let dissected = dissect(linktype, data);
            let ends = dissected.ip_five_tuple();
            let lookup_dir = if loopback {
                Direction::Unknown
            } else {
                direction
            };
            let mut tag = ends.and_then(|e| a.tag(&e, lookup_dir, ts));
            let mut quoted_error = false;
            if tag.is_none()
                && ends.is_some_and(|e| e.protocol == proto::ICMP || e.protocol == proto::ICMPV6)
                && let Some(quoted) = dissected.icmp_error_quote().and_then(|q| q.ip_five_tuple())
            {
                // An ICMP error belongs to the socket that sent the datagram it quotes.
                tag = a.table().lookup(&quoted, Direction::Outbound, ts);
                quoted_error = tag.is_some();
            }
            if let Some(t) = &tag {
                let info = a.table().processes().get(t.proc);
                if !cfg.pids.is_empty() && !cfg.pids.contains(&t.pid) {
                    return Ok(());
                }
                if !cfg.comms.is_empty() && !info.is_some_and(|p| cfg.comms.contains(&p.name)) {
                    return Ok(());
                }
                if !cfg.cgroups.is_empty() && !self.cgroups.matches(t.cgroup_id, info, &cfg.cgroups)
                {
                    return Ok(());
                }
                if let Some(p) = info
                    && !out.writer.knows_process(p.pid, p.start_ns)
                {
                    let r = out.writer.write_process(p);
                    out.check(r)?;
                }
                // The socket's counters are its conversation, as tshark's `-z conv` counts
                // it; an ICMP error about it is tagged but not counted there.
                if !quoted_error {
                    // The tagged socket sent this packet if it is the packet's source.
                    let sent = ends
                        .is_some_and(|e| e.src == t.tuple.src && e.src_port == t.tuple.src_port);
                    self.account(t, ts, orig_len, sent, a.table());
                }
                self.summary.attributed += 1;
            } else if !cfg.pids.is_empty() || !cfg.comms.is_empty() || !cfg.cgroups.is_empty() {
                return Ok(());
            }
            let r = out.writer.write_packet(&Packet {
                ts_ns: ts,
                interface: b.iface,
                orig_len,
                data,
                direction,
                pid: tag.map_or(0, |t| t.pid),
                tid: tag.map_or(0, |t| t.tid),
            });
            out.check(r)?;
            self.summary.written += 1;
            self.summary.bytes += u64::from(orig_len);
        }
        Ok(())
    }

    fn account(
        &mut self,
        t: &crate::sensor::attribution::Tag,
        ts: u64,
        len: u32,
        sent: bool,
        table: &SocketTable,
    ) {
        if !self.procs.contains_key(&t.proc)
            && let Some(p) = table.processes().get(t.proc)
        {
            self.procs.insert(t.proc, p.clone());
        }
        let (rec, _) = self.sockets.entry(t.cookie).or_insert_with(|| {
            let owner = table.socket(t.cookie).and_then(|s| s.owner_at(ts).copied());
            (
                SocketRecord {
                    local_addr: t.tuple.src.to_ip(),
                    local_port: t.tuple.src_port,
                    remote_addr: t.tuple.dst.to_ip(),
                    remote_port: t.tuple.dst_port,
                    protocol: t.tuple.protocol,
                    first_ns: ts,
                    last_ns: ts,
                    packets_in: 0,
                    packets_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    cookie: t.cookie & !crate::sensor::attribution::procfs::INODE_COOKIE_BIT,
                    pid: t.pid,
                    provenance: t.provenance,
                    attributed_ns: owner.map_or(0, |o| o.since_ns),
                },
                t.proc,
            )
        });
        rec.first_ns = rec.first_ns.min(ts);
        rec.last_ns = rec.last_ns.max(ts);
        if sent {
            rec.packets_out += 1;
            rec.bytes_out += u64::from(len);
        } else {
            rec.packets_in += 1;
            rec.bytes_in += u64::from(len);
        }
    }

    /// Groups sockets by process into application records.
    fn apps(&self) -> Vec<AppRecord> {
        let mut by_app: HashMap<(String, String), AppRecord> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let info = self.procs.get(proc);
            let name = info.map_or_else(|| format!("pid {}", proc.pid), |p| p.name.clone());
            let exe = info.map(|p| p.exe.clone()).unwrap_or_default();
            let app = by_app
                .entry((name.clone(), exe.clone()))
                .or_insert_with(|| AppRecord {
                    name,
                    exe,
                    cmdline: info.map(|p| p.cmdline.clone()).unwrap_or_default(),
                    start_ns: info.map_or(0, |p| p.start_ns),
                    uid: info.map_or(0, |p| p.uid),
                    cgroup: info.map(|p| p.cgroup.clone()).unwrap_or_default(),
                    provenance: rec.provenance,
                    ..AppRecord::default()
                });
            if !app.pids.contains(&proc.pid) {
                app.pids.push(proc.pid);
            }
            app.sockets.push(rec.clone());
        }
        let mut apps: Vec<AppRecord> = by_app.into_values().collect();
        for a in &mut apps {
            a.pids.sort_unstable();
            a.sockets.sort_by_key(|s| (s.first_ns, s.cookie));
        }
        apps.sort_by(|a, b| a.name.cmp(&b.name).then(a.exe.cmp(&b.exe)));
        apps
    }

    /// (name, bytes) of the busiest applications, for the status line.
    fn apps_top(&self) -> Vec<(String, u64)> {
        let mut m: HashMap<String, u64> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let name = self
                .procs
                .get(proc)
                .map_or_else(|| proc.pid.to_string(), |p| p.name.clone());
            *m.entry(name).or_default() += rec.bytes_in + rec.bytes_out;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(3);
        v
    }
}

/// `--cgroup`: matches by the cgroup id the kernel reported with the task (reliable even for
/// a process gone before /proc could be read), or by the cgroup path and container id from
/// /proc.
#[derive(Default)]
struct CgroupFilter {
    /// cgroup ids (directory inodes) at or below the wanted paths.
    inside: std::collections::HashSet<u64>,
    /// ids known to be elsewhere.
    outside: std::collections::HashSet<u64>,
}

impl CgroupFilter {
    fn matches(
        &mut self,
        id: u64,
        info: Option<&crate::model::ProcessInfo>,
        wanted: &[String],
    ) -> bool {
        if info.is_some_and(|p| in_cgroups(p, wanted)) {
            return true;
        }
        if id == 0 || self.outside.contains(&id) {
            return false;
        }
        if !self.inside.contains(&id) {
            // A cgroup we have not met: rescan the wanted subtrees (new child cgroups appear
            // at run time). Each unknown id costs one scan, then it is remembered.
            self.inside = subtree_ids(wanted);
            if !self.inside.contains(&id) {
                self.outside.insert(id);
                return false;
            }
        }
        true
    }
}

/// Inode numbers (= cgroup ids) of every cgroup at or below the wanted paths.
fn subtree_ids(wanted: &[String]) -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = std::collections::HashSet::new();
    let Some(root) = crate::sys::cgroup2_mount() else {
        return ids;
    };
    let mut stack: Vec<PathBuf> = wanted
        .iter()
        .filter(|w| w.starts_with('/'))
        .map(|w| root.join(w.trim_start_matches('/')))
        .collect();
    while let Some(dir) = stack.pop() {
        if let Ok(m) = std::fs::metadata(&dir) {
            ids.insert(m.ino());
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    ids
}

fn in_cgroups(p: &crate::model::ProcessInfo, wanted: &[String]) -> bool {
    wanted.iter().any(|w| {
        let w = w.trim_end_matches('/');
        (!p.container_id.is_empty() && p.container_id.starts_with(w))
            || p.cgroup == w
            || p.cgroup
                .strip_prefix(w)
                .is_some_and(|rest| rest.starts_with('/'))
            || w.is_empty()
    })
}

/// apptag-HOST-YYYYmmddTHHMMSS.pcapng in the current directory.
pub fn default_output() -> PathBuf {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let secs = crate::sys::now_ns() / 1_000_000_000;
    let (y, mo, d, h, mi, s) = crate::units::civil(secs);
    PathBuf::from(format!(
        "apptag-{host}-{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.pcapng"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_filter_matches_subtrees_and_container_ids() {
        let p = crate::model::ProcessInfo {
            cgroup: "/system.slice/docker-abc.scope".into(),
            container_id: "abcdef".into(),
            ..Default::default()
        };
        assert!(in_cgroups(&p, &["/system.slice".into()]));
        assert!(in_cgroups(&p, &["/system.slice/".into()]));
        assert!(in_cgroups(&p, &["abc".into()]));
        assert!(!in_cgroups(&p, &["/system.sl".into()]));
        assert!(!in_cgroups(&p, &["/user.slice".into()]));
    }

    fn batch(iface: u32, stamps: &[u64]) -> Batch {
        let mut b = Batch::new(iface);
        for &ts in stamps {
            b.push(&Packet {
                ts_ns: ts,
                interface: iface,
                orig_len: 1,
                data: &[0],
                direction: Direction::Unknown,
                pid: 0,
                tid: 0,
            });
        }
        b
    }

    #[test]
    fn reorder_releases_due_packets_once_in_time_order() {
        let mut r = Reorder::default();
        r.push(batch(0, &[10, 30, 50, 70]));
        r.push(batch(1, &[20, 40, 60]));
        r.push(batch(0, &[35, 32]));
        let mut got = Vec::new();
        r.release(45, |b, i| {
            got.push(b.pkts[i].0);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![10, 20, 30, 32, 35, 40]);
        got.clear();
        r.release(u64::MAX, |b, i| {
            got.push(b.pkts[i].0);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![50, 60, 70],
            "nothing released twice, nothing lost"
        );
        assert!(r.batches.is_empty());
    }

    #[test]
    fn rotated_file_names() {
        let base = std::path::Path::new("/tmp/out.pcapng");
        let none = Rotation::default();
        assert_eq!(file_name(base, 0, &none), base);
        let size = Rotation {
            max_bytes: Some(1),
            ..Rotation::default()
        };
        assert_eq!(file_name(base, 0, &size), base);
        assert_eq!(
            file_name(base, 2, &size).to_str(),
            Some("/tmp/out.2.pcapng")
        );
        let ring = Rotation {
            max_bytes: Some(1),
            max_files: Some(3),
            ..Rotation::default()
        };
        assert_eq!(
            file_name(base, 0, &ring).to_str(),
            Some("/tmp/out.0.pcapng")
        );
        assert_eq!(
            file_name(base, 4, &ring).to_str(),
            Some("/tmp/out.1.pcapng")
        );
    }
}
