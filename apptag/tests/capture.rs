//! Live capture against tcpdump as the oracle: both capture the same traffic at the same
//! time with the same filter, and must keep the same packets, byte for byte. Needs root
//! (AF_PACKET sockets, network namespaces).
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use apptag::{
    model::{Direction, InterfaceInfo, InterfaceStats},
    sensor::capture::{Capture, CaptureConfig, CaptureError, RingConfig, StopHandle, linktype},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the capture tests need root (AF_PACKET sockets and network namespaces)"
    );
}

/// A free UDP/TCP port on loopback (bound, so nothing else takes it while the test runs).
fn udp_sink(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{addr}:0")).expect("bind a UDP sink on loopback");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set timeout");
    s
}

/// tcpdump writing a pcap file, started and stopped around the traffic.
struct Tcpdump {
    child: Child,
    file: PathBuf,
}

impl Tcpdump {
    fn start(iface: &str, filter: &str, extra: &[&str]) -> Tcpdump {
        let file = std::env::temp_dir().join(format!("{}.pcap", unique("apptag-cap-oracle")));
        let mut child = Command::new("tcpdump")
            .args(["-i", iface, "-w"])
            .arg(&file)
            // Immediate mode makes libpcap use TPACKET_V2 with one frame per snap length: a big
            // buffer and a moderate snap length keep the oracle itself from dropping.
            .args(["-n", "-U", "--immediate-mode", "-s", "65535", "-B", "65536"])
            .args(extra)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump is installed (cargo xtask setup)");
        // tcpdump says "listening on ..." once its filter is in place.
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => continue,
                other => panic!("tcpdump did not start: {other:?}"),
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Tcpdump { child, file }
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the link type and frames it wrote.
    fn stop(self) -> (i32, Vec<Vec<u8>>) {
        let (link, frames) = self.stop_with_lengths();
        (link, frames.into_iter().map(|(f, _)| f).collect())
    }

    /// Like `stop`, with each frame's original length on the wire.
    fn stop_with_lengths(mut self) -> (i32, Vec<(Vec<u8>, u32)>) {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signals the child we started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let mut cap = pcap::Capture::from_file(&self.file).expect("tcpdump wrote a pcap file");
        let link = cap.get_datalink().0;
        let mut frames = Vec::new();
        while let Ok(p) = cap.next_packet() {
            frames.push((p.data.to_vec(), p.header.len));
        }
        (link, frames)
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

#[derive(Clone, Debug)]
struct Got {
    data: Vec<u8>,
    orig_len: u32,
    direction: Direction,
    ts_ns: u64,
}

/// apptag's capture running on `workers` threads, collecting copies of what it sees.
struct Live {
    capture: Capture,
    stop: StopHandle,
    threads: Vec<JoinHandle<()>>,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Live {
    fn start(config: &CaptureConfig, workers: usize) -> Result<Live, CaptureError> {
        let mut capture = Capture::open(config, workers)?;
        let stop = capture.stop_handle();
        let got = Arc::new(Mutex::new(Vec::new()));
        let threads = capture
            .take_readers()
            .into_iter()
            .map(|mut r| {
                let got = got.clone();
                std::thread::spawn(move || {
                    let mut keep = |p: &apptag::model::Packet<'_>| {
                        got.lock().expect("lock").push(Got {
                            data: p.data.to_vec(),
                            orig_len: p.orig_len,
                            direction: p.direction,
                            ts_ns: p.ts_ns,
                        })
                    };
                    while !r.is_stopped() {
                        r.poll(Duration::from_millis(50), &mut keep)
                            .expect("poll the ring");
                    }
                    r.flush(&mut keep);
                })
            })
            .collect();
        Ok(Live {
            capture,
            stop,
            threads,
            got,
        })
    }

    fn stop(self) -> (InterfaceInfo, InterfaceStats, Vec<Got>) {
        std::thread::sleep(Duration::from_millis(300));
        self.stop.stop();
        for t in self.threads {
            t.join().expect("capture thread");
        }
        let got = self.got.lock().expect("lock").clone();
        (self.capture.info(), self.capture.stats(), got)
    }
}

fn small_ring() -> RingConfig {
    RingConfig {
        block_size: 1 << 20,
        block_count: 8,
        ..RingConfig::default()
    }
}

fn config(iface: &str, filter: &str) -> CaptureConfig {
    CaptureConfig {
        filter: Some(filter.to_string()),
        ring: small_ring(),
        ..CaptureConfig::new(iface)
    }
}

/// Frames as a multiset, so order across fanout threads does not matter.
fn multiset<'a>(frames: impl IntoIterator<Item = &'a Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for f in frames {
        *m.entry(f.clone()).or_insert(0) += 1;
    }
    m
}

fn assert_same(what: &str, ours: &[Got], oracle: &[Vec<u8>]) {
    assert_eq!(
        ours.len(),
        oracle.len(),
        "{what}: apptag captured {} packets, tcpdump {}",
        ours.len(),
        oracle.len()
    );
    assert!(
        multiset(ours.iter().map(|g| &g.data)) == multiset(oracle),
        "{what}: apptag and tcpdump captured different bytes"
    );
}

fn udp_burst(from: &UdpSocket, to: SocketAddr, n: usize, tag: u8) {
    for i in 0..n {
        let mut payload = vec![tag; 64 + i % 200];
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        from.send_to(&payload, to)
            .expect("send a UDP datagram on loopback");
    }
}

/// A TCP connection on loopback: connect, request, response, close.
fn tcp_exchange(listener: TcpListener) {
    let addr = listener.local_addr().expect("listener address");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read request");
        s.write_all(b"world, from the server")
            .expect("write response");
    });
    let mut c = TcpStream::connect(addr).expect("connect on loopback");
    c.write_all(b"hello").expect("write request");
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).expect("read response");
    server.join().expect("server thread");
    assert_eq!(resp, b"world, from the server");
}

