//! The `apptag` command. Argument parsing and error reporting only (in [`cli`]); the work
//! is in the library.
use anyhow::Result;
use clap::Parser;

mod cli;

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli::run(cli::Cli::parse()) {
        // `apptag ... | head` closing the pipe is a normal way to stop reading.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        r => r,
    }
}
