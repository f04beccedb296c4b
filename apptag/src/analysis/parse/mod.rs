//! Protocol parsers on reassembled streams (the qcap paper's stream parsers): each
//! protocol is one [`StreamParser`] in the [`REGISTRY`], picked by content (HTTP on port
//! 6667 is still HTTP), fed each direction's ordered bytes by [`Parsers`], a
//! [`Subscriber`], and reporting syntactic [`Element`]s to an [`ElementSink`].
//!
//! An element is reported only once it is known to be valid: a parser consumes only whole
//! elements and leaves the unfinished rest where it is; [`Parsers`] keeps those bytes (by
//! returning their start to the driver) up to [`MAX_BUFFER`], after which the direction is
//! given up and counted. Content-dependent lengths (`Content-Length`, chunk sizes, `BDAT`,
//! DNS-over-TCP prefixes, TLS record lengths) are registers in the parsers' state, counted
//! down as bytes pass, so a body is never buffered.
//!
//! Every element carries its stream, direction, position, frame and time, and through the
//! stream its application and process.
use std::ops::Range;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::stream::{Dir, Position, Stream, StreamId, Transport};
use super::subscribe::Subscriber;
use crate::dissect::Addr;

pub mod dns;
pub mod ftp;
pub mod http;
pub mod imap;
pub mod lines;
pub mod pop3;
pub mod smtp;
pub mod ssh;
pub mod tls;

/// The most bytes held for one unfinished element (an HTTP header block, a line, a TLS
/// handshake message) before the direction is given up.
pub const MAX_BUFFER: u64 = 64 * 1024;
/// Bytes looked at to recognise a protocol before giving up on the stream.
pub const MAX_PROBE: usize = 4096;

/// The protocols with a parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Ftp,
    FtpData,
    Smtp,
    Pop3,
    Imap,
    Dns,
    Tls,
    Ssh,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Ftp => "ftp",
            Protocol::FtpData => "ftp-data",
            Protocol::Smtp => "smtp",
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
            Protocol::Dns => "dns",
            Protocol::Tls => "tls",
            Protocol::Ssh => "ssh",
        }
    }
}

/// A syntactic element of a protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "element", rename_all = "kebab-case")]
pub enum Element<'a> {
    HttpRequest {
        method: &'a str,
        uri: &'a str,
        version: &'a str,
    },
    HttpResponse {
        version: &'a str,
        code: u16,
        reason: &'a str,
    },
    /// A header of the message just reported (request or response by the direction).
    HttpHeader {
        name: &'a str,
        value: &'a str,
    },
    /// Body bytes; `decoded` when they are the gzip/deflate content decoded (only for
    /// sinks whose [`ElementSink::decoded_bodies`] is true).
    #[serde(skip)]
    HttpBody {
        data: &'a [u8],
        decoded: bool,
    },
    /// The end of a message's body.
    HttpEnd {
        body_bytes: u64,
    },
    FtpRequest {
        command: &'a str,
        arg: &'a str,
    },
    FtpResponse {
        code: u16,
        text: &'a str,
    },
    /// A data connection, tied to the control session, command and file that opened it
    /// (reported on the data stream when it closes).
    FtpDataLink {
        control: StreamId,
        command: String,
        arg: String,
        bytes: u64,
    },
    SmtpRequest {
        command: &'a str,
        parameter: &'a str,
    },
    SmtpResponse {
        code: u16,
        text: &'a str,
    },
    /// A header of the message sent with DATA or BDAT.
    SmtpHeader {
        name: &'a str,
        value: &'a str,
    },
    /// Message content (DATA lines, dot-stuffing kept; BDAT chunks).
    #[serde(skip)]
    SmtpData {
        data: &'a [u8],
    },
    Pop3Request {
        command: &'a str,
        parameter: &'a str,
    },
    Pop3Response {
        ok: bool,
        text: &'a str,
    },
    ImapRequest {
        tag: &'a str,
        command: &'a str,
        args: &'a str,
    },
    ImapResponse {
        tag: &'a str,
        status: &'a str,
    },
    /// A login seen in a protocol: user, and the password when it was sent in clear
    /// (or decodably).
    Login {
        mechanism: &'a str,
        user: String,
        password: Option<String>,
    },
    DnsQuery {
        id: u16,
        response: bool,
        name: String,
        qtype: u16,
    },
    DnsAnswer {
        id: u16,
        name: String,
        rtype: u16,
        data: String,
    },
    TlsClientHello {
        /// The legacy version field of the ClientHello.
        version: u16,
        /// The highest version in supported_versions, when present.
        supported: Option<u16>,
        sni: Option<&'a str>,
        alpn: Vec<&'a str>,
    },
    TlsServerHello {
        version: u16,
        supported: Option<u16>,
        cipher: u16,
        alpn: Option<&'a str>,
    },
    SshBanner {
        banner: &'a str,
    },
}

