//! The kernel's own socket tables through netlink `SOCK_DIAG_BY_FAMILY`: every TCP, UDP and
//! UDPLite socket with its addresses, socket cookie (the same cookie the eBPF programs see)
//! and inode, joined with /proc/PID/fd to find the owner. Used at start for sockets that
//! existed before apptag, and at run time for flows the probes did not report.
use std::{io, mem::size_of};

use super::flow::{Addr, FiveTuple};
use crate::model::proto;

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// One socket as the kernel's table reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub cookie: u64,
    pub inode: u64,
    pub uid: u32,
    pub family: u16,
    /// TCP state (1 established, 10 listen, ...); 7 (close) for unconnected UDP.
    pub state: u8,
    /// Seen as the socket's sender: source = its local end. The remote end is
    /// unspecified, port 0, until connected.
    pub tuple: FiveTuple,
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// Dumps all inet sockets of the given families and protocols.
pub fn dump_all() -> io::Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for protocol in [proto::TCP, proto::UDP, proto::UDPLITE] {
            match dump(family, protocol) {
                Ok(mut v) => out.append(&mut v),
                // UDPLite diag is a module that may be absent.
                Err(e) if protocol == proto::UDPLITE => log::debug!("sock_diag udplite: {e}"),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

pub fn dump(family: u8, protocol: u8) -> io::Result<Vec<DiagSocket>> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    #[repr(C)]
    struct Req {
        hdr: NlMsgHdr,
        body: InetDiagReqV2,
    }
    let req = Req {
        hdr: NlMsgHdr {
            len: size_of::<Req>() as u32,
            ty: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            pid: 0,
        },
        body: InetDiagReqV2 {
            family,
            protocol,
            states: u32::MAX,
            ..Default::default()
        },
    };
    // SAFETY: req is a fully initialised repr(C) value of the given size.
    let sent = unsafe { libc::send(fd.0, (&req as *const Req).cast(), size_of::<Req>(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let data = buf.get(..n as usize).unwrap_or(&[]);
        let mut off = 0usize;
        while off + size_of::<NlMsgHdr>() <= data.len() {
            // SAFETY: bounds checked above; read_unaligned tolerates any alignment.
            let hdr: NlMsgHdr = unsafe { std::ptr::read_unaligned(data[off..].as_ptr().cast()) };
            let len = hdr.len as usize;
            if len < size_of::<NlMsgHdr>() || off + len > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "sock_diag: truncated netlink message",
                ));
            }
            match hdr.ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = data
                        .get(off + 16..off + 20)
                        .and_then(|b| b.try_into().ok())
                        .map(i32::from_ne_bytes)
                        .unwrap_or(0);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                SOCK_DIAG_BY_FAMILY => {
                    let body = &data[off + size_of::<NlMsgHdr>()..off + len];
                    if body.len() >= size_of::<InetDiagMsg>() {
                        // SAFETY: length checked; plain integers.
                        let m: InetDiagMsg =
                            unsafe { std::ptr::read_unaligned(body.as_ptr().cast()) };
                        out.push(convert(&m, protocol));
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

fn convert(m: &InetDiagMsg, protocol: u8) -> DiagSocket {
    let fam = u16::from(m.family);
    DiagSocket {
        cookie: u64::from(m.id.cookie[0]) | (u64::from(m.id.cookie[1]) << 32),
        inode: u64::from(m.inode),
        uid: m.uid,
        family: fam,
        state: m.state,
        tuple: FiveTuple {
            src: Addr::from_kernel(fam, &m.id.src),
            dst: Addr::from_kernel(fam, &m.id.dst),
            src_port: u16::from_be_bytes(m.id.sport),
            dst_port: u16::from_be_bytes(m.id.dport),
            protocol,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_our_own_sockets_like_proc_net_does() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let u = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let uport = u.local_addr().unwrap().port();
        let all = dump_all().expect("sock_diag dump");
        let tcp = all
            .iter()
            .find(|s| s.tuple.protocol == 6 && s.tuple.src_port == port)
            .expect("listener in sock_diag");
        assert_eq!(tcp.state, apptag_common::TCP_LISTEN, "listening");
        assert_eq!(tcp.tuple.src.to_string(), "127.0.0.1");
        assert_ne!(tcp.cookie, 0);
        // Oracle: /proc/net/tcp lists the same inode for the same port.
        let proc_net = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let hexport = format!(":{port:04X} ");
        let line = proc_net
            .lines()
            .find(|l| l.contains(&hexport))
            .expect("in /proc/net/tcp");
        let inode: u64 = line.split_whitespace().nth(9).unwrap().parse().unwrap();
        assert_eq!(tcp.inode, inode);
        assert!(
            all.iter().any(|s| s.tuple.protocol == 17
                && s.tuple.src_port == uport
                && !s.tuple.src.is_v4())
        );
    }
}
