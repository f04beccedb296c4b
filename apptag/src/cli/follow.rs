//! `apptag follow`: one stream's bytes, as the receiving application read them; or every
//! stream of an application written to files, one per direction.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use apptag::analysis::stream::End;
use apptag::analysis::{Dir, Position, Stream, StreamId, Subscriber, Transport, analyze_file};
use apptag::dissect::Addr;

use super::streams::{ProgressLine, ReassemblyArgs};

/// Print one stream's bytes in order (retransmissions, reordering and overlaps resolved,
/// gaps marked), or write every stream of an application to files.
///
/// STREAM is tshark's stream number (`tcp.stream`; `udp:N` for `udp.stream`), or an
/// address:port pair such as `10.0.0.1:80` or `[::1]:80-[::1]:4242`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["stream", "app"])))]
pub struct FollowArgs {
    /// Capture file (pcap or pcapng).
    pub file: PathBuf,
    /// Which stream.
    pub stream: Option<String>,
    /// Printable characters, the others as '.' (the default).
    #[arg(long, group = "mode")]
    pub ascii: bool,
    /// A hex dump with offsets.
    #[arg(long, group = "mode")]
    pub hex: bool,
    /// What `tshark -q -z follow,tcp,raw,N` prints, in the same layout.
    #[arg(long, group = "mode")]
    pub raw: bool,
    /// Which direction: both, forward (from the first packet's sender, tshark's node 0)
    /// or reverse.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,
    /// Every stream of this application (needs -o).
    #[arg(long, value_name = "NAME", requires = "output")]
    pub app: Option<String>,
    /// Directory for --app: one file per direction per stream, named by application, pid,
    /// stream and ends.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub reassembly: ReassemblyArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Both,
    Forward,
    Reverse,
}

impl Direction {
    fn wants(self, d: Dir) -> bool {
        matches!(
            (self, d),
            (Direction::Both, _)
                | (Direction::Forward, Dir::Forward)
                | (Direction::Reverse, Dir::Reverse)
        )
    }
}

/// Which stream the user asked for.
#[derive(Clone, Debug, PartialEq)]
enum Selector {
    Number(Transport, u64),
    /// One end, or both ends, as addr:port.
    Ends(End, Option<End>),
}

fn parse_end(s: &str) -> Option<End> {
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once("]:")?;
        (a, p)
    } else {
        s.rsplit_once(':')?
    };
    Some(End {
        addr: Addr::from_ip(addr.parse().ok()?),
        port: port.parse().ok()?,
    })
}

fn parse_selector(s: &str) -> Result<Selector> {
    let num = |t, n: &str| n.parse().ok().map(|n| Selector::Number(t, n));
    let parsed = if let Some(n) = s.strip_prefix("udp:").or(s.strip_prefix("udp/")) {
        num(Transport::Udp, n)
    } else if let Some(n) = s.strip_prefix("tcp:").or(s.strip_prefix("tcp/")) {
        num(Transport::Tcp, n)
    } else if let Ok(n) = s.parse() {
        Some(Selector::Number(Transport::Tcp, n))
    } else {
        let mut parts = s.splitn(2, ['-', ',']);
        let a = parts.next().and_then(parse_end);
        match (a, parts.next()) {
            (Some(a), None) => Some(Selector::Ends(a, None)),
            (Some(a), Some(b)) => parse_end(b).map(|b| Selector::Ends(a, Some(b))),
            _ => None,
        }
    };
    parsed.with_context(|| {
        format!(
            "cannot read the stream {s:?}: give tshark's stream number (7, tcp:7 or udp:3) \
             or an address:port pair (10.0.0.1:80, [::1]:80-[::1]:4242)"
        )
    })
}

