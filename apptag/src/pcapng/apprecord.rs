//! The application-record block: a copyable Custom Block (0x00000BAD) under [`APPTAG_PEN`]
//! listing each application and its sockets. Versioned, little-endian, split so that no
//! block exceeds [`MAX_APP_BLOCK_LEN`]. The exact layout is in docs/FORMAT.md; this file
//! is its reference implementation.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::block::{BlockBuilder, Cursor};
use super::{APPTAG_PEN, MAX_APP_BLOCK_LEN, PcapngError, block_type};
use crate::{
    dissect::{Addr, FiveTuple},
    model::{AppRecord, Provenance, SocketRecord},
};

/// First four bytes of the block data after the PEN.
pub const MAGIC: [u8; 4] = *b"ATAG";
/// Readers skip blocks whose major version they do not know.
pub const VERSION_MAJOR: u16 = 1;
/// Minor versions only append fields (to the header, an app record or a socket record);
/// readers skip bytes they do not know using the length fields.
pub const VERSION_MINOR: u16 = 0;
/// Length of the data header that we write (readers honour the stored `header_len`).
pub const HEADER_LEN: u16 = 32;

/// `flags` bit: this block belongs to the final, complete table written at a clean stop.
pub const FLAG_FINAL: u16 = 1;

// Caps keep one application header well under the block limit, so every block fits.
const MAX_NAME: usize = 255;
const MAX_PATH: usize = 4096;
const MAX_ARGS: usize = 256;
const MAX_CMDLINE: usize = 8192;
const MAX_PIDS: usize = 1024;
/// Room for the block header, PEN, data header, padding and trailer.
const BLOCK_OVERHEAD: usize = 8 + 4 + HEADER_LEN as usize + 3 + 4;
const RECORDS_BUDGET: usize = MAX_APP_BLOCK_LEN - BLOCK_OVERHEAD - 1;

/// One decoded application-record block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppBlock {
    pub sequence: u32,
    pub final_table: bool,
    /// Index of this block among the blocks of one table write (0-based) and their count.
    pub part: u16,
    pub parts: u16,
    pub apps: Vec<AppRecord>,
}

fn provenance_code(p: Provenance) -> (u8, u32) {
    match p {
        Provenance::Unknown => (0, 0),
        Provenance::Hook(h) => (1, h),
        Provenance::SockDiag => (2, 0),
        Provenance::Procfs => (3, 0),
    }
}

