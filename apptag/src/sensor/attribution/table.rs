//! The socket table: socket cookie -> what the socket is and which task used it when, and
//! the indexes that take a packet's 5-tuple to its socket in O(1).
//!
//! Every index entry carries the time it became true, so a port reused by another process
//! later never inherits the old tag: a packet is matched to the newest socket that existed
//! at the packet's time.
// Looked up for every packet: FxHash is several times faster than SipHash on these small
// fixed-size keys, and the keys are not attacker-chosen in a way that matters here (an
// attacker controls at most the remote half of a tuple).
use rustc_hash::FxHashMap as HashMap;

use apptag_common::{SockEvent, kind};
use serde::Serialize;

use super::{
    flow::{Addr, FiveTuple, LocalKey},
    process::{ProcKey, ProcessTable},
    sockdiag::DiagSocket,
};
use crate::{
    model::{Direction, Provenance, proto},
    sys::BootClock,
};

/// Packets may be stamped slightly before the kernel event that describes their socket
/// (ingress packets are captured before the socket layer sees them).
const EARLY_SLACK_NS: u64 = 200_000_000;
/// A closed socket still owns packets to its bound address for this long (late datagrams,
/// the tail of an accepted connection matched through its listener's port).
const CLOSE_GRACE_NS: u64 = 5_000_000_000;
/// A closed socket keeps its exact 5-tuple until a newer socket takes the tuple or the
/// table forgets it: the kernel sends FIN retransmissions, TIME_WAIT ACKs and RSTs for data
/// arriving after close (up to tcp_fin_timeout and TIME_WAIT, 60 s each, later) and they
/// belong to the socket's last user. A 5-tuple cannot be reused meanwhile without a new
/// socket's events, which make that socket the newest on the tuple.
const TUPLE_CLOSE_GRACE_NS: u64 = u64::MAX;
/// At most this many successive users are remembered per socket.
const MAX_OWNERS: usize = 16;
/// Default cap of the socket table (`--max-sockets`): far above what a busy server keeps
/// open plus two minutes of closed sockets, and a few hundred MB at most.
pub const DEFAULT_MAX_SOCKETS: usize = 262_144;
/// Default cap of the process table (`--max-processes`).
pub const DEFAULT_MAX_PROCESSES: usize = 65_536;

/// How many entries a table may hold, and how many it gave up to stay there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_sockets: usize,
    pub max_processes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sockets: DEFAULT_MAX_SOCKETS,
            max_processes: DEFAULT_MAX_PROCESSES,
        }
    }
}

/// Entries evicted because a cap was reached (not the normal forgetting of closed sockets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    pub sockets: u64,
    pub processes: u64,
}

/// A task that used a socket, from `since_ns` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub since_ns: u64,
    #[serde(skip)]
    pub proc: ProcKey,
    pub provenance: Provenance,
}

/// A socket's life as the hooks saw it, ns since the epoch (None: not seen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketLife {
    /// When the socket appeared (its creation, or when apptag first heard of it).
    pub created_ns: u64,
    pub bound_ns: Option<u64>,
    /// connect(), or its TCP connection established.
    pub connected_ns: Option<u64>,
    pub first_send_ns: Option<u64>,
    pub first_recv_ns: Option<u64>,
    pub closed_ns: Option<u64>,
}

/// What the table knows about one socket.
#[derive(Clone, Debug, Serialize)]
pub struct SockInfo {
    pub cookie: u64,
    pub family: u16,
    pub protocol: u8,
    pub local: Addr,
    pub local_port: u16,
    pub remote: Addr,
    pub remote_port: u16,
    #[serde(flatten)]
    pub life: SocketLife,
    /// Successive users, oldest first.
    pub owners: Vec<Owner>,
    /// A TCP socket that listened (its accepted children inherit its owner until used).
    pub listening: bool,
}

impl SockInfo {
    fn new(cookie: u64, ts: u64) -> Self {
        Self {
            cookie,
            family: 0,
            protocol: 0,
            local: Addr::UNSPECIFIED,
            local_port: 0,
            remote: Addr::UNSPECIFIED,
            remote_port: 0,
            life: SocketLife {
                created_ns: ts,
                ..SocketLife::default()
            },
            owners: Vec::new(),
            listening: false,
        }
    }

