//! TCP and UDP reassembly: every TCP direction becomes the ordered byte stream the
//! receiving application read; every UDP flow a stream of datagrams.
//!
//! Per direction, bytes up to `next` are final (delivered, or a gap). A segment that starts
//! at `next` while nothing is queued is appended straight to the direction's buffer (the
//! common path, which allocates nothing once the buffer has grown). Anything else goes
//! through the out-of-order queue, where overlaps between queued segments are resolved by
//! the destination's [`OverlapPolicy`]. Bytes already delivered are never replaced: the
//! receiver's socket had handed them to the application.
//!
//! A hole becomes a gap (kept at its place, counted) when the receiver acknowledges data
//! beyond it (it will never come: the capture missed it), when the out-of-order queue
//! fills, and when the stream ends. Streams are numbered in order of first packet, as
//! tshark numbers `tcp.stream` and `udp.stream`: a SYN with a new initial sequence number
//! on a known 5-tuple starts a new stream.
use std::collections::BTreeMap;
use std::str::FromStr;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::apps::AppIndex;
use super::prefix::PrefixMap;
use super::stream::{CutReason, Dir, Position, Stream, StreamId, StreamState, Transport};
use super::subscribe::{PacketEvent, State, States, Subscriber};
use crate::dissect::{Dissected, FiveTuple};
use crate::model::proto;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Segments further than this from the next expected byte are out of any real window
/// (garbage or a different connection): counted and dropped.
const MAX_WINDOW: i64 = 1 << 30;

/// Which copy wins when a segment overlaps segments already queued out of order: what
/// the destination's TCP stack keeps (Novak and Sturges, "Target-Based TCP Stream
/// Reassembly", 2007).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlapPolicy {
    /// The bytes that arrived first always win.
    First,
    /// The bytes that arrived last always win.
    Last,
    /// The old bytes win, unless the new segment starts before the old one.
    #[default]
    Bsd,
    /// As BSD, and the new segment also wins when it starts with the old one and ends after.
    Linux,
    /// The old bytes win, unless the new segment starts before and ends at or after the old
    /// one (covers it entirely).
    Windows,
}

impl OverlapPolicy {
    pub const ALL: [OverlapPolicy; 5] = [
        OverlapPolicy::First,
        OverlapPolicy::Last,
        OverlapPolicy::Bsd,
        OverlapPolicy::Linux,
        OverlapPolicy::Windows,
    ];

    /// Whether the new segment `[ns, ne)` replaces the queued one `[os, oe)` where they
    /// overlap.
    #[inline]
    fn new_wins(self, ns: u64, ne: u64, os: u64, oe: u64) -> bool {
        match self {
            OverlapPolicy::First => false,
            OverlapPolicy::Last => true,
            OverlapPolicy::Bsd => ns < os,
            OverlapPolicy::Linux => ns < os || (ns == os && ne > oe),
            OverlapPolicy::Windows => ns < os && ne >= oe,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OverlapPolicy::First => "first",
            OverlapPolicy::Last => "last",
            OverlapPolicy::Bsd => "bsd",
            OverlapPolicy::Linux => "linux",
            OverlapPolicy::Windows => "windows",
        }
    }
}

impl std::fmt::Display for OverlapPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown TCP overlap policy {0:?}: use one of first, last, bsd, linux, windows")]
pub struct UnknownPolicy(pub String);

impl FromStr for OverlapPolicy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OverlapPolicy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// Limits and policies of reassembly.
#[derive(Clone, Debug)]
pub struct ReassemblyConfig {
    /// The overlap policy for destinations without a more specific one.
    pub policy: OverlapPolicy,
    /// Per destination address: the most specific prefix wins.
    pub per_destination: PrefixMap<OverlapPolicy>,
    /// Bytes delivered per direction before the stream is cut (0: no limit).
    pub depth: u64,
    /// Bytes queued out of order per direction before the hole is declared a gap.
    pub max_queued_bytes: usize,
    /// Total memory of all streams: stream state, held and queued bytes.
    pub memcap: usize,
    /// Streams tracked at once.
    pub max_streams: usize,
    /// A stream without packets for this long (capture time) is expired.
    pub timeout_ns: u64,
    /// Delivered bytes kept per direction after every subscriber is done with them, so a
    /// retransmission can be compared with what was delivered (conflicting bytes).
    pub compare_window: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            policy: OverlapPolicy::default(),
            per_destination: PrefixMap::new(),
            depth: 0,
            max_queued_bytes: 1 << 20,
            memcap: 1 << 30,
            max_streams: 1 << 20,
            timeout_ns: 600_000_000_000,
            compare_window: 4096,
        }
    }
}

