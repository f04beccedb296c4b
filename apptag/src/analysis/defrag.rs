//! IPv4 and IPv6 defragmentation with target-based reassembly policies.
//!
//! A destination host decides which bytes win when fragments overlap, and stacks disagree
//! (Novak, "Target-Based Fragmentation Reassembly", 2005; Shankar and Paxson's active
//! mapping). A monitor that wants the bytes the destination saw has to reassemble as that
//! destination does, so the policy is chosen per destination prefix ([`PrefixMap`]).
//!
//! Fragment placement comes from the one dissector ([`Dissected::frag`]); this module never
//! parses an IP header of its own. What it writes is the artificial datagram: the first
//! fragment's header with its length (and IPv4 fragment fields and checksum) rewritten.
//!
//! Every fragment pushed ends in exactly one of three places, and [`DefragStats`] counts
//! each: held in a tracker (packet state "fragment"), a constituent of a reassembled
//! datagram ("reassembled", the datagram being "artificial"), or discarded with a
//! [`DiscardReason`] ("discarded"). Fragments held and later dropped (timeout, a datagram
//! end that leaves them outside) are reported through [`Defragmenter::dropped`].
//!
//! Memory: trackers live in a slab whose buffers are reused, so a steady stream of
//! fragments allocates nothing; every buffer's capacity is charged against the memcap.
use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasher, Hash, Hasher},
    str::FromStr,
};

use serde::Serialize;
use thiserror::Error;

use super::prefix::PrefixMap;
use crate::dissect::{Addr, Dissected, Fragment, Network};

#[cfg(test)]
mod tests;

/// Errors of the defragmentation layer's configuration.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DefragError {
    #[error(
        "unknown reassembly policy `{0}`; use one of first, last, bsd, bsd-right, linux, windows, solaris"
    )]
    UnknownPolicy(String),
    #[error("defrag {name} = {value} is too small: {why}")]
    BadLimit {
        name: &'static str,
        value: u64,
        why: &'static str,
    },
}

/// Which bytes win when a new fragment overlaps data already held for its datagram.
///
/// Each rule compares the new fragment's extent `[ns, ne)` with the extent `[os, oe)` of
/// the held piece it overlaps (as already trimmed by earlier decisions, as a kernel keeps
/// its fragment queue). The Sturges/Novak test in `defrag/tests.rs` pins every policy to
/// the results Suricata documents for it (bsd-right: Snort's frag3 rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The data held first always wins (old Solaris, HP-UX 11, macOS).
    First,
    /// The newest fragment always wins (Cisco IOS, some printers).
    Last,
    /// The fragment that starts lower wins; on equal starts the held data wins
    /// (FreeBSD, OpenBSD, HP-UX 10, IRIX). Suricata's default.
    #[default]
    Bsd,
    /// The fragment that ends higher wins; on equal ends the one starting lower, the new
    /// one on a tie (HP JetDirect printers).
    BsdRight,
    /// As bsd, but the new fragment also wins on equal starts (Linux before 4.19-era
    /// kernels, which now drop overlapping datagrams altogether).
    Linux,
    /// The new fragment wins only if it covers the held piece and sticks out on both
    /// sides (Windows).
    Windows,
    /// As windows, but covering up to the held piece's end is enough (Solaris).
    Solaris,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Policy::First,
        Policy::Last,
        Policy::Bsd,
        Policy::BsdRight,
        Policy::Linux,
        Policy::Windows,
        Policy::Solaris,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::First => "first",
            Policy::Last => "last",
            Policy::Bsd => "bsd",
            Policy::BsdRight => "bsd-right",
            Policy::Linux => "linux",
            Policy::Windows => "windows",
            Policy::Solaris => "solaris",
        }
    }

    /// Whether a new fragment spanning `[ns, ne)` takes the overlapped bytes of the held
    /// piece `[os, oe)`.
    #[inline]
    pub fn new_wins(self, ns: u32, ne: u32, os: u32, oe: u32) -> bool {
        match self {
            Policy::First => false,
            Policy::Last => true,
            Policy::Bsd => ns < os,
            Policy::BsdRight => ne > oe || (ne == oe && ns <= os),
            Policy::Linux => ns <= os,
            Policy::Windows => ns < os && ne > oe,
            Policy::Solaris => ns < os && ne >= oe,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = DefragError;

    fn from_str(s: &str) -> Result<Self, DefragError> {
        let s = s.trim();
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| DefragError::UnknownPolicy(s.to_string()))
    }
}

