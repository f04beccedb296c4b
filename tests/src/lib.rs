//! Helpers shared by the integration tests: real processes making real traffic, and the
//! kernel event collection they are checked against.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use apptag::sensor::probes::{EventStream, ProbeConfig, Probes, ProgramStatus};

pub mod blocks;
pub mod engines;
pub mod netns;
pub mod oracle;
pub mod sensor;
use apptag_common::SockEvent;

/// Path of the traffic-maker binary built with this crate: integration tests run from
/// target/<profile>/deps/, the binary sits in target/<profile>/.
pub fn traffic_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("apptag-traffic");
    assert!(
        bin.is_file(),
        "{} missing: build the tests crate",
        bin.display()
    );
    bin
}

/// The kernel name of the traffic maker (comm is the first 15 bytes of the file name).
pub const TRAFFIC_COMM: &str = "apptag-traffic";

/// A running traffic scenario whose `key=value` output lines are collected as they come.
pub struct Traffic {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(String, String)>,
    pub seen: Vec<(String, String)>,
}

impl Traffic {
    pub fn start(scenario: &str, addr: &str, arg: &str) -> Self {
        Self::start_with(Command::new(traffic_bin()), scenario, addr, arg)
    }

    pub fn start_with(mut cmd: Command, scenario: &str, addr: &str, arg: &str) -> Self {
        let mut child = cmd
            .args([scenario, addr, arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn apptag-traffic");
        let stdout = child.stdout.take().expect("child stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((k, v)) = line.split_once('=') {
                    let _ = tx.send((k.to_string(), v.to_string()));
                }
            }
        });
        Self {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// A traffic server inside `pair`'s namespace on its address and `port`, once it
    /// listens.
    pub fn listening_in(pair: &netns::NetnsPair, scenario: &str, port: u16) -> Self {
        let mut t = Self::start_with(
            pair.command(traffic_bin()),
            scenario,
            &format!("{}:{port}", pair.ns_ip),
            "",
        );
        t.get("listen");
        t
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the first output line with key `k` and returns its value.
    pub fn get(&mut self, k: &str) -> String {
        if let Some((_, v)) = self.seen.iter().find(|(key, _)| key == k) {
            return v.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((key, v)) => {
                    self.seen.push((key.clone(), v.clone()));
                    if key == k {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "apptag-traffic printed no `{k}=` line (saw {:?})",
            self.seen
        );
    }

    /// All values printed for key `k` so far (after the process has finished).
    pub fn all(&mut self, k: &str) -> Vec<String> {
        while let Ok(kv) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(kv);
        }
        self.seen
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn release(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"go\n");
        }
    }

    pub fn wait_ok(&mut self) {
        let st = self.child.wait().expect("wait apptag-traffic");
        assert!(st.success(), "apptag-traffic failed: {st}");
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads the probes (attached to the cgroup v2 root unless `cgroup` is given) and collects
/// every event in the background.
pub struct Collector {
    pub probes: Probes,
    events: std::sync::Arc<std::sync::Mutex<Vec<SockEvent>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Fails the test unless every program of the kernel object is attached: `Probes::attach`
/// succeeds with a single one, and a test must not pass with the hook it names detached.
pub fn assert_all_attached(status: &[ProgramStatus]) {
    let missing: Vec<String> = status
        .iter()
        .filter(|s| !s.attached())
        .map(|s| {
            format!(
                "{} ({}): {}",
                s.hook,
                s.program,
                s.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(missing.is_empty(), "programs not attached: {missing:?}");
    assert!(!status.is_empty(), "no program status at all");
}

/// Fails the test unless each of `hooks` is attached (the hooks the test depends on).
pub fn assert_hooks(status: &[ProgramStatus], hooks: &[&str]) {
    for h in hooks {
        assert!(
            status.iter().any(|s| s.hook == *h && s.attached()),
            "hook {h} not attached: {status:?}"
        );
    }
}

impl Collector {
    pub fn start(cgroup: Option<PathBuf>) -> Self {
        let mut probes = Probes::attach(&ProbeConfig { cgroup }).expect("attach probes (root?)");
        assert_all_attached(probes.status());
        let stream = probes.events().expect("event ring");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let events = events.clone();
            let stop = stop.clone();
            std::thread::spawn(move || collect(stream, events, stop))
        };
        Self {
            probes,
            events,
            stop,
            thread: Some(thread),
        }
    }

    pub fn events(&self) -> Vec<SockEvent> {
        // Let the collector thread catch up with what the kernel already wrote.
        std::thread::sleep(Duration::from_millis(150));
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

fn collect(
    mut stream: EventStream,
    events: std::sync::Arc<std::sync::Mutex<Vec<SockEvent>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // The programs submit without waking readers: poll at a fixed pace.
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = Vec::new();
        stream.drain(|e| batch.push(*e));
        if let Ok(mut ev) = events.lock() {
            ev.extend(batch);
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn comm(ev: &SockEvent) -> String {
    let end = ev
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(ev.comm.len());
    String::from_utf8_lossy(&ev.comm[..end]).into_owned()
}

/// A cgroup v2 directory made for one test and removed on drop (its processes are moved
/// back to the root first).
pub struct TestCgroup {
    pub path: PathBuf,
    root: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let root = apptag::sys::cgroup2_mount().expect("cgroup2 mounted");
        let path = root.join(format!("apptag-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create test cgroup");
        Self { path, root }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).expect("move to cgroup");
    }

    /// The cgroup id the kernel reports for tasks in it (the directory's inode).
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).map(|m| m.ino()).unwrap_or(0)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for p in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), p);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Key/value output lines parsed into a map (last value wins).
pub fn kv(lines: &[(String, String)]) -> HashMap<String, String> {
    lines.iter().cloned().collect()
}

pub fn require_root() {
    assert!(
        apptag::sys::is_root(),
        "integration tests load eBPF programs and must run as root (cargo xtask test does that)"
    );
}
