//! Live export from the sensor, off the packet path: the writer thread hands its periodic
//! application tables to a bounded channel (never waiting), and a tokio runtime on a thread
//! of its own turns them into records and sends them. Per remote target: batches, reconnect
//! with exponential backoff, and a bounded on-disk spool that is replayed in order (also
//! by the next run) once the collector is back.
use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{ExportError, FlowRecord, Target, offline::file_label, sink::Sender};
use crate::model::{AppRecord, ProcessInfo};

/// Table updates the channel holds; one more is dropped (and counted), and the next update
/// carries the same totals, so nothing but timeliness is lost.
const UPDATE_QUEUE: usize = 16;
/// Batches a remote target keeps in memory before they go to the spool.
const MEMORY_BATCHES: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long the exporter keeps trying at the end of a capture before it spools the rest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What the user asked for (`--export`, `--export-interval`, `--spool-dir`, `--spool-max`).
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub targets: Vec<Target>,
    pub host: String,
    /// A flow with news is reported at most this long after them (interim records), and
    /// finally when its capture file ends.
    pub interval: Duration,
    pub spool_dir: Option<PathBuf>,
    /// Bytes the spool of one target may hold; beyond, new batches are dropped and counted.
    pub spool_max: u64,
    /// Records per batch sent.
    pub batch_records: usize,
}

/// What was exported, counted in records.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Delivered to a target (first try or replay).
    pub exported: AtomicU64,
    /// Written to the spool because the target was unreachable or behind.
    pub spooled: AtomicU64,
    /// Delivered from the spool.
    pub replayed: AtomicU64,
    /// Lost: the spool was full (or there is none and memory was full).
    pub dropped: AtomicU64,
    /// Table updates the channel had no room for (later updates carry their totals).
    pub updates_dropped: AtomicU64,
    /// Records handed to the targets (one per target), for [`ExportHandle::settle`].
    made: AtomicU64,
    /// Table updates sent to the exporter and not yet turned into records.
    pending_updates: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub exported: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub dropped: u64,
    pub updates_dropped: u64,
}

impl ExportCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            exported: g(&self.exported),
            spooled: g(&self.spooled),
            replayed: g(&self.replayed),
            dropped: g(&self.dropped),
            updates_dropped: g(&self.updates_dropped),
        }
    }

    /// Every table handed over is now records, and every record reached its target or was
    /// dropped: none waits in memory or in the spool.
    fn settled(&self) -> bool {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = self.snapshot();
        g(&self.pending_updates) == 0
            && c.replayed >= c.spooled
            && (c.exported + c.spooled + c.dropped).saturating_sub(c.replayed) >= g(&self.made)
    }
}

impl CountersSnapshot {
    /// The counters as the capture file's statistics carry them (an ISB `opt_comment`, see
    /// docs/FORMAT.md): `apptag-export: exported=N spooled=N replayed=N dropped-spool-full=N`.
    pub fn isb_comment(&self) -> String {
        format!(
            "apptag-export: exported={} spooled={} replayed={} dropped-spool-full={}",
            self.exported, self.spooled, self.replayed, self.dropped
        )
    }
}

enum Update {
    Table {
        file: String,
        apps: Vec<AppRecord>,
        procs: Vec<ProcessInfo>,
        kind: TableKind,
    },
}

/// What a table update says about its flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TableKind {
    /// Totals so far of the file's flows.
    Periodic,
    /// These flows are over and left the sensor's memory: their records are final.
    Retired,
    /// The file ended: every flow of it is final.
    EndOfFile,
}

/// The writer thread's side: cheap to clone, never blocks on the network.
#[derive(Clone)]
pub struct ExportHandle {
    tx: mpsc::Sender<Update>,
    counters: Arc<ExportCounters>,
}

impl std::fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportHandle")
    }
}

fn table<'a>(
    file: &Path,
    apps: &[AppRecord],
    procs: impl Iterator<Item = &'a ProcessInfo>,
    kind: TableKind,
) -> Update {
    Update::Table {
        file: file_label(file),
        apps: apps.to_vec(),
        procs: procs.cloned().collect(),
        kind,
    }
}