#[test]
fn loopback_capture_matches_tcpdump() {
    require_root();
    let sink = udp_sink("127.0.0.1");
    let udp_to = sink.local_addr().expect("addr");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let tcp_port = listener.local_addr().expect("addr").port();
    let filter = format!("udp port {} or tcp port {tcp_port}", udp_to.port());

    let oracle = Tcpdump::start("lo", &filter, &[]);
    let live = Live::start(&config("lo", &filter), 2).expect("open capture on lo");
    let sender = udp_sink("127.0.0.1");
    udp_burst(&sender, udp_to, 300, b'u');
    tcp_exchange(listener);
    let (info, stats, ours) = live.stop();
    let (link, theirs) = oracle.stop();

    assert_eq!(info.linktype, linktype::ETHERNET);
    assert_eq!(i32::from(info.linktype), link);
    // 300 datagrams + at least SYN, SYN-ACK, ACK, data both ways, FINs.
    assert!(
        ours.len() >= 300 + 8,
        "only {} packets captured",
        ours.len()
    );
    assert_same("lo", &ours, &theirs);
    // The outgoing copy of every loopback packet is dropped, so all are seen inbound once.
    assert!(ours.iter().all(|g| g.direction == Direction::Inbound));
    assert!(ours.iter().all(|g| g.orig_len as usize == g.data.len()));
    assert!(ours.iter().all(|g| g.ts_ns > 1_600_000_000_000_000_000));
    assert_eq!(stats.os_dropped, 0);
    assert_eq!(stats.delivered, ours.len() as u64);
    // The kernel never queues the outgoing copies, fanout group included, so what it
    // counts is exactly what was delivered.
    assert_eq!(stats.received, ours.len() as u64);
}

#[test]
fn filters_keep_what_tcpdump_keeps() {
    require_root();
    let sink_a = udp_sink("127.0.0.1");
    let a = sink_a.local_addr().expect("addr");
    let sink_b = udp_sink("127.0.0.1");
    let b = sink_b.local_addr().expect("addr");
    let sink_c = udp_sink("127.0.0.2");
    let c = sink_c.local_addr().expect("addr");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let y = listener.local_addr().expect("addr").port();
    let expressions = [
        format!("udp port {}", a.port()),
        format!("tcp and dst port {y}"),
        format!(
            "host 127.0.0.2 and (udp port {} or udp port {})",
            a.port(),
            c.port()
        ),
        format!(
            "udp[8:4] = 0x00000007 and (udp port {} or udp port {})",
            a.port(),
            b.port()
        ),
        format!("(tcp[tcpflags] & tcp-syn != 0) and port {y}"),
    ];
    let oracles: Vec<Tcpdump> = expressions
        .iter()
        .map(|e| Tcpdump::start("lo", e, &[]))
        .collect();
    let lives: Vec<Live> = expressions
        .iter()
        .map(|e| Live::start(&config("lo", e), 1).expect("open capture"))
        .collect();
    let sender = udp_sink("127.0.0.1");
    udp_burst(&sender, a, 20, b'a');
    udp_burst(&sender, b, 20, b'b');
    udp_burst(&sender, c, 20, b'c');
    tcp_exchange(listener);
    for ((e, live), oracle) in expressions.iter().zip(lives).zip(oracles) {
        let (_, _, ours) = live.stop();
        let (_, theirs) = oracle.stop();
        assert!(
            !theirs.is_empty(),
            "{e}: tcpdump kept nothing; the test traffic is wrong"
        );
        assert_same(e, &ours, &theirs);
    }
}

