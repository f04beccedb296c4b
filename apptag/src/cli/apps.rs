//! `apptag apps FILE [--json]`: the merged application table of a capture, for people or
//! (with --json) for scripts.
use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use apptag::model::{Provenance, proto};

fn fmt_time(ns: u64) -> String {
    if ns == 0 {
        "-".into()
    } else {
        apptag::units::clock_time(ns)
    }
}

fn via(p: Provenance) -> String {
    match p {
        Provenance::Unknown => "unknown".into(),
        Provenance::Hook(h) => format!("hook {h}"),
        Provenance::SockDiag => "sock_diag".into(),
        Provenance::Procfs => "procfs".into(),
    }
}

fn endpoint(a: &std::net::IpAddr, port: u16) -> String {
    match a {
        std::net::IpAddr::V4(v) => format!("{v}:{port}"),
        std::net::IpAddr::V6(v) => format!("[{v}]:{port}"),
    }
}

/// Prints the table for humans, or JSON (`{"file", "blocks", "final_table", "errors",
/// "apps": [{"name", "pids", ..., "sockets": [...]}]}`) for scripts.
pub fn print(path: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    let report = apptag::pcapng::apps::collect(path)?;
    let io = "writing the application table";
    if json {
        serde_json::to_writer_pretty(&mut *out, &report).context(io)?;
        writeln!(out).context(io)?;
    } else {
        writeln!(
            out,
            "{}: {} application(s) from {} block(s){}",
            report.file,
            report.apps.len(),
            report.blocks,
            if report.final_table {
                ", final table complete"
            } else {
                ", no complete final table (capture did not stop cleanly)"
            }
        )
        .context(io)?;
        for app in &report.apps {
            let pids: Vec<String> = app.pids.iter().map(u32::to_string).collect();
            writeln!(
                out,
                "\n{}  pids {}  uid {}  exe {}\n  cmdline: {}",
                app.name,
                pids.join(","),
                app.uid,
                if app.exe.is_empty() { "-" } else { &app.exe },
                app.cmdline.join(" ")
            )
            .context(io)?;
            if app.sockets.is_empty() {
                continue;
            }
            writeln!(
                out,
                "  {:<7} {:<40} {:<40} {:>8} {:>8} {:>10} {:>10} {:<12} {:<12} {:>7} via",
                "proto",
                "local",
                "remote",
                "pkts in",
                "pkts out",
                "bytes in",
                "bytes out",
                "first UTC",
                "last UTC",
                "pid"
            )
            .context(io)?;
            for s in &app.sockets {
                writeln!(
                    out,
                    "  {:<7} {:<40} {:<40} {:>8} {:>8} {:>10} {:>10} {:<12} {:<12} {:>7} {}",
                    proto::name(s.protocol),
                    endpoint(&s.local_addr, s.local_port),
                    endpoint(&s.remote_addr, s.remote_port),
                    s.packets_in,
                    s.packets_out,
                    s.bytes_in,
                    s.bytes_out,
                    fmt_time(s.first_ns),
                    fmt_time(s.last_ns),
                    s.pid,
                    via(s.provenance)
                )
                .context(io)?;
            }
        }
    }
    for e in &report.errors {
        log::warn!("{}: {e}", report.file);
    }
    Ok(())
}
