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

use rustc_hash::FxHashMap;

use super::apps::AppIndex;
use super::defrag::{
    DatagramKey, DefragConfig, DefragOutcome, DefragStats, Defragmenter, DiscardReason,
};
use super::frames::{Frame, Frames};
use super::stream::{Dir, Position, Stream};
use super::tcp::{Input, Reassembler, ReassemblyConfig, ReassemblyStats, transport_of};
use crate::dissect::{self, Dissected, Fragment};
use crate::model::Packet;
use crate::report::ReportError;
use crate::report::aggregate::Metadata;
use crate::report::source::{Capture, Format, Record};

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
    /// The file's record of the frame (length on the wire, direction flag), for the
    /// states the driver makes from a frame of the file (not for the stream states, nor
    /// for fragments dropped later).
    pub record: Option<&'a Packet<'p>>,
}

/// A fragment's file record and its own headers, without its bytes: kept by the driver
/// while its datagram is incomplete, for subscribers that count fragments
/// ([`Subscriber::wants_fragments`]).
#[derive(Clone, Copy, Debug)]
pub struct HeldFragment {
    pub frame: u64,
    /// The record, `data` empty.
    pub record: Packet<'static>,
    /// Its own headers, `l3` and `payload` empty; for a fragment dropped with its
    /// datagram, a later fragment carries its datagram's first fragment's headers (ports)
    /// when that fragment was seen.
    pub header: Dissected<'static>,
}

/// Fragments whose fate is known (see [`Subscriber::fragments`]).
pub enum Settled<'a, 'p> {
    /// They made `datagram`; in frame order, the last one completed it. Fragments the
    /// defragmenter discarded while their datagram was being put together are included:
    /// they belong to it.
    Datagram {
        datagram: &'a Dissected<'p>,
        fragments: &'a [HeldFragment],
    },
    /// Held, then dropped (timeout, end of input, data past the datagram's end): each on
    /// its own headers.
    Dropped(&'a [HeldFragment]),
    /// Discarded on arrival while no datagram of its key was being put together: on its
    /// own, bytes included.
    Discarded {
        fragment: &'a Dissected<'p>,
        record: &'a Packet<'p>,
        frame: u64,
    },
}

/// Called back by the driver. Every method has a default that does nothing, so a
/// subscriber implements only what it needs.
pub trait Subscriber {
    /// The packet states [`Subscriber::packet`] is called for.
    fn states(&self) -> States {
        States::NONE
    }

    fn packet(&mut self, _ev: &PacketEvent<'_, '_>) {}

    /// Whether this subscriber reads stream bytes. When no subscriber does, reassembly
    /// still orders segments, resolves overlaps and finds gaps, but delivered bytes are
    /// not copied (and retransmissions are not compared with them).
    fn wants_bytes(&self) -> bool {
        true
    }

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

    /// The stream is done, with its final counters: called once per stream when it is
    /// retired (idle for the timeout, a new connection on its 5-tuple, or the end of the
    /// input). `s.state` says how it ended: closed (both FINs), reset, timed-out or
    /// unfinished. The packet that closed it entered [`State::Closed`] when it came.
    fn closed(&mut self, _s: &Stream) {}

    /// Whether [`Subscriber::fragments`] is wanted (the driver then keeps each held
    /// fragment's record until its datagram is settled).
    fn wants_fragments(&self) -> bool {
        false
    }

    /// Fragments whose datagram was reassembled, or which were dropped: each fragment is
    /// settled exactly once, so a subscriber counting frames counts every fragment once.
    fn fragments(&mut self, _settled: Settled<'_, '_>) {}

    /// What the file says about processes and applications, before the first record.
    fn metadata(&mut self, _meta: &Metadata) {}

