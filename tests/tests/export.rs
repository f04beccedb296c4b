//! Flow records against the engines that read them, started here on loopback: captures the
//! sensor makes of real processes go to ClickHouse (Debian's server), Parquet read by Spark
//! (pyspark in local mode) and NDJSON checked by a JSON schema of the ECS fields and by the
//! reference Community ID implementation (PyPI's `communityid`). The expected totals come
//! from `apptag report --json` over the same files, whose counts the sensor tests check
//! against tshark.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use apptag_integration_tests::{
    Traffic,
    engines::{ClickHouse, python},
    netns::NetnsPair,
    require_root,
    sensor::{Sensor, TempDir, http_server, run_apptag},
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const HTTP_PORT: u16 = 18080;
const UDP_PORT: u16 = 19000;
const TCP_PORT: u16 = 19001;
/// The records' host.name in these tests.
const HOST: &str = "sensor-under-test";

/// The page the HTTP server serves.
const SMALL_PAGE: &[u8] = &[b'x'; 3000];

fn curl(pair: &NetnsPair) {
    let url = format!("http://{}:{HTTP_PORT}/page.html", pair.ns_ip);
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "20"])
        .arg(&url)
        .stdin(Stdio::null())
        .status()
        .expect("run curl");
    assert!(st.success(), "curl {url}: {st}");
}

/// Real traffic of three kinds of process on the host side of a veth: curl against
/// http.server, a UDP sender and a TCP client (both apptag-traffic), captured by apptag
/// with `args`. Returns the capture files, in order.
fn capture(pair: &NetnsPair, dir: &TempDir, args: &[&str], rounds: usize) -> Vec<PathBuf> {
    capture_with(pair, dir, args, rounds, &mut |_| {}).0
}

