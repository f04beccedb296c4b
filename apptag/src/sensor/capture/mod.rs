//! Live packet capture: AF_PACKET sockets with TPACKET_V3 memory-mapped rings, one per
//! capture thread, sharing the load through PACKET_FANOUT, with tcpdump-syntax filters
//! compiled by libpcap and run in the kernel.
//!
//! ```no_run
//! use std::time::Duration;
//! use apptag::sensor::capture::{Capture, CaptureConfig};
//! let mut cap = Capture::open(&CaptureConfig::new("lo"), 2)?;
//! let stop = cap.stop_handle();
//! for mut reader in cap.take_readers() {
//!     std::thread::spawn(move || {
//!         while !reader.is_stopped() {
//!             let _ = reader.poll(Duration::from_millis(100), |pkt| {
//!                 let _ = pkt.data.len();
//!             });
//!         }
//!     });
//! }
//! stop.stop();
//! # Ok::<(), apptag::sensor::capture::CaptureError>(())
//! ```
pub mod filter;
pub mod iface;
mod ring;

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

pub use filter::{check as check_filter, error_position as filter_error_position};
pub use iface::{ANY, interface_names, linktype};
pub use ring::RingReader;

use crate::{
    model::{InterfaceInfo, InterfaceStats},
    sys::now_ns,
};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no interface named {interface:?}; interfaces on this host: {available}")]
    UnknownInterface {
        interface: String,
        available: String,
    },
    #[error(
        "interface {interface} is down: bring it up (`ip link set {interface} up`) and try again"
    )]
    InterfaceDown { interface: String },
    #[error(
        "{what} on {interface} is not permitted: capturing needs {capability} \
         (run as root, or `setcap cap_net_raw,cap_net_admin+eip` on the binary): {source}"
    )]
    Permission {
        what: &'static str,
        interface: String,
        capability: &'static str,
        source: io::Error,
    },
    #[error(
        "could not allocate a {mib} MiB capture ring on {interface} ({blocks} blocks of {block_kib} \
         KiB): {source}; try a smaller ring (fewer or smaller blocks) or fewer capture threads"
    )]
    RingAlloc {
        interface: String,
        mib: u64,
        blocks: u32,
        block_kib: u32,
        source: io::Error,
    },
    #[error("invalid ring configuration: {0}")]
    RingConfig(String),
    #[error("bad filter: {message}\n  {expression}\n  {}", caret(expression, *position))]
    Filter {
        expression: String,
        /// libpcap's own message.
        message: String,
        /// Byte offset of the offending token in `expression`, as best we can tell.
        position: Option<usize>,
    },
    #[error(
        "fanout group {group} on {interface} is taken by another capture with different \
         settings; choose another group id or leave it unset: {source}"
    )]
    FanoutBusy {
        interface: String,
        group: u16,
        source: io::Error,
    },
    #[error("interface {interface} went down or disappeared while capturing")]
    InterfaceGone { interface: String },
    #[error("{what} on {interface} failed: {source}")]
    Os {
        what: &'static str,
        interface: String,
        source: io::Error,
    },
}

/// A caret under the character at byte offset `position` (none if unknown).
fn caret(expression: &str, position: Option<usize>) -> String {
    match position {
        Some(p) => {
            let col = expression.get(..p).map_or(0, |s| s.chars().count());
            format!("{}^", " ".repeat(col))
        }
        None => String::new(),
    }
}

/// How the kernel spreads packets over the sockets of a fanout group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanoutMode {
    /// By flow hash, reassembling IP fragments first so all of a flow lands on one socket.
    #[default]
    Hash,
    /// By the CPU that received the packet (best with RSS / RPS spreading interrupts).
    Cpu,
}

/// Geometry of each TPACKET_V3 ring (one ring per capture thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block; a power-of-two multiple of the page size.
    pub block_size: u32,
    /// Blocks per ring.
    pub block_count: u32,
    /// Frame size the kernel checks the geometry against (TPACKET_V3 packs packets of
    /// any size into blocks); a multiple of 16.
    pub frame_size: u32,
    /// A block is handed to user space after this many milliseconds even if not full.
    pub block_timeout_ms: u32,
}

impl Default for RingConfig {
    /// 64 blocks of 4 MiB (256 MiB per ring): about 2 s of 1 Gbps line rate in 64-byte
    /// frames per thread before the kernel must drop.
    fn default() -> Self {
        RingConfig {
            block_size: 4 << 20,
            block_count: 64,
            frame_size: 2048,
            block_timeout_ms: 10,
        }
    }
}