impl Selector {
    fn matches(&self, s: &Stream) -> bool {
        match self {
            Selector::Number(t, n) => s.id.transport == *t && s.id.number == *n,
            Selector::Ends(a, b) => {
                let e0 = s.summary().ends;
                let has = |e: &End| e0.iter().any(|x| x == e);
                has(a) && b.as_ref().is_none_or(has)
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ascii,
    Hex,
    Raw,
}

/// Prints the selected stream's bytes as they come.
struct Printer<'o> {
    sel: Selector,
    mode: Mode,
    direction: Direction,
    out: &'o mut dyn Write,
    chosen: Option<StreamId>,
    ends: Option<[End; 2]>,
    transport: Transport,
    /// Bytes printed per direction (the hex dump's offsets).
    printed: [u64; 2],
    err: Option<std::io::Error>,
}

impl Printer<'_> {
    fn write(&mut self, s: &Stream, dir: Dir, bytes: &[u8]) -> std::io::Result<()> {
        let tab = if dir == Dir::Reverse { "\t" } else { "" };
        match self.mode {
            Mode::Raw => {
                let mut line = String::with_capacity(bytes.len() * 2 + 2);
                line.push_str(tab);
                for b in bytes {
                    line.push_str(&format!("{b:02x}"));
                }
                writeln!(self.out, "{line}")
            }
            Mode::Ascii => {
                let text: Vec<u8> = bytes
                    .iter()
                    .map(|&b| {
                        if b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b) {
                            b
                        } else {
                            b'.'
                        }
                    })
                    .collect();
                self.out.write_all(&text)?;
                if !text.ends_with(b"\n") {
                    writeln!(self.out)?;
                }
                Ok(())
            }
            Mode::Hex => {
                let _ = s;
                let base = self.printed[dir.index()];
                for (i, row) in bytes.chunks(16).enumerate() {
                    let mut hex = String::new();
                    for b in row {
                        hex.push_str(&format!("{b:02x} "));
                    }
                    let asc: String = row
                        .iter()
                        .map(|&b| {
                            if (0x20..0x7f).contains(&b) {
                                b as char
                            } else {
                                '.'
                            }
                        })
                        .collect();
                    writeln!(
                        self.out,
                        "{tab}{:08X}  {hex:<48} {asc}",
                        base + i as u64 * 16
                    )?;
                }
                Ok(())
            }
        }
    }

    fn header(&mut self) -> std::io::Result<()> {
        if self.mode != Mode::Raw {
            return Ok(());
        }
        let (t, n) = match (&self.chosen, &self.sel) {
            (Some(id), _) => (id.transport, id.number),
            (None, Selector::Number(t, n)) => (*t, *n),
            (None, _) => (self.transport, 0),
        };
        let name = if t == Transport::Udp { "udp" } else { "tcp" };
        writeln!(self.out, "\n{}", "=".repeat(67))?;
        writeln!(self.out, "Follow: {name},raw")?;
        writeln!(self.out, "Filter: {name}.stream eq {n}")?;
        match &self.ends {
            Some([a, b]) => {
                writeln!(self.out, "Node 0: {a}")?;
                writeln!(self.out, "Node 1: {b}")?;
            }
            None => {
                writeln!(self.out, "Node 0: :0")?;
                writeln!(self.out, "Node 1: :0")?;
            }
        }
        Ok(())
    }
}

impl Subscriber for Printer<'_> {
    fn opened(&mut self, s: &Stream) {
        if self.chosen.is_none() && self.sel.matches(s) {
            self.chosen = Some(s.id);
            self.ends = Some(s.summary().ends);
            if let Err(e) = self.header() {
                self.err.get_or_insert(e);
            }
        }
    }

    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        if self.chosen != Some(s.id) || !self.direction.wants(dir) || self.err.is_some() {
            return None;
        }
        let r = match s.half(dir).bytes(range.start, range.end) {
            Ok(b) => self.write(s, dir, b),
            Err(_) => Ok(()),
        };
        self.printed[dir.index()] += range.start.distance_to(range.end);
        if let Err(e) = r {
            self.err = Some(e);
        }
        None
    }

    fn gap(&mut self, s: &Stream, dir: Dir, range: Range<Position>) {
        if self.chosen != Some(s.id) || !self.direction.wants(dir) || self.mode == Mode::Raw {
            return;
        }
        let n = range.start.distance_to(range.end);
        self.printed[dir.index()] += n;
        if let Err(e) = writeln!(self.out, "[{n} bytes missing in capture file]") {
            self.err.get_or_insert(e);
        }
    }
}

/// Writes every stream of one application, one file per direction.
struct Writer {
    app: String,
    dir: PathBuf,
    direction: Direction,
    files: HashMap<(StreamId, usize), BufWriter<File>>,
    written: u64,
    err: Option<std::io::Error>,
}

/// Open files at once; beyond it every file is flushed and closed, and reopened to append.
const MAX_OPEN: usize = 256;

fn file_name(app: &str, s: &Stream, dir: Dir) -> String {
    let pid = s.pids().next().unwrap_or(0);
    let (sa, sp) = s.sender(dir);
    let (da, dp) = s.sender(dir.other());
    let safe: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{safe}-{pid}-{}{}-{sa}.{sp}-{da}.{dp}",
        if s.id.transport == Transport::Udp {
            "udp"
        } else {
            "tcp"
        },
        s.id.number
    )
    .replace(':', "_")
}

