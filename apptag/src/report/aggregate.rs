//! Streaming aggregation of packets into applications, processes, flows and remote hosts.
//! State grows with the number of flows (and applications), never with the number of
//! packets, so a file of any size is read in bounded memory.
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::{
    model::{AppRecord, Direction, InterfaceStats, Packet, ProcessInfo, proto},
    pcapng::AppTable,
};

use super::{payload, timeline::Mark};
use crate::{
    analysis::defrag::DefragStats,
    analysis::subscribe::Settled,
    dissect::{Addr, Dissected, FiveTuple},
};

/// Why traffic could not be given to an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NoProcessInfo,
    NotIp,
    BeforeStart,
    NotLocal,
    NoSocket,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::NoProcessInfo => "no process information in the file",
            Reason::NotIp => "not IP (no addresses or ports to match)",
            Reason::BeforeStart => "seen before attribution started",
            Reason::NotLocal => "not a local address",
            Reason::NoSocket => "no process or socket matched",
        }
    }
    const ALL: [Reason; 5] = [
        Reason::NoProcessInfo,
        Reason::NotIp,
        Reason::BeforeStart,
        Reason::NotLocal,
        Reason::NoSocket,
    ];
}

/// Packet and byte counters, in and out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Counters {
    #[inline(always)]
    fn add(&mut self, ts: u64, len: u64, out: bool) {
        if out {
            self.packets_out += 1;
            self.bytes_out += len;
        } else {
            self.packets_in += 1;
            self.bytes_in += len;
        }
        if self.first_ns == 0 || ts < self.first_ns {
            self.first_ns = ts;
        }
        if ts > self.last_ns {
            self.last_ns = ts;
        }
    }
    /// Adds another run's counters over other packets.
    pub fn merge(&mut self, o: &Counters) {
        if o.packets() == 0 {
            return;
        }
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        if self.first_ns == 0 || o.first_ns != 0 && o.first_ns < self.first_ns {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
    }

    pub fn packets(&self) -> u64 {
        self.packets_in + self.packets_out
    }
    pub fn bytes(&self) -> u64 {
        self.bytes_in + self.bytes_out
    }
}

/// How many names (DNS/HTTP/SNI) a flow keeps: DNS flows to one resolver can carry
/// thousands of queries, and memory must stay bounded by flows.
const NAMES_PER_FLOW: usize = 8;
/// Payload inspection stops after this many packets with payload in a flow (except DNS).
const INSPECT_PACKETS: u8 = 6;

/// Per-flow state.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Both directions' key ([`FiveTuple::canonical`]): its source is end `a` (the lower
    /// address and port), its destination end `b`.
    pub key: FiveTuple,
    /// Whether end `a` sent the first packet seen (or the SYN).
    pub a_initiated: bool,
    /// Which end is this host's, when the capture told us (direction flags, cooked
    /// headers, known local addresses); otherwise the initiator is taken as local.
    pub a_is_local: Option<bool>,
    /// Packets and bytes a->b and b->a.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub first_ns: u64,
    pub last_ns: u64,
    /// The lowest frame number counted to it: flows are listed in this order, whatever
    /// order they were made in (one core, or several workers).
    pub first_frame: u64,
    /// Application protocol found in the payload.
    pub service: Option<&'static str>,
    /// Names found (DNS/HTTP/SNI), with the line of the packet that carried each.
    pub names: Vec<(String, LineId)>,
    inspected: u8,
    /// Which lines (applications / unattributed reasons) its packets went to.
    pub accounts: Vec<Account>,
    /// What the protocol parsers found in its streams (HTTP hosts, TLS names...).
    pub carried: Option<Box<super::carried::FlowCarried>>,
    /// Attribution results already worked out, each valid over a time window in which
    /// no socket, process start or attribution start changes the answer: packets of a
    /// flow skip the socket table while their time stays inside it.
    attr_cache: Vec<AttrCache>,
}

/// What decides a packet's attribution within a flow, besides its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AttrKey {
    pid: u32,
    src_is_a: bool,
    /// The direction before loopback sockets are asked.
    decided: Direction,
    /// Whether the flow's local end was known, and which end it was taken to be.
    a_known: bool,
    local_is_a: bool,
}

#[derive(Clone, Copy, Debug)]
struct AttrCache {
    key: AttrKey,
    /// Valid for packet times in `[from, to)`.
    from: u64,
    to: u64,
    decided: Direction,
    line: LineId,
    pid: u32,
}

/// Attribution results a flow keeps (more would mean packets with ever-changing keys).
const ATTR_CACHE_PER_FLOW: usize = 4;

impl Flow {
    pub fn local_is_a(&self) -> bool {
        self.a_is_local.unwrap_or(self.a_initiated)
    }
    /// Service label: payload first, then well-known port, then the transport.
    pub fn service_label(&self) -> String {
        if let Some(s) = self.service {
            return s.to_string();
        }
        if let Some(s) = payload::by_port(self.key.protocol, self.key.src_port, self.key.dst_port) {
            return s.to_string();
        }
        proto::name(self.key.protocol).to_string()
    }
}

pub type LineId = u32;

/// The packets of one flow that went to one line.
#[derive(Clone, Debug)]
pub struct Account {
    pub line: LineId,
    /// The process the packets were given to (0: none), so that two processes of one
    /// application at the two ends of a loopback flow each keep their own end.
    pub pid: u32,
    pub counters: Counters,
    /// Which end is this line's, when the capture or a socket said so.
    pub a_is_local: Option<bool>,
}

/// Both addresses are this host's own (loopback, or a packet to itself).
fn is_host_local(src: IpAddr, dst: IpAddr) -> bool {
    let (s, d) = (src.to_canonical(), dst.to_canonical());
    s == d || (s.is_loopback() && d.is_loopback())
}

/// What a report line stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineKind {
    App(AppInfo),
    Unattributed(Reason),
}

/// An application as the file describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppInfo {
    pub name: String,
    pub exe: String,
    pub cgroup: String,
    pub pids: Vec<u32>,
}

/// One line of the report: an application or one kind of unattributed traffic.
#[derive(Clone, Debug)]
pub struct Line {
    pub kind: LineKind,
    pub counters: Counters,
    pub processes: FxHashMap<u32, Counters>,
}

#[derive(Clone, Copy, Debug)]
struct Sock {
    local: IpAddr,
    remote: Option<(IpAddr, u16)>,
    first_ns: u64,
    last_ns: u64,
    line: LineId,
    pid: u32,
}

