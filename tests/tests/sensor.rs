//! The live sensor end to end: the `apptag` binary captures real traffic of real processes
//! on a veth pair into a namespace the test makes (or on a namespace's own loopback), and
//! the file is judged by tshark, capinfos and tcpdump. The expected pids come from the
//! kernel (the children the test spawns), never from apptag.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt;

use apptag_integration_tests::{
    TRAFFIC_COMM, TestCgroup, Traffic,
    netns::NetnsPair,
    oracle,
    oracle::{
        FiveTuple, OurFile, assert_valid, epoch_string, read_ours, tool, tshark_conversations,
        tshark_packets,
    },
    require_root,
    sensor::{ChildGuard, Sensor, TempDir, apptag_bin, http_server, run_apptag},
    traffic_bin,
};

// One capture at a time: the machine is small and every sensor loads its own probes.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const HTTP_PORT: u16 = 18080;
const UDP_PORT: u16 = 19000;
const TCP_PORT: u16 = 19001;
const TCP: u8 = 6;
const UDP: u8 = 17;
/// Datagrams each UDP sender sends.
const UDP_COUNT: usize = 5;

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Time for the last packets (FIN/ACK, TIME_WAIT answers) to pass before a capture stops.
fn settle() {
    std::thread::sleep(Duration::from_millis(800));
}

/// `python3 -m http.server` inside the namespace, serving a page small enough that tshark
/// prints its byte counts exactly (it rounds to kB from 10 000 bytes on).
/// The page the HTTP server serves.
const SMALL_PAGE: &[u8] = &[b'x'; 3000];

/// A `curl` of the page, started: it prints its connection's local port.
fn spawn_curl(pair: &NetnsPair) -> std::process::Child {
    let url = format!("http://{}:{HTTP_PORT}/page.html", pair.ns_ip);
    Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "30",
            "-w",
            "%{local_port}",
        ])
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn curl")
}

/// A started `curl`'s pid and local port, once it has succeeded.
fn curl_done(child: std::process::Child) -> (u32, u16) {
    let pid = child.id();
    let out = child.wait_with_output().expect("wait curl");
    assert!(out.status.success(), "curl {pid} failed: {}", out.status);
    let port = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("curl printed its local port");
    (pid, port)
}

/// One `curl` of the page: its pid and the local port of its connection.
fn curl(pair: &NetnsPair) -> (u32, u16) {
    curl_done(spawn_curl(pair))
}

/// A traffic scenario inside the namespace.
fn in_ns(pair: &NetnsPair, scenario: &str, addr: &str) -> Traffic {
    Traffic::start_with(pair.command(traffic_bin()), scenario, addr, "")
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("bad address {addr}: {e}"))
        .port()
}

/// A UDP sender on the host: UDP_COUNT datagrams to `to`, then it waits for the answer.
/// Returns (pid, local port).
fn udp_ping(to: SocketAddr) -> (u32, u16) {
    let mut t = Traffic::start_with(
        Command::new(traffic_bin()),
        "udp-ping",
        &to.to_string(),
        &UDP_COUNT.to_string(),
    );
    let port = port_of(&t.get("local"));
    t.get("reply");
    t.wait_ok();
    (t.pid(), port)
}

/// A short-lived TCP client on the host: connect, send, read the echo, exit.
fn tcp_client(to: SocketAddr) -> (u32, u16) {
    let mut t = Traffic::start("tcp-client", &to.to_string(), "");
    let port = port_of(&t.get("local"));
    t.wait_ok();
    (t.pid(), port)
}

fn v4(pair_ip: std::net::Ipv4Addr, port: u16) -> (IpAddr, u16) {
    (IpAddr::V4(pair_ip), port)
}

/// Real traffic of three kinds of process across the veth, captured by apptag on the host
/// end: curl against http.server, a UDP sender and a short-lived TCP client.
struct Mixed {
    _dir: TempDir,
    pair: NetnsPair,
    file: std::path::PathBuf,
    /// What a tcpdump on the same interface wrote at the same time.
    tcpdump: std::path::PathBuf,
    /// (pid, local port) of each host-side process.
    curl: (u32, u16),
    udp: (u32, u16),
    client: (u32, u16),
}

impl Mixed {
    fn run(n: u8, name: &str) -> Self {
        let pair = NetnsPair::new(n);
        let dir = TempDir::new(name);
        let file = dir.file("mixed.pcapng");
        let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
        let mut udp_rx = in_ns(&pair, "udp-recv", &format!("{}:{UDP_PORT}", pair.ns_ip));
        udp_rx.get("listen");
        let mut tcp_srv = in_ns(&pair, "tcp-server", &format!("{}:{TCP_PORT}", pair.ns_ip));
        tcp_srv.get("listen");

        let sensor = Sensor::start(None, &file, &["-i", &pair.host_if, "--app-interval", "0.5"]);
        let tcpdump = dir.file("tcpdump.pcap");
        let mut dump = start_tcpdump(&pair.host_if, &tcpdump, &[]);
        let curl = curl(&pair);
        let udp = udp_ping(SocketAddr::new(IpAddr::V4(pair.ns_ip), UDP_PORT));
        let client = tcp_client(SocketAddr::new(IpAddr::V4(pair.ns_ip), TCP_PORT));
        udp_rx.wait_ok();
        tcp_srv.wait_ok();
        settle();
        dump.stop_with(libc::SIGINT, Duration::from_secs(30));
        let (st, err) = sensor.stop();
        assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
        Self {
            _dir: dir,
            pair,
            file,
            tcpdump,
            curl,
            udp,
            client,
        }
    }

    fn host(&self, port: u16) -> (IpAddr, u16) {
        v4(self.pair.host_ip, port)
    }

    fn ns(&self, port: u16) -> (IpAddr, u16) {
        v4(self.pair.ns_ip, port)
    }

    fn is_curl(&self, t: &FiveTuple) -> bool {
        t.between(TCP, self.host(self.curl.1), self.ns(HTTP_PORT))
    }

    fn is_client(&self, t: &FiveTuple) -> bool {
        t.between(TCP, self.host(self.client.1), self.ns(TCP_PORT))
    }

    fn is_udp(&self, t: &FiveTuple) -> bool {
        t.between(UDP, self.host(self.udp.1), self.ns(UDP_PORT))
    }

    /// Packets of the curl, UDP and TCP-client flows in the tcpdump run beside apptag.
    fn tcpdump_counts(&self) -> [usize; 3] {
        [
            tshark_count(
                &self.tcpdump,
                TCP,
                self.host(self.curl.1),
                self.ns(HTTP_PORT),
            ),
            tshark_count(&self.tcpdump, UDP, self.host(self.udp.1), self.ns(UDP_PORT)),
            tshark_count(
                &self.tcpdump,
                TCP,
                self.host(self.client.1),
                self.ns(TCP_PORT),
            ),
        ]
    }
}

fn unattributed(f: &OurFile) -> usize {
    f.packets.iter().filter(|p| p.pid == 0).count()
}

#[test]
fn capture_is_valid_and_matches_tshark_packet_for_packet() {
    require_root();
    let _g = serial();
    let m = Mixed::run(1, "valid");
    let counted = assert_valid(&m.file);
    let ours = read_ours(&m.file);
    assert!(ours.errors.is_empty(), "our reader: {:?}", ours.errors);
    let theirs = tshark_packets(&m.file, None);
    assert_eq!(ours.packets.len(), counted, "our reader vs capinfos");
    assert_eq!(ours.packets.len(), theirs.len(), "our reader vs tshark");
    for (i, (o, t)) in ours.packets.iter().zip(&theirs).enumerate() {
        assert_eq!(o.tuple, t.tuple, "packet {} 5-tuple", i + 1);
        assert_eq!(epoch_string(o.ts_ns), t.time, "packet {} time", i + 1);
        assert_eq!(o.orig_len, t.len, "packet {} length", i + 1);
    }
    // Capture threads interleave; the writer puts packets back in time order.
    assert!(
        ours.packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "packet timestamps go backwards"
    );
    // The traffic of all three processes is in the file (as tshark sees it).
    let n = |f: &dyn Fn(&FiveTuple) -> bool| {
        theirs
            .iter()
            .filter(|p| p.tuple.as_ref().is_some_and(f))
            .count()
    };
    let (c, u, t) = (
        n(&|x| m.is_curl(x)),
        n(&|x| m.is_udp(x)),
        n(&|x| m.is_client(x)),
    );
    // Each flow complete: what tcpdump saw at the same time.
    assert_eq!(
        [c, u, t],
        m.tcpdump_counts(),
        "packets per flow (curl, udp, client): apptag vs tcpdump"
    );
    assert_eq!(u, UDP_COUNT + 1, "UDP sender: its datagrams and one answer");
}

