//! `cargo xtask bench pcapng` runs this: pcapng writing (and reading) of 64-byte packets
//! with epb_flags + epb_processid_threadid, apptag's own code vs the crates one would
//! otherwise pick (pcap-file 3.0.0-rc1, pcap-parser 0.17 with its `serialize` feature), on
//! the same packets in the same run. Prints a Markdown table.
//!
//! Usage: pcapng_bench [PACKETS] [FILE_DIR]   (FILE_DIR defaults to /dev/shm)
use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use apptag::model::{Direction, InterfaceInfo, Packet};
use apptag::pcapng::{Reader, Record, SectionInfo, Writer};

const LEN: usize = 64;
const RUNS: usize = 3;

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; LEN];
    f[12] = 0x08;
    f[14] = 0x45;
    f
}

fn iface() -> InterfaceInfo {
    InterfaceInfo {
        name: "eth0".into(),
        linktype: 1,
        snaplen: 262_144,
        filter: None,
    }
}

fn packet(data: &[u8], i: u64) -> Packet<'_> {
    Packet {
        ts_ns: 1_700_000_000_000_000_000 + i * 100,
        interface: 0,
        orig_len: LEN as u32,
        data,
        direction: if i & 1 == 0 {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        pid: 1234,
        tid: 1235,
    }
}

fn apptag_write<W: Write>(out: W, n: u64) -> u64 {
    let data = frame();
    let mut w = Writer::new(out, &SectionInfo::detect()).expect("writer");
    w.add_interface(&iface()).expect("idb");
    for i in 0..n {
        w.write_packet(&packet(&data, i)).expect("packet");
    }
    w.flush().expect("flush");
    w.bytes_written()
}

/// Counts bytes and discards them.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pcap_file_write<W: Write>(out: W, n: u64) -> u64 {
    use pcap_file::DataLink;
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::{Block, PcapNgParser, PcapNgWriter};
    let data = frame();
    // pcap-file 3.0.0-rc1 knows no epb_processid_threadid and does not export the type of
    // an unknown option, so the option is taken from a block it parsed.
    let mut sample = Vec::new();
    apptag_write(&mut sample, 1);
    let (mut rem, mut parser) = PcapNgParser::new(&sample).expect("parser");
    let mut pidtid_opt = None;
    while let Ok((r, b)) = parser.next_block(rem) {
        rem = r;
        if let Block::EnhancedPacket(e) = b {
            pidtid_opt = e
                .options
                .into_iter()
                .find(|o| matches!(o, EnhancedPacketOption::Unknown(_)));
            break;
        }
    }
    let pidtid_opt = pidtid_opt.expect("option 8 parsed by pcap-file");
    let mut w = PcapNgWriter::new(out).expect("pcap-file writer");
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 262_144,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    };
    let mut total = w
        .write_block(&Block::InterfaceDescription(idb))
        .expect("idb") as u64;
    // One block reused for every packet: the crate's best case.
    let mut epb = EnhancedPacketBlock::default();
    epb.original_len = LEN as u32;
    epb.data = Cow::Borrowed(&data);
    epb.options = vec![EnhancedPacketOption::Flags(1), pidtid_opt];
    let mut block = Block::EnhancedPacket(epb);
    for i in 0..n {
        if let Block::EnhancedPacket(e) = &mut block {
            let p = packet(&data, i);
            e.timestamp = Duration::from_nanos(p.ts_ns);
            e.options[0] = EnhancedPacketOption::Flags(p.direction.epb_bits());
        }
        total += w.write_block(&block).expect("packet") as u64;
    }
    w.into_inner().flush().expect("flush");
    total
}

fn pcap_parser_write<W: Write>(mut out: W, n: u64) -> u64 {
    use pcap_parser::ToVec;
    use pcap_parser::pcapng::{EPB_MAGIC, EnhancedPacketBlock, OptionCode, PcapNGOption};
    let data = frame();
    let pidtid: Vec<u8> = [1234u32.to_le_bytes(), 1235u32.to_le_bytes()].concat();
    let mut total = 0u64;
    for i in 0..n {
        let p = packet(&data, i);
        let mut epb = EnhancedPacketBlock {
            block_type: EPB_MAGIC,
            block_len1: 0,
            if_id: 0,
            ts_high: (p.ts_ns >> 32) as u32,
            ts_low: p.ts_ns as u32,
            caplen: LEN as u32,
            origlen: LEN as u32,
            data: &data,
            options: vec![
                PcapNGOption {
                    code: OptionCode(2),
                    len: 4,
                    value: Cow::Owned(p.direction.epb_bits().to_le_bytes().to_vec()),
                },
                PcapNGOption {
                    code: OptionCode(8),
                    len: 8,
                    value: Cow::Borrowed(&pidtid),
                },
            ],
            block_len2: 0,
        };
        let v = epb.to_vec().expect("serialize");
        out.write_all(&v).expect("write");
        total += v.len() as u64;
    }
    out.flush().expect("flush");
    total
}

fn apptag_read(data: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut bytes = 0u64;
    for r in Reader::new(data).expect("reader") {
        if let Ok(Record::Packet(p)) = r {
            n += 1;
            bytes += p.data.len() as u64 + u64::from(p.pid & 1);
        }
    }
    std::hint::black_box(bytes);
    n
}