#[test]
fn bad_filter_reports_libpcap_message_and_position() {
    let err = Capture::open(&config("lo", "udp port 53 and and tcp"), 1)
        .err()
        .expect("a bad filter must not open");
    match &err {
        CaptureError::Filter {
            message, position, ..
        } => {
            assert!(message.contains("syntax error"), "{message}");
            assert_eq!(*position, Some(16), "points at the second `and`");
        }
        other => panic!("expected a filter error, got {other}"),
    }
    let err = Capture::open(&config("lo", "udp port 99999"), 1)
        .err()
        .expect("a bad port must not open");
    let text = err.to_string();
    assert!(text.contains("99999"), "{text}");
    match err {
        CaptureError::Filter { position, .. } => assert_eq!(position, Some(9)),
        other => panic!("expected a filter error, got {other}"),
    }
}

#[test]
fn any_captures_sll2_like_tcpdump() {
    require_root();
    let sink = udp_sink("127.0.0.1");
    let to = sink.local_addr().expect("addr");
    let filter = format!("udp port {}", to.port());
    let oracle = Tcpdump::start("any", &filter, &["-y", "LINUX_SLL2"]);
    let live = Live::start(&config("any", &filter), 2).expect("open capture on any");
    let sender = udp_sink("127.0.0.1");
    udp_burst(&sender, to, 50, b'y');
    let (info, _, ours) = live.stop();
    let (link, theirs) = oracle.stop();
    assert_eq!(info.linktype, linktype::LINUX_SLL2);
    assert_eq!(link, 276, "tcpdump -y LINUX_SLL2 writes SLL2");
    assert_eq!(ours.len(), 50, "each loopback datagram exactly once");
    assert_same("any", &ours, &theirs);
    for g in &ours {
        assert_eq!(&g.data[0..2], &[0x08, 0x00], "SLL2 protocol is IPv4");
        assert_eq!(g.orig_len as usize, g.data.len());
    }
}

#[test]
fn unknown_interface_is_named() {
    let err = Capture::open(&CaptureConfig::new("nosuch0cap"), 1)
        .err()
        .expect("no such interface");
    let text = err.to_string();
    assert!(text.contains("nosuch0cap"), "{text}");
    assert!(
        text.contains("lo"),
        "lists the interfaces that exist: {text}"
    );
    assert!(matches!(err, CaptureError::UnknownInterface { .. }));
}

#[test]
fn full_ring_counts_drops() {
    require_root();
    let sink = udp_sink("127.0.0.1");
    let to = sink.local_addr().expect("addr");
    let cfg = CaptureConfig {
        filter: Some(format!("udp port {}", to.port())),
        ring: RingConfig {
            block_size: 4096,
            block_count: 2,
            frame_size: 2048,
            block_timeout_ms: 10,
        },
        ..CaptureConfig::new("lo")
    };
    let mut cap = Capture::open(&cfg, 1).expect("open capture");
    let mut reader = cap.take_readers().pop().expect("one reader");
    let sender = udp_sink("127.0.0.1");
    let n = 2000;
    // Nobody polls while the burst arrives: two 4 KiB blocks hold a few dozen packets.
    udp_burst(&sender, to, n, b'd');
    std::thread::sleep(Duration::from_millis(50));
    let delivered = reader.drain(|_| ()) + reader.flush(|_| ());
    let stats = cap.stats();
    assert!(stats.os_dropped > 0, "{stats:?}");
    assert_eq!(stats.received, n as u64, "{stats:?}");
    assert_eq!(stats.delivered, delivered as u64);
    assert_eq!(stats.os_dropped + stats.delivered, n as u64, "{stats:?}");
}

