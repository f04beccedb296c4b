//! The files we write, read back by Wireshark's tools (tshark, capinfos, editcap) and
//! tcpdump as independent oracles.
mod common;

use common::*;

#[test]
fn dump_sample_for_inspection() {
    if let Ok(p) = std::env::var("APPTAG_SAMPLE_OUT") {
        write_sample(std::path::Path::new(&p), 20);
    }
}
