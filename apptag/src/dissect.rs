//! Packet dissection, shared by the live sensor (which socket a packet belongs to) and the
//! report: link layer -> IPv4/IPv6 -> TCP/UDP/UDPLite/ICMP, by slicing the captured bytes
//! in place. Nothing is copied or allocated; a packet that ends
//! early or has odd fields yields whatever layers could be read, never an error, because a
//! damaged packet must still be counted.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::{
    bytes::{be16, be32},
    model::{Direction, proto},
};

/// An address in canonical (IPv4-mapped) 16-byte form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr(pub [u8; 16]);

// Flow tables hash and order addresses for every packet: as one 128-bit word, that is two
// multiplications of FxHash and one comparison, where the derived impls would go through
// a length-prefixed byte slice. Big-endian, so the order is the bytes' lexicographic one.
impl std::hash::Hash for Addr {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl Ord for Addr {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        u128::from_be_bytes(self.0).cmp(&u128::from_be_bytes(other.0))
    }
}

impl PartialOrd for Addr {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Addr {
    pub const UNSPECIFIED: Addr = Addr([0; 16]);

    pub fn from_v4(b: [u8; 4]) -> Self {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&b);
        Addr(a)
    }

    /// From the kernel's 16-byte field: IPv4 in the first 4 bytes when `family` is AF_INET.
    pub fn from_kernel(family: u16, raw: &[u8; 16]) -> Self {
        if family == apptag_common::AF_INET {
            Self::from_v4([raw[0], raw[1], raw[2], raw[3]])
        } else {
            Addr(*raw)
        }
    }

    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::from_v4(v4.octets()),
            IpAddr::V6(v6) => Addr(v6.octets()),
        }
    }

    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    /// "Any address": 0.0.0.0 or ::.
    pub fn is_unspecified(&self) -> bool {
        self.0 == [0; 16] || (self.is_v4() && self.0[12..] == [0; 4])
    }

    pub fn to_ip(self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(
                self.0[12], self.0[13], self.0[14], self.0[15],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_ip().fmt(f)
    }
}

impl Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A packet's 5-tuple as its headers state it (source first). The one flow key of the
/// crate: the sensor, the report and the analysis layers all key flows by it. Addresses
/// are canonical ([`Addr`]), so a packet and a dual-stack socket compare equal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub src: Addr,
    pub dst: Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

impl FiveTuple {
    /// The same flow seen from the other end.
    #[inline]
    pub fn reversed(&self) -> FiveTuple {
        FiveTuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }

    /// A key equal for both directions of a flow (the lower end first), and whether this
    /// tuple is in that order (its source is the lower end).
    #[inline]
    pub fn canonical(&self) -> (FiveTuple, bool) {
        // Addresses as 128-bit words: one comparison each, in the order of `Addr`.
        let (s, d) = (
            u128::from_be_bytes(self.src.0),
            u128::from_be_bytes(self.dst.0),
        );
        if s < d || (s == d && self.src_port <= self.dst_port) {
            (*self, true)
        } else {
            (self.reversed(), false)
        }
    }
}

/// Link types (LINKTYPE_*) understood.
pub mod linktype {
    pub const NULL: u16 = 0;
    pub const ETHERNET: u16 = 1;
    /// OpenBSD's and some old systems' numbers for raw IP.
    pub const RAW_OLD: u16 = 12;
    pub const RAW_OLD2: u16 = 14;
    pub const RAW: u16 = 101;
    pub const LOOP: u16 = 108;
    pub const LINUX_SLL: u16 = 113;
    pub const IPV4: u16 = 228;
    pub const IPV6: u16 = 229;
    pub const LINUX_SLL2: u16 = 276;
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented.
    #[default]
    Whole,
    /// Offset 0 with more fragments: carries the transport header.
    First { id: u32 },
    /// Offset > 0: no transport header; belongs to the datagram `id`.
    Later { id: u32 },
}