    /// A record of the file other than a packet (interfaces, sections, statistics).
    fn block(&mut self, _rec: &Record<'_>) {}

    /// Damage in the file (reading goes on where it can).
    fn damage(&mut self, _e: &ReportError) {}

    /// The time of the file's first packet, before that packet is given (the same for
    /// every worker of a sharded run).
    fn origin(&mut self, _ts_ns: u64) {}
}

/// Several subscribers as one: each gets every callback; the bytes kept are what the
/// most demanding needs.
pub struct Fanout<'a>(pub Vec<&'a mut dyn Subscriber>);

impl Subscriber for Fanout<'_> {
    fn states(&self) -> States {
        self.0.iter().fold(States::NONE, |a, s| a.union(s.states()))
    }
    fn wants_bytes(&self) -> bool {
        self.0.iter().any(|s| s.wants_bytes())
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
    fn wants_fragments(&self) -> bool {
        self.0.iter().any(|s| s.wants_fragments())
    }
    fn fragments(&mut self, settled: Settled<'_, '_>) {
        for s in &mut self.0 {
            let again = match &settled {
                Settled::Datagram {
                    datagram,
                    fragments,
                } => Settled::Datagram {
                    datagram,
                    fragments,
                },
                Settled::Dropped(f) => Settled::Dropped(f),
                Settled::Discarded {
                    fragment,
                    record,
                    frame,
                } => Settled::Discarded {
                    fragment,
                    record,
                    frame: *frame,
                },
            };
            s.fragments(again);
        }
    }
    fn metadata(&mut self, meta: &Metadata) {
        for s in &mut self.0 {
            s.metadata(meta);
        }
    }
    fn block(&mut self, rec: &Record<'_>) {
        for s in &mut self.0 {
            s.block(rec);
        }
    }
    fn damage(&mut self, e: &ReportError) {
        for s in &mut self.0 {
            s.damage(e);
        }
    }
    fn origin(&mut self, ts_ns: u64) {
        for s in &mut self.0 {
            s.origin(ts_ns);
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
    pub defrag: DefragConfig,
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
    pub defrag: DefragStats,
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
    let (mut frames, meta) = Frames::open(data, release)?;
    sub.metadata(&meta);
    let mut pipe = Pipeline::new(cfg, &meta, sub);
    drop(meta);
    let mut summary = Summary {
        format: Some(frames.format()),
        tagged: pipe.reasm_tagged,
        ..Default::default()
    };
    let total = data.len() as u64;
    let mut rel = |off: usize| {
        release(off);
        if let Some(p) = progress.as_mut() {
            p(off as u64, total);
        }
    };
    while let Some(f) = frames.next(&mut rel) {
        match f {
            Frame::Packet { frame, rec: p, d } => {
                if frame == 1 {
                    sub.origin(p.ts_ns);
                }
                if sweeps_at(&d) && pipe.reasm.sweep_due(p.ts_ns) {
                    pipe.reasm.sweep_at(p.ts_ns, sub);
                }
                pipe.packet(frame, &p, &d, sub);
            }
            Frame::Block(rec) => sub.block(&rec),
            Frame::Damage(e) => {
                sub.damage(&e);
                summary.problems.push(e.to_string());
            }
        }
    }
    pipe.finish(sub);
    if let Some(p) = progress.as_mut() {
        p(total, total);
    }
    summary.frames = frames.frame;
    summary.bytes = frames.bytes;
    // One pipeline: its peaks are the run's (not added to a default).
    pipe.fill(&mut summary);
    Ok(summary)
}

/// Whether the driver checks for idle streams at this packet: every IP packet of a
/// transport that has streams (fragments included), by the same rule on one core and on
/// every worker of a sharded run.
#[inline]
pub(crate) fn sweeps_at(d: &Dissected) -> bool {
    use crate::model::proto;
    d.is_ip() && matches!(d.protocol, proto::TCP | proto::UDP | proto::UDPLITE)
}

/// Defragmentation, reassembly and the subscriber's fragment records, for the packets of
/// one file (or of one shard of it).
pub(crate) struct Pipeline {
    pub(crate) reasm: Reassembler,
    reasm_tagged: bool,
    defrag: Defragmenter,
    held: Option<HeldFragments>,
    states: States,
    /// The datagram the defragmenter returned, copied out so that its drops can be read.
    datagram: Vec<u8>,
    constituents: Vec<u64>,
    non_ip: u64,
    fragments: u64,
}

impl Pipeline {
    pub(crate) fn new(cfg: &AnalysisConfig, meta: &Metadata, sub: &dyn Subscriber) -> Self {
        let apps = AppIndex::from_metadata(meta);
        let tagged = apps.is_some();
        let states = sub.states();
        let mut reasm = Reassembler::new(cfg.reassembly.clone(), apps, states);
        reasm.keep_bytes = sub.wants_bytes();
        reasm.external_sweeps = true;
        Self {
            reasm,
            reasm_tagged: tagged,
            defrag: Defragmenter::new(cfg.defrag.clone()),
            held: sub.wants_fragments().then(HeldFragments::default),
            states,
            datagram: Vec::new(),
            constituents: Vec::new(),
            non_ip: 0,
            fragments: 0,
        }
    }

    /// One frame of the file, dissected.
    pub(crate) fn packet(
        &mut self,
        frame: u64,
        p: &Packet<'_>,
        d: &Dissected<'_>,
        sub: &mut dyn Subscriber,
    ) {
        let states = self.states;
        let ev = |state| PacketEvent {
            frame,
            ts_ns: p.ts_ns,
            pid: p.pid,
            state,
            reason: None,
            constituents: &[],
            packet: d,
            stream: None,
            record: Some(p),
        };
        if states.contains(State::Captured) {
            sub.packet(&ev(State::Captured));
        }
        if !d.is_ip() {
            self.non_ip += 1;
            return;
        }
        if d.fragment == Fragment::Whole {
            let inp = Input {
                frame,
                ts_ns: p.ts_ns,
                pid: p.pid,
                packet: d,
                constituents: None,
            };
            transport(&mut self.reasm, &inp, sub);
            return;
        }
        self.fragments += 1;
        let step = match self.defrag.push(frame, p.ts_ns, d) {
            DefragOutcome::Held => Step::Held,
            DefragOutcome::Discarded(r) => Step::Discarded(r),
            DefragOutcome::Reassembled {
                datagram: g,
                constituents: c,
                last_ts_ns,
            } => {
                self.datagram.clear();
                self.datagram.extend_from_slice(g);
                self.constituents.clear();
                self.constituents.extend_from_slice(c);
                Step::Done(last_ts_ns)
            }
        };
        // Fragments the defragmenter let go of while taking this one came earlier:
        // settled first.
        if let Some(h) = self.held.as_mut() {
            h.settle_drops(self.defrag.dropped(), sub);
        }
        match step {
            Step::Held => {
                if let Some(h) = self.held.as_mut() {
                    h.hold(frame, p, d);
                }
                if states.contains(State::Fragment) {
                    sub.packet(&ev(State::Fragment));
                }
            }
            Step::Discarded(r) => {
                if states.contains(State::Discarded) {
                    sub.packet(&PacketEvent {
                        reason: Some(r.as_str()),
                        ..ev(State::Discarded)
                    });
                }
                if let Some(h) = self.held.as_mut() {
                    h.discarded(frame, p, d, sub);
                }
            }
            Step::Done(last_ts_ns) => {
                if states.contains(State::Fragment) {
                    sub.packet(&ev(State::Fragment));
                }
                let whole = dissect::dissect(dissect::linktype::RAW, &self.datagram);
                if let Some(h) = self.held.as_mut() {
                    h.complete(frame, p, d, &whole, sub);
                }
                if states.contains(State::Reassembled) {
                    sub.packet(&PacketEvent {
                        ts_ns: last_ts_ns,
                        constituents: &self.constituents,
                        packet: &whole,
                        ..ev(State::Reassembled)
                    });
                }
                let inp = Input {
                    frame,
                    ts_ns: last_ts_ns,
                    pid: p.pid,
                    packet: &whole,
                    constituents: Some(&self.constituents),
                };
                transport(&mut self.reasm, &inp, sub);
            }
        }
        // Fragments held before and dropped now (timeouts, limits).
        if states.contains(State::Discarded) {
            report_dropped(&self.defrag, sub);
        }
    }

    /// The end of the input: incomplete datagrams dropped, streams retired.
    pub(crate) fn finish(&mut self, sub: &mut dyn Subscriber) {
        self.defrag.flush();
        if let Some(h) = self.held.as_mut() {
            h.settle_drops(self.defrag.dropped(), sub);
            h.finish(sub);
        }
        if self.states.contains(State::Discarded) {
            report_dropped(&self.defrag, sub);
        }
        self.reasm.finish(sub);
    }

    pub(crate) fn tagged(&self) -> bool {
        self.reasm_tagged
    }

    /// Adds this pipeline's counters to `s`.
    pub(crate) fn fill(&self, s: &mut Summary) {
        s.non_ip += self.non_ip;
        s.fragments += self.fragments;
        s.reassembly.add(&self.reasm.stats);
        s.defrag.add(self.defrag.stats());
    }
}

enum Step {
    Held,
    Discarded(DiscardReason),
    Done(u64),
}

/// The records of fragments whose datagram is not settled yet, by datagram. Bounded by
/// the defragmenter's limits: only fragments it holds wait here, and those it discarded
/// while their datagram was still held (they are settled with it).
#[derive(Default)]
struct HeldFragments {
    by_key: FxHashMap<DatagramKey, Vec<HeldFragment>>,
    spare: Vec<Vec<HeldFragment>>,
    out: Vec<HeldFragment>,
}

fn held_record(frame: u64, p: &Packet, d: &Dissected) -> HeldFragment {
    HeldFragment {
        frame,
        record: Packet { data: &[], ..*p },
        header: Dissected {
            l3: &[],
            payload: &[],
            ..*d
        },
    }
}

impl HeldFragments {
    fn hold(&mut self, frame: u64, p: &Packet, d: &Dissected) {
        let Some(key) = DatagramKey::of(d) else {
            return;
        };
        let spare = &mut self.spare;
        self.by_key
            .entry(key)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(held_record(frame, p, d));
    }

    /// A fragment discarded on arrival: it waits with its datagram when that is being put
    /// together, else it is settled now.
    fn discarded(&mut self, frame: u64, p: &Packet, d: &Dissected, sub: &mut dyn Subscriber) {
        if DatagramKey::of(d).is_some_and(|k| self.by_key.contains_key(&k)) {
            self.hold(frame, p, d);
        } else {
            sub.fragments(Settled::Discarded {
                fragment: d,
                record: p,
                frame,
            });
        }
    }

    /// The fragment `frame` completed its datagram `whole`.
    fn complete(
        &mut self,
        frame: u64,
        p: &Packet,
        d: &Dissected,
        whole: &Dissected,
        sub: &mut dyn Subscriber,
    ) {
        let mut list = DatagramKey::of(d)
            .and_then(|k| self.by_key.remove(&k))
            .unwrap_or_default();
        list.push(held_record(frame, p, d));
        sub.fragments(Settled::Datagram {
            datagram: whole,
            fragments: &list,
        });
        list.clear();
        self.spare.push(list);
    }

    /// Settles the fragments the defragmenter dropped in its last call.
    fn settle_drops(&mut self, dropped: &[super::defrag::Dropped], sub: &mut dyn Subscriber) {
        if dropped.is_empty() {
            return;
        }
        self.out.clear();
        for dr in dropped {
            match dr.reason {
                // The whole datagram went: all its waiting fragments.
                DiscardReason::Timeout | DiscardReason::Incomplete => {
                    self.take_all(dr.key);
                }
                // One fragment went (its data lay past the datagram's end).
                _ => self.take_one(dr.key, dr.frame),
            }
        }
        if !self.out.is_empty() {
            sub.fragments(Settled::Dropped(&self.out));
        }
    }

    /// The headers of `key`'s first fragment (the one with the ports), if it waits.
    fn first_of(&self, key: &DatagramKey) -> Option<Dissected<'static>> {
        self.by_key
            .get(key)?
            .iter()
            .find(|w| matches!(w.header.fragment, Fragment::First { .. }))
            .map(|w| w.header)
    }

    fn alone(w: HeldFragment, first: Option<&Dissected<'static>>) -> HeldFragment {
        match (w.header.fragment, first) {
            (Fragment::Later { .. }, Some(f)) => HeldFragment {
                header: Dissected {
                    link_direction: w.header.link_direction,
                    ..*f
                },
                ..w
            },
            _ => w,
        }
    }

    fn take_one(&mut self, key: DatagramKey, frame: u64) {
        let first = self.first_of(&key);
        let Some(list) = self.by_key.get_mut(&key) else {
            return;
        };
        let Some(i) = list.iter().position(|w| w.frame == frame) else {
            return;
        };
        let w = list.swap_remove(i);
        if list.is_empty()
            && let Some(l) = self.by_key.remove(&key)
        {
            self.spare.push(l);
        }
        self.out.push(Self::alone(w, first.as_ref()));
    }

    fn take_all(&mut self, key: DatagramKey) {
        let first = self.first_of(&key);
        let Some(mut list) = self.by_key.remove(&key) else {
            return;
        };
        list.sort_unstable_by_key(|w| w.frame);
        for w in list.drain(..) {
            self.out.push(Self::alone(w, first.as_ref()));
        }
        self.spare.push(list);
    }

    /// End of the input: whatever still waits is dropped (the defragmenter's flush said
    /// so already for what it held; this covers the rest).
    fn finish(&mut self, sub: &mut dyn Subscriber) {
        let mut keys: Vec<DatagramKey> = self.by_key.keys().copied().collect();
        keys.sort_unstable();
        self.out.clear();
        for k in keys {
            self.take_all(k);
        }
        if !self.out.is_empty() {
            sub.fragments(Settled::Dropped(&self.out));
        }
    }
}

#[inline]
fn transport(reasm: &mut Reassembler, inp: &Input, sub: &mut dyn Subscriber) {
    match transport_of(inp.packet) {
        Some(super::stream::Transport::Tcp) => reasm.tcp(inp, sub),
        Some(super::stream::Transport::Udp) => reasm.udp(inp, sub),
        None => {}
    }
}

/// Tells subscribers of fragments the defragmenter dropped after holding them.
fn report_dropped(defrag: &Defragmenter, sub: &mut dyn Subscriber) {
    let none = Dissected::default();
    for d in defrag.dropped() {
        sub.packet(&PacketEvent {
            frame: d.frame,
            ts_ns: 0,
            pid: 0,
            state: State::Discarded,
            reason: Some(d.reason.as_str()),
            constituents: &[],
            packet: &none,
            stream: None,
            record: None,
        });
    }
}
