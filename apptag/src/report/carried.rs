//! What an application's streams carried, from the protocol parsers: HTTP hosts, methods
//! and status codes, TLS server names, DNS names asked, FTP files, SMTP senders and
//! recipients. Gathered per flow while the streams are parsed, summed per application
//! when the report is built. Bounded: a flow keeps a few distinct values per kind, an
//! application the most frequent ones (the counts of what is kept stay exact).
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::analysis::parse::{Element, ElementSink, Event};
use crate::dissect::FiveTuple;

/// Distinct values a flow keeps per kind (a DNS flow to one resolver can ask thousands).
pub const PER_FLOW: usize = 32;
/// Values an application lists per kind, most frequent first.
pub const PER_APP: usize = 50;

/// The kinds of values kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    HttpHost,
    HttpMethod,
    HttpStatus,
    TlsServerName,
    DnsName,
    FtpFile,
    SmtpSender,
    SmtpRecipient,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::HttpHost,
        Kind::HttpMethod,
        Kind::HttpStatus,
        Kind::TlsServerName,
        Kind::DnsName,
        Kind::FtpFile,
        Kind::SmtpSender,
        Kind::SmtpRecipient,
    ];
}

/// One flow's values: (kind, value) -> times seen.
#[derive(Clone, Debug, Default)]
pub struct FlowCarried {
    pub values: Vec<(Kind, String, u64)>,
    /// Values not kept (over [`PER_FLOW`] distinct of their kind).
    pub dropped: u64,
}

impl FlowCarried {
    fn add(&mut self, kind: Kind, value: &str) {
        if let Some(v) = self
            .values
            .iter_mut()
            .find(|(k, v, _)| *k == kind && v == value)
        {
            v.2 += 1;
            return;
        }
        if self.values.iter().filter(|(k, _, _)| *k == kind).count() >= PER_FLOW {
            self.dropped += 1;
            return;
        }
        self.values.push((kind, value.to_string(), 1));
    }
}

/// A value and how many times the application's streams carried it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub value: String,
    pub count: u64,
}

/// Per application: what its streams carried, each list most frequent first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Carried {
    pub http_hosts: Vec<Seen>,
    pub http_methods: Vec<Seen>,
    pub http_status_codes: Vec<Seen>,
    pub tls_server_names: Vec<Seen>,
    pub dns_names: Vec<Seen>,
    pub ftp_files: Vec<Seen>,
    pub smtp_senders: Vec<Seen>,
    pub smtp_recipients: Vec<Seen>,
}

impl Carried {
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|k| self.list(*k).is_empty())
    }

    pub fn list(&self, k: Kind) -> &Vec<Seen> {
        match k {
            Kind::HttpHost => &self.http_hosts,
            Kind::HttpMethod => &self.http_methods,
            Kind::HttpStatus => &self.http_status_codes,
            Kind::TlsServerName => &self.tls_server_names,
            Kind::DnsName => &self.dns_names,
            Kind::FtpFile => &self.ftp_files,
            Kind::SmtpSender => &self.smtp_senders,
            Kind::SmtpRecipient => &self.smtp_recipients,
        }
    }

    fn list_mut(&mut self, k: Kind) -> &mut Vec<Seen> {
        match k {
            Kind::HttpHost => &mut self.http_hosts,
            Kind::HttpMethod => &mut self.http_methods,
            Kind::HttpStatus => &mut self.http_status_codes,
            Kind::TlsServerName => &mut self.tls_server_names,
            Kind::DnsName => &mut self.dns_names,
            Kind::FtpFile => &mut self.ftp_files,
            Kind::SmtpSender => &mut self.smtp_senders,
            Kind::SmtpRecipient => &mut self.smtp_recipients,
        }
    }
}

/// Sums flows' values into one application's lists.
#[derive(Default)]
pub(crate) struct CarriedAcc {
    counts: FxHashMap<(Kind, String), u64>,
}

