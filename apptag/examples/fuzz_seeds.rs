//! Writes the starting corpus of every fuzz target (`cargo xtask fuzz` runs it):
//! `fuzz_seeds CORPUS_DIR [CAPTURES_DIR]`.
//!
//! Seeds are real traces (the public captures, as pcap and rewritten as pcapng by our own
//! writer) and a small tagged file from our writer with process entries, application
//! records, fragments and an ICMP error, so the fuzzer starts from inputs that reach deep.
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use apptag::model::{
    AppRecord, Direction, InterfaceInfo, InterfaceStats, Packet, ProcessInfo, Provenance,
    SocketRecord, proto,
};
use apptag::pcapng::{APPTAG_PEN, SectionInfo, WIRESHARK_PEN, Writer};
use apptag::report::source::{Record, Records};

/// The fuzz harness's link-type picker (apptag/fuzz/src/lib.rs `LINKTYPES`).
const LINKTYPES: [u16; 11] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147];

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let corpus = PathBuf::from(
        args.next()
            .context("usage: fuzz_seeds CORPUS_DIR [CAPTURES]")?,
    );
    let captures = args.next().map(PathBuf::from);
    let mut seeds = Seeds { corpus, count: 0 };

    let tagged = tagged_file()?;
    seeds.file(&tagged, "tagged.pcapng")?;
    for (i, data) in custom_blocks(&tagged).into_iter().enumerate() {
        seeds.put("apprecord", &format!("block-{i}"), &data)?;
    }
    for (i, f) in frames().iter().enumerate() {
        seeds.put("dissect", &format!("gen-{i}"), &with_linktype(1, f))?;
    }
    for (name, data) in analysis_seeds() {
        seeds.put(name, &format!("gen-{}", seeds.count), &data)?;
    }

    if let Some(dir) = captures {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
            .collect();
        names.sort();
        for path in names {
            let data = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            seeds.file(&data, &stem)?;
            let (linktype, frames, ng) = rewrite(&data)?;
            seeds.file(&ng, &format!("{stem}.ng"))?;
            for (i, f) in frames.iter().take(16).enumerate() {
                seeds.put(
                    "dissect",
                    &format!("{stem}-{i}"),
                    &with_linktype(linktype, f),
                )?;
            }
        }
    }
    eprintln!(
        "fuzz_seeds: {} seeds in {}",
        seeds.count,
        seeds.corpus.display()
    );
    Ok(())
}

struct Seeds {
    corpus: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) -> Result<()> {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        self.count += 1;
        Ok(())
    }

    /// A whole capture: a seed of every target that reads files.
    fn file(&mut self, data: &[u8], name: &str) -> Result<()> {
        let is_pcapng = data.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]);
        let targets: &[&str] = if is_pcapng {
            &["pcapng", "apps", "report", "extract", "pcap", "streams"]
        } else {
            &["pcap", "report", "streams"]
        };
        for t in targets {
            self.put(t, name, data)?;
        }
        Ok(())
    }
}

