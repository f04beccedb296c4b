//! Capture threads and their bounded queues to the writer: each thread copies ring packets
//! into batches of at most `BATCH_BYTES` and hands them over a queue of its own. When the
//! writer falls behind the queue fills and the thread waits, so the kernel ring absorbs the
//! burst (and counts what it cannot hold).
use std::{
    sync::mpsc::{self, Receiver, SyncSender},
    time::Duration,
};

use super::PipelineError;
use crate::{
    model::{Direction, Packet},
    sensor::capture::{Capture, StopHandle},
};

/// Batches in flight between each capture thread and the writer (at most
/// QUEUE_BATCHES x BATCH_BYTES = 4 MiB of packet data per thread: the kernel ring, not this
/// queue, is where bursts wait, and its size is the one the user chooses).
const QUEUE_BATCHES: usize = 16;
const BATCH_BYTES: usize = 256 << 10;

pub(super) struct Batch {
    pub(super) iface: u32,
    pub(super) data: Vec<u8>,
    /// (ts_ns, orig_len, offset, len, direction)
    pub(super) pkts: Vec<(u64, u32, u32, u32, Direction)>,
}

impl Batch {
    pub(super) fn new(iface: u32) -> Self {
        Self {
            iface,
            data: Vec::with_capacity(256 * 1024),
            pkts: Vec::with_capacity(2048),
        }
    }

    pub(super) fn push(&mut self, p: &Packet<'_>) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(p.data);
        self.pkts
            .push((p.ts_ns, p.orig_len, off, p.data.len() as u32, p.direction));
    }
}

/// A capture thread's side of the queue.
struct Feeder {
    batch: Batch,
    tx: SyncSender<Batch>,
    /// The writer is gone (an output error ended the capture).
    gone: bool,
}

impl Feeder {
    fn push(&mut self, p: &Packet<'_>) {
        self.batch.push(p);
        if self.batch.data.len() >= BATCH_BYTES {
            self.send();
        }
    }

    /// Hands the batch over, waiting while the writer is behind: the kernel ring buffers
    /// meanwhile, and counts what it cannot hold.
    fn send(&mut self) {
        if self.batch.pkts.is_empty() || self.gone {
            return;
        }
        let iface = self.batch.iface;
        let full = std::mem::replace(&mut self.batch, Batch::new(iface));
        self.gone = self.tx.send(full).is_err();
    }
}

pub(super) struct CaptureThreads {
    pub(super) queues: Vec<Receiver<Batch>>,
    pub(super) stops: Vec<StopHandle>,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
}

pub(super) fn start_threads(captures: &mut [Capture]) -> Result<CaptureThreads, PipelineError> {
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    let mut queues = Vec::new();
    for (iface, c) in captures.iter_mut().enumerate() {
        stops.push(c.stop_handle());
        for mut reader in c.take_readers() {
            // One bounded queue per capture thread (per CPU with fanout): no contention
            // between capture threads, and each one's backpressure is its own.
            let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
            queues.push(rx);
            let t = std::thread::Builder::new()
                .name(format!("apptag-cap{iface}"))
                .spawn(move || {
                    let mut feed = Feeder {
                        batch: Batch::new(iface as u32),
                        tx,
                        gone: false,
                    };
                    loop {
                        let stopped = reader.is_stopped();
                        let r = if stopped {
                            Ok(reader.flush(|p| feed.push(p)))
                        } else {
                            reader.poll(Duration::from_millis(50), |p| feed.push(p))
                        };
                        if let Err(e) = r {
                            log::error!("capture failed: {e}");
                            break;
                        }
                        feed.send();
                        if stopped || feed.gone {
                            break;
                        }
                    }
                })
                .map_err(PipelineError::Thread)?;
            threads.push(t);
        }
    }
    Ok(CaptureThreads {
        stops,
        threads,
        queues,
    })
}