    /// The user at `ts`: the latest that started using it by then, else the first one
    /// (an inbound packet can arrive before its receiver's recv()).
    pub fn owner_at(&self, ts: u64) -> Option<&Owner> {
        self.owners
            .iter()
            .rev()
            .find(|o| o.since_ns <= ts)
            .or_else(|| self.owners.first())
    }

    fn alive_at(&self, ts: u64, grace_ns: u64) -> bool {
        self.life
            .closed_ns
            .is_none_or(|c| c.saturating_add(grace_ns) >= ts)
    }
}

/// The answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub pid: u32,
    pub tid: u32,
    pub cookie: u64,
    pub proc: ProcKey,
    /// cgroup v2 id of the task (0 when only /proc named it).
    pub cgroup_id: u64,
    pub provenance: Provenance,
    /// The tuple as seen from the tagged socket: source = its local end.
    pub tuple: FiveTuple,
}

type Timeline = Vec<(u64, u64)>;

pub struct SocketTable {
    socks: HashMap<u64, SockInfo>,
    tuples: HashMap<FiveTuple, Timeline>,
    locals: HashMap<LocalKey, Timeline>,
    procs: ProcessTable,
    clock: BootClock,
    /// Cookies that got their first owner since the last `take_newly_attributed`.
    fresh: Vec<u64>,
    limits: Limits,
    evictions: Evictions,
}

impl SocketTable {
    pub fn new(clock: BootClock) -> Self {
        Self::with_prefetch(clock, super::process::Prefetch::default())
    }

    /// A table whose process look-ups first consult what the event thread read from /proc.
    pub fn with_prefetch(clock: BootClock, prefetch: super::process::Prefetch) -> Self {
        Self {
            socks: HashMap::default(),
            tuples: HashMap::default(),
            locals: HashMap::default(),
            procs: ProcessTable::with_prefetch(clock, prefetch),
            clock,
            fresh: Vec::new(),
            limits: Limits::default(),
            evictions: Evictions::default(),
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// Keeps the tables within their caps. Over the socket cap, in this order: sockets that
    /// never showed an inet family (the send/recv tracepoints see every socket; no packet
    /// is ever looked up in them), sockets closed more than `RECENT_NS` ago (closed longest
    /// ago first), open sockets (created first first), and last the recently closed ones,
    /// whose last packets may still wait in the merge window. Over the process cap,
    /// processes no socket names go first, then the oldest. Evicts down to 7/8 of the cap,
    /// so that the sort is paid once per many sockets, not once per new one.
    pub fn enforce_limits(&mut self) {
        // Five merge delays: the packets of a socket closed longer ago are all tagged.
        const RECENT_NS: u64 = 500_000_000;
        let max = self.limits.max_sockets.max(1);
        if self.socks.len() > max {
            let keep = max - max / 8;
            let recent = crate::sys::now_ns().saturating_sub(RECENT_NS);
            let mut order: Vec<(u8, u64, u64)> = self
                .socks
                .values()
                .map(|s| match s.life.closed_ns {
                    _ if s.family == 0 => (0, s.life.created_ns, s.cookie),
                    Some(c) if c < recent => (1, c, s.cookie),
                    None => (2, s.life.created_ns, s.cookie),
                    Some(c) => (3, c, s.cookie),
                })
                .collect();
            order.sort_unstable();
            let n = self.socks.len() - keep;
            let dead: Vec<u64> = order.iter().take(n).map(|e| e.2).collect();
            self.evictions.sockets += dead.len() as u64;
            self.remove(&dead);
        }
        let max = self.limits.max_processes.max(1);
        if self.procs.len() > max {
            let keep = max - max / 8;
            let live = self.live_processes();
            let n = self.procs.len() - keep;
            self.evictions.processes += self.procs.evict_oldest(n, |k| live.contains(&k)) as u64;
        }
    }

    fn live_processes(&self) -> std::collections::HashSet<ProcKey> {
        self.socks
            .values()
            .flat_map(|s| s.owners.iter().map(|o| o.proc))
            .collect()
    }

    /// Forgets these sockets and their index entries.
    fn remove(&mut self, dead: &[u64]) {
        for c in dead {
            self.socks.remove(c);
        }
        let socks = &self.socks;
        self.tuples.retain(|_, tl| {
            tl.retain(|(_, c)| socks.contains_key(c));
            !tl.is_empty()
        });
        self.locals.retain(|_, tl| {
            tl.retain(|(_, c)| socks.contains_key(c));
            !tl.is_empty()
        });
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.procs
    }

    pub fn socket(&self, cookie: u64) -> Option<&SockInfo> {
        self.socks.get(&cookie)
    }

    pub fn sockets(&self) -> impl Iterator<Item = &SockInfo> {
        self.socks.values()
    }

    /// Sockets whose owner became known since the last call, in that order.
    pub fn take_newly_attributed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.fresh)
    }

