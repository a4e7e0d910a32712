//! `ballast bench chart`: SVG charts of the results the benchmarks already
//! write, drawn with plotters' SVG backend (text is left to the viewer's
//! fonts, so no font files are needed).
//!
//! | kind | reads | draws |
//! | --- | --- | --- |
//! | `compare` | `benches/compare-etcd`'s JSON lines (`system`, `cell`, `ops_per_s`, `p99_ms`) | etcd and Ballast side by side per cell: ops/s, and p99 latency on a log scale |
//! | `soak` | `ballast bench soak`'s `soak.csv` (`t_s`, then one column per series) | one panel per series over time; series whose names differ only in a number (the members' RSS) share a panel; dashed lines at the thirds the verdict compares |
//! | `ladder` | JSON lines, one per size and system (`size`, optional `system`, numeric figures) | one panel per figure against size (log x; log y where a figure spans 20× or more) |
//! | `timeline` | `--timeline` CSVs of `ballast bench put/range/txn/watch` (`t_s`, `ops_per_s`, `p99_ms`) | throughput and p99 second by second; files in one directory share a row, one line per file, named by its file name |
//!
//! Input errors name the file and the line; nothing here panics on input.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Map, Value};

/// The charts `ballast bench chart` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// Ballast against etcd per cell (`benches/compare-etcd`).
    Compare,
    /// The soak's series over time.
    Soak,
    /// Figures against store size (`benches/size-ladder`, `benches/apiserver-ladder`).
    Ladder,
    /// One run's throughput and p99 per second (`--timeline`).
    Timeline,
}

impl std::str::FromStr for ChartKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<ChartKind> {
        Ok(match s {
            "compare" => ChartKind::Compare,
            "soak" => ChartKind::Soak,
            "ladder" => ChartKind::Ladder,
            "timeline" => ChartKind::Timeline,
            _ => bail!("unknown chart kind {s:?} (compare, soak, ladder or timeline)"),
        })
    }
}

const ETCD_COLOR: RGBColor = RGBColor(230, 126, 34);
const BALLAST_COLOR: RGBColor = RGBColor(31, 95, 168);
/// Colours of series other than etcd and Ballast, in order of appearance.
const PALETTE: [RGBColor; 8] = [
    RGBColor(39, 174, 96),
    RGBColor(142, 68, 173),
    RGBColor(192, 57, 43),
    RGBColor(22, 160, 133),
    RGBColor(121, 85, 72),
    RGBColor(127, 140, 141),
    RGBColor(241, 196, 15),
    RGBColor(52, 73, 94),
];
const FONT: &str = "sans-serif";
const WIDTH: u32 = 1100;
const MIB: f64 = 1024.0 * 1024.0;

/// Reads `inputs`, draws the `kind` chart and writes it to `out` (creating
/// its directory); `title` replaces the kind's default title.
pub fn write(
    kind: ChartKind,
    inputs: &[PathBuf],
    out: &Path,
    title: Option<&str>,
) -> anyhow::Result<()> {
    let svg = draw_files(kind, inputs, title)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, svg).with_context(|| format!("writing {}", out.display()))
}

/// Reads `inputs` and draws the `kind` chart as an SVG document.
pub fn draw_files(
    kind: ChartKind,
    inputs: &[PathBuf],
    title: Option<&str>,
) -> anyhow::Result<String> {
    ensure!(!inputs.is_empty(), "no input file");
    let mut texts = Vec::with_capacity(inputs.len());
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        texts.push((path.as_path(), text));
    }
    let records = || -> anyhow::Result<Vec<Record>> {
        let mut all = Vec::new();
        for (path, text) in &texts {
            all.extend(json_lines(path, text)?);
        }
        Ok(all)
    };
    match kind {
        ChartKind::Compare => {
            let cells = compare_cells(&records()?)?;
            compare_svg(title.unwrap_or("Ballast vs etcd per cell"), &cells)
        }
        ChartKind::Soak => {
            ensure!(texts.len() == 1, "a soak chart reads one soak.csv");
            let (path, text) = &texts[0];
            let panels = soak_panels(path, &csv(path, text)?)?;
            grid_svg(title.unwrap_or("ballast bench soak"), &panels, 2, "minutes")
        }
        ChartKind::Ladder => {
            let panels = ladder_panels(&records()?)?;
            grid_svg(title.unwrap_or("size ladder"), &panels, 3, "size")
        }
        ChartKind::Timeline => {
            let mut runs = Vec::with_capacity(texts.len());
            for (path, text) in &texts {
                runs.push((path.to_path_buf(), csv(path, text)?));
            }
            let panels = timeline_panels(&runs)?;
            grid_svg(
                title.unwrap_or("throughput and p99 per second"),
                &panels,
                2,
                "seconds",
            )
        }
    }
}

