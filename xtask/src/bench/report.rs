//! `cargo xtask bench report [--size-gb N] [--tshark-mb M]`: `apptag report --json` on a
//! generated multi-GB capture of mixed TCP/UDP/IPv6 flows, side by side with
//! `tshark -q -z conv,ip` (on a prefix of the same file: tshark needs minutes per GB).
use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::util;

struct Opts {
    size_bytes: u64,
    prefix_bytes: u64,
    /// Keep the generated files (for profiling) instead of deleting them.
    keep: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        size_bytes: 3_000_000_000,
        prefix_bytes: 200_000_000,
        keep: false,
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
            "--tshark-mb" => o.prefix_bytes = (val(a)? * 1e6) as u64,
            "--keep" => o.keep = true,
            other => bail!("unknown argument {other}: use --size-gb N, --tshark-mb M, --keep"),
        }
    }
    Ok(o)
}

/// Removes the bench directory however the bench ends.
struct TempDir(PathBuf, bool);
impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("bench report: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    util::build_release()?;
    let dir = TempDir(
        std::env::temp_dir().join(format!("apptag-bench-report-{}", std::process::id())),
        opts.keep,
    );
    std::fs::create_dir_all(&dir.0)?;
    let apptag = util::apptag_bin();
    let apptag_s = apptag.to_string_lossy().into_owned();
    let mut rows = Vec::new();
    for (format, ext) in [(FileFormat::Pcap, "pcap"), (FileFormat::Pcapng, "pcapng")] {
        let big = dir.0.join(format!("mixed.{ext}"));
        let prefix = dir.0.join(format!("mixed-prefix.{ext}"));
        eprintln!(
            "bench report: writing {:.1} GB of mixed traffic to {}",
            opts.size_bytes as f64 / 1e9,
            big.display()
        );
        let generated = generate(&big, &prefix, opts.size_bytes, opts.prefix_bytes, format)?;
        eprintln!(
            "bench report: {} packets, {} flows ({} packets in the {:.0} MB prefix)",
            generated.packets,
            generated.flows,
            generated.prefix_packets,
            generated.prefix_bytes as f64 / 1e6
        );
        // Both tools read from the page cache: load the file there first.
        std::io::copy(&mut File::open(&big)?, &mut std::io::sink())?;
        for (file, packets) in [
            (&big, generated.packets),
            (&prefix, generated.prefix_packets),
        ] {
            let (m, out) = measure(&[&apptag_s, "report", "--json", &file.to_string_lossy()])?;
            let json = serde_json_lite::totals(&out)
                .with_context(|| format!("apptag's JSON on {}", file.display()))?;
            if json.packets != packets {
                bail!(
                    "apptag counted {} packets in {}, the generator wrote {packets}",
                    json.packets,
                    file.display()
                );
            }
            rows.push(("apptag report --json", ext, file_size(file)?, packets, m));
        }
        let (m, _) = measure(&[
            "tshark",
            "-q",
            "-n",
            "-z",
            "conv,ip",
            "-r",
            &prefix.to_string_lossy(),
        ])?;
        rows.push((
            "tshark -q -z conv,ip",
            ext,
            file_size(&prefix)?,
            generated.prefix_packets,
            m,
        ));
        if !opts.keep {
            std::fs::remove_file(&big)?;
        }
    }
    println!();
    let shown: Vec<&str> = std::iter::once("cargo xtask bench report")
        .chain(args.iter().map(String::as_str))
        .collect();
    println!("Command: `{}`", shown.join(" "));
    println!();
    println!(
        "| tool | input | packets | wall s | CPU s (user+sys) | GB/s (wall) | GB/s (CPU) | Mpps (wall) | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, ext, size, packets, m) in rows {
        println!(
            "| {label} | {ext} {:.2} GB | {packets} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            size as f64 / 1e9,
            m.wall_s,
            m.cpu_s,
            size as f64 / 1e9 / m.wall_s,
            size as f64 / 1e9 / m.cpu_s.max(0.001),
            packets as f64 / 1e6 / m.wall_s,
            m.rss_kb as f64 / 1024.0
        );
    }
    Ok(())
}

fn file_size(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)?.len())
}

pub(super) struct Measured {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub rss_kb: u64,
}

