//! Records of finished captures: the final application table of each file (merged from its
//! application-record blocks) and its process entries.
use std::{collections::HashMap, path::Path};

use super::{ExportError, FlowRecord};
use crate::{
    model::ProcessInfo,
    pcapng::{AppTable, Record},
};

/// What one capture file yields.
#[derive(Debug, Default)]
pub struct FileRecords {
    pub records: Vec<FlowRecord>,
    /// Whether the file ended with its final table (a killed sensor leaves only the
    /// periodic ones: the totals are then those of the last periodic write).
    pub complete: bool,
    /// Damage met while reading (the records before it are kept).
    pub problems: Vec<String>,
}

/// The file name of `path`, as records name their capture file.
pub fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// One record per socket of every application in the capture at `path`.
pub fn records_of_file(path: &Path, host: &str) -> Result<FileRecords, ExportError> {
    let mapped = crate::pcapng::open_file(path)?;
    let mut reader = mapped.reader()?;
    let mut table = AppTable::new();
    let mut procs: HashMap<u32, ProcessInfo> = HashMap::new();
    let mut problems = Vec::new();
    while let Some(rec) = reader.next_record() {
        match rec {
            Ok(Record::Process(p)) => {
                procs.insert(p.pid, p);
            }
            Ok(Record::AppRecords {
                sequence,
                final_table,
                part,
                parts,
                apps,
            }) => table.merge_block(sequence, final_table, part, parts, apps),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    let complete = table.final_complete();
    let file = file_label(path);
    let mut records = Vec::new();
    for app in table.apps() {
        for s in &app.sockets {
            records.push(FlowRecord::new(host, &file, app, s, procs.get(&s.pid)));
        }
    }
    Ok(FileRecords {
        records,
        complete,
        problems,
    })
}

/// This machine's host name, as records carry it by default.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
