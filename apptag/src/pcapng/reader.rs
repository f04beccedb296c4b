//! Zero-copy pcapng reader over a byte slice. Packets borrow their data from the slice; no
//! allocation happens per packet. Both byte orders, several sections, Simple and obsolete
//! Packet Blocks and any `if_tsresol` are handled (timestamps come out in ns).
//!
//! Errors: a damaged block structure (bad length, truncation) ends the iteration with an
//! error naming the byte offset; everything returned before it is valid. A damaged block
//! *content* (e.g. a corrupt application record inside an intact block) is returned as an
//! error for that block, and reading goes on with the next block.
use super::block::Cursor;
use super::{
    APPTAG_PEN, BYTE_ORDER_MAGIC, PcapngError, WIRESHARK_PEN, apprecord, block_type, process,
};
use crate::bytes;
use crate::model::{AppRecord, Direction, InterfaceInfo, InterfaceStats, Packet, ProcessInfo};

/// One block of the file, decoded.
#[derive(Clone, Debug)]
pub enum Record<'a> {
    Packet(Packet<'a>),
    Interface(InterfaceInfo),
    /// A Wireshark process-information entry.
    Process(ProcessInfo),
    /// One application-record block (one part of a table write).
    AppRecords {
        sequence: u32,
        final_table: bool,
        part: u16,
        parts: u16,
        apps: Vec<AppRecord>,
    },
    InterfaceStats {
        interface: u32,
        stats: InterfaceStats,
    },
    /// A new section starts: interface ids restart at 0.
    Section,
    /// Any other block (name resolution, secrets, other vendors' custom blocks...).
    Other {
        block_type: u32,
    },
}

/// Converts an interface's timestamp units to ns.
#[derive(Clone, Copy, Debug)]
enum TsConv {
    Mul(u64),
    Div(u64),
    /// 2^-n seconds per unit.
    Pow2(u8),
}

#[derive(Clone, Copy, Debug)]
struct IfTime {
    conv: TsConv,
    /// if_tsoffset, in ns.
    offset_ns: i128,
}

impl IfTime {
    const NS: IfTime = IfTime {
        conv: TsConv::Mul(1),
        offset_ns: 0,
    };

    fn from_tsresol(r: u8) -> Option<TsConv> {
        if r & 0x80 != 0 {
            let n = r & 0x7f;
            return (n <= 64).then_some(TsConv::Pow2(n));
        }
        match r {
            0..=9 => Some(TsConv::Mul(10u64.pow(9 - u32::from(r)))),
            10..=19 => Some(TsConv::Div(10u64.pow(u32::from(r) - 9))),
            _ => None,
        }
    }

