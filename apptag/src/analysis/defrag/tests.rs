//! Policy, limit and hostile-input tests of the defragmenter, on packets built byte by byte
//! and read back through the one dissector.
use proptest::prelude::*;

use super::*;
use crate::dissect::{dissect, linktype};

const SRC4: [u8; 4] = [10, 0, 0, 1];
const DST4: [u8; 4] = [10, 0, 0, 2];

/// An IPv4 fragment: 20-byte header (ICMP, correct checksum) then `data`.
fn v4(id: u16, offset_bytes: u32, more: bool, data: &[u8]) -> Vec<u8> {
    v4_to(id, offset_bytes, more, data, DST4)
}

fn v4_to(id: u16, offset_bytes: u32, more: bool, data: &[u8], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend(((20 + data.len()) as u16).to_be_bytes());
    p.extend(id.to_be_bytes());
    let frag = (offset_bytes / 8) as u16 | if more { 0x2000 } else { 0 };
    p.extend(frag.to_be_bytes());
    p.extend([64, 1, 0, 0]);
    p.extend(SRC4);
    p.extend(dst);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(data);
    p
}

/// An IPv6 fragment: 40-byte header, fragment header (next header ICMPv6), `data`.
fn v6(id: u32, offset_bytes: u32, more: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend(((8 + data.len()) as u16).to_be_bytes());
    p.extend([44, 64]);
    p.extend([0x20, 0x01, 0x0d, 0xb8]);
    p.extend([0u8; 11]);
    p.push(1);
    p.extend([0x20, 0x01, 0x0d, 0xb8]);
    p.extend([0u8; 11]);
    p.push(2);
    p.extend([58, 0]);
    let fo = ((offset_bytes / 8) as u16 * 8) | u16::from(more);
    p.extend(fo.to_be_bytes());
    p.extend(id.to_be_bytes());
    p.extend(data);
    p
}

fn frag(ipv6: bool, id: u32, offset_bytes: u32, more: bool, data: &[u8]) -> Vec<u8> {
    if ipv6 {
        v6(id, offset_bytes, more, data)
    } else {
        v4(id as u16, offset_bytes, more, data)
    }
}

fn with_policy(policy: Policy) -> Defragmenter {
    Defragmenter::new(DefragConfig {
        policy,
        ..DefragConfig::default()
    })
}

/// Owned copy of an outcome, so several pushes can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Held,
    Done(Vec<u8>, Vec<u64>),
    Discarded(DiscardReason),
}

fn push(df: &mut Defragmenter, frame: u64, ts: u64, pkt: &[u8]) -> Got {
    let d = dissect(linktype::RAW, pkt);
    match df.push(frame, ts, &d) {
        DefragOutcome::Held => Got::Held,
        DefragOutcome::Reassembled {
            datagram,
            constituents,
            ..
        } => Got::Done(datagram.to_vec(), constituents.to_vec()),
        DefragOutcome::Discarded(r) => Got::Discarded(r),
    }
}

fn payload_of(datagram: &[u8]) -> &[u8] {
    if datagram[0] >> 4 == 6 {
        &datagram[40..]
    } else {
        &datagram[usize::from(datagram[0] & 0xf) * 4..]
    }
}

fn assert_balanced(df: &Defragmenter) {
    let s = df.stats();
    assert_eq!(
        s.fragments,
        s.held + s.constituents + s.discarded.total(),
        "{s:?}"
    );
    assert!(s.memory_bytes as usize <= df.config().memcap_bytes, "{s:?}");
}

