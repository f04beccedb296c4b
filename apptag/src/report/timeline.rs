//! The qcap paper's aggregate state-vs-time view (its Figure 3): one row per application,
//! remote host or process, time in buckets, and in each bucket what the entity did: nothing
//! (quiet), traffic (active), new connections, failed connections or resets, credentials.
//!
//! [`StateRecorder`] is fed by the report's aggregator with every packet it accounts (so a
//! cell's bytes are the report's bytes), and [`StateRecorder::finish`] turns it into a
//! [`StateTimeline`], plain data for the HTML page. Memory is bounded: at most
//! [`MAX_STORED_BUCKETS`] buckets (they widen by ten when the capture outgrows them), at
//! most [`MAX_TRACKED`] rows of each kind (later entities share one "other" row), cells
//! stored only where something happened, and one small mark per flow.
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::aggregate::{Aggregator, LineId, LineKind};
use crate::model::proto;

/// Buckets kept while reading; widened by ten whenever the capture outgrows them.
pub const MAX_STORED_BUCKETS: usize = 1000;
/// The first bucket width: 1 ms.
const FIRST_BUCKET_NS: u64 = 1_000_000;
/// Rows of each kind (application, remote host, process) tracked while reading, in the
/// order first seen; the traffic of any later one goes to that kind's "other" row.
pub const MAX_TRACKED: usize = 1024;

/// What one entity did in one time bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub bytes: u64,
    pub packets: u32,
    /// Connections opened: TCP SYNs (not their retransmissions), first packets of other flows.
    pub new: u16,
    /// TCP resets, ICMP destination-unreachable errors, and SYNs the other end never sent
    /// anything back to (counted in the bucket of the SYN).
    pub failed: u16,
    /// Credentials seen (`apptag creds`), in the bucket of the packet that carried them.
    pub creds: u16,
}

impl Cell {
    fn merge(&mut self, o: &Cell) {
        self.bytes += o.bytes;
        self.packets = self.packets.saturating_add(o.packets);
        self.new = self.new.saturating_add(o.new);
        self.failed = self.failed.saturating_add(o.failed);
        self.creds = self.creds.saturating_add(o.creds);
    }

    /// The state the cell is drawn in: the most telling thing that happened.
    pub fn state(&self) -> State {
        if self.creds > 0 {
            State::Credentials
        } else if self.failed > 0 {
            State::Failed
        } else if self.new > 0 {
            State::New
        } else if self.packets > 0 {
            State::Active
        } else {
            State::Quiet
        }
    }
}

/// A cell's colour in the page, least to most telling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Quiet,
    Active,
    New,
    Failed,
    Credentials,
}

/// The cells of one row where something happened, by bucket number (ascending).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cells(pub Vec<(u32, Cell)>);

impl Cells {
    #[inline]
    fn at(&mut self, bucket: u32) -> &mut Cell {
        let v = &mut self.0;
        // Packets come almost in time order: the last cell, or a new one after it.
        let i = match v.last() {
            Some((b, _)) if *b == bucket => v.len() - 1,
            Some((b, _)) if *b > bucket => match v.binary_search_by_key(&bucket, |(b, _)| *b) {
                Ok(i) => i,
                Err(i) => {
                    v.insert(i, (bucket, Cell::default()));
                    i
                }
            },
            _ => {
                v.push((bucket, Cell::default()));
                v.len() - 1
            }
        };
        &mut v[i].1
    }

    /// Merges groups of `f` buckets.
    fn coarsen(&mut self, f: u32) {
        let mut out: Vec<(u32, Cell)> = Vec::with_capacity(self.0.len() / 2 + 1);
        for (b, c) in &self.0 {
            let nb = b / f;
            match out.last_mut() {
                Some((lb, lc)) if *lb == nb => lc.merge(c),
                _ => out.push((nb, *c)),
            }
        }
        self.0 = out;
    }

    fn merge_all(&mut self, o: &Cells) {
        for (b, c) in &o.0 {
            self.at(*b).merge(c);
        }
    }

    pub fn total(&self) -> Cell {
        let mut t = Cell::default();
        for (_, c) in &self.0 {
            t.merge(c);
        }
        t
    }
}

/// Rows of one kind, keyed by `K`, with a shared row for those past [`MAX_TRACKED`].
struct Rows<K> {
    index: FxHashMap<K, u32>,
    rows: Vec<(K, Cells)>,
    other: Cells,
}