impl ExportHandle {
    /// A periodic table of capture file `file`. Dropped (and counted) if the exporter is
    /// behind.
    pub fn table<'a>(
        &self,
        file: &Path,
        apps: &[AppRecord],
        procs: impl Iterator<Item = &'a ProcessInfo>,
    ) {
        self.counters
            .pending_updates
            .fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .try_send(table(file, apps, procs, TableKind::Periodic))
            .is_err()
        {
            self.counters
                .pending_updates
                .fetch_sub(1, Ordering::Relaxed);
            self.counters
                .updates_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The final table of capture file `file`. Waits for room in the channel: the consumer
    /// only turns tables into records (the network is further on), so the wait is short.
    pub fn end_of_file<'a>(
        &self,
        file: &Path,
        apps: &[AppRecord],
        procs: impl Iterator<Item = &'a ProcessInfo>,
    ) {
        self.must_send(table(file, apps, procs, TableKind::EndOfFile));
    }

    /// Sockets of capture file `file` that are over and left the sensor's memory (see
    /// `Ledger::retire`): their records are final now, as at the end of the file. Waits
    /// for room like [`Self::end_of_file`].
    pub fn retired<'a>(
        &self,
        file: &Path,
        apps: &[AppRecord],
        procs: impl Iterator<Item = &'a ProcessInfo>,
    ) {
        self.must_send(table(file, apps, procs, TableKind::Retired));
    }

    fn must_send(&self, u: Update) {
        self.counters
            .pending_updates
            .fetch_add(1, Ordering::Relaxed);
        if self.tx.blocking_send(u).is_err() {
            self.counters
                .pending_updates
                .fetch_sub(1, Ordering::Relaxed);
            self.counters
                .updates_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// Waits (at most `timeout`) until everything handed over so far has reached its targets,
    /// then returns the counters. For the end of a capture, when nothing else waits.
    pub fn settle(&self, timeout: Duration) -> CountersSnapshot {
        let until = Instant::now() + timeout;
        while !self.counters.settled() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.counters.snapshot()
    }
}

/// The running exporter: its thread, runtime and counters.
pub struct Exporter {
    handle: Option<ExportHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<ExportCounters>,
}

impl Exporter {
    pub fn start(cfg: LiveConfig) -> Result<Self, ExportError> {
        if let Some(d) = &cfg.spool_dir {
            std::fs::create_dir_all(d).map_err(|source| ExportError::Io {
                path: d.display().to_string(),
                source,
            })?;
        }
        let rt = super::sink::runtime()?;
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        let counters = Arc::new(ExportCounters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("apptag-export".into())
            .spawn(move || rt.block_on(run(cfg, rx, c)))
            .map_err(ExportError::Runtime)?;
        Ok(Self {
            handle: Some(ExportHandle {
                tx,
                counters: counters.clone(),
            }),
            thread: Some(thread),
            counters,
        })
    }

    pub fn handle(&self) -> Option<ExportHandle> {
        self.handle.clone()
    }

    /// Ends the export: what is queued is sent (for at most [`DRAIN_TIMEOUT`] more), the
    /// rest spooled. Returns the counters.
    pub fn finish(mut self) -> CountersSnapshot {
        self.handle = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.counters.snapshot()
    }
}

/// Per flow: how far it was reported.
struct FlowState {
    file: String,
    sequence: u32,
    last_sent: Instant,
    sent_packets: Option<u64>,
    pending: Option<FlowRecord>,
}

/// Turns tables into records: interim ones when a flow's news is `interval` old, final
/// ones at the end of its file.
struct Flows {
    host: String,
    interval: Duration,
    states: HashMap<String, FlowState>,
}

impl Flows {
    fn table(
        &mut self,
        file: &str,
        apps: &[AppRecord],
        procs: &[ProcessInfo],
        kind: TableKind,
        now: Instant,
        out: &mut Vec<FlowRecord>,
    ) {
        let end_of_file = kind != TableKind::Periodic;
        let procs: HashMap<u32, &ProcessInfo> = procs.iter().map(|p| (p.pid, p)).collect();
        for app in apps {
            for s in &app.sockets {
                let mut rec = FlowRecord::new(&self.host, file, app, s, procs.get(&s.pid).copied());
                let id = rec.flow_id();
                let st = self.states.entry(id.clone()).or_insert_with(|| FlowState {
                    file: file.to_string(),
                    sequence: 0,
                    last_sent: now,
                    sent_packets: None,
                    pending: None,
                });
                if end_of_file {
                    rec.sequence = st.sequence;
                    rec.final_record = true;
                    rec.made_ns = crate::sys::now_ns();
                    out.push(rec);
                    if kind == TableKind::Retired {
                        self.states.remove(&id);
                    }
                } else if st.sent_packets != Some(s.packets_in + s.packets_out) {
                    st.pending = Some(rec);
                }
            }
        }
        if kind == TableKind::EndOfFile {
            self.states.retain(|_, st| st.file != file);
        }
    }

    fn due(&mut self, now: Instant, out: &mut Vec<FlowRecord>) {
        for st in self.states.values_mut() {
            if now.duration_since(st.last_sent) < self.interval {
                continue;
            }
            if let Some(mut rec) = st.pending.take() {
                rec.sequence = st.sequence;
                rec.final_record = false;
                rec.made_ns = crate::sys::now_ns();
                st.sequence += 1;
                st.last_sent = now;
                st.sent_packets = Some(rec.socket.packets_in + rec.socket.packets_out);
                out.push(rec);
            }
        }
    }
}

type Batch = Vec<Value>;

/// Batches waiting on disk, oldest first: one NDJSON file per batch, numbered.
struct Spool {
    dir: PathBuf,
    max: u64,
    files: VecDeque<(u64, u64)>,
    bytes: u64,
    next: u64,
}

impl Spool {
    /// Opens (and continues) the spool of one target: files a previous run left are
    /// replayed first.
    fn open(root: &Path, target: &Target, max: u64) -> std::io::Result<Self> {
        let name: String = target
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if let Some(seq) = n
                .strip_suffix(".ndjson")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                files.push((seq, len));
            }
        }
        files.sort_unstable();
        let bytes = files.iter().map(|f| f.1).sum();
        let next = files.last().map_or(0, |f| f.0 + 1);
        Ok(Self {
            dir,
            max,
            files: files.into(),
            bytes,
            next,
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.ndjson"))
    }

    /// Appends a batch; false if the spool is full.
    fn push(&mut self, b: &Batch) -> bool {
        let mut body = Vec::new();
        super::encode::ndjson(b, &mut body);
        if self.bytes + body.len() as u64 > self.max {
            return false;
        }
        let seq = self.next;
        let tmp = self.dir.join("incoming.tmp");
        // Written aside and renamed: a crash never leaves half a batch to replay.
        if std::fs::write(&tmp, &body)
            .and_then(|_| std::fs::rename(&tmp, self.path(seq)))
            .is_err()
        {
            return false;
        }
        self.next += 1;
        self.bytes += body.len() as u64;
        self.files.push_back((seq, body.len() as u64));
        true
    }

    fn front(&self) -> Option<(u64, Batch)> {
        let &(seq, _) = self.files.front()?;
        let text = std::fs::read_to_string(self.path(seq)).unwrap_or_default();
        let batch = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Some((seq, batch))
    }

    fn pop(&mut self, seq: u64) {
        if self.files.front().is_some_and(|f| f.0 == seq) {
            if let Some((_, len)) = self.files.pop_front() {
                self.bytes = self.bytes.saturating_sub(len);
            }
            let _ = std::fs::remove_file(self.path(seq));
        }
    }
}

/// One remote target's queue: spool (older) then memory (newer), so order holds.
struct Remote {
    sender: Sender,
    memory: VecDeque<Batch>,
    spool: Option<Spool>,
    counters: Arc<ExportCounters>,
}

impl Remote {
    fn spill(&mut self) {
        while let Some(b) = self.memory.pop_front() {
            let n = b.len() as u64;
            let kept = self.spool.as_mut().is_some_and(|s| s.push(&b));
            let c = if kept {
                &self.counters.spooled
            } else {
                &self.counters.dropped
            };
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn enqueue(&mut self, b: Batch) {
        if self.memory.len() >= MEMORY_BATCHES {
            if self.spool.is_some() {
                self.spill();
            } else {
                self.counters
                    .dropped
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                return;
            }
        }
        self.memory.push_back(b);
    }

    fn next(&self) -> Option<(Option<u64>, Batch)> {
        if let Some((seq, b)) = self.spool.as_ref().and_then(Spool::front) {
            return Some((Some(seq), b));
        }
        self.memory.front().map(|b| (None, b.clone()))
    }
}

async fn remote_task(mut r: Remote, mut rx: mpsc::UnboundedReceiver<Batch>) {
    let mut closed = false;
    let mut backoff = Duration::ZERO;
    let mut drain_until: Option<Instant> = None;
    let mut last_error = String::new();
    loop {
        if closed && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            if !r.memory.is_empty() {
                log::warn!(
                    "{}: still unreachable at the end of the capture: {} batches go to \
                     the spool",
                    r.sender.target,
                    r.memory.len()
                );
            }
            r.spill();
            return;
        }
        let Some((from_spool, batch)) = r.next() else {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(b) => r.enqueue(b),
                None => closed = true,
            }
            continue;
        };
        let mut arrived = Vec::new();
        let result = {
            let wait = backoff;
            let send = async {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                r.sender.send(&batch).await
            };
            tokio::pin!(send);
            loop {
                tokio::select! {
                    res = &mut send => break res,
                    b = rx.recv(), if !closed => match b {
                        Some(b) => arrived.push(b),
                        None => closed = true,
                    },
                }
            }
        };
        let n = batch.len() as u64;
        match result {
            Ok(()) => {
                if !last_error.is_empty() {
                    log::info!("{}: reachable again", r.sender.target);
                    last_error.clear();
                }
                backoff = Duration::ZERO;
                r.counters.exported.fetch_add(n, Ordering::Relaxed);
                match from_spool {
                    Some(seq) => {
                        r.counters.replayed.fetch_add(n, Ordering::Relaxed);
                        if let Some(s) = r.spool.as_mut() {
                            s.pop(seq);
                        }
                    }
                    None => {
                        r.memory.pop_front();
                    }
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    log::warn!("export: {msg}; retrying with backoff");
                    last_error = msg;
                }
                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                // While the collector is away, batches wait on disk (if there is a spool).
                if r.spool.is_some() {
                    r.spill();
                }
            }
        }
        for b in arrived {
            r.enqueue(b);
        }
    }
}

/// Local targets are written in place: one NDJSON file or stdout, or one Parquet file per
/// capture file (PATH's stem, `-`, the capture file's stem: flows-cap.1.parquet).
struct Local {
    sender: Sender,
    parquet: Option<PathBuf>,
    /// Final records of retired flows, per capture file, until its Parquet file is written.
    retired: HashMap<String, Vec<Value>>,
}

fn parquet_path(base: &Path, file: &str) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cap = file.strip_suffix(".pcapng").unwrap_or(file);
    base.with_file_name(format!("{stem}-{cap}.parquet"))
}

/// Marks one table update as handled when dropped (at the end of its loop turn).
struct Done<'a>(&'a ExportCounters, bool);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.pending_updates.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn run(cfg: LiveConfig, mut rx: mpsc::Receiver<Update>, counters: Arc<ExportCounters>) {
    let mut locals = Vec::new();
    let mut remotes = Vec::new();
    let mut tasks = Vec::new();
    for t in &cfg.targets {
        if t.is_remote() {
            let spool =
                cfg.spool_dir
                    .as_ref()
                    .and_then(|d| match Spool::open(d, t, cfg.spool_max) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            log::warn!("export to {t}: no spool in {}: {e}", d.display());
                            None
                        }
                    });
            let (btx, brx) = mpsc::unbounded_channel();
            let r = Remote {
                sender: Sender::new(t.clone()),
                memory: VecDeque::new(),
                spool,
                counters: counters.clone(),
            };
            tasks.push(tokio::spawn(remote_task(r, brx)));
            remotes.push(btx);
        } else {
            let parquet = match t {
                Target::Parquet(p) => Some(p.clone()),
                _ => None,
            };
            locals.push(Local {
                sender: Sender::new(t.clone()),
                parquet,
                retired: HashMap::new(),
            });
        }
    }
    let mut flows = Flows {
        host: cfg.host.clone(),
        interval: cfg.interval,
        states: HashMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open {
        let mut recs = Vec::new();
        let mut finished_file = None;
        // Set once this update's records are counted in `made`, so `settle` never sees a
        // table that is neither pending nor made.
        let mut done = Done(&counters, false);
        let mut retired_file = None;
        tokio::select! {
            u = rx.recv() => match u {
                Some(Update::Table { file, apps, procs, kind }) => {
                    done.1 = true;
                    flows.table(&file, &apps, &procs, kind, Instant::now(), &mut recs);
                    match kind {
                        TableKind::EndOfFile => finished_file = Some(file),
                        TableKind::Retired => retired_file = Some(file),
                        TableKind::Periodic => {}
                    }
                }
                None => open = false,
            },
            _ = tick.tick() => {}
        }
        flows.due(Instant::now(), &mut recs);
        if recs.is_empty() {
            continue;
        }
        let values: Vec<Value> = recs.iter().map(FlowRecord::to_ecs).collect();
        for l in &mut locals {
            if let (Some(_), Some(file)) = (&l.parquet, &retired_file) {
                // Retired flows wait for their file's end, where its Parquet file is written.
                l.retired
                    .entry(file.clone())
                    .or_default()
                    .extend(recs.iter().map(FlowRecord::to_ecs));
                counters
                    .made
                    .fetch_add(recs.len() as u64, Ordering::Relaxed);
                continue;
            }
            let r = match (&l.parquet, &finished_file) {
                (Some(base), Some(file)) => {
                    // Only the final records of a file go to its Parquet file.
                    let mut finals = l.retired.remove(file).unwrap_or_default();
                    finals.extend(
                        recs.iter()
                            .filter(|r| r.final_record && &r.file == file)
                            .map(FlowRecord::to_ecs),
                    );
                    super::encode::write_parquet(&parquet_path(base, file), &finals)
                        .map(|_| finals.len())
                }
                (Some(_), None) => Ok(0),
                (None, _) => l.sender.send(&values).await.map(|_| values.len()),
            };
            let made = match (&l.parquet, &finished_file) {
                // The retired ones were counted when they came.
                (Some(_), Some(file)) => recs
                    .iter()
                    .filter(|r| r.final_record && &r.file == file)
                    .count(),
                (Some(_), None) => 0,
                (None, _) => values.len(),
            };
            counters.made.fetch_add(made as u64, Ordering::Relaxed);
            match r {
                Ok(n) => {
                    counters.exported.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    log::warn!("export: {e}");
                    let n = if l.parquet.is_some() {
                        recs.iter().filter(|r| r.final_record).count()
                    } else {
                        values.len()
                    };
                    counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        for tx in &remotes {
            counters
                .made
                .fetch_add(values.len() as u64, Ordering::Relaxed);
            for chunk in values.chunks(cfg.batch_records.max(1)) {
                let _ = tx.send(chunk.to_vec());
            }
        }
    }
    drop(remotes);
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_files_are_named_after_their_capture_file() {
        assert_eq!(
            parquet_path(Path::new("/d/flows.parquet"), "cap.3.pcapng"),
            PathBuf::from("/d/flows-cap.3.parquet")
        );
    }

    #[test]
    fn spool_replays_in_order_and_is_bounded() {
        let root = std::env::temp_dir().join(format!("apptag-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let t = Target::Tcp {
            addr: "127.0.0.1:9".into(),
        };
        let mut s = Spool::open(&root, &t, 60).unwrap();
        let b = |i: u64| vec![serde_json::json!({ "n": i })];
        assert!(s.push(&b(1)) && s.push(&b(2)));
        // A later run continues the same spool, oldest first.
        let mut s = Spool::open(&root, &t, 60).unwrap();
        let (seq, first) = s.front().unwrap();
        assert_eq!(first, b(1));
        s.pop(seq);
        assert!(s.push(&b(3)));
        let mut order = Vec::new();
        while let Some((seq, batch)) = s.front() {
            order.push(batch[0]["n"].as_u64().unwrap());
            s.pop(seq);
        }
        assert_eq!(order, vec![2, 3]);
        // 60 bytes hold seven 8-byte lines ({"n":5} and a newline), not more.
        let pushed = (0..10).filter(|&i| s.push(&b(i))).count();
        assert_eq!(pushed, 7);
        let _ = std::fs::remove_dir_all(&root);
    }
}