/// As [`capture`], calling `during(i)` before round `i`; also returns apptag's stderr.
fn capture_with(
    pair: &NetnsPair,
    dir: &TempDir,
    args: &[&str],
    rounds: usize,
    during: &mut dyn FnMut(usize),
) -> (Vec<PathBuf>, String) {
    let _http = http_server(pair, dir, HTTP_PORT, SMALL_PAGE);
    let mut udp_rx = Traffic::listening_in(pair, "udp-recv", UDP_PORT);
    let mut tcp_srv = Traffic::listening_in(pair, "tcp-server", TCP_PORT);
    let file = dir.file("cap.pcapng");
    let mut all = vec!["-i", &pair.host_if, "--app-interval", "0.5"];
    all.extend_from_slice(args);
    // With -G the first file is still cap.pcapng, then cap.1.pcapng...
    let sensor = Sensor::start_waiting_for(Command::new(apptag_bin()), &file, &file, &all);
    for i in 0..rounds {
        during(i);
        curl(pair);
        if i == 0 {
            let mut t = Traffic::start("udp-ping", &format!("{}:{UDP_PORT}", pair.ns_ip), "5");
            t.get("reply");
            t.wait_ok();
            let mut t = Traffic::start("tcp-client", &format!("{}:{TCP_PORT}", pair.ns_ip), "");
            t.wait_ok();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    udp_rx.wait_ok();
    tcp_srv.wait_ok();
    std::thread::sleep(Duration::from_millis(800));
    let (st, err) = sensor.stop();
    assert!(st.success(), "apptag exited with {st}; stderr:\n{err}");
    let mut files: Vec<PathBuf> = dir
        .list()
        .into_iter()
        .filter(|n| n.starts_with("cap") && n.ends_with(".pcapng"))
        .map(|n| dir.file(&n))
        .collect();
    files.sort_by_key(|p| rotation_index(p));
    (files, err)
}

fn apptag_bin() -> PathBuf {
    apptag_integration_tests::sensor::apptag_bin()
}

/// cap.pcapng is file 0, cap.N.pcapng file N.
fn rotation_index(p: &Path) -> u32 {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.split('.')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Per application name: (bytes, packets) of the attributed lines of `apptag report --json`,
/// less the ICMP errors the report gives them (see below).
fn report_by_app(files: &[PathBuf]) -> BTreeMap<String, (u64, u64)> {
    let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for f in files {
        let out = run_apptag(&["report".as_ref(), "--json".as_ref(), f.as_os_str()]);
        assert!(out.status.success(), "apptag report {}", f.display());
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
        for a in r["applications"].as_array().into_iter().flatten() {
            if a["attributed"] != true {
                continue;
            }
            // A flow record is its socket's conversation, as tshark's `-z conv` counts it;
            // the report also gives an application the ICMP errors about its datagrams
            // (port unreachable once the UDP receiver has gone), which are no socket's.
            // None of the traffic here has ICMP sockets of its own.
            let (icmp_b, icmp_p) = a["protocols"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| matches!(p["name"].as_str(), Some("icmp" | "icmpv6")))
                .fold((0, 0), |(b, p), x| {
                    (
                        b + x["bytes"].as_u64().unwrap_or(0),
                        p + x["packets"].as_u64().unwrap_or(0),
                    )
                });
            let e = m
                .entry(a["name"].as_str().unwrap_or("").to_string())
                .or_default();
            e.0 += a["bytes"].as_u64().unwrap_or(0) - icmp_b;
            e.1 += a["packets"].as_u64().unwrap_or(0) - icmp_p;
        }
    }
    m
}

/// Asserts `got == want`; on a mismatch the capture files are kept for a look, in
/// /tmp/apptag-export-mismatch/.
fn assert_sums(
    got: &BTreeMap<String, (u64, u64)>,
    want: &BTreeMap<String, (u64, u64)>,
    files: &[PathBuf],
    what: &str,
) {
    if got != want {
        let keep = std::env::temp_dir().join("apptag-export-mismatch");
        let _ = std::fs::create_dir_all(&keep);
        for f in files {
            let _ = std::fs::copy(f, keep.join(f.file_name().unwrap_or_default()));
        }
    }
    assert_eq!(
        got, want,
        "{what} (files kept in /tmp/apptag-export-mismatch)"
    );
}

fn export(files: &[PathBuf], extra: &[&str]) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["export".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    args.push("--host-name".as_ref());
    args.push(HOST.as_ref());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = run_apptag(&args);
    assert!(
        out.status.success(),
        "apptag export {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn parse_sums(tsv: &str) -> BTreeMap<String, (u64, u64)> {
    tsv.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let name = f.next()?.to_string();
            let b = f.next()?.trim().parse().ok()?;
            let p = f.next()?.trim().parse().ok()?;
            Some((name, (b, p)))
        })
        .collect()
}

#[test]
fn clickhouse_per_application_sums_equal_the_report() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(71);
    let dir = TempDir::new("export-ch");
    let files = capture(&pair, &dir, &[], 3);
    let ch = ClickHouse::start("sums");
    ch.query("CREATE DATABASE fleet");
    let ddl = run_apptag(&[
        "export".as_ref(),
        "--clickhouse-ddl".as_ref(),
        "--clickhouse".as_ref(),
        format!("clickhouse://127.0.0.1:{}/fleet.flows", ch.port).as_ref(),
    ]);
    ch.query(&String::from_utf8_lossy(&ddl.stdout));
    arrived_view(&ch);
    let url = format!("clickhouse://127.0.0.1:{}/fleet.flows", ch.port);
    export(&files, &["--clickhouse", &url]);
    // A second export of the same file is what a replay looks like: FINAL keeps one
    // record per flow.
    export(&files, &["--clickhouse", &url]);
    let sums = parse_sums(&ch.query(
        "SELECT `process.name`, sum(`network.bytes`), sum(`network.packets`) \
         FROM fleet.flows FINAL GROUP BY `process.name` ORDER BY `process.name` FORMAT TSV",
    ));
    let want = report_by_app(&files);
    assert!(
        want.contains_key("curl") && want.contains_key("apptag-traffic"),
        "the capture lacks its applications: {want:?}"
    );
    assert_sums(
        &sums,
        &want,
        &files,
        "ClickHouse GROUP BY process.name vs apptag report --json",
    );
    let rows = ch.query("SELECT count(), uniqExact(flow_id) FROM fleet.arrived");
    let mut n = rows
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap_or(0));
    let (rows, flows) = (n.next().unwrap_or(0), n.next().unwrap_or(0));
    assert_eq!(rows, 2 * flows, "each flow inserted twice ({rows} rows)");
    let hosts = ch.query("SELECT DISTINCT `host.name` FROM fleet.flows FORMAT TSV");
    assert_eq!(hosts.trim(), HOST);
}

