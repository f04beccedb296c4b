//! One direction of a stream, as the receiving application read it: bytes in order, gaps
//! where the capture lost data (kept where they are, never closed up), and for every byte
//! the frame(s) that carried it. Readers hold [`Position`]s (plain offsets, copyable and
//! storable) and read through the [`HalfStream`] that owns the bytes; a [`Cursor`] pairs the
//! two for reading as one goes. Bytes before the point every reader has released are freed,
//! so a reader that keeps up keeps memory flat.
use std::collections::VecDeque;
use std::ops::Range;

use serde::Serialize;

use crate::dissect::FiveTuple;

/// An offset in one direction's byte stream: 0 is the first byte after the SYN (or the
/// first byte seen, for a stream picked up mid-way). Offsets are 64-bit, so they keep
/// counting across TCP sequence-number wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position(pub u64);

impl Position {
    pub fn offset(self) -> u64 {
        self.0
    }

    /// This position moved `n` bytes forward.
    #[inline]
    pub fn forward(self, n: u64) -> Position {
        Position(self.0.saturating_add(n))
    }

    /// Bytes from `self` to `later` (0 if `later` is not after it).
    pub fn distance_to(self, later: Position) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

/// Why bytes cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("the bytes before offset {released} were released")]
    Released { released: u64 },
    #[error("offsets {start}..{end} are a gap: the capture does not have them")]
    Gap { start: u64, end: u64 },
    #[error("offset {end} is the end of what has been delivered so far")]
    NotYet { end: u64 },
}

/// Which frame carried a run of bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Offset of the first byte this frame delivered.
    pub start: u64,
    /// Bytes delivered from this frame.
    pub len: u32,
    /// 1-based frame number in the file (for a reassembled IP datagram: the fragment that
    /// completed it).
    pub frame: u64,
    pub ts_ns: u64,
    /// For a reassembled IP datagram, every frame it was built from.
    pub constituents: Option<Box<[u64]>>,
}

impl Span {
    /// The frames that carried these bytes.
    pub fn frames(&self) -> &[u64] {
        match &self.constituents {
            Some(c) => c,
            None => std::slice::from_ref(&self.frame),
        }
    }
}

/// Bytes between two gaps.
#[derive(Debug)]
struct Run {
    start: u64,
    data: Vec<u8>,
}

impl Run {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

/// A piece of a range: bytes, or a gap of some length.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Data(&'a [u8]),
    Gap(u64),
}

/// The delivered bytes of one direction.
#[derive(Debug, Default)]
pub struct HalfStream {
    runs: VecDeque<Run>,
    spans: VecDeque<Span>,
    /// Everything before this offset is final (delivered or declared a gap).
    end: u64,
    /// Everything before this offset has been freed.
    released: u64,
    buffered: usize,
}

impl HalfStream {
    /// Where the next delivered byte will be.
    pub fn end(&self) -> Position {
        Position(self.end)
    }

    /// The first offset still held.
    pub fn start(&self) -> Position {
        Position(self.released)
    }

