//! The command line: one file per subcommand; this one parses and dispatches.
use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

mod apps;
mod capture;
mod creds;
mod export;
mod fields;
mod follow;
mod privileges;
mod report_extract;
mod report_html;
mod sockets;
mod streams;

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
    /// Every TCP and UDP stream of a capture, with its application (tshark's numbering).
    Streams(streams::StreamsArgs),
    /// One stream's bytes in order, or every stream of an application into files.
    Follow(follow::FollowArgs),
    /// The credentials each host sent (logins, HTTP auth, SMTP senders), per application.
    /// Shows secrets from the capture.
    Creds(creds::CredsArgs),
    /// Print fields of packets and protocol elements, like `tshark -T fields -e NAME`.
    Fields(fields::FieldsArgs),
    /// Flow records (ECS) of capture files: NDJSON, Parquet or ClickHouse.
    Export(export::ExportArgs),
}

/// Parses the command line. A bare word where a subcommand goes is a mistyped subcommand
/// (clap's "unrecognized subcommand" with the closest match), not the start of a capture
/// filter: the filter goes after the options, where tcpdump users put it
/// (`apptag -i eth0 tcp port 443`).
pub fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(word) = args.get(1).and_then(|a| a.to_str())
        && !word.starts_with('-')
    {
        let cmd = Cli::command();
        let known = word == "help"
            || cmd
                .get_subcommands()
                .any(|s| s.get_name() == word || s.get_all_aliases().any(|a| a == word));
        if !known {
            unknown_subcommand(&cmd, word).exit();
        }
    }
    Cli::parse_from(args)
}

/// clap's own "unrecognized subcommand" error, with the nearest subcommand as clap would
/// choose it (Jaro similarity above 0.7).
fn unknown_subcommand(cmd: &clap::Command, word: &str) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let mut cmd = cmd.clone();
    let nearest = cmd
        .get_subcommands()
        .map(|s| (strsim::jaro(word, s.get_name()), s.get_name().to_string()))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name);
    let usage = cmd.render_usage();
    let mut e = clap::Error::new(ErrorKind::InvalidSubcommand).with_cmd(&cmd);
    e.insert(
        ContextKind::InvalidSubcommand,
        ContextValue::String(word.to_string()),
    );
    if let Some(n) = nearest {
        e.insert(ContextKind::SuggestedSubcommand, ContextValue::String(n));
    }
    e.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![
            format!(
                "a capture filter goes after the options, as with tcpdump: apptag -i IFACE \
                 {word} ..."
            )
            .into(),
        ]),
    );
    e.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
    e
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        None => capture::run(cli.capture),
        Some(Cmd::Sockets {
            json,
            duration,
            attribution,
        }) => sockets::run(json, duration, attribution),
        Some(Cmd::Apps { file, json }) => apps::print(&file, json, &mut std::io::stdout().lock()),
        Some(Cmd::Report(args)) => {
            let report = report_extract::run(&args)
                .with_context(|| format!("reading {}", args.file.display()))?;
            if let Some(p) = report.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
        Some(Cmd::Streams(args)) => streams::run(&args),
        Some(Cmd::Follow(args)) => follow::run(&args),
        Some(Cmd::Creds(args)) => creds::run(&args),
        Some(Cmd::Fields(args)) => fields::run(&args),
        Some(Cmd::Export(args)) => export::run(&args),
        Some(Cmd::Extract(args)) => {
            let stats = report_extract::run_extract(&args)
                .with_context(|| format!("extracting from {}", args.file.display()))?;
            if let Some(p) = stats.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
    }
}
