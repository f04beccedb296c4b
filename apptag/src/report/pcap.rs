//! Classic libpcap files (the format tcpdump writes): all four magics (µs/ns, either byte
//! order), read in place from a byte slice without copying or allocating per packet.
use crate::{
    bytes::{self, u32_at},
    model::{Direction, Packet},
};

use super::ReportError;

/// The fixed file header.
pub const HEADER_LEN: usize = 24;
/// The per-record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Larger than any link type's maximum snap length in Wireshark (256 KiB): a record claiming
/// more is taken as corruption rather than read as a huge packet.
pub const MAX_RECORD_LEN: u32 = 256 * 1024;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;

/// What the file header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub big_endian: bool,
    pub nanos: bool,
    pub version: (u16, u16),
    pub snaplen: u32,
    /// LINKTYPE_* (the low 16 bits of the header's network field; the upper bits carry FCS
    /// information that we do not need).
    pub linktype: u16,
}

/// Whether `data` starts like a classic pcap file.
pub fn sniff(data: &[u8]) -> bool {
    let Some(m) = data.get(..4) else { return false };
    let (le, be) = (bytes::le32(m, 0), bytes::be32(m, 0));
    [MAGIC_US, MAGIC_NS]
        .iter()
        .any(|&magic| le == Some(magic) || be == Some(magic))
}

pub fn parse_header(data: &[u8]) -> Result<Header, ReportError> {
    if data.len() < HEADER_LEN {
        return Err(ReportError::Truncated {
            offset: 0,
            what: format!(
                "pcap file header needs {HEADER_LEN} bytes, the file has {}",
                data.len()
            ),
        });
    }
    let (big_endian, nanos) = match u32_at(data, 0, false) {
        Some(MAGIC_US) => (false, false),
        Some(MAGIC_NS) => (false, true),
        _ => match u32_at(data, 0, true) {
            Some(MAGIC_US) => (true, false),
            Some(MAGIC_NS) => (true, true),
            _ => {
                return Err(ReportError::Corrupt {
                    offset: 0,
                    what: "not a pcap magic number".into(),
                });
            }
        },
    };
    let vers = u32_at(data, 4, big_endian).unwrap_or(0);
    let version = if big_endian {
        ((vers >> 16) as u16, vers as u16)
    } else {
        (vers as u16, (vers >> 16) as u16)
    };
    let snaplen = u32_at(data, 16, big_endian).unwrap_or(0);
    let network = u32_at(data, 20, big_endian).unwrap_or(0);
    Ok(Header {
        big_endian,
        nanos,
        version,
        snaplen,
        linktype: (network & 0xffff) as u16,
    })
}

/// Walks the records of a classic pcap held in memory.
pub struct PcapReader<'a> {
    data: &'a [u8],
    pos: usize,
    header: Header,
    failed: bool,
}

impl<'a> PcapReader<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, ReportError> {
        let header = parse_header(data)?;
        Ok(Self {
            data,
            pos: HEADER_LEN,
            header,
            failed: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The next packet; `None` at the end of the data or after an error (a damaged record
    /// gives no reliable place to resume from).
    #[inline]
    pub fn next_packet(&mut self) -> Option<Result<Packet<'a>, ReportError>> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let off = self.pos;
        let big = self.header.big_endian;
        let Some(hdr) = self
            .data
            .get(off..)
            .and_then(<[u8]>::first_chunk::<RECORD_HEADER_LEN>)
        else {
            self.failed = true;
            return Some(Err(ReportError::Truncated {
                offset: off as u64,
                what: format!(
                    "record header needs {RECORD_HEADER_LEN} bytes, only {} left",
                    self.data.len() - off
                ),
            }));
        };
        // A fixed-size header: the compiler sees that every field is in it.
        let field = |i: usize| u32_at(hdr, i, big).unwrap_or(0);
        let (sec, frac, incl, orig) = (field(0), field(4), field(8), field(12));
        if incl > MAX_RECORD_LEN {
            self.failed = true;
            return Some(Err(ReportError::Corrupt {
                offset: off as u64,
                what: format!(
                    "record claims {incl} captured bytes, more than the {MAX_RECORD_LEN} any \
                     capture tool writes"
                ),
            }));
        }
        let start = off + RECORD_HEADER_LEN;
        let end = start + incl as usize;
        let Some(data) = self.data.get(start..end) else {
            self.failed = true;
            return Some(Err(ReportError::Truncated {
                offset: off as u64,
                what: format!(
                    "record claims {incl} captured bytes, only {} left in the file",
                    self.data.len() - start.min(self.data.len())
                ),
            }));
        };
        self.pos = end;
        let frac_ns = if self.header.nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        Some(Ok(Packet {
            ts_ns: u64::from(sec) * 1_000_000_000 + frac_ns,
            interface: 0,
            // A few writers leave orig_len 0 or below the captured length; the frame was at
            // least as long as what was captured.
            orig_len: orig.max(incl),
            data,
            direction: Direction::Unknown,
            pid: 0,
            tid: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(big: bool, nanos: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend(w(if nanos { MAGIC_NS } else { MAGIC_US }));
        f.extend(w16(2));
        f.extend(w16(4));
        f.extend(w(0));
        f.extend(w(0));
        f.extend(w(65535));
        f.extend(w(1));
        for (sec, frac, data) in records {
            f.extend(w(*sec));
            f.extend(w(*frac));
            f.extend(w(data.len() as u32));
            f.extend(w(data.len() as u32 + 10));
            f.extend(*data);
        }
        f
    }

    #[test]
    fn reads_all_four_magics() {
        for big in [false, true] {
            for nanos in [false, true] {
                let f = file(big, nanos, &[(5, 7, b"abc"), (6, 0, b"")]);
                let mut r = PcapReader::new(&f).unwrap();
                assert_eq!(r.header().version, (2, 4));
                assert_eq!(r.header().linktype, 1);
                let p = r.next_packet().unwrap().unwrap();
                let frac = if nanos { 7 } else { 7000 };
                assert_eq!(p.ts_ns, 5_000_000_000 + frac);
                assert_eq!(p.data, b"abc");
                assert_eq!(p.orig_len, 13);
                let p = r.next_packet().unwrap().unwrap();
                assert_eq!(p.data, b"");
                assert!(r.next_packet().is_none());
            }
        }
    }

    #[test]
    fn truncation_reports_record_offset() {
        let mut f = file(false, false, &[(1, 0, b"abcd"), (2, 0, b"efgh")]);
        f.truncate(f.len() - 2);
        let mut r = PcapReader::new(&f).unwrap();
        assert!(r.next_packet().unwrap().is_ok());
        match r.next_packet().unwrap() {
            Err(ReportError::Truncated { offset, .. }) => assert_eq!(offset, 24 + 16 + 4),
            other => panic!("expected truncation, got {other:?}"),
        }
        assert!(r.next_packet().is_none());
    }

    #[test]
    fn absurd_length_is_corruption() {
        let mut f = file(false, false, &[(1, 0, b"abcd")]);
        f[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let mut r = PcapReader::new(&f).unwrap();
        assert!(matches!(
            r.next_packet(),
            Some(Err(ReportError::Corrupt { offset: 24, .. }))
        ));
    }

    #[test]
    fn rejects_other_magic() {
        assert!(!sniff(b"\x0a\x0d\x0d\x0a"));
        assert!(PcapReader::new(&[0u8; 24]).is_err());
    }
}
