//! The tests' own pcapng block and option reader, written from the pcapng specification
//! (draft-ietf-opsawg-pcapng) and importing nothing from `apptag`: the per-packet pid, tid,
//! timestamp, direction and linktype that the sensor tests judge are read here, so a bug
//! shared by apptag's writer and reader cannot pass them.
//!
//! Only what the tests need: Section Header, Interface Description (linktype, if_tsresol),
//! Enhanced Packet (interface, timestamp, lengths, data, epb_flags, epb_processid_threadid)
//! and Simple Packet blocks, in either byte order. Every other block is counted and skipped.
use std::path::Path;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const SPB: u32 = 3;
const EPB: u32 = 6;
const ISB: u32 = 5;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
/// epb_processid_threadid: 32-bit process id then 32-bit thread id.
const EPB_PID_TID: u16 = 8;

/// One interface of a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub linktype: u16,
    pub snaplen: u32,
    /// Timestamp units per second (10^6 unless if_tsresol says otherwise).
    pub units_per_sec: u64,
}

/// One packet block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epb {
    /// Index of the section (0 for the first) the packet is in.
    pub section: usize,
    pub interface: u32,
    pub linktype: u16,
    pub ts_ns: u64,
    pub caplen: u32,
    pub orig_len: u32,
    pub data: Vec<u8>,
    /// epb_flags, if present.
    pub flags: Option<u32>,
    /// epb_processid_threadid, if present: (pid, tid).
    pub pid_tid: Option<(u32, u32)>,
}

impl Epb {
    pub fn pid(&self) -> u32 {
        self.pid_tid.map_or(0, |p| p.0)
    }

    pub fn tid(&self) -> u32 {
        self.pid_tid.map_or(0, |p| p.1)
    }

    /// epb_flags bits 0-1: 1 inbound, 2 outbound, 0 unknown or absent.
    pub fn direction(&self) -> u32 {
        self.flags.map_or(0, |f| f & 3)
    }
}

/// Everything read from one file.
#[derive(Clone, Debug, Default)]
pub struct PcapngFile {
    pub packets: Vec<Epb>,
    pub sections: usize,
    /// Interfaces of every section, in order.
    pub interfaces: Vec<Vec<Iface>>,
    /// Blocks of other types: (type, count). Interface Statistics Blocks are counted here
    /// too, and their comments also kept in `isb_comments`.
    pub other_blocks: Vec<(u32, usize)>,
    /// (section, interface, opt_comment) of every comment of an Interface Statistics Block.
    pub isb_comments: Vec<(usize, u32, String)>,
}

impl PcapngFile {
    pub fn count_of(&self, block_type: u32) -> usize {
        self.other_blocks
            .iter()
            .find(|(t, _)| *t == block_type)
            .map_or(0, |(_, n)| *n)
    }
}

#[derive(Clone, Copy)]
struct Order {
    big: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Result<u16, String> {
        let s: [u8; 2] = b
            .get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("short read of 2 bytes at {at}"))?;
        Ok(if self.big {
            u16::from_be_bytes(s)
        } else {
            u16::from_le_bytes(s)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Result<u32, String> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("short read of 4 bytes at {at}"))?;
        Ok(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
}

/// (code, value) pairs of an options area, up to opt_endofopt or the end.
fn options(o: Order, b: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let code = o.u16(b, at)?;
        let len = usize::from(o.u16(b, at + 2)?);
        if code == OPT_ENDOFOPT {
            break;
        }
        let val = b
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| format!("option {code} of {len} bytes runs past its block"))?;
        v.push((code, val.to_vec()));
        at += 4 + len.div_ceil(4) * 4;
    }
    Ok(v)
}

fn units_per_sec(tsresol: u8) -> Result<u64, String> {
    let exp = u32::from(tsresol & 0x7f);
    let base: u64 = if tsresol & 0x80 != 0 { 2 } else { 10 };
    base.checked_pow(exp)
        .ok_or_else(|| format!("if_tsresol {tsresol:#x} out of range"))
}

