//! `apptag report --html`: the report as one self-contained page (inline CSS, script and
//! data; nothing fetched), with the application table, volume against time, the
//! state-vs-time view of [`super::timeline`] (rows by application, remote host or process,
//! added, removed and regrouped in the page) and per-application detail.
//!
//! The page is bounded whatever the capture: at most [`MAX_BUCKETS`] time buckets,
//! [`MAX_ROWS`] rows per grouping (the rest summed into one "other" row), [`MAX_APPS`]
//! applications in the table and detail, [`MAX_PROCESSES`] processes and
//! [`MAX_CREDENTIALS`] credentials per application, and command lines cut to [`MAX_TEXT`]
//! characters.
//!
//! Everything from the capture (names, command lines, DNS names) is data: it goes into the
//! page as JSON inside a `<script type="application/json">` block with `<` escaped, and the
//! script puts it into the document as text nodes only, so a hostile name cannot become markup.
use std::io::Write;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{
    Report, ReportError,
    aggregate::LineId,
    summary::{Application, Process, ProtocolShare, Remote},
    timeline::{Cell, GroupKind, Row, StateTimeline},
};
use crate::{analysis::creds::Credential, units::utc_time};

/// Time buckets shipped in the page (merged by 1, 2, 5, 10...).
pub const MAX_BUCKETS: usize = 200;
/// Rows per grouping shipped in the page, most bytes first; the rest are one "other" row.
pub const MAX_ROWS: usize = 100;
/// Rows shown before any is added (the others are in the page's "add row" list).
pub const DEFAULT_VISIBLE_ROWS: usize = 20;
/// Applications in the table and the detail section (most bytes first).
pub const MAX_APPS: usize = 200;
/// Processes listed per application in the detail.
pub const MAX_PROCESSES: usize = 50;
/// Credentials listed per application in the detail.
pub const MAX_CREDENTIALS: usize = 100;

#[derive(Serialize)]
struct PageData<'a> {
    file: &'a str,
    format: super::source::Format,
    process_info: bool,
    direction: &'static str,
    totals: &'a super::Totals,
    first: String,
    last: String,
    problems: &'a [super::Problem],
    apps: Vec<PageApp<'a>>,
    apps_total: usize,
    credentials_total: usize,
    states: Option<PageStates>,
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    max_buckets: usize,
    max_rows: usize,
    default_visible_rows: usize,
    max_apps: usize,
    max_tracked: usize,
}

#[derive(Serialize)]
struct PageApp<'a> {
    /// The report line: the state view's `app:LINE` row.
    line: LineId,
    label: String,
    #[serde(flatten)]
    app: AppFields<'a>,
    processes_total: usize,
    credentials: Vec<PageCredential<'a>>,
    credentials_total: usize,
}

/// The report's application, less what the page lists separately.
#[derive(Serialize)]
struct AppFields<'a> {
    name: &'a str,
    attributed: bool,
    reason: Option<&'a str>,
    pids: &'a [u32],
    exe: &'a str,
    cgroup: &'a str,
    packets: u64,
    bytes: u64,
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    share: f64,
    flows: u64,
    remote_hosts: u64,
    remote_ports: u64,
    first: &'a str,
    last: &'a str,
    protocols: &'a [ProtocolShare],
    remotes: &'a [Remote],
    names: &'a [String],
    processes: Vec<PageProcess<'a>>,
}

/// A process as listed in the detail, its command line cut to [`MAX_TEXT`] characters.
#[derive(Serialize)]
struct PageProcess<'a> {
    pid: u32,
    name: &'a str,
    cmdline: Vec<String>,
    user: &'a str,
    packets: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// Characters kept of a text from the capture that can be long (command lines).
pub const MAX_TEXT: usize = 300;

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn page_process(p: &Process) -> PageProcess<'_> {
    PageProcess {
        pid: p.pid,
        name: &p.name,
        cmdline: vec![cut(&p.cmdline.join(" "), MAX_TEXT)],
        user: &p.user,
        packets: p.packets,
        bytes_in: p.bytes_in,
        bytes_out: p.bytes_out,
    }
}

/// A credential as the page shows it: who, where and when, never the password itself
/// (`apptag creds` prints that; the page is for looking around).
#[derive(Serialize)]
struct PageCredential<'a> {
    time: String,
    protocol: &'a str,
    mechanism: &'a str,
    user: &'a str,
    password_sent: bool,
    client: &'a str,
    server: &'a str,
    frame: u64,
    stream: String,
}

