//! The live status line on a terminal: packets, bytes, drops, share attributed and the
//! busiest applications, redrawn at most twice a second.
use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use crate::{
    model::Summary,
    units::{human_bytes, share},
};

pub struct StatusLine {
    enabled: bool,
    last: Instant,
}

impl StatusLine {
    pub fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    /// Whether a redraw is due (callers skip computing the line otherwise).
    pub fn due(&self) -> bool {
        self.enabled && self.last.elapsed() >= Duration::from_millis(500)
    }

    /// `export`: the live exporter's counters, shown when there is one.
    pub fn update(
        &mut self,
        s: &Summary,
        top: &[(String, u64)],
        export: Option<&crate::export::CountersSnapshot>,
    ) {
        if !self.due() {
            return;
        }
        self.last = Instant::now();
        let apps: Vec<String> = top
            .iter()
            .map(|(n, b)| format!("{n} {}", human_bytes(*b)))
            .collect();
        let export = export.map_or_else(String::new, |c| {
            format!(
                "  export {} (spooled {} replayed {} dropped {})",
                c.exported, c.spooled, c.replayed, c.dropped
            )
        });
        let evicted = if s.evicted_sockets + s.evicted_processes > 0 {
            format!(
                "  evicted {} sockets {} processes",
                s.evicted_sockets, s.evicted_processes
            )
        } else {
            String::new()
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[K{} pkts  {}  dropped {}  attributed {:.0}%{export}{evicted}  top: {}",
            s.written,
            human_bytes(s.bytes),
            s.kernel_dropped,
            share(s.attributed, s.captured),
            apps.join(", ")
        );
        let _ = e.flush();
    }

    pub fn clear(&mut self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}
