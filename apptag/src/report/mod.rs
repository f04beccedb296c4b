//! The application view of a capture: who used the network, how much, with whom and when.
//!
//! [`analyze`] streams a pcap or pcapng file (memory-mapped) through [`dissect`] and
//! [`aggregate`] into a [`Report`]; [`table`] prints it, [`plot`] draws it, [`html`] makes
//! it one self-contained page with the state-vs-time view of [`timeline`], and [`extract`]
//! writes one application's packets to a new file.
pub mod aggregate;
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
    let capture = Capture::open(path)?;
    run(
        capture.data(),
        &path.display().to_string(),
        opts,
        None,
        |off| capture.release_before(off),
    )
}

/// [`analyze`], also gathering the state-vs-time view into [`Report::states`].
/// `credential_frames`: the frames that carried credentials (from
/// [`crate::analysis::creds`]), one entry per credential, marked in their cells.
pub fn analyze_with_states(
    path: &Path,
    opts: Options,
    credential_frames: &[u64],
) -> Result<Report, ReportError> {
    let capture = Capture::open(path)?;
    let states = timeline::StateRecorder::new(credential_frames);
    run(
        capture.data(),
        &path.display().to_string(),
        opts,
        Some(states),
        |off| capture.release_before(off),
    )
}

/// [`analyze`] over a capture already in memory.
pub fn analyze_bytes(data: &[u8], name: &str, opts: Options) -> Result<Report, ReportError> {
    run(data, name, opts, None, |_| {})
}

/// How much is read between two calls of the page releaser.
pub(crate) const RELEASE_EVERY: usize = 16 << 20;

fn run(
    data: &[u8],
    name: &str,
    opts: Options,
    states: Option<timeline::StateRecorder>,
    mut release: impl FnMut(usize),
) -> Result<Report, ReportError> {
    let mut records = Records::new(data)?;
    let format = records.format();
    // apptag writes its final application table at the end of the file, so with pcapng the
    // metadata is gathered first; the walk skips packet bodies and is cheap on a mapped file.
    let meta = if format == Format::Pcapng {
        collect_metadata(Records::new(data)?, &mut release)
    } else {
        Metadata::default()
    };
    let mut agg = Aggregator::new(meta);
    agg.states = states;
    let mut problems = Vec::new();
    let mut next_release = RELEASE_EVERY;
    while let Some(rec) = records.next_record() {
        match rec {
            Ok(Record::Packet(p)) => {
                let _ = agg.packet(&p);
                if records.offset() >= next_release {
                    release(records.offset());
                    next_release = records.offset() + RELEASE_EVERY;
                }
            }
            Ok(Record::Interface(i)) => agg.interface(i.linktype),
            Ok(Record::Section) => agg.new_section(),
            Ok(Record::InterfaceStats { interface, stats }) => {
                agg.interface_stats(interface, stats)
            }
            Ok(_) => {}
            // Structural damage ends the stream (the reader returns None next); a damaged
            // block content is skipped and reading goes on.
            Err(e) => {
                log::warn!("{e}");
                problems.push(Problem {
                    offset: e.offset().unwrap_or(0),
                    message: e.to_string(),
                });
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