/// Where an element was: its stream, direction, position, frame and time.
pub struct Event<'s, 'e> {
    pub stream: &'s Stream,
    pub dir: Dir,
    pub protocol: Protocol,
    /// The position of the element's first byte in its direction.
    pub pos: Position,
    /// The frame that carried that byte (for elements made at the close, once the bytes
    /// are gone: the stream's first frame).
    pub frame: u64,
    pub ts_ns: u64,
    /// The frame whose bytes completed the element (the newest delivered when it was
    /// reported): the frame tshark shows a reassembled PDU's fields on.
    pub last_frame: u64,
    pub element: Element<'e>,
}

impl Event<'_, '_> {
    /// The sender of the element's bytes.
    pub fn sender(&self) -> (Addr, u16) {
        self.stream.sender(self.dir)
    }

    /// The name of the stream's application ("" when the file has no process information).
    pub fn app_name(&self) -> &str {
        self.stream.app.as_ref().map_or("", |a| a.name.as_str())
    }
}

/// Receives the parsers' elements.
pub trait ElementSink {
    fn element(&mut self, ev: &Event<'_, '_>);

    /// Whether bodies with a gzip or deflate `Content-Encoding` are to be decoded.
    fn decoded_bodies(&self) -> bool {
        false
    }
}

impl<F: FnMut(&Event<'_, '_>)> ElementSink for F {
    fn element(&mut self, ev: &Event<'_, '_>) {
        self(ev)
    }
}

/// What a probe says about the first bytes of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// This protocol; `client` is the direction the client speaks in.
    Match {
        client: Dir,
    },
    NoMatch,
    NeedMore,
}

/// State shared by all streams: FTP data connections announced by control sessions.
#[derive(Default)]
pub struct Shared {
    pub(crate) ftp_expect: FxHashMap<(Addr, u16), ftp::Expected>,
}

/// The most data connections announced and not yet seen.
pub const MAX_FTP_EXPECTED: usize = 4096;

/// What a parser writes elements through.
pub struct Out<'a> {
    pub stream: &'a Stream,
    pub dir: Dir,
    pub protocol: Protocol,
    base: Position,
    last_frame: u64,
    sink: &'a mut dyn ElementSink,
    pub shared: &'a mut Shared,
    pub decoded_bodies: bool,
}

impl Out<'_> {
    /// Reports `el` at byte `off` of the bytes being parsed.
    pub fn emit(&mut self, off: usize, el: Element<'_>) {
        let pos = self.base.forward(off as u64);
        self.emit_at(pos, el)
    }

    pub fn emit_at(&mut self, pos: Position, element: Element<'_>) {
        let (frame, ts_ns) = self
            .stream
            .half(self.dir)
            .span_at(pos)
            .map_or((self.stream.first_frame, self.stream.first_ns), |s| {
                (s.frame, s.ts_ns)
            });
        self.sink.element(&Event {
            stream: self.stream,
            dir: self.dir,
            protocol: self.protocol,
            pos,
            frame,
            ts_ns,
            last_frame: self.last_frame.max(frame),
            element,
        });
    }
}

