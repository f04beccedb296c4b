//! Defragmenter cost per fragment, and heap allocations in steady state.
//!
//! `cargo run --release -p apptag --example defrag_bench -- [DATAGRAMS] [FRAGMENTS_EACH]`
//!
//! Builds IPv4 UDP datagrams of FRAGMENTS_EACH fragments (1480 data bytes each, sent last
//! fragment first every other datagram, 64 datagrams interleaved), dissects every fragment
//! with the crate's dissector and pushes it. Prints fragments/s, data GB/s and the heap
//! allocations made after the warm-up round.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use apptag::{
    analysis::defrag::{DefragConfig, DefragOutcome, Defragmenter},
    dissect::{dissect, linktype},
};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` above with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `p` came from this allocator with layout `l`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn fragment(id: u16, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend(((20 + data.len()) as u16).to_be_bytes());
    p.extend(id.to_be_bytes());
    p.extend((((offset / 8) as u16) | if more { 0x2000 } else { 0 }).to_be_bytes());
    p.extend([64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend(data);
    p
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let datagrams = args.first().copied().unwrap_or(500_000);
    let per = args.get(1).copied().unwrap_or(2).clamp(2, 40);
    let data = vec![0x5au8; 1480];
    // 64 interleaved datagrams' worth of fragments, reused with new ids.
    let group = 64usize;
    let mut by_datagram: Vec<Vec<Vec<u8>>> = (0..group)
        .map(|g| {
            let mut fr: Vec<Vec<u8>> = (0..per)
                .map(|i| fragment(g as u16, i * 1480, i + 1 < per, &data))
                .collect();
            if g % 2 == 1 {
                fr.reverse();
            }
            fr
        })
        .collect();
    // Round robin: 64 datagrams in flight at once.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for i in 0..per {
        for fr in &mut by_datagram {
            frames.push(std::mem::take(&mut fr[i]));
        }
    }
    // Ids change every round without fixing checksums: the check is off.
    let mut df = Defragmenter::new(DefragConfig {
        verify_ipv4_checksum: false,
        ..DefragConfig::default()
    });
    let rounds = datagrams.div_ceil(group);
    let mut done = 0u64;
    let mut bytes = 0u64;
    let mut allocs_after_warmup = 0;
    let start = Instant::now();
    let mut frame_no = 0u64;
    for r in 0..rounds {
        if r == 1 {
            allocs_after_warmup = ALLOCS.load(Ordering::Relaxed);
        }
        for f in &mut frames {
            // A new id each round: new datagrams, same buffers.
            let id = (r as u16) ^ u16::from_be_bytes([f[4], f[5]]);
            f[4..6].copy_from_slice(&id.to_be_bytes());
            frame_no += 1;
            let d = dissect(linktype::RAW, f);
            bytes += d.l3.len() as u64;
            if let DefragOutcome::Reassembled { datagram, .. } = df.push(frame_no, r as u64, &d) {
                done += 1;
                std::hint::black_box(datagram);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_after_warmup;
    println!(
        "{frame_no} fragments ({per} per datagram), {done} datagrams reassembled in {secs:.3} s: \
         {:.2} M fragments/s, {:.2} GB/s of fragment bytes; heap allocations after warm-up: {allocs}",
        frame_no as f64 / secs / 1e6,
        bytes as f64 / secs / 1e9
    );
    println!("{}", serde_json::to_string(df.stats()).unwrap_or_default());
}