const SPARK: &str = r#"
import sys, json
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("apptag-export-test")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.parquet(sys.argv[1])
df.createOrReplaceTempView("flows")
rows = spark.sql("SELECT process.name AS name, SUM(network.bytes) AS b, SUM(network.packets) AS p "
                 "FROM flows GROUP BY process.name").collect()
print(json.dumps({r["name"]: [int(r["b"]), int(r["p"])] for r in rows}))
spark.stop()
"#;

#[test]
fn spark_reads_the_parquet_of_a_rotated_capture_and_sums_like_the_report() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(72);
    let dir = TempDir::new("export-spark");
    let files = capture(&pair, &dir, &["-G", "1"], 10);
    assert!(files.len() >= 2, "-G 1 made only {files:?}");
    let pq = dir.file("parquet");
    export(&files, &["--parquet", pq.to_str().expect("UTF-8 path")]);
    let made = std::fs::read_dir(&pq).map(|d| d.count()).unwrap_or(0);
    assert_eq!(made, files.len(), "one Parquet file per capture file");
    let out = python(SPARK, &[pq.to_str().expect("UTF-8 path")]);
    let last = out.lines().last().unwrap_or("{}");
    let got: BTreeMap<String, (u64, u64)> =
        serde_json::from_str::<BTreeMap<String, [u64; 2]>>(last)
            .unwrap_or_else(|e| panic!("Spark printed {out:?}: {e}"))
            .into_iter()
            .map(|(k, [b, p])| (k, (b, p)))
            .collect();
    let want = report_by_app(&files);
    assert!(want.contains_key("curl"), "no curl in {want:?}");
    assert_sums(
        &got,
        &want,
        &files,
        "Spark GROUP BY process.name vs apptag report --json",
    );
}

const VALIDATE: &str = r#"
import sys, json, communityid, jsonschema
schema = json.load(open(sys.argv[1]))
v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
cid = communityid.CommunityID()
n = 0
for line in open(sys.argv[2]):
    r = json.loads(line)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(r)]
    if errors:
        sys.exit(f"record {n} does not match the schema: {errors}")
    s, d, net = r["source"], r["destination"], r["network"]
    make = {"tcp": communityid.FlowTuple.make_tcp, "udp": communityid.FlowTuple.make_udp}.get(net["transport"])
    if make:
        want = cid.calc(make(s["ip"], d["ip"], s["port"], d["port"]))
        if net.get("community_id") != want:
            sys.exit(f"record {n}: community_id {net.get('community_id')} but communityid says {want}")
    n += 1
print(n)
"#;

#[test]
fn ndjson_matches_the_ecs_schema_and_the_reference_community_id() {
    require_root();
    let _g = serial();
    let pair = NetnsPair::new(73);
    let dir = TempDir::new("export-ndjson");
    let live = dir.file("live.ndjson");
    let target = format!("file:{}", live.display());
    let files = capture(&pair, &dir, &["--export", &target], 2);
    // The file's statistics count what the live export wrote.
    let lines = std::fs::read_to_string(&live)
        .expect("read the live NDJSON")
        .lines()
        .count() as u64;
    assert!(lines >= 3, "only {lines} live records");
    assert_eq!(isb_export_counters(&files), [lines, 0, 0, 0]);
    let out = dir.file("flows.ndjson");
    export(&files, &["--ndjson", out.to_str().expect("UTF-8 path")]);
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ecs-flow.schema.json");
    let checked: usize = python(
        VALIDATE,
        &[
            schema.to_str().expect("UTF-8 path"),
            out.to_str().expect("UTF-8 path"),
        ],
    )
    .trim()
    .parse()
    .expect("the checker prints how many records it checked");
    let text = std::fs::read_to_string(&out).expect("read NDJSON");
    assert_eq!(checked, text.lines().count());
    // curl's, the UDP sender's, the TCP client's and the servers' sockets at least.
    assert!(checked >= 3, "only {checked} records");
    let protos: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["network"]["transport"].as_str().map(String::from))
        .collect();
    assert!(
        protos.contains("tcp") && protos.contains("udp"),
        "TCP and UDP flows expected, got {protos:?}"
    );
}