impl RingConfig {
    /// Bytes of one ring.
    pub fn ring_bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.block_count)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Interface name, or `any`.
    pub interface: String,
    /// Bytes kept of each packet, link-layer header included.
    pub snaplen: u32,
    /// Promiscuous mode (ignored on `any`, like tcpdump).
    pub promisc: bool,
    /// Filter in tcpdump syntax.
    pub filter: Option<String>,
    /// Fanout group id; None picks a group id nobody else uses.
    pub fanout_group: Option<u16>,
    pub fanout_mode: FanoutMode,
    pub ring: RingConfig,
    /// Value put into [`crate::model::Packet::interface`] (the pcapng IDB index).
    pub idb_index: u32,
}

impl CaptureConfig {
    /// tcpdump's defaults: snap length 262144, promiscuous, no filter.
    pub fn new(interface: &str) -> Self {
        CaptureConfig {
            interface: interface.to_string(),
            snaplen: 262_144,
            promisc: true,
            filter: None,
            fanout_group: None,
            fanout_mode: FanoutMode::default(),
            ring: RingConfig::default(),
            idb_index: 0,
        }
    }
}

/// Kernel counters of one capture (PACKET_STATISTICS summed over its sockets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Packets that passed the filter, dropped ones included (tp_packets).
    pub packets: u64,
    /// Packets dropped because the ring was full (tp_drops).
    pub drops: u64,
    /// Times the ring was frozen because user space fell behind (tp_freeze_q_cnt).
    pub freeze_q_cnt: u64,
}

/// Wakes blocked readers and tells them to stop.
pub(crate) struct StopState {
    flag: AtomicBool,
    event: OwnedFd,
}

impl StopState {
    fn new(interface: &str) -> Result<Self, CaptureError> {
        // SAFETY: eventfd has no memory preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(CaptureError::Os {
                what: "eventfd",
                interface: interface.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(StopState {
            flag: AtomicBool::new(false),
            // SAFETY: fd is a fresh descriptor we own.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub(crate) fn event_fd(&self) -> i32 {
        self.event.as_raw_fd()
    }
}

/// Stops every reader of a capture; cheap to clone and send to a signal-handling thread.
#[derive(Clone)]
pub struct StopHandle(Arc<StopState>);

impl StopHandle {
    /// Readers return from `poll` promptly; packets already in their rings can still be read
    /// with [`RingReader::drain`].
    pub fn stop(&self) {
        self.0.flag.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. The eventfd stays readable
        // (we never read it), so every reader's poll wakes.
        let _ = unsafe {
            libc::write(
                self.0.event.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                8,
            )
        };
    }

    pub fn is_stopped(&self) -> bool {
        self.0.is_set()
    }
}

/// Counters shared by the readers and the capture: kernel statistics reset on each read,
/// so they are accumulated here.
#[derive(Default)]
pub(crate) struct Shared {
    totals: Mutex<RingStats>,
    pub(crate) delivered: AtomicU64,
}

impl Shared {
    pub(crate) fn collect(&self, fd: i32) {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: st and len are valid for the kernel to write.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &mut len,
            )
        };
        if r != 0 {
            log::debug!("PACKET_STATISTICS failed: {}", io::Error::last_os_error());
            return;
        }
        if let Ok(mut t) = self.totals.lock() {
            // tp_packets already includes tp_drops (the kernel adds them on read).
            t.packets += u64::from(st.tp_packets);
            t.drops += u64::from(st.tp_drops);
            t.freeze_q_cnt += u64::from(st.tp_freeze_q_cnt);
        }
    }

    fn totals(&self) -> RingStats {
        self.totals.lock().map(|t| *t).unwrap_or_default()
    }
}

/// An open capture on one interface: `workers` sockets in one fanout group.
pub struct Capture {
    info: InterfaceInfo,
    readers: Vec<RingReader>,
    stop: Arc<StopState>,
    fanout_group: Option<u16>,
    counters: CaptureCounters,
}

/// Reads a capture's counters from any thread (e.g. a live status line) while the readers
/// run; cheap to clone.
#[derive(Clone)]
pub struct CaptureCounters(Arc<CountersInner>);

struct CountersInner {
    name: String,
    sockets: Vec<Weak<OwnedFd>>,
    shared: Arc<Shared>,
    start_ns: u64,
    rx_dropped_start: Option<u64>,
}

impl CaptureCounters {
    /// Kernel ring counters summed over all sockets since open (including readers that
    /// were dropped).
    pub fn ring_stats(&self) -> RingStats {
        for s in &self.0.sockets {
            if let Some(fd) = s.upgrade() {
                self.0.shared.collect(fd.as_raw_fd());
            }
        }
        self.0.shared.totals()
    }

