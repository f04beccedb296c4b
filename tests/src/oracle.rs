//! The independent judges of a capture file (tshark, capinfos, tcpdump) and what our own
//! reader says about the same file, in forms the tests can compare.
use std::{
    net::IpAddr,
    path::Path,
    process::{Command, Output, Stdio},
};

use apptag::pcapng::{Record, open_file};

/// The addresses, protocol and ports of an IP packet. Ports are 0 for protocols other than
/// TCP and UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl FiveTuple {
    /// True if the packet belongs to the conversation of the two endpoints (either way).
    pub fn between(&self, proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> bool {
        self.proto == proto
            && (((self.src, self.sport) == a && (self.dst, self.dport) == b)
                || ((self.src, self.sport) == b && (self.dst, self.dport) == a))
    }
}

/// One packet of a file apptag wrote. Every field is read by the tests' own pcapng reader
/// ([`crate::blocks`]), never by apptag's.
#[derive(Clone, Debug)]
pub struct OurPacket {
    pub ts_ns: u64,
    pub interface: u32,
    pub orig_len: u32,
    pub caplen: usize,
    pub pid: u32,
    pub tid: u32,
    pub tuple: Option<FiveTuple>,
}

/// What a file written by apptag holds. `packets` (pid, tid, timestamps, lengths, 5-tuples)
/// come from the tests' own reader; only the process entries, interfaces and
/// application-record count, which no independent tool decodes, come from apptag's reader.
#[derive(Debug, Default)]
pub struct OurFile {
    pub packets: Vec<OurPacket>,
    pub app_blocks: usize,
    pub processes: Vec<apptag::model::ProcessInfo>,
    /// Interfaces of the (last) section, by id.
    pub interfaces: Vec<apptag::model::InterfaceInfo>,
    pub errors: Vec<String>,
}

/// Reads `path`: packets with the tests' own reader, process entries and application records
/// with apptag's. The two must agree on the number of packets.
pub fn read_ours(path: &Path) -> OurFile {
    let mapped = open_file(path).unwrap_or_else(|e| panic!("our reader cannot open {path:?}: {e}"));
    let reader = mapped
        .reader()
        .unwrap_or_else(|e| panic!("our reader rejects {path:?}: {e}"));
    let mut f = OurFile::default();
    let mut apptag_packets = 0usize;
    for r in reader {
        match r {
            Ok(Record::Packet(_)) => apptag_packets += 1,
            Ok(Record::Interface(i)) => f.interfaces.push(i),
            Ok(Record::Section) => f.interfaces.clear(),
            Ok(Record::AppRecords { .. }) => f.app_blocks += 1,
            Ok(Record::Process(p)) => f.processes.push(p),
            Ok(_) => {}
            Err(e) => f.errors.push(e.to_string()),
        }
    }
    let own = crate::blocks::read(path);
    f.packets = own
        .packets
        .iter()
        .map(|p| OurPacket {
            ts_ns: p.ts_ns,
            interface: p.interface,
            orig_len: p.orig_len,
            caplen: p.data.len(),
            pid: p.pid(),
            tid: p.tid(),
            tuple: parse_frame(p.linktype, &p.data),
        })
        .collect();
    if f.errors.is_empty() {
        assert_eq!(
            apptag_packets,
            f.packets.len(),
            "apptag's reader and the tests' reader disagree on the packet count of {path:?}"
        );
    }
    f
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

/// The 5-tuple of a frame of the given LINKTYPE (Ethernet, Linux SLL or SLL2) carrying IPv4
/// or IPv6: the test's own small parser, so the sensor's flow code is not checked against
/// itself.
pub fn parse_frame(linktype: u16, d: &[u8]) -> Option<FiveTuple> {
    match linktype {
        1 => parse_ethernet(d),
        113 => parse_ip(be16(d, 14)?, d.get(16..)?),
        276 => parse_ip(be16(d, 0)?, d.get(20..)?),
        _ => None,
    }
}

/// The 5-tuple of an Ethernet frame carrying IPv4 or IPv6.
pub fn parse_ethernet(d: &[u8]) -> Option<FiveTuple> {
    let mut off = 12;
    let mut ethertype = be16(d, off)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = be16(d, off)?;
    }
    parse_ip(ethertype, d.get(off + 2..)?)
}

fn parse_ip(ethertype: u16, ip: &[u8]) -> Option<FiveTuple> {
    let (src, dst, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let t: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            let frag_off = be16(ip, 6)? & 0x1fff;
            let l4 = if frag_off == 0 { ip.get(ihl..) } else { None };
            (IpAddr::from(s), IpAddr::from(t), *ip.get(9)?, l4)
        }
        0x86dd => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let t: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(t), *ip.get(6)?, ip.get(40..))
        }
        _ => return None,
    };
    let (sport, dport) = match (proto, l4) {
        (6 | 17, Some(l4)) => (be16(l4, 0)?, be16(l4, 2)?),
        _ => (0, 0),
    };
    Some(FiveTuple {
        src,
        dst,
        proto,
        sport,
        dport,
    })
}

