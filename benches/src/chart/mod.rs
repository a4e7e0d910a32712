//! `ballast bench chart`: SVG charts of the results the benchmarks already
//! write, drawn with plotters' SVG backend (text is left to the viewer's
//! fonts, so no font files are needed).
//!
//! | kind | reads | draws |
//! | --- | --- | --- |
//! | `compare` | `benches/compare-etcd`'s JSON lines (`system`, `cell`, `ops_per_s`, `p99_ms`) | etcd and Ballast side by side per cell: ops/s, and p99 latency on a log scale |
//! | `soak` | `ballast bench soak`'s `soak.csv` (`t_s`, then one column per series) | one panel per series over time; series whose names differ only in a number (the members' RSS) share a panel; dashed lines at the thirds the verdict compares |
//! | `ladder` | JSON lines, one per size and system (`size`, optional `system`, numeric figures) | one panel per figure, in name order, against size (log x; log y where a figure spans 20× or more) |
//! | `timeline` | `--timeline` CSVs of `ballast bench put/range/txn/watch` (`t_s`, `ops_per_s`, `p99_ms`) | throughput and p99 second by second; files in one directory share a row, one line per file, named by its file name |
//!
//! Input errors name the file and the line; nothing here panics on input.
//!
//! # Layout
//! - [`input`] — JSON lines and CSV read into records and tables; errors
//!   name the file and the line.
//! - [`panels`] — what each kind shows: compare-etcd's cells, and the line
//!   panels of the soak, the ladders and the timelines.
//! - [`draw`] — plotters' SVG drawing: bar pairs and grids of line panels.

mod draw;
mod input;
mod panels;

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};

pub use input::{csv, json_lines, Record, Table};
pub use panels::{
    compare_cells, ladder_panels, soak_panels, timeline_panels, CellFigures, CompareCell, Line,
    Panel,
};

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
            draw::compare_svg(title.unwrap_or("Ballast vs etcd per cell"), &cells)
        }
        ChartKind::Soak => {
            ensure!(texts.len() == 1, "a soak chart reads one soak.csv");
            let (path, text) = &texts[0];
            let panels = soak_panels(path, &csv(path, text)?)?;
            draw::grid_svg(title.unwrap_or("ballast bench soak"), &panels, 2, "minutes")
        }
        ChartKind::Ladder => {
            let panels = ladder_panels(&records()?)?;
            draw::grid_svg(title.unwrap_or("size ladder"), &panels, 3, "size")
        }
        ChartKind::Timeline => {
            let mut runs = Vec::with_capacity(texts.len());
            for (path, text) in &texts {
                runs.push((path.to_path_buf(), csv(path, text)?));
            }
            let panels = timeline_panels(&runs)?;
            draw::grid_svg(
                title.unwrap_or("throughput and p99 per second"),
                &panels,
                2,
                "seconds",
            )
        }
    }
}
