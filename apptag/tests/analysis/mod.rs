//! Shared by the analysis tests: crafted captures and a subscriber that records what each
//! stream delivered.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::ops::Range;

use apptag::analysis::stream::StreamSummary;
use apptag::analysis::{Dir, Position, State, States, Stream, StreamId, Subscriber};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// A classic pcap file with raw-IP frames (link type 101), built packet by packet.
pub struct Pcap {
    pub bytes: Vec<u8>,
    pub frames: u64,
    ts_us: u64,
}

impl Default for Pcap {
    fn default() -> Self {
        Self::new()
    }
}

impl Pcap {
    pub fn new() -> Self {
        let mut bytes = Vec::new();
        bytes.extend(0xa1b2c3d4u32.to_le_bytes());
        bytes.extend(2u16.to_le_bytes());
        bytes.extend(4u16.to_le_bytes());
        bytes.extend([0u8; 8]);
        bytes.extend(65535u32.to_le_bytes());
        bytes.extend(101u32.to_le_bytes());
        Self {
            bytes,
            frames: 0,
            ts_us: 1_700_000_000_000_000,
        }
    }

    pub fn frame(&mut self, data: &[u8]) -> u64 {
        self.ts_us += 1000;
        self.bytes
            .extend(((self.ts_us / 1_000_000) as u32).to_le_bytes());
        self.bytes
            .extend(((self.ts_us % 1_000_000) as u32).to_le_bytes());
        self.bytes.extend((data.len() as u32).to_le_bytes());
        self.bytes.extend((data.len() as u32).to_le_bytes());
        self.bytes.extend(data);
        self.frames += 1;
        self.frames
    }

    /// Advances the clock (capture time) by `secs`.
    pub fn wait(&mut self, secs: u64) {
        self.ts_us += secs * 1_000_000;
    }

    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, &self.bytes).unwrap();
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend(((20 + l4.len()) as u16).to_be_bytes());
    p.extend([0, 1, 0x40, 0, 64, proto, 0, 0]);
    p.extend(src);
    p.extend(dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(l4);
    p
}

/// One end of a crafted conversation.
#[derive(Clone, Copy, Debug)]
pub struct Ep {
    pub addr: [u8; 4],
    pub port: u16,
}

pub const CLIENT: Ep = Ep {
    addr: [10, 0, 0, 1],
    port: 40000,
};
pub const SERVER: Ep = Ep {
    addr: [10, 0, 0, 2],
    port: 80,
};

/// A TCP segment from `a` to `b` (IPv4, valid checksums).
pub fn tcp(a: Ep, b: Ep, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(a.port.to_be_bytes());
    t.extend(b.port.to_be_bytes());
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend(payload);
    let mut pseudo = Vec::new();
    pseudo.extend(a.addr);
    pseudo.extend(b.addr);
    pseudo.extend([0, 6]);
    pseudo.extend((t.len() as u16).to_be_bytes());
    pseudo.extend(&t);
    let c = checksum(&pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(a.addr, b.addr, 6, &t)
}

pub fn udp(a: Ep, b: Ep, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(a.port.to_be_bytes());
    u.extend(b.port.to_be_bytes());
    u.extend(((8 + payload.len()) as u16).to_be_bytes());
    u.extend([0, 0]);
    u.extend(payload);
    ipv4(a.addr, b.addr, 17, &u)
}

/// What one direction delivered: bytes, and gaps as `None` with their length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub bytes: Vec<u8>,
    /// (offset, length) of each gap.
    pub gaps: Vec<(u64, u64)>,
    /// One entry per data callback: (start, end).
    pub chunks: Vec<(u64, u64)>,
}

/// Records everything: per stream, both directions' bytes, gaps, summaries and the packet
/// states seen.
#[derive(Default)]
pub struct Recorder {
    pub delivered: BTreeMap<(u8, u64), [Delivered; 2]>,
    pub closed: Vec<StreamSummary>,
    pub events: Vec<(u64, State, Option<StreamId>)>,
    pub frames_of: Vec<(u64, Vec<u64>)>,
    pub states: Option<States>,
}

fn key(id: StreamId) -> (u8, u64) {
    (id.transport as u8, id.number)
}

impl Subscriber for Recorder {
    fn states(&self) -> States {
        self.states.unwrap_or(States::NONE)
    }
    fn packet(&mut self, ev: &apptag::analysis::PacketEvent<'_, '_>) {
        self.events
            .push((ev.frame, ev.state, ev.stream.map(|s| s.id)));
    }
    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        let d = &mut self.delivered.entry(key(s.id)).or_default()[dir.index()];
        let b = s.half(dir).bytes(range.start, range.end).unwrap();
        d.bytes.extend_from_slice(b);
        d.chunks.push((range.start.0, range.end.0));
        let mut frames = Vec::new();
        let mut p = range.start;
        while p < range.end {
            let sp = s.half(dir).span_at(p).unwrap();
            frames.extend_from_slice(sp.frames());
            p = Position(sp.start + u64::from(sp.len));
        }
        self.frames_of.push((range.start.0, frames));
        None
    }
    fn gap(&mut self, s: &Stream, dir: Dir, range: Range<Position>) {
        let d = &mut self.delivered.entry(key(s.id)).or_default()[dir.index()];
        d.gaps
            .push((range.start.0, range.start.distance_to(range.end)));
    }
    fn closed(&mut self, s: &Stream) {
        self.closed.push(s.summary());
    }
}

impl Recorder {
    pub fn tcp(&self, n: u64) -> &[Delivered; 2] {
        &self.delivered[&(0, n)]
    }
    pub fn summary(&self, n: u64) -> &StreamSummary {
        self.closed
            .iter()
            .find(|s| {
                s.stream.number == n && s.stream.transport == apptag::analysis::Transport::Tcp
            })
            .unwrap()
    }
}

/// Runs the analysis over `p` with `cfg`.
pub fn analyze(
    p: &Pcap,
    cfg: &apptag::analysis::AnalysisConfig,
) -> (Recorder, apptag::analysis::Summary) {
    let mut r = Recorder::default();
    let s = apptag::analysis::analyze_bytes(&p.bytes, cfg, &mut r).unwrap();
    (r, s)
}

/// tshark's `follow,PROTO,raw,N` output, split into the bytes from node 0 and node 1.
pub fn tshark_follow(path: &std::path::Path, proto: &str, n: u64) -> [Vec<u8>; 2] {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-q", "-z", &format!("follow,{proto},raw,{n}")])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "tshark failed on {}", path.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut dirs = [Vec::new(), Vec::new()];
    for line in text.lines() {
        let (d, hex) = match line.strip_prefix('\t') {
            Some(h) => (1, h),
            None => (0, line),
        };
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.len() % 2 != 0 {
            continue;
        }
        for i in (0..hex.len()).step_by(2) {
            dirs[d].push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
        }
    }
    dirs
}

/// Stream numbers tshark gives in a file, for `tcp` or `udp`.
pub fn tshark_streams(path: &std::path::Path, proto: &str) -> Vec<u64> {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", &format!("{proto}.stream")])
        .output()
        .expect("tshark runs");
    let mut v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}