/// Where a flow's SYN went: a row number, or the kind's "other" row.
const OTHER_ROW: u32 = u32::MAX;
const NO_ROW: u32 = u32::MAX - 1;

impl<K: std::hash::Hash + Eq + Copy> Rows<K> {
    fn new() -> Self {
        Self {
            index: FxHashMap::default(),
            rows: Vec::new(),
            other: Cells::default(),
        }
    }

    fn row(&mut self, k: K) -> u32 {
        if let Some(&i) = self.index.get(&k) {
            return i;
        }
        if self.rows.len() >= MAX_TRACKED {
            return OTHER_ROW;
        }
        let i = self.rows.len() as u32;
        self.rows.push((k, Cells::default()));
        self.index.insert(k, i);
        i
    }

    fn cells(&mut self, row: u32) -> Option<&mut Cells> {
        match row {
            NO_ROW => None,
            OTHER_ROW => Some(&mut self.other),
            r => self.rows.get_mut(r as usize).map(|(_, c)| c),
        }
    }

    fn coarsen(&mut self, f: u32) {
        for (_, c) in &mut self.rows {
            c.coarsen(f);
        }
        self.other.coarsen(f);
    }
}

/// The last connection attempt of a TCP flow, to find the ones never answered.
#[derive(Clone, Copy, Default)]
struct FlowMark {
    syn_ns: u64,
    syn_seq: u32,
    app: u32,
    process: u32,
    remote: u32,
    /// Bit 0: a SYN was seen; bit 1: the other end answered; bit 2: the SYN's sender is
    /// end `a` of the flow key.
    bits: u8,
}

const HAS_SYN: u8 = 1;
const ANSWERED: u8 = 2;
const SYN_FROM_A: u8 = 4;

/// One accounted packet, as the aggregator saw it.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    /// Frame number in the file (1-based), to find the credentials it carried.
    pub frame: u64,
    pub ts_ns: u64,
    pub len: u64,
    pub line: LineId,
    /// 0: no process.
    pub pid: u32,
    /// The other end, when the packet is IP.
    pub remote: Option<IpAddr>,
    /// The flow's index in the aggregator and whether the packet's source is end `a`.
    pub flow: Option<(u32, bool)>,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub icmp: Option<(u8, u8)>,
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Gathers the state cells while the report reads the file.
pub struct StateRecorder {
    origin_ns: u64,
    bucket_ns: u64,
    started: bool,
    apps: Rows<LineId>,
    remotes: Rows<IpAddr>,
    processes: Rows<(LineId, u32)>,
    flows: Vec<FlowMark>,
    /// Frames that carried credentials, with how many each; taken when the frame is seen.
    cred_frames: FxHashMap<u64, u16>,
    /// The line each credential's frame went to.
    cred_lines: FxHashMap<u64, LineId>,
}

impl StateRecorder {
    /// `credential_frames`: frame numbers (1-based, file order, as `apptag creds` names
    /// them) that carried a credential, once per credential.
    pub fn new(credential_frames: &[u64]) -> Self {
        let mut cred_frames: FxHashMap<u64, u16> = FxHashMap::default();
        for &f in credential_frames {
            let n = cred_frames.entry(f).or_default();
            *n = n.saturating_add(1);
        }
        Self {
            origin_ns: 0,
            bucket_ns: FIRST_BUCKET_NS,
            started: false,
            apps: Rows::new(),
            remotes: Rows::new(),
            processes: Rows::new(),
            flows: Vec::new(),
            cred_frames,
            cred_lines: FxHashMap::default(),
        }
    }

    fn bucket(&mut self, ts: u64) -> u32 {
        if !self.started {
            self.started = true;
            self.origin_ns = ts;
        }
        loop {
            let idx = ts.saturating_sub(self.origin_ns) / self.bucket_ns;
            if (idx as usize) < MAX_STORED_BUCKETS {
                return idx as u32;
            }
            self.bucket_ns *= 10;
            self.apps.coarsen(10);
            self.remotes.coarsen(10);
            self.processes.coarsen(10);
        }
    }

