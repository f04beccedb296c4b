//! SSH: the identification banner each side sends first (RFC 4253 4.2); the rest is
//! encrypted and skipped.
use super::{Broken, Element, Out, Probe, Protocol, StreamParser};
use crate::analysis::stream::{Dir, Stream};

/// RFC 4253 allows 255 bytes; a little slack for broken peers.
const MAX_BANNER: usize = 1024;

pub fn probe(s: &Stream, _dir: Dir, b: &[u8]) -> Probe {
    if b.starts_with(b"SSH-") {
        Probe::Match {
            client: s.initiator.unwrap_or(Dir::Forward),
        }
    } else if b.len() < 4 && b"SSH-".starts_with(b) {
        Probe::NeedMore
    } else {
        Probe::NoMatch
    }
}

pub fn make(_client: Dir) -> Box<dyn StreamParser> {
    Box::new(Ssh { done: [false; 2] })
}

struct Ssh {
    done: [bool; 2],
}

impl StreamParser for Ssh {
    fn protocol(&self) -> Protocol {
        Protocol::Ssh
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        let d = out.dir.index();
        if self.done[d] {
            return Ok(bytes.len());
        }
        let mut at = 0;
        // A server may send other lines before its banner.
        while let Some(nl) = bytes[at..].iter().position(|&c| c == b'\n') {
            let line = &bytes[at..at + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b"SSH-") {
                let banner = std::str::from_utf8(line).map_err(|_| Broken("banner not text"))?;
                out.emit(at, Element::SshBanner { banner });
                self.done[d] = true;
                return Ok(bytes.len());
            }
            at += nl + 1;
        }
        if bytes.len() - at > MAX_BANNER {
            return Err(Broken("no SSH banner"));
        }
        Ok(at)
    }

    fn gap(&mut self, dir: Dir, _len: u64) -> bool {
        self.done[dir.index()]
    }
}