/// Limits and policies. Defaults are Suricata's.
#[derive(Clone, Debug)]
pub struct DefragConfig {
    /// Policy for destinations no prefix in `per_destination` covers. Default bsd.
    pub policy: Policy,
    /// Policy per destination prefix; the most specific prefix wins.
    pub per_destination: PrefixMap<Policy>,
    /// A datagram not complete this long after its first fragment arrived is dropped
    /// (like Linux and BSD, the timer is not restarted by later fragments). Default 60 s.
    pub timeout_ns: u64,
    /// Datagrams being reassembled at once. Default 65535.
    pub max_trackers: usize,
    /// Fragments held for one datagram. Default 8192 (a 64 KiB datagram in 8-byte
    /// fragments).
    pub max_fragments_per_datagram: usize,
    /// Memory for all trackers and their buffers (capacities, not just bytes used).
    /// Default 32 MiB.
    pub memcap_bytes: usize,
    /// Largest reassembled datagram: IPv4 header plus data, or IPv6 payload length.
    /// Default 65535, what the length fields can say.
    pub max_datagram_size: usize,
    /// Drop IPv4 fragments whose header checksum is wrong, as the destination would.
    /// Default true.
    pub verify_ipv4_checksum: bool,
}

impl Default for DefragConfig {
    fn default() -> Self {
        Self {
            policy: Policy::Bsd,
            per_destination: PrefixMap::new(),
            timeout_ns: 60_000_000_000,
            max_trackers: 65_535,
            max_fragments_per_datagram: 8_192,
            memcap_bytes: 32 << 20,
            max_datagram_size: 65_535,
            verify_ipv4_checksum: true,
        }
    }
}

/// The smallest memcap: one tracker holding a largest datagram.
pub const MIN_MEMCAP: usize = 256 << 10;

impl DefragConfig {
    /// Checks the limits; [`Defragmenter::new`] raises values that fail to the minimum.
    pub fn validate(&self) -> Result<(), DefragError> {
        let bad = |name, value: usize, why| {
            Err(DefragError::BadLimit {
                name,
                value: value as u64,
                why,
            })
        };
        if self.timeout_ns == 0 {
            return Err(DefragError::BadLimit {
                name: "timeout",
                value: 0,
                why: "a datagram needs time for its fragments to arrive",
            });
        }
        if self.max_trackers == 0 {
            return bad("trackers", 0, "at least one datagram must be tracked");
        }
        if self.max_fragments_per_datagram < 2 {
            return bad(
                "max-frags",
                self.max_fragments_per_datagram,
                "a fragmented datagram has at least 2 fragments",
            );
        }
        if self.memcap_bytes < MIN_MEMCAP {
            return bad(
                "memcap",
                self.memcap_bytes,
                "it must hold at least one 64 KiB datagram (256 KiB)",
            );
        }
        Ok(())
    }
}

/// Why a fragment was thrown away (its packet state is "discarded").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscardReason {
    /// Every byte it carried lost to data already held, under the destination's policy.
    OverlapLost,
    /// Its datagram was not complete within the timeout.
    Timeout,
    /// The capture ended with its datagram incomplete ([`Defragmenter::flush`]).
    Incomplete,
    /// IPv4 header checksum wrong.
    BadChecksum,
    /// Placement contradicts the datagram (teardrop-style): data entirely past the end set
    /// by the last fragment, or a second last fragment with a different end.
    BadOffset,
    /// No data, or a non-last IPv6 fragment whose length is not a multiple of 8.
    BadLength,
    /// The datagram would exceed the largest size (65535).
    TooLarge,
    /// As many datagrams are being reassembled as `max_trackers` allows.
    TrackerLimit,
    /// Its datagram already holds `max_fragments_per_datagram` fragments.
    FragmentLimit,
    /// Holding it would exceed the memcap.
    Memcap,
    /// The capture cut the fragment short (snap length), so its bytes are unknown.
    Truncated,
    /// Not a fragment (the caller passed a whole datagram) or not IP.
    NotFragment,
}

