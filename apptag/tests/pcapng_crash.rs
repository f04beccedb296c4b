//! Crash safety: a writer killed with SIGKILL, and a full disk, leave a file that tshark and
//! capinfos accept and that still holds the application records written before.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apptag::model::{Direction, Packet};
use apptag::pcapng::{self, PcapngError, Record, SectionInfo, Writer};
use common::*;

const CHILD_OUT: &str = "APPTAG_TEST_CHILD_OUT";
const CHILD_PACED: &str = "APPTAG_TEST_CHILD_PACED";

/// Counts (packets, app-record blocks, errors) with our reader.
fn scan(path: &Path) -> (usize, usize, Vec<PcapngError>) {
    let m = pcapng::open_file(path).expect("open");
    let (mut packets, mut blocks, mut errors) = (0, 0, Vec::new());
    for r in m.reader().expect("reader") {
        match r {
            Ok(Record::Packet(_)) => packets += 1,
            Ok(Record::AppRecords { .. }) => blocks += 1,
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    (packets, blocks, errors)
}

fn frame() -> Vec<u8> {
    udp_frame([127, 0, 0, 1], 40000, [127, 0, 0, 1], 53, 64)
}

/// Not a test of its own: the body of the child process that the kill tests spawn (this
/// test binary re-executed with CHILD_OUT set). Without the variable it does nothing.
#[test]
fn child_writer() {
    let Ok(out) = std::env::var(CHILD_OUT) else {
        return;
    };
    let paced = std::env::var(CHILD_PACED).is_ok();
    let mut w = Writer::create(&out, &SectionInfo::detect()).expect("create");
    let ifid = w.add_interface(&eth_lo()).expect("idb");
    w.write_process(&process(4242, "curl")).expect("process");
    let data = frame();
    let mut ts = T0;
    for round in 0u64.. {
        for _ in 0..2000 {
            ts += 1000;
            w.write_packet(&Packet {
                ts_ns: ts,
                interface: ifid,
                orig_len: 64,
                data: &data,
                direction: Direction::Outbound,
                pid: 4242,
                tid: 4242,
            })
            .expect("packet");
        }
        w.write_app_records(&[app("curl", 4242, (round % 50) as u32 + 1)], false)
            .expect("app records");
        if paced {
            println!("flushed {round}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn_child(out: &Path, paced: bool) -> std::process::Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut c = Command::new(exe);
    c.args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_OUT, out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if paced {
        c.env(CHILD_PACED, "1");
    }
    c.spawn().expect("spawn child writer")
}

#[test]
fn sigkill_between_flushes_leaves_a_valid_file_with_app_records() {
    let dir = TempDir::new("kill-paced");
    let f = dir.path("killed.pcapng");
    let mut child = spawn_child(&f, true);
    let stdout = child.stdout.take().expect("child stdout");
    let mut flushed = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if line.starts_with("flushed ") {
            flushed += 1;
            if flushed == 5 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "child was killed by SIGKILL"
    );
    assert_tools_accept(&f);
    let (packets, blocks, errors) = scan(&f);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(blocks >= 5, "app-record blocks before the kill: {blocks}");
    assert!(packets >= 5 * 2000, "packets before the kill: {packets}");
    let tshark = stdout_of(
        "tshark",
        &["-r", f.to_str().unwrap_or(""), "-Y", "!frame.cb_pen"],
    );
    assert_eq!(
        tshark.lines().count(),
        packets,
        "tshark and our reader agree"
    );
}

#[test]
fn sigkill_at_full_speed_leaves_a_file_readable_up_to_its_last_block() {
    let dir = TempDir::new("kill-fast");
    let f = dir.path("killed.pcapng");
    let mut child = spawn_child(&f, false);
    let start = Instant::now();
    while std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) < 4 << 20 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let (_, blocks, errors) = scan(&f);
    assert!(
        blocks >= 1,
        "app-record blocks written before the kill are readable"
    );
    // Only complete blocks are ever handed to the kernel; a kill inside a write() system
    // call can still leave part of one. Our reader must name it, and repair must fix it.
    match errors.as_slice() {
        [] => {}
        [PcapngError::Truncated { offset, .. }] => {
            let len = pcapng::repair_file(&f).expect("repair");
            assert_eq!(len, *offset);
        }
        other => panic!("unexpected errors after kill: {other:?}"),
    }
    assert_tools_accept(&f);
    assert!(scan(&f).2.is_empty());
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// The full-disk tests mount a small tmpfs: CI runs as root, so a run without root fails
/// instead of passing without testing anything.
fn require_root_for_tmpfs() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the full-disk tests mount a tmpfs and must run as root (cargo xtask test does that)"
    );
}

#[test]
fn full_disk_cuts_the_file_back_to_its_last_complete_block() {
    require_root_for_tmpfs();
    let dir = TempDir::new("enospc");
    let mnt = dir.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let o = run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "tmpfs",
            mnt.to_str().unwrap_or(""),
        ],
    );
    assert!(
        o.status.success(),
        "mount tmpfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _guard = Mount(mnt.clone());

    let f = mnt.join("full.pcapng");
    let mut w = Writer::create(&f, &SectionInfo::detect()).expect("create");
    let ifid = w.add_interface(&eth_lo()).expect("idb");
    let data = frame();
    let mut written_apps = 0;
    let err = 'fill: {
        for i in 0..1_000_000u64 {
            let r = w.write_packet(&Packet {
                ts_ns: T0 + i,
                interface: ifid,
                orig_len: 64,
                data: &data,
                direction: Direction::Inbound,
                pid: 7,
                tid: 7,
            });
            if let Err(e) = r {
                break 'fill e;
            }
            if i % 300 == 299 {
                match w.write_app_records(&[app("curl", 4242, 2)], false) {
                    Ok(()) => written_apps += 1,
                    Err(e) => break 'fill e,
                }
            }
        }
        panic!("a 256 KiB tmpfs never filled up");
    };
    match &err {
        PcapngError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("expected ENOSPC, got {other}"),
    }
    let len = std::fs::metadata(&f).expect("stat").len();
    assert_eq!(
        len,
        w.bytes_written(),
        "file ends at the last complete block"
    );
    drop(w);
    assert_tools_accept(&f);
    let (packets, blocks, errors) = scan(&f);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(packets > 0);
    assert_eq!(
        blocks, written_apps,
        "every app-record block reported written is in the file"
    );
}

#[test]
fn with_a_reserve_a_full_disk_still_gets_the_final_table_and_statistics() {
    require_root_for_tmpfs();
    let dir = TempDir::new("reserve");
    let mnt = dir.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let o = run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            mnt.to_str().unwrap_or(""),
        ],
    );
    assert!(
        o.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _guard = Mount(mnt.clone());
    let f = mnt.join("full.pcapng");
    let mut w = Writer::create(&f, &SectionInfo::detect()).expect("create");
    let ifid = w.add_interface(&eth_lo()).expect("idb");
    assert!(w.keep_reserve().expect("reserve"), "tmpfs preallocates");
    // A table of 20 applications: its final write is larger than the base reserve alone.
    let table: Vec<_> = (0..20)
        .map(|i| app(&format!("app{i}"), 100 + i, 100))
        .collect();
    w.write_app_changes(&table).expect("periodic");
    let data = frame();
    let err = (0..10_000_000u64)
        .find_map(|i| {
            w.write_packet(&Packet {
                ts_ns: T0 + i,
                interface: ifid,
                orig_len: 64,
                data: &data,
                direction: Direction::Inbound,
                pid: 100,
                tid: 100,
            })
            .err()
        })
        .expect("a 1 MiB tmpfs never filled up");
    assert!(matches!(err, PcapngError::DiskFull { .. }), "{err}");
    assert!(w.disk_full());
    let packets = w.packets_written();
    // Another writer on the same file system takes whatever space is left: only the
    // reserve remains for the end of the file.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(mnt.join("filler")).expect("filler");
        let chunk = vec![0u8; 4096];
        while filler.write_all(&chunk).is_ok() {}
    }
    w.write_app_records(&table, true)
        .expect("the final table fits the reserve");
    w.write_interface_stats(0, &apptag::model::InterfaceStats::default())
        .expect("the statistics fit the reserve");
    w.flush().expect("flush");
    drop(w);
    assert_tools_accept(&f);
    let (n, blocks, errors) = scan(&f);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        n as u64, packets,
        "packets_written counts what the file holds"
    );
    assert!(blocks >= 2, "periodic and final blocks: {blocks}");
    let report = apptag::pcapng::apps::collect(&f).expect("apps");
    assert!(report.final_table, "final table complete");
    assert_eq!(report.apps.len(), 20);
    let info = stdout_of("capinfos", &[f.to_str().unwrap_or("")]);
    assert!(info.contains("Number of stat entries = 1"), "{info}");
}

#[test]
fn a_closed_file_gives_its_reserve_back() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("reserve-back");
    let f = dir.path("small.pcapng");
    let mut w = Writer::create(&f, &SectionInfo::detect()).expect("create");
    w.add_interface(&eth_lo()).expect("idb");
    let reserved = w.keep_reserve().expect("reserve");
    w.write_app_changes(&[app("curl", 4242, 2)])
        .expect("periodic");
    let held = std::fs::metadata(&f).expect("stat").blocks() * 512;
    if reserved {
        assert!(
            held >= apptag::pcapng::writer::RESERVE_BASE,
            "reserve not allocated: {held}"
        );
    }
    drop(w);
    let m = std::fs::metadata(&f).expect("stat");
    let allocated = m.blocks() * 512;
    assert!(
        allocated <= m.len().next_multiple_of(4096) + 4096,
        "a closed {}-byte file still holds {allocated} bytes of disk",
        m.len()
    );
}