/// Inputs in the small languages of the `defrag` and `tcp` harnesses (apptag/fuzz/src/lib.rs):
/// a config byte, then described packets (a kind byte and five bytes each).
fn analysis_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();
    for cfg in [0u8, 3, 0x45, 0xc6] {
        // Two IPv4 fragments of datagram 1 in order, an overlapping third, an IPv6 pair.
        let mut d = vec![cfg];
        d.extend([0b0000_0110, 0, 0, 0, 24, 0x41]);
        d.extend([0b0000_0100, 0, 3, 0, 16, 0x42]);
        d.extend([0b0000_0100, 0, 2, 0, 16, 0x43]);
        d.extend([0b0000_1011, 0, 0, 0, 16, 0x44]);
        d.extend([0b0000_1001, 0, 2, 0, 8, 0x45]);
        v.push(("defrag", d));
        // A handshake, data both ways (one segment out of order, one retransmitted), FINs;
        // then a UDP exchange on another stream.
        let mut t = vec![cfg];
        t.extend([0, 0x02, 0, 0, 0, 0]);
        t.extend([1, 0x12, 0, 0, 0, 0]);
        t.extend([0, 0x10, 0, 1, 0, 0]);
        t.extend([0, 0x18, 0, 11, 10, b'b']);
        t.extend([0, 0x18, 0, 1, 10, b'a']);
        t.extend([0, 0x18, 0, 1, 10, b'a']);
        t.extend([1, 0x18, 0, 1, 20, b'r']);
        t.extend([0, 0x11, 0, 21, 0, 0]);
        t.extend([1, 0x11, 0, 21, 0, 0]);
        t.extend([0b1010, 0, 0, 0, 12, b'q']);
        t.extend([0b1011, 0, 0, 0, 40, b'r']);
        v.push(("tcp", t));
    }
    v
}

/// The harness input for one frame: the picker byte of `linktype`, then the frame.
fn with_linktype(linktype: u16, frame: &[u8]) -> Vec<u8> {
    let pick = LINKTYPES.iter().position(|&l| l == linktype).unwrap_or(1) as u8;
    let mut v = vec![pick];
    v.extend_from_slice(frame);
    v
}

/// A capture in any format rewritten as pcapng by our writer, tagged as if curl had sent
/// every other packet (so extract and the per-application report have work), with its
/// frames.
fn rewrite(data: &[u8]) -> Result<(u16, Vec<Vec<u8>>, Vec<u8>)> {
    let mut w = Writer::new(Vec::new(), &SectionInfo::detect())?;
    w.write_process(&process(4242, "curl"))?;
    let mut linktype = 1;
    let mut frames = Vec::new();
    for rec in Records::new(data)? {
        match rec? {
            Record::Interface(i) => {
                linktype = i.linktype;
                w.add_interface(&i)?;
            }
            Record::Packet(mut p) => {
                frames.push(p.data.to_vec());
                if frames.len() % 2 == 0 {
                    (p.direction, p.pid, p.tid) = (Direction::Outbound, 4242, 4242);
                }
                w.write_packet(&p)?;
            }
            _ => {}
        }
    }
    w.write_app_records(&[app("curl", 4242, 40001, proto::TCP)], true)?;
    Ok((linktype, frames, w.into_inner()?))
}

fn ipv4(proto_: u8, src: [u8; 4], dst: [u8; 4], frag: u16, id: u16, body: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + body.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto_;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    ip.extend_from_slice(body);
    ip
}

fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

const LOCAL: [u8; 4] = [10, 0, 0, 1];
const PEER: [u8; 4] = [10, 0, 0, 53];

/// Ethernet frames: UDP, a TCP handshake with data, two IPv4 fragments, an ICMP port
/// unreachable quoting a UDP datagram, and an IPv6 fragment.
fn frames() -> Vec<Vec<u8>> {
    let dns = udp(
        40000,
        53,
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
    );
    let mut v = vec![eth(0x0800, &ipv4(proto::UDP, LOCAL, PEER, 0, 1, &dns))];
    for (seq, flags, data) in [
        (1000, 0x02, &b""[..]),
        (1001, 0x18, b"GET / HTTP/1.1\r\n\r\n"),
    ] {
        let t = tcp(40001, 80, seq, flags, data);
        v.push(eth(0x0800, &ipv4(proto::TCP, LOCAL, PEER, 0, 2, &t)));
    }
    let big = udp(40002, 53, &[0x41; 40]);
    v.push(eth(
        0x0800,
        &ipv4(proto::UDP, LOCAL, PEER, 0x2000, 7, &big[..24]),
    ));
    v.push(eth(
        0x0800,
        &ipv4(proto::UDP, LOCAL, PEER, 3, 7, &big[24..]),
    ));
    let quoted = ipv4(proto::UDP, LOCAL, PEER, 0, 9, &dns);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    v.push(eth(0x0800, &ipv4(proto::ICMP, PEER, LOCAL, 0, 10, &icmp)));
    let mut v6 = vec![0x60, 0, 0, 0, 0, 16, 44, 64];
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 5]);
    v6.extend_from_slice(&udp(40003, 53, &[])[..8]);
    v.push(eth(0x86dd, &v6));
    v
}

