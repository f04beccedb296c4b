//! The report as a [`Subscriber`] of the analysis driver: the driver reads, dissects and
//! defragments each frame once; every frame is accounted here (a fragment when the driver
//! settles its datagram), and the protocol parsers on the reassembled streams say what
//! each flow carried.
use std::ops::Range;

use crate::analysis::parse::Parsers;
use crate::analysis::stream::{Dir, Position, Stream};
use crate::analysis::subscribe::{PacketEvent, Settled, State, States, Subscriber};
use crate::report::source::Record;

use super::aggregate::{Aggregator, LineId, Metadata};
use super::carried::CarriedSink;
use super::{Problem, ReportError};

/// Told each frame's number, line and pid as it is accounted.
pub type FrameHook<'a> = Box<dyn FnMut(u64, LineId, u32) + Send + 'a>;

pub struct Collector<'a> {
    agg: Option<Aggregator>,
    /// The protocol parsers, when the report lists what the streams carried.
    parsers: Option<Parsers<CarriedSink>>,
    pub problems: Vec<Problem>,
    hook: Option<FrameHook<'a>>,
    /// The state-vs-time recorder, handed to the aggregation once it exists.
    states: Option<super::timeline::StateRecorder>,
}

impl<'a> Collector<'a> {
    /// `carried`: run the protocol parsers on the streams.
    pub fn new(carried: bool) -> Self {
        Self {
            agg: None,
            parsers: carried.then(|| Parsers::new(CarriedSink::default())),
            problems: Vec::new(),
            hook: None,
            states: None,
        }
    }

    /// Also records the state-vs-time view (`report --html`).
    pub fn with_states(mut self, states: super::timeline::StateRecorder) -> Self {
        self.states = Some(states);
        self
    }

    /// Calls `hook` with every frame's line and pid (for `extract`).
    pub fn with_hook(mut self, hook: FrameHook<'a>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The aggregation, with what the parsers found joined to its flows, and the damage
    /// found in the file.
    pub fn finish(self) -> (Aggregator, Vec<Problem>) {
        let states = self.states;
        let mut agg = self.agg.unwrap_or_else(|| {
            let mut a = Aggregator::new(Metadata::default());
            a.states = states;
            a
        });
        if let Some(p) = self.parsers {
            for (key, c) in p.sink.flows {
                if let Some(&i) = agg.flow_index.get(&key)
                    && let Some(f) = agg.flows.get_mut(i as usize)
                {
                    f.carried = Some(Box::new(c));
                }
            }
        }
        (agg, self.problems)
    }

    fn agg(&mut self) -> &mut Aggregator {
        let states = &mut self.states;
        self.agg.get_or_insert_with(|| {
            let mut a = Aggregator::new(Metadata::default());
            a.states = states.take();
            a
        })
    }
}

impl Subscriber for Collector<'_> {
    fn states(&self) -> States {
        States::of(State::Captured)
    }

    fn packet(&mut self, ev: &PacketEvent<'_, '_>) {
        let Some(p) = ev.record else { return };
        let d = ev.packet;
        let (line, pid) = if !d.is_ip() {
            self.agg().non_ip(p)
        } else if d.fragment == crate::dissect::Fragment::Whole {
            self.agg().whole(ev.frame, p, d)
        } else {
            // Counted when the driver settles its datagram.
            return;
        };
        if let Some(h) = self.hook.as_mut() {
            h(ev.frame, line, pid);
        }
    }

    fn wants_fragments(&self) -> bool {
        true
    }

    fn fragments(&mut self, settled: Settled<'_, '_>) {
        let mut hook = self.hook.take();
        self.agg().settled(&settled, |frame, line, pid| {
            if let Some(h) = hook.as_mut() {
                h(frame, line, pid);
            }
        });
        self.hook = hook;
    }

    fn metadata(&mut self, meta: &Metadata) {
        let mut a = Aggregator::new(meta.clone());
        a.states = self.states.take();
        self.agg = Some(a);
    }

    fn block(&mut self, rec: &Record<'_>) {
        let agg = self.agg();
        match rec {
            Record::Interface(i) => agg.interface(i.linktype),
            Record::Section => agg.new_section(),
            Record::InterfaceStats { interface, stats } => agg.interface_stats(*interface, *stats),
            _ => {}
        }
    }

    fn origin(&mut self, ts_ns: u64) {
        self.agg().origin(ts_ns);
    }

    fn damage(&mut self, e: &ReportError) {
        self.problems.push(Problem {
            offset: e.offset().unwrap_or(0),
            message: e.to_string(),
        });
    }

    fn wants_bytes(&self) -> bool {
        self.parsers.is_some()
    }

    fn opened(&mut self, s: &Stream) {
        if let Some(p) = self.parsers.as_mut() {
            p.opened(s);
        }
    }

    fn data(&mut self, s: &Stream, dir: Dir, range: Range<Position>) -> Option<Position> {
        self.parsers.as_mut()?.data(s, dir, range)
    }

    fn gap(&mut self, s: &Stream, dir: Dir, range: Range<Position>) {
        if let Some(p) = self.parsers.as_mut() {
            p.gap(s, dir, range);
        }
    }

    fn closed(&mut self, s: &Stream) {
        if let Some(p) = self.parsers.as_mut() {
            p.closed(s);
        }
    }
}
