//! TCP and UDP reassembly on crafted segments: overlap policies, gaps, sequence wrap,
//! streams picked up mid-way, packet states, and every limit hit and counted.
mod analysis;

use analysis::*;
use apptag::analysis::stream::{CutReason, StreamState};
use apptag::analysis::{AnalysisConfig, OverlapPolicy, State, States};

const ISN_C: u32 = 1000;
const ISN_S: u32 = 5000;

/// SYN, SYN-ACK, ACK with the given initial sequence numbers.
fn handshake(p: &mut Pcap, isn_c: u32, isn_s: u32) {
    p.frame(&tcp(CLIENT, SERVER, isn_c, 0, SYN, b""));
    p.frame(&tcp(SERVER, CLIENT, isn_s, isn_c + 1, SYN | ACK, b""));
    p.frame(&tcp(CLIENT, SERVER, isn_c + 1, isn_s + 1, ACK, b""));
}

/// A client segment at stream offset `off` (0 = first byte after the SYN). No ACK flag,
/// so no acknowledgement declares a gap before the test wants one.
fn seg(p: &mut Pcap, off: u32, data: &[u8]) -> u64 {
    p.frame(&tcp(CLIENT, SERVER, ISN_C + 1 + off, 0, PSH, data))
}

fn with_policy(policy: OverlapPolicy) -> AnalysisConfig {
    let mut c = AnalysisConfig::default();
    c.reassembly.policy = policy;
    c
}

/// The target-based overlap pattern: queued segments overlapped by later ones that start
/// inside, start before and end inside, start before and cover, and start at the same
/// place and end later; offset 0 arrives last, so everything is resolved in the queue.
fn overlap_capture() -> Pcap {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    seg(&mut p, 1, b"AAAA"); //  1..5
    seg(&mut p, 3, b"BBBBBB"); //  3..9   starts inside A, ends after it
    seg(&mut p, 10, b"DD"); // 10..12
    seg(&mut p, 9, b"EEEE"); //  9..13  starts before D and covers it
    seg(&mut p, 15, b"FFFF"); // 15..19
    seg(&mut p, 14, b"GGG"); // 14..17  starts before F, ends inside it
    seg(&mut p, 20, b"HH"); // 20..22
    seg(&mut p, 20, b"IIII"); // 20..24  same start as H, ends after it
    seg(&mut p, 13, b"J");
    seg(&mut p, 19, b"K");
    seg(&mut p, 0, b"0");
    p
}

#[test]
fn overlap_policies_resolve_queued_overlaps_as_documented() {
    // Contested bytes: 3-4 (A|B), 10-11 (D|E), 15-16 (F|G), 20-21 (H|I).
    let expected = [
        (OverlapPolicy::First, "0AAAABBBBEDDEJGFFFFKHHII"),
        (OverlapPolicy::Last, "0AABBBBBBEEEEJGGGFFKIIII"),
        (OverlapPolicy::Bsd, "0AAAABBBBEEEEJGGGFFKHHII"),
        (OverlapPolicy::Linux, "0AAAABBBBEEEEJGGGFFKIIII"),
        (OverlapPolicy::Windows, "0AAAABBBBEEEEJGFFFFKHHII"),
    ];
    let p = overlap_capture();
    for (policy, want) in expected {
        let (r, _) = analyze(&p, &with_policy(policy));
        let got = String::from_utf8_lossy(&r.tcp(0)[0].bytes).to_string();
        assert_eq!(got, want, "policy {policy}");
        let s = r.summary(0);
        assert_eq!(s.directions[0].overlapping_bytes, 8, "policy {policy}");
        assert!(s.directions[0].gaps == 0 && s.directions[0].out_of_order_packets == 10);
    }
}

#[test]
fn delivered_bytes_are_never_replaced_and_conflicts_are_counted() {
    for policy in OverlapPolicy::ALL {
        let mut p = Pcap::new();
        handshake(&mut p, ISN_C, ISN_S);
        seg(&mut p, 0, b"hello ");
        seg(&mut p, 0, b"HELLO world"); // 6 old bytes (all different), 5 new
        seg(&mut p, 6, b"world"); // an exact retransmission
        let (r, _) = analyze(&p, &with_policy(policy));
        assert_eq!(r.tcp(0)[0].bytes, b"hello world", "policy {policy}");
        let s = &r.summary(0).directions[0];
        assert_eq!(s.retransmitted_bytes, 11);
        assert_eq!(
            s.conflicting_bytes, 5,
            "'hello' vs 'HELLO', the space equal"
        );
    }
}

