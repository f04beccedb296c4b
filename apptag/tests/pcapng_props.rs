//! Property tests: the reader never panics on damaged input, and application tables survive
//! a write/read round trip however they are split.
mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use apptag::model::{AppRecord, Provenance, SocketRecord};
use apptag::pcapng::{self, AppTable, Reader, Record, SectionInfo, Writer};
use common::*;
use proptest::prelude::*;

fn section() -> SectionInfo {
    SectionInfo {
        hardware: "x86_64".into(),
        os: "Linux".into(),
        userappl: "apptag test".into(),
    }
}

fn sample_bytes() -> Vec<u8> {
    static SAMPLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SAMPLE
        .get_or_init(|| {
            let dir = TempDir::new("props");
            let f = dir.path("s.pcapng");
            write_sample(&f, 12);
            std::fs::read(&f).expect("read sample")
        })
        .clone()
}

/// Reads everything; returns the number of records. Must never panic.
fn read_all(data: &[u8]) -> usize {
    read_counted(data).0
}

/// Reads everything: (records, errors). Checks what any input must satisfy: every packet's
/// data lies inside the input, a block is at least 12 bytes so there are at most len/12
/// records (a damaged block inside a valid frame is reported and the walk goes on).
fn read_counted(data: &[u8]) -> (usize, usize) {
    let Ok(r) = Reader::new(data) else {
        // Refused outright: one error, no record.
        return (0, 1);
    };
    let (mut n, mut errors) = (0, 0);
    let range = data.as_ptr_range();
    for rec in r {
        match &rec {
            Ok(Record::Packet(p)) => {
                let pr = p.data.as_ptr_range();
                assert!(
                    p.data.is_empty() || (pr.start >= range.start && pr.end <= range.end),
                    "packet data outside the input"
                );
            }
            Ok(_) => {}
            Err(_) => errors += 1,
        }
        n += 1;
    }
    assert!(
        n <= data.len() / 12 + 1,
        "{n} records from {} bytes",
        data.len()
    );
    (n, errors)
}

