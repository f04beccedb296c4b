//! The live sensor: capture threads -> bounded queues -> one merge/write thread.
//!
//! Capture threads (one per fanout member) copy each ring block's packets into a batch and
//! hand it over a bounded channel; a full channel drops the batch and counts it, so a slow
//! disk never stalls the kernel rings silently. The merge thread holds packets for a short
//! window so that the kernel events describing their sockets (which can arrive just after
//! an ingress packet) are applied before the packet is tagged, then writes the pcapng.
use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use crate::{
    attribution::{
        AttributionError, Attributor, Mode, flow::packet_ends, process::ProcKey, table::SocketTable,
    },
    capture::{Capture, CaptureConfig, CaptureError, StopHandle},
    model::{AppRecord, Direction, InterfaceStats, Packet, SocketRecord},
    pcapng::{PcapngError, SectionInfo, Writer},
    probes::{ProbeConfig, ProbeError},
};

/// Packets are tagged only once they are this old, so late socket events are applied first.
const MERGE_DELAY_NS: u64 = 100_000_000;
/// Batches in flight between a capture thread and the writer.
const QUEUE_BATCHES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Attribution(#[from] AttributionError),
    #[error("output {path}: {source}")]
    Output { path: PathBuf, source: PcapngError },
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
    /// How often new and changed application records are appended.
    pub app_interval: Duration,
    /// Keep only packets of these pids / comms (empty = all).
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
}

/// Totals printed at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub captured: u64,
    pub written: u64,
    pub attributed: u64,
    pub kernel_dropped: u64,
    pub queue_dropped: u64,
    pub bytes: u64,
}

struct Batch {
    iface: u32,
    data: Vec<u8>,
    /// (ts_ns, orig_len, offset, len, direction)
    pkts: Vec<(u64, u32, u32, u32, Direction)>,
}

impl Batch {
    fn push(&mut self, p: &Packet<'_>) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(p.data);
        self.pkts
            .push((p.ts_ns, p.orig_len, off, p.data.len() as u32, p.direction));
    }
}

