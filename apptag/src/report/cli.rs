//! Arguments of `apptag report` (kept here so main.rs only dispatches).
use std::{io::Write, path::PathBuf};

use super::{Options, ReportError, analyze, plot, table};

/// Which applications used the network in a capture: how much, with whom and when.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Capture file (pcapng written by apptag, or any pcap/pcapng).
    pub file: PathBuf,
    /// Print JSON for scripts instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also list every flow (5-tuple conversation).
    #[arg(long)]
    pub flows: bool,
    /// Draw traffic volume over time per application, and bytes per remote host per
    /// application, into this SVG or PNG file.
    #[arg(long, value_name = "OUT.svg|OUT.png")]
    pub plot: Option<PathBuf>,
}

/// Runs `apptag report`. Returns the report so the caller can decide the exit status
/// (damage in the file is in `problems`).
pub fn run(args: &ReportArgs) -> Result<super::Report, ReportError> {
    let report = analyze(&args.file, Options { flows: args.flows })?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else {
        table::render(&report)
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) is not an error worth reporting.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(ReportError::Write {
                path: "stdout".into(),
                source: e,
            });
        }
    }
    if let Some(path) = &args.plot {
        plot::draw(&report, path)?;
        log::info!("plot written to {}", path.display());
    }
    Ok(report)
}
