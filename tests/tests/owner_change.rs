//! Sockets that change owner under the running sensor (fork after connect, fd passing with
//! SCM_RIGHTS, two threads taking turns) and packets the kernel sends after the process
//! closed its socket, on `lo` and on a veth. Every packet of the file is checked, read with
//! the tests' own pcapng reader: each data segment names the task that sent it in its
//! payload (see tests/src/owners.py), and the file holds exactly the packets a tcpdump
//! running at the same time saw.
use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use apptag_integration_tests::{
    Traffic, blocks,
    netns::NetnsPair,
    oracle::{assert_valid, parse_frame, tool, tshark_packets},
    require_root,
    sensor::{ChildGuard, Sensor, TempDir},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const SCRIPT: &str = include_str!("../src/owners.py");
const PORT: u16 = 18090;

/// The hooks these scenarios depend on: tcp_sendmsg_locked names a new sender before its
/// first packet, the send/recv length tracepoints name other new users, sock_ops and
/// cgroup_skb tie the packets' 5-tuple to the socket.
const HOOKS: &[&str] = &[
    "cgroup/sock_create",
    "cgroup/connect4",
    "cgroup/sock_release",
    "sock_ops",
    "tp_btf/sock_send_length",
    "tp_btf/sock_recv_length",
    "tp_btf/tcp_sendmsg_locked",
    "cgroup_skb/egress",
    "cgroup_skb/ingress",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path2 {
    /// Sensor, server and client in the namespace, capturing on its loopback.
    Lo,
    /// Client on the host, server in the namespace, capturing on the host's veth end.
    Veth,
}

/// One TCP segment or UDP datagram as the test parses it (flags 0 for UDP).
struct Seg {
    sport: u16,
    dport: u16,
    flags: u8,
    payload: Vec<u8>,
}

fn segment(linktype: u16, d: &[u8]) -> Option<Seg> {
    assert_eq!(linktype, 1, "lo and veth capture Ethernet frames");
    let ip = d.get(14..)?;
    if u16::from_be_bytes([*d.get(12)?, *d.get(13)?]) != 0x0800 {
        return None;
    }
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let l4 = ip.get(ihl..total)?;
    let ports = (
        u16::from_be_bytes([*l4.first()?, *l4.get(1)?]),
        u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
    );
    let (flags, payload) = match *ip.get(9)? {
        6 => (*l4.get(13)?, l4.get(usize::from(l4.get(12)? >> 4) * 4..)?),
        17 => (0, l4.get(8..)?),
        _ => return None,
    };
    Some(Seg {
        sport: ports.0,
        dport: ports.1,
        flags,
        payload: payload.to_vec(),
    })
}

/// The `key=value` fields of a payload line.
fn fields(payload: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(payload)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field(f: &[(String, String)], k: &str) -> Option<u32> {
    f.iter().find(|(key, _)| key == k)?.1.parse().ok()
}

fn for_task(f: &[(String, String)]) -> Option<(u32, u32)> {
    let v = &f.iter().find(|(k, _)| k == "for")?.1;
    let (p, t) = v.split_once(',')?;
    Some((p.parse().ok()?, t.parse().ok()?))
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn start_tcpdump(cmd_prefix: Option<&NetnsPair>, iface: &str, out: &Path) -> ChildGuard {
    let mut cmd = match cmd_prefix {
        Some(p) => p.command("tcpdump"),
        None => Command::new("tcpdump"),
    };
    cmd.args(["-i", iface, "-n", "-U", "--immediate-mode", "-w"])
        .arg(out)
        .args(["port", &PORT.to_string()]);
    let mut t = ChildGuard::spawn(cmd);
    assert!(
        t.wait_for_line("listening on", Duration::from_secs(30)),
        "tcpdump did not start: {}",
        t.stderr()
    );
    t
}

struct Run {
    file: blocks::PcapngFile,
    tcpdump_count: usize,
    client: Traffic,
    server_pid: u32,
}

/// Runs the server and one `owners.py MODE` client under the sensor and a tcpdump.
fn run(path: Path2, mode: &str, n: u8, linger: Duration) -> Run {
    let pair = NetnsPair::new(n);
    let dir = TempDir::new(&format!("owner-{mode}-{n}"));
    let script = dir.file("owners.py");
    std::fs::write(&script, SCRIPT).expect("write owners.py");
    let file = dir.file("owners.pcapng");
    let dump = dir.file("tcpdump.pcap");
    let port = PORT.to_string();
    let filter = ["port", port.as_str()];
    let (sensor, tcpdump) = match path {
        Path2::Lo => {
            let mut args = vec!["-i", "lo"];
            args.extend(filter);
            let s = Sensor::start(Some(&pair), &file, &args);
            (s, start_tcpdump(Some(&pair), "lo", &dump))
        }
        Path2::Veth => {
            let mut args = vec!["-i", pair.host_if.as_str()];
            args.extend(filter);
            let s = Sensor::start(None, &file, &args);
            (s, start_tcpdump(None, &pair.host_if, &dump))
        }
    };
    let hooks = sensor.proc.stderr();
    for h in HOOKS {
        assert!(
            hooks
                .lines()
                .any(|l| l.contains("attached") && l.split_whitespace().any(|w| w == *h)),
            "hook {h} is not attached; apptag said:\n{hooks}"
        );
    }
    let server_host = match path {
        Path2::Lo => "127.0.0.1".to_string(),
        Path2::Veth => pair.ns_ip.to_string(),
    };
    let (server_mode, server_count) = match mode {
        "late-rst" => ("server", "2"),
        "udp-fork" => ("udp-server", "3"),
        _ => ("server", "1"),
    };
    let mut server = Traffic::start_with(
        {
            let mut c = pair.command(python());
            c.arg(&script);
            c
        },
        server_mode,
        &server_host,
        &format!("{PORT} {server_count}"),
    );
    server.get("listen");
    let client_cmd = match path {
        Path2::Lo => pair.command(python()),
        Path2::Veth => Command::new(python()),
    };
    let mut client = Traffic::start_with(
        {
            let mut c = client_cmd;
            c.arg(&script);
            c
        },
        mode,
        &server_host,
        &port,
    );
    client.wait_ok();
    let _ = client.all("local");
    server.wait_ok();
    std::thread::sleep(linger);
    let mut tcpdump = tcpdump;
    tcpdump.stop_with(libc::SIGINT, Duration::from_secs(30));
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    assert_valid(&file);
    let out = tool("capinfos", &["-c", "-M", dump.to_str().expect("utf-8")]);
    let tcpdump_count = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("capinfos packet count");
    let own = blocks::read(&file);
    // The packets this test judges are the ones tshark sees, 5-tuple for 5-tuple.
    let ours: Vec<_> = own
        .packets
        .iter()
        .map(|p| parse_frame(p.linktype, &p.data))
        .collect();
    let theirs: Vec<_> = tshark_packets(&file, None)
        .into_iter()
        .map(|p| p.tuple)
        .collect();
    assert_eq!(ours, theirs, "5-tuples: the tests' reader vs tshark");
    Run {
        file: own,
        tcpdump_count,
        server_pid: server.pid(),
        client,
    }
}

/// Checks every packet: data segments carry the task their payload names (the sender on
/// loopback; on the veth, where the host end is the client, the client task a server
/// answer is for), the SYN the connecting parent, every other packet one of the tasks that
/// used that end.
fn check(path: Path2, mode: &str, r: &mut Run, check_tid: bool) {
    let parent: u32 = r.client.get("parent").parse().expect("parent pid");
    let mut client_pids: BTreeSet<u32> = [parent].into();
    for c in r.client.all("child") {
        client_pids.insert(c.parse().expect("child pid"));
    }
    let locals: BTreeSet<u16> = r
        .client
        .all("local")
        .iter()
        .map(|l| l.parse().expect("local port"))
        .collect();
    assert!(!locals.is_empty(), "the client printed its local port");
    assert_eq!(
        r.file.packets.len(),
        r.tcpdump_count,
        "apptag wrote {} packets of port {PORT}, tcpdump saw {} at the same time",
        r.file.packets.len(),
        r.tcpdump_count
    );
    let mut wrong = Vec::new();
    let mut data = 0;
    let mut owners_seen = BTreeSet::new();
    for (i, p) in r.file.packets.iter().enumerate() {
        let seg = segment(p.linktype, &p.data)
            .unwrap_or_else(|| panic!("packet {} of port {PORT} is not IPv4 TCP/UDP", i + 1));
        let from_client = locals.contains(&seg.sport) && seg.dport == PORT;
        let from_server = seg.sport == PORT && locals.contains(&seg.dport);
        assert!(
            from_client || from_server,
            "packet {}: {}->{} is not the client's connection",
            i + 1,
            seg.sport,
            seg.dport
        );
        let f = fields(&seg.payload);
        let expected: Option<(u32, Option<u32>)> = if !seg.payload.is_empty() {
            data += 1;
            if from_client {
                Some((
                    field(&f, "pid").expect("client payload pid"),
                    field(&f, "tid"),
                ))
            } else if path == Path2::Lo {
                Some((r.server_pid, field(&f, "tid")))
            } else {
                for_task(&f).map(|(p, t)| (p, Some(t)))
            }
        } else if from_client && seg.flags & 0x12 == 0x02 {
            Some((parent, None))
        } else {
            None
        };
        let why = match expected {
            Some((pid, tid)) => {
                let tid_ok = !check_tid || tid.is_none_or(|t| t == p.tid());
                (p.pid() != pid || !tid_ok).then(|| format!("expected pid {pid} tid {tid:?}"))
            }
            None => {
                let ok = if from_server && path == Path2::Lo {
                    p.pid() == r.server_pid
                } else {
                    client_pids.contains(&p.pid())
                };
                (!ok).then(|| format!("expected one of {client_pids:?} (server {})", r.server_pid))
            }
        };
        if from_client && !seg.payload.is_empty() {
            owners_seen.insert((p.pid(), p.tid()));
        }
        if let Some(why) = why {
            wrong.push(format!(
                "packet {} {}->{} flags {:#04x} payload {:?}: pid {} tid {}, {why}",
                i + 1,
                seg.sport,
                seg.dport,
                seg.flags,
                String::from_utf8_lossy(&seg.payload).trim(),
                p.pid(),
                p.tid()
            ));
        }
    }
    assert!(wrong.is_empty(), "{mode}:\n{}", wrong.join("\n"));
    assert!(data >= 2, "{mode}: only {data} data segments");
    // The scenario did change owner: at least two different senders on the client end.
    if mode != "late-rst" {
        assert!(
            owners_seen.len() >= 2,
            "{mode}: one sender only ({owners_seen:?})"
        );
    }
}

fn scenario(path: Path2, mode: &str, n: u8, check_tid: bool) {
    require_root();
    let _g = serial();
    // The server's late answer (6 s after the client's close) and the RST it draws are
    // over once the server has exited.
    let linger = Duration::from_millis(800);
    let mut r = run(path, mode, n, linger);
    check(path, mode, &mut r, check_tid);
    if mode == "late-rst" {
        let rsts = r
            .file
            .packets
            .iter()
            .filter_map(|p| segment(p.linktype, &p.data))
            .filter(|s| s.dport == PORT && s.flags & 0x04 != 0)
            .count();
        assert!(rsts >= 2, "expected a RST on each connection, saw {rsts}");
    }
}

#[test]
fn fork_after_connect_every_packet_on_lo() {
    scenario(Path2::Lo, "fork", 40, false);
}

#[test]
fn fork_after_connect_every_packet_on_veth() {
    scenario(Path2::Veth, "fork", 41, false);
}

#[test]
fn fd_passed_with_scm_rights_every_packet_on_lo() {
    scenario(Path2::Lo, "scm", 42, false);
}

#[test]
fn fd_passed_with_scm_rights_every_packet_on_veth() {
    scenario(Path2::Veth, "scm", 43, false);
}

#[test]
fn threads_taking_turns_every_packet_on_lo() {
    scenario(Path2::Lo, "threads", 44, true);
}

#[test]
fn threads_taking_turns_every_packet_on_veth() {
    scenario(Path2::Veth, "threads", 45, true);
}

#[test]
fn connected_udp_shared_after_fork_every_packet_on_lo() {
    scenario(Path2::Lo, "udp-fork", 48, false);
}

#[test]
fn connected_udp_shared_after_fork_every_packet_on_veth() {
    scenario(Path2::Veth, "udp-fork", 49, false);
}

#[test]
fn packets_sent_after_close_belong_to_the_last_user_on_lo() {
    scenario(Path2::Lo, "late-rst", 46, false);
}

#[test]
fn packets_sent_after_close_belong_to_the_last_user_on_veth() {
    scenario(Path2::Veth, "late-rst", 47, false);
}
