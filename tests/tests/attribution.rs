//! Attribution scenarios with real processes: each asserts the exact pid (and comm, tid,
//! cgroup where it matters) that the socket table gives for every local end of the traffic.
//! The expected pid comes from the kernel itself (the child's pid from fork/exec, the
//! thread ids the process reads with gettid), never from apptag.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    process::Command,
    sync::Mutex,
    time::Duration,
};

use apptag::{
    model::Provenance,
    sensor::attribution::{Addr, Attributor, FiveTuple, Mode, Tag},
    sensor::probes::ProbeConfig,
    sys::now_ns,
};
use apptag_common::hook;
use apptag_integration_tests::{
    TRAFFIC_COMM, TestCgroup, Traffic, assert_all_attached, assert_hooks, require_root, traffic_bin,
};

// Tests share the host's sockets; one at a time keeps port reuse tests deterministic.
static SERIAL: Mutex<()> = Mutex::new(());

fn attributor() -> Attributor {
    let a = Attributor::start(Mode::Ebpf, &ProbeConfig::default()).expect("attach probes (root?)");
    assert_all_attached(a.probe_status());
    a
}

fn settle(a: &mut Attributor) {
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(40));
        a.poll();
    }
}

/// A socket's connection as the table keys it: seen as sender, source = local end.
fn tuple(local: SocketAddr, remote: SocketAddr, protocol: u8) -> FiveTuple {
    FiveTuple {
        src: Addr::from_ip(local.ip()),
        src_port: local.port(),
        dst: Addr::from_ip(remote.ip()),
        dst_port: remote.port(),
        protocol,
    }
}

fn tag_of(a: &Attributor, local: SocketAddr, remote: SocketAddr, protocol: u8) -> Tag {
    a.table()
        .lookup_tuple(&tuple(local, remote, protocol), now_ns())
        .unwrap_or_else(|| panic!("no tag for {local} -> {remote} proto {protocol}"))
}

fn comm_of(a: &Attributor, t: &Tag) -> String {
    a.table()
        .processes()
        .get(t.proc)
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// Accepts connections on a loopback listener in the test process and echoes once.
fn echo_server(addr: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).expect("listen");
    let a = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                if let Ok(n) = c.read(&mut buf) {
                    let _ = c.write_all(&buf[..n]);
                }
            });
        }
    });
    a
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

#[test]
fn tcp_client_and_accepted_server_socket() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let mut server = Traffic::start("tcp-server", "127.0.0.1:0", "");
    let listen = addr(&server.get("listen"));
    let mut client = Traffic::start("tcp-client", &listen.to_string(), "");
    let local = addr(&client.get("local"));
    client.wait_ok();
    server.wait_ok();
    settle(&mut a);
    let c = tag_of(&a, local, listen, 6);
    assert_eq!(c.pid, client.pid());
    assert_eq!(comm_of(&a, &c), TRAFFIC_COMM);
    // The client's socket life, in the order it happened.
    let sock = a.table().socket(c.cookie).expect("client socket");
    let life = [
        Some(sock.life.created_ns),
        sock.life.connected_ns,
        sock.life.first_send_ns,
        sock.life.closed_ns,
    ];
    assert!(life.iter().all(Option::is_some), "missing steps: {life:?}");
    assert!(
        life.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {life:?}"
    );
    // The accepted socket: local end is the listener's address, remote the client.
    let s = tag_of(&a, listen, local, 6);
    assert_eq!(s.pid, server.pid());
    assert_eq!(comm_of(&a, &s), TRAFFIC_COMM);
}

#[test]
fn udp_send_receive_and_connected_udp() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let mut rx = Traffic::start("udp-recv", "127.0.0.1:0", "");
    let listen = addr(&rx.get("listen"));
    let mut tx = Traffic::start("udp-send", &listen.to_string(), "3");
    let tx_local = addr(&tx.get("local"));
    tx.wait_ok();
    rx.wait_ok();
    let mut rx2 = Traffic::start("udp-recv", "127.0.0.1:0", "");
    let listen2 = addr(&rx2.get("listen"));
    let mut conn = Traffic::start("udp-connected", &listen2.to_string(), "2");
    let conn_local = addr(&conn.get("local"));
    conn.wait_ok();
    rx2.wait_ok();
    settle(&mut a);
    assert_eq!(
        tag_of(&a, tx_local, listen, 17).pid,
        tx.pid(),
        "unconnected sender"
    );
    assert_eq!(tag_of(&a, listen, tx_local, 17).pid, rx.pid(), "receiver");
    assert_eq!(
        tag_of(&a, conn_local, listen2, 17).pid,
        conn.pid(),
        "connected sender"
    );
    assert_eq!(
        tag_of(&a, listen2, conn_local, 17).pid,
        rx2.pid(),
        "second receiver"
    );
}