/// A network namespace with a veth pair to the host; both are removed on drop, panics
/// included.
struct Netns {
    ns: String,
    host_if: String,
    host_ip: String,
    peer_if: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl Netns {
    fn new() -> Netns {
        let id = unique("");
        let ns = format!("apptag-cap-{id}");
        let host_if = format!("acH{id}");
        let peer = format!("acN{id}");
        let net = 100 + std::process::id() % 100;
        let sub = SEQ.fetch_add(1, Ordering::Relaxed) % 250;
        let host_ip = format!("10.{net}.{sub}.1");
        let peer_ip = format!("10.{net}.{sub}.2");
        ip(&["netns", "add", &ns]);
        // From here on Drop cleans up, even if a later step fails.
        let guard = Netns {
            ns,
            host_if,
            host_ip,
            peer_if: peer.clone(),
        };
        ip(&[
            "link",
            "add",
            &guard.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &guard.ns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", guard.host_ip),
            "dev",
            &guard.host_if,
        ]);
        ip(&["link", "set", &guard.host_if, "up"]);
        ip(&[
            "-n",
            &guard.ns,
            "addr",
            "add",
            &format!("{peer_ip}/24"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &guard.ns, "link", "set", &peer, "up"]);
        ip(&["-n", &guard.ns, "link", "set", "lo", "up"]);
        guard
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn veth_sees_both_directions() {
    require_root();
    let ns = Netns::new();
    let echo = UdpSocket::bind(format!("{}:0", ns.host_ip)).expect("bind on the host veth");
    let host_octets: Vec<u8> = ns
        .host_ip
        .split('.')
        .filter_map(|o| o.parse().ok())
        .collect();
    echo.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let port = echo.local_addr().expect("addr").port();
    let filter = format!("udp port {port}");
    let oracle = Tcpdump::start(&ns.host_if, &filter, &[]);
    let live = Live::start(&config(&ns.host_if, &filter), 2).expect("open capture on veth");
    // Direction qualifiers compile as tcpdump's do on Linux (a test of the kernel's packet
    // type). tcpdump itself is no oracle here: libpcap 1.10 counts these packets as
    // received by the filter but then drops some or all of them in user space, so the
    // expected set is the inbound part of what tcpdump captured without the qualifier.
    let inbound = format!("inbound and {filter}");
    let live_in = Live::start(&config(&ns.host_if, &inbound), 1).expect("open capture on veth");
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = echo
                .recv_from(&mut buf)
                .expect("datagram from the namespace");
            echo.send_to(&buf[..n], from).expect("echo back");
        }
    });
    for i in 0..3 {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.ns, "socat", "-T", "2", "-"])
            .arg(format!("UDP:{}:{port}", ns.host_ip))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(format!("ping {i}\n").as_bytes())?;
                c.wait_with_output()
            })
            .expect("socat in the namespace");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("ping {i}\n"));
    }
    echo_thread.join().expect("echo thread");
    let (info, _, ours) = live.stop();
    let (_, theirs) = oracle.stop();
    assert_eq!(info.linktype, linktype::ETHERNET);
    assert_same("veth", &ours, &theirs);
    assert_eq!(ours.len(), 6);
    let src = |g: &Got| {
        g.data
            .get(26..30)
            .map(|s| format!("{}.{}.{}.{}", s[0], s[1], s[2], s[3]))
    };
    for g in &ours {
        let expected = if src(g).as_deref() == Some(ns.host_ip.as_str()) {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        assert_eq!(g.direction, expected, "packet from {:?}", src(g));
    }
    assert_eq!(
        ours.iter()
            .filter(|g| g.direction == Direction::Inbound)
            .count(),
        3
    );
    let (_, _, ours_in) = live_in.stop();
    let theirs_in: Vec<Vec<u8>> = theirs
        .iter()
        .filter(|f| f.get(26..30) != Some(&host_octets[..]))
        .cloned()
        .collect();
    assert_same("veth inbound", &ours_in, &theirs_in);
    assert_eq!(ours_in.len(), 3);
    assert!(ours_in.iter().all(|g| g.direction == Direction::Inbound));
}

