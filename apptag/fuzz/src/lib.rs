//! The bodies of the fuzz targets, one function per target, shared by the libFuzzer
//! binaries (`fuzz_targets/`) and by the regression test that replays saved crashes
//! (`apptag/tests/fuzz_regressions.rs` includes this file), so a saved input replays through
//! exactly the code that found it.
//!
//! Each function feeds one input to an entry point that reads outside data and returns how
//! many items it read, or the error that stopped it. A panic (and so a libFuzzer crash) is
//! the only wrong answer, besides `extract` writing a file that its own reader rejects.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use apptag::dissect;
use apptag::pcapng::{self, AppTable, ChangeTracker, Reader, Record};
use apptag::report::{self, extract::Selector, source::Records};

/// What one input did: items read, or the error that stopped reading.
pub type Outcome = Result<u64, String>;

/// One target's body.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target by name, as `cargo xtask fuzz --list` shows them.
pub const TARGETS: &[(&str, Target)] = &[
    ("dissect", dissect),
    ("pcapng", pcapng),
    ("pcap", pcap),
    ("apprecord", apprecord),
    ("apps", apps),
    ("report", report),
    ("extract", extract),
];

/// The link types the dissector knows, plus one it does not; the first input byte picks one.
pub const LINKTYPES: [u16; 11] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147];

/// One frame: byte 0 picks the link type, the rest is the frame. ICMP errors are followed
/// into their quoted datagram, and into its quote, as deep as they go.
pub fn dissect(data: &[u8]) -> Outcome {
    let Some((&pick, frame)) = data.split_first() else {
        return Err("empty input".into());
    };
    let linktype = LINKTYPES[usize::from(pick) % LINKTYPES.len()];
    let mut d = dissect::dissect(linktype, frame);
    let mut layers = 1;
    loop {
        let _ = d.five_tuple().canonical();
        let _ = (d.ip_five_tuple(), d.has_ports());
        match d.icmp_error_quote() {
            Some(q) => d = q,
            None => return Ok(layers),
        }
        layers += 1;
    }
}

/// The pcapng reader over a whole file, on past recoverable errors.
pub fn pcapng(data: &[u8]) -> Outcome {
    let mut r = Reader::new(data).map_err(|e| e.to_string())?;
    let mut n = 0;
    let mut last = None;
    while let Some(rec) = r.next_record() {
        match rec {
            Ok(Record::Packet(p)) => {
                let lt = r
                    .interfaces()
                    .get(p.interface as usize)
                    .map_or(1, |i| i.linktype);
                let _ = dissect::dissect(lt, p.data);
            }
            Ok(_) => {}
            Err(e) => last = Some(e.to_string()),
        }
        n += 1;
    }
    assert!(
        r.offset() <= data.len() as u64,
        "reader offset past the end"
    );
    let prefix = pcapng::reader::valid_prefix_len(data);
    assert!(prefix <= data.len() as u64, "valid prefix past the end");
    last.map_or(Ok(n), Err)
}

/// The classic pcap reader, and the format sniffer in front of both readers.
pub fn pcap(data: &[u8]) -> Outcome {
    let mut n = 0;
    if let Ok(mut r) = report::pcap::PcapReader::new(data) {
        while let Some(p) = r.next_packet() {
            if p.is_err() {
                break;
            }
            n += 1;
        }
    }
    let mut records = Records::new(data).map_err(|e| e.to_string())?;
    while let Some(rec) = records.next_record() {
        rec.map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// The application-record decoder (the custom data after the PEN), then the table merge
/// and change tracking fed with what it decoded; and the process-entry decoder.
pub fn apprecord(data: &[u8]) -> Outcome {
    let _ = pcapng::process::decode(data, 0);
    let Some(block) = pcapng::apprecord::decode(data, 0).map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    let n = block.apps.len() as u64;
    let mut table = AppTable::new();
    for _ in 0..2 {
        let apps = block.apps.clone();
        table.merge_block(
            block.sequence,
            block.final_table,
            block.part,
            block.parts,
            apps,
        );
    }
    let _ = table.final_complete();
    let _ = ChangeTracker::new().changes(table.apps());
    Ok(n)
}

/// `apptag apps FILE` and `apptag apps FILE --json`.
pub fn apps(data: &[u8]) -> Outcome {
    let file = TempFile::with(data);
    let got = pcapng::apps::collect(file.path()).map_err(|e| e.to_string())?;
    for json in [false, true] {
        pcapng::apps::print(file.path(), json, &mut std::io::sink()).map_err(|e| e.to_string())?;
    }
    Ok(got.apps.len() as u64)
}

/// `apptag report FILE --flows`, as a table and as JSON.
pub fn report(data: &[u8]) -> Outcome {
    let r = report::analyze_bytes(data, "fuzz", report::Options { flows: true })
        .map_err(|e| e.to_string())?;
    let _ = report::table::render(&r);
    serde_json::to_string(&r).map_err(|e| e.to_string())?;
    Ok(r.totals.packets)
}

/// `apptag extract FILE -o OUT` with a selector picked by the input's length (so the file
/// bytes stay as they are). What extract writes must read back without error.
pub fn extract(data: &[u8]) -> Outcome {
    let input = TempFile::with(data);
    let output = TempFile::unused();
    let sel = match data.len() % 3 {
        0 => Selector::App("curl".into()),
        1 => Selector::Pid(4242),
        _ => Selector::Cgroup("/user.slice".into()),
    };
    let stats =
        report::extract::extract(input.path(), output.path(), &sel).map_err(|e| e.to_string())?;
    let written = std::fs::read(output.path()).map_err(|e| e.to_string())?;
    let mut r = Reader::new(&written).unwrap_or_else(|e| panic!("extract wrote no pcapng: {e}"));
    while let Some(rec) = r.next_record() {
        if let Err(e) = rec {
            panic!("extract wrote a file its own reader rejects: {e}");
        }
    }
    Ok(stats.packets_written)
}

/// A file for the entry points that take a path; in /dev/shm when there is one, so the
/// fuzzer's loop does not wait on a disk. Removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(data: &[u8]) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("apptag-fuzz-{}-{n}", std::process::id()));
        std::fs::write(&path, data)
            .unwrap_or_else(|e| panic!("harness: writing {}: {e}", path.display()));
        TempFile(path)
    }

    /// A name only: for an output the entry point creates.
    fn unused() -> Self {
        let t = Self::with(&[]);
        let _ = std::fs::remove_file(t.path());
        t
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