#[test]
fn ipv6_tcp() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let server = echo_server("[::1]:0");
    let mut client = Traffic::start("tcp-client", &server.to_string(), "");
    let local = addr(&client.get("local"));
    client.wait_ok();
    settle(&mut a);
    let t = tag_of(&a, local, server, 6);
    assert_eq!(t.pid, client.pid());
    assert!(!t.tuple.src.is_v4());
    // The test process's own accepted socket is attributed to the test process.
    assert_eq!(tag_of(&a, server, local, 6).pid, std::process::id());
}

#[test]
fn short_lived_processes_are_named_after_they_exit() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let server = echo_server("127.0.0.1:0");
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Traffic::start("tcp-client", &server.to_string(), "");
        let local = addr(&c.get("local"));
        c.wait_ok();
        clients.push((c.pid(), local));
    }
    // All have exited before we look.
    settle(&mut a);
    for (pid, local) in clients {
        let t = tag_of(&a, local, server, 6);
        assert_eq!(t.pid, pid);
        assert_eq!(comm_of(&a, &t), TRAFFIC_COMM);
    }
}

#[test]
fn port_reuse_by_a_second_process_gets_the_second_pid() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let mut first = Traffic::start("udp-recv", "127.0.0.1:0", "");
    let port_addr = addr(&first.get("listen"));
    let mut s1 = Traffic::start("udp-send", &port_addr.to_string(), "1");
    let s1_local = addr(&s1.get("local"));
    s1.wait_ok();
    first.wait_ok();
    settle(&mut a);
    let t_first = now_ns();
    std::thread::sleep(Duration::from_millis(50));
    // Same port, another process.
    let mut second = Traffic::start("udp-recv", &port_addr.to_string(), "");
    assert_eq!(addr(&second.get("listen")), port_addr);
    let mut s2 = Traffic::start("udp-send", &port_addr.to_string(), "1");
    let s2_local = addr(&s2.get("local"));
    s2.wait_ok();
    second.wait_ok();
    settle(&mut a);
    let table = a.table();
    let at_first = table
        .lookup_tuple(&tuple(port_addr, s1_local, 17), t_first)
        .expect("first receiver");
    assert_eq!(at_first.pid, first.pid());
    let now = table
        .lookup_tuple(&tuple(port_addr, s2_local, 17), now_ns())
        .expect("second receiver");
    assert_eq!(
        now.pid,
        second.pid(),
        "the reused port inherited the old tag"
    );
}

#[test]
fn fork_after_connect_child_sends() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let server = echo_server("127.0.0.1:0");
    let mut p = Traffic::start("fork-send", &server.to_string(), "");
    let local = addr(&p.get("local"));
    let child: u32 = p.get("child").parse().expect("child pid");
    p.wait_ok();
    settle(&mut a);
    let t = tag_of(&a, local, server, 6);
    assert_eq!(t.pid, child, "the child did the sending");
    assert_ne!(child, p.pid());
}

#[test]
fn two_threads_of_one_process() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let server = echo_server("127.0.0.1:0");
    let mut p = Traffic::start("threads", &server.to_string(), "");
    p.wait_ok();
    let threads = p.all("thread");
    assert_eq!(threads.len(), 2);
    settle(&mut a);
    for t in threads {
        let (tid, local) = t.split_once(',').expect("tid,local");
        let tag = tag_of(&a, addr(local), server, 6);
        assert_eq!(tag.pid, p.pid());
        assert_eq!(tag.tid.to_string(), tid, "thread id");
    }
}

#[test]
fn sendmmsg_sender() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = rx.local_addr().expect("addr");
    let mut p = Traffic::start("sendmmsg", &target.to_string(), "8");
    let local = addr(&p.get("local"));
    assert_eq!(p.get("sent"), "8");
    p.wait_ok();
    settle(&mut a);
    // A connected UDP socket: no cgroup sendmsg hook runs; the egress hook sees the
    // child's datagrams in the child's context.
    sent_by_the_child(&a, &mut p, tag_of(&a, local, target, 17), hook::SKB_EGRESS);
}