/// What reassembly counted, over the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReassemblyStats {
    pub tcp_streams: u64,
    pub udp_streams: u64,
    /// New streams not tracked because `max_streams` or the memory limit was reached.
    pub streams_refused: u64,
    pub streams_expired: u64,
    /// Segments dropped because the memory limit was reached.
    pub memcap_drops: u64,
    /// Streams cut at the depth limit.
    pub depth_cuts: u64,
    /// Holes declared gaps because the out-of-order queue was full.
    pub queue_overflows: u64,
    /// Segments outside any plausible window.
    pub out_of_window: u64,
    /// Packets with too little TCP header to read.
    pub malformed: u64,
    /// The most memory held at once.
    pub peak_memory: usize,
}

/// A queued out-of-order segment.
#[derive(Debug)]
struct Seg {
    data: Vec<u8>,
    frame: u64,
    ts_ns: u64,
    constituents: Option<Box<[u64]>>,
}

/// One direction's TCP state.
#[derive(Debug, Default)]
pub(crate) struct TcpHalf {
    seen: bool,
    /// Sequence number of offset 0.
    base: u32,
    /// The sequence number tshark compares a new SYN against.
    first_seq: u32,
    syn: bool,
    /// Offset of the next byte expected.
    next: u64,
    fin: Option<u64>,
    finished: bool,
    queue: BTreeMap<u64, Seg>,
    queued: usize,
}

impl TcpHalf {
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Offset of sequence number `seq`, relative to the next expected byte so that
    /// sequence wrap is invisible.
    #[inline]
    fn offset(&self, seq: u32) -> i64 {
        let next_seq = self.base.wrapping_add(self.next as u32);
        self.next as i64 + i64::from(seq.wrapping_sub(next_seq) as i32)
    }
}

/// The table of streams and the reassembly of each.
pub struct Reassembler {
    cfg: ReassemblyConfig,
    table: FxHashMap<FiveTuple, u32>,
    slots: Vec<Option<Stream>>,
    free: Vec<u32>,
    next_tcp: u64,
    next_udp: u64,
    memory: usize,
    last_sweep_ns: u64,
    states: States,
    pub stats: ReassemblyStats,
    apps: Option<AppIndex>,
    /// Reused for payload bytes that must be copied (overlap resolution).
    scratch: Vec<u8>,
    /// Whether delivered bytes are kept for subscribers (else only counted).
    pub keep_bytes: bool,
    /// Whether the caller decides when idle streams are swept ([`Reassembler::sweep_at`]),
    /// as the analysis driver does so that every worker of a sharded run sweeps at the
    /// same times as one core would.
    pub external_sweeps: bool,
}

/// One packet handed to reassembly.
pub struct Input<'a, 'p> {
    pub frame: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub packet: &'a Dissected<'p>,
    /// For a reassembled IP datagram, the frames it was built from.
    pub constituents: Option<&'a [u64]>,
}

impl Reassembler {
    pub fn new(cfg: ReassemblyConfig, apps: Option<AppIndex>, states: States) -> Self {
        Self {
            cfg,
            table: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            next_tcp: 0,
            next_udp: 0,
            memory: 0,
            last_sweep_ns: 0,
            states,
            stats: ReassemblyStats::default(),
            apps,
            scratch: Vec::new(),
            keep_bytes: true,
            external_sweeps: false,
        }
    }

    /// Memory held now by all streams.
    pub fn memory(&self) -> usize {
        self.memory
    }

    pub fn stream_count(&self) -> usize {
        self.table.len()
    }

    #[inline]
    fn policy_for(&self, dst: &crate::dissect::Addr) -> OverlapPolicy {
        if self.cfg.per_destination.is_empty() {
            return self.cfg.policy;
        }
        self.cfg
            .per_destination
            .lookup(*dst)
            .copied()
            .unwrap_or(self.cfg.policy)
    }

    /// Expires streams idle for longer than the timeout, at most every quarter timeout
    /// of capture time.
    fn maybe_sweep(&mut self, now: u64, sink: &mut dyn Subscriber) {
        if self.external_sweeps || !self.sweep_due(now) {
            return;
        }
        self.sweep_at(now, sink);
    }

