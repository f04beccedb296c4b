//! tcpdump-syntax filters, compiled to classic BPF by libpcap's own compiler and made ready
//! for SO_ATTACH_FILTER on our socket.
use super::{CaptureError, iface::linktype};

/// BPF opcodes used when adjusting programs (from <linux/filter.h>).
mod op {
    pub const LD: u16 = 0x00;
    pub const LDX: u16 = 0x01;
    pub const RET: u16 = 0x06;
    pub const K: u16 = 0x00;
    pub const ABS: u16 = 0x20;
    pub const IND: u16 = 0x40;
    pub const MSH: u16 = 0xa0;

    pub const fn class(code: u16) -> u16 {
        code & 0x07
    }
    pub const fn mode(code: u16) -> u16 {
        code & 0xe0
    }
    pub const fn rval(code: u16) -> u16 {
        code & 0x18
    }
}

const SLL2_HDR_LEN: u32 = 20;

/// What to attach in the kernel, and whether the full filter must also run in user space
/// (when the kernel cannot see a header field the expression tests).
#[derive(Clone, Debug)]
pub struct KernelFilter {
    pub insns: Vec<libc::sock_filter>,
    pub needs_userland: bool,
}

/// A program that accepts every packet and truncates it to `snaplen`.
pub fn accept_all(snaplen: u32) -> Vec<libc::sock_filter> {
    vec![libc::sock_filter {
        code: op::RET | op::K,
        jt: 0,
        jf: 0,
        k: snaplen,
    }]
}

fn pcap_message(e: pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(m) => m,
        other => other.to_string(),
    }
}

/// Compiles with a live libpcap handle on `iface`, which tells libpcap's code generator
/// that the kernel offers BPF extensions: `vlan` then tests the out-of-band tag (the
/// driver or the receive path strips it before the filter runs), and `inbound`/`outbound`
/// work on Ethernet, exactly as for tcpdump. None if the handle cannot be opened.
fn compile_live(expr: &str, iface: &str) -> Option<Result<pcap::BpfProgram, String>> {
    let cap = pcap::Capture::from_device(iface)
        .ok()?
        .promisc(false)
        .snaplen(128)
        .buffer_size(1 << 16)
        .open()
        .map_err(|e| log::debug!("live libpcap handle on {iface} for compiling: {e}"))
        .ok()?;
    if cap.get_datalink().0 != i32::from(linktype::ETHERNET) {
        return None;
    }
    Some(cap.compile(expr, true).map_err(pcap_message))
}

fn compile_raw(
    expr: &str,
    link: u16,
    live_iface: Option<&str>,
) -> Result<Vec<libc::sock_filter>, String> {
    let live = match live_iface {
        Some(i) if link == linktype::ETHERNET => compile_live(expr, i),
        _ => None,
    };
    let prog = match live {
        Some(p) => p?,
        None => {
            let dead =
                pcap::Capture::dead(pcap::Linktype(i32::from(link))).map_err(|e| e.to_string())?;
            dead.compile(expr, true).map_err(pcap_message)?
        }
    };
    Ok(prog
        .get_instructions()
        .iter()
        .map(|i| {
            // BpfInstruction is a transparent wrapper around libpcap's `struct bpf_insn`
            // (u16 code, u8 jt, u8 jf, u32 k); its Display prints exactly those four fields.
            let text = i.to_string();
            let mut it = text.split(' ').map(|f| f.parse::<u32>().unwrap_or(0));
            let code = it.next().unwrap_or(0);
            let jt = it.next().unwrap_or(0);
            let jf = it.next().unwrap_or(0);
            let k = it.next().unwrap_or(0);
            libc::sock_filter {
                code: code as u16,
                jt: jt as u8,
                jf: jf as u8,
                k,
            }
        })
        .collect())
}

/// A compiled program for the user-space check, when the kernel cannot run the full filter.
pub struct UserFilter(pcap::BpfProgram);

impl UserFilter {
    pub fn new(expr: &str, link: u16) -> Result<Self, CaptureError> {
        let dead = pcap::Capture::dead(pcap::Linktype(i32::from(link)))
            .map_err(|e| filter_error(expr, link, e.to_string()))?;
        let prog = dead
            .compile(expr, true)
            .map_err(|e| filter_error(expr, link, e.to_string()))?;
        Ok(UserFilter(prog))
    }

