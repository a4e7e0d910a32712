//! The recorded series as CSV, and the verdict. `ballast bench chart soak`
//! ([`crate::chart`]) draws the CSV: one panel per series, dashed lines at
//! the thirds of the run the verdict compares.
//!
//! Verdict (issue 17): every size series is flat — the median of the last
//! third of the samples is at most 1.25× the median of the middle third —
//! no NOSPACE alarm was ever raised and no node was ever NotReady.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::sample::{Column, Kind, NOSPACE, NOT_READY};

/// Growth allowed from the middle third to the last.
pub const FLAT_RATIO: f64 = 1.25;

/// One sample: seconds since the churn started, the wall clock, the values.
#[derive(Debug, Clone)]
pub struct Row {
    pub t_s: f64,
    pub unix_s: u64,
    pub values: Vec<Option<f64>>,
}

/// The series of one column, `None` where a sample could not read it.
fn series(rows: &[Row], i: usize) -> Vec<Option<f64>> {
    rows.iter().map(|r| r.values[i]).collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of the middle and last thirds of `values` (by sample index).
pub fn thirds(values: &[Option<f64>]) -> Option<(f64, f64)> {
    let n = values.len();
    if n < 3 {
        return None;
    }
    let pick = |range: std::ops::Range<usize>| {
        median(values[range].iter().flatten().copied().collect::<Vec<_>>())
    };
    Some((pick(n / 3..2 * n / 3)?, pick(2 * n / 3..n)?))
}

/// Whether the last third's median is within [`FLAT_RATIO`] of the
/// middle third's (a series that is zero in the middle must stay zero).
pub fn is_flat(middle: f64, last: f64) -> bool {
    if middle <= 0.0 {
        last <= 0.0
    } else {
        last <= middle * FLAT_RATIO
    }
}

/// One series' part of the verdict.
#[derive(Debug, Clone)]
pub struct SeriesVerdict {
    pub name: String,
    pub kind: Kind,
    pub first: Option<f64>,
    pub middle: Option<f64>,
    pub last: Option<f64>,
    pub max: Option<f64>,
    /// `None` when not judged or too few samples.
    pub flat: Option<bool>,
}

/// The whole verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub series: Vec<SeriesVerdict>,
    pub nospace_seen: bool,
    pub max_not_ready: f64,
    /// Samples of the judged series that could not be read.
    pub missing: usize,
    pub pass: bool,
    /// Why it failed, one reason a line.
    pub reasons: Vec<String>,
}

/// Judges the recorded rows.
pub fn verdict(columns: &[Column], rows: &[Row]) -> Verdict {
    let mut out = Vec::new();
    let mut reasons = Vec::new();
    let mut missing = 0;
    let mut nospace_seen = false;
    let mut max_not_ready = 0.0f64;
    for (i, c) in columns.iter().enumerate() {
        let s = series(rows, i);
        let present: Vec<f64> = s.iter().flatten().copied().collect();
        let (middle, last) = match thirds(&s) {
            Some((m, l)) => (Some(m), Some(l)),
            None => (None, None),
        };
        let flat = match (c.judged(), middle, last) {
            (true, Some(m), Some(l)) => Some(is_flat(m, l)),
            _ => None,
        };
        if c.judged() {
            missing += s.len() - present.len();
            match flat {
                Some(false) => reasons.push(format!(
                    "{} grew: last third's median {} > {FLAT_RATIO}× the middle third's {}",
                    c.name,
                    human(c.kind, last.unwrap_or_default()),
                    human(c.kind, middle.unwrap_or_default())
                )),
                None => reasons.push(format!("{}: too few samples to judge", c.name)),
                Some(true) => {}
            }
        }
        if c.name == NOSPACE && present.iter().any(|v| *v > 0.0) {
            nospace_seen = true;
        }
        if c.name == NOT_READY {
            max_not_ready = present.iter().copied().fold(0.0, f64::max);
        }
        out.push(SeriesVerdict {
            name: c.name.clone(),
            kind: c.kind,
            first: s.first().copied().flatten(),
            middle,
            last,
            max: present.iter().copied().reduce(f64::max),
            flat,
        });
    }
    if nospace_seen {
        reasons.push("a NOSPACE alarm was raised".into());
    }
    if max_not_ready > 0.0 {
        reasons.push(format!("up to {max_not_ready} nodes were NotReady"));
    }
    if !columns.iter().any(|c| c.name == NOSPACE) || !columns.iter().any(|c| c.name == NOT_READY) {
        reasons.push("alarms or node readiness were not recorded".into());
    }
    Verdict {
        series: out,
        nospace_seen,
        max_not_ready,
        missing,
        pass: reasons.is_empty(),
        reasons,
    }
}