/// One JSON object of a JSON-lines file, with where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    /// `file:line`, for messages.
    pub origin: String,
    pub fields: Map<String, Value>,
}

impl Record {
    fn number(&self, key: &str) -> Option<f64> {
        self.fields
            .get(key)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
    }

    fn require_number(&self, key: &str) -> anyhow::Result<f64> {
        self.number(key)
            .ok_or_else(|| anyhow!("{}: no numeric `{key}`", self.origin))
    }

    fn string(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// Parses JSON lines: one object per non-blank line.
pub fn json_lines(path: &Path, text: &str) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), i + 1);
        let fields = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => bail!("{origin}: not a JSON object"),
            Err(e) => bail!("{origin}: not JSON: {e}"),
        };
        out.push(Record { origin, fields });
    }
    Ok(out)
}

/// A CSV table of numbers: a header line, then rows of as many fields; an
/// empty field is a missing value.
#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<f64>>>,
    /// The file line of each row, for messages.
    pub lines: Vec<usize>,
}

impl Table {
    fn require(&self, path: &Path, name: &str) -> anyhow::Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            anyhow!(
                "{}: no `{name}` column (columns: {})",
                path.display(),
                self.columns.join(", ")
            )
        })
    }

    /// The column's values, each row's required to be present.
    fn required_values(&self, path: &Path, name: &str) -> anyhow::Result<Vec<f64>> {
        let i = self.require(path, name)?;
        self.rows
            .iter()
            .zip(&self.lines)
            .map(|(row, line)| {
                row[i].ok_or_else(|| anyhow!("{}:{line}: empty `{name}`", path.display()))
            })
            .collect()
    }
}

/// Parses a CSV file of numbers (no quoting: the benches write none).
pub fn csv(path: &Path, text: &str) -> anyhow::Result<Table> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| anyhow!("{}: empty (no header line)", path.display()))?;
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let mut table = Table {
        columns,
        rows: Vec::new(),
        lines: Vec::new(),
    };
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        ensure!(
            fields.len() == table.columns.len(),
            "{}:{}: {} fields, the header has {}",
            path.display(),
            i + 1,
            fields.len(),
            table.columns.len()
        );
        let mut row = Vec::with_capacity(fields.len());
        for (field, column) in fields.iter().zip(&table.columns) {
            if field.is_empty() {
                row.push(None);
                continue;
            }
            match field.parse::<f64>() {
                Ok(v) if v.is_finite() => row.push(Some(v)),
                _ => bail!(
                    "{}:{}: column `{column}`: {field:?} is not a number",
                    path.display(),
                    i + 1
                ),
            }
        }
        table.rows.push(row);
        table.lines.push(i + 1);
    }
    Ok(table)
}

/// Throughput and tail latency of one system in one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellFigures {
    pub ops_per_s: f64,
    pub p99_ms: f64,
}

/// One compare-etcd cell; `None` where that system's run failed or is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareCell {
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
    pub label: String,
    pub points: Vec<(f64, Option<f64>)>,
}

/// One panel of lines over a shared x axis.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
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

