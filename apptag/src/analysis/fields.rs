//! Field getters compiled from a string (the qcap paper's): `Getter::compile("dns.qry.name")`
//! once, then applied to many packets or protocol elements, each giving typed [`Value`]s.
//! Names are Wireshark's display-filter field names where one exists, plus apptag's own
//! (`app.name`, `process.pid`, ...), which tie a value to the local application.
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::parse::dns::rtype;
use super::parse::{Element, Event};
use super::stream::{AppInfo, Stream, Transport};
use super::subscribe::{PacketEvent, State};
use crate::dissect::{Addr, Fragment};

/// A typed value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Int(u64),
    /// An integer tshark shows in hex (`dns.id`: `0x1234`).
    Hex16(u16),
    Addr(Addr),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    /// Nanoseconds since the epoch.
    Time(u64),
}

impl fmt::Display for Value {
    /// As `tshark -T fields` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Hex16(v) => write!(f, "0x{v:04x}"),
            Value::Addr(a) => write!(f, "{a}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => b.iter().try_for_each(|c| write!(f, "{c:02x}")),
            Value::Bool(b) => f.write_str(if *b { "1" } else { "0" }),
            Value::Time(ns) => write!(f, "{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000),
        }
    }
}

/// Where a field's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The packet itself.
    Packet,
    /// The packet's stream and application.
    Stream,
    /// A protocol element.
    Element,
}

macro_rules! fields {
    ($($id:ident = $name:literal, $src:ident, $doc:literal;)*) => {
        /// A known field.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Field { $($id,)* }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$id,)*];

            pub fn name(self) -> &'static str {
                match self { $(Field::$id => $name,)* }
            }

            pub fn source(self) -> Source {
                match self { $(Field::$id => Source::$src,)* }
            }

            pub fn doc(self) -> &'static str {
                match self { $(Field::$id => $doc,)* }
            }
        }
    };
}

fields! {
    FrameNumber = "frame.number", Packet, "1-based frame number";
    FrameTimeEpoch = "frame.time_epoch", Packet, "capture time, seconds since the epoch";
    IpSrc = "ip.src", Packet, "IPv4 source";
    IpDst = "ip.dst", Packet, "IPv4 destination";
    IpTtl = "ip.ttl", Packet, "IPv4 time to live";
    Ipv6Src = "ipv6.src", Packet, "IPv6 source";
    Ipv6Dst = "ipv6.dst", Packet, "IPv6 destination";
    IpProto = "ip.proto", Packet, "IPv4 protocol";
    TcpSrcport = "tcp.srcport", Packet, "TCP source port";
    TcpDstport = "tcp.dstport", Packet, "TCP destination port";
    UdpSrcport = "udp.srcport", Packet, "UDP source port";
    UdpDstport = "udp.dstport", Packet, "UDP destination port";
    TcpStream = "tcp.stream", Stream, "TCP stream number (tshark's)";
    UdpStream = "udp.stream", Stream, "UDP stream number (tshark's)";
    AppName = "app.name", Stream, "local application (apptag)";
    ProcessPid = "process.pid", Packet, "pid the packet was tagged with (apptag)";
    ProcessExe = "process.exe", Stream, "the application's executable (apptag)";
    ProcessName = "process.name", Stream, "the process name (apptag)";
    ProcessCmdline = "process.cmdline", Stream, "the command line (apptag)";
    TagProvenance = "tag.provenance", Stream, "how the stream was tied to its application (apptag)";
    HttpRequestMethod = "http.request.method", Element, "HTTP request method";
    HttpRequestUri = "http.request.uri", Element, "HTTP request target";
    HttpRequestVersion = "http.request.version", Element, "HTTP request version";
    HttpHost = "http.host", Element, "HTTP Host header";
    HttpUserAgent = "http.user_agent", Element, "HTTP User-Agent header";
    HttpContentType = "http.content_type", Element, "HTTP Content-Type header";
    HttpAuthorization = "http.authorization", Element, "HTTP Authorization header";
    HttpResponseCode = "http.response.code", Element, "HTTP status code";
    HttpResponsePhrase = "http.response.phrase", Element, "HTTP reason phrase";
    DnsId = "dns.id", Element, "DNS transaction id";
    DnsFlagsResponse = "dns.flags.response", Element, "DNS message is a response";
    DnsQryName = "dns.qry.name", Element, "DNS question name";
    DnsQryType = "dns.qry.type", Element, "DNS question type";
    DnsA = "dns.a", Element, "DNS A answer";
    DnsAaaa = "dns.aaaa", Element, "DNS AAAA answer";
    DnsCname = "dns.cname", Element, "DNS CNAME answer";
    TlsSni = "tls.handshake.extensions_server_name", Element, "TLS ClientHello server name";
    TlsAlpn = "tls.handshake.extensions_alpn_str", Element, "TLS ALPN protocol names";
    FtpRequestCommand = "ftp.request.command", Element, "FTP command";
    FtpRequestArg = "ftp.request.arg", Element, "FTP command argument";
    FtpResponseCode = "ftp.response.code", Element, "FTP reply code";
    SmtpReqCommand = "smtp.req.command", Element, "SMTP command";
    SmtpReqParameter = "smtp.req.parameter", Element, "SMTP command parameter";
    SmtpResponseCode = "smtp.response.code", Element, "SMTP reply code";
    Pop3RequestCommand = "pop.request.command", Element, "POP3 command";
    Pop3RequestParameter = "pop.request.parameter", Element, "POP3 command parameter";
    SshProtocol = "ssh.protocol", Element, "SSH identification banner";
}