#[test]
fn every_packet_of_a_local_socket_carries_its_process_pid() {
    require_root();
    let _g = serial();
    let m = Mixed::run(2, "pids");
    let ours = read_ours(&m.file);
    let mut wrong = Vec::new();
    let mut seen = [0usize; 3];
    for (i, p) in ours.packets.iter().enumerate() {
        let Some(t) = p.tuple else { continue };
        let expected = if m.is_curl(&t) {
            seen[0] += 1;
            m.curl.0
        } else if m.is_udp(&t) {
            seen[1] += 1;
            m.udp.0
        } else if m.is_client(&t) {
            seen[2] += 1;
            m.client.0
        } else {
            continue;
        };
        // apptag-traffic is single-threaded: its only thread is the process itself.
        let tid_ok = expected == m.curl.0 || p.tid == expected;
        if p.pid != expected || !tid_ok {
            wrong.push(format!(
                "packet {} {t:?}: pid {} (tid {}), expected {expected}",
                i + 1,
                p.pid,
                p.tid
            ));
        }
    }
    eprintln!(
        "{} of {} packets unattributed (ARP and the like have no socket); curl {}, udp {}, \
         client {} packets checked",
        unattributed(&ours),
        ours.packets.len(),
        seen[0],
        seen[1],
        seen[2]
    );
    // Every packet of each flow is in the file and was checked: exactly what tcpdump saw.
    assert_eq!(
        seen,
        m.tcpdump_counts(),
        "packets per flow (curl, udp, client): apptag vs tcpdump at the same time"
    );
    assert_eq!(seen[1], UDP_COUNT + 1, "UDP datagrams and the answer");
    // Each process has its entry in the file, as the kernel knows it: our child, running
    // the program we started.
    let curl_exe = std::fs::canonicalize(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("curl"))
            .find(|p| p.is_file())
            .expect("curl on PATH"),
    )
    .expect("curl path");
    let traffic_exe = std::fs::canonicalize(traffic_bin()).expect("traffic path");
    for (pid, name, exe) in [
        (m.curl.0, "curl", &curl_exe),
        (m.udp.0, TRAFFIC_COMM, &traffic_exe),
        (m.client.0, TRAFFIC_COMM, &traffic_exe),
    ] {
        let p = ours
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .unwrap_or_else(|| panic!("no process entry for {name} pid {pid}"));
        // The name comes with the kernel's event; parent and exe are read from /proc, which
        // a process that lives a few ms can leave first: unknown is allowed, wrong is not.
        assert_eq!(p.name, name, "pid {pid}: {p:?}");
        assert!(
            p.ppid == std::process::id() || p.ppid == 0,
            "{name} pid {pid}: parent: {p:?}"
        );
        assert!(
            Path::new(&p.exe) == exe.as_path() || p.exe.is_empty(),
            "{name} pid {pid}: exe: {p:?}"
        );
        if p.ppid == 0 || p.exe.is_empty() {
            eprintln!("{name} pid {pid}: process entry incomplete: {p:?}");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} packets carry the wrong pid/tid (curl {}, udp sender {}, tcp client {}):\n{}",
        wrong.len(),
        m.curl.0,
        m.udp.0,
        m.client.0,
        wrong.join("\n")
    );
}

/// Looks up `apptag apps --json`'s socket of process `pid` with the given local port.
fn app_socket(
    apps: &serde_json::Value,
    pid: u32,
    proto: u8,
    local_port: u16,
) -> (&serde_json::Value, &serde_json::Value) {
    let list = apps["apps"].as_array().expect("apps array");
    let app = list
        .iter()
        .find(|a| {
            a["pids"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x.as_u64() == Some(u64::from(pid))))
        })
        .unwrap_or_else(|| panic!("no application with pid {pid} in {apps:#}"));
    let socks: Vec<&serde_json::Value> = app["sockets"]
        .as_array()
        .expect("sockets array")
        .iter()
        .filter(|s| {
            s["protocol"].as_u64() == Some(u64::from(proto))
                && s["local_port"].as_u64() == Some(u64::from(local_port))
        })
        .collect();
    assert_eq!(
        socks.len(),
        1,
        "pid {pid}: expected one socket on local port {local_port}, got {socks:#?}"
    );
    (app, socks[0])
}

