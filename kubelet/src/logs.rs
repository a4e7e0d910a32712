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
    /// Only lines whose first entry was written at or after this time
    /// (`sinceSeconds` / `sinceTime`); lines without a timestamp are kept.
    pub since: Option<Timestamp>,
}

/// Whether a line whose first entry has timestamp `time` passes `since`.
fn after(time: &[u8], since: Option<Timestamp>) -> bool {
    let Some(since) = since else { return true };
    match std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.parse::<Timestamp>().ok())
    {
        Some(t) => t >= since,
        None => true,
    }
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

/// Renders stored entries as `kubectl logs` shows them: partial entries are
/// joined, then `tail_lines`, `since` and `limit_bytes` apply in that order.
pub fn render(raw: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut open = false;
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let entry = parse(line);
        if !open {
            out.push((after(entry.time, opts.since), Vec::new()));
        }
        if let Some((_, text)) = out.last_mut() {
            append(&entry, opts.timestamps, !open, text);
        }
        open = !entry.complete;
    }
    if let Some(n) = opts.tail_lines {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    let mut bytes: Vec<u8> = out
        .into_iter()
        .filter(|(keep, _)| *keep)
        .flat_map(|(_, text)| text)
        .collect();
    if let Some(limit) = opts.limit_bytes {
        bytes.truncate(limit);
    }
    bytes
}

/// Renders entries as they arrive (for `follow`), remembering a line left
/// open by partial entries across calls.
#[derive(Debug, Default)]
pub struct Renderer {
    /// `Some(keep)` while a line is open: whether it passed `since`.
    open: Option<bool>,
}

impl Renderer {
    /// A renderer continuing after `raw` (already shown), so a line that
    /// `raw` left open by partial entries is continued, not restarted.
    pub fn resume(raw: &[u8], since: Option<Timestamp>) -> Self {
        let mut open = None;
        for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry = parse(line);
            open.get_or_insert_with(|| after(entry.time, since));
            if entry.complete {
                open = None;
            }
        }
        Self { open }
    }

    /// Renders the complete stored lines in `raw`.
    pub fn push(&mut self, raw: &[u8], timestamps: bool, since: Option<Timestamp>) -> Vec<u8> {
        let mut out = Vec::new();
        for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry = parse(line);
            let starting = self.open.is_none();
            if *self.open.get_or_insert_with(|| after(entry.time, since)) {
                append(&entry, timestamps, starting, &mut out);
            }
            if entry.complete {
                self.open = None;
            }
        }
        out
    }
}

/// Appends `entry` to a rendered line (`starting` it, with its timestamp
/// when asked), ending the line when the entry is complete.
fn append(entry: &Entry<'_>, timestamps: bool, starting: bool, out: &mut Vec<u8>) {
    if starting && timestamps && !entry.time.is_empty() {
        out.extend_from_slice(entry.time);
        out.push(b' ');
    }
    out.extend_from_slice(entry.text);
    if entry.complete {
        out.push(b'\n');
    }
}

