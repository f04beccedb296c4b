//! `cargo xtask bench analysis [--size-gb N] [--prefix-mb M] [--keep]`: defragmentation +
//! TCP reassembly (`apptag streams`) on a generated capture of TCP conversations with loss
//! (retransmitted later, and some never: gaps), duplicates, reordering, sequence numbers
//! that wrap, and fragmented UDP datagrams; beside it, on a prefix of the same file,
//! tshark with TCP reassembly and IP defragmentation on, and tcpflow writing every stream.
use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::report::{Measured, measure};
use crate::util;

struct Opts {
    size_bytes: u64,
    prefix_bytes: u64,
    keep: bool,
    /// Only the all-cores figures (report and creds on 1 and 2 workers).
    threads_only: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        size_bytes: 2_200_000_000,
        prefix_bytes: 200_000_000,
        keep: false,
        threads_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<f64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse::<f64>()
                .with_context(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--size-gb" => o.size_bytes = (val(a)? * 1e9) as u64,
            "--prefix-mb" => o.prefix_bytes = (val(a)? * 1e6) as u64,
            "--keep" => o.keep = true,
            "--threads-only" => o.threads_only = true,
            other => bail!(
                "unknown argument {other}: use --size-gb N, --prefix-mb M, --keep, --threads-only"
            ),
        }
    }
    Ok(o)
}

