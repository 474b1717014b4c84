//! Printing: aligned tables, ages, YAML and JSON, and the one door to the terminal.
//!
//! Most of what the CLI prints came from the network (event messages agents posted, reasons,
//! names), and a terminal acts on control characters rather than showing them: an event holding
//! `ESC ] 0 ; … BEL` retitles the window, `ESC [ 2 J` clears it, a bidi override reorders what
//! is read (the class of kubectl's CVE-2021-25743). So the decision is made once, here, not per
//! field: every verb writes through [`print`] and [`eprint`] (clippy's `print_stdout` and
//! `print_stderr` keep it so), which show each such character as an escape (`\x1b`,
//! `\u{202e}`) and keep only the newlines that shape lines; a table also escapes tabs and
//! newlines inside a cell, so a cell stays one cell on one line. `-o json` and `-o yaml` stay
//! exact: their own escapes already hide C0 and C1 characters, [`json`] also writes DEL, C1 and
//! bidi controls as `\uXXXX`, and a YAML document holding a bidi control (which the YAML
//! emitter leaves raw) is printed in YAML's JSON-compatible flow style, escaped the same way.

use std::borrow::Cow;
use std::io::Write as _;
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

    /// A row; each cell is escaped whole (tabs and newlines too), so it stays one cell.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| escape(c).into_owned()).collect());
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

/// What a terminal would act on rather than show: C0 (tab and newline too), DEL, C1, and
/// the bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069).
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character a terminal would act on shown as an escape: `\n`, `\t`, `\r`,
/// `\x1b` for the rest of C0 and DEL, `\u{9b}` for C1 and the bidi controls.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_but(text, None)
}

fn escape_but(text: &str, keep: Option<char>) -> Cow<'_, str> {
    if !text.chars().any(|c| unsafe_char(c) && Some(c) != keep) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if Some(c) == keep || !unsafe_char(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) <= 0x7f => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// `text` for a terminal: every character it would act on escaped, but the newlines that make
/// its lines.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    escape_but(text, Some('\n'))
}

/// The CLI's one way to standard output.
#[allow(clippy::print_stdout)]
pub fn print(text: &str) {
    print!("{}", terminal_safe(text));
}

/// The CLI's one way to standard error (errors, including the control plane's messages).
#[allow(clippy::print_stderr)]
pub fn eprint(text: &str) {
    eprint!("{}", terminal_safe(text));
}

/// Clears a terminal and puts the cursor home: the one escape sequence the CLI sends itself
/// (`rollout status --watch`).
pub fn clear_screen() {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"\x1b[2J\x1b[H");
}

/// A YAML document; see the module's doc for one that holds a bidi control.
pub fn yaml<T: Serialize>(value: &T) -> Result<String> {
    let text = serde_saphyr::to_string(value)
        .map_err(|e| CliError::server(format!("cannot print YAML: {e}")))?;
    if text.chars().any(unsafe_char_but_newline) {
        return json(value);
    }
    Ok(text)
}

fn unsafe_char_but_newline(c: char) -> bool {
    c != '\n' && unsafe_char(c)
}

