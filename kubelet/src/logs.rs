//! Container log files in the CRI format the real kubelet reads:
//! one line per output line, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`
//! (`P` marks a partial line, continued by the next entry).
//!
//! ```text
//! 2026-11-24T04:00:00.123456789Z stdout F hello
//! 2026-11-24T04:00:00.2Z stderr F warning: …
//! ```
//!
//! Rotation follows the kubelet's container log manager
//! (`--container-log-max-size`, `--container-log-max-files`), but happens at
//! the writer ([`RotatingLog`], inside the shim), so no copy-truncate race
//! loses output: before a write would take the live file past the max size,
//! it is renamed to `<log>.<YYYYMMDD-HHMMSS.nnnnnnnnn>`, a fresh live file is
//! opened, and the oldest rotated files beyond `max_files - 1` are removed.
//! Rotated files stay uncompressed. `kubectl logs` reads the live file only,
//! as the kubelet does; `follow` moves on to the next file when it rotates.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How many bytes a log reader reads at a time.
pub const CHUNK: usize = 64 * 1024;

/// The most of a stored line's start needed to tell its tag (`F`/`P`).
const HEADER: usize = 128;

/// When a container's log rotates: before a write would take the live file
/// past `max_size` bytes; at most `max_files` files are kept, the live one
/// included (the kubelet requires `max_files >= 2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: usize,
}

/// A container's live log file, rotated per [`Rotation`] as it is written.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Option<Rotation>,
    /// The time in the last rotated file's name; names strictly increase.
    last_rotation: Option<Timestamp>,
}

