//! The defragmenter against tshark on the public fragmented captures: for every datagram
//! tshark reassembles, apptag reassembles the same one at the same frame, with the same
//! bytes and the same fragments in the same order, and none where tshark has none.
use std::{collections::BTreeMap, path::Path, process::Command};

use apptag::{
    analysis::defrag::{DefragConfig, DefragOutcome, Defragmenter, Policy},
    dissect::{self, Fragment},
    pcapng::reader::Record,
    report::source::Capture,
};

const FILES: [&str; 5] = [
    "ipv4-fragmented-1.pcap",
    "ipv4-fragmented-2.pcap",
    "ipv4-fragmented-3.pcap",
    "ipv4-fragmented-4.pcap",
    "ipv6-fragmented-dns.pcap",
];

fn capture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/captures")
        .join(name)
}

/// Reassembly at one frame: the datagram's payload and the frames it was built from.
type Reassembly = (Vec<u8>, Vec<u64>);

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// tshark's reassemblies (with its defaults: defragmentation on), from its PDML: the
/// fragment list in its order ("3 IPv4 Fragments (164 bytes): #1(18), #3(304), #2(116)"),
/// which includes fragments whose bytes others replaced, and the reassembled data.
fn tshark(file: &Path) -> BTreeMap<u64, Reassembly> {
    let out = Command::new("tshark")
        .args(["-n", "-T", "pdml", "-r"])
        .arg(file)
        .output()
        .expect("tshark not runnable: run `cargo xtask setup`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut m = BTreeMap::new();
    let mut frame = 0;
    let mut frames: Vec<u64> = Vec::new();
    for line in text.lines() {
        if line.contains("name=\"frame.number\"") {
            frame = attr(line, "show").unwrap().parse().unwrap();
        } else if line.contains("name=\"ip.fragments\"") || line.contains("name=\"ipv6.fragments\"")
        {
            let shown = attr(line, "showname").unwrap();
            let list = shown.split_once("): ").unwrap().1;
            frames = list
                .split(", ")
                .map(|f| {
                    f.trim_start_matches('#')
                        .split('(')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
        } else if line.contains("name=\"ip.reassembled.data\"")
            || line.contains("name=\"ipv6.reassembled.data\"")
        {
            let hex = attr(line, "show").unwrap();
            let bytes: Vec<u8> = hex
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            m.insert(frame, (bytes, std::mem::take(&mut frames)));
        }
    }
    m
}

fn ours(file: &Path, policy: Policy) -> (BTreeMap<u64, Reassembly>, Defragmenter) {
    let cap = Capture::open(file).unwrap();
    let mut df = Defragmenter::new(DefragConfig {
        policy,
        ..DefragConfig::default()
    });
    let mut linktypes = Vec::new();
    let mut frame = 0u64;
    let mut m = BTreeMap::new();
    for rec in cap.records().unwrap() {
        match rec.unwrap() {
            Record::Interface(i) => linktypes.push(i.linktype),
            Record::Packet(p) => {
                frame += 1;
                let lt = linktypes[p.interface as usize];
                let d = dissect::dissect(lt, p.data);
                let atomic = d.frag.header_len != 0;
                if d.fragment == Fragment::Whole && !atomic {
                    continue;
                }
                if let DefragOutcome::Reassembled {
                    datagram,
                    constituents,
                    ..
                } = df.push(frame, p.ts_ns, &d)
                {
                    let whole = dissect::dissect(dissect::linktype::RAW, datagram);
                    assert_eq!(whole.fragment, Fragment::Whole);
                    let header = if datagram[0] >> 4 == 6 {
                        40
                    } else {
                        usize::from(datagram[0] & 0xf) * 4
                    };
                    m.insert(frame, (datagram[header..].to_vec(), constituents.to_vec()));
                }
            }
            _ => {}
        }
    }
    (m, df)
}

#[test]
fn reassembled_datagrams_match_tshark() {
    let mut total = 0;
    for name in FILES {
        let file = capture(name);
        let theirs = tshark(&file);
        // tshark keeps, for each byte, the fragment that starts lowest (earliest on a tie),
        // which is the bsd policy (the default) on these files.
        let (mine, df) = ours(&file, Policy::Bsd);
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}: frames where a datagram is complete"
        );
        for (frame, (data, frames)) in &theirs {
            let (my_data, my_frames) = &mine[frame];
            assert_eq!(my_data, data, "{name} frame {frame}: bytes");
            assert_eq!(my_frames, frames, "{name} frame {frame}: constituents");
        }
        let s = df.stats();
        assert_eq!(
            s.fragments,
            s.held + s.constituents + s.discarded.total(),
            "{name}: {s:?}"
        );
        total += theirs.len();
    }
    // ipv4-fragmented-1 and -4 and the IPv6 DNS answer; -2 and -3 never complete.
    assert_eq!(total, 3);
}

/// The same files under the other policies: the overlapping captures give other bytes
/// (so the policy matters), never a panic, and the non-overlapping IPv6 answer is the
/// same under every policy.
#[test]
fn every_policy_reassembles_the_captures() {
    let v6 = tshark(&capture("ipv6-fragmented-dns.pcap"));
    let mut differs = false;
    for policy in Policy::ALL {
        let (m, _) = ours(&capture("ipv6-fragmented-dns.pcap"), policy);
        assert_eq!(m, v6, "{policy}");
        let (m4, _) = ours(&capture("ipv4-fragmented-4.pcap"), policy);
        let (bsd, _) = ours(&capture("ipv4-fragmented-4.pcap"), Policy::Bsd);
        differs |= m4 != bsd;
    }
    assert!(
        differs,
        "ipv4-fragmented-4 overlaps: some policy keeps other bytes"
    );
}