fn pcap_parser_read(data: &[u8]) -> u64 {
    use pcap_parser::pcapng::Block;
    use pcap_parser::{PcapBlockOwned, PcapNGSlice};
    let mut n = 0u64;
    let mut bytes = 0u64;
    for b in PcapNGSlice::from_slice(data).expect("slice").flatten() {
        if let PcapBlockOwned::NG(Block::EnhancedPacket(e)) = b {
            n += 1;
            bytes += e.data.len() as u64 + e.options.len() as u64;
        }
    }
    std::hint::black_box(bytes);
    n
}

fn pcap_file_read(data: &[u8]) -> u64 {
    use pcap_file::pcapng::{Block, PcapNgParser};
    let (mut rem, mut parser) = PcapNgParser::new(data).expect("parser");
    let mut n = 0u64;
    let mut bytes = 0u64;
    while !rem.is_empty() {
        let Ok((r, b)) = parser.next_block(rem) else {
            break;
        };
        rem = r;
        if let Block::EnhancedPacket(e) = b {
            n += 1;
            bytes += e.data.len() as u64 + e.options.len() as u64;
        }
    }
    std::hint::black_box(bytes);
    n
}

/// Untimed: remove the previous run's file and write back dirty pages, so that no run pays
/// for another's.
fn fresh(file: &std::path::Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::process::Command::new("sync").status();
}

/// Median of RUNS timings of `f`, which returns bytes produced/consumed.
fn time(f: impl FnMut() -> u64) -> (Duration, u64) {
    time_with_setup(|| {}, f)
}

/// The same, running `setup` untimed before each run.
fn time_with_setup(mut setup: impl FnMut(), mut f: impl FnMut() -> u64) -> (Duration, u64) {
    let mut v: Vec<(Duration, u64)> = (0..RUNS)
        .map(|_| {
            setup();
            let t = Instant::now();
            let b = f();
            (t.elapsed(), b)
        })
        .collect();
    v.sort();
    v[RUNS / 2]
}

fn row(name: &str, n: u64, (d, bytes): (Duration, u64)) {
    let s = d.as_secs_f64();
    println!(
        "| {name} | {:.2} M | {:.0} | {:.1} |",
        n as f64 / s / 1e6,
        bytes as f64 / s / 1e6,
        s * 1e9 / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    // A memory-backed file by default: it measures the system calls and the kernel's copy,
    // not the disk's writeback, which throttles later runs and makes the comparison unfair.
    let dir = args.get(2).cloned().unwrap_or_else(|| {
        if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm".into()
        } else {
            std::env::temp_dir().display().to_string()
        }
    });
    let file = std::path::Path::new(&dir).join("apptag-bench.pcapng");

    println!(
        "\n### Writing {n} packets of {LEN} bytes with epb_flags + epb_processid_threadid (one core, median of {RUNS})\n"
    );
    println!("| writer | packets/s | MB/s out | ns/packet |");
    println!("|---|---|---|---|");
    row(
        "apptag `pcapng::Writer` -> memory sink",
        n,
        time(|| apptag_write(Count(0), n)),
    );
    row(
        &format!("apptag `pcapng::Writer` -> file ({})", file.display()),
        n,
        time_with_setup(
            || fresh(&file),
            || apptag_write(std::fs::File::create(&file).expect("create"), n),
        ),
    );
    row(
        "pcap-file 3.0.0-rc1 `PcapNgWriter` (BufWriter) -> memory sink",
        n,
        time(|| pcap_file_write(BufWriter::with_capacity(256 << 10, Count(0)), n)),
    );
    row(
        "pcap-file 3.0.0-rc1 `PcapNgWriter` (BufWriter) -> file",
        n,
        time_with_setup(
            || fresh(&file),
            || {
                let f = std::fs::File::create(&file).expect("create");
                pcap_file_write(BufWriter::with_capacity(256 << 10, f), n)
            },
        ),
    );
    row(
        "pcap-parser 0.17 `ToVec` (serialize feature, BufWriter) -> memory sink",
        n,
        time(|| pcap_parser_write(BufWriter::with_capacity(256 << 10, Count(0)), n)),
    );
    let _ = std::fs::remove_file(&file);

    let mut data = Vec::new();
    apptag_write(&mut data, n);
    println!(
        "\n### Reading the same {} MB from memory (one core, median of {RUNS})\n",
        data.len() / 1_000_000
    );
    println!("| reader | packets/s | MB/s in | ns/packet |");
    println!("|---|---|---|---|");
    let d = &data;
    for (name, f) in [
        (
            "apptag `pcapng::Reader` (zero-copy)",
            apptag_read as fn(&[u8]) -> u64,
        ),
        ("pcap-parser 0.17 `PcapNGSlice`", pcap_parser_read),
        ("pcap-file 3.0.0-rc1 `PcapNgParser`", pcap_file_read),
    ] {
        let (t, count) = time(|| f(d));
        assert_eq!(count, n, "{name} read every packet");
        row(name, n, (t, d.len() as u64));
    }
}
