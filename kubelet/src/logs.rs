//! Container log files in the CRI format the real kubelet reads:
//! one line per output line, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`
//! (`P` marks a partial line, continued by the next entry).
//!
//! ```text
//! 2026-11-24T04:00:00.123456789Z stdout F hello
//! 2026-11-24T04:00:00.2Z stderr F warning: …
//! ```

use k8s_openapi::jiff::Timestamp;

/// One log entry, as stored.
pub fn format_entry(stream: &str, text: &[u8], complete: bool) -> Vec<u8> {
    let mut line = format!(
        "{} {stream} {} ",
        Timestamp::now(),
        if complete { 'F' } else { 'P' }
    )
    .into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// What `kubectl logs` asked for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub timestamps: bool,
}

/// One parsed entry: its timestamp and text (with its newline when complete).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: &'a [u8],
    pub text: &'a [u8],
    pub complete: bool,
}

/// Parses one stored line (without its trailing newline); lines that are
/// not CRI entries are returned whole, as text.
pub fn parse(line: &[u8]) -> Entry<'_> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts.next().unwrap_or_default();
    let stream = parts.next();
    let tag = parts.next();
    match (stream, tag, parts.next()) {
        (Some(b"stdout" | b"stderr"), Some(tag @ (b"F" | b"P")), text) => Entry {
            time,
            text: text.unwrap_or_default(),
            complete: tag == b"F",
        },
        _ => Entry {
            time: b"",
            text: line,
            complete: true,
        },
    }
}

/// Renders stored entries as `kubectl logs` shows them.
pub fn render(raw: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let entry = parse(line);
        if pending.is_empty() && opts.timestamps && !entry.time.is_empty() {
            pending.extend_from_slice(entry.time);
            pending.push(b' ');
        }
        pending.extend_from_slice(entry.text);
        if entry.complete {
            pending.push(b'\n');
            out.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        out.push(pending);
    }
    if let Some(n) = opts.tail_lines {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    let mut bytes: Vec<u8> = out.concat();
    if let Some(limit) = opts.limit_bytes {
        bytes.truncate(limit);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_tail_limit_and_timestamps() {
        let mut raw = Vec::new();
        raw.extend(format_entry("stdout", b"one", true));
        raw.extend(format_entry("stderr", b"tw", false));
        raw.extend(format_entry("stderr", b"o", true));
        raw.extend(format_entry("stdout", b"three", true));
        let all = render(&raw, &LogOptions::default());
        assert_eq!(all, b"one\ntwo\nthree\n");
        let tail = render(
            &raw,
            &LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(tail, b"two\nthree\n");
        let limited = render(
            &raw,
            &LogOptions {
                limit_bytes: Some(6),
                ..Default::default()
            },
        );
        assert_eq!(limited, b"one\ntw");
        let ts = render(
            &raw,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let first = String::from_utf8(ts).unwrap();
        let first = first.lines().next().unwrap().to_string();
        assert!(first.ends_with(" one") && first.contains('T'), "{first}");
        assert_eq!(
            render(b"plain text\n", &LogOptions::default()),
            b"plain text\n"
        );
    }
}