    /// Bytes held in memory.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    fn run_at(&self, off: u64) -> Result<&Run, Unavailable> {
        if off < self.released {
            return Err(Unavailable::Released {
                released: self.released,
            });
        }
        if off >= self.end {
            return Err(Unavailable::NotYet { end: self.end });
        }
        // Runs are few (one per gap still held): a reverse scan finds the recent ones first.
        let i = self.runs.partition_point(|r| r.start <= off);
        let prev_end = match i.checked_sub(1).and_then(|j| self.runs.get(j)) {
            Some(r) if off < r.end() => return Ok(r),
            Some(r) => r.end(),
            None => self.released,
        };
        let next_start = self.runs.get(i).map_or(self.end, |r| r.start);
        Err(Unavailable::Gap {
            start: prev_end.max(self.released),
            end: next_start,
        })
    }

    /// The byte at `p`.
    #[inline]
    pub fn byte_at(&self, p: Position) -> Result<u8, Unavailable> {
        let r = self.run_at(p.0)?;
        Ok(r.data[(p.0 - r.start) as usize])
    }

    /// The bytes from `a` to `b` as one slice, when no gap lies between them. They may
    /// have come from any number of segments.
    pub fn bytes(&self, a: Position, b: Position) -> Result<&[u8], Unavailable> {
        if b.0 <= a.0 {
            return Ok(&[]);
        }
        if b.0 > self.end {
            return Err(Unavailable::NotYet { end: self.end });
        }
        let r = self.run_at(a.0)?;
        if b.0 > r.end() {
            return Err(Unavailable::Gap {
                start: r.end(),
                end: self
                    .runs
                    .iter()
                    .find(|x| x.start > r.start)
                    .map_or(self.end, |x| x.start),
            });
        }
        Ok(&r.data[(a.0 - r.start) as usize..(b.0 - r.start) as usize])
    }

    /// The range from `a` to `b` as bytes and gaps, in order.
    pub fn pieces(&self, a: Position, b: Position) -> Result<Vec<Piece<'_>>, Unavailable> {
        if a.0 < self.released {
            return Err(Unavailable::Released {
                released: self.released,
            });
        }
        if b.0 > self.end {
            return Err(Unavailable::NotYet { end: self.end });
        }
        let mut out = Vec::new();
        let mut at = a.0;
        for r in &self.runs {
            if at >= b.0 {
                break;
            }
            if r.end() <= at {
                continue;
            }
            if r.start > at {
                let g = r.start.min(b.0) - at;
                out.push(Piece::Gap(g));
                at += g;
                if at >= b.0 {
                    break;
                }
            }
            let to = r.end().min(b.0);
            out.push(Piece::Data(
                &r.data[(at - r.start) as usize..(to - r.start) as usize],
            ));
            at = to;
        }
        if at < b.0 {
            out.push(Piece::Gap(b.0 - at));
        }
        Ok(out)
    }

    /// The frame that carried the byte at `p`, with its time (and, for a reassembled IP
    /// datagram, every fragment's frame).
    pub fn span_at(&self, p: Position) -> Option<&Span> {
        let i = self.spans.partition_point(|s| s.start <= p.0);
        let s = self.spans.get(i.checked_sub(1)?)?;
        (p.0 < s.start + u64::from(s.len)).then_some(s)
    }

    /// Frees everything before `p`. Positions before it can no longer be read.
    pub fn release(&mut self, p: Position) {
        let p = p.0.min(self.end);
        if p <= self.released {
            return;
        }
        self.released = p;
        let end = self.end;
        loop {
            let n = self.runs.len();
            let Some(r) = self.runs.front_mut() else {
                break;
            };
            if r.end() <= p {
                self.buffered -= r.data.len();
                if n == 1 {
                    // Keep the last run's allocation: the next segment is appended to it.
                    r.start = end;
                    r.data.clear();
                    break;
                }
                self.runs.pop_front();
            } else {
                let cut = p.saturating_sub(r.start) as usize;
                // Moving the tail costs its length: do it only once the dead head is the
                // bigger part, so the copies amortise to O(1) per byte.
                if cut > 4096 && cut * 2 >= r.data.len() {
                    r.data.drain(..cut);
                    r.start += cut as u64;
                    self.buffered -= cut;
                }
                break;
            }
        }
        while self
            .spans
            .front()
            .is_some_and(|s| s.start + u64::from(s.len) <= p)
        {
            self.spans.pop_front();
        }
    }

    /// Appends delivered bytes (the next in order).
    #[inline]
    pub(crate) fn append(
        &mut self,
        data: &[u8],
        frame: u64,
        ts_ns: u64,
        constituents: Option<&[u64]>,
    ) {
        if data.is_empty() {
            return;
        }
        let end = self.end;
        match self.runs.back_mut() {
            Some(r) if r.end() == end => r.data.extend_from_slice(data),
            Some(r) if r.data.is_empty() => {
                r.start = end;
                r.data.extend_from_slice(data);
            }
            _ => self.runs.push_back(Run {
                start: end,
                data: data.to_vec(),
            }),
        }
        self.spans.push_back(Span {
            start: end,
            len: data.len() as u32,
            frame,
            ts_ns,
            constituents: constituents.map(Box::from),
        });
        self.end += data.len() as u64;
        self.buffered += data.len();
    }

    /// Marks `len` bytes as missing: the capture never had them.
    pub(crate) fn gap(&mut self, len: u64) {
        self.end = self.end.saturating_add(len);
    }
}

/// A position together with the stream it reads: the paper's stream pointer.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    half: &'a HalfStream,
    pos: Position,
}

impl<'a> Cursor<'a> {
    pub fn new(half: &'a HalfStream, pos: Position) -> Self {
        Self { half, pos }
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    /// The byte under the cursor.
    pub fn byte(&self) -> Result<u8, Unavailable> {
        self.half.byte_at(self.pos)
    }

    pub fn forward(&mut self, n: u64) {
        self.pos = self.pos.forward(n);
    }

    /// The bytes from this cursor to `other` (which must be after it), across segments.
    pub fn bytes_to(&self, other: &Cursor<'_>) -> Result<&'a [u8], Unavailable> {
        self.half.bytes(self.pos, other.pos)
    }

    /// The frame that carried the byte under the cursor.
    pub fn span(&self) -> Option<&'a Span> {
        self.half.span_at(self.pos)
    }
}

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// A stream as tshark numbers it: `tcp.stream` or `udp.stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StreamId {
    pub transport: Transport,
    pub number: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{t}/{}", self.number)
    }
}