/// The Sturges/Novak pattern (Novak, "Target-Based Fragmentation Reassembly"), as
/// Suricata's `DefragSturgesNovak*Test` tests send it: nine original fragments, then seven
/// that overlap them, then the last. (letter, offset, length).
const STURGES_NOVAK: [(u8, u32, usize); 17] = [
    (b'A', 0, 24),
    (b'B', 32, 16),
    (b'C', 48, 24),
    (b'D', 80, 8),
    (b'E', 104, 16),
    (b'F', 120, 24),
    (b'G', 144, 16),
    (b'H', 160, 16),
    (b'I', 176, 8),
    (b'J', 8, 32),
    (b'K', 48, 24),
    (b'L', 72, 24),
    (b'M', 96, 24),
    (b'N', 128, 8),
    (b'O', 152, 8),
    (b'P', 160, 8),
    (b'Q', 176, 16),
];

/// The documented result per policy, one letter per 8 bytes: Suricata's expected data for
/// first, last, bsd, linux, windows and solaris; bsd-right (which Suricata never
/// implemented) by Snort frag3's rules: the fragment reaching further right wins.
fn expected(policy: Policy) -> &'static str {
    match policy {
        Policy::Bsd => "AAAJJBCCCLLLMMMFFFGGHHIQ",
        Policy::Linux => "AAAJJBKKKLLLMMMFFFGGPHQQ",
        Policy::Windows => "AAAJBBCCCLLLMEEFFFGGHHIQ",
        Policy::Solaris => "AAAJBBCCCLLLMMMFFFGGHHIQ",
        Policy::First => "AAAJBBCCCLDLMEEFFFGGHHIQ",
        Policy::Last => "AJJJJBKKKLLLMMMFNFGOPHQQ",
        Policy::BsdRight => "AJJJBBKKKLLLMMMFFFGGHHQQ",
    }
}

fn sturges_novak(ipv6: bool, policy: Policy) {
    let mut df = with_policy(policy);
    let mut kept = Vec::new();
    let mut overlaps = 0;
    for (i, &(letter, off, len)) in STURGES_NOVAK.iter().enumerate() {
        let frame = i as u64 + 1;
        let last = i == STURGES_NOVAK.len() - 1;
        let pkt = frag(ipv6, 1, off, !last, &vec![letter; len]);
        let before = df.stats().overlapping_fragments;
        let got = push(&mut df, frame, 1000 + frame, &pkt);
        overlaps += df.stats().overlapping_fragments - before;
        if i < 9 {
            assert_eq!(got, Got::Held, "{policy} fragment {}", letter as char);
            assert_eq!(overlaps, 0);
            kept.push((off, frame));
        } else if !last {
            match got {
                Got::Held => kept.push((off, frame)),
                Got::Discarded(DiscardReason::OverlapLost) => {}
                other => panic!("{policy} fragment {}: {other:?}", letter as char),
            }
        } else {
            let Got::Done(datagram, constituents) = got else {
                panic!("{policy}: last fragment gave {got:?}");
            };
            kept.push((off, frame));
            kept.sort();
            let want: Vec<u8> = expected(policy).bytes().flat_map(|c| [c; 8]).collect();
            assert_eq!(
                String::from_utf8_lossy(payload_of(&datagram)),
                String::from_utf8_lossy(&want),
                "{policy} ipv6={ipv6}"
            );
            assert_eq!(datagram.len(), if ipv6 { 40 } else { 20 } + 192);
            let frames: Vec<u64> = kept.iter().map(|k| k.1).collect();
            assert_eq!(constituents, frames, "{policy}");
            // The artificial datagram is a whole, valid packet to the dissector.
            let dd = dissect(linktype::RAW, &datagram);
            assert_eq!(dd.fragment, Fragment::Whole);
            assert_eq!(dd.protocol, if ipv6 { 58 } else { 1 });
            if !ipv6 {
                assert_eq!(checksum(&datagram[..20]), 0);
            }
        }
    }
    assert!(overlaps > 0);
    assert_balanced(&df);
    assert_eq!(df.stats().trackers, 0, "tracker released");
    assert_eq!(df.stats().held, 0);
}

#[test]
fn sturges_novak_ipv4_every_policy() {
    for p in Policy::ALL {
        sturges_novak(false, p);
    }
}

