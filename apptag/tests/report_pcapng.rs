//! `apptag report` and `apptag extract` on a tagged pcapng as apptag writes it (process
//! entries, per-packet pids, application records), checked against Wireshark's tools and
//! against what the file was built to contain.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use apptag::{
    model::{
        AppRecord, Direction, InterfaceInfo, InterfaceStats, Packet, ProcessInfo, Provenance,
        SocketRecord, proto,
    },
    pcapng::{SectionInfo, Writer},
    report::{Options, analyze},
};

const BASE: u64 = 1_700_000_000_000_000_000;
const START: u64 = BASE + 1_000_000;

/// What each packet of the built file should be attributed to.
#[derive(Clone, Debug)]
struct Expect {
    ts: u64,
    len: u64,
    /// Application name, or "(unattributed)".
    app: &'static str,
    reason: Option<&'static str>,
    pid: u32,
}

struct Built {
    dir: PathBuf,
    file: PathBuf,
    expect: Vec<Expect>,
}

impl Drop for Built {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn eth(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let l4 = if protocol == proto::TCP { 20 } else { 8 };
    let total = (20 + l4 + payload.len()) as u16;
    f.extend([0x45, 0]);
    f.extend(total.to_be_bytes());
    f.extend([0, 1, 0x40, 0, 64, protocol, 0, 0]);
    f.extend(src);
    f.extend(dst);
    f.extend(sp.to_be_bytes());
    f.extend(dp.to_be_bytes());
    if protocol == proto::TCP {
        f.extend([0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend(((8 + payload.len()) as u16).to_be_bytes());
        f.extend([0, 0]);
    }
    f.extend(payload);
    f
}

fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend(l.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

fn process(pid: u32, name: &str, cgroup: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid: 1,
        uid: 1000,
        user: "alice".into(),
        name: name.into(),
        exe: format!("/usr/bin/{name}"),
        cmdline: vec![name.into(), "--flag".into()],
        start_ns: BASE,
        cgroup: cgroup.into(),
        container_id: String::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn socket(
    local: [u8; 4],
    lport: u16,
    remote: &str,
    rport: u16,
    protocol: u8,
    first: u64,
    last: u64,
    pid: u32,
) -> SocketRecord {
    SocketRecord {
        local_addr: IpAddr::from(local),
        local_port: lport,
        remote_addr: remote.parse().unwrap(),
        remote_port: rport,
        protocol,
        first_ns: first,
        last_ns: last,
        packets_in: 0,
        packets_out: 0,
        bytes_in: 0,
        bytes_out: 0,
        cookie: 0,
        pid,
        provenance: Provenance::Hook(1),
        attributed_ns: START,
    }
}

fn app(name: &str, pids: &[u32], cgroup: &str, sockets: Vec<SocketRecord>) -> AppRecord {
    AppRecord {
        name: name.into(),
        pids: pids.to_vec(),
        exe: format!("/usr/bin/{name}"),
        cgroup: cgroup.into(),
        start_ns: BASE,
        uid: 1000,
        provenance: Provenance::Hook(1),
        sockets,
        ..Default::default()
    }
}

const LOCAL: [u8; 4] = [10, 0, 0, 1];
const NGINX_CG: &str = "/system.slice/nginx.service";

/// Builds a capture of curl, nginx (two processes) and dig, with tagged and untagged
/// packets and every kind of unattributed traffic.
fn build(name: &str) -> Built {
    let dir = std::env::temp_dir().join(format!("apptag-report-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tagged.pcapng");
    let mut w = Writer::create(&file, &SectionInfo::detect()).unwrap();
    w.add_interface(&InterfaceInfo {
        name: "eth0".into(),
        linktype: 1,
        snaplen: 262_144,
        filter: None,
    })
    .unwrap();
    for p in [
        process(100, "curl", "/user.slice"),
        process(200, "nginx", NGINX_CG),
        process(201, "nginx", NGINX_CG),
        process(300, "dig", "/user.slice"),
    ] {
        w.write_process(&p).unwrap();
    }
    let t = |i: u64| START + i * 1_000_000;
    let apps_final = vec![
        app(
            "curl",
            &[100],
            "/user.slice",
            vec![socket(
                LOCAL,
                40000,
                "93.184.216.34",
                443,
                proto::TCP,
                t(0),
                t(30),
                100,
            )],
        ),
        app(
            "nginx",
            &[200, 201],
            NGINX_CG,
            vec![socket(LOCAL, 8080, "0.0.0.0", 0, proto::TCP, 0, 0, 201)],
        ),
        app(
            "dig",
            &[300],
            "/user.slice",
            vec![socket(
                LOCAL,
                53000,
                "10.0.0.53",
                53,
                proto::UDP,
                t(0),
                t(40),
                300,
            )],
        ),
    ];
    // A periodic table early on with only curl, then the final one at the end.
    w.write_app_records(&apps_final[..1], false).unwrap();
    let mut expect = Vec::new();
    let mut put = |w: &mut Writer<_>,
                   ts: u64,
                   frame: Vec<u8>,
                   dir: Direction,
                   pid: u32,
                   e: (&'static str, Option<&'static str>, u32)| {
        w.write_packet(&Packet {
            ts_ns: ts,
            interface: 0,
            orig_len: frame.len() as u32 + 4,
            data: &frame,
            direction: dir,
            pid,
            tid: pid,
        })
        .unwrap();
        expect.push(Expect {
            ts,
            len: frame.len() as u64 + 4,
            app: e.0,
            reason: e.1,
            pid: e.2,
        });
    };
    let unattr = "(unattributed)";
    // Before attribution started: untagged, before every socket's attribution time.
    put(
        &mut w,
        BASE + 10,
        eth([93, 184, 216, 34], 443, LOCAL, 40000, proto::TCP, b""),
        Direction::Inbound,
        0,
        (unattr, Some("seen before attribution started"), 0),
    );
    for i in 0..10 {
        // curl: tagged out, untagged in (matched by the socket).
        put(
            &mut w,
            t(i * 2 + 1),
            eth(
                LOCAL,
                40000,
                [93, 184, 216, 34],
                443,
                proto::TCP,
                &[0u8; 100],
            ),
            Direction::Outbound,
            100,
            ("curl", None, 100),
        );
        put(
            &mut w,
            t(i * 2 + 2),
            eth(
                [93, 184, 216, 34],
                443,
                LOCAL,
                40000,
                proto::TCP,
                &[0u8; 1400],
            ),
            Direction::Inbound,
            0,
            ("curl", None, 100),
        );
        // nginx: client connects to the listening socket; in untagged, out tagged 201.
        put(
            &mut w,
            t(i * 2 + 1) + 500,
            eth(
                [198, 51, 100, 7],
                51000 + i as u16,
                LOCAL,
                8080,
                proto::TCP,
                b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n",
            ),
            Direction::Inbound,
            0,
            ("nginx", None, 201),
        );
        put(
            &mut w,
            t(i * 2 + 2) + 500,
            eth(
                LOCAL,
                8080,
                [198, 51, 100, 7],
                51000 + i as u16,
                proto::TCP,
                &[1u8; 900],
            ),
            Direction::Outbound,
            201,
            ("nginx", None, 201),
        );
    }
    // nginx master (pid 200) says something too.
    put(
        &mut w,
        t(25),
        eth(
            LOCAL,
            8080,
            [198, 51, 100, 9],
            52000,
            proto::TCP,
            &[2u8; 10],
        ),
        Direction::Outbound,
        200,
        ("nginx", None, 200),
    );
    // dig: tagged query, untagged answer.
    put(
        &mut w,
        t(30),
        eth(
            LOCAL,
            53000,
            [10, 0, 0, 53],
            53,
            proto::UDP,
            &dns_query("example.org"),
        ),
        Direction::Outbound,
        300,
        ("dig", None, 300),
    );
    put(
        &mut w,
        t(31),
        eth(
            [10, 0, 0, 53],
            53,
            LOCAL,
            53000,
            proto::UDP,
            &dns_query("example.org"),
        ),
        Direction::Inbound,
        0,
        ("dig", None, 300),
    );
    // dig's port after its socket's last packet: nobody's.
    put(
        &mut w,
        t(90),
        eth(
            [10, 0, 0, 53],
            53,
            LOCAL,
            53000,
            proto::UDP,
            &dns_query("late.example.org"),
        ),
        Direction::Inbound,
        0,
        (unattr, Some("no process or socket matched"), 0),
    );
    // Neither end is local.
    put(
        &mut w,
        t(50),
        eth(
            [198, 51, 100, 1],
            1000,
            [198, 51, 100, 2],
            2000,
            proto::UDP,
            b"x",
        ),
        Direction::Unknown,
        0,
        (unattr, Some("not a local address"), 0),
    );
    // ARP.
    let mut arp = vec![0xffu8; 6];
    arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend([0u8; 20]);
    put(
        &mut w,
        t(51),
        arp,
        Direction::Unknown,
        0,
        (unattr, Some("not IP (no addresses or ports to match)"), 0),
    );
    w.write_interface_stats(
        0,
        &InterfaceStats {
            start_ns: BASE,
            end_ns: t(100),
            received: 70,
            if_dropped: 1,
            os_dropped: 2,
            delivered: 67,
            filter_accepted: 70,
        },
    )
    .unwrap();
    w.write_app_records(&apps_final, true).unwrap();
    w.flush().unwrap();
    drop(w);
    Built { dir, file, expect }
}

fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(args)
        .output()
        .expect("tshark: run `cargo xtask setup`");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (ns timestamp, frame length) of the real packets in a file, as tshark reads them.
fn tshark_frames(file: &Path) -> Vec<(u64, u64)> {
    tshark(
        file,
        &[
            "-Y",
            "!frame.cb_pen",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
        ],
    )
    .lines()
    .map(|l| {
        let (t, len) = l.split_once('\t').unwrap();
        let (s, frac) = t.split_once('.').unwrap();
        let ns = s.parse::<u64>().unwrap() * 1_000_000_000
            + format!("{frac:0<9}")[..9].parse::<u64>().unwrap();
        (ns, len.parse().unwrap())
    })
    .collect()
}

#[test]
fn report_attributes_packets_to_applications() {
    let b = build("attr");
    let r = analyze(&b.file, Options { flows: true }).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.process_info);
    let c = r.capture.as_ref().expect("statistics block");
    assert_eq!(
        (c.received, c.if_dropped, c.os_dropped, c.delivered),
        (70, 1, 2, 67)
    );
    // The transit UDP packet carries no direction and touches no local address.
    assert_eq!(r.direction, "guessed");
    // Totals: the real packets tshark sees.
    let frames = tshark_frames(&b.file);
    assert_eq!(r.totals.packets as usize, frames.len());
    assert_eq!(r.totals.bytes, frames.iter().map(|f| f.1).sum::<u64>());
    // Per application and per unattributed reason, from how the file was built.
    let mut want: BTreeMap<(String, Option<String>), (u64, u64)> = BTreeMap::new();
    for e in &b.expect {
        let v = want
            .entry((e.app.to_string(), e.reason.map(String::from)))
            .or_default();
        v.0 += 1;
        v.1 += e.len;
    }
    let got: BTreeMap<(String, Option<String>), (u64, u64)> = r
        .applications
        .iter()
        .map(|a| ((a.name.clone(), a.reason.clone()), (a.packets, a.bytes)))
        .collect();
    assert_eq!(got, want);
    let nginx = r.applications.iter().find(|a| a.name == "nginx").unwrap();
    assert_eq!(nginx.pids, vec![200, 201]);
    assert_eq!(nginx.cgroup, NGINX_CG);
    assert_eq!(nginx.flows, 11);
    assert_eq!(nginx.remote_hosts, 2);
    assert_eq!(nginx.names, vec!["shop.example".to_string()]);
    let per_pid: BTreeMap<u32, u64> = nginx.processes.iter().map(|p| (p.pid, p.packets)).collect();
    assert_eq!(per_pid, BTreeMap::from([(200, 1), (201, 20)]));
    assert!(
        nginx
            .processes
            .iter()
            .all(|p| p.name == "nginx" && p.user == "alice")
    );
    let curl = r.applications.iter().find(|a| a.name == "curl").unwrap();
    assert_eq!((curl.packets_out, curl.packets_in), (10, 10));
    assert_eq!(
        curl.remotes[0].addr,
        "93.184.216.34".parse::<IpAddr>().unwrap()
    );
    assert_eq!(curl.remotes[0].ports, vec![443]);
    assert_eq!(curl.protocols[0].name, "https");
    let dig = r.applications.iter().find(|a| a.name == "dig").unwrap();
    assert_eq!(dig.names, vec!["example.org".to_string()]);
    // Top talkers: most bytes first.
    assert!(r.applications.windows(2).all(|w| w[0].bytes >= w[1].bytes));
    // Conversations agree with tshark on this pcapng too.
    let conv = tshark(&b.file, &["-q", "-z", "conv,tcp", "-z", "conv,udp"]);
    let rows = conv.lines().filter(|l| l.contains("<->")).count();
    let ours = r
        .conversations
        .iter()
        .filter(|c| c.protocol == proto::TCP || c.protocol == proto::UDP)
        .count();
    assert_eq!(rows, ours, "{conv}");
    for c in r
        .conversations
        .iter()
        .filter(|c| c.protocol == proto::TCP || c.protocol == proto::UDP)
    {
        let a = format!("{}:{}", c.a, c.a_port);
        let bb = format!("{}:{}", c.b, c.b_port);
        let line = conv
            .lines()
            .find(|l| {
                let t: Vec<&str> = l.split_whitespace().collect();
                t.len() > 10 && ((t[0] == a && t[2] == bb) || (t[0] == bb && t[2] == a))
            })
            .unwrap_or_else(|| panic!("tshark has no conversation {a} <-> {bb}"));
        let t: Vec<&str> = line.split_whitespace().collect();
        let total_frames: u64 = t[9].parse().unwrap();
        assert_eq!(total_frames, c.packets, "{line}");
        // tshark prints exact bytes below 10 kB and rounded kB above.
        let shown: u64 = t[10].parse().unwrap();
        match t[11] {
            "bytes" => assert_eq!(shown, c.bytes, "{line}"),
            "kB" => assert!(
                shown == c.bytes / 1000 || shown == (c.bytes + 500) / 1000,
                "{line}"
            ),
            other => panic!("unit {other} in {line}"),
        }
    }
}

fn run_extract(file: &Path, out: &Path, sel: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apptag"))
        .arg("extract")
        .arg(file)
        .arg("-o")
        .arg(out)
        .args(sel)
        .output()
        .unwrap()
}

fn check_extract(b: &Built, sel: &[&str], keep: impl Fn(&Expect) -> bool, app: &str, pids: &[u32]) {
    let out = b.dir.join(format!(
        "extract-{}.pcapng",
        sel.join("-").replace('/', "_")
    ));
    let o = run_extract(&b.file, &out, sel);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Wireshark's tools read the file without complaint...
    let ci = Command::new("capinfos").arg(&out).output().unwrap();
    assert!(
        ci.status.success(),
        "capinfos: {}",
        String::from_utf8_lossy(&ci.stderr)
    );
    // ...and find exactly the selected packets.
    let want: Vec<(u64, u64)> = b
        .expect
        .iter()
        .filter(|e| keep(e))
        .map(|e| (e.ts, e.len))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(tshark_frames(&out), want);
    // Process entries and application records came along.
    let r = analyze(&out, Options::default()).unwrap();
    assert!(r.problems.is_empty());
    assert_eq!(
        r.applications.len(),
        1,
        "{:?}",
        r.applications.iter().map(|a| &a.name).collect::<Vec<_>>()
    );
    assert_eq!(r.applications[0].name, app);
    assert_eq!(r.applications[0].pids, pids);
    assert!(
        r.applications[0]
            .processes
            .iter()
            .all(|p| p.name == app && !p.exe.is_empty())
    );
}

#[test]
fn extract_by_app_pid_and_cgroup() {
    let b = build("extract");
    check_extract(
        &b,
        &["--app", "nginx"],
        |e| e.app == "nginx",
        "nginx",
        &[200, 201],
    );
    check_extract(
        &b,
        &["--cgroup", NGINX_CG],
        |e| e.app == "nginx",
        "nginx",
        &[200, 201],
    );
    check_extract(&b, &["--pid", "201"], |e| e.pid == 201, "nginx", &[201]);
    check_extract(&b, &["--app", "curl"], |e| e.app == "curl", "curl", &[100]);
    // An unknown application is an error that names the ones there are.
    let o = run_extract(&b.file, &b.dir.join("none.pcapng"), &["--app", "firefox"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("curl") && err.contains("nginx"), "{err}");
}

#[test]
fn extract_refuses_plain_pcap() {
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures/http-get.pcap");
    let dir = std::env::temp_dir().join(format!("apptag-report-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = run_extract(&pcap, &dir.join("x.pcapng"), &["--app", "curl"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no process information"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_pcapng_still_reports() {
    let b = build("trunc");
    let data = std::fs::read(&b.file).unwrap();
    let cut = b.dir.join("cut.pcapng");
    std::fs::write(&cut, &data[..data.len() * 2 / 3]).unwrap();
    let r = analyze(&cut, Options::default()).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].message.contains("truncated"));
    // tshark reads the same packets before the cut.
    let o = Command::new("tshark")
        .args([
            "-n",
            "-Y",
            "!frame.cb_pen",
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-r",
        ])
        .arg(&cut)
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&o.stdout).lines().count();
    assert_eq!(r.totals.packets as usize, n);
    assert!(n > 10);
    // Without the final table at the end, packets tagged with pids still find their
    // applications (from the process entries).
    assert!(
        r.applications
            .iter()
            .any(|a| a.name == "nginx" && a.attributed)
    );
}
