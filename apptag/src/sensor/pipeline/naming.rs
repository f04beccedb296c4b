//! Names of the output files: the default one and the rotated ones.
use std::path::PathBuf;

use super::Rotation;

/// out.pcapng, then out.1.pcapng, out.2.pcapng ... With -C and -W the files form a ring
/// numbered out.0.pcapng .. out.(W-1).pcapng.
pub fn file_name(base: &std::path::Path, seq: u32, rotation: &Rotation) -> PathBuf {
    let ring = rotation.max_bytes.is_some() && rotation.max_files.is_some();
    let n = match rotation.max_files {
        Some(w) if ring && w > 0 => seq % w,
        _ => seq,
    };
    if !rotation.enabled() || (!ring && n == 0) {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{n}"),
    };
    base.with_file_name(name)
}

/// apptag-HOST-YYYYmmddTHHMMSS.pcapng in the current directory.
pub fn default_output() -> PathBuf {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let secs = crate::sys::now_ns() / 1_000_000_000;
    let (y, mo, d, h, mi, s) = crate::units::civil(secs);
    PathBuf::from(format!(
        "apptag-{host}-{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.pcapng"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_file_names() {
        let base = std::path::Path::new("/tmp/out.pcapng");
        let none = Rotation::default();
        assert_eq!(file_name(base, 0, &none), base);
        let size = Rotation {
            max_bytes: Some(1),
            ..Rotation::default()
        };
        assert_eq!(file_name(base, 0, &size), base);
        assert_eq!(
            file_name(base, 2, &size).to_str(),
            Some("/tmp/out.2.pcapng")
        );
        let ring = Rotation {
            max_bytes: Some(1),
            max_files: Some(3),
            ..Rotation::default()
        };
        assert_eq!(
            file_name(base, 0, &ring).to_str(),
            Some("/tmp/out.0.pcapng")
        );
        assert_eq!(
            file_name(base, 4, &ring).to_str(),
            Some("/tmp/out.1.pcapng")
        );
    }
}
