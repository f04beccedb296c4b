//! Where records go, and how a batch gets there. Network sinks speak just enough HTTP/1.1
//! (one POST per batch, `Connection: close`) or raw TCP (NDJSON lines on one kept
//! connection), so the exporter needs no HTTP stack of its own.
use std::{io::Write, path::PathBuf, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{ExportError, encode};

/// How long one batch may take to be sent and answered.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// An export target, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `-`: NDJSON on standard output.
    Stdout,
    /// `file:PATH` (not ending in .parquet): NDJSON appended to PATH.
    Ndjson(PathBuf),
    /// `file:PATH.parquet`: one Parquet file per capture file (live: per rotation).
    Parquet(PathBuf),
    /// `tcp://HOST:PORT`: NDJSON lines on a TCP connection (Logstash, Vector, Fluent Bit).
    Tcp { addr: String },
    /// `http://HOST:PORT/PATH`: NDJSON batches POSTed (Vector, Fluent Bit, Filebeat http).
    Http { addr: String, path: String },
    /// `clickhouse://HOST:PORT/DB.TABLE`: `INSERT ... FORMAT JSONEachRow` over ClickHouse's
    /// HTTP interface.
    ClickHouse {
        addr: String,
        db: String,
        table: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stdout => f.write_str("stdout"),
            Target::Ndjson(p) | Target::Parquet(p) => write!(f, "file:{}", p.display()),
            Target::Tcp { addr } => write!(f, "tcp://{addr}"),
            Target::Http { addr, path } => write!(f, "http://{addr}{path}"),
            Target::ClickHouse { addr, db, table } => {
                write!(f, "clickhouse://{addr}/{db}.{table}")
            }
        }
    }
}

fn host_port(target: &str, rest: &str) -> Result<(String, String), ExportError> {
    let bad = |why: &str| ExportError::Target {
        target: target.to_string(),
        why: why.to_string(),
    };
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let port = addr
        .rsplit_once(':')
        .map(|(_, p)| p)
        .ok_or_else(|| bad("the port is missing"))?;
    port.parse::<u16>()
        .map_err(|_| bad(&format!("{port:?} is not a port number")))?;
    Ok((addr.to_string(), path.to_string()))
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, ExportError> {
        let bad = |why: &str| ExportError::Target {
            target: s.to_string(),
            why: why.to_string(),
        };
        if s == "-" {
            return Ok(Target::Stdout);
        }
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(bad("the path is missing"));
            }
            let p = PathBuf::from(p);
            return Ok(if p.extension().is_some_and(|e| e == "parquet") {
                Target::Parquet(p)
            } else {
                Target::Ndjson(p)
            });
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (addr, _) = host_port(s, rest)?;
            return Ok(Target::Tcp { addr });
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let (addr, path) = host_port(s, rest)?;
            let path = if path.is_empty() { "/".into() } else { path };
            return Ok(Target::Http { addr, path });
        }
        if let Some(rest) = s.strip_prefix("clickhouse://") {
            let (addr, path) = host_port(s, rest)?;
            let (db, table) = path
                .trim_start_matches('/')
                .split_once('.')
                .ok_or_else(|| bad("say which table: clickhouse://HOST:PORT/DB.TABLE"))?;
            if !is_name(db) || !is_name(table) {
                return Err(bad("database and table names are letters, digits and _"));
            }
            return Ok(Target::ClickHouse {
                addr,
                db: db.into(),
                table: table.into(),
            });
        }
        Err(bad("unknown kind"))
    }

    /// Whether the target is across the network (batched, retried, spooled).
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            Target::Tcp { .. } | Target::Http { .. } | Target::ClickHouse { .. }
        )
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends batches to one target. A TCP connection is kept between batches and dropped on
/// any error, so the next batch reconnects.
pub struct Sender {
    pub target: Target,
    tcp: Option<TcpStream>,
}

impl Sender {
    pub fn new(target: Target) -> Self {
        Self { target, tcp: None }
    }

    fn connect_err(&self, source: std::io::Error) -> ExportError {
        ExportError::Connect {
            target: self.target.to_string(),
            source,
        }
    }

