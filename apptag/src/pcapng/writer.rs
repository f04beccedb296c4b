//! The pcapng writer. Blocks are built whole in an in-memory buffer and handed to the output
//! only as whole blocks, so a file never holds a partial block unless the process dies
//! inside a `write` system call; a failed write (ENOSPC) is cut back to the last complete
//! block for file outputs.
use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use super::block::{BlockBuilder, pad4};
use super::{BYTE_ORDER_MAGIC, PcapngError, apprecord, block_type, process};
use crate::model::{AppRecord, InterfaceInfo, InterfaceStats, Packet, ProcessInfo};

/// Space always kept allocated past the end of the file besides the final table's estimate:
/// the interface statistics and the margin of a table that grew since it was measured.
pub const RESERVE_BASE: u64 = 64 * 1024;
/// Buffered bytes above which a block append triggers a write to the output.
const FLUSH_AT: usize = 256 * 1024;
/// Largest captured length written: Wireshark refuses a file with a longer packet (its
/// WTAP_MAX_PACKET_SIZE_STANDARD), so longer data is cut (the original length is kept).
pub const MAX_PACKET_LEN: usize = 262_144;

/// Option codes we write.
mod opt {
    pub const SHB_HARDWARE: u16 = 2;
    pub const SHB_OS: u16 = 3;
    pub const SHB_USERAPPL: u16 = 4;
    pub const IF_NAME: u16 = 2;
    pub const IF_TSRESOL: u16 = 9;
    pub const IF_FILTER: u16 = 11;
    pub const IF_OS: u16 = 12;
    pub const EPB_FLAGS: u16 = 2;
    pub const EPB_PROCESSID_THREADID: u16 = 8;
    pub const ISB_STARTTIME: u16 = 2;
    pub const ISB_ENDTIME: u16 = 3;
    pub const ISB_IFRECV: u16 = 4;
    pub const ISB_IFDROP: u16 = 5;
    pub const ISB_FILTERACCEPT: u16 = 6;
    pub const ISB_OSDROP: u16 = 7;
    pub const ISB_USRDELIV: u16 = 8;
    /// opt_comment, valid in every block.
    pub const COMMENT: u16 = 1;
}

/// What the Section Header Block says about the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// shb_hardware, e.g. "x86_64 (AMD EPYC 7B13)".
    pub hardware: String,
    /// shb_os, e.g. "Linux 6.18.44".
    pub os: String,
    /// shb_userappl, e.g. "apptag 0.1.0".
    pub userappl: String,
}