    #[inline]
    fn ns(&self, units: u64) -> u64 {
        let v: i128 = match self.conv {
            TsConv::Mul(1) if self.offset_ns == 0 => return units,
            TsConv::Mul(m) => i128::from(units) * i128::from(m),
            TsConv::Div(d) => i128::from(units / d),
            TsConv::Pow2(n) => ((u128::from(units) * 1_000_000_000) >> n) as i128,
        };
        (v + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

/// Reads the blocks of a pcapng file held in memory.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    big_endian: bool,
    interfaces: Vec<InterfaceInfo>,
    times: Vec<IfTime>,
    done: bool,
}

impl<'a> Reader<'a> {
    /// Checks that `data` starts with a Section Header Block. The first record returned is
    /// [`Record::Section`].
    pub fn new(data: &'a [u8]) -> Result<Reader<'a>, PcapngError> {
        if data.len() < 12 {
            return Err(PcapngError::Truncated {
                offset: 0,
                what: "section header block",
                needed: 12,
                available: data.len() as u64,
            });
        }
        let c = Cursor::new(data, 0, false);
        let mut c2 = c;
        let t = c2.u32("block type")?;
        if t != block_type::SECTION_HEADER {
            return Err(c.corrupt(format!(
                "not a pcapng file: it starts with 0x{t:08x}, not a Section Header Block \
                 (0x0a0d0d0a); classic pcap files are not read here (convert with editcap -F pcapng)"
            )));
        }
        Ok(Reader {
            data,
            pos: 0,
            big_endian: false,
            interfaces: Vec::new(),
            times: Vec::new(),
            done: false,
        })
    }

    /// Interfaces of the current section, by id.
    pub fn interfaces(&self) -> &[InterfaceInfo] {
        &self.interfaces
    }

    /// Byte offset of the next block (after a structural error: of the damaged block).
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// True when the section being read is big-endian.
    pub fn big_endian(&self) -> bool {
        self.big_endian
    }

    /// The next block, `None` at the end of the data or after a structural error.
    pub fn next_record(&mut self) -> Option<Result<Record<'a>, PcapngError>> {
        if self.done || self.pos >= self.data.len() {
            return None;
        }
        let off = self.pos;
        let avail = self.data.len() - off;
        let fatal = |this: &mut Self, e: PcapngError| {
            this.done = true;
            Some(Err(e))
        };
        if avail < 12 {
            return fatal(
                self,
                PcapngError::Truncated {
                    offset: off as u64,
                    what: "block header",
                    needed: 12,
                    available: avail as u64,
                },
            );
        }
        let is_shb = bytes::le32(self.data, off) == Some(block_type::SECTION_HEADER);
        if is_shb {
            let m = self.data.get(off + 8..off + 12).unwrap_or(&[]);
            if bytes::le32(m, 0) == Some(BYTE_ORDER_MAGIC) {
                self.big_endian = false;
            } else if bytes::be32(m, 0) == Some(BYTE_ORDER_MAGIC) {
                self.big_endian = true;
            } else {
                return fatal(
                    self,
                    PcapngError::Corrupt {
                        offset: off as u64 + 8,
                        what: format!(
                            "section header has byte-order magic {m:02x?}, expected 1a2b3c4d \
                             in either byte order"
                        ),
                    },
                );
            }
        }
        let btype = self.rd32(self.data, off);
        let len = self.rd32(self.data, off + 4) as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return fatal(
                self,
                PcapngError::Corrupt {
                    offset: off as u64 + 4,
                    what: format!(
                        "block of type 0x{btype:08x} has length {len}; a block length is a \
                         multiple of 4 and at least 12"
                    ),
                },
            );
        }
        if len > avail {
            return fatal(
                self,
                PcapngError::Truncated {
                    offset: off as u64,
                    what: "block",
                    needed: len as u64,
                    available: avail as u64,
                },
            );
        }
        let trailer = self.rd32(self.data, off + len - 4) as usize;
        if trailer != len {
            return fatal(
                self,
                PcapngError::Corrupt {
                    offset: (off + len - 4) as u64,
                    what: format!(
                        "block of type 0x{btype:08x} starts with length {len} but ends with \
                         length {trailer}"
                    ),
                },
            );
        }
        let body = &self.data[off + 8..off + len - 4];
        let body_off = off as u64 + 8;
        self.pos = off + len;
        let res = match btype {
            block_type::ENHANCED_PACKET => self.epb(body, body_off),
            block_type::SECTION_HEADER => match self.shb(body, body_off) {
                Ok(r) => Ok(r),
                Err(e) => {
                    self.pos = off;
                    return fatal(self, e);
                }
            },
            block_type::INTERFACE_DESCRIPTION => self.idb(body, body_off),
            block_type::SIMPLE_PACKET => self.spb(body, body_off),
            block_type::PACKET => self.pb(body, body_off),
            block_type::INTERFACE_STATISTICS => self.isb(body, body_off),
            block_type::CUSTOM_COPY | block_type::CUSTOM_NO_COPY => {
                self.custom(btype, body, body_off)
            }
            other => Ok(Record::Other { block_type: other }),
        };
        Some(res)
    }

    fn shb(&mut self, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        let mut c = Cursor::new(body, off, self.big_endian);
        c.skip(4, "byte-order magic")?;
        let major = c.u16("major version")?;
        if major != 1 {
            return Err(c.corrupt(format!(
                "section major version {major}; only version 1 exists"
            )));
        }
        self.interfaces.clear();
        self.times.clear();
        Ok(Record::Section)
    }

    fn idb(&mut self, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        let mut c = Cursor::new(body, off, self.big_endian);
        let linktype = c.u16("link type")?;
        c.skip(2, "reserved")?;
        let snaplen = c.u32("snap length")?;
        let mut info = InterfaceInfo {
            name: String::new(),
            linktype,
            snaplen,
            filter: None,
        };
        let mut time = IfTime::NS;
        // Without if_tsresol the resolution is microseconds.
        time.conv = TsConv::Mul(1000);
        let opts_off = c.offset();
        for o in c.options() {
            let (code, v) = o?;
            match code {
                2 => info.name = String::from_utf8_lossy(v).into_owned(),
                9 => {
                    let r = v.first().copied().unwrap_or(6);
                    time.conv = IfTime::from_tsresol(r).ok_or_else(|| PcapngError::Corrupt {
                        offset: opts_off,
                        what: format!("interface has if_tsresol 0x{r:02x}, which is out of range"),
                    })?;
                }
                11 if !v.is_empty() => {
                    info.filter = Some(String::from_utf8_lossy(&v[1..]).into_owned())
                }
                14 if v.len() == 8 => {
                    let secs = self.rd64(v, 0) as i64;
                    time.offset_ns = i128::from(secs) * 1_000_000_000;
                }
                _ => {}
            }
        }
        self.interfaces.push(info.clone());
        self.times.push(time);
        Ok(Record::Interface(info))
    }

    fn time_of(&self, interface: u32, off: u64) -> Result<&IfTime, PcapngError> {
        self.times
            .get(interface as usize)
            .ok_or_else(|| PcapngError::Corrupt {
                offset: off,
                what: format!(
                    "block refers to interface {interface}, but the section has {} interface(s)",
                    self.times.len()
                ),
            })
    }

    // Fields in the section's byte order. Every caller has checked the bounds first (the
    // hot path cannot afford a Result per field), so a short read, which cannot happen,
    // reads as 0 rather than panicking.
    #[inline(always)]
    fn rd16(&self, b: &[u8], at: usize) -> u16 {
        bytes::u16_at(b, at, self.big_endian).unwrap_or(0)
    }

    #[inline(always)]
    fn rd32(&self, b: &[u8], at: usize) -> u32 {
        bytes::u32_at(b, at, self.big_endian).unwrap_or(0)
    }

    #[inline(always)]
    fn rd64(&self, b: &[u8], at: usize) -> u64 {
        bytes::u64_at(b, at, self.big_endian).unwrap_or(0)
    }

    /// The hot path: fixed offsets, bounds checked once, no allocation.
    #[inline]
    fn epb(&self, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        if body.len() < 20 {
            return Err(PcapngError::Corrupt {
                offset: off,
                what: format!(
                    "enhanced packet block body is {} bytes, the fixed part alone is 20",
                    body.len()
                ),
            });
        }
        let interface = self.rd32(body, 0);
        let ts = (u64::from(self.rd32(body, 4)) << 32) | u64::from(self.rd32(body, 8));
        let caplen = self.rd32(body, 12) as usize;
        let orig_len = self.rd32(body, 16);
        let Some(data) = body.get(20..20usize.saturating_add(caplen)) else {
            return Err(PcapngError::Corrupt {
                offset: off + 12,
                what: format!(
                    "captured length {caplen} exceeds the block ({} bytes of packet data room)",
                    body.len() - 20
                ),
            });
        };
        let time = self.time_of(interface, off)?;
        let mut p = Packet {
            ts_ns: time.ns(ts),
            interface,
            orig_len,
            data,
            direction: Direction::Unknown,
            pid: 0,
            tid: 0,
        };
        let mut o = 20 + caplen + super::block::pad4(caplen);
        while o + 4 <= body.len() {
            let code = self.rd16(body, o);
            let len = usize::from(self.rd16(body, o + 2));
            if code == 0 {
                break;
            }
            let v = o + 4;
            if v + len > body.len() {
                return Err(PcapngError::Corrupt {
                    offset: off + o as u64,
                    what: format!("option {code} of length {len} runs past the end of its block"),
                });
            }
            match (code, len) {
                (2, 4) => p.direction = Direction::from_epb_bits(self.rd32(body, v)),
                (8, 8) => {
                    p.pid = self.rd32(body, v);
                    p.tid = self.rd32(body, v + 4);
                }
                _ => {}
            }
            o = v + len + super::block::pad4(len);
        }
        Ok(Record::Packet(p))
    }

    fn spb(&self, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        let mut c = Cursor::new(body, off, self.big_endian);
        let orig_len = c.u32("original length")?;
        let snap = self.interfaces.first().map_or(0, |i| i.snaplen);
        let mut caplen = orig_len as usize;
        if snap != 0 {
            caplen = caplen.min(snap as usize);
        }
        let caplen = caplen.min(c.remaining());
        let data = c.take(caplen, "packet data")?;
        if self.interfaces.is_empty() {
            return Err(c.corrupt("simple packet block before any interface description"));
        }
        Ok(Record::Packet(Packet {
            ts_ns: 0,
            interface: 0,
            orig_len,
            data,
            direction: Direction::Unknown,
            pid: 0,
            tid: 0,
        }))
    }

    fn pb(&self, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        let mut c = Cursor::new(body, off, self.big_endian);
        let interface = u32::from(c.u16("interface id")?);
        c.skip(2, "drops count")?;
        let hi = c.u32("timestamp")?;
        let lo = c.u32("timestamp")?;
        let caplen = c.u32("captured length")? as usize;
        let orig_len = c.u32("original length")?;
        let data = c.take(caplen, "packet data")?;
        c.skip(super::block::pad4(caplen).min(c.remaining()), "padding")?;
        let time = self.time_of(interface, off)?;
        let mut p = Packet {
            ts_ns: time.ns((u64::from(hi) << 32) | u64::from(lo)),
            interface,
            orig_len,
            data,
            direction: Direction::Unknown,
            pid: 0,
            tid: 0,
        };
        for o in c.options() {
            let (code, v) = o?;
            if code == 2 && v.len() == 4 {
                p.direction = Direction::from_epb_bits(self.rd32(v, 0));
            }
        }
        Ok(Record::Packet(p))
    }

    fn isb(&self, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        let mut c = Cursor::new(body, off, self.big_endian);
        let interface = c.u32("interface id")?;
        c.skip(8, "timestamp")?;
        let time = *self.time_of(interface, off)?;
        let mut s = InterfaceStats::default();
        for o in c.options() {
            let (code, v) = o?;
            if v.len() != 8 {
                continue;
            }
            let hi_lo = (u64::from(self.rd32(v, 0)) << 32) | u64::from(self.rd32(v, 4));
            let n = self.rd64(v, 0);
            match code {
                2 => s.start_ns = time.ns(hi_lo),
                3 => s.end_ns = time.ns(hi_lo),
                4 => s.received = n,
                5 => s.if_dropped = n,
                6 => s.filter_accepted = n,
                7 => s.os_dropped = n,
                8 => s.delivered = n,
                _ => {}
            }
        }
        Ok(Record::InterfaceStats {
            interface,
            stats: s,
        })
    }

    fn custom(&self, btype: u32, body: &'a [u8], off: u64) -> Result<Record<'a>, PcapngError> {
        let mut c = Cursor::new(body, off, self.big_endian);
        let pen = c.u32("private enterprise number")?;
        let data = c.take(c.remaining(), "custom data")?;
        let data_off = off + 4;
        match pen {
            APPTAG_PEN => Ok(match apprecord::decode(data, data_off)? {
                Some(b) => Record::AppRecords {
                    sequence: b.sequence,
                    final_table: b.final_table,
                    part: b.part,
                    parts: b.parts,
                    apps: b.apps,
                },
                None => Record::Other { block_type: btype },
            }),
            WIRESHARK_PEN => Ok(match process::decode(data, data_off)? {
                Some(p) => Record::Process(p),
                None => Record::Other { block_type: btype },
            }),
            _ => Ok(Record::Other { block_type: btype }),
        }
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, PcapngError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Length of the longest prefix of `data` made of complete, well-formed blocks.
pub fn valid_prefix_len(data: &[u8]) -> u64 {
    let Ok(mut r) = Reader::new(data) else {
        return 0;
    };
    while r.next_record().is_some() {}
    r.offset()
}
