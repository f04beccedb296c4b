//! Installs what a fresh machine of this project's kind lacks. Every step first checks
//! whether its work is already done, so a second run takes seconds.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::util::{cmd_ok, is_root, run_cmd};

/// Debian packages used by the build (LLVM for bpf-linker, libpcap for filters) and by the
/// tests and benchmarks (Wireshark's tools, tcpdump, iproute2, traffic generators).
pub const DEB_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "libpcap-dev",
    "pkg-config",
    "tshark",
    "tcpdump",
    "iproute2",
    "bpftool",
    "netsniff-ng",
    "iperf3",
    "socat",
    "curl",
    "python3",
    "python3-pip",
    "procps",
    // `apptag report --plot` draws text with this font; the report bench measures with
    // GNU time.
    "fonts-dejavu-core",
    "time",
    // `cargo xtask bench analysis` measures tcpflow beside apptag's reassembly.
    "tcpflow",
    // `systemd-analyze verify` checks contrib/systemd/apptag.service; setpriv (util-linux)
    // runs its ExecStart as the unit's user and capabilities in the sensor tests.
    "systemd",
    "util-linux",
    // The export tests: a ClickHouse server they start on loopback, and the Java runtime
    // that pyspark runs on.
    "clickhouse-server",
    "openjdk-17-jre-headless",
    // The HTML report's test loads the page in a real headless browser.
    "chromium",
];

/// PyPI packages for the export tests: Spark in local mode reads the Parquet files,
/// `communityid` is the reference Community ID, `jsonschema` checks the NDJSON records.
pub const PYPI_PACKAGES: &[(&str, &str)] = &[
    ("pyspark", "pyspark"),
    ("communityid", "communityid"),
    ("jsonschema", "jsonschema"),
    ("rfc3339-validator", "rfc3339_validator"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Full setup with progress messages.
pub fn run() -> Result<()> {
    ensure_debs()?;
    ensure_pypi()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    eprintln!("setup: everything is in place");
    Ok(())
}

/// The same checks, quiet when nothing is missing (used before build/run/test/bench).
pub fn ensure() -> Result<()> {
    run()
}

/// cargo-fuzz, for `cargo xtask fuzz` only (`cargo xtask setup --fuzz`); not part of
/// [`ensure`], so CI's `cargo xtask test` does not spend minutes building it.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if cmd_ok(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz (a minute or two)");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn missing_debs() -> Vec<&'static str> {
    DEB_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn ensure_debs() -> Result<()> {
    let missing = missing_debs();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "these Debian packages are missing: {}. Run `sudo cargo xtask setup` or \
             `sudo apt-get install -y {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    // tshark asks whether non-root users may capture; answer for it.
    let mut preseed = Command::new("debconf-set-selections");
    preseed.stdin(std::process::Stdio::piped());
    if let Ok(mut child) = preseed.spawn() {
        use std::io::Write;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin
                .write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n");
        }
        let _ = child.wait();
    }
    run_cmd(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Installs the PyPI packages into the `python3` on PATH (the one the tests run).
fn ensure_pypi() -> Result<()> {
    let missing: Vec<&str> = PYPI_PACKAGES
        .iter()
        .filter(|(_, module)| {
            !cmd_ok(Command::new("python3").args(["-c", &format!("import {module}")]))
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing PyPI packages: {}", missing.join(" "));
    // Debian's own python3 refuses pip without --break-system-packages (PEP 668); other
    // interpreters accept the flag.
    run_cmd(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--break-system-packages"])
            .args(&missing),
    )
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("running rustup: is rustup installed?")?;
    if !out.status.success() {
        eprintln!("setup: installing the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        return nightly_sysroot();
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn ensure_rust_src() -> Result<()> {
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain (needed for -Z build-std=core)");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn ensure_bpf_linker() -> Result<()> {
    if cmd_ok(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.join("bin/bpf-linker"));
    if let Some(path) = &cargo_bin
        && path.is_file()
    {
        bail!(
            "bpf-linker is installed at {} but that directory is not in PATH; add it to PATH",
            path.display()
        );
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (1-2 minutes)");
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
    )
}