fn fleet_table(ch: &ClickHouse) -> String {
    ch.query("CREATE DATABASE IF NOT EXISTS fleet");
    let ddl = run_apptag(&["export".as_ref(), "--clickhouse-ddl".as_ref()]);
    ch.query(&String::from_utf8_lossy(&ddl.stdout).replace("`apptag`.`flows`", "`fleet`.`flows`"));
    arrived_view(ch);
    format!("clickhouse://127.0.0.1:{}/fleet.flows", ch.port)
}

/// Merges of the ReplacingMergeTree remove the records a later one replaces; this view
/// keeps every record that arrived, to check that none was lost.
fn arrived_view(ch: &ClickHouse) {
    ch.query(
        "CREATE MATERIALIZED VIEW fleet.arrived ENGINE = Log AS SELECT \
         `apptag.flow_id` AS flow_id, `apptag.sequence` AS seq, `apptag.final` AS final \
         FROM fleet.flows",
    );
}

fn clickhouse_sums(ch: &ClickHouse) -> BTreeMap<String, (u64, u64)> {
    parse_sums(&ch.query(
        "SELECT `process.name`, sum(`network.bytes`), sum(`network.packets`) \
         FROM fleet.flows FINAL GROUP BY `process.name` ORDER BY `process.name` FORMAT TSV",
    ))
}

/// How many flows miss a record: a flow's sequences are 0, 1, ... up to its final one.
fn holes(ch: &ClickHouse) -> String {
    ch.query(
        "SELECT count() FROM (SELECT flow_id, max(seq) + 1 - uniqExact(seq) AS missing \
         FROM fleet.arrived GROUP BY flow_id) WHERE missing > 0",
    )
    .trim()
    .to_string()
}

