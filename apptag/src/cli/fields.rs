//! `apptag fields`: field values per frame, like `tshark -T fields -e NAME`.
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use apptag::analysis::StreamId;
use apptag::analysis::fields::{Field, Getter, Source, Value};
use apptag::analysis::parse::{Element, ElementSink, Event, Parsers, Protocol};
use apptag::analysis::{
    Dir, PacketEvent, Position, State, States, Stream, Subscriber, analyze_file,
};
use rustc_hash::FxHashMap;

use super::streams::ReassemblyArgs;

/// Print the values of fields, one line per frame with tab-separated columns, as
/// `tshark -T fields -e NAME` does (several values of a field in one frame are joined
/// with commas). Field names are Wireshark's (`ip.src`, `tcp.dstport`, `http.request.uri`,
/// `dns.qry.name`, `tls.handshake.extensions_server_name`, ...) plus apptag's own
/// (`app.name`, `process.pid`, `process.exe`, ...); `--list` shows them all. Protocol
/// fields are read by the stream parsers, on any port, and shown on the frame that
/// completed the element; when any is asked for, only frames that carry one are printed.
#[derive(clap::Args, Debug, Clone)]
pub struct FieldsArgs {
    /// Capture file (pcap or pcapng).
    #[arg(required_unless_present = "list")]
    pub file: Option<PathBuf>,
    /// A field to print (repeat for more columns).
    #[arg(short = 'e', value_name = "NAME", required_unless_present = "list")]
    pub fields: Vec<String>,
    /// One JSON object per frame instead of columns.
    #[arg(long)]
    pub json: bool,
    /// Column separator.
    #[arg(long, value_name = "TEXT", default_value = "\t")]
    pub separator: String,
    /// List every known field and exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub reassembly: ReassemblyArgs,
}

struct Rows<'w> {
    getters: Vec<Getter>,
    frame: u64,
    row: Vec<Vec<Value>>,
    has_element: bool,
    stream_filled: bool,
    wants_elements: bool,
    json: bool,
    sep: String,
    out: Box<dyn Write + 'w>,
    err: Option<std::io::Error>,
    /// HTTP values of messages whose body has not ended, per stream direction.
    pending: FxHashMap<(StreamId, Dir), Vec<(usize, Value)>>,
}

impl Rows<'_> {
    fn flush(&mut self) {
        if self.frame == 0 || (self.wants_elements && !self.has_element) {
            return;
        }
        let cols: Vec<String> = self
            .row
            .iter()
            .map(|vs| {
                vs.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let r = if self.json {
            let obj: serde_json::Map<String, serde_json::Value> = self
                .getters
                .iter()
                .zip(&self.row)
                .filter(|(_, v)| !v.is_empty())
                .map(|(g, v)| {
                    let vs = v
                        .iter()
                        .map(|x| serde_json::Value::String(x.to_string()))
                        .collect();
                    (g.field().name().to_string(), serde_json::Value::Array(vs))
                })
                .collect();
            writeln!(self.out, "{}", serde_json::Value::Object(obj))
        } else {
            writeln!(self.out, "{}", cols.join(&self.sep))
        };
        if let Err(e) = r {
            self.err.get_or_insert(e);
        }
    }

    fn fill_stream(&mut self, s: &Stream) {
        if self.stream_filled {
            return;
        }
        self.stream_filled = true;
        for (g, col) in self.getters.iter().zip(&mut self.row) {
            if g.field().source() == Source::Stream
                && let Some(v) = g.stream(s)
            {
                col.push(v);
            }
        }
    }
}

impl ElementSink for Rows<'_> {
    fn element(&mut self, ev: &Event<'_, '_>) {
        // tshark shows an HTTP message's fields on the frame that completed its body:
        // hold them until the message ends.
        if ev.protocol == Protocol::Http {
            let key = (ev.stream.id, ev.dir);
            if let Element::HttpEnd { .. } = ev.element {
                let held = self.pending.remove(&key).unwrap_or_default();
                if ev.last_frame == self.frame {
                    for (i, v) in held {
                        self.row[i].push(v);
                        self.has_element = true;
                    }
                }
                return;
            }
            let held = self.pending.entry(key).or_default();
            for (i, g) in self.getters.iter().enumerate() {
                if g.field().source() == Source::Element
                    && let Some(v) = g.element(ev)
                {
                    held.push((i, v));
                }
            }
            return;
        }
        // Elements finished after their frame was printed (at a stream's close) have no
        // row left to go in.
        if ev.last_frame != self.frame {
            return;
        }
        for (g, col) in self.getters.iter().zip(&mut self.row) {
            if g.field().source() == Source::Element
                && let Some(v) = g.element(ev)
            {
                col.push(v);
                self.has_element = true;
            }
        }
    }
}