    /// Whether a sweep is due at `now` (a quarter timeout after the last one).
    #[inline]
    pub fn sweep_due(&self, now: u64) -> bool {
        now >= self.last_sweep_ns.saturating_add(self.cfg.timeout_ns / 4)
    }

    /// Retires the streams idle for longer than the timeout at `now`.
    pub fn sweep_at(&mut self, now: u64, sink: &mut dyn Subscriber) {
        self.last_sweep_ns = now;
        self.sweep(now.saturating_sub(self.cfg.timeout_ns), sink);
    }

    fn sweep(&mut self, idle_before: u64, sink: &mut dyn Subscriber) {
        let mut expired: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .filter(|s| s.last_ns < idle_before)
                    .map(|_| i as u32)
            })
            .collect();
        expired.sort_by_key(|&i| self.slots[i as usize].as_ref().map(|s| s.id.number));
        for i in expired {
            self.stats.streams_expired += 1;
            self.retire(i, StreamState::TimedOut, sink);
        }
    }

    /// Flushes a stream, reports it closed if it was not, and frees its slot.
    fn retire(&mut self, i: u32, state: StreamState, sink: &mut dyn Subscriber) {
        let Some(mut s) = self.slots.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        let before = s.memory();
        flush(&mut s, sink);
        if !s.closed_reported {
            if !matches!(s.state, StreamState::Closed | StreamState::Reset) {
                s.state = state;
            }
            s.closed_reported = true;
            sink.closed(&s);
        }
        self.memory = self.memory.saturating_sub(before);
        let (key, _) = s.tuple.canonical();
        if self.table.get(&key) == Some(&i) {
            self.table.remove(&key);
        }
        self.free.push(i);
    }

    /// The end of the input: every stream still held is flushed and reported closed, in
    /// stream order.
    pub fn finish(&mut self, sink: &mut dyn Subscriber) {
        let mut all: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].is_some())
            .collect();
        all.sort_by_key(|&i| {
            self.slots[i as usize]
                .as_ref()
                .map(|s| (s.id.transport == Transport::Udp, s.id.number))
        });
        for i in all {
            self.retire(i, StreamState::Unfinished, sink);
        }
    }

    /// Finds or creates the stream of `t`; None when a limit refuses a new one.
    #[inline]
    fn lookup(
        &mut self,
        t: &FiveTuple,
        transport: Transport,
        inp: &Input,
        renumber: impl Fn(&Stream) -> bool,
        sink: &mut dyn Subscriber,
    ) -> Option<(u32, bool)> {
        let (key, _) = t.canonical();
        if let Some(&i) = self.table.get(&key) {
            match self.slots.get(i as usize).and_then(Option::as_ref) {
                Some(s) if !renumber(s) => return Some((i, false)),
                // A new connection on the same 5-tuple: the old one ends here.
                Some(_) => self.retire(i, StreamState::Unfinished, sink),
                None => {
                    self.table.remove(&key);
                }
            }
        }
        // Idle streams are expired by the periodic sweep, not here: sweeping on every
        // refused stream would make a flood of new streams quadratic.
        let need = std::mem::size_of::<Stream>();
        if self.table.len() >= self.cfg.max_streams || self.memory + need > self.cfg.memcap {
            self.stats.streams_refused += 1;
            return None;
        }
        let number = match transport {
            Transport::Tcp => {
                self.stats.tcp_streams += 1;
                self.next_tcp += 1;
                self.next_tcp - 1
            }
            Transport::Udp => {
                self.stats.udp_streams += 1;
                self.next_udp += 1;
                self.next_udp - 1
            }
        };
        let s = Stream::new(StreamId { transport, number }, *t, inp.frame, inp.ts_ns);
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(s);
                i
            }
            None => {
                self.slots.push(Some(s));
                self.slots.len() as u32 - 1
            }
        };
        self.table.insert(key, i);
        self.memory += need;
        self.stats.peak_memory = self.stats.peak_memory.max(self.memory);
        Some((i, true))
    }

    /// Tags the stream with the packet's process, and its application.
    #[inline]
    fn tag(apps: &Option<AppIndex>, s: &mut Stream, pid: u32) {
        let Some(idx) = apps else { return };
        if s.add_pid(pid) && s.app.is_none() {
            s.app = idx.by_pid(pid);
        }
        if s.app.is_none() && pid == 0 && s.stats[0].packets + s.stats[1].packets == 0 {
            s.app = idx.by_socket(&s.tuple);
        }
    }

    #[inline]
    fn event(states: States, sink: &mut dyn Subscriber, inp: &Input, state: State, s: &Stream) {
        if states.contains(state) {
            sink.packet(&PacketEvent {
                frame: inp.frame,
                ts_ns: inp.ts_ns,
                pid: inp.pid,
                state,
                reason: None,
                constituents: inp.constituents.unwrap_or(&[]),
                packet: inp.packet,
                stream: Some(s),
                record: None,
            });
        }
    }

    /// One UDP datagram: appended to its direction as one chunk.
    pub fn udp(&mut self, inp: &Input, sink: &mut dyn Subscriber) {
        self.maybe_sweep(inp.ts_ns, sink);
        let t = inp.packet.five_tuple();
        let Some((i, new)) = self.lookup(&t, Transport::Udp, inp, |_| false, sink) else {
            return;
        };
        let Some(s) = self.slots.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        Self::tag(&self.apps, s, inp.pid);
        if new {
            sink.opened(s);
        }
        let states = self.states;
        let before = s.memory();
        let dir = s.dir_of(&t);
        let d = dir.index();
        let payload = inp.packet.payload;
        s.last_ns = s.last_ns.max(inp.ts_ns);
        s.stats[d].packets += 1;
        s.stats[d].payload_bytes += payload.len() as u64;
        let over_depth = self.cfg.depth != 0 && s.halves[d].end().0 >= self.cfg.depth;
        if over_depth {
            if s.cut.is_none() {
                self.stats.depth_cuts += 1;
            }
            s.cut = Some(CutReason::Depth);
        } else if self.memory + payload.len() > self.cfg.memcap {
            self.stats.memcap_drops += 1;
            s.cut = Some(CutReason::Memcap);
        } else if !payload.is_empty() {
            let from = s.halves[d].end();
            s.halves[d].append(payload, inp.frame, inp.ts_ns, inp.constituents);
            s.stats[d].delivered_bytes += payload.len() as u64;
            let to = s.halves[d].end();
            let keep = sink.data(s, dir, from..to);
            s.halves[d].release(keep.unwrap_or(to));
        }
        let after = s.memory();
        let (s, new_state) = (&*s, new);
        if new_state {
            Self::event(states, sink, inp, State::NewConnection, s);
        }
        Self::event(states, sink, inp, State::DeliveredInOrder, s);
        self.memory = self.memory + after - before;
        self.stats.peak_memory = self.stats.peak_memory.max(self.memory);
    }

    /// One TCP segment.
    pub fn tcp(&mut self, inp: &Input, sink: &mut dyn Subscriber) {
        self.maybe_sweep(inp.ts_ns, sink);
        let p = inp.packet;
        if p.tcp.header_len < 20 {
            self.stats.malformed += 1;
            return;
        }
        let t = p.five_tuple();
        let flags = p.tcp_flags;
        let seq = p.tcp.seq;
        let is_syn = flags & (SYN | ACK) == SYN;
        let renumber = |s: &Stream| {
            if !is_syn {
                return false;
            }
            let h = &s.tcp[s.dir_of(&t).index()];
            h.seen && h.first_seq != seq
        };
        let Some((i, new)) = self.lookup(&t, Transport::Tcp, inp, renumber, sink) else {
            return;
        };
        let policy = self.policy_for(&t.dst);
        let Some(s) = self.slots.get_mut(i as usize).and_then(Option::as_mut) else {
            return;
        };
        Self::tag(&self.apps, s, inp.pid);
        if new {
            s.midstream = flags & SYN == 0;
            sink.opened(s);
        }
        let states = self.states;
        let before = s.memory();
        s.last_ns = s.last_ns.max(inp.ts_ns);
        let dir = s.dir_of(&t);
        let d = dir.index();
        s.stats[d].packets += 1;
        s.stats[d].payload_bytes += p.payload.len() as u64;

        // The first packet of a direction fixes offset 0.
        {
            let h = &mut s.tcp[d];
            if flags & SYN != 0 {
                if !h.seen || (!h.syn && h.next == 0 && h.queue.is_empty()) {
                    h.seen = true;
                    h.syn = true;
                    h.base = seq.wrapping_add(1);
                    h.first_seq = seq;
                    h.next = 0;
                    if flags & ACK == 0 {
                        s.initiator = Some(dir);
                        s.state = StreamState::Opening;
                    } else if s.state == StreamState::Opening {
                        s.state = StreamState::Established;
                    }
                }
            } else if !h.seen {
                h.seen = true;
                h.base = seq;
                h.first_seq = seq.wrapping_sub(1);
            }
        }
        let mut queued = false;
        let mut delivered = false;
        let mut closed_now = false;

        // This packet's acknowledgement tells what the other side's receiver (its sender)
        // has: a hole below it will never be filled from the capture.
        if flags & ACK != 0 {
            let o = dir.other().index();
            if s.tcp[o].seen && !s.tcp[o].queue.is_empty() {
                let ack_off = s.tcp[o].offset(p.tcp.ack);
                let first_queued = s.tcp[o].queue.keys().next().copied().unwrap_or(u64::MAX);
                if ack_off > first_queued as i64 && first_queued > s.tcp[o].next {
                    declare_gap(s, dir.other(), first_queued, sink);
                    delivered |= drain(
                        s,
                        dir.other(),
                        sink,
                        self.cfg.compare_window,
                        self.keep_bytes,
                    );
                }
            }
        }

        if flags & RST != 0 {
            if !matches!(s.state, StreamState::Closed | StreamState::Reset) {
                s.state = StreamState::Reset;
                closed_now = true;
            }
        } else {
            let data_seq = if flags & SYN != 0 {
                seq.wrapping_add(1)
            } else {
                seq
            };
            let off = s.tcp[d].offset(data_seq);
            let next = s.tcp[d].next as i64;
            let payload = p.payload;
            if (off - next).abs() > MAX_WINDOW {
                self.stats.out_of_window += 1;
            } else if !payload.is_empty() {
                let mut off = off;
                let mut payload = payload;
                // Bytes before offset 0 (a stream picked up after them) are not in it.
                if off < 0 {
                    let skip = (-off).min(payload.len() as i64) as usize;
                    payload = &payload[skip..];
                    off += skip as i64;
                }
                let off = off as u64;
                let end = off + payload.len() as u64;
                let next = s.tcp[d].next;
                if end <= next {
                    s.stats[d].retransmitted_bytes += payload.len() as u64;
                    s.stats[d].conflicting_bytes += conflicts(s, dir, off, payload);
                } else {
                    let (off, payload) = if off < next {
                        let dup = (next - off) as usize;
                        s.stats[d].retransmitted_bytes += dup as u64;
                        s.stats[d].conflicting_bytes += conflicts(s, dir, off, &payload[..dup]);
                        (next, &payload[dup..])
                    } else {
                        (off, payload)
                    };
                    let depth = self.cfg.depth;
                    if depth != 0 && off >= depth {
                        if s.cut.is_none() {
                            self.stats.depth_cuts += 1;
                            s.cut = Some(CutReason::Depth);
                        }
                    } else if self.memory + payload.len() > self.cfg.memcap {
                        self.stats.memcap_drops += 1;
                        s.cut = Some(CutReason::Memcap);
                    } else {
                        let payload = if depth != 0 && off + payload.len() as u64 > depth {
                            if s.cut.is_none() {
                                self.stats.depth_cuts += 1;
                                s.cut = Some(CutReason::Depth);
                            }
                            &payload[..(depth - off) as usize]
                        } else {
                            payload
                        };
                        if off == next && s.tcp[d].queue.is_empty() {
                            let h = &mut s.halves[d];
                            let from = h.end();
                            if self.keep_bytes {
                                h.append(payload, inp.frame, inp.ts_ns, inp.constituents);
                            } else {
                                h.skip(payload.len());
                            }
                            s.tcp[d].next = h.end().0;
                            s.stats[d].delivered_bytes += payload.len() as u64;
                            let to = s.halves[d].end();
                            let keep = sink.data(s, dir, from..to);
                            release(s, dir, keep, self.cfg.compare_window);
                            delivered = true;
                        } else {
                            if off > next {
                                queued = true;
                                s.stats[d].out_of_order_packets += 1;
                            }
                            enqueue(s, dir, off, payload, inp, policy, &mut self.scratch);
                            delivered |=
                                drain(s, dir, sink, self.cfg.compare_window, self.keep_bytes);
                            if s.tcp[d].queued > self.cfg.max_queued_bytes {
                                self.stats.queue_overflows += 1;
                                s.cut.get_or_insert(CutReason::OutOfOrderLimit);
                                if let Some(&first) = s.tcp[d].queue.keys().next() {
                                    declare_gap(s, dir, first, sink);
                                    drain(s, dir, sink, self.cfg.compare_window, self.keep_bytes);
                                }
                            }
                        }
                    }
                }
            }
            if flags & FIN != 0 {
                let fin_off = off.max(0) as u64 + p.payload.len() as u64;
                let h = &mut s.tcp[d];
                h.fin.get_or_insert(fin_off);
            }
            let h = &mut s.tcp[d];
            if !h.finished && h.fin.is_some_and(|f| h.next >= f) {
                h.finished = true;
                if s.tcp[0].finished && s.tcp[1].finished {
                    s.state = StreamState::Closed;
                    closed_now = true;
                } else if matches!(s.state, StreamState::Established | StreamState::Opening) {
                    s.state = StreamState::Closing;
                }
            }
            if flags & (SYN | ACK) == ACK && s.state == StreamState::Opening {
                s.state = StreamState::Established;
            }
        }
        let s = &*s;
        if new {
            Self::event(states, sink, inp, State::NewConnection, s);
        }
        if queued {
            Self::event(states, sink, inp, State::QueuedOutOfOrder, s);
        }
        if delivered {
            Self::event(states, sink, inp, State::DeliveredInOrder, s);
        }
        if closed_now {
            Self::event(states, sink, inp, State::Closed, s);
        }
        // `closed` is called when the stream is retired (timeout, a new connection on the
        // 5-tuple, end of input), with its final counters: packets after the FIN or RST
        // (the last ACK, retransmissions) still belong to it, as in tshark.
        let after = s.memory();
        self.memory = (self.memory + after).saturating_sub(before);
        self.stats.peak_memory = self.stats.peak_memory.max(self.memory);
    }
}