#[test]
fn lost_segment_is_a_gap_where_it_was_once_the_receiver_acknowledges_past_it() {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    seg(&mut p, 0, b"first ");
    // "LOST! " (6 bytes at offset 6) never reaches the capture.
    seg(&mut p, 12, b"third");
    // Without an acknowledgement, the gap is only declared when the stream ends.
    let (r, _) = analyze(&p, &AnalysisConfig::default());
    assert_eq!(r.tcp(0)[0].gaps, vec![(6, 6)]);
    let mut p2 = p;
    p2.frame(&tcp(SERVER, CLIENT, ISN_S + 1, ISN_C + 1 + 17, ACK, b""));
    seg(&mut p2, 17, b"!");
    let (r, _) = analyze(&p2, &AnalysisConfig::default());
    let d = &r.tcp(0)[0];
    assert_eq!(d.bytes, b"first third!");
    assert_eq!(d.gaps, vec![(6, 6)]);
    // The gap came before "third", which came with the ACK's frame, then "!" on its own.
    assert_eq!(d.chunks, vec![(0, 6), (12, 17), (17, 18)]);
    let s = r.summary(0);
    assert_eq!((s.directions[0].gaps, s.directions[0].gap_bytes), (1, 6));
    assert_eq!(s.state, StreamState::Unfinished);
}

#[test]
fn sequence_numbers_wrap() {
    let isn = u32::MAX - 20;
    let mut p = Pcap::new();
    p.frame(&tcp(CLIENT, SERVER, isn, 0, SYN, b""));
    p.frame(&tcp(
        SERVER,
        CLIENT,
        ISN_S,
        isn.wrapping_add(1),
        SYN | ACK,
        b"",
    ));
    let data: Vec<u8> = (0..64u8).collect();
    let at = |o: u32| isn.wrapping_add(1).wrapping_add(o);
    // In order, then reordered across the wrap point (which is at offset 20).
    p.frame(&tcp(CLIENT, SERVER, at(0), 0, PSH, &data[0..16]));
    p.frame(&tcp(CLIENT, SERVER, at(32), 0, PSH, &data[32..64]));
    p.frame(&tcp(CLIENT, SERVER, at(16), 0, PSH, &data[16..32]));
    p.frame(&tcp(CLIENT, SERVER, at(64), 0, FIN | ACK, b""));
    p.frame(&tcp(SERVER, CLIENT, ISN_S + 1, at(65), FIN | ACK, b""));
    let (r, _) = analyze(&p, &AnalysisConfig::default());
    assert_eq!(r.tcp(0)[0].bytes, data);
    assert!(r.tcp(0)[0].gaps.is_empty());
    assert_eq!(r.summary(0).state, StreamState::Closed);
}

#[test]
fn stream_picked_up_mid_way_starts_at_its_first_byte() {
    let mut p = Pcap::new();
    p.frame(&tcp(
        CLIENT,
        SERVER,
        777_000,
        9_000,
        ACK | PSH,
        b"GET /late",
    ));
    p.frame(&tcp(
        SERVER,
        CLIENT,
        9_000,
        777_009,
        ACK | PSH,
        b"HTTP/1.1 200",
    ));
    // A retransmission of bytes before the first one seen: not part of the stream.
    p.frame(&tcp(
        CLIENT,
        SERVER,
        776_990,
        9_012,
        ACK,
        b"0123456789GET /late",
    ));
    p.frame(&tcp(
        CLIENT,
        SERVER,
        777_009,
        9_012,
        ACK | PSH,
        b" HTTP/1.1",
    ));
    let (r, _) = analyze(&p, &AnalysisConfig::default());
    assert_eq!(r.tcp(0)[0].bytes, b"GET /late HTTP/1.1");
    assert_eq!(r.tcp(0)[1].bytes, b"HTTP/1.1 200");
    let s = r.summary(0);
    assert!(s.midstream);
    assert_eq!(s.initiator, None);
}