impl DiscardReason {
    pub const ALL: [DiscardReason; 12] = [
        DiscardReason::OverlapLost,
        DiscardReason::Timeout,
        DiscardReason::Incomplete,
        DiscardReason::BadChecksum,
        DiscardReason::BadOffset,
        DiscardReason::BadLength,
        DiscardReason::TooLarge,
        DiscardReason::TrackerLimit,
        DiscardReason::FragmentLimit,
        DiscardReason::Memcap,
        DiscardReason::Truncated,
        DiscardReason::NotFragment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::OverlapLost => "overlap_lost",
            DiscardReason::Timeout => "timeout",
            DiscardReason::Incomplete => "incomplete",
            DiscardReason::BadChecksum => "bad_checksum",
            DiscardReason::BadOffset => "bad_offset",
            DiscardReason::BadLength => "bad_length",
            DiscardReason::TooLarge => "too_large",
            DiscardReason::TrackerLimit => "tracker_limit",
            DiscardReason::FragmentLimit => "fragment_limit",
            DiscardReason::Memcap => "memcap",
            DiscardReason::Truncated => "truncated",
            DiscardReason::NotFragment => "not_fragment",
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fragments discarded, per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiscardCounts {
    pub overlap_lost: u64,
    pub timeout: u64,
    pub incomplete: u64,
    pub bad_checksum: u64,
    pub bad_offset: u64,
    pub bad_length: u64,
    pub too_large: u64,
    pub tracker_limit: u64,
    pub fragment_limit: u64,
    pub memcap: u64,
    pub truncated: u64,
    pub not_fragment: u64,
}

impl DiscardCounts {
    fn slot(&mut self, r: DiscardReason) -> &mut u64 {
        match r {
            DiscardReason::OverlapLost => &mut self.overlap_lost,
            DiscardReason::Timeout => &mut self.timeout,
            DiscardReason::Incomplete => &mut self.incomplete,
            DiscardReason::BadChecksum => &mut self.bad_checksum,
            DiscardReason::BadOffset => &mut self.bad_offset,
            DiscardReason::BadLength => &mut self.bad_length,
            DiscardReason::TooLarge => &mut self.too_large,
            DiscardReason::TrackerLimit => &mut self.tracker_limit,
            DiscardReason::FragmentLimit => &mut self.fragment_limit,
            DiscardReason::Memcap => &mut self.memcap,
            DiscardReason::Truncated => &mut self.truncated,
            DiscardReason::NotFragment => &mut self.not_fragment,
        }
    }

    pub fn get(&self, r: DiscardReason) -> u64 {
        let mut c = *self;
        *c.slot(r)
    }

    pub fn total(&self) -> u64 {
        DiscardReason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// Counters of the defragmentation layer. Every fragment pushed is, at any time, exactly
/// one of `held`, `constituents` or `discarded`:
/// `fragments == held + constituents + discarded.total()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DefragStats {
    /// Fragments pushed.
    pub fragments: u64,
    pub ipv4_fragments: u64,
    pub ipv6_fragments: u64,
    /// Fragments held now, waiting for the rest of their datagram.
    pub held: u64,
    /// Fragments delivered as parts of reassembled datagrams (atomic ones included).
    pub constituents: u64,
    /// Datagrams reassembled (atomic fragments not included).
    pub datagrams_reassembled: u64,
    /// IPv6 atomic fragments (offset 0, no more fragments) passed through.
    pub atomic_fragments: u64,
    /// Datagrams dropped because their timeout passed.
    pub datagrams_timed_out: u64,
    /// Fragments that overlapped data already held (whatever the policy then kept).
    pub overlapping_fragments: u64,
    /// Fragments whose data past the datagram's end was cut off.
    pub clipped_fragments: u64,
    /// Non-last IPv4 fragments whose length is not a multiple of 8 (kept whole).
    pub unaligned_fragments: u64,
    pub discarded: DiscardCounts,
    /// Datagrams being reassembled now, and the most at once.
    pub trackers: u64,
    pub peak_trackers: u64,
    /// Memory charged now (all buffer capacities), and the most at once.
    pub memory_bytes: u64,
    pub peak_memory_bytes: u64,
}

/// What identifies one datagram's fragments: RFC 791 (addresses, protocol, id) and RFC
/// 8200 (addresses, id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DatagramKey {
    pub src: Addr,
    pub dst: Addr,
    pub id: u32,
    /// IPv4 protocol; 0 for IPv6.
    pub protocol: u8,
    pub ipv6: bool,
}

impl Hash for DatagramKey {
    /// Five words, whatever the hasher (the derived hash feeds it byte slices).
    fn hash<H: Hasher>(&self, h: &mut H) {
        for a in [&self.src.0, &self.dst.0] {
            let (hi, lo) = a.split_at(8);
            h.write_u64(u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])));
            h.write_u64(u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])));
        }
        h.write_u64(
            u64::from(self.id) | u64::from(self.protocol) << 32 | u64::from(self.ipv6) << 40,
        );
    }
}

/// A fast hash keyed with a secret drawn per defragmenter: fragment ids and addresses come
/// from the network, so a fixed hash would let a sender pick colliding keys, and SipHash
/// cost a quarter of the time per fragment.
#[derive(Clone, Copy, Debug)]
struct KeyedState(u64);

impl KeyedState {
    fn new() -> Self {
        Self(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1)
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            h: self.0,
            seed: self.0,
        }
    }
}

struct KeyedHasher {
    h: u64,
    seed: u64,
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.h = ((self.h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left(29) ^ self.seed;
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

impl DatagramKey {
    /// The datagram a fragment belongs to; `None` when `d` is not a fragment.
    #[inline]
    pub fn of(d: &Dissected) -> Option<Self> {
        let id = match d.fragment {
            Fragment::First { id } | Fragment::Later { id } => id,
            Fragment::Whole => return None,
        };
        let ipv6 = match d.network {
            Network::Ipv4 => false,
            Network::Ipv6 => true,
            _ => return None,
        };
        Some(Self {
            src: Addr::from_ip(d.src),
            dst: Addr::from_ip(d.dst),
            id,
            protocol: if ipv6 { 0 } else { d.frag.next_header },
            ipv6,
        })
    }
}

/// What became of a fragment.
#[derive(Debug)]
pub enum DefragOutcome<'a> {
    /// Stored; the datagram is not complete yet. The packet's state is "fragment".
    Held,
    /// The datagram is complete. `datagram` is a whole IP packet (IPv4 header with the
    /// fragment fields cleared and checksum recomputed / IPv6 without the fragment header),
    /// to dissect with `dissect(linktype::RAW, datagram)`. It is an artificial packet;
    /// `constituents` are the frames it was built from, in offset order (ties in arrival
    /// order), including fragments whose bytes later fragments replaced; `last_ts_ns` is
    /// the time of the fragment that completed it. IPv6 atomic fragments come back this way
    /// with one constituent.
    Reassembled {
        datagram: &'a [u8],
        constituents: &'a [u64],
        last_ts_ns: u64,
    },
    /// The destination would have thrown this fragment away, or a limit was hit: its state
    /// is "discarded" with this reason.
    Discarded(DiscardReason),
}

/// A fragment that had been held and was dropped later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub frame: u64,
    pub key: DatagramKey,
    pub reason: DiscardReason,
}

const NIL: u32 = u32::MAX;
/// Buffers larger than this are freed, not kept, when a tracker is released.
const RETAIN_BYTES: usize = 16 << 10;
const RETAIN_ITEMS: usize = 256;

/// A run of datagram bytes `[start, end)` held in a tracker's arena at `src`.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: u32,
    end: u32,
    src: u32,
}

