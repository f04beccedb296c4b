//! `cargo xtask bench capture`: trafgen sends UDP frames from inside a network namespace to
//! the host end of a veth pair, at fixed rates and flat out, while tcpdump and apptag
//! capture the host end in the same run. Reports, per tool, packets captured and dropped and
//! CPU seconds, next to what the generator sent and what the interface received.
//!
//! Options: `--secs S` (per run, default 5), `--frames 60,1514` (captured frame lengths:
//! 60 = a 64-byte frame on the wire, 1514 = a 1500-byte MTU packet), `--rates R,R,max`
//! (packets/s; default per frame size), `--workers N` (apptag capture threads, default 2),
//! `--apptag-cmd "TEMPLATE"` (the apptag command to compare; `{iface}`, `{file}` and `{secs}`
//! are replaced; default `target/release/apptag -i {iface} -w {file} --duration {secs}` when
//! that binary has `--duration`; repeatable, to compare builds or `-B` sizes in one run), `--no-cli` (skip it), `--no-write` (the ring reader
//! counts packets instead of writing them), `--udp-sink` (a UDP socket of this process is
//! bound to the frames' destination, so that apptag attributes them and has flow records to
//! export; it never reads, and the kernel drops what overflows its buffer after capture).
use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util;

struct Opts {
    secs: f64,
    frames: Vec<usize>,
    rates: Option<Vec<Rate>>,
    workers: usize,
    apptag_cmd: Vec<String>,
    no_cli: bool,
    no_write: bool,
    udp_sink: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        secs: 5.0,
        frames: vec![60, 1514],
        rates: None,
        workers: 2,
        apptag_cmd: Vec::new(),
        no_cli: false,
        no_write: false,
        udp_sink: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = val()?.parse().context("--secs takes seconds")?,
            "--frames" => {
                o.frames = val()?
                    .split(',')
                    .map(|s| s.parse().context("--frames takes lengths like 60,1514"))
                    .collect::<Result<_>>()?
            }
            "--rates" => {
                o.rates = Some(
                    val()?
                        .split(',')
                        .map(|s| match s {
                            "max" => Ok(Rate::Max(1)),
                            "max2" => Ok(Rate::Max(2)),
                            n => n
                                .parse()
                                .map(Rate::Pps)
                                .context("--rates takes pps, max or max2"),
                        })
                        .collect::<Result<_>>()?,
                )
            }
            "--workers" => o.workers = val()?.parse().context("--workers takes a number")?,
            "--apptag-cmd" => o.apptag_cmd.push(val()?.clone()),
            "--no-cli" => o.no_cli = true,
            "--no-write" => o.no_write = true,
            "--udp-sink" => o.udp_sink = true,
            other => bail!("unknown option {other} (see xtask/src/bench/capture.rs)"),
        }
    }
    for &f in &o.frames {
        if !(60..=1514).contains(&f) {
            bail!("frame length {f} is outside 60..=1514");
        }
    }
    Ok(o)
}

/// What the generator is asked for.
#[derive(Clone, Copy, Debug)]
enum Rate {
    /// A fixed rate, one generator process.
    Pps(u64),
    /// Flat out with this many generator processes (1 leaves a core to the capture tools;
    /// 2 takes both, the most this machine can produce).
    Max(u32),
}

/// Rates per frame size when none are given: modest, gigabit line rate, flat out.
fn default_rates(frame: usize) -> Vec<Rate> {
    // Line rate of 1 Gbps: wire frame (+4 FCS) + 8 preamble + 12 inter-frame gap.
    let line = 1_000_000_000 / ((frame as u64 + 4 + 20) * 8);
    if frame <= 64 {
        vec![
            Rate::Pps(100_000),
            Rate::Pps(500_000),
            Rate::Pps(line),
            Rate::Max(1),
            Rate::Max(2),
        ]
    } else {
        vec![
            Rate::Pps(line / 4),
            Rate::Pps(line),
            Rate::Max(1),
            Rate::Max(2),
        ]
    }
}