#[test]
fn sturges_novak_ipv6_every_policy() {
    for p in Policy::ALL {
        sturges_novak(true, p);
    }
}

/// Suricata's DefragBsdFragmentAfterNoMf: the last fragment first, then fragments that
/// overlap each other and it.
#[test]
fn bsd_fragment_after_the_last_one() {
    for ipv6 in [false, true] {
        let mut df = with_policy(Policy::Bsd);
        assert_eq!(
            push(&mut df, 1, 1, &frag(ipv6, 7, 24, false, &[b'A'; 16])),
            Got::Held
        );
        assert_eq!(
            push(&mut df, 2, 2, &frag(ipv6, 7, 8, true, &[b'B'; 16])),
            Got::Held
        );
        assert_eq!(
            push(&mut df, 3, 3, &frag(ipv6, 7, 16, true, &[b'C'; 16])),
            Got::Held
        );
        let Got::Done(d, c) = push(&mut df, 4, 4, &frag(ipv6, 7, 0, true, &[b'D'; 8])) else {
            panic!()
        };
        assert_eq!(payload_of(&d), b"DDDDDDDDBBBBBBBBBBBBBBBBCCCCCCCCAAAAAAAA");
        assert_eq!(c, vec![4, 2, 3, 1]);
    }
}

/// Suricata's DefragTestJeremyLinux.
#[test]
fn linux_overlap_of_two_held_fragments() {
    let mut df = with_policy(Policy::Linux);
    push(&mut df, 1, 1, &v4(1, 0, true, &[b'A'; 24]));
    push(&mut df, 2, 2, &v4(1, 40, true, &[b'B'; 48]));
    push(&mut df, 3, 3, &v4(1, 24, true, &[b'C'; 48]));
    let Got::Done(d, _) = push(&mut df, 4, 4, &v4(1, 88, false, &[b'D'; 14])) else {
        panic!()
    };
    let mut want = vec![b'A'; 24];
    want.extend([b'C'; 48]);
    want.extend([b'B'; 16]);
    want.extend([b'D'; 14]);
    assert_eq!(payload_of(&d), &want[..]);
}

#[test]
fn in_order_and_reverse_order_give_the_same_datagram() {
    for ipv6 in [false, true] {
        let parts: [(u32, bool, &[u8]); 3] = [
            (0, true, b"AAAAAAAA"),
            (8, true, b"BBBBBBBB"),
            (16, false, b"CCC"),
        ];
        let mut fwd = Defragmenter::new(DefragConfig::default());
        let mut rev = Defragmenter::new(DefragConfig::default());
        let mut got = Vec::new();
        for (i, order) in [[0usize, 1, 2], [2, 1, 0]].iter().enumerate() {
            let df = if i == 0 { &mut fwd } else { &mut rev };
            let mut last = Got::Held;
            for &k in order {
                let (off, more, data) = parts[k];
                last = push(df, k as u64 + 1, 5, &frag(ipv6, 12, off, more, data));
            }
            got.push(last);
        }
        assert_eq!(got[0], got[1]);
        let Got::Done(d, c) = &got[0] else { panic!() };
        assert_eq!(payload_of(d), b"AAAAAAAABBBBBBBBCCC");
        assert_eq!(c, &vec![1, 2, 3]);
        if ipv6 {
            // Payload length covers the reassembled data; next header names ICMPv6.
            assert_eq!(u16::from_be_bytes([d[4], d[5]]), 19);
            assert_eq!(d[6], 58);
        } else {
            assert_eq!(u16::from_be_bytes([d[2], d[3]]), 39);
            assert_eq!(u16::from_be_bytes([d[6], d[7]]) & 0x3fff, 0);
        }
    }
}

