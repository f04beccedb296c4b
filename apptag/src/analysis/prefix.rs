//! Longest-prefix-match tables: a value (a reassembly policy) per destination prefix.
//!
//! Target-based reassembly needs to know which stack a destination runs, and operators
//! know that per subnet ("10.0.0.0/8 runs Linux, 10.1.2.3 is a Windows server"). The most
//! specific prefix wins, as in Suricata's `host-os-policy` radix tree.
//!
//! IPv4 and IPv6 share one table: addresses are kept in the crate's canonical 16-byte form
//! ([`Addr`], IPv4 mapped into `::ffff:0:0/96`), so an IPv4 /8 is stored as a /104.
use std::{collections::HashMap, fmt, net::IpAddr, str::FromStr};

use thiserror::Error;

use crate::dissect::Addr;

/// A bad prefix table specification.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("`{entry}`: expected PREFIX=VALUE, for example 10.0.0.0/8=linux")]
    MissingValue { entry: String },
    #[error("`{entry}`: `{addr}` is not an IPv4 or IPv6 address")]
    BadAddress { entry: String, addr: String },
    #[error("`{entry}`: prefix length `{len}` is not a number from 0 to {max}")]
    BadLength { entry: String, len: String, max: u8 },
    #[error(
        "`{entry}`: {addr}/{len} has bits set past the prefix length; did you mean {network}/{len}?"
    )]
    HostBits {
        entry: String,
        addr: IpAddr,
        len: u8,
        network: IpAddr,
    },
    #[error("`{entry}`: {message}")]
    BadValue { entry: String, message: String },
    #[error("`{entry}`: {prefix} is given twice")]
    Duplicate { entry: String, prefix: String },
}

/// A prefix: an address and how many leading bits of it count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network address, canonical, with the bits past `len` cleared.
    addr: Addr,
    /// Length in canonical (16-byte) bits: an IPv4 /8 is 104.
    len: u8,
}

impl Prefix {
    /// `addr/len`, `len` counted in the address's own family (0..=32 for IPv4). Bits past
    /// the length must be zero.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let entry = format!("{addr}/{len}");
        let (canon_len, max) = match addr {
            IpAddr::V4(_) => (len.saturating_add(96), 32),
            IpAddr::V6(_) => (len, 128),
        };
        if len > max {
            return Err(PrefixError::BadLength {
                entry,
                len: len.to_string(),
                max,
            });
        }
        let a = Addr::from_ip(addr);
        let masked = mask(a, canon_len);
        if masked != a {
            return Err(PrefixError::HostBits {
                entry,
                addr,
                len,
                network: masked.to_ip(),
            });
        }
        Ok(Self {
            addr: masked,
            len: canon_len,
        })
    }

    pub fn contains(&self, a: Addr) -> bool {
        mask(a, self.len) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = if self.addr.is_v4() && self.len >= 96 {
            self.len - 96
        } else {
            self.len
        };
        write!(f, "{}/{len}", self.addr)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a host: /32 or /128).
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let s = s.trim();
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s.trim().parse().map_err(|_| PrefixError::BadAddress {
            entry: s.to_string(),
            addr: addr_s.to_string(),
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_s {
            None => max,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(PrefixError::BadLength {
                        entry: s.to_string(),
                        len: l.to_string(),
                        max,
                    });
                }
            },
        };
        Prefix::new(addr, len).map_err(|e| match e {
            PrefixError::HostBits {
                addr, len, network, ..
            } => PrefixError::HostBits {
                entry: s.to_string(),
                addr,
                len,
                network,
            },
            other => other,
        })
    }
}

fn mask(a: Addr, len: u8) -> Addr {
    let mut out = [0u8; 16];
    let full = usize::from(len / 8);
    out[..full].copy_from_slice(&a.0[..full]);
    let rest = len % 8;
    if rest != 0 && full < 16 {
        out[full] = a.0[full] & (0xffu8 << (8 - rest));
    }
    Addr(out)
}

/// Values per prefix; a lookup returns the value of the longest prefix that contains the
/// address. One hash table per prefix length in use, probed from the longest length
/// down, so a lookup costs one probe per distinct length (a handful in practice).
#[derive(Clone, Debug)]
pub struct PrefixMap<T> {
    /// (canonical prefix length, network -> value), longest first.
    by_len: Vec<(u8, HashMap<Addr, T>)>,
    len: usize,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        Self {
            by_len: Vec::new(),
            len: 0,
        }
    }
}

impl<T> PrefixMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the value of `prefix`, returning the one it replaces.
    pub fn insert(&mut self, prefix: Prefix, value: T) -> Option<T> {
        let i = match self.by_len.iter().position(|(l, _)| *l <= prefix.len) {
            Some(i) if self.by_len[i].0 == prefix.len => i,
            Some(i) => {
                self.by_len.insert(i, (prefix.len, HashMap::new()));
                i
            }
            None => {
                self.by_len.push((prefix.len, HashMap::new()));
                self.by_len.len() - 1
            }
        };
        let old = self.by_len[i].1.insert(prefix.addr, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of the most specific prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Addr) -> Option<&T> {
        self.by_len
            .iter()
            .find_map(|(len, m)| m.get(&mask(addr, *len)))
    }

    pub fn lookup_ip(&self, addr: IpAddr) -> Option<&T> {
        self.lookup(Addr::from_ip(addr))
    }

    /// Every (prefix, value), longest prefixes first.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &T)> {
        self.by_len.iter().flat_map(|(len, m)| {
            m.iter().map(|(a, v)| {
                (
                    Prefix {
                        addr: *a,
                        len: *len,
                    },
                    v,
                )
            })
        })
    }
}

