//! The application view of a capture: who used the network, how much, with whom and when.
//!
//! [`analyze`] runs the analysis driver ([`crate::analysis::analyze_file`]: read, dissect,
//! defragment, reassemble, parse) over a pcap or pcapng file with [`collect::Collector`] as
//! its subscriber, which [`aggregate`]s every frame and gathers what the streams
//! [`carried`]; the result is a [`Report`]; [`table`] prints it, [`plot`] draws it, [`html`]
//! makes it one self-contained page with the state-vs-time view of [`timeline`], and
//! [`extract`] writes one application's packets to a new file.
pub mod aggregate;
pub mod carried;
pub mod collect;
pub mod extract;
pub mod html;
pub mod payload;
pub mod pcap;
pub mod plot;
pub mod source;
pub mod summary;
pub mod table;
pub mod timeline;

use std::path::Path;

pub use summary::{Application, Conversation, Problem, Report, Totals};

use aggregate::Metadata;
use source::{Format, Record, Records};

use crate::analysis::{AnalysisConfig, AnalysisError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("truncated capture at byte {offset}: {what}")]
    Truncated { offset: u64, what: String },
    #[error("corrupt capture at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    #[error("{0}")]
    Pcapng(crate::pcapng::PcapngError),
    #[error("cannot draw the plot {path}: {what}")]
    Plot { path: String, what: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Select(String),
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<crate::pcapng::PcapngError> for ReportError {
    fn from(e: crate::pcapng::PcapngError) -> Self {
        use crate::pcapng::PcapngError as P;
        // Damage in the file keeps its offset, whichever reader found it.
        match e {
            P::Corrupt { offset, what } => ReportError::Corrupt { offset, what },
            P::Truncated {
                offset,
                what,
                needed,
                available,
            } => ReportError::Truncated {
                offset,
                what: format!(
                    "{what} needs {needed} bytes, only {available} left (the writer was \
                     probably killed; everything before byte {offset} is intact)"
                ),
            },
            other => ReportError::Pcapng(other),
        }
    }
}

impl ReportError {
    /// Where in the file the problem is, for damage found while reading.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ReportError::Truncated { offset, .. } | ReportError::Corrupt { offset, .. } => {
                Some(*offset)
            }
            _ => None,
        }
    }
}

/// What to include beyond the default report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// List every flow in [`Report::conversations`].
    pub flows: bool,
}

/// Reads the capture at `path` and builds its report. Damage inside the file does not fail
/// the call: what was read before it is reported, with the damage in [`Report::problems`].
/// Only a file that cannot be opened or is not a capture at all is an error.
pub fn analyze(path: &Path, opts: Options) -> Result<Report, ReportError> {
    analyze_with(path, opts, &AnalysisConfig::default())
}

/// [`analyze`] with the analysis driver's configuration (defragmentation, reassembly).
pub fn analyze_with(
    path: &Path,
    opts: Options,
    cfg: &AnalysisConfig,
) -> Result<Report, ReportError> {
    let mut c = collect::Collector::new(true);
    let summary = crate::analysis::analyze_file(path, cfg, &mut c, None).map_err(unwrap)?;
    Ok(finish(c, summary, path.display().to_string(), opts))
}

/// [`analyze`], also gathering the state-vs-time view into [`Report::states`], on one
/// worker. `credential_frames`: the frames that carried credentials (from
/// [`crate::analysis::creds`]), one entry per credential, marked in their cells.
pub fn analyze_with_states(
    path: &Path,
    opts: Options,
    credential_frames: &[u64],
) -> Result<Report, ReportError> {
    let mut c =
        collect::Collector::new(true).with_states(timeline::StateRecorder::new(credential_frames));
    let summary = crate::analysis::analyze_file(path, &AnalysisConfig::default(), &mut c, None)
        .map_err(unwrap)?;
    Ok(finish(c, summary, path.display().to_string(), opts))
}

/// [`analyze_with`] on `threads` workers (flows sharded by address pair, results merged
/// so that the report is the one a single core makes).
pub fn analyze_threads(
    path: &Path,
    opts: Options,
    cfg: &AnalysisConfig,
    threads: usize,
) -> Result<Report, ReportError> {
    if threads <= 1 {
        return analyze_with(path, opts, cfg);
    }
    let r = crate::analysis::shard::analyze_file_sharded(
        path,
        cfg,
        threads,
        |_| collect::Collector::new(true),
        collect::Collector::finish,
    )
    .map_err(unwrap)?;
    Ok(merged(r, path.display().to_string(), opts))
}

/// [`analyze_threads`] over a capture in memory.
pub fn analyze_bytes_threads(
    data: &[u8],
    name: &str,
    opts: Options,
    threads: usize,
) -> Result<Report, ReportError> {
    if threads <= 1 {
        return analyze_bytes(data, name, opts);
    }
    let r = crate::analysis::shard::analyze_bytes_sharded(
        data,
        &AnalysisConfig::default(),
        threads,
        |_| collect::Collector::new(true),
        collect::Collector::finish,
    )
    .map_err(unwrap)?;
    Ok(merged(r, name.to_string(), opts))
}

fn merged(
    r: crate::analysis::shard::Sharded<(aggregate::Aggregator, Vec<Problem>)>,
    name: String,
    opts: Options,
) -> Report {
    let mut problems = Vec::new();
    let mut parts = Vec::with_capacity(r.workers.len());
    for (i, (agg, p)) in r.workers.into_iter().enumerate() {
        if i == 0 {
            problems = p;
        }
        parts.push(agg);
    }
    let mut agg = aggregate::Aggregator::merge(parts);
    agg.defrag = r.summary.defrag;
    let format = r.summary.format.unwrap_or(Format::Pcap);
    Report::build(agg, name, format, problems, opts.flows)
}

/// [`analyze`] over a capture already in memory.
pub fn analyze_bytes(data: &[u8], name: &str, opts: Options) -> Result<Report, ReportError> {
    let mut c = collect::Collector::new(true);
    let summary =
        crate::analysis::analyze_bytes(data, &AnalysisConfig::default(), &mut c).map_err(unwrap)?;
    Ok(finish(c, summary, name.to_string(), opts))
}

fn unwrap(e: AnalysisError) -> ReportError {
    match e {
        AnalysisError::Read(e) => e,
    }
}

fn finish(
    c: collect::Collector<'_>,
    summary: crate::analysis::Summary,
    name: String,
    opts: Options,
) -> Report {
    let (mut agg, problems) = c.finish();
    agg.defrag = summary.defrag;
    let format = summary.format.unwrap_or(Format::Pcap);
    Report::build(agg, name, format, problems, opts.flows)
}

/// How much is read between two calls of the page releaser.
pub(crate) const RELEASE_EVERY: usize = 16 << 20;

pub(crate) fn collect_metadata(mut records: Records, release: &mut impl FnMut(usize)) -> Metadata {
    let mut meta = Metadata::default();
    let mut next_release = RELEASE_EVERY;
    while let Some(rec) = records.next_record() {
        if records.offset() >= next_release {
            release(records.offset());
            next_release = records.offset() + RELEASE_EVERY;
        }
        match rec {
            Ok(Record::Process(p)) => meta.add_process(p),
            Ok(Record::AppRecords {
                sequence,
                final_table,
                part,
                parts,
                apps,
            }) => meta
                .table
                .merge_block(sequence, final_table, part, parts, apps),
            Ok(_) | Err(_) => {}
        }
    }
    meta
}
