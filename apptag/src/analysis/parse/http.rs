//! HTTP/1.x: requests and responses, pipelined, `100 Continue` and other interim
//! responses, bodies by `Content-Length`, chunked transfer coding or connection close,
//! `CONNECT` tunnels; gzip and deflate content decoded for sinks that ask.
//!
//! A message head is reported only once the whole head (up to the empty line) is in and
//! valid; body lengths are registers counted down as bytes pass, so bodies are never held.
use std::collections::VecDeque;
use std::io::Write;

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};

use super::{Broken, Element, Out, Probe, Protocol, StreamParser};
use crate::analysis::stream::{Dir, Stream};

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
/// Requests waiting for their response (pipelining), at most.
const MAX_PENDING: usize = 256;
/// Decoded bytes per message, at most (a decompression bomb stops there).
const MAX_DECODED: u64 = 16 * 1024 * 1024;
/// The longest chunk-size line.
const MAX_CHUNK_LINE: usize = 1024;

pub fn probe(_s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    if b.starts_with(b"HTTP/1.") {
        return Probe::Match {
            client: dir.other(),
        };
    }
    if b.len() < 8 && b"HTTP/1.".starts_with(b) {
        return Probe::NeedMore;
    }
    for m in METHODS {
        let m = m.as_bytes();
        if b.len() > m.len() && b.starts_with(m) && b[m.len()] == b' ' {
            return Probe::Match { client: dir };
        }
        if b.len() <= m.len() && m.starts_with(b) {
            return Probe::NeedMore;
        }
    }
    Probe::NoMatch
}

