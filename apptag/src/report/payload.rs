//! A light look at payloads: DNS (query name), HTTP (request/status line, Host header), TLS
//! (ClientHello server name) and SSH banners, plus a well-known-port table for the rest.
//! Only the bytes of one packet are examined; nothing is reassembled.
use crate::{bytes::be16, model::proto};

/// What the payload showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identified {
    /// Application protocol, lower case ("dns", "http", "tls", "ssh").
    pub protocol: &'static str,
    /// DNS query name, HTTP Host or TLS server name.
    pub name: Option<String>,
}

/// Identifies the application protocol of one packet's transport payload.
pub fn identify(protocol: u8, sport: u16, dport: u16, payload: &[u8]) -> Option<Identified> {
    if payload.is_empty() {
        return None;
    }
    let dns_port = |p: u16| matches!(p, 53 | 5353 | 5355);
    if dns_port(sport) || dns_port(dport) {
        let msg = if protocol == proto::TCP {
            // DNS over TCP: two-byte length prefix.
            payload.get(2..)?
        } else {
            payload
        };
        if let Some(name) = dns_query_name(msg) {
            return Some(Identified {
                protocol: "dns",
                name: Some(name),
            });
        }
    }
    if protocol != proto::TCP {
        return None;
    }
    if let Some(host) = http(payload) {
        return Some(Identified {
            protocol: "http",
            name: host,
        });
    }
    if let Some(sni) = tls(payload) {
        return Some(Identified {
            protocol: "tls",
            name: sni,
        });
    }
    if payload.starts_with(b"SSH-") {
        return Some(Identified {
            protocol: "ssh",
            name: None,
        });
    }
    None
}

/// The service a well-known port stands for, tried on the lower port first.
pub fn by_port(protocol: u8, sport: u16, dport: u16) -> Option<&'static str> {
    let (lo, hi) = if sport <= dport {
        (sport, dport)
    } else {
        (dport, sport)
    };
    port_name(protocol, lo).or_else(|| port_name(protocol, hi))
}

pub fn port_name(protocol: u8, port: u16) -> Option<&'static str> {
    let tcp = protocol == proto::TCP;
    let udp = protocol == proto::UDP || protocol == proto::UDPLITE;
    Some(match port {
        20 | 21 if tcp => "ftp",
        22 if tcp => "ssh",
        23 if tcp => "telnet",
        25 | 465 | 587 if tcp => "smtp",
        53 if tcp || udp => "dns",
        67 | 68 if udp => "dhcp",
        80 | 8080 if tcp => "http",
        110 | 995 if tcp => "pop3",
        123 if udp => "ntp",
        137..=139 => "netbios",
        143 | 993 if tcp => "imap",
        161 | 162 if udp => "snmp",
        389 | 636 if tcp => "ldap",
        443 if tcp => "https",
        443 if udp => "quic",
        445 if tcp => "smb",
        514 if udp => "syslog",
        853 => "dns-over-tls",
        1883 | 8883 if tcp => "mqtt",
        3306 if tcp => "mysql",
        3389 if tcp => "rdp",
        5353 if udp => "mdns",
        5355 if udp => "llmnr",
        5432 if tcp => "postgresql",
        6379 if tcp => "redis",
        9092 if tcp => "kafka",
        11211 => "memcached",
        27017 if tcp => "mongodb",
        _ => return None,
    })
}

/// The first question's name of a DNS message, if the header looks like DNS.
pub fn dns_query_name(msg: &[u8]) -> Option<String> {
    if msg.len() < 12 {
        return None;
    }
    let flags = be16(msg, 2)?;
    let opcode = (flags >> 11) & 0xf;
    let qdcount = be16(msg, 4)?;
    // Sanity: a known opcode, one to a few questions, the Z bit clear.
    if opcode > 6 || qdcount == 0 || qdcount > 16 || flags & 0x0040 != 0 {
        return None;
    }
    let mut name = String::new();
    let mut off = 12;
    let mut jumps = 0;
    loop {
        let len = *msg.get(off)?;
        match len {
            0 => break,
            1..=63 => {
                let label = msg.get(off + 1..off + 1 + usize::from(len))?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    // Keep names printable: escape like Wireshark does for odd bytes.
                    if b.is_ascii_graphic() {
                        name.push(char::from(b));
                    } else {
                        name.push_str(&format!("\\{b:03}"));
                    }
                }
                off += 1 + usize::from(len);
                if name.len() > 255 {
                    return None;
                }
            }
            0xc0..=0xff => {
                jumps += 1;
                if jumps > 8 {
                    return None;
                }
                off = usize::from(be16(msg, off)? & 0x3fff);
            }
            _ => return None,
        }
    }
    if name.is_empty() {
        name.push_str("<Root>");
    }
    Some(name)
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// `Some(host)` if the payload starts an HTTP/1 request or response; the Host header of a
/// request when it is in this packet.
fn http(p: &[u8]) -> Option<Option<String>> {
    if p.starts_with(b"HTTP/1.") {
        return Some(None);
    }
    if !METHODS.iter().any(|m| p.starts_with(m)) {
        return None;
    }
    let line_end = p.iter().position(|&b| b == b'\n')?;
    let line = &p[..line_end];
    if !line.windows(6).any(|w| w == b" HTTP/") {
        return None;
    }
    let mut rest = &p[line_end + 1..];
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let header = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        if header.is_empty() {
            break;
        }
        if header.len() > 5 && header[..5].eq_ignore_ascii_case(b"host:") {
            let v = String::from_utf8_lossy(&header[5..]).trim().to_string();
            return Some(Some(v));
        }
        rest = &rest[end + 1..];
    }
    Some(None)
}