#[derive(Serialize)]
struct PageStates {
    origin: String,
    /// As text: JavaScript numbers cannot hold nanoseconds since the epoch exactly.
    origin_ns: String,
    /// Milliseconds since the epoch of bucket 0, for the page's clock times.
    origin_ms: f64,
    bucket_ns: u64,
    buckets: u32,
    groups: FxHashMap<&'static str, PageGroup>,
}

#[derive(Serialize)]
struct PageGroup {
    rows: Vec<PageRow>,
}

#[derive(Serialize)]
struct PageRow {
    key: String,
    label: String,
    detail: String,
    apps: Vec<String>,
    /// The application rows' report lines (for links to their detail).
    lines: Vec<LineId>,
    protocols: Vec<String>,
    other: bool,
    total: [u64; 5],
    /// `[bucket, bytes, packets, new, failed, creds]` where anything happened.
    cells: Vec<[u64; 6]>,
}

fn cell_array(b: u32, c: &Cell) -> [u64; 6] {
    [
        u64::from(b),
        c.bytes,
        u64::from(c.packets),
        u64::from(c.new),
        u64::from(c.failed),
        u64::from(c.creds),
    ]
}

fn page_row(r: &Row, other: bool) -> PageRow {
    let t = r.total();
    let lines = r
        .key
        .strip_prefix("app:")
        .or_else(|| {
            r.key
                .strip_prefix("process:")
                .and_then(|k| k.split(':').next())
        })
        .and_then(|l| l.parse().ok())
        .into_iter()
        .collect();
    PageRow {
        key: r.key.clone(),
        label: r.label.clone(),
        detail: cut(&r.detail, MAX_TEXT),
        apps: r.apps.clone(),
        lines,
        protocols: r.protocols.clone(),
        other,
        total: [
            t.bytes,
            u64::from(t.packets),
            u64::from(t.new),
            u64::from(t.failed),
            u64::from(t.creds),
        ],
        cells: r.cells.0.iter().map(|(b, c)| cell_array(*b, c)).collect(),
    }
}

fn page_states(t: &StateTimeline) -> PageStates {
    let b = t.bounded(MAX_BUCKETS, MAX_ROWS);
    let mut groups = FxHashMap::default();
    for g in &b.groups {
        let name = match g.kind {
            GroupKind::App => "app",
            GroupKind::Remote => "remote",
            GroupKind::Process => "process",
        };
        let mut rows: Vec<PageRow> = g.rows.iter().map(|r| page_row(r, false)).collect();
        rows.extend(g.other.iter().map(|r| page_row(r, true)));
        groups.insert(name, PageGroup { rows });
    }
    PageStates {
        origin: utc_time(b.origin_ns),
        origin_ns: b.origin_ns.to_string(),
        origin_ms: b.origin_ns as f64 / 1e6,
        bucket_ns: b.bucket_ns,
        buckets: b.buckets,
        groups,
    }
}