    /// Applies one kernel event.
    pub fn apply(&mut self, ev: &SockEvent) {
        if ev.cookie == 0 {
            return;
        }
        let ts = self.clock.to_epoch_ns(ev.ts_ns);
        let s = self
            .socks
            .entry(ev.cookie)
            .or_insert_with(|| SockInfo::new(ev.cookie, ts));
        if ev.family != 0 {
            s.family = ev.family;
        }
        if ev.protocol != 0 && ev.protocol <= 255 {
            s.protocol = ev.protocol as u8;
        }
        let local = Addr::from_kernel(ev.family, &ev.local_addr);
        let remote = Addr::from_kernel(ev.family, &ev.remote_addr);
        let mut index_tuple = None;
        let mut index_local = false;
        match ev.kind {
            kind::SEND => {
                s.life.first_send_ns.get_or_insert(ts);
            }
            kind::RECV => {
                s.life.first_recv_ns.get_or_insert(ts);
            }
            kind::BIND => {
                s.life.bound_ns.get_or_insert(ts);
                s.local = local;
                s.local_port = ev.local_port;
                index_local = true;
            }
            kind::CONNECT => {
                s.life.connected_ns.get_or_insert(ts);
                s.remote = remote;
                s.remote_port = ev.remote_port;
            }
            kind::ESTABLISHED | kind::FLOW => {
                if ev.kind == kind::ESTABLISHED {
                    s.life.connected_ns.get_or_insert(ts);
                }
                let t = FiveTuple {
                    src: local,
                    src_port: ev.local_port,
                    dst: remote,
                    dst_port: ev.remote_port,
                    protocol: ev.protocol as u8,
                };
                if s.local_port == 0 || ev.kind == kind::ESTABLISHED {
                    s.local = local;
                    s.local_port = ev.local_port;
                }
                if s.remote_port == 0 || ev.kind == kind::ESTABLISHED {
                    s.remote = remote;
                    s.remote_port = ev.remote_port;
                }
                index_tuple = Some(t);
            }
            kind::CLOSE => s.life.closed_ns = Some(ts),
            _ => {}
        }
        // A close is done by whoever holds the last fd, not necessarily the socket's user.
        if ev.task_valid == 1 && ev.kind != kind::CLOSE {
            // A send or receive is stamped when its syscall began, which can be before an
            // event of another task that the ring delivered first: keep owners in time
            // order, so the owner at a packet's time is found whatever the arrival order.
            let pos = s.owners.partition_point(|o| o.since_ns <= ts);
            let before = pos.checked_sub(1).and_then(|i| s.owners.get(i));
            // A task seeded from sock_diag or /proc that a hook now sees is recorded
            // again, so its provenance says a probe confirmed it.
            let same = before.is_some_and(|o| {
                o.pid == ev.pid && o.tid == ev.tid && matches!(o.provenance, Provenance::Hook(_))
            });
            if !same {
                let comm = comm_str(&ev.comm);
                let proc = self.procs.observe(ev.pid, &comm, ts);
                if s.owners.is_empty() {
                    self.fresh.push(ev.cookie);
                }
                let mut pos = pos;
                if s.owners.len() >= MAX_OWNERS {
                    s.owners.remove(1);
                    if pos > 1 {
                        pos -= 1;
                    }
                }
                s.owners.insert(
                    pos,
                    Owner {
                        pid: ev.pid,
                        tid: ev.tid,
                        uid: ev.uid,
                        cgroup_id: ev.cgroup_id,
                        since_ns: ts,
                        proc,
                        provenance: Provenance::Hook(ev.hook),
                    },
                );
            }
        }
        let protocol = s.protocol;
        let key = LocalKey {
            addr: s.local,
            port: s.local_port,
            protocol,
        };
        if index_local && key.port != 0 {
            push(self.locals.entry(key).or_default(), ts, ev.cookie);
        }
        if let Some(t) = index_tuple {
            push(self.tuples.entry(t).or_default(), ts, ev.cookie);
        }
    }