/// Parses a whole pcapng file. Any structural error is returned with its offset.
pub fn parse(bytes: &[u8]) -> Result<PcapngFile, String> {
    let mut f = PcapngFile::default();
    let mut o = Order { big: false };
    let mut at = 0usize;
    while at < bytes.len() {
        let raw_type = bytes
            .get(at..at + 4)
            .ok_or_else(|| format!("truncated block header at {at}"))?;
        let btype_le = u32::from_le_bytes(raw_type.try_into().map_err(|_| "header")?);
        if btype_le == SHB {
            let magic = bytes
                .get(at + 8..at + 12)
                .ok_or_else(|| format!("truncated section header at {at}"))?;
            o.big = match u32::from_le_bytes(magic.try_into().map_err(|_| "magic")?) {
                BYTE_ORDER_MAGIC => false,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                m => return Err(format!("bad byte-order magic {m:#x} at {at}")),
            };
        }
        let btype = o.u32(bytes, at)?;
        let total = o.u32(bytes, at + 4)? as usize;
        if total < 12 || !total.is_multiple_of(4) || at + total > bytes.len() {
            return Err(format!(
                "block of type {btype:#x} at {at} has length {total}"
            ));
        }
        let trailer = o.u32(bytes, at + total - 4)? as usize;
        if trailer != total {
            return Err(format!(
                "block at {at}: leading length {total} != trailing {trailer}"
            ));
        }
        let body = &bytes[at + 8..at + total - 4];
        match btype {
            SHB => {
                f.sections += 1;
                f.interfaces.push(Vec::new());
            }
            IDB => {
                let linktype = o.u16(body, 0)?;
                let snaplen = o.u32(body, 4)?;
                let mut units = 1_000_000;
                for (code, val) in options(o, body.get(8..).unwrap_or(&[]))? {
                    if code == IF_TSRESOL {
                        units = units_per_sec(*val.first().ok_or("empty if_tsresol")?)?;
                    }
                }
                f.interfaces
                    .last_mut()
                    .ok_or_else(|| format!("interface block before any section at {at}"))?
                    .push(Iface {
                        linktype,
                        snaplen,
                        units_per_sec: units,
                    });
            }
            EPB => {
                let interface = o.u32(body, 0)?;
                let ts = (u64::from(o.u32(body, 4)?) << 32) | u64::from(o.u32(body, 8)?);
                let caplen = o.u32(body, 12)?;
                let orig_len = o.u32(body, 16)?;
                let data = body
                    .get(20..20 + caplen as usize)
                    .ok_or_else(|| format!("packet data of {caplen} bytes past block at {at}"))?;
                let opts_at = 20 + (caplen as usize).div_ceil(4) * 4;
                let section = f.sections.saturating_sub(1);
                let iface = f
                    .interfaces
                    .get(section)
                    .and_then(|s| s.get(interface as usize))
                    .ok_or_else(|| format!("packet at {at} names unknown interface {interface}"))?;
                let mut p = Epb {
                    section,
                    interface,
                    linktype: iface.linktype,
                    ts_ns: to_ns(ts, iface.units_per_sec),
                    caplen,
                    orig_len,
                    data: data.to_vec(),
                    flags: None,
                    pid_tid: None,
                };
                for (code, val) in options(o, body.get(opts_at..).unwrap_or(&[]))? {
                    match code {
                        EPB_FLAGS => p.flags = Some(o.u32(&val, 0)?),
                        EPB_PID_TID => p.pid_tid = Some((o.u32(&val, 0)?, o.u32(&val, 4)?)),
                        _ => {}
                    }
                }
                f.packets.push(p);
            }
            SPB => {
                let orig_len = o.u32(body, 0)?;
                let section = f.sections.saturating_sub(1);
                let iface = f
                    .interfaces
                    .get(section)
                    .and_then(|s| s.first())
                    .ok_or_else(|| format!("simple packet at {at} with no interface"))?;
                let caplen = orig_len
                    .min(iface.snaplen.max(1))
                    .min(body.len() as u32 - 4);
                f.packets.push(Epb {
                    section,
                    interface: 0,
                    linktype: iface.linktype,
                    ts_ns: 0,
                    caplen,
                    orig_len,
                    data: body[4..4 + caplen as usize].to_vec(),
                    flags: None,
                    pid_tid: None,
                });
            }
            ISB => {
                let interface = o.u32(body, 0)?;
                let section = f.sections.saturating_sub(1);
                // interface id, then the 64-bit timestamp, then the options.
                for (code, val) in options(o, body.get(12..).unwrap_or(&[]))? {
                    if code == OPT_COMMENT {
                        let text = String::from_utf8(val)
                            .map_err(|_| format!("ISB comment at {at} is not UTF-8"))?;
                        f.isb_comments.push((section, interface, text));
                    }
                }
                match f.other_blocks.iter_mut().find(|(t, _)| *t == ISB) {
                    Some((_, n)) => *n += 1,
                    None => f.other_blocks.push((ISB, 1)),
                }
            }
            other => match f.other_blocks.iter_mut().find(|(t, _)| *t == other) {
                Some((_, n)) => *n += 1,
                None => f.other_blocks.push((other, 1)),
            },
        }
        at += total;
    }
    Ok(f)
}

