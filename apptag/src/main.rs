//! The `apptag` command. Argument parsing and error reporting only; the work is in the
//! library.
use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "apptag",
    version,
    about = "Capture packets and tag each one with the local application that sent or received it",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Which applications used the network in a capture: how much, with whom and when.
    Report(apptag::report::cli::ReportArgs),
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.cmd {
        None => {
            println!(
                "kernel object: {} bytes",
                apptag::probes::KERNEL_OBJECT.len()
            );
            Ok(())
        }
        Some(Cmd::Report(args)) => {
            let report = apptag::report::cli::run(&args)?;
            if let Some(p) = report.problems.first() {
                anyhow::bail!("the capture is damaged at byte {}: {}", p.offset, p.message);
            }
            Ok(())
        }
    }
}
