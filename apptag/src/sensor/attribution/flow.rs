//! Packet and socket endpoints in one canonical form, so that a packet's 5-tuple and a
//! socket's addresses compare equal whatever family the socket was opened with: IPv4
//! addresses are stored as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), the form dual-stack sockets
//! report, so `::ffff:10.0.0.1` on a socket matches 10.0.0.1 in an IPv4 packet.
use crate::dissect::{Dissected, dissect, linktype};

pub use crate::dissect::Addr;

/// A connection seen from this host: local end, remote end, transport protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub local: Addr,
    pub local_port: u16,
    pub remote: Addr,
    pub remote_port: u16,
    pub protocol: u8,
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple {
            local: self.remote,
            local_port: self.remote_port,
            remote: self.local,
            remote_port: self.local_port,
            protocol: self.protocol,
        }
    }

    /// The local end only: what a bound-but-unconnected socket (UDP server, TCP listener)
    /// is known by.
    pub fn local_key(&self) -> LocalKey {
        LocalKey {
            addr: self.local,
            port: self.local_port,
            protocol: self.protocol,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalKey {
    pub addr: Addr,
    pub port: u16,
    pub protocol: u8,
}

impl LocalKey {
    /// The same port on the wildcard address (a socket bound to 0.0.0.0 or ::).
    pub fn wildcard(&self) -> LocalKey {
        LocalKey {
            addr: if self.addr.is_v4() {
                Addr::from_v4([0; 4])
            } else {
                Addr::UNSPECIFIED
            },
            ..*self
        }
    }
}

/// Source and destination of a packet, as found in its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketEnds {
    pub src: Addr,
    pub src_port: u16,
    pub dst: Addr,
    pub dst_port: u16,
    pub protocol: u8,
}

impl PacketEnds {
    /// The tuple as seen by the sender (local = source).
    pub fn as_sender(&self) -> Tuple {
        Tuple {
            local: self.src,
            local_port: self.src_port,
            remote: self.dst,
            remote_port: self.dst_port,
            protocol: self.protocol,
        }
    }

    /// The tuple as seen by the receiver (local = destination).
    pub fn as_receiver(&self) -> Tuple {
        self.as_sender().reversed()
    }
}

/// The IP 5-tuple of a captured frame, from the shared dissector. Runs on every packet;
/// nothing is allocated.
pub fn packet_ends(linktype: u16, frame: &[u8]) -> Option<PacketEnds> {
    ends_of(&dissect(linktype, frame))
}

fn ends_of(d: &Dissected<'_>) -> Option<PacketEnds> {
    if !d.is_ip() {
        return None;
    }
    let (src_port, dst_port) = if d.has_ports() {
        (d.src_port, d.dst_port)
    } else {
        (0, 0)
    };
    Some(PacketEnds {
        src: Addr::from_ip(d.src),
        src_port,
        dst: Addr::from_ip(d.dst),
        dst_port,
        protocol: d.protocol,
    })
}

/// An ICMP error (destination unreachable, time exceeded, parameter problem, packet too
/// big) quotes the header of the datagram that caused it; that datagram's sender is the
/// local socket the error belongs to.
pub fn icmp_quoted(linktype: u16, frame: &[u8]) -> Option<PacketEnds> {
    let d = dissect(linktype, frame);
    let (kind, _) = d.icmp?;
    let error = match d.protocol {
        1 => matches!(kind, 3 | 11 | 12),
        58 => matches!(kind, 1..=4),
        _ => false,
    };
    if !error {
        return None;
    }
    ends_of(&dissect(linktype::RAW, d.payload))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn mapped_v6_equals_v4() {
        let mapped: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            Addr::from_ip(IpAddr::V6(mapped)),
            Addr::from_ip(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))
        );
        assert!(Addr::from_v4([0; 4]).is_unspecified());
    }

    #[test]
    fn icmp_port_unreachable_quotes_the_udp_sender() {
        // Outer IPv4/ICMP type 3 quoting IPv4/UDP 127.0.0.1:4000 -> 127.0.0.9:53.
        let mut inner = vec![0u8; 28];
        inner[0] = 0x45;
        inner[9] = 17;
        inner[12..16].copy_from_slice(&[127, 0, 0, 1]);
        inner[16..20].copy_from_slice(&[127, 0, 0, 9]);
        inner[20..22].copy_from_slice(&4000u16.to_be_bytes());
        inner[22..24].copy_from_slice(&53u16.to_be_bytes());
        let mut outer = vec![0u8; 20 + 8];
        outer[0] = 0x45;
        outer[9] = 1;
        outer[20] = 3;
        outer.extend_from_slice(&inner);
        let q = icmp_quoted(linktype::RAW, &outer).expect("quoted datagram");
        assert_eq!((q.src_port, q.dst_port, q.protocol), (4000, 53, 17));
        // An echo request quotes nothing.
        outer[20] = 8;
        assert!(icmp_quoted(linktype::RAW, &outer).is_none());
    }

    #[test]
    fn parses_udp_in_ethernet() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[127, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[127, 0, 0, 2]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        let e = packet_ends(linktype::ETHERNET, &f).unwrap();
        assert_eq!((e.src_port, e.dst_port, e.protocol), (1234, 53, 17));
        assert_eq!(e.dst.to_string(), "127.0.0.2");
        assert!(packet_ends(linktype::ETHERNET, &f[..20]).is_none());
    }
}
