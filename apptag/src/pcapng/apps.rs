//! `apptag apps FILE [--json]`: the merged application table of a capture.
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::{AppTable, PcapngError, Record, open_file};
use crate::model::{AppRecord, Provenance, proto};

/// What `apptag apps` found in a file.
#[derive(Debug, Serialize)]
pub struct AppsReport {
    pub file: String,
    /// Application-record blocks merged.
    pub blocks: u64,
    /// True when the final table of a clean stop was found complete.
    pub final_table: bool,
    /// Reading stopped early or skipped a block: what and where.
    pub errors: Vec<String>,
    pub apps: Vec<AppRecord>,
}

/// Reads all application-record blocks of `path` and merges them. Damage in the file is
/// reported in `errors`; what was read before it is kept.
pub fn collect(path: &Path) -> Result<AppsReport, PcapngError> {
    let mapped = open_file(path)?;
    let mut table = AppTable::new();
    let mut errors = Vec::new();
    let reader = mapped.reader()?;
    for rec in reader {
        match rec {
            Ok(Record::AppRecords {
                sequence,
                final_table,
                part,
                parts,
                apps,
            }) => table.merge_block(sequence, final_table, part, parts, apps),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok(AppsReport {
        file: path.display().to_string(),
        blocks: table.blocks,
        final_table: table.final_complete(),
        errors,
        apps: table.into_apps(),
    })
}

fn fmt_time(ns: u64) -> String {
    if ns == 0 {
        "-".into()
    } else {
        crate::units::clock_time(ns)
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
pub fn print(path: &Path, json: bool, out: &mut dyn Write) -> Result<(), PcapngError> {
    let report = collect(path)?;
    let io = |e| PcapngError::io("writing the application table", e);
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out).map_err(io)?;
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
        .map_err(io)?;
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
            .map_err(io)?;
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
            .map_err(io)?;
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
                .map_err(io)?;
            }
        }
    }
    for e in &report.errors {
        log::warn!("{}: {e}", report.file);
    }
    Ok(())
}