impl RotatingLog {
    /// Opens (appends to) the live log at `path`; `None` never rotates.
    pub fn open(path: &Path, rotation: Option<Rotation>) -> std::io::Result<RotatingLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            last_rotation: None,
        })
    }

    /// Appends one whole entry, rotating first when it would not fit. An
    /// entry larger than the max size gets a file of its own.
    pub fn write_entry(&mut self, entry: &[u8]) -> std::io::Result<()> {
        if let Some(r) = self.rotation {
            if self.size > 0 && self.size + entry.len() as u64 > r.max_size {
                // A failed rotation keeps writing to the current file.
                let _ = self.rotate(r.max_files);
            }
        }
        self.file.write_all(entry)?;
        self.size += entry.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, max_files: usize) -> std::io::Result<()> {
        let now = Timestamp::now();
        let at = match self.last_rotation {
            Some(last) if now <= last => last
                .checked_add(SignedDuration::from_nanos(1))
                .unwrap_or(now),
            _ => now,
        };
        self.last_rotation = Some(at);
        let rotated = rotated_name(&self.path, at);
        std::fs::rename(&self.path, &rotated)?;
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(file) => {
                self.file = file;
                self.size = 0;
            }
            Err(e) => {
                let _ = std::fs::rename(&rotated, &self.path);
                return Err(e);
            }
        }
        let old = rotated_logs(&self.path);
        let excess = old.len().saturating_sub(max_files.saturating_sub(1));
        for p in &old[..excess] {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

/// `<log>.<YYYYMMDD-HHMMSS.nnnnnnnnn>` (UTC): the kubelet's rotated name,
/// with nanoseconds so that names sort by age even many rotations a second.
fn rotated_name(log: &Path, at: Timestamp) -> PathBuf {
    let stamp = format!(
        "{}.{:09}",
        at.strftime("%Y%m%d-%H%M%S"),
        at.subsec_nanosecond()
    );
    let mut name = log.as_os_str().to_owned();
    name.push(".");
    name.push(stamp);
    PathBuf::from(name)
}

/// The rotated files of the live log `log`, oldest first.
pub fn rotated_logs(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stamp = name.strip_prefix(&prefix)?;
            let ok = stamp.len() == 25
                && stamp
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| matches!((i, b), (8, b'-') | (15, b'.')) || b.is_ascii_digit());
            ok.then(|| (name.clone(), e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Whether two metadata describe the same file.
pub fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// The file a follower reads after `current` (whose metadata is `current`)
/// was rotated away from `live`: the next rotated file, or the live one.
/// When `current` is gone (pruned), the oldest rotated file left is next.
pub fn next_log(live: &Path, current: &std::fs::Metadata) -> PathBuf {
    let rotated = rotated_logs(live);
    let at = rotated
        .iter()
        .position(|p| std::fs::metadata(p).is_ok_and(|m| same_file(&m, current)));
    let next = match at {
        Some(i) => rotated.get(i + 1),
        None => rotated.first(),
    };
    next.cloned().unwrap_or_else(|| live.to_path_buf())
}

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

/// Where reading `file` must start to show its last `n` lines as they end
/// at offset `end`: found by reading backwards [`CHUNK`] bytes at a time
/// (plus a short read per line start that falls at a chunk's edge), so
/// memory stays bounded however many lines that is. A line's partial
/// entries count as one line, as [`render`] joins them.
pub fn tail_offset(file: &File, end: u64, n: usize) -> std::io::Result<u64> {
    tail_offset_by(file, end, n, CHUNK)
}

fn tail_offset_by(file: &File, end: u64, n: usize, chunk: usize) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(end);
    }
    let mut buf = vec![0u8; chunk.min(usize::try_from(end).unwrap_or(chunk))];
    let mut header = [0u8; HEADER];
    let mut count = 0;
    // The start of the last stored line seen, until the one before it tells
    // whether it starts a shown line (it does when that one is complete).
    let mut pending: Option<u64> = None;
    // The end of the stored line whose start is searched for.
    let mut line_end = end;
    let mut chunk_end = end;
    while chunk_end > 0 {
        let chunk_start = chunk_end.saturating_sub(buf.len() as u64);
        let len = (chunk_end - chunk_start) as usize;
        file.read_exact_at(&mut buf[..len], chunk_start)?;
        let mut i = len;
        loop {
            let newline = buf[..i].iter().rposition(|b| *b == b'\n');
            let start = match newline {
                Some(j) => chunk_start + j as u64 + 1,
                None if chunk_start == 0 => 0,
                None => break,
            };
            if start < line_end {
                let hlen = (line_end - start).min(HEADER as u64) as usize;
                let head: &[u8] = if start + hlen as u64 <= chunk_end {
                    let at = (start - chunk_start) as usize;
                    &buf[at..at + hlen]
                } else {
                    file.read_exact_at(&mut header[..hlen], start)?;
                    &header[..hlen]
                };
                if let Some(p) = pending {
                    if parse(head).complete {
                        count += 1;
                        if count == n {
                            return Ok(p);
                        }
                    }
                }
                pending = Some(start);
            }
            match newline {
                Some(j) => {
                    line_end = chunk_start + j as u64;
                    i = j;
                }
                None => return Ok(0),
            }
        }
        chunk_end = chunk_start;
    }
    Ok(0)
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
    }

    fn temp_file(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn tail_offset_matches_render_at_every_chunk_size() {
        let mut raw = Vec::new();
        raw.extend(entry("2026-11-24T05:00:00Z", "stdout", "F", "one"));
        raw.extend(entry(
            "2026-11-24T05:00:01Z",
            "stdout",
            "P",
            "a-long-partial-",
        ));
        raw.extend(entry("2026-11-24T05:00:02Z", "stderr", "P", "entry-that-"));
        raw.extend(entry("2026-11-24T05:00:03Z", "stdout", "F", "ends"));
        raw.extend(b"plain text line\n");
        raw.extend(entry("2026-11-24T05:00:04Z", "stdout", "F", ""));
        raw.extend(entry("2026-11-24T05:00:05Z", "stdout", "F", "last"));
        // Mid-write: an entry without its newline yet.
        raw.extend(b"2026-11-24T05:00:06Z stdout P cut");
        let (_dir, path) = temp_file(&raw);
        let file = File::open(&path).unwrap();
        let opts = LogOptions::default();
        for chunk in [1, 2, 7, 30, 64, 1000] {
            for n in 0..9 {
                let at = tail_offset_by(&file, raw.len() as u64, n, chunk).unwrap() as usize;
                let want = render(
                    &raw,
                    &LogOptions {
                        tail_lines: Some(n),
                        ..Default::default()
                    },
                );
                assert_eq!(
                    String::from_utf8_lossy(&render(&raw[at..], &opts)),
                    String::from_utf8_lossy(&want),
                    "chunk {chunk}, tail {n}"
                );
            }
        }
        assert_eq!(tail_offset(&file, 0, 3).unwrap(), 0);
    }

    #[test]
    fn rotating_log_keeps_at_most_max_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rotation = Rotation {
            max_size: 1024,
            max_files: 3,
        };
        let mut log = RotatingLog::open(&path, Some(rotation)).unwrap();
        let mut longest = 0;
        for i in 0..500 {
            let e = format_entry("stdout", format!("line {i}").as_bytes(), true);
            longest = longest.max(e.len() as u64);
            log.write_entry(&e).unwrap();
        }
        // A line bigger than the max size gets a file of its own.
        let big = format_entry("stderr", &[b'x'; 2000], true);
        log.write_entry(&big).unwrap();
        log.write_entry(&format_entry("stdout", b"after", true))
            .unwrap();
        let rotated = rotated_logs(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        for p in rotated.iter().chain([&path]) {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len <= 1024 || len == big.len() as u64, "{p:?}: {len}");
        }
        let live = render(&std::fs::read(&path).unwrap(), &LogOptions::default());
        assert_eq!(live, b"after\n");
        let newest = std::fs::read(&rotated[1]).unwrap();
        assert_eq!(newest, big);
        let older = render(&std::fs::read(&rotated[0]).unwrap(), &LogOptions::default());
        assert!(older.ends_with(b"line 499\n"), "{older:?}");
        assert!(longest < 1024);
        // Rotation off: one file grows.
        let other = dir.path().join("1.log");
        let mut log = RotatingLog::open(&other, None).unwrap();
        for _ in 0..100 {
            log.write_entry(&big).unwrap();
        }
        assert!(rotated_logs(&other).is_empty());
    }

    #[test]
    fn next_log_walks_rotated_files_in_order_then_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("3.log");
        let mut log = RotatingLog::open(
            &live,
            Some(Rotation {
                max_size: 10,
                max_files: 5,
            }),
        )
        .unwrap();
        log.write_entry(b"a\n").unwrap();
        let first = File::open(&live).unwrap().metadata().unwrap();
        for e in [b"b\n", b"c\n"] {
            log.write_entry(&[b'x'; 9]).unwrap();
            log.write_entry(e).unwrap();
        }
        // [a] [x…] [b] [x…] rotated, [c] live.
        let rotated = rotated_logs(&live);
        assert_eq!(rotated.len(), 4);
        // Unrelated names are not rotated files.
        std::fs::write(dir.path().join("3.log.tmp"), b"").unwrap();
        std::fs::write(dir.path().join("3.exit"), b"0").unwrap();
        assert_eq!(rotated_logs(&live), rotated);
        assert_eq!(next_log(&live, &first), rotated[1]);
        let second = std::fs::metadata(&rotated[3]).unwrap();
        assert_eq!(next_log(&live, &second), live);
        std::fs::remove_file(&rotated[0]).unwrap();
        assert_eq!(next_log(&live, &first), rotated[1], "pruned: oldest left");
    }
}