#[derive(Clone, Copy, Debug)]
struct SockMatch {
    line: LineId,
    pid: u32,
}

impl Sock {
    fn covers(&self, ts: u64) -> bool {
        (self.first_ns == 0 || self.first_ns <= ts) && (self.last_ns == 0 || ts <= self.last_ns)
    }
}

/// Bytes per bin of one line, stored from its first active bin on, so a short-lived
/// process costs a few bins however long the capture.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Index of the first stored bin.
    pub start: usize,
    pub bins: Vec<u64>,
}

impl Series {
    #[inline(always)]
    fn add(&mut self, idx: usize, len: u64) {
        if self.bins.is_empty() {
            self.start = idx;
        } else if idx < self.start {
            // Out-of-order timestamps: grow to the left.
            let grow = self.start - idx;
            self.bins.splice(0..0, std::iter::repeat_n(0, grow));
            self.start = idx;
        }
        let i = idx - self.start;
        if self.bins.len() <= i {
            self.bins.resize(i + 1, 0);
        }
        self.bins[i] += len;
    }

    /// Merges groups of `f` bins (aligned on absolute bin numbers).
    fn coarsen(&mut self, f: usize) {
        if self.bins.is_empty() {
            return;
        }
        let new_start = self.start / f;
        let end = (self.start + self.bins.len() - 1) / f;
        let mut out = vec![0u64; end - new_start + 1];
        for (i, b) in self.bins.iter().enumerate() {
            out[(self.start + i) / f - new_start] += b;
        }
        self.start = new_start;
        self.bins = out;
    }

    /// One past the last bin.
    pub fn end(&self) -> usize {
        self.start + self.bins.len()
    }
}

/// Traffic volume per line over time, in bins that widen by ten whenever the capture
/// outgrows [`Timeline::MAX_BINS`], so it stays small for any duration.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub origin_ns: u64,
    pub bin_ns: u64,
    /// One series per line.
    pub bytes: Vec<Series>,
    started: bool,
}

impl Timeline {
    pub const MAX_BINS: usize = 10_000;
    const FIRST_BIN_NS: u64 = 1_000_000;

    #[inline(always)]
    fn add(&mut self, line: LineId, ts: u64, len: u64) {
        if !self.started {
            self.started = true;
            self.origin_ns = ts;
            self.bin_ns = Self::FIRST_BIN_NS;
        }
        let mut idx = (ts.saturating_sub(self.origin_ns) / self.bin_ns) as usize;
        while idx >= Self::MAX_BINS {
            self.coarsen();
            idx = (ts.saturating_sub(self.origin_ns) / self.bin_ns) as usize;
        }
        let l = line as usize;
        if self.bytes.len() <= l {
            self.bytes.resize_with(l + 1, Series::default);
        }
        self.bytes[l].add(idx, len);
    }

    fn coarsen(&mut self) {
        self.bin_ns *= 10;
        for s in &mut self.bytes {
            s.coarsen(10);
        }
    }

    /// Bins start at `ts` (the file's first packet), whichever packet is counted first.
    fn start(&mut self, ts: u64) {
        if !self.started {
            self.started = true;
            self.origin_ns = ts;
            self.bin_ns = Self::FIRST_BIN_NS;
        }
    }

    /// Widens the bins to `bin_ns` (a power-of-ten multiple of the current width).
    fn coarsen_to(&mut self, bin_ns: u64) {
        while self.started && self.bin_ns < bin_ns {
            self.coarsen();
        }
    }

    /// Adds another timeline's series (same origin and bin width) to line `line`.
    fn merge_series(&mut self, line: LineId, s: Series) {
        if s.bins.is_empty() {
            return;
        }
        let l = line as usize;
        if self.bytes.len() <= l {
            self.bytes.resize_with(l + 1, Series::default);
        }
        for (i, b) in s.bins.into_iter().enumerate() {
            if b != 0 {
                self.bytes[l].add(s.start + i, b);
            }
        }
    }
}

/// What the file says about processes and applications, gathered before the packets are
/// read (apptag writes its final application table at the end of the file).
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub processes: Vec<ProcessInfo>,
    /// The periodic application-record blocks, merged.
    pub table: AppTable,
}

impl Metadata {
    /// Adds application records newer than those added before.
    pub fn add_apps(&mut self, apps: Vec<AppRecord>) {
        self.table.merge(apps);
    }