    /// One packet the report accounted.
    #[inline]
    pub fn packet(&mut self, m: &Mark) {
        let bucket = self.bucket(m.ts_ns);
        let app = self.apps.row(m.line);
        let process = if m.pid != 0 {
            self.processes.row((m.line, m.pid))
        } else {
            NO_ROW
        };
        let remote = m
            .remote
            .map_or(NO_ROW, |r| self.remotes.row(r.to_canonical()));
        let mut cell = Cell {
            bytes: m.len,
            packets: 1,
            ..Cell::default()
        };
        if let Some((fi, src_is_a)) = m.flow {
            let fi = fi as usize;
            let first_packet = fi >= self.flows.len();
            if first_packet {
                self.flows.resize(fi + 1, FlowMark::default());
            }
            let is_tcp = m.protocol == proto::TCP;
            if is_tcp && m.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                let prev = self.flows[fi];
                if prev.bits & HAS_SYN == 0 || prev.syn_seq != m.tcp_seq {
                    if prev.bits & (HAS_SYN | ANSWERED) == HAS_SYN {
                        self.unanswered(&prev);
                    }
                    self.flows[fi] = FlowMark {
                        syn_ns: m.ts_ns,
                        syn_seq: m.tcp_seq,
                        app,
                        process,
                        remote,
                        bits: HAS_SYN | if src_is_a { SYN_FROM_A } else { 0 },
                    };
                    cell.new = 1;
                }
            } else if is_tcp {
                let f = &mut self.flows[fi];
                let from_a = f.bits & SYN_FROM_A != 0;
                // A reset answers too: the refusal is counted once, as the reset.
                if f.bits & HAS_SYN != 0 && from_a != src_is_a {
                    f.bits |= ANSWERED;
                }
            } else if first_packet {
                cell.new = 1;
            }
            if is_tcp && m.tcp_flags & TCP_RST != 0 {
                cell.failed = 1;
            }
        }
        let unreachable = matches!(
            (m.protocol, m.icmp),
            (proto::ICMP, Some((3, _))) | (proto::ICMPV6, Some((1, _)))
        );
        if unreachable {
            cell.failed = cell.failed.saturating_add(1);
        }
        if let Some(n) = self.cred_frames.remove(&m.frame) {
            cell.creds = n;
            self.cred_lines.insert(m.frame, m.line);
        }
        for (rows, row) in [
            (&mut self.apps as &mut dyn CellsOf, app),
            (&mut self.processes, process),
            (&mut self.remotes, remote),
        ] {
            if let Some(c) = rows.cells_of(row) {
                c.at(bucket).merge(&cell);
            }
        }
    }

    /// A SYN that nothing came back for (a reset is counted where it arrives).
    fn unanswered(&mut self, f: &FlowMark) {
        let bucket = (f.syn_ns.saturating_sub(self.origin_ns) / self.bucket_ns)
            .min(MAX_STORED_BUCKETS as u64 - 1) as u32;
        let fail = Cell {
            failed: 1,
            ..Cell::default()
        };
        for (rows, row) in [
            (&mut self.apps as &mut dyn CellsOf, f.app),
            (&mut self.processes, f.process),
            (&mut self.remotes, f.remote),
        ] {
            if let Some(c) = rows.cells_of(row) {
                c.at(bucket).merge(&fail);
            }
        }
    }

    /// The finished view, with names and protocols from the aggregation.
    pub fn finish(mut self, agg: &Aggregator) -> StateTimeline {
        let pending: Vec<FlowMark> = self
            .flows
            .iter()
            .filter(|f| f.bits & (HAS_SYN | ANSWERED) == HAS_SYN)
            .copied()
            .collect();
        for f in &pending {
            self.unanswered(f);
        }
        // Protocols per row, from the flows (the paper lists them beside each entity).
        let mut app_protos: FxHashMap<LineId, FxHashSet<String>> = FxHashMap::default();
        let mut remote_protos: FxHashMap<IpAddr, FxHashSet<String>> = FxHashMap::default();
        let mut remote_apps: FxHashMap<IpAddr, FxHashSet<LineId>> = FxHashMap::default();
        let mut proc_protos: FxHashMap<(LineId, u32), FxHashSet<String>> = FxHashMap::default();
        for f in &agg.flows {
            let service = f.service_label();
            for acc in &f.accounts {
                let remote = if acc.a_is_local.unwrap_or(f.local_is_a()) {
                    f.key.dst.to_ip()
                } else {
                    f.key.src.to_ip()
                }
                .to_canonical();
                add_bounded(app_protos.entry(acc.line).or_default(), &service);
                if self.remotes.index.contains_key(&remote) {
                    add_bounded(remote_protos.entry(remote).or_default(), &service);
                    let apps = remote_apps.entry(remote).or_default();
                    if apps.len() < MAX_LISTED {
                        apps.insert(acc.line);
                    }
                }
                if acc.pid != 0 {
                    add_bounded(
                        proc_protos.entry((acc.line, acc.pid)).or_default(),
                        &service,
                    );
                }
            }
        }
        let line_name = |l: LineId| match agg.lines.get(l as usize).map(|l| &l.kind) {
            Some(LineKind::App(a)) => a.name.clone(),
            Some(LineKind::Unattributed(r)) => format!("(unattributed: {})", r.text()),
            None => String::new(),
        };
        let sorted = |s: Option<&FxHashSet<String>>| {
            let mut v: Vec<String> = s.map(|s| s.iter().cloned().collect()).unwrap_or_default();
            v.sort();
            v
        };
        let apps = self
            .apps
            .rows
            .into_iter()
            .map(|(line, cells)| Row {
                key: format!("app:{line}"),
                label: line_name(line),
                detail: String::new(),
                apps: vec![line_name(line)],
                protocols: sorted(app_protos.get(&line)),
                cells,
            })
            .collect();
        let remotes = self
            .remotes
            .rows
            .into_iter()
            .map(|(addr, cells)| {
                let mut apps: Vec<String> = remote_apps
                    .get(&addr)
                    .map(|s| s.iter().map(|&l| line_name(l)).collect())
                    .unwrap_or_default();
                apps.sort();
                Row {
                    key: format!("remote:{addr}"),
                    label: addr.to_string(),
                    detail: String::new(),
                    apps,
                    protocols: sorted(remote_protos.get(&addr)),
                    cells,
                }
            })
            .collect();
        let processes = self
            .processes
            .rows
            .into_iter()
            .map(|((line, pid), cells)| {
                let info = agg
                    .processes
                    .iter()
                    .filter(|p| p.pid == pid)
                    .max_by_key(|p| p.start_ns);
                let detail = info
                    .map(|p| {
                        if p.cmdline.is_empty() {
                            p.name.clone()
                        } else {
                            p.cmdline.join(" ")
                        }
                    })
                    .unwrap_or_default();
                Row {
                    key: format!("process:{line}:{pid}"),
                    label: format!("pid {pid} ({})", line_name(line)),
                    detail,
                    apps: vec![line_name(line)],
                    protocols: sorted(proc_protos.get(&(line, pid))),
                    cells,
                }
            })
            .collect();
        let other = |cells: Cells, what: &str| {
            (!cells.0.is_empty()).then(|| Row {
                key: format!("other:{what}"),
                label: format!("(other {what})"),
                detail: format!("past the first {MAX_TRACKED} tracked"),
                apps: Vec::new(),
                protocols: Vec::new(),
                cells,
            })
        };
        let mut t = StateTimeline {
            origin_ns: self.origin_ns,
            bucket_ns: self.bucket_ns,
            buckets: 0,
            groups: vec![
                Group {
                    kind: GroupKind::App,
                    rows: apps,
                    other: other(self.apps.other, "applications"),
                },
                Group {
                    kind: GroupKind::Remote,
                    rows: remotes,
                    other: other(self.remotes.other, "remote hosts"),
                },
                Group {
                    kind: GroupKind::Process,
                    rows: processes,
                    other: other(self.processes.other, "processes"),
                },
            ],
            credential_lines: self.cred_lines,
        };
        t.buckets = t
            .groups
            .iter()
            .flat_map(|g| g.rows.iter().chain(g.other.iter()))
            .filter_map(|r| r.cells.0.last().map(|(b, _)| b + 1))
            .max()
            .unwrap_or(0);
        for g in &mut t.groups {
            g.sort();
        }
        t
    }
}

