//! The human-readable report.
use std::fmt::Write;

use super::Report;
use crate::units::{clock_time, human_bytes, utc_time};

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let t = &r.totals;
    let _ = writeln!(
        o,
        "{}: {} packets, {} ({} bytes), {} flows, {:.3} s",
        r.file,
        t.packets,
        human_bytes(t.bytes),
        t.bytes,
        t.flows,
        t.duration_s
    );
    if t.first_ns != 0 {
        let _ = writeln!(
            o,
            "from {} to {}",
            utc_time(t.first_ns),
            utc_time(t.last_ns)
        );
    }
    if let Some(c) = &r.capture {
        let _ = writeln!(
            o,
            "capture: {} received, {} dropped by the kernel, {} by the interface, {} delivered",
            c.received, c.os_dropped, c.if_dropped, c.delivered
        );
    }
    if !r.process_info {
        let _ = writeln!(
            o,
            "no process information in this file: all traffic is unattributed; in/out is \
             guessed (the end that opened a flow is taken as this host)"
        );
    } else if r.direction == "guessed" {
        let _ = writeln!(
            o,
            "in/out partly guessed (no direction flags): the end that opened a flow is taken \
             as this host"
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<24} {:>6} {:>9} {:>10} {:>10} {:>6} {:>6} {:>5} {:>12} {:>12}  protocols",
        "APPLICATION (top talkers)",
        "share",
        "packets",
        "bytes in",
        "bytes out",
        "flows",
        "hosts",
        "ports",
        "first",
        "last"
    );
    for a in &r.applications {
        let name = if a.attributed && a.pids.len() <= 2 {
            let pids: Vec<String> = a.pids.iter().map(u32::to_string).collect();
            format!("{} [{}]", a.name, pids.join(","))
        } else if a.attributed {
            format!("{} [{} pids]", a.name, a.pids.len())
        } else {
            "(unattributed)".into()
        };
        let protos: Vec<String> = a
            .protocols
            .iter()
            .take(5)
            .map(|p| {
                format!(
                    "{} {:.0}%",
                    p.name,
                    100.0 * p.bytes as f64 / a.bytes.max(1) as f64
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "{:<24} {:>5.1}% {:>9} {:>10} {:>10} {:>6} {:>6} {:>5} {:>12} {:>12}  {}",
            clip(&name, 24),
            a.share * 100.0,
            a.packets,
            human_bytes(a.bytes_in),
            human_bytes(a.bytes_out),
            a.flows,
            a.remote_hosts,
            a.remote_ports,
            clock_time(a.first_ns),
            clock_time(a.last_ns),
            protos.join(", ")
        );
        if let Some(reason) = &a.reason {
            let _ = writeln!(o, "    reason: {reason}");
        }
        if a.processes.len() > 1 || (a.processes.len() == 1 && a.pids.len() > 1) {
            const SHOWN: usize = 5;
            for p in a.processes.iter().take(SHOWN) {
                // argv[0] is often a long path: its last component says enough.
                let cmd = match p.cmdline.split_first() {
                    None => p.name.clone(),
                    Some((argv0, rest)) => {
                        let base = argv0.rsplit('/').next().unwrap_or(argv0);
                        std::iter::once(base)
                            .chain(rest.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(" ")
                    }
                };
                let _ = writeln!(
                    o,
                    "    pid {:<8} {:>9} pkts {:>10} in {:>10} out  {}",
                    p.pid,
                    p.packets,
                    human_bytes(p.bytes_in),
                    human_bytes(p.bytes_out),
                    clip(&cmd, 48)
                );
            }
            if a.processes.len() > SHOWN {
                let _ = writeln!(o, "    … and {} more processes", a.processes.len() - SHOWN);
            }
        }
        let remotes: Vec<String> = a
            .remotes
            .iter()
            .take(5)
            .map(|x| {
                let ports: Vec<String> = x.ports.iter().take(4).map(u16::to_string).collect();
                if ports.is_empty() {
                    format!("{} ({})", x.addr, human_bytes(x.bytes))
                } else {
                    format!("{}:{} ({})", x.addr, ports.join(","), human_bytes(x.bytes))
                }
            })
            .collect();
        if !remotes.is_empty() {
            let more = a.remote_hosts.saturating_sub(remotes.len() as u64);
            let tail = if more > 0 {
                format!(" +{more} more")
            } else {
                String::new()
            };
            let _ = writeln!(o, "    remotes: {}{tail}", remotes.join(", "));
        }
        if !a.names.is_empty() {
            let names: Vec<&str> = a.names.iter().take(8).map(String::as_str).collect();
            let _ = writeln!(o, "    names: {}", names.join(", "));
        }
        use super::carried::Kind;
        for (kind, label) in [
            (Kind::HttpHost, "http hosts"),
            (Kind::HttpMethod, "http methods"),
            (Kind::HttpStatus, "http status"),
            (Kind::TlsServerName, "tls names"),
            (Kind::DnsName, "dns asked"),
            (Kind::FtpFile, "ftp files"),
            (Kind::SmtpSender, "smtp from"),
            (Kind::SmtpRecipient, "smtp to"),
        ] {
            let l = a.carried.list(kind);
            if l.is_empty() {
                continue;
            }
            let shown: Vec<String> = l
                .iter()
                .take(8)
                .map(|v| format!("{} ({})", clip(&v.value, 60), v.count))
                .collect();
            let tail = if l.len() > 8 {
                format!(", … {} more", l.len() - 8)
            } else {
                String::new()
            };
            let _ = writeln!(o, "    {label}: {}{tail}", shown.join(", "));
        }
    }
    if !r.conversations.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<7} {:>45} {:>45} {:>8} {:>10} {:>8} {:>10}  service / application",
            "FLOW", "A", "B", "pkts A>B", "bytes A>B", "pkts B>A", "bytes B>A"
        );
        for c in &r.conversations {
            let _ = writeln!(
                o,
                "{:<7} {:>45} {:>45} {:>8} {:>10} {:>8} {:>10}  {} / {}",
                c.transport,
                format!("{}:{}", c.a, c.a_port),
                format!("{}:{}", c.b, c.b_port),
                c.packets_a_to_b,
                c.bytes_a_to_b,
                c.packets_b_to_a,
                c.bytes_b_to_a,
                c.service,
                c.application
            );
        }
    }
    for p in &r.problems {
        let _ = writeln!(o, "\nPROBLEM at byte {}: {}", p.offset, p.message);
    }
    o
}
