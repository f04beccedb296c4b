//! The driver's reading of a capture, shared by one core ([`super::subscribe`]) and the
//! sharded reader ([`super::shard`]): records in file order, packets numbered from 1 and
//! dissected once with their interface's link type, the file's pages released as reading
//! passes them.
use crate::dissect::{self, Dissected};
use crate::model::Packet;
use crate::report::ReportError;
use crate::report::aggregate::Metadata;
use crate::report::source::{Format, Record, Records};

/// One record as the driver sees it.
pub(crate) enum Frame<'a> {
    Packet {
        frame: u64,
        rec: Packet<'a>,
        d: Dissected<'a>,
    },
    /// Any other block (section, interface, statistics, process, application records).
    Block(Record<'a>),
    /// Damage in the file: what was read before it stands.
    Damage(ReportError),
}

pub(crate) struct Frames<'a> {
    records: Records<'a>,
    linktypes: Vec<u16>,
    /// Packets read so far (the last one's number).
    pub(crate) frame: u64,
    /// Their original lengths, summed.
    pub(crate) bytes: u64,
    next_release: usize,
}

impl<'a> Frames<'a> {
    /// Opens `data`, and for pcapng first gathers its metadata (apptag writes the final
    /// application table at the end of the file).
    pub(crate) fn open(
        data: &'a [u8],
        release: &mut dyn FnMut(usize),
    ) -> Result<(Self, Metadata), ReportError> {
        let records = Records::new(data)?;
        let meta = if records.format() == Format::Pcapng {
            let mut rel = |o| release(o);
            crate::report::collect_metadata(Records::new(data)?, &mut rel)
        } else {
            Metadata::default()
        };
        let frames = Self {
            records,
            linktypes: Vec::new(),
            frame: 0,
            bytes: 0,
            next_release: crate::report::RELEASE_EVERY,
        };
        Ok((frames, meta))
    }

    pub(crate) fn format(&self) -> Format {
        self.records.format()
    }

    /// The next record. The pages before it are handed to `release` first (every
    /// `RELEASE_EVERY` bytes), so the caller is done with what they held.
    #[inline]
    pub(crate) fn next(&mut self, release: &mut dyn FnMut(usize)) -> Option<Frame<'a>> {
        let off = self.records.offset();
        if off >= self.next_release {
            release(off);
            self.next_release = off + crate::report::RELEASE_EVERY;
        }
        Some(match self.records.next_record()? {
            Ok(Record::Packet(p)) => {
                self.frame += 1;
                self.bytes += u64::from(p.orig_len);
                let lt = self
                    .linktypes
                    .get(p.interface as usize)
                    .copied()
                    .unwrap_or(dissect::linktype::ETHERNET);
                let d = dissect::dissect(lt, p.data);
                Frame::Packet {
                    frame: self.frame,
                    rec: p,
                    d,
                }
            }
            Ok(rec) => {
                match &rec {
                    Record::Interface(i) => self.linktypes.push(i.linktype),
                    Record::Section => self.linktypes.clear(),
                    _ => {}
                }
                Frame::Block(rec)
            }
            Err(e) => {
                log::warn!("{e}");
                Frame::Damage(e)
            }
        })
    }
}
