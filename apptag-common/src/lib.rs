//! Types shared by the kernel programs (`apptag-ebpf`) and user space (`apptag`).
//!
//! Every type is `#[repr(C)]` with explicit padding so that its layout is identical on both
//! sides and the verifier never sees uninitialised bytes being copied into a ring buffer.
#![no_std]

/// What happened to a socket. Stored in [`SockEvent::kind`].
pub mod kind {
    /// `cgroup/sock_create`: a socket was created by the current task.
    pub const CREATE: u32 = 1;
    /// `cgroup/post_bind4|6`: a local address/port was bound.
    pub const BIND: u32 = 2;
    /// `cgroup/connect4|6`: the task called connect(); remote address is known.
    pub const CONNECT: u32 = 3;
    /// `sock_ops` active/passive established: the full 4-tuple of a TCP connection is known.
    /// Runs in softirq context for passive opens, so the task fields are not meaningful there.
    pub const ESTABLISHED: u32 = 4;
    /// `tp_btf/sock_send_length` or `cgroup/sendmsg4|6`: a task sent on the socket.
    pub const SEND: u32 = 5;
    /// `tp_btf/sock_recv_length` or `cgroup/recvmsg4|6`: a task received from the socket.
    pub const RECV: u32 = 6;
    /// `cgroup/sock_release`: the socket was closed.
    pub const CLOSE: u32 = 7;
    /// `cgroup_skb`: the first packet of a new (socket, 5-tuple) pair went through the socket.
    /// Task fields are not meaningful; this ties a packet 5-tuple to a socket cookie.
    pub const FLOW: u32 = 8;
}

/// Which kernel hook produced an event. Recorded with every tag as its provenance.
pub mod hook {
    pub const SOCK_CREATE: u32 = 1;
    pub const POST_BIND4: u32 = 2;
    pub const POST_BIND6: u32 = 3;
    pub const CONNECT4: u32 = 4;
    pub const CONNECT6: u32 = 5;
    pub const SENDMSG4: u32 = 6;
    pub const SENDMSG6: u32 = 7;
    pub const RECVMSG4: u32 = 8;
    pub const RECVMSG6: u32 = 9;
    pub const SOCK_OPS: u32 = 10;
    pub const SEND_LENGTH: u32 = 11;
    pub const RECV_LENGTH: u32 = 12;
    pub const SOCK_RELEASE: u32 = 13;
    pub const SKB_EGRESS: u32 = 14;
    pub const SKB_INGRESS: u32 = 15;

    /// A short, stable name for reports and the application-record block.
    pub const fn name(hook: u32) -> &'static str {
        match hook {
            SOCK_CREATE => "sock_create",
            POST_BIND4 => "post_bind4",
            POST_BIND6 => "post_bind6",
            CONNECT4 => "connect4",
            CONNECT6 => "connect6",
            SENDMSG4 => "sendmsg4",
            SENDMSG6 => "sendmsg6",
            RECVMSG4 => "recvmsg4",
            RECVMSG6 => "recvmsg6",
            SOCK_OPS => "sock_ops",
            SEND_LENGTH => "sock_send_length",
            RECV_LENGTH => "sock_recv_length",
            SOCK_RELEASE => "sock_release",
            SKB_EGRESS => "cgroup_skb_egress",
            SKB_INGRESS => "cgroup_skb_ingress",
            _ => "unknown",
        }
    }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// IP protocol numbers (IPPROTO_*), as in IP headers and the kernel's socket tables.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
    pub const RAW: u8 = 255;
}

/// Which way a packet crossed the socket, in [`SockEvent::direction`] of FLOW events.
pub mod direction {
    /// Leaving the socket (cgroup_skb egress).
    pub const EGRESS: u8 = 1;
    /// Arriving at the socket (cgroup_skb ingress).
    pub const INGRESS: u8 = 2;
}

/// TCP_LISTEN: the TCP state of a listening socket in sock_diag and /proc/net/tcp.
pub const TCP_LISTEN: u8 = 10;

/// One socket event, written by the kernel programs into the `EVENTS` ring buffer.
///
/// Addresses are 16 bytes: IPv4 addresses sit in the first 4 bytes (network order) with
/// the rest zero. Ports are in host byte order. Fields a hook cannot see are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockEvent {
    /// `bpf_ktime_get_boot_ns()` at the event (CLOCK_BOOTTIME).
    pub ts_ns: u64,
    /// `bpf_get_socket_cookie()`: unique for the life of the kernel, never reused.
    pub cookie: u64,
    /// cgroup v2 id of the task (the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// Process id (kernel tgid).
    pub pid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// One of [`kind`].
    pub kind: u32,
    /// One of [`hook`].
    pub hook: u32,
    /// `AF_INET` or `AF_INET6` (0 if unknown).
    pub family: u16,
    /// IPPROTO_* (6 TCP, 17 UDP, 136 UDPLite, 1 ICMP, 58 ICMPv6, 255 raw); 0 if unknown.
    pub protocol: u16,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_RAW...
    pub sock_type: u16,
    pub local_port: u16,
    pub remote_port: u16,
    /// 1 when the task fields (pid, tid, comm, uid...) belong to the socket's user.
    pub task_valid: u8,
    /// For FLOW events: [`direction::EGRESS`] or [`direction::INGRESS`].
    pub direction: u8,
    /// Byte count for SEND/RECV events where the hook reports one.
    pub len: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub comm: [u8; 16],
}

impl SockEvent {
    pub const fn zeroed() -> Self {
        Self {
            ts_ns: 0,
            cookie: 0,
            cgroup_id: 0,
            pid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            kind: 0,
            hook: 0,
            family: 0,
            protocol: 0,
            sock_type: 0,
            local_port: 0,
            remote_port: 0,
            task_valid: 0,
            direction: 0,
            len: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
            comm: [0; 16],
        }
    }
}

/// Key of the kernel's per-socket dedup map: one entry per (cookie, task) so that a
/// send/recv event is only emitted the first time a given thread uses a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockTaskKey {
    pub cookie: u64,
    pub pid: u32,
    pub tid: u32,
}

/// Key of the kernel's flow dedup map: one FLOW event per (socket, 5-tuple).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub cookie: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub protocol: u16,
    pub family: u16,
}

/// Counters kept by the kernel programs in a per-CPU array, indexed by the `stat` constants.
pub mod stat {
    /// Events dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Events written.
    pub const EVENTS: u32 = 1;
    /// Packets seen by the cgroup_skb programs.
    pub const SKB_PACKETS: u32 = 2;
    pub const COUNT: u32 = 4;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) structs of integers and byte arrays with no implicit padding
    // (checked by the layout tests below), so every bit pattern is valid.
    unsafe impl aya::Pod for super::SockEvent {}
    unsafe impl aya::Pod for super::SockTaskKey {}
    unsafe impl aya::Pod for super::FlowKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // Sum of field sizes == struct size proves there is no implicit padding.
    #[test]
    fn sock_event_has_no_padding() {
        let fields = 8 * 3 + 4 * 6 + 2 * 5 + 1 + 1 + 4 + 16 * 3;
        assert_eq!(size_of::<SockEvent>(), fields);
        assert_eq!(size_of::<SockEvent>() % 8, 0);
    }

    #[test]
    fn keys_have_no_padding() {
        assert_eq!(size_of::<SockTaskKey>(), 16);
        assert_eq!(size_of::<FlowKey>(), 8 + 32 + 8);
    }
}
