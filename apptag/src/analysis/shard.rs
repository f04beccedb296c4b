//! All cores: the analysis driver over several workers. The reading thread reads and
//! dissects each frame and hands it to one worker, chosen by a symmetric hash of the IP
//! address pair, so both directions of every stream, and every fragment of a datagram
//! (which carries only the addresses) with the stream its datagram belongs to, stay on
//! one worker. Each worker runs its own defragmenter, reassembler and subscriber on its
//! share, in file order; idle streams are swept at the times one core would sweep them
//! (the reading thread decides, for all). The commands merge the subscribers' results in
//! an order that does not depend on the workers (frame numbers), so the output equals a
//! one-core run's.
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rustc_hash::FxHashMap;

use super::defrag::{DefragStats, DiscardCounts};
use super::frames::{Frame, Frames};
use super::stream::{Stream, StreamId, Transport};
use super::subscribe::{AnalysisConfig, AnalysisError, Pipeline, Subscriber, Summary, sweeps_at};
use super::tcp::ReassemblyStats;
use crate::dissect::Dissected;
use crate::model::Packet;
use crate::report::ReportError;
use crate::report::source::{Capture, Record};

/// Frames handed to a worker at once (fewer channel operations).
const BATCH: usize = 512;
/// Batches queued per worker before the reader waits.
const QUEUE: usize = 16;

/// The number of workers to use when the user did not say: the cores available.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

enum Item<'a> {
    Packet {
        frame: u64,
        rec: Packet<'a>,
        d: Dissected<'a>,
    },
    Origin(u64),
    Sweep(u64),
    Block(Record<'a>),
    Damage(ReportError),
}

/// Which worker a frame goes to: symmetric in the two addresses, so both directions (and
/// all fragments of a datagram) go to the same one. Not IP: worker 0.
#[inline]
pub fn shard_of(d: &Dissected, workers: usize) -> usize {
    if workers <= 1 || !d.is_ip() {
        return 0;
    }
    let fold = |ip: std::net::IpAddr| -> u64 {
        match ip.to_canonical() {
            std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
            std::net::IpAddr::V6(a) => {
                let x = u128::from(a);
                (x as u64) ^ mix((x >> 64) as u64)
            }
        }
    };
    let (a, b) = (fold(d.src), fold(d.dst));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (mix(lo ^ mix(hi)) % workers as u64) as usize
}

/// splitmix64's finaliser: every input bit moves every output bit.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The streams a worker opened, to renumber them as one core would have.
#[derive(Default)]
struct Opened<S> {
    inner: S,
    streams: Vec<(StreamId, u64)>,
}

/// Global stream numbers: each worker numbers its own streams; one core numbers them in
/// the order of their first frames, per transport.
#[derive(Clone, Debug, Default)]
pub struct Renumber {
    map: Vec<FxHashMap<StreamId, StreamId>>,
}

impl Renumber {
    /// Worker `w`'s stream `id`, as one core numbers it.
    pub fn get(&self, w: usize, id: StreamId) -> StreamId {
        self.map
            .get(w)
            .and_then(|m| m.get(&id))
            .copied()
            .unwrap_or(id)
    }

    fn build(opened: &[Opens]) -> Self {
        let mut all: Vec<(Transport, u64, usize, StreamId)> = Vec::new();
        for (w, v) in opened.iter().enumerate() {
            for &(id, first) in v {
                all.push((id.transport, first, w, id));
            }
        }
        all.sort_unstable_by_key(|&(t, first, w, id)| (t as u8, first, w, id.number));
        let mut map = vec![FxHashMap::default(); opened.len()];
        let mut next: FxHashMap<Transport, u64> = FxHashMap::default();
        for (t, _, w, id) in all {
            let n = next.entry(t).or_default();
            map[w].insert(
                id,
                StreamId {
                    transport: t,
                    number: *n,
                },
            );
            *n += 1;
        }
        Self { map }
    }
}

impl<S: Subscriber> Subscriber for Opened<S> {
    fn states(&self) -> super::States {
        self.inner.states()
    }
    fn packet(&mut self, ev: &super::PacketEvent<'_, '_>) {
        self.inner.packet(ev)
    }
    fn wants_bytes(&self) -> bool {
        self.inner.wants_bytes()
    }
    fn opened(&mut self, s: &Stream) {
        self.streams.push((s.id, s.first_frame));
        self.inner.opened(s)
    }
    fn data(
        &mut self,
        s: &Stream,
        dir: super::Dir,
        range: std::ops::Range<super::Position>,
    ) -> Option<super::Position> {
        self.inner.data(s, dir, range)
    }
    fn gap(&mut self, s: &Stream, dir: super::Dir, range: std::ops::Range<super::Position>) {
        self.inner.gap(s, dir, range)
    }
    fn closed(&mut self, s: &Stream) {
        self.inner.closed(s)
    }
    fn wants_fragments(&self) -> bool {
        self.inner.wants_fragments()
    }
    fn fragments(&mut self, settled: super::subscribe::Settled<'_, '_>) {
        self.inner.fragments(settled)
    }
    fn metadata(&mut self, meta: &crate::report::aggregate::Metadata) {
        self.inner.metadata(meta)
    }
    fn block(&mut self, rec: &Record<'_>) {
        self.inner.block(rec)
    }
    fn damage(&mut self, e: &ReportError) {
        self.inner.damage(e)
    }
    fn origin(&mut self, ts_ns: u64) {
        self.inner.origin(ts_ns)
    }
}

