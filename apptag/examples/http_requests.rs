//! Prints every HTTP/1.x request line of a capture, with the application that sent it.
//!
//!     cargo run -p apptag --example http_requests -- CAPTURE.pcapng
//!
//! A small parser on the subscription API: it reads each direction's ordered bytes through
//! positions, keeps an unfinished line (by returning its start position) until its end
//! arrives, and starts over after a gap.
use std::collections::HashMap;
use std::ops::Range;

use apptag::analysis::{AnalysisConfig, Dir, Position, Stream, StreamId, Subscriber, analyze_file};

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
/// A request line longer than this is not one we wait for.
const MAX_LINE: u64 = 8192;

#[derive(Default)]
struct Requests {
    /// Where the next unread line starts, per stream direction.
    line_start: HashMap<(StreamId, Dir), Position>,
}

impl Subscriber for Requests {
    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        let half = s.half(dir);
        let mut start = *self.line_start.get(&(s.id, dir)).unwrap_or(&range.start);
        // Everything from the start of the unfinished line to the end is contiguous.
        let Ok(bytes) = half.bytes(start, range.end) else {
            self.line_start.remove(&(s.id, dir));
            return None;
        };
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..nl];
            if METHODS.iter().any(|m| line.starts_with(m)) {
                let span = half.span_at(start);
                let app = s
                    .app
                    .as_ref()
                    .map(|a| {
                        format!(
                            "{} (pid {})",
                            a.name,
                            s.pids()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                    .unwrap_or_else(|| "no process information".into());
                let (ip, port) = s.sender(dir);
                println!(
                    "{app}\t{}\tframe {}\t{ip}:{port}\t{}",
                    s.id,
                    span.map_or(0, |sp| sp.frame),
                    String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line))
                );
            }
            start = start.forward(nl as u64 + 1);
            rest = &rest[nl + 1..];
        }
        if start.distance_to(range.end) > MAX_LINE {
            start = range.end;
        }
        self.line_start.insert((s.id, dir), start);
        // Keep the unfinished line's bytes.
        Some(start)
    }

    fn gap(&mut self, s: &Stream, dir: Dir, range: Range<Position>) {
        // A line cut by a gap is not a request line: start again after it.
        self.line_start.insert((s.id, dir), range.end);
    }

    fn closed(&mut self, s: &Stream) {
        for d in Dir::BOTH {
            self.line_start.remove(&(s.id, d));
        }
    }
}

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        anyhow::bail!("usage: http_requests CAPTURE");
    };
    let mut r = Requests::default();
    let summary = analyze_file(path.as_ref(), &AnalysisConfig::default(), &mut r, None)?;
    eprintln!(
        "{} frames, {} TCP and {} UDP streams",
        summary.frames, summary.reassembly.tcp_streams, summary.reassembly.udp_streams
    );
    Ok(())
}
