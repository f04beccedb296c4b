//! The bodies of the fuzz targets, one function per target, shared by the libFuzzer
//! binaries (`fuzz_targets/`) and by the regression test that replays saved crashes
//! (`apptag/tests/fuzz_regressions.rs` includes this file), so a saved input replays through
//! exactly the code that found it.
//!
//! Each function feeds one input to an entry point that reads outside data and returns how
//! many items it read, or the error that stopped it. A panic (and so a libFuzzer crash) is
//! the only wrong answer, besides `extract` writing a file that its own reader rejects.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::ops::Range;

use apptag::analysis::defrag::{DefragConfig, DefragOutcome, Defragmenter, MIN_MEMCAP, Policy};
use apptag::analysis::tcp::{Input, Reassembler, transport_of};
use apptag::analysis::{
    AnalysisConfig, Dir, OverlapPolicy, Position, ReassemblyConfig, States, Stream, Subscriber,
    Transport,
};
use apptag::dissect::{self, Fragment};
use apptag::pcapng::{self, AppTable, ChangeTracker, Reader, Record};
use apptag::report::{self, extract::Selector, source::Records};

/// What one input did: items read, or the error that stopped reading.
pub type Outcome = Result<u64, String>;

/// One target's body.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name, as `cargo xtask fuzz --list` shows them.
pub const TARGETS: &[(&str, Target)] = &[
    ("dissect", dissect),
    ("pcapng", pcapng),
    ("pcap", pcap),
    ("apprecord", apprecord),
    ("apps", apps),
    ("report", report),
    ("extract", extract),
    ("defrag", defrag),
    ("tcp", tcp),
    ("streams", streams),
];

/// The link types the dissector knows, plus one it does not; the first input byte picks one.
pub const LINKTYPES: [u16; 11] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147];

/// One frame: byte 0 picks the link type, the rest is the frame. ICMP errors are followed
/// into their quoted datagram, and into its quote, as deep as they go.
pub fn dissect(data: &[u8]) -> Outcome {
    let Some((&pick, frame)) = data.split_first() else {
        return Err("empty input".into());
    };
    let linktype = LINKTYPES[usize::from(pick) % LINKTYPES.len()];
    let mut d = dissect::dissect(linktype, frame);
    let mut layers = 1;
    loop {
        let _ = d.five_tuple().canonical();
        let _ = (d.ip_five_tuple(), d.has_ports());
        match d.icmp_error_quote() {
            Some(q) => d = q,
            None => return Ok(layers),
        }
        layers += 1;
    }
}

/// The pcapng reader over a whole file, on past recoverable errors.
pub fn pcapng(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data).map_err(|e| e.to_string())?;
    let mut n = 0;
    let mut last = None;
    while let Some(rec) = r.next_record() {
        match rec {
            Ok(Record::Packet(p)) => {
                let lt = r
                    .interfaces()
                    .get(p.interface as usize)
                    .map_or(1, |i| i.linktype);
                let _ = dissect::dissect(lt, p.data);
            }
            Ok(_) => {}
            Err(e) => last = Some(e.to_string()),
        }
        n += 1;
    }
    assert!(
        r.offset() <= data.len() as u64,
        "reader offset past the end"
    );
    let prefix = pcapng::reader::valid_prefix_len(data);
    assert!(prefix <= data.len() as u64, "valid prefix past the end");
    last.map_or(Ok(n), Err)
}