/// The parent created and connected the socket, a forked child sent: only a hook that
/// sees the send itself saw the child, so the tag must be the child's and name that hook.
fn sent_by_the_child(a: &Attributor, p: &mut Traffic, t: Tag, by: u32) {
    let name = match by {
        hook::TCP_SENDMSG => "tp_btf/tcp_sendmsg_locked",
        hook::SKB_EGRESS => "cgroup_skb/egress",
        _ => "tp_btf/sock_send_length",
    };
    assert_hooks(a.probe_status(), &[name]);
    let child: u32 = p.get("child").parse().expect("child pid");
    assert_ne!(child, p.pid());
    assert_eq!(t.pid, child, "the child sent");
    assert_eq!(t.provenance, Provenance::Hook(by), "named by {name}");
}

#[test]
fn process_in_its_own_child_cgroup() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let cg = TestCgroup::new("child");
    let server = echo_server("127.0.0.1:0");
    let procs = cg.path.join("cgroup.procs");
    let mut cmd = Command::new(traffic_bin());
    // SAFETY: only async-signal-safe work between fork and exec: one write to a file.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    // The process stays alive until its /proc entry has been read.
    let mut p = Traffic::start_with(cmd, "hold", &server.to_string(), "");
    let local = addr(&p.get("local"));
    settle(&mut a);
    let t = tag_of(&a, local, server, 6);
    assert_eq!(t.pid, p.pid());
    let sock = a.table().socket(t.cookie).expect("socket");
    let owner = sock.owner_at(now_ns()).expect("owner");
    assert_eq!(owner.cgroup_id, cg.id(), "cgroup id of the child cgroup");
    let info = a.table().processes().get(t.proc).expect("process info");
    let dir = cg
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("cgroup dir name");
    assert!(
        info.cgroup.ends_with(&format!("/{dir}")),
        "cgroup path {:?}, expected one ending in /{dir}",
        info.cgroup
    );
    p.release();
    p.wait_ok();
}

#[test]
fn connection_opened_before_apptag_started() {
    require_root();
    let _g = SERIAL.lock();
    let server = echo_server("127.0.0.1:0");
    let mut p = Traffic::start("hold", &server.to_string(), "");
    let local = addr(&p.get("local"));
    // Connected before any probe exists.
    let mut a = attributor();
    let seeded = a.table().lookup_tuple(&tuple(local, server, 6), now_ns());
    assert_eq!(
        seeded.map(|t| (t.pid, t.provenance)),
        Some((p.pid(), Provenance::SockDiag)),
        "seeded from sock_diag"
    );
    p.release();
    p.wait_ok();
    settle(&mut a);
    // Once the process sends, the TCP send hook confirms the seed.
    assert_hooks(a.probe_status(), &["tp_btf/tcp_sendmsg_locked"]);
    let t = tag_of(&a, local, server, 6);
    assert_eq!(t.pid, p.pid());
    assert_eq!(
        t.provenance,
        Provenance::Hook(hook::TCP_SENDMSG),
        "provenance after the first send"
    );
}

#[test]
fn sendfile_sender() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let server = echo_server("127.0.0.1:0");
    let mut p = Traffic::start("sendfile", &server.to_string(), "");
    let local = addr(&p.get("local"));
    assert_eq!(p.get("sent"), "4096");
    p.wait_ok();
    settle(&mut a);
    sent_by_the_child(&a, &mut p, tag_of(&a, local, server, 6), hook::TCP_SENDMSG);
}

#[test]
fn splice_sender() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    let server = echo_server("127.0.0.1:0");
    let mut p = Traffic::start("splice", &server.to_string(), "");
    let local = addr(&p.get("local"));
    assert_eq!(p.get("sent"), "512");
    p.wait_ok();
    settle(&mut a);
    sent_by_the_child(&a, &mut p, tag_of(&a, local, server, 6), hook::TCP_SENDMSG);
}

/// Raw ICMP has no ports: the packet's addresses and protocol lead to the raw socket.
#[test]
fn raw_icmp_sender() {
    require_root();
    let _g = SERIAL.lock();
    let mut a = attributor();
    // A loopback address of our own that nothing else pings.
    let target = addr("127.0.0.77:0");
    let mut p = Traffic::start("icmp-raw", &target.to_string(), "");
    p.get("sent");
    p.wait_ok();
    settle(&mut a);
    let t = tag_of(&a, addr("127.0.0.1:0"), target, 1);
    assert_eq!(t.pid, p.pid());
    assert_eq!(comm_of(&a, &t), TRAFFIC_COMM);
}