    /// Sends one batch of ECS records; `Ok` once the receiver has it (for HTTP and
    /// ClickHouse: answered 2xx).
    pub async fn send(&mut self, records: &[Value]) -> Result<(), ExportError> {
        let seconds = SEND_TIMEOUT.as_secs();
        let target = self.target.to_string();
        match tokio::time::timeout(SEND_TIMEOUT, self.send_inner(records)).await {
            Ok(r) => r,
            Err(_) => {
                self.tcp = None;
                Err(ExportError::Timeout { target, seconds })
            }
        }
    }

    async fn send_inner(&mut self, records: &[Value]) -> Result<(), ExportError> {
        let mut body = Vec::with_capacity(records.len() * 1024);
        match self.target.clone() {
            Target::Stdout => {
                encode::ndjson(records, &mut body);
                let mut out = std::io::stdout().lock();
                out.write_all(&body)
                    .and_then(|_| out.flush())
                    .map_err(|source| ExportError::Io {
                        path: "stdout".into(),
                        source,
                    })
            }
            Target::Ndjson(path) => {
                encode::ndjson(records, &mut body);
                let io = |source| ExportError::Io {
                    path: path.display().to_string(),
                    source,
                };
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io)?;
                f.write_all(&body).map_err(io)
            }
            Target::Parquet(path) => encode::write_parquet(&path, records),
            Target::Tcp { addr } => {
                encode::ndjson(records, &mut body);
                if self.tcp.is_none() {
                    let s = TcpStream::connect(&addr)
                        .await
                        .map_err(|e| self.connect_err(e))?;
                    self.tcp = Some(s);
                }
                let r = match self.tcp.as_mut() {
                    Some(s) => s.write_all(&body).await.map_err(|e| (e, true)),
                    None => Ok(()),
                };
                r.map_err(|(e, _)| {
                    self.tcp = None;
                    self.connect_err(e)
                })
            }
            Target::Http { addr, path } => {
                encode::ndjson(records, &mut body);
                self.post(&addr, &path, "application/x-ndjson", &body).await
            }
            Target::ClickHouse { addr, db, table } => {
                encode::clickhouse_rows(records, &mut body);
                let q = format!("INSERT INTO `{db}`.`{table}` FORMAT JSONEachRow");
                let path = format!(
                    "/?input_format_skip_unknown_fields=1&query={}",
                    percent_encode(&q)
                );
                self.post(&addr, &path, "application/json", &body).await
            }
        }
    }

    async fn post(
        &self,
        addr: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), ExportError> {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| self.connect_err(e))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| self.connect_err(e))?;
        s.write_all(body).await.map_err(|e| self.connect_err(e))?;
        let mut answer = Vec::new();
        // The answer is small (an error text at most); cap what is kept of it.
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.map_err(|e| self.connect_err(e))?;
            if n == 0 {
                break;
            }
            if answer.len() < 64 * 1024 {
                answer.extend_from_slice(&buf[..n]);
            }
        }
        let text = String::from_utf8_lossy(&answer);
        let status = text.lines().next().unwrap_or("").to_string();
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code.starts_with('2') {
            return Ok(());
        }
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .chars()
            .take(500)
            .collect();
        Err(ExportError::Http {
            target: self.target.to_string(),
            status: if status.is_empty() {
                "nothing".into()
            } else {
                status
            },
            body,
        })
    }
}

/// A runtime for one-shot use (the offline command): one thread, no workers.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExportError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExportError::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(
            Target::parse("clickhouse://127.0.0.1:8123/db.flows").unwrap(),
            Target::ClickHouse {
                addr: "127.0.0.1:8123".into(),
                db: "db".into(),
                table: "flows".into()
            }
        );
        assert_eq!(
            Target::parse("file:/tmp/x.parquet").unwrap(),
            Target::Parquet("/tmp/x.parquet".into())
        );
        assert_eq!(Target::parse("-").unwrap(), Target::Stdout);
        for (bad, says) in [
            ("tcp://host", "port is missing"),
            ("tcp://host:http", "not a port"),
            ("clickhouse://h:8123/flows", "DB.TABLE"),
            ("ftp://h:21", "unknown kind"),
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