#[test]
fn ipv6_with_extension_header_before_the_fragment_header() {
    // Hop-by-hop options (8 bytes) stay in the reassembled datagram; its next header
    // field, which named the fragment header, names ICMPv6 afterwards.
    let mk = |offset: u32, more: bool, data: &[u8]| {
        let mut p = v6(3, offset, more, data);
        p[6] = 0;
        let hbh = [44u8, 0, 1, 4, 0, 0, 0, 0];
        p.splice(40..40, hbh);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    };
    let mut df = Defragmenter::new(DefragConfig::default());
    assert_eq!(push(&mut df, 1, 1, &mk(8, false, b"tail")), Got::Held);
    let Got::Done(d, _) = push(&mut df, 2, 2, &mk(0, true, b"headhead")) else {
        panic!()
    };
    assert_eq!(&d[48..], b"headheadtail");
    assert_eq!(d[6], 0, "IPv6 header still names hop-by-hop");
    assert_eq!(d[40], 58, "hop-by-hop now names ICMPv6");
    assert_eq!(u16::from_be_bytes([d[4], d[5]]), 8 + 12);
    let dd = dissect(linktype::RAW, &d);
    assert_eq!(dd.protocol, 58);
    assert_eq!(dd.fragment, Fragment::Whole);
}

#[test]
fn ipv6_atomic_fragment_passes_through_alone() {
    let mut df = Defragmenter::new(DefragConfig::default());
    // An unrelated datagram with the same id is being reassembled: RFC 6946 says atomic
    // fragments must not join it.
    assert_eq!(
        push(&mut df, 1, 1, &v6(77, 0, true, b"12345678")),
        Got::Held
    );
    let atomic = v6(77, 0, false, b"whole");
    let d = dissect(linktype::RAW, &atomic);
    assert_eq!(d.fragment, Fragment::Whole, "the dissector calls it whole");
    let Got::Done(out, c) = push(&mut df, 2, 2, &atomic) else {
        panic!()
    };
    assert_eq!(c, vec![2]);
    assert_eq!(&out[40..], b"whole");
    assert_eq!(out[6], 58);
    assert_eq!(u16::from_be_bytes([out[4], out[5]]), 5);
    let s = df.stats();
    assert_eq!((s.atomic_fragments, s.held, s.trackers), (1, 1, 1));
    assert_balanced(&df);
    // A whole IPv4 datagram is no fragment.
    let mut whole = v4(1, 0, false, b"x");
    whole[6] = 0;
    assert_eq!(
        push(&mut df, 3, 3, &whole),
        Got::Discarded(DiscardReason::NotFragment)
    );
}

#[test]
fn timeout_drops_held_fragments_and_says_which() {
    let mut df = Defragmenter::new(DefragConfig {
        timeout_ns: 1_000,
        ..DefragConfig::default()
    });
    push(&mut df, 1, 100, &v4(1, 0, true, b"AAAAAAAA"));
    push(&mut df, 2, 500, &v4(2, 0, true, b"AAAAAAAA"));
    push(&mut df, 3, 900, &v4(1, 16, true, b"AAAAAAAA"));
    // Not refreshed by frame 3: datagram 1 expires 1000 ns after frame 1.
    df.expire(1_099);
    assert!(df.dropped().is_empty());
    df.expire(1_100);
    let frames: Vec<(u64, DiscardReason)> =
        df.dropped().iter().map(|d| (d.frame, d.reason)).collect();
    assert_eq!(
        frames,
        vec![(1, DiscardReason::Timeout), (3, DiscardReason::Timeout)]
    );
    assert_eq!(df.stats().discarded.timeout, 2);
    assert_eq!(df.stats().datagrams_timed_out, 1);
    // The late rest of datagram 1 starts a new tracker; a push past datagram 2's timeout
    // expires it on the way.
    assert_eq!(push(&mut df, 4, 1_600, &v4(1, 8, false, b"B")), Got::Held);
    assert_eq!(df.dropped().len(), 1);
    assert_eq!(df.dropped()[0].frame, 2);
    assert_eq!(df.stats().trackers, 1);
    df.flush();
    assert_eq!(df.dropped()[0].reason, DiscardReason::Incomplete);
    assert_eq!(df.stats().discarded.incomplete, 1);
    assert_eq!(df.stats().trackers, 0);
    assert_balanced(&df);
}

