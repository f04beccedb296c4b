//! The `apptag` command. Argument parsing and error reporting only; the work is in the
//! library.
use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context, Result};
use apptag::attribution::Mode;
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
}

/// Ctrl-C and SIGTERM set the flag; the command then finishes cleanly.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Sockets {
            json,
            duration,
            attribution,
        }) => {
            let stop = stop_flag()?;
            let mut out = std::io::stdout().lock();
            match apptag::attribution::watch::watch(
                attribution,
                duration.map(Duration::from_secs_f64),
                json,
                stop,
                &mut out,
            ) {
                // `apptag sockets | head` is a normal way to stop.
                Err(apptag::attribution::watch::WatchError::Output(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                r => Ok(r?),
            }
        }
        None => {
            let probes = apptag::probes::Probes::attach(&Default::default())?;
            for s in probes.status() {
                match &s.error {
                    None => println!("attached     {}", s.hook),
                    Some(e) => println!("NOT attached {}: {e}", s.hook),
                }
            }
            Ok(())
        }
        Some(Cmd::Apps { file, json }) => {
            apptag::pcapng::apps::print(&file, json, &mut std::io::stdout().lock())?;
            Ok(())
        }
    }
}