/// What a sharded run returns: each worker's result (worker 0 also got the file's
/// non-packet records and damage), the summary, and the streams' global numbers.
pub struct Sharded<R> {
    pub workers: Vec<R>,
    pub summary: Summary,
    pub renumber: Renumber,
}

/// [`analyze_file`](super::analyze_file) on `threads` workers: `make(i)` makes worker
/// `i`'s subscriber and `finish` turns it into the worker's result, both on the worker's
/// thread (subscribers need not be `Send`).
pub fn analyze_file_sharded<S, R, F, G>(
    path: &Path,
    cfg: &AnalysisConfig,
    threads: usize,
    make: F,
    finish: G,
) -> Result<Sharded<R>, AnalysisError>
where
    S: Subscriber,
    R: Send,
    F: Fn(usize) -> S + Sync,
    G: Fn(S) -> R + Sync,
{
    let capture = Capture::open(path)?;
    let mut r = run(capture.data(), cfg, threads, &make, &finish, &|off| {
        capture.release_before(off)
    })?;
    r.summary.file = path.display().to_string();
    Ok(r)
}

/// [`analyze_file_sharded`] over a capture in memory.
pub fn analyze_bytes_sharded<S, R, F, G>(
    data: &[u8],
    cfg: &AnalysisConfig,
    threads: usize,
    make: F,
    finish: G,
) -> Result<Sharded<R>, AnalysisError>
where
    S: Subscriber,
    R: Send,
    F: Fn(usize) -> S + Sync,
    G: Fn(S) -> R + Sync,
{
    run(data, cfg, threads, &make, &finish, &|_| {})
}

fn run<S, R, F, G>(
    data: &[u8],
    cfg: &AnalysisConfig,
    threads: usize,
    make: &F,
    finish: &G,
    release: &(dyn Fn(usize) + Sync),
) -> Result<Sharded<R>, AnalysisError>
where
    S: Subscriber,
    R: Send,
    F: Fn(usize) -> S + Sync,
    G: Fn(S) -> R + Sync,
{
    let n = threads.max(1);
    let mut rel = |o| release(o);
    let (mut frames, meta) = Frames::open(data, &mut rel)?;
    let mut summary = Summary {
        format: Some(frames.format()),
        ..Default::default()
    };
    let meta = &meta;
    let results = std::thread::scope(|scope| {
        let mut txs: Vec<SyncSender<Vec<Item<'_>>>> = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = sync_channel::<Vec<Item<'_>>>(QUEUE);
            txs.push(tx);
            handles.push(scope.spawn(move || worker(make(i), finish, rx, cfg, meta)));
        }
        let mut batches: Vec<Vec<Item<'_>>> = (0..n).map(|_| Vec::with_capacity(BATCH)).collect();
        // The sweep clock one core's reassembler keeps (see `Reassembler::sweep_due`).
        let every = cfg.reassembly.timeout_ns / 4;
        let mut last_sweep = 0u64;
        while let Some(f) = frames.next(&mut rel) {
            match f {
                Frame::Packet { frame, rec: p, d } => {
                    if frame == 1 {
                        for b in batches.iter_mut() {
                            b.push(Item::Origin(p.ts_ns));
                        }
                    }
                    if sweeps_at(&d) && p.ts_ns >= last_sweep.saturating_add(every) {
                        last_sweep = p.ts_ns;
                        for w in 0..n {
                            batches[w].push(Item::Sweep(p.ts_ns));
                            send(&txs[w], &mut batches[w], false);
                        }
                    }
                    let w = shard_of(&d, n);
                    batches[w].push(Item::Packet { frame, rec: p, d });
                    send(&txs[w], &mut batches[w], false);
                }
                Frame::Block(rec) => {
                    batches[0].push(Item::Block(rec));
                    send(&txs[0], &mut batches[0], false);
                }
                Frame::Damage(e) => {
                    summary.problems.push(e.to_string());
                    batches[0].push(Item::Damage(e));
                    send(&txs[0], &mut batches[0], false);
                }
            }
        }
        summary.frames = frames.frame;
        summary.bytes = frames.bytes;
        for w in 0..n {
            send(&txs[w], &mut batches[w], true);
        }
        drop(txs);
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut workers = Vec::with_capacity(n);
    let mut opened = Vec::with_capacity(n);
    for r in results {
        let (res, streams, part) = match r {
            Ok(x) => x,
            // A worker's panic is a bug: passed on as such.
            Err(p) => std::panic::resume_unwind(p),
        };
        summary.non_ip += part.non_ip;
        summary.fragments += part.fragments;
        summary.tagged |= part.tagged;
        summary.reassembly.add(&part.reassembly);
        summary.defrag.add(&part.defrag);
        workers.push(res);
        opened.push(streams);
    }
    Ok(Sharded {
        workers,
        summary,
        renumber: Renumber::build(&opened),
    })
}

/// Hands a worker its batch when it is full (or, with `force`, whatever it holds).
#[inline]
fn send<'a>(tx: &SyncSender<Vec<Item<'a>>>, batch: &mut Vec<Item<'a>>, force: bool) {
    if batch.len() >= BATCH || force && !batch.is_empty() {
        let b = std::mem::replace(batch, Vec::with_capacity(BATCH));
        // A worker gone means it panicked: its join says so.
        let _ = tx.send(b);
    }
}

