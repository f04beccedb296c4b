//! The command line: one file per subcommand; this one parses and dispatches.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod capture;
mod export;
mod privileges;
mod report_extract;
mod sockets;

use apptag::sensor::attribution::Mode;
use privileges::{check_privileges, stop_flag};

#[derive(Parser, Debug)]
#[command(
    name = "apptag",
    version,
    about = "Capture packets and tag each one with the local application that sent or received it",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    capture: capture::CaptureArgs,
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
    Report(report_extract::ReportArgs),
    /// Write one application's packets (with its process and application records) to a new
    /// pcapng file.
    Extract(report_extract::ExtractArgs),
    /// Flow records (ECS) of capture files: NDJSON, Parquet or ClickHouse.
    Export(export::ExportArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        None => capture::run(cli.capture),
        Some(Cmd::Sockets {
            json,
            duration,
            attribution,
        }) => sockets::run(json, duration, attribution),
        Some(Cmd::Apps { file, json }) => {
            apptag::pcapng::apps::print(&file, json, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Some(Cmd::Report(args)) => {
            let report = report_extract::run(&args)?;
            if let Some(p) = report.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
        Some(Cmd::Extract(args)) => {
            let stats = report_extract::run_extract(&args)?;
            if let Some(p) = stats.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
        Some(Cmd::Export(args)) => export::run(&args),
    }
}
