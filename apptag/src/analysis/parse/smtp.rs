//! SMTP (RFC 5321): commands and replies, `AUTH PLAIN`/`LOGIN`, `MAIL FROM`, `RCPT TO`,
//! the message sent with `DATA` (to the lone dot) or `BDAT` (a length register counted
//! down), and the message's headers. After `STARTTLS` the rest is skipped.
use super::lines::{MAX_LINE, each_line, reply, text};
use super::{
    Broken, Element, Out, Probe, Protocol, StreamParser, base64_decode, sasl_plain, split_word,
};
use crate::analysis::stream::{Dir, Stream};

pub fn probe(s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    let Some(nl) = b.iter().position(|&c| c == b'\n') else {
        return if b.len() < MAX_LINE {
            Probe::NeedMore
        } else {
            Probe::NoMatch
        };
    };
    let line = String::from_utf8_lossy(&b[..nl]).to_ascii_uppercase();
    let port = [25, 587, 2525]
        .iter()
        .any(|p| s.tuple.dst_port == *p || s.tuple.src_port == *p);
    if line.starts_with("220") {
        if line.contains("SMTP") || line.contains("MAIL") || port {
            return Probe::Match {
                client: dir.other(),
            };
        }
        return Probe::NeedMore;
    }
    if line.starts_with("EHLO ") || line.starts_with("HELO ") {
        return Probe::Match { client: dir };
    }
    Probe::NoMatch
}