type Opens = Vec<(StreamId, u64)>;

fn worker<S: Subscriber, R>(
    sub: S,
    finish: &(impl Fn(S) -> R + Sync),
    rx: Receiver<Vec<Item<'_>>>,
    cfg: &AnalysisConfig,
    meta: &crate::report::aggregate::Metadata,
) -> (R, Opens, Summary) {
    let mut sub = Opened {
        inner: sub,
        streams: Vec::new(),
    };
    sub.metadata(meta);
    let mut pipe = Pipeline::new(cfg, meta, &sub);
    while let Ok(batch) = rx.recv() {
        for item in batch {
            match item {
                Item::Packet { frame, rec, d } => pipe.packet(frame, &rec, &d, &mut sub),
                Item::Origin(ts) => sub.origin(ts),
                Item::Sweep(now) => pipe.reasm.sweep_at(now, &mut sub),
                Item::Block(rec) => sub.block(&rec),
                Item::Damage(e) => sub.damage(&e),
            }
        }
    }
    pipe.finish(&mut sub);
    let mut part = Summary {
        tagged: pipe.tagged(),
        ..Default::default()
    };
    pipe.fill(&mut part);
    (finish(sub.inner), sub.streams, part)
}

impl DefragStats {
    /// Adds another run's figures (the peaks of separate workers add up: an upper bound
    /// of the memory held at once).
    pub fn add(&mut self, o: &DefragStats) {
        let DefragStats {
            fragments,
            ipv4_fragments,
            ipv6_fragments,
            held,
            constituents,
            datagrams_reassembled,
            atomic_fragments,
            datagrams_timed_out,
            overlapping_fragments,
            clipped_fragments,
            unaligned_fragments,
            discarded,
            trackers,
            peak_trackers,
            memory_bytes,
            peak_memory_bytes,
        } = o;
        self.fragments += fragments;
        self.ipv4_fragments += ipv4_fragments;
        self.ipv6_fragments += ipv6_fragments;
        self.held += held;
        self.constituents += constituents;
        self.datagrams_reassembled += datagrams_reassembled;
        self.atomic_fragments += atomic_fragments;
        self.datagrams_timed_out += datagrams_timed_out;
        self.overlapping_fragments += overlapping_fragments;
        self.clipped_fragments += clipped_fragments;
        self.unaligned_fragments += unaligned_fragments;
        self.discarded.add(discarded);
        self.trackers += trackers;
        self.peak_trackers += peak_trackers;
        self.memory_bytes += memory_bytes;
        self.peak_memory_bytes += peak_memory_bytes;
    }
}

impl DiscardCounts {
    pub fn add(&mut self, o: &DiscardCounts) {
        let DiscardCounts {
            overlap_lost,
            timeout,
            incomplete,
            bad_checksum,
            bad_offset,
            bad_length,
            too_large,
            tracker_limit,
            fragment_limit,
            memcap,
            truncated,
            not_fragment,
        } = o;
        self.overlap_lost += overlap_lost;
        self.timeout += timeout;
        self.incomplete += incomplete;
        self.bad_checksum += bad_checksum;
        self.bad_offset += bad_offset;
        self.bad_length += bad_length;
        self.too_large += too_large;
        self.tracker_limit += tracker_limit;
        self.fragment_limit += fragment_limit;
        self.memcap += memcap;
        self.truncated += truncated;
        self.not_fragment += not_fragment;
    }
}

impl ReassemblyStats {
    pub fn add(&mut self, o: &ReassemblyStats) {
        let ReassemblyStats {
            tcp_streams,
            udp_streams,
            streams_refused,
            streams_expired,
            memcap_drops,
            depth_cuts,
            queue_overflows,
            out_of_window,
            malformed,
            peak_memory,
        } = o;
        self.tcp_streams += tcp_streams;
        self.udp_streams += udp_streams;
        self.streams_refused += streams_refused;
        self.streams_expired += streams_expired;
        self.memcap_drops += memcap_drops;
        self.depth_cuts += depth_cuts;
        self.queue_overflows += queue_overflows;
        self.out_of_window += out_of_window;
        self.malformed += malformed;
        self.peak_memory += peak_memory;
    }
}