#[test]
fn tracker_limit_is_counted() {
    let mut df = Defragmenter::new(DefragConfig {
        max_trackers: 2,
        ..DefragConfig::default()
    });
    assert_eq!(push(&mut df, 1, 1, &v4(1, 0, true, b"AAAAAAAA")), Got::Held);
    assert_eq!(push(&mut df, 2, 1, &v4(2, 0, true, b"AAAAAAAA")), Got::Held);
    assert_eq!(
        push(&mut df, 3, 1, &v4(3, 0, true, b"AAAAAAAA")),
        Got::Discarded(DiscardReason::TrackerLimit)
    );
    // Existing datagrams still take fragments, and finishing one frees a tracker.
    assert!(matches!(
        push(&mut df, 4, 1, &v4(1, 8, false, b"B")),
        Got::Done(..)
    ));
    assert_eq!(push(&mut df, 5, 1, &v4(3, 0, true, b"AAAAAAAA")), Got::Held);
    assert_eq!(df.stats().discarded.tracker_limit, 1);
    assert_eq!(df.stats().peak_trackers, 2);
    assert_balanced(&df);
}

#[test]
fn fragment_limit_is_counted() {
    let mut df = Defragmenter::new(DefragConfig {
        max_fragments_per_datagram: 3,
        ..DefragConfig::default()
    });
    for i in 0..3 {
        assert_eq!(
            push(&mut df, i + 1, 1, &v4(1, i as u32 * 8, true, b"AAAAAAAA")),
            Got::Held
        );
    }
    assert_eq!(
        push(&mut df, 4, 1, &v4(1, 24, false, b"B")),
        Got::Discarded(DiscardReason::FragmentLimit)
    );
    assert_eq!(df.stats().discarded.fragment_limit, 1);
    assert_balanced(&df);
}

#[test]
fn memcap_is_counted_and_never_exceeded() {
    let mut df = Defragmenter::new(DefragConfig {
        memcap_bytes: MIN_MEMCAP,
        ..DefragConfig::default()
    });
    let data = vec![b'x'; 1400];
    let mut memcap = 0;
    for id in 0..1000u32 {
        match push(
            &mut df,
            u64::from(id) + 1,
            1,
            &v4(id as u16, 0, true, &data),
        ) {
            Got::Held => {}
            Got::Discarded(DiscardReason::Memcap) => memcap += 1,
            other => panic!("{other:?}"),
        }
        assert_balanced(&df);
    }
    assert!(memcap > 0);
    assert_eq!(df.stats().discarded.memcap, memcap);
    assert!(df.stats().peak_memory_bytes as usize <= MIN_MEMCAP);
    // A finished datagram gives its memory back for the next.
    df.flush();
    assert_eq!(push(&mut df, 5000, 2, &v4(1, 0, true, &data)), Got::Held);
}

