//! A network namespace joined to the host by a veth pair, made for one test and always
//! removed: on drop, also when the test panics.
use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
};

/// `10.213.<n>.1/30` on the host end, `10.213.<n>.2/30` inside the namespace. Names carry
/// the test process's pid so parallel test runs never collide. Nothing is routed beyond
/// the /30.
pub struct NetnsPair {
    pub ns: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sysctl(prefix: &[&str], key: &str, value: &str) {
    // Best effort: IPv6 only adds link-local chatter to the captures.
    let _ = Command::new(prefix.first().copied().unwrap_or("sysctl"))
        .args(prefix.iter().skip(1))
        .args(["-q", "-w", &format!("{key}={value}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl NetnsPair {
    /// Creates the namespace and the pair; `n` (0-255) picks the /30 and keeps several
    /// pairs of one test process apart.
    pub fn new(n: u8) -> Self {
        let pid = std::process::id();
        let pair = Self {
            ns: format!("apptag-t{pid}-{n}"),
            host_if: format!("at{pid}h{n}"),
            ns_if: format!("at{pid}n{n}"),
            host_ip: Ipv4Addr::new(10, 213, n, 1),
            ns_ip: Ipv4Addr::new(10, 213, n, 2),
        };
        // Built before any command runs so that Drop removes whatever was made.
        if let Err(e) = pair.setup() {
            panic!(
                "creating namespace {} with veth {}: {e}",
                pair.ns, pair.host_if
            );
        }
        pair
    }

    fn setup(&self) -> Result<(), String> {
        let (ns, h, n) = (self.ns.as_str(), self.host_if.as_str(), self.ns_if.as_str());
        ip(&["netns", "add", ns])?;
        ip(&["link", "add", h, "type", "veth", "peer", "name", n])?;
        ip(&["link", "set", n, "netns", ns])?;
        sysctl(&["sysctl"], &format!("net.ipv6.conf.{h}.disable_ipv6"), "1");
        sysctl(
            &["ip", "netns", "exec", ns, "sysctl"],
            &format!("net.ipv6.conf.{n}.disable_ipv6"),
            "1",
        );
        ip(&["addr", "add", &format!("{}/30", self.host_ip), "dev", h])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/30", self.ns_ip),
            "dev",
            n,
        ])?;
        ip(&["link", "set", h, "up"])?;
        ip(&["-n", ns, "link", "set", n, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A command that runs `program` in the namespace's network only. Unlike `ip netns
    /// exec`, nsenter leaves the mounts alone, so the cgroup v2 hierarchy under /sys stays
    /// visible (ip netns exec remounts /sys for the namespace and hides it).
    pub fn enter_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.ns)).arg(program);
        c
    }

    /// A command that runs `program` inside the namespace. `ip netns exec` execs it, so
    /// the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting the host end removes its peer; deleting the namespace frees the rest.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
