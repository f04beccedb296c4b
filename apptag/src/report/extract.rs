//! `apptag extract`: one application's (or process's, or cgroup's) packets into a new
//! pcapng, with its process entries and application records, so it can be opened on its
//! own in Wireshark or reported on again.
use std::{io::BufWriter, path::Path};

use rustc_hash::FxHashSet;

use crate::{
    analysis::AnalysisConfig,
    model::{AppRecord, Packet},
    pcapng::{SectionInfo, Writer},
};

use super::{
    Problem, RELEASE_EVERY, ReportError,
    aggregate::{Aggregator, LineId, LineKind},
    collect::Collector,
    collect_metadata,
    source::{Capture, Format, Record, Records},
};

/// What to extract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// An application by name (as `apptag report` lists it).
    App(String),
    /// One process.
    Pid(u32),
    /// A cgroup v2 path (as recorded, relative to the cgroup root; a leading `/` is ignored).
    Cgroup(String),
}

/// What an extraction did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExtractStats {
    pub packets_read: u64,
    pub packets_written: u64,
    /// Sum of original frame lengths written.
    pub bytes_written: u64,
    pub processes_written: usize,
    pub applications_written: usize,
    pub problems: Vec<Problem>,
}

fn same_cgroup(a: &str, b: &str) -> bool {
    let a = a.trim_start_matches('/');
    let b = b.trim_start_matches('/');
    !a.is_empty() && a == b
}

fn write_err(path: &Path) -> impl Fn(crate::pcapng::PcapngError) -> ReportError + '_ {
    move |e| ReportError::Select(format!("writing {}: {e}", path.display()))
}

