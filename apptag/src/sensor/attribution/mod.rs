//! Attribution: which process owns the socket behind each packet.
//!
//! Kernel events (see [`crate::sensor::probes`]) feed a [`SocketTable`]; packets are looked up in
//! it by 5-tuple. Sockets the probes never reported (opened before start, hooks missing)
//! are found by a fallback thread that reads the kernel's socket tables (netlink sock_diag,
//! or /proc/net in `procfs` mode) and joins them with /proc/PID/fd, off the packet path.
pub mod flow;
pub mod ledger;
pub mod process;
pub mod procfs;
pub mod sockdiag;
pub mod table;
pub mod watch;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    time::{Duration, Instant},
};

use apptag_common::SockEvent;

pub use flow::{Addr, FiveTuple};
pub use table::{SockInfo, SocketTable, Tag};

use crate::{
    model::{Direction, Provenance, proto},
    sensor::probes::{EventStream, KernelStats, ProbeConfig, ProbeError, Probes, ProgramStatus},
    sys::BootClock,
};

/// An unknown flow is looked for again after this long.
const RETRY_UNKNOWN_FLOW_NS: u64 = 10_000_000_000;
const MAX_TRIED_FLOWS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error("could not start the fallback thread: {0}")]
    Thread(std::io::Error),
}

/// How sockets are attributed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// eBPF programs on socket and cgroup hooks, with the sock_diag fallback.
    #[default]
    Ebpf,
    /// /proc/net and /proc/PID/fd only, no eBPF: the original design's method.
    Procfs,
}

/// Everything attribution needs at run time.
pub struct Attributor {
    mode: Mode,
    table: SocketTable,
    probes: Option<Probes>,
    events: Option<Receiver<Vec<SockEvent>>>,
    events_stop: Arc<AtomicBool>,
    fallback_tx: Sender<()>,
    fallback_rx: Receiver<Vec<(sockdiag::DiagSocket, Option<u32>)>>,
    fallback_pending: bool,
    /// Unknown flows already looked for, with when to look again.
    tried: rustc_hash::FxHashMap<FiveTuple, u64>,
    last_gc: Instant,
}

impl Attributor {
    /// Attaches the probes (eBPF mode) and seeds the table with the sockets that exist now.
    pub fn start(mode: Mode, probe_config: &ProbeConfig) -> Result<Self, AttributionError> {
        let clock = BootClock::new();
        let events_stop = Arc::new(AtomicBool::new(false));
        let prefetch = process::Prefetch::default();
        let (probes, events) = match mode {
            Mode::Ebpf => {
                let mut p = Probes::attach(probe_config)?;
                let stream = p.events()?;
                let (tx, rx) = mpsc::channel();
                let stop = events_stop.clone();
                let pf = prefetch.clone();
                std::thread::Builder::new()
                    .name("apptag-events".into())
                    .spawn(move || event_loop(stream, tx, pf, stop))
                    .map_err(AttributionError::Thread)?;
                (Some(p), Some(rx))
            }
            Mode::Procfs => (None, None),
        };
        let (req_tx, req_rx) = mpsc::channel::<()>();
        let (res_tx, res_rx) = mpsc::channel();
        // procfs mode looks up on every miss as the original did (bounded at 100 scans/s);
        // eBPF mode only needs it for what the probes missed.
        let min_interval = match mode {
            Mode::Ebpf => Duration::from_millis(200),
            Mode::Procfs => Duration::from_millis(10),
        };
        std::thread::Builder::new()
            .name("apptag-fallback".into())
            .spawn(move || fallback_loop(mode, req_rx, res_tx, min_interval))
            .map_err(AttributionError::Thread)?;
        let mut a = Self {
            mode,
            table: SocketTable::with_prefetch(clock, prefetch),
            probes,
            events,
            events_stop,
            fallback_tx: req_tx,
            fallback_rx: res_rx,
            fallback_pending: false,
            tried: Default::default(),
            last_gc: Instant::now(),
        };
        // Probes first, then the seed: a socket created in between is seen by both, and
        // the probes' record wins.
        a.seed();
        Ok(a)
    }

    /// Reads the kernel's socket tables synchronously (at start).
    fn seed(&mut self) {
        let found = scan(self.mode);
        let now = crate::sys::now_ns();
        for (d, pid) in &found {
            self.table.apply_diag(d, *pid, now, self.provenance());
        }
        log::info!("attribution: {} existing sockets seeded", found.len());
    }

    fn provenance(&self) -> Provenance {
        match self.mode {
            Mode::Ebpf => Provenance::SockDiag,
            Mode::Procfs => Provenance::Procfs,
        }
    }

    /// Moves pending kernel events and fallback results into the table. Call before
    /// tagging packets captured up to now.
    pub fn poll(&mut self) -> usize {
        let mut n = 0;
        if let Some(rx) = &self.events {
            while let Ok(batch) = rx.try_recv() {
                for e in &batch {
                    self.table.apply(e);
                }
                n += batch.len();
            }
        }
        while let Ok(found) = self.fallback_rx.try_recv() {
            self.fallback_pending = false;
            let now = crate::sys::now_ns();
            let prov = self.provenance();
            for (d, pid) in &found {
                self.table.apply_diag(d, *pid, now, prov);
            }
        }
        if self.last_gc.elapsed() > Duration::from_secs(10) {
            self.last_gc = Instant::now();
            self.table.gc(crate::sys::now_ns(), 120_000_000_000);
        }
        // After the events: a flood of new sockets is cut back before it is looked up.
        self.table.enforce_limits();
        n
    }

