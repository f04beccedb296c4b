//! FTP (RFC 959, 2428): commands and replies; `PORT`/`PASV`/`EPRT`/`EPSV` announce a
//! data connection, which is tied, when it opens, to its control session and the
//! transfer command (and file) it carried.
use super::lines::{each_line, reply, text};
use super::{
    Broken, Element, MAX_FTP_EXPECTED, Out, Probe, Protocol, Shared, StreamParser, split_word,
};
use crate::analysis::stream::{Dir, Stream, StreamId};
use crate::dissect::Addr;

/// A data connection announced and not yet finished.
pub struct Expected {
    pub control: StreamId,
    pub command: Option<(String, String)>,
}

const TRANSFER: [&str; 7] = ["RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"];

pub fn probe(s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    let Some(nl) = b.iter().position(|&c| c == b'\n') else {
        return if b.len() < super::lines::MAX_LINE {
            Probe::NeedMore
        } else {
            Probe::NoMatch
        };
    };
    let line = String::from_utf8_lossy(&b[..nl]).to_ascii_uppercase();
    let port21 = s.tuple.dst_port == 21 || s.tuple.src_port == 21;
    if line.starts_with("220") {
        if line.contains("FTP") || port21 {
            return Probe::Match {
                client: dir.other(),
            };
        }
        // A 220 greeting is also SMTP's: the client's first command decides.
        return Probe::NeedMore;
    }
    let (cmd, _) = split_word(line.trim_end());
    if ["USER", "FEAT", "SYST", "OPTS"].contains(&cmd)
        && !(s.tuple.dst_port == 110 || s.tuple.src_port == 110)
    {
        return Probe::Match { client: dir };
    }
    Probe::NoMatch
}

pub fn make(client: Dir) -> Box<dyn StreamParser> {
    Box::new(Ftp {
        client,
        user: None,
        multi: None,
        expected: None,
        tunnel: false,
    })
}

struct Ftp {
    client: Dir,
    user: Option<String>,
    /// The code of a multi-line reply being read.
    multi: Option<u16>,
    /// The data connection announced last.
    expected: Option<(Addr, u16)>,
    tunnel: bool,
}

/// `h1,h2,h3,h4,p1,p2` anywhere in `s` (PORT's argument, PASV's reply).
fn host_port(s: &str) -> Option<(Addr, u16)> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let nums: Vec<u8> = s[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take(6)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    if nums.len() != 6 {
        return None;
    }
    Some((
        Addr::from_v4([nums[0], nums[1], nums[2], nums[3]]),
        u16::from(nums[4]) << 8 | u16::from(nums[5]),
    ))
}

/// EPRT's `|proto|addr|port|`.
fn eprt(s: &str) -> Option<(Addr, u16)> {
    let d = s.chars().next()?;
    let mut f = s.split(d).skip(1);
    let _proto = f.next()?;
    let ip: std::net::IpAddr = f.next()?.parse().ok()?;
    Some((Addr::from_ip(ip), f.next()?.parse().ok()?))
}