/// Copies the packets of `sel` from `input` to a new pcapng `output`.
pub fn extract(input: &Path, output: &Path, sel: &Selector) -> Result<ExtractStats, ReportError> {
    let capture = Capture::open(input)?;
    let data = capture.data();
    let records = Records::new(data)?;
    if records.format() != Format::Pcapng {
        return Err(ReportError::Select(format!(
            "{} is a classic pcap file: it carries no process information, so no packet \
             belongs to an application; extract works on pcapng files written by apptag",
            input.display()
        )));
    }
    let meta = collect_metadata(Records::new(data)?, &mut |off| capture.release_before(off));
    if meta.is_empty() {
        return Err(ReportError::Select(format!(
            "{} has no process information (it was not written by apptag, or by a version \
             that recorded none): nothing can be selected by application",
            input.display()
        )));
    }
    let processes = meta.processes.clone();
    let apps: Vec<AppRecord> = meta.table.apps().to_vec();
    let agg = Aggregator::new(meta);

    // Which report lines and pids the selector stands for.
    let mut lines: FxHashSet<LineId> = FxHashSet::default();
    let mut pids: FxHashSet<u32> = FxHashSet::default();
    for (i, line) in agg.lines.iter().enumerate() {
        if let LineKind::App(a) = &line.kind {
            let hit = match sel {
                Selector::App(name) => a.name == *name,
                Selector::Cgroup(cg) => same_cgroup(&a.cgroup, cg),
                Selector::Pid(_) => false,
            };
            if hit {
                lines.insert(i as LineId);
                pids.extend(a.pids.iter().copied());
            }
        }
    }
    match sel {
        Selector::Pid(pid) => {
            pids.insert(*pid);
        }
        Selector::Cgroup(cg) => {
            pids.extend(
                processes
                    .iter()
                    .filter(|p| same_cgroup(&p.cgroup, cg))
                    .map(|p| p.pid),
            );
        }
        Selector::App(_) => {}
    }
    let by_pid = matches!(sel, Selector::Pid(_) | Selector::Cgroup(_));
    if lines.is_empty() && !(by_pid && processes.iter().any(|p| pids.contains(&p.pid))) {
        let mut names: Vec<String> = agg
            .lines
            .iter()
            .filter_map(|l| match &l.kind {
                LineKind::App(a) => Some(a.name.clone()),
                LineKind::Unattributed(_) => None,
            })
            .collect();
        names.sort();
        names.dedup();
        if !matches!(sel, Selector::Pid(_)) {
            return Err(ReportError::Select(format!(
                "no application matches {sel:?} in {}; applications in the file: {}",
                input.display(),
                names.join(", ")
            )));
        }
    }

    drop(agg);
    // First pass: the report's attribution of every frame (through the analysis driver,
    // so fragments go with their datagrams), kept as one bit per frame.
    let mut selected: Vec<u64> = Vec::new();
    {
        let hit = |line: LineId, pid: u32| {
            if by_pid {
                pid != 0 && pids.contains(&pid)
                    || matches!(sel, Selector::Cgroup(_)) && lines.contains(&line)
            } else {
                lines.contains(&line)
            }
        };
        let mut c = Collector::new(false).with_hook(Box::new(|frame, line, pid| {
            if frame == 0 || !hit(line, pid) {
                return;
            }
            let i = (frame - 1) as usize;
            if selected.len() <= i / 64 {
                selected.resize(i / 64 + 1, 0);
            }
            selected[i / 64] |= 1 << (i % 64);
        }));
        crate::analysis::analyze_bytes(data, &AnalysisConfig::default(), &mut c).map_err(|e| {
            match e {
                crate::analysis::AnalysisError::Read(e) => e,
            }
        })?;
    }
    let is_selected = |frame: u64| {
        frame > 0
            && selected
                .get((frame as usize - 1) / 64)
                .is_some_and(|w| w >> ((frame - 1) % 64) & 1 == 1)
    };
    // Packets of other users: as private as the capture they come from.
    let file =
        crate::sys::create_private(output, crate::sys::PRIVATE_FILE_MODE).map_err(|source| {
            ReportError::Write {
                path: output.display().to_string(),
                source,
            }
        })?;
    let mut section = SectionInfo::detect();
    section.userappl = format!("apptag {} extract", env!("CARGO_PKG_VERSION"));
    let err = write_err(output);
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, file), &section).map_err(&err)?;
    let mut stats = ExtractStats::default();
    for p in processes.iter().filter(|p| pids.contains(&p.pid)) {
        w.write_process(p).map_err(&err)?;
        stats.processes_written += 1;
    }
    // Interfaces are copied as they come; a new section renumbers them, so ids are mapped.
    let mut iface_map: Vec<u32> = Vec::new();
    let mut records = records;
    let mut next_release = RELEASE_EVERY;
    while let Some(rec) = records.next_record() {
        match rec {
            Ok(Record::Interface(i)) => {
                iface_map.push(w.add_interface(&i).map_err(&err)?);
            }
            Ok(Record::Section) => {
                iface_map.clear();
            }
            Ok(Record::Packet(p)) => {
                stats.packets_read += 1;
                if is_selected(stats.packets_read) {
                    let Some(&interface) = iface_map.get(p.interface as usize) else {
                        continue;
                    };
                    w.write_packet(&Packet { interface, ..p }).map_err(&err)?;
                    stats.packets_written += 1;
                    stats.bytes_written += u64::from(p.orig_len);
                }
                if records.offset() >= next_release {
                    capture.release_before(records.offset());
                    next_release = records.offset() + RELEASE_EVERY;
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("{e}");
                stats.problems.push(Problem {
                    offset: e.offset().unwrap_or(0),
                    message: e.to_string(),
                });
            }
        }
    }
    // The selected applications' records, as one final table; for a pid, only its sockets.
    let selected: Vec<AppRecord> = apps
        .into_iter()
        .filter_map(|mut a| {
            let keep = match sel {
                Selector::App(name) => a.name == *name,
                Selector::Cgroup(cg) => {
                    same_cgroup(&a.cgroup, cg) || a.pids.iter().any(|p| pids.contains(p))
                }
                Selector::Pid(pid) => {
                    a.pids.contains(pid) || a.sockets.iter().any(|s| s.pid == *pid)
                }
            };
            if !keep {
                return None;
            }
            if let Selector::Pid(pid) = sel {
                a.pids.retain(|p| p == pid);
                a.sockets.retain(|s| s.pid == *pid);
            }
            Some(a)
        })
        .collect();
    stats.applications_written = selected.len();
    if !selected.is_empty() {
        w.write_app_records(&selected, true).map_err(&err)?;
    }
    w.flush().map_err(&err)?;
    Ok(stats)
}