fn to_ns(ts: u64, units_per_sec: u64) -> u64 {
    if units_per_sec == 1_000_000_000 {
        ts
    } else {
        (u128::from(ts) * 1_000_000_000 / u128::from(units_per_sec.max(1))) as u64
    }
}

/// Reads and parses `path`; a file the reader rejects fails the test.
pub fn read(path: &Path) -> PcapngFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse(&bytes).unwrap_or_else(|e| panic!("{} is not valid pcapng: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(btype: u32, body: &[u8]) -> Vec<u8> {
        let total = (12 + body.len()) as u32;
        let mut b = btype.to_le_bytes().to_vec();
        b.extend(total.to_le_bytes());
        b.extend(body);
        b.extend(total.to_le_bytes());
        b
    }

    /// A file built byte by byte from the specification's layout.
    #[test]
    fn reads_pid_tid_flags_and_nanosecond_stamps() {
        let mut shb = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        shb.extend([1, 0, 0, 0]);
        shb.extend((-1i64).to_le_bytes());
        let mut idb = vec![1, 0, 0, 0];
        idb.extend(65535u32.to_le_bytes());
        idb.extend([9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        let mut epb = 0u32.to_le_bytes().to_vec();
        let ts: u64 = 1_700_000_000_123_456_789;
        epb.extend(((ts >> 32) as u32).to_le_bytes());
        epb.extend((ts as u32).to_le_bytes());
        epb.extend(3u32.to_le_bytes());
        epb.extend(60u32.to_le_bytes());
        epb.extend([0xaa, 0xbb, 0xcc, 0]);
        epb.extend([2, 0, 4, 0, 2, 0, 0, 0]);
        epb.extend([8, 0, 8, 0]);
        epb.extend(4242u32.to_le_bytes());
        epb.extend(4343u32.to_le_bytes());
        epb.extend([0, 0, 0, 0]);
        let mut file = block(SHB, &shb);
        file.extend(block(IDB, &idb));
        file.extend(block(EPB, &epb));
        file.extend(block(0x0BAD, &[0; 4]));
        let f = parse(&file).expect("valid");
        assert_eq!(f.packets.len(), 1);
        let p = &f.packets[0];
        assert_eq!(p.pid_tid, Some((4242, 4343)));
        assert_eq!((p.ts_ns, p.caplen, p.orig_len), (ts, 3, 60));
        assert_eq!(p.data, [0xaa, 0xbb, 0xcc]);
        assert_eq!(p.direction(), 2);
        assert_eq!(f.count_of(0x0BAD), 1);
    }
}
