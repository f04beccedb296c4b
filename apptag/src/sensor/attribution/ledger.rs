//! The ledger of one capture file: per socket what was seen on it (a [`SocketRecord`]) and
//! which process it belongs to, grouped into [`AppRecord`]s for the file's application
//! blocks and the exporter. Built from the [`SocketTable`] as packets are tagged.
use std::collections::HashMap;

use super::{Tag, process::ProcKey, procfs::INODE_COOKIE_BIT, table::SocketTable};
use crate::model::{AppRecord, ProcessInfo, SocketRecord};

pub struct Ledger {
    /// At most this many sockets (`--max-sockets`); beyond, the least recently used are
    /// evicted once written.
    max_sockets: usize,
    /// Sockets evicted because of `max_sockets`.
    evicted: u64,
    /// Per socket cookie: what was seen on it, and which process it belongs to.
    sockets: HashMap<u64, (SocketRecord, ProcKey)>,
    /// The processes those sockets belong to, copied when first seen: the attribution
    /// tables forget exited processes, the file's records must not.
    procs: HashMap<ProcKey, ProcessInfo>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(super::table::DEFAULT_MAX_SOCKETS)
    }
}

impl Ledger {
    pub fn new(max_sockets: usize) -> Self {
        Self {
            max_sockets: max_sockets.max(1),
            evicted: 0,
            sockets: HashMap::new(),
            procs: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Sockets evicted because of the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// To be called right after every socket's current record was written (a periodic
    /// block): removes the sockets no later packet can be tagged with (the socket table
    /// forgot them: closed two minutes ago, or evicted there), and, over the cap, the ones
    /// with the oldest last packet (counted). Readers merge the periodic blocks, so the file
    /// loses nothing. Returns what left (as a ledger of its own), for the exporter and the
    /// writer's change tracker.
    pub fn retire(&mut self, table: &SocketTable) -> Ledger {
        let mut gone: Vec<u64> = self
            .sockets
            .keys()
            .filter(|c| table.socket(**c).is_none())
            .copied()
            .collect();
        let left = self.sockets.len() - gone.len();
        if left > self.max_sockets {
            let keep = self.max_sockets - self.max_sockets / 8;
            let mut by_age: Vec<(u64, u64)> = self
                .sockets
                .iter()
                .filter(|(c, _)| table.socket(**c).is_some())
                .map(|(c, (r, _))| (r.last_ns, *c))
                .collect();
            by_age.sort_unstable();
            let n = left - keep;
            gone.extend(by_age.iter().take(n).map(|e| e.1));
            self.evicted += n as u64;
        }
        let mut out = Ledger::new(usize::MAX);
        if gone.is_empty() {
            return out;
        }
        for c in gone {
            if let Some(e) = self.sockets.remove(&c) {
                out.sockets.insert(c, e);
            }
        }
        for (_, p) in out.sockets.values() {
            if let Some(info) = self.procs.get(p) {
                out.procs.insert(*p, info.clone());
            }
        }
        let used: std::collections::HashSet<ProcKey> =
            self.sockets.values().map(|(_, p)| *p).collect();
        self.procs.retain(|k, _| used.contains(k));
        out
    }

    /// Whether a socket still in the ledger belongs to process `p`.
    pub fn has_process(&self, p: &ProcessInfo) -> bool {
        self.procs.contains_key(&ProcKey {
            pid: p.pid,
            start_ns: p.start_ns,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The processes of the sockets accounted so far.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.procs.values()
    }

    /// Forgets everything: the next file describes only its own packets.
    pub fn clear(&mut self) {
        self.sockets.clear();
        self.procs.clear();
    }

    /// Counts one packet of `len` bytes at `ts` on the socket of tag `t`; `sent` when the
    /// socket sent it.
    pub fn account(&mut self, t: &Tag, ts: u64, len: u32, sent: bool, table: &SocketTable) {
        if !self.procs.contains_key(&t.proc)
            && let Some(p) = table.processes().get(t.proc)
        {
            self.procs.insert(t.proc, p.clone());
        }
        let (rec, _) = self.sockets.entry(t.cookie).or_insert_with(|| {
            let owner = table.socket(t.cookie).and_then(|s| s.owner_at(ts).copied());
            (
                SocketRecord {
                    local_addr: t.tuple.src.to_ip(),
                    local_port: t.tuple.src_port,
                    remote_addr: t.tuple.dst.to_ip(),
                    remote_port: t.tuple.dst_port,
                    protocol: t.tuple.protocol,
                    first_ns: ts,
                    last_ns: ts,
                    packets_in: 0,
                    packets_out: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    cookie: t.cookie & !INODE_COOKIE_BIT,
                    pid: t.pid,
                    provenance: t.provenance,
                    attributed_ns: owner.map_or(0, |o| o.since_ns),
                },
                t.proc,
            )
        });
        rec.first_ns = rec.first_ns.min(ts);
        rec.last_ns = rec.last_ns.max(ts);
        if sent {
            rec.packets_out += 1;
            rec.bytes_out += u64::from(len);
        } else {
            rec.packets_in += 1;
            rec.bytes_in += u64::from(len);
        }
    }

    /// Groups sockets by process into application records.
    pub fn apps(&self) -> Vec<AppRecord> {
        // Keyed as readers key applications (name, exe, uid, cgroup): grouped by less, an
        // application's uid or cgroup would be whichever socket came first, and a socket
        // could be written under two keys from one block to the next.
        let mut by_app: HashMap<(String, String, u32, String), AppRecord> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let info = self.procs.get(proc);
            let name = info.map_or_else(|| format!("pid {}", proc.pid), |p| p.name.clone());
            let exe = info.map(|p| p.exe.clone()).unwrap_or_default();
            let uid = info.map_or(0, |p| p.uid);
            let cgroup = info.map(|p| p.cgroup.clone()).unwrap_or_default();
            let app = by_app
                .entry((name.clone(), exe.clone(), uid, cgroup.clone()))
                .or_insert_with(|| AppRecord {
                    name,
                    exe,
                    cmdline: info.map(|p| p.cmdline.clone()).unwrap_or_default(),
                    start_ns: info.map_or(0, |p| p.start_ns),
                    uid,
                    cgroup,
                    provenance: rec.provenance,
                    ..AppRecord::default()
                });
            if !app.pids.contains(&proc.pid) {
                app.pids.push(proc.pid);
            }
            app.sockets.push(rec.clone());
        }
        let mut apps: Vec<AppRecord> = by_app.into_values().collect();
        for a in &mut apps {
            a.pids.sort_unstable();
            a.sockets.sort_by_key(|s| (s.first_ns, s.cookie));
        }
        apps.sort_by(|a, b| {
            (&a.name, &a.exe, a.uid, &a.cgroup).cmp(&(&b.name, &b.exe, b.uid, &b.cgroup))
        });
        apps
    }

    /// (name, bytes) of the `n` busiest applications, for the status line.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut m: HashMap<String, u64> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let name = self
                .procs
                .get(proc)
                .map_or_else(|| proc.pid.to_string(), |p| p.name.clone());
            *m.entry(name).or_default() += rec.bytes_in + rec.bytes_out;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Provenance, proto};
    use crate::sensor::attribution::{Addr, FiveTuple};
    use apptag_common::{AF_INET, SockEvent, kind};

    fn bind(t: &mut SocketTable, cookie: u64, port: u16) {
        let mut e = SockEvent::zeroed();
        e.kind = kind::BIND;
        e.cookie = cookie;
        // No such process: /proc is not read.
        e.pid = 4_000_000_000;
        e.tid = e.pid;
        e.ts_ns = 10_000_000_000;
        e.family = AF_INET;
        e.protocol = u16::from(proto::UDP);
        e.task_valid = 1;
        e.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.local_port = port;
        t.apply(&e);
    }

    fn tag(cookie: u64, port: u16) -> Tag {
        Tag {
            pid: 4_000_000_000,
            tid: 4_000_000_000,
            cookie,
            proc: ProcKey {
                pid: 4_000_000_000,
                start_ns: 1,
            },
            cgroup_id: 0,
            provenance: Provenance::Procfs,
            tuple: FiveTuple {
                src: Addr::from_v4([127, 0, 0, 1]),
                src_port: port,
                dst: Addr::from_v4([127, 0, 0, 9]),
                dst_port: 53,
                protocol: proto::UDP,
            },
        }
    }

    #[test]
    fn sockets_the_table_forgot_leave_and_the_cap_evicts_the_least_recent() {
        let mut table = SocketTable::new(crate::sys::BootClock::new());
        let mut l = Ledger::new(8);
        for c in 1..=12u64 {
            // Sockets 1-3 were never (or no longer) in the table: forgotten.
            if c > 3 {
                bind(&mut table, c, 5000 + c as u16);
            }
            l.account(&tag(c, 5000 + c as u16), 1000 + c, 100, true, &table);
        }
        assert_eq!(l.len(), 12);
        let gone = l.retire(&table);
        // 1-3 because the table forgot them; the 9 left are over the cap of 8, so down to 7
        // (7/8 of 8): the two with the oldest last packet, 4 and 5.
        let mut cookies: Vec<u64> = gone
            .apps()
            .iter()
            .flat_map(|a| a.sockets.iter().map(|s| s.cookie))
            .collect();
        cookies.sort_unstable();
        assert_eq!(cookies, vec![1, 2, 3, 4, 5]);
        assert_eq!(l.len(), 7);
        assert_eq!(l.evicted(), 2, "only cap evictions are counted");
        // What left kept its counts, and nothing is retired twice.
        assert!(gone.apps()[0].sockets.iter().all(|s| s.bytes_out == 100));
        assert!(l.retire(&table).is_empty());
        assert_eq!(l.evicted(), 2);
    }
}
