//! The finished report: what `apptag report` prints, as plain data (serialised for `--json`).
use std::net::IpAddr;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::{analysis::defrag::DefragStats, model::proto, units::utc_time};

use super::{
    aggregate::{Aggregator, Counters, LineId, LineKind, Series},
    carried::{Carried, CarriedAcc},
    source::Format,
};

/// How many remote hosts and names each application lists (the counts stay exact).
pub const TOP_REMOTES: usize = 20;
pub const TOP_NAMES: usize = 50;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub format: Format,
    /// LINKTYPE_* of each interface.
    pub linktypes: Vec<u16>,
    /// Whether the file carried process information (apptag files do; plain pcaps do not).
    pub process_info: bool,
    /// Where in/out came from: "capture" (direction flags or cooked headers, or known local
    /// addresses) or "guessed" (the end that opened each flow is taken as this host).
    pub direction: &'static str,
    pub totals: Totals,
    /// What the capture itself counted (pcapng statistics blocks), if the file has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureStats>,
    /// Applications and unattributed traffic, most bytes first (top talkers).
    pub applications: Vec<Application>,
    /// Every flow, only with `--flows` (there can be millions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conversations: Vec<Conversation>,
    /// IP defragmentation, when the file has fragments: datagrams reassembled and
    /// fragments discarded, by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defrag: Option<DefragStats>,
    /// Damage found in the file; the figures cover what was read before it.
    pub problems: Vec<Problem>,
    #[serde(skip)]
    pub timeline: Timeline,
    /// The state-vs-time view, when asked for ([`super::analyze_with_states`]).
    #[serde(skip)]
    pub states: Option<super::timeline::StateTimeline>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub packets: u64,
    /// Sum of original frame lengths, as tshark counts them.
    pub bytes: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub flows: u64,
    pub non_ip_packets: u64,
    pub attributed_bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub duration_s: f64,
}

