//! Subscriptions, and the driver that feeds them: a capture file is read (memory-mapped),
//! each frame dissected, fragments reassembled, segments and datagrams put in order per
//! stream, and subscribers called back on packets entering a state and on stream data as
//! it becomes contiguous.
//!
//! A protocol parser is a [`Subscriber`]: it is told when a stream opens, gets each
//! direction's newly contiguous bytes as a range of [`Position`]s (reading them, across
//! segment boundaries, through the stream's [`HalfStream`](super::stream::HalfStream)),
//! is told of every gap where it lies and of the close. It returns the earliest position it
//! still needs, so it can buffer an element until it knows the element is valid; every
//! byte before what all subscribers need is freed.
use std::ops::Range;
use std::path::Path;

use serde::Serialize;

use super::apps::AppIndex;
use super::stream::{Dir, Position, Stream};
use super::tcp::{Input, Reassembler, ReassemblyConfig, ReassemblyStats, transport_of};
use crate::dissect::{self, Dissected, Fragment};
use crate::report::ReportError;
use crate::report::source::{Capture, Format, Record, Records};

/// The states a packet enters on its way through the layers (the qcap paper's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum State {
    /// Read from the file.
    Captured,
    /// An IP fragment, held for defragmentation.
    Fragment,
    /// An artificial packet: an IP datagram rebuilt from its fragments.
    Reassembled,
    /// Thrown away as the destination would have (with a reason).
    Discarded,
    /// The first packet of a stream.
    NewConnection,
    /// A segment that arrived ahead of a hole and waits in the out-of-order queue.
    QueuedOutOfOrder,
    /// A segment (or datagram) whose bytes were delivered in order.
    DeliveredInOrder,
    /// The packet that closed its stream (the last FIN, or a RST).
    Closed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Captured,
        State::Fragment,
        State::Reassembled,
        State::Discarded,
        State::NewConnection,
        State::QueuedOutOfOrder,
        State::DeliveredInOrder,
        State::Closed,
    ];
}

/// A set of [`State`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct States(u8);

impl States {
    pub const NONE: States = States(0);
    pub const ALL: States = States(0xff);

    pub const fn of(s: State) -> States {
        States(1 << s as u8)
    }

    pub const fn with(self, s: State) -> States {
        States(self.0 | 1 << s as u8)
    }

    pub const fn union(self, o: States) -> States {
        States(self.0 | o.0)
    }

    #[inline]
    pub const fn contains(self, s: State) -> bool {
        self.0 & (1 << s as u8) != 0
    }
}

/// A packet entering a state.
pub struct PacketEvent<'a, 'p> {
    /// 1-based frame number in the file (0 for events made at the end of the input).
    pub frame: u64,
    pub ts_ns: u64,
    /// The process id apptag tagged the packet with (0: none).
    pub pid: u32,
    pub state: State,
    /// For [`State::Discarded`]: why.
    pub reason: Option<&'static str>,
    /// For [`State::Reassembled`] and what is built on it: the frames it came from.
    pub constituents: &'a [u64],
    pub packet: &'a Dissected<'p>,
    /// The stream, for the stream states.
    pub stream: Option<&'a Stream>,
}

/// Called back by the driver. Every method has a default that does nothing, so a
/// subscriber implements only what it needs.
pub trait Subscriber {
    /// The packet states [`Subscriber::packet`] is called for.
    fn states(&self) -> States {
        States::NONE
    }

    fn packet(&mut self, _ev: &PacketEvent<'_, '_>) {}

    /// A new stream (its first packet).
    fn opened(&mut self, _s: &Stream) {}

    /// `range` of direction `dir` became contiguous (the bytes one packet delivered, or
    /// that it released from the out-of-order queue). Read them with
    /// `s.half(dir).bytes(range.start, range.end)` or through a
    /// [`Cursor`](super::stream::Cursor). Return the earliest position still needed
    /// (bytes before it may be freed), or None when nothing is.
    fn data(&mut self, _s: &Stream, _dir: Dir, _range: Range<Position>) -> Option<Position> {
        None
    }

    /// `range` of `dir` is missing from the capture: the bytes will never come.
    fn gap(&mut self, _s: &Stream, _dir: Dir, _range: Range<Position>) {}

    /// The stream ended: both FINs, a RST, the timeout, or the end of the file
    /// (`s.state` says which). Called once per stream.
    fn closed(&mut self, _s: &Stream) {}
}

/// Several subscribers as one: each gets every callback; the bytes kept are what the
/// most demanding needs.
pub struct Fanout<'a>(pub Vec<&'a mut dyn Subscriber>);