fn app_label(a: &Application) -> String {
    if a.attributed {
        a.name.clone()
    } else {
        format!("(unattributed: {})", a.reason.as_deref().unwrap_or(""))
    }
}

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page for `report` (built with [`super::analyze_with_states`] for the state view;
/// without it the page says so), with `credentials` listed per application.
pub fn render(report: &Report, credentials: &[Credential]) -> Result<String, ReportError> {
    let cred_lines = report.states.as_ref().map(|s| &s.credential_lines);
    let mut by_line: FxHashMap<LineId, Vec<&Credential>> = FxHashMap::default();
    for c in credentials {
        // The credential's frame went to a report line; without the state view, its
        // application's name finds the line.
        let line = cred_lines
            .and_then(|m| m.get(&c.frame).copied())
            .or_else(|| {
                report
                    .applications
                    .iter()
                    .find(|a| a.attributed && a.name == c.app)
                    .map(|a| a.line)
            });
        if let Some(l) = line {
            by_line.entry(l).or_default().push(c);
        }
    }
    let apps = report
        .applications
        .iter()
        .take(MAX_APPS)
        .map(|a| {
            let creds = by_line.get(&a.line).map(Vec::as_slice).unwrap_or(&[]);
            PageApp {
                line: a.line,
                label: app_label(a),
                app: AppFields {
                    name: &a.name,
                    attributed: a.attributed,
                    reason: a.reason.as_deref(),
                    pids: &a.pids,
                    exe: &a.exe,
                    cgroup: &a.cgroup,
                    packets: a.packets,
                    bytes: a.bytes,
                    packets_in: a.packets_in,
                    packets_out: a.packets_out,
                    bytes_in: a.bytes_in,
                    bytes_out: a.bytes_out,
                    share: a.share,
                    flows: a.flows,
                    remote_hosts: a.remote_hosts,
                    remote_ports: a.remote_ports,
                    first: &a.first,
                    last: &a.last,
                    protocols: &a.protocols,
                    remotes: &a.remotes,
                    names: &a.names,
                    processes: a
                        .processes
                        .iter()
                        .take(MAX_PROCESSES)
                        .map(page_process)
                        .collect(),
                },
                processes_total: a.processes.len(),
                credentials: creds
                    .iter()
                    .take(MAX_CREDENTIALS)
                    .map(|c| PageCredential {
                        time: utc_time(c.ts_ns),
                        protocol: c.protocol,
                        mechanism: &c.mechanism,
                        user: &c.user,
                        password_sent: c.password.is_some(),
                        client: &c.client,
                        server: &c.server,
                        frame: c.frame,
                        stream: c.stream.to_string(),
                    })
                    .collect(),
                credentials_total: creds.len(),
            }
        })
        .collect();
    let data = PageData {
        file: &report.file,
        format: report.format,
        process_info: report.process_info,
        direction: report.direction,
        totals: &report.totals,
        first: utc_time(report.totals.first_ns),
        last: utc_time(report.totals.last_ns),
        problems: &report.problems,
        apps,
        apps_total: report.applications.len(),
        credentials_total: credentials.len(),
        states: report.states.as_ref().map(page_states),
        limits: Limits {
            max_buckets: MAX_BUCKETS,
            max_rows: MAX_ROWS,
            default_visible_rows: DEFAULT_VISIBLE_ROWS,
            max_apps: MAX_APPS,
            max_tracked: super::timeline::MAX_TRACKED,
        },
    };
    // Inside <script>, only "</script" (or "<!--") could end the block: no '<' at all.
    let json = serde_json::to_string(&data)?.replace('<', "\\u003c");
    let name = std::path::Path::new(&report.file)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| report.file.clone());
    let mut page = String::with_capacity(json.len() + TEMPLATE.len() + 256);
    let (head, rest) = TEMPLATE.split_once("{{TITLE}}").unwrap_or((TEMPLATE, ""));
    let (mid, tail) = rest.split_once("{{DATA}}").unwrap_or((rest, ""));
    page.push_str(head);
    page.push_str(&escape(&format!("apptag report: {name}")));
    page.push_str(mid);
    page.push_str(&json);
    page.push_str(tail);
    Ok(page)
}

/// [`render`] into `out`.
pub fn write(
    report: &Report,
    credentials: &[Credential],
    out: &mut impl Write,
) -> Result<(), ReportError> {
    let page = render(report, credentials)?;
    out.write_all(page.as_bytes())
        .map_err(|source| ReportError::Write {
            path: "the HTML page".into(),
            source,
        })
}

const TEMPLATE: &str = include_str!("html_page.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character() {
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("hé", 2), "hé");
    }

    #[test]
    fn capture_text_cannot_close_the_data_block() {
        let mut r = super::super::analyze_bytes(&tiny_pcap(), "</script><b>x", Default::default())
            .expect("report");
        r.file = "</script><img src=x onerror=alert(1)>".into();
        let page = render(&r, &[]).expect("page");
        assert_eq!(page.matches("</script>").count(), 2, "only the page's own");
        assert!(!page.contains("<img"));
        assert!(
            page.contains("<title>apptag report: script&gt;&lt;img src=x"),
            "the title is escaped"
        );
    }

    /// A classic pcap with one Ethernet/IPv4/UDP frame.
    fn tiny_pcap() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend([0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        let mut p = Vec::new();
        p.extend(0xa1b2c3d4u32.to_le_bytes());
        p.extend(2u16.to_le_bytes());
        p.extend(4u16.to_le_bytes());
        p.extend([0u8; 8]);
        p.extend(65535u32.to_le_bytes());
        p.extend(1u32.to_le_bytes());
        p.extend(1_700_000_000u32.to_le_bytes());
        p.extend(0u32.to_le_bytes());
        p.extend((f.len() as u32).to_le_bytes());
        p.extend((f.len() as u32).to_le_bytes());
        p.extend(f);
        p
    }
}
