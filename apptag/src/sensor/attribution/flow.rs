//! The keys a packet is looked up by. A socket's connection is a [`FiveTuple`] seen as its
//! sender (source = the socket's local end); a bound-but-unconnected socket (UDP server,
//! TCP listener) is known by its local end only, a [`LocalKey`]. Addresses are canonical
//! ([`Addr`]), so `::ffff:10.0.0.1` on a dual-stack socket matches 10.0.0.1 in an IPv4
//! packet.
pub use crate::dissect::{Addr, FiveTuple};

/// The local end of a socket: address, port, transport protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalKey {
    pub addr: Addr,
    pub port: u16,
    pub protocol: u8,
}

impl LocalKey {
    /// The local end of `t` seen as its sender: its source.
    #[inline]
    pub fn of_sender(t: &FiveTuple) -> LocalKey {
        LocalKey {
            addr: t.src,
            port: t.src_port,
            protocol: t.protocol,
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_keeps_the_family() {
        let t = FiveTuple {
            src: Addr::from_v4([10, 0, 0, 1]),
            dst: Addr::from_v4([10, 0, 0, 2]),
            src_port: 53,
            dst_port: 4000,
            protocol: 17,
        };
        let k = LocalKey::of_sender(&t);
        assert_eq!((k.addr, k.port, k.protocol), (t.src, 53, 17));
        assert_eq!(k.wildcard().addr, Addr::from_v4([0; 4]));
        let v6 = LocalKey {
            addr: Addr([1; 16]),
            ..k
        };
        assert_eq!(v6.wildcard().addr, Addr::UNSPECIFIED);
    }
}
