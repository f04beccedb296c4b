//! The per-process entry that current Wireshark reads: a copyable Custom Block under
//! Wireshark's PEN whose data is always little-endian (see docs/FORMAT.md).
use super::block::{BlockBuilder, Cursor};
use super::{PcapngError, WIRESHARK_PEN, block_type};
use crate::{bytes, model::ProcessInfo};

/// `entry_type` of a process-information entry.
pub const ENTRY_PROCESS: u32 = 3;

/// Option codes inside the entry.
pub mod opt {
    pub const NAME: u16 = 2;
    pub const PATH: u16 = 3;
    pub const CMDLINE: u16 = 4;
    pub const PPID: u16 = 5;
    pub const UID: u16 = 6;
    pub const USER: u16 = 7;
    pub const UUID: u16 = 8;
    pub const START_TIME: u16 = 9;
}

/// Appends the whole Custom Block for `p` to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, p: &ProcessInfo) {
    let mut b = BlockBuilder::begin(buf, block_type::CUSTOM_COPY);
    b.u32(WIRESHARK_PEN);
    // The entry is built separately to know entry_len before writing it.
    let mut body = Vec::with_capacity(128);
    {
        let mut e = BlockBuilder::begin(&mut body, 0);
        e.u32(p.pid);
        e.option_str(opt::NAME, &p.name);
        e.option_str(opt::PATH, &p.exe);
        if !p.cmdline.is_empty() {
            e.option(opt::CMDLINE, p.cmdline.join("\0").as_bytes());
        }
        e.option_u32(opt::PPID, p.ppid);
        e.option_u32(opt::UID, p.uid);
        e.option_str(opt::USER, &p.user);
        if p.start_ns != 0 {
            e.option_u64(opt::START_TIME, p.start_ns);
        }
        e.end_of_options();
        e.finish();
    }
    // Drop the helper's 8-byte header and 4-byte trailer: only the entry body remains.
    let entry = &body[8..body.len() - 4];
    b.u32(ENTRY_PROCESS);
    b.u32(entry.len() as u32);
    b.bytes(entry);
    b.finish();
}

/// Decodes the custom data (after the PEN) of a Wireshark-PEN block. `Ok(None)` for entry
/// types other than process information.
pub fn decode(data: &[u8], offset: u64) -> Result<Option<ProcessInfo>, PcapngError> {
    let mut c = Cursor::new(data, offset, false);
    let entry_type = c.u32("process entry type")?;
    if entry_type != ENTRY_PROCESS {
        return Ok(None);
    }
    let len = c.u32("process entry length")? as usize;
    let entry = c.take(len, "process entry")?;
    let mut c = Cursor::new(entry, c.offset() - len as u64, false);
    let mut p = ProcessInfo {
        pid: c.u32("process id")?,
        ..ProcessInfo::default()
    };
    for o in c.options() {
        let (code, v) = o?;
        match code {
            opt::NAME => p.name = String::from_utf8_lossy(v).into_owned(),
            opt::PATH => p.exe = String::from_utf8_lossy(v).into_owned(),
            opt::CMDLINE => {
                p.cmdline = v
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            }
            opt::PPID => p.ppid = le_u32(v).unwrap_or(0),
            opt::UID => p.uid = le_u32(v).unwrap_or(0),
            opt::USER => p.user = String::from_utf8_lossy(v).into_owned(),
            opt::START_TIME => p.start_ns = le_u64(v).unwrap_or(0),
            _ => {}
        }
    }
    Ok(Some(p))
}

/// An option value that is exactly one little-endian integer.
fn le_u32(v: &[u8]) -> Option<u32> {
    bytes::le32(v, 0).filter(|_| v.len() == 4)
}

fn le_u64(v: &[u8]) -> Option<u64> {
    bytes::le64(v, 0).filter(|_| v.len() == 8)
}