/// The protocol parsers on a tagged capture: curl's HTTP request, read by `apptag fields`
/// and `apptag creds`'s parser layer, names curl and its pid (what curl itself printed as
/// its local port ties the line to it).
#[test]
fn http_request_fields_name_the_client_application() {
    require_root();
    let _g = serial();
    let m = Mixed::run(61, "fields");
    let args = [
        "fields",
        "-e",
        "tcp.srcport",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "app.name",
        "-e",
        "process.pid",
    ];
    let mut a: Vec<&std::ffi::OsStr> = vec![args[0].as_ref(), m.file.as_os_str()];
    a.extend(args[1..].iter().map(|x| std::ffi::OsStr::new(*x)));
    let out = run_apptag(&a);
    assert!(
        out.status.success(),
        "apptag fields failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("{}\tGET\t/page.html\tcurl\t{}", m.curl.1, m.curl.0);
    assert!(
        text.lines().any(|l| l == want),
        "no line {want:?} in:\n{text}"
    );
}

#[test]
fn apps_json_matches_tshark_conversations() {
    require_root();
    let _g = serial();
    let m = Mixed::run(3, "apps");
    let out = run_apptag(&["apps".as_ref(), m.file.as_os_str(), "--json".as_ref()]);
    assert!(
        out.status.success(),
        "apptag apps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apps: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("apptag apps --json prints JSON");
    assert_eq!(apps["final_table"], true, "clean stop writes a final table");
    assert_eq!(apps["errors"].as_array().map(Vec::len), Some(0), "{apps:#}");
    let tcp = tshark_conversations(&m.file, "tcp");
    let udp = tshark_conversations(&m.file, "udp");
    let cases = [
        ("curl", m.curl, TCP, HTTP_PORT, &tcp),
        ("apptag-traffic", m.udp, UDP, UDP_PORT, &udp),
        ("apptag-traffic", m.client, TCP, TCP_PORT, &tcp),
    ];
    for (name, (pid, port), proto, remote_port, convs) in cases {
        let (app, sock) = app_socket(&apps, pid, proto, port);
        assert_eq!(app["name"], name, "application of pid {pid}");
        assert_eq!(sock["remote_addr"], m.pair.ns_ip.to_string(), "{sock:#}");
        assert_eq!(sock["remote_port"], remote_port, "{sock:#}");
        assert_eq!(sock["pid"], pid, "{sock:#}");
        let local = m.host(port);
        let remote = m.ns(remote_port);
        let conv = convs
            .iter()
            .find(|c| (c.a, c.b) == (local, remote) || (c.a, c.b) == (remote, local))
            .unwrap_or_else(|| panic!("tshark has no conversation {local:?} <-> {remote:?}"));
        // tshark counts "<-" as frames to A, "->" as frames from A.
        let (pin, bin, pout, bout) = if conv.a == local {
            (
                conv.frames_to_a,
                conv.bytes_to_a,
                conv.frames_from_a,
                conv.bytes_from_a,
            )
        } else {
            (
                conv.frames_from_a,
                conv.bytes_from_a,
                conv.frames_to_a,
                conv.bytes_to_a,
            )
        };
        let got = |k: &str| sock[k].as_u64().unwrap_or(u64::MAX);
        assert_eq!(
            (
                got("packets_in"),
                got("bytes_in"),
                got("packets_out"),
                got("bytes_out")
            ),
            (pin, bin, pout, bout),
            "{name} pid {pid} socket {local:?} <-> {remote:?}: (packets_in, bytes_in, \
             packets_out, bytes_out) vs tshark -z conv,{}",
            if proto == TCP { "tcp" } else { "udp" }
        );
        assert!(
            got("first_ns") <= got("last_ns") && got("first_ns") > 0,
            "{sock:#}"
        );
    }
}

/// tcpdump's one-line-per-packet print of a file, the common ground of both captures
/// (without timestamps: see `same_times`).
fn tcpdump_print(path: &Path) -> Vec<String> {
    let out = tool("tcpdump", &["-r", s(path), "-n", "-t", "-e"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn epoch_ns(t: &str) -> i128 {
    let (sec, frac) = t.split_once('.').unwrap_or((t, "0"));
    let frac = format!("{frac:0<9}");
    sec.parse::<i128>().unwrap_or(0) * 1_000_000_000
        + frac.get(..9).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Two captures of the same packets agree on their times. A frame leaving the host is
/// stamped once for every packet socket; one arriving over a veth has its stamp cleared
/// when it crosses into this namespace, so each socket stamps it as it gets it, in the
/// same softirq, microseconds apart. 10 ms tells the two apart from any other packet.
fn same_times(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (epoch_ns(x) - epoch_ns(y)).abs() <= 10_000_000)
}

/// `tcpdump -w` on the same interface at the same time, with an optional filter.
fn start_tcpdump(iface: &str, out: &Path, filter: &[&str]) -> ChildGuard {
    start_tcpdump_with(Command::new("tcpdump"), iface, out, filter)
}

/// As `start_tcpdump`, with `cmd` running tcpdump (inside a namespace, say).
fn start_tcpdump_with(mut cmd: Command, iface: &str, out: &Path, filter: &[&str]) -> ChildGuard {
    // Immediate mode: otherwise packets wait in a ring block that tcpdump never reads if
    // it is stopped within its 1 s block timeout.
    cmd.args([
        "-i",
        iface,
        "-n",
        "-U",
        "--immediate-mode",
        "--time-stamp-precision=nano",
        "-w",
    ])
    .arg(out)
    .args(filter);
    let mut t = ChildGuard::spawn(cmd);
    assert!(
        t.wait_for_line("listening on", Duration::from_secs(30)),
        "tcpdump did not start: {}",
        t.stderr()
    );
    t
}

#[test]
fn filter_keeps_exactly_what_tcpdump_keeps() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(4);
    let dir = TempDir::new("filter");
    let ours_path = dir.file("apptag.pcapng");
    let theirs_path = dir.file("tcpdump.pcap");
    let other_udp = UDP_PORT + 1;
    let mut rx = in_ns(&pair, "udp-recv", &format!("{}:{UDP_PORT}", pair.ns_ip));
    rx.get("listen");
    let mut rx2 = in_ns(&pair, "udp-recv", &format!("{}:{other_udp}", pair.ns_ip));
    rx2.get("listen");
    let mut srv = in_ns(&pair, "tcp-server", &format!("{}:{TCP_PORT}", pair.ns_ip));
    srv.get("listen");
    let port = UDP_PORT.to_string();
    let filter = ["udp", "and", "port", port.as_str()];
    let mut args = vec!["-i", pair.host_if.as_str()];
    args.extend(filter);
    let sensor = Sensor::start(None, &ours_path, &args);
    let mut tcpdump = start_tcpdump(&pair.host_if, &theirs_path, &filter);
    // Kept: the datagrams to the port and the answer. Not kept: another UDP port, TCP.
    udp_ping(SocketAddr::new(IpAddr::V4(pair.ns_ip), UDP_PORT));
    udp_ping(SocketAddr::new(IpAddr::V4(pair.ns_ip), other_udp));
    tcp_client(SocketAddr::new(IpAddr::V4(pair.ns_ip), TCP_PORT));
    rx.wait_ok();
    rx2.wait_ok();
    srv.wait_ok();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    let tst = tcpdump.stop_with(libc::SIGINT, Duration::from_secs(30));
    assert!(tst.success(), "tcpdump: {}", tcpdump.stderr());

    assert_valid(&ours_path);
    let ours = tcpdump_print(&ours_path);
    let theirs = tcpdump_print(&theirs_path);
    assert_eq!(
        ours.len(),
        UDP_COUNT + 1,
        "apptag kept {} packets:\n{}",
        ours.len(),
        ours.join("\n")
    );
    assert_eq!(
        ours, theirs,
        "apptag's file and tcpdump's differ (as tcpdump -r prints them)"
    );
    // And tshark, reading both, agrees on lengths and times.
    let a = tshark_packets(&ours_path, None);
    let b = tshark_packets(&theirs_path, None);
    let lens = |v: &[oracle::TsharkPacket]| v.iter().map(|p| p.len).collect::<Vec<_>>();
    assert_eq!(lens(&a), lens(&b), "tshark: lengths");
    let times = |v: &[oracle::TsharkPacket]| v.iter().map(|p| p.time.clone()).collect::<Vec<_>>();
    assert!(
        same_times(&times(&a), &times(&b)),
        "tshark: times differ:\n{a:#?}\n{b:#?}"
    );
}

/// Counts the packets between two endpoints in a file, as tshark dissects it.
fn tshark_count(path: &Path, proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> usize {
    tshark_packets(path, None)
        .iter()
        .filter(|p| p.tuple.is_some_and(|t| t.between(proto, a, b)))
        .count()
}

#[test]
fn pid_filter_keeps_only_that_process() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(5);
    let dir = TempDir::new("pid");
    let ours_path = dir.file("apptag.pcapng");
    let all_path = dir.file("all.pcap");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let mut rx = in_ns(&pair, "udp-recv", &format!("{}:{UDP_PORT}", pair.ns_ip));
    rx.get("listen");
    let mut srv = in_ns(&pair, "tcp-server", &format!("{}:{TCP_PORT}", pair.ns_ip));
    let listen = srv.get("listen");
    // The process exists before apptag starts, so its pid is known for --pid; its
    // connection starts after, so only the probes can attribute it.
    let mut late = Traffic::start("tcp-client", &listen, "wait");
    let pid = late.pid().to_string();
    let all_ours = dir.file("unfiltered.pcapng");
    let sensor = Sensor::start(None, &ours_path, &["-i", &pair.host_if, "--pid", &pid]);
    // The same traffic without --pid, at the same time: what the filter had to drop.
    let unfiltered = Sensor::start(None, &all_ours, &["-i", &pair.host_if]);
    let mut tcpdump = start_tcpdump(&pair.host_if, &all_path, &[]);
    let (curl_pid, _) = curl(&pair);
    udp_ping(SocketAddr::new(IpAddr::V4(pair.ns_ip), UDP_PORT));
    late.release();
    let local = port_of(&late.get("local"));
    late.wait_ok();
    srv.wait_ok();
    rx.wait_ok();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    let (st, err) = unfiltered.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    tcpdump.stop_with(libc::SIGINT, Duration::from_secs(30));

    assert_valid(&ours_path);
    let ours = read_ours(&ours_path);
    let others: Vec<_> = ours
        .packets
        .iter()
        .filter(|p| p.pid != late.pid())
        .collect();
    assert!(
        others.is_empty(),
        "--pid {pid} kept packets of others: {others:#?}"
    );
    // Others were there and attributed (to curl among them), and the filter dropped them.
    let all = read_ours(&all_ours);
    let curl_packets = all.packets.iter().filter(|p| p.pid == curl_pid).count();
    assert!(
        curl_packets > 0,
        "the unfiltered capture attributed no packet to curl (pid {curl_pid})"
    );
    let expected = tshark_count(
        &all_path,
        TCP,
        v4(pair.host_ip, local),
        v4(pair.ns_ip, TCP_PORT),
    );
    assert!(
        expected >= 4,
        "tcpdump saw only {expected} packets of pid {pid}"
    );
    assert_eq!(
        ours.packets.len(),
        expected,
        "--pid {pid}: packets kept vs tcpdump's packets of its connection"
    );
    assert_eq!(
        all.packets.iter().filter(|p| p.pid == late.pid()).count(),
        expected,
        "the unfiltered capture gives pid {pid} the same packets"
    );
}

#[test]
fn comm_filter_keeps_only_that_application() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(6);
    let dir = TempDir::new("comm");
    let ours_path = dir.file("apptag.pcapng");
    let all_path = dir.file("all.pcap");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let mut srv = in_ns(&pair, "tcp-server", &format!("{}:{TCP_PORT}", pair.ns_ip));
    srv.get("listen");
    let sensor = Sensor::start(None, &ours_path, &["-i", &pair.host_if, "--comm", "curl"]);
    let mut tcpdump = start_tcpdump(&pair.host_if, &all_path, &[]);
    let curls = [curl(&pair), curl(&pair)];
    tcp_client(SocketAddr::new(IpAddr::V4(pair.ns_ip), TCP_PORT));
    srv.wait_ok();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    tcpdump.stop_with(libc::SIGINT, Duration::from_secs(30));

    assert_valid(&ours_path);
    let ours = read_ours(&ours_path);
    let mut expected = 0;
    for (pid, port) in curls {
        let conv =
            |t: &FiveTuple| t.between(TCP, v4(pair.host_ip, port), v4(pair.ns_ip, HTTP_PORT));
        let n = tshark_count(
            &all_path,
            TCP,
            v4(pair.host_ip, port),
            v4(pair.ns_ip, HTTP_PORT),
        );
        assert!(n >= 7, "tcpdump saw only {n} packets of curl pid {pid}");
        let mine: Vec<_> = ours
            .packets
            .iter()
            .filter(|p| p.tuple.as_ref().is_some_and(conv))
            .collect();
        assert_eq!(mine.len(), n, "curl pid {pid}: kept vs tcpdump");
        assert!(
            mine.iter().all(|p| p.pid == pid),
            "curl pid {pid}: packets with other pids: {mine:#?}"
        );
        expected += n;
    }
    assert_eq!(
        ours.packets.len(),
        expected,
        "--comm curl kept packets that are not curl's: {:#?}",
        ours.packets
    );
}

#[test]
fn loopback_packets_are_attributed_to_their_sender() {
    require_root();
    let _g = serial();
    // The namespace's own loopback: only this test's traffic is on it.
    let pair = NetnsPair::new(7);
    let dir = TempDir::new("lo");
    let file = dir.file("lo.pcapng");
    let sensor = Sensor::start(Some(&pair), &file, &["-i", "lo"]);
    let dump_path = dir.file("tcpdump.pcap");
    let mut dump = start_tcpdump_with(pair.command("tcpdump"), "lo", &dump_path, &[]);
    let mut srv = in_ns(&pair, "tcp-server", "127.0.0.1:0");
    let listen = srv.get("listen");
    let mut client = Traffic::start_with(pair.command(traffic_bin()), "tcp-client", &listen, "");
    let local = port_of(&client.get("local"));
    client.wait_ok();
    srv.wait_ok();
    settle();
    dump.stop_with(libc::SIGINT, Duration::from_secs(30));
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");

    let counted = assert_valid(&file);
    let ours = read_ours(&file);
    assert!(ours.errors.is_empty(), "our reader: {:?}", ours.errors);
    assert_eq!(ours.packets.len(), counted, "our reader vs capinfos");
    let theirs = tshark_packets(&file, None);
    let tuples: Vec<_> = ours.packets.iter().map(|p| p.tuple).collect();
    let ttuples: Vec<_> = theirs.iter().map(|p| p.tuple).collect();
    assert_eq!(tuples, ttuples, "5-tuples: our reader vs tshark");
    let lo = v4(std::net::Ipv4Addr::LOCALHOST, 0).0;
    assert_eq!(
        ours.packets.len(),
        tshark_count(&dump_path, TCP, (lo, local), (lo, port_of(&listen))),
        "packets on lo: apptag vs a tcpdump at the same time"
    );
    let (cpid, spid, sport) = (client.pid(), srv.pid(), port_of(&listen));
    let mut wrong = Vec::new();
    for (i, p) in ours.packets.iter().enumerate() {
        let sender = match p.tuple {
            Some(t) if t.sport == local && t.dport == sport => cpid,
            Some(t) if t.sport == sport && t.dport == local => spid,
            _ => 0,
        };
        if sender == 0 || p.pid != sender {
            wrong.push(format!(
                "packet {} {:?}: pid {}, expected the sender {sender} (client {cpid}, server {spid})",
                i + 1,
                p.tuple,
                p.pid
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// libpcap's own complaint about a filter, as tcpdump prints it.
fn libpcap_complaint(filter: &[&str]) -> String {
    let out = Command::new("tcpdump")
        .args(["-d", "-y", "EN10MB"])
        .args(filter)
        .output()
        .expect("run tcpdump -d");
    assert!(!out.status.success(), "tcpdump accepts {filter:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    last.strip_prefix("tcpdump: ")
        .unwrap_or(last)
        .trim_start_matches("can't parse filter expression: ")
        .to_string()
}

#[test]
fn errors_name_what_is_wrong_and_leave_no_file() {
    require_root();
    let _g = serial();
    let dir = TempDir::new("errors");
    let out = dir.file("out.pcapng");
    let run = |args: &[&str]| {
        let mut v: Vec<&std::ffi::OsStr> = vec!["-w".as_ref(), out.as_os_str()];
        v.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        let o = run_apptag(&v);
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    };

    let iface = format!("nosuch{}", std::process::id());
    let (st, err) = run(&["-i", &iface, "--duration", "1"]);
    assert!(!st.success(), "unknown interface accepted; stderr:\n{err}");
    assert!(
        err.contains(&iface),
        "message does not name {iface}:\n{err}"
    );
    assert_eq!(dir.list(), Vec::<String>::new(), "file left behind");

    for filter in [&["tcp", "port", "70000"][..], &["udp", "and", "and"][..]] {
        let complaint = libpcap_complaint(filter);
        let mut args = vec!["-i", "lo", "--duration", "1"];
        args.extend(filter);
        let (st, err) = run(&args);
        assert!(
            !st.success(),
            "bad filter {filter:?} accepted; stderr:\n{err}"
        );
        assert!(
            err.contains(&complaint),
            "message for {filter:?} lacks libpcap's complaint {complaint:?}:\n{err}"
        );
        assert_eq!(dir.list(), Vec::<String>::new(), "file left behind");
    }

    for path in [
        "/proc/nonexistent/x.pcapng".to_string(),
        format!("{}/missing-dir/x.pcapng", dir.path.display()),
    ] {
        let o = run_apptag(&[
            "-i".as_ref(),
            "lo".as_ref(),
            "--duration".as_ref(),
            "1".as_ref(),
            "-w".as_ref(),
            path.as_ref(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "unwritable {path} accepted:\n{err}");
        assert!(err.contains(&path), "message does not name {path}:\n{err}");
        assert!(!Path::new(&path).exists());
        assert_eq!(dir.list(), Vec::<String>::new(), "file left behind");
    }
}

#[test]
fn file_survives_sigkill() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(8);
    let dir = TempDir::new("kill");
    let file = dir.file("killed.pcapng");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let sensor = Sensor::start(None, &file, &["-i", &pair.host_if, "--app-interval", "0.5"]);
    let start = Instant::now();
    let mut curls = 0;
    while start.elapsed() < Duration::from_secs(2) {
        curl(&pair);
        curls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past at least one application-record interval after the last curl.
    std::thread::sleep(Duration::from_millis(1200));
    let err = sensor.kill();
    assert!(curls > 0);

    let counted = assert_valid(&file);
    let ours = read_ours(&file);
    assert!(
        ours.errors.is_empty(),
        "our reader: {:?}\napptag stderr:\n{err}",
        ours.errors
    );
    assert!(counted > 0, "no packets survived the kill");
    assert!(
        ours.app_blocks >= 1,
        "no application-record block after {:?} with --app-interval 0.5",
        start.elapsed()
    );
    let out = run_apptag(&["apps".as_ref(), file.as_os_str(), "--json".as_ref()]);
    assert!(
        out.status.success(),
        "apptag apps on the killed file failed"
    );
    let apps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        apps["final_table"], false,
        "a killed capture has no final table"
    );
    assert!(
        apps["apps"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "curl")),
        "curl missing from the periodic records: {apps:#}"
    );
}

/// A tmpfs of `size` mounted for one test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let o = tool(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(dir),
            ],
        );
        assert!(o.status.success(), "mount tmpfs at {dir:?}");
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// pids of the applications `apptag apps --json` finds in `path`, and whether its final
/// table is complete.
fn app_pids(path: &Path) -> (std::collections::BTreeSet<u32>, serde_json::Value) {
    let out = run_apptag(&["apps".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(out.status.success(), "apptag apps {path:?} failed");
    let apps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pids = apps["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["pids"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_u64().map(|p| p as u32))
        .collect();
    (pids, apps)
}

#[test]
fn a_full_disk_keeps_the_final_table_and_the_interface_statistics() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(41);
    let dir = TempDir::new("fulldisk");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let _mnt = Tmpfs::mount(&dir.file("mnt"), "3m");
    let file = dir.file("mnt").join("full.pcapng");
    let port = 19400;
    let _sink = ChildGuard::spawn({
        let mut c = pair.command("socat");
        c.args([
            "-u",
            &format!("TCP-LISTEN:{port},reuseaddr"),
            "OPEN:/dev/null",
        ]);
        c
    });
    let mut udp_rx = in_ns(&pair, "udp-recv", &format!("{}:{UDP_PORT}", pair.ns_ip));
    udp_rx.get("listen");
    std::thread::sleep(Duration::from_millis(300));
    let sensor = Sensor::start(None, &file, &["-i", &pair.host_if, "--app-interval", "0.5"]);
    // Small conversations first, then a bulk transfer that fills the 3 MB within a second.
    let (curl_pid, _) = curl(&pair);
    let (udp_pid, _) = udp_ping(SocketAddr::new(IpAddr::V4(pair.ns_ip), UDP_PORT));
    std::thread::sleep(Duration::from_millis(1000));
    let bulk = ChildGuard::spawn({
        let mut c = Command::new("socat");
        c.args(["-u", "/dev/zero", &format!("TCP:{}:{port}", pair.ns_ip)]);
        c
    });
    let (st, err) = sensor.wait(Duration::from_secs(60));
    drop(bulk);
    assert!(
        !st.success(),
        "apptag went on with a full disk; stderr:\n{err}"
    );
    assert!(
        std::fs::metadata(&file).expect("stat").len() > 1_000_000,
        "the disk filled before the capture did"
    );

    let counted = assert_valid(&file);
    let ours = read_ours(&file);
    assert!(ours.errors.is_empty(), "our reader: {:?}", ours.errors);
    assert_eq!(ours.packets.len(), counted, "our reader vs capinfos");
    assert_eq!(
        tshark_packets(&file, None).len(),
        counted,
        "tshark reads every packet capinfos counts"
    );
    let info = String::from_utf8_lossy(&tool("capinfos", &[s(&file)]).stdout).into_owned();
    assert!(
        info.contains("Number of stat entries = 1"),
        "no interface statistics block after the disk filled:\n{info}"
    );
    let packet_pids: std::collections::BTreeSet<u32> = ours
        .packets
        .iter()
        .map(|p| p.pid)
        .filter(|&p| p != 0)
        .collect();
    let (pids, apps) = app_pids(&file);
    assert_eq!(apps["final_table"], true, "no final table: {apps:#}");
    assert!(
        packet_pids.is_subset(&pids),
        "packets of {packet_pids:?} in the file, but application records only for {pids:?}"
    );
    for (what, pid) in [("curl", curl_pid), ("udp sender", udp_pid)] {
        assert!(
            packet_pids.contains(&pid),
            "{what} {pid} has no packet in the file"
        );
    }
    assert!(
        ours.packets.iter().any(|p| p
            .tuple
            .as_ref()
            .is_some_and(|t| t.dport == port || t.sport == port)
            && p.pid != 0),
        "the bulk transfer that filled the disk is not in the file"
    );
    assert!(
        err.contains("file system is full")
            && err.contains("final application table")
            && err.contains("interface statistics")
            && !err.contains("did not fit"),
        "the message does not say what the full disk kept:\n{err}"
    );
}

#[test]
fn the_first_application_is_recorded_without_waiting_for_the_interval() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(42);
    let dir = TempDir::new("early");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let file = dir.file("early.pcapng");
    // An interval far longer than the test: only the early block can hold curl.
    let sensor = Sensor::start(None, &file, &["-i", &pair.host_if, "--app-interval", "600"]);
    let (pid, _) = curl(&pair);
    // The merge delay (0.1 s) and a loaded machine; well under the 600 s interval.
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_ours(&file).app_blocks == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = sensor.kill();
    let (pids, apps) = app_pids(&file);
    assert_eq!(apps["final_table"], false, "killed: no final table");
    assert!(
        pids.contains(&pid),
        "curl {pid} is not in the periodic records of a capture killed after it: {apps:#}\n{err}"
    );
}

const NOBODY: u32 = 65534;

/// (Uid, CapEff) of every thread of `pid`, from /proc/PID/task/*/status.
fn thread_creds(pid: u32) -> Vec<(String, u32, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let Ok(st) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let uid = field("Uid:")
            .split_whitespace()
            .nth(1)
            .and_then(|u| u.parse().ok())
            .expect("effective uid");
        let eff = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff");
        v.push((field("Name:"), uid, eff));
    }
    v
}

fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).expect("stat");
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// A command that runs with umask 0, so any mode apptag does not set itself shows.
fn with_umask_0(mut cmd: Command) -> Command {
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    cmd
}

#[test]
fn dropped_to_a_user_it_keeps_only_cap_sys_ptrace_and_still_attributes_and_rotates() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(43);
    let dir = TempDir::new("dropz");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    // Rotated files are created by the user: the directory must be the user's.
    let cap_dir = dir.file("caps");
    std::fs::create_dir_all(&cap_dir).expect("mkdir");
    std::os::unix::fs::chown(&cap_dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    let file = cap_dir.join("z.pcapng");
    let first = cap_dir.join("z.0.pcapng");
    let mut sensor = Sensor::start_waiting_for(
        with_umask_0(Command::new(apptag_bin())),
        &file,
        &first,
        &[
            "-i",
            &pair.host_if,
            "-Z",
            "nobody",
            "--group-read",
            "-C",
            "0.01",
            "-W",
            "50",
        ],
    );
    assert!(
        sensor
            .proc
            .wait_for_line("privileges dropped", Duration::from_secs(30)),
        "no privilege drop reported:\n{}",
        sensor.proc.stderr()
    );
    let creds = thread_creds(sensor.proc.pid());
    assert!(
        creds.len() >= 3,
        "main, attribution and capture threads: {creds:?}"
    );
    let ptrace = 1u64 << 19;
    for (name, uid, eff) in &creds {
        assert_eq!(
            *uid, NOBODY,
            "thread {name} still runs as uid {uid}: {creds:?}"
        );
        assert_eq!(
            *eff, ptrace,
            "thread {name} has CapEff {eff:#x}, not CAP_SYS_PTRACE only"
        );
    }
    // After the drop: a server started now (its /proc/PID/exe is root's, readable only
    // with CAP_SYS_PTRACE), short-lived clients, and enough traffic to rotate.
    let mut srv = Traffic::start("tcp-server", &format!("{}:{TCP_PORT}", pair.host_ip), "");
    let listen = srv.get("listen");
    let mut client = Traffic::start_with(pair.command(traffic_bin()), "tcp-client", &listen, "");
    client.wait_ok();
    srv.wait_ok();
    let curls: Vec<u32> = (0..12).map(|_| curl(&pair).0).collect();
    settle();
    let (st, err) = sensor.stop();
    assert!(
        st.success(),
        "apptag -Z nobody exited with {st}; stderr:\n{err}"
    );

    let files: Vec<String> = std::fs::read_dir(&cap_dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.len() >= 3,
        "-C 0.01 rotated too little after the drop: {files:?}"
    );
    let mut pids = std::collections::BTreeSet::new();
    let mut apps = Vec::new();
    for name in &files {
        let path = cap_dir.join(name);
        assert_eq!(
            mode_and_owner(&path),
            (0o640, NOBODY, NOBODY),
            "{name}: mode, owner and group of a file written after -Z nobody --group-read"
        );
        assert_valid(&path);
        let ours = read_ours(&path);
        assert!(ours.errors.is_empty(), "{name}: {:?}", ours.errors);
        pids.extend(ours.packets.iter().map(|p| p.pid));
        let (_, json) = app_pids(&path);
        assert_eq!(json["final_table"], true, "{name}: final table");
        apps.extend(json["apps"].as_array().cloned().unwrap_or_default());
    }
    for pid in curls.iter().chain([&srv.pid()]) {
        assert!(
            pids.contains(pid),
            "pid {pid} lost its packets' attribution after the drop"
        );
    }
    let server = apps
        .iter()
        .find(|a| {
            a["pids"]
                .as_array()
                .is_some_and(|p| p.contains(&srv.pid().into()))
        })
        .unwrap_or_else(|| panic!("the server {} is in no file", srv.pid()));
    assert!(
        server["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("apptag-traffic")),
        "root's /proc/PID/exe unread after the drop (CAP_SYS_PTRACE): {server:#}"
    );
}

#[test]
fn capture_and_extract_files_are_private_whatever_the_umask() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(44);
    let dir = TempDir::new("modes");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let file = dir.file("m.pcapng");
    let sensor = Sensor::start_cmd(
        with_umask_0(Command::new(apptag_bin())),
        &file,
        &["-i", &pair.host_if, "-G", "1", "--duration", "2.5"],
    );
    // Rotation happens on a packet: traffic all along.
    let started = Instant::now();
    let mut pid = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        pid = curl(&pair).0;
        std::thread::sleep(Duration::from_millis(300));
    }
    let (st, err) = sensor.wait(Duration::from_secs(60));
    assert!(st.success(), "{err}");
    let files: Vec<String> = dir
        .list()
        .into_iter()
        .filter(|n| n.starts_with("m."))
        .collect();
    assert!(files.len() >= 2, "-G 1 over 2.5 s: {files:?}");
    for name in &files {
        assert_eq!(
            mode_and_owner(&dir.file(name)).0,
            0o600,
            "{name} under umask 0"
        );
    }
    // An export over an existing world-readable file ends up private too.
    let out = dir.file("curl.pcapng");
    std::fs::write(&out, b"old").expect("old file");
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let o = with_umask_0(Command::new(apptag_bin()))
        .arg("extract")
        .arg(&file)
        .arg("-o")
        .arg(&out)
        .args(["--pid", &pid.to_string()])
        .output()
        .expect("run extract");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode_and_owner(&out).0, 0o600, "extract output");
}

/// `Key=value` lines of a unit's [Service] section (repeated keys joined by spaces).
fn unit_service(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::<String, String>::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            let e = m.entry(k.to_string()).or_default();
            if !e.is_empty() {
                e.push(' ');
            }
            e.push_str(v);
        }
    }
    m
}

#[test]
fn systemd_unit_verifies_and_its_exec_start_runs_as_the_unit_says() {
    require_root();
    let _g = serial();
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/apptag.service");
    let text = std::fs::read_to_string(&unit_path).expect("contrib/systemd/apptag.service");
    let svc = unit_service(&text);
    let get = |k: &str| {
        svc.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("unit has no {k}="))
    };
    // What apptag needs to start, and nothing more (see the privileges module and the
    // capability check, which names the same set).
    let needed: std::collections::BTreeSet<String> = [
        "CAP_NET_RAW",
        "CAP_NET_ADMIN",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_PTRACE",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let caps: std::collections::BTreeSet<String> =
            get(key).split_whitespace().map(str::to_string).collect();
        assert_eq!(caps, needed, "{key}");
    }
    assert_eq!(get("ProtectSystem"), "strict");
    assert_eq!(get("NoNewPrivileges"), "yes");
    let state = get("ReadWritePaths");
    let exec = get("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    let arg_after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("ExecStart has no {flag}: {exec}"))
    };
    arg_after("-C");
    arg_after("-W");
    assert!(
        arg_after("-w").starts_with(&format!("{state}/")),
        "the capture goes outside ReadWritePaths={state}: {exec}"
    );

    // systemd's own check, on the unit as installed but for the binary's path.
    let dir = TempDir::new("systemd");
    let bin = apptag_bin();
    let installed = dir.file("apptag.service");
    std::fs::write(&installed, text.replace(args[0], s(&bin))).expect("unit copy");
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&installed)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    let complaints = String::from_utf8_lossy(&v.stderr);
    assert!(
        v.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {}\n{complaints}",
        v.status
    );

    // The ExecStart as systemd runs it: the unit's user (here nobody), its capabilities as
    // ambient, inheritable and bounding sets, no new privileges, its umask; the state
    // directory owned by the user.
    let state_dir = dir.file("state");
    std::fs::create_dir_all(&state_dir).expect("mkdir");
    std::os::unix::fs::chown(&state_dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    let caps: Vec<String> = needed
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = format!("-all,{}", caps.join(","));
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={caps}"),
        "--no-new-privs",
        "--",
    ]);
    cmd.arg(&bin);
    for a in &args[1..] {
        cmd.arg(a.replace(&state, s(&state_dir)));
    }
    let umask = u32::from_str_radix(&get("UMask"), 8).expect("UMask");
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        });
    }
    cmd.env("RUST_LOG", "info");
    let mut sensor = ChildGuard::spawn(cmd);
    assert!(
        sensor.wait_for_line("privileges dropped", Duration::from_secs(60)),
        "the unit's ExecStart did not start capturing:\n{}",
        sensor.stderr()
    );
    for (name, uid, eff) in thread_creds(sensor.pid()) {
        assert_eq!(
            (uid, eff),
            (NOBODY, 1u64 << 19),
            "thread {name} after start"
        );
    }
    let pair = NetnsPair::new(45);
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let (curl_pid, _) = curl(&pair);
    settle();
    let st = sensor.stop_with(libc::SIGTERM, Duration::from_secs(60));
    assert!(
        st.success(),
        "SIGTERM, the unit's KillSignal: {st}\n{}",
        sensor.stderr()
    );
    let first = state_dir.join("apptag.0.pcapng");
    assert_eq!(mode_and_owner(&first), (0o600, NOBODY, NOBODY), "{first:?}");
    assert_valid(&first);
    let ours = read_ours(&first);
    assert!(
        ours.packets.iter().any(|p| p.pid == curl_pid),
        "curl {curl_pid} unattributed in the unit's capture"
    );
    let (_, apps) = app_pids(&first);
    assert_eq!(apps["final_table"], true, "SIGTERM writes the final table");
}

