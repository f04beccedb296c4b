//! Fuzz target `defrag`: hostile fragment sequences into the defragmenter.
//!
//! Byte 0 picks the policy and tight limits; the rest is a list of fragments, each either
//! described (family, id, offset, length, flags: built into a valid packet, so the fuzzer
//! reaches deep overlap cases) or given raw (bytes dissected as raw IP, so malformed headers
//! reach it too). A panic is the only crash; the invariants the layers above rely on are
//! asserted after every fragment: every fragment held, delivered or discarded, memory under
//! the memcap, and every reassembled datagram a well-formed whole packet.
//!
//! Self-contained so it drops into `apptag/fuzz` as one more `[[bin]]` (name `defrag`).
#![no_main]

use apptag::{
    analysis::defrag::{DefragConfig, DefragOutcome, Defragmenter, MIN_MEMCAP, Policy},
    dissect::{self, Fragment},
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = defrag(data);
});

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

fn build(ipv6: bool, id: u8, offset: u16, more: bool, fill: u8, len: usize, out: &mut Vec<u8>) {
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

pub fn defrag(data: &[u8]) -> Result<u64, String> {
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
    while let Some((&kind, tail)) = rest.split_first() {
        frame += 1;
        if kind & 0x80 == 0 {
            // Described: kind bit 0 family, bit 1 more, bits 2-6 id; then offset (2 bytes,
            // in 8-byte units), length (2 bytes, up to 2047), fill byte.
            let Some(h) = tail.get(..5) else { break };
            let offset = u16::from_be_bytes([h[0], h[1]]) & 0x1fff;
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]) & 0x7ff);
            build(kind & 1 != 0, kind >> 2, offset, kind & 2 != 0, h[4], len, &mut pkt);
            rest = &tail[5..];
        } else {
            // Raw: a length byte, then that many bytes taken as an IP packet.
            let Some((&n, body)) = tail.split_first() else { break };
            let n = usize::from(n).min(body.len());
            pkt.clear();
            pkt.extend_from_slice(&body[..n]);
            rest = &body[n..];
        }
        let d = dissect::dissect(dissect::linktype::RAW, &pkt);
        if d.fragment == Fragment::Whole && d.frag.header_len == 0 {
            continue;
        }
        let ts = frame * 97;
        if let DefragOutcome::Reassembled {
            datagram,
            constituents,
            ..
        } = df.push(frame, ts, &d)
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
