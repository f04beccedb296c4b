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
/// A closed socket still owns the tail of its connection (FIN, last ACKs) for this long.
const CLOSE_GRACE_NS: u64 = 5_000_000_000;
/// At most this many successive users are remembered per socket.
const MAX_OWNERS: usize = 16;

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

    fn alive_at(&self, ts: u64) -> bool {
        self.life
            .closed_ns
            .is_none_or(|c| c.saturating_add(CLOSE_GRACE_NS) >= ts)
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
        }
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
            let last = s.owners.last();
            if last.is_none_or(|o| o.pid != ev.pid || o.tid != ev.tid) {
                let comm = comm_str(&ev.comm);
                let proc = self.procs.observe(ev.pid, &comm, ts);
                if s.owners.is_empty() {
                    self.fresh.push(ev.cookie);
                }
                if s.owners.len() >= MAX_OWNERS {
                    s.owners.remove(1);
                }
                s.owners.push(Owner {
                    pid: ev.pid,
                    tid: ev.tid,
                    uid: ev.uid,
                    cgroup_id: ev.cgroup_id,
                    since_ns: ts,
                    proc,
                    provenance: Provenance::Hook(ev.hook),
                });
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
        let cookie = self.pick(self.tuples.get(t), ts)?;
        self.tag_for(cookie, t, ts)
    }

    /// Looks up one orientation: exact 5-tuple, then the bound local address, then the
    /// wildcard address on the same port.
    pub fn lookup_tuple(&self, t: &FiveTuple, ts: u64) -> Option<Tag> {
        let local = LocalKey::of_sender(t);
        let cookie = self
            .pick(self.tuples.get(t), ts)
            .or_else(|| self.pick(self.locals.get(&local), ts))
            .or_else(|| self.pick(self.locals.get(&local.wildcard()), ts))?;
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
            .pick(self.locals.get(local), ts)
            .or_else(|| self.pick(self.locals.get(&local.wildcard()), ts))?;
        self.socks.get(&cookie)?.owner_at(ts).copied()
    }

    /// The socket an index entry list names at `ts`: the newest one that existed by then
    /// and was not long closed; else one that appeared just after (early packet).
    fn pick(&self, timeline: Option<&Timeline>, ts: u64) -> Option<u64> {
        let tl = timeline?;
        if let Some(&(_, cookie)) = tl.iter().rev().find(|(since, _)| *since <= ts)
            && self.socks.get(&cookie).is_some_and(|s| s.alive_at(ts))
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
        for c in &dead {
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
        // Processes no remaining socket names are gone for good: the merge keeps its own
        // copy of every process it wrote.
        let live: std::collections::HashSet<ProcKey> = self
            .socks
            .values()
            .flat_map(|s| s.owners.iter().map(|o| o.proc))
            .collect();
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