#[test]
fn packet_states_and_frames_of_each_byte() {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S); // frames 1-3
    let f4 = seg(&mut p, 4, b"5678"); // queued
    let f5 = seg(&mut p, 0, b"1234"); // delivers both
    let f6 = p.frame(&tcp(CLIENT, SERVER, ISN_C + 9, ISN_S + 1, FIN | ACK, b""));
    let f7 = p.frame(&tcp(SERVER, CLIENT, ISN_S + 1, ISN_C + 10, FIN | ACK, b""));
    let mut cfg = AnalysisConfig::default();
    cfg.reassembly.policy = OverlapPolicy::Bsd;
    let mut r = Recorder {
        states: Some(States::ALL),
        ..Default::default()
    };
    apptag::analysis::analyze_bytes(&p.bytes, &cfg, &mut r).unwrap();
    let of =
        |st: State| -> Vec<u64> { r.events.iter().filter(|e| e.1 == st).map(|e| e.0).collect() };
    assert_eq!(of(State::Captured), (1..=7).collect::<Vec<_>>());
    assert_eq!(of(State::NewConnection), vec![1]);
    assert_eq!(of(State::QueuedOutOfOrder), vec![f4]);
    assert_eq!(of(State::DeliveredInOrder), vec![f5]);
    assert_eq!(of(State::Closed), vec![f7]);
    let _ = f6;
    // Bytes 0-3 came in frame 5, bytes 4-7 in frame 4.
    assert_eq!(r.frames_of, vec![(0, vec![f5, f4])]);
    assert_eq!(r.summary(0).state, StreamState::Closed);
}

#[test]
fn new_syn_with_another_isn_starts_a_new_stream_as_tshark_numbers_it() {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    seg(&mut p, 0, b"one");
    p.frame(&tcp(CLIENT, SERVER, ISN_C, 0, SYN, b"")); // a retransmitted SYN: same stream
    p.frame(&tcp(CLIENT, SERVER, ISN_C + 4, ISN_S + 1, RST | ACK, b""));
    handshake(&mut p, 90_000, 70_000);
    p.frame(&tcp(CLIENT, SERVER, 90_001, 70_001, ACK | PSH, b"two"));
    let (r, s) = analyze(&p, &AnalysisConfig::default());
    assert_eq!(r.tcp(0)[0].bytes, b"one");
    assert_eq!(r.tcp(1)[0].bytes, b"two");
    assert_eq!(r.summary(0).state, StreamState::Reset);
    assert_eq!(s.reassembly.tcp_streams, 2);
    let path = std::env::temp_dir().join("apptag-analysis-renumber.pcap");
    p.write(&path);
    assert_eq!(tshark_streams(&path, "tcp"), vec![0, 1]);
    assert_eq!(tshark_follow(&path, "tcp", 1)[0], b"two");
    let _ = std::fs::remove_file(path);
}

#[test]
fn udp_flows_are_streams_of_datagrams() {
    let mut p = Pcap::new();
    let (a, b) = (
        Ep {
            addr: [10, 0, 0, 1],
            port: 5353,
        },
        Ep {
            addr: [10, 0, 0, 9],
            port: 53,
        },
    );
    p.frame(&udp(a, b, b"query"));
    p.frame(&udp(b, a, b"answer"));
    p.frame(&udp(a, b, b"again"));
    let (r, s) = analyze(&p, &AnalysisConfig::default());
    let d = &r.delivered[&(1, 0)];
    assert_eq!(d[0].bytes, b"queryagain");
    assert_eq!(d[0].chunks, vec![(0, 5), (5, 10)], "one chunk per datagram");
    assert_eq!(d[1].bytes, b"answer");
    assert_eq!(s.reassembly.udp_streams, 1);
}

#[test]
fn depth_limit_cuts_the_stream_and_is_counted() {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    seg(&mut p, 0, b"0123456789");
    seg(&mut p, 10, b"abcdefghij");
    let mut cfg = AnalysisConfig::default();
    cfg.reassembly.depth = 15;
    let (r, s) = analyze(&p, &cfg);
    assert_eq!(r.tcp(0)[0].bytes, b"0123456789abcde");
    assert_eq!(r.summary(0).cut, Some(CutReason::Depth));
    assert_eq!(s.reassembly.depth_cuts, 1);
}

