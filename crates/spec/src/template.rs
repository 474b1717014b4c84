//! Templates in env values and files, rendered per site by the control plane's compiler.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a piece of user input was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The names a template may read. `site` carries `name`, `labels` and `variables`.
pub const TEMPLATE_ROOTS: [&str; 4] = ["site", "app", "deployment", "service"];

/// A minijinja template as written. Its origin is kept when it came from a file, so that an
/// error found later (when rendering for a site) still points at the line; the origin is not part
/// of the value: two templates with the same text are equal wherever they were written.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub origin: Option<Origin>,
}

impl Template {
    pub fn new(source: impl Into<String>) -> Template {
        Template {
            source: source.into(),
            origin: None,
        }
    }

    /// True when rendering cannot change the text, so it needs no site.
    pub fn is_literal(&self) -> bool {
        !(self.source.contains("{{") || self.source.contains("{%") || self.source.contains("{#"))
    }

    /// Checks the syntax and that every variable the template reads is one of
    /// [`TEMPLATE_ROOTS`]. Returns the problem and, if known, its line within the template.
    pub fn check(&self) -> Result<(), (String, Option<usize>)> {
        if self.is_literal() {
            return Ok(());
        }
        let env = environment();
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| (e.detail().unwrap_or("syntax error").to_owned(), e.line()))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !TEMPLATE_ROOTS.contains(&v.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(name) => Err((
                format!(
                    "unknown template variable `{name}`; templates can read {}",
                    TEMPLATE_ROOTS.join(", ")
                ),
                None,
            )),
        }
    }
}

/// The template environment shared by validation and rendering: strict about undefined values,
/// no auto-escaping (output goes into env values and config files, not HTML), and a fuel limit
/// so that no template can loop forever.
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(100_000));
    // A file template's final newline belongs to the file.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

impl PartialEq for Template {
    fn eq(&self, other: &Template) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Template::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_syntax_and_roots() {
        assert!(Template::new("plain").check().is_ok());
        assert!(Template::new("{{ site.labels.store_id }}").check().is_ok());
        let (msg, _) = Template::new("{{ site.name ").check().unwrap_err();
        assert!(!msg.is_empty());
        let (msg, _) = Template::new("{{ sitee.name }}").check().unwrap_err();
        assert!(msg.contains("`sitee`"), "{msg}");
    }

    #[test]
    fn equality_ignores_origin() {
        let a = Template {
            source: "x".into(),
            origin: Some(Origin {
                file: "a".into(),
                line: 1,
                column: 1,
            }),
        };
        assert_eq!(a, Template::new("x"));
    }
}
