//! What each chart shows, from the parsed files: compare-etcd's cells as
//! bar pairs, and the soak, the ladders and the timelines as panels of
//! lines.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure};

use super::input::{Record, Table};

const MIB: f64 = 1024.0 * 1024.0;

/// Throughput and tail latency of one system in one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellFigures {
    /// Successful requests per second.
    pub ops_per_s: f64,
    /// The 99th percentile request latency.
    pub p99_ms: f64,
}

/// One compare-etcd cell; `None` where that system's run failed or is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareCell {
    /// compare-etcd's cell name (`put-1000`).
    pub cell: String,
    pub etcd: Option<CellFigures>,
    pub ballast: Option<CellFigures>,
}

/// Groups compare-etcd's lines by cell, in order of first appearance. A
/// line of `"kind": "failed"` leaves its bar out.
pub fn compare_cells(records: &[Record]) -> anyhow::Result<Vec<CompareCell>> {
    let mut cells: Vec<CompareCell> = Vec::new();
    for r in records {
        let cell = r
            .string("cell")
            .ok_or_else(|| anyhow!("{}: no `cell` string", r.origin))?;
        let figures = if r.string("kind") == Some("failed") {
            None
        } else {
            Some(CellFigures {
                ops_per_s: r.require_number("ops_per_s")?,
                p99_ms: r.require_number("p99_ms")?,
            })
        };
        let i = match cells.iter().position(|c| c.cell == cell) {
            Some(i) => i,
            None => {
                cells.push(CompareCell {
                    cell: cell.to_string(),
                    etcd: None,
                    ballast: None,
                });
                cells.len() - 1
            }
        };
        let slot = match r.string("system") {
            Some("etcd") => &mut cells[i].etcd,
            Some("ballast") => &mut cells[i].ballast,
            _ => bail!("{}: `system` must be \"etcd\" or \"ballast\"", r.origin),
        };
        ensure!(
            slot.is_none(),
            "{}: a second result of {} for cell {cell}",
            r.origin,
            r.string("system").unwrap_or_default()
        );
        *slot = figures;
    }
    ensure!(!cells.is_empty(), "no results to chart");
    Ok(cells)
}

/// One line of a panel: `None` where a sample is missing (the line breaks).
#[derive(Debug, Clone)]
pub struct Line {
    /// The legend's name: the system, the series or the file.
    pub label: String,
    /// `(x, y)` in x order.
    pub points: Vec<(f64, Option<f64>)>,
}

/// One panel of lines over a shared x axis.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
    /// Logarithmic axes.
    pub x_log: bool,
    pub y_log: bool,
    /// x values marked by dashed vertical lines.
    pub marks: Vec<f64>,
}

/// The soak's columns as panels: x in minutes, `_bytes` columns in MiB,
/// columns whose names differ only in their numbers in one panel.
pub fn soak_panels(path: &Path, table: &Table) -> anyhow::Result<Vec<Panel>> {
    ensure!(!table.rows.is_empty(), "{}: no samples", path.display());
    let minutes: Vec<f64> = table
        .required_values(path, "t_s")?
        .into_iter()
        .map(|t| t / 60.0)
        .collect();
    let n = minutes.len();
    let marks = if n >= 3 {
        vec![minutes[n / 3], minutes[2 * n / 3]]
    } else {
        Vec::new()
    };
    let mut panels: Vec<(String, Panel)> = Vec::new();
    for (i, name) in table.columns.iter().enumerate() {
        if name == "t_s" || name == "unix_s" {
            continue;
        }
        let scale = if name.ends_with("_bytes") { MIB } else { 1.0 };
        let line = Line {
            label: name.clone(),
            points: minutes
                .iter()
                .zip(&table.rows)
                .map(|(t, row)| (*t, row[i].map(|v| v / scale)))
                .collect(),
        };
        let group = numbers_replaced(name);
        match panels.iter_mut().find(|(g, _)| *g == group) {
            Some((_, panel)) => panel.lines.push(line),
            None => {
                let title = if scale == MIB {
                    format!("{group} (MiB)")
                } else {
                    group.clone()
                };
                panels.push((
                    group,
                    Panel {
                        title,
                        lines: vec![line],
                        x_log: false,
                        y_log: false,
                        marks: marks.clone(),
                    },
                ));
            }
        }
    }
    ensure!(
        !panels.is_empty(),
        "{}: no series besides t_s and unix_s",
        path.display()
    );
    Ok(panels.into_iter().map(|(_, p)| p).collect())
}