    pub fn matches(&self, frame: &[u8]) -> bool {
        self.0.filter(frame)
    }
}

impl std::fmt::Debug for UserFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserFilter")
    }
}

/// Compiles `expr` for link type `link` and adapts it for the kernel: returns truncate to
/// `snaplen`, and for cooked (SLL2) captures, where the kernel's packet starts at the network
/// header, offsets are moved as libpcap's fix_offset does.
pub fn compile(
    expr: &str,
    link: u16,
    snaplen: u32,
    iface: Option<&str>,
) -> Result<KernelFilter, CaptureError> {
    let mut insns = compile_raw(expr, link, iface).map_err(|m| filter_error(expr, link, m))?;
    for i in &mut insns {
        if op::class(i.code) == op::RET && op::rval(i.code) == op::K && i.k != 0 {
            i.k = snaplen;
        }
    }
    let mut needs_userland = false;
    if link == linktype::LINUX_SLL2 {
        for i in &mut insns {
            let class = op::class(i.code);
            let mode = op::mode(i.code);
            if (class == op::LD || class == op::LDX)
                && (mode == op::ABS || mode == op::IND || mode == op::MSH)
                && !fix_sll2_offset(i)
            {
                needs_userland = true;
            }
        }
    }
    if needs_userland {
        log::warn!(
            "filter {expr:?} tests link-layer header fields the kernel cannot see on a cooked \
             capture; it runs in user space instead"
        );
        insns = accept_all(snaplen);
    }
    Ok(KernelFilter {
        insns,
        needs_userland,
    })
}

/// Moves one load from SLL2 header coordinates to the kernel's view; false if impossible.
fn fix_sll2_offset(i: &mut libc::sock_filter) -> bool {
    let ad_off = libc::SKF_AD_OFF as u32;
    if i.k >= ad_off {
        return true;
    }
    if i.k >= SLL2_HDR_LEN {
        i.k -= SLL2_HDR_LEN;
        return true;
    }
    let ad = match i.k {
        0 => libc::SKF_AD_PROTOCOL,
        4 => libc::SKF_AD_IFINDEX,
        10 => libc::SKF_AD_PKTTYPE,
        _ => return false,
    };
    i.k = ad_off.wrapping_add(ad as u32);
    true
}

/// Checks a filter expression without opening anything (for early CLI validation).
pub fn check(expr: &str, link: u16) -> Result<(), CaptureError> {
    compile_raw(expr, link, None)
        .map(|_| ())
        .map_err(|m| filter_error(expr, link, m))
}

fn filter_error(expr: &str, link: u16, message: String) -> CaptureError {
    let position = error_position(expr, link, &message);
    CaptureError::Filter {
        expression: expr.to_string(),
        message,
        position,
    }
}

/// Token spans of a filter expression: words, with parentheses standing alone.
fn tokens(expr: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in expr.char_indices() {
        let alone = c == '(' || c == ')';
        if c.is_whitespace() || alone {
            if let Some(s) = start.take() {
                out.push((s, i));
            }
            if alone {
                out.push((i, i + 1));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, expr.len()));
    }
    out
}