#[test]
fn without_cgroup2_it_falls_back_to_procfs_with_a_warning() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(9);
    // `ip netns exec` remounts /sys for the namespace, which hides the cgroup v2 hierarchy.
    let visible = pair
        .command("grep")
        .args(["-q", "cgroup2", "/proc/self/mounts"])
        .status()
        .expect("run grep");
    assert!(
        !visible.success(),
        "cgroup2 is visible under ip netns exec here; this test needs it hidden"
    );
    let dir = TempDir::new("nocgroup");
    let file = dir.file("procfs.pcapng");
    let sensor = Sensor::start_cmd(pair.command(apptag_bin()), &file, &["-i", "lo"]);
    let mut srv = in_ns(&pair, "tcp-server", "127.0.0.1:0");
    let listen = srv.get("listen");
    // Connected, then alive until the procfs scan that its first packets asked for has
    // found it: /proc names only processes that still hold their sockets.
    let mut client = Traffic::start_with(pair.command(traffic_bin()), "hold", &listen, "");
    let local = port_of(&client.get("local"));
    std::thread::sleep(Duration::from_millis(500));
    client.release();
    client.wait_ok();
    srv.wait_ok();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    assert!(
        err.to_lowercase().contains("procfs"),
        "no warning about the procfs fallback:\n{err}"
    );
    let counted = assert_valid(&file);
    let ours = read_ours(&file);
    assert_eq!(ours.packets.len(), counted, "our reader vs capinfos");
    // Every packet carries its sender's pid, as /proc/net and /proc/PID/fd name it. The
    // last FIN/ACKs after a process closed its socket have no holder left in /proc.
    let (cpid, spid, sport) = (client.pid(), srv.pid(), port_of(&listen));
    let mut wrong = Vec::new();
    let mut tagged = 0;
    for (i, p) in ours.packets.iter().enumerate() {
        let sender = match p.tuple {
            Some(t) if t.sport == local && t.dport == sport => cpid,
            Some(t) if t.sport == sport && t.dport == local => spid,
            _ => 0,
        };
        if p.pid == sender {
            tagged += 1;
        } else if sender == 0 || p.pid != 0 {
            wrong.push(format!(
                "packet {} {:?}: pid {}, expected the sender {sender}",
                i + 1,
                p.tuple,
                p.pid
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        tagged >= 5,
        "only {tagged} of {} packets carry a pid (handshake and data at least)",
        ours.packets.len()
    );
}

#[test]
fn count_and_duration_end_the_capture_by_themselves() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(10);
    let dir = TempDir::new("count");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let file = dir.file("count.pcapng");
    let mut sensor = Sensor::start(None, &file, &["-i", &pair.host_if, "-c", "5"]);
    // One curl makes more than 5 packets; more only if the first went by unseen.
    for _ in 0..20 {
        if sensor.exited() {
            break;
        }
        curl(&pair);
    }
    let (st, err) = sensor.wait(Duration::from_secs(60));
    assert!(st.success(), "apptag -c 5 exited with {st}; stderr:\n{err}");
    assert_eq!(assert_valid(&file), 5, "-c 5: packets in the file");
    assert_eq!(read_ours(&file).packets.len(), 5);

    let file = dir.file("duration.pcapng");
    let sensor = Sensor::start(None, &file, &["-i", &pair.host_if, "--duration", "1"]);
    let (st, err) = sensor.wait(Duration::from_secs(60));
    assert!(
        st.success(),
        "apptag --duration 1 exited with {st}; stderr:\n{err}"
    );
    assert_valid(&file);
    let apps = run_apptag(&["apps".as_ref(), file.as_os_str(), "--json".as_ref()]);
    let apps: serde_json::Value = serde_json::from_slice(&apps.stdout).expect("JSON");
    assert_eq!(apps["final_table"], true, "--duration ends cleanly");
}

#[test]
fn missing_capabilities_are_named() {
    require_root();
    let _g = serial();
    let dir = TempDir::new("caps");
    let out = dir.file("out.pcapng");
    // Root without CAP_NET_RAW: the probes load, the packet socket cannot be opened.
    let o = Command::new("setpriv")
        .arg("--bounding-set=-net_raw")
        .arg(apptag_bin())
        .args(["-i", "lo", "--duration", "1", "-w"])
        .arg(&out)
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "ran without CAP_NET_RAW:\n{err}");
    assert!(err.contains("CAP_NET_RAW"), "CAP_NET_RAW not named:\n{err}");
    assert_eq!(dir.list(), Vec::<String>::new(), "file left behind");
}