pub fn make(client: Dir) -> Box<dyn StreamParser> {
    Box::new(Smtp {
        client,
        state: State::Command,
        multi: None,
        starttls: false,
        tunnel: false,
        headers: true,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Command,
    Data,
    /// Bytes left in the current BDAT chunk.
    Bdat(u64),
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass(String),
}

struct Smtp {
    client: Dir,
    state: State,
    multi: Option<u16>,
    starttls: bool,
    tunnel: bool,
    /// Still in the message's header section.
    headers: bool,
}

fn b64_text(s: &str) -> Option<String> {
    base64_decode(s).map(|v| String::from_utf8_lossy(&v).into_owned())
}

impl Smtp {
    /// A line of message content (DATA or BDAT), with its line ending.
    fn message_line(&mut self, off: usize, raw: &[u8], out: &mut Out<'_>) {
        out.emit(off, Element::SmtpData { data: raw });
        if !self.headers {
            return;
        }
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.headers = false;
            return;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return;
        }
        let l = String::from_utf8_lossy(line);
        match l.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains(' ') => {
                out.emit(
                    off,
                    Element::SmtpHeader {
                        name,
                        value: value.trim(),
                    },
                );
            }
            _ => self.headers = false,
        }
    }

    fn command(&mut self, off: usize, l: &str, out: &mut Out<'_>) {
        match std::mem::replace(&mut self.state, State::Command) {
            State::AuthPlain => {
                if let Some((user, pw)) = sasl_plain(l) {
                    out.emit(off, login("PLAIN", user, Some(pw)));
                }
                return;
            }
            State::AuthLoginUser if l != "*" => {
                self.state = State::AuthLoginPass(b64_text(l).unwrap_or_default());
                return;
            }
            State::AuthLoginPass(user) if l != "*" => {
                out.emit(off, login("LOGIN", user, b64_text(l)));
                return;
            }
            State::AuthLoginUser | State::AuthLoginPass(_) => return,
            _ => {}
        }
        let (cmd, param) = split_word(l);
        out.emit(
            off,
            Element::SmtpRequest {
                command: cmd,
                parameter: param,
            },
        );
        match cmd.to_ascii_uppercase().as_str() {
            "DATA" => {
                self.state = State::Data;
                self.headers = true;
            }
            "BDAT" => {
                let n = split_word(param).0;
                if !n.is_empty()
                    && n.len() <= 19
                    && n.bytes().all(|c| c.is_ascii_digit())
                    && let Ok(n) = n.parse()
                {
                    self.state = State::Bdat(n);
                }
            }
            "AUTH" => {
                let (mech, initial) = split_word(param);
                let mech = mech.to_ascii_uppercase();
                match (mech.as_str(), initial) {
                    ("PLAIN", "") => self.state = State::AuthPlain,
                    ("PLAIN", ir) => {
                        if let Some((user, pw)) = sasl_plain(ir) {
                            out.emit(off, login("PLAIN", user, Some(pw)));
                        }
                    }
                    ("LOGIN", "") => self.state = State::AuthLoginUser,
                    ("LOGIN", ir) => {
                        self.state = State::AuthLoginPass(b64_text(ir).unwrap_or_default())
                    }
                    _ => {}
                }
            }
            "STARTTLS" => self.starttls = true,
            _ => {}
        }
    }

    fn client(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        let mut at = 0;
        loop {
            let rest = &bytes[at..];
            match self.state {
                State::Bdat(0) => {
                    self.state = State::Command;
                    self.headers = true;
                }
                State::Bdat(n) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let window = &rest[..rest.len().min(usize::try_from(n).unwrap_or(usize::MAX))];
                    let take = match window.iter().position(|&c| c == b'\n') {
                        Some(nl) => nl + 1,
                        None if window.len() as u64 == n || window.len() > MAX_LINE => window.len(),
                        None => return Ok(at),
                    };
                    self.message_line(at, &window[..take], out);
                    self.state = State::Bdat(n - take as u64);
                    at += take;
                }
                State::Data => {
                    let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
                        if rest.len() > MAX_LINE {
                            // An endless line of content: pass it on as it is.
                            self.message_line(at, rest, out);
                            return Ok(bytes.len());
                        }
                        return Ok(at);
                    };
                    let raw = &rest[..=nl];
                    if raw == b".\r\n" || raw == b".\n" {
                        self.state = State::Command;
                        self.headers = true;
                    } else {
                        self.message_line(at, raw, out);
                    }
                    at += nl + 1;
                }
                _ => {
                    let n = each_line(rest, |off, line| {
                        let l = text(line).ok_or(Broken("command not text"))?;
                        self.command(at + off, l, out);
                        Ok(matches!(
                            self.state,
                            State::Command
                                | State::AuthPlain
                                | State::AuthLoginUser
                                | State::AuthLoginPass(_)
                        ) && !self.starttls)
                    })?;
                    at += n;
                    if self.starttls {
                        // Only TLS can follow (or a refusal, which we do not wait for).
                        self.tunnel = true;
                        return Ok(bytes.len());
                    }
                    if !matches!(self.state, State::Data | State::Bdat(_)) || at == bytes.len() {
                        return Ok(at);
                    }
                }
            }
        }
    }
}

fn login(mechanism: &'static str, user: String, password: Option<String>) -> Element<'static> {
    Element::Login {
        mechanism,
        user,
        password,
    }
}

impl StreamParser for Smtp {
    fn protocol(&self) -> Protocol {
        Protocol::Smtp
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        if self.tunnel {
            return Ok(bytes.len());
        }
        if out.dir == self.client {
            return self.client(bytes, out);
        }
        each_line(bytes, |off, line| {
            let l = String::from_utf8_lossy(line);
            let Some((code, more, rest)) = reply(&l) else {
                return Ok(true);
            };
            match self.multi {
                Some(c) if c == code && !more => self.multi = None,
                Some(_) => {}
                None => {
                    if more {
                        self.multi = Some(code);
                    }
                    out.emit(off, Element::SmtpResponse { code, text: rest });
                }
            }
            Ok(true)
        })
    }

    fn gap(&mut self, dir: Dir, len: u64) -> bool {
        if dir == self.client
            && let State::Bdat(n) = self.state
        {
            if len > n {
                return false;
            }
            self.state = State::Bdat(n - len);
        }
        true
    }
}