/// Why a parser stopped reading a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken(pub &'static str);

/// One protocol's parser for one stream.
pub trait StreamParser {
    fn protocol(&self) -> Protocol;

    /// Parses the unconsumed bytes of `out.dir` (everything from the end of the last
    /// element consumed); returns how many bytes it consumed. Only whole elements are
    /// consumed and reported. For UDP, `bytes` is one datagram, consumed whole.
    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken>;

    /// `len` bytes of `dir` are missing at the current place. Returns false when the
    /// direction cannot be parsed past them.
    fn gap(&mut self, _dir: Dir, _len: u64) -> bool {
        false
    }

    /// The stream ended.
    fn close(&mut self, _out: &mut Out<'_>) {}
}

/// A protocol in the registry: how to recognise it and make its parser.
pub struct ParserInfo {
    pub protocol: Protocol,
    pub transports: &'static [Transport],
    /// Looks at the first bytes of one direction.
    pub probe: fn(s: &Stream, dir: Dir, bytes: &[u8]) -> Probe,
    pub make: fn(client: Dir) -> Box<dyn StreamParser>,
}

/// Every parser, in the order they are tried.
pub static REGISTRY: &[ParserInfo] = &[
    ParserInfo {
        protocol: Protocol::Tls,
        transports: &[Transport::Tcp],
        probe: tls::probe,
        make: tls::make,
    },
    ParserInfo {
        protocol: Protocol::Ssh,
        transports: &[Transport::Tcp],
        probe: ssh::probe,
        make: ssh::make,
    },
    ParserInfo {
        protocol: Protocol::Http,
        transports: &[Transport::Tcp],
        probe: http::probe,
        make: http::make,
    },
    ParserInfo {
        protocol: Protocol::Smtp,
        transports: &[Transport::Tcp],
        probe: smtp::probe,
        make: smtp::make,
    },
    ParserInfo {
        protocol: Protocol::Ftp,
        transports: &[Transport::Tcp],
        probe: ftp::probe,
        make: ftp::make,
    },
    ParserInfo {
        protocol: Protocol::Pop3,
        transports: &[Transport::Tcp],
        probe: pop3::probe,
        make: pop3::make,
    },
    ParserInfo {
        protocol: Protocol::Imap,
        transports: &[Transport::Tcp],
        probe: imap::probe,
        make: imap::make,
    },
    ParserInfo {
        protocol: Protocol::Dns,
        transports: &[Transport::Tcp, Transport::Udp],
        probe: dns::probe,
        make: dns::make,
    },
];

/// Counters of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ParseStats {
    /// Streams per protocol recognised.
    pub streams: FxHashMap<&'static str, u64>,
    pub unrecognised: u64,
    /// Directions given up because an element outgrew [`MAX_BUFFER`].
    pub oversized: u64,
    /// Directions given up on invalid syntax.
    pub invalid: u64,
    /// Directions given up at a gap.
    pub lost_at_gap: u64,
}

enum Conn {
    Probing { tried: [bool; 2] },
    Parsing(Box<dyn StreamParser>),
    Ignored,
}

struct Entry {
    conn: Conn,
    /// Per direction: the first unconsumed byte, or None before the first data.
    start: [Option<Position>; 2],
    lost: [bool; 2],
}

/// The parsers as one [`Subscriber`]: recognises each stream's protocol and feeds its
/// parser, sending elements to `sink`.
pub struct Parsers<S: ElementSink> {
    pub sink: S,
    conns: FxHashMap<StreamId, Entry>,
    shared: Shared,
    pub stats: ParseStats,
}

