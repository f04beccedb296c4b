//! End-to-end through the whole chain: the embedded kernel object is loaded, its cgroup
//! programs attached to the cgroup v2 root (found from /proc/self/mounts), a child process
//! makes a real TCP connection on loopback, and the kernel reports that child's pid and comm.
use std::net::TcpListener;

use apptag_common::kind;
use std::os::unix::process::CommandExt;

use apptag_integration_tests::{
    Collector, TRAFFIC_COMM, TestCgroup, Traffic, comm, require_root, traffic_bin,
};

#[test]
fn connect_is_reported_with_the_childs_pid_and_comm() {
    require_root();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let collector = Collector::start(None);
    assert!(
        collector
            .probes
            .status()
            .iter()
            .any(|s| s.hook == "cgroup/connect4" && s.attached()),
        "connect4 not attached: {:?}",
        collector.probes.status()
    );
    let mut t = Traffic::start("tcp-client", &addr.to_string(), "");
    let (mut conn, _) = listener.accept().expect("accept");
    std::io::Write::write_all(&mut conn, b"ok").expect("reply");
    t.wait_ok();
    let pid = t.pid();
    let events = collector.events();
    let connect = events
        .iter()
        .find(|e| e.kind == kind::CONNECT && e.pid == pid)
        .unwrap_or_else(|| {
            panic!(
                "no CONNECT event from pid {pid} among {} events",
                events.len()
            )
        });
    assert_eq!(comm(connect), TRAFFIC_COMM);
    assert_eq!(connect.remote_port, addr.port());
    assert_eq!(&connect.remote_addr[..4], &[127, 0, 0, 1]);
    assert_eq!(connect.task_valid, 1);
}

/// The same check must fail when the program is not attached where the child runs: attach
/// to an empty cgroup instead of the root, and the child's connect must go unseen.
#[test]
fn nothing_is_reported_when_the_program_is_not_attached_above_the_child() {
    require_root();
    let empty = TestCgroup::new("detached");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let collector = Collector::start(Some(empty.path.clone()));
    let mut t = Traffic::start("tcp-client", &addr.to_string(), "");
    let (mut conn, _) = listener.accept().expect("accept");
    std::io::Write::write_all(&mut conn, b"ok").expect("reply");
    t.wait_ok();
    let pid = t.pid();
    // Positive control in the same run: a client inside that cgroup is seen by the same
    // collector, so the absence above is not a collector that sees nothing.
    let procs = empty.path.join("cgroup.procs");
    let mut cmd = std::process::Command::new(traffic_bin());
    // SAFETY: only async-signal-safe work between fork and exec: one write to a file.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let mut inside = Traffic::start_with(cmd, "tcp-client", &addr.to_string(), "");
    let (mut conn2, _) = listener.accept().expect("accept");
    std::io::Write::write_all(&mut conn2, b"ok").expect("reply");
    inside.wait_ok();
    let events = collector.events();
    assert!(
        events
            .iter()
            .any(|e| e.kind == kind::CONNECT && e.pid == inside.pid()),
        "the collector saw nothing, not even the connect of a child in its own cgroup \
         ({} events)",
        events.len()
    );
    assert!(
        !events
            .iter()
            .any(|e| e.kind == kind::CONNECT && e.pid == pid),
        "a program attached to an unrelated cgroup reported the child's connect"
    );
}