/// Which way bytes flow. `Forward` is from the stream's first packet's source (tshark's
/// "Node 0", usually the client), `Reverse` the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Forward,
    Reverse,
}

impl Dir {
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn other(self) -> Dir {
        match self {
            Dir::Forward => Dir::Reverse,
            Dir::Reverse => Dir::Forward,
        }
    }

    pub const BOTH: [Dir; 2] = [Dir::Forward, Dir::Reverse];
}

/// Per-direction counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HalfStats {
    pub packets: u64,
    /// Payload bytes carried by the packets, retransmissions included.
    pub payload_bytes: u64,
    /// Bytes delivered in order to the application.
    pub delivered_bytes: u64,
    /// Payload bytes that repeated bytes already delivered or queued.
    pub retransmitted_bytes: u64,
    /// Of those, bytes whose content differed from the copy kept (an evasion or damage).
    pub conflicting_bytes: u64,
    /// Bytes of out-of-order segments that overlapped one another (resolved by the policy).
    pub overlapping_bytes: u64,
    pub out_of_order_packets: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
}

/// How a stream is, or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamState {
    /// SYN seen, handshake not complete.
    Opening,
    Established,
    /// One side has sent FIN.
    Closing,
    /// Both FINs.
    Closed,
    Reset,
    /// No packet for longer than the timeout.
    TimedOut,
    /// The file ended with the stream open.
    Unfinished,
    /// UDP: datagrams, no state.
    Datagrams,
}

/// Why a stream's data was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CutReason {
    /// The per-stream depth limit was reached.
    Depth,
    /// The total memory limit was reached: segments were dropped.
    Memcap,
    /// The out-of-order buffer filled: the missing bytes were declared a gap.
    OutOfOrderLimit,
}

/// The application and process a stream belongs to (apptag's tagged files).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AppInfo {
    pub name: String,
    pub exe: String,
    pub pids: Vec<u32>,
    /// The short name of the first process.
    pub process: String,
    pub cmdline: Vec<String>,
    pub provenance: crate::model::Provenance,
}

/// At most this many distinct pids are remembered per stream.
pub const MAX_PIDS: usize = 4;

/// One TCP connection or UDP flow, both directions.
#[derive(Debug)]
pub struct Stream {
    pub id: StreamId,
    /// As the first packet stated it: `src` is the `Forward` direction's sender.
    pub tuple: FiveTuple,
    pub halves: [HalfStream; 2],
    pub stats: [HalfStats; 2],
    pub state: StreamState,
    /// No SYN was seen: the stream was picked up mid-way.
    pub midstream: bool,
    /// Which direction sent the first SYN (the client), when one was seen.
    pub initiator: Option<Dir>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub first_frame: u64,
    pub cut: Option<CutReason>,
    pids: [u32; MAX_PIDS],
    /// The application of the stream's pids, on a tagged file.
    pub app: Option<std::sync::Arc<AppInfo>>,
    pub(crate) tcp: [super::tcp::TcpHalf; 2],
    pub(crate) closed_reported: bool,
}

impl Stream {
    pub(crate) fn new(id: StreamId, tuple: FiveTuple, frame: u64, ts_ns: u64) -> Self {
        Self {
            id,
            tuple,
            halves: Default::default(),
            stats: Default::default(),
            state: if id.transport == Transport::Udp {
                StreamState::Datagrams
            } else {
                StreamState::Established
            },
            midstream: false,
            initiator: None,
            first_ns: ts_ns,
            last_ns: ts_ns,
            first_frame: frame,
            cut: None,
            pids: [0; MAX_PIDS],
            app: None,
            tcp: Default::default(),
            closed_reported: false,
        }
    }

    pub fn half(&self, d: Dir) -> &HalfStream {
        &self.halves[d.index()]
    }

    pub fn stats(&self, d: Dir) -> &HalfStats {
        &self.stats[d.index()]
    }

    /// The direction of a packet with this 5-tuple.
    #[inline]
    pub fn dir_of(&self, t: &FiveTuple) -> Dir {
        if t.src == self.tuple.src && t.src_port == self.tuple.src_port {
            Dir::Forward
        } else {
            Dir::Reverse
        }
    }

    /// The sender of direction `d`, as (address, port).
    pub fn sender(&self, d: Dir) -> (crate::dissect::Addr, u16) {
        match d {
            Dir::Forward => (self.tuple.src, self.tuple.src_port),
            Dir::Reverse => (self.tuple.dst, self.tuple.dst_port),
        }
    }

