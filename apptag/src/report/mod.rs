//! The application view of a capture: who used the network, how much, with whom and when.
//!
//! [`analyze`] streams a pcap or pcapng file (memory-mapped) through [`dissect`] and
//! [`aggregate`] into a [`Report`]; [`table`] prints it, [`plot`] draws it, and
//! [`extract`] writes one application's packets to a new file.
pub mod aggregate;
pub mod cli;
pub mod dissect;
pub mod payload;
pub mod pcap;
pub mod plot;
pub mod source;
pub mod summary;
pub mod table;

use std::path::Path;

pub use summary::{Application, Conversation, Problem, Report, Totals};

use aggregate::{Aggregator, Metadata};
use source::{Capture, Format, Record, Records};

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
    #[error(
        "this is a pcapng file, and pcapng reading is not in this build yet; convert it \
         with `editcap -F pcap FILE OUT.pcap` to report on it (process tags are lost)"
    )]
    PcapngUnavailable,
    #[error("cannot draw the plot {path}: {what}")]
    Plot { path: String, what: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
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
    let capture = Capture::open(path)?;
    analyze_bytes(capture.data(), &path.display().to_string(), opts)
}

/// [`analyze`] over a capture already in memory.
pub fn analyze_bytes(data: &[u8], name: &str, opts: Options) -> Result<Report, ReportError> {
    let records = Records::new(data)?;
    let format = records.format();
    // apptag writes its final application table at the end of the file, so with pcapng the
    // metadata is gathered first; the walk skips packet bodies and is cheap on a mapped file.
    let meta = if format == Format::Pcapng {
        collect_metadata(Records::new(data)?)
    } else {
        Metadata::default()
    };
    let mut agg = Aggregator::new(meta);
    let mut problems = Vec::new();
    for rec in records {
        match rec {
            Ok(Record::Packet(p)) => agg.packet(&p),
            Ok(Record::Interface(i)) => agg.interface(i.linktype),
            Ok(_) => {}
            Err(e) => {
                log::warn!("{e}");
                problems.push(Problem {
                    offset: e.offset().unwrap_or(0),
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    Ok(Report::build(
        agg,
        name.to_string(),
        format,
        problems,
        opts.flows,
    ))
}

fn collect_metadata(records: Records) -> Metadata {
    let mut meta = Metadata::default();
    for rec in records {
        match rec {
            Ok(Record::Process(p)) => meta.add_process(p),
            Ok(Record::AppRecords { apps, .. }) => meta.add_apps(apps),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    meta
}
