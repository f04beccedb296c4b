//! apptag's kernel programs.
//!
//! They record, for every socket on the host, which task created, bound, connected, sent on
//! or received from it, and tie every packet 5-tuple to its socket cookie. User space joins
//! the two: packet -> cookie (FLOW events) -> process (task events).
//!
//! Only hooks that work on the target kernel without CO-RE are used (no kprobes, no
//! fentry/fexit, no reads of `struct sock`): cgroup sock / sock_addr / skb programs,
//! sock_ops, and the `sock_send_length` / `sock_recv_length` BTF tracepoints through
//! `bpf_get_socket_cookie`.
#![no_std]
#![no_main]

use apptag_common::{
    AF_INET, AF_INET6, FlowKey, SockEvent, SockTaskKey, direction, hook, ipproto, kind, stat,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    },
    macros::{btf_tracepoint, cgroup_skb, cgroup_sock, cgroup_sock_addr, map, sock_ops},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext},
};

/// Socket events for user space. 16 MiB holds ~150k events: several seconds of a connection
/// storm even if user space stalls.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Dedup for send/recv: the last (cookie, task) pairs already reported. Without it every
/// send() would produce an event.
#[map]
static SEEN_TASK: LruHashMap<SockTaskKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// Dedup for FLOW: (cookie, 5-tuple) pairs already reported.
#[map]
static SEEN_FLOW: LruHashMap<FlowKey, u8> = LruHashMap::with_max_entries(262144, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

// The socket's protocol field is 16 bits wide.
const IPPROTO_TCP: u16 = ipproto::TCP as u16;
const IPPROTO_UDP: u16 = ipproto::UDP as u16;
const IPPROTO_UDPLITE: u16 = ipproto::UDPLITE as u16;
const IPPROTO_SCTP: u16 = ipproto::SCTP as u16;

// sock_ops operations (uapi/linux/bpf.h).
const BPF_SOCK_OPS_TCP_CONNECT_CB: u32 = 3;
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;
const BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: u32 = 5;

#[inline(always)]
fn bump(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper with no arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Fills the task part of an event from the current task. Only called from hooks that run
/// in the context of the socket's user (syscalls), never from softirq.
#[inline(always)]
fn fill_task(ev: &mut SockEvent) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.pid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    let uid_gid = bpf_get_current_uid_gid();
    ev.uid = uid_gid as u32;
    ev.gid = (uid_gid >> 32) as u32;
    // SAFETY: helper with no arguments.
    ev.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if let Ok(comm) = bpf_get_current_comm() {
        ev.comm = comm;
    }
    ev.task_valid = 1;
}

/// BPF_RB_NO_WAKEUP: user space polls the ring every few milliseconds, so the task whose
/// connect() or send() produced the event never pays for waking the reader.
const RB_NO_WAKEUP: u64 = 1;

/// Reserves a slot, lets `fill` write it, submits it. A full ring is counted, never silent.
#[inline(always)]
fn emit(fill: impl FnOnce(&mut SockEvent)) {
    match EVENTS.reserve::<SockEvent>(0) {
        Some(mut slot) => {
            let ev = slot.write(SockEvent::zeroed());
            fill(ev);
            slot.submit(RB_NO_WAKEUP);
            bump(stat::EVENTS);
        }
        None => bump(stat::RINGBUF_FULL),
    }
}

#[inline(always)]
fn v4(addr_be: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    // The kernel hands us network-order words; their in-memory bytes are already the address.
    let b = addr_be.to_ne_bytes();
    a[0] = b[0];
    a[1] = b[1];
    a[2] = b[2];
    a[3] = b[3];
    a
}

#[inline(always)]
fn v6(words_be: [u32; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words_be[i].to_ne_bytes();
        a[i * 4] = b[0];
        a[i * 4 + 1] = b[1];
        a[i * 4 + 2] = b[2];
        a[i * 4 + 3] = b[3];
        i += 1;
    }
    a
}

#[inline(always)]
fn sock_cookie<C: EbpfContext>(ctx: &C) -> u64 {
    // SAFETY: the context is a socket-carrying program context accepted by this helper.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

// ---------------------------------------------------------------------------------------
// cgroup sock: create, bind, release
// ---------------------------------------------------------------------------------------

/// `K` is the event kind; it is a const parameter so that each program only contains the
/// context reads its attach type allows (the verifier rejects e.g. src_ip4 in sock_create,
/// and the compiler would otherwise hoist reads out of a runtime branch).
#[inline(always)]
fn sock_event<const K: u32, const V6: bool>(ctx: &SockContext, ev_hook: u32) {
    let cookie = sock_cookie(ctx);
    let sk: *const bpf_sock = ctx.sock;
    emit(|ev| {
        ev.ts_ns = now();
        ev.cookie = cookie;
        ev.kind = K;
        ev.hook = ev_hook;
        fill_task(ev);
        // SAFETY: ctx.sock is the verifier-checked bpf_sock of this program.
        unsafe {
            ev.family = (*sk).family as u16;
            ev.sock_type = (*sk).type_ as u16;
            ev.protocol = (*sk).protocol as u16;
            if K == kind::BIND {
                ev.local_port = (*sk).src_port as u16;
                if V6 {
                    ev.local_addr = v6((*sk).src_ip6);
                } else {
                    ev.local_addr = v4((*sk).src_ip4);
                }
            }
        }
    });
}

#[cgroup_sock(sock_create)]
pub fn apptag_sock_create(ctx: SockContext) -> i32 {
    sock_event::<{ kind::CREATE }, false>(&ctx, hook::SOCK_CREATE);
    1
}

#[cgroup_sock(post_bind4)]
pub fn apptag_post_bind4(ctx: SockContext) -> i32 {
    sock_event::<{ kind::BIND }, false>(&ctx, hook::POST_BIND4);
    1
}

#[cgroup_sock(post_bind6)]
pub fn apptag_post_bind6(ctx: SockContext) -> i32 {
    sock_event::<{ kind::BIND }, true>(&ctx, hook::POST_BIND6);
    1
}

#[cgroup_sock(sock_release)]
pub fn apptag_sock_release(ctx: SockContext) -> i32 {
    let cookie = sock_cookie(&ctx);
    emit(|ev| {
        ev.ts_ns = now();
        ev.cookie = cookie;
        ev.kind = kind::CLOSE;
        ev.hook = hook::SOCK_RELEASE;
        fill_task(ev);
    });
    1
}

// ---------------------------------------------------------------------------------------
// cgroup sock_addr: connect, sendmsg, recvmsg (the remote address the task named)
// ---------------------------------------------------------------------------------------

#[inline(always)]
fn sock_addr_event<const V6: bool>(ctx: &SockAddrContext, ev_kind: u32, ev_hook: u32, dedup: bool) {
    let cookie = sock_cookie(ctx);
    if dedup && !first_use(cookie) {
        return;
    }
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    emit(|ev| {
        ev.ts_ns = now();
        ev.cookie = cookie;
        ev.kind = ev_kind;
        ev.hook = ev_hook;
        fill_task(ev);
        // SAFETY: ctx.sock_addr is the verifier-checked bpf_sock_addr of this program.
        unsafe {
            // The verifier only allows user_ip4 in the *4 hooks and user_ip6 in the *6 ones.
            ev.family = if V6 { AF_INET6 } else { AF_INET };
            ev.sock_type = (*sa).type_ as u16;
            ev.protocol = (*sa).protocol as u16;
            ev.remote_port = u16::from_be((*sa).user_port as u16);
            if V6 {
                ev.remote_addr = v6((*sa).user_ip6);
            } else {
                ev.remote_addr = v4((*sa).user_ip4);
            }
        }
    });
}

#[cgroup_sock_addr(connect4)]
pub fn apptag_connect4(ctx: SockAddrContext) -> i32 {
    sock_addr_event::<false>(&ctx, kind::CONNECT, hook::CONNECT4, false);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn apptag_connect6(ctx: SockAddrContext) -> i32 {
    sock_addr_event::<true>(&ctx, kind::CONNECT, hook::CONNECT6, false);
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn apptag_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr_event::<false>(&ctx, kind::SEND, hook::SENDMSG4, true);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn apptag_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr_event::<true>(&ctx, kind::SEND, hook::SENDMSG6, true);
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn apptag_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr_event::<false>(&ctx, kind::RECV, hook::RECVMSG4, true);
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn apptag_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr_event::<true>(&ctx, kind::RECV, hook::RECVMSG6, true);
    1
}

/// True the first time the current thread uses socket `cookie` (as far as the LRU remembers).
/// Keyed by thread so that a forked child or a second thread is reported too.
#[inline(always)]
fn first_use(cookie: u64) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = SockTaskKey {
        cookie,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    };
    if SEEN_TASK.get_ptr(&key).is_some() {
        return false;
    }
    let _ = SEEN_TASK.insert(&key, &1, 0);
    true
}

// ---------------------------------------------------------------------------------------
// sock_ops: the TCP 4-tuple (local port chosen by the kernel) before the SYN leaves
// ---------------------------------------------------------------------------------------

#[sock_ops]
pub fn apptag_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_TCP_CONNECT_CB
        && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
        && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB
    {
        return 0;
    }
    let cookie = sock_cookie(&ctx);
    let family = ctx.family() as u16;
    emit(|ev| {
        ev.ts_ns = now();
        ev.cookie = cookie;
        ev.kind = kind::ESTABLISHED;
        ev.hook = hook::SOCK_OPS;
        ev.family = family;
        ev.protocol = IPPROTO_TCP;
        ev.sock_type = 1;
        // TCP_CONNECT_CB runs inside connect() in the caller's context; the established
        // callbacks run in softirq where "current" is whoever was interrupted.
        if op == BPF_SOCK_OPS_TCP_CONNECT_CB {
            fill_task(ev);
        }
        ev.local_port = ctx.local_port() as u16;
        // bpf_sock_ops.remote_port holds the network-order port in its upper 16 bits on
        // little-endian hosts (the kernel shifts skc_dport left by 16).
        ev.remote_port = u16::from_be((ctx.remote_port() >> 16) as u16);
        if family == AF_INET {
            ev.local_addr = v4(ctx.local_ip4());
            ev.remote_addr = v4(ctx.remote_ip4());
        } else if family == AF_INET6 {
            ev.local_addr = v6(ctx.local_ip6());
            ev.remote_addr = v6(ctx.remote_ip6());
        }
    });
    0
}

// ---------------------------------------------------------------------------------------
// BTF tracepoints on every send/recv: the task that really uses a socket (accepted TCP
// sockets, sockets inherited across fork, sockets opened before apptag started)
// ---------------------------------------------------------------------------------------

#[inline(always)]
fn length_event(ctx: &BtfTracePointContext, ev_kind: u32, ev_hook: u32) {
    // Arguments: (struct sock *sk, int ret, int flags).
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    // SAFETY: sk is a BTF-typed struct sock pointer, which this helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    if cookie == 0 || !first_use(cookie) {
        return;
    }
    emit(|ev| {
        ev.ts_ns = now();
        ev.cookie = cookie;
        ev.kind = ev_kind;
        ev.hook = ev_hook;
        ev.len = if ret > 0 { ret as u32 } else { 0 };
        fill_task(ev);
    });
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn apptag_send_length(ctx: BtfTracePointContext) -> i32 {
    length_event(&ctx, kind::SEND, hook::SEND_LENGTH);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn apptag_recv_length(ctx: BtfTracePointContext) -> i32 {
    length_event(&ctx, kind::RECV, hook::RECV_LENGTH);
    0
}

// ---------------------------------------------------------------------------------------
// cgroup_skb: tie each packet 5-tuple to the socket it belongs to
// ---------------------------------------------------------------------------------------

#[inline(always)]
fn skb_flow(ctx: &SkBuffContext, dir: u8) {
    bump(stat::SKB_PACKETS);
    let cookie = sock_cookie(ctx);
    if cookie == 0 {
        return;
    }
    let mut key = FlowKey {
        cookie,
        local_addr: [0; 16],
        remote_addr: [0; 16],
        local_port: 0,
        remote_port: 0,
        protocol: 0,
        family: 0,
    };
    let Ok(first) = ctx.load::<u8>(0) else {
        return;
    };
    let (src, dst, l4_off) = match first >> 4 {
        4 => {
            key.family = AF_INET;
            let Ok(proto) = ctx.load::<u8>(9) else { return };
            key.protocol = proto as u16;
            let Ok(s) = ctx.load::<u32>(12) else { return };
            let Ok(d) = ctx.load::<u32>(16) else { return };
            let ihl = ((first & 0x0f) as usize) * 4;
            // Non-first fragments carry no ports.
            let frag = ctx.load::<u16>(6).map(u16::from_be).unwrap_or(0);
            let off = if frag & 0x1fff != 0 { 0 } else { ihl };
            (v4(s), v4(d), off)
        }
        6 => {
            key.family = AF_INET6;
            let Ok(proto) = ctx.load::<u8>(6) else { return };
            key.protocol = proto as u16;
            let Ok(s) = ctx.load::<[u32; 4]>(8) else {
                return;
            };
            let Ok(d) = ctx.load::<[u32; 4]>(24) else {
                return;
            };
            (v6(s), v6(d), 40)
        }
        _ => return,
    };
    let (mut sport, mut dport) = (0u16, 0u16);
    let p = key.protocol;
    if l4_off != 0
        && (p == IPPROTO_TCP || p == IPPROTO_UDP || p == IPPROTO_UDPLITE || p == IPPROTO_SCTP)
    {
        if let Ok(ports) = ctx.load::<[u16; 2]>(l4_off) {
            sport = u16::from_be(ports[0]);
            dport = u16::from_be(ports[1]);
        }
    }
    if dir == direction::EGRESS {
        key.local_addr = src;
        key.remote_addr = dst;
        key.local_port = sport;
        key.remote_port = dport;
    } else {
        key.local_addr = dst;
        key.remote_addr = src;
        key.local_port = dport;
        key.remote_port = sport;
    }
    if SEEN_FLOW.get_ptr(&key).is_some() {
        return;
    }
    let _ = SEEN_FLOW.insert(&key, &1, 0);
    let uid = ctx.skb.get_socket_uid();
    emit(|ev| {
        ev.ts_ns = now();
        ev.cookie = cookie;
        ev.kind = kind::FLOW;
        ev.hook = if dir == direction::EGRESS {
            hook::SKB_EGRESS
        } else {
            hook::SKB_INGRESS
        };
        ev.direction = dir;
        ev.uid = uid;
        ev.family = key.family;
        ev.protocol = key.protocol;
        ev.local_addr = key.local_addr;
        ev.remote_addr = key.remote_addr;
        ev.local_port = key.local_port;
        ev.remote_port = key.remote_port;
    });
}

#[cgroup_skb(egress)]
pub fn apptag_skb_egress(ctx: SkBuffContext) -> i32 {
    skb_flow(&ctx, direction::EGRESS);
    1
}

#[cgroup_skb(ingress)]
pub fn apptag_skb_ingress(ctx: SkBuffContext) -> i32 {
    skb_flow(&ctx, direction::INGRESS);
    1
}

// Host-side checks (clippy) link std, which brings its own panic handler.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
