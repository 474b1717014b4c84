//! Printing: aligned tables, ages, YAML and JSON.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{CliError, Result};

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The resources as YAML documents, ready to apply again.
    Yaml,
    /// The API's full answer, bookkeeping included.
    Json,
}

/// A table with a header row, printed with columns aligned and separated by three spaces.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// How long ago an RFC 3339 timestamp was, in the largest whole unit: `42s`, `5m`, `3h`, `12d`.
pub fn age(timestamp: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339(timestamp) else {
        return "?".into();
    };
    let secs = now()
        .duration_since(then)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[allow(clippy::disallowed_methods)]
fn now() -> SystemTime {
    SystemTime::now()
}

pub fn yaml<T: Serialize>(value: &T) -> Result<String> {
    serde_saphyr::to_string(value).map_err(|e| CliError::server(format!("cannot print YAML: {e}")))
}

pub fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::server(format!("cannot print JSON: {e}")))
}

/// Several values as one YAML stream, `---` between documents.
pub fn yaml_documents<T: Serialize>(values: &[T]) -> Result<String> {
    let docs: Result<Vec<String>> = values.iter().map(yaml).collect();
    Ok(docs?.join("---\n"))
}

/// `manifests changed for 2 sites: a (revision 3), b (revision 1)`, or nothing when none did.
pub fn manifest_changes(changes: &[atoll_api::ManifestChange], verb: &str) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let sites: Vec<String> = changes
        .iter()
        .map(|m| format!("{} (revision {})", m.site, m.revision))
        .collect();
    let plural = if sites.len() == 1 { "" } else { "s" };
    format!(
        "manifests {verb} for {} site{plural}: {}\n",
        sites.len(),
        sites.join(", ")
    )
}

/// The kind a verb acts on, from what the user typed (`site`, `apps`, `Deployment`...).
pub fn kind_arg(word: &str, verb: &str) -> Result<atoll_spec::Kind> {
    atoll_spec::Kind::from_user(word).ok_or_else(|| {
        CliError::user(format!(
            "cannot {verb} `{word}`: choose site, app or deployment"
        ))
    })
}

/// `a=1,b=2`, or `<none>`.
pub fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "REVISION"]);
        t.row(vec!["store-0042".into(), "3".into()]);
        t.row(vec!["a".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "NAME         REVISION\nstore-0042   3\na            12\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age("not a time"), "?");
        assert_eq!(age("2000-01-01T00:00:00Z").chars().last(), Some('d'));
    }
}
