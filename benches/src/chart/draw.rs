//! Drawing with plotters' SVG backend: bar pairs per cell (compare) and
//! grids of line panels (soak, ladders, timelines), linear or log axes as
//! each panel asks.

use anyhow::anyhow;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::panels::{min_max, CompareCell, Panel};

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
pub(super) fn compare_svg(title: &str, cells: &[CompareCell]) -> anyhow::Result<String> {
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
pub(super) fn grid_svg(
    title: &str,
    panels: &[Panel],
    columns: usize,
    x_desc: &str,
) -> anyhow::Result<String> {
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
    use std::path::PathBuf;

    use super::super::input::{csv, json_lines};
    use super::super::panels::{ladder_panels, soak_panels, timeline_panels, CellFigures};
    use super::*;

    fn path(s: &str) -> PathBuf {
        PathBuf::from(s)
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