impl Subscriber for Fanout<'_> {
    fn states(&self) -> States {
        self.0.iter().fold(States::NONE, |a, s| a.union(s.states()))
    }
    fn packet(&mut self, ev: &PacketEvent<'_, '_>) {
        for s in &mut self.0 {
            if s.states().contains(ev.state) {
                s.packet(ev);
            }
        }
    }
    fn opened(&mut self, st: &Stream) {
        for s in &mut self.0 {
            s.opened(st);
        }
    }
    fn data(&mut self, st: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        let mut keep: Option<Position> = None;
        for s in &mut self.0 {
            if let Some(p) = s.data(st, dir, range.clone()) {
                keep = Some(keep.map_or(p, |k| k.min(p)));
            }
        }
        keep
    }
    fn gap(&mut self, st: &Stream, dir: Dir, range: Range<Position>) {
        for s in &mut self.0 {
            s.gap(st, dir, range.clone());
        }
    }
    fn closed(&mut self, st: &Stream) {
        for s in &mut self.0 {
            s.closed(st);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Read(#[from] ReportError),
}

/// How to analyse.
#[derive(Clone, Debug, Default)]
pub struct AnalysisConfig {
    pub reassembly: ReassemblyConfig,
}

/// What a run saw, besides what the subscribers were told.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub file: String,
    pub format: Option<Format>,
    pub frames: u64,
    pub bytes: u64,
    pub non_ip: u64,
    /// IP fragments seen.
    pub fragments: u64,
    /// Whether the file carries apptag's process information.
    pub tagged: bool,
    pub reassembly: ReassemblyStats,
    /// Damage in the file: what was read before it was analysed.
    pub problems: Vec<String>,
}

/// Progress of a long run: bytes of the file read so far, and its size.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Analyses the capture at `path`, calling `sub` back.
pub fn analyze_file(
    path: &Path,
    cfg: &AnalysisConfig,
    sub: &mut dyn Subscriber,
    progress: Option<Progress<'_>>,
) -> Result<Summary, AnalysisError> {
    let capture = Capture::open(path)?;
    let mut s = run(capture.data(), cfg, sub, progress, &mut |off| {
        capture.release_before(off)
    })?;
    s.file = path.display().to_string();
    Ok(s)
}

/// [`analyze_file`] over a capture already in memory.
pub fn analyze_bytes(
    data: &[u8],
    cfg: &AnalysisConfig,
    sub: &mut dyn Subscriber,
) -> Result<Summary, AnalysisError> {
    run(data, cfg, sub, None, &mut |_| {})
}

fn run(
    data: &[u8],
    cfg: &AnalysisConfig,
    sub: &mut dyn Subscriber,
    mut progress: Option<Progress<'_>>,
    release: &mut dyn FnMut(usize),
) -> Result<Summary, AnalysisError> {
    let mut records = Records::new(data)?;
    let format = records.format();
    // apptag writes its final application table at the end of the file: gather it first.
    let meta = if format == Format::Pcapng {
        let mut rel = |o| release(o);
        crate::report::collect_metadata(Records::new(data)?, &mut rel)
    } else {
        Default::default()
    };
    let apps = AppIndex::from_metadata(&meta);
    let mut summary = Summary {
        format: Some(format),
        tagged: apps.is_some(),
        ..Default::default()
    };
    let states = sub.states();
    let mut reasm = Reassembler::new(cfg.reassembly.clone(), apps, states);
    let mut linktypes: Vec<u16> = Vec::new();
    let mut frame = 0u64;
    let total = data.len() as u64;
    let mut next_release = crate::report::RELEASE_EVERY;
    while let Some(rec) = records.next_record() {
        match rec {
            Ok(Record::Packet(p)) => {
                frame += 1;
                summary.bytes += u64::from(p.orig_len);
                let lt = linktypes
                    .get(p.interface as usize)
                    .copied()
                    .unwrap_or(dissect::linktype::ETHERNET);
                let d = dissect::dissect(lt, p.data);
                let ev = |state| PacketEvent {
                    frame,
                    ts_ns: p.ts_ns,
                    pid: p.pid,
                    state,
                    reason: None,
                    constituents: &[],
                    packet: &d,
                    stream: None,
                };
                if states.contains(State::Captured) {
                    sub.packet(&ev(State::Captured));
                }
                if !d.is_ip() {
                    summary.non_ip += 1;
                } else if d.fragment != Fragment::Whole {
                    summary.fragments += 1;
                    if states.contains(State::Fragment) {
                        sub.packet(&ev(State::Fragment));
                    }
                } else {
                    let inp = Input {
                        frame,
                        ts_ns: p.ts_ns,
                        pid: p.pid,
                        packet: &d,
                        constituents: None,
                    };
                    match transport_of(&d) {
                        Some(super::stream::Transport::Tcp) => reasm.tcp(&inp, sub),
                        Some(super::stream::Transport::Udp) => reasm.udp(&inp, sub),
                        None => {}
                    }
                }
                let off = records.offset();
                if off >= next_release {
                    release(off);
                    next_release = off + crate::report::RELEASE_EVERY;
                    if let Some(p) = progress.as_mut() {
                        p(off as u64, total);
                    }
                }
            }
            Ok(Record::Interface(i)) => linktypes.push(i.linktype),
            Ok(Record::Section) => linktypes.clear(),
            Ok(_) => {}
            Err(e) => {
                log::warn!("{e}");
                summary.problems.push(e.to_string());
            }
        }
    }
    reasm.finish(sub);
    if let Some(p) = progress.as_mut() {
        p(total, total);
    }
    summary.frames = frame;
    summary.reassembly = reasm.stats.clone();
    Ok(summary)
}