impl<S: ElementSink> Parsers<S> {
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            conns: FxHashMap::default(),
            shared: Shared::default(),
            stats: ParseStats::default(),
        }
    }

    /// Some(parser) on a match, Some(Probing) to wait for more bytes, None when no
    /// protocol fits this direction.
    fn probe(&mut self, s: &Stream, dir: Dir, bytes: &[u8]) -> Option<Conn> {
        let mut undecided = false;
        for p in REGISTRY {
            if !p.transports.contains(&s.id.transport) {
                continue;
            }
            match (p.probe)(s, dir, bytes) {
                Probe::Match { client } => {
                    *self.stats.streams.entry(p.protocol.name()).or_default() += 1;
                    return Some(Conn::Parsing((p.make)(client)));
                }
                Probe::NeedMore => undecided = true,
                Probe::NoMatch => {}
            }
        }
        let udp = s.id.transport == Transport::Udp;
        (undecided && !udp && bytes.len() < MAX_PROBE)
            .then_some(Conn::Probing { tried: [false; 2] })
    }
}

impl<S: ElementSink> Subscriber for Parsers<S> {
    fn opened(&mut self, s: &Stream) {
        let conn = match ftp::data_parser(s, &mut self.shared) {
            Some(p) => {
                *self.stats.streams.entry("ftp-data").or_default() += 1;
                Conn::Parsing(p)
            }
            None => Conn::Probing {
                tried: [false, false],
            },
        };
        self.conns.insert(
            s.id,
            Entry {
                conn,
                start: [None; 2],
                lost: [false; 2],
            },
        );
    }

    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        let d = dir.index();
        let udp = s.id.transport == Transport::Udp;
        let mut e = self.conns.remove(&s.id)?;
        let start = if udp {
            range.start
        } else {
            *e.start[d].get_or_insert(range.start)
        };
        let keep = 'k: {
            if e.lost[d] {
                break 'k None;
            }
            let Ok(bytes) = s.half(dir).bytes(start, range.end) else {
                e.lost[d] = true;
                break 'k None;
            };
            if let Conn::Probing { tried } = e.conn {
                match self.probe(s, dir, bytes) {
                    Some(Conn::Probing { .. }) => {}
                    Some(c) => e.conn = c,
                    None => {
                        // Not recognised in this direction: wait for the other, or stop.
                        let mut tried = tried;
                        tried[d] = true;
                        e.start[d] = Some(range.end);
                        e.conn = if tried == [true, true] {
                            self.stats.unrecognised += 1;
                            Conn::Ignored
                        } else {
                            Conn::Probing { tried }
                        };
                        break 'k None;
                    }
                }
                if let Conn::Probing { .. } = e.conn {
                    // Keep the bytes until a probe decides.
                    break 'k if udp { None } else { Some(start) };
                }
            }
            let Conn::Parsing(p) = &mut e.conn else {
                break 'k None;
            };
            let mut out = Out {
                stream: s,
                dir,
                protocol: p.protocol(),
                base: start,
                last_frame: s
                    .half(dir)
                    .span_at(Position(range.end.0.saturating_sub(1)))
                    .map_or(0, |sp| sp.frame),
                sink: &mut self.sink,
                shared: &mut self.shared,
                decoded_bodies: false,
            };
            out.decoded_bodies = out.sink.decoded_bodies();
            match p.parse(bytes, &mut out) {
                Ok(n) if udp => {
                    let _ = n;
                    None
                }
                Ok(n) => {
                    let next = start.forward(n as u64);
                    e.start[d] = Some(next);
                    if next.distance_to(range.end) > MAX_BUFFER {
                        self.stats.oversized += 1;
                        e.lost[d] = true;
                        None
                    } else {
                        Some(next)
                    }
                }
                Err(Broken(why)) => {
                    log::debug!(
                        "{} {:?}: {} parser stopped: {why}",
                        s.id,
                        dir,
                        p.protocol().name()
                    );
                    self.stats.invalid += 1;
                    e.lost[d] = true;
                    None
                }
            }
        };
        self.conns.insert(s.id, e);
        keep
    }

    fn gap(&mut self, s: &Stream, dir: Dir, range: Range<Position>) {
        let d = dir.index();
        let Some(e) = self.conns.get_mut(&s.id) else {
            return;
        };
        e.start[d] = Some(range.end);
        // Bytes held before the gap are an unfinished element that will never complete:
        // the parser decides whether it can go on after it.
        let len = range.start.distance_to(range.end);
        match &mut e.conn {
            Conn::Parsing(p) if !e.lost[d] => {
                let go_on = p.gap(dir, len);
                if !go_on {
                    self.stats.lost_at_gap += 1;
                    e.lost[d] = true;
                }
            }
            Conn::Probing { .. } => e.conn = Conn::Ignored,
            _ => {}
        }
    }

    fn closed(&mut self, s: &Stream) {
        let Some(mut e) = self.conns.remove(&s.id) else {
            return;
        };
        if let Conn::Parsing(p) = &mut e.conn {
            let mut out = Out {
                stream: s,
                dir: Dir::Forward,
                protocol: p.protocol(),
                base: s.half(Dir::Forward).end(),
                last_frame: 0,
                sink: &mut self.sink,
                shared: &mut self.shared,
                decoded_bodies: false,
            };
            p.close(&mut out);
        }
    }
}