impl Fragment {
    /// From a fragment offset (in 8-byte units), the more-fragments flag and the id.
    fn of(offset: u16, more: bool, id: u32) -> Self {
        if offset != 0 {
            Fragment::Later { id }
        } else if more {
            Fragment::First { id }
        } else {
            Fragment::Whole
        }
    }
}

/// Where a fragment's data sits, for defragmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragInfo {
    /// Offset of this fragment's data in the original datagram, in bytes.
    pub offset: u32,
    /// More fragments follow (IPv4 MF, IPv6 M).
    pub more: bool,
    /// Where the fragment's data starts in `Dissected::l3`.
    pub data_start: usize,
    /// IPv4: the header length. IPv6: where the fragment header starts in `l3` (the
    /// unfragmentable part before it is kept in the reassembled datagram).
    pub header_len: usize,
    /// The protocol of the fragmented payload (IPv4 protocol, IPv6 fragment next header).
    pub next_header: u8,
    /// Where in `l3` the byte naming the fragment header sits (IPv6: the next-header field
    /// of the IPv6 header or of the last extension header before the fragment header), so
    /// a reassembled datagram can name the payload instead. IPv4: the protocol field (9).
    pub next_header_field: usize,
    /// The capture ended before the datagram did (snap length shorter than the IP length
    /// field): the fragment's data is incomplete.
    pub truncated: bool,
}

/// The TCP header fields that stream reassembly needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Header length in bytes (data offset * 4).
    pub header_len: u8,
}

/// The network layer a packet carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The link layer could not be read or the link type is unknown.
    #[default]
    Unknown,
    /// Not IP (ARP, LLDP...): the EtherType or link-layer protocol.
    NotIp(u16),
    Ipv4,
    Ipv6,
}

/// The layers found in one packet. Fields past the last layer read keep their defaults.
#[derive(Clone, Copy, Debug)]
pub struct Dissected<'a> {
    pub network: Network,
    /// Direction as the link layer states it (Linux cooked captures), else Unknown.
    pub link_direction: Direction,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPPROTO_* of the transport (after IPv6 extension headers); 0 if none.
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    pub tcp_flags: u8,
    pub fragment: Fragment,
    /// Fragment placement, when `fragment` is not `Whole` (what defragmentation needs).
    pub frag: FragInfo,
    /// The network-layer datagram (IP header included), bounded by its length field and by
    /// what was captured.
    pub l3: &'a [u8],
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// TCP sequence/acknowledgement numbers, window and header length (zero when not TCP).
    pub tcp: TcpInfo,
    /// Transport payload, bounded by the IP length (so Ethernet padding is not payload)
    /// and by what was captured.
    pub payload: &'a [u8],
}

impl Default for Dissected<'_> {
    fn default() -> Self {
        Self {
            network: Network::Unknown,
            link_direction: Direction::Unknown,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            protocol: 0,
            src_port: 0,
            dst_port: 0,
            icmp: None,
            tcp_flags: 0,
            fragment: Fragment::Whole,
            frag: FragInfo::default(),
            l3: &[],
            ttl: 0,
            tcp: TcpInfo::default(),
            payload: &[],
        }
    }
}

impl<'a> Dissected<'a> {
    pub fn is_ip(&self) -> bool {
        matches!(self.network, Network::Ipv4 | Network::Ipv6)
    }

    /// The packet's 5-tuple (ports 0 when it has none).
    #[inline]
    pub fn five_tuple(&self) -> FiveTuple {
        FiveTuple {
            src: Addr::from_ip(self.src),
            dst: Addr::from_ip(self.dst),
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol,
        }
    }

    /// The 5-tuple of an IP packet; `None` when the frame is not IP. Runs on every packet
    /// of the live sensor: nothing is allocated.
    #[inline]
    pub fn ip_five_tuple(&self) -> Option<FiveTuple> {
        self.is_ip().then(|| self.five_tuple())
    }