/// Bytes of `payload` (at `off`, all before `next`) that differ from the delivered copy
/// still held (released bytes cannot be compared).
fn conflicts(s: &Stream, dir: Dir, off: u64, payload: &[u8]) -> u64 {
    let h = s.half(dir);
    let from = off.max(h.start().0);
    let to = off + payload.len() as u64;
    if from >= to {
        return 0;
    }
    match h.bytes(Position(from), Position(to)) {
        Ok(kept) => kept
            .iter()
            .zip(&payload[(from - off) as usize..])
            .filter(|(a, b)| a != b)
            .count() as u64,
        Err(_) => 0,
    }
}

/// Inserts `[off, off+len)` into the out-of-order queue; where it overlaps queued segments
/// the policy picks the winner, and the losing copy's bytes are removed.
fn enqueue(
    s: &mut Stream,
    dir: Dir,
    off: u64,
    payload: &[u8],
    inp: &Input,
    policy: OverlapPolicy,
    scratch: &mut Vec<u8>,
) {
    let d = dir.index();
    let end = off + payload.len() as u64;
    // Queued segments that overlap [off, end): the one starting before off, and those
    // starting inside it.
    let overlapping: Vec<u64> = {
        let q = &s.tcp[d].queue;
        let mut v: Vec<u64> = q
            .range(..off)
            .next_back()
            .filter(|(k, seg)| **k + seg.data.len() as u64 > off)
            .map(|(k, _)| *k)
            .into_iter()
            .collect();
        v.extend(q.range(off..end).map(|(k, _)| *k));
        v
    };
    // Which bytes of the new segment survive, as sub-ranges.
    let mut keep_new: Vec<(u64, u64)> = vec![(off, end)];
    for os in overlapping {
        let Some(old) = s.tcp[d].queue.get(&os) else {
            continue;
        };
        let oe = os + old.data.len() as u64;
        let (lo, hi) = (off.max(os), end.min(oe));
        let overlap = hi - lo;
        s.stats[d].overlapping_bytes += overlap;
        let differ = old.data[(lo - os) as usize..(hi - os) as usize]
            .iter()
            .zip(&payload[(lo - off) as usize..(hi - off) as usize])
            .filter(|(a, b)| a != b)
            .count() as u64;
        s.stats[d].conflicting_bytes += differ;
        if policy.new_wins(off, end, os, oe) {
            // Cut the old segment down to what lies outside the new one.
            let Some(old) = s.tcp[d].queue.remove(&os) else {
                continue;
            };
            s.tcp[d].queued -= old.data.len();
            if os < lo {
                let left = old.data[..(lo - os) as usize].to_vec();
                s.tcp[d].queued += left.len();
                s.tcp[d].queue.insert(
                    os,
                    Seg {
                        data: left,
                        frame: old.frame,
                        ts_ns: old.ts_ns,
                        constituents: old.constituents.clone(),
                    },
                );
            }
            if hi < oe {
                let right = old.data[(hi - os) as usize..].to_vec();
                s.tcp[d].queued += right.len();
                s.tcp[d].queue.insert(
                    hi,
                    Seg {
                        data: right,
                        frame: old.frame,
                        ts_ns: old.ts_ns,
                        constituents: old.constituents,
                    },
                );
            }
        } else {
            keep_new = keep_new
                .into_iter()
                .flat_map(|(a, b)| {
                    let mut out = Vec::with_capacity(2);
                    if a < lo.min(b) {
                        out.push((a, lo.min(b)));
                    }
                    if hi.max(a) < b {
                        out.push((hi.max(a), b));
                    }
                    out
                })
                .collect();
        }
    }
    for (a, b) in keep_new {
        scratch.clear();
        scratch.extend_from_slice(&payload[(a - off) as usize..(b - off) as usize]);
        s.tcp[d].queued += scratch.len();
        s.tcp[d].queue.insert(
            a,
            Seg {
                data: scratch.clone(),
                frame: inp.frame,
                ts_ns: inp.ts_ns,
                constituents: inp.constituents.map(Box::from),
            },
        );
    }
}