/// Sums of the last statistics block of every interface.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureStats {
    pub interfaces: u64,
    /// Packets the kernel received for the capture.
    pub received: u64,
    /// Dropped by the interface or driver.
    pub if_dropped: u64,
    /// Dropped by the OS (ring full).
    pub os_dropped: u64,
    /// Delivered to the capture program.
    pub delivered: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Application {
    pub name: String,
    pub attributed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub pids: Vec<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exe: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cgroup: String,
    pub packets: u64,
    pub bytes: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Fraction of all bytes in the file (0..1).
    pub share: f64,
    pub flows: u64,
    pub remote_hosts: u64,
    pub remote_ports: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub first: String,
    pub last: String,
    pub protocols: Vec<ProtocolShare>,
    /// Top remote hosts by bytes.
    pub remotes: Vec<Remote>,
    /// DNS query names, HTTP hosts and TLS server names seen.
    pub names: Vec<String>,
    pub processes: Vec<Process>,
    /// What the application's streams carried, from the protocol parsers (HTTP hosts,
    /// methods and status codes, TLS server names, DNS names asked, FTP files, SMTP
    /// senders and recipients).
    #[serde(skip_serializing_if = "Carried::is_empty")]
    pub carried: Carried,
    #[serde(skip)]
    pub line: LineId,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProtocolShare {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Remote {
    pub addr: IpAddr,
    pub ports: Vec<u16>,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exe: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    pub start_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Conversation {
    /// IPPROTO_* number and its name.
    pub protocol: u8,
    pub transport: &'static str,
    pub a: IpAddr,
    pub a_port: u16,
    pub b: IpAddr,
    pub b_port: u16,
    pub packets_a_to_b: u64,
    pub bytes_a_to_b: u64,
    pub packets_b_to_a: u64,
    pub bytes_b_to_a: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub service: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The application (or unattributed line) with most of its bytes.
    pub application: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// Byte offset in the file where the damage starts.
    pub offset: u64,
    pub message: String,
}

/// Bytes per time bin per report line, for plots.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub origin_ns: u64,
    pub bin_ns: u64,
    /// Indexed by [`Application::line`].
    pub bytes: Vec<Series>,
}

#[derive(Default)]
struct LineAcc {
    flows: u64,
    remotes: FxHashMap<IpAddr, (u64, u64, u64, FxHashSet<u16>)>,
    ports: FxHashSet<u16>,
    protocols: FxHashMap<String, (u64, u64, u64)>,
    names: Vec<String>,
    name_set: FxHashSet<String>,
    carried: CarriedAcc,
}

impl Report {
    pub fn build(
        mut agg: Aggregator,
        file: String,
        format: Format,
        problems: Vec<Problem>,
        with_flows: bool,
    ) -> Self {
        // Fragments still waiting for their datagrams are counted now.
        agg.finish();
        // Before the flows are sorted: the recorder knows them by index.
        let states = agg.states.take().map(|s| s.finish(&agg));
        // Flows in the order of their first frames, however they were made.
        agg.flows.sort_by_key(|f| f.first_frame);
        let mut acc: Vec<LineAcc> = (0..agg.lines.len()).map(|_| LineAcc::default()).collect();
        let mut conversations = Vec::new();
        for f in &agg.flows {
            let service = f.service_label();
            let remote_of = |account: &super::aggregate::Account| {
                if account.a_is_local.unwrap_or(f.local_is_a()) {
                    (f.key.dst.to_ip(), f.key.dst_port)
                } else {
                    (f.key.src.to_ip(), f.key.src_port)
                }
            };
            for (k, account) in f.accounts.iter().enumerate() {
                let (line, c) = (&account.line, &account.counters);
                let (remote, rport) = remote_of(account);
                // Several processes of one application in a flow: the flow counts once.
                let earlier = &f.accounts[..k];
                let first_of_line = !earlier.iter().any(|o| o.line == *line);
                let first_for_remote = !earlier
                    .iter()
                    .any(|o| o.line == *line && remote_of(o).0 == remote);
                let Some(a) = acc.get_mut(*line as usize) else {
                    continue;
                };
                a.flows += u64::from(first_of_line);
                if first_of_line && let Some(c) = &f.carried {
                    a.carried.add(c);
                }
                let r = a.remotes.entry(remote).or_default();
                r.0 += c.packets();
                r.1 += c.bytes();
                r.2 += u64::from(first_for_remote);
                let has_ports = matches!(
                    f.key.protocol,
                    proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP
                ) && rport != 0;
                if has_ports {
                    if r.3.len() < 64 {
                        r.3.insert(rport);
                    }
                    a.ports.insert(rport);
                }
                let p = a.protocols.entry(service.clone()).or_default();
                p.0 += c.packets();
                p.1 += c.bytes();
                p.2 += u64::from(first_of_line);
                for (n, _) in f.names.iter().filter(|(_, l)| l == line) {
                    if a.names.len() < TOP_NAMES && a.name_set.insert(n.clone()) {
                        a.names.push(n.clone());
                    }
                }
            }
            if with_flows {
                let main_line = f
                    .accounts
                    .iter()
                    .max_by_key(|a| a.counters.bytes())
                    .map(|a| a.line);
                conversations.push(Conversation {
                    protocol: f.key.protocol,
                    transport: proto::name(f.key.protocol),
                    a: f.key.src.to_ip(),
                    a_port: f.key.src_port,
                    b: f.key.dst.to_ip(),
                    b_port: f.key.dst_port,
                    packets_a_to_b: f.packets[0],
                    bytes_a_to_b: f.bytes[0],
                    packets_b_to_a: f.packets[1],
                    bytes_b_to_a: f.bytes[1],
                    packets: f.packets[0] + f.packets[1],
                    bytes: f.bytes[0] + f.bytes[1],
                    first_ns: f.first_ns,
                    last_ns: f.last_ns,
                    service: service.clone(),
                    names: {
                        let mut v: Vec<String> = f.names.iter().map(|(n, _)| n.clone()).collect();
                        v.dedup();
                        v
                    },
                    application: main_line.map(|l| line_name(&agg, l)).unwrap_or_default(),
                });
            }
        }
        let total_bytes = agg.totals.bytes();
        let mut apps = Vec::new();
        let mut attributed_bytes = 0;
        for (i, (line, a)) in agg.lines.iter().zip(acc).enumerate() {
            let c = line.counters;
            if c.packets() == 0 {
                continue;
            }
            let (name, attributed, reason, pids, exe, cgroup) = match &line.kind {
                LineKind::App(info) => {
                    attributed_bytes += c.bytes();
                    let mut pids = info.pids.clone();
                    pids.sort_unstable();
                    (
                        info.name.clone(),
                        true,
                        None,
                        pids,
                        info.exe.clone(),
                        info.cgroup.clone(),
                    )
                }
                LineKind::Unattributed(r) => (
                    "(unattributed)".to_string(),
                    false,
                    Some(r.text().to_string()),
                    Vec::new(),
                    String::new(),
                    String::new(),
                ),
            };
            let mut remotes: Vec<Remote> = a
                .remotes
                .iter()
                .map(|(addr, (p, b, f, ports))| {
                    let mut ports: Vec<u16> = ports.iter().copied().collect();
                    ports.sort_unstable();
                    Remote {
                        addr: *addr,
                        ports,
                        packets: *p,
                        bytes: *b,
                        flows: *f,
                    }
                })
                .collect();
            remotes.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.addr.cmp(&y.addr)));
            let remote_hosts = remotes.len() as u64;
            remotes.truncate(TOP_REMOTES);
            let mut protocols: Vec<ProtocolShare> = a
                .protocols
                .into_iter()
                .map(|(name, (packets, bytes, flows))| ProtocolShare {
                    name,
                    packets,
                    bytes,
                    flows,
                })
                .collect();
            protocols.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.name.cmp(&y.name)));
            let mut processes: Vec<Process> = line
                .processes
                .iter()
                .map(|(&pid, pc)| process_entry(&agg, pid, pc))
                .collect();
            processes.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.pid.cmp(&y.pid)));
            apps.push(Application {
                name,
                attributed,
                reason,
                pids,
                exe,
                cgroup,
                packets: c.packets(),
                bytes: c.bytes(),
                packets_in: c.packets_in,
                packets_out: c.packets_out,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                share: if total_bytes == 0 {
                    0.0
                } else {
                    c.bytes() as f64 / total_bytes as f64
                },
                flows: a.flows,
                remote_hosts,
                remote_ports: a.ports.len() as u64,
                first_ns: c.first_ns,
                last_ns: c.last_ns,
                first: utc_time(c.first_ns),
                last: utc_time(c.last_ns),
                protocols,
                remotes,
                names: a.names,
                processes,
                carried: a.carried.finish(),
                line: i as LineId,
            });
        }
        // A total order (unattributed lines share a name, not a reason), so the order the
        // lines were made in (one core or several workers) does not show.
        apps.sort_by(|x, y| {
            y.bytes
                .cmp(&x.bytes)
                .then_with(|| x.name.cmp(&y.name))
                .then_with(|| x.reason.cmp(&y.reason))
        });
        let t = agg.totals;
        let totals = Totals {
            packets: t.packets(),
            bytes: t.bytes(),
            packets_in: t.packets_in,
            packets_out: t.packets_out,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            flows: agg.flows.len() as u64,
            non_ip_packets: agg.non_ip_packets,
            attributed_bytes,
            first_ns: t.first_ns,
            last_ns: t.last_ns,
            duration_s: t.last_ns.saturating_sub(t.first_ns) as f64 / 1e9,
        };
        Report {
            file,
            format,
            linktypes: agg.all_linktypes().to_vec(),
            process_info: agg.has_process_info(),
            direction: if agg.direction_guessed == 0 {
                "capture"
            } else {
                "guessed"
            },
            totals,
            capture: (!agg.interface_stats.is_empty()).then(|| {
                let mut c = CaptureStats::default();
                for st in agg.interface_stats.values() {
                    c.interfaces += 1;
                    c.received += st.received;
                    c.if_dropped += st.if_dropped;
                    c.os_dropped += st.os_dropped;
                    c.delivered += st.delivered;
                }
                c
            }),
            applications: apps,
            conversations,
            defrag: (agg.defrag_stats().fragments > 0).then(|| agg.defrag_stats().clone()),
            problems,
            timeline: Timeline {
                origin_ns: agg.timeline.origin_ns,
                bin_ns: agg.timeline.bin_ns,
                bytes: agg.timeline.bytes,
            },
            states,
        }
    }
}