    /// Adds a socket found in the kernel's socket table (sock_diag) with the pid that holds
    /// it (from /proc/PID/fd), unless the probes already know it.
    pub fn apply_diag(
        &mut self,
        d: &DiagSocket,
        pid: Option<u32>,
        now_ns: u64,
        provenance: Provenance,
    ) {
        if d.cookie == 0 {
            return;
        }
        let known = self
            .socks
            .get(&d.cookie)
            .is_some_and(|s| !s.owners.is_empty());
        if known {
            return;
        }
        let s = self
            .socks
            .entry(d.cookie)
            .or_insert_with(|| SockInfo::new(d.cookie, now_ns));
        s.family = d.family;
        s.protocol = d.tuple.protocol;
        s.local = d.tuple.src;
        s.local_port = d.tuple.src_port;
        s.remote = d.tuple.dst;
        s.remote_port = d.tuple.dst_port;
        s.listening = d.tuple.protocol == proto::TCP && d.state == apptag_common::TCP_LISTEN;
        if let Some(pid) = pid {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let proc = self.procs.observe(pid, comm.trim(), now_ns);
            self.fresh.push(d.cookie);
            s.owners.push(Owner {
                pid,
                tid: pid,
                uid: d.uid,
                cgroup_id: 0,
                // Held before we looked: valid for everything we capture.
                since_ns: 0,
                proc,
                provenance,
            });
        }
        let cookie = d.cookie;
        // Seeded sockets existed before anything we capture: index them from time 0.
        if d.tuple.dst_port != 0 || !d.tuple.dst.is_unspecified() {
            push(self.tuples.entry(d.tuple).or_default(), 0, cookie);
        } else if d.tuple.src_port != 0 {
            let k = LocalKey::of_sender(&d.tuple);
            push(self.locals.entry(k).or_default(), 0, cookie);
        }
    }

    /// Finds the socket and task behind a packet. `dir` is the capture's direction: the
    /// socket at the local end of that direction is tried first (with its bound address and
    /// wildcard fallbacks), then the exact 5-tuple of the other end, which is also local
    /// when traffic runs between network namespaces of this host. With `Unknown` (loopback)
    /// the sender is tried first, then the receiver.
    pub fn lookup(&self, ends: &FiveTuple, dir: Direction, ts: u64) -> Option<Tag> {
        let (sender, receiver) = (*ends, ends.reversed());
        match dir {
            Direction::Outbound => self
                .lookup_tuple(&sender, ts)
                .or_else(|| self.lookup_exact(&receiver, ts)),
            Direction::Inbound => self
                .lookup_tuple(&receiver, ts)
                .or_else(|| self.lookup_exact(&sender, ts)),
            Direction::Unknown => self
                .lookup_tuple(&sender, ts)
                .or_else(|| self.lookup_tuple(&receiver, ts)),
        }
    }

    /// Only the exact 5-tuple: a bound-address match on the far end of a packet would name
    /// a local socket for a remote host's port.
    fn lookup_exact(&self, t: &FiveTuple, ts: u64) -> Option<Tag> {
        let cookie = self.pick(self.tuples.get(t), ts, TUPLE_CLOSE_GRACE_NS)?;
        self.tag_for(cookie, t, ts)
    }

