//! The default command: capture on interfaces into pcapng, tagging every packet.
use std::time::Duration;

use anyhow::{Context, Result};
use apptag::privileges::User;
use apptag::sensor::attribution::Mode;
use apptag::sensor::pipeline::Privileges;

use super::{check_privileges, stop_flag};

/// Capture (the default command). Flags follow tcpdump where tcpdump has them.
#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// Interface to capture on (repeatable; `any` for all, `lo` for loopback).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Output pcapng file [default: apptag-HOST-TIMESTAMP.pcapng], created 0600 whatever the
    /// umask. Space is kept past its end so that a full disk still gets the final
    /// application table and the interface statistics; apptag then stops and says so.
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
    /// Ring buffer size in KiB (units of 1024 bytes), like tcpdump -B, but for the whole
    /// interface: its capture threads share it. Pinned kernel memory; raise it if the
    /// exit summary shows packets dropped by the kernel in bursts [default: 32768].
    #[arg(short = 'B', long = "buffer-size", value_name = "KiB")]
    buffer_kib: Option<u64>,
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
    /// Once the probes are attached, the rings open and the first file created, become this
    /// user (and its groups), like tcpdump -Z, keeping only CAP_SYS_PTRACE (to read other
    /// users' /proc/PID/exe). Rotated files are then created by USER: give -w a directory
    /// USER can write. The first file is handed to USER.
    #[arg(short = 'Z', value_name = "USER", conflicts_with = "no_drop")]
    user: Option<String>,
    /// Keep every privilege for the whole run. Without it and without -Z, a sensor started
    /// as root keeps its privileges and one started with capabilities (setcap, systemd)
    /// gives up all but CAP_SYS_PTRACE once started.
    #[arg(long)]
    no_drop: bool,
    /// Create the capture files 0640 instead of 0600, for the group of the -Z user (or of
    /// the user running apptag).
    #[arg(long)]
    group_read: bool,
    /// Export flow records (ECS) live: clickhouse://HOST:8123/DB.TABLE, tcp://HOST:PORT
    /// (NDJSON lines), http://HOST:PORT/PATH (NDJSON POSTs), file:PATH.ndjson, or
    /// file:PATH.parquet (one Parquet file per capture file). Repeatable. See docs/EXPORT.md.
    #[arg(long = "export", value_name = "TARGET")]
    exports: Vec<String>,
    /// Seconds between interim records of a flow that goes on (its totals so far).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    export_interval: f64,
    /// Directory where records wait while a collector is unreachable (replayed in order,
    /// also by the next run). Without it they wait in memory, up to a bound.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<std::path::PathBuf>,
    /// Megabytes the spool may hold per target; beyond, records are dropped and counted.
    #[arg(long, value_name = "MB", default_value_t = 256.0)]
    spool_max: f64,
    /// Most sockets held in memory: by attribution (open ones and those closed in the last
    /// two minutes) and per capture file between application blocks (closed sockets leave
    /// once written). Beyond, the oldest are evicted and counted (status line, summary).
    #[arg(long, value_name = "N", default_value_t = apptag::sensor::attribution::table::DEFAULT_MAX_SOCKETS)]
    max_sockets: usize,
    /// Most processes held in memory by attribution; beyond, those without a socket go
    /// first, then the oldest, counted.
    #[arg(long, value_name = "N", default_value_t = apptag::sensor::attribution::table::DEFAULT_MAX_PROCESSES)]
    max_processes: usize,
    /// Capture filter in tcpdump (pcap-filter) syntax, after the options (a first word that
    /// is not a subcommand is refused as a mistyped subcommand).
    #[arg(trailing_var_arg = true, value_name = "FILTER")]
    filter: Vec<String>,
}

