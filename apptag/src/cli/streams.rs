//! `apptag streams`: every TCP and UDP stream of a capture, with its application.
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use apptag::analysis::stream::StreamSummary;
use apptag::analysis::{AnalysisConfig, OverlapPolicy, Stream, Subscriber, analyze_file};

/// List every TCP and UDP stream of a capture with its application and process (on
/// apptag's tagged files), both ends, bytes and packets each way, state, gaps,
/// retransmitted and overlapping bytes, and first/last time. Streams are numbered as
/// tshark numbers tcp.stream and udp.stream.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("select").args(["app", "pid"])))]
pub struct StreamsArgs {
    /// Capture file (pcap or pcapng).
    pub file: PathBuf,
    /// JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the streams of this application.
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Only the streams of this process id.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub reassembly: ReassemblyArgs,
}

/// Reassembly options shared by `streams` and `follow`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReassemblyArgs {
    /// Which copy wins when TCP segments overlap: first, last, bsd, linux, windows.
    #[arg(long, value_name = "POLICY", default_value = "bsd")]
    pub overlap_policy: OverlapPolicy,
    /// Stop reassembling a direction after this many bytes (0: no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub depth: u64,
    /// Memory limit for all streams, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memcap_mib: usize,
    /// The TCP overlap policy for destinations in a prefix, e.g. 10.0.0.0/8=linux
    /// (repeatable; the most specific prefix wins).
    #[arg(long, value_name = "PREFIX=POLICY")]
    pub overlap_policy_for: Vec<String>,
    /// Which fragment wins when IP fragments overlap: first, last, bsd, bsd-right, linux,
    /// windows, solaris.
    #[arg(long, value_name = "POLICY", default_value = "bsd")]
    pub defrag_policy: apptag::analysis::defrag::Policy,
    /// The IP defragmentation policy for destinations in a prefix (repeatable).
    #[arg(long, value_name = "PREFIX=POLICY")]
    pub defrag_policy_for: Vec<String>,
}

/// How many cores the analysis uses.
#[derive(clap::Args, Debug, Clone)]
pub struct ThreadsArg {
    /// Worker threads. Flows are sharded by address pair, each stream on one worker, and
    /// the results merged in frame order: the output is the same for any number.
    /// Default: the cores available.
    #[arg(short = 'j', long = "threads", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

impl ThreadsArg {
    pub fn get(&self) -> usize {
        self.threads
            .map_or_else(apptag::analysis::shard::default_threads, usize::from)
    }
}

impl ReassemblyArgs {
    pub fn config(&self) -> Result<AnalysisConfig> {
        let mut cfg = AnalysisConfig::default();
        cfg.reassembly.policy = self.overlap_policy;
        cfg.reassembly.depth = self.depth;
        cfg.reassembly.memcap = self.memcap_mib.saturating_mul(1 << 20);
        for e in &self.overlap_policy_for {
            cfg.reassembly
                .per_destination
                .add_spec_entry(e)
                .with_context(|| format!("--overlap-policy-for {e}"))?;
        }
        cfg.defrag.policy = self.defrag_policy;
        for e in &self.defrag_policy_for {
            cfg.defrag
                .per_destination
                .add_spec_entry(e)
                .with_context(|| format!("--defrag-policy-for {e}"))?;
        }
        Ok(cfg)
    }
}

/// Shows how far a long run is, on a terminal only.
pub struct ProgressLine {
    enabled: bool,
    last_pct: u64,
}

impl ProgressLine {
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            last_pct: u64::MAX,
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled || total < (64 << 20) {
            return;
        }
        let pct = done * 100 / total.max(1);
        if pct != self.last_pct {
            self.last_pct = pct;
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{pct:3}% of {} MiB", total >> 20);
            if done >= total {
                let _ = writeln!(e);
            }
        }
    }
}

/// Collects every stream's summary as it ends.
#[derive(Default)]
pub struct Collect {
    pub streams: Vec<StreamSummary>,
}

impl Subscriber for Collect {
    fn wants_bytes(&self) -> bool {
        false
    }
    fn closed(&mut self, s: &Stream) {
        self.streams.push(s.summary());
    }
}

pub fn matches(s: &StreamSummary, app: Option<&str>, pid: Option<u32>) -> bool {
    if let Some(name) = app
        && s.app.as_ref().is_none_or(|a| a.name != name)
    {
        return false;
    }
    if let Some(p) = pid
        && !s.pids.contains(&p)
    {
        return false;
    }
    true
}

fn time(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1000)
}

pub fn run(args: &StreamsArgs) -> Result<()> {
    let mut collect = Collect::default();
    let mut progress = ProgressLine::new();
    let mut pf = |d, t| progress.update(d, t);
    let summary = analyze_file(
        &args.file,
        &args.reassembly.config()?,
        &mut collect,
        Some(&mut pf),
    )
    .with_context(|| format!("cannot analyse {}", args.file.display()))?;
    let mut streams = collect.streams;
    streams.sort_by_key(|s| (s.stream.transport as u8, s.stream.number));
    streams.retain(|s| matches(s, args.app.as_deref(), args.pid));
    let mut out = std::io::stdout().lock();
    let r = if args.json {
        let doc = serde_json::json!({
            "file": summary.file,
            "process_information": summary.tagged,
            "streams": streams,
            "summary": summary,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)
    } else {
        print_table(&mut out, &streams, summary.tagged)
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write to stdout")?,
    }
    if let Some(p) = summary.problems.first() {
        anyhow::bail!("the capture is damaged: {p}");
    }
    Ok(())
}

fn print_table(
    out: &mut dyn Write,
    streams: &[StreamSummary],
    tagged: bool,
) -> std::io::Result<()> {
    if !tagged {
        writeln!(
            out,
            "# no process information: not an apptag capture, applications unknown"
        )?;
    }
    writeln!(
        out,
        "{:<9} {:<24} {:<46} {:>15} {:>15} {:<11} {:>9} {:>11} {:>9} {:<17} {:<17}",
        "STREAM",
        "APPLICATION",
        "END 0 -> END 1",
        "PKTS 0>1/1>0",
        "BYTES 0>1/1>0",
        "STATE",
        "GAPS",
        "RETRANS",
        "OVERLAP",
        "FIRST",
        "LAST"
    )?;
    for s in streams {
        let app = match (&s.app, tagged) {
            (Some(a), _) => {
                let pids: Vec<String> = s.pids.iter().map(|p| p.to_string()).collect();
                format!("{} ({})", a.name, pids.join(","))
            }
            (None, true) => "unattributed".to_string(),
            (None, false) => "-".to_string(),
        };
        let d = &s.directions;
        let state = format!(
            "{:?}{}",
            s.state,
            s.cut.map(|c| format!(" cut:{c:?}")).unwrap_or_default()
        )
        .to_lowercase();
        writeln!(
            out,
            "{:<9} {:<24} {:<46} {:>15} {:>15} {:<11} {:>9} {:>11} {:>9} {:<17} {:<17}",
            s.stream.to_string(),
            app,
            format!("{} -> {}", s.ends[0], s.ends[1]),
            format!("{}/{}", d[0].packets, d[1].packets),
            format!("{}/{}", d[0].delivered_bytes, d[1].delivered_bytes),
            state,
            format!(
                "{}/{}",
                d[0].gaps + d[1].gaps,
                d[0].gap_bytes + d[1].gap_bytes
            ),
            d[0].retransmitted_bytes + d[1].retransmitted_bytes,
            d[0].overlapping_bytes + d[1].overlapping_bytes,
            time(s.first_ns),
            time(s.last_ns),
        )?;
    }
    Ok(())
}