/// Pretty JSON, DEL, C1 and bidi controls written as `\uXXXX` (serde_json leaves them raw; only
/// string contents can hold them, so the escape keeps the value exact).
pub fn json<T: Serialize>(value: &T) -> Result<String> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::server(format!("cannot print JSON: {e}")))?;
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if unsafe_char_but_newline(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.push('\n');
    Ok(out)
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
            "cannot {verb} `{word}`: choose site, app, deployment or deviceclass"
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

    /// What an agent posted to take over a terminal: set the window title, clear the screen.
    const PWNED: &str = "\x1b]0;pwned\x07\x1b[2J";

    #[test]
    fn an_event_with_escape_sequences_is_printed_escaped_in_a_table() {
        let mut t = Table::new(&["KIND", "MESSAGE"]);
        t.row(vec!["container".into(), format!("{PWNED}ok\tthen\nmore")]);
        assert_eq!(
            t.render(),
            "KIND        MESSAGE\ncontainer   \\x1b]0;pwned\\x07\\x1b[2Jok\\tthen\\nmore\n"
        );
    }

    #[test]
    fn bidi_controls_c1_and_del_are_shown_not_obeyed() {
        assert_eq!(
            escape("a\u{202e}b\u{2066}c\u{9b}d\x7fe"),
            "a\\u{202e}b\\u{2066}c\\u{9b}d\\x7fe"
        );
        assert_eq!(escape("plain café → ok"), "plain café → ok");
        assert_eq!(terminal_safe("line\n\x1b[2J\n"), "line\n\\x1b[2J\n");
    }

    #[test]
    fn json_and_yaml_stay_exact_and_safe() {
        let value = vec![
            PWNED.to_owned(),
            "a\u{202e}b".into(),
            "c\u{85}d\u{9b}e\x7f".into(),
            "tab\there".into(),
        ];
        let json = json(&value).unwrap();
        assert!(!json.chars().any(unsafe_char_but_newline), "{json:?}");
        assert_eq!(serde_json::from_str::<Vec<String>>(&json).unwrap(), value);
        assert_eq!(terminal_safe(&json), json);
        // The bidi control makes the document JSON (which YAML 1.2 reads the same).
        let yaml = yaml(&value).unwrap();
        assert!(!yaml.chars().any(unsafe_char_but_newline), "{yaml:?}");
        assert_eq!(yaml, json);
        // Without one, YAML's own escapes hide C0 and C1.
        let yaml = yaml_documents(&value[..1]).unwrap();
        assert_eq!(yaml, "\"\\e]0;pwned\\a\\e[2J\"\n");
        assert_eq!(terminal_safe(&yaml), yaml);
    }

    #[test]
    fn a_resource_printed_as_yaml_with_a_bidi_control_applies_again_unchanged() {
        let source = |text: String| atoll_spec::Source {
            name: "s.yaml".into(),
            text,
        };
        let parsed = atoll_spec::parse_sources(&[source(
            "kind: Site\nname: s1\ndescription: \"a\\u202Eb\"\n".into(),
        )]);
        assert!(parsed.is_ok(), "{:?}", parsed.diagnostics);
        let resource = &parsed.documents[0].resource;
        let printed = yaml_documents(&[resource]).unwrap();
        assert!(printed.contains("a\\u202eb"), "{printed}");
        let again = atoll_spec::parse_sources(&[source(printed)]);
        assert!(again.is_ok(), "{:?}", again.diagnostics);
        assert_eq!(&again.documents[0].resource, resource);
    }

    proptest::proptest! {
        /// Whatever the cells hold, a rendered table holds no character a terminal acts on but
        /// the newline ending each row, and has one line per row.
        #[test]
        fn no_printed_table_contains_a_control_character(
            rows in proptest::collection::vec(
                proptest::collection::vec(proptest::arbitrary::any::<String>(), 0..5),
                0..6,
            ),
            odd in proptest::collection::vec(
                proptest::sample::select(vec![
                    "\x1b", "\x07", "\n", "\t", "\r", "\x7f", "\u{9b}", "\u{85}",
                    "\u{202a}", "\u{202e}", "\u{2066}", "\u{2069}", "\0",
                ]),
                0..8,
            ),
        ) {
            let mut t = Table::new(&["A", "B"]);
            for (n, mut row) in rows.clone().into_iter().enumerate() {
                row.push(odd.iter().skip(n).copied().collect());
                t.row(row);
            }
            let out = t.render();
            proptest::prop_assert!(!out.chars().any(unsafe_char_but_newline), "{out:?}");
            proptest::prop_assert_eq!(out.lines().count(), rows.len() + 1);
            proptest::prop_assert_eq!(terminal_safe(&out), out.as_str());
        }
    }

    #[test]
    fn ages() {
        assert_eq!(age("not a time"), "?");
        assert_eq!(age("2000-01-01T00:00:00Z").chars().last(), Some('d'));
    }
}