pub fn run(a: CaptureArgs) -> Result<()> {
    if a.interfaces.is_empty() {
        anyhow::bail!(
            "no interface given: use -i IFACE (e.g. -i lo, -i eth0, -i any); see apptag --help"
        );
    }
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let ring_bytes = match a.buffer_kib {
        None => apptag::sensor::capture::DEFAULT_BUFFER_BYTES,
        Some(kib) => {
            let bytes = kib
                .checked_mul(1024)
                .with_context(|| format!("-B {kib}: that many KiB do not fit in 64 bits"))?;
            // Checked now, before the probes attach, so a typo costs nothing.
            apptag::sensor::capture::RingConfig::for_buffer(bytes, workers)
                .map_err(|e| anyhow::anyhow!("-B {kib} (ring buffer size in KiB): {e}"))?;
            bytes
        }
    };
    check_privileges(a.attribution, true)?;
    // Before anything is attached: a mistyped user costs nothing.
    let privileges = match (&a.user, a.no_drop) {
        (_, true) => Privileges::Keep,
        (Some(name), false) => {
            let user = User::lookup(name)?;
            if !apptag::sys::is_root() {
                anyhow::bail!(
                    "-Z {name} needs apptag to start as root (it is uid {}); drop -Z, or start \
                     it as root",
                    // SAFETY: getuid has no preconditions.
                    unsafe { libc::getuid() }
                );
            }
            Privileges::Switch(user)
        }
        (None, false) if !apptag::sys::is_root() => Privileges::DropCapabilities,
        (None, false) => Privileges::Keep,
    };
    let exporter = if a.exports.is_empty() {
        None
    } else {
        let targets = a
            .exports
            .iter()
            .map(|t| apptag::export::Target::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        Some(apptag::export::Exporter::start(
            apptag::export::LiveConfig {
                targets,
                host: apptag::export::offline::host_name(),
                interval: Duration::from_secs_f64(a.export_interval.max(0.1)),
                spool_dir: a.spool_dir.clone(),
                spool_max: (a.spool_max.max(0.0) * 1e6) as u64,
                batch_records: 5000,
            },
        )?)
    };
    let cfg = apptag::sensor::pipeline::SensorConfig {
        interfaces: a.interfaces,
        output: a
            .write
            .unwrap_or_else(apptag::sensor::pipeline::default_output),
        snaplen: a.snaplen,
        promisc: !a.no_promisc,
        filter: (!a.filter.is_empty()).then(|| a.filter.join(" ")),
        count: a.count,
        duration: a.duration.map(Duration::from_secs_f64),
        attribution: a.attribution,
        workers,
        ring_bytes,
        app_interval: Duration::from_secs_f64(a.app_interval.max(0.1)),
        rotation: apptag::sensor::pipeline::Rotation {
            max_bytes: a.file_size.map(|mb| (mb * 1e6).max(4096.0) as u64),
            every: a
                .rotate_seconds
                .map(|s| Duration::from_secs_f64(s.max(0.1))),
            max_files: a.file_count.filter(|&w| w > 0),
        },
        pids: a.pids,
        comms: a.comms,
        cgroups: a.cgroups,
        file_mode: if a.group_read {
            apptag::sys::GROUP_READ_FILE_MODE
        } else {
            apptag::sys::PRIVATE_FILE_MODE
        },
        privileges,
        export: exporter.as_ref().and_then(|e| e.handle()),
        limits: apptag::sensor::attribution::table::Limits {
            max_sockets: a.max_sockets.max(16),
            max_processes: a.max_processes.max(16),
        },
    };
    let stop = stop_flag()?;
    let result = apptag::sensor::pipeline::run(&cfg, stop);
    drop(cfg);
    // The exporter ends after the capture, whether it succeeded or not: what it holds is
    // sent or spooled.
    if let Some(e) = exporter {
        let c = e.finish();
        eprintln!(
            "{} flow records exported ({} replayed from the spool), {} spooled, {} dropped",
            c.exported, c.replayed, c.spooled, c.dropped
        );
        if c.updates_dropped > 0 {
            eprintln!(
                "{} table updates skipped while the exporter was behind (later ones carried \
                 their totals)",
                c.updates_dropped
            );
        }
    }
    let s = result?;
    // tcpdump's wording, so scripts and benchmarks that read tcpdump read apptag too.
    eprintln!("{} packets captured", s.written);
    eprintln!(
        "{} packets received by filter",
        s.captured + s.kernel_dropped
    );
    eprintln!("{} packets dropped by kernel", s.kernel_dropped);
    if s.evicted_sockets + s.evicted_processes > 0 {
        eprintln!(
            "{} sockets and {} processes evicted to stay within --max-sockets/--max-processes",
            s.evicted_sockets, s.evicted_processes
        );
    }
    eprintln!(
        "{} written, {:.1}% of packets attributed to a process",
        apptag::units::human_bytes(s.bytes),
        apptag::units::share(s.attributed, s.captured)
    );
    Ok(())
}