struct CaptureThreads {
    stops: Vec<StopHandle>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

pub fn run(cfg: &SensorConfig, stop: Arc<AtomicBool>) -> Result<Summary, PipelineError> {
    let mut attributor = match Attributor::start(cfg.attribution, &ProbeConfig::default()) {
        // The probes hang on the cgroup v2 root; without one, capture still works and
        // /proc still names most sockets' processes.
        Err(AttributionError::Probes(ProbeError::NoCgroup2)) => {
            log::warn!(
                "no cgroup v2 hierarchy is mounted, so the eBPF probes cannot attach: falling \
                 back to procfs attribution (short-lived processes may go unattributed). Mount \
                 one (`mount -t cgroup2 none /sys/fs/cgroup`) for eBPF attribution"
            );
            Attributor::start(Mode::Procfs, &ProbeConfig::default())?
        }
        r => r?,
    };
    crate::probes::log_status(attributor.probe_status());
    let mut captures = Vec::new();
    for (i, name) in cfg.interfaces.iter().enumerate() {
        let mut c = CaptureConfig::new(name);
        c.snaplen = cfg.snaplen;
        c.promisc = cfg.promisc;
        c.filter = cfg.filter.clone();
        c.idb_index = i as u32;
        captures.push(Capture::open(&c, cfg.workers)?);
    }
    let out_err = |source| PipelineError::Output {
        path: cfg.output.clone(),
        source,
    };
    let mut writer = Writer::create(&cfg.output, &SectionInfo::detect()).map_err(out_err)?;
    let mut linktypes = Vec::new();
    let mut loopback = Vec::new();
    for c in &captures {
        let info = c.info();
        linktypes.push(u32::from(info.linktype));
        // On loopback each packet has a local sender and a local receiver, and the capture
        // keeps only the incoming copy: attribute it to its sender first.
        loopback.push(crate::capture::iface::lookup(&info.name).is_ok_and(|i| i.is_loopback()));
        writer.add_interface(&info).map_err(out_err)?;
    }
    let queue_dropped = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
    let threads = start_threads(&mut captures, tx, queue_dropped.clone())?;
    let started = Instant::now();
    let start_ns = crate::sys::now_ns();
    let mut merge = Merge {
        sockets: HashMap::new(),
        summary: Summary::default(),
        linktypes,
        loopback,
    };
    let mut queue: VecDeque<Batch> = VecDeque::new();
    let mut last_apps = Instant::now();
    let mut status = crate::status::StatusLine::new();
    let mut stopping = false;
    loop {
        if !stopping
            && (stop.load(Ordering::Relaxed)
                || cfg.duration.is_some_and(|d| started.elapsed() >= d)
                || cfg.count.is_some_and(|c| merge.summary.written >= c))
        {
            stopping = true;
            for s in &threads.stops {
                s.stop();
            }
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(b) => {
                queue.push_back(b);
                while let Ok(b) = rx.try_recv() {
                    queue.push_back(b);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // All capture threads are done: tag and write what is left, then stop.
                attributor.poll();
                while let Some(b) = queue.pop_front() {
                    merge
                        .write_batch(&b, &mut attributor, &mut writer, cfg)
                        .map_err(out_err)?;
                }
                break;
            }
        }
        attributor.poll();
        let horizon = crate::sys::now_ns().saturating_sub(MERGE_DELAY_NS);
        while queue
            .front()
            .is_some_and(|b| stopping || b.pkts.last().is_none_or(|p| p.0 <= horizon))
        {
            if let Some(b) = queue.pop_front() {
                merge
                    .write_batch(&b, &mut attributor, &mut writer, cfg)
                    .map_err(out_err)?;
            }
        }
        if last_apps.elapsed() >= cfg.app_interval {
            last_apps = Instant::now();
            let apps = merge.apps(attributor.table());
            writer.write_app_records(&apps, false).map_err(out_err)?;
            writer.flush().map_err(out_err)?;
        }
        merge.summary.queue_dropped = queue_dropped.load(Ordering::Relaxed);
        status.update(&merge.summary, &merge.apps_top(attributor.table()));
    }
    for t in threads.threads {
        let _ = t.join();
    }
    status.clear();
    let end_ns = crate::sys::now_ns();
    let apps = merge.apps(attributor.table());
    writer.write_app_records(&apps, true).map_err(out_err)?;
    let qd = queue_dropped.load(Ordering::Relaxed);
    for (i, c) in captures.iter().enumerate() {
        let mut s: InterfaceStats = c.stats();
        s.start_ns = start_ns;
        s.end_ns = end_ns;
        // Packets the writer could not take in time are lost in user space: count them
        // with the OS drops so the file's statistics show every loss.
        if i == 0 {
            s.os_dropped += qd;
        }
        merge.summary.kernel_dropped += c.stats().os_dropped;
        writer
            .write_interface_stats(i as u32, &s)
            .map_err(out_err)?;
    }
    writer.flush().map_err(out_err)?;
    merge.summary.queue_dropped = qd;
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

fn start_threads(
    captures: &mut [Capture],
    tx: SyncSender<Batch>,
    dropped: Arc<AtomicU64>,
) -> Result<CaptureThreads, PipelineError> {
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for (iface, c) in captures.iter_mut().enumerate() {
        stops.push(c.stop_handle());
        for mut reader in c.take_readers() {
            let tx = tx.clone();
            let dropped = dropped.clone();
            let t = std::thread::Builder::new()
                .name(format!("apptag-cap{iface}"))
                .spawn(move || {
                    let new_batch = || Batch {
                        iface: iface as u32,
                        data: Vec::with_capacity(256 * 1024),
                        pkts: Vec::with_capacity(1024),
                    };
                    let mut batch = new_batch();
                    loop {
                        let stopped = reader.is_stopped();
                        let r = if stopped {
                            Ok(reader.flush(|p| batch.push(p)))
                        } else {
                            reader.poll(Duration::from_millis(50), |p| batch.push(p))
                        };
                        if let Err(e) = r {
                            log::error!("capture failed: {e}");
                            break;
                        }
                        if !batch.pkts.is_empty() {
                            let full = std::mem::replace(&mut batch, new_batch());
                            let n = full.pkts.len() as u64;
                            match tx.try_send(full) {
                                Ok(()) => {}
                                Err(TrySendError::Full(_)) => {
                                    dropped.fetch_add(n, Ordering::Relaxed);
                                }
                                Err(TrySendError::Disconnected(_)) => break,
                            }
                        }
                        if stopped {
                            break;
                        }
                    }
                })
                .map_err(PipelineError::Thread)?;
            threads.push(t);
        }
    }
    Ok(CaptureThreads { stops, threads })
}

struct Merge {
    /// Per socket: what was seen on it, and which process it belongs to.
    sockets: HashMap<u64, (SocketRecord, ProcKey)>,
    summary: Summary,
    linktypes: Vec<u32>,
    loopback: Vec<bool>,
}

impl Merge {
    fn write_batch(
        &mut self,
        b: &Batch,
        a: &mut Attributor,
        w: &mut Writer<std::fs::File>,
        cfg: &SensorConfig,
    ) -> Result<(), PcapngError> {
        let linktype = self.linktypes.get(b.iface as usize).copied().unwrap_or(1);
        let loopback = self
            .loopback
            .get(b.iface as usize)
            .copied()
            .unwrap_or(false);
        for &(ts, orig_len, off, len, direction) in &b.pkts {
            if cfg.count.is_some_and(|c| self.summary.written >= c) {
                return Ok(());
            }
            self.summary.captured += 1;
            let data = b
                .data
                .get(off as usize..(off + len) as usize)
                .unwrap_or(&[]);
            let ends = packet_ends(linktype, data);
            let lookup_dir = if loopback {
                Direction::Unknown
            } else {
                direction
            };
            let tag = ends.and_then(|e| a.tag(&e, lookup_dir, ts));
            if let Some(t) = &tag {
                let info = a.table().processes().get(t.proc);
                if !cfg.pids.is_empty() && !cfg.pids.contains(&t.pid) {
                    continue;
                }
                if !cfg.comms.is_empty() && !info.is_some_and(|p| cfg.comms.contains(&p.name)) {
                    continue;
                }
                if let Some(p) = info
                    && !w.knows_process(p.pid, p.start_ns)
                {
                    w.write_process(p)?;
                }
                // The tagged socket sent this packet if it is the packet's source.
                let sent = ends
                    .is_some_and(|e| e.src == t.tuple.local && e.src_port == t.tuple.local_port);
                self.account(t, ts, orig_len, sent, a.table());
                self.summary.attributed += 1;
            } else if !cfg.pids.is_empty() || !cfg.comms.is_empty() {
                continue;
            }
            w.write_packet(&Packet {
                ts_ns: ts,
                interface: b.iface,
                orig_len,
                data,
                direction,
                pid: tag.map_or(0, |t| t.pid),
                tid: tag.map_or(0, |t| t.tid),
            })?;
            self.summary.written += 1;
            self.summary.bytes += u64::from(orig_len);
        }
        Ok(())
    }

    fn account(
        &mut self,
        t: &crate::attribution::Tag,
        ts: u64,
        len: u32,
        sent: bool,
        table: &SocketTable,
    ) {
        let (rec, _) = self.sockets.entry(t.cookie).or_insert_with(|| {
            let owner = table.socket(t.cookie).and_then(|s| s.owner_at(ts).copied());
            (
                SocketRecord {
                    local_addr: t.tuple.local.to_ip(),
                    local_port: t.tuple.local_port,
                    remote_addr: t.tuple.remote.to_ip(),
                    remote_port: t.tuple.remote_port,
                    protocol: t.tuple.protocol,
                    first_ns: ts,
                    last_ns: ts,
                    packets_in: 0,
                    packets_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    cookie: t.cookie & !crate::attribution::procfs::INODE_COOKIE_BIT,
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
    fn apps(&self, table: &SocketTable) -> Vec<AppRecord> {
        let mut by_app: HashMap<(String, String), AppRecord> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let info = table.processes().get(*proc);
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
    fn apps_top(&self, table: &SocketTable) -> Vec<(String, u64)> {
        let mut m: HashMap<String, u64> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let name = table
                .processes()
                .get(*proc)
                .map_or_else(|| proc.pid.to_string(), |p| p.name.clone());
            *m.entry(name).or_default() += rec.bytes_in + rec.bytes_out;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(3);
        v
    }
}

/// apptag-HOST-YYYYmmddTHHMMSS.pcapng in the current directory.
pub fn default_output() -> PathBuf {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let secs = crate::sys::now_ns() / 1_000_000_000;
    let (y, mo, d, h, mi, s) = civil(secs);
    PathBuf::from(format!(
        "apptag-{host}-{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.pcapng"
    ))
}

/// UTC calendar time from Unix seconds (days-from-civil inverse).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_time_matches_date() {
        // 2026-11-22T14:13:48Z, as `date -u -d @1795357628` prints it.
        assert_eq!(super::civil(1_795_357_628), (2026, 11, 22, 14, 27, 8));
    }
}