/// EPSV's reply `(|||port|)`.
fn epsv(s: &str) -> Option<u16> {
    let i = s.find("(")?;
    let inner = &s[i + 1..s[i..].find(')')? + i];
    inner
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

impl Ftp {
    fn expect(&mut self, key: (Addr, u16), out: &mut Out<'_>) {
        if out.shared.ftp_expect.len() < MAX_FTP_EXPECTED {
            out.shared.ftp_expect.insert(
                key,
                Expected {
                    control: out.stream.id,
                    command: None,
                },
            );
            self.expected = Some(key);
        }
    }

    fn command(&mut self, off: usize, l: &str, out: &mut Out<'_>) {
        let (cmd, arg) = split_word(l);
        out.emit(off, Element::FtpRequest { command: cmd, arg });
        let upper = cmd.to_ascii_uppercase();
        match upper.as_str() {
            "USER" => self.user = Some(arg.to_string()),
            "PASS" => out.emit(
                off,
                Element::Login {
                    mechanism: "USER/PASS",
                    user: self.user.clone().unwrap_or_default(),
                    password: Some(arg.to_string()),
                },
            ),
            "PORT" => {
                if let Some(k) = host_port(arg) {
                    self.expect(k, out);
                }
            }
            "EPRT" => {
                if let Some(k) = eprt(arg) {
                    self.expect(k, out);
                }
            }
            "AUTH" => {
                self.tunnel =
                    arg.to_ascii_uppercase().starts_with("TLS") || arg.eq_ignore_ascii_case("SSL")
            }
            c if TRANSFER.contains(&c) => {
                if let Some(e) = self
                    .expected
                    .and_then(|k| out.shared.ftp_expect.get_mut(&k))
                {
                    e.command = Some((cmd.to_string(), arg.to_string()));
                }
            }
            _ => {}
        }
    }

    fn reply(&mut self, off: usize, l: &str, out: &mut Out<'_>) {
        let Some((code, more, rest)) = reply(l) else {
            return;
        };
        match self.multi {
            Some(c) if c == code && !more => {
                self.multi = None;
                return;
            }
            Some(_) => return,
            None if more => self.multi = Some(code),
            None => {}
        }
        out.emit(off, Element::FtpResponse { code, text: rest });
        match code {
            227 => {
                if let Some(k) = host_port(rest) {
                    self.expect(k, out);
                }
            }
            229 => {
                if let Some(p) = epsv(rest) {
                    let (server, _) = out.stream.sender(out.dir);
                    self.expect((server, p), out);
                }
            }
            _ => {}
        }
    }
}

impl StreamParser for Ftp {
    fn protocol(&self) -> Protocol {
        Protocol::Ftp
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        if self.tunnel {
            return Ok(bytes.len());
        }
        let client = out.dir == self.client;
        let n = each_line(bytes, |off, line| {
            let l = text(line).ok_or(Broken("line not text"))?;
            if client {
                self.command(off, l, out);
            } else {
                self.reply(off, l, out);
            }
            Ok(!self.tunnel)
        })?;
        Ok(if self.tunnel { bytes.len() } else { n })
    }

    fn gap(&mut self, _dir: Dir, _len: u64) -> bool {
        self.multi = None;
        true
    }
}

/// The parser of a data connection, when a control session announced it.
pub fn data_parser(s: &Stream, shared: &mut Shared) -> Option<Box<dyn StreamParser>> {
    [
        (s.tuple.dst, s.tuple.dst_port),
        (s.tuple.src, s.tuple.src_port),
    ]
    .into_iter()
    .find(|k| shared.ftp_expect.contains_key(k))
    .map(|key| Box::new(FtpData { key, bytes: 0 }) as Box<dyn StreamParser>)
}

struct FtpData {
    key: (Addr, u16),
    bytes: u64,
}

impl StreamParser for FtpData {
    fn protocol(&self) -> Protocol {
        Protocol::FtpData
    }

    fn parse(&mut self, bytes: &[u8], _out: &mut Out<'_>) -> Result<usize, Broken> {
        self.bytes += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn gap(&mut self, _dir: Dir, len: u64) -> bool {
        self.bytes += len;
        true
    }

    fn close(&mut self, out: &mut Out<'_>) {
        // The transfer command may come after the connection opened: read it at the end.
        let Some(e) = out.shared.ftp_expect.remove(&self.key) else {
            return;
        };
        let (command, arg) = e.command.unwrap_or_default();
        let first = out.stream.half(Dir::Forward).start();
        out.emit_at(
            first,
            Element::FtpDataLink {
                control: e.control,
                command,
                arg,
                bytes: self.bytes,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasv_port_and_epsv_arguments_give_the_data_endpoint() {
        // Break: swapping p1/p2 (p2 << 8 | p1) gives port 11828 instead of 12390.
        assert_eq!(
            host_port("Entering Passive Mode (141,142,220,235,48,102)."),
            Some((Addr::from_v4([141, 142, 220, 235]), 48 << 8 | 102))
        );
        assert_eq!(host_port("1,2,3"), None);
        assert_eq!(host_port("1,2,3,4,300,1"), None);
        assert_eq!(
            epsv("Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(
            eprt("|2|::1|5282|"),
            Some((Addr::from_ip("::1".parse().unwrap()), 5282))
        );
    }
}