#[test]
fn vlan_tags_are_put_back_like_tcpdump() {
    require_root();
    let ns = Netns::new();
    // trafgen sends 802.1Q-tagged frames from the namespace end; the receive path moves the
    // tag out of the frame (skb_vlan_untag) before packet sockets see it, as NICs with
    // VLAN offload do, so the capture has to put it back.
    let mac = |inside: bool| {
        let path = format!(
            "/sys/class/net/{}/address",
            if inside { &ns.peer_if } else { &ns.host_if }
        );
        let out = Command::new("ip")
            .args(["netns", "exec", if inside { &ns.ns } else { "" }])
            .arg("cat")
            .arg(&path)
            .output();
        let text = match (inside, out) {
            (true, Ok(o)) => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => std::fs::read_to_string(&path).expect("host veth address"),
        };
        text.trim()
            .split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let frame = format!(
        "{{ {}, {}, c16(0x8100), c16(7), c16(0x0800),\n  0x45, 0, c16(46), c16(0), c16(0), 64, \
         17, csumip(18, 37),\n  10, 77, 77, 2, 10, 77, 77, 1,\n  c16(40000), c16(7777), c16(26), \
         c16(0), fill(0x56, 18) }}\n",
        mac(false),
        mac(true)
    );
    let cfg = std::env::temp_dir().join(format!("{}.cfg", unique("apptag-cap-vlan")));
    std::fs::write(&cfg, frame).expect("write the trafgen config");
    let filter = "vlan 7 and udp port 7777";
    let oracle = Tcpdump::start(&ns.host_if, filter, &[]);
    let live = Live::start(&config(&ns.host_if, filter), 1).expect("open capture on veth");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.ns,
            "trafgen",
            "--no-sock-mem",
            "-Q",
            "-P",
            "1",
            "-n",
            "5",
        ])
        .args(["-o", &ns.peer_if, "-i"])
        .arg(&cfg)
        .output()
        .expect("trafgen is installed (cargo xtask setup)");
    let _ = std::fs::remove_file(&cfg);
    assert!(
        out.status.success(),
        "trafgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, _, ours) = live.stop();
    let (_, theirs) = oracle.stop();
    assert_eq!(theirs.len(), 5, "tcpdump sees the 5 tagged datagrams");
    assert_same("vlan", &ours, &theirs);
    for g in &ours {
        assert_eq!(
            &g.data[12..16],
            &[0x81, 0x00, 0x00, 0x07],
            "802.1Q tag, VLAN 7"
        );
        assert_eq!(g.orig_len as usize, g.data.len());
    }
}

#[test]
fn any_runs_header_field_filters_in_user_space_like_tcpdump() {
    require_root();
    let sink = udp_sink("127.0.0.1");
    let to = sink.local_addr().expect("addr");
    // Bytes 12..14 of the SLL2 header are the link-layer address, which the kernel cannot
    // show a cooked socket's filter: the filter has to run in user space.
    let filter = format!("ether[12:2] = 0 and udp port {}", to.port());
    let oracle = Tcpdump::start("any", &filter, &["-y", "LINUX_SLL2"]);
    let live = Live::start(&config("any", &filter), 1).expect("open capture on any");
    let sender = udp_sink("127.0.0.1");
    udp_burst(&sender, to, 20, b'z');
    let other = udp_sink("127.0.0.1");
    udp_burst(&sender, other.local_addr().expect("addr"), 20, b'n');
    let (_, _, ours) = live.stop();
    let (_, theirs) = oracle.stop();
    assert_eq!(theirs.len(), 20);
    assert_same("any, user-space filter", &ours, &theirs);
}

#[test]
fn interface_down_is_a_clear_error() {
    require_root();
    let ns = Netns::new();
    ip(&["link", "set", &ns.host_if, "down"]);
    let err = Capture::open(&CaptureConfig::new(&ns.host_if), 1)
        .err()
        .expect("a down interface must not open");
    assert!(
        matches!(&err, CaptureError::InterfaceDown { interface } if *interface == ns.host_if),
        "{err}"
    );
    assert!(err.to_string().contains("ip link set"), "{err}");
}

/// Linux capabilities are per thread: this drops CAP_NET_RAW from the effective set of the
/// calling thread only.
fn drop_effective_net_raw() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_RAW: u32 = 13;
    let mut hdr = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: hdr and data have the layout capget/capset expect for version 3.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_NET_RAW);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()), 0);
    }
}