pub fn make(client: Dir) -> Box<dyn StreamParser> {
    Box::new(Http {
        client,
        halves: Default::default(),
        pending: VecDeque::new(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Length(u64),
    Chunked(Chunk),
    ToClose,
    Tunnel,
}

enum Decoder {
    Gz(GzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    Raw(DeflateDecoder<Vec<u8>>),
    /// deflate, not yet known whether zlib-wrapped (as RFC 9110 says) or raw (as some
    /// servers send it).
    Deflate,
}

struct Half {
    phase: Phase,
    body_bytes: u64,
    decoder: Option<Decoder>,
    decoded: u64,
}

impl Default for Half {
    fn default() -> Self {
        Half {
            phase: Phase::Head,
            body_bytes: 0,
            decoder: None,
            decoded: 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Connect,
    Other,
}

struct Http {
    client: Dir,
    halves: [Half; 2],
    pending: VecDeque<Method>,
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = b[i..].iter().position(|&c| c == b'\n') {
        let j = i + nl + 1;
        match b.get(j) {
            Some(b'\n') => return Some(j + 1),
            Some(b'\r') if b.get(j + 1) == Some(&b'\n') => return Some(j + 2),
            Some(_) => i = j,
            None => return None,
        }
    }
    None
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// A strict decimal `Content-Length` (no sign, no overflow).
fn content_length(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&c| c == b';').next()?;
    let hex = std::str::from_utf8(hex).ok()?.trim_matches([' ', '\t']);
    if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

struct Head<'a> {
    first: (&'a str, &'a str, &'a str),
    headers: Vec<(usize, &'a str, &'a str)>,
}

fn parse_head(text: &str) -> Option<Head<'_>> {
    let mut lines = text.split('\n');
    let first = lines.next()?.trim_end_matches('\r');
    let mut parts = first.splitn(3, ' ');
    let first = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    let mut headers = Vec::new();
    let mut off = text.find('\n')? + 1;
    for l in lines {
        let len = l.len() + 1;
        let l = l.trim_end_matches('\r');
        if l.is_empty() {
            break;
        }
        if l.starts_with([' ', '\t']) {
            // obs-fold: a continuation of the previous value, not a header of its own.
            off += len;
            continue;
        }
        let (name, value) = l.split_once(':')?;
        if !is_token(name) {
            return None;
        }
        headers.push((off, name, value.trim_matches([' ', '\t'])));
        off += len;
    }
    Some(Head { first, headers })
}

impl Http {
    fn body_phase(
        headers: &[(usize, &str, &str)],
        default: Phase,
    ) -> Result<(Phase, Option<Decoder>), Broken> {
        let mut phase = default;
        let mut length: Option<u64> = None;
        let mut decoder = None;
        for &(_, name, value) in headers {
            if name.eq_ignore_ascii_case("transfer-encoding") {
                if value.to_ascii_lowercase().contains("chunked") {
                    phase = Phase::Chunked(Chunk::Size);
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                let n = content_length(value).ok_or(Broken("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Broken("conflicting Content-Length headers"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("content-encoding") {
                let v = value.to_ascii_lowercase();
                decoder = match v.as_str() {
                    "gzip" | "x-gzip" => Some(Decoder::Gz(GzDecoder::new(Vec::new()))),
                    "deflate" => Some(Decoder::Deflate),
                    _ => None,
                };
            }
        }
        if !matches!(phase, Phase::Chunked(_))
            && let Some(n) = length
        {
            phase = Phase::Length(n);
        }
        Ok((phase, decoder))
    }

    fn body(half: &mut Half, data: &[u8], off: usize, out: &mut Out<'_>) {
        if data.is_empty() {
            return;
        }
        half.body_bytes += data.len() as u64;
        out.emit(
            off,
            Element::HttpBody {
                data,
                decoded: false,
            },
        );
        let Some(dec) = half.decoder.as_mut() else {
            return;
        };
        if let Decoder::Deflate = dec {
            let zlib = data.len() >= 2
                && data[0] & 0x0f == 8
                && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0;
            *dec = if zlib {
                Decoder::Zlib(ZlibDecoder::new(Vec::new()))
            } else {
                Decoder::Raw(DeflateDecoder::new(Vec::new()))
            };
        }
        let res = match dec {
            Decoder::Gz(d) => d.write_all(data).and_then(|_| d.flush()),
            Decoder::Zlib(d) => d.write_all(data).and_then(|_| d.flush()),
            Decoder::Raw(d) => d.write_all(data).and_then(|_| d.flush()),
            Decoder::Deflate => Ok(()),
        };
        let buf = match dec {
            Decoder::Gz(d) => d.get_mut(),
            Decoder::Zlib(d) => d.get_mut(),
            Decoder::Raw(d) => d.get_mut(),
            Decoder::Deflate => return,
        };
        half.decoded += buf.len() as u64;
        if !buf.is_empty() {
            out.emit(
                off,
                Element::HttpBody {
                    data: buf,
                    decoded: true,
                },
            );
            buf.clear();
        }
        if res.is_err() || half.decoded > MAX_DECODED {
            half.decoder = None;
        }
    }

    fn end(half: &mut Half, off: usize, out: &mut Out<'_>) {
        out.emit(
            off,
            Element::HttpEnd {
                body_bytes: half.body_bytes,
            },
        );
        half.body_bytes = 0;
        half.decoder = None;
        half.decoded = 0;
        half.phase = Phase::Head;
    }

    fn head(&mut self, text: &str, off: usize, out: &mut Out<'_>) -> Result<(), Broken> {
        let request = out.dir == self.client;
        let head = parse_head(text).ok_or(Broken("invalid header line"))?;
        let (a, b, c) = head.first;
        let d = out.dir.index();
        if request {
            let version_ok = c == "HTTP/1.1" || c == "HTTP/1.0";
            if !is_token(a) || b.is_empty() || !version_ok {
                return Err(Broken("invalid request line"));
            }
            let (phase, decoder) = Self::body_phase(&head.headers, Phase::Length(0))?;
            if self.pending.len() >= MAX_PENDING {
                return Err(Broken("too many requests without a response"));
            }
            self.pending.push_back(match a {
                "HEAD" => Method::Head,
                "CONNECT" => Method::Connect,
                _ => Method::Other,
            });
            out.emit(
                off,
                Element::HttpRequest {
                    method: a,
                    uri: b,
                    version: c,
                },
            );
            self.headers(&head.headers, off, out);
            self.halves[d].phase = phase;
            self.halves[d].decoder = decoder.filter(|_| out.decoded_bodies);
        } else {
            let code: u16 = match (a.starts_with("HTTP/1."), b.len(), b.parse()) {
                (true, 3, Ok(c)) if (100..600).contains(&c) => c,
                _ => return Err(Broken("invalid status line")),
            };
            out.emit(
                off,
                Element::HttpResponse {
                    version: a,
                    code,
                    reason: c,
                },
            );
            self.headers(&head.headers, off, out);
            if (100..200).contains(&code) && code != 101 {
                // 100 Continue and friends: the final response is still to come.
                self.halves[d].phase = Phase::Length(0);
                return Ok(());
            }
            let method = self.pending.pop_front().unwrap_or(Method::Other);
            let tunnel = code == 101 || (method == Method::Connect && (200..300).contains(&code));
            if tunnel {
                self.halves[0].phase = Phase::Tunnel;
                self.halves[1].phase = Phase::Tunnel;
                return Ok(());
            }
            let (phase, decoder) = if method == Method::Head || code == 204 || code == 304 {
                (Phase::Length(0), None)
            } else {
                Self::body_phase(&head.headers, Phase::ToClose)?
            };
            self.halves[d].phase = phase;
            self.halves[d].decoder = decoder.filter(|_| out.decoded_bodies);
        }
        Ok(())
    }

    fn headers(&self, headers: &[(usize, &str, &str)], off: usize, out: &mut Out<'_>) {
        for &(o, name, value) in headers {
            out.emit(off + o, Element::HttpHeader { name, value });
        }
    }
}

impl StreamParser for Http {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        let d = out.dir.index();
        let mut at = 0;
        loop {
            let rest = &bytes[at..];
            match self.halves[d].phase {
                Phase::Head => {
                    // Empty lines between pipelined messages are allowed (RFC 9112 2.2).
                    let skip = rest
                        .iter()
                        .take_while(|&&c| c == b'\r' || c == b'\n')
                        .count();
                    at += skip;
                    let rest = &bytes[at..];
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let Some(end) = find_head_end(rest) else {
                        return Ok(at);
                    };
                    let text =
                        std::str::from_utf8(&rest[..end]).map_err(|_| Broken("head not text"))?;
                    self.head(text, at, out)?;
                    at += end;
                }
                Phase::Length(0) => Self::end(&mut self.halves[d], at, out),
                Phase::Length(n) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    Self::body(&mut self.halves[d], &rest[..take], at, out);
                    self.halves[d].phase = Phase::Length(n - take as u64);
                    at += take;
                }
                Phase::Chunked(Chunk::Size) => {
                    let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(Broken("chunk-size line too long"));
                        }
                        return Ok(at);
                    };
                    let n = chunk_size(&rest[..nl]).ok_or(Broken("invalid chunk size"))?;
                    at += nl + 1;
                    self.halves[d].phase = Phase::Chunked(if n == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data(n)
                    });
                }
                Phase::Chunked(Chunk::Data(n)) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    Self::body(&mut self.halves[d], &rest[..take], at, out);
                    let left = n - take as u64;
                    self.halves[d].phase = Phase::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    at += take;
                }
                Phase::Chunked(Chunk::DataEnd) => {
                    if rest.starts_with(b"\r\n") {
                        at += 2;
                    } else if rest.starts_with(b"\n") {
                        at += 1;
                    } else if rest.len() < 2 {
                        return Ok(at);
                    } else {
                        return Err(Broken("chunk not followed by CRLF"));
                    }
                    self.halves[d].phase = Phase::Chunked(Chunk::Size);
                }
                Phase::Chunked(Chunk::Trailer) => {
                    let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
                        return Ok(at);
                    };
                    let empty = nl == 0 || (nl == 1 && rest[0] == b'\r');
                    at += nl + 1;
                    if empty {
                        Self::end(&mut self.halves[d], at, out);
                    }
                }
                Phase::ToClose => {
                    Self::body(&mut self.halves[d], rest, at, out);
                    return Ok(bytes.len());
                }
                Phase::Tunnel => return Ok(bytes.len()),
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: u64) -> bool {
        let h = &mut self.halves[dir.index()];
        h.decoder = None;
        match h.phase {
            Phase::Length(n) if len <= n => {
                h.body_bytes += len;
                h.phase = Phase::Length(n - len);
                true
            }
            Phase::Chunked(Chunk::Data(n)) if len <= n => {
                h.body_bytes += len;
                h.phase = Phase::Chunked(if n == len {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(n - len)
                });
                true
            }
            Phase::ToClose | Phase::Tunnel => true,
            _ => false,
        }
    }

    fn close(&mut self, out: &mut Out<'_>) {
        for dir in Dir::BOTH {
            let h = &mut self.halves[dir.index()];
            if h.phase == Phase::ToClose {
                out.dir = dir;
                let end = out.stream.half(dir).end();
                out.emit_at(
                    end,
                    Element::HttpEnd {
                        body_bytes: h.body_bytes,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_rejects_signs_overflow_and_junk() {
        // Break: parsing with `v.trim().parse::<i64>()` accepts "-1" / "+5" and fails this.
        assert_eq!(content_length("1234"), Some(1234));
        assert_eq!(content_length("-1"), None);
        assert_eq!(content_length("+5"), None);
        assert_eq!(content_length("99999999999999999999999"), None);
        assert_eq!(content_length("12 34"), None);
    }

    #[test]
    fn chunk_sizes_are_hex_with_extensions_and_bounded() {
        // Break: dropping the length bound lets "ffffffffffffffffff" wrap or overflow.
        assert_eq!(chunk_size(b"1a;name=x\r"), Some(26));
        assert_eq!(chunk_size(b"0\r"), Some(0));
        assert_eq!(chunk_size(b"-1\r"), None);
        assert_eq!(chunk_size(b"ffffffffffffffffff\r"), None);
        assert_eq!(chunk_size(b"zz\r"), None);
    }

    #[test]
    fn probe_recognises_http_by_content_not_port() {
        let s = crate::analysis::parse::tests_support::stream(6667);
        assert_eq!(
            probe(&s, Dir::Forward, b"GET / HTTP/1.1\r\n"),
            Probe::Match {
                client: Dir::Forward
            }
        );
        assert_eq!(probe(&s, Dir::Forward, b"GE"), Probe::NeedMore);
        assert_eq!(probe(&s, Dir::Forward, b"NICK x\r\n"), Probe::NoMatch);
    }
}