    /// Looks up one orientation: exact 5-tuple, then the bound local address, then the
    /// wildcard address on the same port.
    pub fn lookup_tuple(&self, t: &FiveTuple, ts: u64) -> Option<Tag> {
        let local = LocalKey::of_sender(t);
        let cookie = self
            .pick(self.tuples.get(t), ts, TUPLE_CLOSE_GRACE_NS)
            .or_else(|| self.pick(self.locals.get(&local), ts, CLOSE_GRACE_NS))
            .or_else(|| self.pick(self.locals.get(&local.wildcard()), ts, CLOSE_GRACE_NS))?;
        self.tag_for(cookie, t, ts)
    }

    fn tag_for(&self, cookie: u64, t: &FiveTuple, ts: u64) -> Option<Tag> {
        let local = LocalKey::of_sender(t);
        let sock = self.socks.get(&cookie)?;
        let owner = match sock.owner_at(ts) {
            Some(o) => *o,
            // An accepted TCP socket before its process first reads or writes: the process
            // that listens on this port is the one that accepts it.
            None => self.listener_owner(&local, ts)?,
        };
        Some(Tag {
            pid: owner.pid,
            tid: owner.tid,
            cookie,
            proc: owner.proc,
            cgroup_id: owner.cgroup_id,
            provenance: owner.provenance,
            tuple: *t,
        })
    }

    fn listener_owner(&self, local: &LocalKey, ts: u64) -> Option<Owner> {
        if local.protocol != proto::TCP {
            return None;
        }
        let cookie = self
            .pick(self.locals.get(local), ts, CLOSE_GRACE_NS)
            .or_else(|| self.pick(self.locals.get(&local.wildcard()), ts, CLOSE_GRACE_NS))?;
        self.socks.get(&cookie)?.owner_at(ts).copied()
    }

    /// The socket an index entry list names at `ts`: the newest one that existed by then
    /// and was not closed more than `grace_ns` before; else one that appeared just after
    /// (early packet).
    fn pick(&self, timeline: Option<&Timeline>, ts: u64, grace_ns: u64) -> Option<u64> {
        let tl = timeline?;
        if let Some(&(_, cookie)) = tl.iter().rev().find(|(since, _)| *since <= ts)
            && self
                .socks
                .get(&cookie)
                .is_some_and(|s| s.alive_at(ts, grace_ns))
        {
            return Some(cookie);
        }
        tl.iter()
            .find(|(since, _)| *since > ts && *since <= ts.saturating_add(EARLY_SLACK_NS))
            .map(|&(_, c)| c)
    }

    /// Forgets sockets closed more than `keep_ns` before `now_ns`, and their index entries.
    /// Also forgets sockets that never showed an inet family for that long: the send/recv
    /// tracepoints report every socket (unix, netlink...), and those never get a close event
    /// from the inet-only release hook, so a long-running sensor would otherwise grow
    /// without bound.
    pub fn gc(&mut self, now_ns: u64, keep_ns: u64) -> usize {
        let cutoff = now_ns.saturating_sub(keep_ns);
        let dead: Vec<u64> = self
            .socks
            .values()
            .filter(|s| {
                s.life.closed_ns.is_some_and(|c| c < cutoff)
                    || (s.family == 0 && s.life.created_ns < cutoff)
            })
            .map(|s| s.cookie)
            .collect();
        if dead.is_empty() {
            return 0;
        }
        self.remove(&dead);
        // Processes no remaining socket names are gone for good: the merge keeps its own
        // copy of every process it wrote.
        let live = self.live_processes();
        self.procs.retain(|k| live.contains(&k));
        dead.len()
    }
}

fn push(tl: &mut Timeline, ts: u64, cookie: u64) {
    if tl.last().is_some_and(|&(_, c)| c == cookie) {
        return;
    }
    // Events can arrive slightly out of order across CPUs: keep the timeline sorted.
    let pos = tl.partition_point(|&(t, _)| t <= ts);
    tl.insert(pos, (ts, cookie));
}

pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use apptag_common::{AF_INET, hook};

    fn ev(kind: u32, cookie: u64, pid: u32, ts: u64) -> SockEvent {
        let mut e = SockEvent::zeroed();
        e.kind = kind;
        e.cookie = cookie;
        e.pid = pid;
        e.tid = pid;
        e.ts_ns = ts;
        e.family = AF_INET;
        e.protocol = u16::from(proto::UDP);
        e.task_valid = 1;
        e.hook = hook::POST_BIND4;
        e.comm[..4].copy_from_slice(b"test");
        e.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.local_port = 5000;
        e
    }

    fn ends(ts_port: u16) -> FiveTuple {
        FiveTuple {
            src: Addr::from_v4([127, 0, 0, 1]),
            src_port: 5000,
            dst: Addr::from_v4([127, 0, 0, 9]),
            dst_port: ts_port,
            protocol: proto::UDP,
        }
    }

    #[test]
    fn over_the_socket_cap_closed_sockets_go_first_then_the_oldest() {
        let clock = BootClock::new();
        let mut t = SocketTable::new(clock);
        t.set_limits(Limits {
            max_sockets: 16,
            max_processes: 1000,
        });
        let s = 10_000_000_000u64;
        // 20 sockets, each of its own pid (4_000_000_000 + i: no such process, so /proc
        // is not read); the five last created are closed.
        for i in 0..20u64 {
            let mut e = ev(kind::BIND, 100 + i, 4_000_000_000 + i as u32, s + i * 1000);
            e.local_port = 6000 + i as u16;
            t.apply(&e);
        }
        for i in 15..20u64 {
            let mut e = ev(kind::CLOSE, 100 + i, 4_000_000_000 + i as u32, s + 50_000);
            e.local_port = 6000 + i as u16;
            t.apply(&e);
        }
        // A unix socket the send tracepoint saw (no inet family), created last.
        let mut unix = ev(kind::SEND, 99, 4_000_000_099, s + 60_000);
        unix.family = 0;
        t.apply(&unix);
        assert_eq!(t.len(), 21);
        t.enforce_limits();
        // Down to 14 (7/8 of 16): the non-inet one, the five closed ones, then the oldest
        // open one.
        assert_eq!(t.len(), 14);
        assert_eq!(t.evictions().sockets, 7);
        assert!(t.socket(99).is_none(), "the non-inet socket kept");
        for i in 15..20 {
            assert!(t.socket(100 + i).is_none(), "closed socket {i} kept");
        }
        assert!(t.socket(100).is_none(), "the oldest open socket kept");
        assert!(t.socket(101).is_some() && t.socket(114).is_some());
        // The index entries went with them: the evicted socket's port finds nothing.
        let mut gone = ends(9);
        gone.src_port = 6000;
        assert!(t.lookup_tuple(&gone, clock.to_epoch_ns(s + 1)).is_none());
        // Under the cap nothing more goes.
        t.enforce_limits();
        assert_eq!(t.evictions().sockets, 7);
    }

    #[test]
    fn over_the_process_cap_processes_without_sockets_go_first() {
        let clock = BootClock::new();
        let mut t = SocketTable::new(clock);
        t.set_limits(Limits {
            max_sockets: 1000,
            max_processes: 8,
        });
        let s = 10_000_000_000u64;
        for i in 0..10u64 {
            let mut e = ev(kind::BIND, 200 + i, 4_000_000_000 + i as u32, s + i * 1000);
            e.local_port = 7000 + i as u16;
            t.apply(&e);
        }
        assert_eq!(t.processes().len(), 10);
        t.enforce_limits();
        // 7 kept (7/8 of 8): all have sockets, so the oldest three go.
        assert_eq!(t.processes().len(), 7);
        assert_eq!(t.evictions().processes, 3);
        assert!(t.processes().at(4_000_000_000, u64::MAX).is_none());
        assert!(t.processes().at(4_000_000_009, u64::MAX).is_some());
    }

    #[test]
    fn port_reuse_does_not_inherit_the_old_tag() {
        // Clock offset 0 would make epoch == boot time; use a table and boot-relative
        // stamps, and query with converted times.
        let clock = BootClock::new();
        let mut t = SocketTable::new(clock);
        let s = 10_000_000_000u64;
        t.apply(&ev(kind::BIND, 1, 4_000_000_101, s));
        let mut close = ev(kind::CLOSE, 1, 4_000_000_101, s + 1_000_000_000);
        close.task_valid = 0;
        t.apply(&close);
        // Second process binds the same port 10 s later.
        t.apply(&ev(kind::BIND, 2, 4_000_000_102, s + 10_000_000_000));
        let at = |boot: u64| clock.to_epoch_ns(boot);
        let old = t
            .lookup(&ends(53), Direction::Outbound, at(s + 500_000_000))
            .unwrap();
        assert_eq!(old.pid, 4_000_000_101);
        let new = t
            .lookup(&ends(53), Direction::Outbound, at(s + 11_000_000_000))
            .unwrap();
        assert_eq!(new.pid, 4_000_000_102);
        // Between the two, long after the first closed: nobody.
        assert!(
            t.lookup(&ends(53), Direction::Outbound, at(s + 8_000_000_000))
                .is_none()
        );
    }

    #[test]
    fn gc_drops_closed_and_non_inet_sockets_but_keeps_live_ones() {
        let clock = BootClock::new();
        let mut t = SocketTable::new(clock);
        t.apply(&ev(kind::BIND, 1, 4_000_000_104, 1_000));
        let mut unix = ev(kind::SEND, 2, 4_000_000_104, 1_000);
        unix.family = 0;
        unix.protocol = 0;
        t.apply(&unix);
        let mut close = ev(kind::CLOSE, 3, 4_000_000_104, 1_000);
        close.task_valid = 0;
        t.apply(&ev(kind::BIND, 3, 4_000_000_104, 900));
        t.apply(&close);
        let later = clock.to_epoch_ns(1_000) + 200_000_000_000;
        assert_eq!(t.gc(later, 120_000_000_000), 2);
        assert!(t.socket(1).is_some(), "a live inet socket is kept");
        assert!(t.socket(2).is_none() && t.socket(3).is_none());
    }

    /// A send's packet is captured before `sock_send_length` fires at the end of the
    /// send, so the packet is stamped before the event that names its sender is emitted.
    /// The event carries the time the send began, and the ring can deliver it before or
    /// after an event of the previous user stamped earlier: whatever the order the table
    /// applies them in, each packet gets the task that was sending at its time.
    #[test]
    fn packet_stamped_before_its_senders_event_gets_that_sender() {
        let clock = BootClock::new();
        let s = 10_000_000_000u64;
        let (parent, child) = (4_000_000_201, 4_000_000_202);
        let bind = ev(kind::BIND, 1, parent, s);
        // The parent's last send began at s+50us, the child's first at s+100us; the
        // child's packet is stamped at s+150us, before its event was emitted (s+200us).
        let mut parent_send = ev(kind::SEND, 1, parent, s + 50_000);
        parent_send.hook = hook::SEND_LENGTH;
        let mut child_send = ev(kind::SEND, 1, child, s + 100_000);
        child_send.hook = hook::SEND_LENGTH;
        let at = |boot: u64| clock.to_epoch_ns(boot);
        for order in [
            [&bind, &parent_send, &child_send],
            [&bind, &child_send, &parent_send],
            [&child_send, &bind, &parent_send],
        ] {
            let mut t = SocketTable::new(clock);
            for e in order {
                t.apply(e);
            }
            let pid_at = |boot: u64| {
                t.lookup(&ends(53), Direction::Outbound, at(boot))
                    .map(|tag| tag.pid)
            };
            assert_eq!(pid_at(s + 150_000), Some(child), "the child's first packet");
            assert_eq!(pid_at(s + 60_000), Some(parent), "the parent's last packet");
            assert_eq!(pid_at(s + 10_000), Some(parent), "before any send");
        }
    }

    #[test]
    fn mapped_socket_matches_v4_packet() {
        let clock = BootClock::new();
        let mut t = SocketTable::new(clock);
        let mut e = ev(kind::BIND, 7, 4_000_000_103, 1_000);
        e.family = apptag_common::AF_INET6;
        e.local_addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
        t.apply(&e);
        let tag = t.lookup(&ends(53), Direction::Outbound, clock.to_epoch_ns(2_000));
        assert_eq!(tag.map(|t| t.pid), Some(4_000_000_103));
    }
}
