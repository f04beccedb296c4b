//! POP3 (RFC 1939): commands and status lines; `USER`/`PASS` and `APOP` logins.
use super::lines::{each_line, text};
use super::{Broken, Element, Out, Probe, Protocol, StreamParser, split_word};
use crate::analysis::stream::{Dir, Stream};

pub fn probe(s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    if !b.contains(&b'\n') {
        return if b.len() < super::lines::MAX_LINE {
            Probe::NeedMore
        } else {
            Probe::NoMatch
        };
    }
    if b.starts_with(b"+OK") {
        return Probe::Match {
            client: dir.other(),
        };
    }
    let port110 = s.tuple.dst_port == 110 || s.tuple.src_port == 110;
    let cmd = b.len() >= 4
        && [b"USER", b"APOP", b"CAPA", b"STLS"].contains(&&b[..4].try_into().unwrap_or([0; 4]));
    if port110 && cmd {
        return Probe::Match { client: dir };
    }
    Probe::NoMatch
}

pub fn make(client: Dir) -> Box<dyn StreamParser> {
    Box::new(Pop3 {
        client,
        user: None,
        tunnel: false,
        auth_plain: false,
    })
}

struct Pop3 {
    client: Dir,
    user: Option<String>,
    tunnel: bool,
    /// The next client line is `AUTH PLAIN`'s response (RFC 5034).
    auth_plain: bool,
}

impl StreamParser for Pop3 {
    fn protocol(&self) -> Protocol {
        Protocol::Pop3
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        if self.tunnel {
            return Ok(bytes.len());
        }
        let client = out.dir == self.client;
        each_line(bytes, |off, line| {
            if client {
                let l = text(line).ok_or(Broken("command not text"))?;
                let (cmd, param) = split_word(l);
                if std::mem::take(&mut self.auth_plain)
                    && let Some((user, pw)) = super::sasl_plain(l)
                {
                    out.emit(
                        off,
                        Element::Login {
                            mechanism: "PLAIN",
                            user,
                            password: Some(pw),
                        },
                    );
                }
                out.emit(
                    off,
                    Element::Pop3Request {
                        command: cmd,
                        parameter: param,
                    },
                );
                match cmd.to_ascii_uppercase().as_str() {
                    "USER" => self.user = Some(param.to_string()),
                    "PASS" => out.emit(
                        off,
                        Element::Login {
                            mechanism: "USER/PASS",
                            user: self.user.clone().unwrap_or_default(),
                            password: Some(param.to_string()),
                        },
                    ),
                    "APOP" => out.emit(
                        off,
                        Element::Login {
                            mechanism: "APOP",
                            user: split_word(param).0.to_string(),
                            password: None,
                        },
                    ),
                    "STLS" => self.tunnel = true,
                    "AUTH" => {
                        let (mech, ir) = split_word(param);
                        if mech.eq_ignore_ascii_case("PLAIN") {
                            match super::sasl_plain(ir) {
                                Some((user, pw)) if !ir.is_empty() => out.emit(
                                    off,
                                    Element::Login {
                                        mechanism: "PLAIN",
                                        user,
                                        password: Some(pw),
                                    },
                                ),
                                _ => self.auth_plain = true,
                            }
                        }
                    }
                    _ => {}
                }
            } else if line.starts_with(b"+OK") || line.starts_with(b"-ERR") {
                let l = String::from_utf8_lossy(line);
                let ok = line.starts_with(b"+OK");
                let rest = l.get(if ok { 3 } else { 4 }..).unwrap_or("").trim_start();
                out.emit(off, Element::Pop3Response { ok, text: rest });
            }
            Ok(!self.tunnel)
        })
        .map(|n| if self.tunnel { bytes.len() } else { n })
    }

    fn gap(&mut self, _dir: Dir, _len: u64) -> bool {
        true
    }
}