fn arb_provenance() -> impl Strategy<Value = Provenance> {
    prop_oneof![
        Just(Provenance::Unknown),
        any::<u32>().prop_map(Provenance::Hook),
        Just(Provenance::SockDiag),
        Just(Provenance::Procfs),
    ]
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn arb_socket() -> impl Strategy<Value = SocketRecord> {
    (
        (
            arb_addr(),
            any::<u16>(),
            arb_addr(),
            any::<u16>(),
            any::<u8>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (any::<u32>(), arb_provenance(), any::<u64>()),
    )
        .prop_map(
            |((la, lp, ra, rp, pr), (first, pi, po, bi, bo), (pid, prov, at))| {
                SocketRecord {
                    local_addr: la,
                    local_port: lp,
                    remote_addr: ra,
                    remote_port: rp,
                    protocol: pr,
                    first_ns: first,
                    last_ns: first.saturating_add(pi),
                    packets_in: pi,
                    packets_out: po,
                    bytes_in: bi,
                    bytes_out: bo,
                    cookie: 0, // set unique below
                    pid,
                    provenance: prov,
                    attributed_ns: at,
                }
            },
        )
}

fn arb_app() -> impl Strategy<Value = AppRecord> {
    (
        (
            "[a-z\u{e9}\u{4e2d}]{0,20}",
            "(/[a-z0-9]{1,8}){0,4}",
            "(/[a-z.]{1,10}){0,3}",
        ),
        proptest::collection::vec(any::<u32>(), 0..5),
        proptest::collection::vec("[ -~]{0,12}", 0..5),
        (any::<u64>(), any::<u32>(), arb_provenance()),
        proptest::collection::vec(arb_socket(), 0..40),
    )
        .prop_map(
            |((name, exe, cgroup), mut pids, cmdline, (start, uid, prov), sockets)| {
                pids.sort_unstable();
                pids.dedup();
                AppRecord {
                    name,
                    pids,
                    cmdline,
                    exe,
                    start_ns: start,
                    uid,
                    cgroup,
                    provenance: prov,
                    sockets,
                }
            },
        )
}

/// Unique app keys and socket cookies, so merging is the identity.
fn normalise(mut apps: Vec<AppRecord>) -> Vec<AppRecord> {
    let mut cookie = 1u64;
    for (i, a) in apps.iter_mut().enumerate() {
        a.name = format!("{}#{i}", a.name);
        for s in &mut a.sockets {
            s.cookie = cookie;
            cookie += 1;
        }
    }
    apps
}

fn round_trip(apps: &[AppRecord], final_table: bool) -> (Vec<AppRecord>, Vec<usize>, bool) {
    let mut w = Writer::new(Vec::new(), &section()).expect("writer");
    w.write_app_records(apps, final_table).expect("write");
    let bytes = w.into_inner().expect("bytes");
    let mut table = AppTable::new();
    let mut sizes = Vec::new();
    let mut r = Reader::new(&bytes).expect("reader");
    let mut last = 0;
    while let Some(rec) = r.next_record() {
        let off = r.offset() as usize;
        match rec.expect("decodes") {
            Record::AppRecords {
                sequence,
                final_table,
                part,
                parts,
                apps,
            } => {
                sizes.push(off - last);
                table.merge_block(sequence, final_table, part, parts, apps);
            }
            Record::Section => {}
            other => panic!("unexpected record {other:?}"),
        }
        last = off;
    }
    (table.apps().to_vec(), sizes, table.final_complete())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn app_tables_round_trip(apps in proptest::collection::vec(arb_app(), 0..12), fin in any::<bool>()) {
        let apps = normalise(apps);
        let (back, sizes, complete) = round_trip(&apps, fin);
        prop_assert_eq!(&back, &apps);
        prop_assert!(sizes.iter().all(|&s| s <= pcapng::MAX_APP_BLOCK_LEN), "{:?}", sizes);
        prop_assert_eq!(complete, fin);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn reader_survives_random_bytes(mut data in proptest::collection::vec(any::<u8>(), 0..2048), shb in any::<bool>()) {
        if shb && data.len() >= 12 {
            // A plausible SHB start, to get past the first check into the block walk.
            data[..4].copy_from_slice(&0x0A0D_0D0Au32.to_le_bytes());
            data[8..12].copy_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        }
        let (_, errors) = read_counted(&data);
        let valid = pcapng::reader::valid_prefix_len(&data) as usize;
        prop_assert!(valid <= data.len());
        // Bytes the reader accepted without complaint are all valid blocks.
        if errors == 0 && shb {
            prop_assert_eq!(valid, data.len());
        }
    }

    #[test]
    fn reader_survives_mutated_files(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut data = sample_bytes();
        for (i, v) in flips {
            let i = i.index(data.len());
            data[i] = v;
        }
        if truncate {
            data.truncate(cut.index(data.len()));
        }
        let (records, errors) = read_counted(&data);
        let valid = pcapng::reader::valid_prefix_len(&data) as usize;
        prop_assert!(valid <= data.len());
        if errors == 0 {
            prop_assert_eq!(valid, data.len(), "{} records, no error", records);
        }
    }
}

#[test]
fn truncated_file_names_the_offset_and_keeps_earlier_records() {
    let data = sample_bytes();
    let full = read_all(&data);
    let cut = data.len() - 10;
    let mut r = Reader::new(&data[..cut]).expect("reader");
    let mut ok = 0;
    let mut err = None;
    for rec in r.by_ref() {
        match rec {
            Ok(_) => ok += 1,
            Err(e) => err = Some(e),
        }
    }
    assert_eq!(
        ok,
        full - 1,
        "every block before the damaged one is returned"
    );
    let msg = err.expect("an error").to_string();
    assert!(msg.contains("truncated pcapng at byte"), "{msg}");
    assert_eq!(r.offset(), pcapng::reader::valid_prefix_len(&data[..cut]));
}

#[test]
fn large_table_is_split_under_64k_and_tools_accept_it() {
    let dir = TempDir::new("split");
    let f = dir.path("split.pcapng");
    let apps: Vec<AppRecord> =
        normalise((0..40).map(|i| app(&format!("app{i}"), i, 300)).collect());
    let mut w = Writer::create(&f, &section()).expect("create");
    w.add_interface(&eth_lo()).expect("idb");
    w.write_app_records(&apps, true).expect("write");
    w.flush().expect("flush");
    drop(w);
    assert_tools_accept(&f);
    let out = stdout_of(
        "tshark",
        &[
            "-r",
            f.to_str().unwrap_or(""),
            "-Y",
            "frame.cb_pen == 32473",
            "-T",
            "fields",
            "-e",
            "frame.len",
        ],
    );
    let lens: Vec<usize> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(lens.len() > 10, "{lens:?}");
    // frame.len is the custom data; the block adds 16 bytes of header, PEN and trailer.
    assert!(
        lens.iter().all(|&l| l + 16 <= pcapng::MAX_APP_BLOCK_LEN),
        "{lens:?}"
    );
    let g = dir.path("split-editcap.pcapng");
    let o = run(
        "editcap",
        &[f.to_str().unwrap_or(""), g.to_str().unwrap_or("")],
    );
    assert!(o.status.success());
    let m = pcapng::open_file(&g).expect("open");
    let mut t = AppTable::new();
    for rec in m.reader().expect("reader") {
        if let Record::AppRecords {
            sequence,
            final_table,
            part,
            parts,
            apps,
        } = rec.expect("ok")
        {
            t.merge_block(sequence, final_table, part, parts, apps);
        }
    }
    assert!(t.final_complete());
    assert_eq!(t.apps(), &apps[..]);
}

#[test]
fn periodic_changes_then_final_table_merge_to_the_full_table() {
    let mut table: Vec<AppRecord> =
        normalise((0..5).map(|i| app(&format!("a{i}"), i, 4)).collect());
    let mut w = Writer::new(Vec::new(), &section()).expect("writer");
    assert_eq!(w.write_app_changes(&table).expect("first"), 5);
    assert_eq!(w.write_app_changes(&table).expect("unchanged"), 0);
    table[2].sockets[1].packets_in += 10;
    table[4].pids.push(99);
    assert_eq!(w.write_app_changes(&table).expect("changed"), 2);
    let periodic_only = w.into_inner().expect("bytes");

    // The periodic writes alone (a killed capture) already merge to the full table.
    let mut t = AppTable::new();
    let mut seen_sockets = Vec::new();
    for rec in Reader::new(&periodic_only).expect("reader") {
        if let Record::AppRecords {
            sequence,
            final_table,
            part,
            parts,
            apps,
        } = rec.expect("ok")
        {
            assert!(!final_table);
            seen_sockets.push(apps.iter().map(|a| a.sockets.len()).sum::<usize>());
            t.merge_block(sequence, final_table, part, parts, apps);
        }
    }
    assert_eq!(
        seen_sockets,
        [20, 1],
        "second change carries one socket and one header"
    );
    assert_eq!(t.apps(), &table[..]);
    assert!(!t.final_complete());
}
