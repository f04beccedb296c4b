//! `cargo xtask bench attribution [N]`: N short-lived client processes (default 1000), each
//! making one TCP connection on loopback and exiting, while `apptag sockets` runs in eBPF
//! mode and then in procfs mode. Reports the share of those connections each mode
//! attributed to the right pid, apptag's CPU time, and what the hooks add to connect().
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::root;

struct ModeResult {
    mode: &'static str,
    correct: usize,
    wrong: usize,
    missing: usize,
    cpu_s: f64,
    wall_s: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    crate::util::build_release_and_traffic()?;
    let server = echo_server()?;
    let mut results = Vec::new();
    for mode in ["ebpf", "procfs"] {
        results.push(run_mode(mode, n, server)?);
    }
    let base = connect_latency(server, 2000)?;
    let sensor = start_sensor("ebpf")?;
    std::thread::sleep(Duration::from_millis(1500));
    let with = connect_latency(server, 2000)?;
    stop(sensor)?;

    println!(
        "\n### Attribution of {n} short-lived processes (one TCP connection each, then exit)\n"
    );
    println!("| mode | attributed correctly | wrong pid | not found | apptag CPU s | wall s |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} / {n} ({:.1}%) | {} | {} | {:.2} | {:.1} |",
            r.mode,
            r.correct,
            100.0 * r.correct as f64 / n as f64,
            r.wrong,
            r.missing,
            r.cpu_s,
            r.wall_s
        );
    }
    println!("\n### connect() latency on loopback (2000 connects, same process)\n");
    println!("| | median us | p99 us |");
    println!("|---|---|---|");
    println!("| without apptag | {:.1} | {:.1} |", base.0, base.1);
    println!(
        "| with apptag (eBPF hooks attached) | {:.1} | {:.1} |",
        with.0, with.1
    );
    Ok(())
}

pub(super) fn echo_server() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                if let Ok(n) = c.read(&mut buf) {
                    let _ = c.write_all(&buf[..n]);
                }
            });
        }
    });
    Ok(addr)
}

fn start_sensor(mode: &str) -> Result<Child> {
    Command::new(root().join("target/release/apptag"))
        .args(["sockets", "--json", "--attribution", mode])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting apptag sockets")
}

/// SIGINT, then collect its output.
fn stop(mut child: Child) -> Result<(Vec<String>, f64)> {
    let cpu = cpu_seconds(child.id());
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let mut lines = Vec::new();
    if let Some(out) = child.stdout.take() {
        lines = BufReader::new(out).lines().map_while(Result::ok).collect();
    }
    child.wait()?;
    Ok((lines, cpu))
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// utime + stime from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn run_mode(mode: &'static str, n: usize, server: SocketAddr) -> Result<ModeResult> {
    let sensor = start_sensor(mode)?;
    std::thread::sleep(Duration::from_millis(1500));
    let traffic = root().join("target/release/apptag-traffic");
    let started = Instant::now();
    let mut expected: Vec<(u16, u32)> = Vec::new();
    for _ in 0..n {
        let mut c = Command::new(&traffic)
            .args(["tcp-client", &server.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting apptag-traffic")?;
        let pid = c.id();
        let mut local = None;
        if let Some(out) = c.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("local=") {
                    local = v.parse::<SocketAddr>().ok();
                }
            }
        }
        c.wait()?;
        match local {
            Some(l) => expected.push((l.port(), pid)),
            None => bail!("a client printed no local address"),
        }
    }
    // Let the sensor catch up with the last ones before stopping it.
    std::thread::sleep(Duration::from_millis(500));
    let wall = started.elapsed().as_secs_f64();
    let (lines, cpu) = stop(sensor)?;
    if std::env::var_os("APPTAG_BENCH_DEBUG").is_some() {
        for l in &lines {
            eprintln!("sensor: {l}");
        }
        eprintln!("expected: {expected:?}");
    }
    // Ephemeral ports are reused across 1000 clients: keep every pid seen per port.
    let mut seen: HashMap<u16, Vec<u32>> = HashMap::new();
    let remote = format!("127.0.0.1:{}", server.port());
    for l in lines {
        let Ok(v) = serde_json_lite(&l) else { continue };
        if v.remote == remote
            && let Some(port) = v.local.rsplit(':').next().and_then(|p| p.parse().ok())
        {
            seen.entry(port).or_default().push(v.pid);
        }
    }
    let mut r = ModeResult {
        mode,
        correct: 0,
        wrong: 0,
        missing: 0,
        cpu_s: cpu,
        wall_s: wall,
    };
    for (port, pid) in &expected {
        match seen.get(port) {
            Some(p) if p.contains(pid) => r.correct += 1,
            Some(_) => r.wrong += 1,
            None => r.missing += 1,
        }
    }
    Ok(r)
}

struct Line {
    pid: u32,
    local: String,
    remote: String,
}

/// Pulls three fields out of one JSON line (xtask keeps its dependencies minimal).
fn serde_json_lite(l: &str) -> Result<Line> {
    let field = |k: &str| -> Option<String> {
        let key = format!("\"{k}\":");
        let i = l.find(&key)? + key.len();
        let rest = &l[i..];
        if let Some(s) = rest.strip_prefix('"') {
            Some(s[..s.find('"')?].to_string())
        } else {
            let end = rest.find([',', '}'])?;
            Some(rest[..end].to_string())
        }
    };
    Ok(Line {
        pid: field("pid").and_then(|p| p.parse().ok()).context("pid")?,
        local: field("local").context("local")?,
        remote: field("remote").context("remote")?,
    })
}

/// (median, p99) of connect() in microseconds.
fn connect_latency(server: SocketAddr, n: usize) -> Result<(f64, f64)> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let s = TcpStream::connect(server)?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok((v[n / 2], v[(n * 99) / 100]))
}