/// A namespace with a veth pair to the host; both are removed on drop.
pub(super) struct Netns {
    ns: String,
    host_if: String,
    peer_if: String,
    host_ip: [u8; 4],
    peer_ip: [u8; 4],
}

fn ip(args: &[&str]) -> Result<()> {
    util::run_cmd(Command::new("ip").args(args))
}

impl Netns {
    pub(super) fn new() -> Result<Netns> {
        let id = std::process::id() % 100_000;
        let sub = (id % 250) as u8;
        let n = Netns {
            ns: format!("apptag-bench-{id}"),
            host_if: format!("abH{id}"),
            peer_if: format!("abN{id}"),
            host_ip: [10, 251, sub, 1],
            peer_ip: [10, 251, sub, 2],
        };
        ip(&["netns", "add", &n.ns])?;
        let dotted = |a: [u8; 4]| format!("{}.{}.{}.{}/24", a[0], a[1], a[2], a[3]);
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.peer_if, "netns", &n.ns,
        ])?;
        ip(&["addr", "add", &dotted(n.host_ip), "dev", &n.host_if])?;
        ip(&["link", "set", &n.host_if, "up"])?;
        ip(&[
            "-n",
            &n.ns,
            "addr",
            "add",
            &dotted(n.peer_ip),
            "dev",
            &n.peer_if,
        ])?;
        ip(&["-n", &n.ns, "link", "set", &n.peer_if, "up"])?;
        Ok(n)
    }

    pub(super) fn ns(&self) -> &str {
        &self.ns
    }

    pub(super) fn host_if(&self) -> &str {
        &self.host_if
    }

    pub(super) fn peer_if(&self) -> &str {
        &self.peer_if
    }

    pub(super) fn host_ip(&self) -> [u8; 4] {
        self.host_ip
    }

    pub(super) fn counter(&self, name: &str) -> u64 {
        fs::read_to_string(format!("/sys/class/net/{}/statistics/{name}", self.host_if))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn mac(&self, inside: bool) -> Result<String> {
        let path = format!(
            "/sys/class/net/{}/address",
            if inside { &self.peer_if } else { &self.host_if }
        );
        let out = if inside {
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "cat", &path])
                .output()?
                .stdout
        } else {
            fs::read(&path)?
        };
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// trafgen packet description: one UDP/IPv4 frame of `len` bytes, peer -> host.
pub(super) fn trafgen_cfg(n: &Netns, len: usize) -> Result<String> {
    let bytes = |mac: String| {
        mac.split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ip4 = |a: [u8; 4]| format!("{}, {}, {}, {}", a[0], a[1], a[2], a[3]);
    Ok(format!(
        "{{ {dst}, {src}, c16(0x0800),\n  0x45, 0x00, c16({iplen}), c16(0), c16(0), 0x40, 17, \
         csumip(14, 33),\n  {sip}, {dip},\n  c16(40000), c16(9), c16({udplen}), c16(0),\n  \
         fill(0x41, {payload}) }}\n",
        dst = bytes(n.mac(false)?),
        src = bytes(n.mac(true)?),
        iplen = len - 14,
        udplen = len - 34,
        payload = len - 42,
        sip = ip4(n.peer_ip),
        dip = ip4(n.host_ip),
    ))
}

/// A capture tool under test, with its stderr collected.
struct Running {
    name: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    file: Option<PathBuf>,
}

fn spawn(
    name: &str,
    mut cmd: Command,
    ready: Option<&str>,
    file: Option<PathBuf>,
) -> Result<Running> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().context("stderr pipe")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let ready_word = ready.map(str::to_string);
    let sink = stderr.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
            if ready_word.as_deref().is_some_and(|w| line.contains(w)) {
                let _ = tx.send(());
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    match ready {
        Some(_) => {
            if rx.recv_timeout(Duration::from_secs(20)).is_err() {
                let _ = child.kill();
                bail!(
                    "{name} did not start: {}",
                    stderr.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
        }
        // No readiness line known: give it time to load (apptag loads kernel programs).
        None => std::thread::sleep(Duration::from_secs(3)),
    }
    Ok(Running {
        name: name.to_string(),
        child,
        stderr,
        reader: Some(reader),
        file,
    })
}

struct Outcome {
    captured: Option<u64>,
    dropped: Option<u64>,
    ok: bool,
}

/// Sends SIGINT, reaps the process with its resource usage, and reads its counters.
fn finish(mut r: Running) -> Outcome {
    let pid = r.child.id() as i32;
    // SAFETY: signals the child we started, by its pid.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = r.child.wait();
    if let Some(h) = r.reader.take() {
        let _ = h.join();
    }
    let text = r.stderr.lock().map(|s| s.clone()).unwrap_or_default();
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{} ended with {status:?}:\n{text}", r.name);
    }
    let number_before = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    if let Some(l) = text.lines().find(|l| l.contains("flow records exported")) {
        eprintln!("{}: {l}", r.name);
    }
    let mut captured = number_before("packets captured");
    if captured.is_none()
        && let Some(f) = &r.file
    {
        captured = count_in_file(f);
    }
    let dropped = number_before("dropped by kernel").or_else(|| number_before("packets dropped"));
    if let Some(f) = &r.file {
        let _ = fs::remove_file(f);
    }
    Outcome {
        captured,
        dropped,
        ok,
    }
}

/// Packets in a pcap/pcapng file, by capinfos.
fn count_in_file(f: &Path) -> Option<u64> {
    let out = Command::new("capinfos")
        .args(["-M", "-c", "-T", "-r"])
        .arg(f)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('\t').nth(1).and_then(|n| n.trim().parse().ok())
}

/// Name, command, the stderr line that says it is capturing, and the file it writes.
type Tool = (String, Command, Option<&'static str>, Option<PathBuf>);

struct Row {
    frame: usize,
    target: Rate,
    cpu: f64,
    sent: u64,
    rx: u64,
    secs: f64,
    tool: String,
    out: Outcome,
}

fn tool_commands(o: &Opts, iface: &str, dir: &Path, secs: f64) -> Result<Vec<Tool>> {
    let mut tools = Vec::new();
    let tcpdump_file = dir.join("tcpdump.pcap");
    let mut tcpdump = Command::new("tcpdump");
    tcpdump.args(["-i", iface, "-n", "-w"]).arg(&tcpdump_file);
    tools.push((
        "tcpdump -w".to_string(),
        tcpdump,
        Some("listening on"),
        Some(tcpdump_file),
    ));

    let ring = util::root().join("target/release/examples/capture_rate");
    let mut rate = Command::new(&ring);
    rate.args(["-i", iface, "--workers", &o.workers.to_string()]);
    // Written files are removed by the harness after each run (it knows the .N names).
    if !o.no_write {
        rate.arg("-w").arg(dir.join("ring.pcap"));
    }
    tools.push((
        format!(
            "apptag ring ({} threads{})",
            o.workers,
            if o.no_write { ", count only" } else { ", -w" }
        ),
        rate,
        Some("listening on"),
        None,
    ));

    if !o.no_cli {
        let bin = util::apptag_bin();
        let templates = if o.apptag_cmd.is_empty() {
            let help = Command::new(&bin).arg("--help").output();
            match help {
                Ok(h) if String::from_utf8_lossy(&h.stdout).contains("--duration") => {
                    vec![format!(
                        "{} -i {{iface}} -w {{file}} --duration {{secs}}",
                        bin.display()
                    )]
                }
                _ => {
                    eprintln!(
                        "note: {} has no --duration yet; comparing the capture layer only \
                         (pass --apptag-cmd to add a command)",
                        bin.display()
                    );
                    Vec::new()
                }
            }
        } else {
            o.apptag_cmd.clone()
        };
        let several = templates.len() > 1;
        for (k, t) in templates.iter().enumerate() {
            let file = dir.join(format!("apptag{k}.pcapng"));
            // The tool's own timer is only a backstop; the harness stops it with SIGINT. It
            // must outlast the traffic window, which runs longer than `secs` whenever the
            // generator cannot reach the target rate (it sends rate x secs packets).
            let line = t
                .replace("{iface}", iface)
                .replace("{file}", &file.display().to_string())
                .replace("{secs}", &format!("{}", (secs * 10.0 + 60.0).ceil()));
            let mut parts = line.split_whitespace();
            let prog = parts.next().context("empty --apptag-cmd")?;
            let mut cmd = Command::new(prog);
            cmd.args(parts);
            // Several commands are told apart by what their templates add to the usual ones.
            let name = if several {
                let extra = t
                    .split_whitespace()
                    .skip(1)
                    .filter(|w| !w.contains('{') && !["-i", "-w", "--duration"].contains(w))
                    .collect::<Vec<_>>()
                    .join(" ");
                let prog = Path::new(t.split_whitespace().next().unwrap_or_default())
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                format!("{prog} -w {extra}").trim_end().to_string()
            } else {
                "apptag -w".to_string()
            };
            // apptag logs "writing FILE" once its probes and rings are in place.
            cmd.env("RUST_LOG", "info");
            tools.push((name, cmd, Some("writing "), Some(file)));
        }
    }
    Ok(tools)
}

fn one_run(o: &Opts, n: &Netns, dir: &Path, frame: usize, target: Rate) -> Result<Vec<Row>> {
    let cfg = dir.join(format!("udp{frame}.cfg"));
    fs::write(&cfg, trafgen_cfg(n, frame)?)?;
    let mut running = Vec::new();
    for (name, cmd, ready, file) in tool_commands(o, &n.host_if, dir, o.secs)? {
        running.push(spawn(&name, cmd, ready, file)?);
    }
    let rx0 = n.counter("rx_packets");
    let mut gen_cmd = Command::new("ip");
    // A fixed rate uses one generator process, leaving the other core to the tools.
    let cpus = match target {
        Rate::Pps(_) => 1,
        Rate::Max(c) => c,
    };
    gen_cmd
        .args([
            "netns",
            "exec",
            &n.ns,
            "trafgen",
            "--no-sock-mem",
            "-Q",
            "-P",
        ])
        .arg(cpus.to_string())
        .args(["-o", &n.peer_if, "-i"])
        .arg(&cfg);
    if let Rate::Pps(r) = target {
        let count = (r as f64 * o.secs) as u64;
        gen_cmd.args(["-b", &format!("{r}pps"), "-n", &count.to_string()]);
    }
    let cpu0: Vec<f64> = running.iter().map(|r| proc_cpu(r.child.id())).collect();
    // trafgen forks one worker per CPU and does not pass SIGINT on: give it its own process
    // group so the whole group can be signalled.
    gen_cmd.process_group(0);
    let started = Instant::now();
    let mut gen_child = gen_cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting trafgen (cargo xtask setup installs netsniff-ng)")?;
    let gen_out = gen_child.stdout.take().context("trafgen stdout")?;
    let gen_reader = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(gen_out).lines().map_while(|l| l.ok()) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    // Flat out runs for --secs; fixed rates end on their own (with a backstop).
    let limit = Duration::from_secs_f64(match target {
        Rate::Pps(_) => o.secs * 3.0,
        Rate::Max(_) => o.secs,
    });
    loop {
        if gen_child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() >= limit || interrupted() {
            // SAFETY: signals the process group of our own child (trafgen prints its totals
            // on SIGINT).
            unsafe { libc::kill(-(gen_child.id() as i32), libc::SIGINT) };
            gen_child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let gen_text = gen_reader.join().unwrap_or_default();
    // With several generator processes each prints its own total.
    let sent = gen_text
        .lines()
        .filter(|l| l.contains("packets outgoing"))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // Let the tools empty their buffers before they are stopped.
    std::thread::sleep(Duration::from_secs(2));
    let rx = n.counter("rx_packets") - rx0;
    let cleanup = dir.to_path_buf();
    let mut rows = Vec::new();
    for (r, c0) in running.into_iter().zip(cpu0) {
        let tool = r.name.clone();
        // CPU over the traffic window only: ring set-up (which can mean compacting memory
        // for 4 MiB blocks) is not what is being compared.
        let cpu = proc_cpu(r.child.id()) - c0;
        rows.push(Row {
            cpu,
            frame,
            target,
            sent,
            rx,
            secs,
            tool,
            out: finish(r),
        });
    }
    for i in 0..o.workers {
        let _ = fs::remove_file(cleanup.join(format!("ring.pcap.{i}")));
    }
    Ok(rows)
}

fn fmt_rate(r: Rate) -> String {
    match r {
        Rate::Pps(r) if r >= 1_000_000 => format!("{:.3} Mpps", r as f64 / 1e6),
        Rate::Pps(r) => format!("{} kpps", r / 1000),
        Rate::Max(1) => "max (1 generator)".into(),
        Rate::Max(n) => format!("max ({n} generators)"),
    }
}

/// utime + stime of a live process (all its threads), in seconds.
fn proc_cpu(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1.split(' ').collect::<Vec<_>>();
            let u: f64 = rest.get(11)?.parse().ok()?;
            let k: f64 = rest.get(12)?.parse().ok()?;
            Some((u + k) / tick)
        })
        .unwrap_or(0.0)
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| frame (captured bytes) | target rate | sent (trafgen) | achieved | veth rx | tool | captured | dropped (kernel) | lost vs rx | CPU s (traffic window) | CPU µs/packet |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let lost = r
            .out
            .captured
            .map(|c| {
                format!(
                    "{:.2} %",
                    100.0 * r.rx.saturating_sub(c) as f64 / r.rx.max(1) as f64
                )
            })
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} kpps | {} | {}{} | {} | {} | {} | {:.2} | {:.3} |",
            r.frame,
            fmt_rate(r.target),
            r.sent,
            r.sent as f64 / r.secs / 1000.0,
            r.rx,
            r.tool,
            if r.out.ok { "" } else { " (failed)" },
            opt(r.out.captured),
            opt(r.out.dropped),
            lost,
            r.cpu,
            1e6 * r.cpu / r.rx.max(1) as f64,
        );
    }
    t
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C ends the current run early instead of killing us, so the namespace and veth pair
/// are always removed.
pub(super) fn on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_interrupt as *const () as libc::sighandler_t) };
    }
}

