//! The `apptag` command. Argument parsing and error reporting only; the work is in the
//! library.
use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context, Result};
use apptag::attribution::Mode;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "apptag",
    version,
    about = "Capture packets and tag each one with the local application that sent or received it",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    capture: CaptureArgs,
}

/// Capture (the default command). Flags follow tcpdump where tcpdump has them.
#[derive(clap::Args, Debug)]
struct CaptureArgs {
    /// Interface to capture on (repeatable; `any` for all, `lo` for loopback).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// Output pcapng file [default: apptag-HOST-TIMESTAMP.pcapng].
    #[arg(short = 'w', value_name = "FILE")]
    write: Option<std::path::PathBuf>,
    /// Stop after writing this many packets.
    #[arg(short = 'c', value_name = "COUNT")]
    count: Option<u64>,
    /// Snap length: bytes kept of each packet.
    #[arg(short = 's', value_name = "SNAPLEN", default_value_t = 262144)]
    snaplen: u32,
    /// Do not put the interface into promiscuous mode.
    #[arg(short = 'p', long = "no-promiscuous-mode")]
    no_promisc: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// How sockets are attributed to processes.
    #[arg(long, value_enum, default_value_t = Mode::Ebpf)]
    attribution: Mode,
    /// Keep only packets of this process id (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Keep only packets of processes with this name (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    comms: Vec<String>,
    /// Keep only packets of processes in this cgroup (path as in /proc/PID/cgroup, matching
    /// the subtree) or container (id prefix); repeatable.
    #[arg(long = "cgroup", value_name = "PATH|ID")]
    cgroups: Vec<String>,
    /// Capture threads per interface (PACKET_FANOUT) [default: number of CPUs].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Rotate: start a new file after this many megabytes (1,000,000 bytes), like tcpdump -C.
    #[arg(short = 'C', value_name = "MB")]
    file_size: Option<f64>,
    /// Rotate: start a new file every this many seconds, like tcpdump -G.
    #[arg(short = 'G', value_name = "SECONDS")]
    rotate_seconds: Option<f64>,
    /// With -C: keep this many files, overwriting the oldest; with -G: stop after this many.
    #[arg(short = 'W', value_name = "FILES")]
    file_count: Option<u32>,
    /// Seconds between the periodic application-record blocks.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    app_interval: f64,
    /// Capture filter in tcpdump (pcap-filter) syntax.
    #[arg(trailing_var_arg = true, value_name = "FILTER")]
    filter: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Attach the probes and print every socket seen while running, with its process and
    /// how it was attributed (one line each; JSON lines with --json). Needs root.
    Sockets {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// How sockets are attributed.
        #[arg(long, value_enum, default_value_t = Mode::Ebpf)]
        attribution: Mode,
    },
    /// Print the applications and sockets recorded in a capture file (merges the periodic
    /// application-record blocks).
    Apps {
        /// The pcapng file written by apptag.
        file: std::path::PathBuf,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Which applications used the network in a capture: how much, with whom and when.
    Report(apptag::report::cli::ReportArgs),
    /// Write one application's packets (with its process and application records) to a new
    /// pcapng file.
    Extract(apptag::report::cli::ExtractArgs),
}

/// Ctrl-C and SIGTERM set the flag; the command then finishes cleanly.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Names every missing capability at once, instead of failing on the first syscall.
fn check_privileges(mode: Mode, capture: bool) -> Result<()> {
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

fn capture(a: CaptureArgs) -> Result<()> {
    if a.interfaces.is_empty() {
        anyhow::bail!(
            "no interface given: use -i IFACE (e.g. -i lo, -i eth0, -i any); see apptag --help"
        );
    }
    check_privileges(a.attribution, true)?;
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cfg = apptag::pipeline::SensorConfig {
        interfaces: a.interfaces,
        output: a.write.unwrap_or_else(apptag::pipeline::default_output),
        snaplen: a.snaplen,
        promisc: !a.no_promisc,
        filter: (!a.filter.is_empty()).then(|| a.filter.join(" ")),
        count: a.count,
        duration: a.duration.map(Duration::from_secs_f64),
        attribution: a.attribution,
        workers,
        app_interval: Duration::from_secs_f64(a.app_interval.max(0.1)),
        rotation: apptag::pipeline::Rotation {
            max_bytes: a.file_size.map(|mb| (mb * 1e6).max(4096.0) as u64),
            every: a
                .rotate_seconds
                .map(|s| Duration::from_secs_f64(s.max(0.1))),
            max_files: a.file_count.filter(|&w| w > 0),
        },
        pids: a.pids,
        comms: a.comms,
        cgroups: a.cgroups,
    };
    let stop = stop_flag()?;
    log::info!("writing {}", cfg.output.display());
    let s = apptag::pipeline::run(&cfg, stop)?;
    // tcpdump's wording, so scripts and benchmarks that read tcpdump read apptag too.
    eprintln!("{} packets captured", s.written);
    eprintln!(
        "{} packets received by filter",
        s.captured + s.kernel_dropped
    );
    eprintln!("{} packets dropped by kernel", s.kernel_dropped);
    eprintln!(
        "{} written, {:.1}% of packets attributed to a process",
        apptag::status::human_bytes(s.bytes),
        apptag::status::share(s.attributed, s.captured)
    );
    Ok(())
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        // `apptag ... | head` closing the pipe is a normal way to stop reading.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Some(Cmd::Sockets {
            json,
            duration,
            attribution,
        }) => {
            let stop = stop_flag()?;
            check_privileges(attribution, false)?;
            let mut out = std::io::stdout().lock();
            apptag::attribution::watch::watch(
                attribution,
                duration.map(Duration::from_secs_f64),
                json,
                stop,
                &mut out,
            )?;
            Ok(())
        }
        None => capture(cli.capture),
        Some(Cmd::Apps { file, json }) => {
            apptag::pcapng::apps::print(&file, json, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Some(Cmd::Report(args)) => {
            let report = apptag::report::cli::run(&args)?;
            if let Some(p) = report.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
        Some(Cmd::Extract(args)) => {
            let stats = apptag::report::cli::run_extract(&args)?;
            if let Some(p) = stats.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
    }
}
