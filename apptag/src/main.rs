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
    /// Print the applications and sockets recorded in a capture file (merges the periodic
    /// application-record blocks).
    Apps {
        /// The pcapng file written by apptag.
        file: std::path::PathBuf,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        Some(Cmd::Apps { file, json }) => {
            apptag::pcapng::apps::print(&file, json, &mut std::io::stdout().lock())?;
            Ok(())
        }
    }
}
