//! Credentials seen in a capture (the qcap paper's `ip_identity`): logins of FTP, POP3,
//! IMAP and SMTP `AUTH`, HTTP Basic (user and password) and Digest (user), and SMTP
//! `MAIL FROM` senders; each with the client host, the stream, frame and time, and the
//! local application and process.
use serde::Serialize;

use super::parse::{Element, ElementSink, Event, base64_decode};
use super::stream::StreamId;

/// At most this many credentials are kept (the rest are counted in `dropped`).
pub const MAX_CREDENTIALS: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Login,
    Sender,
}

#[derive(Clone, Debug, Serialize)]
pub struct Credential {
    /// The host that sent it.
    pub client: String,
    /// The server it went to, `addr:port`.
    pub server: String,
    pub protocol: &'static str,
    pub kind: Kind,
    /// USER/PASS, PLAIN, LOGIN, APOP, Basic, Digest, MAIL FROM.
    pub mechanism: String,
    pub user: String,
    pub password: Option<String>,
    pub stream: StreamId,
    pub frame: u64,
    pub ts_ns: u64,
    /// The local application ("" without process information) and its pids.
    pub app: String,
    pub pids: Vec<u32>,
    pub exe: String,
}

#[derive(Default)]
pub struct Credentials {
    pub list: Vec<Credential>,
    pub dropped: u64,
}

fn mail_from(param: &str) -> Option<&str> {
    let p = param.get(..5)?;
    if !p.eq_ignore_ascii_case("FROM:") {
        return None;
    }
    let rest = param[5..].trim_start();
    let addr = match rest.strip_prefix('<') {
        Some(r) => &r[..r.find('>')?],
        None => rest.split(' ').next()?,
    };
    Some(addr)
}

/// The `username` parameter of a Digest `Authorization` value.
fn digest_user(params: &str) -> Option<String> {
    for p in params.split(',') {
        let (k, v) = p.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("username") {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

impl Credentials {
    fn push(
        &mut self,
        ev: &Event<'_, '_>,
        kind: Kind,
        mechanism: &str,
        user: String,
        pw: Option<String>,
    ) {
        if self.list.len() >= MAX_CREDENTIALS {
            self.dropped += 1;
            return;
        }
        let s = ev.stream;
        let (ip, _) = ev.sender();
        let (sip, sport) = s.sender(ev.dir.other());
        let server = if sip.is_v4() {
            format!("{sip}:{sport}")
        } else {
            format!("[{sip}]:{sport}")
        };
        self.list.push(Credential {
            client: ip.to_string(),
            server,
            protocol: ev.protocol.name(),
            kind,
            mechanism: mechanism.to_string(),
            user,
            password: pw,
            stream: s.id,
            frame: ev.frame,
            ts_ns: ev.ts_ns,
            app: ev.app_name().to_string(),
            pids: s.pids().collect(),
            exe: s.app.as_ref().map(|a| a.exe.clone()).unwrap_or_default(),
        });
    }
}

impl ElementSink for Credentials {
    fn element(&mut self, ev: &Event<'_, '_>) {
        match &ev.element {
            Element::Login {
                mechanism,
                user,
                password,
            } => self.push(ev, Kind::Login, mechanism, user.clone(), password.clone()),
            Element::HttpHeader { name, value } if name.eq_ignore_ascii_case("authorization") => {
                let (scheme, rest) = super::parse::split_word(value);
                if scheme.eq_ignore_ascii_case("basic") {
                    let Some(raw) = base64_decode(rest) else {
                        return;
                    };
                    let raw = String::from_utf8_lossy(&raw);
                    // The user ends at the first colon; the password may hold more.
                    let (u, p) = raw.split_once(':').unwrap_or((&raw, ""));
                    self.push(ev, Kind::Login, "Basic", u.to_string(), Some(p.to_string()));
                } else if scheme.eq_ignore_ascii_case("digest")
                    && let Some(u) = digest_user(rest)
                {
                    self.push(ev, Kind::Login, "Digest", u, None);
                }
            }
            Element::SmtpRequest { command, parameter } if command.eq_ignore_ascii_case("MAIL") => {
                if let Some(a) = mail_from(parameter) {
                    self.push(ev, Kind::Sender, "MAIL FROM", a.to_string(), None);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_from_and_digest_user_are_extracted() {
        // Break: taking the parameter whole keeps "<a@b>" and the SIZE option.
        assert_eq!(mail_from("From:<root@x.ch> SIZE=695"), Some("root@x.ch"));
        assert_eq!(mail_from("FROM:<>"), Some(""));
        assert_eq!(mail_from("TO:<x>"), None);
        assert_eq!(
            digest_user(r#"username="Mufasa", realm="t@h.com", nonce="x""#).as_deref(),
            Some("Mufasa")
        );
    }
}