/// Splits `s` at the first space: (word, rest without the leading spaces).
pub(crate) fn split_word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], s[i + 1..].trim_start_matches(' ')),
        None => (s, ""),
    }
}

/// Standard base64 (padding optional); None on anything else.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s.trim().as_bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// SASL PLAIN's `authzid \0 authcid \0 password`.
pub(crate) fn sasl_plain(b64: &str) -> Option<(String, String)> {
    let raw = base64_decode(b64)?;
    let mut parts = raw.split(|&b| b == 0);
    let _authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    Some((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(pass).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        // Break: a wrong alphabet index (e.g. '+' as 63) fails this.
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn sasl_plain_splits_user_and_password() {
        assert_eq!(
            sasl_plain("AHVzZXIAc2VjcmV0").unwrap(),
            ("user".into(), "secret".into())
        );
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::dissect::FiveTuple;

    /// A TCP stream from 10.0.0.1:40000 to 10.0.0.2:`port`.
    pub fn stream(port: u16) -> Stream {
        let tuple = FiveTuple {
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            src_port: 40000,
            dst_port: port,
            protocol: 6,
        };
        let id = StreamId {
            transport: Transport::Tcp,
            number: 0,
        };
        Stream::new(id, tuple, 1, 0)
    }

    /// Feeds `segments` (direction, bytes; each one frame, numbered from 1) to the
    /// parsers as the driver would, returning each element as `frame dir: {element:?}`.
    pub fn run(port: u16, segments: &[(Dir, &[u8])], decoded: bool) -> Vec<String> {
        struct Sink(Vec<String>, bool);
        impl ElementSink for Sink {
            fn element(&mut self, ev: &Event<'_, '_>) {
                let el = match &ev.element {
                    Element::HttpBody { data, decoded } => {
                        format!(
                            "HttpBody {{ {:?}, decoded: {decoded} }}",
                            String::from_utf8_lossy(data)
                        )
                    }
                    e => format!("{e:?}"),
                };
                self.0.push(format!("{} {:?}: {el}", ev.frame, ev.dir));
            }
            fn decoded_bodies(&self) -> bool {
                self.1
            }
        }
        let mut s = stream(port);
        let mut p = Parsers::new(Sink(Vec::new(), decoded));
        p.opened(&s);
        for (i, (dir, b)) in segments.iter().enumerate() {
            let h = &mut s.halves[dir.index()];
            let from = h.end();
            h.append(b, i as u64 + 1, 0, None);
            let to = h.end();
            let keep = p.data(&s, *dir, from..to);
            s.halves[dir.index()].release(keep.unwrap_or(to));
        }
        p.closed(&s);
        p.sink.0
    }
}

#[cfg(test)]
mod tests_streams;