/// A value for people: MiB for bytes, plain otherwise.
pub fn human(kind: Kind, v: f64) -> String {
    match kind {
        Kind::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        _ if v.fract() == 0.0 || v.abs() >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

/// The rows as CSV: `t_s,unix_s,<columns…>`, empty cells where unread.
pub fn csv(columns: &[Column], rows: &[Row]) -> String {
    let mut out = String::from("t_s,unix_s");
    for c in columns {
        out.push(',');
        out.push_str(&c.name);
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "{:.1},{}", r.t_s, r.unix_s);
        for v in &r.values {
            out.push(',');
            if let Some(v) = v {
                if v.fract() == 0.0 {
                    let _ = write!(out, "{v:.0}");
                } else {
                    let _ = write!(out, "{v:.3}");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// A Markdown table: first sample, middle-third and last-third medians,
/// maximum, and whether each judged series is flat.
pub fn markdown(verdict: &Verdict) -> String {
    let mut out = String::from(
        "| series | first | middle third (median) | last third (median) | max | flat (≤ 1.25×) |\n\
         | --- | ---: | ---: | ---: | ---: | --- |\n",
    );
    for s in &verdict.series {
        let cell = |v: Option<f64>| v.map(|v| human(s.kind, v)).unwrap_or_else(|| "—".into());
        let flat = match s.flat {
            Some(true) => {
                let ratio = match (s.middle, s.last) {
                    (Some(m), Some(l)) if m > 0.0 => format!(" ({:.2}×)", l / m),
                    _ => String::new(),
                };
                format!("yes{ratio}")
            }
            Some(false) => {
                let ratio = match (s.middle, s.last) {
                    (Some(m), Some(l)) if m > 0.0 => format!(" ({:.2}×)", l / m),
                    _ => String::new(),
                };
                format!("**no**{ratio}")
            }
            None if s.kind == Kind::Info => "(not judged)".into(),
            None => "too few samples".into(),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {flat} |",
            s.name,
            cell(s.first),
            cell(s.middle),
            cell(s.last),
            cell(s.max)
        );
    }
    out
}

/// The verdict as JSON (one object, for the result line).
pub fn to_json(verdict: &Verdict) -> Value {
    let grew: Vec<&str> = verdict
        .series
        .iter()
        .filter(|s| s.flat == Some(false))
        .map(|s| s.name.as_str())
        .collect();
    json!({
        "pass": verdict.pass,
        "grew": grew,
        "nospace_alarm": verdict.nospace_seen,
        "max_nodes_not_ready": verdict.max_not_ready,
        "unread_samples": verdict.missing,
        "reasons": verdict.reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column> {
        vec![
            Column {
                name: "db_size_bytes".into(),
                kind: Kind::Bytes,
            },
            Column {
                name: "revision".into(),
                kind: Kind::Info,
            },
            Column {
                name: NOT_READY.into(),
                kind: Kind::Info,
            },
            Column {
                name: NOSPACE.into(),
                kind: Kind::Info,
            },
        ]
    }

    fn rows(db: &[f64], not_ready: f64, nospace: f64) -> Vec<Row> {
        db.iter()
            .enumerate()
            .map(|(i, v)| Row {
                t_s: i as f64 * 60.0,
                unix_s: 1_800_000_000 + i as u64 * 60,
                values: vec![
                    Some(*v),
                    Some(i as f64 * 1000.0),
                    Some(not_ready),
                    Some(nospace),
                ],
            })
            .collect()
    }

    #[test]
    fn thirds_take_medians_by_sample_index() {
        let v: Vec<Option<f64>> = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 20.0, 21.0, 22.0]
            .map(Some)
            .to_vec();
        assert_eq!(thirds(&v), Some((11.0, 21.0)));
        assert_eq!(thirds(&[Some(1.0), Some(2.0)]), None);
        // Unread samples are skipped; a third with none cannot be judged.
        assert_eq!(thirds(&[Some(1.0), None, Some(3.0)]), None);
    }

    #[test]
    fn flat_series_pass_and_growth_fails() {
        let flat = rows(
            &[10.0, 50.0, 100.0, 100.0, 110.0, 105.0, 120.0, 115.0, 118.0],
            0.0,
            0.0,
        );
        let v = verdict(&cols(), &flat);
        assert!(v.pass, "{:?}", v.reasons);
        // The revision grows without bound, but it is not judged.
        assert_eq!(v.series[1].flat, None);

        let growing = rows(
            &[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0],
            0.0,
            0.0,
        );
        let v = verdict(&cols(), &growing);
        assert!(!v.pass);
        assert_eq!(v.series[0].flat, Some(false));
        assert!(
            v.reasons[0].contains("db_size_bytes grew"),
            "{:?}",
            v.reasons
        );
        assert_eq!(to_json(&v)["grew"], json!(["db_size_bytes"]));
    }

    #[test]
    fn not_ready_nodes_and_nospace_fail() {
        let v = verdict(&cols(), &rows(&[1.0; 6], 2.0, 0.0));
        assert!(!v.pass);
        assert_eq!(v.max_not_ready, 2.0);
        let v = verdict(&cols(), &rows(&[1.0; 6], 0.0, 1.0));
        assert!(!v.pass && v.nospace_seen);
        assert!(v.reasons.iter().any(|r| r.contains("NOSPACE")));
    }

    #[test]
    fn zero_in_the_middle_must_stay_zero() {
        assert!(is_flat(0.0, 0.0));
        assert!(!is_flat(0.0, 1.0));
        assert!(is_flat(100.0, 125.0));
        assert!(!is_flat(100.0, 126.0));
        assert!(is_flat(100.0, 10.0));
    }

    #[test]
    fn csv_holds_every_sample() {
        let mut r = rows(&[1.5, 2.0, 3.0, 4.0], 0.0, 0.0);
        r[2].values[0] = None;
        let text = csv(&cols(), &r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "t_s,unix_s,db_size_bytes,revision,nodes_not_ready,nospace_alarms"
        );
        assert_eq!(lines[1], "0.0,1800000000,1.500,0,0,0");
        assert_eq!(lines[3], "120.0,1800000120,,2000,0,0");
        let v = verdict(&cols(), &r);
        let table = markdown(&v);
        assert!(table.contains("| `db_size_bytes` |"));
        assert!(table.contains("(not judged)"));
    }
}