#[test]
fn missing_privilege_names_the_capability() {
    require_root();
    let err = std::thread::spawn(|| {
        drop_effective_net_raw();
        Capture::open(&CaptureConfig::new("lo"), 1).err()
    })
    .join()
    .expect("thread")
    .expect("opening without CAP_NET_RAW must fail");
    let text = err.to_string();
    assert!(matches!(err, CaptureError::Permission { .. }), "{text}");
    assert!(text.contains("CAP_NET_RAW"), "{text}");
}

#[test]
fn oversized_ring_is_refused_before_the_kernel_sees_it() {
    // 1 TiB per ring: refused up front, so the kernel never tries (and never OOM-kills).
    let cfg = CaptureConfig {
        ring: RingConfig {
            block_size: 4 << 20,
            block_count: 262_144,
            ..RingConfig::default()
        },
        ..CaptureConfig::new("lo")
    };
    let err = Capture::open(&cfg, 2).err().expect("must be refused");
    let text = err.to_string();
    assert!(matches!(err, CaptureError::RingAlloc { .. }), "{text}");
    assert!(text.contains("smaller ring"), "{text}");
}

#[test]
fn cpu_fanout_loses_nothing() {
    require_root();
    let sink = udp_sink("127.0.0.1");
    let to = sink.local_addr().expect("addr");
    let filter = format!("udp port {}", to.port());
    let cfg = CaptureConfig {
        fanout_mode: apptag::sensor::capture::FanoutMode::Cpu,
        ..config("lo", &filter)
    };
    let oracle = Tcpdump::start("lo", &filter, &[]);
    let live = Live::start(&cfg, 2).expect("open capture with CPU fanout");
    let sender = udp_sink("127.0.0.1");
    udp_burst(&sender, to, 200, b'c');
    let (_, stats, ours) = live.stop();
    let (_, theirs) = oracle.stop();
    assert_same("cpu fanout", &ours, &theirs);
    assert_eq!(ours.len(), 200);
    assert_eq!(stats.delivered, 200);
}

#[test]
fn explicit_fanout_group_clash_is_reported() {
    require_root();
    // Group ids are shared by the whole network namespace; pick one from our pid.
    let group = 40_000 + (std::process::id() % 20_000) as u16;
    let a = CaptureConfig {
        fanout_group: Some(group),
        ..config("lo", "udp port 9")
    };
    let first = Capture::open(&a, 2).expect("first capture creates the group");
    assert_eq!(first.fanout_group(), Some(group));
    let b = CaptureConfig {
        fanout_mode: apptag::sensor::capture::FanoutMode::Cpu,
        ..a.clone()
    };
    let err = Capture::open(&b, 1).err().expect("same group, other mode");
    assert!(
        matches!(&err, CaptureError::FanoutBusy { group: g, .. } if *g == group),
        "{err}"
    );
    drop(first);
}

#[test]
fn snap_length_truncates_like_tcpdump() {
    require_root();
    let sink = udp_sink("127.0.0.1");
    let to = sink.local_addr().expect("addr");
    let filter = format!("udp port {}", to.port());
    // tcpdump takes the last -s it is given.
    let oracle = Tcpdump::start("lo", &filter, &["-s", "64"]);
    let cfg = CaptureConfig {
        snaplen: 64,
        ..config("lo", &filter)
    };
    let live = Live::start(&cfg, 1).expect("open capture");
    let sender = udp_sink("127.0.0.1");
    udp_burst(&sender, to, 30, b's');
    let (info, _, ours) = live.stop();
    let (_, with_lengths) = oracle.stop_with_lengths();
    let theirs: Vec<Vec<u8>> = with_lengths.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(info.snaplen, 64);
    assert_same("snaplen 64", &ours, &theirs);
    let mut our_lens: Vec<u32> = ours.iter().map(|g| g.orig_len).collect();
    let mut their_lens: Vec<u32> = with_lengths.iter().map(|(_, l)| *l).collect();
    our_lens.sort_unstable();
    their_lens.sort_unstable();
    assert_eq!(our_lens, their_lens, "original lengths");
    for g in &ours {
        assert_eq!(g.data.len(), 64);
        assert!(
            g.orig_len as usize >= 14 + 20 + 8 + 64,
            "orig_len {}",
            g.orig_len
        );
    }
}
