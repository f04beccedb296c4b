//! IMAP (RFC 9051): tagged commands and their completion, `LOGIN` and
//! `AUTHENTICATE PLAIN` (initial response or the line after the server's `+`).
use super::lines::{each_line, text};
use super::{Broken, Element, Out, Probe, Protocol, StreamParser, sasl_plain, split_word};
use crate::analysis::stream::{Dir, Stream};

pub fn probe(s: &Stream, dir: Dir, b: &[u8]) -> Probe {
    if !b.contains(&b'\n') {
        return if b.len() < super::lines::MAX_LINE {
            Probe::NeedMore
        } else {
            Probe::NoMatch
        };
    }
    if b.starts_with(b"* OK") || b.starts_with(b"* PREAUTH") {
        return Probe::Match {
            client: dir.other(),
        };
    }
    let port = s.tuple.dst_port == 143 || s.tuple.src_port == 143;
    let l = String::from_utf8_lossy(b).to_ascii_uppercase();
    let (_, rest) = split_word(&l);
    if port
        && ["CAPABILITY", "LOGIN ", "AUTHENTICATE "]
            .iter()
            .any(|c| rest.starts_with(c))
    {
        return Probe::Match { client: dir };
    }
    Probe::NoMatch
}

pub fn make(client: Dir) -> Box<dyn StreamParser> {
    Box::new(Imap {
        client,
        auth_plain: false,
        tunnel: false,
    })
}

struct Imap {
    client: Dir,
    /// The next client line is AUTHENTICATE PLAIN's response.
    auth_plain: bool,
    tunnel: bool,
}

/// An IMAP astring: an atom or a quoted string (literals are not followed).
fn astring(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(q) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?.1),
                '"' => return Some((out, &q[i + 1..])),
                c => out.push(c),
            }
        }
        None
    } else if s.starts_with('{') || s.is_empty() {
        None
    } else {
        let end = s.find(' ').unwrap_or(s.len());
        Some((s[..end].to_string(), &s[end..]))
    }
}

impl StreamParser for Imap {
    fn protocol(&self) -> Protocol {
        Protocol::Imap
    }

    fn parse(&mut self, bytes: &[u8], out: &mut Out<'_>) -> Result<usize, Broken> {
        if self.tunnel {
            return Ok(bytes.len());
        }
        let client = out.dir == self.client;
        let n = each_line(bytes, |off, line| {
            if !client {
                let l = String::from_utf8_lossy(line);
                let (tag, rest) = split_word(&l);
                if tag != "*" && tag != "+" && !tag.is_empty() {
                    let status = split_word(rest).0;
                    if ["OK", "NO", "BAD"].contains(&status.to_ascii_uppercase().as_str()) {
                        out.emit(off, Element::ImapResponse { tag, status });
                    }
                }
                return Ok(true);
            }
            let l = text(line).ok_or(Broken("command not text"))?;
            if std::mem::take(&mut self.auth_plain) {
                if let Some((user, pw)) = sasl_plain(l) {
                    out.emit(off, login("PLAIN", user, Some(pw)));
                }
                return Ok(true);
            }
            let (tag, rest) = split_word(l);
            let (command, args) = split_word(rest);
            out.emit(off, Element::ImapRequest { tag, command, args });
            match command.to_ascii_uppercase().as_str() {
                "LOGIN" => {
                    if let Some((user, rest)) = astring(args) {
                        let pw = astring(rest).map(|p| p.0);
                        out.emit(off, login("LOGIN", user, pw));
                    }
                }
                "AUTHENTICATE" => {
                    let (mech, ir) = split_word(args);
                    if mech.eq_ignore_ascii_case("PLAIN") {
                        if ir.is_empty() {
                            self.auth_plain = true;
                        } else if let Some((user, pw)) = sasl_plain(ir) {
                            out.emit(off, login("PLAIN", user, Some(pw)));
                        }
                    }
                }
                "STARTTLS" => self.tunnel = true,
                _ => {}
            }
            Ok(!self.tunnel)
        })?;
        Ok(if self.tunnel { bytes.len() } else { n })
    }

    fn gap(&mut self, _dir: Dir, _len: u64) -> bool {
        true
    }
}

fn login(mechanism: &'static str, user: String, password: Option<String>) -> Element<'static> {
    Element::Login {
        mechanism,
        user,
        password,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_arguments_are_atoms_or_quoted_strings() {
        // Break: not unescaping \" inside quotes gives `pa\"ss`.
        let (u, rest) = astring(r#""fred" "pa\"ss""#).unwrap();
        assert_eq!(u, "fred");
        assert_eq!(astring(rest).unwrap().0, "pa\"ss");
        assert_eq!(astring("bob secret").unwrap().0, "bob");
        assert!(astring("{5}").is_none());
    }
}