#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("unknown field {name:?}{}", suggest(.suggestions))]
    Unknown {
        name: String,
        suggestions: Vec<&'static str>,
    },
}

fn suggest(s: &[&str]) -> String {
    if s.is_empty() {
        " (`apptag fields --list` shows every field)".into()
    } else {
        format!("; did you mean {}?", s.join(", "))
    }
}

/// A compiled field getter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Getter(pub Field);

impl Getter {
    /// Compiles `spec` (a field name). An unknown name is an error listing the closest.
    pub fn compile(spec: &str) -> Result<Getter, FieldError> {
        let spec = spec.trim();
        if let Some(f) = Field::ALL.iter().find(|f| f.name() == spec) {
            return Ok(Getter(*f));
        }
        let mut near: Vec<(f64, &'static str)> = Field::ALL
            .iter()
            .map(|f| (strsim::jaro_winkler(spec, f.name()), f.name()))
            .filter(|(s, _)| *s > 0.8)
            .collect();
        near.sort_by(|a, b| b.0.total_cmp(&a.0));
        Err(FieldError::Unknown {
            name: spec.to_string(),
            suggestions: near.into_iter().take(3).map(|(_, n)| n).collect(),
        })
    }

    pub fn field(self) -> Field {
        self.0
    }

    /// The value of a packet field.
    pub fn packet(self, ev: &PacketEvent<'_, '_>) -> Option<Value> {
        let d = ev.packet;
        let v4 = matches!(d.src, IpAddr::V4(_)) && d.is_ip();
        // A fragment's transport header belongs to the datagram, which tshark shows on
        // the frame that completed it (the driver's Reassembled packet).
        let ports =
            d.has_ports() && (d.fragment == Fragment::Whole || ev.state == State::Reassembled);
        let v6 = matches!(d.src, IpAddr::V6(_)) && d.is_ip();
        Some(match self.0 {
            Field::FrameNumber => Value::Int(ev.frame),
            Field::FrameTimeEpoch => Value::Time(ev.ts_ns),
            Field::IpSrc if v4 => Value::Addr(Addr::from_ip(d.src)),
            Field::IpDst if v4 => Value::Addr(Addr::from_ip(d.dst)),
            Field::IpTtl if v4 => Value::Int(d.ttl.into()),
            Field::IpProto if v4 => Value::Int(d.protocol.into()),
            Field::Ipv6Src if v6 => Value::Addr(Addr::from_ip(d.src)),
            Field::Ipv6Dst if v6 => Value::Addr(Addr::from_ip(d.dst)),
            Field::TcpSrcport if d.protocol == 6 && ports => Value::Int(d.src_port.into()),
            Field::TcpDstport if d.protocol == 6 && ports => Value::Int(d.dst_port.into()),
            Field::UdpSrcport if d.protocol == 17 && ports => Value::Int(d.src_port.into()),
            Field::UdpDstport if d.protocol == 17 && ports => Value::Int(d.dst_port.into()),
            Field::ProcessPid if ev.pid != 0 => Value::Int(ev.pid.into()),
            _ => return None,
        })
    }

    /// The value of a stream field, from the stream (and its application).
    pub fn stream(self, s: &Stream) -> Option<Value> {
        let app = s.app.as_ref();
        let a =
            |f: fn(&Arc<AppInfo>) -> String| app.map(f).filter(|v| !v.is_empty()).map(Value::Str);
        match self.0 {
            Field::TcpStream if s.id.transport == Transport::Tcp => Some(Value::Int(s.id.number)),
            Field::UdpStream if s.id.transport == Transport::Udp => Some(Value::Int(s.id.number)),
            Field::AppName => a(|a| a.name.clone()),
            Field::ProcessExe => a(|a| a.exe.clone()),
            Field::ProcessName => a(|a| a.process.clone()),
            Field::ProcessCmdline => a(|a| a.cmdline.join(" ")),
            Field::TagProvenance => a(|a| a.provenance.to_string()),
            _ => None,
        }
    }

    /// The value of an element field (None when the element does not carry it).
    pub fn element(self, ev: &Event<'_, '_>) -> Option<Value> {
        use Element as E;
        let s = |v: &str| Some(Value::Str(v.to_string()));
        let header = |want: &str| match &ev.element {
            E::HttpHeader { name, value } if name.eq_ignore_ascii_case(want) => s(value),
            _ => None,
        };
        match (self.0, &ev.element) {
            (Field::HttpRequestMethod, E::HttpRequest { method, .. }) => s(method),
            (Field::HttpRequestUri, E::HttpRequest { uri, .. }) => s(uri),
            (Field::HttpRequestVersion, E::HttpRequest { version, .. }) => s(version),
            (Field::HttpHost, _) => header("host"),
            (Field::HttpUserAgent, _) => header("user-agent"),
            (Field::HttpContentType, _) => header("content-type"),
            (Field::HttpAuthorization, _) => header("authorization"),
            (Field::HttpResponseCode, E::HttpResponse { code, .. }) => {
                Some(Value::Int((*code).into()))
            }
            (Field::HttpResponsePhrase, E::HttpResponse { reason, .. }) => s(reason),
            (Field::DnsId, E::DnsQuery { id, .. }) => Some(Value::Hex16(*id)),
            (Field::DnsFlagsResponse, E::DnsQuery { response, .. }) => Some(Value::Bool(*response)),
            (Field::DnsQryName, E::DnsQuery { name, .. }) => s(name),
            (Field::DnsQryType, E::DnsQuery { qtype, .. }) => Some(Value::Int((*qtype).into())),
            (
                Field::DnsA,
                E::DnsAnswer {
                    rtype: rtype::A,
                    data,
                    ..
                },
            ) => s(data),
            (
                Field::DnsAaaa,
                E::DnsAnswer {
                    rtype: rtype::AAAA,
                    data,
                    ..
                },
            ) => s(data),
            (
                Field::DnsCname,
                E::DnsAnswer {
                    rtype: rtype::CNAME,
                    data,
                    ..
                },
            ) => s(data),
            (Field::TlsSni, E::TlsClientHello { sni: Some(n), .. }) => s(n),
            (Field::TlsAlpn, E::TlsClientHello { alpn, .. }) if !alpn.is_empty() => {
                s(&alpn.join(","))
            }
            (Field::TlsAlpn, E::TlsServerHello { alpn: Some(a), .. }) => s(a),
            (Field::FtpRequestCommand, E::FtpRequest { command, .. }) => s(command),
            (Field::FtpRequestArg, E::FtpRequest { arg, .. }) if !arg.is_empty() => s(arg),
            (Field::FtpResponseCode, E::FtpResponse { code, .. }) => {
                Some(Value::Int((*code).into()))
            }
            (Field::SmtpReqCommand, E::SmtpRequest { command, .. }) => s(command),
            (Field::SmtpReqParameter, E::SmtpRequest { parameter, .. })
                if !parameter.is_empty() =>
            {
                s(parameter)
            }
            (Field::SmtpResponseCode, E::SmtpResponse { code, .. }) => {
                Some(Value::Int((*code).into()))
            }
            (Field::Pop3RequestCommand, E::Pop3Request { command, .. }) => s(command),
            (Field::Pop3RequestParameter, E::Pop3Request { parameter, .. })
                if !parameter.is_empty() =>
            {
                s(parameter)
            }
            (Field::SshProtocol, E::SshBanner { banner }) => s(banner),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_suggest_the_closest_names() {
        // Break: a similarity threshold of 0.99 leaves the suggestion list empty.
        let e = Getter::compile("http.request.url").unwrap_err().to_string();
        assert!(e.contains("http.request.uri"), "{e}");
        assert_eq!(
            Getter::compile("dns.qry.name").unwrap().field(),
            Field::DnsQryName
        );
    }

    #[test]
    fn values_print_as_tshark_prints_them() {
        assert_eq!(
            Value::Time(964953086_310131000).to_string(),
            "964953086.310131000"
        );
        assert_eq!(Value::Hex16(0x6465).to_string(), "0x6465");
        assert_eq!(Value::Bool(true).to_string(), "1");
    }
}
