//! One AF_PACKET socket with a TPACKET_V3 receive ring, and the reader that walks its blocks.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr,
    sync::{
        Arc,
        atomic::{Ordering, fence},
    },
    time::Duration,
};

use super::{
    CaptureConfig, CaptureError, FanoutMode, RingConfig, Shared, StopState,
    filter::UserFilter,
    iface::{Framing, Interface},
};
use crate::model::{Direction, Packet};

const SLL2_HDR_LEN: usize = 20;
const VLAN_TAG_LEN: usize = 4;
const ETH_ADDRS_LEN: usize = 12;
const ETH_P_8021Q: u16 = 0x8100;
/// Offset of the sockaddr_ll that follows each tpacket3_hdr (TPACKET_ALIGN of its size).
const SLL_OFFSET: usize = (size_of::<libc::tpacket3_hdr>() + 15) & !15;

/// Checks the ring geometry the way the kernel will, so the user gets a clear message.
pub fn validate(ring: &RingConfig, interface: &str) -> Result<(), CaptureError> {
    // SAFETY: sysconf has no preconditions.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let bad = |m: String| {
        Err(CaptureError::RingConfig(format!(
            "{m} (interface {interface})"
        )))
    };
    if ring.block_size < page
        || !(ring.block_size / page).is_power_of_two()
        || !ring.block_size.is_multiple_of(page)
    {
        return bad(format!(
            "block size {} must be a power-of-two multiple of the page size {page}",
            ring.block_size
        ));
    }
    if ring.frame_size < 128
        || !ring.frame_size.is_multiple_of(16)
        || ring.frame_size > ring.block_size
    {
        return bad(format!(
            "frame size {} must be a multiple of 16 between 128 and the block size",
            ring.frame_size
        ));
    }
    if ring.block_count == 0 {
        return bad("block count must be at least 1".into());
    }
    if ring.ring_bytes() / u64::from(ring.frame_size) > u64::from(u32::MAX) {
        return bad("ring too large".into());
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Ring memory is unswappable kernel memory outside any memlock limit: asking for more than
/// the machine can spare would make the kernel's OOM killer end other processes, so the
/// rings of all workers together may take at most half of the available memory.
pub fn check_memory(
    ring: &RingConfig,
    workers: usize,
    interface: &str,
) -> Result<(), CaptureError> {
    let total = ring.ring_bytes().saturating_mul(workers as u64);
    let Some(avail) = mem_available() else {
        return Ok(());
    };
    if total > avail / 2 {
        return Err(CaptureError::RingAlloc {
            interface: interface.to_string(),
            mib: ring.ring_bytes() >> 20,
            blocks: ring.block_count,
            block_kib: ring.block_size >> 10,
            source: io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "{workers} ring(s) need {} MiB but only {} MiB of memory is available \
                     (at most half of it is used for rings)",
                    total >> 20,
                    avail >> 20
                ),
            ),
        });
    }
    Ok(())
}

pub struct Setup<'a> {
    pub worker: usize,
    pub iface: &'a Interface,
    pub config: &'a CaptureConfig,
    pub filter: &'a [libc::sock_filter],
    pub user_filter: Option<UserFilter>,
    pub promisc: bool,
    /// (group id, mode); id None asks the kernel for a fresh one.
    pub fanout: Option<(Option<u16>, FanoutMode)>,
    pub shared: Arc<Shared>,
    pub stop: Arc<StopState>,
}

/// Reads one ring. Send it to the thread that polls it; packets are handed out borrowed
/// from the ring, with no copy and no allocation.
pub struct RingReader {
    worker: usize,
    socket: Arc<OwnedFd>,
    map: *mut u8,
    map_len: usize,
    block_size: usize,
    block_count: usize,
    block_timeout_ms: u32,
    next: usize,
    snaplen: usize,
    framing: Framing,
    vlan: bool,
    lo_ifindex: i32,
    idb_index: u32,
    interface: String,
    user_filter: Option<UserFilter>,
    shared: Arc<Shared>,
    stop: Arc<StopState>,
}

// SAFETY: the mapping is owned by this reader alone (no other handle touches it), and the
// other fields are Send.
unsafe impl Send for RingReader {}

