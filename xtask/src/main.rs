//! Developer and user tasks for apptag: `cargo xtask setup|build|run|test|bench|fuzz`.
//!
//! Everything a fresh machine lacks is installed by `setup`, which the other commands call
//! first, so `cargo xtask test` and `cargo xtask run` work on a clean clone.

mod bench;
mod fuzz;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run, test and benchmark apptag")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks: rust-src, bpf-linker (built against LLVM 22) and the
    /// Debian packages the tests and benchmarks use. Idempotent; seconds when all is there.
    Setup {
        /// Also install cargo-fuzz (only `cargo xtask fuzz` needs it; CI does not).
        #[arg(long)]
        fuzz: bool,
    },
    /// Build apptag (release) with its embedded kernel programs.
    Build,
    /// Build and run apptag as root: `cargo xtask run -- -i lo -w out.pcapng`.
    Run {
        /// Arguments passed to apptag.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the unit tests, then the integration tests that load the kernel programs as root.
    Test {
        /// Only run tests whose name contains this string.
        filter: Option<String>,
        /// Skip the format and clippy checks.
        #[arg(long)]
        no_lint: bool,
    },
    /// Run a benchmark and print its table (see docs/BENCHMARKS.md).
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        name: bench::Name,
        /// Extra arguments for the benchmark.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Coverage-guided fuzzing of a reader or the dissector with cargo-fuzz (libFuzzer,
    /// nightly), seeded from ../shared/captures and generated files (see docs/FUZZING.md).
    #[command(group(clap::ArgGroup::new("what").required(true).args(["target", "list"])))]
    Fuzz {
        /// Which target (`--list` shows them).
        target: Option<String>,
        /// How long to fuzz, in seconds.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// List the targets and exit.
        #[arg(long)]
        list: bool,
    },
}

fn main() -> std::process::ExitCode {
    // A failed step is a message, not a crash: no backtrace even with RUST_BACKTRACE set.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup { fuzz } => {
            setup::run()?;
            if fuzz {
                setup::ensure_cargo_fuzz()?;
            }
            Ok(())
        }
        Cmd::Build => {
            setup::ensure()?;
            util::build_release()
        }
        Cmd::Run { args } => {
            setup::ensure()?;
            util::build_release()?;
            util::run_apptag(&args)
        }
        Cmd::Test { filter, no_lint } => {
            setup::ensure()?;
            util::test(filter.as_deref(), !no_lint)
        }
        Cmd::Bench { name, args } => {
            setup::ensure()?;
            bench::run(name, &args)
        }
        Cmd::Fuzz { list: true, .. } => fuzz::list(),
        Cmd::Fuzz { target, secs, .. } => {
            setup::ensure()?;
            fuzz::run(target.as_deref().unwrap_or_default(), secs)
        }
    }
}
