//! The `apptag` command. Argument parsing and error reporting only (in [`cli`]); the work
//! is in the library.
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli::run(cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // `apptag ... | head` closing the pipe is a normal way to stop reading.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // A user error is a message, not a crash: the chain of causes on one line, and
            // never the backtrace anyhow captures under RUST_BACKTRACE=1 (panics, the real
            // bugs, still print theirs).
            eprintln!("Error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once: library errors often already quote their
/// source in their own message.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
