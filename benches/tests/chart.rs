//! `ballast bench chart` as a user runs it: each kind drawn from small
//! fixture files, bad input answered with a clear error naming the file and
//! line, and a real run's `--timeline` (put and watch against a Ballast
//! cluster) drawn.
//!
//! Needs `target/release/ballast` (`cargo build --release -p ballast`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ballast_tests::{workspace_bin, Cluster, ClusterKind};
use serde_json::Value;

fn ballast(args: &[&str]) -> Output {
    let bin = workspace_bin("ballast");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p ballast` first",
        bin.display()
    );
    Command::new(&bin)
        .arg("bench")
        .args(args)
        .output()
        .expect("run ballast bench")
}

/// A fresh directory of its own under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-chart-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
    std::fs::write(&path, text).expect("fixture");
    path.display().to_string()
}

/// Runs `ballast bench chart …`, expects success and returns the SVG.
fn chart(args: &[&str], out: &Path) -> String {
    let mut all = vec!["chart"];
    all.extend_from_slice(args);
    let out_arg = out.display().to_string();
    all.extend_from_slice(&["--out", &out_arg]);
    let run = ballast(&all);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{args:?}: {stdout}\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(v["kind"], "chart", "{v}");
    assert_eq!(v["out"], out_arg.as_str(), "{v}");
    let svg = std::fs::read_to_string(out).expect("the SVG was written");
    assert_well_formed(&svg);
    svg
}

/// One `<svg>` root, every element closed, no stray markup in text.
fn assert_well_formed(svg: &str) {
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    for tag in ["text", "svg"] {
        assert_eq!(
            svg.matches(&format!("<{tag}")).count(),
            svg.matches(&format!("</{tag}>")).count(),
            "<{tag}> closed"
        );
    }
    for piece in svg.split('<').skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
            .collect();
        assert!(
            ["svg", "/svg", "rect", "line", "polyline", "circle", "text", "/text"]
                .contains(&name.as_str()),
            "unexpected element <{name}"
        );
    }
}

/// The text of every `<text>` element, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim().to_string()))
        .collect()
}

fn assert_texts(svg: &str, wanted: &[&str]) {
    let all = texts(svg);
    for w in wanted {
        assert!(all.iter().any(|t| t == w), "{w:?} not in {all:?}");
    }
}

#[test]
fn every_kind_draws_from_its_files() {
    let dir = scratch("kinds");
    let compare = write(
        &dir,
        "compare.jsonl",
        r#"{"system": "etcd", "cell": "put-100", "kind": "put", "ops_per_s": 9669.6, "p99_ms": 28.559}
{"system": "ballast", "cell": "put-100", "kind": "put", "ops_per_s": 20630.4, "p99_ms": 12.751}
{"system": "etcd", "cell": "range-s-100", "kind": "failed", "error": "no result"}
{"system": "ballast", "cell": "range-s-100", "kind": "range", "ops_per_s": 75675.6, "p99_ms": 2.711}
"#,
    );
    let svg = chart(
        &["compare", &compare, "--title", "fixture <cells>"],
        &dir.join("charts/compare.svg"),
    );
    assert_texts(
        &svg,
        &[
            "fixture &lt;cells&gt;",
            "put-100",
            "range-s-100",
            "9.67k",
            "20.6k (2.13×)",
            "etcd: no result",
            "etcd",
            "Ballast",
        ],
    );
    // Bars: three figures in each of two panels, plus a legend swatch per
    // system and panel.
    let bars = |fill: &str| svg.matches(&format!(r#"fill="{fill}""#)).count();
    assert_eq!(bars("#E67E22"), 2 + 2);
    assert_eq!(bars("#1F5FA8"), 2 * 2 + 2);

    let soak = write(
        &dir,
        "soak.csv",
        "t_s,unix_s,db_size_bytes,rss_member_1_bytes,rss_member_2_bytes,cache_objects\n\
         0.0,1800000000,2097152,52428800,52428800,125\n\
         60.0,1800000060,4194304,,62914560,9000\n\
         120.0,1800000120,4194304,73400320,62914560,9100\n",
    );
    let svg = chart(&["soak", &soak], &dir.join("soak.svg"));
    assert_texts(
        &svg,
        &[
            "ballast bench soak",
            "db_size_bytes (MiB)",
            "rss_member_N_bytes (MiB)",
            "rss_member_1_bytes",
            "rss_member_2_bytes",
            "cache_objects",
            "minutes",
        ],
    );

    let ladder = write(
        &dir,
        "ladder.jsonl",
        r#"{"system": "etcd", "size": 10000, "fill_ops_s": 3658, "db_mb": 27.6}
{"system": "ballast", "size": 10000, "fill_ops_s": 13119, "db_mb": 8.2}
{"system": "etcd", "size": 1000000, "fill_ops_s": 6926, "db_mb": 2756.9}
{"system": "ballast", "size": 1000000, "fill_ops_s": 13771, "db_mb": 120.7}
"#,
    );
    let svg = chart(&["ladder", &ladder], &dir.join("ladder.svg"));
    assert_texts(
        &svg,
        &["db_mb (log)", "fill_ops_s", "etcd", "Ballast", "10k", "1M"],
    );

    let header = "t_s,ops_per_s,p50_ms,p99_ms,max_ms,errors\n";
    let runs: Vec<String> = [
        ("put-1", "etcd"),
        ("put-1", "ballast"),
        ("txn-100", "ballast"),
    ]
    .iter()
    .map(|(cell, system)| {
        write(
            &dir,
            &format!("timeline/{cell}/{system}.csv"),
            &format!("{header}1.0,1200,0.7,3.2,9,0\n2.0,1300,0.6,2.9,8,0\n2.5,1250,0.7,,8,0\n"),
        )
    })
    .collect();
    let mut args = vec!["timeline"];
    args.extend(runs.iter().map(String::as_str));
    let svg = chart(&args, &dir.join("timeline.svg"));
    assert_texts(
        &svg,
        &[
            "put-1: ops/s",
            "put-1: p99 ms",
            "txn-100: ops/s",
            "txn-100: p99 ms",
            "etcd",
            "Ballast",
            "seconds",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused_naming_file_and_line() {
    let dir = scratch("bad");
    let out = dir.join("out.svg").display().to_string();
    let missing = dir.join("missing.csv").display().to_string();
    let empty_soak = write(&dir, "empty.csv", "t_s,unix_s,db_size_bytes\n");
    let empty_file = write(&dir, "nothing.jsonl", "");
    let broken = write(
        &dir,
        "broken.jsonl",
        "{\"system\": \"etcd\", \"cell\": \"a\", \"ops_per_s\": 1, \"p99_ms\": 1}\n{\"system\": \n",
    );
    let no_figure = write(
        &dir,
        "nofigure.jsonl",
        "{\"system\": \"etcd\", \"cell\": \"a\", \"p99_ms\": 1}\n",
    );
    let bad_number = write(&dir, "bad.csv", "t_s,x\n0,1\n60,lots\n");
    let cases: &[(&[&str], String)] = &[
        (&["soak", &missing], format!("reading {missing}")),
        (&["soak", &empty_soak], format!("{empty_soak}: no samples")),
        (&["compare", &empty_file], "no results to chart".into()),
        (&["compare", &broken], format!("{broken}:2: not JSON")),
        (
            &["compare", &no_figure],
            format!("{no_figure}:1: no numeric `ops_per_s`"),
        ),
        (
            &["soak", &bad_number],
            format!("{bad_number}:3: column `x`: \"lots\" is not a number"),
        ),
        (
            &["timeline", &bad_number],
            format!("{bad_number}:3: column `x`"),
        ),
        (
            &["ladder", &no_figure],
            format!("{no_figure}:1: no numeric `size`"),
        ),
        (&["pie", &empty_soak], "invalid value 'pie'".into()),
        (&["soak"], "required".into()),
    ];
    for (args, needle) in cases {
        let mut all = vec!["chart"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", &out]);
        let run = ballast(&all);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle.as_str()), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!Path::new(&out).exists(), "{args:?} wrote a chart");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads a `--timeline` file: the header and its numeric rows.
fn timeline_rows(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).expect("the timeline was written");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("t_s,ops_per_s,p50_ms,p99_ms,max_ms,errors")
    );
    lines
        .map(|l| l.split(',').map(|f| f.parse().expect("a number")).collect())
        .collect()
}

#[test]
fn a_runs_timeline_is_recorded_and_drawn() {
    let cluster = Cluster::shared(ClusterKind::Ballast);
    let endpoints = cluster.endpoints().join(",");
    let dir = scratch("timeline");
    let put = dir.join("put-4/ballast.csv");
    let watch = dir.join("watch-10/ballast.csv");
    std::fs::create_dir_all(put.parent().unwrap()).unwrap();
    std::fs::create_dir_all(watch.parent().unwrap()).unwrap();
    let (put_arg, watch_arg) = (put.display().to_string(), watch.display().to_string());
    for args in [
        vec![
            "put",
            "--clients=4",
            "--conns=2",
            "--duration=2500ms",
            "--prefix=timeline-put/",
            "--timeline",
            &put_arg,
        ],
        vec![
            "watch",
            "--watchers=10",
            "--watch-streams=2",
            "--rate=200",
            "--clients=2",
            "--conns=2",
            "--duration=2s",
            "--prefix=timeline-watch/",
            "--timeline",
            &watch_arg,
        ],
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["--endpoints", &endpoints, "--quiet"]);
        let run = ballast(&all);
        assert!(
            run.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    for (path, min_samples) in [(&put, 3), (&watch, 2)] {
        let rows = timeline_rows(path);
        assert!(rows.len() >= min_samples, "{}: {rows:?}", path.display());
        assert!(
            rows.windows(2).all(|w| w[0][0] < w[1][0]),
            "t_s rises: {rows:?}"
        );
        assert!(rows[0][1] > 0.0, "requests in the first second: {rows:?}");
        assert!(rows.iter().all(|r| r[5] == 0.0), "no errors: {rows:?}");
        assert!(
            rows.iter()
                .all(|r| r[1] == 0.0 || r[2] <= r[3] && r[3] <= r[4]),
            "p50 ≤ p99 ≤ max: {rows:?}"
        );
    }
    let svg = chart(
        &["timeline", &put_arg, &watch_arg],
        &dir.join("timeline.svg"),
    );
    assert_texts(
        &svg,
        &[
            "put-4: ops/s",
            "put-4: p99 ms",
            "watch-10: ops/s",
            "watch-10: p99 ms",
        ],
    );

    // A timeline that cannot be written stops the run before it starts.
    let bad = dir.join("no/such/dir/run.csv").display().to_string();
    let run = ballast(&[
        "put",
        "--endpoints",
        &endpoints,
        "--timeline",
        &bad,
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains(&format!("--timeline {bad}")), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
