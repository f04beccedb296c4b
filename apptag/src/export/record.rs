//! The flow record: one socket of one application, in Elastic Common Schema names, built
//! from what a capture already holds (its application records and process entries).
//! docs/EXPORT.md documents every field; `schema/ecs-flow.schema.json` checks them.
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::model::{AppRecord, ProcessInfo, SocketRecord, proto};
use crate::units::rfc3339;

/// Which way the flow went, from this host's point of view (ECS `network.direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDirection {
    /// This host opened it (or sent first): the local end is `source`.
    Outbound,
    /// A remote host opened it: the remote end is `source`.
    Inbound,
    /// Both ends are this host (loopback, or a packet to itself).
    Internal,
}

impl FlowDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowDirection::Outbound => "outbound",
            FlowDirection::Inbound => "inbound",
            FlowDirection::Internal => "internal",
        }
    }

    /// The socket record does not say who opened the connection, so: a socket that the
    /// connect hooks saw is outbound; otherwise the end with the ephemeral-looking port
    /// (the higher one, when the other is a service port below 32768) is the client, as
    /// flow collectors guess it.
    pub fn of(s: &SocketRecord) -> Self {
        let l = s.local_addr.to_canonical();
        let r = s.remote_addr.to_canonical();
        if l == r || (l.is_loopback() && r.is_loopback()) {
            return FlowDirection::Internal;
        }
        if let crate::model::Provenance::Hook(h) = s.provenance
            && matches!(
                h,
                apptag_common::hook::CONNECT4 | apptag_common::hook::CONNECT6
            )
        {
            return FlowDirection::Outbound;
        }
        if s.local_port != 0 && s.local_port < s.remote_port && s.local_port < 32768 {
            FlowDirection::Inbound
        } else {
            FlowDirection::Outbound
        }
    }
}

/// Everything one record says, before it is encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub host: String,
    /// The capture file the flow's packets are in (file name, no directory).
    pub file: String,
    pub socket: SocketRecord,
    pub process: ProcessInfo,
    pub direction: FlowDirection,
    /// 0 for the first record of a flow, then one more for each later record.
    pub sequence: u32,
    /// The totals are the flow's last (end of the capture file), not an interim report.
    pub final_record: bool,
    /// When this record was made, ns since the Unix epoch.
    pub made_ns: u64,
}

impl FlowRecord {
    /// The record for socket `s` of `app`. `proc` is the process entry of the socket's pid,
    /// if the capture has one; otherwise what the application record says stands in.
    pub fn new(
        host: &str,
        file: &str,
        app: &AppRecord,
        s: &SocketRecord,
        proc: Option<&ProcessInfo>,
    ) -> Self {
        let process = match proc {
            Some(p) => {
                let mut p = p.clone();
                if p.cgroup.is_empty() {
                    p.cgroup = app.cgroup.clone();
                }
                if p.container_id.is_empty() {
                    p.container_id = crate::sensor::attribution::process::container_id(&p.cgroup);
                }
                p
            }
            None => ProcessInfo {
                pid: s.pid,
                ppid: 0,
                uid: app.uid,
                user: String::new(),
                name: app.name.clone(),
                exe: app.exe.clone(),
                cmdline: app.cmdline.clone(),
                start_ns: app.start_ns,
                cgroup: app.cgroup.clone(),
                container_id: crate::sensor::attribution::process::container_id(&app.cgroup),
            },
        };
        Self {
            host: host.to_string(),
            file: file.to_string(),
            socket: s.clone(),
            process,
            direction: FlowDirection::of(s),
            sequence: 0,
            final_record: true,
            made_ns: s.last_ns,
        }
    }

