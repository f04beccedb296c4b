//! `apptag report` against Wireshark's tools on the public captures in ../shared/captures:
//! conversations (tshark -z conv), totals (capinfos), names (tshark fields), and damaged
//! files (what tshark still reads from them).
mod common;
use common::captures;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    process::Command,
};

use apptag::report::{Options, Report, analyze, analyze_bytes};

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not runnable ({e}): run `cargo xtask setup`"));
    assert!(
        out.status.success() || cmd == "tshark" && out.stderr.starts_with(b"Running as"),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tshark(file: &Path, args: &[&str]) -> String {
    let f = file.to_str().unwrap();
    let mut a = vec!["-n", "-r", f];
    a.extend_from_slice(args);
    tool("tshark", &a)
}

fn report(file: &Path) -> Report {
    let r = analyze(file, Options { flows: true }).unwrap();
    assert!(
        r.problems.is_empty(),
        "{}: {:?}",
        file.display(),
        r.problems
    );
    r
}

/// An unordered conversation key: protocol and the two (address, port) ends, sorted.
type ConvKey = (String, (IpAddr, u16), (IpAddr, u16));
/// Frames and bytes from the first end to the second, and back.
type ConvVal = (u64, u64, u64, u64);
/// (src, dst, IP id) of a first fragment -> its flow.
type FragFlows = BTreeMap<(IpAddr, IpAddr, String), (String, (IpAddr, u16), (IpAddr, u16))>;

fn key(proto: &str, x: (IpAddr, u16), y: (IpAddr, u16)) -> (ConvKey, bool) {
    if x <= y {
        ((proto.to_string(), x, y), true)
    } else {
        ((proto.to_string(), y, x), false)
    }
}

fn add(
    m: &mut BTreeMap<ConvKey, ConvVal>,
    proto: &str,
    x: (IpAddr, u16),
    y: (IpAddr, u16),
    (fxy, bxy, fyx, byx): ConvVal,
) {
    let (k, fwd) = key(proto, x, y);
    let e = m.entry(k).or_default();
    if fwd {
        *e = (e.0 + fxy, e.1 + bxy, e.2 + fyx, e.3 + byx);
    } else {
        *e = (e.0 + fyx, e.1 + byx, e.2 + fxy, e.3 + bxy);
    }
}

/// Parses "addr:port" (IPv6 addresses contain colons: the port is after the last one).
fn endpoint(s: &str, with_port: bool) -> (IpAddr, u16) {
    if with_port {
        let (a, p) = s.rsplit_once(':').unwrap();
        (a.parse().unwrap(), p.parse().unwrap())
    } else {
        (s.parse().unwrap(), 0)
    }
}

/// Bytes as tshark prints them: exact "N bytes", or rounded "N kB"/"N MB".
#[derive(Debug, Clone, Copy)]
enum Shown {
    Exact(u64),
    Rounded(u64, u64),
}

fn shown(num: &str, unit: &str) -> Shown {
    let n: u64 = num.parse().unwrap();
    match unit {
        "bytes" => Shown::Exact(n),
        "kB" => Shown::Rounded(n, 1000),
        "MB" => Shown::Rounded(n, 1_000_000),
        other => panic!("unit {other}"),
    }
}

fn matches(s: Shown, v: u64) -> bool {
    match s {
        Shown::Exact(n) => n == v,
        // tshark rounds to whole units; either way of rounding is accepted.
        Shown::Rounded(n, u) => v / u == n || (v + u / 2) / u == n,
    }
}

/// Rows of `tshark -q -z conv,<kind>`: key -> (frames A->B, bytes A->B, frames B->A, bytes B->A).
fn tshark_conv(
    file: &Path,
    kind: &str,
    proto: &str,
    with_port: bool,
) -> BTreeMap<ConvKey, (u64, Shown, u64, Shown)> {
    // With reassembly on, tshark's IPv6 tap skips fragments that do not complete a
    // datagram; every frame is a packet on the wire, so reassembly is turned off.
    let conv = format!("conv,{kind}");
    let out = tshark(
        file,
        &[
            "-o",
            "ip.defragment:FALSE",
            "-o",
            "ipv6.defragment:FALSE",
            "-q",
            "-z",
            &conv,
        ],
    );
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 13 || t[1] != "<->" {
            continue;
        }
        let a = endpoint(t[0], with_port);
        let b = endpoint(t[2], with_port);
        // "<-" is B to A, "->" is A to B.
        let (f_ba, b_ba) = (t[3].parse().unwrap(), shown(t[4], t[5]));
        let (f_ab, b_ab) = (t[6].parse().unwrap(), shown(t[7], t[8]));
        let (k, fwd) = key(proto, a, b);
        let v = if fwd {
            (f_ab, b_ab, f_ba, b_ba)
        } else {
            (f_ba, b_ba, f_ab, b_ab)
        };
        m.insert(k, v);
    }
    m
}