#[test]
fn oversize_and_bad_placement() {
    let mut df = Defragmenter::new(DefragConfig::default());
    // Ends past 65535 (Suricata's DefragIPv4TooLargeTest: offset 8183 units, 71 bytes).
    assert_eq!(
        push(&mut df, 1, 1, &v4(1, 8183 * 8, false, &[b'A'; 71])),
        Got::Discarded(DiscardReason::TooLarge)
    );
    assert_eq!(
        push(&mut df, 2, 1, &v6(1, 65528, false, &[b'A'; 16])),
        Got::Discarded(DiscardReason::TooLarge)
    );
    // No data (Suricata's DefragIPv4NoDataTest).
    assert_eq!(
        push(&mut df, 3, 1, &v4(2, 8, false, b"")),
        Got::Discarded(DiscardReason::BadLength)
    );
    // IPv6 middle fragment not a multiple of 8.
    assert_eq!(
        push(&mut df, 4, 1, &v6(2, 0, true, b"12345")),
        Got::Discarded(DiscardReason::BadLength)
    );
    // IPv4 keeps all 9 bytes (as tshark and Suricata do), and says it saw one.
    assert_eq!(
        push(&mut df, 5, 1, &v4(3, 0, true, b"123456789")),
        Got::Held
    );
    assert_eq!(df.stats().unaligned_fragments, 1);
    // Teardrop: a second last fragment with another end; data past the end.
    assert_eq!(push(&mut df, 6, 1, &v4(3, 16, false, b"end")), Got::Held);
    assert_eq!(
        push(&mut df, 7, 1, &v4(3, 16, false, b"longer end")),
        Got::Discarded(DiscardReason::BadOffset)
    );
    assert_eq!(
        push(&mut df, 8, 1, &v4(3, 24, true, b"pastpast")),
        Got::Discarded(DiscardReason::BadOffset)
    );
    let Got::Done(d, c) = push(&mut df, 9, 1, &v4(3, 8, true, b"middlemi")) else {
        panic!()
    };
    assert_eq!(payload_of(&d), b"123456789iddlemiend");
    assert_eq!(c, vec![5, 9, 6]);
    assert_eq!(df.stats().discarded.bad_offset, 2);
    assert_balanced(&df);
}

#[test]
fn a_last_fragment_ending_before_held_data_drops_what_lies_past_it() {
    // Suricata's DefragMfIpv4Test: fragments at 16 (more), 0 (more), 8 (last): the datagram
    // is the first 16 bytes and the fragment at 16 is discarded.
    for ipv6 in [false, true] {
        let mut df = Defragmenter::new(DefragConfig::default());
        assert_eq!(
            push(&mut df, 1, 1, &frag(ipv6, 9, 16, true, &[b'C'; 8])),
            Got::Held
        );
        assert_eq!(
            push(&mut df, 2, 1, &frag(ipv6, 9, 0, true, &[b'A'; 8])),
            Got::Held
        );
        let Got::Done(d, c) = push(&mut df, 3, 1, &frag(ipv6, 9, 8, false, &[b'B'; 8])) else {
            panic!()
        };
        assert_eq!(payload_of(&d), b"AAAAAAAABBBBBBBB");
        assert_eq!(c, vec![2, 3]);
        assert_eq!(df.dropped().len(), 1);
        assert_eq!(df.dropped()[0].frame, 1);
        assert_eq!(df.dropped()[0].reason, DiscardReason::BadOffset);
        assert_balanced(&df);
    }
}

#[test]
fn bad_checksum_and_truncated_fragments_are_discarded() {
    let mut df = Defragmenter::new(DefragConfig::default());
    let mut p = v4(1, 0, true, b"AAAAAAAA");
    p[10] ^= 0xff;
    assert_eq!(
        push(&mut df, 1, 1, &p),
        Got::Discarded(DiscardReason::BadChecksum)
    );
    let p = v4(1, 0, true, b"AAAAAAAAAAAAAAAA");
    assert_eq!(
        push(&mut df, 2, 1, &p[..30]),
        Got::Discarded(DiscardReason::Truncated)
    );
    let p = v6(1, 0, true, b"AAAAAAAAAAAAAAAA");
    assert_eq!(
        push(&mut df, 3, 1, &p[..60]),
        Got::Discarded(DiscardReason::Truncated)
    );
    assert_eq!(df.stats().trackers, 0, "no tracker opened for them");
    assert_balanced(&df);
}