/// A fragment accepted into a tracker.
#[derive(Clone, Copy, Debug)]
struct FragRec {
    frame: u64,
    start: u32,
    seq: u32,
}

#[derive(Debug)]
struct Tracker {
    key: DatagramKey,
    policy: Policy,
    created_ns: u64,
    /// Data length of the datagram, once its last fragment was seen.
    end: Option<u32>,
    /// Bytes covered by `pieces` (they never overlap).
    covered: u32,
    seq: u32,
    pieces: Vec<Piece>,
    frags: Vec<FragRec>,
    arena: Vec<u8>,
    /// Header of the fragment holding byte 0 (IPv6: the unfragmentable part).
    header: Vec<u8>,
    next_header: u8,
    next_header_field: usize,
    live: bool,
    charged: usize,
    prev: u32,
    next: u32,
}

impl Tracker {
    fn empty() -> Self {
        Self {
            key: DatagramKey {
                src: Addr::UNSPECIFIED,
                dst: Addr::UNSPECIFIED,
                id: 0,
                protocol: 0,
                ipv6: false,
            },
            policy: Policy::Bsd,
            created_ns: 0,
            end: None,
            covered: 0,
            seq: 0,
            pieces: Vec::new(),
            frags: Vec::new(),
            arena: Vec::new(),
            header: Vec::new(),
            next_header: 0,
            next_header_field: 0,
            live: false,
            charged: 0,
            prev: NIL,
            next: NIL,
        }
    }

    fn charge(&self) -> usize {
        std::mem::size_of::<Tracker>()
            + self.arena.capacity()
            + self.header.capacity()
            + self.pieces.capacity() * std::mem::size_of::<Piece>()
            + self.frags.capacity() * std::mem::size_of::<FragRec>()
    }
}

/// One piece of the walk over held data that a new fragment `[ns, ne)` overlaps.
enum Seg {
    /// Held bytes `[start, end)` of a piece that stay.
    Keep(Piece),
    /// New bytes `[start, end)`; `true` when they fill a gap (rather than replace).
    New(u32, u32, bool),
}

/// Walks the pieces `[lo, hi)` (those meeting `[ns, ne)`) and says, run by run, who owns
/// each byte afterwards. Pieces partly outside `[ns, ne)` keep those parts.
#[inline]
fn walk(pieces: &[Piece], ns: u32, ne: u32, policy: Policy, mut emit: impl FnMut(Seg)) {
    let mut cur = ns;
    for p in pieces {
        if cur < p.start {
            emit(Seg::New(cur, p.start, true));
        }
        let os = p.start.max(ns);
        let oe = p.end.min(ne);
        if policy.new_wins(ns, ne, p.start, p.end) {
            if p.start < os {
                emit(Seg::Keep(Piece { end: os, ..*p }));
            }
            emit(Seg::New(os, oe, false));
            if oe < p.end {
                emit(Seg::Keep(Piece {
                    start: oe,
                    end: p.end,
                    src: p.src + (oe - p.start),
                }));
            }
        } else {
            emit(Seg::Keep(*p));
        }
        cur = cur.max(p.end.min(ne));
    }
    if cur < ne {
        emit(Seg::New(cur, ne, true));
    }
}

/// Internet checksum of `b` (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Capacity a vector grows to when `add` more items must fit: doubling, so a datagram's
/// fragments cost a few reallocations at most, and none once buffers are reused.
fn planned(cap: usize, len: usize, add: usize, min: usize) -> usize {
    if len + add <= cap {
        cap
    } else {
        (len + add).max(cap * 2).max(min)
    }
}

fn grow<T>(v: &mut Vec<T>, add: usize, min: usize) {
    let want = planned(v.capacity(), v.len(), add, min);
    if want > v.capacity() {
        v.reserve_exact(want - v.len());
    }
}