fn ours_transport(r: &Report) -> BTreeMap<ConvKey, ConvVal> {
    let mut m = BTreeMap::new();
    for c in &r.conversations {
        add(
            &mut m,
            c.transport,
            (c.a, c.a_port),
            (c.b, c.b_port),
            (
                c.packets_a_to_b,
                c.bytes_a_to_b,
                c.packets_b_to_a,
                c.bytes_b_to_a,
            ),
        );
    }
    m
}

fn ours_ip(r: &Report) -> BTreeMap<ConvKey, ConvVal> {
    let mut m = BTreeMap::new();
    for c in &r.conversations {
        add(
            &mut m,
            "ip",
            (c.a, 0),
            (c.b, 0),
            (
                c.packets_a_to_b,
                c.bytes_a_to_b,
                c.packets_b_to_a,
                c.bytes_b_to_a,
            ),
        );
    }
    m
}

fn has_fragments(file: &Path) -> bool {
    !tshark(
        file,
        &[
            "-Y",
            "ip.flags.mf == 1 || ip.frag_offset > 0 || ipv6.fraghdr",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
    )
    .trim()
    .is_empty()
}

fn compare(
    file: &Path,
    what: &str,
    theirs: &BTreeMap<ConvKey, (u64, Shown, u64, Shown)>,
    ours: &BTreeMap<ConvKey, ConvVal>,
) {
    // When both ends are the same address (and port), direction is not defined: compare sums.
    let norm = |k: &ConvKey, v: ConvVal| {
        if k.1 == k.2 {
            (v.0 + v.2, v.1 + v.3, 0, 0)
        } else {
            v
        }
    };
    let tk: BTreeSet<_> = theirs.keys().collect();
    let ok: BTreeSet<_> = ours.keys().collect();
    assert_eq!(tk, ok, "{}: {what} conversations differ", file.display());
    for (k, t) in theirs {
        let o = norm(k, ours[k]);
        let t = if k.1 == k.2 {
            let (Shown::Exact(x), Shown::Exact(y)) = (t.1, t.3) else {
                panic!("{k:?}: {t:?}")
            };
            (t.0 + t.2, Shown::Exact(x + y), 0, Shown::Exact(0))
        } else {
            *t
        };
        assert!(
            t.0 == o.0 && t.2 == o.2 && matches(t.1, o.1) && matches(t.3, o.3),
            "{}: {what} {k:?}: tshark {t:?}, apptag {o:?}",
            file.display()
        );
    }
}

#[test]
fn conversations_match_tshark_conv() {
    for file in captures() {
        let r = report(&file);
        let ip = ours_ip(&r);
        let v4: BTreeMap<_, _> = ip
            .iter()
            .filter(|(k, _)| k.1.0.is_ipv4())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let v6: BTreeMap<_, _> = ip
            .iter()
            .filter(|(k, _)| k.1.0.is_ipv6())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        compare(
            &file,
            "conv,ip",
            &tshark_conv(&file, "ip", "ip", false),
            &v4,
        );
        // With reassembly tshark counts a fragmented datagram once, at its last fragment,
        // and its IPv6 tap skips non-first fragments even without reassembly; apptag counts
        // every fragment (bytes on the wire). Those files are checked frame by frame in
        // `flows_match_tshark_frame_fields` instead.
        if has_fragments(&file) {
            continue;
        }
        compare(
            &file,
            "conv,ipv6",
            &tshark_conv(&file, "ipv6", "ip", false),
            &v6,
        );
        let ours = ours_transport(&r);
        for proto in ["tcp", "udp"] {
            let mine: BTreeMap<_, _> = ours
                .iter()
                .filter(|(k, _)| k.0 == proto)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            compare(
                &file,
                &format!("conv,{proto}"),
                &tshark_conv(&file, proto, proto, true),
                &mine,
            );
        }
    }
}

/// Exact bytes per 5-tuple from tshark's per-frame fields (conv tables round large byte
/// counts). Every fragment counts to its datagram's flow (the first fragment's ports, by IP
/// id), wherever in the file the first fragment is, with tshark's reassembly off so each
/// fragment is its own frame.
#[test]
fn flows_match_tshark_frame_fields() {
    for file in captures() {
        flows_match_frame_fields(&file);
    }
}

/// The fragmented captures with their packets in reverse order, so each datagram's first
/// fragment arrives last: apptag's defragmenter still counts every fragment to the
/// datagram's flow.
#[test]
fn flows_match_tshark_with_first_fragments_last() {
    let dir = std::env::temp_dir().join(format!("apptag-report-rev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for file in captures().into_iter().filter(|f| has_fragments(f)) {
        let data = std::fs::read(&file).unwrap();
        let offs = record_offsets(&data);
        let mut rev = data[..24].to_vec();
        for (i, &o) in offs.iter().enumerate().rev() {
            let end = offs.get(i + 1).copied().unwrap_or(data.len());
            rev.extend_from_slice(&data[o..end]);
        }
        let path = dir.join(file.file_name().unwrap());
        std::fs::write(&path, &rev).unwrap();
        flows_match_frame_fields(&path);
        n += 1;
    }
    assert_eq!(n, 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn flows_match_frame_fields(file: &Path) {
    {
        let out = tshark(
            file,
            &[
                "-o",
                "ip.defragment:FALSE",
                "-o",
                "ipv6.defragment:FALSE",
                "-T",
                "fields",
                "-E",
                "occurrence=f",
                "-e",
                "frame.len",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "ipv6.src",
                "-e",
                "ipv6.dst",
                "-e",
                "ip.proto",
                "-e",
                "ipv6.nxt",
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "ip.id",
                "-e",
                "ip.frag_offset",
                "-e",
                "ip.flags.mf",
                "-e",
                "ipv6.fraghdr.ident",
                "-e",
                "ipv6.fraghdr.offset",
                "-e",
                "ipv6.fraghdr.more",
                "-e",
                "ipv6.fraghdr.nxt",
            ],
        );
        let mut expected: BTreeMap<ConvKey, ConvVal> = BTreeMap::new();
        let mut first_frag: FragFlows = BTreeMap::new();
        // Two passes: first fragments anywhere in the file, then every frame.
        for pass in 0..2 {
            for line in out.lines() {
                let f: Vec<&str> = line.split('\t').collect();
                let g = |i: usize| f.get(i).copied().unwrap_or("");
                let len: u64 = g(0).parse().unwrap();
                let (src, dst) = if !g(1).is_empty() {
                    (g(1), g(2))
                } else {
                    (g(3), g(4))
                };
                if src.is_empty() {
                    continue;
                }
                let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
                let v6 = g(1).is_empty();
                let (sp, dp, proto) = if !g(7).is_empty() {
                    (g(7).parse().unwrap(), g(8).parse().unwrap(), "tcp")
                } else if !g(9).is_empty() {
                    (g(9).parse().unwrap(), g(10).parse().unwrap(), "udp")
                } else {
                    let p: u8 = if v6 && !g(17).is_empty() {
                        g(17).parse().unwrap_or(0)
                    } else if v6 {
                        g(6).parse().unwrap_or(0)
                    } else {
                        g(5).parse().unwrap_or(0)
                    };
                    (0u16, 0u16, apptag::model::proto::name(p))
                };
                let (id, offset, more) = if v6 {
                    (g(14), g(15), g(16))
                } else {
                    (g(11), g(12), g(13))
                };
                let later = !offset.is_empty() && offset != "0";
                let more = more == "1" || more == "True";
                let fk = (src, dst, id.to_string());
                if pass == 0 {
                    if !later && more {
                        first_frag.insert(fk, (proto.to_string(), (src, sp), (dst, dp)));
                    }
                    continue;
                }
                let (proto, x, y) = if later && let Some(k) = first_frag.get(&fk) {
                    k.clone()
                } else {
                    (proto.to_string(), (src, sp), (dst, dp))
                };
                let fwd = x == (src, sp) || later && x.0 == src;
                if fwd {
                    add(&mut expected, &proto, x, y, (1, len, 0, 0));
                } else {
                    add(&mut expected, &proto, y, x, (1, len, 0, 0));
                }
            }
        }
        let ours = ours_transport(&report(file));
        assert_eq!(ours, expected, "{}", file.display());
    }
}

#[test]
fn totals_match_capinfos() {
    for file in captures() {
        let out = tool(
            "capinfos",
            &["-T", "-M", "-r", "-c", "-d", file.to_str().unwrap()],
        );
        let f: Vec<&str> = out.trim().split('\t').collect();
        let (packets, bytes): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        let r = report(&file);
        assert_eq!(
            (r.totals.packets, r.totals.bytes),
            (packets, bytes),
            "{}",
            file.display()
        );
        let sum: u64 = r.applications.iter().map(|a| a.bytes).sum();
        assert_eq!(
            sum,
            bytes,
            "{}: application lines must add up",
            file.display()
        );
        assert!(
            r.applications
                .iter()
                .all(|a| !a.attributed && a.reason.is_some())
        );
    }
}

#[test]
fn names_match_tshark_fields() {
    for file in captures() {
        let out = tshark(
            &file,
            &[
                "-T",
                "fields",
                "-E",
                "separator=,",
                "-e",
                "dns.qry.name",
                "-e",
                "http.host",
                "-e",
                "tls.handshake.extensions_server_name",
            ],
        );
        let theirs: BTreeSet<String> = out
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let r = report(&file);
        let ours: BTreeSet<String> = r
            .applications
            .iter()
            .flat_map(|a| a.names.iter().cloned())
            .collect();
        assert_eq!(ours, theirs, "{}", file.display());
    }
}

/// Record offsets of a classic pcap, walked independently of apptag's reader.
fn record_offsets(data: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        v.push(off);
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
    }
    v
}

fn tshark_count(path: &Path) -> usize {
    tshark(path, &["-T", "fields", "-e", "frame.number"])
        .lines()
        .count()
}

#[test]
fn truncated_file_is_reported_and_the_rest_counted() {
    let src = captures()
        .into_iter()
        .find(|p| p.ends_with("http-pipelined-requests.pcap"))
        .unwrap();
    let data = std::fs::read(&src).unwrap();
    let offs = record_offsets(&data);
    let cut_record = offs[30];
    let cut = cut_record + 16 + 10;
    let dir = std::env::temp_dir().join(format!("apptag-report-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("truncated.pcap");
    std::fs::write(&path, &data[..cut]).unwrap();
    let r = analyze(&path, Options::default()).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert_eq!(r.problems[0].offset, cut_record as u64);
    assert!(
        r.problems[0].message.contains("truncated"),
        "{}",
        r.problems[0].message
    );
    assert_eq!(r.totals.packets as usize, tshark_count(&path));
    assert_eq!(r.totals.packets, 30);
    // The CLI still prints the report, then fails naming the offset.
    let out = Command::new(env!("CARGO_BIN_EXE_apptag"))
        .args(["report", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["totals"]["packets"], 30);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("byte {cut_record}")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_record_length_is_reported_with_offset() {
    let src = captures()
        .into_iter()
        .find(|p| p.ends_with("ftp-ipv4.pcap"))
        .unwrap();
    let mut data = std::fs::read(&src).unwrap();
    let offs = record_offsets(&data);
    let bad = offs[40];
    data[bad + 8..bad + 12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let r = analyze_bytes(&data, "corrupt.pcap", Options::default()).unwrap();
    assert_eq!(r.problems.len(), 1);
    assert_eq!(r.problems[0].offset, bad as u64);
    assert!(r.problems[0].message.contains("corrupt"));
    assert_eq!(r.totals.packets, 40);
    // tshark reads the same 40 packets before giving up.
    let dir = std::env::temp_dir().join(format!("apptag-report-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("corrupt.pcap");
    std::fs::write(&path, &data).unwrap();
    assert_eq!(tshark_count(&path), 40);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn not_a_capture_is_an_error() {
    assert!(analyze_bytes(b"hello world, not a capture", "x", Options::default()).is_err());
    assert!(analyze_bytes(b"", "x", Options::default()).is_err());
}

#[test]
fn json_has_the_documented_shape() {
    let file = captures()
        .into_iter()
        .find(|p| p.ends_with("http-get.pcap"))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apptag"))
        .args(["report", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["totals"]["packets"], 14);
    assert_eq!(j["totals"]["bytes"], 6087);
    let apps = j["applications"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert!(apps[0]["name"].is_string());
    assert!(apps[0]["pids"].is_array());
    assert_eq!(apps[0]["packets"], 14);
    assert_eq!(apps[0]["bytes"], 6087);
    assert_eq!(apps[0]["names"][0], "bro.org");
}

/// A real TLS ClientHello (made by Python's ssl module in memory, no network) for `host`.
fn client_hello(host: &str) -> Vec<u8> {
    let script = format!(
        "import ssl,sys\nctx=ssl.create_default_context()\ni=ssl.MemoryBIO();o=ssl.MemoryBIO()\n\
         s=ctx.wrap_bio(i,o,server_hostname='{host}')\ntry: s.do_handshake()\n\
         except ssl.SSLWantReadError: pass\nsys.stdout.buffer.write(o.read())\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(out.status.success() && out.stdout.len() > 100, "{out:?}");
    out.stdout
}

/// Ethernet/IPv4/TCP frame with `payload` from 10.0.0.1:`sport` to 10.0.0.2:`dport`.
fn tcp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00];
    let total = (40 + payload.len()) as u16;
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend(sport.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend(payload);
    f
}

fn pcap_file(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut p = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p.extend(65535u32.to_le_bytes());
    p.extend(1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        p.extend((1_700_000_000u32 + i as u32).to_le_bytes());
        p.extend(0u32.to_le_bytes());
        p.extend((f.len() as u32).to_le_bytes());
        p.extend((f.len() as u32).to_le_bytes());
        p.extend(f);
    }
    p
}

#[test]
fn tls_sni_matches_tshark() {
    let frames = vec![
        tcp_frame(50000, 443, &client_hello("api.example.org")),
        // Not on 443: found by payload, not by port.
        tcp_frame(50001, 8443, &client_hello("internal.test")),
    ];
    let dir = std::env::temp_dir().join(format!("apptag-report-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tls.pcap");
    std::fs::write(&path, pcap_file(&frames)).unwrap();
    let out = tshark(
        &path,
        &[
            "-d",
            "tcp.port==8443,tls",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
        ],
    );
    let theirs: BTreeSet<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(theirs.len(), 2, "tshark saw {theirs:?}");
    let r = report(&path);
    let ours: BTreeSet<String> = r
        .applications
        .iter()
        .flat_map(|a| a.names.iter().cloned())
        .collect();
    assert_eq!(ours, theirs);
    let services: BTreeSet<&str> = r.conversations.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(services, BTreeSet::from(["tls"]));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Plain pcapng from Wireshark's tools (no process information) reports like the pcap it
/// came from.
#[test]
fn editcap_pcapng_reports_like_the_pcap() {
    let dir = std::env::temp_dir().join(format!("apptag-report-ng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in captures() {
        let ng = dir.join("x.pcapng");
        let st = Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(&file)
            .arg(&ng)
            .status()
            .unwrap();
        assert!(st.success());
        let a = report(&file);
        let b = report(&ng);
        assert_eq!(b.format, apptag::report::source::Format::Pcapng);
        assert!(!b.process_info);
        assert_eq!(
            (a.totals.packets, a.totals.bytes, a.totals.flows),
            (b.totals.packets, b.totals.bytes, b.totals.flows),
            "{}",
            file.display()
        );
        assert_eq!(ours_transport(&a), ours_transport(&b), "{}", file.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
