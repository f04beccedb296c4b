//! `cargo xtask bench export [RECORDS] [DIR]`: flow records per second on one core for each
//! encoding of apptag::export (apptag/examples/export_bench.rs, release mode, pinned to one
//! CPU with taskset when it is there). Prints the Markdown table for docs/BENCHMARKS.md.
//!
//! Then, as root (skipped with `--no-capture`), the sensor with and without `--export` in the
//! same run, on the traffic of `cargo xtask bench capture` (trafgen over a veth pair, whose
//! frames go to a bound UDP socket so that they are attributed and exported): both apptag
//! commands (and tcpdump) capture the same frames at the same time, so their packet counts
//! and losses compare at the same offered load. `--capture-rates R,R` (default 100000,max)
//! and `--capture-secs S` (default 5) choose the load.
use anyhow::{Context, Result};

use crate::util::{cargo, run_cmd};

pub fn run(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut capture = true;
    let mut rates = "100000,max".to_string();
    let mut secs = "5".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-capture" => capture = false,
            "--capture-rates" => rates = it.next().context("--capture-rates R,R")?.clone(),
            "--capture-secs" => secs = it.next().context("--capture-secs S")?.clone(),
            _ => rest.push(a.clone()),
        }
    }
    encodings(&rest)?;
    if !capture {
        return Ok(());
    }
    if !crate::util::is_root() {
        eprintln!("note: not root, so export on/off under capture is skipped");
        return Ok(());
    }
    let bin = crate::util::apptag_bin();
    let plain = format!(
        "{} -i {{iface}} -w {{file}} --duration {{secs}}",
        bin.display()
    );
    // The records go to a file next to the capture, removed with the bench's directory.
    let export = format!("{plain} --export file:{{file}}.ndjson --export-interval 1");
    let args: Vec<String> = [
        "--frames",
        "60,1514",
        "--rates",
        &rates,
        "--secs",
        &secs,
        "--udp-sink",
        "--apptag-cmd",
        &plain,
        "--apptag-cmd",
        &export,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!("\n### Sensor with and without --export, same frames at the same time\n");
    super::capture::run(&args)
}

fn encodings(args: &[String]) -> Result<()> {
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