/// Where, in `raw` (the end of a log file; mid-file unless `whole`),
/// rendering must start to show the last `n` lines; `None` when `raw` holds
/// fewer than `n` whole lines, so more of the file is needed.
pub fn tail_start(raw: &[u8], whole: bool, n: usize) -> Option<usize> {
    let mut starts = Vec::new();
    let mut pos = 0;
    // Mid-file: skip the first (possibly cut) line, then up to the end of the
    // next complete entry, so the first line kept starts a whole line.
    let mut synced = whole;
    let mut first = !whole;
    let mut line_open = false;
    for line in raw.split(|b| *b == b'\n') {
        let next = pos + line.len() + 1;
        if first {
            first = false;
        } else if !line.is_empty() {
            let complete = parse(line).complete;
            if synced {
                if !line_open {
                    starts.push(pos);
                }
                line_open = !complete;
            } else if complete {
                synced = true;
            }
        }
        pos = next;
    }
    if starts.len() >= n {
        Some(starts.get(starts.len() - n).copied().unwrap_or(raw.len()))
    } else if whole {
        Some(0)
    } else {
        None
    }
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

    fn entry(time: &str, stream: &str, tag: &str, text: &str) -> Vec<u8> {
        format!("{time} {stream} {tag} {text}\n").into_bytes()
    }

    #[test]
    fn since_filters_by_the_first_entry_of_each_line() {
        let mut raw = Vec::new();
        raw.extend(entry("2026-11-24T04:00:00Z", "stdout", "F", "old"));
        raw.extend(entry("2026-11-24T04:59:59.9Z", "stdout", "P", "sp"));
        raw.extend(entry("2026-11-24T05:00:01Z", "stdout", "F", "lit"));
        raw.extend(entry("2026-11-24T05:00:00Z", "stderr", "F", "new"));
        raw.extend(b"no timestamp\n");
        let since = |t: &str| LogOptions {
            since: Some(t.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            render(&raw, &since("2026-11-24T05:00:00Z")),
            b"new\nno timestamp\n"
        );
        assert_eq!(
            render(&raw, &since("2026-11-24T04:30:00Z")),
            b"split\nnew\nno timestamp\n"
        );
        // Tail applies before since, as in the kubelet.
        let opts = LogOptions {
            tail_lines: Some(3),
            ..since("2026-11-24T05:00:00Z")
        };
        assert_eq!(render(&raw, &opts), b"new\nno timestamp\n");
        let ts = LogOptions {
            timestamps: true,
            ..since("2026-11-24T04:30:00Z")
        };
        assert!(render(&raw, &ts).starts_with(b"2026-11-24T04:59:59.9Z split\n"));
    }

    #[test]
    fn renderer_keeps_partial_lines_open_across_chunks() {
        let mut r = Renderer::default();
        let a = entry("2026-11-24T05:00:00Z", "stdout", "P", "ab");
        let b = entry("2026-11-24T05:00:01Z", "stdout", "F", "cd");
        let c = entry("2026-11-24T05:00:02Z", "stdout", "F", "ef");
        assert_eq!(r.push(&a, true, None), b"2026-11-24T05:00:00Z ab");
        assert_eq!(r.push(&b, true, None), b"cd\n");
        assert_eq!(r.push(&c, true, None), b"2026-11-24T05:00:02Z ef\n");
        let mut r = Renderer::default();
        let since = Some("2026-11-24T05:00:01Z".parse().unwrap());
        assert_eq!(r.push(&a, false, since), b"");
        assert_eq!(r.push(&b, false, since), b"");
        assert_eq!(r.push(&c, false, since), b"ef\n");
        let mut r = Renderer::resume(&a, None);
        assert_eq!(r.push(&b, true, None), b"cd\n");
    }

    #[test]
    fn tail_start_finds_whole_lines_from_the_end() {
        let mut raw = Vec::new();
        raw.extend(entry("t1", "stdout", "F", "one"));
        raw.extend(entry("t2", "stdout", "P", "tw"));
        raw.extend(entry("t3", "stdout", "F", "o"));
        raw.extend(entry("t4", "stdout", "F", "three"));
        let opts = LogOptions::default();
        let at = |i: usize| render(&raw[i..], &opts);
        assert_eq!(at(tail_start(&raw, true, 2).unwrap()), b"two\nthree\n");
        assert_eq!(at(tail_start(&raw, true, 9).unwrap()), b"one\ntwo\nthree\n");
        assert_eq!(tail_start(&raw, true, 0), Some(raw.len()));
        // Mid-file, cut inside the first entry: "tw"/"o" may continue a cut
        // line, so only "three" is known to start a whole line.
        let cut = &raw[3..];
        let i = tail_start(cut, false, 1).unwrap();
        assert_eq!(render(&cut[i..], &opts), b"three\n");
        assert_eq!(tail_start(cut, false, 2), None);
    }
}
