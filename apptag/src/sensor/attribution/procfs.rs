//! The kernel's socket tables as /proc/net/{tcp,udp,udplite}[6] list them: the method of
//! the original design and of nethogs-like tools. It sees no socket cookie, so sockets are
//! keyed by inode. Used by `--attribution procfs` (no eBPF at all) as the baseline.
use super::{
    flow::{Addr, FiveTuple},
    sockdiag::DiagSocket,
};
use crate::model::proto;

/// Pseudo-cookies for procfs sockets: inode with the top bit set, never a real cookie.
pub const INODE_COOKIE_BIT: u64 = 1 << 63;

pub fn dump_all() -> Vec<DiagSocket> {
    let mut out = Vec::new();
    for (file, proto, v6) in [
        ("tcp", proto::TCP, false),
        ("tcp6", proto::TCP, true),
        ("udp", proto::UDP, false),
        ("udp6", proto::UDP, true),
        ("udplite", proto::UDPLITE, false),
        ("udplite6", proto::UDPLITE, true),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) {
            out.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| parse_line(l, proto, v6)),
            );
        }
    }
    out
}

fn parse_line(line: &str, protocol: u8, v6: bool) -> Option<DiagSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (local, local_port) = parse_endpoint(f.get(1)?, v6)?;
    let (remote, remote_port) = parse_endpoint(f.get(2)?, v6)?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let uid = f.get(7)?.parse().ok()?;
    let inode: u64 = f.get(9)?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    Some(DiagSocket {
        cookie: inode | INODE_COOKIE_BIT,
        inode,
        uid,
        family: if v6 { 10 } else { 2 },
        state,
        tuple: FiveTuple {
            src: local,
            dst: remote,
            src_port: local_port,
            dst_port: remote_port,
            protocol,
        },
    })
}

/// "0100007F:1F90" (IPv4, each 32-bit word in host byte order) or 32 hex digits for IPv6.
fn parse_endpoint(s: &str, v6: bool) -> Option<(Addr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let mut raw = [0u8; 16];
    for (i, w) in words.iter().enumerate().take(4) {
        raw[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let a = if v6 {
        Addr(raw)
    } else {
        Addr::from_v4([raw[0], raw[1], raw[2], raw[3]])
    };
    Some((a, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_like_the_kernel_writes_it() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let all = dump_all();
        let s = all
            .iter()
            .find(|s| s.tuple.protocol == 6 && s.tuple.src_port == port)
            .expect("listener in /proc/net/tcp");
        assert_eq!(s.tuple.src.to_string(), "127.0.0.1");
        assert_eq!(s.state, apptag_common::TCP_LISTEN);
        // Oracle: sock_diag reports the same inode for it.
        let diag = super::super::sockdiag::dump_all().unwrap();
        let d = diag
            .iter()
            .find(|d| d.tuple.protocol == 6 && d.tuple.src_port == port)
            .unwrap();
        assert_eq!(d.inode, s.inode);
    }
}