/// `Some(sni)` if the payload starts a TLS record; the server name if it is a ClientHello
/// that carries one in this packet.
fn tls(p: &[u8]) -> Option<Option<String>> {
    let (&ctype, &major, &minor) = (p.first()?, p.get(1)?, p.get(2)?);
    if !(20..=23).contains(&ctype) || major != 3 || minor > 4 {
        return None;
    }
    if ctype != 22 || p.get(5) != Some(&1) {
        return Some(None);
    }
    Some(client_hello_sni(p.get(9..)?))
}

fn client_hello_sni(h: &[u8]) -> Option<String> {
    // client_version(2) random(32)
    let mut off = 34;
    let sid = usize::from(*h.get(off)?);
    off += 1 + sid;
    off += 2 + usize::from(be16(h, off)?);
    off += 1 + usize::from(*h.get(off)?);
    let ext_len = usize::from(be16(h, off)?);
    off += 2;
    let end = (off + ext_len).min(h.len());
    while off + 4 <= end {
        let ty = be16(h, off)?;
        let len = usize::from(be16(h, off + 2)?);
        off += 4;
        if ty == 0 {
            // server_name_list: list length(2), then name_type(1) length(2) name.
            let list = h.get(off..off + len)?;
            let mut i = 2;
            while i + 3 <= list.len() {
                let nlen = usize::from(be16(list, i + 1)?);
                let name = list.get(i + 3..i + 3 + nlen)?;
                if list[i] == 0 {
                    return Some(String::from_utf8_lossy(name).into_owned());
                }
                i += 3 + nlen;
            }
            return None;
        }
        off += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_name_with_compression_loop_is_refused() {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend([3, b'w', b'w', b'w', 2, b'e', b'x', 0, 0, 1, 0, 1]);
        assert_eq!(dns_query_name(&m).as_deref(), Some("www.ex"));
        let mut l = m[..12].to_vec();
        l.extend([0xc0, 12]);
        assert_eq!(dns_query_name(&l), None);
    }

    #[test]
    fn http_request_host() {
        let p = b"GET /x HTTP/1.1\r\nUser-Agent: a\r\nHOST: example.org \r\n\r\n";
        let id = identify(proto::TCP, 40000, 8000, p).unwrap();
        assert_eq!(id.protocol, "http");
        assert_eq!(id.name.as_deref(), Some("example.org"));
        assert!(identify(proto::TCP, 1, 2, b"GETTING things").is_none());
    }

    #[test]
    fn tls_client_hello_sni() {
        let name = b"api.example.com";
        let mut sni = Vec::new();
        sni.extend(((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name);
        let mut exts = vec![0x00, 0x0b, 0, 2, 1, 0]; // ec_point_formats first
        exts.extend([0, 0]);
        exts.extend((sni.len() as u16).to_be_bytes());
        exts.extend(&sni);
        let mut hello = vec![3, 3];
        hello.extend([7u8; 32]);
        hello.push(0);
        hello.extend([0, 2, 0x13, 0x01, 1, 0]);
        hello.extend((exts.len() as u16).to_be_bytes());
        hello.extend(exts);
        let mut hs = vec![1, 0];
        hs.extend((hello.len() as u16).to_be_bytes());
        hs.extend(hello);
        let mut rec = vec![22, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        let id = identify(proto::TCP, 50000, 443, &rec).unwrap();
        assert_eq!(id.protocol, "tls");
        assert_eq!(id.name.as_deref(), Some("api.example.com"));
        // Cut anywhere: never a panic, never a wrong name.
        for n in 0..rec.len() {
            if let Some(id) = identify(proto::TCP, 50000, 443, &rec[..n]) {
                assert!(id.name.is_none() || id.name.as_deref() == Some("api.example.com"));
            }
        }
    }

    #[test]
    fn ports() {
        assert_eq!(by_port(proto::TCP, 50000, 443), Some("https"));
        assert_eq!(by_port(proto::UDP, 123, 40000), Some("ntp"));
        assert_eq!(by_port(proto::TCP, 50000, 50001), None);
    }
}
