//! DNS over UDP (a datagram per message) and TCP (each message behind a two-byte length,
//! a register read before the message): questions and answers. Names are decompressed
//! with pointers that must point backwards, so a compression loop ends.
use super::{Broken, Element, Out, Probe, Protocol, StreamParser};
use crate::analysis::stream::{Dir, Stream, Transport};

const PORTS: [u16; 3] = [53, 5353, 5355];
/// The longest name (RFC 1035 3.1).
const MAX_NAME: usize = 255;

pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
}

pub fn probe(s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    let on_port = PORTS.contains(&s.tuple.dst_port) || PORTS.contains(&s.tuple.src_port);
    if !on_port {
        return Probe::NoMatch;
    }
    let msg = match s.id.transport {
        Transport::Udp => b,
        Transport::Tcp => {
            if b.len() < 14 {
                return Probe::NeedMore;
            }
            &b[2..]
        }
    };
    if msg.len() < 12 {
        return Probe::NoMatch;
    }
    let response = msg[2] & 0x80 != 0;
    Probe::Match {
        client: if response { dir.other() } else { dir },
    }
}

pub fn make(_client: Dir) -> Box<dyn StreamParser> {
    Box::new(Dns)
}

struct Dns;

fn u16_at(m: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]))
}

/// The name at `off`, and the offset after it (after the first pointer, if any).
pub fn read_name(m: &[u8], mut off: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut after = None;
    // Pointers must go strictly backwards: each jump lowers this, so loops end.
    let mut limit = off;
    let mut jumps = 0u8;
    loop {
        let len = *m.get(off)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    break;
                }
                let label = m.get(off + 1..off + 1 + len as usize)?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                        name.push(c as char);
                    } else {
                        name.push_str(&format!("\\{c:03}"));
                    }
                }
                if name.len() > MAX_NAME * 4 {
                    return None;
                }
                off += 1 + len as usize;
            }
            0xc0 => {
                let ptr = usize::from(u16_at(m, off)? & 0x3fff);
                jumps += 1;
                if ptr >= limit || jumps > 127 {
                    return None;
                }
                after.get_or_insert(off + 2);
                limit = ptr;
                off = ptr;
            }
            _ => return None,
        }
    }
    if name.is_empty() {
        name.push_str("<Root>");
    }
    Some((name, after.unwrap_or(off + 1)))
}

/// One message's questions and answers, as elements (nothing when it does not parse).
fn message(m: &[u8]) -> Option<Vec<Element<'static>>> {
    let id = u16_at(m, 0)?;
    let response = m.get(2)? & 0x80 != 0;
    let qd = u16_at(m, 4)?;
    // Answers, authority and additional records alike (tshark's dns.a covers all three).
    let rrs = u32::from(u16_at(m, 6)?) + u32::from(u16_at(m, 8)?) + u32::from(u16_at(m, 10)?);
    let mut off = 12;
    let mut out = Vec::new();
    for _ in 0..qd {
        let (name, o) = read_name(m, off)?;
        let qtype = u16_at(m, o)?;
        off = o + 4;
        out.push(Element::DnsQuery {
            id,
            response,
            name,
            qtype,
        });
    }
    for _ in 0..rrs {
        let (name, o) = read_name(m, off)?;
        let rtype = u16_at(m, o)?;
        if rtype == 41 {
            // EDNS's OPT pseudo-record: no name, no answer.
            off = o + 10 + usize::from(u16_at(m, o + 8)?);
            continue;
        }
        let rdlen = usize::from(u16_at(m, o + 8)?);
        let rd = o + 10;
        let data = m.get(rd..rd + rdlen)?;
        let data = match rtype {
            rtype::A if rdlen == 4 => {
                std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]).to_string()
            }
            rtype::AAAA if rdlen == 16 => {
                let b: [u8; 16] = data.try_into().ok()?;
                std::net::Ipv6Addr::from(b).to_string()
            }
            rtype::CNAME | rtype::NS | rtype::PTR => read_name(m, rd)?.0,
            rtype::MX => read_name(m, rd + 2)?.0,
            rtype::TXT => String::from_utf8_lossy(data.get(1..)?).into_owned(),
            _ => String::new(),
        };
        off = rd + rdlen;
        out.push(Element::DnsAnswer {
            id,
            name,
            rtype,
            data,
        });
    }
    Some(out)
}

impl StreamParser for Dns {
    fn protocol(&self) -> Protocol {
        Protocol::Dns
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        if out.stream.id.transport == Transport::Udp {
            for el in message(bytes).unwrap_or_default() {
                out.emit(0, el);
            }
            return Ok(bytes.len());
        }
        let mut at = 0;
        while let Some(len) = u16_at(bytes, at) {
            let len = usize::from(len);
            let Some(m) = bytes.get(at + 2..at + 2 + len) else {
                break;
            };
            // A message that does not parse is skipped: its length says where the next is.
            for el in message(m).unwrap_or_default() {
                out.emit(at, el);
            }
            at += 2 + len;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_loops_and_forward_pointers_are_rejected() {
        // Break: allowing ptr >= limit (any pointer) makes the self-pointer loop forever.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[0xc0, 12]); // points at itself
        assert!(read_name(&m, 12).is_none());
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 20, 0, 0, 3, b'c', b'o', b'm', 0]);
        assert!(read_name(&m, 12).is_none(), "a forward pointer");
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[3, b'c', b'o', b'm', 0, 3, b'w', b'w', b'w', 0xc0, 12]);
        assert_eq!(read_name(&m, 17).unwrap(), ("www.com".to_string(), 23));
    }
}