    /// Tags one packet. A miss asks the fallback thread to rescan (at most one request in
    /// flight), so a later packet of the same flow is tagged.
    pub fn tag(&mut self, ends: &FiveTuple, dir: Direction, ts_ns: u64) -> Option<Tag> {
        let t = self.table.lookup(ends, dir, ts_ns);
        if t.is_none() && is_local_candidate(ends) {
            // One scan per new unknown flow, not one per packet: a flood from a socketless
            // sender (AF_PACKET, another host) would otherwise keep the scanner busy.
            let retry_after = self.tried.get(ends).copied();
            if retry_after.is_none_or(|t| ts_ns >= t) {
                if self.tried.len() >= MAX_TRIED_FLOWS {
                    self.tried.clear();
                }
                self.tried
                    .insert(*ends, ts_ns.saturating_add(RETRY_UNKNOWN_FLOW_NS));
                self.request_scan();
            }
        }
        t
    }

    /// Asks the fallback thread for a scan of the socket tables (no-op if one is pending).
    pub fn request_scan(&mut self) {
        if !self.fallback_pending && self.fallback_tx.send(()).is_ok() {
            self.fallback_pending = true;
        }
    }

    pub fn table(&self) -> &SocketTable {
        &self.table
    }

    /// Caps of the socket and process tables (`--max-sockets`, `--max-processes`).
    pub fn set_limits(&mut self, limits: table::Limits) {
        self.table.set_limits(limits);
    }

    pub fn table_mut(&mut self) -> &mut SocketTable {
        &mut self.table
    }

    pub fn probe_status(&self) -> &[ProgramStatus] {
        self.probes.as_ref().map(|p| p.status()).unwrap_or(&[])
    }

    pub fn kernel_stats(&self) -> Option<KernelStats> {
        self.probes.as_ref().and_then(|p| p.kernel_stats().ok())
    }
}

impl Drop for Attributor {
    fn drop(&mut self) {
        self.events_stop.store(true, Ordering::Relaxed);
    }
}

/// Reads the kernel's event ring as soon as it has data, reads /proc for every process it
/// has not seen yet while that process is most likely still alive (a short-lived client
/// is gone a few milliseconds later), and hands the events to the merge thread.
fn event_loop(
    mut stream: EventStream,
    tx: Sender<Vec<SockEvent>>,
    prefetch: process::Prefetch,
    stop: Arc<AtomicBool>,
) {
    let clock = BootClock::new();
    while !stop.load(Ordering::Relaxed) {
        // The programs submit without waking us (BPF_RB_NO_WAKEUP): poll at a fixed pace.
        std::thread::sleep(EVENT_POLL);
        let mut batch = Vec::new();
        stream.drain(|e| {
            if e.task_valid == 1 {
                prefetch.observe(e.pid, &table::comm_str(&e.comm), clock);
            }
            batch.push(*e);
        });
        if !batch.is_empty() && tx.send(batch).is_err() {
            return;
        }
    }
}

/// How often the event thread reads the ring: short enough that a process living a few
/// milliseconds is usually still in /proc when its first event is read, long enough that
/// the thread costs nothing measurable (500 wake-ups per second).
const EVENT_POLL: Duration = Duration::from_millis(2);

/// Only TCP/UDP/UDPLite with ports can be found in socket tables.
fn is_local_candidate(e: &FiveTuple) -> bool {
    matches!(e.protocol, proto::TCP | proto::UDP | proto::UDPLITE)
        && (e.src_port != 0 || e.dst_port != 0)
}

fn scan(mode: Mode) -> Vec<(sockdiag::DiagSocket, Option<u32>)> {
    let socks = match mode {
        Mode::Ebpf => sockdiag::dump_all().unwrap_or_else(|e| {
            log::warn!("sock_diag dump failed ({e}); falling back to /proc/net");
            procfs::dump_all()
        }),
        Mode::Procfs => procfs::dump_all(),
    };
    let inodes = process::socket_inodes();
    socks
        .into_iter()
        .map(|d| {
            let pid = inodes.get(&d.inode).copied();
            (d, pid)
        })
        .collect()
}

fn fallback_loop(
    mode: Mode,
    req: Receiver<()>,
    res: Sender<Vec<(sockdiag::DiagSocket, Option<u32>)>>,
    min_interval: Duration,
) {
    let mut last = Instant::now() - min_interval;
    while req.recv().is_ok() {
        while req.try_recv().is_ok() {}
        if let Some(wait) = min_interval.checked_sub(last.elapsed()) {
            std::thread::sleep(wait);
        }
        last = Instant::now();
        if res.send(scan(mode)).is_err() {
            return;
        }
    }
}
