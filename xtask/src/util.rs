use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cmd_ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    // A CI build is built once: incremental state would only take disk.
    if std::env::var_os("CI").is_some() {
        c.env("CARGO_INCREMENTAL", "0");
    }
    c
}

pub fn build_release() -> Result<()> {
    run_cmd(cargo().args(["build", "--release", "--package", "apptag"]))
}

/// The release apptag and the test crate's traffic client, which benches run as real
/// short-lived processes.
pub fn build_release_and_traffic() -> Result<()> {
    build_release()?;
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "apptag-integration-tests",
        "--bin",
        "apptag-traffic",
    ]))
}

pub fn apptag_bin() -> PathBuf {
    root().join("target/release/apptag")
}

pub fn run_apptag(args: &[String]) -> Result<()> {
    let bin = apptag_bin();
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bin);
        c
    };
    let status = cmd
        .args(args)
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

pub fn test(filter: Option<&str>, lint: bool) -> Result<()> {
    warn_if_disk_short();
    if lint {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))
            .context("code is not formatted: run `cargo fmt --all`")?;
    }
    // Unit tests, doc tests and the integration-test crate. The integration tests need root
    // to load programs; when not root they run under sudo.
    // The default members: everything but the kernel crate, which only builds for the
    // BPF target (apptag's build script builds it).
    // Examples are benches' drivers: clippy --all-targets checks that they compile, and
    // leaving them out of the test build saves their link time and disk.
    let mut args = vec!["test", "--lib", "--bins", "--tests"];
    if let Some(f) = filter {
        args.push("--");
        args.push(f);
    }
    let doc = filter.is_none();
    if is_root() {
        run_cmd(cargo().args(&args))?;
        if doc {
            run_cmd(cargo().args(["test", "--doc"]))?;
        }
    } else {
        let cargo_path = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run_cmd(
            Command::new("sudo")
                .arg("-E")
                .arg(format!(
                    "PATH={}",
                    std::env::var("PATH").unwrap_or_default()
                ))
                .arg(cargo_path)
                .args(&args)
                .current_dir(root()),
        )?;
    }
    if lint {
        run_cmd(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
            .context("clippy found problems")?;
    }
    Ok(())
}

/// A build that runs out of disk fails inside the linker with an unhelpful signal; say up
/// front when the target directory's file system is short.
fn warn_if_disk_short() {
    const NEED_MB: u64 = 6 * 1024;
    let target = root().join("target");
    let probe = if target.exists() { target } else { root() };
    let out = Command::new("df").args(["-Pm"]).arg(&probe).output();
    let free_mb = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .nth(1)
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|v| v.parse::<u64>().ok())
            })
    });
    if let Some(free) = free_mb.filter(|&f| f < NEED_MB) {
        eprintln!(
            "warning: {free} MB free under {}; a full test build needs about {NEED_MB} MB. \
             Free some space (for example `cargo clean`) if the build fails in the linker.",
            probe.display()
        );
    }
}