/// Runs a command under GNU time; returns its figures and stdout.
pub(super) fn measure(cmd: &[&str]) -> Result<(Measured, String)> {
    let tf = std::env::temp_dir().join(format!("apptag-bench-time-{}", std::process::id()));
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg("-o")
        .arg(&tf)
        .args(cmd)
        .stderr(Stdio::null())
        .output()
        .context("running /usr/bin/time (Debian package `time`): run `cargo xtask setup`")?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    let t = std::fs::read_to_string(&tf)?;
    let _ = std::fs::remove_file(&tf);
    let field = |name: &str| -> Option<&str> {
        t.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim()))
    };
    let num = |name: &str| -> Result<f64> {
        field(name)
            .with_context(|| format!("GNU time printed no {name}"))?
            .parse::<f64>()
            .with_context(|| format!("GNU time's {name}"))
    };
    // "Elapsed (wall clock) time (h:mm:ss or m:ss): 0:01.23"
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):").context("no wall time")?;
    let wall_s = wall
        .split(':')
        .try_fold(0.0, |acc, part| part.parse::<f64>().map(|v| acc * 60.0 + v))
        .context("wall time format")?;
    Ok((
        Measured {
            wall_s,
            cpu_s: num("User time (seconds):")? + num("System time (seconds):")?,
            rss_kb: num("Maximum resident set size (kbytes):")? as u64,
        },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Just enough JSON reading to check apptag's totals (xtask has no JSON dependency).
mod serde_json_lite {
    pub struct Totals {
        pub packets: u64,
    }
    pub fn totals(json: &str) -> Option<Totals> {
        let t = &json[json.find("\"totals\"")?..];
        let p = &t[t.find("\"packets\"")? + 9..];
        let p = p.trim_start_matches([':', ' ']);
        let end = p.find(|c: char| !c.is_ascii_digit())?;
        Some(Totals {
            packets: p[..end].parse().ok()?,
        })
    }
}

struct Generated {
    packets: u64,
    flows: usize,
    prefix_packets: u64,
    prefix_bytes: u64,
}

/// Deterministic xorshift: the same file every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// HTTPS download: 1514-byte segments from the server, an ACK every second one.
    Bulk,
    /// DNS: small query, bigger answer.
    Dns,
    /// Media over UDP: 1200-byte datagrams.
    Media,
    /// The same download over IPv6.
    Bulk6,
}

struct Flow {
    kind: Kind,
    client: [u8; 16],
    server: [u8; 16],
    cport: u16,
    sport: u16,
    seq: u32,
    sent: u64,
}

/// Writes `size` bytes of capture to `path` (classic pcap with µs, or pcapng as apptag
/// writes it: ns, direction flags, pids, process entries), and its first `prefix_size`
/// bytes (whole records) to `prefix`.
fn generate(
    path: &Path,
    prefix: &Path,
    size: u64,
    prefix_size: u64,
    format: FileFormat,
) -> Result<Generated> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut flows = Vec::new();
    for i in 0..6000u32 {
        let kind = match i % 12 {
            0..=5 => Kind::Bulk,
            6..=8 => Kind::Dns,
            9 | 10 => Kind::Media,
            _ => Kind::Bulk6,
        };
        let mut client = [0u8; 16];
        let mut server = [0u8; 16];
        if matches!(kind, Kind::Bulk6) {
            client[..4].copy_from_slice(&[0xfd, 0, 0, 1]);
            client[12..].copy_from_slice(&i.to_be_bytes());
            server[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            server[15] = (i % 200) as u8;
        } else {
            client[..4].copy_from_slice(&[10, 1, (i >> 8) as u8, i as u8]);
            server[..4].copy_from_slice(&[192, 0, 2, (i % 250) as u8 + 1]);
        }
        flows.push(Flow {
            kind,
            client,
            server,
            cport: 32768 + (i % 28000) as u16,
            sport: match kind {
                Kind::Bulk | Kind::Bulk6 => 443,
                Kind::Dns => 53,
                Kind::Media => 3478,
            },
            seq: rng.next() as u32,
            sent: 0,
        });
    }
    let mut w = BufWriter::with_capacity(8 << 20, File::create(path)?);
    let header = match format {
        FileFormat::Pcap => {
            let mut h = Vec::new();
            h.extend(0xa1b2_c3d4u32.to_le_bytes());
            h.extend(2u16.to_le_bytes());
            h.extend(4u16.to_le_bytes());
            h.extend([0u8; 8]);
            h.extend(262_144u32.to_le_bytes());
            h.extend(1u32.to_le_bytes());
            h
        }
        FileFormat::Pcapng => pcapng_head(),
    };
    w.write_all(&header)?;
    let payload = vec![0x5au8; 1500];
    let mut frame = Vec::with_capacity(2048);
    let mut written = header.len() as u64;
    let mut packets = 0u64;
    let mut prefix_mark = None;
    let mut ts_us: u64 = 1_763_800_000_000_000;
    while written < size {
        // Bulk flows carry most bytes, as on a real host; a few flows are hot at a time.
        let f = &mut flows[(rng.below(6000) as usize + (packets as usize / 50_000) * 7) % 6000];
        let (from_client, len) = match f.kind {
            Kind::Bulk | Kind::Bulk6 => {
                if f.sent % 3 == 2 {
                    (true, 0)
                } else {
                    (
                        false,
                        1460 - if matches!(f.kind, Kind::Bulk6) { 20 } else { 0 },
                    )
                }
            }
            Kind::Dns => (f.sent % 2 == 0, if f.sent % 2 == 0 { 40 } else { 160 }),
            Kind::Media => (rng.below(4) == 0, 1200),
        };
        f.sent += 1;
        frame.clear();
        build_frame(&mut frame, f, from_client, len, &payload);
        ts_us += 1 + rng.below(8);
        let rec_len = frame.len() as u32;
        match format {
            FileFormat::Pcap => {
                w.write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
                w.write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
                w.write_all(&rec_len.to_le_bytes())?;
                w.write_all(&rec_len.to_le_bytes())?;
                w.write_all(&frame)?;
                written += 16 + u64::from(rec_len);
            }
            FileFormat::Pcapng => {
                // Most flows are tagged with their process, as apptag writes them; one in
                // five is not (as for packets the probes missed).
                let pid = if f.cport % 5 == 0 {
                    0
                } else {
                    1000 + u32::from(f.cport % 12)
                };
                let dir = if from_client { 2 } else { 1 };
                written += write_epb(&mut w, ts_us * 1000, &frame, dir, pid)?;
            }
        }
        packets += 1;
        if prefix_mark.is_none() && written >= prefix_size {
            prefix_mark = Some((written, packets));
        }
    }
    w.flush()?;
    drop(w);
    let (prefix_bytes, prefix_packets) = prefix_mark.unwrap_or((written, packets));
    let mut src = File::open(path)?;
    let mut dst = BufWriter::new(File::create(prefix)?);
    std::io::copy(&mut std::io::Read::take(&mut src, prefix_bytes), &mut dst)?;
    dst.flush()?;
    Ok(Generated {
        packets,
        flows: flows.len(),
        prefix_packets,
        prefix_bytes,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileFormat {
    Pcap,
    Pcapng,
}

const PROCESS_NAMES: [&str; 12] = [
    "firefox",
    "curl",
    "apt",
    "sshd",
    "nginx",
    "postgres",
    "dockerd",
    "systemd-resolve",
    "chrome",
    "rsync",
    "git",
    "python3",
];

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Section header, one Ethernet interface with ns timestamps, and Wireshark's process
/// entries (Custom Block, PEN 32622) for the pids the packets carry.
fn pcapng_head() -> Vec<u8> {
    let mut h = Vec::new();
    // SHB: byte-order magic, version 1.0, unknown section length, no options.
    h.extend(0x0a0d_0d0au32.to_le_bytes());
    h.extend(28u32.to_le_bytes());
    h.extend(0x1a2b_3c4du32.to_le_bytes());
    h.extend(1u16.to_le_bytes());
    h.extend(0u16.to_le_bytes());
    h.extend(u64::MAX.to_le_bytes());
    h.extend(28u32.to_le_bytes());
    // IDB: Ethernet, snaplen 262144, if_tsresol 9 (ns).
    h.extend(1u32.to_le_bytes());
    h.extend(32u32.to_le_bytes());
    h.extend(1u16.to_le_bytes());
    h.extend(0u16.to_le_bytes());
    h.extend(262_144u32.to_le_bytes());
    h.extend([9, 0, 1, 0, 9, 0, 0, 0]);
    h.extend([0, 0, 0, 0]);
    h.extend(32u32.to_le_bytes());
    for (i, name) in PROCESS_NAMES.iter().enumerate() {
        let mut entry = Vec::new();
        entry.extend((1000 + i as u32).to_le_bytes());
        entry.extend(2u16.to_le_bytes());
        entry.extend((name.len() as u16).to_le_bytes());
        entry.extend(name.as_bytes());
        entry.extend(&[0u8; 3][..pad4(name.len())]);
        entry.extend([0, 0, 0, 0]);
        let total = 8 + 4 + 8 + entry.len() + 4;
        h.extend(0x0000_0badu32.to_le_bytes());
        h.extend((total as u32).to_le_bytes());
        h.extend(32622u32.to_le_bytes());
        h.extend(3u32.to_le_bytes());
        h.extend((entry.len() as u32).to_le_bytes());
        h.extend(&entry);
        h.extend((total as u32).to_le_bytes());
    }
    h
}

/// One Enhanced Packet Block with epb_flags and, if pid != 0, epb_processid_threadid.
fn write_epb(w: &mut impl Write, ts_ns: u64, frame: &[u8], dir: u32, pid: u32) -> Result<u64> {
    let pad = pad4(frame.len());
    let opts = 8 + if pid != 0 { 12 } else { 0 } + 4;
    let total = 28 + frame.len() + pad + opts + 4;
    let mut head = [0u8; 28];
    head[0..4].copy_from_slice(&6u32.to_le_bytes());
    head[4..8].copy_from_slice(&(total as u32).to_le_bytes());
    head[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    head[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
    head[20..24].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    head[24..28].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(frame)?;
    w.write_all(&[0u8; 3][..pad])?;
    let mut tail = Vec::with_capacity(32);
    tail.extend(2u16.to_le_bytes());
    tail.extend(4u16.to_le_bytes());
    tail.extend(dir.to_le_bytes());
    if pid != 0 {
        tail.extend(8u16.to_le_bytes());
        tail.extend(8u16.to_le_bytes());
        tail.extend(pid.to_le_bytes());
        tail.extend(pid.to_le_bytes());
    }
    tail.extend([0, 0, 0, 0]);
    tail.extend((total as u32).to_le_bytes());
    w.write_all(&tail)?;
    Ok(total as u64)
}

fn build_frame(frame: &mut Vec<u8>, f: &mut Flow, from_client: bool, len: usize, payload: &[u8]) {
    let v6 = matches!(f.kind, Kind::Bulk6);
    let tcp = matches!(f.kind, Kind::Bulk | Kind::Bulk6);
    let (src, dst, sp, dp) = if from_client {
        (f.client, f.server, f.cport, f.sport)
    } else {
        (f.server, f.client, f.sport, f.cport)
    };
    frame.extend([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    frame.extend(if v6 { [0x86, 0xdd] } else { [0x08, 0x00] });
    let l4_len = if tcp { 20 } else { 8 } + len;
    let proto = if tcp { 6 } else { 17 };
    if v6 {
        frame.extend([0x60, 0, 0, 0]);
        frame.extend((l4_len as u16).to_be_bytes());
        frame.extend([proto, 64]);
        frame.extend(src);
        frame.extend(dst);
    } else {
        frame.extend([0x45, 0]);
        frame.extend(((20 + l4_len) as u16).to_be_bytes());
        frame.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
        frame.extend(&src[..4]);
        frame.extend(&dst[..4]);
    }
    frame.extend(sp.to_be_bytes());
    frame.extend(dp.to_be_bytes());
    if tcp {
        f.seq = f.seq.wrapping_add(len as u32);
        frame.extend(f.seq.to_be_bytes());
        frame.extend(f.seq.wrapping_mul(7).to_be_bytes());
        frame.extend([
            0x50,
            if len == 0 { 0x10 } else { 0x18 },
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
    } else {
        frame.extend((l4_len as u16).to_be_bytes());
        frame.extend([0, 0]);
    }
    if matches!(f.kind, Kind::Dns) && len > 0 {
        // A DNS header and question, so payload inspection has real work to do.
        let q = [
            0x12,
            0x34,
            if from_client { 0x01 } else { 0x81 },
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            7,
            b'e',
            b'x',
            b'a',
            b'm',
            b'p',
            b'l',
            b'e',
            3,
            b'c',
            b'o',
            b'm',
            0,
            0,
            1,
            0,
            1,
        ];
        frame.extend(q);
        frame.extend(&payload[..len - q.len()]);
    } else {
        frame.extend(&payload[..len]);
    }
}
