//! `apptag report --html` in a real browser (headless Chromium), on public captures without
//! process information: the page's rows and every state cell against tshark, regrouping and
//! removing rows through the address, credentials where tshark (or `apptag creds`) puts
//! them, and a screenshot to look at. The tagged case, with a real sensor and several
//! applications, is tests/tests/report_html.rs.
#[path = "common/browser.rs"]
mod browser;
mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use browser::{Browser, Element, elements, epoch_ns, grid, text_of_id};

const CAPTURES: &str = "/work/shared/captures";

fn capture(name: &str) -> Option<PathBuf> {
    let p = Path::new(CAPTURES).join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is not here", p.display());
        None
    }
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report-html")
        .join(name);
    std::fs::create_dir_all(&d).expect("output dir");
    d
}

fn report_html(file: &Path, out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_apptag"))
        .arg("report")
        .arg(file)
        .arg("--html")
        .arg(out)
        .output()
        .expect("run apptag report");
    assert!(
        o.status.success(),
        "apptag report --html: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tshark(file: &Path, args: &[&str]) -> String {
    let o = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run tshark");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("tshark output is UTF-8")
}

/// `1377201633.570191000` as nanoseconds.
/// What one cell should hold: bytes, packets, new connections, failures, credentials.
type Want = BTreeMap<(String, u64), [u64; 5]>;

struct Frame {
    time_ns: u64,
    len: u64,
    src: String,
    dst: String,
    stream: Option<u64>,
    flags: u8,
    retransmission: bool,
}

fn frames(file: &Path) -> Vec<Frame> {
    let out = tshark(
        file,
        &[
            "-T",
            "fields",
            "-E",
            "separator=\t",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.flags",
            "-e",
            "tcp.analysis.retransmission",
        ],
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            let (src, dst) = if get(2).is_empty() {
                (get(4), get(5))
            } else {
                (get(2), get(3))
            };
            Frame {
                time_ns: epoch_ns(get(0)),
                len: get(1).parse().expect("frame.len"),
                src: src.to_string(),
                dst: dst.to_string(),
                stream: get(6).parse().ok(),
                flags: (u16::from_str_radix(get(7).trim_start_matches("0x"), 16).unwrap_or(0)
                    & 0xff) as u8,
                retransmission: !get(8).is_empty(),
            }
        })
        .collect()
}

/// Per (remote host, bucket), from tshark: the report takes the end that sent a stream's
/// SYN as this host (the capture has no direction), so the other end is the remote.
fn want_by_remote(fs: &[Frame], origin: u64, bucket_ns: u64, cred_frames: &[u64]) -> Want {
    let mut initiator: HashMap<u64, String> = HashMap::new();
    for f in fs {
        let s = f.stream.expect("only TCP in this capture");
        if f.flags & 0x12 == 0x02 {
            initiator.entry(s).or_insert_with(|| f.src.clone());
        }
    }
    let mut want = Want::new();
    let mut answered: HashMap<u64, bool> = HashMap::new();
    let mut first_syn: HashMap<u64, (String, u64)> = HashMap::new();
    for (i, f) in fs.iter().enumerate() {
        let s = f.stream.expect("only TCP in this capture");
        let init = initiator
            .get(&s)
            .expect("every stream here opens with a SYN");
        let remote = if &f.src == init { &f.dst } else { &f.src };
        let bucket = (f.time_ns - origin) / bucket_ns;
        let c = want.entry((remote.clone(), bucket)).or_default();
        c[0] += f.len;
        c[1] += 1;
        if f.flags & 0x12 == 0x02 {
            first_syn.entry(s).or_insert((remote.clone(), bucket));
            if !f.retransmission {
                c[2] += 1;
            }
        }
        if f.flags & 0x04 != 0 {
            c[3] += 1;
        }
        if &f.src != init {
            answered.insert(s, true);
        }
        c[4] += cred_frames.iter().filter(|&&n| n == i as u64 + 1).count() as u64;
    }
    for (s, (remote, bucket)) in first_syn {
        if !answered.contains_key(&s) {
            want.entry((remote, bucket)).or_default()[3] += 1;
        }
    }
    want
}

fn got_cells(rows: &[(Element, Vec<Element>)]) -> Want {
    let mut got = Want::new();
    for (r, cells) in rows {
        let label = r.attr("data-label").expect("row label").to_string();
        for c in cells {
            let v = [
                c.num("data-bytes"),
                c.num("data-packets"),
                c.num("data-new"),
                c.num("data-failed"),
                c.num("data-creds"),
            ];
            assert!(
                got.insert((label.clone(), c.num("data-bucket")), v)
                    .is_none(),
                "two cells in one bucket"
            );
        }
    }
    got
}

