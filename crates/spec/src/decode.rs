//! Walking a [`yaml::Node`] tree into typed values while collecting every diagnostic.
//!
//! Each decoder reads what it can: a field with a problem is reported and left out, and decoding
//! carries on, so one pass over a file finds all of its mistakes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::diag::{Diagnostic, did_you_mean};
use crate::names::check_no_nul;
use crate::yaml::{Node, Pos, Value};

/// Where diagnostics go, and which file they are about.
#[derive(Debug)]
pub struct Decoder<'d> {
    pub file: Arc<str>,
    pub diags: &'d mut Vec<Diagnostic>,
}

impl Decoder<'_> {
    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.push(pos, path, message.into(), None);
    }

    pub fn error_hint(
        &mut self,
        pos: Pos,
        path: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(pos, path, message.into(), Some(hint.into()));
    }

    /// An error at byte `offset` of a one-line scalar's `text` (a selector, a glob): the column
    /// is the scalar's plus the characters before `offset`, plus one for an opening quote.
    pub fn error_in_scalar(
        &mut self,
        node: &Node,
        text: &str,
        offset: usize,
        path: &str,
        message: impl Into<String>,
    ) {
        let quoted = !matches!(&node.value, Value::Scalar { plain: true, .. });
        let before = text.get(..offset.min(text.len())).unwrap_or(text);
        let pos = Pos {
            line: node.pos.line,
            column: node.pos.column + before.chars().count() + usize::from(quoted),
        };
        self.error(pos, path, message);
    }

    fn push(&mut self, pos: Pos, path: &str, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message,
            hint,
        });
    }

    /// The entries of a mapping, or an error if `node` is something else.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => {
                let mut fields = Fields {
                    pos: node.pos,
                    entries: Vec::with_capacity(entries.len()),
                };
                for (key, value) in entries {
                    let Some(name) = self.plain_key(key, path) else {
                        continue;
                    };
                    if fields.entries.iter().any(|(n, _, _)| *n == name) {
                        self.error(key.pos, path, format!("duplicate key `{name}`"));
                        continue;
                    }
                    fields.entries.push((name, key.pos, value));
                }
                Some(fields)
            }
            _ if node.is_null() => Some(Fields {
                pos: node.pos,
                entries: Vec::new(),
            }),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn plain_key<'n>(&mut self, key: &'n Node, path: &str) -> Option<&'n str> {
        match &key.value {
            Value::Scalar { text, .. } => Some(text),
            _ => {
                self.error(
                    key.pos,
                    path,
                    format!("a key must be text, found {}", key.describe()),
                );
                None
            }
        }
    }

    /// Reports every field of `fields` that is not in `known`, with a did-you-mean hint.
    pub fn deny_unknown(&mut self, fields: &Fields<'_>, path: &str, known: &[&str]) {
        for (name, pos, _) in &fields.entries {
            if known.contains(name) {
                continue;
            }
            let message = format!("unknown field `{name}`");
            match did_you_mean(name, known.iter().copied()) {
                Some(guess) => {
                    self.error_hint(*pos, path, message, format!("did you mean `{guess}`?"))
                }
                None => self.error_hint(
                    *pos,
                    path,
                    message,
                    format!("expected one of: {}", known.join(", ")),
                ),
            }
        }
    }

    /// Text of a scalar. Numbers and booleans are taken as their text; null and collections are
    /// errors.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected text, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A required field's node, or an error naming it.
    pub fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        name: &str,
        path: &str,
    ) -> Option<&'n Node> {
        let node = fields.get(name);
        // A misspelt field is reported once, as unknown with a did-you-mean, not also as missing.
        let misspelt = || {
            fields
                .entries
                .iter()
                .any(|(k, _, _)| *k != name && did_you_mean(k, [name]).is_some())
        };
        if node.is_none() && !misspelt() {
            self.error(fields.pos, path, format!("missing field `{name}`"));
        }
        node
    }

    pub fn u32(&mut self, node: &Node, path: &str) -> Option<u32> {
        let text = self.string(node, path)?;
        match text.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a whole number, found `{text}`"),
                );
                None
            }
        }
    }

    pub fn port(&mut self, node: &Node, path: &str) -> Option<u16> {
        let text = self.string(node, path)?;
        match text.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.error_hint(
                    node.pos,
                    path,
                    format!("invalid port `{text}`"),
                    "a port is a number from 1 to 65535",
                );
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar { text, plain: true } if text == "true" => Some(true),
            Value::Scalar { text, plain: true } if text == "false" => Some(false),
            _ => {
                self.error_hint(
                    node.pos,
                    path,
                    "expected true or false",
                    "YAML 1.2: `yes`, `on` and quoted values are not booleans",
                );
                None
            }
        }
    }

    /// A list of scalars; a single scalar is refused so that `command: sh -c x` is not silently
    /// taken as one word. Every list of words ends up as an argument vector at the edge
    /// (commands, args, device names), so a NUL byte in one is refused here.
    pub fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.seq(node, path)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            if let Some(s) = self.string(item, &ipath) {
                match check_no_nul(&s, "a command-line word") {
                    Ok(()) => out.push(s),
                    Err(e) => self.error(item.pos, &ipath, e),
                }
            }
        }
        Some(out)
    }

    pub fn seq<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a list, found {}", node.describe()),
                );
                None
            }
        }
    }

    /// A mapping of text to text (labels, variables, env), values as written.
    pub fn string_map(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<BTreeMap<String, (Pos, String)>> {
        let fields = self.map(node, path)?;
        let mut out = BTreeMap::new();
        for (name, _, value) in &fields.entries {
            let sub = format!("{path}.{name}");
            if let Some(text) = self.string(value, &sub) {
                out.insert((*name).to_owned(), (value.pos, text));
            }
        }
        Some(out)
    }
}

/// The fields of one mapping, looked up by name.
#[derive(Debug)]
pub struct Fields<'n> {
    pub pos: Pos,
    pub entries: Vec<(&'n str, Pos, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The field's value; an explicit null counts as absent.
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(n, _, v)| *n == name && !v.is_null())
            .map(|(_, _, v)| *v)
    }
}