    /// The datagram quoted in an ICMP or ICMPv6 error (destination unreachable, time
    /// exceeded, parameter problem, packet too big), dissected: its header names the
    /// flow, and its sender the local socket, that the error is about. `None` for other
    /// packets, informational ICMP (echo...) included.
    pub fn icmp_error_quote(&self) -> Option<Dissected<'a>> {
        let (kind, _) = self.icmp?;
        let error = match self.protocol {
            proto::ICMP => matches!(kind, 3 | 11 | 12),
            proto::ICMPV6 => matches!(kind, 1..=4),
            _ => false,
        };
        error.then(|| dissect(linktype::RAW, self.payload))
    }

    /// Whether the transport header (and so the ports) was read.
    pub fn has_ports(&self) -> bool {
        matches!(
            self.protocol,
            proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP
        ) && !matches!(self.fragment, Fragment::Later { .. })
    }
}

/// Dissects one captured frame of link type `linktype`.
#[inline]
pub fn dissect(linktype: u16, data: &[u8]) -> Dissected<'_> {
    let mut d = Dissected::default();
    let (ethertype, off) = match link_layer(linktype, data, &mut d) {
        Some(x) => x,
        None => return d,
    };
    let Some(rest) = data.get(off..) else {
        return d;
    };
    match ethertype {
        ETH_IPV4 => ipv4(rest, &mut d),
        ETH_IPV6 => ipv6(rest, &mut d),
        other => d.network = Network::NotIp(other),
    }
    d
}

/// Returns the EtherType-like protocol of the network layer and its offset.
#[inline(always)]
fn link_layer(linktype: u16, data: &[u8], d: &mut Dissected) -> Option<(u16, usize)> {
    match linktype {
        linktype::ETHERNET => {
            let mut off = 12;
            let mut et = be16(data, off)?;
            // 802.1Q / 802.1ad tags, possibly stacked (QinQ).
            while ETH_VLAN.contains(&et) {
                off += 4;
                et = be16(data, off)?;
            }
            Some((et, off + 2))
        }
        linktype::LINUX_SLL => {
            d.link_direction = sll_direction(be16(data, 0)?);
            Some((be16(data, 14)?, 16))
        }
        linktype::LINUX_SLL2 => {
            d.link_direction = sll_direction(u16::from(*data.get(10)?));
            Some((be16(data, 0)?, 20))
        }
        linktype::RAW | linktype::RAW_OLD | linktype::RAW_OLD2 => {
            let v = data.first()? >> 4;
            Some((if v == 6 { ETH_IPV6 } else { ETH_IPV4 }, 0))
        }
        linktype::IPV4 => Some((ETH_IPV4, 0)),
        linktype::IPV6 => Some((ETH_IPV6, 0)),
        linktype::NULL | linktype::LOOP => {
            // The address family, in the writer's byte order (NULL) or big-endian (LOOP).
            let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
            let fam = if linktype == linktype::LOOP {
                u32::from_be_bytes(b)
            } else {
                let le = u32::from_le_bytes(b);
                if le < 0x10000 {
                    le
                } else {
                    u32::from_be_bytes(b)
                }
            };
            let et = match fam {
                2 => ETH_IPV4,
                // AF_INET6 on Linux, the BSDs and macOS.
                10 | 24 | 28 | 30 => ETH_IPV6,
                other => {
                    d.network = Network::NotIp(other as u16);
                    return None;
                }
            };
            Some((et, 4))
        }
        _ => None,
    }
}

fn sll_direction(pkttype: u16) -> Direction {
    match pkttype {
        // PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST
        0..=2 => Direction::Inbound,
        // PACKET_OUTGOING
        4 => Direction::Outbound,
        _ => Direction::Unknown,
    }
}

