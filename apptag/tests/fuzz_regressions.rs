//! Replays every input that once crashed a fuzz target (apptag/tests/fuzz-regressions/TARGET/)
//! through the same harness function the fuzzer ran (apptag/fuzz/src/lib.rs, included here),
//! so a fix that regresses fails `cargo xtask test` without nightly or cargo-fuzz.
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::PathBuf;

/// Runs each saved input of `target`; returns how many there were. A panic fails the test;
/// an error must say what was wrong.
fn replay(target: &str) -> usize {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no harness for {target}"));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in &paths {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match run(&data) {
            Ok(_) => {}
            Err(e) => assert!(!e.trim().is_empty(), "{}: empty error", path.display()),
        }
    }
    paths.len()
}

macro_rules! replays {
    ($($target:ident),* $(,)?) => {
        const REPLAYED: &[&str] = &[$(stringify!($target)),*];
        $(
            #[test]
            fn $target() {
                let n = replay(stringify!($target));
                eprintln!("{}: {n} saved input(s) replayed", stringify!($target));
            }
        )*
    };
}

replays!(
    dissect, pcapng, pcap, apprecord, apps, report, extract, defrag, tcp, streams
);

/// Every harness has a regression test above, so a new fuzz target cannot be forgotten here.
#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = harness::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, REPLAYED);
}