/// The colour of a series: etcd and Ballast always the same.
fn color_of(label: &str, others: &mut Vec<String>) -> RGBColor {
    match label {
        "etcd" => ETCD_COLOR,
        "Ballast" => BALLAST_COLOR,
        _ => {
            let i = others.iter().position(|o| o == label).unwrap_or_else(|| {
                others.push(label.to_string());
                others.len() - 1
            });
            PALETTE[i % PALETTE.len()]
        }
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A number for an axis: `1.5k`, `20M`, `0.25`.
fn short(v: f64) -> String {
    let a = v.abs();
    let (scaled, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if scaled.abs() >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else if scaled.abs() >= 0.01 || scaled == 0.0 {
        format!("{scaled:.2}")
    } else {
        format!("{scaled:.1e}")
    };
    let text = if text.contains('.') && !text.contains('e') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{unit}")
}

/// A drawing error as an anyhow error.
fn drawing<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// Draws into an SVG document of `height` pixels.
fn svg_document(
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        draw(&root)?;
        root.present().map_err(drawing)?;
    }
    Ok(out)
}

/// The compare chart: two panels of horizontal bars, a pair per cell.
fn compare_svg(title: &str, cells: &[CompareCell]) -> anyhow::Result<String> {
    let height = 130 + 48 * (cells.len() as u32 + 1);
    svg_document(height, |root| {
        let area = root.titled(title, (FONT, 28)).map_err(drawing)?;
        let (left, right) = area.split_horizontally(WIDTH / 2);
        let ops: Vec<[Option<f64>; 2]> = cells
            .iter()
            .map(|c| [c.etcd.map(|f| f.ops_per_s), c.ballast.map(|f| f.ops_per_s)])
            .collect();
        let p99: Vec<[Option<f64>; 2]> = cells
            .iter()
            .map(|c| [c.etcd.map(|f| f.p99_ms), c.ballast.map(|f| f.p99_ms)])
            .collect();
        let names: Vec<&str> = cells.iter().map(|c| c.cell.as_str()).collect();
        let hi = min_max(ops.iter().flatten().flatten().copied())
            .map_or(1.0, |(_, hi)| hi)
            .max(1e-9);
        bars(
            &left,
            "ops/s (more is better)",
            &names,
            &ops,
            RangedCoordf64::from(0.0..hi * 1.4),
            0.0,
        )?;
        let (lo, hi) = min_max(p99.iter().flatten().flatten().copied().filter(|v| *v > 0.0))
            .unwrap_or((1.0, 10.0));
        let (lo, hi) = (lo / 2.0, (hi * 12.0).max(lo * 10.0));
        bars(
            &right,
            "p99 latency ms, log scale (less is better)",
            &names,
            &p99,
            LogCoord::from((lo..hi).log_scale()),
            lo,
        )
    })
}

/// Horizontal bars, etcd above Ballast in each cell's band, the value
/// printed at each bar's end; `base` is where bars start.
fn bars<X>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    names: &[&str],
    values: &[[Option<f64>; 2]],
    x: X,
    base: f64,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = names.len() as f64;
    let longest = names.iter().map(|s| s.len()).max().unwrap_or(4) as u32;
    // Cell i is centred on n-1-i, so the first cell is on top and every
    // centre is an integer, where the axis puts its labels.
    // One empty band below the last cell holds the legend.
    let y = RangedCoordf64::from(-1.5..n - 0.5);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(20 + 7 * longest)
        .build_cartesian_2d(x, y)
        .map_err(drawing)?;
    let centre = |i: usize| n - 1.0 - i as f64;
    let name_of = |v: &f64| {
        let i = n - 1.0 - v.round();
        if (v - v.round()).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        names
            .get(i as usize)
            .map_or(String::new(), |s| s.to_string())
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .max_light_lines(4)
        .y_labels(names.len() + 2)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&name_of)
        .label_style((FONT, 15))
        .draw()
        .map_err(drawing)?;
    for (k, (label, color)) in [("etcd", ETCD_COLOR), ("Ballast", BALLAST_COLOR)]
        .into_iter()
        .enumerate()
    {
        // etcd in the upper half of the cell's band, Ballast in the lower.
        let top = |i: usize| centre(i) + 0.4 - 0.41 * k as f64;
        // A missing bar says so.
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v[k].is_none())
                    .map(|(i, _)| {
                        Text::new(
                            format!(" {label}: no result"),
                            (base, top(i) - 0.1),
                            (FONT, 14),
                        )
                    }),
            )
            .map_err(drawing)?;
        let present: Vec<(usize, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v[k].map(|v| (i, v)))
            .collect();
        chart
            .draw_series(present.iter().map(|&(i, v)| {
                Rectangle::new(
                    [(base, top(i)), (v.max(base), top(i) - 0.38)],
                    color.filled(),
                )
            }))
            .map_err(drawing)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(present.iter().map(|&(i, v)| {
                // Ballast's bar also gives its ratio to etcd's.
                let text = match values[i][0] {
                    Some(etcd) if k == 1 && etcd > 0.0 => {
                        format!(" {} ({:.2}×)", short(v), v / etcd)
                    }
                    _ => format!(" {}", short(v)),
                };
                Text::new(text, (v.max(base), top(i) - 0.1), (FONT, 14))
            }))
            .map_err(drawing)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 15))
        .draw()
        .map_err(drawing)
}