    /// Counters for the pcapng Interface Statistics Block.
    pub fn stats(&self) -> InterfaceStats {
        let ring = self.ring_stats();
        let if_dropped = match (
            self.0.rx_dropped_start,
            iface::sys_counter(&self.0.name, "rx_dropped"),
        ) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        InterfaceStats {
            start_ns: self.0.start_ns,
            end_ns: now_ns(),
            received: ring.packets,
            if_dropped,
            os_dropped: ring.drops,
            delivered: self.0.shared.delivered.load(Ordering::Relaxed),
            filter_accepted: ring.packets,
        }
    }
}

impl Capture {
    /// Opens `workers` (at least 1) ring sockets on `config.interface`, each with the filter
    /// attached before it is bound, all in one fanout group.
    pub fn open(config: &CaptureConfig, workers: usize) -> Result<Capture, CaptureError> {
        let workers = workers.max(1);
        let iface = iface::lookup(&config.interface)?;
        ring::validate(&config.ring, &iface.name)?;
        ring::check_memory(&config.ring, workers, &iface.name)?;
        if config.snaplen == 0 {
            return Err(CaptureError::RingConfig(
                "snap length must be at least 1 byte".into(),
            ));
        }
        let kernel_filter = match &config.filter {
            Some(expr) => filter::compile(
                expr,
                iface.linktype,
                config.snaplen,
                (!iface.is_any()).then_some(iface.name.as_str()),
            )?,
            None => filter::KernelFilter {
                insns: filter::accept_all(config.snaplen),
                needs_userland: false,
            },
        };
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(StopState::new(&iface.name)?);
        let rx_dropped_start = iface::sys_counter(&iface.name, "rx_dropped");
        let start_ns = now_ns();
        let mut readers = Vec::with_capacity(workers);
        let mut group = config.fanout_group;
        let fanout = workers > 1 || config.fanout_group.is_some();
        for n in 0..workers {
            let user_filter = match (&config.filter, kernel_filter.needs_userland) {
                (Some(expr), true) => Some(filter::UserFilter::new(expr, iface.linktype)?),
                _ => None,
            };
            let setup = ring::Setup {
                worker: n,
                iface: &iface,
                config,
                filter: &kernel_filter.insns,
                user_filter,
                promisc: config.promisc && n == 0,
                fanout: fanout.then_some((group, config.fanout_mode)),
                shared: shared.clone(),
                stop: stop.clone(),
            };
            let (reader, joined) = RingReader::open(setup)?;
            if group.is_none() {
                group = joined;
            }
            readers.push(reader);
        }
        let sockets = readers.iter().map(|r| Arc::downgrade(r.socket())).collect();
        log::debug!(
            "capturing on {} (linktype {}) with {} ring(s) of {} MiB, fanout group {:?}",
            iface.name,
            iface.linktype,
            workers,
            config.ring.ring_bytes() >> 20,
            group
        );
        Ok(Capture {
            info: InterfaceInfo {
                name: iface.name.clone(),
                linktype: iface.linktype,
                snaplen: config.snaplen,
                filter: config.filter.clone(),
            },
            readers,
            stop,
            fanout_group: if fanout { group } else { None },
            counters: CaptureCounters(Arc::new(CountersInner {
                name: iface.name.clone(),
                sockets,
                shared,
                start_ns,
                rx_dropped_start,
            })),
        })
    }

    pub fn info(&self) -> InterfaceInfo {
        self.info.clone()
    }

    /// The readers, one per worker thread; the second call returns an empty Vec.
    pub fn take_readers(&mut self) -> Vec<RingReader> {
        std::mem::take(&mut self.readers)
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// The fanout group the sockets share (None with a single worker and no group asked).
    pub fn fanout_group(&self) -> Option<u16> {
        self.fanout_group
    }

    /// Kernel ring counters summed over all sockets since open.
    pub fn ring_stats(&self) -> RingStats {
        self.counters.ring_stats()
    }

    /// Counters for the pcapng Interface Statistics Block.
    pub fn stats(&self) -> InterfaceStats {
        self.counters.stats()
    }

    /// A handle for reading the counters from another thread.
    pub fn counters(&self) -> CaptureCounters {
        self.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_cross_threads() {
        send::<RingReader>();
        send::<Capture>();
        send_sync::<CaptureCounters>();
        send_sync::<StopHandle>();
    }

    #[test]
    fn default_ring_is_what_the_kernel_accepts() {
        let r = RingConfig::default();
        assert_eq!(r.ring_bytes(), 256 << 20);
        ring::validate(&r, "lo").expect("default geometry is valid");
        assert!(
            ring::validate(
                &RingConfig {
                    block_size: 12_288,
                    ..r.clone()
                },
                "lo"
            )
            .is_err()
        );
        assert!(
            ring::validate(
                &RingConfig {
                    frame_size: 100,
                    ..r
                },
                "lo"
            )
            .is_err()
        );
    }
}
