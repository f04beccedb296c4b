//! `apptag report --html`: the credentials pass and writing the page.
use std::{io::Write, path::Path};

use anyhow::{Context, Result};
use apptag::{
    analysis::{
        AnalysisConfig, analyze_file, creds::Credential, creds::Credentials, parse::Parsers,
    },
    report::{Report, html},
};

/// The credentials in the capture (the same pass as `apptag creds`), for the page's
/// "credentials seen" cells and per-application lists.
pub fn credentials(file: &Path) -> Result<Vec<Credential>> {
    let mut parsers = Parsers::new(Credentials::default());
    analyze_file(file, &AnalysisConfig::default(), &mut parsers, None)
        .with_context(|| format!("looking for credentials in {}", file.display()))?;
    if parsers.sink.dropped > 0 {
        log::warn!(
            "{} credentials over the limit are not in the page",
            parsers.sink.dropped
        );
    }
    Ok(parsers.sink.list)
}

/// Writes the page to `out`, readable by its owner only (it names hosts, processes and
/// users of the capture).
pub fn write(report: &Report, credentials: &[Credential], out: &Path) -> Result<()> {
    let page = html::render(report, credentials)?;
    let mut f = apptag::sys::create_private(out, apptag::sys::PRIVATE_FILE_MODE)
        .with_context(|| format!("cannot create {}", out.display()))?;
    f.write_all(page.as_bytes())
        .and_then(|()| f.flush())
        .with_context(|| format!("cannot write {}", out.display()))?;
    log::info!(
        "HTML report written to {} ({} bytes)",
        out.display(),
        page.len()
    );
    Ok(())
}