/// The classic pcap reader, and the format sniffer in front of both readers.
pub fn pcap(data: &[u8]) -> Outcome {
    let mut n = 0;
    if let Ok(mut r) = report::pcap::PcapReader::new(data) {
        while let Some(p) = r.next_packet() {
            if p.is_err() {
                break;
            }
            n += 1;
        }
    }
    let mut records = Records::new(data).map_err(|e| e.to_string())?;
    while let Some(rec) = records.next_record() {
        rec.map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// The application-record decoder (the custom data after the PEN), then the table merge
/// and change tracking fed with what it decoded; and the process-entry decoder.
pub fn apprecord(data: &[u8]) -> Outcome {
    let _ = pcapng::process::decode(data, 0);
    let Some(block) = pcapng::apprecord::decode(data, 0).map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let n = block.apps.len() as u64;
    let mut table = AppTable::new();
    for _ in 0..2 {
        let apps = block.apps.clone();
        table.merge_block(
            block.sequence,
            block.final_table,
            block.part,
            block.parts,
            apps,
        );
    }
    let _ = table.final_complete();
    let _ = ChangeTracker::new().changes(table.apps());
    Ok(n)
}

/// `apptag apps FILE --json`: the table the command prints, as JSON (the command's own
/// printing, in the binary's cli/apps.rs, only formats these decoded values).
pub fn apps(data: &[u8]) -> Outcome {
    let file = TempFile::with(data);
    let got = pcapng::apps::collect(file.path()).map_err(|e| e.to_string())?;
    serde_json::to_writer(std::io::sink(), &got).map_err(|e| e.to_string())?;
    Ok(got.apps.len() as u64)
}

/// `apptag report FILE --flows`, as a table and as JSON.
pub fn report(data: &[u8]) -> Outcome {
    let r = report::analyze_bytes(data, "fuzz", report::Options { flows: true })
        .map_err(|e| e.to_string())?;
    let _ = report::table::render(&r);
    serde_json::to_string(&r).map_err(|e| e.to_string())?;
    Ok(r.totals.packets)
}

/// `apptag extract FILE -o OUT` with a selector picked by the input's length (so the file
/// bytes stay as they are). What extract writes must read back without error.
pub fn extract(data: &[u8]) -> Outcome {
    let input = TempFile::with(data);
    let output = TempFile::unused();
    let sel = match data.len() % 3 {
        0 => Selector::App("curl".into()),
        1 => Selector::Pid(4242),
        _ => Selector::Cgroup("/user.slice".into()),
    };
    let stats =
        report::extract::extract(input.path(), output.path(), &sel).map_err(|e| e.to_string())?;
    let written = std::fs::read(output.path()).map_err(|e| e.to_string())?;
    let mut r = Reader::new(&written).unwrap_or_else(|e| panic!("extract wrote no pcapng: {e}"));
    while let Some(rec) = r.next_record() {
        if let Err(e) = rec {
            panic!("extract wrote a file its own reader rejects: {e}");
        }
    }
    Ok(stats.packets_written)
}

/// A file for the entry points that take a path; in /dev/shm when there is one, so the
/// fuzzer's loop does not wait on a disk. Removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(data: &[u8]) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("apptag-fuzz-{}-{n}", std::process::id()));
        std::fs::write(&path, data)
            .unwrap_or_else(|e| panic!("harness: writing {}: {e}", path.display()));
        TempFile(path)
    }

    /// A name only: for an output the entry point creates.
    fn unused() -> Self {
        let t = Self::with(&[]);
        let _ = std::fs::remove_file(t.path());
        t
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The Internet checksum of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 or IPv6 UDP fragment: id, offset (8-byte units), more flag, `len` bytes of `fill`.
fn fragment(ipv6: bool, id: u8, offset: u16, more: bool, fill: u8, len: usize, out: &mut Vec<u8>) {
    out.clear();
    if ipv6 {
        out.extend([0x60, 0, 0, 0]);
        out.extend(((8 + len) as u16).to_be_bytes());
        out.extend([44, 64]);
        out.extend([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        out.extend([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        out.extend([17, 0]);
        out.extend(((offset << 3) | u16::from(more)).to_be_bytes());
        out.extend(u32::from(id).to_be_bytes());
    } else {
        out.extend([0x45, 0]);
        out.extend(((20 + len) as u16).to_be_bytes());
        out.extend(u16::from(id).to_be_bytes());
        out.extend(((offset & 0x1fff) | if more { 0x2000 } else { 0 }).to_be_bytes());
        out.extend([64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let c = checksum(&out[..20]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out.extend(std::iter::repeat_n(fill, len));
}

/// Takes one packet off `rest`: `describe` reads a described packet (returning how many
/// bytes it used), or, with the top bit of the kind byte set, a length byte and that many
/// raw bytes are taken as an IP packet (so malformed headers get in too).
fn next_packet<'a>(
    rest: &mut &'a [u8],
    pkt: &mut Vec<u8>,
    describe: impl FnOnce(u8, &'a [u8], &mut Vec<u8>) -> Option<usize>,
) -> bool {
    let Some((&kind, tail)) = rest.split_first() else {
        return false;
    };
    if kind & 0x80 == 0 {
        let Some(used) = describe(kind, tail, pkt) else {
            return false;
        };
        *rest = &tail[used..];
    } else {
        let Some((&n, body)) = tail.split_first() else {
            return false;
        };
        let n = usize::from(n).min(body.len());
        pkt.clear();
        pkt.extend_from_slice(&body[..n]);
        *rest = &body[n..];
    }
    true
}

/// Hostile fragment sequences into the defragmenter. Byte 0 picks the policy and tight
/// limits; then fragments, described (kind bit 0 family, bit 1 more, bits 2-6 id; offset
/// in 8-byte units and length, 2 bytes each; a fill byte) or raw. Checked after every
/// fragment: each one is held, a constituent or discarded, memory stays under the memcap,
/// and a reassembled datagram dissects as one whole packet.
pub fn defrag(data: &[u8]) -> Outcome {
    let Some((&cfg, mut rest)) = data.split_first() else {
        return Err("empty input".into());
    };
    let memcap = MIN_MEMCAP;
    let mut df = Defragmenter::new(DefragConfig {
        policy: Policy::ALL[usize::from(cfg) % Policy::ALL.len()],
        max_trackers: 1 + usize::from(cfg >> 3 & 7),
        max_fragments_per_datagram: 2 + usize::from(cfg >> 6) * 20,
        memcap_bytes: memcap,
        timeout_ns: 1_000,
        ..DefragConfig::default()
    });
    let mut pkt = Vec::new();
    let mut frame = 0u64;
    let describe = |kind: u8, tail: &[u8], pkt: &mut Vec<u8>| {
        let h = tail.get(..5)?;
        let offset = u16::from_be_bytes([h[0], h[1]]) & 0x1fff;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]) & 0x7ff);
        fragment(
            kind & 1 != 0,
            kind >> 2,
            offset,
            kind & 2 != 0,
            h[4],
            len,
            pkt,
        );
        Some(5)
    };
    while next_packet(&mut rest, &mut pkt, describe) {
        frame += 1;
        let d = dissect::dissect(dissect::linktype::RAW, &pkt);
        if d.fragment == Fragment::Whole && d.frag.header_len == 0 {
            continue;
        }
        if let DefragOutcome::Reassembled {
            datagram,
            constituents,
            ..
        } = df.push(frame, frame * 97, &d)
        {
            assert!(!constituents.is_empty());
            let whole = dissect::dissect(dissect::linktype::RAW, datagram);
            assert_eq!(whole.fragment, Fragment::Whole);
            assert_eq!(whole.l3.len(), datagram.len());
        }
        let s = df.stats();
        assert_eq!(s.fragments, s.held + s.constituents + s.discarded.total());
        assert!(s.memory_bytes as usize <= memcap);
    }
    df.flush();
    let s = df.stats();
    assert_eq!(s.held, 0);
    assert_eq!(s.fragments, s.constituents + s.discarded.total());
    Ok(s.fragments)
}

/// A subscriber that reads every range it is given and checks the stream API's promises:
/// delivered and gap ranges are in order and contiguous per direction, their bytes (and
/// gaps) cover the range exactly, and every opened stream is closed once.
#[derive(Default)]
struct Checker {
    opened: u64,
    closed: u64,
    bytes: u64,
    /// Every other call keeps the range's start, so retention and release both run.
    keep: bool,
}

impl Subscriber for Checker {
    fn states(&self) -> States {
        States::ALL
    }

    fn opened(&mut self, _s: &Stream) {
        self.opened += 1;
    }

    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        let want = range.start.distance_to(range.end);
        let pieces = s
            .pieces(dir, range.clone())
            .unwrap_or_else(|e| panic!("delivered range {range:?} unreadable: {e:?}"));
        let got: u64 = pieces
            .iter()
            .map(|p| match p {
                apptag::analysis::stream::Piece::Data(d) => d.len() as u64,
                apptag::analysis::stream::Piece::Gap(g) => *g,
            })
            .sum();
        assert_eq!(got, want, "pieces of {range:?}");
        if want > 0 {
            let _ = s.half(dir).span_at(range.start);
        }
        self.bytes += want;
        self.keep = !self.keep;
        self.keep.then_some(range.start)
    }

    fn closed(&mut self, s: &Stream) {
        self.closed += 1;
        let _ = s.summary();
    }
}

/// The reassembly limits the stream targets run under: small, so that the fuzzer hits
/// every limit.
fn tight(cfg: u8) -> ReassemblyConfig {
    ReassemblyConfig {
        policy: OverlapPolicy::ALL[usize::from(cfg) % OverlapPolicy::ALL.len()],
        depth: if cfg & 0x08 != 0 { 3000 } else { 0 },
        max_queued_bytes: 4096,
        memcap: 64 * 1024,
        max_streams: 1 + usize::from(cfg >> 4 & 3),
        timeout_ns: 10_000,
        compare_window: if cfg & 0x40 != 0 { 0 } else { 256 },
        ..ReassemblyConfig::default()
    }
}

/// An IPv4 TCP segment or UDP datagram between 10.0.0.1:`cport` and 10.0.0.2:80.
fn segment(udp: bool, reverse: bool, cport: u16, flags: u8, seq: u32, body: &[u8]) -> Vec<u8> {
    let (sport, dport) = if reverse { (80, cport) } else { (cport, 80) };
    let mut l4 = Vec::with_capacity(20 + body.len());
    l4.extend(sport.to_be_bytes());
    l4.extend(dport.to_be_bytes());
    if udp {
        l4.extend(((8 + body.len()) as u16).to_be_bytes());
        l4.extend([0, 0]);
    } else {
        l4.extend(seq.to_be_bytes());
        l4.extend(0u32.to_be_bytes());
        l4.extend([5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    l4.extend_from_slice(body);
    let (src, dst) = if reverse {
        ([10, 0, 0, 2], [10, 0, 0, 1])
    } else {
        ([10, 0, 0, 1], [10, 0, 0, 2])
    };
    let mut ip = vec![0x45, 0];
    ip.extend(((20 + l4.len()) as u16).to_be_bytes());
    ip.extend([0, 0, 0x40, 0, 64, if udp { 17 } else { 6 }, 0, 0]);
    ip.extend(src);
    ip.extend(dst);
    ip.extend(l4);
    ip
}

/// Arbitrary segments into TCP (and UDP) reassembly. Byte 0 picks the overlap policy, the
/// limits and a base sequence number (one just below the wrap); then packets, described
/// (kind bit 0 direction, bits 1-2 stream, bit 3 UDP; TCP flags, sequence offset from the
/// base (2 bytes), length, fill byte) or raw. Memory stays under the memcap after every
/// packet, and at the end every stream opened was closed once and none is left.
pub fn tcp(data: &[u8]) -> Outcome {
    let Some((&cfg, mut rest)) = data.split_first() else {
        return Err("empty input".into());
    };
    let limits = tight(cfg);
    let memcap = limits.memcap;
    let base: u32 = if cfg & 0x80 != 0 {
        u32::MAX - 2000
    } else {
        1000
    };
    let mut r = Reassembler::new(limits, None, States::ALL);
    let mut sub = Checker::default();
    let mut pkt = Vec::new();
    let mut frame = 0u64;
    let describe = |kind: u8, tail: &[u8], pkt: &mut Vec<u8>| {
        let h = tail.get(..5)?;
        let seq = base.wrapping_add(u32::from(u16::from_be_bytes([h[1], h[2]])));
        let body = vec![h[4]; usize::from(h[3])];
        let cport = 40000 + u16::from(kind >> 1 & 3);
        *pkt = segment(kind & 8 != 0, kind & 1 != 0, cport, h[0], seq, &body);
        Some(5)
    };
    while next_packet(&mut rest, &mut pkt, describe) {
        frame += 1;
        let d = dissect::dissect(dissect::linktype::RAW, &pkt);
        let inp = Input {
            frame,
            ts_ns: frame * 1_000,
            pid: 0,
            packet: &d,
            constituents: None,
        };
        match transport_of(&d) {
            Some(Transport::Tcp) => r.tcp(&inp, &mut sub),
            Some(Transport::Udp) => r.udp(&inp, &mut sub),
            None => {}
        }
        assert!(
            r.memory() <= memcap,
            "memory {} over the memcap",
            r.memory()
        );
    }
    r.finish(&mut sub);
    assert_eq!(r.stream_count(), 0, "streams left after finish");
    assert_eq!(sub.opened, sub.closed, "streams opened vs closed");
    Ok(sub.bytes)
}

/// `apptag streams` / `apptag follow` on a whole file: read, dissect, defragment,
/// reassemble, with the checking subscriber and tight limits (from the file's length, so
/// the bytes stay as they are).
pub fn streams(data: &[u8]) -> Outcome {
    let cfg = AnalysisConfig {
        reassembly: tight(data.len() as u8),
        ..AnalysisConfig::default()
    };
    let mut sub = Checker::default();
    let summary =
        apptag::analysis::analyze_bytes(data, &cfg, &mut sub).map_err(|e| e.to_string())?;
    assert_eq!(sub.opened, sub.closed, "streams opened vs closed");
    Ok(summary.frames)
}
