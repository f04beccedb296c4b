//! Plain data types that flow between the modules: capture -> attribution/merge -> pcapng
//! writer, and pcapng reader -> report. Kept free of I/O so every module can use them.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Direction of a packet relative to this host, as pcapng's `epb_flags` bits 0-1 encode it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Unknown,
    Inbound,
    Outbound,
}

impl Direction {
    /// The value of epb_flags bits 0-1.
    pub const fn epb_bits(self) -> u32 {
        match self {
            Direction::Unknown => 0,
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        }
    }

    pub const fn from_epb_bits(flags: u32) -> Self {
        match flags & 3 {
            1 => Direction::Inbound,
            2 => Direction::Outbound,
            _ => Direction::Unknown,
        }
    }
}

/// How a tag was obtained, so a user can judge it. Stored in the application-record block;
/// in JSON it is the hook's name (`"connect4"`, `"sock_send_length"`...), `"sock_diag"`,
/// `"procfs"` or `"unknown"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Provenance {
    #[default]
    Unknown,
    /// A kernel hook saw the task use the socket; the value is `apptag_common::hook`.
    Hook(u32),
    /// Found by the netlink sock_diag + /proc/PID/fd scan (socket existed before start, or
    /// the probes missed it).
    SockDiag,
    /// Found by the procfs-only baseline (`--attribution procfs`).
    Procfs,
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provenance::Hook(h) => f.write_str(apptag_common::hook::name(*h)),
            Provenance::SockDiag => f.write_str("sock_diag"),
            Provenance::Procfs => f.write_str("procfs"),
            Provenance::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for Provenance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Provenance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(match name.as_str() {
            "sock_diag" => Provenance::SockDiag,
            "procfs" => Provenance::Procfs,
            "unknown" => Provenance::Unknown,
            hook => (1..=64)
                .find(|&h| apptag_common::hook::name(h) == hook)
                .map_or(Provenance::Unknown, Provenance::Hook),
        })
    }
}

/// One process, as the pcapng process entries and the application-record block carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// User name for `uid`, if it resolves.
    pub user: String,
    /// Short name (comm, at most 15 bytes in the kernel).
    pub name: String,
    /// Executable path (/proc/PID/exe), empty if unknown.
    pub exe: String,
    /// argv, empty if unknown.
    pub cmdline: Vec<String>,
    /// Process start time, ns since the Unix epoch. Together with pid it identifies a
    /// process even after the pid is reused.
    pub start_ns: u64,
    /// cgroup v2 path relative to the cgroup root, empty if unknown.
    pub cgroup: String,
    /// Container id derived from the cgroup path (docker/containerd/podman), if any.
    pub container_id: String,
}

/// Transport protocol numbers (IPPROTO_*) used in socket records.
pub mod proto {
    pub use apptag_common::ipproto::*;

    pub fn name(p: u8) -> &'static str {
        match p {
            ICMP => "icmp",
            TCP => "tcp",
            UDP => "udp",
            ICMPV6 => "icmpv6",
            SCTP => "sctp",
            UDPLITE => "udplite",
            RAW => "raw",
            _ => "other",
        }
    }
}

/// One socket of an application, with what was seen on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRecord {
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// IPPROTO_* number (see [`proto`]).
    pub protocol: u8,
    /// First and last packet time, ns since the Unix epoch (0 = no packet yet).
    pub first_ns: u64,
    pub last_ns: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Bytes are original frame lengths, as tshark counts them.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Kernel socket cookie (0 if unknown).
    pub cookie: u64,
    /// pid that owned the socket when it was attributed.
    pub pid: u32,
    pub provenance: Provenance,
    /// When the attribution was made, ns since the Unix epoch.
    pub attributed_ns: u64,
}

/// One application: the processes that share a name/executable, and their sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    pub pids: Vec<u32>,
    pub cmdline: Vec<String>,
    pub exe: String,
    pub start_ns: u64,
    pub uid: u32,
    pub cgroup: String,
    pub provenance: Provenance,
    pub sockets: Vec<SocketRecord>,
}

/// One captured packet, borrowed from the capture ring or the file being read.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// ns since the Unix epoch.
    pub ts_ns: u64,
    /// Index of the interface (its Interface Description Block).
    pub interface: u32,
    /// Length on the wire.
    pub orig_len: u32,
    /// Captured bytes (at most the snap length).
    pub data: &'a [u8],
    pub direction: Direction,
    /// Process and thread that sent or received it; 0 = unknown.
    pub pid: u32,
    pub tid: u32,
}

/// What an interface is: enough for an Interface Description Block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub name: String,
    /// LINKTYPE_* (1 Ethernet, 113 Linux SLL, 276 Linux SLL2, 101 raw IP...).
    pub linktype: u16,
    pub snaplen: u32,
    /// Capture filter in tcpdump syntax, if any.
    pub filter: Option<String>,
}

/// Counters for an Interface Statistics Block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Packets the kernel received for this socket (PACKET_STATISTICS tp_packets).
    pub received: u64,
    /// Dropped by the interface/driver, if known.
    pub if_dropped: u64,
    /// Dropped by the OS (ring full: tp_drops).
    pub os_dropped: u64,
    /// Packets that reached user space and the file.
    pub delivered: u64,
    /// Packets accepted by the filter.
    pub filter_accepted: u64,
}

/// Totals of a live capture, shown in the status line and printed at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Packets the capture threads handed to the writer.
    pub captured: u64,
    /// Packets written (after --pid/--comm/--cgroup selection).
    pub written: u64,
    pub attributed: u64,
    pub kernel_dropped: u64,
    /// Original bytes of the written packets.
    pub bytes: u64,
    /// Sockets and processes evicted from the sensor's tables because a cap
    /// (`--max-sockets`, `--max-processes`) was reached.
    pub evicted_sockets: u64,
    pub evicted_processes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_is_a_readable_name_in_json() {
        for p in [
            Provenance::Hook(apptag_common::hook::CONNECT4),
            Provenance::Hook(apptag_common::hook::RECV_LENGTH),
            Provenance::SockDiag,
            Provenance::Procfs,
            Provenance::Unknown,
        ] {
            let j = serde_json::to_string(&p).unwrap();
            assert!(j.starts_with('"'), "{j}");
            assert_eq!(serde_json::from_str::<Provenance>(&j).unwrap(), p);
        }
        assert_eq!(
            serde_json::to_string(&Provenance::Hook(apptag_common::hook::CONNECT4)).unwrap(),
            "\"connect4\""
        );
    }
}
