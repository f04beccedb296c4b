//! How numbers and times are shown to people, one way for every command: byte counts in
//! SI units (1 kB = 1000 B, as network people count), times in UTC.

/// Bytes with an SI unit: `512 B`, `1.5 kB`, `3.2 GB`.
pub fn human_bytes(b: u64) -> String {
    let v = b as f64;
    for (div, unit) in [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")] {
        if v >= div {
            return format!("{:.1} {unit}", v / div);
        }
    }
    format!("{b} B")
}

/// UTC calendar time of Unix seconds: (year, month, day, hour, minute, second), proleptic
/// Gregorian (H. Hinnant's days-from-civil inverse).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let z = (secs / 86_400) as i64 + 719_468;
    let rem = secs % 86_400;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2026-11-22 14:20:01.123456 UTC` of nanoseconds since the epoch (empty for 0: unknown).
pub fn utc_time(ns: u64) -> String {
    if ns == 0 {
        return String::new();
    }
    let (y, mo, d, h, mi, s) = civil(ns / 1_000_000_000);
    let micros = (ns % 1_000_000_000) / 1000;
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{micros:06} UTC")
}

/// `14:20:01.123`, the UTC time of day to the millisecond (empty for 0: unknown).
pub fn clock_time(ns: u64) -> String {
    if ns == 0 {
        return String::new();
    }
    let (_, _, _, h, mi, s) = civil(ns / 1_000_000_000);
    format!("{h:02}:{mi:02}:{s:02}.{:03}", (ns / 1_000_000) % 1000)
}

/// ns since the Unix epoch as RFC 3339 in UTC with nanoseconds, as ECS dates are written.
pub fn rfc3339(ns: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ns / 1_000_000_000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:09}Z",
        ns % 1_000_000_000
    )
}

/// `part` as a percentage of `whole` (0 when there is no whole).
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_si_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(3_200_000_000), "3.2 GB");
        assert_eq!(human_bytes(7_000_000_000_000_000), "7000.0 TB");
    }

    #[test]
    fn civil_time_matches_date() {
        // As `date -u -d @1795357628` prints it: 2026-11-22T14:27:08Z.
        assert_eq!(civil(1_795_357_628), (2026, 11, 22, 14, 27, 8));
        // `date -u -d @951782400`: the leap day of a century divisible by 400.
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
    }

    #[test]
    fn time_formats() {
        assert_eq!(
            utc_time(1_700_000_000_123_456_789),
            "2023-11-14 22:13:20.123456 UTC"
        );
        assert_eq!(
            utc_time(951_782_400_000_000_000),
            "2000-02-29 00:00:00.000000 UTC"
        );
        assert_eq!(clock_time(1_700_000_000_123_456_789), "22:13:20.123");
        assert_eq!((utc_time(0), clock_time(0)), (String::new(), String::new()));
    }
}
