//! `cargo xtask bench export` runs this: flow records per second on one core for each step
//! and encoding of apptag::export, on synthetic application records shaped like a busy
//! host's (one application per 50 sockets, TCP and UDP, IPv4 and IPv6, full process data).
//! Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! Usage: export_bench [RECORDS] [DIR]   (DIR defaults to /dev/shm)
use std::time::Instant;

use apptag::{
    export::{FlowRecord, encode},
    model::{AppRecord, ProcessInfo, Provenance, SocketRecord},
};

const RUNS: usize = 3;

fn data(n: usize) -> (Vec<AppRecord>, Vec<ProcessInfo>) {
    let mut apps = Vec::new();
    let mut procs = Vec::new();
    for a in 0..n.div_ceil(50) {
        let pid = 1000 + a as u32;
        let name = format!("app{}", a % 40);
        procs.push(ProcessInfo {
            pid,
            ppid: 1,
            uid: 1000,
            user: "www-data".into(),
            name: name.clone(),
            exe: format!("/usr/bin/{name}"),
            cmdline: vec![
                format!("/usr/bin/{name}"),
                "--config".into(),
                "/etc/x.conf".into(),
            ],
            start_ns: 1_700_000_000_000_000_000,
            cgroup: "/system.slice/x.service".into(),
            container_id: String::new(),
        });
        let sockets = (0..50.min(n - a * 50))
            .map(|i| {
                let k = (a * 50 + i) as u64;
                let v6 = k.is_multiple_of(4);
                SocketRecord {
                    local_addr: if v6 {
                        "2001:db8::1".parse().unwrap()
                    } else {
                        "10.0.0.1".parse().unwrap()
                    },
                    local_port: 30000 + (k % 30000) as u16,
                    remote_addr: if v6 {
                        "2001:db8::2".parse().unwrap()
                    } else {
                        "10.0.1.2".parse().unwrap()
                    },
                    remote_port: 443,
                    protocol: if k.is_multiple_of(3) { 17 } else { 6 },
                    first_ns: 1_700_000_001_000_000_000 + k,
                    last_ns: 1_700_000_002_000_000_000 + k,
                    packets_in: 10 + k % 100,
                    packets_out: 12 + k % 90,
                    bytes_in: 10_000 + k,
                    bytes_out: 2_000 + k,
                    cookie: 4096 + k,
                    pid,
                    provenance: Provenance::Hook(4),
                    attributed_ns: 1_700_000_000_900_000_000,
                }
            })
            .collect();
        apps.push(AppRecord {
            name,
            pids: vec![pid],
            cmdline: procs[a].cmdline.clone(),
            exe: procs[a].exe.clone(),
            start_ns: procs[a].start_ns,
            uid: 1000,
            cgroup: procs[a].cgroup.clone(),
            provenance: Provenance::Hook(1),
            sockets,
        });
    }
    (apps, procs)
}

/// Best of RUNS runs, in records per second.
fn best(n: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut rate: f64 = 0.0;
    let mut size = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        size = f();
        rate = rate.max(n as f64 / t.elapsed().as_secs_f64());
    }
    (rate, size)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = std::path::PathBuf::from(args.get(2).map_or("/dev/shm", String::as_str));
    let (apps, procs) = data(n);
    let by_pid: std::collections::HashMap<u32, &ProcessInfo> =
        procs.iter().map(|p| (p.pid, p)).collect();
    let build = || -> Vec<serde_json::Value> {
        apps.iter()
            .flat_map(|a| a.sockets.iter().map(move |s| (a, s)))
            .map(|(a, s)| {
                FlowRecord::new("host-1", "cap.pcapng", a, s, by_pid.get(&s.pid).copied()).to_ecs()
            })
            .collect()
    };
    let values = build();
    let (r_build, _) = best(n, || build().len());
    let (r_nd, nd_bytes) = best(n, || {
        let mut out = Vec::with_capacity(n * 1200);
        encode::ndjson(&values, &mut out);
        out.len()
    });
    let (r_ch, ch_bytes) = best(n, || {
        let mut out = Vec::with_capacity(n * 1200);
        encode::clickhouse_rows(&values, &mut out);
        out.len()
    });
    let path = dir.join(format!(
        "apptag-export-bench-{}.parquet",
        std::process::id()
    ));
    let (r_pq, pq_bytes) = best(n, || {
        encode::write_parquet(&path, &values).expect("write parquet");
        std::fs::metadata(&path)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    });
    let _ = std::fs::remove_file(&path);
    println!("{n} flow records, one core, best of {RUNS} runs:\n");
    println!("| step | records/s | bytes/record |");
    println!("|---|---:|---:|");
    println!(
        "| build record + ECS value (FlowRecord::new + to_ecs) | {:.0} | - |",
        r_build
    );
    println!(
        "| NDJSON encoding | {:.0} | {:.0} |",
        r_nd,
        nd_bytes as f64 / n as f64
    );
    println!(
        "| ClickHouse JSONEachRow encoding | {:.0} | {:.0} |",
        r_ch,
        ch_bytes as f64 / n as f64
    );
    println!(
        "| Parquet file (arrow-json decode + uncompressed write) | {:.0} | {:.0} |",
        r_pq,
        pq_bytes as f64 / n as f64
    );
    println!(
        "\nEnd to end (build + NDJSON): {:.0} records/s; (build + ClickHouse rows): {:.0} records/s",
        1.0 / (1.0 / r_build + 1.0 / r_nd),
        1.0 / (1.0 / r_build + 1.0 / r_ch)
    );
}
