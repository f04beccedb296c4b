//! `apptag report --plot` writes readable SVG/PNG files, and damaged input never panics the
//! report: whatever the bytes, a report or an error comes back.
use std::{path::Path, process::Command};

use apptag::report::{Options, analyze_bytes};

fn capture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/captures")
        .join(name)
}

#[test]
fn plot_svg_and_png() {
    let dir = std::env::temp_dir().join(format!("apptag-report-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("p.svg");
    let png = dir.join("p.png");
    for out in [&svg, &png] {
        let o = Command::new(env!("CARGO_BIN_EXE_apptag"))
            .arg("report")
            .arg(capture("ftp-ipv4.pcap"))
            .arg("--plot")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "not an SVG");
    for label in [
        "Traffic volume per application",
        "throughput (kB/s, stacked)",
        "time since 2012-02-21 16:52:41",
        "unattributed: no process information in the file (10.5 kB)",
        "Conversations: bytes per remote host, per application",
        "199.233.217.249:21",
    ] {
        assert!(text.contains(label), "SVG lacks {label:?}");
    }
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), (1200, 1000));
    // file(1) agrees it is an image, if present.
    if let Ok(o) = Command::new("file").arg(&png).output() {
        assert!(String::from_utf8_lossy(&o.stdout).contains("PNG image data"));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_apptag"))
        .arg("report")
        .arg(capture("ftp-ipv4.pcap"))
        .arg("--plot")
        .arg(dir.join("p.gif"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(".svg or .png"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn damaged_bytes_never_panic() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let dir = std::env::temp_dir().join(format!("apptag-report-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A pcapng too (made by editcap), so both readers meet damage.
    let ng = dir.join("ftp-ipv4.pcapng");
    let st = Command::new("editcap")
        .args(["-F", "pcapng"])
        .arg(capture("ftp-ipv4.pcap"))
        .arg(&ng)
        .status()
        .unwrap();
    assert!(st.success());
    let inputs = [
        capture("http-pipelined-requests.pcap"),
        capture("ipv6-fragmented-dns.pcap"),
        capture("ftp-ipv6.pcap"),
        ng,
    ];
    for path in &inputs {
        let name = path.display().to_string();
        let clean = std::fs::read(path).unwrap();
        for round in 0..300 {
            let mut data = clean.clone();
            // A few random bytes changed; every tenth round also cut short.
            for _ in 0..(1 + rng.next() % 8) {
                let i = (rng.next() as usize) % data.len();
                data[i] = rng.next() as u8;
            }
            if round % 10 == 0 {
                let n = (rng.next() as usize) % data.len();
                data.truncate(n);
            }
            if let Ok(r) = analyze_bytes(&data, &name, Options { flows: true }) {
                let sum: u64 = r.applications.iter().map(|a| a.bytes).sum();
                assert_eq!(sum, r.totals.bytes, "{name} round {round}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
