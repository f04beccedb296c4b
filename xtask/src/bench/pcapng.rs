//! `cargo xtask bench pcapng [PACKETS] [DIR]`: apptag's pcapng writer and reader against
//! pcap-file 3.0.0-rc1 and pcap-parser 0.17 on the same 64-byte packets (with epb_flags and
//! epb_processid_threadid). The measuring code is apptag/examples/pcapng_bench.rs, built in
//! release mode; it prints the Markdown tables for docs/BENCHMARKS.md.
use anyhow::{Context, Result};

use crate::util::{cargo, run_cmd};

pub fn run(args: &[String]) -> Result<()> {
    run_cmd(
        cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "apptag",
                "--example",
                "pcapng_bench",
                "--",
            ])
            .args(args),
    )
    .context("pcapng benchmark failed")
}
