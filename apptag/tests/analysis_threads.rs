//! All cores: `report` and `creds` on 2 (and 3) workers print, byte for byte, what one core
//! prints, on every public capture and on a generated mixed capture (hundreds of hosts,
//! interleaved TCP and UDP streams, an idle time-out, a reused 5-tuple).
mod common;
use common::captures;
mod analysis;

use std::process::Command;

use analysis::{ACK, Ep, FIN, PSH, Pcap, SYN, tcp, udp};
use apptag::report::{Options, analyze_bytes_threads};

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend([1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend(l.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

/// Interleaved HTTP (with Basic credentials) and DNS from `hosts` clients.
fn mixed(hosts: u16) -> Pcap {
    let mut p = Pcap::new();
    let server = Ep {
        addr: [192, 0, 2, 80],
        port: 80,
    };
    let resolver = Ep {
        addr: [192, 0, 2, 53],
        port: 53,
    };
    let client = |i: u16, round: u16| Ep {
        addr: [10, 1, (i >> 8) as u8, i as u8],
        port: 40000 + round,
    };
    for round in 0..2u16 {
        for step in 0..6 {
            for i in 0..hosts {
                let c = client(i, round);
                let req = format!(
                    "GET /{i} HTTP/1.1\r\nHost: h{}.example\r\nAuthorization: Basic dXNlcjpwdw==\r\n\r\n",
                    i % 7
                );
                let resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                let (cs, ss) = (1000u32, 5000u32);
                let rl = req.len() as u32;
                let f = match step {
                    0 => tcp(c, server, cs, 0, SYN, b""),
                    1 => tcp(server, c, ss, cs + 1, SYN | ACK, b""),
                    2 => tcp(c, server, cs + 1, ss + 1, ACK | PSH, req.as_bytes()),
                    3 => tcp(server, c, ss + 1, cs + 1 + rl, ACK | PSH, resp.as_bytes()),
                    4 => udp(c, resolver, &dns_query(i, &format!("n{}.example", i % 5))),
                    _ => tcp(
                        c,
                        server,
                        cs + 1 + rl,
                        ss + 1 + resp.len() as u32,
                        FIN | ACK,
                        b"",
                    ),
                };
                p.frame(&f);
            }
        }
        // Idle past the reassembly time-out: round 1 reuses every DNS 5-tuple... and the
        // sweep retires round 0's streams at the time one core would.
        p.wait(700);
    }
    p
}

fn report_json(data: &[u8], threads: usize) -> String {
    let r = analyze_bytes_threads(data, "x", Options { flows: true }, threads).unwrap();
    serde_json::to_string_pretty(&r).unwrap()
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_apptag"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn two_cores_print_what_one_core_prints() {
    let dir = std::env::temp_dir().join(format!("apptag-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = dir.join("mixed.pcap");
    let m = mixed(300);
    m.write(&generated);
    // The generated capture does spread over both workers.
    let mut per = [0u64; 2];
    for i in 0..300u16 {
        let mut ip = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend([10, 1, (i >> 8) as u8, i as u8, 192, 0, 2, 80]);
        let d = apptag::dissect::dissect(apptag::dissect::linktype::RAW, &ip);
        per[apptag::analysis::shard::shard_of(&d, 2)] += 1;
    }
    assert!(per[0] > 50 && per[1] > 50, "{per:?}");
    let mut files = captures();
    files.push(generated.clone());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let one = report_json(&data, 1);
        // Break: numbering streams worker by worker (not by first frame over all
        // workers) fails on pop3-pop3.pcap's creds.
        assert_eq!(report_json(&data, 2), one, "report, {}", f.display());
        assert_eq!(
            report_json(&data, 3),
            one,
            "report, 3 workers, {}",
            f.display()
        );
        let name = f.to_str().unwrap();
        let c1 = cli(&["creds", "--json", "-j", "1", name]);
        assert_eq!(
            cli(&["creds", "--json", "-j", "2", name]),
            c1,
            "creds, {}",
            f.display()
        );
    }
    // The generated capture's figures are what was generated: 600 HTTP streams with one
    // credential each, DNS names asked.
    let c: serde_json::Value = serde_json::from_str(&cli(&[
        "creds",
        "--json",
        "-j",
        "2",
        generated.to_str().unwrap(),
    ]))
    .unwrap();
    let list = c.as_array().unwrap();
    assert_eq!(list.len(), 600);
    let mut streams: Vec<String> = list.iter().map(|x| x["stream"].to_string()).collect();
    streams.sort();
    streams.dedup();
    assert_eq!(streams.len(), 600, "every stream numbered once");
    let r: serde_json::Value = serde_json::from_str(&report_json(&m.bytes, 2)).unwrap();
    assert_eq!(r["totals"]["packets"], 3600);
    let _ = std::fs::remove_dir_all(&dir);
}