/// Lets the three row kinds be walked together.
trait CellsOf {
    fn cells_of(&mut self, row: u32) -> Option<&mut Cells>;
}

impl<K: std::hash::Hash + Eq + Copy> CellsOf for Rows<K> {
    fn cells_of(&mut self, row: u32) -> Option<&mut Cells> {
        self.cells(row)
    }
}

/// Protocols and applications listed per row.
const MAX_LISTED: usize = 16;

fn add_bounded(set: &mut FxHashSet<String>, s: &str) {
    if set.len() < MAX_LISTED && !set.contains(s) {
        set.insert(s.to_string());
    }
}

/// How the rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    App,
    Remote,
    Process,
}

/// One row: an application, a remote host or a process.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Stable within the file: `app:LINE`, `remote:ADDR`, `process:LINE:PID`, `other:...`.
    pub key: String,
    pub label: String,
    /// A second line (the command line of a process).
    pub detail: String,
    /// The applications the row's traffic belongs to.
    pub apps: Vec<String>,
    pub protocols: Vec<String>,
    pub cells: Cells,
}

impl Row {
    pub fn total(&self) -> Cell {
        self.cells.total()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub kind: GroupKind,
    /// Most bytes first.
    pub rows: Vec<Row>,
    /// The traffic of the rows not kept, summed.
    pub other: Option<Row>,
}

impl Group {
    fn sort(&mut self) {
        let mut keyed: Vec<(u64, Row)> = std::mem::take(&mut self.rows)
            .into_iter()
            .map(|r| (r.total().bytes, r))
            .collect();
        keyed.sort_by(|(a, x), (b, y)| b.cmp(a).then_with(|| x.key.cmp(&y.key)));
        self.rows = keyed.into_iter().map(|(_, r)| r).collect();
    }
}

/// The state-vs-time view of a capture.
#[derive(Clone, Debug, Serialize)]
pub struct StateTimeline {
    /// Start of bucket 0 (the first packet's time).
    pub origin_ns: u64,
    pub bucket_ns: u64,
    /// Buckets from the first packet to the last.
    pub buckets: u32,
    /// Applications, remote hosts, processes.
    pub groups: Vec<Group>,
    /// The application (report line) of each credential's frame.
    #[serde(skip)]
    pub credential_lines: FxHashMap<u64, LineId>,
}

impl StateTimeline {
    pub fn group(&self, kind: GroupKind) -> Option<&Group> {
        self.groups.iter().find(|g| g.kind == kind)
    }