impl SectionInfo {
    /// This machine (uname) and this apptag version.
    pub fn detect() -> Self {
        let (os, mut hardware) = uname();
        if let Some(model) = cpu_model() {
            hardware = format!("{hardware} ({model})");
        }
        SectionInfo {
            hardware,
            os,
            userappl: format!("apptag {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl Default for SectionInfo {
    fn default() -> Self {
        Self::detect()
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .filter(|m| !m.is_empty())
}

fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data; uname fills it or fails.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return ("Linux".into(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (
        format!("{} {}", field(&u.sysname), field(&u.release)),
        field(&u.machine),
    )
}

type Truncate<W> = fn(&mut W, u64) -> io::Result<()>;
/// fallocate on the output: (offset, length, punch a hole instead of allocating).
type Allocate<W> = fn(&mut W, u64, u64, bool) -> io::Result<()>;

/// Space allocated past the end of the file (fallocate with KEEP_SIZE), so that on a full
/// file system the end of the file (final application table, interface statistics) still
/// has somewhere to go. Before each write the writer allocates the write plus the reserve;
/// when that fails the previous reserve is still there, intact.
struct Reserve<W> {
    allocate: Allocate<W>,
    /// Bytes kept past the end of the file.
    bytes: u64,
    /// Offset up to which space is allocated.
    allocated_to: u64,
    /// The disk is full: what is written now goes into the reserve.
    spent: bool,
}

/// Writes one little-endian pcapng section.
pub struct Writer<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    /// Bytes the output has accepted: always the end of a complete block.
    committed: u64,
    interfaces: u32,
    /// Captured-length limit per interface: its snap length, at most MAX_PACKET_LEN.
    caplimits: Vec<usize>,
    os: String,
    app_sequence: u32,
    processes: HashMap<(u32, u64), u64>,
    tracker: apprecord::ChangeTracker,
    truncate: Option<Truncate<W>>,
    reserve: Option<Reserve<W>>,
    /// Packets in `buf`, and packets the output has accepted.
    buffered_packets: u64,
    packets: u64,
    /// Size of the last table given to `write_app_changes` as a final table (bytes).
    final_estimate: u64,
}

impl Writer<File> {
    /// Creates (or replaces) a capture file. On a failed write the file is cut back to its
    /// last complete block, so it stays readable by every tool.
    /// The file is created `0600` (see [`Writer::create_with_mode`]).
    pub fn create(path: impl AsRef<Path>, section: &SectionInfo) -> Result<Self, PcapngError> {
        Self::create_with_mode(path, section, crate::sys::PRIVATE_FILE_MODE)
    }

    /// As [`Writer::create`], with the file's mode exactly `mode` whatever the umask.
    pub fn create_with_mode(
        path: impl AsRef<Path>,
        section: &SectionInfo,
        mode: u32,
    ) -> Result<Self, PcapngError> {
        let path = path.as_ref();
        let file = crate::sys::create_private(path, mode).map_err(|e| {
            PcapngError::io(format!("cannot create capture file {}", path.display()), e)
        })?;
        let mut w = Writer::new_inner(file, section, Some(truncate_file));
        w.flush_buf()?;
        Ok(w)
    }

    /// Keeps space allocated past the end of the file for its final application table and
    /// interface statistics, grown as the table grows (see [`Writer::write_app_changes`]).
    /// Once the file system cannot hold the next write plus that space, writes fail with
    /// [`PcapngError::DiskFull`] and the reserve takes what is written after. Returns false
    /// when the file system cannot preallocate (the file is then written without a reserve).
    pub fn keep_reserve(&mut self) -> Result<bool, PcapngError> {
        self.reserve = Some(Reserve {
            allocate: allocate_file,
            bytes: RESERVE_BASE,
            allocated_to: self.committed,
            spent: false,
        });
        if let Err(e) = self.grow_reserve(0) {
            self.reserve = None;
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
                Some(libc::ENOSPC) => Err(PcapngError::DiskFull {
                    kept: self.committed,
                    lost: 0,
                }),
                _ => Err(PcapngError::io(
                    "reserving space for the end of the file",
                    e,
                )),
            };
        }
        Ok(true)
    }
}

fn truncate_file(f: &mut File, len: u64) -> io::Result<()> {
    f.set_len(len)?;
    f.seek(SeekFrom::Start(len)).map(|_| ())
}

fn allocate_file(f: &mut File, offset: u64, len: u64, punch: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mode = libc::FALLOC_FL_KEEP_SIZE | if punch { libc::FALLOC_FL_PUNCH_HOLE } else { 0 };
    // SAFETY: fallocate on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as i64, len as i64) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl<W: Write> Writer<W> {
    /// Starts a section on `out` (the Section Header Block is buffered, written at the next
    /// flush).
    pub fn new(out: W, section: &SectionInfo) -> Result<Self, PcapngError> {
        Ok(Self::new_inner(out, section, None))
    }

    fn new_inner(out: W, section: &SectionInfo, truncate: Option<Truncate<W>>) -> Self {
        let mut buf = Vec::with_capacity(FLUSH_AT + 64 * 1024);
        let mut b = BlockBuilder::begin(&mut buf, block_type::SECTION_HEADER);
        b.u32(BYTE_ORDER_MAGIC);
        b.u16(1);
        b.u16(0);
        b.u64(u64::MAX); // section length unknown (-1)
        b.option_str(opt::SHB_HARDWARE, &section.hardware);
        b.option_str(opt::SHB_OS, &section.os);
        b.option_str(opt::SHB_USERAPPL, &section.userappl);
        b.end_of_options();
        b.finish();
        Writer {
            out: Some(out),
            buf,
            committed: 0,
            interfaces: 0,
            caplimits: Vec::new(),
            os: section.os.clone(),
            app_sequence: 0,
            processes: HashMap::new(),
            tracker: apprecord::ChangeTracker::new(),
            truncate,
            reserve: None,
            buffered_packets: 0,
            packets: 0,
            final_estimate: 0,
        }
    }

    /// Adds an Interface Description Block; returns the interface id packets refer to.
    pub fn add_interface(&mut self, info: &InterfaceInfo) -> Result<u32, PcapngError> {
        let mut b = BlockBuilder::begin(&mut self.buf, block_type::INTERFACE_DESCRIPTION);
        b.u16(info.linktype);
        b.u16(0);
        b.u32(info.snaplen);
        b.option_str(opt::IF_NAME, &info.name);
        b.option(opt::IF_TSRESOL, &[9]);
        if let Some(f) = info.filter.as_deref().filter(|f| !f.is_empty()) {
            // First byte 0: the filter is a libpcap filter string.
            let mut v = Vec::with_capacity(f.len() + 1);
            v.push(0);
            v.extend_from_slice(f.as_bytes());
            b.option(opt::IF_FILTER, &v);
        }
        b.option_str(opt::IF_OS, &self.os);
        b.end_of_options();
        b.finish();
        let id = self.interfaces;
        self.interfaces += 1;
        let snap = info.snaplen as usize;
        self.caplimits.push(if snap == 0 {
            MAX_PACKET_LEN
        } else {
            snap.min(MAX_PACKET_LEN)
        });
        // Packets are unreadable without their interface: put it in the file at once.
        self.flush_buf()?;
        Ok(id)
    }

    /// Writes Wireshark's process entry for `p`; call it before the first packet of the
    /// process. An identical entry already written (same pid, start time and content) is
    /// not written again.
    pub fn write_process(&mut self, p: &ProcessInfo) -> Result<(), PcapngError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            p.pid, p.ppid, p.uid, &p.user, &p.name, &p.exe, &p.cmdline, p.start_ns,
        )
            .hash(&mut h);
        let digest = h.finish();
        if self.processes.insert((p.pid, p.start_ns), digest) == Some(digest) {
            return Ok(());
        }
        process::encode(&mut self.buf, p);
        self.maybe_flush()
    }

    /// Forgets what was written of these sockets and processes (they left the sensor's
    /// memory; see `Ledger::retire`), so that a multi-day file's writer stays bounded. A
    /// socket or process that shows up again is written again; readers merge the copies.
    pub fn forget(&mut self, apps: &[AppRecord], procs: impl Iterator<Item = (u32, u64)>) {
        self.tracker.forget(apps);
        for p in procs {
            self.processes.remove(&p);
        }
    }

    /// True if a process entry for (pid, start time) was written.
    pub fn knows_process(&self, pid: u32, start_ns: u64) -> bool {
        self.processes.contains_key(&(pid, start_ns))
    }

    /// Writes one Enhanced Packet Block with nanosecond timestamp, `epb_flags` (direction)
    /// and, for attributed packets (pid != 0), `epb_processid_threadid`. Data longer than the
    /// interface's snap length (or [`MAX_PACKET_LEN`]) is cut to it.
    #[inline]
    pub fn write_packet(&mut self, p: &Packet<'_>) -> Result<(), PcapngError> {
        let Some(&limit) = self.caplimits.get(p.interface as usize) else {
            return Err(PcapngError::UnknownInterface {
                interface: p.interface,
                count: self.interfaces,
            });
        };
        let data = &p.data[..p.data.len().min(limit)];
        let caplen = data.len();
        let pad = pad4(caplen);
        let has_pid = p.pid != 0;
        let opts = 8 + if has_pid { 12 } else { 0 } + 4;
        let total = 28 + caplen + pad + opts + 4;
        let mut head = [0u8; 28];
        head[0..4].copy_from_slice(&block_type::ENHANCED_PACKET.to_le_bytes());
        head[4..8].copy_from_slice(&(total as u32).to_le_bytes());
        head[8..12].copy_from_slice(&p.interface.to_le_bytes());
        head[12..16].copy_from_slice(&((p.ts_ns >> 32) as u32).to_le_bytes());
        head[16..20].copy_from_slice(&(p.ts_ns as u32).to_le_bytes());
        head[20..24].copy_from_slice(&(caplen as u32).to_le_bytes());
        let orig = p.orig_len.max(p.data.len().min(u32::MAX as usize) as u32);
        head[24..28].copy_from_slice(&orig.to_le_bytes());
        let mut tail = [0u8; 28];
        tail[0..2].copy_from_slice(&opt::EPB_FLAGS.to_le_bytes());
        tail[2..4].copy_from_slice(&4u16.to_le_bytes());
        tail[4..8].copy_from_slice(&p.direction.epb_bits().to_le_bytes());
        let mut n = 8;
        if has_pid {
            tail[8..10].copy_from_slice(&opt::EPB_PROCESSID_THREADID.to_le_bytes());
            tail[10..12].copy_from_slice(&8u16.to_le_bytes());
            tail[12..16].copy_from_slice(&p.pid.to_le_bytes());
            tail[16..20].copy_from_slice(&p.tid.to_le_bytes());
            n = 20;
        }
        // tail[n..n + 4] stays zero: opt_endofopt.
        tail[n + 4..n + 8].copy_from_slice(&(total as u32).to_le_bytes());
        self.buf.reserve(total);
        self.buf.extend_from_slice(&head);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.buf.extend_from_slice(&tail[..n + 8]);
        self.buffered_packets += 1;
        self.maybe_flush()
    }

    /// Writes the application table (or the new and changed records of it) as one or more
    /// application-record blocks sharing a sequence number, and hands them to the output at
    /// once: they are the forensic record and must not wait in the buffer.
    pub fn write_app_records(
        &mut self,
        apps: &[AppRecord],
        final_table: bool,
    ) -> Result<(), PcapngError> {
        apprecord::encode_blocks(&mut self.buf, apps, final_table, self.app_sequence)?;
        self.app_sequence = self.app_sequence.wrapping_add(1);
        self.flush_buf()
    }

    /// Periodic write: compares `table` (the whole current table) with what earlier calls
    /// wrote and writes only new and changed applications and sockets, as one periodic
    /// table write. Returns the number of applications written (0: nothing changed, nothing
    /// written). At a clean stop, call `write_app_records(&table, true)` for the final table.
    pub fn write_app_changes(&mut self, table: &[AppRecord]) -> Result<usize, PcapngError> {
        if self.reserve.is_some() {
            // What the final table would take now; the reserve keeps twice that.
            let mut scratch = Vec::new();
            apprecord::encode_blocks(&mut scratch, table, true, self.app_sequence)?;
            self.final_estimate = scratch.len() as u64;
            if let Some(r) = self.reserve.as_mut() {
                r.bytes = RESERVE_BASE + 2 * self.final_estimate;
            }
        }
        let changes = self.tracker.changes(table);
        if changes.is_empty() {
            return Ok(0);
        }
        self.write_app_records(&changes, false)?;
        Ok(changes.len())
    }

    /// Writes an Interface Statistics Block (usually once per interface at the end).
    pub fn write_interface_stats(
        &mut self,
        interface: u32,
        s: &InterfaceStats,
    ) -> Result<(), PcapngError> {
        self.write_interface_stats_with_comment(interface, s, None)
    }

    /// As [`Self::write_interface_stats`], with an `opt_comment` (UTF-8) after the counters:
    /// the sensor puts its export counters there, where Wireshark shows ISB comments.
    pub fn write_interface_stats_with_comment(
        &mut self,
        interface: u32,
        s: &InterfaceStats,
        comment: Option<&str>,
    ) -> Result<(), PcapngError> {
        if interface >= self.interfaces {
            return Err(PcapngError::UnknownInterface {
                interface,
                count: self.interfaces,
            });
        }
        let ts = |v: u64| {
            let mut a = [0u8; 8];
            a[..4].copy_from_slice(&((v >> 32) as u32).to_le_bytes());
            a[4..].copy_from_slice(&(v as u32).to_le_bytes());
            a
        };
        let mut b = BlockBuilder::begin(&mut self.buf, block_type::INTERFACE_STATISTICS);
        b.u32(interface);
        b.bytes(&ts(s.end_ns));
        b.option(opt::ISB_STARTTIME, &ts(s.start_ns));
        b.option(opt::ISB_ENDTIME, &ts(s.end_ns));
        b.option_u64(opt::ISB_IFRECV, s.received);
        b.option_u64(opt::ISB_IFDROP, s.if_dropped);
        b.option_u64(opt::ISB_FILTERACCEPT, s.filter_accepted);
        b.option_u64(opt::ISB_OSDROP, s.os_dropped);
        b.option_u64(opt::ISB_USRDELIV, s.delivered);
        if let Some(c) = comment {
            b.option(opt::COMMENT, c.as_bytes());
        }
        b.end_of_options();
        b.finish();
        self.maybe_flush()
    }

    /// Number of interfaces added so far.
    pub fn interface_count(&self) -> u32 {
        self.interfaces
    }

    /// Bytes that reached the output (always the end of a complete block).
    pub fn bytes_written(&self) -> u64 {
        self.committed
    }

    /// Packets that reached the output.
    pub fn packets_written(&self) -> u64 {
        self.packets
    }

    /// The size the output will have once the buffer is flushed (for size-based rotation).
    pub fn len_with_buffered(&self) -> u64 {
        self.committed + self.buf.len() as u64
    }

    /// Bytes kept past the end of the file for its end (0 without a reserve).
    pub fn reserve_bytes(&self) -> u64 {
        self.reserve.as_ref().map_or(0, |r| r.bytes)
    }

    /// True once the file system was found full: only the end of the file belongs there now.
    pub fn disk_full(&self) -> bool {
        self.reserve.as_ref().is_some_and(|r| r.spent)
    }

    /// Gives the space allocated past the end of the file back to the file system (call
    /// once the file is complete; dropping the writer does it too).
    pub fn release_reserve(&mut self) {
        // Truncating to the current length frees what lies past the end on ext4 and tmpfs;
        // a punched hole past the end is a no-op on ext4, so it only backs the truncation up.
        if let (Some(r), Some(out)) = (self.reserve.take(), self.out.as_mut())
            && r.allocated_to > self.committed
        {
            if let Some(cut) = self.truncate {
                let _ = cut(out, self.committed);
            }
            let _ = (r.allocate)(out, self.committed, r.allocated_to - self.committed, true);
        }
    }

    /// Allocates `extra` bytes past the end of the file plus the reserve.
    fn grow_reserve(&mut self, extra: u64) -> io::Result<()> {
        let (Some(r), Some(out)) = (self.reserve.as_mut(), self.out.as_mut()) else {
            return Ok(());
        };
        let want = self.committed + extra + r.bytes;
        if want > r.allocated_to {
            (r.allocate)(out, self.committed, extra + r.bytes, false)?;
            r.allocated_to = want;
        }
        Ok(())
    }

    /// Hands all buffered blocks to the output and flushes it.
    pub fn flush(&mut self) -> Result<(), PcapngError> {
        self.flush_buf()?;
        if let Some(out) = self.out.as_mut() {
            out.flush()
                .map_err(|e| PcapngError::io("flushing the capture output", e))?;
        }
        Ok(())
    }

    /// Flushes and returns the output.
    pub fn into_inner(mut self) -> Result<W, PcapngError> {
        self.flush()?;
        self.out.take().ok_or_else(|| {
            PcapngError::io(
                "returning the capture output",
                io::Error::other("output already taken"),
            )
        })
    }

    #[inline]
    fn maybe_flush(&mut self) -> Result<(), PcapngError> {
        if self.buf.len() >= FLUSH_AT {
            self.flush_buf()
        } else {
            Ok(())
        }
    }

    fn flush_buf(&mut self) -> Result<(), PcapngError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.reserve.as_ref().is_some_and(|r| !r.spent) {
            let need = self.buf.len() as u64;
            if let Err(e) = self.grow_reserve(need) {
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    // The reserve from the last write is intact: stop here, keep it for
                    // the end of the file.
                    let lost = self.buf.len();
                    self.buf.clear();
                    self.buffered_packets = 0;
                    if let Some(r) = self.reserve.as_mut() {
                        r.spent = true;
                    }
                    return Err(PcapngError::DiskFull {
                        kept: self.committed,
                        lost,
                    });
                }
                log::warn!(
                    "cannot keep space for the end of the capture file ({e}); going on without"
                );
                self.reserve = None;
            }
        }
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        match out.write_all(&self.buf) {
            Ok(()) => {
                self.committed += self.buf.len() as u64;
                self.packets += std::mem::take(&mut self.buffered_packets);
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                let lost = self.buf.len();
                self.buf.clear();
                self.buffered_packets = 0;
                let context = match self.truncate {
                    Some(cut) => match cut(out, self.committed) {
                        Ok(()) => format!(
                            "writing the capture failed; the file was cut back to its last \
                             complete block at byte {} ({lost} buffered bytes lost). Free space \
                             or choose another output",
                            self.committed
                        ),
                        Err(te) => format!(
                            "writing the capture failed, and cutting the file back to byte {} \
                             failed too ({te}); cut it with pcapng::repair_file before reading it",
                            self.committed
                        ),
                    },
                    None => format!(
                        "writing the capture failed after byte {} ({lost} buffered bytes lost)",
                        self.committed
                    ),
                };
                Err(PcapngError::io(context, e))
            }
        }
    }
}

