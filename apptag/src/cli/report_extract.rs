//! `apptag report` and `apptag extract`.
use std::{io::Write, path::PathBuf};

use apptag::report::{Options, ReportError, analyze_threads, analyze_with_states, plot, table};

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
    /// Write one self-contained HTML page (no network access needed to view it; mode 0600):
    /// the application table, volume over time, the state-vs-time view (one row per
    /// application, remote host or process, chosen in the page or with `#group=remote` in
    /// the address; each time bucket coloured quiet, active, new connections, failed
    /// connections or resets, credentials seen) and per-application detail. Reads the file
    /// a second time for credentials (as `apptag creds`; passwords are not put in the page),
    /// on one worker. The page holds at most 200 time buckets and 100 rows per grouping, the
    /// rest summed into an "other" row.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub threads: super::streams::ThreadsArg,
}

/// Runs `apptag report`. Returns the report so the caller can decide the exit status
/// (damage in the file is in `problems`).
pub fn run(args: &ReportArgs) -> anyhow::Result<apptag::report::Report> {
    let opts = Options { flows: args.flows };
    let (report, credentials) = match &args.html {
        Some(_) => {
            let creds = super::report_html::credentials(&args.file)?;
            let frames: Vec<u64> = creds.iter().map(|c| c.frame).collect();
            (analyze_with_states(&args.file, opts, &frames)?, creds)
        }
        None => (
            analyze_threads(
                &args.file,
                opts,
                &apptag::analysis::AnalysisConfig::default(),
                args.threads.get(),
            )?,
            Vec::new(),
        ),
    };
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
            }
            .into());
        }
    }
    if let Some(path) = &args.plot {
        plot::draw(&report, path)?;
        log::info!("plot written to {}", path.display());
    }
    if let Some(path) = &args.html {
        super::report_html::write(&report, &credentials, path)?;
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