    /// The same view with at most `max_buckets` buckets (merged by 1, 2, 5, 10, 20...) and
    /// at most `max_rows` rows per group, the rest summed into the group's "other" row.
    pub fn bounded(&self, max_buckets: usize, max_rows: usize) -> StateTimeline {
        let max_buckets = max_buckets.max(1) as u32;
        let mut factor = 1u32;
        let mut decade = 1u32;
        let steps = [2u32, 5, 10];
        let mut i = 0;
        while self.buckets.div_ceil(factor) > max_buckets {
            factor = steps[i % 3] * decade;
            i += 1;
            if i % 3 == 0 {
                decade = decade.saturating_mul(10);
            }
        }
        let mut groups = Vec::new();
        for g in &self.groups {
            let mut rows: Vec<Row> = g
                .rows
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.cells.coarsen(factor);
                    r
                })
                .collect();
            let mut other = g.other.clone().map(|mut o| {
                o.cells.coarsen(factor);
                o
            });
            if rows.len() > max_rows {
                let what = match g.kind {
                    GroupKind::App => "applications",
                    GroupKind::Remote => "remote hosts",
                    GroupKind::Process => "processes",
                };
                let rest = rows.split_off(max_rows);
                let o = other.get_or_insert_with(|| Row {
                    key: format!("other:{what}"),
                    label: format!("(other {what})"),
                    detail: String::new(),
                    apps: Vec::new(),
                    protocols: Vec::new(),
                    cells: Cells::default(),
                });
                o.detail = format!("{} more, summed", rest.len());
                for r in &rest {
                    o.cells.merge_all(&r.cells);
                }
            }
            groups.push(Group {
                kind: g.kind,
                rows,
                other,
            });
        }
        StateTimeline {
            origin_ns: self.origin_ns,
            bucket_ns: self.bucket_ns * u64::from(factor),
            buckets: self.buckets.div_ceil(factor),
            groups,
            credential_lines: self.credential_lines.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(ts_ns: u64, flags: u8, seq: u32, src_is_a: bool) -> Mark {
        Mark {
            frame: 0,
            ts_ns,
            len: 60,
            line: 0,
            pid: 7,
            remote: Some("192.0.2.1".parse().unwrap()),
            flow: Some((0, src_is_a)),
            protocol: proto::TCP,
            tcp_flags: flags,
            tcp_seq: seq,
            icmp: None,
        }
    }

    fn app_cells(t: &StateTimeline) -> Vec<(u32, Cell)> {
        t.group(GroupKind::App).unwrap().rows[0].cells.0.clone()
    }

    #[test]
    fn syn_retransmissions_are_one_attempt_and_an_unanswered_one_fails() {
        let mut r = StateRecorder::new(&[]);
        r.packet(&mark(0, TCP_SYN, 100, true));
        r.packet(&mark(1_000_000, TCP_SYN, 100, true));
        r.packet(&mark(3_000_000, TCP_SYN, 100, true));
        let t = r.finish(&Aggregator::new(Default::default()));
        let c = app_cells(&t);
        assert_eq!(c[0].1.new, 1, "the first SYN opens; {c:?}");
        assert_eq!(c[0].1.failed, 1, "never answered: failed at the SYN");
        assert_eq!(c.iter().map(|(_, c)| c.new).sum::<u16>(), 1);
        assert_eq!(c.iter().map(|(_, c)| c.packets).sum::<u32>(), 3);
    }

    #[test]
    fn a_refused_connection_fails_once() {
        let mut r = StateRecorder::new(&[]);
        r.packet(&mark(0, TCP_SYN, 100, true));
        r.packet(&mark(1_000, TCP_RST | TCP_ACK, 0, false));
        let t = r.finish(&Aggregator::new(Default::default()));
        let c = app_cells(&t);
        assert_eq!((c[0].1.new, c[0].1.failed), (1, 1), "{c:?}");
    }

    #[test]
    fn answered_syn_is_new_and_a_reset_fails_where_it_arrives() {
        let mut r = StateRecorder::new(&[5]);
        r.packet(&mark(0, TCP_SYN, 100, true));
        r.packet(&mark(1_000, TCP_SYN | TCP_ACK, 900, false));
        let mut m = mark(5_000_000, TCP_RST, 101, true);
        m.frame = 5;
        r.packet(&m);
        let t = r.finish(&Aggregator::new(Default::default()));
        let c = app_cells(&t);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[0].1.new, c[0].1.failed), (1, 0));
        assert_eq!((c[1].0, c[1].1.failed, c[1].1.creds), (5, 1, 1));
        assert_eq!(c[1].1.state(), State::Credentials);
        assert_eq!(c[0].1.state(), State::New);
        // The process and remote rows saw the same.
        for k in [GroupKind::Process, GroupKind::Remote] {
            assert_eq!(t.group(k).unwrap().rows[0].cells.0, c, "{k:?}");
        }
    }

    #[test]
    fn buckets_and_rows_stay_bounded() {
        let mut r = StateRecorder::new(&[]);
        for i in 0..20_000u64 {
            let mut m = mark(i * 7_000_000, TCP_ACK, 0, true);
            m.remote = Some(std::net::IpAddr::from((i as u32).to_be_bytes()));
            m.flow = Some((i as u32, true));
            r.packet(&m);
        }
        assert!(r.bucket_ns > FIRST_BUCKET_NS);
        let t = r.finish(&Aggregator::new(Default::default()));
        assert!(t.buckets as usize <= MAX_STORED_BUCKETS, "{}", t.buckets);
        let remotes = t.group(GroupKind::Remote).unwrap();
        assert_eq!(remotes.rows.len(), MAX_TRACKED);
        let other = remotes.other.as_ref().expect("an other row");
        let all: u32 = remotes
            .rows
            .iter()
            .chain(std::iter::once(other))
            .map(|r| r.total().packets)
            .sum();
        assert_eq!(all, 20_000, "every packet in some row");
        let b = t.bounded(100, 10);
        assert!(b.buckets <= 100);
        let rb = b.group(GroupKind::Remote).unwrap();
        assert_eq!(rb.rows.len(), 10);
        let all: u32 = rb
            .rows
            .iter()
            .chain(rb.other.iter())
            .map(|r| r.total().packets)
            .sum();
        assert_eq!(all, 20_000, "bounding keeps every packet");
        assert!(
            rb.rows.iter().chain(rb.other.iter()).all(|r| r
                .cells
                .0
                .iter()
                .all(|(b2, _)| *b2 < b.buckets))
        );
    }
}