#[test]
fn unprivileged_run_names_every_missing_capability() {
    require_root();
    let _g = serial();
    let dir = TempDir::new("nobody");
    // Writable for nobody, so only the missing privileges can stop it.
    std::fs::set_permissions(
        &dir.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(apptag_bin())
        .args(["-i", "lo", "--duration", "1", "-w"])
        .arg(dir.file("out.pcapng"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run setpriv");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "ran as nobody:\n{err}");
    // Everything apptag needs is missing, and a user granting only what the message
    // names must end up with a sensor that runs.
    for cap in [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_PERFMON",
        "CAP_SYS_RESOURCE",
    ] {
        assert!(err.contains(cap), "{cap} not named:\n{err}");
    }
    assert_eq!(dir.list(), Vec::<String>::new(), "file left behind");
}

/// tshark's interface name of every packet, in file order.
fn tshark_interface_names(path: &Path) -> Vec<String> {
    let out = tool(
        "tshark",
        &[
            "-r",
            s(path),
            "-Y",
            "frame.time_epoch",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn two_interfaces_keep_each_packet_on_its_own_interface() {
    require_root();
    let _g = serial();
    let a = NetnsPair::new(11);
    let b = NetnsPair::new(12);
    let dir = TempDir::new("two");
    let file = dir.file("two.pcapng");
    let _ha = http_server(&a, &dir, HTTP_PORT, SMALL_PAGE);
    let _hb = http_server(&b, &dir, HTTP_PORT, SMALL_PAGE);
    let sensor = Sensor::start(None, &file, &["-i", &a.host_if, "-i", &b.host_if]);
    let ca = curl(&a);
    let cb = curl(&b);
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");

    assert_valid(&file);
    let ours = read_ours(&file);
    assert!(ours.errors.is_empty(), "our reader: {:?}", ours.errors);
    let names: Vec<&str> = ours.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [a.host_if.as_str(), b.host_if.as_str()]);
    assert!(
        ours.packets.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "packets of the two interfaces are not merged in time order"
    );
    let theirs = tshark_interface_names(&file);
    let mine: Vec<String> = ours
        .packets
        .iter()
        .map(|p| names.get(p.interface as usize).unwrap_or(&"?").to_string())
        .collect();
    assert_eq!(
        mine, theirs,
        "interface of each packet: our reader vs tshark"
    );
    for (i, (pair, (pid, port))) in [(&a, ca), (&b, cb)].into_iter().enumerate() {
        let conv: Vec<_> = ours
            .packets
            .iter()
            .filter(|p| {
                p.tuple.is_some_and(|t| {
                    t.between(TCP, v4(pair.host_ip, port), v4(pair.ns_ip, HTTP_PORT))
                })
            })
            .collect();
        assert!(conv.len() >= 7, "only {} packets of curl {pid}", conv.len());
        for p in conv {
            assert_eq!(
                p.interface, i as u32,
                "curl {pid} packet on the wrong interface"
            );
            assert_eq!(p.pid, pid, "curl {pid} packet {p:?}");
        }
    }
}

#[test]
fn any_interface_packets_are_attributed() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(13);
    let dir = TempDir::new("any");
    let file = dir.file("any.pcapng");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let mut rx = in_ns(&pair, "udp-recv", &format!("{}:{UDP_PORT}", pair.ns_ip));
    rx.get("listen");
    // `any` sees the whole host: the filter keeps this test's traffic only.
    let ns_ip = pair.ns_ip.to_string();
    let sensor = Sensor::start(None, &file, &["-i", "any", "host", &ns_ip]);
    let dump_path = dir.file("tcpdump.pcap");
    let mut dump = start_tcpdump("any", &dump_path, &["host", &ns_ip]);
    let (cpid, cport) = curl(&pair);
    let (upid, uport) = udp_ping(SocketAddr::new(IpAddr::V4(pair.ns_ip), UDP_PORT));
    rx.wait_ok();
    settle();
    dump.stop_with(libc::SIGINT, Duration::from_secs(30));
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");

    let counted = assert_valid(&file);
    let ours = read_ours(&file);
    assert!(ours.errors.is_empty(), "our reader: {:?}", ours.errors);
    assert_eq!(ours.packets.len(), counted);
    let theirs = tshark_packets(&file, None);
    let a: Vec<_> = ours.packets.iter().map(|p| p.tuple).collect();
    let b: Vec<_> = theirs.iter().map(|p| p.tuple).collect();
    assert_eq!(a, b, "5-tuples: our reader vs tshark");
    let (mut c, mut u) = (0, 0);
    for p in &ours.packets {
        let Some(t) = p.tuple else { continue };
        if t.between(TCP, v4(pair.host_ip, cport), v4(pair.ns_ip, HTTP_PORT)) {
            c += 1;
            assert_eq!(p.pid, cpid, "curl packet {p:?}");
        } else if t.between(UDP, v4(pair.host_ip, uport), v4(pair.ns_ip, UDP_PORT)) {
            u += 1;
            assert_eq!(p.pid, upid, "udp sender packet {p:?}");
        }
    }
    assert_eq!(
        c,
        tshark_count(
            &dump_path,
            TCP,
            v4(pair.host_ip, cport),
            v4(pair.ns_ip, HTTP_PORT)
        ),
        "curl packets on any: apptag vs tcpdump -i any at the same time"
    );
    assert_eq!(u, UDP_COUNT + 1, "udp sender packets on any");
}

#[test]
fn inbound_traffic_carries_the_local_server_pid() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(14);
    let dir = TempDir::new("inbound");
    let file = dir.file("inbound.pcapng");
    let sensor = Sensor::start(None, &file, &["-i", &pair.host_if]);
    let dump_path = dir.file("tcpdump.pcap");
    let mut dump = start_tcpdump(&pair.host_if, &dump_path, &[]);
    // Servers on the host, clients in the namespace: the host's sockets are the
    // listener, the accepted connection and a UDP receiver.
    let mut srv = Traffic::start("tcp-server", &format!("{}:{TCP_PORT}", pair.host_ip), "");
    let listen = srv.get("listen");
    let mut rx = Traffic::start("udp-recv", &format!("{}:{UDP_PORT}", pair.host_ip), "");
    let rx_listen = rx.get("listen");
    let mut client = in_ns(&pair, "tcp-client", &listen);
    let cport = port_of(&client.get("local"));
    client.wait_ok();
    // One datagram: the receiver answers it and exits, so no datagram can arrive at a
    // socket that is already gone.
    let mut ping = Traffic::start_with(pair.command(traffic_bin()), "udp-ping", &rx_listen, "1");
    let uport = port_of(&ping.get("local"));
    ping.get("reply");
    ping.wait_ok();
    srv.wait_ok();
    rx.wait_ok();
    settle();
    dump.stop_with(libc::SIGINT, Duration::from_secs(30));
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");

    assert_valid(&file);
    let ours = read_ours(&file);
    let (mut t, mut u) = (0, 0);
    let mut wrong = Vec::new();
    for (i, p) in ours.packets.iter().enumerate() {
        let Some(tu) = p.tuple else { continue };
        let expected = if tu.between(TCP, v4(pair.host_ip, TCP_PORT), v4(pair.ns_ip, cport)) {
            t += 1;
            srv.pid()
        } else if tu.between(UDP, v4(pair.host_ip, UDP_PORT), v4(pair.ns_ip, uport)) {
            u += 1;
            rx.pid()
        } else {
            continue;
        };
        if p.pid != expected {
            wrong.push(format!(
                "packet {} {tu:?}: pid {}, expected {expected}",
                i + 1,
                p.pid
            ));
        }
    }
    assert_eq!(
        t,
        tshark_count(
            &dump_path,
            TCP,
            v4(pair.host_ip, TCP_PORT),
            v4(pair.ns_ip, cport)
        ),
        "packets of the inbound TCP connection: apptag vs tcpdump at the same time"
    );
    assert_eq!(u, 2, "the inbound datagram and its answer");
    assert!(
        wrong.is_empty(),
        "inbound packets with the wrong pid (tcp server {}, udp receiver {}):\n{}",
        srv.pid(),
        rx.pid(),
        wrong.join("\n")
    );
}

/// (time, length on the wire, captured length) of every packet, as tshark reads them.
fn tshark_lengths(path: &Path) -> Vec<(String, u32, u32)> {
    let out = tool(
        "tshark",
        &[
            "-r",
            s(path),
            "-Y",
            "frame.time_epoch",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let n = |i: usize| c.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            (c.first().copied().unwrap_or("").to_string(), n(1), n(2))
        })
        .collect()
}

#[test]
fn snap_length_cuts_packets_like_tcpdump() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(15);
    let dir = TempDir::new("snaplen");
    let ours_path = dir.file("apptag.pcapng");
    let theirs_path = dir.file("tcpdump.pcap");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let port = HTTP_PORT.to_string();
    let filter = ["tcp", "port", port.as_str()];
    let mut args = vec!["-i", pair.host_if.as_str(), "-s", "96"];
    args.extend(filter);
    let sensor = Sensor::start(None, &ours_path, &args);
    let mut snap_filter = vec!["-s", "96"];
    snap_filter.extend(filter);
    let mut tcpdump = start_tcpdump(&pair.host_if, &theirs_path, &snap_filter);
    curl(&pair);
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    tcpdump.stop_with(libc::SIGINT, Duration::from_secs(30));

    assert_valid(&ours_path);
    let ours = tshark_lengths(&ours_path);
    let theirs = tshark_lengths(&theirs_path);
    assert!(ours.len() >= 7, "only {} packets", ours.len());
    assert!(
        ours.iter().any(|p| p.1 > 96) && ours.iter().all(|p| p.2 == p.1.min(96)),
        "captured lengths are not the wire lengths cut at 96: {ours:?}"
    );
    let lens = |v: &[(String, u32, u32)]| v.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>();
    let times = |v: &[(String, u32, u32)]| v.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        lens(&ours),
        lens(&theirs),
        "(len, cap_len): apptag -s 96 vs tcpdump -s 96"
    );
    assert!(
        same_times(&times(&ours), &times(&theirs)),
        "times: apptag {ours:?} vs tcpdump {theirs:?}"
    );
}

#[test]
fn sigterm_stops_cleanly_with_a_summary_that_matches_the_file() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(16);
    let dir = TempDir::new("sigterm");
    let file = dir.file("term.pcapng");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let mut sensor = Sensor::start(None, &file, &["-i", &pair.host_if]);
    curl(&pair);
    settle();
    let st = sensor
        .proc
        .stop_with(libc::SIGTERM, Duration::from_secs(60));
    let err = sensor.proc.stderr();
    assert!(
        st.success(),
        "apptag exited with {st} on SIGTERM; stderr:\n{err}"
    );

    let counted = assert_valid(&file);
    let apps = run_apptag(&["apps".as_ref(), file.as_os_str(), "--json".as_ref()]);
    let apps: serde_json::Value = serde_json::from_slice(&apps.stdout).expect("JSON");
    assert_eq!(apps["final_table"], true, "SIGTERM writes the final table");
    // tcpdump's wording: "N packets captured" counts the packets written to the file.
    let summary = err
        .lines()
        .find(|l| l.ends_with("packets captured"))
        .unwrap_or_else(|| panic!("no summary on stderr:\n{err}"));
    let written: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the written count in {summary:?}"));
    assert_eq!(written, counted, "summary {summary:?} vs capinfos");
}