fn creds_frames(file: &Path) -> Vec<u64> {
    let o = Command::new(env!("CARGO_BIN_EXE_apptag"))
        .arg("creds")
        .arg(file)
        .arg("--json")
        .output()
        .expect("run apptag creds");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("creds JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|c| c["frame"].as_u64().expect("frame"))
        .collect()
}

#[test]
fn untagged_capture_every_cell_equals_tshark_and_rows_regroup_in_the_browser() {
    let Some(file) = capture("pop3-pop3.pcap") else {
        return;
    };
    let Some(browser) = Browser::find() else {
        return;
    };
    let dir = out_dir("pop3");
    let page = dir.join("pop3.html");
    report_html(&file, &page);
    let mode = std::fs::metadata(&page).expect("page").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the page names the capture's hosts and users");
    let source = std::fs::read_to_string(&page).expect("page");
    // Self-contained: nothing to fetch (the SVG namespace is a name, not an address).
    let fetchable = source.replace("\"http://www.w3.org/2000/svg\"", "");
    for needle in ["<link", " src=", "http://", "https://", "url(", "import"] {
        assert!(!fetchable.contains(needle), "the page refers to {needle:?}");
    }
    assert!(
        source.contains("default-src 'none'"),
        "and may not fetch anything"
    );

    // By remote host: one row per server, each cell equal to tshark's packets in it.
    let dom = browser.dump_dom(&page, "group=remote");
    assert_eq!(text_of_id(&dom, "error"), "", "no script error");
    assert!(
        dom.contains("data-rendered=\"1\""),
        "the script ran to its end"
    );
    let (table, rows) = grid(&dom);
    assert_eq!(table.attr("data-group"), Some("remote"));
    let fs = frames(&file);
    let origin = fs.iter().map(|f| f.time_ns).min().expect("frames");
    assert_eq!(
        table.num("data-origin-ns"),
        origin,
        "bucket 0 starts at the first frame"
    );
    let bucket_ns = table.num("data-bucket-ns");
    let creds = creds_frames(&file);
    assert_eq!(creds.len(), 3, "three POP3 logins");
    let want = want_by_remote(&fs, origin, bucket_ns, &creds);
    let labels: BTreeSet<String> = rows
        .iter()
        .map(|(r, _)| r.attr("data-label").expect("label").to_string())
        .collect();
    let remotes: BTreeSet<String> = want.keys().map(|(r, _)| r.clone()).collect();
    assert_eq!(labels, remotes, "one row per remote host");
    let got = got_cells(&rows);
    assert_eq!(
        got, want,
        "cells (bytes, packets, new, failed, creds) per remote and bucket"
    );
    // The failures are the refused connections' resets, in their own cells.
    assert!(got.values().any(|c| c[3] > 0) && got.values().any(|c| c[4] > 0));
    let classes: BTreeSet<String> = rows
        .iter()
        .flat_map(|(_, cs)| cs.iter())
        .filter_map(|c| c.attr("class").map(str::to_string))
        .collect();
    for state in ["cell-active", "cell-new", "cell-failed", "cell-creds"] {
        assert!(
            classes.iter().any(|c| c.contains(state)),
            "{state} drawn: {classes:?}"
        );
    }

    // Removing a row through the address leaves it to be added back.
    let dom = browser.dump_dom(&page, "group=remote&hide=remote:212.227.15.166");
    let (_, rows) = grid(&dom);
    let shown: BTreeSet<&str> = rows
        .iter()
        .filter_map(|(r, _)| r.attr("data-label"))
        .collect();
    assert_eq!(shown, BTreeSet::from(["212.227.15.171", "212.227.15.188"]));
    let options = elements(&dom, "option");
    assert!(
        options
            .iter()
            .any(|o| o.attr("value") == Some("remote:212.227.15.166")),
        "the removed row is in the add list"
    );

    // By application: everything is one unattributed line, named as the table names it.
    let dom = browser.dump_dom(&page, "group=app");
    let (table, rows) = grid(&dom);
    assert_eq!(table.attr("data-group"), Some("app"));
    let labels: Vec<&str> = rows
        .iter()
        .filter_map(|(r, _)| r.attr("data-label"))
        .collect();
    assert_eq!(
        labels,
        ["(unattributed: no process information in the file)"]
    );
    assert_eq!(rows[0].0.num("data-packets"), fs.len() as u64);
    assert!(
        text_of_id(&dom, "app-table")
            .contains("(unattributed: no process information in the file)")
    );
    let detail = text_of_id(&dom, "details");
    assert!(
        detail.contains("digitalinvestigator@networksims.com"),
        "the login's user"
    );
    assert!(!source.contains("napier"), "passwords stay out of the page");
    // By process: none in this file.
    let dom = browser.dump_dom(&page, "group=process");
    let (table, rows) = grid(&dom);
    assert_eq!(table.attr("data-group"), Some("process"));
    assert!(rows.is_empty());

    let shot = dir.join("pop3-remote.png");
    browser.screenshot(&page, "group=remote", &shot, 1400, 1600);
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn http_basic_credential_is_in_the_bucket_of_tsharks_frame() {
    let Some(file) = capture("http-basic-auth-with-colon.pcap") else {
        return;
    };
    let Some(browser) = Browser::find() else {
        return;
    };
    let dir = out_dir("basic");
    let page = dir.join("basic.html");
    report_html(&file, &page);
    let creds = tshark(&file, &["-q", "-z", "credentials"]);
    let frame: u64 = creds
        .lines()
        .find(|l| l.contains("HTTP basic auth"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("tshark lists the Basic credential");
    let fs = frames(&file);
    let origin = fs.iter().map(|f| f.time_ns).min().expect("frames");
    let dom = browser.dump_dom(&page, "group=app");
    let (table, rows) = grid(&dom);
    let bucket = (fs[frame as usize - 1].time_ns - origin) / table.num("data-bucket-ns");
    let with_creds: Vec<u64> = rows
        .iter()
        .flat_map(|(_, cs)| cs.iter())
        .filter(|c| c.num("data-creds") > 0)
        .map(|c| c.num("data-bucket"))
        .collect();
    assert_eq!(
        with_creds,
        [bucket],
        "one credential, in frame {frame}'s bucket"
    );
    assert!(text_of_id(&dom, "details").contains("test"), "its user");
}
