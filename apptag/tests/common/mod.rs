//! Helpers shared by the pcapng tests: sample traffic and application tables, and the
//! Wireshark tools used as oracles.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use apptag::model::{
    AppRecord, Direction, InterfaceInfo, InterfaceStats, ProcessInfo, Provenance, SocketRecord,
    proto,
};

/// A fresh directory under the target dir's tmp (removed at drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let base = std::env::temp_dir().join(format!(
            "apptag-test-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&base).expect("create temp dir");
        TempDir(base)
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet/IPv4/UDP frame of exactly `len` bytes (>= 42).
pub fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, len: usize) -> Vec<u8> {
    let len = len.max(42);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
}

pub fn eth_lo() -> InterfaceInfo {
    InterfaceInfo {
        name: "lo".into(),
        linktype: 1,
        snaplen: 262144,
        filter: Some("udp or tcp".into()),
    }
}

pub fn process(pid: u32, name: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        uid: 1000,
        user: "alice".into(),
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: vec![name.into(), "--flag".into(), "arg with space".into()],
        start_ns: 1_700_000_000_000_000_000 + u64::from(pid),
        cgroup: "/user.slice".into(),
        container_id: String::new(),
    }
}

pub fn socket(i: u32, v6: bool) -> SocketRecord {
    let (l, r): (IpAddr, IpAddr) = if v6 {
        (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into())
    } else {
        (
            Ipv4Addr::new(127, 0, 0, 1).into(),
            Ipv4Addr::new(127, 0, 0, 2).into(),
        )
    };
    SocketRecord {
        local_addr: l,
        local_port: 40000 + (i % 20000) as u16,
        remote_addr: r,
        remote_port: 53,
        protocol: if i.is_multiple_of(2) {
            proto::UDP
        } else {
            proto::TCP
        },
        first_ns: 1_700_000_001_000_000_000 + u64::from(i),
        last_ns: 1_700_000_002_000_000_000 + u64::from(i),
        packets_in: u64::from(i) + 1,
        packets_out: u64::from(i) + 2,
        bytes_in: 64 * (u64::from(i) + 1),
        bytes_out: 64 * (u64::from(i) + 2),
        cookie: 0x1000 + u64::from(i),
        pid: 4242,
        provenance: Provenance::Hook(3),
        attributed_ns: 1_700_000_000_500_000_000,
    }
}

pub fn app(name: &str, pid: u32, sockets: u32) -> AppRecord {
    AppRecord {
        name: name.into(),
        pids: vec![pid],
        cmdline: vec![name.into(), "-v".into()],
        exe: format!("/usr/bin/{name}"),
        start_ns: 1_700_000_000_000_000_000,
        uid: 1000,
        cgroup: "/user.slice".into(),
        provenance: Provenance::Hook(1),
        sockets: (0..sockets).map(|i| socket(i, i % 3 == 0)).collect(),
    }
}

/// What a sample file holds, to compare the oracles' view with.
pub struct Sample {
    /// (ts_ns, frame length, direction, pid)
    pub packets: Vec<(u64, usize, Direction, u32)>,
}

pub const T0: u64 = 1_700_000_001_123_456_789;

/// Writes a typical capture: one interface, two processes, packets in both directions
/// (some unattributed), periodic and final app records, interface statistics.
pub fn write_sample(path: &Path, npackets: usize) -> Sample {
    use apptag::model::Packet;
    use apptag::pcapng::{SectionInfo, Writer};
    let mut w = Writer::create(path, &SectionInfo::detect()).expect("create");
    let ifid = w.add_interface(&eth_lo()).expect("idb");
    let curl = process(4242, "curl");
    let dig = process(5151, "dig");
    w.write_process(&curl).expect("process");
    w.write_process(&dig).expect("process");
    let mut packets = Vec::new();
    for i in 0..npackets {
        let len = 60 + (i % 7) * 13;
        let frame = udp_frame([127, 0, 0, 1], 40000, [127, 0, 0, 2], 53, len);
        let (dir, pid) = match i % 3 {
            0 => (Direction::Outbound, 4242),
            1 => (Direction::Inbound, 5151),
            _ => (Direction::Unknown, 0),
        };
        let ts = T0 + (i as u64) * 1_000_001;
        w.write_packet(&Packet {
            ts_ns: ts,
            interface: ifid,
            orig_len: len as u32,
            data: &frame,
            direction: dir,
            pid,
            tid: pid + 1,
        })
        .expect("packet");
        packets.push((ts, len, dir, pid));
        if i == npackets / 2 {
            w.write_app_records(&[app("curl", 4242, 2)], false)
                .expect("periodic");
        }
    }
    w.write_app_records(&[app("curl", 4242, 3), app("dig", 5151, 1)], true)
        .expect("final");
    w.write_interface_stats(
        ifid,
        &InterfaceStats {
            start_ns: T0,
            end_ns: T0 + 5_000_000_000,
            received: npackets as u64 + 3,
            if_dropped: 1,
            os_dropped: 2,
            delivered: npackets as u64,
            filter_accepted: npackets as u64 + 1,
        },
    )
    .expect("isb");
    w.flush().expect("flush");
    Sample { packets }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (install it with `cargo xtask setup`): {e}"))
}

pub fn stdout_of(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// tshark -r and capinfos both accept the file (exit 0).
pub fn assert_tools_accept(path: &Path) {
    let p = path.to_str().expect("utf-8 path");
    let t = run("tshark", &["-r", p, "-q"]);
    assert!(
        t.status.success(),
        "tshark rejects {p}: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    let c = run("capinfos", &[p]);
    assert!(
        c.status.success(),
        "capinfos rejects {p}: {}",
        String::from_utf8_lossy(&c.stderr)
    );
}

/// Every public capture in ../shared/captures (pcap and pcapng), sorted by name.
pub fn captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
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
