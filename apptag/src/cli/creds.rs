//! `apptag creds`: the credentials each host used, per application and process.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use apptag::analysis::analyze_file;
use apptag::analysis::creds::{Credential, Credentials, Kind};
use apptag::analysis::parse::Parsers;
use apptag::analysis::shard::analyze_file_sharded;

use super::streams::ReassemblyArgs;

/// List the credentials sent in a capture, grouped by client host and by local
/// application and process: FTP, POP3 and IMAP logins, SMTP AUTH users, HTTP Basic users
/// and passwords and Digest users, and SMTP MAIL FROM senders. Protocols are recognised by
/// content, on any port. Each entry names its stream (tshark's numbering), frame and time.
///
/// THIS PRINTS SECRETS: passwords sent in clear (or in base64) in the capture are shown as
/// they were sent. Treat the output like the capture itself.
#[derive(clap::Args, Debug, Clone)]
pub struct CredsArgs {
    /// Capture file (pcap or pcapng).
    pub file: PathBuf,
    /// One JSON array of credentials instead of the grouped text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub reassembly: ReassemblyArgs,
    #[command(flatten)]
    pub threads: super::streams::ThreadsArg,
}

pub fn run(args: &CredsArgs) -> Result<()> {
    let cfg = args.reassembly.config()?;
    let threads = args.threads.get();
    let (creds, summary) = if threads <= 1 {
        let mut parsers = Parsers::new(Credentials::default());
        let summary = analyze_file(&args.file, &cfg, &mut parsers, None)
            .with_context(|| format!("reading {}", args.file.display()))?;
        let mut creds = parsers.sink;
        creds.list.sort_by_key(|c| c.frame);
        (creds, summary)
    } else {
        let r = analyze_file_sharded(
            &args.file,
            &cfg,
            threads,
            |_| Parsers::new(Credentials::default()),
            |p| p.sink,
        )
        .with_context(|| format!("reading {}", args.file.display()))?;
        let mut creds = Credentials::default();
        for (w, mut c) in r.workers.into_iter().enumerate() {
            for x in &mut c.list {
                x.stream = r.renumber.get(w, x.stream);
            }
            creds.list.append(&mut c.list);
            creds.dropped += c.dropped;
        }
        // Frame order: each frame's credentials come from one worker, in its order.
        creds.list.sort_by_key(|c| c.frame);
        (creds, r.summary)
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &creds.list)?;
        writeln!(out)?;
        return Ok(());
    }
    if creds.list.is_empty() {
        writeln!(out, "no credentials in {}", args.file.display())?;
    }
    let mut groups: BTreeMap<(String, String), Vec<&Credential>> = BTreeMap::new();
    for c in &creds.list {
        let app = if !summary.tagged {
            "no process information".to_string()
        } else if c.app.is_empty() {
            "unknown application".to_string()
        } else {
            let pids: Vec<String> = c.pids.iter().map(u32::to_string).collect();
            format!("{} (pid {})", c.app, pids.join(","))
        };
        groups.entry((c.client.clone(), app)).or_default().push(c);
    }
    for ((client, app), list) in groups {
        writeln!(out, "{client}  {app}")?;
        for c in list {
            let what = match c.kind {
                Kind::Login => "login ",
                Kind::Sender => "sender",
            };
            write!(
                out,
                "  frame {:<6} {:<8} {:<5} {what} {:<10} user {:?}",
                c.frame,
                c.stream.to_string(),
                c.protocol,
                c.mechanism,
                c.user
            )?;
            if let Some(p) = &c.password {
                write!(out, " password {p:?}")?;
            }
            writeln!(out, " -> {}", c.server)?;
        }
    }
    if creds.dropped > 0 {
        writeln!(out, "({} more not kept: over the limit)", creds.dropped)?;
    }
    Ok(())
}