#[inline(always)]
fn ipv4<'a>(ip: &'a [u8], d: &mut Dissected<'a>) {
    let Some(&vihl) = ip.first() else { return };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || ip.len() < 20 {
        return;
    }
    d.network = Network::Ipv4;
    let (Some(s), Some(t)) = (ip.get(12..16), ip.get(16..20)) else {
        return;
    };
    d.src = IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3]));
    d.dst = IpAddr::V4(Ipv4Addr::new(t[0], t[1], t[2], t[3]));
    d.protocol = ip[9];
    d.ttl = ip[8];
    let total = usize::from(be16(ip, 2).unwrap_or(0));
    // TSO/GRO captures carry total length 0; trust the capture then.
    let end = if total >= ihl {
        total.min(ip.len())
    } else {
        ip.len()
    };
    let truncated = total >= ihl && total > ip.len();
    d.l3 = &ip[..end];
    let frag = be16(ip, 6).unwrap_or(0);
    let id = u32::from(be16(ip, 4).unwrap_or(0));
    let offset = frag & 0x1fff;
    d.fragment = Fragment::of(offset, frag & 0x2000 != 0, id);
    if d.fragment != Fragment::Whole {
        d.frag = FragInfo {
            offset: u32::from(offset) * 8,
            more: frag & 0x2000 != 0,
            data_start: ihl.min(end),
            header_len: ihl,
            next_header: ip[9],
            next_header_field: 9,
            truncated,
        };
    }
    if offset != 0 {
        return;
    }
    let Some(l4) = ip.get(ihl..end) else { return };
    transport(l4, d);
}

fn ipv6<'a>(ip: &'a [u8], d: &mut Dissected<'a>) {
    let (Some(s), Some(t)) = (ip.get(8..24), ip.get(24..40)) else {
        return;
    };
    if ip[0] >> 4 != 6 {
        return;
    }
    d.network = Network::Ipv6;
    let (Ok(s), Ok(t)) = (<[u8; 16]>::try_from(s), <[u8; 16]>::try_from(t)) else {
        return;
    };
    d.src = IpAddr::V6(Ipv6Addr::from(s));
    d.dst = IpAddr::V6(Ipv6Addr::from(t));
    d.ttl = ip[7];
    let plen = usize::from(be16(ip, 4).unwrap_or(0));
    // Jumbograms and TSO captures carry 0.
    let end = if plen == 0 {
        ip.len()
    } else {
        (40 + plen).min(ip.len())
    };
    let truncated = plen != 0 && 40 + plen > ip.len();
    d.l3 = &ip[..end];
    let mut next = ip[6];
    let mut off = 40;
    // Where the byte naming the current header sits.
    let mut next_field = 6;
    // Extension headers, bounded so a crafted loop of headers cannot stall us.
    for _ in 0..16 {
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let (Some(&nh), Some(&len)) = (ip.get(off), ip.get(off + 1)) else {
                    d.protocol = next;
                    return;
                };
                next = nh;
                next_field = off;
                off += (usize::from(len) + 1) * 8;
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => {
                let (Some(&nh), Some(&len)) = (ip.get(off), ip.get(off + 1)) else {
                    d.protocol = next;
                    return;
                };
                next = nh;
                next_field = off;
                off += (usize::from(len) + 2) * 4;
            }
            44 => {
                let (Some(&nh), Some(fo), Some(id)) =
                    (ip.get(off), be16(ip, off + 2), be32(ip, off + 4))
                else {
                    d.protocol = next;
                    return;
                };
                d.frag = FragInfo {
                    offset: u32::from(fo >> 3) * 8,
                    more: fo & 1 != 0,
                    data_start: (off + 8).min(end),
                    header_len: off,
                    next_header: nh,
                    next_header_field: next_field,
                    truncated,
                };
                next = nh;
                next_field = off;
                off += 8;
                let offset = fo >> 3;
                d.fragment = Fragment::of(offset, fo & 1 != 0, id);
                if offset != 0 {
                    d.protocol = next;
                    return;
                }
            }
            _ => break,
        }
    }
    d.protocol = next;
    if let Some(l4) = ip.get(off..end) {
        transport(l4, d);
    }
}

