//! `cargo xtask fuzz TARGET --secs N` and `cargo xtask fuzz --list`: coverage-guided fuzzing
//! of everything apptag reads from outside, with cargo-fuzz (libFuzzer) on the nightly
//! toolchain. The targets live in apptag/fuzz (a workspace of its own); see docs/FUZZING.md.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, root, run_cmd};

fn fuzz_dir() -> PathBuf {
    root().join("apptag/fuzz")
}

/// The targets: one file per target in apptag/fuzz/fuzz_targets.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    Ok(names)
}

pub fn list() -> Result<()> {
    for t in targets()? {
        println!("{t}");
    }
    Ok(())
}

/// What one run did, from libFuzzer's final statistics.
#[derive(Debug, Default)]
struct Stats {
    executions: u64,
    /// Seconds libFuzzer ran (without the build).
    secs: u64,
    crashes: Vec<String>,
}

pub fn run(target: &str, secs: u64) -> Result<()> {
    let all = targets()?;
    if !all.iter().any(|t| t == target) {
        bail!(
            "no fuzz target `{target}`; the targets are: {} (`cargo xtask fuzz --list`)",
            all.join(", ")
        );
    }
    crate::setup::ensure_cargo_fuzz()?;
    let corpus = fuzz_dir().join("corpus").join(target);
    seed(&corpus)?;
    let artifacts = fuzz_dir().join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let before = files(&artifacts);

    // No sanitizer: the code under test is safe Rust (its few `unsafe` blocks map files and
    // are not reached by these targets), so panics and overflow checks find the bugs, and
    // the two shared cores run about twice as many inputs as under AddressSanitizer.
    let start = Instant::now();
    let mut child = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "--sanitizer", "none"])
        .args(["--fuzz-dir", &fuzz_dir().display().to_string()])
        .arg(target)
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={secs}"),
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            &format!("-artifact_prefix={}/", artifacts.display()),
        ])
        .current_dir(root().join("apptag"))
        // The fuzz build needs no kernel programs (and has its own target directory).
        .env("AYA_BUILD_SKIP", "1")
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start cargo fuzz")?;
    let mut stats = Stats::default();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.context("reading the fuzzer's output")?;
            eprintln!("{line}");
            if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.executions = v.trim().parse().unwrap_or(0);
            }
            // "Done 1299614 runs in 61 second(s)"
            if let Some(rest) = line.strip_prefix("Done ")
                && let Some((_, t)) = rest.split_once(" runs in ")
            {
                stats.secs = t
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let elapsed = start.elapsed().as_secs();
    stats.crashes = files(&artifacts)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    println!(
        "fuzz {target}: {} executions in {} s of fuzzing ({elapsed} s with the build), {} crash(es)",
        stats.executions,
        stats.secs,
        stats.crashes.len()
    );
    for c in &stats.crashes {
        println!(
            "  crash: {} (replay: cargo +nightly fuzz run --fuzz-dir apptag/fuzz -s none {target} {}; \
             then keep it in apptag/tests/fuzz-regressions/{target}/)",
            artifacts.join(c).display(),
            artifacts.join(c).display()
        );
    }
    if !stats.crashes.is_empty() {
        bail!("fuzz target {target} crashed");
    }
    if !status.success() {
        bail!("cargo fuzz run {target} failed: {status}");
    }
    Ok(())
}

/// Starts (or tops up) the corpus with the public captures and files from apptag's writer.
fn seed(corpus: &Path) -> Result<()> {
    let root_corpus = corpus.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut args = vec![
        "run".to_string(),
        "--quiet".into(),
        "--package".into(),
        "apptag".into(),
        "--example".into(),
        "fuzz_seeds".into(),
        "--".into(),
        root_corpus.display().to_string(),
    ];
    let captures = root().join("../shared/captures");
    if captures.is_dir() {
        args.push(captures.display().to_string());
    } else {
        eprintln!(
            "fuzz: {} not found: seeding from generated files only",
            captures.display()
        );
    }
    run_cmd(cargo().args(&args)).context("writing the seed corpus")?;
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
