//! Benchmarks. Each compares apptag with the tool a user would otherwise pick, on the same
//! input in the same run, and prints a Markdown table for docs/BENCHMARKS.md.
mod analysis;
mod attribution;
mod capture;
mod export;
mod pcapng;
mod report;
mod soak;

use anyhow::Result;
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Name {
    /// pcapng writer throughput (issue: pcapng output).
    Pcapng,
    /// Attribution of short-lived processes, eBPF vs procfs (issue: attribution).
    Attribution,
    /// Live capture on a veth pair, apptag vs tcpdump (issue: live capture).
    Capture,
    /// `apptag report` on a multi-GB capture vs tshark (issue: application view).
    Report,
    /// Defragmentation + TCP reassembly on a multi-GB capture with loss, retransmission,
    /// reordering and fragments, vs tshark and tcpflow (issue: stream analysis).
    Analysis,
    /// Flow-record export: records/s per encoding on one core (issue: fleets).
    Export,
    /// The sensor for `--minutes N` (default 60) on one file under steady load and a stream
    /// of short-lived clients: RSS over time, loss, attribution (issue: production hardening).
    Soak,
}

pub fn run(name: Name, args: &[String]) -> Result<()> {
    match name {
        Name::Attribution => attribution::run(args),
        Name::Pcapng => pcapng::run(args),
        Name::Report => report::run(args),
        Name::Capture => capture::run(args),
        Name::Analysis => analysis::run(args),
        Name::Export => export::run(args),
        Name::Soak => soak::run(args),
    }
}
