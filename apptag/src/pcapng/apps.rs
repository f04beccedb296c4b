//! The merged application table of a capture, as `apptag apps` shows it (the printing is
//! the command's, in the binary's cli/apps.rs).
use std::path::Path;

use serde::Serialize;

use super::{AppTable, PcapngError, Record, open_file};
use crate::model::AppRecord;

/// What `apptag apps` found in a file.
#[derive(Debug, Serialize)]
pub struct AppsReport {
    pub file: String,
    /// Application-record blocks merged.
    pub blocks: u64,
    /// True when the final table of a clean stop was found complete.
    pub final_table: bool,
    /// Reading stopped early or skipped a block: what and where.
    pub errors: Vec<String>,
    pub apps: Vec<AppRecord>,
}

/// Reads all application-record blocks of `path` and merges them. Damage in the file is
/// reported in `errors`; what was read before it is kept.
pub fn collect(path: &Path) -> Result<AppsReport, PcapngError> {
    let mapped = open_file(path)?;
    let mut table = AppTable::new();
    let mut errors = Vec::new();
    let reader = mapped.reader()?;
    for rec in reader {
        match rec {
            Ok(Record::AppRecords {
                sequence,
                final_table,
                part,
                parts,
                apps,
            }) => table.merge_block(sequence, final_table, part, parts, apps),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    Ok(AppsReport {
        file: path.display().to_string(),
        blocks: table.blocks,
        final_table: table.final_complete(),
        errors,
        apps: table.into_apps(),
    })
}
