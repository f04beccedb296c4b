//! The `apptag` binary run as a child process, as a user runs it: started with a command
//! line, stopped with Ctrl-C (SIGINT), killed on drop whatever happens to the test.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

/// The build profile directory the tests run from: target/<profile>/deps/<test> ->
/// target/<profile>.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else if p.extension().is_some_and(|x| x == "rs") {
            e.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(t);
    }
    newest
}

/// Path of the `apptag` binary of this build (target/<profile>/apptag). Cargo gives a
/// package's tests only its own binaries, so this one is found next to them; `cargo test`
/// for the whole workspace (what `cargo xtask test` runs) builds it. A binary older than
/// the sources it is built from is refused, so a test never checks yesterday's sensor.
pub fn apptag_bin() -> PathBuf {
    let bin = profile_dir().join("apptag");
    assert!(
        bin.is_file(),
        "{} missing: build it with `cargo build -p apptag` (or run the whole workspace's \
         tests with `cargo xtask test`)",
        bin.display()
    );
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = ["apptag/src", "apptag-ebpf/src", "apptag-common/src"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    if let (Some(built), Some(src)) = (built, sources) {
        assert!(
            built >= src,
            "{} is older than apptag's sources: rebuild it with `cargo build -p apptag`",
            bin.display()
        );
    }
    bin
}

/// A directory for one test's files, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("apptag-sensor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test directory");
        Self { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Names of the files in the directory.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // APPTAG_TEST_KEEP=1 keeps a failed test's files for a post-mortem.
        if std::thread::panicking() && std::env::var_os("APPTAG_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process killed and reaped on drop (servers, tcpdump).
pub struct ChildGuard {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout discarded and stderr collected line by line.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut v) = lines.lock() {
                        v.push(l);
                    }
                }
            });
        }
        Self { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.lines.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// Waits up to `timeout` for a stderr line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .lines
                .lock()
                .is_ok_and(|v| v.iter().any(|l| l.contains(needle)))
            {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return self
                    .lines
                    .lock()
                    .is_ok_and(|v| v.iter().any(|l| l.contains(needle)));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// Sends `sig` and waits up to `timeout` for the process to end; kills it if it does
    /// not and fails the test.
    pub fn stop_with(&mut self, sig: libc::c_int, timeout: Duration) -> ExitStatus {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st;
        }
        self.signal(sig);
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    // Let the reader thread take the last lines.
                    std::thread::sleep(Duration::from_millis(100));
                    return st;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "process {} did not stop within {timeout:?} of signal {sig}; stderr:\n{}",
                        self.child.id(),
                        self.stderr()
                    );
                }
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `apptag` capture.
pub struct Sensor {
    pub proc: ChildGuard,
    pub output: PathBuf,
}

/// How long the sensor may take to load its programs and open its rings (a loaded 2-core
/// machine can be slow; this is a bound, not an expectation).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

impl Sensor {
    /// Starts `apptag -w OUTPUT ARGS...` and waits until it captures. `netns` runs it
    /// in that namespace's network (its mounts stay the host's).
    pub fn start(netns: Option<&super::netns::NetnsPair>, output: &Path, args: &[&str]) -> Self {
        let bin = apptag_bin();
        let cmd = match netns {
            Some(n) => n.enter_command(&bin),
            None => Command::new(&bin),
        };
        Self::start_cmd(cmd, output, args)
    }

    /// Starts `CMD -w OUTPUT ARGS...` (CMD runs apptag, possibly through a wrapper).
    pub fn start_cmd(cmd: Command, output: &Path, args: &[&str]) -> Self {
        Self::start_waiting_for(cmd, output, output, args)
    }

    /// As `start_cmd`, but readiness is the creation of `first_file` (with -C/-W the first
    /// file is `NAME.0.pcapng`, not `-w NAME`).
    pub fn start_waiting_for(
        mut cmd: Command,
        output: &Path,
        first_file: &Path,
        args: &[&str],
    ) -> Self {
        let _ = std::fs::remove_file(output);
        let _ = std::fs::remove_file(first_file);
        // Debug logs of the capture module help when a test fails.
        cmd.env("RUST_LOG", "info,apptag::sensor::capture=debug")
            .arg("-w")
            .arg(output)
            .args(args);
        let mut proc = ChildGuard::spawn(cmd);
        // apptag creates its output only once the probes are attached and every capture
        // ring is open: from then on every packet is kept (the rings hold packets until the
        // capture threads read them). The debug line "capturing on" confirms it; should
        // the order or the wording change, a grace period stands in for it.
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            if first_file.exists() {
                break;
            }
            if let Ok(Some(st)) = proc.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "apptag {args:?} exited with {st} before capturing; stderr:\n{}",
                    proc.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "apptag {args:?} did not create {} within {ATTACH_TIMEOUT:?}; stderr:\n{}",
                first_file.display(),
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        if !proc.wait_for_line("capturing on", Duration::from_millis(100)) {
            std::thread::sleep(Duration::from_millis(1500));
        }
        // With the probes loaded, every program must be attached: `Probes::attach` succeeds
        // with a single one, and no sensor test may pass with a hook detached.
        let log = proc.stderr();
        assert!(
            !log.contains("not attached"),
            "apptag {args:?} left hooks detached:\n{log}"
        );
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("attached ") && l.contains(" hooks: "))
        {
            let all = apptag::sensor::probes::PROGRAMS.len();
            assert!(
                line.contains(&format!("attached {all} hooks: ")),
                "apptag {args:?} did not attach all {all} programs: {line}"
            );
        }
        Self {
            proc,
            output: output.to_path_buf(),
        }
    }

    /// Ctrl-C, as a user stops it; returns its exit status and stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let st = self.proc.stop_with(libc::SIGINT, Duration::from_secs(60));
        (st, self.proc.stderr())
    }

    /// True once apptag has ended by itself (-c, --duration).
    pub fn exited(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for apptag to end by itself; fails the test if it does not within `timeout`.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        match self.proc.wait_exit(timeout) {
            Some(st) => (st, self.proc.stderr()),
            None => panic!(
                "apptag did not stop by itself within {timeout:?}; stderr:\n{}",
                self.proc.stderr()
            ),
        }
    }

    /// SIGKILL: no chance to finish the file.
    pub fn kill(mut self) -> String {
        let _ = self.proc.stop_with(libc::SIGKILL, Duration::from_secs(30));
        self.proc.stderr()
    }
}

/// Runs apptag to completion (for commands that end by themselves).
pub fn run_apptag(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(apptag_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run apptag")
}

/// `python3 -m http.server` in `pair`'s namespace on `port`, serving `page` as /page.html
/// from `dir`/www; returns once it accepts connections.
pub fn http_server(
    pair: &crate::netns::NetnsPair,
    dir: &TempDir,
    port: u16,
    page: &[u8],
) -> ChildGuard {
    let www = dir.file("www");
    std::fs::create_dir_all(&www).expect("www dir");
    std::fs::write(www.join("page.html"), page).expect("page");
    // The system interpreter: a version manager's shim would add a shell in front of it.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut cmd = pair.command(python);
    cmd.args(["-m", "http.server", "--bind"])
        .arg(pair.ns_ip.to_string())
        .arg(port.to_string())
        .arg("--directory")
        .arg(&www);
    let server = ChildGuard::spawn(cmd);
    let addr = std::net::SocketAddr::new(std::net::IpAddr::V4(pair.ns_ip), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "http.server in {} never listened on {addr}; stderr:\n{}",
            pair.ns,
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}
