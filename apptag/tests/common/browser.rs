//! A real headless browser for the HTML report's tests: Debian's `chromium` (installed by
//! `cargo xtask setup`). Shared by apptag/tests/report_html.rs and the sensor test in
//! tests/tests/report_html.rs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Browser {
    bin: PathBuf,
    profile: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Chromium, installed now with apt-get when missing and we are root. `None` only when
    /// it cannot be had (the caller skips, saying why).
    pub fn find() -> Option<Self> {
        let found = on_path("chromium").or_else(|| {
            // SAFETY: no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            if root {
                eprintln!("chromium is missing; installing it (apt-get install -y chromium)");
                let _ = Command::new("apt-get")
                    .args(["install", "-y", "--no-install-recommends", "chromium"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdin(Stdio::null())
                    .status();
            }
            on_path("chromium")
        });
        let Some(bin) = found else {
            eprintln!(
                "SKIPPED: the HTML report needs a real browser and Debian's chromium is not \
                 installed and could not be installed (run `sudo cargo xtask setup` or \
                 `sudo apt-get install chromium`)"
            );
            return None;
        };
        let profile = std::env::temp_dir().join(format!(
            "apptag-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&profile).expect("chromium profile dir");
        Some(Self { bin, profile })
    }

    fn command(&self, extra: &[&str], page: &Path, fragment: &str) -> Command {
        let url = format!("file://{}#{fragment}", page.display());
        // `timeout`: a browser that hangs fails the test instead of holding CI.
        let mut cmd = Command::new("timeout");
        cmd.arg("120")
            .arg(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null());
        cmd
    }

    /// The document after its scripts ran. Fails on any error the page's console printed.
    pub fn dump_dom(&self, page: &Path, fragment: &str) -> String {
        let out = self
            .command(&["--dump-dom"], page, fragment)
            .output()
            .expect("run chromium");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "chromium --dump-dom: {}\n{err}",
            out.status
        );
        let console: Vec<&str> = err.lines().filter(|l| l.contains(":CONSOLE")).collect();
        assert!(console.is_empty(), "the page logged: {console:#?}");
        String::from_utf8(out.stdout).expect("DOM is UTF-8")
    }

    /// A PNG of the page at `width`x`height`.
    pub fn screenshot(&self, page: &Path, fragment: &str, out: &Path, width: u32, height: u32) {
        let shot = format!("--screenshot={}", out.display());
        let size = format!("--window-size={width},{height}");
        let st = self
            .command(&[&shot, &size], page, fragment)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run chromium");
        assert!(st.success(), "chromium --screenshot: {st}");
        let png = std::fs::read(out).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One element of a dumped DOM: its tag's attributes, and where it sits.
#[derive(Debug, Clone)]
pub struct Element {
    pub attrs: Vec<(String, String)>,
    pub start: usize,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn num(&self, name: &str) -> u64 {
        self.attr(name)
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("{name} in {self:?}: {e}"))
    }
    pub fn has_class(&self, c: &str) -> bool {
        self.attr("class")
            .is_some_and(|v| v.split_whitespace().any(|x| x == c))
    }
}

fn unescape(v: &str) -> String {
    v.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every `<tag ...>` in `html` (from the browser's serialisation: attributes in double
/// quotes), in document order.
pub fn elements(html: &str, tag: &str) -> Vec<Element> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = html[at..].find(&open) {
        let start = at + i;
        let body_start = start + open.len();
        let Some(end) = html[body_start..].find('>') else {
            break;
        };
        let body = &html[body_start..body_start + end];
        let mut attrs = Vec::new();
        let mut rest = body;
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].trim().to_string();
            let after = &rest[eq + 2..];
            let Some(q) = after.find('"') else { break };
            attrs.push((name, unescape(&after[..q])));
            rest = &after[q + 1..];
        }
        out.push(Element { attrs, start });
        at = body_start + end;
    }
    out
}

/// The text of the element with `id`, tags stripped.
pub fn text_of_id(html: &str, id: &str) -> String {
    let Some(i) = html.find(&format!("id=\"{id}\"")) else {
        return String::new();
    };
    let Some(gt) = html[i..].find('>') else {
        return String::new();
    };
    let rest = &html[i + gt + 1..];
    let mut depth = 1usize;
    let mut text = String::new();
    let mut j = 0;
    let b = rest.as_bytes();
    while j < b.len() && depth > 0 {
        if b[j] == b'<' {
            let close = rest[j..].starts_with("</");
            let end = rest[j..].find('>').map_or(b.len(), |e| j + e);
            let selfclose = rest[j..end].ends_with('/');
            if close {
                depth -= 1;
            } else if !selfclose {
                depth += 1;
            }
            j = end + 1;
        } else {
            let next = rest[j..].find('<').map_or(b.len(), |e| j + e);
            text.push_str(&rest[j..next]);
            j = next;
        }
    }
    unescape(&text)
}

/// The rows of the state grid, each with its cells.
pub fn grid(dom: &str) -> (Element, Vec<(Element, Vec<Element>)>) {
    let table = elements(dom, "table")
        .into_iter()
        .find(|t| t.attr("id") == Some("state-grid"))
        .expect("the state grid rendered");
    let rows: Vec<Element> = elements(dom, "tr")
        .into_iter()
        .filter(|r| r.has_class("state-row"))
        .collect();
    let cells: Vec<Element> = elements(dom, "rect")
        .into_iter()
        .filter(|r| r.has_class("cell"))
        .collect();
    let details = dom.find("id=\"details\"").unwrap_or(dom.len());
    let out = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let end = rows.get(i + 1).map_or(details, |n| n.start);
            let mine = cells
                .iter()
                .filter(|c| c.start > r.start && c.start < end)
                .cloned()
                .collect();
            (r.clone(), mine)
        })
        .collect();
    (table, out)
}

/// tshark's `frame.time_epoch` (seconds with a fraction) in nanoseconds.
pub fn epoch_ns(s: &str) -> u64 {
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    sec.parse::<u64>().expect("seconds") * 1_000_000_000 + frac[..9].parse::<u64>().expect("ns")
}
