//! Our Community ID against the reference implementation (PyPI's `communityid`, installed by
//! `cargo xtask setup`), over both address families, the protocols with ports, both
//! orders of the endpoints and equal addresses.
use std::{net::IpAddr, process::Command};

use apptag::export::community_id;

const REFERENCE: &str = r#"
import sys, communityid
cid = communityid.CommunityID()
make = {6: communityid.FlowTuple.make_tcp, 17: communityid.FlowTuple.make_udp,
        132: communityid.FlowTuple.make_sctp}
for line in sys.stdin:
    proto, s, sp, d, dp = line.split()
    print(cid.calc(make[int(proto)](s, d, int(sp), int(dp))))
"#;

#[test]
fn community_id_equals_the_reference_implementation() {
    let cases: Vec<(u8, &str, u16, &str, u16)> = vec![
        (6, "10.0.0.1", 40000, "10.0.0.2", 80),
        (6, "10.0.0.2", 80, "10.0.0.1", 40000),
        (17, "192.168.1.10", 53, "8.8.8.8", 53),
        (17, "127.0.0.1", 5353, "127.0.0.1", 41000),
        (132, "10.1.1.1", 3868, "10.1.1.2", 3868),
        (6, "2001:db8::1", 443, "2001:db8::2", 51000),
        (17, "fe80::1", 546, "ff02::1:2", 547),
        (6, "::1", 1, "::1", 65535),
    ];
    let input: String = cases
        .iter()
        .map(|(p, s, sp, d, dp)| format!("{p} {s} {sp} {d} {dp}\n"))
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", REFERENCE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write cases");
    }
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "the reference failed (is `communityid` installed? run `cargo xtask setup`)"
    );
    let want: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(want.len(), cases.len());
    for ((p, s, sp, d, dp), want) in cases.iter().zip(want) {
        let s: IpAddr = s.parse().unwrap();
        let d: IpAddr = d.parse().unwrap();
        assert_eq!(
            community_id(0, s, *sp, d, *dp, *p).as_deref(),
            Some(want.as_str()),
            "{p} {s}:{sp} -> {d}:{dp}"
        );
    }
}
