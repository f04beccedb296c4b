//! Line-based protocols (FTP, SMTP, POP3, IMAP): complete lines only, each with its
//! offset, so an unfinished line stays unconsumed until its end arrives.

/// The longest line waited for.
pub const MAX_LINE: usize = 16 * 1024;

/// Calls `f(offset, line)` for every complete line of `bytes` (without its CR LF), in
/// order, stopping after a line for which `f` returns false; returns the bytes consumed.
/// A line longer than [`MAX_LINE`] is an error.
pub fn each_line(
    bytes: &[u8],
    mut f: impl FnMut(usize, &[u8]) -> Result<bool, super::Broken>,
) -> Result<usize, super::Broken> {
    let mut at = 0;
    while let Some(nl) = bytes[at..].iter().position(|&b| b == b'\n') {
        let mut line = &bytes[at..at + nl];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        let go_on = f(at, line)?;
        at += nl + 1;
        if !go_on {
            return Ok(at);
        }
    }
    if bytes.len() - at > MAX_LINE {
        return Err(super::Broken("line too long"));
    }
    Ok(at)
}

/// A reply line `NNN text` or `NNN-text`: (code, continues, text).
pub fn reply(line: &str) -> Option<(u16, bool, &str)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    match b.get(3) {
        None => Some((code, false, "")),
        Some(b' ') => Some((code, false, &line[4..])),
        Some(b'-') => Some((code, true, &line[4..])),
        _ => None,
    }
}

/// The text of a line, or None when it is not text a command line can be.
pub fn text(line: &[u8]) -> Option<&str> {
    std::str::from_utf8(line).ok()
}
