//! `apptag sockets`: attach, then print every socket as soon as its process and local end
//! are known, one line (or one JSON object) each.
use std::{
    collections::HashSet,
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{Attributor, Mode, SockInfo};
use crate::sensor::probes::ProbeConfig;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Start(#[from] super::AttributionError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// One printed socket.
#[derive(Serialize)]
pub struct SocketLine {
    pub cookie: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub exe: String,
    pub cmdline: Vec<String>,
    pub uid: u32,
    pub cgroup: String,
    pub protocol: &'static str,
    pub local: String,
    pub remote: String,
    pub provenance: String,
    /// When the owner was first seen, ns since the epoch.
    pub attributed_ns: u64,
    #[serde(flatten)]
    pub life: super::table::SocketLife,
    pub closed: bool,
}

fn line(a: &Attributor, s: &SockInfo) -> Option<SocketLine> {
    let o = s.owners.first()?;
    let p = a.table().processes().get(o.proc);
    let fmt = |addr: super::Addr, port: u16| {
        if addr.is_v4() {
            format!("{addr}:{port}")
        } else {
            format!("[{addr}]:{port}")
        }
    };
    Some(SocketLine {
        cookie: if s.cookie & super::procfs::INODE_COOKIE_BIT != 0 {
            0
        } else {
            s.cookie
        },
        pid: o.pid,
        tid: o.tid,
        comm: p.map(|p| p.name.clone()).unwrap_or_default(),
        exe: p.map(|p| p.exe.clone()).unwrap_or_default(),
        cmdline: p.map(|p| p.cmdline.clone()).unwrap_or_default(),
        uid: o.uid,
        cgroup: p.map(|p| p.cgroup.clone()).unwrap_or_default(),
        protocol: crate::model::proto::name(s.protocol),
        local: fmt(s.local, s.local_port),
        remote: fmt(s.remote, s.remote_port),
        provenance: o.provenance.to_string(),
        attributed_ns: o.since_ns,
        life: s.life,
        closed: s.life.closed_ns.is_some(),
    })
}

/// Runs until `stop` is set or `duration` passes; prints sockets to `out`.
pub fn watch(
    mode: Mode,
    duration: Option<Duration>,
    json: bool,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<(), WatchError> {
    let mut a = Attributor::start(mode, &ProbeConfig::default())?;
    crate::sensor::probes::log_status(a.probe_status());
    let started = Instant::now();
    let mut printed: HashSet<u64> = HashSet::new();
    let mut pending: Vec<u64> = Vec::new();
    let mut last_scan = Instant::now();
    let mut flush = |a: &Attributor, pending: &mut Vec<u64>, all: bool, out: &mut dyn Write| {
        let mut keep = Vec::new();
        for c in pending.drain(..) {
            // Only inet sockets: the send/recv hooks also see unix and netlink sockets.
            let Some(s) = a.table().socket(c).filter(|s| {
                (s.family == apptag_common::AF_INET || s.family == apptag_common::AF_INET6)
                    && s.protocol != 0
            }) else {
                continue;
            };
            // Wait for the local end unless the socket is gone or we are finishing.
            if s.local_port == 0 && s.life.closed_ns.is_none() && !all {
                keep.push(c);
                continue;
            }
            if printed.insert(c)
                && let Some(l) = line(a, s)
            {
                if json {
                    serde_json::to_string(&l)
                        .map_err(std::io::Error::other)
                        .and_then(|j| writeln!(out, "{j}"))?;
                } else {
                    writeln!(
                        out,
                        "{:<7} {:<7} {:<15} {:<7} {:<45} {:<45} {}",
                        l.pid, l.tid, l.comm, l.protocol, l.local, l.remote, l.provenance
                    )?;
                }
            }
        }
        *pending = keep;
        out.flush()
    };
    if !json {
        writeln!(
            out,
            "{:<7} {:<7} {:<15} {:<7} {:<45} {:<45} how",
            "PID", "TID", "COMM", "PROTO", "LOCAL", "REMOTE"
        )?;
    }
    // Existing sockets seeded at start.
    pending.extend(a.table_mut().take_newly_attributed());
    while !stop.load(Ordering::Relaxed) && duration.is_none_or(|d| started.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
        a.poll();
        // procfs mode has no events: poll the tables like a procfs tool would.
        if mode == Mode::Procfs && last_scan.elapsed() >= Duration::from_millis(10) {
            last_scan = Instant::now();
            a.request_scan();
        }
        pending.extend(a.table_mut().take_newly_attributed());
        flush(&a, &mut pending, false, out)?;
    }
    a.poll();
    pending.extend(a.table_mut().take_newly_attributed());
    flush(&a, &mut pending, true, out)?;
    if let Some(k) = a.kernel_stats() {
        log::info!(
            "{} sockets attributed; kernel events {} (lost to a full ring: {})",
            printed.len(),
            k.events,
            k.ringbuf_full
        );
        if k.ringbuf_full > 0 {
            log::warn!(
                "{} kernel events were lost: the event ring was full",
                k.ringbuf_full
            );
        }
    }
    Ok(())
}