impl<T: FromStr> PrefixMap<T>
where
    T::Err: fmt::Display,
{
    /// Parses `PREFIX=VALUE[,PREFIX=VALUE...]` (commas or whitespace between entries),
    /// for example `10.0.0.0/8=linux,10.1.2.3=windows,2001:db8::/32=bsd`. A prefix given
    /// twice is an error rather than a silent override.
    pub fn parse_spec(spec: &str) -> Result<Self, PrefixError> {
        let mut map = Self::new();
        for entry in spec
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            map.add_spec_entry(entry)?;
        }
        Ok(map)
    }

    /// Adds one `PREFIX=VALUE` entry (as a repeated command-line option gives them).
    pub fn add_spec_entry(&mut self, entry: &str) -> Result<(), PrefixError> {
        let Some((p, v)) = entry.split_once('=') else {
            return Err(PrefixError::MissingValue {
                entry: entry.to_string(),
            });
        };
        let prefix: Prefix = p.parse().map_err(|e| match e {
            PrefixError::BadAddress { addr, .. } => PrefixError::BadAddress {
                entry: entry.to_string(),
                addr,
            },
            PrefixError::BadLength { len, max, .. } => PrefixError::BadLength {
                entry: entry.to_string(),
                len,
                max,
            },
            PrefixError::HostBits {
                addr, len, network, ..
            } => PrefixError::HostBits {
                entry: entry.to_string(),
                addr,
                len,
                network,
            },
            other => other,
        })?;
        let value: T = v
            .trim()
            .parse()
            .map_err(|e: T::Err| PrefixError::BadValue {
                entry: entry.to_string(),
                message: e.to_string(),
            })?;
        if self.lookup_exact(prefix).is_some() {
            return Err(PrefixError::Duplicate {
                entry: entry.to_string(),
                prefix: prefix.to_string(),
            });
        }
        self.insert(prefix, value);
        Ok(())
    }

    fn lookup_exact(&self, prefix: Prefix) -> Option<&T> {
        self.by_len
            .iter()
            .find(|(l, _)| *l == prefix.len)
            .and_then(|(_, m)| m.get(&prefix.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Addr {
        Addr::from_ip(s.parse().unwrap())
    }

    #[test]
    fn longest_prefix_wins_for_both_families() {
        let m: PrefixMap<String> = PrefixMap::parse_spec(
            "0.0.0.0/0=a, 10.0.0.0/8=b 10.1.0.0/16=c,10.1.2.3=d,::/0=e,2001:db8::/32=f",
        )
        .unwrap();
        assert_eq!(m.len(), 6);
        let at = |s: &str| m.lookup(ip(s)).map(String::as_str);
        assert_eq!(at("192.168.1.1"), Some("a"));
        assert_eq!(at("10.200.0.1"), Some("b"));
        assert_eq!(at("10.1.9.9"), Some("c"));
        assert_eq!(at("10.1.2.3"), Some("d"));
        assert_eq!(at("10.1.2.4"), Some("c"));
        assert_eq!(at("2001:db8:1::1"), Some("f"));
        assert_eq!(at("2001:db9::1"), Some("e"));
        // IPv4 prefixes do not leak into IPv6 space and the other way round.
        let v4only: PrefixMap<u8> = PrefixMap::parse_spec("0.0.0.0/0=1").unwrap();
        assert_eq!(v4only.lookup(ip("2001:db8::1")), None);
        let v6: PrefixMap<u8> = PrefixMap::parse_spec("2001:db8::/32=1").unwrap();
        assert_eq!(v6.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn odd_prefix_lengths() {
        let m: PrefixMap<u8> = PrefixMap::parse_spec("192.168.0.0/23=1,fe80::/10=2").unwrap();
        assert_eq!(m.lookup(ip("192.168.1.255")), Some(&1));
        assert_eq!(m.lookup(ip("192.168.2.0")), None);
        assert_eq!(m.lookup(ip("febf::1")), Some(&2));
        assert_eq!(m.lookup(ip("fec0::1")), None);
    }

    #[test]
    fn bad_specs_name_the_entry_and_the_fix() {
        let e = PrefixMap::<u8>::parse_spec("10.0.0.0/8").unwrap_err();
        assert!(matches!(e, PrefixError::MissingValue { .. }), "{e}");
        assert!(e.to_string().contains("PREFIX=VALUE"));
        let e = PrefixMap::<u8>::parse_spec("10.0.0/8=1").unwrap_err();
        assert!(
            e.to_string()
                .contains("`10.0.0` is not an IPv4 or IPv6 address"),
            "{e}"
        );
        let e = PrefixMap::<u8>::parse_spec("10.0.0.0/33=1").unwrap_err();
        assert!(e.to_string().contains("from 0 to 32"), "{e}");
        let e = PrefixMap::<u8>::parse_spec("10.0.0.1/8=1").unwrap_err();
        assert!(e.to_string().contains("did you mean 10.0.0.0/8"), "{e}");
        let e = PrefixMap::<u8>::parse_spec("10.0.0.0/8=x").unwrap_err();
        assert!(matches!(e, PrefixError::BadValue { .. }), "{e}");
        let e = PrefixMap::<u8>::parse_spec("10.0.0.0/8=1,10.0.0.0/8=2").unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }
}