impl Writer {
    fn write(&mut self, s: &Stream, dir: Dir, bytes: &[u8]) -> std::io::Result<()> {
        let key = (s.id, dir.index());
        if !self.files.contains_key(&key) {
            if self.files.len() >= MAX_OPEN {
                for (_, mut f) in self.files.drain() {
                    f.flush()?;
                }
            }
            let path = self.dir.join(file_name(&self.app, s, dir));
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            self.files.insert(key, BufWriter::new(f));
        }
        if let Some(f) = self.files.get_mut(&key) {
            f.write_all(bytes)?;
            self.written += bytes.len() as u64;
        }
        Ok(())
    }
}

impl Subscriber for Writer {
    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        if self.err.is_some()
            || !self.direction.wants(dir)
            || s.app.as_ref().is_none_or(|a| a.name != self.app)
        {
            return None;
        }
        if let Ok(b) = s.half(dir).bytes(range.start, range.end)
            && let Err(e) = self.write(s, dir, b)
        {
            self.err = Some(e);
        }
        None
    }

    fn closed(&mut self, s: &Stream) {
        for d in 0..2 {
            if let Some(mut f) = self.files.remove(&(s.id, d))
                && let Err(e) = f.flush()
            {
                self.err.get_or_insert(e);
            }
        }
    }
}

fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the output directory {}", dir.display()))
}

pub fn run(args: &FollowArgs) -> Result<()> {
    let cfg = args.reassembly.config();
    let mut progress = ProgressLine::new();
    let mut pf = |d, t| progress.update(d, t);
    if let Some(app) = &args.app {
        let Some(dir) = &args.output else {
            bail!("--app needs -o DIR: the directory to write the streams to");
        };
        prepare_dir(dir)?;
        let mut w = Writer {
            app: app.clone(),
            dir: dir.clone(),
            direction: args.direction,
            files: HashMap::new(),
            written: 0,
            err: None,
        };
        let summary = analyze_file(&args.file, &cfg, &mut w, Some(&mut pf))
            .with_context(|| format!("cannot analyse {}", args.file.display()))?;
        for (_, mut f) in w.files.drain() {
            f.flush().context("cannot write the stream files")?;
        }
        if let Some(e) = w.err {
            return Err(e).context(format!("cannot write into {}", dir.display()));
        }
        if !summary.tagged {
            bail!(
                "{} has no process information (not written by apptag): no stream can be \
                 matched to the application {app:?}; follow streams by number instead",
                args.file.display()
            );
        }
        eprintln!("{} bytes of {app} written to {}", w.written, dir.display());
        return Ok(());
    }
    let Some(sel) = args.stream.as_deref() else {
        bail!(
            "give a STREAM (tshark's stream number or an address:port pair) or --app NAME -o DIR"
        );
    };
    let sel = parse_selector(sel)?;
    let mode = if args.raw {
        Mode::Raw
    } else if args.hex {
        Mode::Hex
    } else {
        Mode::Ascii
    };
    let stdout = std::io::stdout();
    let mut lock = BufWriter::new(stdout.lock());
    let transport = match sel {
        Selector::Number(t, _) => t,
        _ => Transport::Tcp,
    };
    let mut p = Printer {
        sel,
        mode,
        direction: args.direction,
        out: &mut lock,
        chosen: None,
        ends: None,
        transport,
        printed: [0; 2],
        err: None,
    };
    analyze_file(&args.file, &cfg, &mut p, Some(&mut pf))
        .with_context(|| format!("cannot analyse {}", args.file.display()))?;
    if p.chosen.is_none() {
        p.header()?;
    }
    let chosen = p.chosen;
    let err = p.err.take();
    if mode == Mode::Raw {
        writeln!(lock, "{}", "=".repeat(67))?;
    }
    let r = lock.flush().map_err(|e| err.unwrap_or(e));
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write to stdout")?,
    }
    if chosen.is_none() && mode != Mode::Raw {
        bail!(
            "no such stream in {}: see `apptag streams {}`",
            args.file.display(),
            args.file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            parse_selector("7").unwrap(),
            Selector::Number(Transport::Tcp, 7)
        );
        assert_eq!(
            parse_selector("udp:3").unwrap(),
            Selector::Number(Transport::Udp, 3)
        );
        let Selector::Ends(a, Some(b)) = parse_selector("[::1]:80-[::1]:4242").unwrap() else {
            panic!()
        };
        assert_eq!((a.port, b.port), (80, 4242));
        assert!(parse_selector("10.0.0.1:80").is_ok());
        assert!(parse_selector("nonsense").is_err());
    }
}