#[test]
fn policy_per_destination_prefix() {
    let mut cfg = DefragConfig {
        policy: Policy::First,
        ..DefragConfig::default()
    };
    cfg.per_destination = PrefixMap::parse_spec("10.0.0.0/8=last,10.0.0.2=bsd").unwrap();
    let mut df = Defragmenter::new(cfg);
    assert_eq!(df.policy_for(Addr::from_v4([10, 0, 0, 2])), Policy::Bsd);
    assert_eq!(df.policy_for(Addr::from_v4([10, 9, 9, 9])), Policy::Last);
    assert_eq!(df.policy_for(Addr::from_v4([192, 0, 2, 1])), Policy::First);
    // The same overlapping pair, to three destinations: each keeps its policy's bytes.
    for (dst, want) in [
        ([10, 0, 0, 2], b"AAAAAAAAAAAAAAAAZ"), // bsd: equal start, held data wins
        ([10, 7, 0, 1], b"BBBBBBBBBBBBBBBBZ"), // last
        ([192, 0, 2, 1], b"AAAAAAAAAAAAAAAAZ"), // first
    ] {
        push(&mut df, 1, 1, &v4_to(5, 0, true, &[b'A'; 16], dst));
        push(&mut df, 2, 1, &v4_to(5, 0, true, &[b'B'; 16], dst));
        let Got::Done(d, _) = push(&mut df, 3, 1, &v4_to(5, 16, false, b"Z", dst)) else {
            panic!()
        };
        assert_eq!(payload_of(&d), want);
    }
}

#[test]
fn policy_names_round_trip_and_bad_names_say_what_is_valid() {
    for p in Policy::ALL {
        assert_eq!(p.name().parse::<Policy>(), Ok(p));
    }
    let e = "vista".parse::<Policy>().unwrap_err();
    assert!(e.to_string().contains("bsd-right"), "{e}");
    let e = PrefixMap::<Policy>::parse_spec("10.0.0.0/8=vista").unwrap_err();
    assert!(e.to_string().contains("10.0.0.0/8=vista"), "{e}");
    assert!(e.to_string().contains("unknown reassembly policy"), "{e}");
    assert!(DefragConfig::default().validate().is_ok());
    let small = DefragConfig {
        memcap_bytes: 1000,
        ..DefragConfig::default()
    };
    assert!(small.validate().unwrap_err().to_string().contains("memcap"));
}

#[test]
fn rewriting_the_same_bytes_over_and_over_keeps_memory_flat() {
    // Under `last` every copy wins; the bytes it replaced must not pile up.
    let mut df = with_policy(Policy::Last);
    let data = vec![b'x'; 1400];
    for i in 0..2000u64 {
        assert_eq!(push(&mut df, i + 1, 1, &v4(1, 0, true, &data)), Got::Held);
    }
    assert_eq!(df.stats().held, 2000);
    assert!(
        df.stats().peak_memory_bytes < 64 << 10,
        "{}",
        df.stats().peak_memory_bytes
    );
    let Got::Done(d, c) = push(&mut df, 3000, 1, &v4(1, 1400, false, b"end")) else {
        panic!()
    };
    assert_eq!(payload_of(&d).len(), 1403);
    assert_eq!(c.len(), 2001);
}

#[test]
fn steady_traffic_reuses_buffers() {
    let mut df = Defragmenter::new(DefragConfig::default());
    let data = vec![7u8; 1480];
    for round in 0..3u64 {
        for id in 0..100u16 {
            push(&mut df, 1, round, &v4(id, 0, true, &data));
            assert!(matches!(
                push(&mut df, 2, round, &v4(id, 1480, false, &data)),
                Got::Done(..)
            ));
        }
        // After the first round, memory is what 100 reused slots hold, and stays there.
        if round == 0 {
            continue;
        }
        assert!(df.stats().memory_bytes <= df.stats().peak_memory_bytes);
    }
    assert_eq!(df.slots.len(), 1, "one slot reused for every datagram");
}