fn line_name(agg: &Aggregator, line: LineId) -> String {
    match agg.lines.get(line as usize).map(|l| &l.kind) {
        Some(LineKind::App(a)) => a.name.clone(),
        Some(LineKind::Unattributed(r)) => format!("(unattributed: {})", r.text()),
        None => String::new(),
    }
}

fn process_entry(agg: &Aggregator, pid: u32, c: &Counters) -> Process {
    // The process entry that was running at the first packet (pids can be reused).
    let info = agg
        .processes
        .iter()
        .filter(|p| p.pid == pid && p.start_ns <= c.first_ns.max(1))
        .max_by_key(|p| p.start_ns)
        .or_else(|| agg.processes.iter().find(|p| p.pid == pid));
    Process {
        pid,
        name: info.map(|p| p.name.clone()).unwrap_or_default(),
        exe: info.map(|p| p.exe.clone()).unwrap_or_default(),
        cmdline: info.map(|p| p.cmdline.clone()).unwrap_or_default(),
        user: info.map(|p| p.user.clone()).unwrap_or_default(),
        start_ns: info.map(|p| p.start_ns).unwrap_or(0),
        packets: c.packets(),
        bytes: c.bytes(),
        packets_in: c.packets_in,
        packets_out: c.packets_out,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        first_ns: c.first_ns,
        last_ns: c.last_ns,
    }
}
