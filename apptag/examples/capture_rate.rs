//! Measures the capture layer alone: N fanout threads read TPACKET_V3 rings on one
//! interface and count packets, until SIGINT/SIGTERM or `--duration`. Used by
//! `cargo xtask bench capture`; prints tcpdump-style counters on exit.
//!
//! `capture_rate -i IFACE [-w PREFIX] [--workers N] [--duration SECS] [--snaplen N]
//! [--block-kib N] [--blocks N] [FILTER...]`
//!
//! With `-w`, each thread also writes what it captures to `PREFIX.N` as a plain pcap file
//! (nanosecond timestamps) through a 1 MiB buffer, so the figure includes writing to disk
//! like `tcpdump -w` does. (The product writes pcapng through the writer module; this is a
//! stand-in of the same I/O volume.)
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use std::io::Write;

use anyhow::{Context, Result};
use apptag::sensor::capture::{Capture, CaptureConfig};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(short = 'i')]
    interface: String,
    /// Write the packets to PREFIX.0, PREFIX.1, ... (one pcap file per thread).
    #[arg(short = 'w')]
    write: Option<std::path::PathBuf>,
    /// Capture threads (one ring each, sharing a fanout group).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(short = 's', long, default_value_t = 262_144)]
    snaplen: u32,
    #[arg(long)]
    block_kib: Option<u32>,
    #[arg(long)]
    blocks: Option<u32>,
    /// Do not put the interface in promiscuous mode.
    #[arg(short = 'p')]
    no_promisc: bool,
    filter: Vec<String>,
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

fn cpu_seconds() -> f64 {
    // SAFETY: ru is valid for the kernel to write.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pcap_header(w: &mut impl Write, snaplen: u32, linktype: u16) -> std::io::Result<()> {
    // Nanosecond-resolution pcap: magic, version 2.4, zone, sigfigs, snaplen, link type.
    w.write_all(&0xa1b2_3c4d_u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0; 8])?;
    w.write_all(&snaplen.to_le_bytes())?;
    w.write_all(&u32::from(linktype).to_le_bytes())
}

fn pcap_record(w: &mut impl Write, p: &apptag::model::Packet<'_>) -> std::io::Result<()> {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&((p.ts_ns / 1_000_000_000) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&((p.ts_ns % 1_000_000_000) as u32).to_le_bytes());
    h[8..12].copy_from_slice(&(p.data.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&p.orig_len.to_le_bytes());
    w.write_all(&h)?;
    w.write_all(p.data)
}

fn main() -> Result<()> {
    env_logger::init();
    let args = Args::parse();
    let mut cfg = CaptureConfig::new(&args.interface);
    cfg.snaplen = args.snaplen;
    cfg.promisc = !args.no_promisc;
    if !args.filter.is_empty() {
        cfg.filter = Some(args.filter.join(" "));
    }
    if let Some(k) = args.block_kib {
        cfg.ring.block_size = k << 10;
    }
    if let Some(n) = args.blocks {
        cfg.ring.block_count = n;
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let mut cap = Capture::open(&cfg, args.workers).context("opening the capture")?;
    let stop = cap.stop_handle();
    let packets = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let info = cap.info();
    let threads: Vec<_> = cap
        .take_readers()
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let (packets, bytes) = (packets.clone(), bytes.clone());
            let mut out = match &args.write {
                Some(prefix) => {
                    let path = prefix.with_extension(format!(
                        "{}{i}",
                        prefix
                            .extension()
                            .map(|e| format!("{}.", e.to_string_lossy()))
                            .unwrap_or_default()
                    ));
                    let f = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                    pcap_header(&mut w, info.snaplen, info.linktype)?;
                    Some(w)
                }
                None => None,
            };
            Ok(std::thread::spawn(move || -> Result<()> {
                let (mut n, mut b) = (0u64, 0u64);
                let mut err = None;
                let mut count = |p: &apptag::model::Packet<'_>| {
                    n += 1;
                    b += u64::from(p.orig_len);
                    match &mut out {
                        Some(w) if err.is_none() => {
                            if let Err(e) = pcap_record(w, p) {
                                err = Some(e);
                            }
                        }
                        // Touch the frame like a consumer would.
                        _ => {
                            std::hint::black_box(p.data.last());
                        }
                    }
                };
                while !r.is_stopped() {
                    r.poll(Duration::from_millis(100), &mut count)?;
                }
                r.flush(&mut count);
                if let Some(e) = err {
                    return Err(e).context("writing the capture file");
                }
                if let Some(w) = &mut out {
                    w.flush()?;
                }
                packets.fetch_add(n, Ordering::Relaxed);
                bytes.fetch_add(b, Ordering::Relaxed);
                Ok(())
            }))
        })
        .collect::<Result<_>>()?;
    eprintln!(
        "capture_rate: listening on {} with {} thread(s), fanout group {:?}",
        args.interface,
        args.workers,
        cap.fanout_group()
    );
    let start = Instant::now();
    while !SIGNALLED.load(Ordering::Relaxed)
        && args
            .duration
            .is_none_or(|d| start.elapsed().as_secs_f64() < d)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.stop();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("capture thread panicked"))??;
    }
    let stats = cap.stats();
    let ring = cap.ring_stats();
    let captured = packets.load(Ordering::Relaxed);
    eprintln!("{captured} packets captured");
    eprintln!("{} packets received by filter", stats.received);
    eprintln!("{} packets dropped by kernel", stats.os_dropped);
    eprintln!(
        "RESULT captured={captured} received={} dropped={} freeze={} bytes={} cpu={:.3}",
        stats.received,
        stats.os_dropped,
        ring.freeze_q_cnt,
        bytes.load(Ordering::Relaxed),
        cpu_seconds()
    );
    Ok(())
}
