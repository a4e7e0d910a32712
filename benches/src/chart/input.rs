//! The result files: JSON lines (one object a line) and CSV tables of
//! numbers, each error naming the file and the line.

use std::path::Path;

use anyhow::{anyhow, bail, ensure};
use serde_json::{Map, Value};

/// One JSON object of a JSON-lines file, with where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    /// `file:line`, for messages.
    pub origin: String,
    /// The object's fields.
    pub fields: Map<String, Value>,
}

impl Record {
    pub(super) fn number(&self, key: &str) -> Option<f64> {
        self.fields
            .get(key)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
    }

    pub(super) fn require_number(&self, key: &str) -> anyhow::Result<f64> {
        self.number(key)
            .ok_or_else(|| anyhow!("{}: no numeric `{key}`", self.origin))
    }

    pub(super) fn string(&self, key: &str) -> Option<&str> {
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
    /// The header's names.
    pub columns: Vec<String>,
    /// One value per column; `None` where the field was empty.
    pub rows: Vec<Vec<Option<f64>>>,
    /// The file line of each row, for messages.
    pub lines: Vec<usize>,
}

impl Table {
    pub(super) fn require(&self, path: &Path, name: &str) -> anyhow::Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            anyhow!(
                "{}: no `{name}` column (columns: {})",
                path.display(),
                self.columns.join(", ")
            )
        })
    }

    /// The column's values, each row's required to be present.
    pub(super) fn required_values(&self, path: &Path, name: &str) -> anyhow::Result<Vec<f64>> {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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
}