/// The defragmenter: trackers per datagram, limits, counters, and a reused output buffer.
pub struct Defragmenter {
    cfg: DefragConfig,
    index: HashMap<DatagramKey, u32, KeyedState>,
    slots: Vec<Tracker>,
    free: Vec<u32>,
    /// Live trackers by creation, oldest first.
    lru_head: u32,
    lru_tail: u32,
    memory: usize,
    stats: DefragStats,
    out: Vec<u8>,
    out_frames: Vec<u64>,
    scratch: Vec<Piece>,
    dropped: Vec<Dropped>,
}

impl Defragmenter {
    pub fn new(mut cfg: DefragConfig) -> Self {
        if let Err(e) = cfg.validate() {
            log::warn!("{e}; using the minimum");
            cfg.timeout_ns = cfg.timeout_ns.max(1);
            cfg.max_trackers = cfg.max_trackers.max(1);
            cfg.max_fragments_per_datagram = cfg.max_fragments_per_datagram.max(2);
            cfg.memcap_bytes = cfg.memcap_bytes.max(MIN_MEMCAP);
        }
        Self {
            cfg,
            index: HashMap::with_hasher(KeyedState::new()),
            slots: Vec::new(),
            free: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            memory: 0,
            stats: DefragStats::default(),
            out: Vec::new(),
            out_frames: Vec::new(),
            scratch: Vec::new(),
            dropped: Vec::new(),
        }
    }

    pub fn config(&self) -> &DefragConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &DefragStats {
        &self.stats
    }

    /// Held fragments dropped by the last call of [`push`](Self::push),
    /// [`expire`](Self::expire) or [`flush`](Self::flush) (timeouts, data left past a
    /// datagram's end); each is counted in the stats too. Cleared by the next call, so it
    /// never grows.
    pub fn dropped(&self) -> &[Dropped] {
        &self.dropped
    }

    /// The policy for a destination.
    pub fn policy_for(&self, dst: Addr) -> Policy {
        self.cfg
            .per_destination
            .lookup(dst)
            .copied()
            .unwrap_or(self.cfg.policy)
    }

    /// `frame` is the 1-based frame number in the file, `ts_ns` its time. Meant for
    /// packets whose `d.fragment != Fragment::Whole`, IPv4 or IPv6; an IPv6 atomic
    /// fragment (which the dissector reports as whole) is passed through as a datagram of
    /// one constituent, and anything else is discarded as `NotFragment`.
    pub fn push(&mut self, frame: u64, ts_ns: u64, d: &Dissected<'_>) -> DefragOutcome<'_> {
        self.dropped.clear();
        self.stats.fragments += 1;
        let ipv6 = match d.network {
            Network::Ipv4 => {
                self.stats.ipv4_fragments += 1;
                false
            }
            Network::Ipv6 => {
                self.stats.ipv6_fragments += 1;
                true
            }
            _ => return self.discard(DiscardReason::NotFragment),
        };
        self.expire_inner(ts_ns);
        let f = d.frag;
        // A fragment header says where the data starts; without one this is no fragment.
        let has_header = f.header_len != 0;
        if !has_header {
            return self.discard(DiscardReason::NotFragment);
        }
        if f.truncated || f.data_start > d.l3.len() || f.header_len > f.data_start {
            return self.discard(DiscardReason::Truncated);
        }
        if !ipv6 && self.cfg.verify_ipv4_checksum && checksum(&d.l3[..f.header_len]) != 0 {
            return self.discard(DiscardReason::BadChecksum);
        }
        let data = &d.l3[f.data_start..];
        if d.fragment == Fragment::Whole {
            return if ipv6 && f.offset == 0 && !f.more {
                self.atomic(frame, ts_ns, d, data)
            } else {
                self.discard(DiscardReason::NotFragment)
            };
        }
        let Some(key) = DatagramKey::of(d) else {
            return self.discard(DiscardReason::NotFragment);
        };
        let len = data.len();
        if len == 0 {
            return self.discard(DiscardReason::BadLength);
        }
        if f.more && !len.is_multiple_of(8) {
            // RFC 8200 has IPv6 drop these. IPv4 stacks differ (BSD drops, Linux cuts to
            // the 8-byte boundary, Windows keeps); the bytes are kept, as Suricata and
            // tshark do, and the policy settles any overlap they cause.
            if ipv6 {
                return self.discard(DiscardReason::BadLength);
            }
            self.stats.unaligned_fragments += 1;
        }
        let ns = f.offset;
        let end = ns as usize + len;
        let header_cost = if ipv6 {
            f.header_len.saturating_sub(40)
        } else {
            f.header_len
        };
        if header_cost + end > self.cfg.max_datagram_size || end > u32::MAX as usize {
            return self.discard(DiscardReason::TooLarge);
        }
        let ne = end as u32;
        let slot = match self.index.get(&key) {
            Some(&s) => s,
            None => {
                if self.index.len() >= self.cfg.max_trackers {
                    return self.discard(DiscardReason::TrackerLimit);
                }
                let policy = self.policy_for(key.dst);
                match self.open(key, policy, ts_ns) {
                    Some(s) => s,
                    None => return self.discard(DiscardReason::Memcap),
                }
            }
        };
        let frag = NewFrag {
            frame,
            ns,
            ne,
            more: f.more,
            data: &data[..len],
            header: &d.l3[..f.header_len],
            next_header: f.next_header,
            next_header_field: f.next_header_field,
        };
        let result = self.insert(slot, &frag);
        match result {
            Err(reason) => {
                if self.slots[slot as usize].frags.is_empty() {
                    self.release(slot);
                }
                self.discard(reason)
            }
            Ok(false) => DefragOutcome::Held,
            Ok(true) => {
                self.build(slot);
                self.release(slot);
                DefragOutcome::Reassembled {
                    datagram: &self.out,
                    constituents: &self.out_frames,
                    last_ts_ns: ts_ns,
                }
            }
        }
    }

    /// Drops datagrams whose timeout has passed at `now_ns` (their fragments counted as
    /// discarded with `Timeout` and listed in [`dropped`](Self::dropped)). `push` does
    /// this too; call it as time advances without fragments.
    pub fn expire(&mut self, now_ns: u64) {
        self.dropped.clear();
        self.expire_inner(now_ns);
    }

    /// Drops every datagram still incomplete (at the end of the input): their fragments
    /// are discarded with `Incomplete`.
    pub fn flush(&mut self) {
        self.dropped.clear();
        while self.lru_head != NIL {
            let s = self.lru_head;
            self.drop_tracker(s, DiscardReason::Incomplete);
        }
    }

    fn expire_inner(&mut self, now_ns: u64) {
        while self.lru_head != NIL {
            let s = self.lru_head;
            let t = &self.slots[s as usize];
            if now_ns.saturating_sub(t.created_ns) < self.cfg.timeout_ns {
                break;
            }
            self.stats.datagrams_timed_out += 1;
            self.drop_tracker(s, DiscardReason::Timeout);
        }
    }

    fn drop_tracker(&mut self, s: u32, reason: DiscardReason) {
        let t = &mut self.slots[s as usize];
        for f in &t.frags {
            self.dropped.push(Dropped {
                frame: f.frame,
                key: t.key,
                reason,
            });
        }
        let n = t.frags.len() as u64;
        t.frags.clear();
        self.stats.held -= n;
        *self.stats.discarded.slot(reason) += n;
        self.release(s);
    }

    fn discard(&mut self, reason: DiscardReason) -> DefragOutcome<'static> {
        *self.stats.discarded.slot(reason) += 1;
        DefragOutcome::Discarded(reason)
    }