/// Panels of lines in a grid of `columns`.
fn grid_svg(title: &str, panels: &[Panel], columns: usize, x_desc: &str) -> anyhow::Result<String> {
    const PANEL_HEIGHT: u32 = 230;
    let columns = columns.min(panels.len()).max(1);
    let rows = panels.len().div_ceil(columns);
    let height = 40 + PANEL_HEIGHT * rows as u32;
    svg_document(height, |root| {
        let area = root.titled(title, (FONT, 28)).map_err(drawing)?;
        let cells = area.split_evenly((rows, columns));
        let mut others = Vec::new();
        for (panel, cell) in panels.iter().zip(&cells) {
            line_panel(cell, panel, x_desc, &mut others)?;
        }
        Ok(())
    })
}

/// One panel; picks linear or log axes as the panel asks.
fn line_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    x_desc: &str,
    others: &mut Vec<String>,
) -> anyhow::Result<()> {
    let xs = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1));
    let (x0, x1) = min_max(xs).unwrap_or((0.0, 1.0));
    let (y0, y1) = min_max(ys).unwrap_or((0.0, 1.0));
    let (x0, x1) = if panel.x_log {
        (x0 / 1.5, x1 * 1.5)
    } else {
        let x0 = x0.min(0.0);
        (x0, if x1 > x0 { x1 } else { x0 + 1.0 })
    };
    let (y0, y1) = if panel.y_log {
        (y0 / 1.5, y1 * 1.5)
    } else {
        // From zero when every value is positive, so sizes read honestly.
        let lo = y0.min(0.0);
        let hi = if y1 > lo {
            y1 + (y1 - lo) * 0.08
        } else {
            lo + 1.0
        };
        (lo, hi)
    };
    let linear = |a: f64, b: f64| RangedCoordf64::from(a..b);
    let log = |a: f64, b: f64| LogCoord::from((a..b).log_scale());
    match (panel.x_log, panel.y_log) {
        (false, false) => lines(area, panel, x_desc, others, linear(x0, x1), linear(y0, y1)),
        (true, false) => lines(area, panel, x_desc, others, log(x0, x1), linear(y0, y1)),
        (false, true) => lines(area, panel, x_desc, others, linear(x0, x1), log(y0, y1)),
        (true, true) => lines(area, panel, x_desc, others, log(x0, x1), log(y0, y1)),
    }
}