/// The number before `word` in the sensor's summary ("12 spooled").
fn counter(stderr: &str, word: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("flow records exported"))
        .unwrap_or_else(|| panic!("no export summary in:\n{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches([',', ')']) == word)
        .and_then(|w| w[0].trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no `N {word}` in {line:?}"))
}

/// The export counters of the last file's statistics (its first ISB's `opt_comment`), read
/// by the tests' own block reader: exported, spooled, replayed, dropped-spool-full.
fn isb_export_counters(files: &[PathBuf]) -> [u64; 4] {
    let last = files.last().expect("a capture file");
    let f = apptag_integration_tests::blocks::read(last);
    let comments: Vec<&str> = f
        .isb_comments
        .iter()
        .filter(|c| c.1 == 0)
        .map(|c| c.2.as_str())
        .collect();
    let [c] = comments.as_slice() else {
        panic!("{}: want one ISB comment, got {comments:?}", last.display());
    };
    let rest = c
        .strip_prefix("apptag-export: ")
        .unwrap_or_else(|| panic!("not an export comment: {c:?}"));
    let mut out = [0; 4];
    for (slot, key) in out
        .iter_mut()
        .zip(["exported", "spooled", "replayed", "dropped-spool-full"])
    {
        *slot = rest
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}=N in {c:?}"));
    }
    out
}

#[test]
fn live_export_to_clickhouse_equals_the_report_of_the_same_capture() {
    require_root();
    let _g = serial();
    let ch = ClickHouse::start("live");
    let url = fleet_table(&ch);
    let pair = NetnsPair::new(74);
    let dir = TempDir::new("export-live");
    let (files, err) = capture_with(
        &pair,
        &dir,
        &["--export", &url, "--export-interval", "1"],
        8,
        &mut |_| {},
    );
    assert_eq!(counter(&err, "dropped"), 0, "{err}");
    let want = report_by_app(&files);
    assert!(want.contains_key("curl"), "no curl in {want:?}");
    assert_sums(
        &clickhouse_sums(&ch),
        &want,
        &files,
        "live ClickHouse vs apptag report --json",
    );
    assert_eq!(holes(&ch), "0", "flows with missing records");
    // Every flow's last record is its final one, and interim ones were sent on the way.
    let open = ch.query("SELECT count() FROM fleet.flows FINAL WHERE `apptag.final` = 0");
    assert_eq!(open.trim(), "0", "flows without a final record");
    let interim = ch.query("SELECT count() FROM fleet.arrived WHERE final = 0");
    assert!(
        interim.trim().parse::<u64>().unwrap_or(0) > 0,
        "no interim record over a 3 s capture with --export-interval 1"
    );
    // The offline export of the file makes the same flows: FINAL still holds one each.
    let before = ch.query("SELECT count() FROM fleet.flows FINAL");
    let host = ch.query("SELECT any(`host.name`) FROM fleet.flows FORMAT TSV");
    let mut args: Vec<&std::ffi::OsStr> = vec!["export".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let host = host.trim().to_string();
    args.extend([
        std::ffi::OsStr::new("--host-name"),
        host.as_ref(),
        "--clickhouse".as_ref(),
        url.as_ref(),
    ]);
    assert!(run_apptag(&args).status.success());
    assert_eq!(ch.query("SELECT count() FROM fleet.flows FINAL"), before);
    assert_eq!(clickhouse_sums(&ch), want);
}

#[test]
fn clickhouse_down_for_ten_seconds_loses_no_record() {
    require_root();
    let _g = serial();
    let mut ch = ClickHouse::start("fault");
    let url = fleet_table(&ch);
    let pair = NetnsPair::new(75);
    let dir = TempDir::new("export-fault");
    let spool = dir.file("spool");
    let mut down: Option<Instant> = None;
    let mut resumed = false;
    let (files, err) = capture_with(
        &pair,
        &dir,
        &[
            "--export",
            &url,
            "--export-interval",
            "1",
            "--spool-dir",
            spool.to_str().expect("UTF-8 path"),
        ],
        40,
        &mut |i| {
            if i == 4 {
                ch.pause();
                down = Some(Instant::now());
            }
            if !resumed && down.is_some_and(|d| d.elapsed() >= Duration::from_secs(10)) {
                ch.resume();
                resumed = true;
            }
        },
    );
    assert!(resumed, "the traffic ended before the server was back");
    assert!(err.contains("0 packets dropped by kernel"), "{err}");
    let spooled = counter(&err, "spooled");
    assert!(spooled > 0, "nothing spooled during a 10 s outage:\n{err}");
    assert_eq!(counter(&err, "replayed"), spooled, "{err}");
    assert_eq!(counter(&err, "dropped"), 0, "{err}");
    let want = report_by_app(&files);
    assert_sums(
        &clickhouse_sums(&ch),
        &want,
        &files,
        "ClickHouse after the outage vs apptag report --json",
    );
    // Every record arrived: per flow, the sequences 0..=last are all there.
    assert_eq!(
        holes(&ch),
        "0",
        "records lost during the outage (flows with missing sequences)"
    );
    // The capture file's statistics say the same, and the exported count is what arrived
    // (each record once, whatever a timed-out insert left behind).
    let [exported, isb_spooled, replayed, dropped] = isb_export_counters(&files);
    let arrived = ch.query("SELECT uniqExact(flow_id, seq) FROM fleet.arrived");
    assert_eq!(
        exported.to_string(),
        arrived.trim(),
        "ISB exported vs ClickHouse"
    );
    assert_eq!(
        (isb_spooled, replayed, dropped),
        (spooled, spooled, 0),
        "ISB counters vs the summary:\n{err}"
    );
    let left = std::fs::read_dir(&spool)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .count();
    assert_eq!(left, 0, "the spool was not emptied");
}