/// Where in `expr` the error is, as a byte offset, as best we can tell from outside
/// libpcap: first a token that libpcap's message names, else the token after the longest
/// prefix that can still be completed into a valid filter.
pub fn error_position(expr: &str, link: u16, message: &str) -> Option<usize> {
    let toks = tokens(expr);
    if toks.is_empty() {
        return None;
    }
    // libpcap quotes what it could not use: "unknown host 'foo'", "illegal token: @".
    let quoted = message
        .split(['\'', '"'])
        .skip(1)
        .step_by(2)
        .chain(message.rsplit_once(": ").map(|(_, t)| t))
        .filter(|q| !q.is_empty());
    for q in quoted {
        if let Some(&(s, _)) = toks.iter().find(|&&(s, e)| &expr[s..e] == q) {
            return Some(s);
        }
        if let Some(p) = expr.find(q) {
            return Some(p);
        }
    }
    // "bogus ethernet address 1:2:" names a prefix of the bad token.
    if let Some(last) = message.rsplit(' ').next().filter(|w| w.len() > 1)
        && let Some(&(s, _)) = toks.iter().find(|&&(s, e)| expr[s..e].starts_with(last))
    {
        return Some(s);
    }
    // Numbers libpcap rejects ("port 99999 > 65535") are named unquoted.
    for word in message.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.len() > 1
            && word.bytes().all(|b| b.is_ascii_digit())
            && let Some(&(s, _)) = toks.iter().find(|&&(s, e)| &expr[s..e] == word)
        {
            return Some(s);
        }
    }
    const COMPLETIONS: [&str; 6] = ["", " 1", " ip", " 127.0.0.1", ")", " 1)"];
    let parses = |p: &str| compile_raw(p, link, None).is_ok();
    for n in (1..=toks.len()).rev() {
        let prefix = &expr[..toks[n - 1].1];
        if COMPLETIONS.iter().any(|c| parses(&format!("{prefix}{c}"))) {
            return Some(toks.get(n).map_or(expr.len(), |t| t.0));
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(expr: &str) -> Option<usize> {
        match check(expr, linktype::ETHERNET) {
            Err(CaptureError::Filter { position, .. }) => position,
            other => panic!("{expr:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn error_positions_point_at_the_culprit() {
        assert_eq!(pos("udp port 99999"), Some(9));
        assert_eq!(pos("udp port"), Some(8));
        assert_eq!(pos("udp port 53 and and tcp"), Some(16));
        assert_eq!(pos("hst 127.0.0.1"), Some(0));
        assert_eq!(pos("ip host 300.1.1.1"), Some(8));
        assert_eq!(pos("tcp[13] & 0x02 != 0 and foo"), Some(24));
        assert_eq!(pos("ether host 1:2:3"), Some(11));
        assert_eq!(pos("tcp and (dst port 80"), Some(20));
    }

    #[test]
    fn odd_expressions_never_panic() {
        for e in [
            "(",
            ")",
            "ü port 1",
            "port ü",
            "(((",
            "tcp ]",
            "  ",
            "and",
            "host 'x'",
        ] {
            match check(e, linktype::ETHERNET) {
                Err(CaptureError::Filter { position, .. }) => {
                    assert!(position.is_none_or(|p| p <= e.len()), "{e:?}: {position:?}");
                }
                // libpcap takes a blank expression as "everything", as tcpdump does.
                Ok(()) => assert!(e.trim().is_empty(), "{e:?} accepted"),
                Err(other) => panic!("{e:?}: not a filter error: {other}"),
            }
        }
    }

    #[test]
    fn error_shows_libpcap_message_and_caret() {
        let text = check("udp port 53 and and tcp", linktype::ETHERNET)
            .expect_err("bad filter")
            .to_string();
        assert!(text.contains("syntax error"), "{text}");
        assert!(
            text.ends_with(&format!("\n  {}^", " ".repeat(16))),
            "{text}"
        );
    }

    #[test]
    fn returns_truncate_to_snaplen() {
        let f = compile("udp", linktype::ETHERNET, 96, None).expect("valid filter");
        let rets: Vec<u32> = f
            .insns
            .iter()
            .filter(|i| op::class(i.code) == op::RET)
            .map(|i| i.k)
            .collect();
        assert!(
            rets.contains(&96) && rets.iter().all(|&k| k == 0 || k == 96),
            "{rets:?}"
        );
    }

    #[test]
    fn sll2_loads_move_to_kernel_offsets() {
        let f = compile("udp port 53", linktype::LINUX_SLL2, 65535, None).expect("valid filter");
        assert!(!f.needs_userland);
        // The first load reads the SLL2 protocol field, which the kernel exposes as
        // SKF_AD_PROTOCOL.
        let first = f.insns.first().expect("non-empty program");
        assert_eq!(first.k, (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32);
        // A filter on the SLL2 link-layer address cannot run in the kernel.
        let g = compile("ether[12] = 0", linktype::LINUX_SLL2, 65535, None).expect("valid filter");
        assert!(g.needs_userland);
        assert_eq!(g.insns.len(), 1);
    }
}
