//! Interface look-up: name -> index, hardware type, and the link type we capture it with.
use std::{ffi::CString, fs, path::Path};

use super::CaptureError;

/// The pseudo-interface that captures on every interface at once.
pub const ANY: &str = "any";

/// LINKTYPE_* values used here (pcap-linktype(7)).
pub mod linktype {
    pub const ETHERNET: u16 = 1;
    pub const IEEE802_11: u16 = 105;
    pub const RAW: u16 = 101;
    pub const IEEE802_11_RADIOTAP: u16 = 127;
    pub const NETLINK: u16 = 253;
    pub const LINUX_SLL2: u16 = 276;
}

/// ARPHRD_* values from <linux/if_arp.h> that decide the link type.
mod arphrd {
    pub const ETHER: u16 = 1;
    pub const RAWIP: u16 = 519;
    pub const TUNNEL: u16 = 768;
    pub const TUNNEL6: u16 = 769;
    pub const LOOPBACK: u16 = 772;
    pub const SIT: u16 = 776;
    pub const IEEE80211: u16 = 801;
    pub const IEEE80211_RADIOTAP: u16 = 803;
    pub const NETLINK: u16 = 824;
    pub const NONE: u16 = 65534;
}

/// How frames are read from the socket and what link-layer header they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// SOCK_RAW: the device's own header (Ethernet, raw IP, radiotap...).
    Raw,
    /// SOCK_DGRAM: no link header from the kernel; we synthesize Linux SLL2 headers, as
    /// libpcap does for `any` and for devices whose headers are not worth keeping.
    Cooked,
}

#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    /// 0 for `any`.
    pub ifindex: i32,
    pub linktype: u16,
    pub framing: Framing,
    /// Index of `lo`, whose outgoing copies are dropped (-1 if there is no `lo`).
    pub lo_ifindex: i32,
}

impl Interface {
    pub fn is_any(&self) -> bool {
        self.ifindex == 0
    }

    pub fn is_loopback(&self) -> bool {
        self.ifindex != 0 && self.ifindex == self.lo_ifindex
    }

    /// Ethernet frames may have had their VLAN tag moved out of band by the driver; we put
    /// it back like libpcap does.
    pub fn reinserts_vlan(&self) -> bool {
        self.framing == Framing::Raw && self.linktype == linktype::ETHERNET
    }
}

fn ifindex(name: &str) -> i32 {
    let Ok(c) = CString::new(name) else { return 0 };
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    i32::try_from(idx).unwrap_or(0)
}

/// Names of the interfaces that exist in this network namespace, sorted.
pub fn interface_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_sys(name: &str, file: &str) -> Option<String> {
    fs::read_to_string(Path::new("/sys/class/net").join(name).join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parses a sysfs number that may be written in hex (`0x1003`) or decimal.
fn parse_sys_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// One counter from /sys/class/net/NAME/statistics (None for `any` or if unreadable).
pub fn sys_counter(name: &str, counter: &str) -> Option<u64> {
    if name == ANY {
        return None;
    }
    read_sys(name, &format!("statistics/{counter}")).and_then(|s| parse_sys_num(&s))
}

/// Maps an ARPHRD type to (link type, framing) as libpcap's map_arphrd_to_dlt does for the
/// types we can represent; anything else is captured cooked (SLL2).
pub fn link_for_arphrd(hw: u16) -> (u16, Framing) {
    match hw {
        arphrd::ETHER | arphrd::LOOPBACK => (linktype::ETHERNET, Framing::Raw),
        arphrd::NONE | arphrd::RAWIP | arphrd::TUNNEL | arphrd::TUNNEL6 | arphrd::SIT => {
            (linktype::RAW, Framing::Raw)
        }
        arphrd::IEEE80211 => (linktype::IEEE802_11, Framing::Raw),
        arphrd::IEEE80211_RADIOTAP => (linktype::IEEE802_11_RADIOTAP, Framing::Raw),
        arphrd::NETLINK => (linktype::NETLINK, Framing::Raw),
        _ => (linktype::LINUX_SLL2, Framing::Cooked),
    }
}

/// Looks an interface up by name, with an error that lists the ones that exist.
pub fn lookup(name: &str) -> Result<Interface, CaptureError> {
    let lo_ifindex = match ifindex("lo") {
        0 => -1,
        i => i,
    };
    if name == ANY {
        return Ok(Interface {
            name: name.to_string(),
            ifindex: 0,
            linktype: linktype::LINUX_SLL2,
            framing: Framing::Cooked,
            lo_ifindex,
        });
    }
    let idx = ifindex(name);
    if idx == 0 {
        return Err(unknown_interface(name));
    }
    let hw = read_sys(name, "type")
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| unknown_interface(name))?;
    let flags = read_sys(name, "flags")
        .and_then(|s| parse_sys_num(&s))
        .unwrap_or(0);
    if flags & libc::IFF_UP as u64 == 0 {
        return Err(CaptureError::InterfaceDown {
            interface: name.to_string(),
        });
    }
    let (linktype, framing) = link_for_arphrd(hw);
    Ok(Interface {
        name: name.to_string(),
        ifindex: idx,
        linktype,
        framing,
        lo_ifindex,
    })
}

pub fn unknown_interface(name: &str) -> CaptureError {
    let mut available = interface_names();
    available.push(ANY.to_string());
    CaptureError::UnknownInterface {
        interface: name.to_string(),
        available: available.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_ethernet_and_any_is_sll2() {
        let lo = lookup("lo").expect("lo exists on every Linux host");
        assert_eq!(lo.linktype, linktype::ETHERNET);
        assert_eq!(lo.framing, Framing::Raw);
        assert!(lo.is_loopback());
        let any = lookup(ANY).expect("any always exists");
        assert_eq!(any.linktype, linktype::LINUX_SLL2);
        assert_eq!(any.framing, Framing::Cooked);
        assert!(any.is_any());
    }

    #[test]
    fn unknown_interface_names_it_and_lists_real_ones() {
        let err = lookup("nosuchif0").expect_err("nosuchif0 must not exist");
        let msg = err.to_string();
        assert!(msg.contains("nosuchif0"), "{msg}");
        assert!(msg.contains("lo"), "{msg}");
    }

    #[test]
    fn tun_like_devices_are_raw_ip() {
        assert_eq!(link_for_arphrd(65534), (linktype::RAW, Framing::Raw));
        assert_eq!(link_for_arphrd(512).1, Framing::Cooked);
    }
}