fn process(pid: u32, name: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        uid: 1000,
        user: "alice".into(),
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: vec![name.into(), "-v".into()],
        start_ns: 1_700_000_000_000_000_000 + u64::from(pid),
        cgroup: "/user.slice".into(),
        container_id: String::new(),
    }
}

fn app(name: &str, pid: u32, port: u16, protocol: u8) -> AppRecord {
    AppRecord {
        name: name.into(),
        pids: vec![pid],
        cmdline: vec![name.into()],
        exe: format!("/usr/bin/{name}"),
        start_ns: 1_700_000_000_000_000_000,
        uid: 1000,
        cgroup: "/user.slice".into(),
        provenance: Provenance::Hook(1),
        sockets: vec![SocketRecord {
            local_addr: IpAddr::V4(Ipv4Addr::from(LOCAL)),
            local_port: port,
            remote_addr: IpAddr::V4(Ipv4Addr::from(PEER)),
            remote_port: 53,
            protocol,
            first_ns: T0,
            last_ns: T0 + 9_000_000,
            packets_in: 1,
            packets_out: 2,
            bytes_in: 60,
            bytes_out: 120,
            cookie: 0x1000 + u64::from(port),
            pid,
            provenance: Provenance::Hook(3),
            attributed_ns: T0,
        }],
    }
}

const T0: u64 = 1_700_000_001_000_000_000;

/// A small file as the sensor writes it.
fn tagged_file() -> Result<Vec<u8>> {
    let mut w = Writer::new(Vec::new(), &SectionInfo::detect())?;
    let ifid = w.add_interface(&InterfaceInfo {
        name: "eth0".into(),
        linktype: 1,
        snaplen: 262_144,
        filter: Some("ip or ip6".into()),
    })?;
    w.write_process(&process(4242, "curl"))?;
    w.write_process(&process(5151, "dig"))?;
    for (i, f) in frames().iter().enumerate() {
        let (direction, pid) = match i % 3 {
            0 => (Direction::Outbound, 4242),
            1 => (Direction::Inbound, 5151),
            _ => (Direction::Unknown, 0),
        };
        w.write_packet(&Packet {
            ts_ns: T0 + i as u64 * 1_000_000,
            interface: ifid,
            orig_len: f.len() as u32,
            data: f,
            direction,
            pid,
            tid: pid,
        })?;
        if i == 2 {
            w.write_app_records(&[app("curl", 4242, 40001, proto::TCP)], false)?;
        }
    }
    let apps = [
        app("curl", 4242, 40001, proto::TCP),
        app("dig", 5151, 40000, proto::UDP),
    ];
    w.write_app_records(&apps, true)?;
    w.write_interface_stats(
        ifid,
        &InterfaceStats {
            start_ns: T0,
            end_ns: T0 + 1_000_000_000,
            received: 10,
            delivered: 9,
            ..Default::default()
        },
    )?;
    Ok(w.into_inner()?)
}

/// The custom data (after the PEN) of every custom block: the application-record decoder's
/// input, and the process-entry decoder's.
fn custom_blocks(file: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(h) = file.get(pos..pos + 12) {
        let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let pen = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if len < 12 || pos + len > file.len() {
            break;
        }
        if ty == 0x0BAD && (pen == APPTAG_PEN || pen == WIRESHARK_PEN) {
            out.push(file[pos + 12..pos + len - 4].to_vec());
        }
        pos += len;
    }
    out
}
