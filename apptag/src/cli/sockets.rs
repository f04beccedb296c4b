//! `apptag sockets`: every socket seen while running, with its process.
use std::time::Duration;

use anyhow::Result;
use apptag::sensor::attribution::Mode;

use super::{check_privileges, stop_flag};

pub fn run(json: bool, duration: Option<f64>, attribution: Mode) -> Result<()> {
    let stop = stop_flag()?;
    check_privileges(attribution, false)?;
    let mut out = std::io::stdout().lock();
    apptag::sensor::attribution::watch::watch(
        attribution,
        duration.map(Duration::from_secs_f64),
        json,
        stop,
        &mut out,
    )?;
    Ok(())
}