pub(super) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    on_signals();
    if !util::is_root() {
        bail!("the capture benchmark needs root (network namespaces, packet sockets)");
    }
    util::run_cmd(util::cargo().args([
        "build",
        "--release",
        "-p",
        "apptag",
        "--example",
        "capture_rate",
        "--bin",
        "apptag",
    ]))?;
    let dir = std::env::temp_dir().join(format!("apptag-bench-capture-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let n = Netns::new()?;
    // Held until the end: bound is enough for the socket table to know it.
    let _sink = if o.udp_sink {
        let [a, b, c, d] = n.host_ip;
        Some(
            std::net::UdpSocket::bind((std::net::Ipv4Addr::new(a, b, c, d), 9))
                .context("binding the UDP sink")?,
        )
    } else {
        None
    };
    let mut rows = Vec::new();
    for &frame in &o.frames {
        let rates = o.rates.clone().unwrap_or_else(|| default_rates(frame));
        for target in rates {
            if interrupted() {
                break;
            }
            eprintln!("== {frame}-byte frames at {}", fmt_rate(target));
            let run = one_run(&o, &n, &dir, frame, target)?;
            eprint!("{}", table(&run));
            rows.extend(run);
        }
    }
    drop(n);
    let _ = fs::remove_dir_all(&dir);
    println!("{}", table(&rows));
    Ok(())
}
