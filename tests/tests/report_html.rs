//! `apptag report --html` on a capture the sensor made of real processes (curl, Python and
//! apptag-traffic on the host side of a veth), loaded in headless Chromium: the page's
//! application and process rows are the report's, with the report's packet counts; the
//! Basic credential curl sent and the reset of its connection to a closed port are in the
//! curl row's cells of the frames tshark names; regrouping by remote host through the
//! address; and a screenshot to look at.
#[path = "../../apptag/tests/common/browser.rs"]
mod browser;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use apptag_integration_tests::{
    Traffic,
    netns::NetnsPair,
    require_root,
    sensor::{Sensor, TempDir, apptag_bin, http_server, run_apptag},
};
use browser::{Browser, elements, epoch_ns, grid};

const HTTP_PORT: u16 = 18080;
const CLOSED_PORT: u16 = 18081;
const UDP_PORT: u16 = 19000;

/// The page the HTTP server serves.
const SMALL_PAGE: &[u8] = &[b'x'; 3000];

fn curl(args: &[&str], url: &str) -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .status()
        .expect("run curl")
        .success()
}

fn tshark_fields(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-d", &format!("tcp.port=={HTTP_PORT},http"), "-Y", filter])
        .args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd.output().expect("run tshark");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn tagged_capture_rows_are_the_reports_applications_and_processes_in_the_browser() {
    require_root();
    let Some(browser) = Browser::find() else {
        return;
    };
    let pair = NetnsPair::new(91);
    let dir = TempDir::new("report-html");
    let _http = http_server(&pair, &dir, HTTP_PORT, SMALL_PAGE);
    let mut udp_rx = Traffic::listening_in(&pair, "udp-recv", UDP_PORT);
    let file = dir.file("cap.pcapng");
    let sensor = Sensor::start_waiting_for(
        Command::new(apptag_bin()),
        &file,
        &file,
        &["-i", &pair.host_if, "--app-interval", "0.5"],
    );
    let url = format!("http://{}:{HTTP_PORT}/page.html", pair.ns_ip);
    assert!(curl(&["-u", "alice:wonderland"], &url), "curl {url}");
    let mut ping = Traffic::start("udp-ping", &format!("{}:{UDP_PORT}", pair.ns_ip), "5");
    ping.get("reply");
    let ping_pid = ping.pid();
    ping.wait_ok();
    // Nothing listens there: the namespace's kernel resets the connection.
    let closed = format!("http://{}:{CLOSED_PORT}/", pair.ns_ip);
    assert!(!curl(&[], &closed), "nothing should answer on {closed}");
    let st = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns = socket.create_connection(('{}', {HTTP_PORT}))\n\
                 s.sendall(b'GET /page.html HTTP/1.0\\r\\n\\r\\n')\nwhile s.recv(65536): pass\n",
                pair.ns_ip
            ),
        ])
        .stdin(Stdio::null())
        .status()
        .expect("run python3");
    assert!(st.success(), "python3 client: {st}");
    udp_rx.wait_ok();
    std::thread::sleep(Duration::from_millis(800));
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");

    let out = run_apptag(&["report".as_ref(), "--json".as_ref(), file.as_os_str()]);
    assert!(out.status.success(), "apptag report --json");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let page = dir.file("report.html");
    let out = run_apptag(&[
        "report".as_ref(),
        file.as_os_str(),
        "--html".as_ref(),
        page.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "apptag report --html: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One application row per report line, with its packets.
    let mut want_apps: BTreeMap<String, u64> = BTreeMap::new();
    let mut want_procs: BTreeMap<String, u64> = BTreeMap::new();
    for a in report["applications"].as_array().expect("applications") {
        let name = a["name"].as_str().expect("name");
        let label = if a["attributed"].as_bool() == Some(true) {
            name.to_string()
        } else {
            format!("(unattributed: {})", a["reason"].as_str().unwrap_or(""))
        };
        *want_apps.entry(label.clone()).or_default() += a["packets"].as_u64().expect("packets");
        for p in a["processes"].as_array().expect("processes") {
            want_procs.insert(
                format!("pid {} ({label})", p["pid"]),
                p["packets"].as_u64().expect("packets"),
            );
        }
    }
    for app in ["curl", "apptag-traffic", "python3"] {
        assert!(
            want_apps.contains_key(app),
            "{app} in the report: {want_apps:?}"
        );
    }
    let dom = browser.dump_dom(&page, "group=app");
    let (table, rows) = grid(&dom);
    assert_eq!(table.attr("data-group"), Some("app"));
    let got_apps: BTreeMap<String, u64> = rows
        .iter()
        .map(|(r, _)| {
            (
                r.attr("data-label").expect("label").to_string(),
                r.num("data-packets"),
            )
        })
        .collect();
    assert_eq!(got_apps, want_apps, "application rows and their packets");
    let app_table = elements(&dom, "a")
        .into_iter()
        .filter(|a| a.has_class("app-name"))
        .count();
    assert_eq!(app_table, want_apps.len(), "one table line per application");

    // curl's cells: the credential and the reset where tshark sees them.
    let curl_cells = &rows
        .iter()
        .find(|(r, _)| r.attr("data-label") == Some("curl"))
        .expect("curl row")
        .1;
    let origin = table.num("data-origin-ns");
    let bucket_ns = table.num("data-bucket-ns");
    let bucket_of = |t: &str| (epoch_ns(t) - origin) / bucket_ns;
    let auth = tshark_fields(&file, "http.authorization", &["frame.time_epoch"]);
    assert_eq!(auth.len(), 1, "one Basic authorization: {auth:?}");
    let cred_buckets: Vec<u64> = curl_cells
        .iter()
        .filter(|c| c.num("data-creds") > 0)
        .map(|c| c.num("data-bucket"))
        .collect();
    assert_eq!(cred_buckets, [bucket_of(&auth[0][0])], "curl's credential");
    let resets = tshark_fields(
        &file,
        &format!("tcp.flags.reset == 1 && tcp.srcport == {CLOSED_PORT}"),
        &["frame.time_epoch"],
    );
    assert!(!resets.is_empty(), "the closed port reset curl");
    let failed: BTreeSet<u64> = curl_cells
        .iter()
        .filter(|c| c.num("data-failed") > 0)
        .map(|c| c.num("data-bucket"))
        .collect();
    for r in &resets {
        assert!(
            failed.contains(&bucket_of(&r[0])),
            "reset at {} in {failed:?}",
            r[0]
        );
    }
    assert!(
        dom.contains("alice"),
        "the credential's user in curl's detail"
    );
    let source = std::fs::read_to_string(&page).expect("page");
    assert!(!source.contains("wonderland"), "no password in the page");

    // One process row per process of the report, with its packets.
    let dom = browser.dump_dom(&page, "group=process");
    let (table, rows) = grid(&dom);
    assert_eq!(table.attr("data-group"), Some("process"));
    let got_procs: BTreeMap<String, u64> = rows
        .iter()
        .map(|(r, _)| {
            (
                r.attr("data-label").expect("label").to_string(),
                r.num("data-packets"),
            )
        })
        .collect();
    assert_eq!(got_procs, want_procs, "process rows and their packets");
    assert!(
        got_procs.contains_key(&format!("pid {ping_pid} (apptag-traffic)")),
        "the pid the UDP client had: {got_procs:?}"
    );

    // By remote host: the namespace's address carries every attributed packet here.
    let dom = browser.dump_dom(&page, "group=remote");
    let (table, rows) = grid(&dom);
    assert_eq!(table.attr("data-group"), Some("remote"));
    let ns = pair.ns_ip.to_string();
    assert!(
        rows.iter()
            .any(|(r, _)| r.attr("data-label") == Some(ns.as_str())),
        "a row for {ns}"
    );

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-html");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let shot = shots.join("tagged-apps.png");
    std::fs::copy(&page, shots.join("tagged.html")).expect("keep the page");
    browser.screenshot(&page, "group=app", &shot, 1400, 1800);
    eprintln!("screenshot: {}", shot.display());
}