fn lines<X, Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Panel,
    x_desc: &str,
    others: &mut Vec<String>,
    x: X,
    y: Y,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (y_lo, y_hi) = (y.range().start, y.range().end);
    let title = if panel.y_log {
        format!("{} (log)", panel.title)
    } else {
        panel.title.clone()
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(48)
        .build_cartesian_2d(x, y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(2)
        .x_desc(x_desc)
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 14))
        .draw()
        .map_err(drawing)?;
    for &m in &panel.marks {
        chart
            .draw_series(DashedLineSeries::new(
                [(m, y_lo), (m, y_hi)],
                8,
                6,
                RGBColor(150, 150, 150).into(),
            ))
            .map_err(drawing)?;
    }
    for line in &panel.lines {
        let color = if panel.lines.len() == 1 && line.label != "etcd" {
            BALLAST_COLOR
        } else {
            color_of(&line.label, others)
        };
        // One segment per run of present samples; a lone sample is a dot.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, v) in &line.points {
            match v {
                Some(v) => segments.last_mut().expect("never empty").push((x, v)),
                None if segments.last().is_some_and(|s| !s.is_empty()) => segments.push(Vec::new()),
                None => {}
            }
        }
        // A few points (a ladder's rungs) are marked as dots too.
        let dots = line.points.len() <= 20;
        let mut first = true;
        for segment in segments.into_iter().filter(|s| !s.is_empty()) {
            if dots && segment.len() > 1 {
                chart
                    .draw_series(segment.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(drawing)?;
            }
            let drawn = if segment.len() == 1 {
                chart
                    .draw_series(segment.iter().map(|p| Circle::new(*p, 2, color.filled())))
                    .map_err(drawing)?
            } else {
                chart
                    .draw_series(LineSeries::new(segment, color.stroke_width(2)))
                    .map_err(drawing)?
            };
            if first && panel.lines.len() > 1 {
                drawn.label(line.label.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
            first = false;
        }
    }
    if panel.lines.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 14))
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn csv_reads_numbers_and_gaps() {
        let t = csv(&path("a.csv"), "t_s,x,y\n0,1.5,\n1,2,3\n\n").unwrap();
        assert_eq!(t.columns, ["t_s", "x", "y"]);
        assert_eq!(
            t.rows,
            [
                vec![Some(0.0), Some(1.5), None],
                vec![Some(1.0), Some(2.0), Some(3.0)]
            ]
        );
        assert_eq!(t.lines, [2, 3]);
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        let e = csv(&path("s.csv"), "t_s,x\n0,1\n1,abc\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.csv:3: column `x`: \"abc\" is not a number"
        );
        let e = csv(&path("s.csv"), "t_s,x\n0,1,2\n").unwrap_err();
        assert_eq!(e.to_string(), "s.csv:2: 3 fields, the header has 2");
        let e = csv(&path("s.csv"), "t_s,x\n0,inf\n").unwrap_err();
        assert!(e.to_string().starts_with("s.csv:2: column `x`"), "{e}");
        let e = csv(&path("s.csv"), "\n\n").unwrap_err();
        assert_eq!(e.to_string(), "s.csv: empty (no header line)");
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
    fn json_lines_errors_name_file_and_line() {
        let r = json_lines(&path("r.jsonl"), "{\"a\": 1}\n\n{\"b\": 2}\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].origin, "r.jsonl:3");
        let e = json_lines(&path("r.jsonl"), "{\"a\": 1}\n{\"b\": \n").unwrap_err();
        assert!(e.to_string().starts_with("r.jsonl:2: not JSON: "), "{e}");
        let e = json_lines(&path("r.jsonl"), "[1, 2]\n").unwrap_err();
        assert_eq!(e.to_string(), "r.jsonl:1: not a JSON object");
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

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(20_000_000.0), "20M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(100_000.0), "100k");
    }

    /// Well-formed enough for a browser: one root, balanced tags.
    fn assert_svg(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                Some(body.trim().to_string())
            })
            .collect()
    }

    fn has_text(svg: &str, text: &str) -> bool {
        texts(svg).iter().any(|t| t == text)
    }

    #[test]
    fn each_kind_draws() {
        let cells = vec![
            CompareCell {
                cell: "put-1".into(),
                etcd: Some(CellFigures {
                    ops_per_s: 1261.0,
                    p99_ms: 3.2,
                }),
                ballast: Some(CellFigures {
                    ops_per_s: 1482.0,
                    p99_ms: 1.1,
                }),
            },
            CompareCell {
                cell: "watch-10000".into(),
                etcd: None,
                ballast: Some(CellFigures {
                    ops_per_s: 266.0,
                    p99_ms: 7548.9,
                }),
            },
        ];
        let svg = compare_svg("cmp <&>", &cells).unwrap();
        assert_svg(&svg);
        assert!(has_text(&svg, "cmp &lt;&amp;&gt;"));
        // Three bars in each of the two panels, and two legend swatches each.
        // Per panel one bar per present figure and one legend swatch per system.
        assert_eq!(svg.matches(r##"fill="#E67E22""##).count(), 2 + 2, "{svg}");
        assert_eq!(svg.matches(r##"fill="#1F5FA8""##).count(), 2 * 2 + 2);
        for label in [
            "put-1",
            "watch-10000",
            "etcd",
            "Ballast",
            "1.26k",
            "1.48k (1.18×)",
            "3.2",
            "1.1 (0.34×)",
            "7.55k",
        ] {
            assert!(has_text(&svg, label), "{label}: {:?}", texts(&svg));
        }

        let soak = "t_s,unix_s,db_size_bytes,rss_member_1_bytes,rss_member_2_bytes,revision\n\
                    0,100,1048576,2097152,3145728,1\n60,160,2097152,,3145728,50\n\
                    120,220,2097152,2097152,3145728,90\n180,280,2097152,2097152,3145728,120\n";
        let panels =
            soak_panels(&path("soak.csv"), &csv(&path("soak.csv"), soak).unwrap()).unwrap();
        let svg = grid_svg("soak", &panels, 2, "minutes").unwrap();
        assert_svg(&svg);
        for title in [
            "db_size_bytes (MiB)",
            "rss_member_N_bytes (MiB)",
            "revision",
            "rss_member_1_bytes",
            "rss_member_2_bytes",
        ] {
            assert!(has_text(&svg, title), "{title}: {:?}", texts(&svg));
        }
        // Member 1 breaks at its missing sample (a dot, then a line); every
        // other series is one line; two dashed thirds per panel.
        let strokes = |color: &str| {
            svg.matches(&format!(
                r#"<polyline fill="none" opacity="1" stroke="{color}""#
            ))
            .count()
        };
        assert_eq!(strokes("#1F5FA8"), 2, "db_size_bytes and revision: {svg}");
        assert_eq!(
            strokes("#27AE60") + strokes("#8E44AD"),
            1 + 1 + 2,
            "the members' lines and legend swatches"
        );
        // The lone sample of member 1, and the 4 dots of each other line.
        assert_eq!(svg.matches("<circle").count(), 1 + 4 * 3 + 2);
        assert_eq!(
            strokes("#969696") % 3,
            0,
            "dashed thirds in each of the three panels"
        );

        let ladder = r#"{"system": "etcd", "size": 10000, "fill_ops_s": 3658, "db_mb": 27.6}
{"system": "ballast", "size": 10000, "fill_ops_s": 13119, "db_mb": 8.2}
{"system": "etcd", "size": 1000000, "fill_ops_s": 6926, "db_mb": 2756.9}
{"system": "ballast", "size": 1000000, "fill_ops_s": 13771, "db_mb": 120.7}
"#;
        let panels = ladder_panels(&json_lines(&path("l.jsonl"), ladder).unwrap()).unwrap();
        let svg = grid_svg("ladder", &panels, 3, "size").unwrap();
        assert_svg(&svg);
        for title in ["db_mb (log)", "fill_ops_s", "etcd", "Ballast"] {
            assert!(has_text(&svg, title), "{title}: {:?}", texts(&svg));
        }
        for color in ["#E67E22", "#1F5FA8"] {
            let lines = svg
                .matches(&format!(
                    r#"<polyline fill="none" opacity="1" stroke="{color}""#
                ))
                .count();
            assert_eq!(
                lines,
                2 * 2,
                "{color}: a line and a legend swatch per panel"
            );
        }

        let run = |system: &str, ops: f64| {
            let text = format!(
                "t_s,ops_per_s,p99_ms,errors\n1,{ops},2.5,0\n2,{},3.5,0\n3,{ops},,0\n",
                ops * 1.1
            );
            (
                path(&format!("put-100/{system}.csv")),
                csv(&path(system), &text).unwrap(),
            )
        };
        let mut runs = vec![run("etcd", 9000.0), run("ballast", 20000.0)];
        let panels = timeline_panels(&runs).unwrap();
        let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["ops/s", "p99 ms"]);
        runs.push((path("put-1/ballast.csv"), runs[1].1.clone()));
        let panels = timeline_panels(&runs).unwrap();
        let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "put-100: ops/s",
                "put-100: p99 ms",
                "put-1: ops/s",
                "put-1: p99 ms"
            ]
        );
        let svg = grid_svg("timeline", &panels, 2, "seconds").unwrap();
        assert_svg(&svg);
        assert!(has_text(&svg, "put-100: p99 ms"));
    }
}
