//! The output file(s) and their rotation (-C/-G/-W): each file is complete on its own.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{PipelineError, SensorConfig, naming::file_name};
use crate::{
    model::{AppRecord, InterfaceInfo, InterfaceStats},
    pcapng::{PcapngError, SectionInfo, Writer},
    sensor::capture::Capture,
};

/// How long the end of a capture waits for the exporter to deliver the last file's final
/// records before that file's statistics take the export counters as they are.
const EXPORT_SETTLE: Duration = Duration::from_secs(5);

/// File rotation, as tcpdump's -C/-G/-W.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rotation {
    /// -C: start a new file once this many bytes are written.
    pub max_bytes: Option<u64>,
    /// -G: start a new file every this often.
    pub every: Option<Duration>,
    /// -W: with -C, keep this many files and overwrite the oldest (a ring of files); with
    /// -G alone, stop after this many files.
    pub max_files: Option<u32>,
}

impl Rotation {
    pub fn enabled(&self) -> bool {
        self.max_bytes.is_some() || self.every.is_some()
    }
}

/// The output file(s). Each rotated file is complete on its own: section and interface
/// blocks, the process entries of its packets, its own application records and interface
/// statistics.
pub(super) struct Output {
    pub(super) base: PathBuf,
    pub(super) rotation: Rotation,
    pub(super) interfaces: Vec<InterfaceInfo>,
    pub(super) writer: Writer<std::fs::File>,
    pub(super) path: PathBuf,
    /// Number of the current file (0 for the first).
    pub(super) seq: u32,
    pub(super) opened: Instant,
    pub(super) opened_ns: u64,
    /// Capture counters at the start of the current file, per interface.
    pub(super) stats_base: Vec<InterfaceStats>,
    /// -G with -W reached its last file.
    pub(super) finished: bool,
    /// The current file has an application-record block.
    pub(super) apps_written: bool,
    pub(super) file_mode: u32,
    /// The live exporter, whose counters go into each file's statistics.
    pub(super) export: Option<crate::export::ExportHandle>,
}

impl Output {
    pub(super) fn create(
        cfg: &SensorConfig,
        interfaces: &[InterfaceInfo],
    ) -> Result<Self, PipelineError> {
        let base = cfg.output.clone();
        let path = file_name(&base, 0, &cfg.rotation);
        let writer = open_writer(&path, interfaces, cfg.file_mode)?;
        // Only now: the probes are attached, the rings open and the file exists.
        log::info!("writing {}", path.display());
        Ok(Self {
            base,
            rotation: cfg.rotation,
            interfaces: interfaces.to_vec(),
            writer,
            path,
            seq: 0,
            opened: Instant::now(),
            opened_ns: crate::sys::now_ns(),
            stats_base: vec![InterfaceStats::default(); interfaces.len()],
            finished: false,
            apps_written: false,
            file_mode: cfg.file_mode,
            export: cfg.export.clone(),
        })
    }

    fn err(&self, source: PcapngError) -> PipelineError {
        PipelineError::Output {
            path: self.path.clone(),
            source,
        }
    }

    /// The file system is full: only the end of the file may still be written.
    pub(super) fn full(&self) -> bool {
        self.writer.disk_full()
    }

