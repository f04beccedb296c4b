//! Opens a capture file (memory-mapped) and turns it into one stream of records, whatever
//! the format: classic pcap is read here, pcapng through [`crate::pcapng::reader`].
use std::path::Path;

use crate::{model::InterfaceInfo, pcapng::Mapped};

use super::{ReportError, pcap};

/// Block type of a pcapng Section Header Block, which every pcapng file starts with.
const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The file formats we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pcap,
    Pcapng,
}

/// One item of a capture, in file order: the pcapng reader's records (a classic pcap file
/// yields one `Interface` and then `Packet`s).
pub use crate::pcapng::Record;

/// A capture file held in memory (mapped, so only the pages being read are resident).
pub struct Capture {
    mapped: Mapped,
}

impl Capture {
    pub fn open(path: &Path) -> Result<Self, ReportError> {
        let mapped = Mapped::open(path).map_err(|(_, source)| ReportError::Io {
            path: path.display().to_string(),
            source,
        })?;
        mapped.advise_sequential();
        Ok(Self { mapped })
    }

    pub fn data(&self) -> &[u8] {
        self.mapped.bytes()
    }

    pub fn records(&self) -> Result<Records<'_>, ReportError> {
        Records::new(self.data())
    }

    /// See [`Mapped::release_before`].
    pub fn release_before(&self, offset: usize) {
        self.mapped.release_before(offset);
    }
}

/// Which format `data` is in.
pub fn sniff(data: &[u8]) -> Result<Format, ReportError> {
    if data.is_empty() {
        return Err(ReportError::Truncated {
            offset: 0,
            what: "the file is empty".into(),
        });
    }
    if data.starts_with(&PCAPNG_SHB) {
        return Ok(Format::Pcapng);
    }
    if pcap::sniff(data) {
        return Ok(Format::Pcap);
    }
    let n = data.len().min(4);
    Err(ReportError::Corrupt {
        offset: 0,
        what: format!(
            "not a pcap or pcapng file (starts with {:02x?}); give a capture written by \
             apptag, tcpdump, tshark or Wireshark",
            &data[..n]
        ),
    })
}

enum Inner<'a> {
    Pcap {
        reader: pcap::PcapReader<'a>,
        interface: Option<InterfaceInfo>,
    },
    Pcapng(crate::pcapng::Reader<'a>),
}

/// The records of a capture, in file order.
pub struct Records<'a> {
    inner: Inner<'a>,
    format: Format,
}

impl<'a> Records<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, ReportError> {
        let format = sniff(data)?;
        let inner = match format {
            Format::Pcap => {
                let reader = pcap::PcapReader::new(data)?;
                let h = *reader.header();
                Inner::Pcap {
                    reader,
                    interface: Some(InterfaceInfo {
                        name: String::new(),
                        linktype: h.linktype,
                        snaplen: h.snaplen,
                        filter: None,
                    }),
                }
            }
            Format::Pcapng => Inner::Pcapng(crate::pcapng::Reader::new(data)?),
        };
        Ok(Self { inner, format })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> usize {
        match &self.inner {
            Inner::Pcap { reader, .. } => reader.offset(),
            Inner::Pcapng(reader) => reader.offset() as usize,
        }
    }

    /// The next record; `None` at the end or after an error that leaves no place to resume.
    #[inline]
    pub fn next_record(&mut self) -> Option<Result<Record<'a>, ReportError>> {
        match &mut self.inner {
            Inner::Pcap { reader, interface } => {
                if let Some(i) = interface.take() {
                    return Some(Ok(Record::Interface(i)));
                }
                reader.next_packet().map(|r| r.map(Record::Packet))
            }
            Inner::Pcapng(reader) => loop {
                match reader.next_record()? {
                    Ok(Record::Other { .. }) => continue,
                    r => return Some(r.map_err(Into::into)),
                }
            },
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, ReportError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}