#[test]
fn full_out_of_order_queue_declares_the_gap_and_is_counted() {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    // Byte 0 never comes; 3 KiB pile up behind it.
    for i in 0..3u32 {
        seg(&mut p, 1 + i * 1024, &[b'x'; 1024]);
    }
    let mut cfg = AnalysisConfig::default();
    cfg.reassembly.max_queued_bytes = 2048;
    let (r, s) = analyze(&p, &cfg);
    let d = &r.tcp(0)[0];
    assert_eq!(d.gaps, vec![(0, 1)]);
    assert_eq!(d.bytes.len(), 3072);
    assert_eq!(r.summary(0).cut, Some(CutReason::OutOfOrderLimit));
    assert_eq!(s.reassembly.queue_overflows, 1);
}

#[test]
fn stream_limit_refuses_new_streams_and_counts_them() {
    let mut p = Pcap::new();
    for i in 0..10u16 {
        let c = Ep {
            addr: [10, 0, 1, 1],
            port: 1000 + i,
        };
        p.frame(&tcp(c, SERVER, 1, 0, SYN, b""));
    }
    let mut cfg = AnalysisConfig::default();
    cfg.reassembly.max_streams = 4;
    let (r, s) = analyze(&p, &cfg);
    assert_eq!(s.reassembly.tcp_streams, 4);
    assert_eq!(s.reassembly.streams_refused, 6);
    assert_eq!(r.closed.len(), 4);
}

#[test]
fn idle_streams_expire_after_the_timeout() {
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    seg(&mut p, 0, b"a");
    p.wait(700);
    let other = Ep {
        addr: [10, 0, 0, 3],
        port: 1,
    };
    p.frame(&tcp(other, SERVER, 1, 0, SYN, b""));
    let (r, s) = analyze(&p, &AnalysisConfig::default());
    assert_eq!(s.reassembly.streams_expired, 1);
    assert_eq!(r.summary(0).state, StreamState::TimedOut);
}

#[test]
fn memcap_drops_segments_and_marks_the_stream_cut() {
    // A subscriber that keeps everything (a parser waiting for the end of an element).
    struct Hoarder;
    impl apptag::analysis::Subscriber for Hoarder {
        fn data(
            &mut self,
            _s: &apptag::analysis::Stream,
            _d: apptag::analysis::Dir,
            _r: std::ops::Range<apptag::analysis::Position>,
        ) -> Option<apptag::analysis::Position> {
            Some(apptag::analysis::Position(0))
        }
    }
    let mut p = Pcap::new();
    handshake(&mut p, ISN_C, ISN_S);
    for i in 0..64u32 {
        seg(&mut p, i * 1000, &[b'y'; 1000]);
    }
    let mut cfg = AnalysisConfig::default();
    cfg.reassembly.memcap = 32 * 1024;
    let mut h = Hoarder;
    let s = apptag::analysis::analyze_bytes(&p.bytes, &cfg, &mut h).unwrap();
    assert!(s.reassembly.memcap_drops > 0);
    assert!(
        s.reassembly.peak_memory <= cfg.reassembly.memcap,
        "{} > {}",
        s.reassembly.peak_memory,
        cfg.reassembly.memcap
    );
}

#[test]
fn a_million_half_open_streams_stay_inside_the_memory_limit() {
    let mut p = Pcap::new();
    for i in 0..1_000_000u32 {
        let c = Ep {
            addr: [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            port: 1024 + (i % 50_000) as u16,
        };
        p.frame(&tcp(c, SERVER, i, 0, SYN, b""));
    }
    let mut cfg = AnalysisConfig::default();
    cfg.reassembly.memcap = 64 << 20;
    let (r, s) = analyze(&p, &cfg);
    let st = &s.reassembly;
    assert!(
        st.peak_memory <= cfg.reassembly.memcap,
        "{}",
        st.peak_memory
    );
    assert!(st.streams_refused > 0, "the limit was reached");
    assert_eq!(
        st.tcp_streams + st.streams_refused,
        1_000_000,
        "every SYN counted"
    );
    assert_eq!(r.closed.len() as u64, st.tcp_streams);
}