#[inline(always)]
fn transport<'a>(l4: &'a [u8], d: &mut Dissected<'a>) {
    match d.protocol {
        proto::TCP => {
            let (Some(sp), Some(dp)) = (be16(l4, 0), be16(l4, 2)) else {
                return;
            };
            d.src_port = sp;
            d.dst_port = dp;
            let Some(&doff) = l4.get(12) else { return };
            d.tcp_flags = l4.get(13).copied().unwrap_or(0);
            let hl = usize::from(doff >> 4) * 4;
            d.tcp = TcpInfo {
                seq: be32(l4, 4).unwrap_or(0),
                ack: be32(l4, 8).unwrap_or(0),
                window: be16(l4, 14).unwrap_or(0),
                header_len: hl as u8,
            };
            d.payload = l4.get(hl.max(20)..).unwrap_or(&[]);
        }
        proto::UDP | proto::UDPLITE | proto::SCTP => {
            let (Some(sp), Some(dp)) = (be16(l4, 0), be16(l4, 2)) else {
                return;
            };
            d.src_port = sp;
            d.dst_port = dp;
            let hl = if d.protocol == proto::SCTP { 12 } else { 8 };
            // UDP's own length bounds the payload when it is shorter than the IP datagram
            // (bytes after it are not the application's; tshark does the same).
            let end = match be16(l4, 4) {
                Some(ul) if d.protocol == proto::UDP && usize::from(ul) >= 8 => {
                    usize::from(ul).min(l4.len())
                }
                _ => l4.len(),
            };
            d.payload = l4.get(hl..end).unwrap_or(&[]);
        }
        proto::ICMP | proto::ICMPV6 => {
            if let (Some(&t), Some(&c)) = (l4.first(), l4.get(1)) {
                d.icmp = Some((t, c));
            }
            d.payload = l4.get(8..).unwrap_or(&[]);
        }
        _ => d.payload = l4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(frag: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34];
        p.extend(frag.to_be_bytes());
        p.extend([64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend(1234u16.to_be_bytes());
        p.extend(53u16.to_be_bytes());
        p.extend([0, 0, 0, 0]);
        p.extend(payload);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn ethernet_with_stacked_vlans_and_padding() {
        let mut f = vec![0u8; 12];
        f.extend([0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend(ipv4_udp(0, b"hi"));
        f.extend([0u8; 10]); // Ethernet padding
        let d = dissect(linktype::ETHERNET, &f);
        assert_eq!(d.network, Network::Ipv4);
        assert_eq!(d.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((d.protocol, d.src_port, d.dst_port), (17, 1234, 53));
        assert_eq!(d.payload, b"hi");
        assert!(d.has_ports());
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let p = ipv4_udp(0x0003, b"xxxxxxxx");
        let d = dissect(linktype::RAW, &p);
        assert_eq!(d.fragment, Fragment::Later { id: 0x1234 });
        assert!(!d.has_ports());
        assert_eq!(d.src_port, 0);
        let p = ipv4_udp(0x2000, b"x");
        let d = dissect(linktype::IPV4, &p);
        assert_eq!(d.fragment, Fragment::First { id: 0x1234 });
        assert_eq!(d.dst_port, 53);
    }

    #[test]
    fn ipv6_extension_headers_and_sll2() {
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        ip.extend([0u8; 15]);
        ip.push(1);
        ip.extend([0u8; 15]);
        ip.push(2);
        // hop-by-hop (8 bytes) then fragment header (first fragment) then TCP.
        ip.extend([44, 0, 0, 0, 0, 0, 0, 0]);
        ip.extend([6, 0, 0, 1, 0, 0, 0, 9]);
        ip.extend(80u16.to_be_bytes());
        ip.extend(40000u16.to_be_bytes());
        ip.extend([0u8; 8]);
        ip.extend([0x50, 0x12, 0, 0, 0, 0, 0, 0]);
        ip.extend(b"data");
        let plen = (ip.len() - 40) as u16;
        ip[4..6].copy_from_slice(&plen.to_be_bytes());
        let mut f = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0];
        f.extend([0u8; 8]);
        f.extend(ip);
        let d = dissect(linktype::LINUX_SLL2, &f);
        assert_eq!(d.network, Network::Ipv6);
        assert_eq!(d.link_direction, Direction::Outbound);
        assert_eq!(d.fragment, Fragment::First { id: 9 });
        assert_eq!((d.protocol, d.src_port, d.dst_port), (6, 80, 40000));
        assert_eq!(d.tcp_flags, 0x12);
        assert_eq!(d.payload, b"data");
    }

    #[test]
    fn null_loopback_both_byte_orders() {
        for fam in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let mut f = fam.to_vec();
            f.extend(ipv4_udp(0, b""));
            assert_eq!(dissect(linktype::NULL, &f).network, Network::Ipv4);
        }
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
        let d = dissect(linktype::RAW, &outer);
        let q = d.icmp_error_quote().and_then(|q| q.ip_five_tuple());
        let q = q.expect("quoted datagram");
        assert_eq!((q.src_port, q.dst_port, q.protocol), (4000, 53, 17));
        assert_eq!(q.src, Addr::from_v4([127, 0, 0, 1]));
        // An echo request quotes nothing.
        outer[20] = 8;
        assert!(dissect(linktype::RAW, &outer).icmp_error_quote().is_none());
    }

    #[test]
    fn ip_five_tuple_of_udp_in_ethernet_and_of_a_short_frame() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[127, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[127, 0, 0, 2]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        let e = dissect(linktype::ETHERNET, &f).ip_five_tuple().unwrap();
        assert_eq!((e.src_port, e.dst_port, e.protocol), (1234, 53, 17));
        assert_eq!(e.dst.to_string(), "127.0.0.2");
        assert!(
            dissect(linktype::ETHERNET, &f[..20])
                .ip_five_tuple()
                .is_none()
        );
    }

    #[test]
    fn addr_order_is_the_byte_order() {
        let a = [
            Addr::from_v4([10, 0, 0, 1]),
            Addr::from_v4([9, 255, 255, 255]),
        ];
        assert!(a[1] < a[0]);
        assert!(Addr([0; 16]) < Addr::from_v4([0; 4]));
        let mut hi = [0u8; 16];
        hi[0] = 1;
        let mut lo = [0xffu8; 16];
        lo[0] = 0;
        assert!(Addr(lo) < Addr(hi));
        assert_eq!(Addr(lo).cmp(&Addr(lo)), std::cmp::Ordering::Equal);
    }

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
    fn short_or_garbage_frames_do_not_panic() {
        // Whatever the bytes, the layers read stay inside the frame, and a header is only
        // claimed when the frame is long enough to hold it.
        for lt in [0, 1, 101, 113, 228, 229, 276, 9999] {
            for n in 0..70 {
                for byte in [0x45u8, 0x60] {
                    let f = vec![byte; n];
                    let d = dissect(lt, &f);
                    assert!(d.payload.len() <= n && d.l3.len() <= n, "lt {lt} n {n}");
                    if lt == 9999 {
                        assert_eq!(d.network, Network::Unknown, "unknown link type {n}");
                    }
                    if lt == linktype::RAW {
                        let (v4, need) = (byte == 0x45, if byte == 0x45 { 20 } else { 40 });
                        let want = match (n >= need, v4) {
                            (false, _) => Network::Unknown,
                            (true, true) => Network::Ipv4,
                            (true, false) => Network::Ipv6,
                        };
                        assert_eq!(d.network, want, "raw {byte:#x} x {n}");
                    }
                }
            }
        }
    }
}
