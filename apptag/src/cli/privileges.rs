//! Checks made before a command touches the kernel.
use std::sync::{Arc, atomic::AtomicBool};

use anyhow::{Context, Result};
use apptag::sensor::attribution::Mode;

/// Ctrl-C and SIGTERM set the flag; the command then finishes cleanly.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Names every missing capability at once, instead of failing on the first syscall.
pub fn check_privileges(mode: Mode, capture: bool) -> Result<()> {
    use apptag::sys::*;
    let mut needed = Vec::new();
    if capture {
        needed.push((CAP_NET_RAW, "CAP_NET_RAW"));
    }
    needed.push((CAP_NET_ADMIN, "CAP_NET_ADMIN"));
    if mode == Mode::Ebpf {
        needed.extend([(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]);
    }
    let missing = missing_caps(&needed);
    if missing.is_empty() {
        return Ok(());
    }
    // CAP_SYS_RESOURCE only matters on kernels older than 5.11, which charge BPF memory to
    // RLIMIT_MEMLOCK: named when missing, but never required.
    let mut all: Vec<&str> = needed.iter().map(|(_, n)| *n).collect();
    let mut lacks = missing.clone();
    if mode == Mode::Ebpf {
        all.push("CAP_SYS_RESOURCE");
        if !missing_caps(&[(CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE")]).is_empty() {
            lacks.push("CAP_SYS_RESOURCE (needed on kernels older than 5.11)");
        }
    }
    let setcap: Vec<String> = all.iter().map(|n| n.to_lowercase()).collect();
    anyhow::bail!(
        "apptag needs root, or these capabilities which this process lacks: {}. Run it with \
         sudo (or `cargo xtask run -- ...`), or grant them once with `sudo setcap {}+ep \
         $(command -v apptag)`",
        lacks.join(", "),
        setcap.join(",")
    )
}
