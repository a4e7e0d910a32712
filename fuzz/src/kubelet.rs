//! The kubelet's HTTP API (`/containerLogs/{ns}/{pod}/{container}` and its
//! query parameters, `/healthz`), requests sent through its router in
//! process against a pod sandbox with real log files.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ballast_kubelet::server_fuzz_api::{router, LogIndex};
use k8s_openapi::jiff::Timestamp;
use tower::ServiceExt as _;

/// Largest response body read; the test pod's logs are far smaller.
const MAX_BODY: usize = 1 << 20;

/// The stored log lines of the test pod's containers: `(container,
/// attempt, CRI lines)`. Every attempt has exited.
const LOGS: &[(&str, u32, &[&str])] = &[
    (
        "app",
        0,
        &[
            "2026-01-01T00:00:01.000000000Z stdout F app-0-one",
            "2026-01-01T00:00:02.000000000Z stderr F app-0-two",
        ],
    ),
    (
        "app",
        1,
        &[
            "2026-01-01T00:00:03.000000000Z stdout F app-1-one",
            "2026-01-01T00:00:04.000000000Z stdout P app-1-part",
            "2026-01-01T00:00:05.000000000Z stdout F ial",
            "not a CRI line",
            "2026-01-01T00:00:06.000000000Z stderr F app-1-three",
            "2026-01-01T00:00:07.000000000Z stdout F ",
            "2026-01-01T00:00:08.000000000Z stdout F app-1-last",
        ],
    ),
    (
        "side",
        0,
        &["2026-01-01T00:00:09.000000000Z stdout F side-0-only"],
    ),
];

struct Kubelet {
    runtime: tokio::runtime::Runtime,
    index: Arc<LogIndex>,
    _dir: tempfile::TempDir,
}

fn kubelet() -> &'static Kubelet {
    static K: OnceLock<Kubelet> = OnceLock::new();
    K.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let pod: PathBuf = dir.path().join("pod");
        for (container, attempt, lines) in LOGS {
            let cdir = pod.join("containers").join(container);
            std::fs::create_dir_all(&cdir).expect("container dir");
            let mut raw = lines.join("\n");
            raw.push('\n');
            std::fs::write(cdir.join(format!("{attempt}.log")), raw).expect("log");
            std::fs::write(cdir.join(format!("{attempt}.exit")), "0").expect("exit file");
        }
        let index = Arc::new(LogIndex::default());
        index.insert(
            "default",
            "web",
            vec!["app".into(), "side".into()],
            Some(pod),
        );
        index.insert("default", "sim", vec!["c".into()], None);
        Kubelet {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            index,
            _dir: dir,
        }
    })
}

/// The bytes as a request target: bytes a URI cannot hold are
/// percent-encoded, so every input reaches the router.
fn target(data: &[u8]) -> String {
    let mut t = String::from("/");
    for &b in data.strip_prefix(b"/").unwrap_or(data) {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            t.push(char::from(b));
        } else {
            t.push_str(&format!("%{b:02X}"));
        }
    }
    t
}

/// The input is a request target (path and query). Invariants: never
/// panics and never answers 5xx; only `/healthz` and the logs of known
/// pods and containers are served (200), a bad parameter is a 400, an
/// unknown pod a 404; a body holds only lines of the container's logs;
/// and for a plain query the body is exactly the logs rendered as
/// `kubectl logs` asked (`tailLines`, `limitBytes`, `timestamps`,
/// `sinceTime`, `previous`), as the reference [`render`] here does.
pub fn kubelet_api(data: &[u8]) {
    let k = kubelet();
    let uri = target(data);
    let Ok(req) = Request::get(uri.as_str()).body(Body::empty()) else {
        // Not a URI even so (e.g. a bad percent escape of the input's own).
        return;
    };
    let (status, body) = k.runtime.block_on(async {
        let resp = router(k.index.clone())
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), MAX_BODY)
            .await
            .unwrap_or_else(|e| panic!("{uri}: reading the body: {e}"));
        (status, body)
    });
    assert!(
        [
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND
        ]
        .contains(&status),
        "{uri}: answered {status}: {:?}",
        String::from_utf8_lossy(&body)
    );
    let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
    if status != StatusCode::OK || body.is_empty() || path == "/healthz" {
        check_plain(&uri, path, query, status, &body);
        return;
    }
    // A non-empty 200: lines of the test pod's logs only.
    let known: Vec<Vec<u8>> = LOGS
        .iter()
        .flat_map(|(_, _, lines)| {
            let raw = format!("{}\n", lines.join("\n"));
            let plain = render(raw.as_bytes(), &Opts::default());
            let stamped = render(
                raw.as_bytes(),
                &Opts {
                    timestamps: true,
                    ..Opts::default()
                },
            );
            [plain, stamped]
        })
        .collect();
    let shown = String::from_utf8_lossy(&body);
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(
            known.iter().any(|k| k
                .split_inclusive(|&b| b == b'\n')
                .any(|l| l.starts_with(line))),
            "{uri}: served a line not in the logs: {:?} (body {shown:?})",
            String::from_utf8_lossy(line)
        );
    }
    check_plain(&uri, path, query, status, &body);
}

/// For a request [`plain_request`] can judge: the same status and text.
fn check_plain(uri: &str, path: &str, query: &str, status: StatusCode, body: &[u8]) {
    let Some((want_status, want_text)) = plain_request(path, query) else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, want_status, "{uri}: {text:?}");
    if let Some(want) = want_text {
        assert_eq!(text, want, "{uri}");
    }
}