/// `rss_member_1_bytes` → `rss_member_N_bytes`.
fn numbers_replaced(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_number = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// The ladder's figures as panels: one per numeric field besides `size`,
/// one line per `system` (default "Ballast"); lines with an `error` field
/// (a failed rung) are left out.
pub fn ladder_panels(records: &[Record]) -> anyhow::Result<Vec<Panel>> {
    let mut figures: Vec<String> = Vec::new();
    let mut rows: Vec<(String, f64, &Record)> = Vec::new();
    for r in records {
        if r.fields.contains_key("error") {
            continue;
        }
        let size = r.require_number("size")?;
        ensure!(size > 0.0, "{}: `size` must be positive", r.origin);
        let system = display_name(r.string("system").unwrap_or("ballast"));
        for (key, value) in &r.fields {
            if key != "size" && value.as_f64().is_some_and(f64::is_finite) && !figures.contains(key)
            {
                figures.push(key.clone());
            }
        }
        rows.push((system, size, r));
    }
    ensure!(!rows.is_empty(), "no results to chart");
    ensure!(!figures.is_empty(), "no numeric figures besides `size`");
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut systems: Vec<String> = Vec::new();
    for (system, _, _) in &rows {
        if !systems.contains(system) {
            systems.push(system.clone());
        }
    }
    let panels = figures
        .into_iter()
        .map(|figure| {
            let lines: Vec<Line> = systems
                .iter()
                .map(|system| Line {
                    label: system.clone(),
                    points: rows
                        .iter()
                        .filter(|(s, _, _)| s == system)
                        .map(|(_, size, r)| (*size, r.number(&figure)))
                        .collect(),
                })
                .filter(|l| l.points.iter().any(|(_, v)| v.is_some()))
                .collect();
            let values: Vec<f64> = lines
                .iter()
                .flat_map(|l| l.points.iter().filter_map(|(_, v)| *v))
                .collect();
            let (lo, hi) = min_max(values.iter().copied()).unwrap_or((0.0, 0.0));
            Panel {
                title: figure,
                lines,
                x_log: true,
                y_log: lo > 0.0 && hi / lo >= 20.0,
                marks: Vec::new(),
            }
        })
        .collect();
    Ok(panels)
}

/// The `--timeline` files as panels: per directory, ops/s and p99 ms.
pub fn timeline_panels(runs: &[(PathBuf, Table)]) -> anyhow::Result<Vec<Panel>> {
    let mut groups: Vec<(String, Vec<Line>, Vec<Line>)> = Vec::new();
    for (path, table) in runs {
        ensure!(!table.rows.is_empty(), "{}: no samples", path.display());
        let t = table.required_values(path, "t_s")?;
        let ops = table.require(path, "ops_per_s")?;
        let p99 = table.require(path, "p99_ms")?;
        let label = display_name(
            &path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let group = path
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let series = |column: usize| Line {
            label: label.clone(),
            points: t
                .iter()
                .zip(&table.rows)
                .map(|(t, row)| (*t, row[column]))
                .collect(),
        };
        let (ops_line, p99_line) = (series(ops), series(p99));
        match groups.iter_mut().find(|(g, _, _)| *g == group) {
            Some((_, o, p)) => {
                o.push(ops_line);
                p.push(p99_line);
            }
            None => groups.push((group, vec![ops_line], vec![p99_line])),
        }
    }
    let named = groups.len() > 1;
    let mut panels = Vec::with_capacity(groups.len() * 2);
    for (group, ops, p99) in groups {
        let prefix = if named {
            format!("{group}: ")
        } else {
            String::new()
        };
        for (what, lines) in [("ops/s", ops), ("p99 ms", p99)] {
            panels.push(Panel {
                title: format!("{prefix}{what}"),
                lines,
                x_log: false,
                y_log: false,
                marks: Vec::new(),
            });
        }
    }
    Ok(panels)
}

/// `ballast` → `Ballast`; other names as they are.
fn display_name(name: &str) -> String {
    if name == "ballast" {
        "Ballast".to_string()
    } else {
        name.to_string()
    }
}

pub(super) fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

#[cfg(test)]
mod tests {
    use super::super::input::{csv, json_lines};
    use super::*;

    fn path(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn compare_groups_systems_by_cell() {
        let text = r#"{"system": "etcd", "cell": "put-1", "ops_per_s": 100.0, "p99_ms": 3.0}
{"system": "ballast", "cell": "put-1", "ops_per_s": 150.0, "p99_ms": 1.0}
{"system": "etcd", "cell": "txn-100", "kind": "failed", "error": "no result"}
{"system": "ballast", "cell": "txn-100", "ops_per_s": 50, "p99_ms": 20}
"#;
        let cells = compare_cells(&json_lines(&path("c.jsonl"), text).unwrap()).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].cell, "put-1");
        assert_eq!(
            cells[0].ballast,
            Some(CellFigures {
                ops_per_s: 150.0,
                p99_ms: 1.0
            })
        );
        assert_eq!(cells[1].etcd, None);
        assert!(cells[1].ballast.is_some());

        let bad = |text: &str| {
            compare_cells(&json_lines(&path("c.jsonl"), text).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(r#"{"system": "etcd", "cell": "put-1", "p99_ms": 3.0}"#),
            "c.jsonl:1: no numeric `ops_per_s`"
        );
        assert_eq!(
            bad(r#"{"system": "zk", "cell": "put-1", "ops_per_s": 1, "p99_ms": 3.0}"#),
            "c.jsonl:1: `system` must be \"etcd\" or \"ballast\""
        );
        assert_eq!(bad(r#"{"system": "etcd"}"#), "c.jsonl:1: no `cell` string");
        assert_eq!(bad(""), "no results to chart");
        assert!(bad(&format!(
            "{}\n{}",
            r#"{"system": "etcd", "cell": "a", "ops_per_s": 1, "p99_ms": 1}"#,
            r#"{"system": "etcd", "cell": "a", "ops_per_s": 1, "p99_ms": 1}"#
        ))
        .starts_with("c.jsonl:2: a second result of etcd for cell a"));
    }

    #[test]
    fn soak_groups_numbered_series_and_scales_bytes() {
        let text = "t_s,unix_s,db_size_bytes,rss_member_1_bytes,rss_member_2_bytes,revision\n\
                    0,100,1048576,2097152,3145728,1\n60,160,2097152,,3145728,50\n120,220,2097152,2097152,3145728,90\n";
        let t = csv(&path("soak.csv"), text).unwrap();
        let panels = soak_panels(&path("soak.csv"), &t).unwrap();
        let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "db_size_bytes (MiB)",
                "rss_member_N_bytes (MiB)",
                "revision"
            ]
        );
        assert_eq!(panels[1].lines.len(), 2);
        assert_eq!(panels[0].lines[0].points[0], (0.0, Some(1.0)));
        assert_eq!(panels[1].lines[0].points[1], (1.0, None));
        assert_eq!(panels[0].marks, [1.0, 2.0]);
    }

    #[test]
    fn soak_needs_t_s_and_samples() {
        let t = csv(&path("s.csv"), "x,y\n1,2\n").unwrap();
        let e = soak_panels(&path("s.csv"), &t).unwrap_err();
        assert_eq!(e.to_string(), "s.csv: no `t_s` column (columns: x, y)");
        let t = csv(&path("s.csv"), "t_s,y\n").unwrap();
        let e = soak_panels(&path("s.csv"), &t).unwrap_err();
        assert_eq!(e.to_string(), "s.csv: no samples");
        let t = csv(&path("s.csv"), "t_s,y\n0,1\n,2\n").unwrap();
        let e = soak_panels(&path("s.csv"), &t).unwrap_err();
        assert_eq!(e.to_string(), "s.csv:3: empty `t_s`");
    }

    #[test]
    fn ladder_takes_every_numeric_figure_per_system() {
        let text = r#"{"system": "etcd", "size": 1000, "fill_ops_s": 10, "db_mb": 1}
{"system": "ballast", "size": 1000, "fill_ops_s": 20, "db_mb": 0.5, "note": "x"}
{"system": "etcd", "size": 100000, "fill_ops_s": 12, "db_mb": 100}
{"system": "ballast", "size": 100000, "error": "timed out"}
{"size": 10, "fill_ops_s": 3}
"#;
        let panels = ladder_panels(&json_lines(&path("l.jsonl"), text).unwrap()).unwrap();
        // In name order (JSON objects do not keep theirs).
        let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["db_mb", "fill_ops_s"]);
        assert!(panels[0].y_log, "db_mb spans 200×");
        assert!(!panels[1].y_log);
        let labels: Vec<&str> = panels[1].lines.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["Ballast", "etcd"]);
        // Sorted by size; the failed rung is left out.
        assert_eq!(
            panels[1].lines[0].points,
            [(10.0, Some(3.0)), (1000.0, Some(20.0))]
        );
        let e =
            ladder_panels(&json_lines(&path("l.jsonl"), r#"{"db_mb": 1}"#).unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "l.jsonl:1: no numeric `size`");
        let e = ladder_panels(&[]).unwrap_err();
        assert_eq!(e.to_string(), "no results to chart");
    }
}
