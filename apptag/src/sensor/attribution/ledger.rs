//! The ledger of one capture file: per socket what was seen on it (a [`SocketRecord`]) and
//! which process it belongs to, grouped into [`AppRecord`]s for the file's application
//! blocks and the exporter. Built from the [`SocketTable`] as packets are tagged.
use std::collections::HashMap;

use super::{Tag, process::ProcKey, procfs::INODE_COOKIE_BIT, table::SocketTable};
use crate::model::{AppRecord, ProcessInfo, SocketRecord};

#[derive(Default)]
pub struct Ledger {
    /// Per socket cookie: what was seen on it, and which process it belongs to.
    sockets: HashMap<u64, (SocketRecord, ProcKey)>,
    /// The processes those sockets belong to, copied when first seen: the attribution
    /// tables forget exited processes, the file's records must not.
    procs: HashMap<ProcKey, ProcessInfo>,
}

impl Ledger {
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
        let mut by_app: HashMap<(String, String), AppRecord> = HashMap::new();
        for (rec, proc) in self.sockets.values() {
            let info = self.procs.get(proc);
            let name = info.map_or_else(|| format!("pid {}", proc.pid), |p| p.name.clone());
            let exe = info.map(|p| p.exe.clone()).unwrap_or_default();
            let app = by_app
                .entry((name.clone(), exe.clone()))
                .or_insert_with(|| AppRecord {
                    name,
                    exe,
                    cmdline: info.map(|p| p.cmdline.clone()).unwrap_or_default(),
                    start_ns: info.map_or(0, |p| p.start_ns),
                    uid: info.map_or(0, |p| p.uid),
                    cgroup: info.map(|p| p.cgroup.clone()).unwrap_or_default(),
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
        apps.sort_by(|a, b| a.name.cmp(&b.name).then(a.exe.cmp(&b.exe)));
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
