//! The `apptag` command as a new user meets it: errors are messages (never backtraces), a
//! mistyped subcommand is named as one, the output file is announced only once it exists,
//! and the README's `apps --json` example has the shape of what the command prints.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn apptag(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apptag"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info,apptag::sensor::capture=debug")
        .output()
        .expect("run apptag")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_message_not_backtrace(o: &Output, what: &str, names: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: exit status; stderr:\n{err}"
    );
    assert!(
        err.contains(names),
        "{what}: message does not name {names:?}:\n{err}"
    );
    let lower = err.to_lowercase();
    assert!(
        !lower.contains("backtrace")
            && !err.lines().any(|l| {
                let t = l.trim_start();
                t.len() < l.len()
                    && t.split_once(": ")
                        .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
            }),
        "{what}: a user error printed a backtrace under RUST_BACKTRACE=1:\n{err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Error: ") && last.contains(names),
        "{what}: the message is not the last line:\n{err}"
    );
}

#[test]
fn user_errors_print_a_message_and_no_backtrace_under_rust_backtrace_1() {
    let dir = TempDir::new("cli-errors");
    let missing = dir.path("missing.pcapng");
    let o = apptag(&["apps", missing.to_str().unwrap_or("")], &dir.0);
    assert_message_not_backtrace(&o, "missing file", missing.to_str().unwrap_or(""));

    let junk = dir.path("junk.pcapng");
    std::fs::write(&junk, b"this is not a capture file at all, just text").expect("write");
    let o = apptag(&["report", junk.to_str().unwrap_or("")], &dir.0);
    assert_message_not_backtrace(&o, "not a capture", junk.to_str().unwrap_or(""));

    // As root this reaches the interface lookup; as a user, the capability check: a user
    // error either way.
    let o = apptag(&["-i", "nosuch0", "-w", "x.pcapng"], &dir.0);
    let names = if apptag::sys::is_root() {
        "nosuch0"
    } else {
        "CAP_NET_RAW"
    };
    assert_message_not_backtrace(&o, "unknown interface", names);

    if apptag::sys::is_root() {
        // A mistyped -Z user is found before anything is attached or written.
        let o = apptag(&["-i", "lo", "-Z", "nosuchuser0", "-w", "z.pcapng"], &dir.0);
        assert_message_not_backtrace(&o, "unknown -Z user", "nosuchuser0");
        assert!(!dir.path("z.pcapng").exists(), "file left for a bad -Z");
    }
}

#[test]
fn a_mistyped_subcommand_is_refused_with_the_nearest_one() {
    let dir = TempDir::new("cli-subcommand");
    for (word, nearest) in [
        ("sokets", Some("sockets")),
        ("repotr", Some("report")),
        ("extarct", Some("extract")),
        ("streams", None),
        ("tcp", None),
    ] {
        let o = apptag(&[word, "-i", "lo"], &dir.0);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{word}: clap's usage exit code:\n{err}"
        );
        assert!(
            err.contains(&format!("unrecognized subcommand '{word}'")),
            "{word} was not refused as a subcommand:\n{err}"
        );
        if let Some(n) = nearest {
            assert!(
                err.contains(&format!("a similar subcommand exists: '{n}'")),
                "{word}: no suggestion of {n}:\n{err}"
            );
        }
        assert!(
            !err.contains("no interface given"),
            "{word} was taken as a capture filter:\n{err}"
        );
        assert_eq!(files_in(&dir.0), Vec::<String>::new(), "{word}: file left");
    }
}

#[test]
fn a_filter_after_the_options_is_still_a_filter() {
    if !apptag::sys::is_root() {
        eprintln!("needs root to reach the filter check (cargo xtask test runs as root)");
        return;
    }
    let dir = TempDir::new("cli-filter");
    // libpcap itself refuses port 70000: the words reached the filter compiler.
    let o = apptag(
        &[
            "-i",
            "lo",
            "-w",
            "f.pcapng",
            "--duration",
            "1",
            "tcp",
            "port",
            "70000",
        ],
        &dir.0,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("70000"), "libpcap's complaint missing:\n{err}");
    assert!(!err.contains("unrecognized subcommand"), "{err}");
    // And a good one captures.
    let o = apptag(
        &[
            "-i",
            "lo",
            "-w",
            "f.pcapng",
            "--duration",
            "1",
            "udp",
            "port",
            "9",
        ],
        &dir.0,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path("f.pcapng").exists());
}

#[test]
fn writing_is_announced_only_once_the_capture_file_exists() {
    let dir = TempDir::new("cli-writing");
    let o = apptag(&["-i", "nosuch0", "-w", "x.pcapng"], &dir.0);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        !err.contains("writing"),
        "announced a file that was never written:\n{err}"
    );
    assert_eq!(files_in(&dir.0), Vec::<String>::new(), "file left behind");
    if !apptag::sys::is_root() {
        eprintln!("the successful half needs root (cargo xtask test runs as root)");
        return;
    }
    let o = apptag(&["-i", "lo", "-w", "ok.pcapng", "--duration", "1"], &dir.0);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let writing = at("writing ok.pcapng").unwrap_or_else(|| panic!("no writing line:\n{err}"));
    let ring = at("capturing on lo").unwrap_or_else(|| panic!("no ring line:\n{err}"));
    let seeded = at("existing sockets seeded").unwrap_or_else(|| panic!("no seed line:\n{err}"));
    assert!(
        ring < writing && seeded < writing,
        "writing announced before the probes and the ring were ready:\n{err}"
    );
    assert!(dir.path("ok.pcapng").exists());
}

/// Object keys and value kinds, recursively; arrays by their first element.
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

fn readme_apps_json() -> serde_json::Value {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let after = readme
        .split_once("<!-- apps-json")
        .map(|(_, rest)| rest)
        .expect("README has the apps-json example marker");
    let block = after
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(json, _)| json)
        .expect("a ```json block after the marker");
    serde_json::from_str(block).unwrap_or_else(|e| panic!("README's example is not JSON: {e}"))
}

#[test]
fn readme_apps_json_example_has_the_shape_of_real_output() {
    let dir = TempDir::new("cli-readme");
    let f = dir.path("sample.pcapng");
    write_sample(&f, 50);
    let o = apptag(&["apps", f.to_str().unwrap_or(""), "--json"], &dir.0);
    assert!(o.status.success(), "{}", stderr(&o));
    let real: serde_json::Value = serde_json::from_slice(&o.stdout).expect("apps --json is JSON");
    assert!(
        real["apps"][0]["sockets"][0].is_object() && real["errors"].is_array(),
        "the sample must fill every level the README shows: {real:#}"
    );
    let readme = readme_apps_json();
    // `errors` is empty in both; its element kind is the reader's message, a string.
    assert_eq!(
        shape(&readme),
        shape(&real),
        "README's `apps --json` example and real output differ:\nREADME: {readme:#}\nreal: {real:#}"
    );
}