/// Runs a tool and returns its output; fails the test (with the tool's stderr) if the tool
/// exits non-zero.
pub fn tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (install it with cargo xtask setup)"));
    assert!(
        out.status.success(),
        "{program} {args:?} exited with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `tshark -r FILE -q` and `capinfos FILE` both accept the file; returns capinfos' packet
/// count.
pub fn assert_valid(path: &Path) -> usize {
    tool("tshark", &["-r", s(path), "-q"]);
    let out = tool("capinfos", &["-c", "-M", s(path)]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("capinfos printed no packet count:\n{text}"))
}

/// One packet as tshark dissects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsharkPacket {
    /// frame.time_epoch as tshark prints it (s.nnnnnnnnn).
    pub time: String,
    pub len: u32,
    pub tuple: Option<FiveTuple>,
}

/// Every packet of `path` as tshark dissects it (outermost IP header only, so an ICMP
/// error's quoted packet does not count as the packet's own ports), in file order.
pub fn tshark_packets(path: &Path, display_filter: Option<&str>) -> Vec<TsharkPacket> {
    let mut args = vec!["-r", s(path), "-T", "fields", "-E", "occurrence=f"];
    for f in [
        "frame.time_epoch",
        "frame.len",
        "ip.src",
        "ip.dst",
        "ip.proto",
        "ipv6.src",
        "ipv6.dst",
        "ipv6.nxt",
        "tcp.srcport",
        "tcp.dstport",
        "udp.srcport",
        "udp.dstport",
    ] {
        args.extend(["-e", f]);
    }
    // tshark lists custom blocks (our application records) as records of their own; only
    // packets have a timestamp.
    let filter = match display_filter {
        Some(f) => format!("frame.time_epoch and ({f})"),
        None => "frame.time_epoch".to_string(),
    };
    args.extend(["-Y", &filter]);
    let out = tool("tshark", &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let col = |i: usize| c.get(i).copied().unwrap_or("");
            let (src, dst, proto) = if col(2).is_empty() {
                (col(5), col(6), col(7))
            } else {
                (col(2), col(3), col(4))
            };
            let tuple = match (src.parse(), dst.parse(), proto.parse::<u8>()) {
                (Ok(src), Ok(dst), Ok(proto)) => {
                    let (sp, dp) = match proto {
                        6 => (col(8), col(9)),
                        17 => (col(10), col(11)),
                        _ => ("0", "0"),
                    };
                    Some(FiveTuple {
                        src,
                        dst,
                        proto,
                        sport: sp.parse().unwrap_or(0),
                        dport: dp.parse().unwrap_or(0),
                    })
                }
                _ => None,
            };
            TsharkPacket {
                time: col(0).to_string(),
                len: col(1).parse().unwrap_or(0),
                tuple,
            }
        })
        .collect()
}

/// ns since the epoch in the form tshark prints frame.time_epoch for a ns-resolution file.
pub fn epoch_string(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// One row of `tshark -z conv,tcp|udp`: endpoint A, endpoint B, frames and bytes from B
/// to A, from A to B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub a: (IpAddr, u16),
    pub b: (IpAddr, u16),
    pub frames_to_a: u64,
    pub bytes_to_a: u64,
    pub frames_from_a: u64,
    pub bytes_from_a: u64,
}

fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some((ip.parse().ok()?, port.parse().ok()?))
}

/// Parses a byte count as tshark prints it in conversation tables ("552 bytes",
/// "5,296 bytes"); None for the rounded forms ("5 kB").
fn bytes_count(num: &str, unit: &str) -> Option<u64> {
    (unit == "bytes")
        .then(|| num.replace([',', '\u{a0}'], "").parse().ok())
        .flatten()
}

/// `tshark -r FILE -q -z conv,KIND` (KIND tcp or udp), parsed.
pub fn tshark_conversations(path: &Path, kind: &str) -> Vec<Conversation> {
    let out = tool(
        "tshark",
        &["-r", s(path), "-q", "-z", &format!("conv,{kind}")],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut convs = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.get(1) != Some(&"<->") {
            continue;
        }
        // A <-> B  frames bytes-with-unit  frames bytes-with-unit  frames bytes ...
        let parsed = (|| {
            Some(Conversation {
                a: endpoint(w.first()?)?,
                b: endpoint(w.get(2)?)?,
                frames_to_a: w.get(3)?.parse().ok()?,
                bytes_to_a: bytes_count(w.get(4)?, w.get(5)?)?,
                frames_from_a: w.get(6)?.parse().ok()?,
                bytes_from_a: bytes_count(w.get(7)?, w.get(8)?)?,
            })
        })();
        convs
            .push(parsed.unwrap_or_else(|| panic!("cannot read tshark conversation line: {line}")));
    }
    convs
}