struct Run<'w>(Parsers<Rows<'w>>);

impl Subscriber for Run<'_> {
    fn states(&self) -> States {
        States::of(State::Captured)
            .with(State::Reassembled)
            .with(State::NewConnection)
            .with(State::DeliveredInOrder)
            .with(State::QueuedOutOfOrder)
            .with(State::Closed)
    }

    fn packet(&mut self, ev: &PacketEvent<'_, '_>) {
        let rows = &mut self.0.sink;
        if ev.state == State::Captured {
            rows.flush();
            rows.frame = ev.frame;
            rows.has_element = false;
            rows.stream_filled = false;
            for (g, col) in rows.getters.iter().zip(&mut rows.row) {
                col.clear();
                if g.field().source() == Source::Packet
                    && let Some(v) = g.packet(ev)
                {
                    col.push(v);
                }
            }
        } else if ev.state == State::Reassembled && ev.frame == rows.frame {
            // The datagram rebuilt from fragments: its transport fields go on this frame.
            for (g, col) in rows.getters.iter().zip(&mut rows.row) {
                if g.field().source() == Source::Packet
                    && col.is_empty()
                    && let Some(v) = g.packet(ev)
                {
                    col.push(v);
                }
            }
        } else if let Some(s) = ev.stream
            && ev.frame == rows.frame
        {
            rows.fill_stream(s);
        }
    }

    fn opened(&mut self, s: &Stream) {
        self.0.opened(s)
    }
    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        self.0.data(s, dir, range)
    }
    fn gap(&mut self, s: &Stream, dir: Dir, range: Range<Position>) {
        self.0.gap(s, dir, range)
    }
    fn closed(&mut self, s: &Stream) {
        self.0.closed(s)
    }
}

pub fn run(args: &FieldsArgs) -> Result<()> {
    let stdout = std::io::stdout();
    if args.list {
        let mut o = stdout.lock();
        for f in Field::ALL {
            writeln!(o, "{:<40} {}", f.name(), f.doc())?;
        }
        return Ok(());
    }
    let Some(file) = &args.file else {
        bail!("a capture file is needed (or --list)");
    };
    let getters = args
        .fields
        .iter()
        .map(|n| Getter::compile(n))
        .collect::<Result<Vec<_>, _>>()?;
    let wants_elements = getters
        .iter()
        .any(|g| g.field().source() == Source::Element);
    let rows = Rows {
        row: vec![Vec::new(); getters.len()],
        getters,
        frame: 0,
        has_element: false,
        stream_filled: false,
        wants_elements,
        json: args.json,
        sep: args.separator.clone(),
        out: Box::new(std::io::BufWriter::new(stdout.lock())),
        err: None,
        pending: FxHashMap::default(),
    };
    let mut run = Run(Parsers::new(rows));
    analyze_file(file, &args.reassembly.config()?, &mut run, None)
        .with_context(|| format!("reading {}", file.display()))?;
    let rows = &mut run.0.sink;
    rows.flush();
    if let Some(e) = rows.err.take() {
        return Err(e.into());
    }
    rows.out.flush()?;
    Ok(())
}
