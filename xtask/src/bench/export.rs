//! `cargo xtask bench export [RECORDS] [DIR]`: flow records per second on one core for each
//! encoding of apptag::export (apptag/examples/export_bench.rs, release mode, pinned to one
//! CPU with taskset when it is there). Prints the Markdown table for docs/BENCHMARKS.md.
use anyhow::{Context, Result};

use crate::util::{cargo, run_cmd};

pub fn run(args: &[String]) -> Result<()> {
    run_cmd(cargo().args([
        "build",
        "--quiet",
        "--release",
        "--package",
        "apptag",
        "--example",
        "export_bench",
    ]))
    .context("building the export benchmark")?;
    let bin = crate::util::root().join("target/release/examples/export_bench");
    let mut cmd = if crate::util::cmd_ok(std::process::Command::new("taskset").arg("-V")) {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(&bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    run_cmd(cmd.args(args)).context("export benchmark failed")
}