    fn atomic(&mut self, frame: u64, ts_ns: u64, d: &Dissected, data: &[u8]) -> DefragOutcome<'_> {
        let f = d.frag;
        let plen = f.header_len - 40 + data.len();
        if plen > self.cfg.max_datagram_size {
            return self.discard(DiscardReason::TooLarge);
        }
        self.out.clear();
        self.out.extend_from_slice(&d.l3[..f.header_len]);
        self.out.extend_from_slice(data);
        self.out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        if let Some(b) = self.out.get_mut(f.next_header_field) {
            *b = f.next_header;
        }
        self.out_frames.clear();
        self.out_frames.push(frame);
        self.stats.atomic_fragments += 1;
        self.stats.constituents += 1;
        DefragOutcome::Reassembled {
            datagram: &self.out,
            constituents: &self.out_frames,
            last_ts_ns: ts_ns,
        }
    }

    /// Memory that would be free if the spare buffers of released trackers were dropped.
    fn shed_spares(&mut self) {
        for &s in &self.free {
            let t = &mut self.slots[s as usize];
            t.arena = Vec::new();
            t.header = Vec::new();
            t.pieces = Vec::new();
            t.frags = Vec::new();
            let c = t.charge();
            self.memory = self.memory + c - t.charged;
            t.charged = c;
        }
    }

    fn recharge(&mut self, s: u32) {
        let t = &mut self.slots[s as usize];
        let c = t.charge();
        self.memory = self.memory + c - t.charged;
        t.charged = c;
        self.note_memory();
    }

    fn note_memory(&mut self) {
        let index = self.index.capacity()
            * (std::mem::size_of::<(DatagramKey, u32)>() + std::mem::size_of::<u64>());
        let total = (self.memory + index) as u64;
        self.stats.memory_bytes = total;
        self.stats.peak_memory_bytes = self.stats.peak_memory_bytes.max(total);
    }

    /// Whether `extra` more bytes fit under the memcap, shedding spare buffers if needed.
    fn fits(&mut self, extra: usize) -> bool {
        let index = self.index.capacity()
            * (std::mem::size_of::<(DatagramKey, u32)>() + std::mem::size_of::<u64>());
        if self.memory + index + extra <= self.cfg.memcap_bytes {
            return true;
        }
        self.shed_spares();
        self.memory + index + extra <= self.cfg.memcap_bytes
    }

    fn open(&mut self, key: DatagramKey, policy: Policy, ts_ns: u64) -> Option<u32> {
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                // The index may grow too: charge its next size.
                let grow_index = if self.index.len() == self.index.capacity() {
                    (self.index.capacity().max(4))
                        * (std::mem::size_of::<(DatagramKey, u32)>() + std::mem::size_of::<u64>())
                } else {
                    0
                };
                if !self.fits(std::mem::size_of::<Tracker>() + grow_index) {
                    return None;
                }
                self.slots.push(Tracker::empty());
                (self.slots.len() - 1) as u32
            }
        };
        let tail = self.lru_tail;
        {
            let t = &mut self.slots[s as usize];
            t.key = key;
            t.policy = policy;
            t.created_ns = ts_ns;
            t.end = None;
            t.covered = 0;
            t.seq = 0;
            t.live = true;
            t.prev = tail;
            t.next = NIL;
        }
        if tail != NIL {
            self.slots[tail as usize].next = s;
        } else {
            self.lru_head = s;
        }
        self.lru_tail = s;
        self.index.insert(key, s);
        self.stats.trackers = self.index.len() as u64;
        self.stats.peak_trackers = self.stats.peak_trackers.max(self.stats.trackers);
        self.recharge(s);
        Some(s)
    }

    fn release(&mut self, s: u32) {
        let (prev, next, key) = {
            let t = &mut self.slots[s as usize];
            if !t.live {
                return;
            }
            t.live = false;
            t.pieces.clear();
            t.frags.clear();
            t.arena.clear();
            t.header.clear();
            // Keep ordinary buffers for the next datagram; give back what a big one grew.
            if t.arena.capacity() > RETAIN_BYTES {
                t.arena = Vec::new();
            }
            if t.header.capacity() > RETAIN_BYTES {
                t.header = Vec::new();
            }
            if t.pieces.capacity() > RETAIN_ITEMS {
                t.pieces = Vec::new();
            }
            if t.frags.capacity() > RETAIN_ITEMS {
                t.frags = Vec::new();
            }
            let (p, n) = (t.prev, t.next);
            t.prev = NIL;
            t.next = NIL;
            (p, n, t.key)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else {
            self.lru_head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        } else {
            self.lru_tail = prev;
        }
        self.index.remove(&key);
        self.free.push(s);
        self.stats.trackers = self.index.len() as u64;
        self.recharge(s);
    }

    /// Adds a fragment to its tracker. `Ok(true)` when the datagram is now complete.
    fn insert(&mut self, s: u32, nf: &NewFrag) -> Result<bool, DiscardReason> {
        let max_frags = self.cfg.max_fragments_per_datagram;
        let t = &self.slots[s as usize];
        // The last fragment fixes the datagram's end; data contradicting it is teardrop.
        if let Some(end) = t.end {
            if !nf.more && nf.ne != end {
                return Err(DiscardReason::BadOffset);
            }
            if nf.ns >= end {
                return Err(DiscardReason::BadOffset);
            }
        }
        if t.frags.len() >= max_frags {
            return Err(DiscardReason::FragmentLimit);
        }
        let ne = match t.end {
            Some(end) => nf.ne.min(end),
            None => nf.ne,
        };
        let clipped = ne < nf.ne;
        let lo = t.pieces.partition_point(|p| p.end <= nf.ns);
        let hi = lo + t.pieces[lo..].partition_point(|p| p.start < ne);
        let overlapped = hi > lo;
        let (mut won, mut gained, mut runs) = (0u32, 0u32, 0usize);
        walk(&t.pieces[lo..hi], nf.ns, ne, t.policy, |seg| {
            runs += 1;
            if let Seg::New(a, b, gap) = seg {
                won += b - a;
                if gap {
                    gained += b - a;
                }
            }
        });
        if overlapped {
            self.stats.overlapping_fragments += 1;
        }
        if won == 0 {
            return Err(DiscardReason::OverlapLost);
        }
        // Memory for what this fragment adds, before anything is changed.
        let garbage = t.arena.len().saturating_sub(t.covered as usize);
        let compact = garbage > t.covered as usize + 4096;
        let arena_len = if compact {
            t.covered as usize
        } else {
            t.arena.len()
        };
        let arena_cap = if compact { 0 } else { t.arena.capacity() };
        let mut extra = planned(arena_cap, arena_len, won as usize, 1024) - arena_cap;
        extra += (planned(t.pieces.capacity(), t.pieces.len(), runs, 8) - t.pieces.capacity())
            * std::mem::size_of::<Piece>();
        extra += (planned(t.frags.capacity(), t.frags.len(), 1, 4) - t.frags.capacity())
            * std::mem::size_of::<FragRec>();
        if nf.ns == 0 {
            extra += planned(t.header.capacity(), 0, nf.header.len(), 0) - t.header.capacity();
        }
        if !self.fits(extra) {
            return Err(DiscardReason::Memcap);
        }
        if compact {
            self.compact(s);
        }
        if !nf.more && self.slots[s as usize].end.is_none() {
            self.set_end(s, nf.ne);
        }
        let t = &mut self.slots[s as usize];
        // Pieces may have moved (the end cut some off): find the window again.
        let lo = t.pieces.partition_point(|p| p.end <= nf.ns);
        let hi = lo + t.pieces[lo..].partition_point(|p| p.start < ne);
        grow(&mut t.arena, won as usize, 1024);
        grow(&mut t.pieces, runs, 8);
        grow(&mut t.frags, 1, 4);
        let scratch = &mut self.scratch;
        scratch.clear();
        let arena = &mut t.arena;
        let mut header_won = false;
        walk(&t.pieces[lo..hi], nf.ns, ne, t.policy, |seg| match seg {
            Seg::Keep(p) => scratch.push(p),
            Seg::New(a, b, _) => {
                let from = (a - nf.ns) as usize;
                let to = (b - nf.ns) as usize;
                let src = arena.len() as u32;
                arena.extend_from_slice(&nf.data[from..to]);
                header_won |= a == 0;
                // Runs of this fragment that meet in the arena become one piece.
                if let Some(last) = scratch.last_mut()
                    && last.end == a
                    && last.src + (last.end - last.start) == src
                {
                    last.end = b;
                } else {
                    scratch.push(Piece {
                        start: a,
                        end: b,
                        src,
                    });
                }
            }
        });
        t.pieces.splice(lo..hi, scratch.drain(..));
        t.covered += gained;
        if header_won {
            t.header.clear();
            t.header.extend_from_slice(nf.header);
            t.next_header = nf.next_header;
            t.next_header_field = nf.next_header_field;
        }
        t.frags.push(FragRec {
            frame: nf.frame,
            start: nf.ns,
            seq: t.seq,
        });
        t.seq += 1;
        let complete = t.end == Some(t.covered);
        self.stats.held += 1;
        if clipped {
            self.stats.clipped_fragments += 1;
        }
        self.recharge(s);
        Ok(complete)
    }

    /// The last fragment arrived: data past `end` is cut off, fragments entirely past it
    /// are dropped (teardrop-style placement).
    fn set_end(&mut self, s: u32, end: u32) {
        let t = &mut self.slots[s as usize];
        t.end = Some(end);
        let keep = t.pieces.partition_point(|p| p.start < end);
        let mut cut = 0;
        for p in &t.pieces[keep..] {
            cut += p.end - p.start;
        }
        t.pieces.truncate(keep);
        if let Some(p) = t.pieces.last_mut()
            && p.end > end
        {
            cut += p.end - end;
            p.end = end;
        }
        t.covered -= cut;
        if cut > 0 {
            self.stats.clipped_fragments += 1;
        }
        let key = t.key;
        let before = t.frags.len();
        let dropped = &mut self.dropped;
        t.frags.retain(|f| {
            let keep = f.start < end;
            if !keep {
                dropped.push(Dropped {
                    frame: f.frame,
                    key,
                    reason: DiscardReason::BadOffset,
                });
            }
            keep
        });
        let n = (before - t.frags.len()) as u64;
        self.stats.held -= n;
        self.stats.discarded.bad_offset += n;
    }

    /// Rewrites the arena with only the bytes pieces still use (heavy overlap leaves the
    /// rest unused).
    fn compact(&mut self, s: u32) {
        let t = &mut self.slots[s as usize];
        let mut a = Vec::with_capacity(t.covered as usize);
        for p in &mut t.pieces {
            let (from, n) = (p.src as usize, (p.end - p.start) as usize);
            p.src = a.len() as u32;
            a.extend_from_slice(&t.arena[from..from + n]);
        }
        t.arena = a;
        self.recharge(s);
    }

    /// Writes the complete datagram of tracker `s` into the output buffer.
    fn build(&mut self, s: u32) {
        let t = &self.slots[s as usize];
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(&t.header);
        let end = t.end.unwrap_or(t.covered) as usize;
        if t.key.ipv6 {
            let plen = t.header.len().saturating_sub(40) + end;
            if out.len() >= 6 {
                out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
            }
            if let Some(b) = out.get_mut(t.next_header_field) {
                *b = t.next_header;
            }
        } else if out.len() >= 20 {
            let total = t.header.len() + end;
            out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            // Only DF survives; MF and the offset belonged to the fragments.
            out[6] &= 0x40;
            out[7] = 0;
            out[10] = 0;
            out[11] = 0;
            let c = checksum(&out[..t.header.len()]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        for p in &t.pieces {
            let from = p.src as usize;
            out.extend_from_slice(&t.arena[from..from + (p.end - p.start) as usize]);
        }
        let n = t.frags.len() as u64;
        self.stats.held -= n;
        self.stats.constituents += n;
        self.stats.datagrams_reassembled += 1;
        // Offset order, ties in arrival order; the tracker is released next, so its list
        // is sorted in place.
        let t = &mut self.slots[s as usize];
        t.frags.sort_unstable_by_key(|f| (f.start, f.seq));
        self.out_frames.clear();
        self.out_frames.extend(t.frags.iter().map(|f| f.frame));
    }
}
/// A fragment being inserted, its data already cut to what counts.
struct NewFrag<'a> {
    frame: u64,
    ns: u32,
    ne: u32,
    more: bool,
    data: &'a [u8],
    header: &'a [u8],
    next_header: u8,
    next_header_field: usize,
}