/// The options of a log request.
#[derive(Debug, Default)]
struct Opts {
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    timestamps: bool,
    since: Option<Timestamp>,
}

/// The answer to a request simple enough to judge here: a known path and a
/// query of distinct known keys with plain values (letters, digits, `-`,
/// `:`, `.`), no `sinceSeconds` (it depends on the clock). `None`
/// otherwise. The texts of 400s are checked for the parameter errors.
fn plain_request(path: &str, query: &str) -> Option<(StatusCode, Option<String>)> {
    if path == "/healthz" {
        return Some((StatusCode::OK, Some("ok".into())));
    }
    let parts: Vec<&str> = path.strip_prefix("/containerLogs/")?.split('/').collect();
    let [ns, pod, container] = parts[..] else {
        return None;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-:.".contains(&b))
    };
    if ![ns, pod, container].into_iter().all(plain) {
        return None;
    }
    let mut q: Vec<(&str, &str)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=')?;
        let known = [
            "previous",
            "tailLines",
            "limitBytes",
            "follow",
            "timestamps",
            "sinceTime",
        ];
        if !known.contains(&key) || !plain(value) || q.iter().any(|(k, _)| *k == key) {
            return None;
        }
        q.push((key, value));
    }
    let get = |key: &str| q.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let bad = |m: String| Some((StatusCode::BAD_REQUEST, Some(m)));
    let not_found = |m: String| Some((StatusCode::NOT_FOUND, Some(m)));
    let int = |key: &str| -> Result<Option<i64>, ()> {
        match get(key) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| ()),
        }
    };
    let (Ok(tail), Ok(limit)) = (int("tailLines"), int("limitBytes")) else {
        // axum's "Failed to deserialize query string" (its own text).
        return Some((StatusCode::BAD_REQUEST, None));
    };
    let truthy = |key: &str| matches!(get(key), Some("true" | "1"));
    let containers: &[&str] = match (ns, pod) {
        ("default", "web") => &["app", "side"],
        ("default", "sim") => &["c"],
        _ => return not_found(format!("pod {ns}/{pod} not found on this node")),
    };
    if !containers.contains(&container) {
        return bad(format!("container {container} is not valid for pod {pod}"));
    }
    let since = match get("sinceTime") {
        None => None,
        Some(t) => match t.parse::<Timestamp>() {
            Ok(t) => Some(t),
            // jiff's message is its own; the status is what matters.
            Err(_) => return Some((StatusCode::BAD_REQUEST, None)),
        },
    };
    if pod == "sim" {
        return Some((StatusCode::OK, Some(String::new())));
    }
    let attempts: Vec<u32> = LOGS
        .iter()
        .filter(|(c, _, _)| *c == container)
        .map(|(_, a, _)| *a)
        .collect();
    let current = *attempts.iter().max()?;
    let previous = truthy("previous");
    let attempt = if previous {
        match attempts.iter().filter(|a| **a < current).max() {
            Some(a) => *a,
            None => {
                return bad(format!(
                    "previous terminated container {container:?} in pod {pod:?} not found"
                ))
            }
        }
    } else {
        current
    };
    let (_, _, lines) = LOGS
        .iter()
        .find(|(c, a, _)| *c == container && *a == attempt)?;
    let raw = format!("{}\n", lines.join("\n"));
    let opts = Opts {
        tail_lines: tail.and_then(|n| usize::try_from(n).ok()),
        limit_bytes: limit
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0),
        timestamps: truthy("timestamps"),
        since,
    };
    let out = render(raw.as_bytes(), &opts);
    Some((
        StatusCode::OK,
        Some(String::from_utf8_lossy(&out).into_owned()),
    ))
}

/// The reference rendering of stored CRI lines as `kubectl logs` shows
/// them, whole file at once: partial entries joined into one line, then
/// the last `tail_lines` lines, those from `since` on (by their first
/// entry's time; lines without one always), cut to `limit_bytes`.
fn render(raw: &[u8], opts: &Opts) -> Vec<u8> {
    // (keep, text) per shown line.
    let mut lines: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut open = false;
    for stored in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<&[u8]> = stored.splitn(4, |&b| b == b' ').collect();
        let (time, text, complete): (&[u8], &[u8], bool) = match fields[..] {
            [t, b"stdout" | b"stderr", tag @ (b"F" | b"P"), ref rest @ ..] => {
                (t, rest.first().copied().unwrap_or_default(), tag == b"F")
            }
            _ => (b"", stored, true),
        };
        if !open {
            let keep = match (opts.since, std::str::from_utf8(time).ok()) {
                (Some(since), Some(t)) => t.parse::<Timestamp>().map_or(true, |t| t >= since),
                _ => true,
            };
            let mut start = Vec::new();
            if opts.timestamps && !time.is_empty() {
                start.extend_from_slice(time);
                start.push(b' ');
            }
            lines.push((keep, start));
        }
        let line = &mut lines.last_mut().expect("a line").1;
        line.extend_from_slice(text);
        if complete {
            line.push(b'\n');
        }
        open = !complete;
    }
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out: Vec<u8> = lines
        .into_iter()
        .filter(|(keep, _)| *keep)
        .flat_map(|(_, l)| l)
        .collect();
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    out
}