impl<W: Write> Drop for Writer<W> {
    fn drop(&mut self) {
        // Best effort, like BufWriter: call flush() to see errors.
        if self.out.is_some() {
            let _ = self.flush();
            self.release_reserve();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Direction;

    #[test]
    fn attributed_64_byte_packet_is_a_120_byte_block_as_format_md_says() {
        let mut w = Writer::new(Vec::new(), &SectionInfo::detect()).expect("writer");
        w.add_interface(&InterfaceInfo {
            name: "lo".into(),
            linktype: 1,
            snaplen: 65535,
            filter: None,
        })
        .expect("idb");
        let before = w.bytes_written() as usize;
        let data = [0xabu8; 64];
        w.write_packet(&Packet {
            ts_ns: 0x0102_0304_0506_0708,
            interface: 0,
            orig_len: 64,
            data: &data,
            direction: Direction::Outbound,
            pid: 0x11,
            tid: 0x22,
        })
        .expect("packet");
        let bytes = w.into_inner().expect("bytes");
        let epb = &bytes[before..];
        assert_eq!(epb.len(), 120);
        let u32_at = |o: usize| u32::from_le_bytes(epb[o..o + 4].try_into().expect("4"));
        assert_eq!(u32_at(0), 6);
        assert_eq!(u32_at(4), 120);
        assert_eq!(u32_at(116), 120);
        assert_eq!((u32_at(12), u32_at(16)), (0x0102_0304, 0x0506_0708));
        assert_eq!(&epb[92..100], &[2, 0, 4, 0, 2, 0, 0, 0]);
        assert_eq!(&epb[100..112], &[8, 0, 8, 0, 0x11, 0, 0, 0, 0x22, 0, 0, 0]);
        assert_eq!(&epb[112..116], &[0, 0, 0, 0]);
    }

    #[test]
    fn packet_on_unknown_interface_is_refused() {
        let mut w = Writer::new(Vec::new(), &SectionInfo::detect()).expect("writer");
        let r = w.write_packet(&Packet {
            ts_ns: 1,
            interface: 0,
            orig_len: 1,
            data: &[0],
            direction: Direction::Unknown,
            pid: 0,
            tid: 0,
        });
        assert!(matches!(r, Err(PcapngError::UnknownInterface { .. })));
    }
}
