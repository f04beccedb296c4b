//! Every TCP and UDP stream of every public capture: the bytes each direction delivered
//! equal tshark's `follow,tcp,raw` / `follow,udp,raw`, direction for direction, under
//! tshark's stream numbers (streams in IP fragments included: defragmentation runs first);
//! and `apptag follow --raw` prints exactly what tshark prints.
mod common;
use common::captures;
mod analysis;

use std::process::Command;

use analysis::*;
use apptag::analysis::AnalysisConfig;

#[test]
fn every_stream_equals_tshark_follow_direction_for_direction() {
    let mut compared = 0;
    let mut differ = Vec::new();
    for path in captures() {
        let data = std::fs::read(&path).unwrap();
        let mut r = Recorder::default();
        apptag::analysis::analyze_bytes(&data, &AnalysisConfig::default(), &mut r).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for (proto, t) in [("tcp", 0u8), ("udp", 1u8)] {
            let theirs = tshark_streams(&path, proto);
            let ours: Vec<u64> = r
                .closed
                .iter()
                .filter(|s| s.stream.transport as u8 == t)
                .map(|s| s.stream.number)
                .collect();
            for n in theirs {
                let want = tshark_follow(&path, proto, n);
                let empty: [Delivered; 2] = Default::default();
                let got = r.delivered.get(&(t, n)).unwrap_or(&empty);
                compared += 1;
                for d in 0..2 {
                    if got[d].as_tshark() != want[d] {
                        differ.push((name.clone(), proto, n, d));
                    }
                }
                assert!(
                    ours.contains(&n),
                    "{name}: tshark has {proto}.stream {n}, we do not"
                );
            }
        }
    }
    assert!(differ.is_empty(), "differ from tshark: {differ:?}");
    assert!(compared >= 30, "{compared} streams compared");
}

#[test]
fn follow_raw_prints_what_tshark_prints() {
    let bin = env!("CARGO_BIN_EXE_apptag");
    for path in captures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for proto in ["tcp", "udp"] {
            // Streams that exist, and one that does not.
            let mut ns = tshark_streams(&path, proto);
            ns.push(ns.len() as u64 + 5);
            for n in ns {
                let theirs = Command::new("tshark")
                    .arg("-r")
                    .arg(&path)
                    .args(["-q", "-z", &format!("follow,{proto},raw,{n}")])
                    .output()
                    .unwrap();
                let ours = Command::new(bin)
                    .arg("follow")
                    .arg(&path)
                    .arg(format!("{proto}:{n}"))
                    .arg("--raw")
                    .output()
                    .unwrap();
                assert!(
                    ours.status.success(),
                    "{}",
                    String::from_utf8_lossy(&ours.stderr)
                );
                assert_eq!(
                    String::from_utf8_lossy(&ours.stdout),
                    String::from_utf8_lossy(&theirs.stdout),
                    "{name} {proto} {n}"
                );
            }
        }
    }
}

#[test]
fn follow_by_address_pair_and_direction() {
    let bin = env!("CARGO_BIN_EXE_apptag");
    let path = captures()
        .into_iter()
        .find(|p| p.ends_with("http-get.pcap"))
        .unwrap();
    let both = tshark_follow(&path, "tcp", 0);
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-c",
            "1",
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let mut f = line.split_whitespace();
    let end = format!("{}:{}", f.next().unwrap(), f.next().unwrap());
    let ours = Command::new(bin)
        .arg("follow")
        .arg(&path)
        .arg(&end)
        .args(["--raw", "--direction", "reverse"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ours.stdout);
    let hex: String = text.lines().filter_map(|l| l.strip_prefix('\t')).collect();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes, both[1]);
    assert!(
        !text
            .lines()
            .any(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_hexdigit()))
    );
}

/// Reordering, a lost segment acknowledged past, duplicates and retransmissions overlapping
/// queued data: `follow --raw` prints what tshark prints (one line per segment as it becomes
/// contiguous, and tshark's missing-bytes marker where the gap is).
#[test]
fn crafted_reordering_gaps_and_duplicates_follow_as_tshark() {
    let bin = env!("CARGO_BIN_EXE_apptag");
    let s = |seq: u32, data: &[u8]| tcp(SERVER, CLIENT, 501 + seq, 101, ACK | PSH, data);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "reorder",
            vec![
                s(0, b"AAAA"),
                s(8, b"CCCC"),
                s(12, b"DDDD"),
                s(4, b"BBBB"),
                s(16, b"EEEE"),
            ],
        ),
        (
            "ackgap",
            vec![
                s(0, b"AAAA"),
                s(8, b"CCCC"),
                tcp(CLIENT, SERVER, 101, 513, ACK, b""),
                s(12, b"DDDD"),
            ],
        ),
        (
            "dup",
            vec![
                s(0, b"AAAA"),
                s(8, b"CCCC"),
                s(8, b"CCCC"),
                tcp(CLIENT, SERVER, 101, 505, ACK | PSH, b"req"),
                s(2, b"AABBBB"),
                s(4, b"BBBB"),
            ],
        ),
    ];
    for (name, segs) in cases {
        let mut p = Pcap::new();
        p.frame(&tcp(CLIENT, SERVER, 100, 0, SYN, b""));
        p.frame(&tcp(SERVER, CLIENT, 500, 101, SYN | ACK, b""));
        p.frame(&tcp(CLIENT, SERVER, 101, 501, ACK, b""));
        for f in &segs {
            p.frame(f);
        }
        let path =
            std::env::temp_dir().join(format!("apptag-follow-{name}-{}.pcap", std::process::id()));
        p.write(&path);
        let theirs = Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(["-q", "-z", "follow,tcp,raw,0"])
            .output()
            .unwrap();
        let ours = Command::new(bin)
            .arg("follow")
            .arg(&path)
            .args(["0", "--raw"])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{name}"
        );
    }
}

/// On a file without apptag's process information, `apptag streams` says so, and lists
/// the streams tshark lists with tshark's ends and packet counts.
#[test]
fn streams_on_an_untagged_file_say_no_process_information() {
    let bin = env!("CARGO_BIN_EXE_apptag");
    let path = captures()
        .into_iter()
        .find(|p| p.ends_with("pop3-pop3.pcap"))
        .unwrap();
    let table = Command::new(bin)
        .arg("streams")
        .arg(&path)
        .output()
        .unwrap();
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("# no process information"), "{text}");
    let json = Command::new(bin)
        .arg("streams")
        .arg(&path)
        .arg("--json")
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["process_information"], false);
    // Per stream, packets both ways as tshark counts them for that tcp.stream.
    let fields = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-e", "tcp.stream"])
        .output()
        .unwrap();
    let mut theirs = std::collections::BTreeMap::<u64, u64>::new();
    for l in String::from_utf8_lossy(&fields.stdout).lines() {
        if let Ok(n) = l.trim().parse() {
            *theirs.entry(n).or_default() += 1;
        }
    }
    let mut ours = std::collections::BTreeMap::<u64, u64>::new();
    for st in doc["streams"].as_array().unwrap() {
        assert!(st["app"].is_null());
        let n = st["stream"]["number"].as_u64().unwrap();
        let p = st["directions"][0]["packets"].as_u64().unwrap()
            + st["directions"][1]["packets"].as_u64().unwrap();
        ours.insert(n, p);
    }
    assert_eq!(ours, theirs, "packets per stream");
}
