//! Merge/tag: each packet released by the reorder window is tagged with its socket's process,
//! filtered (--pid/--comm/--cgroup), accounted in the ledger and written.
use super::{PipelineError, SensorConfig, cgroup::CgroupFilter, output::Output, queue::Batch};
use crate::{
    dissect::dissect,
    model::{Direction, Packet, Summary, proto},
    sensor::attribution::{Attributor, ledger::Ledger},
    sensor::capture::Capture,
};

pub(super) struct Merge {
    pub(super) cgroups: CgroupFilter,
    /// What the current file's packets say about their sockets and processes.
    pub(super) ledger: Ledger,
    pub(super) summary: Summary,
    pub(super) linktypes: Vec<u16>,
    pub(super) loopback: Vec<bool>,
}

impl Merge {
    /// Tags and writes packet `i` of batch `b`.
    pub(super) fn write_one(
        &mut self,
        b: &Batch,
        i: usize,
        a: &mut Attributor,
        out: &mut Output,
        captures: &[Capture],
        cfg: &SensorConfig,
    ) -> Result<(), PipelineError> {
        let linktype = self.linktypes.get(b.iface as usize).copied().unwrap_or(1);
        let loopback = self
            .loopback
            .get(b.iface as usize)
            .copied()
            .unwrap_or(false);
        if let Some(&(ts, orig_len, off, len, direction)) = b.pkts.get(i) {
            if out.finished || out.full() || cfg.count.is_some_and(|c| self.summary.written >= c) {
                return Ok(());
            }
            if out.due() {
                let apps = self.ledger.apps();
                // The next file describes only its own packets.
                if let Some(x) = &cfg.export {
                    x.end_of_file(&out.path, &apps, self.ledger.processes());
                }
                self.ledger.clear();
                if !out.rotate(&apps, captures)? {
                    return Ok(());
                }
            }
            self.summary.captured += 1;
            let data = b
                .data
                .get(off as usize..(off + len) as usize)
                .unwrap_or(&[]);
            let dissected = dissect(linktype, data);
            let ends = dissected.ip_five_tuple();
            let lookup_dir = if loopback {
                Direction::Unknown
            } else {
                direction
            };
            let mut tag = ends.and_then(|e| a.tag(&e, lookup_dir, ts));
            let mut quoted_error = false;
            if tag.is_none()
                && ends.is_some_and(|e| e.protocol == proto::ICMP || e.protocol == proto::ICMPV6)
                && let Some(quoted) = dissected.icmp_error_quote().and_then(|q| q.ip_five_tuple())
            {
                // An ICMP error belongs to the socket that sent the datagram it quotes.
                tag = a.table().lookup(&quoted, Direction::Outbound, ts);
                quoted_error = tag.is_some();
            }
            if let Some(t) = &tag {
                let info = a.table().processes().get(t.proc);
                if !cfg.pids.is_empty() && !cfg.pids.contains(&t.pid) {
                    return Ok(());
                }
                if !cfg.comms.is_empty() && !info.is_some_and(|p| cfg.comms.contains(&p.name)) {
                    return Ok(());
                }
                if !cfg.cgroups.is_empty() && !self.cgroups.matches(t.cgroup_id, info, &cfg.cgroups)
                {
                    return Ok(());
                }
                if let Some(p) = info
                    && !out.writer.knows_process(p.pid, p.start_ns)
                {
                    let r = out.writer.write_process(p);
                    out.check(r)?;
                }
                // The socket's counters are its conversation, as tshark's `-z conv` counts
                // it; an ICMP error about it is tagged but not counted there.
                if !quoted_error {
                    // The tagged socket sent this packet if it is the packet's source.
                    let sent = ends
                        .is_some_and(|e| e.src == t.tuple.src && e.src_port == t.tuple.src_port);
                    self.ledger.account(t, ts, orig_len, sent, a.table());
                }
                self.summary.attributed += 1;
            } else if !cfg.pids.is_empty() || !cfg.comms.is_empty() || !cfg.cgroups.is_empty() {
                return Ok(());
            }
            let r = out.writer.write_packet(&Packet {
                ts_ns: ts,
                interface: b.iface,
                orig_len,
                data,
                direction,
                pid: tag.map_or(0, |t| t.pid),
                tid: tag.map_or(0, |t| t.tid),
            });
            out.check(r)?;
            self.summary.written += 1;
            self.summary.bytes += u64::from(orig_len);
        }
        Ok(())
    }
}
