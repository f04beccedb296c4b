//! Byte-level helpers shared by the writer and the reader: building a block in a buffer and
//! reading fields with bounds checks.
use super::PcapngError;
use crate::bytes;

/// Bytes to add after `len` bytes to reach a 4-byte boundary.
pub(crate) const fn pad4(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

/// Builds one little-endian block at the end of `buf`. The two length fields are filled in
/// by [`BlockBuilder::finish`], so a block is always exact and 4-byte aligned.
pub(crate) struct BlockBuilder<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
}

impl<'b> BlockBuilder<'b> {
    pub fn begin(buf: &'b mut Vec<u8>, block_type: u32) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&block_type.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        BlockBuilder { buf, start }
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    pub fn pad(&mut self) {
        let n = pad4(self.buf.len() - self.start);
        self.buf.extend_from_slice(&[0u8; 3][..n]);
    }

    /// One option: code, length, value, padding. Values longer than 65535 bytes are cut:
    /// a wrong length would make readers reject the whole file.
    pub fn option(&mut self, code: u16, value: &[u8]) {
        let value = &value[..value.len().min(u16::MAX as usize)];
        self.u16(code);
        self.u16(value.len() as u16);
        self.bytes(value);
        self.pad();
    }

    pub fn option_u32(&mut self, code: u16, v: u32) {
        self.option(code, &v.to_le_bytes());
    }

    pub fn option_u64(&mut self, code: u16, v: u64) {
        self.option(code, &v.to_le_bytes());
    }

    /// A string option; empty strings are left out (an empty option is legal but useless).
    pub fn option_str(&mut self, code: u16, s: &str) {
        if !s.is_empty() {
            self.option(code, s.as_bytes());
        }
    }

    pub fn end_of_options(&mut self) {
        self.u32(0);
    }

    /// Writes the trailing and leading length; returns the block's total length.
    pub fn finish(mut self) -> usize {
        self.pad();
        let total = self.buf.len() - self.start + 4;
        let len = (total as u32).to_le_bytes();
        self.buf.extend_from_slice(&len);
        self.buf[self.start + 4..self.start + 8].copy_from_slice(&len);
        total
    }
}

/// Reads fields from a slice with bounds checks; errors name the absolute file offset.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// File offset of `data[0]`.
    base: u64,
    big_endian: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], base: u64, big_endian: bool) -> Self {
        Cursor {
            data,
            pos: 0,
            base,
            big_endian,
        }
    }

    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn corrupt(&self, what: impl Into<String>) -> PcapngError {
        PcapngError::Corrupt {
            offset: self.offset(),
            what: what.into(),
        }
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], PcapngError> {
        match self.data.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.corrupt(format!(
                "{what}: needs {n} bytes, only {} left in the block",
                self.remaining()
            ))),
        }
    }

    /// The next `n` bytes, without moving.
    pub fn take_ahead(self, n: usize, what: &str) -> Result<&'a [u8], PcapngError> {
        let mut c = self;
        c.take(n, what)
    }

    pub fn skip(&mut self, n: usize, what: &str) -> Result<(), PcapngError> {
        self.take(n, what).map(|_| ())
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, PcapngError> {
        Ok(self.take(1, what)?[0])
    }

    // `take` has checked the length, so the reads below cannot come up short.
    pub fn u16(&mut self, what: &str) -> Result<u16, PcapngError> {
        let b = self.take(2, what)?;
        Ok(bytes::u16_at(b, 0, self.big_endian).unwrap_or(0))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, PcapngError> {
        let b = self.take(4, what)?;
        Ok(bytes::u32_at(b, 0, self.big_endian).unwrap_or(0))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, PcapngError> {
        let b = self.take(8, what)?;
        Ok(bytes::u64_at(b, 0, self.big_endian).unwrap_or(0))
    }

    /// Iterates the options that follow the current position: (code, value, offset).
    pub fn options(self) -> Options<'a> {
        Options { cur: self }
    }
}

/// Options of a block. Stops at opt_endofopt or the end of the options area.
pub(crate) struct Options<'a> {
    cur: Cursor<'a>,
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), PcapngError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cur.remaining() < 4 {
            return None;
        }
        let res = (|| {
            let code = self.cur.u16("option code")?;
            let len = self.cur.u16("option length")? as usize;
            if code == 0 {
                return Ok(None);
            }
            let value = self.cur.take(len, "option value")?;
            // The last option's padding may be missing in files from sloppy writers.
            let pad = pad4(len).min(self.cur.remaining());
            self.cur.skip(pad, "option padding")?;
            Ok(Some((code, value)))
        })();
        match res {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => {
                self.cur.pos = self.cur.data.len();
                None
            }
            Err(e) => {
                self.cur.pos = self.cur.data.len();
                Some(Err(e))
            }
        }
    }
}
