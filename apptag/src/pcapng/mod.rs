//! pcapng output and input: the file is the product's contract with its users.
//!
//! - [`Writer`] writes little-endian sections: SHB, IDBs, EPBs with `epb_flags` and
//!   `epb_processid_threadid`, Wireshark's per-process custom entries, our application-record
//!   custom block and ISBs. Only whole blocks ever reach the file.
//! - [`Reader`] walks a byte slice (usually a [`Mapped`] file) without copying packet data.
//! - [`AppTable`] merges the periodic application-record blocks into one table.
//!
//! The byte layout of everything written here is in docs/FORMAT.md.

pub mod apprecord;
pub mod apps;
mod block;
pub mod process;
pub mod reader;
pub mod writer;

use std::path::Path;

pub use apprecord::{AppTable, ChangeTracker, merge_app_records};
pub use reader::{Reader, Record};
pub use writer::{SectionInfo, Writer};

/// Block types we write or recognise.
pub mod block_type {
    pub const SECTION_HEADER: u32 = 0x0A0D_0D0A;
    pub const INTERFACE_DESCRIPTION: u32 = 1;
    /// Obsolete Packet Block (read only).
    pub const PACKET: u32 = 2;
    pub const SIMPLE_PACKET: u32 = 3;
    pub const INTERFACE_STATISTICS: u32 = 5;
    pub const ENHANCED_PACKET: u32 = 6;
    /// Custom Block that a re-writer may copy (we write only this one).
    pub const CUSTOM_COPY: u32 = 0x0000_0BAD;
    /// Custom Block that a re-writer must not copy (read for files from older tools).
    pub const CUSTOM_NO_COPY: u32 = 0x4000_0BAD;
}

/// Private Enterprise Number of our application-record block. apptag has no IANA PEN yet;
/// 32473 is the PEN RFC 5612 reserves for documentation, so it collides with nobody's
/// production data. The magic and version inside the block data guard against misreading
/// someone else's example block. Changing this constant is a format change (see FORMAT.md).
pub const APPTAG_PEN: u32 = 32473;

/// Wireshark's PEN: the per-process custom entries that current Wireshark reads.
pub const WIRESHARK_PEN: u32 = 32622;

/// Byte-order magic of a Section Header Block.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// No block we write is larger than this (the application-record table is split to fit).
pub const MAX_APP_BLOCK_LEN: usize = 64 * 1024;

/// Everything that can go wrong writing or reading pcapng.
#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The input is not valid pcapng at `offset` (byte offset of the block or field).
    #[error("corrupt pcapng at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
    /// The input ends inside a block: everything before `offset` is usable.
    #[error(
        "truncated pcapng at byte {offset}: {what} needs {needed} bytes, only {available} left \
         (the writer was probably killed; everything before byte {offset} is intact)"
    )]
    Truncated {
        offset: u64,
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error(
        "packet refers to interface {interface}, but only {count} were added (call add_interface first)"
    )]
    UnknownInterface { interface: u32, count: u32 },
    #[error("{what} is too large for pcapng ({len} bytes, at most {max})")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The file system has no room for the next write beyond the space kept for the end of
    /// the file: nothing more should be written but the final table and the statistics.
    #[error(
        "the file system is full: the capture stops at byte {kept} ({lost} buffered bytes not \
         written); the space kept in reserve holds the final application table and statistics"
    )]
    DiskFull { kept: u64, lost: usize },
}

impl PcapngError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PcapngError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A capture file mapped into memory: the one way the crate opens a file to read it, so
/// only the pages being read are resident.
pub struct Mapped {
    // An empty file cannot be mapped; it reads as an empty slice instead.
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    /// Maps `path` read-only. The error names the step that failed (`open`, `stat`, `map`),
    /// for the caller's message.
    pub fn open(path: &Path) -> Result<Mapped, (&'static str, std::io::Error)> {
        let file = std::fs::File::open(path).map_err(|e| ("open", e))?;
        let len = file.metadata().map_err(|e| ("stat", e))?.len();
        if len == 0 {
            return Ok(Mapped { map: None });
        }
        // SAFETY: the map is read-only; the file is only appended to by writers, never
        // shrunk while we read (documented on `open_file`). If another process truncates it
        // anyway, access faults (SIGBUS): the accepted price of mapping captures, as in
        // every mmap-based pcap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ("map", e))?;
        Ok(Mapped { map: Some(map) })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn reader(&self) -> Result<Reader<'_>, PcapngError> {
        Reader::new(self.bytes())
    }

    /// Tells the kernel the file is read front to back (more read-ahead).
    pub fn advise_sequential(&self) {
        if let Some(map) = &self.map {
            let _ = map.advise(memmap2::Advice::Sequential);
        }
    }

    /// Drops the pages before `offset` from this process's resident set, so reading a file
    /// bigger than memory costs page cache, not RSS. They come back (from the page cache)
    /// if touched again.
    pub fn release_before(&self, offset: usize) {
        const PAGE: usize = 4096;
        let len = offset / PAGE * PAGE;
        if let Some(map) = &self.map
            && len > 0
            && len <= map.len()
        {
            // SAFETY: the mapping is read-only and file-backed: MADV_DONTNEED only unmaps
            // the pages, and any later access faults the same file contents back in, so
            // slices borrowed from this range stay valid.
            let _ =
                unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, len) };
        }
    }
}

/// Maps a capture file read-only. The file must not be truncated while mapped (a capture
/// still being written only grows, which is fine).
pub fn open_file(path: impl AsRef<Path>) -> Result<Mapped, PcapngError> {
    let path = path.as_ref();
    Mapped::open(path)
        .map_err(|(step, e)| PcapngError::io(format!("cannot {step} {}", path.display()), e))
}

/// Cuts a damaged file (killed writer, full disk) back to its last complete block, so tools
/// that reject a partial last block read it again. Returns the new length.
pub fn repair_file(path: impl AsRef<Path>) -> Result<u64, PcapngError> {
    let path = path.as_ref();
    let good = {
        let mapped = open_file(path)?;
        reader::valid_prefix_len(mapped.bytes())
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| PcapngError::io(format!("cannot open {} for writing", path.display()), e))?;
    file.set_len(good)
        .map_err(|e| PcapngError::io(format!("cannot truncate {}", path.display()), e))?;
    Ok(good)
}