/// A fragment description for the property tests: (ipv6, id, offset units, length, more).
fn soup_item() -> impl Strategy<Value = (bool, u8, u16, u16, bool, u8)> {
    (
        any::<bool>(),
        0u8..4,
        prop_oneof![0u16..64, 8100u16..8191],
        0u16..600,
        any::<bool>(),
        any::<u8>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random fragment soups (overlaps, duplicates, absurd offsets, odd lengths, every
    /// policy, tight limits) never panic, keep memory under the memcap and every fragment
    /// accounted for; every datagram that comes out is a well-formed packet.
    #[test]
    fn fragment_soups_are_bounded_and_accounted(
        items in prop::collection::vec(soup_item(), 1..300),
        policy in 0usize..7,
        trackers in 1usize..6,
        frags in 2usize..20,
    ) {
        let mut df = Defragmenter::new(DefragConfig {
            policy: Policy::ALL[policy],
            max_trackers: trackers,
            max_fragments_per_datagram: frags,
            memcap_bytes: MIN_MEMCAP,
            timeout_ns: 50,
            ..DefragConfig::default()
        });
        for (i, &(ipv6, id, off, len, more, fill)) in items.iter().enumerate() {
            let pkt = frag(ipv6, u32::from(id), u32::from(off) * 8, more, &vec![fill; usize::from(len)]);
            let d = dissect(linktype::RAW, &pkt);
            let out = df.push(i as u64 + 1, i as u64, &d);
            if let DefragOutcome::Reassembled { datagram, constituents, .. } = out {
                prop_assert!(!constituents.is_empty());
                let dd = dissect(linktype::RAW, datagram);
                prop_assert_eq!(dd.fragment, Fragment::Whole);
                prop_assert_eq!(dd.l3.len(), datagram.len());
            }
            let s = df.stats();
            prop_assert_eq!(s.fragments, s.held + s.constituents + s.discarded.total());
            prop_assert!(s.memory_bytes as usize <= MIN_MEMCAP);
            prop_assert!(s.trackers as usize <= trackers);
        }
        df.flush();
        let s = df.stats();
        prop_assert_eq!(s.held, 0);
        prop_assert_eq!(s.fragments, s.constituents + s.discarded.total());
    }

    /// Any datagram cut into 8-byte-aligned fragments, shuffled and partly duplicated (same
    /// bytes, so every policy agrees), comes back byte for byte, once, under every policy.
    #[test]
    fn shuffled_fragments_reassemble_exactly(
        payload in prop::collection::vec(any::<u8>(), 9..3000),
        cuts in prop::collection::vec(1usize..64, 1..40),
        order in prop::collection::vec(any::<u32>(), 1..80),
        ipv6 in any::<bool>(),
        policy in 0usize..7,
    ) {
        let mut bounds = vec![0usize];
        for c in cuts {
            let next = bounds[bounds.len() - 1] + c * 8;
            if next >= payload.len() { break; }
            bounds.push(next);
        }
        if bounds.len() == 1 {
            // One piece would be a whole datagram, not a fragment.
            bounds.push(8);
        }
        bounds.push(payload.len());
        let n = bounds.len() - 1;
        let mut seq: Vec<usize> = (0..n).collect();
        // Duplicates, then a shuffle driven by `order`.
        for (k, o) in order.iter().enumerate() {
            if k % 3 == 0 { seq.push(*o as usize % n); }
        }
        for (k, o) in order.iter().enumerate() {
            let (a, b) = (k % seq.len(), *o as usize % seq.len());
            seq.swap(a, b);
        }
        let mut df = with_policy(Policy::ALL[policy]);
        let mut done = 0;
        for (frame, &i) in seq.iter().enumerate() {
            let (a, b) = (bounds[i], bounds[i + 1]);
            let pkt = frag(ipv6, 99, a as u32, i + 1 < n, &payload[a..b]);
            let d = dissect(linktype::RAW, &pkt);
            match df.push(frame as u64 + 1, 1, &d) {
                DefragOutcome::Reassembled { datagram, .. } => {
                    prop_assert_eq!(payload_of(datagram), &payload[..]);
                    done += 1;
                }
                DefragOutcome::Held | DefragOutcome::Discarded(DiscardReason::OverlapLost) => {}
                DefragOutcome::Discarded(r) => prop_assert!(false, "discarded: {}", r),
            }
        }
        prop_assert!(done >= 1);
    }
}
