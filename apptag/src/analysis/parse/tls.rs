//! TLS: the ClientHello (version, SNI, ALPN, supported_versions) and the ServerHello.
//! Records are read by their length (a register); a hello spanning several records is
//! gathered (bounded); after the hello the direction is skipped.
use super::{Broken, Element, MAX_BUFFER, Out, Probe, Protocol, StreamParser};
use crate::analysis::stream::{Dir, Stream};

/// The largest record payload allowed (RFC 8446 5.2: 2^14 + 256 for ciphertext).
const MAX_RECORD: usize = (1 << 14) + 2048;

pub fn probe(_s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    let head = [0x16u8, 0x03];
    if b.len() < 6 {
        let n = b.len().min(2);
        return if b[..n] == head[..n] {
            Probe::NeedMore
        } else {
            Probe::NoMatch
        };
    }
    if b[..2] != head || b[2] > 4 {
        return Probe::NoMatch;
    }
    match b[5] {
        1 => Probe::Match { client: dir },
        2 => Probe::Match {
            client: dir.other(),
        },
        _ => Probe::NoMatch,
    }
}

pub fn make(_client: Dir) -> Box<dyn StreamParser> {
    Box::new(Tls {
        halves: Default::default(),
    })
}

#[derive(Default)]
struct Half {
    hs: Vec<u8>,
    first: Option<usize>,
    done: bool,
}

struct Tls {
    halves: [Half; 2],
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n.into())
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n.into())
    }
}

fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a
}

/// A hello's fields: (version, supported, cipher (server), sni, alpn).
type Hello<'a> = (u16, Option<u16>, u16, Option<&'a str>, Vec<&'a str>);

fn hello(body: &[u8], client: bool) -> Option<Hello<'_>> {
    let mut r = R(body);
    let version = r.u16()?;
    r.take(32)?;
    r.vec8()?;
    let cipher = if client {
        r.vec16()?;
        0
    } else {
        r.u16()?
    };
    if client {
        r.vec8()?;
    } else {
        r.u8()?;
    }
    let (mut sni, mut alpn, mut supported) = (None, Vec::new(), None);
    let mut ext = R(if r.0.is_empty() { &[] } else { r.vec16()? });
    while !ext.0.is_empty() {
        let ty = ext.u16()?;
        let mut d = R(ext.vec16()?);
        match ty {
            0 if client => {
                let mut list = R(d.vec16()?);
                while !list.0.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        sni = std::str::from_utf8(name).ok();
                    }
                }
            }
            16 => {
                let mut list = R(d.vec16()?);
                while !list.0.is_empty() {
                    alpn.push(std::str::from_utf8(list.vec8()?).ok()?);
                }
            }
            43 if client => {
                let mut list = R(d.vec8()?);
                while let Some(v) = list.u16() {
                    if !grease(v) {
                        supported = supported.max(Some(v));
                    }
                }
            }
            43 => supported = d.u16(),
            _ => {}
        }
    }
    Some((version, supported, cipher, sni, alpn))
}

impl StreamParser for Tls {
    fn protocol(&self) -> Protocol {
        Protocol::Tls
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        let h = &mut self.halves[out.dir.index()];
        if h.done {
            return Ok(bytes.len());
        }
        let mut at = 0;
        while bytes.len() - at >= 5 {
            let rec = &bytes[at..];
            let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
            if len > MAX_RECORD || rec[1] != 3 {
                return Err(Broken("TLS record with an impossible length"));
            }
            if rec.len() < 5 + len {
                break;
            }
            if rec[0] != 0x16 {
                // Not a handshake record before the hello: nothing more to read here.
                h.done = true;
                return Ok(bytes.len());
            }
            h.first.get_or_insert(at);
            h.hs.extend_from_slice(&rec[5..5 + len]);
            at += 5 + len;
            if h.hs.len() as u64 > MAX_BUFFER {
                return Err(Broken("TLS handshake message too long"));
            }
            if h.hs.len() < 4 {
                continue;
            }
            let mlen =
                usize::from(h.hs[1]) << 16 | usize::from(h.hs[2]) << 8 | usize::from(h.hs[3]);
            if h.hs.len() < 4 + mlen {
                continue;
            }
            let ty = h.hs[0];
            let body = &h.hs[4..4 + mlen];
            let first = h.first.unwrap_or(0);
            match (ty, hello(body, ty == 1)) {
                (1, Some((version, supported, _, sni, alpn))) => out.emit(
                    first,
                    Element::TlsClientHello {
                        version,
                        supported,
                        sni,
                        alpn,
                    },
                ),
                (2, Some((version, supported, cipher, _, alpn))) => out.emit(
                    first,
                    Element::TlsServerHello {
                        version,
                        supported,
                        cipher,
                        alpn: alpn.first().copied(),
                    },
                ),
                _ => {}
            }
            h.done = true;
            h.hs = Vec::new();
            return Ok(bytes.len());
        }
        Ok(at)
    }
}
