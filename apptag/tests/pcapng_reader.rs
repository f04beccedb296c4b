//! Our reader against files from other writers, with tshark as the oracle for what they hold.
mod common;

use std::path::Path;

use apptag::model::Direction;
use apptag::pcapng::{self, Record, SectionInfo, Writer};
use common::*;

/// (ts_ns, caplen, orig_len, direction bits) of every packet, by our reader.
fn ours(path: &Path) -> Vec<(u64, usize, u32, u32)> {
    let m = pcapng::open_file(path).expect("open");
    m.reader()
        .expect("reader")
        .filter_map(|r| match r.expect("decodes") {
            Record::Packet(p) => Some((p.ts_ns, p.data.len(), p.orig_len, p.direction.epb_bits())),
            _ => None,
        })
        .collect()
}

/// The same by tshark: (epoch string, caplen, orig_len, direction or "").
fn theirs(path: &Path) -> Vec<(String, usize, u32, String)> {
    let out = stdout_of(
        "tshark",
        &[
            "-r",
            path.to_str().unwrap_or(""),
            "-Y",
            "!frame.cb_pen",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.len",
            "-e",
            "frame.packet_flags_direction",
        ],
    );
    out.lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (
                c[0].to_string(),
                c[1].parse().expect("cap_len"),
                c[2].parse().expect("len"),
                c.get(3).copied().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn epoch(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

fn assert_same(path: &Path, check_time: impl Fn(usize) -> bool) {
    let a = ours(path);
    let b = theirs(path);
    assert_eq!(a.len(), b.len(), "packet count, ours vs tshark");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if check_time(i) {
            assert_eq!(epoch(x.0), y.0, "timestamp of packet {i}");
        }
        assert_eq!(x.1, y.1, "captured length of packet {i}");
        assert_eq!(x.2, y.2, "original length of packet {i}");
        // No epb_flags (tshark prints nothing) must read as an unknown direction.
        let d = if y.3.is_empty() {
            0
        } else {
            u32::from_str_radix(y.3.trim_start_matches("0x"), 16).expect("hex")
        };
        assert_eq!(x.3, d, "direction of packet {i}");
    }
}

#[test]
fn reads_public_traces_converted_by_editcap() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/captures");
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!("the shared public captures are missing at {dir} ({e}): see /work/shared/captures/README.md")
    });
    let tmp = TempDir::new("traces");
    let mut n = 0;
    for e in entries.flatten() {
        let src = e.path();
        if src.extension().and_then(|x| x.to_str()) != Some("pcap") {
            continue;
        }
        let dst = tmp.path("t.pcapng");
        let o = run(
            "editcap",
            &[
                "-F",
                "pcapng",
                src.to_str().unwrap_or(""),
                dst.to_str().unwrap_or(""),
            ],
        );
        assert!(o.status.success(), "editcap {}", src.display());
        assert_same(&dst, |_| true);
        n += 1;
    }
    assert!(n > 0, "no .pcap in {dir}");
}

struct Be(Vec<u8>);

impl Be {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// One block: body is padded by the caller.
    fn block(&mut self, t: u32, body: &[u8]) {
        let len = 12 + body.len() as u32;
        self.u32(t);
        self.u32(len);
        self.0.extend_from_slice(body);
        self.u32(len);
    }
}

fn be_body(f: impl FnOnce(&mut Be)) -> Vec<u8> {
    let mut b = Be(Vec::new());
    f(&mut b);
    while !b.0.len().is_multiple_of(4) {
        b.0.push(0);
    }
    b.0
}

/// A big-endian section (if_tsresol 10^-3 and 2^-10, EPB, obsolete PB, SPB) followed by a
/// little-endian section of ours: byte orders, resolutions and several sections at once.
#[test]
fn reads_big_endian_sections_other_resolutions_and_old_blocks() {
    let frame = udp_frame([10, 0, 0, 1], 1234, [10, 0, 0, 2], 53, 60);
    let mut f = Be(Vec::new());
    f.block(
        0x0A0D_0D0A,
        &be_body(|b| {
            b.u32(0x1A2B_3C4D);
            b.u16(1);
            b.u16(0);
            b.u32(u32::MAX);
            b.u32(u32::MAX);
        }),
    );
    for (resol, snap) in [(3u8, 0u32), (0x8A, 65535)] {
        f.block(
            1,
            &be_body(|b| {
                b.u16(1);
                b.u16(0);
                b.u32(snap);
                b.u16(9);
                b.u16(1);
                b.0.extend_from_slice(&[resol, 0, 0, 0]);
                b.u32(0);
            }),
        );
    }
    let epb = |b: &mut Be, ifid: u32, ts: u64, flags: Option<u32>| {
        b.u32(ifid);
        b.u32((ts >> 32) as u32);
        b.u32(ts as u32);
        b.u32(frame.len() as u32);
        b.u32(frame.len() as u32 + 4);
        b.0.extend_from_slice(&frame);
        if let Some(fl) = flags {
            b.u16(2);
            b.u16(4);
            b.u32(fl);
            b.u16(0);
            b.u16(0);
        }
    };
    f.block(6, &be_body(|b| epb(b, 0, 1_700_000_001_123, Some(1))));
    f.block(
        6,
        &be_body(|b| epb(b, 1, 1_700_000_001 * 1024 + 512, Some(2))),
    );
    f.block(
        2,
        &be_body(|b| {
            b.u16(0);
            b.u16(0);
            let ts: u64 = 1_700_000_002_500;
            b.u32((ts >> 32) as u32);
            b.u32(ts as u32);
            b.u32(frame.len() as u32);
            b.u32(frame.len() as u32);
            b.0.extend_from_slice(&frame);
        }),
    );
    f.block(
        3,
        &be_body(|b| {
            b.u32(frame.len() as u32);
            b.0.extend_from_slice(&frame);
        }),
    );
    let mut bytes = f.0;
    let mut w = Writer::new(Vec::new(), &SectionInfo::detect()).expect("writer");
    w.add_interface(&eth_lo()).expect("idb");
    w.write_packet(&apptag::model::Packet {
        ts_ns: T0,
        interface: 0,
        orig_len: 60,
        data: &frame,
        direction: Direction::Outbound,
        pid: 1,
        tid: 1,
    })
    .expect("packet");
    bytes.extend(w.into_inner().expect("bytes"));

    let tmp = TempDir::new("be");
    let path = tmp.path("be.pcapng");
    std::fs::write(&path, &bytes).expect("write");
    assert_tools_accept(&path);
    // The simple packet block (index 3) has no timestamp; tshark shows the previous one.
    assert_same(&path, |i| i != 3);
    let ts: Vec<u64> = ours(&path).iter().map(|p| p.0).collect();
    assert_eq!(ts[0], 1_700_000_001_123_000_000);
    assert_eq!(ts[1], 1_700_000_001_500_000_000);
    assert_eq!(ts[4], T0);
}