    /// The process ids seen on the stream's packets (apptag's tagged files).
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.pids.iter().copied().take_while(|&p| p != 0)
    }

    /// Remembers a packet's pid; true if it was new.
    #[inline]
    pub(crate) fn add_pid(&mut self, pid: u32) -> bool {
        if pid == 0 {
            return false;
        }
        for slot in &mut self.pids {
            if *slot == pid {
                return false;
            }
            if *slot == 0 {
                *slot = pid;
                return true;
            }
        }
        false
    }

    /// Offsets of the bytes in `range` of direction `d` that are held, as bytes and gaps.
    pub fn pieces(&self, d: Dir, range: Range<Position>) -> Result<Vec<Piece<'_>>, Unavailable> {
        self.halves[d.index()].pieces(range.start, range.end)
    }

    /// Bytes held in memory by both directions, queued segments included.
    pub fn memory(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.halves[0].buffered()
            + self.halves[1].buffered()
            + self.tcp[0].queued_bytes()
            + self.tcp[1].queued_bytes()
    }
}

/// One end of a stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct End {
    pub addr: crate::dissect::Addr,
    pub port: u16,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.addr.is_v4() {
            write!(f, "{}:{}", self.addr, self.port)
        } else {
            write!(f, "[{}]:{}", self.addr, self.port)
        }
    }
}

/// Everything known about a stream once it ended, for listing.
#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    pub stream: StreamId,
    /// The sender of the first packet (tshark's Node 0) and the other end.
    pub ends: [End; 2],
    pub state: StreamState,
    pub midstream: bool,
    /// Which end opened the connection with a SYN (0 or 1), when one was seen.
    pub initiator: Option<usize>,
    /// Per direction: [from end 0, from end 1].
    pub directions: [HalfStats; 2],
    pub first_ns: u64,
    pub last_ns: u64,
    pub first_frame: u64,
    pub cut: Option<CutReason>,
    pub pids: Vec<u32>,
    pub app: Option<AppInfo>,
}

impl Stream {
    pub fn summary(&self) -> StreamSummary {
        let end = |d| {
            let (addr, port) = self.sender(d);
            End { addr, port }
        };
        StreamSummary {
            stream: self.id,
            ends: [end(Dir::Forward), end(Dir::Reverse)],
            state: self.state,
            midstream: self.midstream,
            initiator: self.initiator.map(Dir::index),
            directions: self.stats.clone(),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            first_frame: self.first_frame,
            cut: self.cut,
            pids: self.pids().collect(),
            app: self.app.as_deref().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_across_segments_and_gaps() {
        let mut h = HalfStream::default();
        h.append(b"GET ", 1, 10, None);
        h.append(b"/ HTTP", 2, 20, None);
        h.gap(3);
        h.append(b"xyz", 5, 50, Some(&[3, 4, 5]));
        let a = Position(0);
        assert_eq!(h.bytes(a, Position(7)).unwrap(), b"GET / H");
        assert_eq!(h.byte_at(Position(4)).unwrap(), b'/');
        assert_eq!(h.span_at(Position(5)).unwrap().frame, 2);
        assert_eq!(h.span_at(Position(3)).unwrap().ts_ns, 10);
        assert_eq!(h.span_at(Position(13)).unwrap().frames(), &[3, 4, 5]);
        assert_eq!(
            h.byte_at(Position(11)),
            Err(Unavailable::Gap { start: 10, end: 13 })
        );
        assert!(matches!(
            h.bytes(Position(8), Position(14)),
            Err(Unavailable::Gap { .. })
        ));
        assert_eq!(
            h.pieces(Position(8), Position(16)).unwrap(),
            vec![Piece::Data(b"TP"), Piece::Gap(3), Piece::Data(b"xyz")]
        );
        let mut c = Cursor::new(&h, a);
        c.forward(4);
        let d = Cursor::new(&h, Position(6));
        assert_eq!(c.bytes_to(&d).unwrap(), b"/ ");
        assert_eq!(
            h.byte_at(Position(16)),
            Err(Unavailable::NotYet { end: 16 })
        );
    }

    #[test]
    fn release_frees_memory_and_keeps_later_bytes() {
        let mut h = HalfStream::default();
        let chunk = vec![7u8; 1000];
        for i in 0..100 {
            h.append(&chunk, i, i, None);
            // A reader that keeps up: everything but the last 10 bytes read.
            h.release(Position(h.end().0 - 10));
            assert!(h.buffered() <= 2 * 4096 + 1000, "{}", h.buffered());
        }
        assert_eq!(h.byte_at(Position(99_995)).unwrap(), 7);
        assert!(matches!(
            h.byte_at(Position(10)),
            Err(Unavailable::Released { .. })
        ));
        h.release(h.end());
        assert_eq!(h.buffered(), 0);
        assert!(h.spans.is_empty());
    }
}
