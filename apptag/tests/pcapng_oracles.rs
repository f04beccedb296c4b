//! The files we write, read back by Wireshark's tools (tshark, capinfos, editcap) and
//! tcpdump as independent oracles.
mod common;

use apptag::model::Direction;
use apptag::pcapng::{self, Record};
use common::*;

fn p(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn epoch(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

#[test]
fn tshark_and_capinfos_read_what_we_wrote() {
    let dir = TempDir::new("basic");
    let f = dir.path("basic.pcapng");
    let sample = write_sample(&f, 300);
    assert_tools_accept(&f);

    // Packet count, timestamps (ns) and lengths as tshark sees them.
    let out = stdout_of(
        "tshark",
        &[
            "-r",
            p(&f),
            "-Y",
            "!frame.cb_pen",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.packet_flags_direction",
        ],
    );
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), sample.packets.len(), "tshark packet count");
    for (row, (ts, len, dir, _)) in rows.iter().zip(&sample.packets) {
        assert_eq!(row[0], epoch(*ts), "timestamp");
        assert_eq!(row[1], len.to_string(), "frame length");
        let want = match dir {
            Direction::Inbound => "0x00000001",
            Direction::Outbound => "0x00000002",
            Direction::Unknown => "0x00000000",
        };
        assert_eq!(row[2], want, "epb_flags direction");
    }

    // capinfos: counts, nanosecond resolution, section and interface metadata, stats.
    let info = stdout_of("capinfos", &[p(&f)]);
    assert!(
        info.contains(&format!("Number of packets:   {}", sample.packets.len())),
        "{info}"
    );
    assert!(info.contains("nanoseconds (9)"), "{info}");
    assert!(
        info.contains(&format!(
            "Capture application: apptag {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{info}"
    );
    assert!(info.contains("Name = lo"), "{info}");
    let hw = format!("Capture hardware:    {}", std::env::consts::ARCH);
    assert!(info.contains(&hw), "{info}");
    assert!(info.contains("Capture oper-sys:    Linux "), "{info}");
    assert!(info.contains("Filter string = udp or tcp"), "{info}");
    assert!(info.contains("Number of stat entries = 1"), "{info}");
}

#[test]
fn tshark_shows_direction_and_process_option() {
    let dir = TempDir::new("opts");
    let f = dir.path("opts.pcapng");
    let sample = write_sample(&f, 30);
    let v = stdout_of("tshark", &["-r", p(&f), "-V", "-Y", "!frame.cb_pen"]);
    assert!(
        v.contains("Direction: Outbound (0x2)"),
        "tshark -V lacks outbound flag"
    );
    assert!(
        v.contains("Direction: Inbound (0x1)"),
        "tshark -V lacks inbound flag"
    );

    // Wireshark 4.0 shows epb_processid_threadid (8) only as an unknown option in its file
    // view; its position lets us check the bytes: pid then tid, on attributed packets only.
    let pdml = stdout_of(
        "tshark",
        &[
            "-r",
            p(&f),
            "-X",
            "read_format:MIME Files Format",
            "-T",
            "pdml",
        ],
    );
    let bytes = std::fs::read(&f).expect("read back");
    let mut seen = Vec::new();
    let mut after_code8 = false;
    for line in pdml.lines() {
        if line.contains("showname=\"Code: Unknown (8)\"") {
            after_code8 = true;
        } else if after_code8 && line.contains("name=\"pcapng.options.option.length\"") {
            assert!(line.contains("show=\"8\""), "option 8 length: {line}");
        } else if after_code8 && line.contains("name=\"pcapng.options.option.data\"") {
            let pos: usize = line
                .split("pos=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .and_then(|s| s.parse().ok())
                .expect("pos attribute");
            let pid = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
            let tid = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
            seen.push((pid, tid));
            after_code8 = false;
        }
    }
    let want: Vec<(u32, u32)> = sample
        .packets
        .iter()
        .filter(|x| x.3 != 0)
        .map(|x| (x.3, x.3 + 1))
        .collect();
    assert_eq!(seen, want, "pid/tid options as located by tshark");
}

#[test]
fn every_block_is_exact_and_aligned_for_tshark() {
    let dir = TempDir::new("blocks");
    let f = dir.path("blocks.pcapng");
    write_sample(&f, 10);
    let out = stdout_of(
        "tshark",
        &[
            "-r",
            p(&f),
            "-X",
            "read_format:MIME Files Format",
            "-T",
            "fields",
            "-e",
            "pcapng.block.type",
            "-e",
            "pcapng.block.length",
            "-e",
            "pcapng.block.length_trailer",
        ],
    );
    let mut cols = out.trim_end().split('\t');
    let t: Vec<&str> = cols.next().unwrap_or("").split(',').collect();
    let l: Vec<u64> = cols
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let l2: Vec<u64> = cols
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(l, l2, "leading and trailing lengths");
    assert_eq!(
        l.iter().sum::<u64>(),
        std::fs::metadata(&f).expect("stat").len()
    );
    assert!(l.iter().all(|n| n % 4 == 0), "4-byte aligned: {l:?}");
    // SHB, IDB, 2 process entries, 10 EPBs, periodic + final app records, ISB.
    assert_eq!(t.len(), 1 + 1 + 2 + 10 + 2 + 1, "{t:?}");
    assert_eq!(t.iter().filter(|x| **x == "0x00000bad").count(), 4, "{t:?}");
}

#[test]
fn editcap_round_trip_keeps_our_block() {
    let dir = TempDir::new("editcap");
    let f = dir.path("in.pcapng");
    let g = dir.path("out.pcapng");
    let sample = write_sample(&f, 50);
    let o = run("editcap", &["-F", "pcapng", p(&f), p(&g)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_tools_accept(&g);
    let cb = stdout_of("tshark", &["-r", p(&g), "-Y", "frame.cb_pen == 32473"]);
    assert_eq!(
        cb.lines().count(),
        2,
        "our two app-record blocks survive editcap"
    );

    let mapped = pcapng::open_file(&g).expect("open");
    let mut table = pcapng::AppTable::new();
    let mut packets = 0;
    let mut processes = 0;
    for r in mapped.reader().expect("reader") {
        match r.expect("editcap output decodes") {
            Record::AppRecords {
                sequence,
                final_table,
                part,
                parts,
                apps,
            } => table.merge_block(sequence, final_table, part, parts, apps),
            Record::Packet(pk) => {
                assert_eq!(pk.ts_ns, sample.packets[packets].0);
                packets += 1;
            }
            Record::Process(_) => processes += 1,
            _ => {}
        }
    }
    assert_eq!(packets, sample.packets.len());
    assert_eq!(
        processes, 2,
        "Wireshark-PEN process entries survive editcap"
    );
    assert!(table.final_complete());
    let names: Vec<&str> = table.apps().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["curl", "dig"]);
    assert_eq!(table.apps()[0].sockets.len(), 3);
}

#[test]
fn tcpdump_reads_the_packets() {
    let dir = TempDir::new("tcpdump");
    let f = dir.path("t.pcapng");
    let sample = write_sample(&f, 40);
    let out = stdout_of("tcpdump", &["-r", p(&f), "-nn", "--nano", "-tt"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), sample.packets.len(), "{out}");
    for (l, (ts, _, _, _)) in lines.iter().zip(&sample.packets) {
        assert!(l.starts_with(&epoch(*ts)), "{l}");
        assert!(l.contains("127.0.0.1.40000 > 127.0.0.2.53"), "{l}");
    }
}

#[test]
fn lua_dissector_shows_app_names() {
    let dir = TempDir::new("lua");
    let f = dir.path("lua.pcapng");
    write_sample(&f, 5);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/wireshark/apptag.lua"
    );
    let lua = format!("lua_script:{script}");
    let v = stdout_of("tshark", &["-X", &lua, "-r", p(&f), "-V"]);
    assert!(v.contains("apptag application records"), "{v}");
    assert!(v.contains("Name: curl") && v.contains("Name: dig"), "{v}");
    assert!(v.contains("Socket: UDP [::1]:40000 -> [::1]:53"), "{v}");
    assert!(!v.contains("malformed"), "{v}");
    let only = stdout_of(
        "tshark",
        &["-X", &lua, "-r", p(&f), "-Y", "apptag.app.name == \"dig\""],
    );
    assert_eq!(only.lines().count(), 1, "{only}");
    let procs = stdout_of(
        "tshark",
        &[
            "-X",
            &lua,
            "-r",
            p(&f),
            "-Y",
            "apptag.process.name == \"curl\"",
        ],
    );
    assert_eq!(procs.lines().count(), 1, "{procs}");
}

#[test]
fn apps_command_prints_json_with_names_and_pids() {
    let dir = TempDir::new("apps");
    let f = dir.path("apps.pcapng");
    write_sample(&f, 5);
    let apps_cmd = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_apptag"));
        c.arg("apps").arg(&f);
        if json {
            c.arg("--json");
        }
        let out = c.output().expect("run apptag apps");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let out = apps_cmd(true);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    let apps = v["apps"].as_array().expect("apps array");
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["name"], "curl");
    assert_eq!(apps[0]["pids"], serde_json::json!([4242]));
    assert_eq!(apps[0]["sockets"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["final_table"], true);
    let table = String::from_utf8(apps_cmd(false)).expect("utf-8");
    assert!(table.contains("curl  pids 4242"), "{table}");
    assert!(table.contains("127.0.0.1:40001"), "{table}");
}

#[test]
fn apptag_apps_command_line() {
    let dir = TempDir::new("apps-cli");
    let f = dir.path("cli.pcapng");
    write_sample(&f, 5);
    let bin = env!("CARGO_BIN_EXE_apptag");
    let json = stdout_of(bin, &["apps", p(&f), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON from apptag apps");
    let names: Vec<&str> = v["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["curl", "dig"]);
    assert_eq!(v["apps"][1]["pids"], serde_json::json!([5151]));
    let table = stdout_of(bin, &["apps", p(&f)]);
    assert!(table.contains("dig  pids 5151"), "{table}");
    let bad = run(bin, &["apps", "/nonexistent.pcapng"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot open /nonexistent.pcapng"));
}

#[test]
fn oversized_packets_are_cut_to_the_snap_length_wireshark_accepts() {
    use apptag::model::{InterfaceInfo, Packet};
    use apptag::pcapng::{SectionInfo, Writer};
    let dir = TempDir::new("big");
    let f = dir.path("big.pcapng");
    let mut w = Writer::create(&f, &SectionInfo::detect()).expect("create");
    let unlimited = w
        .add_interface(&InterfaceInfo {
            name: "big".into(),
            linktype: 1,
            snaplen: 0,
            filter: None,
        })
        .expect("idb");
    let small = w
        .add_interface(&InterfaceInfo {
            name: "small".into(),
            linktype: 1,
            snaplen: 100,
            filter: None,
        })
        .expect("idb");
    let frame = udp_frame([127, 0, 0, 1], 1, [127, 0, 0, 1], 2, 300_000);
    for interface in [unlimited, small] {
        w.write_packet(&Packet {
            ts_ns: T0,
            interface,
            orig_len: 0,
            data: &frame,
            direction: Direction::Inbound,
            pid: 0,
            tid: 0,
        })
        .expect("packet");
    }
    w.flush().expect("flush");
    drop(w);
    assert_tools_accept(&f);
    let out = stdout_of(
        "tshark",
        &[
            "-r",
            p(&f),
            "-T",
            "fields",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.len",
        ],
    );
    assert_eq!(out, "262144\t300000\n100\t300000\n");
}