/// Delivers queued segments that are now contiguous, one data callback per segment (as
/// tshark's follow reports them); true if any was.
fn drain(s: &mut Stream, dir: Dir, sink: &mut dyn Subscriber, window: usize, keep: bool) -> bool {
    let d = dir.index();
    let mut any = false;
    loop {
        let next = s.tcp[d].next;
        let Some(entry) = s.tcp[d].queue.first_entry() else {
            break;
        };
        let start = *entry.key();
        if start > next {
            break;
        }
        let seg = entry.remove();
        s.tcp[d].queued -= seg.data.len();
        let skip = (next - start) as usize;
        if skip >= seg.data.len() {
            continue;
        }
        let data = &seg.data[skip..];
        let from = s.halves[d].end();
        if keep {
            s.halves[d].append(data, seg.frame, seg.ts_ns, seg.constituents.as_deref());
        } else {
            s.halves[d].skip(data.len());
        }
        s.stats[d].delivered_bytes += data.len() as u64;
        let to = s.halves[d].end();
        s.tcp[d].next = to.0;
        let keep = sink.data(s, dir, from..to);
        release(s, dir, keep, window);
        any = true;
    }
    any
}

/// The bytes from `next` up to `until` will never come: mark them a gap.
fn declare_gap(s: &mut Stream, dir: Dir, until: u64, sink: &mut dyn Subscriber) {
    let d = dir.index();
    let next = s.tcp[d].next;
    if until <= next {
        return;
    }
    let from = s.halves[d].end();
    s.halves[d].gap(until - next);
    s.tcp[d].next = until;
    s.stats[d].gaps += 1;
    s.stats[d].gap_bytes += until - next;
    let to = s.halves[d].end();
    sink.gap(s, dir, from..to);
}

/// Everything still queued is delivered after gaps: the stream ends.
fn flush(s: &mut Stream, sink: &mut dyn Subscriber) {
    if s.id.transport != Transport::Tcp {
        return;
    }
    for dir in Dir::BOTH {
        while let Some(&first) = s.tcp[dir.index()].queue.keys().next() {
            declare_gap(s, dir, first, sink);
            drain(s, dir, sink, 0, true);
        }
    }
}

/// Frees what no subscriber needs, but the last `window` bytes.
#[inline]
fn release(s: &mut Stream, dir: Dir, keep: Option<Position>, window: usize) {
    let h = &mut s.halves[dir.index()];
    let upto = Position(h.end().0.saturating_sub(window as u64));
    h.release(keep.map_or(upto, |k| k.min(upto)));
}

/// Whether `d` is a packet for reassembly, and which kind.
#[inline]
pub fn transport_of(d: &Dissected) -> Option<Transport> {
    if !d.has_ports() {
        return None;
    }
    match d.protocol {
        proto::TCP => Some(Transport::Tcp),
        proto::UDP | proto::UDPLITE => Some(Transport::Udp),
        _ => None,
    }
}