fn provenance_from(kind: u8, value: u32) -> Provenance {
    match kind {
        1 => Provenance::Hook(value),
        2 => Provenance::SockDiag,
        3 => Provenance::Procfs,
        _ => Provenance::Unknown,
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(out: &mut Vec<u8>, s: &str, max: usize) {
    let s = cut(s, max);
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes an application header with socket_count 0 (patched by the caller).
fn encode_app_header(app: &AppRecord) -> Vec<u8> {
    let mut h = Vec::with_capacity(64 + app.name.len() + app.exe.len());
    let pids = &app.pids[..app.pids.len().min(MAX_PIDS)];
    let (pk, pv) = provenance_code(app.provenance);
    h.extend_from_slice(&0u32.to_le_bytes()); // rec_len, patched
    h.extend_from_slice(&app.start_ns.to_le_bytes());
    h.extend_from_slice(&app.uid.to_le_bytes());
    h.push(pk);
    h.push(0);
    h.extend_from_slice(&(pids.len() as u16).to_le_bytes());
    h.extend_from_slice(&pv.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // socket_count, patched
    let mut args = Vec::new();
    let mut total = 0;
    for a in app.cmdline.iter().take(MAX_ARGS) {
        let a = cut(a, MAX_CMDLINE - total);
        total += a.len();
        args.push(a);
        if total >= MAX_CMDLINE {
            break;
        }
    }
    h.extend_from_slice(&(args.len() as u16).to_le_bytes());
    put_str(&mut h, &app.name, MAX_NAME);
    put_str(&mut h, &app.exe, MAX_PATH);
    put_str(&mut h, &app.cgroup, MAX_PATH);
    for a in args {
        put_str(&mut h, a, MAX_CMDLINE);
    }
    for p in pids {
        h.extend_from_slice(&p.to_le_bytes());
    }
    h
}

const SOCKET_FIXED: usize = 2 + 1 + 1 + 2 + 2 + 8 * 8 + 4 + 4 + 4;

fn addr_len(a: &IpAddr) -> usize {
    if a.is_ipv4() { 4 } else { 16 }
}

fn socket_len(s: &SocketRecord) -> usize {
    SOCKET_FIXED + addr_len(&s.local_addr) + addr_len(&s.remote_addr)
}

fn put_addr(out: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
        IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
    }
}

fn encode_socket(out: &mut Vec<u8>, s: &SocketRecord) {
    let (pk, pv) = provenance_code(s.provenance);
    out.extend_from_slice(&(socket_len(s) as u16).to_le_bytes());
    out.push(s.protocol);
    out.push(u8::from(s.local_addr.is_ipv6()) | (u8::from(s.remote_addr.is_ipv6()) << 1));
    out.extend_from_slice(&s.local_port.to_le_bytes());
    out.extend_from_slice(&s.remote_port.to_le_bytes());
    put_addr(out, &s.local_addr);
    put_addr(out, &s.remote_addr);
    for v in [
        s.first_ns,
        s.last_ns,
        s.packets_in,
        s.packets_out,
        s.bytes_in,
        s.bytes_out,
        s.cookie,
        s.attributed_ns,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&s.pid.to_le_bytes());
    out.extend_from_slice(&[pk, 0, 0, 0]);
    out.extend_from_slice(&pv.to_le_bytes());
}

/// Encodes one table write as complete blocks, appended to `buf`. Returns the number of
/// blocks. An application with more sockets than fit in one block is repeated in the next
/// block with the remaining sockets; readers merge them.
pub(crate) fn encode_blocks(
    buf: &mut Vec<u8>,
    apps: &[AppRecord],
    final_table: bool,
    sequence: u32,
) -> Result<usize, PcapngError> {
    let mut parts: Vec<(Vec<u8>, u32)> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut count = 0u32;
    for app in apps {
        let hdr = encode_app_header(app);
        let mut socks = app.sockets.iter().peekable();
        loop {
            let first = socks.peek().map_or(0, |s| socket_len(s));
            if count > 0 && cur.len() + hdr.len() + first > RECORDS_BUDGET {
                parts.push((std::mem::take(&mut cur), count));
                count = 0;
            }
            let start = cur.len();
            cur.extend_from_slice(&hdr);
            let mut n: u16 = 0;
            while let Some(s) = socks.peek() {
                if n > 0 && cur.len() + socket_len(s) > RECORDS_BUDGET {
                    break;
                }
                encode_socket(&mut cur, s);
                n += 1;
                socks.next();
            }
            let rec_len = (cur.len() - start) as u32;
            cur[start..start + 4].copy_from_slice(&rec_len.to_le_bytes());
            // socket_count sits after rec_len, start_ns, uid, kind, pad, pid_count, value.
            let sc = start + 4 + 8 + 4 + 1 + 1 + 2 + 4;
            cur[sc..sc + 2].copy_from_slice(&n.to_le_bytes());
            count += 1;
            if socks.peek().is_none() {
                break;
            }
            parts.push((std::mem::take(&mut cur), count));
            count = 0;
        }
    }
    if count > 0 || parts.is_empty() {
        parts.push((cur, count));
    }
    let nparts = parts.len();
    if nparts > u16::MAX as usize {
        return Err(PcapngError::TooLarge {
            what: "application table",
            len: nparts * MAX_APP_BLOCK_LEN,
            max: u16::MAX as usize * MAX_APP_BLOCK_LEN,
        });
    }
    let flags = if final_table { FLAG_FINAL } else { 0 };
    for (i, (records, count)) in parts.iter().enumerate() {
        let mut b = BlockBuilder::begin(buf, block_type::CUSTOM_COPY);
        b.u32(APPTAG_PEN);
        b.bytes(&MAGIC);
        b.u16(VERSION_MAJOR);
        b.u16(VERSION_MINOR);
        b.u16(HEADER_LEN);
        b.u16(flags);
        b.u32(sequence);
        b.u16(i as u16);
        b.u16(nparts as u16);
        b.u32(*count);
        b.u32(records.len() as u32);
        b.u32(0);
        b.bytes(records);
        b.finish();
    }
    Ok(nparts)
}

fn get_str(c: &mut Cursor<'_>, what: &str) -> Result<String, PcapngError> {
    let n = c.u16(what)? as usize;
    Ok(String::from_utf8_lossy(c.take(n, what)?).into_owned())
}

fn get_addr(c: &mut Cursor<'_>, v6: bool, what: &str) -> Result<IpAddr, PcapngError> {
    if v6 {
        let b = c.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        let b = c.take(4, what)?;
        Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
    }
}

/// A record that starts with its own length (`len_size` bytes, 2 or 4, counting itself):
/// moves `c` past it and returns a cursor over its body, after the length.
fn sub_record<'a>(
    c: &mut Cursor<'a>,
    len_size: usize,
    what: &str,
) -> Result<Cursor<'a>, PcapngError> {
    let start = *c;
    let len = if len_size == 2 {
        c.u16(what)? as usize
    } else {
        c.u32(what)? as usize
    };
    if len < len_size {
        return Err(start.corrupt(format!("{what} length {len} is below {len_size}")));
    }
    let mut body = Cursor::new(start.take_ahead(len, what)?, start.offset(), false);
    c.skip(len - len_size, what)?;
    body.skip(len_size, what)?;
    Ok(body)
}

fn decode_socket(c: &mut Cursor<'_>) -> Result<SocketRecord, PcapngError> {
    let mut body = sub_record(c, 2, "socket record")?;
    let protocol = body.u8("socket protocol")?;
    let fam = body.u8("socket address families")?;
    let local_port = body.u16("local port")?;
    let remote_port = body.u16("remote port")?;
    let local_addr = get_addr(&mut body, fam & 1 != 0, "local address")?;
    let remote_addr = get_addr(&mut body, fam & 2 != 0, "remote address")?;
    let mut v = [0u64; 8];
    for x in &mut v {
        *x = body.u64("socket counters")?;
    }
    let pid = body.u32("socket pid")?;
    let pk = body.u8("socket provenance")?;
    body.skip(3, "socket reserved")?;
    let pv = body.u32("socket provenance value")?;
    Ok(SocketRecord {
        local_addr,
        local_port,
        remote_addr,
        remote_port,
        protocol,
        first_ns: v[0],
        last_ns: v[1],
        packets_in: v[2],
        packets_out: v[3],
        bytes_in: v[4],
        bytes_out: v[5],
        cookie: v[6],
        attributed_ns: v[7],
        pid,
        provenance: provenance_from(pk, pv),
    })
}

fn decode_app(c: &mut Cursor<'_>) -> Result<AppRecord, PcapngError> {
    let mut a = sub_record(c, 4, "application record")?;
    let start_ns = a.u64("application start time")?;
    let uid = a.u32("application uid")?;
    let pk = a.u8("application provenance")?;
    a.skip(1, "application reserved")?;
    let pid_count = a.u16("pid count")?;
    let pv = a.u32("application provenance value")?;
    let socket_count = a.u16("socket count")?;
    let argc = a.u16("argument count")?;
    let name = get_str(&mut a, "application name")?;
    let exe = get_str(&mut a, "application executable")?;
    let cgroup = get_str(&mut a, "application cgroup")?;
    let mut cmdline = Vec::with_capacity(argc.min(64) as usize);
    for _ in 0..argc {
        cmdline.push(get_str(&mut a, "command-line argument")?);
    }
    let mut pids = Vec::with_capacity(pid_count.min(64) as usize);
    for _ in 0..pid_count {
        pids.push(a.u32("pid")?);
    }
    let mut sockets = Vec::with_capacity(socket_count.min(256) as usize);
    for _ in 0..socket_count {
        sockets.push(decode_socket(&mut a)?);
    }
    Ok(AppRecord {
        name,
        pids,
        cmdline,
        exe,
        start_ns,
        uid,
        cgroup,
        provenance: provenance_from(pk, pv),
        sockets,
    })
}

/// Decodes the custom data (after the PEN) of an [`APPTAG_PEN`] block. `Ok(None)` if it is
/// not ours (wrong magic) or of a major version this reader does not know.
pub fn decode(data: &[u8], offset: u64) -> Result<Option<AppBlock>, PcapngError> {
    let mut c = Cursor::new(data, offset, false);
    if data.len() < 4 || data[..4] != MAGIC {
        return Ok(None);
    }
    c.skip(4, "magic")?;
    let major = c.u16("major version")?;
    let minor = c.u16("minor version")?;
    if major != VERSION_MAJOR {
        log::warn!(
            "application-record block at byte {offset} has version {major}.{minor}; this \
             apptag reads version {VERSION_MAJOR}.x only: skipped (update apptag)"
        );
        return Ok(None);
    }
    let header_len = c.u16("header length")? as usize;
    if header_len < HEADER_LEN as usize {
        return Err(c.corrupt(format!(
            "application-record header length {header_len} is below {HEADER_LEN}"
        )));
    }
    let flags = c.u16("flags")?;
    let sequence = c.u32("sequence")?;
    let part = c.u16("part")?;
    let parts = c.u16("parts")?;
    let app_count = c.u32("application count")?;
    let data_len = c.u32("records length")? as usize;
    c.skip(header_len - 28, "header")?;
    let records = c.take(data_len, "application records")?;
    let mut r = Cursor::new(records, c.offset() - data_len as u64, false);
    let mut apps = Vec::with_capacity(app_count.min(1024) as usize);
    for _ in 0..app_count {
        apps.push(decode_app(&mut r)?);
    }
    Ok(Some(AppBlock {
        sequence,
        final_table: flags & FLAG_FINAL != 0,
        part,
        parts,
        apps,
    }))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AppKey {
    name: String,
    exe: String,
    uid: u32,
    cgroup: String,
}

impl AppKey {
    fn of(a: &AppRecord) -> Self {
        AppKey {
            name: a.name.clone(),
            exe: a.exe.clone(),
            uid: a.uid,
            cgroup: a.cgroup.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SockKey {
    Cookie(u64),
    /// The socket's 5-tuple (source = its local end) and pid.
    Tuple(FiveTuple, u32),
}

impl SockKey {
    fn of(s: &SocketRecord) -> Self {
        if s.cookie != 0 {
            SockKey::Cookie(s.cookie)
        } else {
            let t = FiveTuple {
                src: Addr::from_ip(s.local_addr),
                dst: Addr::from_ip(s.remote_addr),
                src_port: s.local_port,
                dst_port: s.remote_port,
                protocol: s.protocol,
            };
            SockKey::Tuple(t, s.pid)
        }
    }
}

/// Merges periodic application-record blocks into one table. An application is identified
/// by (name, exe, uid, cgroup); a socket by its cookie, or by its 5-tuple and pid when the
/// cookie is unknown. Socket counters are cumulative, so a later record replaces an earlier
/// one; pids are united; the first and last packet times widen.
#[derive(Clone, Debug, Default)]
pub struct AppTable {
    apps: Vec<AppRecord>,
    index: HashMap<AppKey, usize>,
    sockets: Vec<HashMap<SockKey, usize>>,
    /// Number of application-record blocks merged.
    pub blocks: u64,
    /// Highest sequence number seen.
    pub last_sequence: Option<u32>,
    final_parts: Option<(u32, u16, u16)>,
}

impl AppTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one block (as the reader returns it).
    pub fn merge_block(
        &mut self,
        sequence: u32,
        final_table: bool,
        part: u16,
        parts: u16,
        apps: Vec<AppRecord>,
    ) {
        self.blocks += 1;
        self.last_sequence = Some(self.last_sequence.map_or(sequence, |s| s.max(sequence)));
        if final_table {
            self.final_parts = match self.final_parts {
                Some((seq, seen, total)) if seq == sequence => {
                    Some((seq, seen.saturating_add(1), total))
                }
                _ if part == 0 => Some((sequence, 1, parts)),
                other => other,
            };
        }
        self.merge(apps);
    }

    /// Merges a list of application records (newer than everything merged before).
    pub fn merge(&mut self, apps: Vec<AppRecord>) {
        for app in apps {
            let key = AppKey::of(&app);
            match self.index.get(&key) {
                None => {
                    let i = self.apps.len();
                    let mut socks = HashMap::new();
                    let mut dedup: Vec<SocketRecord> = Vec::with_capacity(app.sockets.len());
                    for s in app.sockets.iter() {
                        match socks.get(&SockKey::of(s)) {
                            Some(&j) => merge_socket(&mut dedup[j], s.clone()),
                            None => {
                                socks.insert(SockKey::of(s), dedup.len());
                                dedup.push(s.clone());
                            }
                        }
                    }
                    self.index.insert(key, i);
                    self.sockets.push(socks);
                    self.apps.push(AppRecord {
                        sockets: dedup,
                        ..app
                    });
                }
                Some(&i) => {
                    let (Some(old), Some(socks)) = (self.apps.get_mut(i), self.sockets.get_mut(i))
                    else {
                        continue;
                    };
                    for p in &app.pids {
                        if !old.pids.contains(p) {
                            old.pids.push(*p);
                        }
                    }
                    if !app.cmdline.is_empty() {
                        old.cmdline = app.cmdline;
                    }
                    if app.start_ns != 0 && (old.start_ns == 0 || app.start_ns < old.start_ns) {
                        old.start_ns = app.start_ns;
                    }
                    if app.provenance != Provenance::Unknown {
                        old.provenance = app.provenance;
                    }
                    for s in app.sockets {
                        let k = SockKey::of(&s);
                        match socks.get(&k) {
                            Some(&j) => {
                                if let Some(o) = old.sockets.get_mut(j) {
                                    merge_socket(o, s);
                                }
                            }
                            None => {
                                socks.insert(k, old.sockets.len());
                                old.sockets.push(s);
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn apps(&self) -> &[AppRecord] {
        &self.apps
    }

    pub fn into_apps(self) -> Vec<AppRecord> {
        self.apps
    }

    /// True when all blocks of a final table were seen (the capture stopped cleanly).
    pub fn final_complete(&self) -> bool {
        matches!(self.final_parts, Some((_, seen, total)) if seen >= total)
    }
}

/// Remembers what was written, so that periodic writes carry only new and changed records:
/// an application appears when it is new or its header (pids, cmdline...) changed, with
/// only its new or changed sockets. Used by [`super::Writer::write_app_changes`].
#[derive(Clone, Debug, Default)]
pub struct ChangeTracker {
    seen: HashMap<AppKey, (u64, HashMap<SockKey, u64>)>,
}

fn digest(v: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn app_digest(a: &AppRecord) -> u64 {
    digest((&a.pids, &a.cmdline, a.start_ns, a.provenance))
}

fn socket_digest(s: &SocketRecord) -> u64 {
    digest((
        (
            s.local_addr,
            s.local_port,
            s.remote_addr,
            s.remote_port,
            s.protocol,
        ),
        (
            s.first_ns,
            s.last_ns,
            s.packets_in,
            s.packets_out,
            s.bytes_in,
            s.bytes_out,
        ),
        (s.cookie, s.pid, s.provenance, s.attributed_ns),
    ))
}

impl ChangeTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets these sockets (and an application once none of its sockets is left).
    pub fn forget(&mut self, apps: &[AppRecord]) {
        for app in apps {
            let key = AppKey::of(app);
            if let Some((_, socks)) = self.seen.get_mut(&key) {
                for s in &app.sockets {
                    socks.remove(&SockKey::of(s));
                }
                if socks.is_empty() {
                    self.seen.remove(&key);
                }
            }
        }
    }

    /// The part of `table` that differs from what earlier calls returned.
    pub fn changes(&mut self, table: &[AppRecord]) -> Vec<AppRecord> {
        let mut out = Vec::new();
        for app in table {
            let (hdr, socks) = self
                .seen
                .entry(AppKey::of(app))
                .or_insert_with(|| (0, HashMap::new()));
            let d = app_digest(app);
            let header_changed = *hdr != d;
            *hdr = d;
            let changed: Vec<SocketRecord> = app
                .sockets
                .iter()
                .filter(|s| {
                    socks.insert(SockKey::of(s), socket_digest(s)) != Some(socket_digest(s))
                })
                .cloned()
                .collect();
            if header_changed || !changed.is_empty() {
                out.push(AppRecord {
                    sockets: changed,
                    ..app.clone()
                });
            }
        }
        out
    }
}

fn merge_socket(old: &mut SocketRecord, new: SocketRecord) {
    let first = match (old.first_ns, new.first_ns) {
        (0, n) => n,
        (o, 0) => o,
        (o, n) => o.min(n),
    };
    let last = old.last_ns.max(new.last_ns);
    *old = new;
    old.first_ns = first;
    old.last_ns = last;
}

/// Merges blocks given in file order into one table.
pub fn merge_app_records(blocks: impl IntoIterator<Item = Vec<AppRecord>>) -> Vec<AppRecord> {
    let mut t = AppTable::new();
    for b in blocks {
        t.merge(b);
    }
    t.into_apps()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn sock(l: IpAddr, r: IpAddr) -> SocketRecord {
        SocketRecord {
            local_addr: l,
            local_port: 1,
            remote_addr: r,
            remote_port: 2,
            protocol: 17,
            first_ns: 0,
            last_ns: 0,
            packets_in: 0,
            packets_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            cookie: 0,
            pid: 0,
            provenance: Provenance::Unknown,
            attributed_ns: 0,
        }
    }

    #[test]
    fn socket_record_sizes_match_format_md() {
        let v4: IpAddr = Ipv4Addr::LOCALHOST.into();
        let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
        for (l, r, want) in [(v4, v4, 92), (v4, v6, 104), (v6, v6, 116)] {
            let mut out = Vec::new();
            encode_socket(&mut out, &sock(l, r));
            assert_eq!(out.len(), want);
            assert_eq!(u16::from_le_bytes([out[0], out[1]]) as usize, want);
        }
    }

    #[test]
    fn foreign_block_under_our_pen_is_not_misread() {
        assert_eq!(
            decode(b"EXAMPLE DATA FROM SOMEONE ELSE..", 0).ok(),
            Some(None)
        );
        let mut v2 = Vec::new();
        encode_blocks(&mut v2, &[], false, 0).expect("encode");
        // Custom data starts after the 8-byte block header and the PEN.
        let mut data = v2[12..v2.len() - 4].to_vec();
        data[4] = 2; // major version 2
        assert_eq!(decode(&data, 12).ok(), Some(None));
    }

    #[test]
    fn merge_unites_pids_and_widens_times() {
        let mut a = AppRecord {
            name: "x".into(),
            pids: vec![1],
            ..AppRecord::default()
        };
        let mut s = sock(Ipv4Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into());
        s.cookie = 7;
        s.first_ns = 10;
        s.last_ns = 20;
        s.packets_in = 1;
        a.sockets = vec![s.clone()];
        let mut b = a.clone();
        b.pids = vec![2];
        b.sockets[0].first_ns = 15;
        b.sockets[0].last_ns = 30;
        b.sockets[0].packets_in = 5;
        let merged = merge_app_records([vec![a], vec![b]]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].pids, [1, 2]);
        let m = &merged[0].sockets[0];
        assert_eq!((m.first_ns, m.last_ns, m.packets_in), (10, 30, 5));
    }
}