struct TempDir(PathBuf, bool);
impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("bench analysis: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    util::build_release()?;
    // On disk rather than /dev/shm: the machine's memory is shared with other work.
    let dir = TempDir(
        std::env::temp_dir().join(format!("apptag-bench-analysis-{}", std::process::id())),
        opts.keep,
    );
    std::fs::create_dir_all(&dir.0)?;
    let big = dir.0.join("impaired.pcap");
    let prefix = dir.0.join("impaired-prefix.pcap");
    eprintln!(
        "bench analysis: writing {:.1} GB to {}",
        opts.size_bytes as f64 / 1e9,
        big.display()
    );
    let g = generate(&big, &prefix, opts.size_bytes, opts.prefix_bytes)?;
    eprintln!(
        "bench analysis: {} packets, {} TCP streams, {} fragmented datagrams; impairments: \
         {} retransmitted losses, {} gaps, {} duplicates, {} reordered; prefix {} packets",
        g.packets,
        g.tcp_streams,
        g.datagrams,
        g.retransmitted,
        g.gaps,
        g.duplicates,
        g.reordered,
        g.prefix_packets
    );
    std::io::copy(&mut File::open(&big)?, &mut std::io::sink())?;
    let apptag = util::apptag_bin().to_string_lossy().into_owned();
    let mut rows: Vec<(String, u64, u64, Measured)> = Vec::new();
    // All cores: the same command on 1 and 2 workers; the outputs must be equal.
    let big_s = big.to_string_lossy().into_owned();
    let mut speedups = Vec::new();
    for cmd in ["report", "creds"] {
        let (m1, o1) = measure(&[&apptag, cmd, "--json", "-j", "1", &big_s])?;
        let (m2, o2) = measure(&[&apptag, cmd, "--json", "-j", "2", &big_s])?;
        if o1 != o2 {
            bail!("apptag {cmd} --json printed different output on 1 and 2 workers");
        }
        speedups.push((cmd, m1.wall_s / m2.wall_s.max(0.001)));
        let size = std::fs::metadata(&big)?.len();
        rows.push((format!("apptag {cmd} --json -j 1"), size, g.packets, m1));
        rows.push((format!("apptag {cmd} --json -j 2"), size, g.packets, m2));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let files: &[(&PathBuf, u64)] = if opts.threads_only {
        &[]
    } else {
        &[(&big, g.packets), (&prefix, g.prefix_packets)]
    };
    for &(file, packets) in files {
        let f = file.to_string_lossy().into_owned();
        let (m, out) = measure(&[&apptag, "streams", "--json", &f])?;
        let streams = number_after(&out, "\"tcp_streams\"").context("apptag's JSON")?;
        let datagrams = number_after(&out, "\"datagrams_reassembled\"").unwrap_or(0);
        if file == &big && (streams != g.tcp_streams || datagrams != g.datagrams) {
            bail!(
                "apptag found {streams} TCP streams and {datagrams} reassembled datagrams, the \
                 generator wrote {} and {}",
                g.tcp_streams,
                g.datagrams
            );
        }
        rows.push((
            "apptag streams --json (bytes counted, not kept)".into(),
            std::fs::metadata(file)?.len(),
            packets,
            m,
        ));
        // Every stream's bytes copied into its buffers, as a parser gets them (one printed).
        let (m, _) = measure(&[&apptag, "follow", &f, "0", "--raw"])?;
        rows.push((
            "apptag follow N --raw (every stream's bytes kept)".into(),
            std::fs::metadata(file)?.len(),
            packets,
            m,
        ));
    }
    let p = prefix.to_string_lossy().into_owned();
    if opts.threads_only {
        print_rows(args, rows, &speedups, &load);
        return Ok(());
    }
    let (m, _) = measure(&[
        "tshark",
        "-n",
        "-q",
        "-2",
        "-o",
        "tcp.desegment_tcp_streams:TRUE",
        "-o",
        "tcp.analyze_sequence_numbers:TRUE",
        "-o",
        "ip.defragment:TRUE",
        "-z",
        "conv,tcp",
        "-r",
        &p,
    ])?;
    rows.push((
        "tshark -2 -q (TCP reassembly, IP defragmentation) -z conv,tcp".into(),
        std::fs::metadata(&prefix)?.len(),
        g.prefix_packets,
        m,
    ));
    let flows = dir.0.join("tcpflow");
    std::fs::create_dir_all(&flows)?;
    let (m, _) = measure(&["tcpflow", "-r", &p, "-o", &flows.to_string_lossy()])?;
    rows.push((
        "tcpflow -r (every stream to files)".into(),
        std::fs::metadata(&prefix)?.len(),
        g.prefix_packets,
        m,
    ));
    let _ = std::fs::remove_dir_all(&flows);
    print_rows(args, rows, &speedups, &load);
    Ok(())
}

fn print_rows(
    args: &[String],
    rows: Vec<(String, u64, u64, Measured)>,
    speedups: &[(&str, f64)],
    load: &str,
) {
    println!();
    let shown: Vec<&str> = std::iter::once("cargo xtask bench analysis")
        .chain(args.iter().map(String::as_str))
        .collect();
    println!("Command: `{}`", shown.join(" "));
    println!();
    println!(
        "| tool | input | packets | wall s | CPU s (user+sys) | GB/s (CPU) | Mpps (CPU) | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (label, size, packets, m) in rows {
        let cpu = m.cpu_s.max(0.001);
        println!(
            "| {label} | {:.2} GB | {packets} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            size as f64 / 1e9,
            m.wall_s,
            m.cpu_s,
            size as f64 / 1e9 / cpu,
            packets as f64 / 1e6 / cpu,
            m.rss_kb as f64 / 1024.0
        );
    }
    println!();
    for (cmd, x) in speedups {
        println!("apptag {cmd}: 2 workers against 1, wall time: {x:.2}x");
    }
    println!(
        "load average after the 1- and 2-worker runs (/proc/loadavg): {}",
        load.trim()
    );
}

fn number_after(json: &str, key: &str) -> Option<u64> {
    let t = &json[json.rfind(key)? + key.len()..];
    let t = t.trim_start_matches([':', ' ']);
    let end = t.find(|c: char| !c.is_ascii_digit())?;
    t[..end].parse().ok()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_10k` / 10000.
    fn chance(&mut self, per_10k: u64) -> bool {
        self.below(10_000) < per_10k
    }
}

#[derive(Default)]
struct Generated {
    packets: u64,
    prefix_packets: u64,
    tcp_streams: u64,
    datagrams: u64,
    retransmitted: u64,
    gaps: u64,
    duplicates: u64,
    reordered: u64,
}

/// A segment held back: written `due` segments later (a late retransmission or a
/// reordered one).
struct Held {
    seq: u32,
    len: u16,
    due: u8,
}

struct Flow {
    client: [u8; 4],
    server: [u8; 4],
    cport: u16,
    sport: u16,
    /// Next sequence numbers.
    cseq: u32,
    sseq: u32,
    phase: u8,
    exchanges_left: u32,
    response_left: u32,
    held: Vec<Held>,
    segs_since_ack: u32,
}

const MSS: u32 = 1448;

struct Out {
    w: BufWriter<File>,
    p: Option<BufWriter<File>>,
    written: u64,
    prefix_limit: u64,
    ts_us: u64,
    frame: Vec<u8>,
    g: Generated,
}

impl Out {
    fn emit(&mut self) -> Result<()> {
        self.ts_us += 3;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((self.ts_us / 1_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&((self.ts_us % 1_000_000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(self.frame.len() as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(self.frame.len() as u32).to_le_bytes());
        self.w.write_all(&rec)?;
        self.w.write_all(&self.frame)?;
        self.written += 16 + self.frame.len() as u64;
        self.g.packets += 1;
        if let Some(p) = &mut self.p {
            p.write_all(&rec)?;
            p.write_all(&self.frame)?;
            self.g.prefix_packets += 1;
            if self.written >= self.prefix_limit {
                p.flush()?;
                self.p = None;
            }
        }
        Ok(())
    }
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut s = 0u32;
    for c in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet + IPv4 header into `f` (cleared first); `flags_frag` is the fragment field.
fn eth_ip(
    f: &mut Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    l4_len: usize,
    id: u16,
    flags_frag: u16,
) {
    f.clear();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&flags_frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let c = ip_checksum(&f[start..start + 20]);
    f[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    f: &mut Vec<u8>,
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) {
    eth_ip(f, src, dst, 6, 20 + payload.len(), 0, 0x4000);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

fn new_flow(rng: &mut Rng, n: u64) -> Flow {
    Flow {
        client: [10, (n >> 16) as u8, (n >> 8) as u8, n as u8],
        server: [192, 168, (rng.below(4)) as u8, (rng.below(250) + 1) as u8],
        cport: 1024 + (n % 60_000) as u16,
        sport: [80, 443, 8080, 25][rng.below(4) as usize],
        cseq: rng.next() as u32,
        sseq: rng.next() as u32,
        phase: 0,
        exchanges_left: 1 + rng.below(6) as u32,
        response_left: 0,
        held: Vec::new(),
        segs_since_ack: 0,
    }
}

fn generate(big: &Path, prefix: &Path, size: u64, prefix_size: u64) -> Result<Generated> {
    let head = {
        let mut h = Vec::new();
        h.extend(0xa1b2c3d4u32.to_le_bytes());
        h.extend(2u16.to_le_bytes());
        h.extend(4u16.to_le_bytes());
        h.extend([0u8; 8]);
        h.extend(65535u32.to_le_bytes());
        h.extend(1u32.to_le_bytes());
        h
    };
    let mut w = BufWriter::with_capacity(1 << 20, File::create(big)?);
    let mut p = BufWriter::with_capacity(1 << 20, File::create(prefix)?);
    w.write_all(&head)?;
    p.write_all(&head)?;
    let mut out = Out {
        w,
        p: Some(p),
        written: head.len() as u64,
        prefix_limit: prefix_size,
        ts_us: 1_700_000_000_000_000,
        frame: Vec::with_capacity(4096),
        g: Generated::default(),
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pattern: Vec<u8> = (0..70_000).map(|_| rng.next() as u8).collect();
    let mut flows: Vec<Flow> = Vec::new();
    let mut next_flow = 0u64;
    const ACTIVE: usize = 2000;
    let mut ip_id: u16 = 0;
    while out.written < size {
        if flows.len() < ACTIVE {
            flows.push(new_flow(&mut rng, next_flow));
            next_flow += 1;
        }
        // Now and then a fragmented UDP datagram (DNS over UDP with EDNS, NFS...).
        if rng.chance(150) {
            ip_id = ip_id.wrapping_add(1);
            let len = 2000 + rng.below(2000) as usize;
            let mut data = Vec::with_capacity(len + 8);
            data.extend_from_slice(&5353u16.to_be_bytes());
            data.extend_from_slice(&53u16.to_be_bytes());
            data.extend_from_slice(&((len + 8) as u16).to_be_bytes());
            data.extend_from_slice(&[0, 0]);
            data.extend_from_slice(&pattern[..len]);
            let pieces: Vec<(usize, usize)> = (0..data.len())
                .step_by(1480)
                .map(|o| (o, (o + 1480).min(data.len())))
                .collect();
            let reverse = rng.chance(2000);
            let order: Vec<usize> = if reverse {
                (0..pieces.len()).rev().collect()
            } else {
                (0..pieces.len()).collect()
            };
            for i in order {
                let (a, b) = pieces[i];
                let more = if b < data.len() { 0x2000 } else { 0 };
                let mut f = std::mem::take(&mut out.frame);
                eth_ip(
                    &mut f,
                    [172, 16, 0, 1],
                    [172, 16, 0, 2],
                    17,
                    b - a,
                    ip_id,
                    more | (a / 8) as u16,
                );
                f.extend_from_slice(&data[a..b]);
                out.frame = f;
                out.emit()?;
            }
            out.g.datagrams += 1;
        }
        let i = rng.below(flows.len() as u64) as usize;
        let done = step(&mut flows[i], &mut rng, &pattern, &mut out)?;
        if done {
            flows.swap_remove(i);
        }
    }
    out.w.flush()?;
    if let Some(mut p) = out.p.take() {
        p.flush()?;
    }
    Ok(out.g)
}

/// Emits the next few packets of a flow; true when it has ended.
fn step(fl: &mut Flow, rng: &mut Rng, pattern: &[u8], out: &mut Out) -> Result<bool> {
    let mut f = std::mem::take(&mut out.frame);
    let (c, s, cp, sp) = (fl.client, fl.server, fl.cport, fl.sport);
    (|| -> Result<bool> {
        match fl.phase {
            0 => {
                out.g.tcp_streams += 1;
                tcp_frame(&mut f, c, s, cp, sp, fl.cseq, 0, SYN, &[]);
                out.frame = std::mem::take(&mut f);
                out.emit()?;
                f = std::mem::take(&mut out.frame);
                fl.cseq = fl.cseq.wrapping_add(1);
                tcp_frame(&mut f, s, c, sp, cp, fl.sseq, fl.cseq, SYN | ACK, &[]);
                out.frame = std::mem::take(&mut f);
                out.emit()?;
                f = std::mem::take(&mut out.frame);
                fl.sseq = fl.sseq.wrapping_add(1);
                tcp_frame(&mut f, c, s, cp, sp, fl.cseq, fl.sseq, ACK, &[]);
                fl.phase = 1;
            }
            1 => {
                // A request.
                let len = 80 + rng.below(400) as usize;
                let off = (fl.cseq as usize) % 60_000;
                tcp_frame(
                    &mut f,
                    c,
                    s,
                    cp,
                    sp,
                    fl.cseq,
                    fl.sseq,
                    ACK | PSH,
                    &pattern[off..off + len],
                );
                fl.cseq = fl.cseq.wrapping_add(len as u32);
                fl.response_left = 2000 + rng.below(200_000) as u32;
                fl.phase = 2;
            }
            2 => {
                // Response segments, impaired; held ones come due.
                for h in &mut fl.held {
                    h.due = h.due.saturating_sub(1);
                }
                if let Some(k) = fl.held.iter().position(|h| h.due == 0) {
                    let h = fl.held.swap_remove(k);
                    let off = (h.seq as usize) % 60_000;
                    tcp_frame(
                        &mut f,
                        s,
                        c,
                        sp,
                        cp,
                        h.seq,
                        fl.cseq,
                        ACK,
                        &pattern[off..off + h.len as usize],
                    );
                } else if fl.response_left > 0 {
                    let len = fl.response_left.min(MSS);
                    let seq = fl.sseq;
                    fl.sseq = fl.sseq.wrapping_add(len);
                    fl.response_left -= len;
                    let off = (seq as usize) % 60_000;
                    let roll = rng.below(10_000);
                    if roll < 100 {
                        out.g.retransmitted += 1;
                        fl.held.push(Held {
                            seq,
                            len: len as u16,
                            due: 4,
                        });
                        out.frame = std::mem::take(&mut f);
                        return Ok(false);
                    } else if roll < 110 {
                        // Lost before the capture point, and the receiver got it: a gap.
                        out.g.gaps += 1;
                        out.frame = std::mem::take(&mut f);
                        return Ok(false);
                    } else if roll < 210 {
                        out.g.reordered += 1;
                        fl.held.push(Held {
                            seq,
                            len: len as u16,
                            due: 2,
                        });
                        out.frame = std::mem::take(&mut f);
                        return Ok(false);
                    }
                    tcp_frame(
                        &mut f,
                        s,
                        c,
                        sp,
                        cp,
                        seq,
                        fl.cseq,
                        ACK,
                        &pattern[off..off + len as usize],
                    );
                    if roll < 260 {
                        out.g.duplicates += 1;
                        out.frame = std::mem::take(&mut f);
                        out.emit()?;
                        f = std::mem::take(&mut out.frame);
                    }
                } else if fl.held.is_empty() {
                    fl.exchanges_left -= 1;
                    fl.phase = if fl.exchanges_left == 0 { 3 } else { 1 };
                    out.frame = std::mem::take(&mut f);
                    return Ok(false);
                } else {
                    out.frame = std::mem::take(&mut f);
                    return Ok(false);
                }
                out.frame = std::mem::take(&mut f);
                out.emit()?;
                f = std::mem::take(&mut out.frame);
                fl.segs_since_ack += 1;
                if fl.segs_since_ack < 2 {
                    out.frame = f;
                    return Ok(false);
                }
                fl.segs_since_ack = 0;
                // The client acknowledges what it has: up to the first held segment.
                let ack = fl
                    .held
                    .iter()
                    .map(|h| h.seq)
                    .min_by_key(|&q| q.wrapping_sub(fl.sseq.wrapping_sub(1 << 30)))
                    .unwrap_or(fl.sseq);
                tcp_frame(&mut f, c, s, cp, sp, fl.cseq, ack, ACK, &[]);
            }
            _ => {
                tcp_frame(&mut f, c, s, cp, sp, fl.cseq, fl.sseq, FIN | ACK, &[]);
                out.frame = std::mem::take(&mut f);
                out.emit()?;
                f = std::mem::take(&mut out.frame);
                fl.cseq = fl.cseq.wrapping_add(1);
                tcp_frame(&mut f, s, c, sp, cp, fl.sseq, fl.cseq, FIN | ACK, &[]);
                out.frame = std::mem::take(&mut f);
                out.emit()?;
                f = std::mem::take(&mut out.frame);
                fl.sseq = fl.sseq.wrapping_add(1);
                tcp_frame(&mut f, c, s, cp, sp, fl.cseq, fl.sseq, ACK, &[]);
                out.frame = std::mem::take(&mut f);
                out.emit()?;
                return Ok(true);
            }
        }
        out.frame = std::mem::take(&mut f);
        out.emit()?;
        Ok(false)
    })()
}