    /// A full disk is not an error of the write that met it: the capture stops and the
    /// reserve takes the end of the file.
    pub(super) fn check(&self, r: Result<(), PcapngError>) -> Result<(), PipelineError> {
        match r {
            Ok(()) | Err(PcapngError::DiskFull { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    pub(super) fn due(&self) -> bool {
        self.rotation
            .max_bytes
            .is_some_and(|m| self.writer.len_with_buffered() >= m)
            || self
                .rotation
                .every
                .is_some_and(|e| self.opened.elapsed() >= e)
    }

    pub(super) fn periodic(&mut self, apps: &[AppRecord]) -> Result<(), PipelineError> {
        if self.full() {
            return Ok(());
        }
        let r = self.writer.write_app_changes(apps).map(|n| {
            self.apps_written |= n > 0;
        });
        self.check(r)?;
        let r = self.writer.flush();
        self.check(r)
    }

    /// Final application table and statistics of the current file.
    fn finish_file(
        &mut self,
        apps: &[AppRecord],
        captures: &[Capture],
        last: bool,
    ) -> Result<(), PipelineError> {
        self.write_final_table(apps)?;
        self.write_stats(captures, last)
    }

    fn write_final_table(&mut self, apps: &[AppRecord]) -> Result<(), PipelineError> {
        self.writer
            .write_app_records(apps, true)
            .map_err(|e| self.err(e))
    }

    /// One Interface Statistics Block per interface, counting since the file was opened.
    /// The first one also carries the export counters (since the start of the capture): a
    /// snapshot when a rotated file closes, and for the `last` file, once the exporter has
    /// delivered its final records (waiting at most `EXPORT_SETTLE`).
    fn write_stats(&mut self, captures: &[Capture], last: bool) -> Result<(), PipelineError> {
        let export = self.export.as_ref().map(|x| {
            if last {
                x.settle(EXPORT_SETTLE)
            } else {
                x.counters()
            }
            .isb_comment()
        });
        let end_ns = crate::sys::now_ns();
        for (i, c) in captures.iter().enumerate() {
            let now = c.stats();
            let base = self.stats_base.get(i).copied().unwrap_or_default();
            let s = InterfaceStats {
                start_ns: self.opened_ns,
                end_ns,
                received: now.received.saturating_sub(base.received),
                if_dropped: now.if_dropped.saturating_sub(base.if_dropped),
                os_dropped: now.os_dropped.saturating_sub(base.os_dropped),
                delivered: now.delivered.saturating_sub(base.delivered),
                filter_accepted: now.filter_accepted.saturating_sub(base.filter_accepted),
            };
            if let Some(b) = self.stats_base.get_mut(i) {
                *b = now;
            }
            let comment = if i == 0 { export.as_deref() } else { None };
            self.writer
                .write_interface_stats_with_comment(i as u32, &s, comment)
                .map_err(|e| self.err(e))?;
        }
        self.writer.flush().map_err(|e| self.err(e))
    }

    /// Closes the current file and opens the next. Returns false when -G/-W says stop.
    pub(super) fn rotate(
        &mut self,
        apps: &[AppRecord],
        captures: &[Capture],
    ) -> Result<bool, PipelineError> {
        self.finish_file(apps, captures, false)?;
        let next = self.seq + 1;
        if self.rotation.max_bytes.is_none() && self.rotation.max_files.is_some_and(|w| next >= w) {
            self.finished = true;
            return Ok(false);
        }
        let path = file_name(&self.base, next, &self.rotation);
        self.writer = open_writer(&path, &self.interfaces, self.file_mode)?;
        log::info!("rotated to {}", path.display());
        self.path = path;
        self.seq = next;
        self.opened = Instant::now();
        self.opened_ns = crate::sys::now_ns();
        self.apps_written = false;
        Ok(true)
    }

    pub(super) fn close(
        mut self,
        apps: &[AppRecord],
        captures: &[Capture],
    ) -> Result<(), PipelineError> {
        if !self.full() {
            return self.finish_file(apps, captures, true);
        }
        // The statistics first: they are small and say what the capture lost.
        let stats = self.write_stats(captures, true).is_ok();
        let table = self.write_final_table(apps).is_ok();
        let kept = match (table, stats) {
            (true, true) => format!(
                ", its final application table ({} application(s)) and the interface statistics",
                apps.len()
            ),
            (true, false) => format!(
                " and its final application table ({} application(s)); the interface \
                 statistics did not fit",
                apps.len()
            ),
            (false, true) => ", the interface statistics and the application records of its \
                 periodic blocks; the final table did not fit"
                .to_string(),
            (false, false) => " and the application records of its periodic blocks; the final \
                 table and the statistics did not fit"
                .to_string(),
        };
        self.writer.release_reserve();
        Err(PipelineError::DiskFull {
            path: self.path.clone(),
            packets: self.writer.packets_written(),
            bytes: self.writer.bytes_written(),
            kept,
        })
    }
}

fn open_writer(
    path: &std::path::Path,
    interfaces: &[InterfaceInfo],
    mode: u32,
) -> Result<Writer<std::fs::File>, PipelineError> {
    let err = |source| PipelineError::Output {
        path: path.to_path_buf(),
        source,
    };
    let mut w = Writer::create_with_mode(path, &SectionInfo::detect(), mode).map_err(err)?;
    for i in interfaces {
        w.add_interface(i).map_err(err)?;
    }
    // Room for the end of the file (final table, statistics) even when the disk fills up.
    if !w.keep_reserve().map_err(err)? {
        log::warn!(
            "{}: this file system cannot preallocate, so no space is kept for the end of the \
             file; on a full disk only the periodic application blocks remain",
            path.display()
        );
    }
    Ok(w)
}