impl CarriedAcc {
    pub(crate) fn add(&mut self, f: &FlowCarried) {
        for (k, v, n) in &f.values {
            *self.counts.entry((*k, v.clone())).or_default() += n;
        }
    }

    pub(crate) fn finish(self) -> Carried {
        let mut c = Carried::default();
        for ((k, value), count) in self.counts {
            c.list_mut(k).push(Seen { value, count });
        }
        for k in Kind::ALL {
            let l = c.list_mut(k);
            l.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            l.truncate(PER_APP);
        }
        c
    }
}

/// The element sink: values per flow (by its canonical 5-tuple).
#[derive(Default)]
pub struct CarriedSink {
    pub flows: FxHashMap<FiveTuple, FlowCarried>,
}

/// The address of `MAIL FROM:<a>` / `RCPT TO:<a>` parameters, after `prefix`.
fn mail_addr<'a>(param: &'a str, prefix: &str) -> Option<&'a str> {
    let p = param.get(..prefix.len())?;
    if !p.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = param[prefix.len()..].trim_start();
    match rest.strip_prefix('<') {
        Some(r) => Some(&r[..r.find('>')?]),
        None => rest.split(' ').next(),
    }
}

impl ElementSink for CarriedSink {
    fn element(&mut self, ev: &Event<'_, '_>) {
        let (kind, value): (Kind, std::borrow::Cow<'_, str>) = match &ev.element {
            Element::HttpRequest { method, .. } => (Kind::HttpMethod, (*method).into()),
            Element::HttpHeader { name, value } if name.eq_ignore_ascii_case("host") => {
                (Kind::HttpHost, (*value).into())
            }
            Element::HttpResponse { code, .. } => (Kind::HttpStatus, code.to_string().into()),
            Element::TlsClientHello { sni: Some(n), .. } => (Kind::TlsServerName, (*n).into()),
            Element::DnsQuery {
                response: false,
                name,
                ..
            } => (Kind::DnsName, name.as_str().into()),
            Element::FtpRequest { command, arg }
                if ["RETR", "STOR", "STOU", "APPE"]
                    .iter()
                    .any(|c| command.eq_ignore_ascii_case(c))
                    && !arg.is_empty() =>
            {
                (Kind::FtpFile, (*arg).into())
            }
            Element::SmtpRequest { command, parameter } if command.eq_ignore_ascii_case("MAIL") => {
                match mail_addr(parameter, "FROM:") {
                    Some(a) => (Kind::SmtpSender, a.into()),
                    None => return,
                }
            }
            Element::SmtpRequest { command, parameter } if command.eq_ignore_ascii_case("RCPT") => {
                match mail_addr(parameter, "TO:") {
                    Some(a) => (Kind::SmtpRecipient, a.into()),
                    None => return,
                }
            }
            _ => return,
        };
        let (key, _) = ev.stream.tuple.canonical();
        self.flows.entry(key).or_default().add(kind, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_addresses_and_bounds() {
        // Break: taking the parameter whole keeps "<a@b>" and the SIZE option.
        assert_eq!(mail_addr("FROM:<a@b.ch> SIZE=9", "FROM:"), Some("a@b.ch"));
        assert_eq!(mail_addr("to: <r@x>", "TO:"), Some("r@x"));
        assert_eq!(mail_addr("TO:<r@x>", "FROM:"), None);
        let mut f = FlowCarried::default();
        for i in 0..PER_FLOW + 5 {
            f.add(Kind::DnsName, &format!("n{i}.example"));
        }
        f.add(Kind::DnsName, "n0.example");
        f.add(Kind::HttpMethod, "GET");
        assert_eq!(f.dropped, 5);
        assert_eq!(f.values.len(), PER_FLOW + 1);
        let mut acc = CarriedAcc::default();
        acc.add(&f);
        acc.add(&f);
        let c = acc.finish();
        assert_eq!(c.dns_names[0].value, "n0.example");
        assert_eq!(c.dns_names[0].count, 4);
        assert_eq!(
            c.http_methods,
            vec![Seen {
                value: "GET".into(),
                count: 2
            }]
        );
    }
}