impl Drop for RingReader {
    fn drop(&mut self) {
        // Keep this socket's counters before it closes.
        self.shared.collect(self.socket.as_raw_fd());
        // SAFETY: map/map_len come from our successful mmap and nothing borrows it now.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

fn setopt<T>(fd: i32, level: i32, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_perm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

impl RingReader {
    pub(super) fn socket(&self) -> &Arc<OwnedFd> {
        &self.socket
    }

    pub(super) fn open(s: Setup<'_>) -> Result<(RingReader, Option<u16>), CaptureError> {
        let name = s.iface.name.clone();
        let os = |what: &'static str| {
            let name = name.clone();
            move |source: io::Error| CaptureError::Os {
                what,
                interface: name,
                source,
            }
        };
        let kind = match s.iface.framing {
            Framing::Raw => libc::SOCK_RAW,
            Framing::Cooked => libc::SOCK_DGRAM,
        };
        // Protocol 0: the socket receives nothing until bind, so the filter and ring are in
        // place before the first packet and there is nothing unfiltered to drain.
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_PACKET, kind | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(if is_perm(&e) {
                CaptureError::Permission {
                    what: "opening a packet socket",
                    interface: name,
                    capability: "CAP_NET_RAW",
                    source: e,
                }
            } else {
                os("socket(AF_PACKET)")(e)
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let fd = sock.as_raw_fd();
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(os("PACKET_VERSION TPACKET_V3"))?;
        let vlan = s.iface.reinserts_vlan();
        if vlan {
            let reserve = VLAN_TAG_LEN as libc::c_uint;
            setopt(fd, libc::SOL_PACKET, libc::PACKET_RESERVE, &reserve)
                .map_err(os("PACKET_RESERVE"))?;
        }
        let prog = libc::sock_fprog {
            len: u16::try_from(s.filter.len()).map_err(|_| {
                CaptureError::RingConfig("filter program longer than 65535 instructions".into())
            })?,
            filter: s.filter.as_ptr().cast_mut(),
        };
        setopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
            .map_err(os("attaching the filter (SO_ATTACH_FILTER)"))?;

        let ring = &s.config.ring;
        let req = libc::tpacket_req3 {
            tp_block_size: ring.block_size,
            tp_block_nr: ring.block_count,
            tp_frame_size: ring.frame_size,
            tp_frame_nr: u32::try_from(ring.ring_bytes() / u64::from(ring.frame_size))
                .unwrap_or(u32::MAX),
            tp_retire_blk_tov: ring.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let alloc_err = |source: io::Error| CaptureError::RingAlloc {
            interface: name.clone(),
            mib: ring.ring_bytes() >> 20,
            blocks: ring.block_count,
            block_kib: ring.block_size >> 10,
            source,
        };
        if let Err(e) = setopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req) {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => CaptureError::RingConfig(format!(
                    "the kernel refused the ring geometry {ring:?} on {name}: {e}"
                )),
                _ => alloc_err(e),
            });
        }
        let map_len = usize::try_from(ring.ring_bytes())
            .map_err(|_| CaptureError::RingConfig("ring larger than the address space".into()))?;
        // SAFETY: maps the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(alloc_err(io::Error::last_os_error()));
        }
        // From here the reader owns the mapping, so early returns unmap it.
        let mut reader = RingReader {
            worker: s.worker,
            socket: Arc::new(sock),
            map: map.cast(),
            map_len,
            block_size: ring.block_size as usize,
            block_count: ring.block_count as usize,
            block_timeout_ms: ring.block_timeout_ms,
            next: 0,
            snaplen: s.config.snaplen as usize,
            framing: s.iface.framing,
            vlan,
            lo_ifindex: s.iface.lo_ifindex,
            idb_index: s.config.idb_index,
            interface: name.clone(),
            user_filter: s.user_filter,
            shared: s.shared,
            stop: s.stop,
        };
        if s.iface.is_loopback() {
            // lo shows each packet twice (outgoing, then incoming); libpcap drops the
            // outgoing copy. Doing it in the kernel also saves ring space.
            let one: libc::c_int = 1;
            if let Err(e) = setopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one) {
                log::debug!("PACKET_IGNORE_OUTGOING unavailable ({e}); dropping in user space");
            }
        }
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: s.iface.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        let r = unsafe {
            libc::bind(
                fd,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => super::iface::unknown_interface(&name),
                Some(libc::ENETDOWN) => CaptureError::InterfaceDown { interface: name },
                _ => os("bind")(e),
            });
        }
        if s.promisc && !s.iface.is_any() {
            let mreq = libc::packet_mreq {
                mr_ifindex: s.iface.ifindex,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq).map_err(|e| {
                if is_perm(&e) {
                    CaptureError::Permission {
                        what: "promiscuous mode",
                        interface: name.clone(),
                        capability: "CAP_NET_ADMIN",
                        source: e,
                    }
                } else {
                    os("PACKET_ADD_MEMBERSHIP (promiscuous mode)")(e)
                }
            })?;
        }
        let mut joined = None;
        if let Some((group, mode)) = s.fanout {
            let mut kind = match mode {
                FanoutMode::Hash => libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG,
                FanoutMode::Cpu => libc::PACKET_FANOUT_CPU,
            };
            if s.iface.is_loopback() {
                // In a fanout group the group's hook receives, not the socket's, so the
                // socket's PACKET_IGNORE_OUTGOING has no effect there: the group needs it too.
                kind |= libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
            }
            let (id, flags) = match group {
                Some(id) => (id, kind),
                None => (0, kind | libc::PACKET_FANOUT_FLAG_UNIQUEID),
            };
            let arg = (flags << 16) | u32::from(id);
            setopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).map_err(|e| {
                match (group, e.raw_os_error()) {
                    (Some(group), Some(libc::EINVAL) | Some(libc::EALREADY)) => {
                        CaptureError::FanoutBusy {
                            interface: name.clone(),
                            group,
                            source: e,
                        }
                    }
                    _ => os("PACKET_FANOUT")(e),
                }
            })?;
            let mut val: u32 = 0;
            let mut len = size_of::<u32>() as libc::socklen_t;
            // SAFETY: val and len are valid for the kernel to write.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_FANOUT,
                    (&raw mut val).cast(),
                    &mut len,
                )
            };
            if r != 0 {
                return Err(os("reading the fanout group id")(io::Error::last_os_error()));
            }
            joined = Some((val & 0xffff) as u16);
        }
        reader.next = 0;
        Ok((reader, joined))
    }

    /// This reader's position in its fanout group (0..workers). With
    /// [`super::FanoutMode::Cpu`], member i receives what CPU i (mod workers) received:
    /// pin the thread polling it to that CPU.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// True once the capture's [`super::StopHandle`] was used.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_set()
    }

    fn block_ptr(&self, idx: usize) -> *mut u8 {
        // SAFETY: idx < block_count, so the offset stays inside the mapping.
        unsafe { self.map.add(idx * self.block_size) }
    }

    fn block_ready(&self, idx: usize) -> bool {
        let b = self.block_ptr(idx).cast::<libc::tpacket_block_desc>();
        // SAFETY: the block descriptor lies at the start of the block, inside the mapping;
        // the kernel writes it concurrently, hence the volatile read.
        let status = unsafe { ptr::read_volatile(&raw const (*b).hdr.bh1.block_status) };
        status & libc::TP_STATUS_USER != 0
    }

    /// Waits up to `timeout` for a block, then calls `f` for every packet of every block
    /// that is ready, giving each block back to the kernel after. Returns the number of
    /// packets passed to `f`; 0 on timeout or after a stop.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Packet<'_>),
    ) -> Result<usize, CaptureError> {
        if !self.block_ready(self.next) {
            if self.stop.is_set() {
                return Ok(0);
            }
            self.wait(timeout)?;
        }
        Ok(self.drain(&mut f))
    }

    /// Reads every block that is ready now, without waiting (use after a stop to collect
    /// what is left).
    pub fn drain(&mut self, mut f: impl FnMut(&Packet<'_>)) -> usize {
        let mut total = 0;
        for _ in 0..self.block_count {
            if !self.block_ready(self.next) {
                break;
            }
            fence(Ordering::Acquire);
            total += self.walk_block(self.next, &mut f);
            let b = self.block_ptr(self.next).cast::<libc::tpacket_block_desc>();
            fence(Ordering::Release);
            // SAFETY: as in block_ready; handing the block back to the kernel.
            unsafe {
                ptr::write_volatile(&raw mut (*b).hdr.bh1.block_status, libc::TP_STATUS_KERNEL);
            }
            self.next = (self.next + 1) % self.block_count;
        }
        self.shared
            .delivered
            .fetch_add(total as u64, Ordering::Relaxed);
        total
    }

    /// After a stop: waits for the kernel to retire the block it is filling (one block
    /// timeout), then reads everything left in the ring.
    pub fn flush(&mut self, f: impl FnMut(&Packet<'_>)) -> usize {
        std::thread::sleep(Duration::from_millis(u64::from(self.block_timeout_ms) + 5));
        self.drain(f)
    }

    fn wait(&self, timeout: Duration) -> Result<(), CaptureError> {
        let ms = i32::try_from(timeout.as_millis().max(u128::from(!timeout.is_zero())))
            .unwrap_or(i32::MAX);
        let mut fds = [
            libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            },
            libc::pollfd {
                fd: self.stop.event_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of 2 pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(CaptureError::Os {
                what: "poll",
                interface: self.interface.clone(),
                source: e,
            });
        }
        if fds[0].revents & libc::POLLERR != 0 {
            let mut err: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: err and len are valid for the kernel to write; reading SO_ERROR also
            // clears it.
            unsafe {
                libc::getsockopt(
                    self.socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&raw mut err).cast(),
                    &mut len,
                )
            };
            if err == libc::ENETDOWN || err == libc::ENODEV || err == libc::ENXIO {
                return Err(CaptureError::InterfaceGone {
                    interface: self.interface.clone(),
                });
            }
            if err != 0 {
                return Err(CaptureError::Os {
                    what: "capture socket",
                    interface: self.interface.clone(),
                    source: io::Error::from_raw_os_error(err),
                });
            }
        }
        Ok(())
    }

    /// Calls `f` for each packet of one ready block; returns how many.
    fn walk_block(&mut self, idx: usize, f: &mut impl FnMut(&Packet<'_>)) -> usize {
        let base = self.block_ptr(idx);
        let bs = self.block_size;
        // SAFETY: the block is ours (TP_STATUS_USER) until we give it back; header reads
        // stay inside the block (checked below) and are unaligned-safe.
        let bd = unsafe { ptr::read_unaligned(base.cast::<libc::tpacket_block_desc>()) };
        // SAFETY: bh1 is the only variant of the union.
        let (num, mut off) = unsafe {
            (
                bd.hdr.bh1.num_pkts as usize,
                bd.hdr.bh1.offset_to_first_pkt as usize,
            )
        };
        let mut count = 0;
        for _ in 0..num {
            let hdr_end = off + SLL_OFFSET + size_of::<libc::sockaddr_ll>();
            if hdr_end > bs {
                log::warn!("capture ring: packet header outside its block; skipping the rest");
                break;
            }
            // SAFETY: hdr_end <= block size, checked above.
            let (h, sll) = unsafe {
                (
                    ptr::read_unaligned(base.add(off).cast::<libc::tpacket3_hdr>()),
                    ptr::read_unaligned(base.add(off + SLL_OFFSET).cast::<libc::sockaddr_ll>()),
                )
            };
            if let Some(pkt_len) = self.one(base, off, &h, &sll, f) {
                count += pkt_len;
            }
            if h.tp_next_offset == 0 {
                break;
            }
            off += h.tp_next_offset as usize;
        }
        count
    }

    /// Frames one packet (SLL2 header, VLAN tag) in place and hands it to `f`; returns
    /// Some(1) if it was delivered.
    fn one(
        &mut self,
        base: *mut u8,
        off: usize,
        h: &libc::tpacket3_hdr,
        sll: &libc::sockaddr_ll,
        f: &mut impl FnMut(&Packet<'_>),
    ) -> Option<usize> {
        if sll.sll_pkttype == libc::PACKET_OUTGOING && sll.sll_ifindex == self.lo_ifindex {
            return None;
        }
        let bs = self.block_size;
        let snap = h.tp_snaplen as usize;
        let mut orig = h.tp_len as usize;
        let (mut start, mut len) = match self.framing {
            Framing::Raw => (off + h.tp_mac as usize, snap),
            Framing::Cooked => (off + h.tp_net as usize, snap),
        };
        if start + len > bs {
            log::warn!("capture ring: packet data outside its block; skipped");
            return None;
        }
        match self.framing {
            Framing::Cooked => {
                // Room between the sockaddr_ll and the packet: the kernel leaves at least
                // 16 bytes plus alignment there, and libpcap writes its header into it too.
                if start < off + SLL_OFFSET + size_of::<libc::sockaddr_ll>() + SLL2_HDR_LEN {
                    log::warn!("capture ring: no room for the SLL2 header; packet skipped");
                    return None;
                }
                start -= SLL2_HDR_LEN;
                let mut hdr = [0u8; SLL2_HDR_LEN];
                hdr[0..2].copy_from_slice(&sll.sll_protocol.to_ne_bytes());
                hdr[4..8].copy_from_slice(&sll.sll_ifindex.to_be_bytes());
                hdr[8..10].copy_from_slice(&sll.sll_hatype.to_be_bytes());
                hdr[10] = sll.sll_pkttype;
                let halen = usize::from(sll.sll_halen).min(8);
                hdr[11] = sll.sll_halen.min(8);
                hdr[12..12 + halen].copy_from_slice(&sll.sll_addr[..halen]);
                // SAFETY: start..start+20 lies in our block, after the packet's headers.
                unsafe { ptr::copy_nonoverlapping(hdr.as_ptr(), base.add(start), SLL2_HDR_LEN) };
                len += SLL2_HDR_LEN;
                orig += SLL2_HDR_LEN;
            }
            Framing::Raw => {
                let tci = h.hv1.tp_vlan_tci as u16;
                if self.vlan
                    && (tci != 0 || h.tp_status & libc::TP_STATUS_VLAN_VALID != 0)
                    && len >= ETH_ADDRS_LEN
                    && start >= off + SLL_OFFSET + size_of::<libc::sockaddr_ll>() + VLAN_TAG_LEN
                {
                    // The driver took the 802.1Q tag out of the frame; put it back after the
                    // MAC addresses (the 4 bytes before the frame are our PACKET_RESERVE).
                    let tpid = if h.hv1.tp_vlan_tpid != 0
                        || h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0
                    {
                        h.hv1.tp_vlan_tpid
                    } else {
                        ETH_P_8021Q
                    };
                    let mut tag = [0u8; VLAN_TAG_LEN];
                    tag[0..2].copy_from_slice(&tpid.to_be_bytes());
                    tag[2..4].copy_from_slice(&tci.to_be_bytes());
                    // SAFETY: both ranges lie within the block (checked above).
                    unsafe {
                        let p = base.add(start);
                        ptr::copy(p, p.sub(VLAN_TAG_LEN), ETH_ADDRS_LEN);
                        ptr::copy_nonoverlapping(
                            tag.as_ptr(),
                            p.add(ETH_ADDRS_LEN - VLAN_TAG_LEN),
                            VLAN_TAG_LEN,
                        );
                    }
                    start -= VLAN_TAG_LEN;
                    len += VLAN_TAG_LEN;
                    orig += VLAN_TAG_LEN;
                }
            }
        }
        let len = len.min(self.snaplen);
        // SAFETY: start..start+len is inside our block, which we own until it is released.
        let data = unsafe { std::slice::from_raw_parts(base.add(start).cast_const(), len) };
        if let Some(uf) = &self.user_filter
            && !uf.matches(data)
        {
            return None;
        }
        let direction = if sll.sll_pkttype == libc::PACKET_OUTGOING {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        f(&Packet {
            ts_ns: u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec),
            interface: self.idb_index,
            orig_len: u32::try_from(orig).unwrap_or(u32::MAX),
            data,
            direction,
            pid: 0,
            tid: 0,
        });
        Some(1)
    }
}