    pub fn add_process(&mut self, p: ProcessInfo) {
        if !self
            .processes
            .iter()
            .any(|o| o.pid == p.pid && o.start_ns == p.start_ns)
        {
            self.processes.push(p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.table.apps().is_empty()
    }
}

fn canonical(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

/// The aggregation state.
pub struct Aggregator {
    /// Link types of the current section's interfaces, by interface id.
    linktypes: Vec<u16>,
    /// Every interface's link type, over all sections (for the report).
    all_linktypes: Vec<u16>,
    section: u32,
    /// The last statistics block of each (section, interface): counters are cumulative.
    pub interface_stats: FxHashMap<(u32, u32), InterfaceStats>,
    pub lines: Vec<Line>,
    unattributed: [Option<LineId>; 5],
    /// pid -> (process start time, line), several when a pid was reused.
    pid_lines: FxHashMap<u32, Vec<(u64, LineId)>>,
    app_by_name: FxHashMap<String, LineId>,
    sockets: FxHashMap<(u8, u16), Vec<Sock>>,
    local_addrs: FxHashSet<IpAddr>,
    has_process_info: bool,
    attribution_start_ns: u64,
    pub flows: Vec<Flow>,
    pub(crate) flow_index: FxHashMap<FiveTuple, u32>,
    /// The analysis driver's defragmentation figures, set at the end of the run.
    pub defrag: DefragStats,
    /// Socket-table look-ups made (attribution cache misses), for the tests and benches.
    pub socket_lookups: u64,
    pub totals: Counters,
    pub non_ip_packets: u64,
    pub timeline: Timeline,
    pub processes: Vec<ProcessInfo>,
    /// Whether every packet's direction came from the capture rather than a guess.
    pub direction_guessed: u64,
    /// Lines made from the file's metadata (the same in every worker); the rest are made
    /// as traffic needs them.
    static_lines: usize,
    /// The state-vs-time view, when asked for (`apptag report --html`; one worker).
    pub states: Option<super::timeline::StateRecorder>,
}

impl Aggregator {
    pub fn new(meta: Metadata) -> Self {
        let mut agg = Self {
            linktypes: Vec::new(),
            all_linktypes: Vec::new(),
            section: 0,
            interface_stats: FxHashMap::default(),
            lines: Vec::new(),
            unattributed: [None; 5],
            pid_lines: FxHashMap::default(),
            app_by_name: FxHashMap::default(),
            sockets: FxHashMap::default(),
            local_addrs: FxHashSet::default(),
            has_process_info: !meta.is_empty(),
            attribution_start_ns: u64::MAX,
            flows: Vec::new(),
            flow_index: FxHashMap::default(),
            defrag: DefragStats::default(),
            socket_lookups: 0,
            totals: Counters::default(),
            non_ip_packets: 0,
            timeline: Timeline::default(),
            processes: meta.processes.clone(),
            direction_guessed: 0,
            static_lines: 0,
            states: None,
        };
        for app in meta.table.apps() {
            let line = agg.app_line(&app.name, &app.exe, &app.cgroup);
            for &pid in &app.pids {
                agg.bind_pid(pid, app.start_ns, line);
            }
            for s in &app.sockets {
                let pid_line = if s.pid != 0 {
                    agg.bind_pid(s.pid, 0, line)
                } else {
                    line
                };
                let local = canonical(s.local_addr);
                if !local.is_unspecified() {
                    agg.local_addrs.insert(local);
                }
                let remote = canonical(s.remote_addr);
                if s.attributed_ns != 0 {
                    agg.attribution_start_ns = agg.attribution_start_ns.min(s.attributed_ns);
                }
                agg.sockets
                    .entry((s.protocol, s.local_port))
                    .or_default()
                    .push(Sock {
                        local,
                        remote: (!remote.is_unspecified() && s.remote_port != 0)
                            .then_some((remote, s.remote_port)),
                        first_ns: s.first_ns,
                        last_ns: s.last_ns,
                        line: pid_line,
                        pid: s.pid,
                    });
            }
        }
        for p in &meta.processes {
            if agg.pid_line(p.pid, u64::MAX).is_none() {
                let line = agg.app_line(&p.name, &p.exe, &p.cgroup);
                agg.bind_pid(p.pid, p.start_ns, line);
            }
        }
        agg.static_lines = agg.lines.len();
        agg
    }

    /// The time bins start at the file's first packet.
    pub fn origin(&mut self, ts_ns: u64) {
        self.timeline.start(ts_ns);
    }

    /// Merges the aggregations of a sharded run's workers (each saw whole flows; worker
    /// 0 also saw the file's non-packet records). The result reports as one core's would.
    pub fn merge(mut parts: Vec<Aggregator>) -> Aggregator {
        if parts.len() <= 1 {
            return parts
                .pop()
                .unwrap_or_else(|| Aggregator::new(Metadata::default()));
        }
        let mut rest = parts.split_off(1);
        let Some(mut m) = parts.pop() else {
            return Aggregator::new(Metadata::default());
        };
        let mut bin_ns = m.timeline.bin_ns;
        for o in &rest {
            bin_ns = bin_ns.max(o.timeline.bin_ns);
        }
        m.timeline.coarsen_to(bin_ns);
        for o in &mut rest {
            o.timeline.coarsen_to(bin_ns);
            // Lines: those from the metadata are the same everywhere; the others by what
            // they stand for.
            let map: Vec<LineId> = (0..o.lines.len())
                .map(|i| {
                    if i < m.static_lines {
                        return i as LineId;
                    }
                    let kind = &o.lines[i].kind;
                    match m.lines.iter().position(|l| l.kind == *kind) {
                        Some(j) => j as LineId,
                        None => {
                            m.lines.push(Line {
                                kind: kind.clone(),
                                counters: Counters::default(),
                                processes: FxHashMap::default(),
                            });
                            (m.lines.len() - 1) as LineId
                        }
                    }
                })
                .collect();
            let remap = |l: LineId| map.get(l as usize).copied().unwrap_or(l);
            for (i, l) in o.lines.drain(..).enumerate() {
                let Some(t) = m.lines.get_mut(remap(i as LineId) as usize) else {
                    continue;
                };
                t.counters.merge(&l.counters);
                for (pid, c) in l.processes {
                    t.processes.entry(pid).or_default().merge(&c);
                }
                if let (LineKind::App(a), LineKind::App(b)) = (&mut t.kind, &l.kind) {
                    for p in &b.pids {
                        if !a.pids.contains(p) {
                            a.pids.push(*p);
                        }
                    }
                }
            }
            for mut f in o.flows.drain(..) {
                for a in &mut f.accounts {
                    a.line = remap(a.line);
                }
                for (_, l) in &mut f.names {
                    *l = remap(*l);
                }
                m.flow_index.insert(f.key, m.flows.len() as u32);
                m.flows.push(f);
            }
            for (i, s) in std::mem::take(&mut o.timeline.bytes)
                .into_iter()
                .enumerate()
            {
                m.timeline.merge_series(remap(i as LineId), s);
            }
            m.totals.merge(&o.totals);
            m.non_ip_packets += o.non_ip_packets;
            m.direction_guessed += o.direction_guessed;
            m.socket_lookups += o.socket_lookups;
            if m.timeline.bytes.is_empty() && !o.timeline.bytes.is_empty() {
                m.timeline.origin_ns = o.timeline.origin_ns;
            }
        }
        m.flows.sort_by_key(|f| f.first_frame);
        m.flow_index = m
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key, i as u32))
            .collect();
        m
    }

    fn app_line(&mut self, name: &str, exe: &str, cgroup: &str) -> LineId {
        if let Some(&l) = self.app_by_name.get(name) {
            return l;
        }
        let id = self.lines.len() as LineId;
        self.lines.push(Line {
            kind: LineKind::App(AppInfo {
                name: name.to_string(),
                exe: exe.to_string(),
                cgroup: cgroup.to_string(),
                pids: Vec::new(),
            }),
            counters: Counters::default(),
            processes: FxHashMap::default(),
        });
        self.app_by_name.insert(name.to_string(), id);
        id
    }

    fn bind_pid(&mut self, pid: u32, start_ns: u64, line: LineId) -> LineId {
        let v = self.pid_lines.entry(pid).or_default();
        if let Some(&(_, l)) = v.iter().find(|(s, _)| *s == start_ns || start_ns == 0) {
            return l;
        }
        v.push((start_ns, line));
        v.sort_unstable();
        if let Some(Line {
            kind: LineKind::App(a),
            ..
        }) = self.lines.get_mut(line as usize)
            && !a.pids.contains(&pid)
        {
            a.pids.push(pid);
        }
        line
    }

    /// The line of process `pid` at time `ts`: the latest start not after `ts`.
    fn pid_line(&self, pid: u32, ts: u64) -> Option<LineId> {
        let v = self.pid_lines.get(&pid)?;
        v.iter()
            .rev()
            .find(|(s, _)| *s <= ts)
            .or(v.first())
            .map(|&(_, l)| l)
    }

    fn unattributed_line(&mut self, r: Reason) -> LineId {
        let i = Reason::ALL.iter().position(|x| *x == r).unwrap_or(0);
        if let Some(l) = self.unattributed[i] {
            return l;
        }
        let id = self.lines.len() as LineId;
        self.lines.push(Line {
            kind: LineKind::Unattributed(r),
            counters: Counters::default(),
            processes: FxHashMap::default(),
        });
        self.unattributed[i] = Some(id);
        id
    }

    pub fn interface(&mut self, linktype: u16) {
        self.linktypes.push(linktype);
        self.all_linktypes.push(linktype);
    }

    /// A new pcapng section: its interfaces are numbered from 0 again.
    pub fn new_section(&mut self) {
        self.linktypes.clear();
        self.section += 1;
    }

    /// An Interface Statistics Block: the capture's own counters (drops).
    pub fn interface_stats(&mut self, interface: u32, stats: InterfaceStats) {
        self.interface_stats
            .insert((self.section, interface), stats);
    }

    /// Link types of every interface seen, over all sections.
    pub fn all_linktypes(&self) -> &[u16] {
        &self.all_linktypes
    }

    pub fn has_process_info(&self) -> bool {
        self.has_process_info
    }

    /// Accounts a frame that is not IP; returns the line it went to and its pid.
    pub fn non_ip(&mut self, p: &Packet) -> (LineId, u32) {
        self.non_ip_packets += 1;
        let (len, ts) = (u64::from(p.orig_len), p.ts_ns);
        let out = p.direction == Direction::Outbound;
        // A tagged non-IP frame (a process's raw AF_PACKET traffic) is still its own.
        let (line, pid) = match (p.pid, self.pid_line(p.pid, ts)) {
            (0, _) | (_, None) => (self.unattributed_line(Reason::NotIp), 0),
            (pid, Some(line)) => (line, pid),
        };
        self.account_line(line, pid, ts, len, out);
        if let Some(s) = self.states.as_mut() {
            // Frame 0: a non-IP frame carries no credential to find by number.
            s.packet(&Mark {
                frame: 0,
                ts_ns: ts,
                len,
                line,
                pid,
                remote: None,
                flow: None,
                protocol: 0,
                tcp_flags: 0,
                tcp_seq: 0,
                icmp: None,
            });
        }
        (line, pid)
    }

    /// Accounts a whole (unfragmented) IP packet; returns its line and pid (0: none).
    #[inline]
    pub fn whole(&mut self, frame: u64, p: &Packet, d: &Dissected) -> (LineId, u32) {
        self.account(frame, p, d, true)
    }

    /// Accounts fragments whose fate the driver settled: every fragment of a datagram to
    /// the datagram's flow, whichever came first; fragments of a datagram that never
    /// completed on their own headers (a later one joined to its first fragment's flow
    /// when that was seen). `each` is told every fragment's frame, line and pid.
    pub fn settled(&mut self, s: &Settled<'_, '_>, mut each: impl FnMut(u64, LineId, u32)) {
        match s {
            Settled::Datagram {
                datagram,
                fragments,
            } => {
                let n = fragments.len();
                for (i, f) in fragments.iter().enumerate() {
                    let d = Dissected {
                        link_direction: f.header.link_direction,
                        ..**datagram
                    };
                    // The datagram's payload is looked at once, with the fragment that
                    // completed it.
                    let (line, pid) = self.account(f.frame, &f.record, &d, i + 1 == n);
                    each(f.frame, line, pid);
                }
            }
            Settled::Dropped(list) => {
                for f in *list {
                    let (line, pid) = self.account(f.frame, &f.record, &f.header, false);
                    each(f.frame, line, pid);
                }
            }
            Settled::Discarded {
                fragment,
                record,
                frame,
            } => {
                let (line, pid) = self.account(*frame, record, fragment, true);
                each(*frame, line, pid);
            }
        }
    }

    /// Defragmentation figures (every fragment held, reassembled or discarded, by reason).
    pub fn defrag_stats(&self) -> &DefragStats {
        &self.defrag
    }

    /// Kept for callers of the former per-packet path: fragments are settled by the
    /// analysis driver now, so nothing waits here.
    pub fn finish(&mut self) {}

    /// Accounts one packet to the flow of `d` (for a fragment, its datagram's headers).
    /// `inspect`: whether `d`'s payload may be looked at for a service or name (once per
    /// datagram).
    fn account(&mut self, frame: u64, p: &Packet, d: &Dissected, inspect: bool) -> (LineId, u32) {
        let len = u64::from(p.orig_len);
        let ts = p.ts_ns;
        let fi = self.flow_for(d, ts);
        let flow_idx = fi as usize;
        if let Some(f) = self.flows.get_mut(flow_idx)
            && frame < f.first_frame
        {
            f.first_frame = frame;
        }
        // Direction: the capture's flag, else the cooked header's, else known local
        // addresses, else the flow's initiator is taken as this host.
        let decided = match p.direction {
            Direction::Unknown => d.link_direction,
            known => known,
        };
        let (src, dst) = (d.src, d.dst);
        let decided = match decided {
            Direction::Unknown if !self.local_addrs.is_empty() => {
                if self.local_addrs.contains(&src) {
                    Direction::Outbound
                } else if self.local_addrs.contains(&dst) {
                    Direction::Inbound
                } else {
                    Direction::Unknown
                }
            }
            other => other,
        };
        let Some(flow) = self.flows.get(flow_idx) else {
            // Not reached: flow_for always returns an existing flow.
            let line = self.unattributed_line(Reason::NoSocket);
            self.account_line(line, 0, ts, len, false);
            return (line, 0);
        };
        let src_is_a = if flow.key.src != flow.key.dst {
            flow.key.src == Addr::from_ip(src)
        } else {
            !d.has_ports() || d.src_port == flow.key.src_port
        };
        // Both ends on this host (loopback): the capture's flag says nothing about which end
        // is the tagged process; its sockets do. Untagged packets go to the sender's socket.
        let host_local = is_host_local(src, dst);
        let key = AttrKey {
            pid: p.pid,
            src_is_a,
            decided,
            a_known: flow.a_is_local.is_some(),
            local_is_a: flow.local_is_a(),
        };
        let hit = flow
            .attr_cache
            .iter()
            .find(|c| c.key == key && c.from <= ts && ts < c.to)
            .copied();
        let (decided, line, pid) = match hit {
            Some(c) => (c.decided, c.line, c.pid),
            None => {
                let r = self.attribute_packet(p, d, flow_idx, key, host_local, ts);
                let (from, to) = self.attribution_window(p.pid, d, ts);
                if let Some(f) = self.flows.get_mut(flow_idx) {
                    if f.attr_cache.len() >= ATTR_CACHE_PER_FLOW {
                        f.attr_cache.remove(0);
                    }
                    f.attr_cache.push(AttrCache {
                        key,
                        from,
                        to,
                        decided: r.0,
                        line: r.1,
                        pid: r.2,
                    });
                }
                r
            }
        };
        let Some(flow) = self.flows.get_mut(flow_idx) else {
            self.account_line(line, pid, ts, len, decided == Direction::Outbound);
            return (line, pid);
        };
        let out = match decided {
            Direction::Outbound => {
                if !host_local {
                    flow.a_is_local.get_or_insert(src_is_a);
                }
                true
            }
            Direction::Inbound => {
                if !host_local {
                    flow.a_is_local.get_or_insert(!src_is_a);
                }
                false
            }
            Direction::Unknown => {
                self.direction_guessed += 1;
                src_is_a == flow.local_is_a()
            }
        };
        let i = if src_is_a { 0 } else { 1 };
        flow.packets[i] += 1;
        flow.bytes[i] += len;
        if ts < flow.first_ns {
            flow.first_ns = ts;
        }
        if ts > flow.last_ns {
            flow.last_ns = ts;
        }
        let mut name = None;
        if inspect
            && !d.payload.is_empty()
            && (flow.inspected < INSPECT_PACKETS
                || matches!(flow.service, Some("dns")) && flow.names.len() < NAMES_PER_FLOW)
        {
            flow.inspected = flow.inspected.saturating_add(1);
            if let Some(id) = payload::identify(d.protocol, d.src_port, d.dst_port, d.payload) {
                flow.service.get_or_insert(id.protocol);
                name = id.name;
            }
        }
        // A name belongs to the line of the packet that carried it.
        if let Some(n) = name
            && flow.names.len() < NAMES_PER_FLOW
            && !flow.names.iter().any(|(m, l)| *m == n && *l == line)
        {
            flow.names.push((n, line));
        }
        // Which end is this line's: per account, as two local applications share a
        // loopback flow from opposite ends.
        let a_is_local = out == src_is_a;
        match flow
            .accounts
            .iter_mut()
            .find(|acc| acc.line == line && acc.pid == pid)
        {
            Some(acc) => {
                acc.counters.add(ts, len, out);
                if decided != Direction::Unknown {
                    acc.a_is_local.get_or_insert(a_is_local);
                }
            }
            None => {
                let mut counters = Counters::default();
                counters.add(ts, len, out);
                flow.accounts.push(Account {
                    line,
                    pid,
                    counters,
                    a_is_local: (decided != Direction::Unknown).then_some(a_is_local),
                });
            }
        }
        self.account_line(line, pid, ts, len, out);
        if let Some(s) = self.states.as_mut() {
            s.packet(&Mark {
                frame,
                ts_ns: ts,
                len,
                line,
                pid,
                remote: Some(if out { dst } else { src }),
                flow: Some((fi, src_is_a)),
                protocol: d.protocol,
                tcp_flags: d.tcp_flags,
                tcp_seq: d.tcp.seq,
                icmp: d.icmp,
            });
        }
        (line, pid)
    }

    /// The direction, line and pid of a packet, from the process tag and the socket
    /// table.
    fn attribute_packet(
        &mut self,
        p: &Packet,
        d: &Dissected,
        flow_idx: usize,
        key: AttrKey,
        host_local: bool,
        ts: u64,
    ) -> (Direction, LineId, u32) {
        self.socket_lookups += 1;
        let decided = key.decided;
        // Both ends on this host (loopback): the capture's flag says nothing about which
        // end is the tagged process; its sockets do. Untagged packets go to the sender's
        // socket.
        let decided = if host_local {
            match self.pid_end(p.pid, ts, d) {
                Some(dir) => dir,
                None if p.pid == 0 => Direction::Outbound,
                None => decided,
            }
        } else {
            decided
        };
        let prelim_out = match decided {
            Direction::Outbound => true,
            Direction::Inbound => false,
            Direction::Unknown => key.src_is_a == key.local_is_a,
        };
        let (line, pid, sock_local_is_src) =
            self.attribute(p, d, flow_idx, prelim_out, host_local, ts);
        let decided = match (host_local, sock_local_is_src) {
            (true, Some(local_is_src)) => {
                if local_is_src {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                }
            }
            _ => decided,
        };
        (decided, line, pid)
    }

    /// The times around `ts` between which the attribution of a packet of `pid` with
    /// `d`'s ports cannot change: no socket on those ports starts or ends, no process
    /// `pid` starts, attribution does not start.
    fn attribution_window(&self, pid: u32, d: &Dissected, ts: u64) -> (u64, u64) {
        let (mut from, mut to) = (0u64, u64::MAX);
        let mut edge = |t: u64| {
            if t <= ts {
                from = from.max(t);
            } else {
                to = to.min(t);
            }
        };
        if self.attribution_start_ns != u64::MAX {
            edge(self.attribution_start_ns);
        }
        if let Some(v) = self.pid_lines.get(&pid) {
            for &(start, _) in v {
                edge(start);
            }
        }
        if d.has_ports() {
            for port in [d.src_port, d.dst_port] {
                for s in self.sockets.get(&(d.protocol, port)).into_iter().flatten() {
                    if s.first_ns != 0 {
                        edge(s.first_ns);
                    }
                    if s.last_ns != 0 {
                        edge(s.last_ns.saturating_add(1));
                    }
                }
            }
        }
        (from, to)
    }

    /// Which end of a packet the tagged process `pid` is, from its application's sockets.
    fn pid_end(&self, pid: u32, ts: u64, d: &Dissected) -> Option<Direction> {
        if pid == 0 || !d.has_ports() {
            return None;
        }
        let line = self.pid_line(pid, ts)?;
        // The process's own sockets first (client and server can be the same program),
        // then any socket of its application.
        let by_pid = |port: u16| {
            self.sockets
                .get(&(d.protocol, port))
                .is_some_and(|v| v.iter().any(|s| s.pid == pid && s.covers(ts)))
        };
        let by_line = |port: u16| {
            self.sockets
                .get(&(d.protocol, port))
                .is_some_and(|v| v.iter().any(|s| s.line == line && s.covers(ts)))
        };
        for owns in [&by_pid as &dyn Fn(u16) -> bool, &by_line] {
            match (owns(d.src_port), owns(d.dst_port)) {
                (true, false) => return Some(Direction::Outbound),
                (false, true) => return Some(Direction::Inbound),
                _ => {}
            }
        }
        None
    }

    #[inline(always)]
    fn account_line(&mut self, line: LineId, pid: u32, ts: u64, len: u64, out: bool) {
        self.totals.add(ts, len, out);
        if let Some(l) = self.lines.get_mut(line as usize) {
            l.counters.add(ts, len, out);
            if pid != 0 {
                l.processes.entry(pid).or_default().add(ts, len, out);
            }
        }
        self.timeline.add(line, ts, len);
    }

    /// The line (and pid) a packet belongs to.
    #[inline]
    /// The line and pid of a packet, and (when a socket matched) whether the socket's end
    /// is the packet's source.
    #[allow(clippy::too_many_arguments)]
    fn attribute(
        &mut self,
        p: &Packet,
        d: &Dissected,
        flow_idx: usize,
        out: bool,
        host_local: bool,
        ts: u64,
    ) -> (LineId, u32, Option<bool>) {
        if p.pid != 0 {
            let line = match self.pid_line(p.pid, ts) {
                Some(l) => l,
                None => {
                    let name = format!("pid {}", p.pid);
                    let l = self.app_line(&name, "", "");
                    self.bind_pid(p.pid, 0, l)
                }
            };
            return (line, p.pid, None);
        }
        if !self.has_process_info {
            return (self.unattributed_line(Reason::NoProcessInfo), 0, None);
        }
        if d.has_ports() {
            // The local end: known from the direction, else both ends are tried.
            let src = (canonical(d.src), d.src_port);
            let dst = (canonical(d.dst), d.dst_port);
            let candidates = if out { [src, dst] } else { [dst, src] };
            for (i, (local, remote)) in [
                (candidates[0], candidates[1]),
                (candidates[1], candidates[0]),
            ]
            .into_iter()
            .enumerate()
            {
                if i == 1
                    && !host_local
                    && self
                        .flows
                        .get(flow_idx)
                        .is_some_and(|f| f.a_is_local.is_some())
                {
                    break;
                }
                if let Some(m) = self.match_socket(d.protocol, local, remote, ts) {
                    return (m.line, m.pid, Some(local == src));
                }
            }
        }
        let reason = if ts < self.attribution_start_ns && self.attribution_start_ns != u64::MAX {
            Reason::BeforeStart
        } else if !self.local_addrs.is_empty()
            && !self.local_addrs.contains(&canonical(d.src))
            && !self.local_addrs.contains(&canonical(d.dst))
        {
            Reason::NotLocal
        } else {
            Reason::NoSocket
        };
        (self.unattributed_line(reason), 0, None)
    }

    fn match_socket(
        &self,
        protocol: u8,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        ts: u64,
    ) -> Option<SockMatch> {
        let socks = self.sockets.get(&(protocol, local.1))?;
        let mut best: Option<(u8, &Sock)> = None;
        for s in socks {
            if !(s.local.is_unspecified() || s.local == local.0) || !s.covers(ts) {
                continue;
            }
            // An exact remote beats a wildcard (listening or unconnected) socket.
            let score = match s.remote {
                Some(r) if r == remote => 2,
                Some(_) => continue,
                None => 1,
            };
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, s));
            }
        }
        best.map(|(_, s)| SockMatch {
            line: s.line,
            pid: s.pid,
        })
    }

    /// The flow of a packet, created on first sight. Fragments come here with their
    /// datagram's headers (see `Aggregator::fragment`); a later fragment whose datagram
    /// never completed and whose first fragment was not seen has no ports, and goes to its
    /// hosts' portless flow.
    #[inline]
    fn flow_for(&mut self, d: &Dissected, ts: u64) -> u32 {
        let key_from_ports = |src_port, dst_port| {
            FiveTuple {
                src_port,
                dst_port,
                ..d.five_tuple()
            }
            .canonical()
        };
        let (key, src_is_a) = if d.has_ports() {
            key_from_ports(d.src_port, d.dst_port)
        } else {
            key_from_ports(0, 0)
        };
        let idx = match self.flow_index.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.flows.len() as u32;
                // Without a SYN, the end on a service port is taken as the server, so the
                // other end opened the flow; else whoever was seen first.
                let service = |p: u16| p < 1024 || payload::port_name(d.protocol, p).is_some();
                let src_opened = !(d.has_ports() && service(d.src_port) && !service(d.dst_port));
                self.flows.push(Flow {
                    key,
                    a_initiated: src_is_a == src_opened,
                    a_is_local: None,
                    packets: [0; 2],
                    bytes: [0; 2],
                    first_ns: ts,
                    last_ns: ts,
                    first_frame: u64::MAX,
                    service: None,
                    names: Vec::new(),
                    inspected: 0,
                    accounts: Vec::new(),
                    carried: None,
                    attr_cache: Vec::new(),
                });
                self.flow_index.insert(key, i);
                i
            }
        };
        if d.protocol == proto::TCP && d.tcp_flags & 0x12 == 0x02 {
            // A SYN without ACK names the initiator, whatever was seen first.
            if let Some(f) = self.flows.get_mut(idx as usize) {
                f.a_initiated = src_is_a;
            }
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dissect;
    use crate::model::{Provenance, SocketRecord};

    /// One unfragmented frame through the aggregator, as the report's subscriber gives it.
    trait Feed {
        fn packet(&mut self, p: &Packet) -> (LineId, u32);
    }
    impl Feed for Aggregator {
        fn packet(&mut self, p: &Packet) -> (LineId, u32) {
            let d = dissect::dissect(dissect::linktype::ETHERNET, p.data);
            assert_eq!(
                d.fragment,
                dissect::Fragment::Whole,
                "fragments go through the driver"
            );
            if d.is_ip() {
                self.whole(1, p, &d)
            } else {
                self.non_ip(p)
            }
        }
    }

    fn tcp_frame(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend(sp.to_be_bytes());
        f.extend(dp.to_be_bytes());
        f.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    fn packet(data: &[u8], ts: u64, pid: u32, direction: Direction) -> Packet<'_> {
        Packet {
            ts_ns: ts,
            interface: 0,
            orig_len: data.len() as u32 + 100,
            data,
            direction,
            pid,
            tid: pid,
        }
    }

    fn socket(
        local: &str,
        lport: u16,
        remote: &str,
        rport: u16,
        first: u64,
        last: u64,
        pid: u32,
    ) -> SocketRecord {
        SocketRecord {
            local_addr: local.parse().unwrap(),
            local_port: lport,
            remote_addr: remote.parse().unwrap(),
            remote_port: rport,
            protocol: proto::TCP,
            first_ns: first,
            last_ns: last,
            packets_in: 0,
            packets_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            cookie: 0,
            pid,
            provenance: Provenance::SockDiag,
            attributed_ns: 1000,
        }
    }

    fn app(name: &str, pids: &[u32], sockets: Vec<SocketRecord>) -> AppRecord {
        AppRecord {
            name: name.into(),
            pids: pids.to_vec(),
            sockets,
            ..Default::default()
        }
    }

    fn line_of(agg: &Aggregator, name: &str) -> Counters {
        agg.lines
            .iter()
            .find(|l| matches!(&l.kind, LineKind::App(a) if a.name == name))
            .map(|l| l.counters)
            .unwrap_or_default()
    }

    fn unattributed(agg: &Aggregator, r: Reason) -> u64 {
        agg.lines
            .iter()
            .find(|l| l.kind == LineKind::Unattributed(r))
            .map(|l| l.counters.packets())
            .unwrap_or(0)
    }

    #[test]
    fn pid_then_socket_then_reason() {
        let mut meta = Metadata::default();
        meta.add_apps(vec![
            app(
                "curl",
                &[100],
                vec![socket("10.0.0.1", 40000, "192.0.2.9", 443, 2000, 5000, 100)],
            ),
            // A server socket recorded as IPv4-mapped IPv6 and listening on all addresses.
            app(
                "nginx",
                &[200],
                vec![socket("::ffff:0.0.0.0", 8080, "::", 0, 0, 0, 200)],
            ),
        ]);
        let mut agg = Aggregator::new(meta);
        let out = tcp_frame([10, 0, 0, 1], 40000, [192, 0, 2, 9], 443);
        let back = tcp_frame([192, 0, 2, 9], 443, [10, 0, 0, 1], 40000);
        // Tagged by the kernel: pid 100.
        agg.packet(&packet(&out, 2500, 100, Direction::Outbound));
        // Untagged, inside the socket's lifetime: matched by the socket table.
        agg.packet(&packet(&back, 2600, 0, Direction::Inbound));
        // Untagged, after the socket's last packet: no match.
        agg.packet(&packet(&back, 9000, 0, Direction::Inbound));
        // Before attribution started.
        agg.packet(&packet(&back, 500, 0, Direction::Inbound));
        // To the wildcard server socket (IPv4 packet, IPv4-mapped record).
        let to_srv = tcp_frame([198, 51, 100, 7], 51000, [10, 0, 0, 1], 8080);
        agg.packet(&packet(&to_srv, 3000, 0, Direction::Unknown));
        // Neither end is one of this host's addresses.
        let transit = tcp_frame([198, 51, 100, 7], 1, [198, 51, 100, 8], 2);
        agg.packet(&packet(&transit, 3000, 0, Direction::Unknown));
        // ARP: not IP.
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06, 0, 1]);
        agg.packet(&packet(&arp, 3000, 0, Direction::Unknown));

        let curl = line_of(&agg, "curl");
        assert_eq!((curl.packets_out, curl.packets_in), (1, 1));
        assert_eq!(curl.bytes_out, 154);
        let nginx = line_of(&agg, "nginx");
        assert_eq!((nginx.packets_in, nginx.packets_out), (1, 0));
        assert_eq!(unattributed(&agg, Reason::NoSocket), 1);
        assert_eq!(unattributed(&agg, Reason::BeforeStart), 1);
        assert_eq!(unattributed(&agg, Reason::NotLocal), 1);
        assert_eq!(unattributed(&agg, Reason::NotIp), 1);
        assert_eq!(agg.totals.packets(), 7);
        // Per process: the socket's pid gets the matched packet too.
        let curl_line = agg
            .lines
            .iter()
            .find(|l| matches!(&l.kind, LineKind::App(a) if a.name == "curl"))
            .unwrap();
        assert_eq!(curl_line.processes[&100].packets(), 2);
    }

    /// An Ethernet frame with one IPv4 fragment of a TCP segment from 10.0.0.1:40000 to
    /// 192.0.2.9:443 (the first fragment carries the TCP header).
    fn tcp_fragment(offset: u16, more: bool, body: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34];
        ip.extend(((offset / 8) | if more { 0x2000 } else { 0 }).to_be_bytes());
        ip.extend([64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 9]);
        ip.extend(body);
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        let mut sum: u32 = ip[..20]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        f.extend(ip);
        f
    }

    #[test]
    fn fragments_count_to_their_datagram_whatever_arrives_first() {
        use crate::model::InterfaceInfo;
        use crate::pcapng::{SectionInfo, Writer};
        let mut tcp = Vec::new();
        tcp.extend(40000u16.to_be_bytes());
        tcp.extend(443u16.to_be_bytes());
        tcp.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend([b'a'; 4]);
        // Untagged fragments, last first: none has ports but the one that comes last.
        let later2 = tcp_fragment(48, false, &[b'c'; 10]);
        let later1 = tcp_fragment(24, true, &[b'b'; 24]);
        let first = tcp_fragment(0, true, &tcp);
        // A datagram that never completes: counted at the end.
        let mut lone_first = tcp_fragment(0, true, &tcp);
        lone_first[18..20].copy_from_slice(&[0x43, 0x21]); // another IP id
        let sum_at = 14 + 10;
        lone_first[sum_at..sum_at + 2].copy_from_slice(&[0, 0]);
        let mut sum: u32 = lone_first[14..34]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        lone_first[sum_at..sum_at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let mut w = Writer::new(Vec::new(), &SectionInfo::default()).unwrap();
        w.add_interface(&InterfaceInfo {
            name: "eth0".into(),
            linktype: dissect::linktype::ETHERNET,
            snaplen: 65535,
            filter: None,
        })
        .unwrap();
        for (f, ts) in [
            (&later2, 2500),
            (&later1, 2501),
            (&first, 2502),
            (&lone_first, 2600),
        ] {
            w.write_packet(&packet(f, ts, 0, Direction::Outbound))
                .unwrap();
        }
        w.write_app_records(
            &[app(
                "curl",
                &[100],
                vec![socket("10.0.0.1", 40000, "192.0.2.9", 443, 2000, 5000, 100)],
            )],
            true,
        )
        .unwrap();
        let file = w.into_inner().unwrap();
        let mut seen = Vec::new();
        let mut c = crate::report::collect::Collector::new(false)
            .with_hook(Box::new(|frame, line, pid| seen.push((frame, line, pid))));
        let summary = crate::analysis::analyze_bytes(
            &file,
            &crate::analysis::AnalysisConfig::default(),
            &mut c,
        )
        .unwrap();
        let (agg, _) = c.finish();
        let curl_line = agg
            .lines
            .iter()
            .position(|l| matches!(&l.kind, LineKind::App(a) if a.name == "curl"))
            .unwrap() as LineId;
        // Break: counting a fragment when it arrives (its own headers) sends the two
        // later fragments to a portless flow, not to curl's socket.
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=4).map(|f| (f, curl_line, 100)).collect::<Vec<_>>(),
            "every fragment once, to the socket's application"
        );
        assert_eq!(line_of(&agg, "curl").packets_out, 4);
        assert_eq!(agg.totals.packets(), 4);
        assert_eq!(agg.flows.len(), 1, "one flow, with ports: no portless flow");
        assert_eq!(
            agg.flows[0].key.src_port.max(agg.flows[0].key.dst_port),
            40000
        );
        assert_eq!(summary.defrag.datagrams_reassembled, 1);
        assert_eq!(summary.defrag.discarded.incomplete, 1);
    }

    #[test]
    fn a_flow_looks_up_the_socket_table_once_per_window() {
        let mut meta = Metadata::default();
        meta.add_apps(vec![app(
            "curl",
            &[100],
            vec![
                socket("10.0.0.1", 40000, "192.0.2.9", 443, 2000, 5000, 100),
                socket("10.0.0.1", 40000, "192.0.2.9", 443, 6000, 9000, 101),
            ],
        )]);
        let mut agg = Aggregator::new(meta);
        let out = tcp_frame([10, 0, 0, 1], 40000, [192, 0, 2, 9], 443);
        for ts in 2000..2100 {
            agg.packet(&packet(&out, ts, 0, Direction::Outbound));
        }
        // Break: without the per-flow cache every packet looks the socket table up. Twice:
        // the first packet makes the flow's local end known, which is part of the key.
        assert_eq!(agg.socket_lookups, 2);
        // Between the sockets, and in the second one: the answer changes, so it is looked
        // up again, and the second socket's pid gets the packets.
        agg.packet(&packet(&out, 5500, 0, Direction::Outbound));
        for ts in 7000..7010 {
            agg.packet(&packet(&out, ts, 0, Direction::Outbound));
        }
        assert_eq!(agg.socket_lookups, 4);
        let line = agg
            .lines
            .iter()
            .find(|l| matches!(&l.kind, LineKind::App(a) if a.name == "curl"))
            .unwrap();
        assert_eq!(line.processes[&100].packets(), 100);
        assert_eq!(line.processes[&101].packets(), 10);
        assert_eq!(unattributed(&agg, Reason::NoSocket), 1);
    }

    #[test]
    fn loopback_direction_comes_from_the_tagged_process_sockets() {
        let lo = [127, 0, 0, 1];
        let mut meta = Metadata::default();
        meta.add_apps(vec![
            app(
                "curl",
                &[100],
                vec![socket("127.0.0.1", 40000, "127.0.0.1", 8000, 0, 0, 100)],
            ),
            app(
                "server",
                &[200],
                vec![socket("0.0.0.0", 8000, "0.0.0.0", 0, 0, 0, 200)],
            ),
        ]);
        let mut agg = Aggregator::new(meta);
        let req = tcp_frame(lo, 40000, lo, 8000);
        let resp = tcp_frame(lo, 8000, lo, 40000);
        // The loopback capture calls everything inbound; each packet is tagged with its
        // sender.
        agg.packet(&packet(&req, 2000, 100, Direction::Inbound));
        agg.packet(&packet(&resp, 2001, 200, Direction::Inbound));
        // Untagged: the sender's socket takes it.
        agg.packet(&packet(&resp, 2002, 0, Direction::Inbound));
        let curl = line_of(&agg, "curl");
        assert_eq!((curl.packets_out, curl.packets_in), (1, 0));
        let server = line_of(&agg, "server");
        assert_eq!((server.packets_out, server.packets_in), (2, 0));
        // Each application's remote end is the other one's port.
        let flow = &agg.flows[0];
        for acc in &flow.accounts {
            let local_port = if acc.a_is_local == Some(true) {
                flow.key.src_port
            } else {
                flow.key.dst_port
            };
            let name = match &agg.lines[acc.line as usize].kind {
                LineKind::App(a) => a.name.as_str(),
                LineKind::Unattributed(_) => "",
            };
            let want = if name == "curl" { 40000 } else { 8000 };
            assert_eq!(local_port, want, "{name}");
        }
    }

    #[test]
    fn unknown_pid_becomes_its_own_application() {
        let mut agg = Aggregator::new(Metadata::default());
        let f = tcp_frame([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        agg.packet(&packet(&f, 1, 4242, Direction::Outbound));
        assert_eq!(line_of(&agg, "pid 4242").packets_out, 1);
    }

    #[test]
    fn timeline_stays_bounded() {
        let mut t = Timeline::default();
        for i in 0..100_000u64 {
            t.add(0, i * 10_000_000, 1);
            // A short-lived line late in the capture stores only its own bins.
            if i > 99_990 {
                t.add(1, i * 10_000_000, 2);
            }
        }
        // An out-of-order packet before the line's first bin.
        t.add(1, 999_800_000_000, 5);
        assert!(t.bytes[0].end() <= Timeline::MAX_BINS);
        assert_eq!(t.bytes[0].bins.iter().sum::<u64>(), 100_000);
        assert!(t.bytes[1].bins.len() <= 2, "{:?}", t.bytes[1]);
        assert_eq!(t.bytes[1].bins.iter().sum::<u64>(), 9 * 2 + 5);
    }
}
