//! `apptag report` and `apptag extract`.
use std::{io::Write, path::PathBuf};

use apptag::report::{Options, ReportError, analyze_threads, plot, table};

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
    #[command(flatten)]
    pub threads: super::streams::ThreadsArg,
}

/// Runs `apptag report`. Returns the report so the caller can decide the exit status
/// (damage in the file is in `problems`).
pub fn run(args: &ReportArgs) -> Result<apptag::report::Report, ReportError> {
    let report = analyze_threads(
        &args.file,
        Options { flows: args.flows },
        &apptag::analysis::AnalysisConfig::default(),
        args.threads.get(),
    )?;
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

/// Writes one application's packets, with its process entries and application records,
/// to a new pcapng file.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("select").required(true).args(["app", "pid", "cgroup"])))]
pub struct ExtractArgs {
    /// pcapng file written by apptag.
    pub file: PathBuf,
    /// Output pcapng file.
    #[arg(short = 'o', long = "output", value_name = "OUT.pcapng")]
    pub output: PathBuf,
    /// Application name, as `apptag report` lists it.
    #[arg(long)]
    pub app: Option<String>,
    /// One process id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// cgroup v2 path, as recorded (e.g. /system.slice/nginx.service).
    #[arg(long)]
    pub cgroup: Option<String>,
}

/// Runs `apptag extract`; prints a one-line summary to stderr.
pub fn run_extract(
    args: &ExtractArgs,
) -> Result<apptag::report::extract::ExtractStats, ReportError> {
    use apptag::report::extract::{Selector, extract};
    let sel = match (&args.app, args.pid, &args.cgroup) {
        (Some(a), _, _) => Selector::App(a.clone()),
        (_, Some(p), _) => Selector::Pid(p),
        (_, _, Some(c)) => Selector::Cgroup(c.clone()),
        _ => {
            return Err(ReportError::Select(
                "say what to extract: --app NAME, --pid PID or --cgroup PATH".into(),
            ));
        }
    };
    let stats = extract(&args.file, &args.output, &sel)?;
    eprintln!(
        "{}: {} of {} packets ({}), {} process entries, {} application records",
        args.output.display(),
        stats.packets_written,
        stats.packets_read,
        apptag::units::human_bytes(stats.bytes_written),
        stats.processes_written,
        stats.applications_written
    );
    Ok(stats)
}