    /// Stable id of the flow: the same socket in the same capture file of the same host
    /// always gets it, whether exported live or later from the file, so a store that keeps
    /// the last record per flow id holds exact totals.
    pub fn flow_id(&self) -> String {
        let s = &self.socket;
        let mut h = sha1_smol::Sha1::new();
        h.update(self.host.as_bytes());
        h.update(&[0]);
        h.update(self.file.as_bytes());
        h.update(&[0, s.protocol]);
        h.update(s.local_addr.to_string().as_bytes());
        h.update(&s.local_port.to_be_bytes());
        h.update(s.remote_addr.to_string().as_bytes());
        h.update(&s.remote_port.to_be_bytes());
        h.update(&s.cookie.to_be_bytes());
        h.update(&s.pid.to_be_bytes());
        let d = h.digest().bytes();
        d[..10].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Id of this record: the flow id and the sequence. A replayed copy has the same id.
    pub fn record_id(&self) -> String {
        format!("{}-{}", self.flow_id(), self.sequence)
    }

    /// (source, destination) as (addr, port, packets, bytes): the source is the end that
    /// opened the flow.
    fn ends(&self) -> [(IpAddr, u16, u64, u64); 2] {
        let s = &self.socket;
        let local = (s.local_addr, s.local_port, s.packets_out, s.bytes_out);
        let remote = (s.remote_addr, s.remote_port, s.packets_in, s.bytes_in);
        match self.direction {
            FlowDirection::Inbound => [remote, local],
            _ => [local, remote],
        }
    }

    /// The record as ECS JSON (nested objects). Unknown values are left out, not written
    /// as empty strings or zeros.
    pub fn to_ecs(&self) -> Value {
        let s = &self.socket;
        let p = &self.process;
        let [src, dst] = self.ends();
        let end = |(ip, port, packets, bytes): (IpAddr, u16, u64, u64)| {
            let mut m = Map::new();
            m.insert("ip".into(), json!(ip.to_canonical().to_string()));
            if has_ports(s.protocol) {
                m.insert("port".into(), json!(port));
            }
            m.insert("packets".into(), json!(packets));
            m.insert("bytes".into(), json!(bytes));
            Value::Object(m)
        };
        let v6 = src.0.to_canonical().is_ipv6();
        let mut network = json!({
            "transport": proto::name(s.protocol),
            "iana_number": s.protocol.to_string(),
            "type": if v6 { "ipv6" } else { "ipv4" },
            "direction": self.direction.as_str(),
            "packets": s.packets_in + s.packets_out,
            "bytes": s.bytes_in + s.bytes_out,
        });
        if let Some(c) = community_id(0, src.0, src.1, dst.0, dst.1, s.protocol) {
            network["community_id"] = json!(c);
        }
        let mut process = Map::new();
        process.insert("pid".into(), json!(p.pid));
        put_str(&mut process, "name", &p.name);
        put_str(&mut process, "executable", &p.exe);
        if !p.cmdline.is_empty() {
            process.insert("command_line".into(), json!(command_line(&p.cmdline)));
            process.insert("args".into(), json!(p.cmdline));
        }
        if p.ppid != 0 {
            process.insert("parent".into(), json!({ "pid": p.ppid }));
        }
        if p.start_ns != 0 {
            process.insert("start".into(), json!(rfc3339(p.start_ns)));
        }
        let mut user = Map::new();
        user.insert("id".into(), json!(p.uid.to_string()));
        put_str(&mut user, "name", &p.user);
        let mut apptag = Map::new();
        apptag.insert("flow_id".into(), json!(self.flow_id()));
        apptag.insert("sequence".into(), json!(self.sequence));
        apptag.insert("final".into(), json!(self.final_record));
        apptag.insert("provenance".into(), json!(s.provenance.to_string()));
        if s.attributed_ns != 0 {
            apptag.insert("attributed".into(), json!(rfc3339(s.attributed_ns)));
        }
        if s.cookie != 0 {
            apptag.insert("cookie".into(), json!(s.cookie));
        }
        put_str(&mut apptag, "cgroup", &p.cgroup);
        apptag.insert(
            "capture".into(),
            json!({ "file": self.file, "first_ns": s.first_ns, "last_ns": s.last_ns }),
        );
        let mut rec = Map::new();
        rec.insert("@timestamp".into(), json!(rfc3339(self.made_ns)));
        rec.insert(
            "event".into(),
            json!({
                "id": self.record_id(),
                "kind": "event",
                "category": ["network"],
                "type": ["connection", if self.final_record { "end" } else { "info" }],
                "start": rfc3339(s.first_ns),
                "end": rfc3339(s.last_ns),
                "duration": s.last_ns.saturating_sub(s.first_ns),
            }),
        );
        rec.insert("host".into(), json!({ "name": self.host }));
        rec.insert("source".into(), end(src));
        rec.insert("destination".into(), end(dst));
        rec.insert("network".into(), network);
        rec.insert("process".into(), Value::Object(process));
        rec.insert("user".into(), Value::Object(user));
        if !p.container_id.is_empty() {
            rec.insert("container".into(), json!({ "id": p.container_id }));
        }
        rec.insert("apptag".into(), Value::Object(apptag));
        Value::Object(rec)
    }
}

fn put_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn has_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        proto::TCP | proto::UDP | proto::SCTP | proto::UDPLITE
    )
}

/// argv joined as a shell would need it typed: arguments with spaces or quotes are quoted.
pub fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Community ID v1 (the flow hash Zeek, Suricata, Arkime and Elastic share): SHA-1 over the
/// seed, the ordered endpoints, the protocol and the ports, base64, with a "1:" prefix.
/// `None` for ICMP, whose hash needs the message type, which a socket record lacks.
pub fn community_id(
    seed: u16,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    protocol: u8,
) -> Option<String> {
    if matches!(protocol, proto::ICMP | proto::ICMPV6) {
        return None;
    }
    let (src, dst) = (src.to_canonical(), dst.to_canonical());
    let bytes = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let (a, b) = (bytes(src), bytes(dst));
    if a.len() != b.len() {
        return None;
    }
    let ports = has_ports(protocol);
    let (sport, dport) = if ports { (sport, dport) } else { (0, 0) };
    // The spec orders the endpoints so both directions hash alike.
    let (a, sport, b, dport) = if (&a, sport) <= (&b, dport) {
        (a, sport, b, dport)
    } else {
        (b, dport, a, sport)
    };
    let mut h = sha1_smol::Sha1::new();
    h.update(&seed.to_be_bytes());
    h.update(&a);
    h.update(&b);
    h.update(&[protocol, 0]);
    if ports {
        h.update(&sport.to_be_bytes());
        h.update(&dport.to_be_bytes());
    }
    Some(format!("1:{}", base64(&h.digest().bytes())))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i:?}");
        }
    }

    #[test]
    fn community_id_is_the_same_both_ways() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            community_id(0, a, 40000, b, 80, proto::TCP),
            community_id(0, b, 80, a, 40000, proto::TCP)
        );
        assert_ne!(
            community_id(0, a, 40000, b, 80, proto::TCP),
            community_id(0, a, 40000, b, 80, proto::UDP)
        );
    }

    #[test]
    fn rfc3339_keeps_nanoseconds() {
        assert_eq!(
            rfc3339(1_700_000_001_123_456_789),
            "2023-11-14T22:13:21.123456789Z"
        );
    }

    #[test]
    fn command_line_quotes_what_a_shell_would_split() {
        let a: Vec<String> = ["curl", "-s", "a b", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(command_line(&a), r"curl -s 'a b' 'it'\''s'");
    }
}