#[test]
fn many_parallel_short_connections_each_carry_their_pid() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(17);
    let dir = TempDir::new("many");
    let file = dir.file("many.pcapng");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let sensor = Sensor::start(None, &file, &["-i", &pair.host_if]);
    // All at once: new processes, new sockets and their first packets in a burst.
    let children: Vec<_> = (0..20).map(|_| spawn_curl(&pair)).collect();
    let curls: Vec<(u32, u16)> = children.into_iter().map(curl_done).collect();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");

    assert_valid(&file);
    let ours = read_ours(&file);
    let mut wrong = Vec::new();
    for &(pid, port) in &curls {
        let conv: Vec<_> = ours
            .packets
            .iter()
            .filter(|p| {
                p.tuple.is_some_and(|t| {
                    t.between(TCP, v4(pair.host_ip, port), v4(pair.ns_ip, HTTP_PORT))
                })
            })
            .collect();
        assert!(conv.len() >= 7, "only {} packets of curl {pid}", conv.len());
        wrong.extend(
            conv.iter()
                .filter(|p| p.pid != pid)
                .map(|p| format!("curl {pid} port {port}: packet with pid {}: {p:?}", p.pid)),
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn cgroup_filter_keeps_only_that_cgroup() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(18);
    let dir = TempDir::new("cgroup");
    let ours_path = dir.file("apptag.pcapng");
    let all_path = dir.file("all.pcap");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let cg = TestCgroup::new("sensor");
    // The path as apptag shows it (apps JSON "cgroup"): relative to the cgroup v2 root.
    let root = apptag::sys::cgroup2_mount().expect("cgroup2 mounted");
    let rel = format!(
        "/{}",
        cg.path
            .strip_prefix(&root)
            .expect("test cgroup under the root")
            .display()
    );
    let mut srv = in_ns(&pair, "tcp-server", &format!("{}:{TCP_PORT}", pair.ns_ip));
    let listen = srv.get("listen");
    let sensor = Sensor::start(None, &ours_path, &["-i", &pair.host_if, "--cgroup", &rel]);
    let mut tcpdump = start_tcpdump(&pair.host_if, &all_path, &[]);
    curl(&pair);
    let procs = cg.path.join("cgroup.procs");
    let mut cmd = Command::new(traffic_bin());
    // SAFETY: only async-signal-safe work between fork and exec: one write to a file.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let mut client = Traffic::start_with(cmd, "tcp-client", &listen, "");
    let local = port_of(&client.get("local"));
    client.wait_ok();
    srv.wait_ok();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    tcpdump.stop_with(libc::SIGINT, Duration::from_secs(30));

    assert_valid(&ours_path);
    let ours = read_ours(&ours_path);
    assert!(
        ours.packets.iter().all(|p| p.pid == client.pid()),
        "--cgroup {rel} kept packets of other processes: {:#?}",
        ours.packets
    );
    let expected = tshark_count(
        &all_path,
        TCP,
        v4(pair.host_ip, local),
        v4(pair.ns_ip, TCP_PORT),
    );
    assert!(
        expected >= 7,
        "tcpdump saw only {expected} packets of the client"
    );
    assert_eq!(
        ours.packets.len(),
        expected,
        "--cgroup {rel}: kept vs tcpdump"
    );
}

/// -G: every rotated file is complete on its own: valid for tshark, its own process entries
/// for every pid its packets carry, and a final application table that names exactly the
/// processes whose packets it holds.
#[test]
fn rotated_files_each_describe_their_own_packets() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(19);
    let dir = TempDir::new("rotate");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let file = dir.file("rot.pcapng");
    let sensor = Sensor::start(
        None,
        &file,
        &["-i", &pair.host_if, "-G", "1", "--duration", "4.5"],
    );
    // A curl every ~0.3 s, so each one-second file gets its own processes.
    let started = std::time::Instant::now();
    let mut curls = Vec::new();
    while started.elapsed() < Duration::from_millis(3500) {
        curls.push(curl(&pair).0);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (st, err) = sensor.wait(Duration::from_secs(60));
    assert!(st.success(), "apptag -G 1 exited with {st}; stderr:\n{err}");
    let mut files: Vec<_> = dir
        .list()
        .into_iter()
        .filter(|n| n.starts_with("rot"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "-G 1 over 4.5 s made only {files:?}");
    let mut seen_pids = std::collections::BTreeSet::new();
    for name in &files {
        let path = dir.file(name);
        let n = assert_valid(&path);
        let ours = read_ours(&path);
        assert_eq!(ours.packets.len(), n, "{name}: our reader vs capinfos");
        assert!(ours.errors.is_empty(), "{name}: {:?}", ours.errors);
        let packet_pids: std::collections::BTreeSet<u32> = ours
            .packets
            .iter()
            .map(|p| p.pid)
            .filter(|&p| p != 0)
            .collect();
        let entry_pids: std::collections::BTreeSet<u32> =
            ours.processes.iter().map(|p| p.pid).collect();
        assert!(
            packet_pids.is_subset(&entry_pids),
            "{name}: packets of {packet_pids:?} but process entries only for {entry_pids:?}"
        );
        let apps = run_apptag(&["apps".as_ref(), path.as_os_str(), "--json".as_ref()]);
        let apps: serde_json::Value = serde_json::from_slice(&apps.stdout).expect("JSON");
        assert_eq!(apps["final_table"], true, "{name}: final table");
        let app_pids: std::collections::BTreeSet<u32> = apps["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["pids"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_u64().map(|p| p as u32))
            .collect();
        assert_eq!(
            app_pids, packet_pids,
            "{name}: the application table must name exactly the processes of its packets"
        );
        seen_pids.extend(packet_pids);
    }
    for pid in curls {
        assert!(seen_pids.contains(&pid), "curl {pid} is in no file");
    }
}

/// -C with -W: a ring of files numbered .0 .. .W-1, each valid.
#[test]
fn size_rotation_with_a_file_count_keeps_a_ring_of_valid_files() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(20);
    let dir = TempDir::new("ring");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let file = dir.file("ring.pcapng");
    // 0.01 MB: a few curls fill a file.
    let sensor = Sensor::start_waiting_for(
        Command::new(apptag_bin()),
        &file,
        &dir.file("ring.0.pcapng"),
        &["-i", &pair.host_if, "-C", "0.01", "-W", "3"],
    );
    for _ in 0..25 {
        curl(&pair);
    }
    settle();
    let (st, err) = sensor.stop();
    assert!(
        st.success(),
        "apptag -C -W exited with {st}; stderr:\n{err}"
    );
    let mut files: Vec<_> = dir
        .list()
        .into_iter()
        .filter(|n| n.starts_with("ring"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["ring.0.pcapng", "ring.1.pcapng", "ring.2.pcapng"],
        "a ring of exactly three files"
    );
    for name in &files {
        assert!(assert_valid(&dir.file(name)) > 0, "{name} holds packets");
    }
}

/// Bounded memory (issue 14): with `--max-sockets 160`, 300 short-lived curl processes one
/// after the other overflow the socket table, which evicts (and counts) the sockets closed
/// longest ago; sockets the table forgot leave the file's ledger once written in a periodic
/// block. `apptag apps` still lists every curl, with the packets of its socket as the file
/// holds them (the tests' own block reader), and the summary reports the evictions.
#[test]
fn small_socket_cap_evicts_but_every_written_client_is_listed() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(21);
    let dir = TempDir::new("evict");
    let file = dir.file("evict.pcapng");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let sensor = Sensor::start(
        None,
        &file,
        &[
            "-i",
            &pair.host_if,
            "--max-sockets",
            "160",
            "--app-interval",
            "0.3",
        ],
    );
    let curls: Vec<(u32, u16)> = (0..300).map(|_| curl(&pair)).collect();
    settle();
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    let evicted: u64 = err
        .lines()
        .find(|l| l.contains("sockets and") && l.contains("evicted"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no eviction count in the summary:\n{err}"));
    assert!(
        evicted > 0,
        "300 clients never overflowed 160 sockets:\n{err}"
    );

    assert_valid(&file);
    let ours = read_ours(&file);
    let apps = run_apptag(&["apps".as_ref(), file.as_os_str(), "--json".as_ref()]);
    assert!(apps.status.success());
    let v: serde_json::Value = serde_json::from_slice(&apps.stdout).expect("apps JSON");
    let mut wrong = Vec::new();
    for &(pid, port) in &curls {
        let in_file = ours
            .packets
            .iter()
            .filter(|p| {
                p.pid == pid
                    && p.tuple.is_some_and(|t| {
                        t.between(TCP, v4(pair.host_ip, port), v4(pair.ns_ip, HTTP_PORT))
                    })
            })
            .count() as u64;
        let listed: Vec<u64> = v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["sockets"].as_array().into_iter().flatten())
            .filter(|s| s["local_port"] == port && s["pid"] == pid)
            .map(|s| s["packets_in"].as_u64().unwrap_or(0) + s["packets_out"].as_u64().unwrap_or(0))
            .collect();
        if in_file == 0 || listed != vec![in_file] {
            wrong.push(format!(
                "curl {pid} port {port}: {in_file} packets in the file, apps lists {listed:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
